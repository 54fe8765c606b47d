"""Usage analytics: what was launched, how fast it became ready, and how much it was used.

Per workspace over a period ``[since, until)`` (default: the last 30 days, at most 366): its
ticket, project and owner, when it was requested, became ready and was purged, how long it took
to become ready, when it was first opened and last used (``services.activity``), and from its
transition events the hours it spent ready (active), its starts, stops and stopped intervals,
all clipped to the period (``core.usage``). Summaries add these up per project or per user.

Developers see their own workspaces; reviewers and admins everyone's (``core.roles``).

Reads stay bounded at scale: one query for the workspaces of the period (at most
MAX_WORKSPACES), and one for their transitions — those inside the period plus the last one
before it — streamed in (workspace, id) order and folded in a single pass.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from taskspace.core.errors import Forbidden, NotFound
from taskspace.core.roles import Access, may
from taskspace.core.usage import Period, UsageTally, make_period
from taskspace.db.models import Event, Project, Ticket, User, Workspace, utcnow
from taskspace.services import projects
from taskspace.services.audit import csv_cell

#: Workspaces one report covers; a report that would cover more says it is truncated.
MAX_WORKSPACES = 50_000
#: Transition rows fetched from the database at a time while streaming.
EVENT_BATCH = 2_000

GroupBy = Literal["project", "user"]


@dataclass
class UsageQuery:
    """What to report on. ``since``/``until``: ISO 8601 dates or times, or ages such as 7d
    (``core.usage.parse_instant``); ``project``: a name or key; ``owner``: a user name."""

    since: str | datetime | None = None
    until: str | datetime | None = None
    project: str | None = None
    owner: str | None = None
    limit: int = MAX_WORKSPACES


@dataclass
class WorkspaceUsage:
    workspace_id: str
    ticket: str
    title: str
    project: str
    owner: str
    state: str
    requested_at: datetime
    ready_at: datetime | None
    time_to_ready_seconds: float | None
    first_opened_at: datetime | None
    last_active_at: datetime | None
    purged_at: datetime | None
    active_hours: float
    starts: int
    stops: int
    stopped_hours: float
    stopped_intervals: list[tuple[datetime, datetime]]


@dataclass
class UsageReport:
    period: Period
    workspaces: list[WorkspaceUsage]  # newest first
    truncated: bool  # more workspaces matched than the limit


@dataclass
class GroupUsage:
    name: str
    workspaces: int  # that existed during the period
    launched: int  # requested during the period
    time_to_ready_median: float | None  # seconds, of those launched that became ready
    time_to_ready_mean: float | None
    active_hours: float
    starts: int
    stops: int
    purged: int  # purged during the period


@dataclass
class Summary:
    period: Period
    group_by: GroupBy
    groups: list[GroupUsage]
    total: GroupUsage
    truncated: bool


async def workspace_usage(*, session: AsyncSession, user: User, query: UsageQuery,
                          now: datetime | None = None) -> UsageReport:
    """Each workspace that existed during the period (requested before its end, not purged
    before its start), newest first, at most ``query.limit``."""
    now = now or utcnow()
    period = make_period(query.since, query.until, now=now)
    where = await _where(session, user, query, period)
    limit = max(1, min(query.limit, MAX_WORKSPACES))
    newest = (Workspace.created_at.desc(), Workspace.id.desc())
    rows = (await session.execute(
        select(Workspace.id, Workspace.state, Workspace.created_at, Workspace.ready_at, Workspace.ready_seconds,
               Workspace.first_opened_at, Workspace.last_active_at, Workspace.purged_at, Ticket.key,
               Ticket.title, Project.name.label("project"), User.username)
        .join(Ticket, Ticket.id == Workspace.ticket_id)
        .join(Project, Project.id == Workspace.project_id)
        .join(User, User.id == Workspace.owner_id)
        .where(*where).order_by(*newest).limit(limit + 1))).all()
    truncated = len(rows) > limit
    rows = rows[:limit]
    tallies = await _fold_transitions(session, select(Workspace.id).where(*where).order_by(*newest).limit(limit),
                                      period, now)
    found = []
    for row in rows:
        tally = tallies.get(row.id) or UsageTally(period, now)
        usage = tally.finish()
        found.append(WorkspaceUsage(
            workspace_id=row.id, ticket=row.key, title=row.title, project=row.project, owner=row.username,
            state=row.state, requested_at=row.created_at, ready_at=row.ready_at,
            time_to_ready_seconds=row.ready_seconds, first_opened_at=row.first_opened_at,
            last_active_at=row.last_active_at, purged_at=row.purged_at,
            active_hours=usage.active_seconds / 3600, starts=usage.starts, stops=usage.stops,
            stopped_hours=usage.stopped_seconds / 3600, stopped_intervals=usage.stopped))
    return UsageReport(period=period, workspaces=found, truncated=truncated)


async def summary(*, session: AsyncSession, user: User, query: UsageQuery, group_by: GroupBy,
                  now: datetime | None = None) -> Summary:
    """The workspaces of ``workspace_usage`` added up per project or per user (by name), and
    in total."""
    report = await workspace_usage(session=session, user=user, now=now,
                                   query=UsageQuery(since=query.since, until=query.until, project=query.project,
                                                    owner=query.owner, limit=MAX_WORKSPACES))
    key: Callable[[WorkspaceUsage], str] = (lambda w: w.project) if group_by == "project" else (lambda w: w.owner)
    grouped: dict[str, list[WorkspaceUsage]] = {}
    for usage in report.workspaces:
        grouped.setdefault(key(usage), []).append(usage)
    return Summary(period=report.period, group_by=group_by,
                   groups=[_add_up(name, grouped[name], report.period) for name in sorted(grouped)],
                   total=_add_up("total", report.workspaces, report.period), truncated=report.truncated)


WORKSPACE_COLUMNS = ("workspace", "ticket", "title", "project", "owner", "state", "requested_at", "ready_at",
                     "time_to_ready_seconds", "first_opened_at", "last_active_at", "starts", "stops",
                     "stopped_hours", "stopped_intervals", "purged_at", "active_hours")
SUMMARY_COLUMNS = ("name", "workspaces", "launched", "time_to_ready_median_seconds",
                   "time_to_ready_mean_seconds", "active_hours", "starts", "stops", "purged")


async def workspace_usage_csv(*, session: AsyncSession, user: User, query: UsageQuery,
                              now: datetime | None = None) -> str:
    """``workspace_usage`` as CSV. Stopped intervals are ISO 8601 intervals (start/end)
    separated by spaces. Cells a spreadsheet could read as a formula are quoted (ticket titles
    come from trackers)."""
    report = await workspace_usage(session=session, user=user, query=query, now=now)
    return _csv(WORKSPACE_COLUMNS, ([
        w.workspace_id, w.ticket, w.title, w.project, w.owner, w.state, _iso(w.requested_at), _iso(w.ready_at),
        _round(w.time_to_ready_seconds, 2), _iso(w.first_opened_at), _iso(w.last_active_at), w.starts, w.stops,
        _round(w.stopped_hours, 4), " ".join(f"{_iso(a)}/{_iso(b)}" for a, b in w.stopped_intervals),
        _iso(w.purged_at), _round(w.active_hours, 4)] for w in report.workspaces))


async def summary_csv(*, session: AsyncSession, user: User, query: UsageQuery, group_by: GroupBy,
                      now: datetime | None = None) -> str:
    """``summary`` as CSV, one row per group, then the total."""
    found = await summary(session=session, user=user, query=query, group_by=group_by, now=now)
    return _csv((group_by, *SUMMARY_COLUMNS[1:]), ([
        g.name, g.workspaces, g.launched, _round(g.time_to_ready_median, 2), _round(g.time_to_ready_mean, 2),
        _round(g.active_hours, 4), g.starts, g.stops, g.purged] for g in [*found.groups, found.total]))


# Queries ----------------------------------------------------------------------------------------


async def _where(session: AsyncSession, user: User, query: UsageQuery, period: Period) -> list[ColumnElement[bool]]:
    """The workspaces of the period the caller may see, with the query's filters."""
    where: list[ColumnElement[bool]] = [
        Workspace.created_at < period.until,
        or_(Workspace.purged_at.is_(None), Workspace.purged_at >= period.since),
    ]
    owner = (query.owner or "").strip()
    if owner and owner != user.username:
        if not may(user.role, Access.READ, owner=False):
            raise Forbidden("Only reviewers and admins may see another person's usage.",
                            hint="Leave out the user filter to see your own.")
        owner_id = await session.scalar(select(User.id).where(User.username == owner))
        if owner_id is None:
            raise NotFound(f"No user named {owner!r}.", hint="See 'taskspace admin user list'.")
        where.append(Workspace.owner_id == owner_id)
    elif owner or not may(user.role, Access.READ, owner=False):
        where.append(Workspace.owner_id == user.id)
    if query.project and query.project.strip():
        project = await projects.get(session=session, ref=query.project.strip())
        where.append(Workspace.project_id == project.id)
    return where


