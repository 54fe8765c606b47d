"""Periodic rounds shared by every process of an installation (metrics sampling, the IDE
check, housekeeping): the start of each kind's last round is kept in ``Meta`` under its key, so
a restart does not run a round early and two processes never both run one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from taskspace.db.models import Meta, utcnow
from taskspace.services.runtime import Runtime


def _started(row: Meta | None) -> datetime | None:
    if row is None:
        return None
    try:
        value = datetime.fromisoformat(row.value)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def due(rt: Runtime, key: str, interval: timedelta) -> bool:
    """Whether ``interval`` has passed since round ``key`` last started: one primary-key read."""
    async with rt.readers() as session:
        last = _started(await session.get(Meta, key))
    return last is None or utcnow() - last >= interval


async def claim(session: AsyncSession, key: str, *, interval: timedelta, force: bool) -> bool:
    """Record that round ``key`` starts now, unless another started less than ``interval`` ago
    (and not ``force``). The row is locked (PostgreSQL) or the database is (SQLite's write
    transaction); two first rounds at the same moment make one IntegrityError."""
    now = utcnow()
    row = await session.get(Meta, key, with_for_update=True)
    last = _started(row)
    if not force and last is not None and now - last < interval:
        return False
    if row is None:
        session.add(Meta(key=key, value=now.isoformat()))
        await session.flush()
    else:
        row.value = now.isoformat()
    return True
