"""Resource use of running workspaces: sampling, the dashboard, its CSV export and the
Prometheus exposition.

The reconciler calls :func:`sample` on every turn of its loop; a sampling round runs once per
``metrics_interval`` (the time of the last round is kept in the database, so restarts and other
replicas keep the pace). A round writes one ``MetricSample`` per running workspace, all with the
same ``at``, and deletes samples older than ``metrics_retention_days``.

Reads stay bounded at scale: the latest sample of a workspace is one lookup in the
``(workspace_id, at)`` index, time series read a time range of the ``at`` index, and every list
has a cap.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, delete, distinct, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from taskspace.core.errors import Forbidden
from taskspace.core.roles import Access, may
from taskspace.core.states import ACTIVE, State
from taskspace.db.engine import transaction
from taskspace.db.models import MetricSample, Project, Ticket, User, Workspace, utcnow
from taskspace.plugins.backends.base import ResourceStats, SupportsStats
from taskspace.services import rounds
from taskspace.services.audit import csv_cell
from taskspace.services.runtime import Runtime

log = logging.getLogger(__name__)

#: Meta key holding the time of the last sampling round (ISO 8601, UTC).
SAMPLED_AT = "metrics_sampled_at"
#: Rows of the running-workspaces table on the page; the CSV export and /metrics take more.
TABLE_ROWS = 1000
EXPORT_ROWS = 10_000
READY_WINDOW = timedelta(days=30)
READY_POINTS = 5000
RUNNING_WINDOW = timedelta(days=7)
RUNNING_POINTS = 720
STORAGE_PROJECTS = 20
QUANTILES = (0.5, 0.9, 0.99)
#: Per running workspace: metric name, attribute of RunningWorkspace, help text.
RESOURCE_GAUGES = (
    ("taskspace_workspace_cpu_percent", "cpu_percent",
     "CPU use of a running workspace between its last two samples, in percent of one CPU."),
    ("taskspace_workspace_memory_bytes", "memory_bytes", "Memory use of a running workspace at its last sample."),
    ("taskspace_workspace_disk_bytes", "disk_bytes", "Size of a running workspace's volume at its last sample."),
)


# Sampling ---------------------------------------------------------------------------------------


@dataclass
class SampleReport:
    at: datetime
    running: int  # workspaces in state ready when the round began
    sampled: int  # samples written
    expired: int  # samples deleted by the retention


def cpu_percent(previous: tuple[int | None, int | None] | None, current: ResourceStats) -> float | None:
    """CPU use between two readings, in percent of one CPU (200 = two CPUs busy): the container's
    CPU time over the host's, times the host's CPUs. None for a first reading, and when the
    counters went backwards (the container restarted in between) or the host's did not move."""
    if previous is None or current.cpu_total is None or current.cpu_system is None:
        return None
    before_total, before_system = previous
    if before_total is None or before_system is None:
        return None
    used, elapsed = current.cpu_total - before_total, current.cpu_system - before_system
    if used < 0 or elapsed <= 0:
        return None
    return used / elapsed * current.online_cpus * 100


async def sample(rt: Runtime, *, force: bool = False) -> SampleReport | None:
    """One sampling round if ``metrics_interval`` has passed since the last one (or ``force``);
    None when it was not due or the backend cannot report resource use.

    Cheap when not due: one primary-key read. The round itself is load (a short transaction
    that also claims the round, so two callers do not both sample) → the engine's readings (no
    session open) → write (a short transaction). A round whose engine call fails is not
    retried before the next interval; BackendError propagates to the caller, which logs it.
    """
    if not issubclass(type(rt.backend), SupportsStats):
        return None
    interval = timedelta(seconds=rt.settings.metrics_interval)
    if not force and not await rounds.due(rt, SAMPLED_AT, interval):
        return None

    try:
        async with transaction(rt.sessions) as session:
            if not await rounds.claim(session, SAMPLED_AT, interval=interval, force=force):
                return None
            running = {row.id: row for row in await session.execute(
                select(Workspace.id, Workspace.project_id, Workspace.owner_id)
                .where(Workspace.state == State.READY.value, Workspace.owner_id.is_not(None)))}
            previous = {row.workspace_id: (row.cpu_total, row.cpu_system) for row in await session.execute(
                select(MetricSample.workspace_id, MetricSample.cpu_total, MetricSample.cpu_system)
                .select_from(Workspace).join(MetricSample, _latest_sample())
                .where(Workspace.state == State.READY.value))}
    except IntegrityError:  # another process recorded its first round at the same moment
        return None

    readings: dict[str, ResourceStats] = {}
    if running:
        backend: Any = rt.backend  # SupportsStats, checked above
        readings = await backend.sample(sorted(running))
    at = utcnow()
    rows: list[dict[str, Any]] = [
        {"at": at, "workspace_id": workspace_id, "project_id": running[workspace_id].project_id,
         "owner_id": running[workspace_id].owner_id,
         "cpu_percent": cpu_percent(previous.get(workspace_id), stats),
         "memory_bytes": stats.memory_bytes, "disk_bytes": stats.disk_bytes,
         "cpu_total": stats.cpu_total, "cpu_system": stats.cpu_system}
        for workspace_id, stats in sorted(readings.items()) if workspace_id in running]
    cutoff = at - timedelta(days=rt.settings.metrics_retention_days)
    async with transaction(rt.sessions) as session:
        if rows:
            # A workspace deleted meanwhile (its ticket removed) would break the foreign key.
            exist = set(await session.scalars(
                select(Workspace.id).where(Workspace.id.in_([r["workspace_id"] for r in rows]))))
            rows = [r for r in rows if r["workspace_id"] in exist]
        if rows:
            await session.execute(insert(MetricSample), rows)
        expired = (await session.execute(delete(MetricSample).where(MetricSample.at < cutoff))).rowcount
    return SampleReport(at=at, running=len(running), sampled=len(rows), expired=expired or 0)


