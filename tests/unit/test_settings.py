"""One settings object: environment over TOML file over defaults; derived values."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from taskspace.cli.client import data_dir
from taskspace.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [n for n in os.environ if n.startswith("TASKSPACE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TASKSPACE_CONFIG", str(tmp_path / "absent.toml"))


def test_defaults_are_the_embedded_setup(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.sqlalchemy_url == f"sqlite+aiosqlite:///{tmp_path / 'taskspace.db'}"
    assert (settings.host, settings.port, settings.backend) == ("127.0.0.1", 8080, "docker")
    assert settings.workspace_network == "per-workspace"
    assert settings.base_url == "http://127.0.0.1:8080"
    assert settings.repo_url_policy.file_roots == (str((tmp_path / "demo").resolve()),)


def test_environment_wins_over_the_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "taskspace.toml"
    config.write_text('port = 9000\nhost = "0.0.0.0"\nallowed_http_hosts = ["git.internal"]\n')
    monkeypatch.setenv("TASKSPACE_CONFIG", str(config))
    monkeypatch.setenv("TASKSPACE_PORT", "9100")
    settings = Settings(data_dir=tmp_path)
    assert settings.port == 9100
    assert settings.host == "0.0.0.0"
    assert settings.base_url == "http://127.0.0.1:9100", "a wildcard address is not a URL people can use"
    assert settings.repo_url_policy.http_hosts == ("git.internal",)


def test_postgresql_urls_get_the_async_driver(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, database_url="postgresql://u:p@db.example.com/ts")
    assert settings.sqlalchemy_url == "postgresql+asyncpg://u:p@db.example.com/ts"


def test_failpoints_parse() -> None:
    assert load_settings(failpoints="clone=3, image=0.5").failpoint_delays == {"clone": 3.0, "image": 0.5}


@pytest.mark.parametrize("field", [{"port": 0}, {"workspace_network": "-x"}, {"workspace_network": "a b"},
                                   {"reconcile_interval": 0}])
def test_bad_values_are_refused(field: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        load_settings(**field)


@pytest.mark.parametrize(
    ("environment", "toml"),
    [
        ({}, None),
        ({"XDG_DATA_HOME": "/srv/xdg"}, None),
        ({"TASKSPACE_DATA_DIR": "/srv/from-env"}, 'data_dir = "/srv/from-toml"\n'),
        ({}, 'data_dir = "/srv/from-toml"\nport = 9000\n'),
        ({"taskspace_data_dir": "/srv/lower-case"}, None),
        ({}, "not = [valid toml"),
    ],
)
def test_the_cli_finds_the_data_dir_where_the_server_does(environment: dict[str, str], toml: str | None,
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI reads it without loading the settings (it starts faster), so the two must agree.
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    if toml is not None:
        (tmp_path / "taskspace.toml").write_text(toml)
        monkeypatch.setenv("TASKSPACE_CONFIG", str(tmp_path / "taskspace.toml"))
    try:
        expected = load_settings().data_dir
    except (ValidationError, tomllib.TOMLDecodeError):
        expected = None  # the server refuses to start; the CLI falls back to the default
    found = data_dir()
    assert found == (expected or Path.home() / ".local" / "share" / "taskspace")
