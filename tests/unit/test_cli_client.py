"""The CLI's HTTP client against real HTTP servers on loopback: kept-alive connections that the
server closed, proxies from the environment, addresses that are not one."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from taskspace.cli.client import Client, CliError


class Recorder(BaseHTTPRequestHandler):
    """Answers every request with JSON describing it; closes the connection after each answer
    when the server's ``close_after_answer`` is set (what an idle timeout does)."""

    protocol_version = "HTTP/1.1"
    server: Server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append({"method": self.command, "target": self.path, "headers": dict(self.headers),
                                 "body": body.decode()})
        data = json.dumps({"target": self.path, "n": len(self.server.seen)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = self.server.close_after_answer

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, close_after_answer: bool = False):
        super().__init__(("127.0.0.1", 0), Recorder)
        self.close_after_answer = close_after_answer
        self.seen: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def serving(close_after_answer: bool = False) -> Iterator[Server]:
    server = Server(close_after_answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    yield from serving()


@pytest.fixture
def closing_server() -> Iterator[Server]:
    yield from serving(close_after_answer=True)


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_requests_share_one_connection_and_send_the_token_and_body(server: Server) -> None:
    client = Client(server.url + "/", "tsp_secret")

    client.call("GET", "/workspaces")
    answer = client.call("POST", "/workspaces", json_body={"key": "DEMO-1"})

    assert answer["target"] == "/api/v1/workspaces"
    first, second = server.seen
    assert first["headers"]["Authorization"] == second["headers"]["Authorization"] == "Bearer tsp_secret"
    assert json.loads(second["body"]) == {"key": "DEMO-1"}
    assert second["headers"]["Content-Type"] == "application/json"
    assert "Content-Type" not in first["headers"]


def test_a_connection_the_server_closed_while_idle_is_opened_again(closing_server: Server) -> None:
    client = Client(closing_server.url, None)

    answers = [client.call("POST", "/reconcile") for _ in range(3)]

    assert [a["n"] for a in answers] == [1, 2, 3]  # each request reached the server exactly once


def test_query_parameters_read_as_the_api_expects_them(server: Server) -> None:
    client = Client(server.url, None)

    answer = client.call("GET", "/workspaces", params={"all": False, "mine": True, "cursor": None,
                                                     "repo": ["api", "web"], "q": "a b&c"})

    assert answer["target"] == "/api/v1/workspaces?all=false&mine=true&repo=api&repo=web&q=a+b%26c"


def test_a_plain_http_proxy_from_the_environment_is_asked_for_the_whole_address(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    # The recording server stands in for the proxy: it sees what a proxy would be asked.
    monkeypatch.setenv("http_proxy", server.url.replace("http://", "http://alice:s%40cret@"))
    client = Client("http://taskspace.internal:8080", "tsp_x")

    client.call("GET", "/projects")

    (seen,) = server.seen
    assert seen["target"] == "http://taskspace.internal:8080/api/v1/projects"
    assert seen["headers"]["Proxy-Authorization"] == "Basic YWxpY2U6c0BjcmV0"  # alice:s@cret


def test_hosts_in_no_proxy_are_reached_directly(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")

    Client(server.url, None).call("GET", "/projects")

    assert server.seen[0]["target"] == "/api/v1/projects"


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "ftp://127.0.0.1", "http://", "http://127.0.0.1:port"])
def test_an_address_that_is_not_a_server_address_says_how_to_write_one(url: str) -> None:
    with pytest.raises(CliError) as raised:
        Client(url, None)

    assert "TASKSPACE_URL" in raised.value.message and url in raised.value.message
    assert raised.value.hint and "http://127.0.0.1:8080" in raised.value.hint


def test_a_server_that_does_not_answer_says_how_to_start_one() -> None:
    with pytest.raises(CliError) as raised:
        Client("http://127.0.0.1:9", None).call("GET", "/projects")

    assert "Cannot reach the taskspace server at http://127.0.0.1:9" in raised.value.message
    assert raised.value.hint and "taskspace up" in raised.value.hint
