"""The audit log: every state-changing action, append-only."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from taskspace.core.roles import require_admin
from taskspace.db.engine import transaction
from taskspace.db.models import AuditEvent, User
from taskspace.services.runtime import Runtime

MAX_ROWS = 10_000


def result_of(status_code: int) -> str:
    if status_code < 400:
        return "ok"
    if status_code in (401, 403):
        return "denied"
    if status_code < 500:
        return "refused"
    return "error"


async def record(rt: Runtime, *, actor: str, action: str, target: str | None, source: str | None,
                 status_code: int, detail: dict[str, Any] | None = None) -> None:
    async with transaction(rt.sessions) as session:
        session.add(AuditEvent(actor=actor, action=action, target=target, source=source,
                               result=result_of(status_code), status_code=status_code, detail=detail or {}))


@dataclass
class AuditQuery:
    actor: str | None = None
    action: str | None = None
    target: str | None = None
    result: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 500


async def search(*, session: AsyncSession, actor: User, query: AuditQuery) -> list[AuditEvent]:
    require_admin(actor.role, "read the audit log")
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(min(max(query.limit, 1), MAX_ROWS))
    if query.actor:
        stmt = stmt.where(AuditEvent.actor == query.actor)
    if query.action:
        stmt = stmt.where(AuditEvent.action.startswith(query.action))
    if query.target:
        stmt = stmt.where(AuditEvent.target.contains(query.target))
    if query.result:
        stmt = stmt.where(AuditEvent.result == query.result)
    if query.since:
        stmt = stmt.where(AuditEvent.at >= query.since)
    if query.until:
        stmt = stmt.where(AuditEvent.at < query.until)
    return list(await session.scalars(stmt))


def csv_cell(value: object) -> str:
    """A cell a spreadsheet will not run: text starting like a formula gets a leading quote."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in {"=", "+", "-", "@", "\t", "\r"} else text


def to_csv(rows: list[AuditEvent]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["at", "actor", "action", "target", "source", "result", "status"])
    for row in rows:
        writer.writerow([csv_cell(v) for v in (row.at.isoformat(), row.actor, row.action, row.target, row.source,
                                               row.result, row.status_code)])
    return out.getvalue()