async def _fold_transitions(session: AsyncSession, ids: Select[Any], period: Period,
                            now: datetime) -> dict[str, UsageTally]:
    """Every transition of the workspaces ``ids`` selects inside the period, and the last one
    before it (the state at ``since``), folded in one pass in (workspace, id) order."""
    # A workspace claimed from the warm pool was requested when claimed: its time as a spare is nobody's use.
    requested = select(Workspace.created_at).where(Workspace.id == Event.workspace_id).scalar_subquery()
    transitions = [Event.kind == "transition", Event.workspace_id.in_(ids), Event.at >= requested]
    last_before = (select(func.max(Event.id)).where(*transitions, Event.at < period.since)
                   .group_by(Event.workspace_id))
    stmt = (select(Event.workspace_id, Event.at, Event.to_state)
            .where(*transitions, Event.at < period.until, or_(Event.at >= period.since, Event.id.in_(last_before)))
            .order_by(Event.workspace_id, Event.id)
            .execution_options(yield_per=EVENT_BATCH))
    tallies: dict[str, UsageTally] = {}
    tally: UsageTally | None = None
    current = None
    async for row in await session.stream(stmt):
        if row.workspace_id != current:
            current, tally = row.workspace_id, UsageTally(period, now)
            tallies[current] = tally
        assert tally is not None
        tally.add(row.at, row.to_state)
    return tallies


# Adding up --------------------------------------------------------------------------------------


def _add_up(name: str, rows: Sequence[WorkspaceUsage], period: Period) -> GroupUsage:
    launched = [w for w in rows if w.requested_at in period]
    ready = [w.time_to_ready_seconds for w in launched if w.time_to_ready_seconds is not None]
    return GroupUsage(
        name=name, workspaces=len(rows), launched=len(launched),
        time_to_ready_median=statistics.median(ready) if ready else None,
        time_to_ready_mean=math.fsum(ready) / len(ready) if ready else None,
        active_hours=math.fsum(w.active_hours for w in rows),
        starts=sum(w.starts for w in rows), stops=sum(w.stops for w in rows),
        purged=sum(1 for w in rows if w.purged_at in period))


def _csv(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for row in rows:
        writer.writerow([csv_cell(v) for v in row])
    return out.getvalue()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
