"""The warm pool: prebuilt workspaces that a launch claims instead of building one.

A project with ``warm_pool`` = N keeps N *spares*: workspaces with no ticket and no owner, built
like any other from the project's default branches (image, volume, container, clone, services,
then ``onCreateCommand`` and ``updateContentCommand``) and left ready. A launch whose
environment is a spare's (same image, environment, services, repositories and limits: the
``pool_key``) claims it in one guarded update: the spare takes the ticket, the owner and the
launch's decisions, and starts again. Its clone step fetches from the mirrors and moves each
repository to the ticket branch; then postCreateCommand, postStartCommand and the startup
script run. Building the container, cloning and starting the services are skipped.

The reconciler's leader keeps each pool full, one spare at a time and only while no other work
is in flight, so that building spares never slows a launch down. It replaces spares whose
environment no longer matches the default branches or that are older than
``pool_recycle_hours``, removes a surplus, and purges a failed spare after a back-off, during
which the project gets no new spare.

Spares are built only from mirrors already on the server (a launch fetches them with its user's
token): the pool never talks to a remote, and a spare holds nothing that the developer who
claims it could not read, since the claim follows that developer's own preflight.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from taskspace.core.errors import TaskspaceError
from taskspace.core.states import Desired, State
from taskspace.db.engine import transaction
from taskspace.db.models import NOT_PURGED, Event, Project, User, Workspace, WorkspaceRepo, utcnow
from taskspace.plugins.backends.base import SupportsHeldShell
from taskspace.services.lifecycle import plan as plans
from taskspace.services.lifecycle.plan import Plan
from taskspace.services.lifecycle.preflight import PreflightInput, PreflightResult, RepoChoice, run_preflight
from taskspace.services.lifecycle.prepare import limits
from taskspace.services.runtime import Runtime

log = logging.getLogger(__name__)

#: How long after a spare failed its project gets no new one (the failed one stays to be seen).
FAILED_BACKOFF = timedelta(minutes=10)
MAX_SIZE = 10


async def key_for(rt: Runtime, project: Project, plan: Plan, workspace_id: str) -> str:
    """The pool key of a workspace of ``project`` with ``plan`` (see ``plans.pool_key``)."""
    mirror = Path(plan.mirrors[plan.primary])
    init_files = {f.source: await rt.mirrors.tree_id(mirror, plan.commit, f.source)
                  for service in plan.services for f in service.decl.init_files}
    shape = {"backend": rt.settings.backend, "network": rt.settings.workspace_network,
             "limits": limits(rt.settings, project), "init_files": init_files}
    return plans.pool_key(plan, workspace_id=workspace_id, shape=shape)


# Claiming (in a launch) ---------------------------------------------------------------------------


@dataclass
class Claim:
    """What a launch decided, to give to a spare."""

    project_id: int
    ticket_id: int
    user: User
    branch: str
    key: str
    workspace_id: str  # the id the launch's preflight ran for
    result: PreflightResult
    repos: list[WorkspaceRepo]  # the launch's rows: branches, decisions and tokens per repository


async def claim(session: AsyncSession, want: Claim) -> Workspace | None:
    """Give a ready spare with the launch's pool key to the launch, or None when there is none
    (or every candidate went to a concurrent launch). The caller's transaction commits it;
    IntegrityError when the same user's concurrent launch of the ticket won."""
    candidates = list(await session.execute(
        select(Workspace.id, Workspace.version)
        .where(Workspace.project_id == want.project_id, Workspace.ticket_id.is_(None),
               Workspace.pool_key == want.key, Workspace.state == State.READY.value,
               Workspace.desired == Desired.READY.value)
        .order_by(Workspace.created_at).limit(3)))
    now = utcnow()
    for spare_id, version in candidates:
        values = {
            "ticket_id": want.ticket_id, "owner_id": want.user.id, "branch": want.branch, "pool_key": None,
            "state": State.STARTING.value, "created_at": now, "updated_at": now, "version": version + 1,
            "ready_at": None, "ready_seconds": None, "startup_status": None, "startup_detail": None,
            "plan": plans.rebind(plans.dump(want.result.plan), want.workspace_id, spare_id),
            "environment": want.result.summary.model_dump(mode="json"), "image": want.result.plan.image.ref,
        }
        async with session.begin_nested():
            taken = await session.execute(
                update(Workspace).where(Workspace.id == spare_id, Workspace.version == version,
                                        Workspace.state == State.READY.value, Workspace.ticket_id.is_(None))
                .values(**values))
        if taken.rowcount != 1:
            continue
        tokens = {r.name: r.token_id for r in want.repos}
        for row in await session.scalars(select(WorkspaceRepo).where(WorkspaceRepo.workspace_id == spare_id)):
            want.result.decisions[row.name].apply_to(row)
            row.token_id = tokens[row.name]
        session.add_all([
            Event(workspace_id=spare_id, at=now, actor=want.user.username, kind="transition",
                  from_state=State.READY.value, to_state=State.STARTING.value,
                  reason=f"launched by {want.user.username}; claimed a prebuilt workspace of the warm pool",
                  data={"claimed": True}),
            Event(workspace_id=spare_id, at=now, actor="taskspace", kind="step", step="preflight", status="ok",
                  duration_ms=int(want.result.seconds * 1000), data=want.result.event_data()),
        ])
        await session.flush()
        workspace = await session.get(Workspace, spare_id, populate_existing=True)
        assert workspace is not None
        return workspace
    return None


