"""A unix-socket forwarder in front of the Docker engine that counts the HTTP requests sent to
it, by method and path (ids and names replaced by placeholders). Point a server's
``DOCKER_HOST`` at :attr:`CountingProxy.url` to see how many engine calls it makes.

Requests are parsed on the way in (to find where each one ends on a kept-alive connection:
``Content-Length`` or chunked bodies); responses are passed through untouched. A request that
upgrades the connection (``exec`` start, ``attach``) turns it into a raw byte pipe.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from pathlib import Path

_VERSION = re.compile(r"^/v\d+(\.\d+)?")
_COLLECTIONS = {"containers", "volumes", "networks", "exec", "plugins", "secrets", "services", "tasks", "nodes"}
_VERBS = {"json", "create", "prune", "load", "search", "get"}
_CHUNK = 64 * 1024


def normalize(target: str) -> str:
    """``/v1.41/containers/ts-ab12/json?all=1`` → ``/containers/{id}/json``."""
    path = _VERSION.sub("", target.split("?", 1)[0]) or "/"
    parts = path.strip("/").split("/")
    if parts and parts[0] == "images" and len(parts) > 2:
        return f"/images/{{name}}/{parts[-1]}"
    if len(parts) >= 2 and parts[0] in _COLLECTIONS and parts[1] not in _VERBS:
        parts[1] = "{id}"
    return "/" + "/".join(parts)


class CountingProxy:
    """Listens on ``listen`` (a unix socket path) and forwards to ``target`` in a thread of
    its own; ``counts()`` are the requests seen since the last ``reset()``."""

    def __init__(self, listen: Path, target: str = "/var/run/docker.sock"):
        self.listen = listen
        self.target = target
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self.total = 0

    @property
    def url(self) -> str:
        return f"unix://{self.listen}"

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts.most_common())

    def requests(self) -> int:
        with self._lock:
            return self.total

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def _count(self, method: str, target: str) -> None:
        with self._lock:
            self._counts[f"{method} {normalize(target)}"] += 1
            self.total += 1

    # Life cycle --------------------------------------------------------------------------------

    def start(self) -> CountingProxy:
        ready = threading.Event()
        problems: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(asyncio.start_unix_server(self._handle, path=str(self.listen)))
            except BaseException as exc:  # reported to the caller of start()
                problems.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self.listen.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=serve, name="engine-proxy", daemon=True)
        self._thread.start()
        ready.wait()
        if problems:
            raise problems[0]
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def close() -> None:
            server.close()
            # Until none is left: a cancelled connection's handler still ends the tasks it made,
            # and a task left pending when the loop closes is reported as destroyed.
            while tasks := [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.listen.unlink(missing_ok=True)

    # Forwarding --------------------------------------------------------------------------------

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            await self._connection(client_reader, client_writer)
        except asyncio.CancelledError:
            pass  # the proxy is stopping: a handler must not end cancelled (asyncio would log it)

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            engine_reader, engine_writer = await asyncio.open_unix_connection(self.target)
        except OSError:
            client_writer.close()
            return
        inbound = asyncio.create_task(self._requests(client_reader, engine_writer))
        outbound = asyncio.create_task(self._pipe(engine_reader, client_writer))
        try:
            await outbound  # the engine closed, or the client went away
        finally:
            inbound.cancel()
            outbound.cancel()
            await asyncio.gather(inbound, outbound, return_exceptions=True)
            for writer in (engine_writer, client_writer):
                writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(_CHUNK):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    writer.write(exc.partial)
                    break
                except asyncio.LimitOverrunError:
                    break
                writer.write(head)
                lines = head.decode("latin-1").split("\r\n")
                method, _, rest = lines[0].partition(" ")
                target = rest.rsplit(" ", 1)[0]
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                self._count(method, target)
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    await self._chunked(reader, writer)
                elif int(headers.get("content-length") or 0) > 0:
                    await self._exactly(reader, writer, int(headers["content-length"]))
                await writer.drain()
                if "upgrade" in headers.get("connection", "").lower() or "upgrade" in headers:
                    await self._pipe(reader, writer)  # a hijacked stream: bytes, not requests
                    break
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass

    @staticmethod
    async def _exactly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, length: int) -> None:
        while length > 0:
            data = await reader.read(min(length, _CHUNK))
            if not data:
                raise ConnectionError("client closed in the middle of a body")
            writer.write(data)
            length -= len(data)
            await writer.drain()

    async def _chunked(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            writer.write(size_line)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailer, up to the empty line
                    line = await reader.readuntil(b"\r\n")
                    writer.write(line)
                    if line == b"\r\n":
                        return
            await self._exactly(reader, writer, size + 2)