def _latest_sample() -> ColumnElement[bool]:
    """Join condition: the newest MetricSample of ``Workspace`` (an index lookup per workspace)."""
    newer = aliased(MetricSample)
    latest_at = select(func.max(newer.at)).where(newer.workspace_id == Workspace.id).scalar_subquery()
    return and_(MetricSample.workspace_id == Workspace.id, MetricSample.at == latest_at)


# Reading ----------------------------------------------------------------------------------------


@dataclass
class RunningWorkspace:
    """A ready workspace with its latest sample (None values: not sampled yet)."""

    workspace_id: str
    ticket: str
    title: str
    owner: str
    project: str
    cpu_percent: float | None
    memory_bytes: int | None
    disk_bytes: int | None
    sampled_at: datetime | None
    started_at: datetime | None
    uptime_seconds: float | None
    ready_seconds: float | None


@dataclass
class Totals:
    running: int = 0
    sampled: int = 0
    cpu_percent_avg: float | None = None
    cpu_percent_sum: float | None = None
    memory_avg: float | None = None
    memory_sum: int | None = None
    disk_sum: int | None = None


@dataclass
class TimeToReady:
    """Launch → first ready of the workspaces that became ready in the window."""

    count: int = 0
    total: float = 0.0
    average: float | None = None
    quantiles: dict[float, float] = field(default_factory=dict)


@dataclass
class ProjectStorage:
    project: str
    disk_bytes: int
    workspaces: int


@dataclass
class Dashboard:
    everyone: bool  # False: only the caller's workspaces are counted
    now: datetime
    states: dict[str, int]  # every state, in the state machine's order
    running: list[RunningWorkspace]
    totals: Totals
    time_to_ready: TimeToReady
    ready_points: list[tuple[float, float]]  # (epoch seconds of ready_at, seconds to ready)
    running_points: list[tuple[float, int | None]]  # (epoch seconds, running workspaces; None: a gap)
    storage: list[ProjectStorage]
    last_sample_at: datetime | None  # of the last round (any workspace's)

    @property
    def storage_max(self) -> int:
        return max((p.disk_bytes for p in self.storage), default=0)

    def chart_data(self) -> dict[str, Any]:
        """What the page's charts draw (uPlot's column layout)."""
        return {
            "now": self.now.timestamp(),
            "ready": [[p[0] for p in self.ready_points], [round(p[1], 2) for p in self.ready_points]],
            "running": [[p[0] for p in self.running_points], [p[1] for p in self.running_points]],
        }


def _scope(user: User) -> tuple[bool, list[ColumnElement[bool]]]:
    """Reviewers and admins see every workspace; a developer only theirs."""
    everyone = may(user.role, Access.READ, owner=False)
    return everyone, [] if everyone else [Workspace.owner_id == user.id]


def _running_query(where: Sequence[ColumnElement[bool]]) -> Select[Any]:
    return (select(Workspace.id, Workspace.last_started_at, Workspace.ready_seconds, Ticket.key, Ticket.title,
                   User.username, Project.name.label("project"), MetricSample.cpu_percent,
                   MetricSample.memory_bytes, MetricSample.disk_bytes, MetricSample.at)
            .select_from(Workspace)
            .join(Ticket, Ticket.id == Workspace.ticket_id)
            .join(Project, Project.id == Workspace.project_id)
            .join(User, User.id == Workspace.owner_id)
            .outerjoin(MetricSample, _latest_sample())
            .where(Workspace.state == State.READY.value, *where)
            .order_by(Ticket.key, User.username, Workspace.id))


