"""SQLite as the engine runs it: a statement is one round trip to the connection's thread (its
transaction's BEGIN included), and the pool rolls back a returned connection only when it is
still inside a transaction."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
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


async def test_a_reader_holds_no_lock_and_each_statement_reads_what_is_committed(engine: AsyncEngine) -> None:
    async with create_sessionmaker(engine, readonly=True)() as reader:
        assert (await reader.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0
        async with transaction(create_sessionmaker(engine)) as writer:  # would wait 30 s for a lock
            await writer.execute(text("INSERT INTO t VALUES (1)"))
        assert (await reader.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1  # as on PostgreSQL
    assert await rows(engine) == 1


async def test_a_connection_returned_inside_a_transaction_is_rolled_back(engine: AsyncEngine) -> None:
    raw = await engine.raw_connection()
    await raw.driver_connection.execute("BEGIN IMMEDIATE")
    await raw.driver_connection.execute("INSERT INTO t VALUES (1)")
    await greenlet_spawn(raw.close)  # back to the pool with the transaction open

    async with transaction(create_sessionmaker(engine)) as session:  # the same connection, begun again
        await session.execute(text("INSERT INTO t VALUES (2)"))
    assert await rows(engine) == 1


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Calls made to a connection's thread, by the function run there."""
    calls: Counter[str] = Counter()
    run = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls[getattr(fn, "__name__", "?")] += 1
        return await run(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return calls


async def test_a_statement_is_one_round_trip_and_a_session_without_one_costs_none(
        engine: AsyncEngine, round_trips: Counter[str]) -> None:
    sessions = create_sessionmaker(engine)
    async with transaction(sessions) as session:
        pass
    assert sum(round_trips.values()) == 0

    async with transaction(sessions) as session:
        await session.execute(text("INSERT INTO t VALUES (1)"))  # with its BEGIN IMMEDIATE
        await session.execute(text("INSERT INTO t VALUES (2)"))
    assert sum(round_trips.values()) == 3  # two statements and the commit
    round_trips.clear()

    async with create_sessionmaker(engine, readonly=True)() as reader:
        assert (await reader.execute(text("SELECT x FROM t ORDER BY x"))).scalars().all() == [1, 2]
    assert sum(round_trips.values()) == 1  # a reader begins no transaction: none to end


async def test_row_counts_row_ids_batches_and_streams_come_through(engine: AsyncEngine) -> None:
    sessions = create_sessionmaker(engine)
    async with transaction(sessions) as session:
        inserted = await session.execute(text("INSERT INTO t VALUES (:x)"), [{"x": n} for n in range(5)])
        assert inserted.rowcount == 5
        single = await session.execute(text("INSERT INTO t VALUES (10)"))
        assert single.lastrowid == 6
        updated = await session.execute(text("UPDATE t SET x = x + 1 WHERE x < 3"))
        assert updated.rowcount == 3
    async with create_sessionmaker(engine, readonly=True)() as reader:
        streamed = await reader.stream(text("SELECT x FROM t ORDER BY x"), execution_options={"yield_per": 2})
        assert [x async for (x,) in streamed] == [1, 2, 3, 3, 4, 10]


async def test_a_stream_reads_one_snapshot_while_a_writer_commits(engine: AsyncEngine) -> None:
    async with transaction(create_sessionmaker(engine)) as session:
        await session.execute(text("INSERT INTO t VALUES (:x)"), [{"x": n} for n in range(4)])
    async with create_sessionmaker(engine, readonly=True)() as reader:
        streamed = await reader.stream(text("SELECT x FROM t ORDER BY x"), execution_options={"yield_per": 1})
        seen = [await anext(streamed)]
        async with transaction(create_sessionmaker(engine)) as writer:
            await writer.execute(text("INSERT INTO t VALUES (9)"))
        seen += [row async for row in streamed]
    assert [x for (x,) in seen] == [0, 1, 2, 3]


async def test_a_failed_statement_is_reported_and_the_connection_stays_usable(engine: AsyncEngine) -> None:
    sessions = create_sessionmaker(engine)
    with pytest.raises(OperationalError, match="no such table: missing"):
        async with transaction(sessions) as session:
            await session.execute(text("INSERT INTO t VALUES (1)"))
            await session.execute(text("SELECT * FROM missing"))
    assert await rows(engine) == 0  # the transaction's first statement was rolled back with it
    async with transaction(sessions) as session:
        await session.execute(text("INSERT INTO t VALUES (2)"))
    assert await rows(engine) == 1


async def test_writers_wait_for_each_other_from_their_first_statement(engine: AsyncEngine) -> None:
    sessions = create_sessionmaker(engine)
    order: list[str] = []
    first_wrote = asyncio.Event()

    async def first() -> None:
        async with transaction(sessions) as session:
            await session.execute(text("INSERT INTO t VALUES (1)"))
            first_wrote.set()
            await asyncio.sleep(0.3)
            order.append("first commits")

    async def second() -> None:
        await first_wrote.wait()
        async with transaction(sessions) as session:
            await session.execute(text("SELECT count(*) FROM t"))  # takes the write lock: waits
            order.append("second has the lock")

    await asyncio.gather(first(), second())
    assert order == ["first commits", "second has the lock"]
