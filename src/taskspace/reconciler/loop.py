"""The reconciler: one per installation (a lease decides which process), woken by changes or a
timer. A pass makes one list call to the engine, loads the workspaces, then:

* resumes work in flight (after a restart, whatever step a killed server was in),
* restarts ready workspaces whose container is not running (an engine restart),
* asks for purges the policy makes due, and cancels them when a ticket is reopened,
* removes engine resources that no workspace owns, after a grace period,

and beside the passes keeps the warm pools full (``services.pool``), samples metrics, syncs
trackers and does the housekeeping.

The work itself runs as one task per workspace (``services.lifecycle.driver.drive``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Row, select, update

from taskspace.core.errors import BackendError
from taskspace.core.states import Desired, State
from taskspace.db.engine import transaction
from taskspace.db.models import NOT_PURGED, Event, Orphan, Workspace, utcnow
from taskspace.plugins.backends.base import OwnedResource
from taskspace.services import activity, housekeeping, leases, metrics, policy, pool, redaction, tracker_sync
from taskspace.services.lifecycle.driver import drive, next_phase
from taskspace.services.runtime import Runtime

log = logging.getLogger(__name__)
LEASE = "reconciler"


@dataclass
class PassReport:
    workspaces: int = 0
    jobs_started: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    purges_requested: list[str] = field(default_factory=list)
    stops_requested: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    orphans_removed: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Reconciler:
    def __init__(self, rt: Runtime):
        self.rt = rt
        self.jobs: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._background: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(rt.settings.max_parallel_jobs)
        self._pass_lock = asyncio.Lock()
        self.is_leader = False
        # Spares are built while no other workspace is being worked on.
        self.pool = pool.Keeper(rt, busy=lambda spares: any(j not in spares for j in self.jobs))

    # Running -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="reconciler")

    async def close(self) -> None:
        """Stop the loop and the jobs. Work in flight resumes on the next start (every step is
        idempotent), so cancelling is safe."""
        tasks = [t for t in (self._loop_task, *self._background.values(), *self.jobs.values()) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.is_leader:
            try:
                await leases.release(self.rt, LEASE)
            except Exception:  # the database may be gone at shutdown
                log.debug("could not release the reconciler lease", exc_info=True)

    async def _loop(self) -> None:
        settings = self.rt.settings
        interval = min(settings.reconcile_interval, settings.lease_seconds / 3)
        last_pass = 0.0
        while True:
            pending = self.rt.bus.take_pending()
            try:
                due = time.monotonic() - last_pass >= interval or "*" in pending
                if due or not self.is_leader:
                    await self.lead()
                if self.is_leader and due:
                    last_pass = time.monotonic()
                    await self.run_pass()
                elif self.is_leader:
                    for workspace_id in pending:  # a launch or a request: no need for a whole pass
                        self.kick(workspace_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconcile pass failed; retrying")
            if self.is_leader and (due or not pending):
                # Not when woken only to drive a launch or a request: the periodic jobs would
                # compete with it for the event loop, and each runs when next due anyway.
                self._start_periodic()
            try:
                timeout = max(0.0, interval - (time.monotonic() - last_pass))
                await asyncio.wait_for(self.rt.bus.reconcile_requested.wait(), timeout)
            except TimeoutError:
                pass

    async def lead(self) -> bool:
        """Take (or renew) the reconciler lease; True when this process holds it."""
        self.is_leader = await leases.acquire(self.rt, LEASE, ttl=self.rt.settings.lease_seconds)
        return self.is_leader

    def periodic_jobs(self) -> dict[str, Callable[[], Awaitable[object]]]:
        """Work beside the passes. Each job decides itself whether it is due, so calling it
        often is cheap; each runs as a task of its own, so a slow engine or tracker never holds
        up the passes, and a failure is logged and never stops the loop."""
        settings = self.rt.settings
        return {
            "metrics": lambda: metrics.sample(self.rt),
            "trackers": lambda: tracker_sync.sync_due(self.rt, interval=settings.tracker_sync_interval),
            "activity": lambda: activity.check_ides(self.rt),
            "pool": self.pool.run,
            "housekeeping": lambda: housekeeping.run(self.rt),
        }

    def _start_periodic(self) -> None:
        for name, job in self.periodic_jobs().items():
            task = self._background.get(name)
            if task is None or task.done():
                self._background[name] = asyncio.create_task(self._guarded(name, job), name=name)

    @staticmethod
    async def _guarded(name: str, job: Callable[[], Awaitable[object]]) -> None:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("periodic job %s failed; it runs again when next due", name)

    def kick(self, workspace_id: str) -> None:
        """Drive one workspace now (this process must be the leader)."""
        if workspace_id in self.jobs:
            self._again.add(workspace_id)
            return
        self.jobs[workspace_id] = asyncio.create_task(self._job(workspace_id), name=f"workspace-{workspace_id}")

    async def _job(self, workspace_id: str) -> None:
        try:
            while True:
                self._again.discard(workspace_id)
                async with self._slots:
                    await drive(self.rt, workspace_id)
                if workspace_id not in self._again:
                    break
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("workspace %s: job failed", workspace_id)
        finally:
            self.jobs.pop(workspace_id, None)

    # One pass ----------------------------------------------------------------------------------

    async def run_pass(self, *, wait: bool = False) -> PassReport:
        """One reconcile pass. With ``wait``, also wait for the jobs it started."""
        async with self._pass_lock:
            started = time.monotonic()
            report = PassReport()
            try:
                observed = await self.rt.backend.list_owned()
            except BackendError as exc:
                log.warning("engine unreachable, skipping this pass: %s", exc.message)
                observed = None
            await redaction.refresh(self.rt)  # tokens added through other replicas
            rows = await self._load()
            report.workspaces = len(rows)
            running = {r.workspace_id for r in observed or [] if r.role == "workspace" and r.running}
            if observed is not None:
                await self._restart_stopped_by_engine(rows, running, report)
            await self._apply_policy(report)
            rows = await self._load()
            for ws in rows:
                phase = next_phase(State(ws.state), Desired(ws.desired), purge_retry_at=ws.purge_retry_at)
                if phase is not None and observed is not None:
                    if ws.id not in self.jobs:
                        report.jobs_started.append(ws.id)
                    self.kick(ws.id)
            if observed is not None:
                await self._orphans(observed, {w.id for w in rows}, report)
            if wait:
                pending = [self.jobs[i] for i in report.jobs_started if i in self.jobs]
                await asyncio.gather(*pending, return_exceptions=True)
            report.seconds = time.monotonic() - started
            return report

    async def _load(self) -> list[Row]:
        """The live workspaces, only the columns a pass needs (it runs over thousands)."""
        async with self.rt.readers() as session:
            result = await session.execute(
                select(Workspace.id, Workspace.state, Workspace.desired, Workspace.version,
                       Workspace.purge_retry_at, Workspace.purge_due_at)
                .where(NOT_PURGED))
            return list(result.all())

    async def _restart_stopped_by_engine(self, rows: list[Row], running: set[str], report: PassReport) -> None:
        for ws in rows:
            if ws.state == State.READY.value and ws.desired == Desired.READY.value and ws.id not in running \
                    and ws.id not in self.jobs:
                async with transaction(self.rt.sessions) as session:
                    result = await session.execute(
                        update(Workspace).where(Workspace.id == ws.id, Workspace.version == ws.version)
                        .values(state=State.STARTING.value, version=ws.version + 1, updated_at=utcnow()))
                    if result.rowcount == 1:
                        session.add(Event(workspace_id=ws.id, actor="reconciler", kind="transition",
                                          from_state=State.READY.value, to_state=State.STARTING.value,
                                          reason="the workspace container was not running (engine restarted?); "
                                                 "starting it again"))
                        report.restarted.append(ws.id)

    async def _apply_policy(self, report: PassReport) -> None:
        """Purge or stop what the policy makes due; keep purge_due_at current for people to see."""
        async with transaction(self.rt.sessions) as session:
            applied = await policy.apply(session=session, settings=self.rt.settings, bus=self.rt.bus)
        report.purges_requested.extend(applied.purges)
        report.stops_requested.extend(applied.stops)

    async def _orphans(self, observed: list[OwnedResource], known: set[str], report: PassReport) -> None:
        """Resources no live workspace owns: note when first seen, remove after the grace period."""
        now = utcnow()
        grace = timedelta(seconds=self.rt.settings.orphan_grace)
        orphans = {f"{r.kind}:{r.name}": r for r in observed if r.workspace_id not in known}
        report.orphans = sorted(orphans)
        due: list[OwnedResource] = []
        async with transaction(self.rt.sessions) as session:
            seen = {o.resource: o for o in await session.scalars(select(Orphan))}
            for key, resource in orphans.items():
                if key not in seen:
                    log.warning("engine resource %s belongs to no workspace; removing it after %ss",
                                key, int(grace.total_seconds()))
                    session.add(Orphan(resource=key, workspace_id=resource.workspace_id, first_seen_at=now))
                elif now - seen[key].first_seen_at >= grace:
                    due.append(resource)
            for key, row in seen.items():
                if key not in orphans:
                    await session.delete(row)
        # Containers first: a volume or network in use cannot be removed.
        order = {"container": 0, "network": 1, "volume": 2}
        for resource in sorted(due, key=lambda r: order[r.kind]):
            try:
                await self.rt.backend.remove_owned(resource)
            except BackendError as exc:
                log.warning("could not remove orphan %s:%s: %s", resource.kind, resource.name, exc.message)
                continue
            key = f"{resource.kind}:{resource.name}"
            report.orphans_removed.append(key)
            log.info("removed orphan %s", key)
            async with transaction(self.rt.sessions) as session:
                row = await session.get(Orphan, key)
                if row is not None:
                    await session.delete(row)