async def _running(session: AsyncSession, where: Sequence[ColumnElement[bool]], now: datetime,
                   limit: int) -> list[RunningWorkspace]:
    found: dict[str, RunningWorkspace] = {}
    for row in await session.execute(_running_query(where).limit(limit)):
        if row.id in found:  # two samples with the same time: keep one
            continue
        found[row.id] = RunningWorkspace(
            workspace_id=row.id, ticket=row.key, title=row.title, owner=row.username, project=row.project,
            cpu_percent=row.cpu_percent, memory_bytes=row.memory_bytes, disk_bytes=row.disk_bytes,
            sampled_at=row.at, started_at=row.last_started_at,
            uptime_seconds=max(0.0, (now - row.last_started_at).total_seconds()) if row.last_started_at else None,
            ready_seconds=row.ready_seconds)
    return list(found.values())


async def _totals(session: AsyncSession, where: Sequence[ColumnElement[bool]]) -> Totals:
    row = (await session.execute(
        select(func.count(distinct(Workspace.id)), func.count(MetricSample.id), func.avg(MetricSample.cpu_percent),
               func.sum(MetricSample.cpu_percent), func.avg(MetricSample.memory_bytes),
               func.sum(MetricSample.memory_bytes), func.sum(MetricSample.disk_bytes))
        .select_from(Workspace).outerjoin(MetricSample, _latest_sample())
        .where(Workspace.state == State.READY.value, *where))).one()
    return Totals(running=row[0] or 0, sampled=row[1] or 0, cpu_percent_avg=_float(row[2]),
                  cpu_percent_sum=_float(row[3]), memory_avg=_float(row[4]), memory_sum=_int(row[5]),
                  disk_sum=_int(row[6]))


async def _states(session: AsyncSession, where: Sequence[ColumnElement[bool]]) -> dict[str, int]:
    counts = dict((await session.execute(
        select(Workspace.state, func.count()).where(*where).group_by(Workspace.state))).all())
    return {state.value: counts.get(state.value, 0) for state in State}


async def _ready_points(session: AsyncSession, where: Sequence[ColumnElement[bool]],
                        now: datetime) -> list[tuple[datetime, float]]:
    """The most recent READY_POINTS first-ready times of the window, oldest first."""
    rows = (await session.execute(
        select(Workspace.ready_at, Workspace.ready_seconds)
        .where(Workspace.ready_at >= now - READY_WINDOW, Workspace.ready_seconds.is_not(None), *where)
        .order_by(Workspace.ready_at.desc()).limit(READY_POINTS))).all()
    return [(at, seconds) for at, seconds in reversed(rows) if at is not None and seconds is not None]


