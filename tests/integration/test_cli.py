"""The CLI as users and scripts use it, against a real server."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from typer.testing import CliRunner

from taskspace.cli.main import app
from taskspace.testing.server import free_port
from tests.integration.conftest import Stack, project_files

pytestmark = pytest.mark.docker


def run(stack: Stack, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={**stack.server.cli_env(), **(env or {})})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_a_developer_works_through_the_cli(make_stack: Callable[..., Stack], base_image: str) -> None:
    stack = make_stack(start=False, files=project_files(base_image, service_port=free_port(), unique_image=True))
    stack.server.start()
    host = stack.git.base_url.removeprefix("http://")

    code, out, err = run(stack, "token", "add", "gitea", "--host", host, "--username", "alice",
                         "--secret-env", "MY_GIT_TOKEN", env={"MY_GIT_TOKEN": stack.git_secret})
    assert code == 0, err
    assert stack.git_secret not in out + err
    code, out, err = run(stack, "token", "list")
    assert "gitea" in out and "sha256:" in out and stack.git_secret not in out

    code, out, err = run(stack, "project", "add", "shop", "--repo", stack.git.url(stack.primary),
                         "--repo", stack.git.url(stack.secondary), "--purge-on", "In Review", "--grace", "1h")
    assert code == 0, err
    assert f"{stack.primary}@main" in out
    code, out, _ = run(stack, "project", "list", "--json")
    [project] = json.loads(out)
    assert project["purge_on_statuses"] == ["In Review"] and project["purge_grace_seconds"] == 3600

    code, out, err = run(stack, "ticket", "add", "shop", "--title", "Checkout: add coupons", "--assignee", "admin")
    assert code == 0, err
    key = out.strip()
    assert key == "SHOP-1"

    code, out, err = run(stack, "ws", "launch", key, "--wait", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert set(summary) == {"key", "id", "state", "branch", "url", "ready_seconds"}
    assert summary["state"] == "ready" and summary["branch"] == "SHOP-1-checkout-add-coupons"
    assert summary["ready_seconds"] > 0

    code, out, err = run(stack, "ws", "exec", key, "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert code == 7
    assert out == "out\n" and "err\n" in err

    code, out, _ = run(stack, "ws", "logs", key)
    assert "STARTUP-RAN for SHOP-1" in out
    code, out, _ = run(stack, "ws", "logs", key, "--build")
    assert "Step 1/" in out
    code, out, _ = run(stack, "ws", "show", key)
    assert "ready" in out and "SHOP-1-checkout-add-coupons" in out
    code, out, _ = run(stack, "ws", "list", "--json")
    assert [w["key"] for w in json.loads(out)] == [key]

    assert run(stack, "ws", "stop", key, "--wait")[0] == 0
    code, out, err = run(stack, "ws", "start", key, "--wait")
    assert code == 0, err
    assert "startup" in err  # one progress line per step
    code, out, err = run(stack, "ws", "purge", key, "--wait")
    assert code == 0, err
    assert "purged" in out

    code, out, err = run(stack, "ticket", "move", key, "Done")
    assert code == 0 and "Done" in out
    code, out, err = run(stack, "reconcile", "--once")
    assert code == 0 and "workspaces" in out


def test_errors_say_what_happened_and_what_to_do(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()

    code, _, err = run(stack, "ws", "launch", "NOPE-1")
    assert code == 1
    assert "No ticket NOPE-1" in err and "taskspace ticket list" in err

    code, _, err = run(stack, "token", "add", "x", "--host", "example.com", "--secret-env", "UNSET_VARIABLE")
    assert code == 1 and "UNSET_VARIABLE is not set" in err

    code, _, err = run(stack, "project", "list", env={"TASKSPACE_URL": "http://127.0.0.1:9"})
    assert code == 1 and "Cannot reach the taskspace server" in err and "taskspace up" in err

    code, _, err = run(stack, "project", "list", env={"TASKSPACE_TOKEN": "tsp_wrong"})
    assert code == 1 and "unknown or revoked" in err
