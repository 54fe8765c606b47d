"""A throwaway PostgreSQL cluster for tests, or an existing server named by the environment."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit, urlunsplit

from taskspace.core.errors import TaskspaceError

URL_ENV_VAR = "TASKSPACE_TEST_POSTGRES_URL"
_SERVER_USER = "postgres"


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 only.

    ``start()`` runs ``initdb`` and ``pg_ctl`` from ``/usr/lib/postgresql/<version>/bin``
    (the newest installed), as the ``postgres`` user when this process is root, since
    PostgreSQL refuses to run as root. The cluster trusts every local connection, keeps its
    unix socket in its own directory and runs with ``fsync=off``: fast, and only fit for tests.
    ``stop()`` shuts it down and deletes the directory.

    Built with ``external_url``, it starts nothing and serves that server's URL instead.
    """

    def __init__(self, *, external_url: str | None = None) -> None:
        self.external_url = external_url
        self.port: int | None = None
        # The cluster's files (data, sockets, log) while it exists.
        self.directory: Path | None = None
        self._bin: Path | None = None

    @classmethod
    def from_env_or_start(cls) -> PostgresServer:
        """Use the server in ``TASKSPACE_TEST_POSTGRES_URL`` if set, else a new cluster.

        The result is not started yet; use it as a context manager or call ``start()``.
        """
        return cls(external_url=os.environ.get(URL_ENV_VAR) or None)

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:<port>/postgres`` (or the external URL)."""
        if self.external_url:
            return self.external_url
        if self.port is None:
            raise RuntimeError("PostgresServer is not started")
        return f"postgresql://{_SERVER_USER}@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Create and start the cluster; does nothing if started or external.

        Raises ``TaskspaceError`` when PostgreSQL is not installed or fails to start (the
        message carries the end of its log).
        """
        if self.external_url or self.directory is not None:
            return
        self._bin = _find_bin_dir()
        self.directory = Path(tempfile.mkdtemp(prefix="taskspace-postgres-"))
        data, sockets, log = (
            self.directory / "data",
            self.directory / "sockets",
            self.directory / "postgres.log",
        )
        sockets.mkdir()
        if os.geteuid() == 0:
            account = pwd.getpwnam(_SERVER_USER)
            for path in (self.directory, sockets):
                os.chown(path, account.pw_uid, account.pw_gid)
        try:
            self._run(
                "initdb",
                f"--pgdata={data}",
                f"--username={_SERVER_USER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            )
            self.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                f"-c unix_socket_directories={sockets} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            self._run("pg_ctl", "start", f"--pgdata={data}", f"--log={log}", "--wait", "-o", options)
        except TaskspaceError:
            self._discard()
            raise

    def stop(self) -> None:
        """Stop the cluster and delete its files; safe to call twice; external: nothing."""
        if self.directory is None:
            return
        data = self.directory / "data"
        if (data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", f"--pgdata={data}", "--mode=immediate", "--wait", check=False)
        self._discard()

    def create_database(self, name: str | None = None) -> str:
        """Create a database (a unique name when ``name`` is None) and return its URL.

        Raises ``TaskspaceError`` if it exists or cannot be created.
        """
        name = name or f"test_{uuid.uuid4().hex[:12]}"
        quoted = '"' + name.replace('"', '""') + '"'
        psql = str(self._bin / "psql") if self._bin else shutil.which("psql") or "psql"
        argv = [psql, "--no-psqlrc", "--quiet", f"--dbname={self.url}", f"--command=CREATE DATABASE {quoted}"]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise TaskspaceError(
                f"Could not create database {name}: {result.stderr.strip()}",
                hint="Check that the server runs and the user may create databases.",
            )
        scheme, netloc, _path, query, fragment = urlsplit(self.url)
        return urlunsplit((scheme, netloc, f"/{name}", query, fragment))

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

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        assert self._bin is not None and self.directory is not None
        argv = [str(self._bin / program), *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", _SERVER_USER, "--", *argv]
        # The cluster's directory is private to the postgres user, so run from a neutral cwd.
        result = subprocess.run(argv, cwd="/", capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            log = self.directory / "postgres.log"
            log_tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:]) if log.exists() else ""
            raise TaskspaceError(
                f"{program} failed (exit {result.returncode}): {result.stderr.strip()}\n{log_tail}".strip(),
                hint=f"Set {URL_ENV_VAR} to use a running server instead.",
            )

    def _discard(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None
        self.port = None


def _find_bin_dir() -> Path:
    candidates = sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p, "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise TaskspaceError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb).",
            hint=f"Install the postgresql package, or set {URL_ENV_VAR} to a running server.",
        )
    return candidates[-1]


def _free_port() -> int:
    # The port is free now; a race with another process binding it between here and pg_ctl is
    # possible but would show as a clear start-up error.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
