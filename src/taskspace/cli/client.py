"""A small client of the REST API for the CLI."""

from __future__ import annotations

import json
import os
import ssl
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"


class CliError(Exception):
    def __init__(self, message: str, hint: str | None = None, code: int = 1):
        super().__init__(message)
        self.message, self.hint, self.code = message, hint, code


def data_dir() -> Path:
    """The server's data dir as ``taskspace.settings`` finds it (``TASKSPACE_DATA_DIR``, else
    ``data_dir`` in the config file, else the default), read without loading the settings: a
    client command starts in half the time without them."""
    for name, value in os.environ.items():
        if name.upper() == "TASKSPACE_DATA_DIR":
            return Path(value)
    try:
        config = tomllib.loads(Path(os.environ.get("TASKSPACE_CONFIG", "taskspace.toml")).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        config = {}
    if isinstance(config.get("data_dir"), str):
        return Path(config["data_dir"])
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "taskspace"


def resolve_token() -> str | None:
    token = os.environ.get("TASKSPACE_TOKEN")
    if token:
        return token.strip()
    try:
        return (data_dir() / "admin.token").read_text().strip()
    except OSError:
        return None


class Client:
    def __init__(self, url: str, token: str | None, timeout: float = 60):
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # TLS against the system's trust store (where a company's own CA is installed). A plain
        # http server (the default, on loopback) needs no TLS context: building one costs 0.1 s.
        tls: ssl.SSLContext | bool = ssl.create_default_context() if self.url.startswith("https:") else False
        self.http = httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=timeout, verify=tls)

    @classmethod
    def from_env(cls) -> Client:
        return cls(os.environ.get("TASKSPACE_URL", DEFAULT_URL), resolve_token())

    def _unreachable(self, exc: Exception) -> CliError:
        return CliError(f"Cannot reach the taskspace server at {self.url} ({exc}).",
                        "Start it with 'taskspace up', or set TASKSPACE_URL to its address.")

    @staticmethod
    def _raise_for(response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            raise CliError(f"The server answered {response.status_code}: {response.text[:300]}") from None
        raise CliError(error.get("message", "error"), error.get("hint"))

    def call(self, method: str, path: str, *, json_body: Any = None, params: dict[str, Any] | None = None,
             timeout: float | None = None) -> Any:
        try:
            response = self.http.request(method, path, json=json_body, params=params,
                                         timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        self._raise_for(response)
        if response.status_code == 204:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def pages(self, path: str, *, params: dict[str, Any] | None = None, limit: int = 500) -> list[Any]:
        """Every item of a paged listing (``items`` and ``next_cursor``), page after page."""
        found: list[Any] = []
        cursor = None
        while True:
            page = self.call("GET", path, params={**(params or {}), "limit": limit,
                                                  **({"cursor": cursor} if cursor else {})})
            found += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return found

    def stream_lines(self, path: str, *, json_body: Any) -> Iterator[dict[str, Any]]:
        try:
            with self.http.stream("POST", path, json=json_body, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise_for(response)
                for line in response.iter_lines():
                    if line:
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
