"""SQLite's transactions as the engine runs them: BEGIN issued on the driver's connection, and
the pool's rollback of a returned connection only when it is still inside a transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from taskspace.db.engine import create_engine, create_sessionmaker, transaction


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'taskspace.db'}")
    async with transaction(create_sessionmaker(engine)) as session:
        await session.execute(text("CREATE TABLE t (x INTEGER)"))
    yield engine
    await engine.dispose()


async def rows(engine: AsyncEngine) -> int:
    async with create_sessionmaker(engine, readonly=True)() as session:
        return (await session.execute(text("SELECT count(*) FROM t"))).scalar_one()


async def test_what_a_session_leaves_uncommitted_is_gone_and_commits_stay(engine: AsyncEngine) -> None:
    sessions = create_sessionmaker(engine)
    async with sessions() as session:
        await session.execute(text("INSERT INTO t VALUES (1)"))
        await session.rollback()
    async with sessions() as session:
        await session.execute(text("INSERT INTO t VALUES (2)"))  # closed without a commit
    assert await rows(engine) == 0

    async with transaction(sessions) as session:
        await session.execute(text("INSERT INTO t VALUES (3)"))
    assert await rows(engine) == 1


async def test_a_reader_holds_no_write_lock(engine: AsyncEngine) -> None:
    async with create_sessionmaker(engine, readonly=True)() as reader:
        assert (await reader.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0
        async with transaction(create_sessionmaker(engine)) as writer:  # would wait 30 s for a lock
            await writer.execute(text("INSERT INTO t VALUES (1)"))
        assert (await reader.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0  # its snapshot
    assert await rows(engine) == 1


async def test_a_connection_returned_inside_a_transaction_is_rolled_back(engine: AsyncEngine) -> None:
    raw = await engine.raw_connection()
    await raw.driver_connection.execute("BEGIN IMMEDIATE")
    await raw.driver_connection.execute("INSERT INTO t VALUES (1)")
    await greenlet_spawn(raw.close)  # back to the pool with the transaction open

    async with transaction(create_sessionmaker(engine)) as session:  # the same connection, begun again
        await session.execute(text("INSERT INTO t VALUES (2)"))
    assert await rows(engine) == 1
