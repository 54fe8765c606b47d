"""Decide the next phase from (state, desired) and run it until the workspace is settled."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial

from taskspace.core.errors import BackendError, EngineUnreachable, StaleWrite, TaskspaceError
from taskspace.core.states import Desired, State
from taskspace.db.models import utcnow
from taskspace.services import pool
from taskspace.services.lifecycle.prepare import (
    clone_step,
    container_step,
    image_step,
    plan_of,
    preflight,
    volume_step,
)
from taskspace.services.lifecycle.purge import delete_step, rescue_step, stop_step
from taskspace.services.lifecycle.snapshot import Snapshot, load, transition
from taskspace.services.lifecycle.start import clone_then_startup, start_phase
from taskspace.services.runtime import Runtime

log = logging.getLogger(__name__)
PURGE_RETRY = timedelta(minutes=5)
#: Seconds after which a start the engine refused is tried once more.
START_RETRY = 2.0


class Phase(StrEnum):
    PREPARE = "prepare"
    START = "start"
    STOP = "stop"
    PURGE = "purge"


def next_phase(state: State, desired: Desired, *, purge_retry_at: datetime | None = None,
               now: datetime | None = None) -> Phase | None:
    """What to do next, or None when the workspace is where it should be (or waits for a person)."""
    if state == State.PURGED:
        return None
    if desired == Desired.PURGED:
        if state == State.PURGE_BLOCKED and purge_retry_at and (now or utcnow()) < purge_retry_at:
            return None
        return Phase.PURGE
    if state == State.PURGING:
        return Phase.PURGE  # a purge once started is finished, whatever was asked since
    if state in {State.REQUESTED, State.PREPARING}:
        return Phase.PREPARE
    if state == State.STARTING:
        return Phase.START
    if state == State.READY and desired == Desired.STOPPED:
        return Phase.STOP
    if state == State.STOPPED and desired == Desired.READY:
        return Phase.START
    return None


async def _prepare(rt: Runtime, snap: Snapshot) -> None:
    started = time.monotonic()
    if snap.state == State.REQUESTED:
        await transition(rt, snap, State.PREPARING, reason="provisioning started")
    plan = await preflight(rt, snap)
    await image_step(rt, snap, plan)
    await volume_step(rt, snap, plan)
    await container_step(rt, snap, plan)
    cloned = partial(transition, rt, snap, State.STARTING, reason="repositories ready")
    if plan.services:  # they start after the clone, before the startup script
        await clone_step(rt, snap, plan)
        await cloned()
        await _start(rt, snap, resumed=False)
        return
    # Nothing to start in between: the clone and the startup script share one exec.
    await clone_then_startup(rt, snap, plan, cloned=cloned)
    await _ready(rt, snap, started)


async def _start(rt: Runtime, snap: Snapshot, *, resumed: bool) -> None:
    started = time.monotonic()
    if snap.state != State.STARTING:
        await transition(rt, snap, State.STARTING, reason="start requested")
    plan = plan_of(snap)
    assert plan is not None, "a workspace past preparing has a plan"
    # Never ready since its launch: a spare just claimed (its repositories move to the ticket
    # branch), or a start cut short (the clone step then keeps what is there).
    first = resumed and snap.ws.ready_at is None and not snap.ws.is_spare
    await start_phase(rt, snap, plan, resumed=resumed, clone=first)
    await _ready(rt, snap, started)


async def _ready(rt: Runtime, snap: Snapshot, started: float) -> None:
    """The workspace is usable: ``ready``, with its time to ready on the first time (else the
    time since ``started``, a monotonic clock reading)."""
    now = utcnow()
    values: dict[str, object] = {"last_started_at": now, "step": None}
    if snap.ws.ready_at is None:
        values["ready_at"] = now
        values["ready_seconds"] = (now - snap.ws.created_at).total_seconds()
    duration = (now - snap.ws.created_at).total_seconds() if snap.ws.ready_at is None else time.monotonic() - started
    failed = snap.ws.startup_detail if snap.ws.startup_status == "failed" else None
    reason = f"workspace ready, but {failed}" if failed else "workspace ready"
    if snap.ws.is_spare:
        reason = "ready in the warm pool, waiting for a launch to claim it"
        plan = plan_of(snap)
        assert plan is not None, "a workspace past preparing has a plan"
        await pool.hold_claim_shell(rt, snap.id, plan)  # for the launch that claims it
    # People hear of the first ready (a launch); a start they asked for they are watching.
    notify = ("ready", {"ready_seconds": values["ready_seconds"], "startup_failed": failed}) \
        if "ready_seconds" in values else None
    await transition(rt, snap, State.READY, reason=reason, duration=duration, values=values, notify=notify)


async def _stop(rt: Runtime, snap: Snapshot) -> None:
    started = time.monotonic()
    await stop_step(rt, snap)
    await transition(rt, snap, State.STOPPED, reason="stop requested", duration=time.monotonic() - started,
                     values={"step": None})


async def _purge(rt: Runtime, snap: Snapshot) -> None:
    started = time.monotonic()
    if snap.state != State.PURGING:
        await transition(rt, snap, State.PURGING, reason="purge started")
    pushed: list[dict[str, str]] = []
    if not snap.ws.discard_unpushed and not snap.ws.is_spare:  # a spare holds nobody's work
        try:
            pushed = await rescue_step(rt, snap)
        except TaskspaceError as exc:
            await _block(rt, snap, exc, "rescue")
            return
    await delete_step(rt, snap)
    data = {"rescued": pushed}
    reason = "purged" + (f"; work rescued to {', '.join(p['branch'] for p in pushed)}" if pushed else "")
    await transition(rt, snap, State.PURGED, reason=reason, duration=time.monotonic() - started, data=data,
                     values={"purged_at": utcnow(), "step": None},
                     notify=("purged", {"rescue": pushed}))


async def _block(rt: Runtime, snap: Snapshot, exc: TaskspaceError, step: str | None) -> None:
    """Nothing was deleted; the purge is retried later, and the owner is told."""
    await transition(rt, snap, State.PURGE_BLOCKED, reason=str(exc),
                     values={"purge_retry_at": utcnow() + PURGE_RETRY, "failure_reason": str(exc),
                             "failure_step": step, "step": None},
                     notify=("purge_blocked", {"reason": str(exc)}))


async def drive(rt: Runtime, workspace_id: str) -> None:
    """Run phases until the workspace is settled. Safe to call at any time, from any state:
    every phase resumes where a previous (possibly killed) run stopped."""
    start_retried = False
    for _ in range(10):  # a bound, not a retry policy: each pass makes progress or stops
        snap = await load(rt, workspace_id)
        phase = next_phase(snap.state, Desired(snap.ws.desired), purge_retry_at=snap.ws.purge_retry_at)
        if phase is None:
            return
        try:
            if phase == Phase.PREPARE:
                await _prepare(rt, snap)
            elif phase == Phase.START:
                await _start(rt, snap, resumed=True)
            elif phase == Phase.STOP:
                await _stop(rt, snap)
            else:
                await _purge(rt, snap)
        except StaleWrite as exc:
            log.info("workspace %s: %s", workspace_id, exc.message)
            continue
        except BackendError as exc:
            # A pooled connection can still reach an engine that is shutting down while a new
            # one cannot: a refused connection means "not now" even if the probe answers.
            if isinstance(exc, EngineUnreachable) or await _engine_down(rt):
                log.warning("workspace %s: engine unreachable, will retry: %s", workspace_id, exc.message)
                return
            # An engine going down or coming up refuses a start with odd errors while it answers
            # (the reconciler starts again what an engine restart stopped): once more, later.
            if phase == Phase.START and not start_retried:
                start_retried = True
                log.warning("workspace %s: the engine refused a start; once more in %g s: %s", workspace_id,
                            START_RETRY, exc.message)
                await asyncio.sleep(START_RETRY)
                continue
            await _fail(rt, snap, exc)
            return
        except TaskspaceError as exc:
            await _fail(rt, snap, exc)
            return
        except Exception as exc:
            log.exception("workspace %s: unexpected error", workspace_id)
            await _fail(rt, snap, TaskspaceError(f"Internal error: {type(exc).__name__}: {exc}",
                                                 hint="This is a bug in taskspace; the server log has the details."))
            return


async def _engine_down(rt: Runtime) -> bool:
    try:
        await rt.backend.list_owned()
        return False
    except BackendError:
        return True


async def _fail(rt: Runtime, snap: Snapshot, exc: TaskspaceError) -> None:
    """Record the failure with the step and the reason, with what the steps that did finish
    left for the next write; on a snapshot loaded again if the workspace changed meanwhile."""
    try:
        await _record_failure(rt, snap, exc)
    except StaleWrite:
        try:
            await _record_failure(rt, await load(rt, snap.id), exc)
        except StaleWrite:
            log.info("workspace %s changed while its failure was recorded", snap.id)


async def _record_failure(rt: Runtime, snap: Snapshot, exc: TaskspaceError) -> None:
    """A failed purge is blocked instead."""
    if snap.state in {State.FAILED, State.PURGED}:
        return
    if snap.state == State.PURGING:
        await _block(rt, snap, exc, snap.ws.step)
        return
    await transition(rt, snap, State.FAILED, reason=str(exc),
                     values={"failure_step": snap.ws.step, "failure_reason": str(exc)},
                     notify=("failed", {"step": snap.ws.step or "a step", "reason": str(exc)}))

