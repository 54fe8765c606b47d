"""Engine and sessions. Short sessions only: no network call may happen while one is open."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from taskspace.db import sqlite

READONLY = "taskspace_readonly"


def create_engine(url: str) -> AsyncEngine:
    """An async engine. SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` transactions,
    so concurrent writers wait for each other instead of failing on a lock upgrade; readers
    none (``create_sessionmaker``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)

    if parsed.database and parsed.database != ":memory:":
        path = Path(parsed.database)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # The database holds encrypted tokens and token hashes: private from the start.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    # aiosqlite (``settings`` turns every SQLite URL into one of it), a round trip per statement.
    engine = create_async_engine(url, connect_args={"timeout": 30}, pool_reset_on_return=None, module=sqlite.dbapi())

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_conn: Any, record: Any, state: Any) -> None:
        # In place of the pool's rollback of every connection it gets back: only of one still in
        # a transaction (a session has ended its own by then).
        if state.asyncio_safe:
            dbapi_conn.rollback()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A reader begins no transaction: each of its statements reads on its own, as on
        # PostgreSQL (READ COMMITTED). It never waits for a writer and keeps no snapshot open
        # between its statements. A writer takes the write lock with its first statement.
        if not conn.get_execution_options().get(READONLY):
            conn.connection.dbapi_connection.begin_with_next_statement("BEGIN IMMEDIATE")

    return engine


def create_sessionmaker(engine: AsyncEngine, *, readonly: bool = False) -> async_sessionmaker[AsyncSession]:
    """Sessions for writing, or (``readonly``) for reading only: on SQLite the latter begin no
    transaction (each statement reads on its own) instead of taking the write lock."""
    bind = engine.execution_options(**{READONLY: True}) if readonly else engine
    return async_sessionmaker(bind, expire_on_commit=False)


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session inside one transaction: committed on success, rolled back on error."""
    async with sessions() as session, session.begin():
        yield session
