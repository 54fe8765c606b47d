"""A real HTTP server on loopback that replays documented responses of services that cannot run
here (Jira Cloud, GitLab.com, GitHub), for contract tests.

Routes are matched in the order they were added: method, path (a string is a path prefix, a
compiled pattern must match the whole path), optionally the query (``{"page": "2"}``; a value
``None`` means "absent"; a pattern must match the whole value; or any callable over the parsed
query) and a request-body check. A route answers with its replies in turn and then keeps
answering with the last one, so ``[Reply(429, headers={"Retry-After": "1"}), Reply(200, ...)]``
is "rate limited once, then fine" and a single ``Reply(500)`` is a permanent failure.

Every request is recorded: method, path, parsed query, body, the time it arrived, and the
headers without the value of ``Authorization`` or ``PRIVATE-TOKEN`` — only which scheme came
(``Basic``, ``Bearer``, ``PRIVATE-TOKEN``) and, when the server was given the credentials it
accepts, whether they matched. With ``credentials`` set, a request without one of them gets
the ``unauthorized`` reply, as the real service would answer.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

QueryMatcher = Mapping[str, "str | re.Pattern[str] | None"] | Callable[[dict[str, list[str]]], bool]
BodyMatcher = str | Callable[[bytes], bool]

_CREDENTIAL_HEADERS = ("authorization", "private-token")


@dataclass(frozen=True)
class Reply:
    """One response: status, headers and a body — a JSON value, or ``bytes`` sent as they are."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if isinstance(self.body, bytes):
            return self.body, headers
        if self.body is None:
            return b"", headers
        headers.setdefault("Content-Type", "application/json; charset=utf-8")
        return json.dumps(self.body).encode(), headers


@dataclass
class Route:
    method: str
    path: str | re.Pattern[str]
    replies: list[Reply]
    query: QueryMatcher | None = None
    body: BodyMatcher | None = None
    hits: int = 0

    def matches(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> bool:
        if method != self.method:
            return False
        if isinstance(self.path, re.Pattern):
            if not self.path.fullmatch(path):
                return False
        elif not path.startswith(self.path):
            return False
        return _query_matches(self.query, query) and _body_matches(self.body, body)

    def next_reply(self) -> Reply:
        reply = self.replies[min(self.hits, len(self.replies) - 1)]
        self.hits += 1
        return reply


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    auth_scheme: str | None
    authorized: bool | None
    body: bytes
    at: float
    status: int

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def _query_matches(matcher: QueryMatcher | None, query: dict[str, list[str]]) -> bool:
    if matcher is None:
        return True
    if callable(matcher):
        return bool(matcher(query))
    for name, expected in matcher.items():
        values = query.get(name)
        if expected is None:
            if values:
                return False
            continue
        if not values:
            return False
        if isinstance(expected, re.Pattern):
            if not expected.fullmatch(values[0]):
                return False
        elif values[0] != expected:
            return False
    return True


def _body_matches(matcher: BodyMatcher | None, body: bytes) -> bool:
    if matcher is None:
        return True
    if isinstance(matcher, str):
        return matcher.encode() in body
    return bool(matcher(body))


class ReplayServer:
    """``with ReplayServer() as server: server.route("GET", "/rest/api/3/search/jql", Reply(...))``;
    point the client at ``server.url``; read ``server.requests`` afterwards."""

    def __init__(self, *, credentials: Iterable[str] | None = None,
                 unauthorized: Reply | None = None, host: str = "127.0.0.1"):
        self._routes: list[Route] = []
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._credentials = set(credentials) if credentials is not None else None
        self._unauthorized = unauthorized or Reply(401, {"message": "401 Unauthorized"})
        self._server = ThreadingHTTPServer((host, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith(path) and (method is None or r.method == method)]

    def route(self, method: str, path: str | re.Pattern[str], *replies: Reply, query: QueryMatcher | None = None,
              body: BodyMatcher | None = None) -> Route:
        if not replies:
            raise ValueError("a route needs at least one reply")
        route = Route(method.upper(), path, list(replies), query, body)
        with self._lock:
            self._routes.append(route)
        return route

    def clear(self) -> None:
        """Forget routes and recorded requests (between the steps of one test)."""
        with self._lock:
            self._routes.clear()
            self._requests.clear()

    def start(self) -> Self:
        # A short poll interval lets stop() return at once instead of after up to half a second.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="replay-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------------

    def _answer(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        parts = urlsplit(target)
        query = parse_qs(parts.query, keep_blank_values=True)
        lowered = {name.lower(): value for name, value in headers.items()}
        credential = _credential(lowered)
        scheme = credential.split(" ", 1)[0] if credential else None
        authorized = None if self._credentials is None else credential in self._credentials
        with self._lock:
            if authorized is False:
                reply = self._unauthorized
            else:
                route = next((r for r in self._routes if r.matches(method, parts.path, query, body)), None)
                reply = route.next_reply() if route else Reply(
                    404, {"message": f"no replay route for {method} {parts.path}"})
            self._requests.append(RecordedRequest(
                method=method, path=parts.path, query=query,
                headers={k: v for k, v in lowered.items() if k not in _CREDENTIAL_HEADERS},
                auth_scheme=scheme, authorized=authorized, body=body, at=time.monotonic(),
                status=reply.status))
        return reply

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                reply = server._answer(self.command, self.path, dict(self.headers.items()), body)
                payload, headers = reply.encoded()
                self.send_response(reply.status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the record in server.requests is the log

        return Handler


def _credential(headers: Mapping[str, str]) -> str | None:
    """``"<scheme> <value>"`` of the request's credential; PRIVATE-TOKEN counts as a scheme."""
    if headers.get("authorization"):
        return headers["authorization"].strip()
    if headers.get("private-token"):
        return "PRIVATE-TOKEN " + headers["private-token"].strip()
    return None
