"""The throwaway PostgreSQL cluster: reachable with asyncpg, creates databases, cleans up."""

from __future__ import annotations

import socket

import asyncpg
import pytest

from taskspace.core.errors import TaskspaceError
from taskspace.testing.postgres import URL_ENV_VAR, PostgresServer

pytestmark = pytest.mark.postgres


async def test_connect_and_create_database(postgres_server: PostgresServer) -> None:
    connection = await asyncpg.connect(postgres_server.url)
    try:
        assert await connection.fetchval("SELECT 1") == 1
    finally:
        await connection.close()

    url = postgres_server.create_database()

    connection = await asyncpg.connect(url)
    try:
        assert url.endswith("/" + await connection.fetchval("SELECT current_database()"))
        await connection.execute("CREATE TABLE ticket (key text PRIMARY KEY)")
        await connection.execute("INSERT INTO ticket VALUES ('PAY-1')")
        assert await connection.fetchval("SELECT count(*) FROM ticket") == 1
    finally:
        await connection.close()


async def test_cluster_is_local_and_fast(postgres_server: PostgresServer) -> None:
    if postgres_server.external_url:
        pytest.skip(f"{URL_ENV_VAR} points at a server this suite did not configure")
    assert postgres_server.url == f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres"
    connection = await asyncpg.connect(postgres_server.url)
    try:
        assert await connection.fetchval("SHOW listen_addresses") == "127.0.0.1"
        assert await connection.fetchval("SHOW fsync") == "off"
    finally:
        await connection.close()


def test_create_database_refuses_an_existing_name(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()

    with pytest.raises(TaskspaceError, match="already exists"):
        postgres_server.create_database(url.rsplit("/", 1)[1])


def test_stop_removes_the_cluster() -> None:
    server = PostgresServer()
    with server:
        directory, port = server.directory, server.port
        assert directory is not None and directory.exists()
        assert port is not None

    assert not directory.exists()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


async def test_server_from_the_environment_is_used(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_ENV_VAR, postgres_server.url)

    with PostgresServer.from_env_or_start() as external:
        assert external.url == postgres_server.url
        assert external.directory is None
        url = external.create_database()

    # Leaving the context stops nothing: the server still answers.
    connection = await asyncpg.connect(url)
    await connection.close()
