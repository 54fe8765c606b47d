"""The purge policy against the database: the inputs of every live workspace in one query,
a preview of what the next pass would do and why, and applying the decisions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from taskspace.core.states import Desired, State
from taskspace.db.models import Event, Project, Ticket, User, Workspace, utcnow
from taskspace.services import notifications
from taskspace.services.bus import Bus
from taskspace.services.purge_policy import PolicyDecision, PolicyInput, decide
from taskspace.settings import Settings

#: States the policy acts on (a purge in progress or blocked is the lifecycle's business).
SUBJECT_STATES = [s.value for s in State if s not in {State.PURGED, State.PURGING, State.PURGE_BLOCKED}]


@dataclass
class Subject:
    workspace_id: str
    version: int
    key: str
    owner: str
    owner_id: int
    project: str
    state: str
    purge_due_at: datetime | None
    policy: PolicyInput


async def subjects(session: AsyncSession, *, project: str | None = None) -> list[Subject]:
    """Every live workspace the policy may act on, with its ticket and rules (one query)."""
    stmt = (select(Workspace.id, Workspace.version, Workspace.state, Workspace.desired, Workspace.created_at,
                   Workspace.last_started_at, Workspace.last_active_at, Workspace.purge_due_at, Workspace.owner_id,
                   Ticket.key, Ticket.status, Ticket.status_category, Ticket.status_changed_at,
                   Project.name, Project.tracker_stale_since, Project.purge_on_category, Project.purge_on_statuses,
                   Project.purge_grace_seconds, Project.max_age_seconds, Project.idle_stop_seconds, User.username)
            .join(Ticket, Ticket.id == Workspace.ticket_id)
            .join(Project, Project.id == Workspace.project_id)
            .join(User, User.id == Workspace.owner_id)
            .where(Workspace.state.in_(SUBJECT_STATES), Workspace.desired != Desired.PURGED.value))
    if project:
        stmt = stmt.where((Project.name == project) | (Project.key == project.upper()))
    found = []
    for r in (await session.execute(stmt)).all():
        found.append(Subject(
            workspace_id=r.id, version=r.version, key=r.key, owner=r.username, owner_id=r.owner_id,
            project=r.name, state=r.state, purge_due_at=r.purge_due_at,
            policy=PolicyInput(state=r.state, desired=r.desired, created_at=r.created_at,
                               last_started_at=r.last_started_at, last_active_at=r.last_active_at,
                               status=r.status, status_category=r.status_category,
                               status_changed_at=r.status_changed_at, stale_since=r.tracker_stale_since,
                               purge_on_category=r.purge_on_category,
                               purge_on_statuses=list(r.purge_on_statuses or []),
                               grace_seconds=r.purge_grace_seconds, max_age_seconds=r.max_age_seconds,
                               idle_stop_seconds=r.idle_stop_seconds)))
    return found


@dataclass
class PreviewRow:
    key: str
    owner: str
    project: str
    state: str
    action: str  # purge | schedule purge | stop | hold | keep
    at: datetime | None
    reason: str


def describe(subject: Subject, decision: PolicyDecision, now: datetime) -> PreviewRow:
    base = dict(key=subject.key, owner=subject.owner, project=subject.project, state=subject.state)
    if decision.purge_now(now):
        return PreviewRow(**base, action="purge", at=decision.due_at, reason=decision.reason or "")
    if decision.stop:
        return PreviewRow(**base, action="stop", at=now, reason=decision.stop_reason or "")
    if decision.held:
        return PreviewRow(**base, action="hold", at=None, reason=decision.held)
    if decision.due_at is not None:
        return PreviewRow(**base, action="schedule purge", at=decision.due_at, reason=decision.reason or "")
    return PreviewRow(**base, action="keep", at=None, reason="the ticket is active")


async def preview(*, session: AsyncSession, user: User, project: str | None = None,
                  now: datetime | None = None) -> list[PreviewRow]:
    """What the next pass would do to each live workspace, and why (nothing is changed).
    Developers see their own workspaces; reviewers and admins everyone's."""
    now = now or utcnow()
    rows = []
    for subject in await subjects(session, project=project):
        if user.role == "developer" and subject.owner_id != user.id:
            continue
        rows.append(describe(subject, decide(subject.policy, now), now))
    order = {"purge": 0, "stop": 1, "schedule purge": 2, "hold": 3, "keep": 4}
    return sorted(rows, key=lambda r: (order[r.action], r.at or now, r.key))


@dataclass
class Applied:
    purges: list[str]
    stops: list[str]
    scheduled: list[str]


async def apply(*, session: AsyncSession, settings: Settings, bus: Bus | None = None,
                now: datetime | None = None) -> Applied:
    """Apply every decision in one transaction: request purges and stops (bumping the version,
    so a step in flight drops its result), keep purge_due_at current, note each change, and
    tell owners when a purge is scheduled."""
    now = now or utcnow()
    done = Applied(purges=[], stops=[], scheduled=[])
    for subject in await subjects(session):
        decision = decide(subject.policy, now)
        values: dict[str, Any] = {}
        notes: list[str] = []
        if decision.purge_now(now):
            values = {"desired": Desired.PURGED.value, "purge_due_at": decision.due_at}
            notes.append(f"purge requested by policy: {decision.reason}")
            done.purges.append(subject.workspace_id)
        elif decision.stop:
            values = {"desired": Desired.STOPPED.value}
            notes.append(f"stop requested by policy: {decision.stop_reason}")
            done.stops.append(subject.workspace_id)
        elif decision.held is None and decision.due_at != subject.purge_due_at:
            values = {"purge_due_at": decision.due_at}
            if decision.due_at is None:
                notes.append("scheduled purge cancelled: the ticket is active again")
            else:
                notes.append(f"purge scheduled for {decision.due_at:%Y-%m-%d %H:%M UTC}: {decision.reason}")
                done.scheduled.append(subject.workspace_id)
                await notifications.enqueue(
                    session, settings=settings, user=await session.get(User, subject.owner_id),
                    kind="purge_scheduled", workspace_id=subject.workspace_id, bus=bus,
                    context={"ticket": subject.key, "due_at": decision.due_at, "reason": decision.reason})
        if values:
            await session.execute(update(Workspace).where(Workspace.id == subject.workspace_id)
                                  .values(**values, version=Workspace.version + 1, updated_at=now))
            for note in notes:
                session.add(Event(workspace_id=subject.workspace_id, actor="policy", kind="note", reason=note))
    return done
