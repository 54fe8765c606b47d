"""Shared fixtures for the test suite."""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import docker
import pytest

from taskspace.plugins.backends.docker.base_image import ensure_base_image
from taskspace.services.runtime import Runtime, build_runtime
from taskspace.settings import load_settings
from taskspace.testing.engine import ensure_docker_engine
from taskspace.testing.git_server import GitHttpServer
from taskspace.testing.postgres import PostgresServer

# --------------------------------------------------------------------------------------------
# Real parts for integration tests: Docker engine, base image, git server, PostgreSQL.
# Session-scoped: each is started once per test run. Tests that need Docker are marked
# ``@pytest.mark.docker``, tests that need PostgreSQL ``@pytest.mark.postgres``.
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A client for the machine's Docker engine, started when none answers."""
    client = ensure_docker_engine()
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image_options() -> dict[str, Any]:
    """Keyword arguments for ``ensure_base_image`` used by the suite.

    ``TASKSPACE_TEST_DEBIAN_MIRROR`` selects the Debian mirror when the default is unreachable.
    """
    return {
        "mirror": os.environ.get("TASKSPACE_TEST_DEBIAN_MIRROR") or None,
        # Shared by every checkout on the machine, so concurrent runs build the image once.
        "lock_dir": Path(tempfile.gettempdir()) / "taskspace-locks",
    }


@pytest.fixture(scope="session")
def base_image(docker_client: docker.DockerClient, base_image_options: dict[str, Any]) -> str:
    """Reference of the debootstrapped Debian image with git (built once per machine)."""
    return ensure_base_image(docker_client, **base_image_options)


@pytest.fixture(scope="session")
def git_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory the git server serves bare repositories from."""
    return tmp_path_factory.mktemp("git-repos")


@pytest.fixture(scope="session")
def git_server(git_root: Path) -> Iterator[GitHttpServer]:
    """A smart-HTTP git server on loopback with users ``alice`` (read/write) and ``reader``
    (read only); their tokens are in ``git_server.users``.

    Shared by the session: give repositories unique names, and change ``delay`` or
    ``deny_push_refs`` with ``monkeypatch.setattr`` so they are reset after the test.
    """
    users = {"alice": secrets.token_urlsafe(16), "reader": secrets.token_urlsafe(16)}
    with GitHttpServer(git_root, users, read_only_users={"reader"}) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster, or the server in ``TASKSPACE_TEST_POSTGRES_URL``."""
    with PostgresServer.from_env_or_start() as server:
        yield server


# --------------------------------------------------------------------------------------------
# Database-backed services. ``database_url`` is parametrized over SQLite and PostgreSQL, so
# every test that uses it (or ``rt``) runs once on each database.
# --------------------------------------------------------------------------------------------


class _PostgresDatabases:
    """Fresh databases from ``postgres_server.create_database()``, made ahead of need in a
    background thread, and dropped there after use: creating one takes a quarter of a second,
    longer than most tests that use it."""

    AHEAD = 2

    def __init__(self, server: PostgresServer) -> None:
        self._server = server
        self._executor = ThreadPoolExecutor(max_workers=self.AHEAD, thread_name_prefix="test-databases")
        self._ready: deque[Future[str]] = deque(self._executor.submit(server.create_database)
                                                for _ in range(self.AHEAD))

    def take(self) -> str:
        self._ready.append(self._executor.submit(self._server.create_database))
        return self._ready.popleft().result()

    def drop(self, url: str) -> None:
        self._executor.submit(self._drop, url)

    def close(self) -> None:
        for future in self._ready:
            if not future.cancel():
                self._drop(future.result())
        self._executor.shutdown(wait=True)

    def _drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")

        async def run() -> None:
            connection = await asyncpg.connect(self._server.url)
            try:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await connection.close()

        asyncio.run(run())


@pytest.fixture(scope="session")
def postgres_databases(postgres_server: PostgresServer) -> Iterator[_PostgresDatabases]:
    databases = _PostgresDatabases(postgres_server)
    yield databases
    databases.close()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file in ``tmp_path``, or a fresh PostgreSQL database from
    ``postgres_server`` (dropped after the test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'taskspace.db'}"
        return
    databases: _PostgresDatabases = request.getfixturevalue("postgres_databases")
    url = databases.take()
    yield url
    databases.drop(url)


@pytest.fixture
async def rt(database_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    """A real Runtime on ``database_url`` with migrations applied and its own installation id.

    Workspaces use host networking (all test traffic stays on loopback); file:// repositories
    may come from ``tmp_path / "repos"``. Building it opens no connection to the Docker engine.
    """
    settings = load_settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        workspace_network="host",
        build_network="host",
        allowed_file_roots=[tmp_path / "repos"],
    )
    runtime = await build_runtime(settings)
    try:
        yield runtime
    finally:
        await runtime.close()
