"""Loading a workspace with everything a step needs, and guarded writes back."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from taskspace.core.errors import NotFound, StaleWrite, TaskspaceError
from taskspace.core.states import State, Step, can_transition
from taskspace.db.engine import transaction
from taskspace.db.models import Event, GitToken, Project, Ticket, User, Workspace, WorkspaceRepo, utcnow
from taskspace.gitops.runner import GitCredential
from taskspace.services import git_tokens, notifications
from taskspace.services.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass
class Snapshot:
    """A workspace as loaded at one version, detached from any session."""

    ws: Workspace
    ticket: Ticket | None  # None for a workspace of the warm pool (services.pool)
    project: Project
    owner: User | None
    repos: list[WorkspaceRepo]
    credentials: dict[str, GitCredential | None] = field(default_factory=dict)
    token_names: dict[str, str] = field(default_factory=dict)  # repository name → token name
    #: What a finished step recorded, written with the next write: the next step's start or a
    #: transition follows at once, and one commit is a few milliseconds of a launch.
    unwritten_values: dict[str, Any] = field(default_factory=dict)
    unwritten_events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.ws.id

    @property
    def state(self) -> State:
        return State(self.ws.state)

    @property
    def version(self) -> int:
        return self.ws.version

    @property
    def key(self) -> str | None:
        return self.ticket.key if self.ticket else None

    @property
    def primary(self) -> WorkspaceRepo:
        return next((r for r in self.repos if r.is_primary), self.repos[0])


async def load(rt: Runtime, workspace_id: str) -> Snapshot:
    async with rt.readers() as session:
        ws = await session.get(Workspace, workspace_id, populate_existing=True)
        if ws is None:
            raise NotFound(f"Workspace {workspace_id} does not exist.")
        token_ids = {r.token_id for r in ws.repos if r.token_id}
        tokens = {t.id: t for t in await session.scalars(select(GitToken).where(GitToken.id.in_(token_ids)))} \
            if token_ids else {}
        project = await session.get(Project, ws.project_id)
        assert project is not None
        snap = Snapshot(ws=ws, ticket=ws.ticket, project=project, owner=ws.owner, repos=list(ws.repos))
    for repo in snap.repos:
        token = tokens.get(repo.token_id) if repo.token_id else None
        snap.credentials[repo.name] = git_tokens.credential(rt.vault, token) if token else None
        if token is not None:
            snap.token_names[repo.name] = token.name
    return snap


def _now() -> datetime:
    return utcnow()


async def apply(rt: Runtime, snap: Snapshot, values: dict[str, Any], *,
                events: list[dict[str, Any]] | None = None,
                notify: tuple[str, dict[str, Any]] | None = None) -> None:
    """Write ``values`` if the row is still at ``snap.version``; bump the version, append
    ``events`` and, with ``notify`` (kind, context), the owner's notification — all in one
    transaction (no one is told of a spare's changes), after what a finished step left unwritten.
    Raises StaleWrite when another worker or a user changed the row meanwhile."""
    values = {**snap.unwritten_values, **values}
    events = [*snap.unwritten_events, *(events or [])]
    async with transaction(rt.sessions) as session:
        result = await session.execute(
            update(Workspace)
            .where(Workspace.id == snap.id, Workspace.version == snap.version)
            .values(**values, version=snap.version + 1, updated_at=_now())
        )
        if result.rowcount != 1:
            raise StaleWrite(f"Workspace {snap.id} changed while a step ran; its result was dropped.")
        for event in events:
            session.add(Event(workspace_id=snap.id, **event))
        if notify is not None and snap.owner is not None and snap.ticket is not None:
            kind, context = notify
            await notifications.enqueue(
                session, settings=rt.settings, user=snap.owner, kind=kind, workspace_id=snap.id, bus=rt.bus,
                context={"ticket": snap.ticket.key, "title": snap.ticket.title, "branch": snap.ws.branch, **context})
    snap.unwritten_values, snap.unwritten_events = {}, []
    for key, value in values.items():
        setattr(snap.ws, key, value)
    snap.ws.version += 1
    if events:
        await rt.bus.published()


async def transition(rt: Runtime, snap: Snapshot, to: State, *, actor: str = "taskspace",
                     reason: str | None = None, duration: float | None = None,
                     values: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
                     notify: tuple[str, dict[str, Any]] | None = None) -> None:
    src = snap.state
    if src == to:
        return
    if not can_transition(src, to):
        raise StaleWrite(f"Workspace {snap.id} cannot go from {src} to {to}.")
    event = {"actor": actor, "kind": "transition", "from_state": src.value, "to_state": to.value,
             "reason": reason, "duration_ms": int(duration * 1000) if duration is not None else None,
             "data": data or {}, "step": snap.ws.step if to == State.FAILED else None}
    await apply(rt, snap, {"state": to.value, **(values or {})}, events=[event], notify=notify)


class StepTimer:
    """Marks a step as current, then records its outcome as a step event with its duration.

    Both go with the next write (:attr:`Snapshot.unwritten_events`): most steps take a few
    milliseconds, about what a write costs. A step still running after :attr:`SHOWN_AFTER` is
    written as current then, while it runs, so that people watching see it."""

    SHOWN_AFTER = 0.05

    def __init__(self, rt: Runtime, snap: Snapshot, step: Step):
        self.rt, self.snap, self.step = rt, snap, step
        self.data: dict[str, Any] = {}
        self.values: dict[str, Any] = {}
        self.status = "ok"
        self.reason: str | None = None
        self._shown: asyncio.Task[None] | None = None
        self._showing = False

    async def __aenter__(self) -> StepTimer:
        # In memory at once: the next write carries it, a failure's among them.
        self.snap.ws.step = self.snap.unwritten_values["step"] = self.step.value
        delay = self.rt.settings.failpoint_delays.get(self.step.value)
        if delay:
            # Testing hook (TASKSPACE_FAILPOINTS): hold the step open so a test can kill the server here.
            await apply(self.rt, self.snap, {})
            await asyncio.sleep(delay)
        else:
            self._shown = asyncio.create_task(self._show())
        self.started = time.monotonic()
        return self

    async def _show(self) -> None:
        await asyncio.sleep(self.SHOWN_AFTER)
        self._showing = True  # from here on it is waited for, never cancelled mid-write
        await apply(self.rt, self.snap, {})

    async def _settle_shown(self) -> None:
        """Cancel writing the step as current if it has not begun; else wait until it is written."""
        if self._shown is None:
            return
        if not self._showing:
            self._shown.cancel()
        await asyncio.wait([self._shown])
        if not self._shown.cancelled() and (error := self._shown.exception()) is not None:
            raise error

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            try:
                await self._settle_shown()
            except TaskspaceError as shown_error:  # the step's own failure is what to report
                log.info("workspace %s: step %s not shown: %s", self.snap.id, self.step, shown_error.message)
            return  # the driver records the failure with its reason
        await self._settle_shown()
        elapsed = time.monotonic() - self.started
        self.snap.unwritten_values.update(self.values)
        for key, value in self.values.items():
            setattr(self.snap.ws, key, value)
        self.snap.unwritten_events.append({
            "actor": "taskspace", "kind": "step", "step": self.step.value, "status": self.status,
            "reason": self.reason, "duration_ms": int(elapsed * 1000), "data": self.data})


async def record_note(rt: Runtime, workspace_id: str, *, actor: str, reason: str,
                      data: dict[str, Any] | None = None) -> None:
    async with transaction(rt.sessions) as session:
        session.add(Event(workspace_id=workspace_id, actor=actor, kind="note", reason=reason, data=data or {}))
    await rt.bus.published()