# Keeping the pools full (the reconciler's leader) -------------------------------------------------


@dataclass
class PoolReport:
    created: list[str] = field(default_factory=list)
    recycled: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # project key → why no spare was built


class Keeper:
    """Keeps the pools of all projects. ``busy(spares)`` says whether work other than on the
    spares ``spares`` is in flight."""

    def __init__(self, rt: Runtime, busy: Callable[[set[str]], bool] = lambda spares: False):
        self.rt, self.busy = rt, busy
        self._checked: dict[int, float] = {}  # project id → when its spares were last checked
        self._current: dict[int, str] = {}  # project id → the key a new spare would have
        self._spare_ids: set[str] = set()
        self._shells: set[str] = set()  # ready spares given a shell for their claim by this process

    async def run(self, *, force: bool = False) -> PoolReport:
        report = PoolReport()
        spares = await self._spares()
        self._spare_ids = {s.id for s in spares}
        await self._hold_shells(spares)
        async with self.rt.readers() as session:
            projects = {p.id: p for p in await session.scalars(select(Project).where(
                (Project.warm_pool > 0) | Project.id.in_({s.project_id for s in spares})))}
        for project in projects.values():
            mine = [s for s in spares if s.project_id == project.id]
            try:
                await self._keep(project, mine, report, force=force)
            except TaskspaceError as exc:
                report.skipped[project.key] = exc.message
                log.info("warm pool of %s: %s", project.key, exc.message)
        return report

    async def _hold_shells(self, spares: list[Row[Any]]) -> None:
        """A spare gets a shell waiting for its claim's script when it becomes ready (see
        ``lifecycle.driver``); the shell ends with the server's connection to the engine, so the
        ready spares of an earlier run of the server get one here, once each."""
        backend = self.rt.backend
        if not isinstance(backend, SupportsHeldShell):
            return
        ready = {s.id: s.plan for s in spares if s.state == State.READY.value and s.desired != Desired.PURGED.value
                 and s.plan}
        self._shells &= ready.keys()
        for spare_id in sorted(ready.keys() - self._shells):
            self._shells.add(spare_id)
            if not await hold_claim_shell(self.rt, spare_id, Plan.model_validate(ready[spare_id])):
                continue
            async with self.rt.readers() as session:
                claimed = await session.scalar(select(Workspace.ticket_id).where(Workspace.id == spare_id))
            if claimed is not None:  # while the shell started: the claim goes without it
                backend.release_shell(spare_id)

    async def _spares(self) -> list[Row[Any]]:
        async with self.rt.readers() as session:
            return list(await session.execute(
                select(Workspace.id, Workspace.project_id, Workspace.state, Workspace.desired, Workspace.pool_key,
                       Workspace.created_at, Workspace.updated_at, Workspace.version, Workspace.plan)
                .where(Workspace.ticket_id.is_(None), NOT_PURGED)
                .order_by(Workspace.created_at)))

    async def _keep(self, project: Project, spares: list[Row[Any]], report: PoolReport, *, force: bool) -> None:
        now = utcnow()
        live = [s for s in spares if s.desired != Desired.PURGED.value]
        failed = [s for s in live if s.state == State.FAILED.value]
        for spare in failed:
            if now - spare.updated_at >= FAILED_BACKOFF:
                await self._retire(spare, "it failed; a new spare replaces it", report)
        healthy = [s for s in live if s.state != State.FAILED.value]
        size = min(project.warm_pool, MAX_SIZE)
        recycle_after = timedelta(hours=self.rt.settings.pool_recycle_hours)
        for spare in healthy[size:]:
            await self._retire(spare, "the pool is smaller now", report)
        healthy = healthy[:size]
        if size == 0:
            return
        due = force or time.monotonic() - self._checked.get(project.id, 0.0) >= self.rt.settings.pool_check_interval
        if due:
            self._checked[project.id] = time.monotonic()
            self._current[project.id] = await self._current_key(project)
        current = self._current.get(project.id)
        kept = []
        for spare in healthy:
            if now - spare.created_at >= recycle_after:
                await self._retire(spare, "it is older than the pool keeps spares", report)
            elif current and spare.pool_key != current and spare.state == State.READY.value:
                await self._retire(spare, "the project's environment changed", report)
            else:
                kept.append(spare)
        if len(kept) >= size:
            return
        recent_failure = any(now - s.updated_at < FAILED_BACKOFF for s in failed)
        if recent_failure:
            report.skipped[project.key] = "a spare failed recently"
        elif any(s.state != State.READY.value for s in kept):
            report.skipped[project.key] = "a spare is being built"  # one at a time
        elif self.busy(self._spare_ids):
            report.skipped[project.key] = "other work is in flight"
        else:
            report.created.append(await self._create(project))

    async def _current_key(self, project: Project) -> str:
        result, workspace_id = await self._preflight(project)
        return await key_for(self.rt, project, result.plan, workspace_id)

    async def _preflight(self, project: Project) -> tuple[PreflightResult, str]:
        workspace_id = secrets.token_hex(6)
        inp = PreflightInput(
            workspace_id=workspace_id, project_key=project.key, dockerfile=project.dockerfile, branch="",
            primary=next(r.name for r in project.repos if r.is_primary), refresh=False,
            repos=[RepoChoice(name=r.name, url=r.url, default_branch=r.default_branch, source_branch=None,
                              target_branch=None, credential=None, token_name=None) for r in project.repos])
        return await run_preflight(self.rt, inp), workspace_id

    async def _create(self, project: Project) -> str:
        result, workspace_id = await self._preflight(project)
        key = await key_for(self.rt, project, result.plan, workspace_id)
        self._current[project.id] = key
        async with transaction(self.rt.sessions) as session:
            if not await session.get(Project, project.id):
                return workspace_id  # removed meanwhile
            rows = []
            for position, repo in enumerate(project.repos):
                row = WorkspaceRepo(repo_id=repo.id, name=repo.name, url=repo.url, is_primary=repo.is_primary,
                                    position=position)
                result.decisions[repo.name].apply_to(row)
                rows.append(row)
            session.add(Workspace(id=workspace_id, ticket_id=None, owner_id=None, project_id=project.id,
                                  pool_key=key, state=State.REQUESTED.value, desired=Desired.READY.value, branch="",
                                  backend=self.rt.settings.backend, repos=rows, **result.workspace_values()))
            await session.flush()
            session.add(Event(workspace_id=workspace_id, actor="taskspace", kind="transition", from_state=None,
                              to_state=State.REQUESTED.value,
                              reason=f"built for the warm pool of {project.key} (default branches)"))
        log.info("warm pool of %s: building spare %s", project.key, workspace_id)
        self.rt.bus.wake_reconciler(workspace_id)
        return workspace_id

    async def _retire(self, spare: Row[Any], why: str, report: PoolReport) -> None:
        """Purge a spare (it holds nobody's work). A launch that claimed it meanwhile wins."""
        async with transaction(self.rt.sessions) as session:
            done = await session.execute(
                update(Workspace).where(Workspace.id == spare.id, Workspace.version == spare.version,
                                        Workspace.ticket_id.is_(None))
                .values(desired=Desired.PURGED.value, discard_unpushed=True, version=spare.version + 1,
                        updated_at=utcnow()))
            if done.rowcount != 1:
                return
            session.add(Event(workspace_id=spare.id, actor="taskspace", kind="note",
                              reason=f"leaving the warm pool: {why}"))
        report.recycled.append(spare.id)
        self.rt.bus.wake_reconciler(spare.id)


