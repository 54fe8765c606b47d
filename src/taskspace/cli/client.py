"""A small client of the REST API for the CLI.

It speaks HTTP/1.1 through the standard library's ``http.client`` over one kept-alive
connection: a CLI command is a handful of requests to one server, and the start-up of a command
is most of what a developer waits for (``ws launch --wait`` on a warm pool takes a few tenths of
a second). A general-purpose HTTP client costs 0.1 s of imports before the first byte is sent.
Proxies come from the usual ``http_proxy``/``https_proxy``/``no_proxy`` variables, TLS is
checked against the system's trust store (where a company's own CA is installed)."""

from __future__ import annotations

import http.client
import json
import os
import tomllib
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlencode, urlsplit

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_PORTS = {"http": 80, "https": 443}
# A kept-alive connection that the server closed while idle fails like this before any byte of
# the answer: the request never reached the server, so it is sent again on a new connection.
STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


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


def _query(params: dict[str, Any] | None) -> str:
    """``params`` as a query string: booleans as ``true``/``false``, ``None`` left out, a list
    repeated."""
    if not params:
        return ""
    pairs = []
    for name, value in params.items():
        for item in value if isinstance(value, list | tuple) else [value]:
            if item is not None:
                pairs.append((name, ("true" if item else "false") if isinstance(item, bool) else str(item)))
    return "?" + urlencode(pairs) if pairs else ""


def _proxy_for(server: SplitResult) -> SplitResult | None:
    """The proxy the environment names for ``server`` (``https_proxy``/``http_proxy``, not for
    hosts in ``no_proxy``), or None."""
    if not any(name.lower().endswith("_proxy") for name in os.environ):
        return None
    import urllib.request  # only when a proxy variable is set: it costs its own imports

    proxy = urllib.request.getproxies_environment().get(server.scheme)
    if not proxy or urllib.request.proxy_bypass_environment(server.netloc):
        return None
    found = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if found.scheme != "http" or not found.hostname:
        raise CliError(f"The {server.scheme}_proxy variable ({proxy}) is not an http:// proxy address.",
                       "Set it to http://HOST:PORT, or add the server's host to no_proxy.")
    return found


class Client:
    def __init__(self, url: str, token: str | None, timeout: float = 60):
        self.url = url.rstrip("/")
        self.server = urlsplit(self.url)
        try:
            port = self.server.port
        except ValueError:
            port = -1
        if self.server.scheme not in DEFAULT_PORTS or not self.server.hostname or port == -1:
            raise CliError(f"TASKSPACE_URL must be the server's http:// or https:// address, not {url!r}.",
                           f"For example: export TASKSPACE_URL={DEFAULT_URL}")
        self.port = port or DEFAULT_PORTS[self.server.scheme]
        self.proxy = _proxy_for(self.server)
        self.prefix = self.server.path.rstrip("/") + "/api/v1"
        self.headers = {"Accept": "application/json", "User-Agent": "taskspace-cli"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        if self.proxy and self.server.scheme == "http":  # through a tunnel, the proxy never sees them
            self.headers.update(self._proxy_headers())
        self.timeout = timeout
        self._connection: http.client.HTTPConnection | None = None

    @classmethod
    def from_env(cls) -> Client:
        return cls(os.environ.get("TASKSPACE_URL", DEFAULT_URL), resolve_token())

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connect(self) -> http.client.HTTPConnection:
        server, proxy = self.server, self.proxy
        host, port = (proxy.hostname, proxy.port or 80) if proxy else (server.hostname, self.port)
        if server.scheme == "http":
            return http.client.HTTPConnection(host, port)
        import ssl  # a plain http server (the default, on loopback) needs no TLS context

        connection = http.client.HTTPSConnection(host, port, context=ssl.create_default_context())
        if proxy:
            connection.set_tunnel(server.hostname, self.port, headers=self._proxy_headers())
        return connection

    def _proxy_headers(self) -> dict[str, str]:
        if not self.proxy or self.proxy.username is None:
            return {}
        credentials = f"{unquote(self.proxy.username)}:{unquote(self.proxy.password or '')}"
        return {"Proxy-Authorization": "Basic " + b64encode(credentials.encode()).decode()}

    def _unreachable(self, exc: Exception) -> CliError:
        self.close()
        return CliError(f"Cannot reach the taskspace server at {self.url} ({exc or type(exc).__name__}).",
                        "Start it with 'taskspace up', or set TASKSPACE_URL to its address.")

    def _exchange(self, method: str, target: str, body: bytes | None,
                  timeout: float | None) -> http.client.HTTPResponse:
        connection = self._connection = self._connection or self._connect()
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        headers = {**self.headers, **({"Content-Type": "application/json"} if body is not None else {})}
        connection.request(method, target, body=body, headers=headers)
        return connection.getresponse()

    def _send(self, method: str, path: str, *, json_body: Any, params: dict[str, Any] | None,
              timeout: float | None) -> http.client.HTTPResponse:
        """The response to one request, its body not yet read. ``timeout`` (seconds, None: none)
        applies to connecting and to each wait for the server."""
        target = self.prefix + path + _query(params)
        if self.proxy and self.server.scheme == "http":  # a plain proxy is asked for the whole URL
            target = f"http://{self.server.netloc}{target}"
        body = None if json_body is None else json.dumps(json_body).encode()
        reused = self._connection is not None
        try:
            try:
                return self._exchange(method, target, body, timeout)
            except STALE:
                if not reused:
                    raise
                self.close()
                return self._exchange(method, target, body, timeout)
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None

    def _read(self, response: http.client.HTTPResponse) -> bytes:
        try:
            return response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None

    def _raise_for(self, response: http.client.HTTPResponse) -> None:
        if response.status < 400:
            return
        text = self._read(response).decode(errors="replace")
        try:
            error = json.loads(text)["error"]
        except (ValueError, KeyError, TypeError):
            raise CliError(f"The server answered {response.status}: {text[:300]}") from None
        raise CliError(error.get("message", "error"), error.get("hint"))

    def call(self, method: str, path: str, *, json_body: Any = None, params: dict[str, Any] | None = None,
             timeout: float | None = None) -> Any:
        response = self._send(method, path, json_body=json_body, params=params,
                              timeout=timeout if timeout is not None else self.timeout)
        self._raise_for(response)
        content = self._read(response)
        if response.status == 204:
            return None
        if (response.getheader("content-type") or "").startswith("application/json"):
            return json.loads(content)
        return content.decode(response.headers.get_content_charset() or "utf-8", errors="replace")

    def pages(self, path: str, *, params: dict[str, Any] | None = None, limit: int = 500) -> list[Any]:
        """Every item of a paged listing (``items`` and ``next_cursor``), page after page."""
        found: list[Any] = []
        cursor = None
        while True:
            page = self.call("GET", path, params={**(params or {}), "limit": limit, "cursor": cursor})
            found += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return found

    def stream_lines(self, path: str, *, json_body: Any) -> Iterator[dict[str, Any]]:
        """The JSON lines of a streamed answer, each as soon as it arrives (no time limit)."""
        response = self._send("POST", path, json_body=json_body, params=None, timeout=None)
        self._raise_for(response)
        try:
            for line in response:
                if line.strip():
                    yield json.loads(line)
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None
