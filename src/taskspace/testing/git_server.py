"""A real git smart-HTTP server with Basic authentication, for tests and benchmarks.

``GitHttpServer`` serves the bare repositories under a directory through ``git http-backend``
(run as a CGI program per request) on loopback. Every request must authenticate; the server
records who made each one, can refuse pushes per user or per ref, and can be slowed down on
purpose. Helpers create repositories with content and read them back without a clone.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Self, cast

from taskspace.gitops.seed import add_commit, create_bare_repo

logger = logging.getLogger(__name__)

AUTHOR = "Test <test@example.com>"
_CHUNK = 64 * 1024

# Installed as the pre-receive hook (through core.hooksPath) while deny_push_refs is not empty.
# The patterns arrive one per line in the environment; an unquoted case pattern is a glob.
_PRE_RECEIVE_HOOK = """\
#!/bin/sh
status=0
while read -r old new ref; do
    while IFS= read -r pattern; do
        [ -n "$pattern" ] || continue
        case "$ref" in
            $pattern)
                echo "refusing $ref: pushes to $pattern are not allowed on this server" >&2
                status=1
                ;;
        esac
    done <<EOF
$TASKSPACE_DENIED_PUSH_REFS
EOF
done
exit $status
"""


@dataclass(frozen=True)
class RequestRecord:
    """One request the server answered.

    ``path`` is the request target as sent, query string included; ``user`` is the
    authenticated user, or None when authentication was missing or wrong.
    """

    method: str
    path: str
    user: str | None
    status: int


class GitHttpServer:
    """Serves ``<root>/<name>.git`` at ``http://<host>:<port>/<name>.git`` over smart HTTP.

    - Every request needs HTTP Basic credentials from ``users``; otherwise the answer is 401
      with ``WWW-Authenticate: Basic realm="git"``.
    - ``read_only_users`` may fetch but get 403 for ``git-receive-pack`` (push).
    - ``deny_push_refs`` holds glob patterns (``refs/heads/rescue/*``); while it is not empty,
      a pre-receive hook makes git refuse pushes to matching refs with a message.
    - ``delay`` seconds are slept before answering each request.
    - ``requests`` lists every answered request, in order.

    Pushes are enabled for every repository under ``root``. Change ``delay`` and
    ``deny_push_refs`` while the server runs (e.g. with ``monkeypatch.setattr``); they apply to
    the next request.
    """

    def __init__(
        self,
        root: Path,
        users: dict[str, str],
        *,
        read_only_users: Iterable[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.root = Path(root).absolute()
        self.users = dict(users)
        self.read_only_users = frozenset(read_only_users)
        unknown = self.read_only_users - self.users.keys()
        if unknown:
            raise ValueError(f"read_only_users not in users: {sorted(unknown)}")
        self.host = host
        self.port = port
        self.delay: float = 0.0
        self.deny_push_refs: list[str] = []
        self.requests: list[RequestRecord] = []
        self._requests_lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._state_dir: Path | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the port and serve in a background thread; does nothing if already serving."""
        if self._httpd is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self._httpd = _Server((self.host, self.port), _Handler, self)
        self.port = self._httpd.server_address[1]
        # Kept outside root so the served tree holds only repositories.
        self._state_dir = Path(tempfile.mkdtemp(prefix="taskspace-git-server-"))
        hooks = self._state_dir / "hooks"
        hooks.mkdir()
        (hooks / "pre-receive").write_text(_PRE_RECEIVE_HOOK)
        (hooks / "pre-receive").chmod(0o755)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=f"git-http-{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port. The repositories under ``root`` stay."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        self._httpd = self._thread = None
        if self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("GitHttpServer is not started")
        return f"http://{self.host}:{self.port}"

    def url(self, repo_name: str) -> str:
        """The clone URL of a repository (no credentials in it)."""
        return f"{self.base_url}/{_bare_name(repo_name)}.git"

    def repo_path(self, repo_name: str) -> Path:
        """Where the bare repository lives on disk."""
        return self.root / f"{_bare_name(repo_name)}.git"

    # -- repositories ------------------------------------------------------------------------

    def create_repo(
        self,
        name: str,
        files: Mapping[str, str | bytes],
        *,
        branch: str = "main",
        executable: Iterable[str] = (),
        extra_branches: Mapping[str, Mapping[str, str | bytes]] | None = None,
    ) -> str:
        """Create a bare repository with one commit of ``files`` on ``branch``; return its URL.

        ``files`` maps paths (``"src/app.py"``, directories implied) to content. Paths in
        ``executable`` get mode 755. HEAD points at ``branch``. Each entry of ``extra_branches``
        becomes a branch whose one commit, on top of ``branch``, adds or replaces the given
        files. Commits are authored by ``Test <test@example.com>``.
        Raises ``FileExistsError`` if the repository exists.
        """
        path = self.repo_path(name)
        create_bare_repo(path, dict(files), branch=branch, executable=executable,
                         extra_branches=extra_branches, author=AUTHOR)
        _git("config", "http.receivepack", "true", cwd=path)
        return self.url(name)

    def commit(self, name: str, files: Mapping[str, str | bytes], *, branch: str = "main",
               start: str | None = None, message: str = "Change") -> str:
        """Commit ``files`` on ``branch`` (a new one starts at ``start``), as a push would; returns the commit."""
        return add_commit(self.repo_path(name), dict(files), branch=branch, start=start, author=AUTHOR,
                          message=message)

    def branches(self, name: str) -> dict[str, str]:
        """Branch name → commit sha, read from the bare repository directly."""
        output = _git(
            "for-each-ref",
            "--format=%(refname:lstrip=2) %(objectname)",
            "refs/heads",
            cwd=self.repo_path(name),
        )
        return dict(line.split(" ", 1) for line in output.decode().splitlines())

    def read_file(self, name: str, ref: str, path: str) -> bytes:
        """The content of ``path`` at ``ref``. Raises ``FileNotFoundError`` if it is not there."""
        try:
            return _git("cat-file", "blob", f"{ref}:{path}", cwd=self.repo_path(name))
        except subprocess.CalledProcessError as exc:
            raise FileNotFoundError(f"{path} not found at {ref} in {name}") from exc

    # -- request handling (called from the handler threads) ----------------------------------

    def _authenticate(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.startswith("Basic "):
            return None
        try:
            decoded = base64.b64decode(authorization[len("Basic ") :], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, password = decoded.partition(":")
        expected = self.users.get(user)
        if expected is None or not hmac.compare_digest(password.encode(), expected.encode()):
            return None
        return user

    def _backend_environment(self) -> dict[str, str]:
        assert self._state_dir is not None
        config = {"http.receivepack": "true"}
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            # A private HOME keeps the developer's ~/.gitconfig (hooksPath, aliases) out.
            "HOME": str(self._state_dir),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
        }
        denied = list(self.deny_push_refs)
        if denied:
            config["core.hooksPath"] = str(self._state_dir / "hooks")
            env["TASKSPACE_DENIED_PUSH_REFS"] = "\n".join(denied)
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for index, (key, value) in enumerate(config.items()):
            env[f"GIT_CONFIG_KEY_{index}"] = key
            env[f"GIT_CONFIG_VALUE_{index}"] = value
        return env

    def _record(self, record: RequestRecord) -> None:
        with self._requests_lock:
            self.requests.append(record)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler], git: GitHttpServer) -> None:
        self.git = git
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so git can keep connections alive and send chunked request bodies.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY the body waits for the
    # client's delayed ACK (40 ms a request), which no real git host makes its clients wait.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _handle(self) -> None:
        git = self.server.git
        if git.delay:
            time.sleep(git.delay)
        user = git._authenticate(self.headers.get("Authorization"))
        path, _, query = self.path.partition("?")
        status = 500
        try:
            if user is None:
                status = 401
                self._refuse(status, "authentication required", {"WWW-Authenticate": 'Basic realm="git"'})
            elif user in git.read_only_users and _is_push(path, query):
                status = 403
                self._refuse(status, f"{user} may not push")
            else:
                status = self._run_backend(git, user, path, query)
        finally:
            git._record(RequestRecord(self.command, self.path, user, status))

    def _refuse(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        body = f"{message}\n".encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if self._has_body():
            # The unread request body would be taken for the next request on this connection.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _has_body(self) -> bool:
        return bool(self.headers.get("Transfer-Encoding")) or int(self.headers.get("Content-Length") or 0) > 0

    def _run_backend(self, git: GitHttpServer, user: str, path: str, query: str) -> int:
        env = git._backend_environment()
        env.update(
            GATEWAY_INTERFACE="CGI/1.1",
            SERVER_PROTOCOL=self.request_version,
            REQUEST_METHOD=self.command,
            PATH_INFO=urllib.parse.unquote(path),
            QUERY_STRING=query,
            REMOTE_USER=user,
            REMOTE_ADDR=self.client_address[0],
            CONTENT_TYPE=self.headers.get("Content-Type", ""),
        )
        # A chunked body is passed on decoded and without CONTENT_LENGTH, which makes
        # http-backend read it until EOF.
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if not chunked:
            env["CONTENT_LENGTH"] = self.headers.get("Content-Length", "0")
        for name, value in self.headers.items():
            key = name.upper().replace("-", "_")
            if key not in ("AUTHORIZATION", "CONTENT_TYPE", "CONTENT_LENGTH", "TRANSFER_ENCODING"):
                env[f"HTTP_{key}"] = value  # Git-Protocol, Content-Encoding, ...

        with tempfile.TemporaryFile() as stderr:
            process = subprocess.Popen(
                ["git", "http-backend"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
            )
            assert process.stdin is not None and process.stdout is not None
            feeder = threading.Thread(target=self._feed_body, args=(process.stdin, chunked), daemon=True)
            feeder.start()
            try:
                status = self._relay_response(cast(io.BufferedReader, process.stdout))
            finally:
                process.stdout.close()
                process.wait()
                feeder.join()
            stderr.seek(0)
            errors = stderr.read().decode(errors="replace").strip()
        if errors:
            logger.debug("git http-backend %s: %s", self.path, errors)
        return status

    def _feed_body(self, stdin: IO[bytes], chunked: bool) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = _read_chunked(self.rfile) if chunked else _read_exact(self.rfile, length)
        try:
            stdin.writelines(body)
        except (OSError, ValueError):
            # http-backend quit early, or the client went away or sent a malformed chunk: the rest of the body is unread,
            # so this connection cannot carry another request.
            self.close_connection = True
        finally:
            try:
                stdin.close()
            except BrokenPipeError:
                pass

    def _relay_response(self, stdout: io.BufferedReader) -> int:
        """Turn the CGI response on ``stdout`` into an HTTP response; return its status."""
        status, reason = 200, "OK"
        headers: list[tuple[str, str]] = []
        while True:
            line = stdout.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "status":
                code, _, reason = value.strip().partition(" ")
                status = int(code)
            else:
                headers.append((name.strip(), value.strip()))
        self.send_response(status, reason or None)
        for name, value in headers:
            self.send_header(name, value)
        sized = any(name.lower() == "content-length" for name, _ in headers)
        if not sized:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while piece := stdout.read1(_CHUNK):
            self.wfile.write(piece if sized else b"%x\r\n%s\r\n" % (len(piece), piece))
        if not sized:
            self.wfile.write(b"0\r\n\r\n")
        return status


def _is_push(path: str, query: str) -> bool:
    return path.endswith("/git-receive-pack") or "service=git-receive-pack" in query.split("&")


def _read_exact(stream: io.BufferedIOBase, length: int) -> Iterator[bytes]:
    while length > 0:
        piece = stream.read(min(length, _CHUNK))
        if not piece:
            raise ConnectionError("client closed the connection in the middle of the request body")
        length -= len(piece)
        yield piece


def _read_chunked(stream: io.BufferedIOBase) -> Iterator[bytes]:
    """Decode a ``Transfer-Encoding: chunked`` body, consuming the trailer too."""
    while True:
        size_line = stream.readline()
        if not size_line:
            raise ConnectionError("client closed the connection in the middle of a chunked body")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while stream.readline() not in (b"\r\n", b"\n", b""):
                pass
            return
        yield from _read_exact(stream, size)
        stream.readline()  # the CRLF that ends the chunk


def _bare_name(repo_name: str) -> str:
    name = repo_name.removesuffix(".git").strip("/")
    if not name or ".." in name.split("/"):
        raise ValueError(f"invalid repository name: {repo_name!r}")
    return name


def _git(*args: str, cwd: Path | None = None, input: bytes | None = None) -> bytes:
    return subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True, check=True).stdout

