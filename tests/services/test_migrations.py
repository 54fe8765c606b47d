"""Alembic migrations: they build exactly the schema the models declare, on both databases."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from taskspace.db import migrate
from taskspace.db.engine import transaction
from taskspace.db.models import Base, Meta
from taskspace.services.runtime import Runtime


def _schema_differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return compare_metadata(context, Base.metadata)


async def _differences(rt: Runtime) -> list[Any]:
    async with rt.engine.connect() as conn:
        return await conn.run_sync(_schema_differences)


async def _revision(rt: Runtime) -> str | None:
    async with rt.engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


async def test_migrated_schema_matches_the_models(rt: Runtime) -> None:
    assert await _differences(rt) == []

    async with rt.engine.connect() as conn:
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    assert set(Base.metadata.tables) <= tables


async def test_upgrade_reaches_head(rt: Runtime) -> None:
    head = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()

    assert head is not None
    assert await _revision(rt) == head


async def test_upgrade_twice_is_a_no_op(rt: Runtime) -> None:
    before = await _revision(rt)
    async with transaction(rt.sessions) as session:
        installation = (await session.get(Meta, "installation")).value  # type: ignore[union-attr]

    await migrate.upgrade(rt.engine)

    assert await _revision(rt) == before
    assert await _differences(rt) == []
    async with transaction(rt.sessions) as session:
        assert (await session.get(Meta, "installation")).value == installation  # type: ignore[union-attr]
        versions = (await session.execute(text("SELECT version_num FROM alembic_version"))).all()
    assert versions == [(before,)]


async def test_the_comparison_sees_a_schema_that_drifted(rt: Runtime) -> None:
    # Guards the tests above: an index the migrations forgot must show up as a difference.
    async with rt.engine.begin() as conn:
        await conn.execute(text("DROP INDEX ix_tickets_status_category"))

    differences = await _differences(rt)

    assert [(d[0], d[1].name) for d in differences] == [("add_index", "ix_tickets_status_category")]
