"""A closed-loop load generator: N connections on loopback, each sending the next request as
soon as the previous answer arrived, for a fixed duration.

HTTP/1.1 keep-alive on plain asyncio streams: the request is encoded once, an answer is read
by its Content-Length (or its chunks). The generator shares the machine with the server, so it
has to be cheap: a full HTTP client library spent about as much CPU per request as the server
did (some 4 ms against 5 on the 2-core machine of the results), and the server's latency under
load then measured the generator as much as the page. What the generator and the server spent
is reported next to the latencies (``client_cpu_ms_per_request``, ``server_cpu_ms_per_request``
when the server's process id is given), so the share of each is there to see.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

from bench.stats import summarize

_TICKS = os.sysconf("SC_CLK_TCK")


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 as this generator reads it."""


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """One answer: its status, its body, and whether the server keeps the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head[:-4].split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    headers: dict[bytes, bytes] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    keep = headers.get(b"connection", b"").lower() != b"close"
    if b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the empty line
            pass
        body = b"".join(chunks)
    else:  # delimited by the end of the connection
        body, keep = await reader.read(), False
    return int(parts[1]), body, keep


def encode_get(url: str, headers: dict[str, str], cookies: dict[str, str]) -> tuple[str, int, bytes]:
    """Host, port and the bytes of ``GET url`` with ``headers`` and ``cookies``."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        raise ValueError(f"the load generator speaks plain HTTP to host:port, not {url}")
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Accept: */*"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if cookies:
        lines.append("Cookie: " + "; ".join(f"{name}={value}" for name, value in cookies.items()))
    return parts.hostname, parts.port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


async def _hammer(url: str, *, connections: int, duration: float, headers: dict[str, str],
                  cookies: dict[str, str], server_pid: int | None) -> dict[str, Any]:
    host, port, request = encode_get(url, headers, cookies)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    sizes: list[int] = []

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(host, port, limit=1 << 20)

    reader, writer = await connect()  # not counted: opens a connection, fills caches
    writer.write(request)
    status, body, _ = await read_response(reader)
    writer.close()
    if status != 200:
        raise RuntimeError(f"GET {url} answered {status}: {body[:300].decode(errors='replace')}")
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + duration

    async def worker() -> None:
        reader, writer = await connect()
        try:
            while loop.time() < stop_at:
                started = time.perf_counter()
                try:
                    writer.write(request)
                    status, body, keep = await read_response(reader)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError,
                        ValueError) as exc:
                    errors[type(exc).__name__] += 1
                    writer.close()
                    reader, writer = await connect()
                    continue
                elapsed = time.perf_counter() - started
                if status == 200:
                    latencies.append(elapsed)
                    sizes.append(len(body))
                else:
                    errors[str(status)] += 1
                if not keep:
                    writer.close()
                    reader, writer = await connect()
        finally:
            writer.close()

    cpu, server_cpu = time.process_time(), process_cpu_seconds(server_pid) if server_pid else None
    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    wall = time.perf_counter() - began
    cpu = time.process_time() - cpu
    result: dict[str, Any] = {
        "connections": connections, "duration_seconds": round(wall, 3), "requests": len(latencies),
        "requests_per_second": round(len(latencies) / wall, 2) if wall else None, "errors": dict(errors),
        "response_bytes": max(sizes) if sizes else None, "latency_seconds": summarize(latencies),
        "client_cpu_ms_per_request": round(1000 * cpu / len(latencies), 3) if latencies else None}
    if server_pid and latencies:
        spent = process_cpu_seconds(server_pid) - server_cpu  # type: ignore[operator]
        result["server_cpu_ms_per_request"] = round(1000 * spent / len(latencies), 3)
    result["samples"] = [round(x, 5) for x in latencies]
    return result


def hammer(url: str, *, connections: int, duration: float, headers: dict[str, str] | None = None,
           cookies: dict[str, str] | None = None, server_pid: int | None = None) -> dict[str, Any]:
    """GET ``url`` from ``connections`` concurrent connections for ``duration`` seconds;
    latency p50/p95 of the successful answers, requests per second, errors by status, and the
    CPU the generator (and, given ``server_pid``, the server) spent per request."""
    return asyncio.run(_hammer(url, connections=connections, duration=duration, headers=headers or {},
                               cookies=cookies or {}, server_pid=server_pid))
