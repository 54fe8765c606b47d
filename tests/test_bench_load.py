"""The benchmarks' load generator reads every way an HTTP/1.1 server may frame an answer, and
counts what is not a 200 as an error rather than a latency."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator

import pytest
from bench.load import encode_get, hammer

BODY = b"<p>" + b"x" * 70_000 + b"</p>"
ANSWERS = {
    "/length": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY),
    "/chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"%x;ext=1\r\n%s\r\n%x\r\n%s\r\n0\r\nX-Trailer: yes\r\n\r\n" % (40_000, BODY[:40_000],
                                                                                   len(BODY) - 40_000, BODY[40_000:])),
    "/close": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + BODY,
    "/missing": b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",
}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[bytes]]]:
    """A keep-alive HTTP/1.1 server on loopback answering ``ANSWERS`` by path; the requests it
    got are kept."""
    seen: list[bytes] = []
    loop = asyncio.new_event_loop()
    started = threading.Event()
    address: list[int] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                seen.append(head)
                reply = ANSWERS[head.split(b" ")[1].decode().partition("?")[0]]
                writer.write(reply)
                await writer.drain()
                if b"Connection: close" in reply:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        srv = await asyncio.start_server(answer, "127.0.0.1", 0)
        address.append(srv.sockets[0].getsockname()[1])
        started.set()
        async with srv:
            try:
                await srv.serve_forever()
            except asyncio.CancelledError:
                pass

    task = loop.create_task(main())
    thread = threading.Thread(target=loop.run_until_complete, args=(task,), daemon=True)
    thread.start()
    assert started.wait(10)
    yield f"http://127.0.0.1:{address[0]}", seen
    loop.call_soon_threadsafe(task.cancel)
    thread.join(10)
    loop.close()


@pytest.mark.parametrize("path", ["/length", "/chunked", "/close"])
def test_every_framing_reads_the_whole_body(server: tuple[str, list[bytes]], path: str) -> None:
    url, _ = server
    result = hammer(url + path, connections=2, duration=0.3, server_pid=os.getpid())
    assert result["errors"] == {}
    assert result["requests"] > 2 and result["latency_seconds"]["n"] == result["requests"]
    assert result["response_bytes"] == len(BODY)
    assert result["client_cpu_ms_per_request"] > 0 and result["server_cpu_ms_per_request"] >= 0


def test_answers_other_than_200_are_errors(server: tuple[str, list[bytes]]) -> None:
    url, _ = server
    with pytest.raises(RuntimeError, match="answered 404"):
        hammer(url + "/missing", connections=1, duration=0.2)


def test_the_request_carries_the_headers_and_cookies(server: tuple[str, list[bytes]]) -> None:
    url, seen = server
    hammer(url + "/length?x=1", connections=1, duration=0.1, headers={"Authorization": "Bearer t"},
           cookies={"a": "1", "b": "2"})
    request = seen[-1].decode()
    assert request.startswith("GET /length?x=1 HTTP/1.1\r\n")
    assert "\r\nAuthorization: Bearer t\r\n" in request and "\r\nCookie: a=1; b=2\r\n" in request


def test_only_plain_http_to_a_port() -> None:
    with pytest.raises(ValueError, match="plain HTTP"):
        encode_get("https://127.0.0.1:8443/", {}, {})