# Reading ------------------------------------------------------------------------------------------


@dataclass
class PoolStatus:
    size: int
    ready: int = 0
    building: int = 0
    failed: int = 0
    last_error: str | None = None


async def hold_claim_shell(rt: Runtime, spare_id: str, plan: Plan) -> bool:
    """Have the backend start a shell in the ready spare that waits for the script of the
    launch claiming it (``SupportsHeldShell``): the claim then starts no process in the
    container. False when the backend has none to give (the claim then starts its own)."""
    if not isinstance(rt.backend, SupportsHeldShell):
        return False
    try:
        await rt.backend.hold_shell(spare_id, user=plans.exec_user(plan))
    except TaskspaceError as exc:
        log.warning("spare %s holds no shell for its claim: %s", spare_id, exc.message)
        return False
    return True


async def status(session: AsyncSession, projects: list[Project]) -> dict[int, PoolStatus]:
    """The pool of each project, in one query."""
    found = {p.id: PoolStatus(size=p.warm_pool) for p in projects}
    rows = await session.execute(
        select(Workspace.project_id, Workspace.state, func.count(), func.max(Workspace.failure_reason))
        .where(Workspace.ticket_id.is_(None), NOT_PURGED,
               Workspace.desired != Desired.PURGED.value, Workspace.project_id.in_(found))
        .group_by(Workspace.project_id, Workspace.state))
    for project_id, state, count, error in rows:
        pool = found[project_id]
        if state == State.READY.value:
            pool.ready += count
        elif state == State.FAILED.value:
            pool.failed += count
            pool.last_error = error
        else:
            pool.building += count
    return found