def time_to_ready(seconds: Iterable[float]) -> TimeToReady:
    values = sorted(seconds)
    if not values:
        return TimeToReady()
    total = math.fsum(values)
    return TimeToReady(count=len(values), total=total, average=total / len(values),
                       quantiles={q: _quantile(values, q) for q in QUANTILES})


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks."""
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


async def _running_points(session: AsyncSession, user: User, everyone: bool,
                          now: datetime) -> list[tuple[float, int | None]]:
    """Distinct workspaces per sampling round of the window, at most RUNNING_POINTS (the peak of
    each time bucket). A pause longer than three usual intervals becomes a gap (None)."""
    stmt = (select(MetricSample.at, func.count(distinct(MetricSample.workspace_id)))
            .where(MetricSample.at >= now - RUNNING_WINDOW)
            .group_by(MetricSample.at).order_by(MetricSample.at))
    if not everyone:
        stmt = stmt.where(MetricSample.owner_id == user.id)
    rounds = [(at.timestamp(), count) for at, count in await session.execute(stmt)]
    if len(rounds) > RUNNING_POINTS:
        start, width = rounds[0][0], (rounds[-1][0] - rounds[0][0]) / RUNNING_POINTS or 1.0
        buckets: dict[int, tuple[float, int]] = {}
        for at, count in rounds:
            index = min(int((at - start) / width), RUNNING_POINTS - 1)
            if index not in buckets or count > buckets[index][1]:
                buckets[index] = (at, count)
        rounds = [buckets[i] for i in sorted(buckets)]
    gaps = sorted(b[0] - a[0] for a, b in itertools.pairwise(rounds))
    usual = gaps[(len(gaps) - 1) // 2] if gaps else 0.0  # the lower median
    points: list[tuple[float, int | None]] = []
    for i, (at, count) in enumerate(rounds):
        if i and usual and at - rounds[i - 1][0] > 3 * usual:
            points.append(((at + rounds[i - 1][0]) / 2, None))
        points.append((at, count))
    return points


async def _storage(session: AsyncSession, where: Sequence[ColumnElement[bool]]) -> list[ProjectStorage]:
    """The latest known volume size of each workspace not purged, summed per project (largest
    first; the STORAGE_PROJECTS largest)."""
    total = func.sum(MetricSample.disk_bytes)
    rows = await session.execute(
        select(Project.name, total, func.count(distinct(Workspace.id)))
        .select_from(Workspace).join(Project, Project.id == Workspace.project_id)
        .join(MetricSample, _latest_sample())
        # IN, not !=: the planner then starts from the workspaces' state index, not from the samples.
        .where(Workspace.state.in_(sorted(s.value for s in ACTIVE)), MetricSample.disk_bytes.is_not(None),
               *where)
        .group_by(Project.name).order_by(total.desc(), Project.name).limit(STORAGE_PROJECTS))
    return [ProjectStorage(project=name, disk_bytes=_int(size) or 0, workspaces=count) for name, size, count in rows]


async def dashboard(*, session: AsyncSession, user: User, now: datetime) -> Dashboard:
    """What /dashboard shows to ``user``: everyone's workspaces for reviewers and admins, their
    own for developers."""
    everyone, where = _scope(user)
    ready = await _ready_points(session, where, now)
    return Dashboard(
        everyone=everyone, now=now,
        states=await _states(session, where),
        running=await _running(session, where, now, TABLE_ROWS),
        totals=await _totals(session, where),
        time_to_ready=time_to_ready(seconds for _, seconds in ready),
        ready_points=[(at.timestamp(), seconds) for at, seconds in ready],
        running_points=await _running_points(session, user, everyone, now),
        storage=await _storage(session, where),
        last_sample_at=await session.scalar(select(func.max(MetricSample.at))),
    )


CSV_COLUMNS = ("ticket", "title", "owner", "project", "cpu_percent", "memory_bytes", "disk_bytes",
               "started_at", "uptime_seconds", "ready_seconds", "sampled_at", "workspace")


async def running_csv(*, session: AsyncSession, user: User, now: datetime) -> str:
    """The running-workspaces table of the dashboard as CSV (at most EXPORT_ROWS rows). Cells a
    spreadsheet could read as a formula are quoted (ticket titles come from trackers)."""
    _, where = _scope(user)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for w in await _running(session, where, now, EXPORT_ROWS):
        writer.writerow([csv_cell(v) for v in (
            w.ticket, w.title, w.owner, w.project, _round(w.cpu_percent, 2), w.memory_bytes, w.disk_bytes,
            w.started_at.isoformat() if w.started_at else None, _round(w.uptime_seconds, 0),
            _round(w.ready_seconds, 2), w.sampled_at.isoformat() if w.sampled_at else None, w.workspace_id)])
    return out.getvalue()


# Prometheus -------------------------------------------------------------------------------------


def label_value(value: object) -> str:
    """A label value escaped for the text exposition format 0.0.4."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def sample_value(value: float | int) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(value)


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float | int, labels: dict[str, object] | None = None) -> None:
        text = ",".join(f'{key}="{label_value(v)}"' for key, v in (labels or {}).items())
        self.lines.append(f"{name}{{{text}}} {sample_value(value)}" if text else f"{name} {sample_value(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


async def prometheus(*, session: AsyncSession, user: User, now: datetime) -> str:
    """Every workspace's state counts, the latest resource use of each running workspace, and
    the time to ready of the last 30 days, in Prometheus' text format 0.0.4 (reviewers and
    admins: the metrics name every workspace)."""
    if not may(user.role, Access.READ, owner=False):
        raise Forbidden("Only reviewers and admins may read the metrics of every workspace.",
                        hint="Use an API token of a reviewer or admin; your own workspaces are on /dashboard.")
    out = _Exposition()
    out.family("taskspace_workspaces", "gauge", "Workspaces by state (purged ones are kept as history).")
    for state, count in (await _states(session, [])).items():
        out.sample("taskspace_workspaces", count, {"state": state})

    running = await _running(session, [], now, EXPORT_ROWS)
    for name, attribute, help_text in RESOURCE_GAUGES:
        out.family(name, "gauge", help_text)
        for w in running:
            value = getattr(w, attribute)
            if value is not None:
                out.sample(name, value, {"workspace": w.workspace_id, "ticket": w.ticket, "project": w.project,
                                         "owner": w.owner})

    stats = time_to_ready(seconds for _, seconds in await _ready_points(session, [], now))
    name = "taskspace_time_to_ready_seconds"
    out.family(name, "summary", "Seconds from launch to first ready of the workspaces that became ready in "
               "the last 30 days.")
    for q in QUANTILES:
        out.sample(name, stats.quantiles.get(q, math.nan), {"quantile": q})
    out.sample(f"{name}_sum", stats.total)
    out.sample(f"{name}_count", stats.count)
    return out.text()


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _round(value: float | None, digits: int) -> float | int | None:
    if value is None:
        return None
    return round(value) if digits == 0 else round(value, digits)


__all__ = ["Dashboard", "RunningWorkspace", "SampleReport", "cpu_percent", "dashboard",
           "label_value", "prometheus", "running_csv", "sample"]
