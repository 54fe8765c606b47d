"""``starting``: container (on resume), services, startup script, then ``ready``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path

from taskspace.core.errors import BackendError
from taskspace.core.states import Step
from taskspace.core.workspace_scripts import (
    CLONE_DONE_PREFIX,
    NOT_WRITABLE_EXIT,
    parse_status,
    startup_script,
)
from taskspace.plugins.backends.base import ExecChunk, ExecResult, ServiceRuntime, SupportsHeldShell
from taskspace.services.lifecycle import plan as plans
from taskspace.services.lifecycle.plan import Plan
from taskspace.services.lifecycle.prepare import (
    clone_command,
    ensure_container,
    own_workspace,
    record_clone,
    run_clone,
    spec_for,
)
from taskspace.services.lifecycle.snapshot import Snapshot, StepTimer
from taskspace.services.runtime import Runtime

INIT_FILE_LIMIT = 16 * 1024 * 1024


async def service_runtimes(rt: Runtime, plan: Plan) -> list[ServiceRuntime]:
    """Services with their init files read from the primary repository at the planned commit."""
    mirror = Path(plan.mirrors[plan.primary])
    runtimes = []
    for service in plan.services:
        decl = service.decl
        files = {}
        for init in decl.init_files:
            content = await rt.mirrors.read_blob(mirror, plan.commit, init.source, limit=INIT_FILE_LIMIT)
            files[init.target] = content or b""
        runtimes.append(ServiceRuntime(name=decl.name, image=service.image.ref, env=decl.env,
                                       command=decl.command, healthcheck=decl.healthcheck,
                                       init_files=files, init_commands=decl.init_commands))
    return runtimes


async def services_step(rt: Runtime, snap: Snapshot, plan: Plan) -> None:
    if not plan.services:
        return
    async with StepTimer(rt, snap, Step.SERVICES) as step:
        spec = spec_for(rt, snap, plan, services=await service_runtimes(rt, plan))
        step.values = {"backend_state": await rt.backend.start_services(spec, snap.ws.backend_state)}
        step.data = {"services": [s.decl.name for s in plan.services]}


def _startup_command(rt: Runtime, snap: Snapshot, plan: Plan) -> str:
    env = plan.environment
    return startup_script(primary=plan.primary, on_create=env.on_create, update_content=env.update_content,
                          post_create=env.post_create, post_start=env.post_start,
                          timeout_seconds=int(rt.settings.startup_timeout), prebuild=snap.ws.is_spare)


def _record_startup(step: StepTimer, spare: bool, exit_code: int, stderr: bytes) -> None:
    statuses = parse_status(stderr.decode(errors="replace"))
    failed = [(name, code) for name, code in statuses if code not in {"0", "none"}]
    if failed or exit_code != 0:
        name, code = failed[0] if failed else ("startup", str(exit_code))
        detail = f"{name} exited with code {code}" + (" (timed out)" if code == "124" else "")
        step.status, step.reason = "failed", detail
        step.values = {"startup_status": "failed", "startup_detail": detail + "; see the startup log."}
    elif spare:
        step.values = {"startup_status": None, "startup_detail": None}
    elif statuses and statuses[-1] == ("startup.sh", "none") and len(statuses) == 1:
        step.values = {"startup_status": "none", "startup_detail": "No .taskspace/startup.sh in the primary repository."}
    else:
        step.values = {"startup_status": "ok", "startup_detail": None}
    step.data = {"steps": dict(statuses)}


def _startup_unfinished(step: StepTimer, message: str) -> None:
    step.status, step.reason = "failed", message
    step.values = {"startup_status": "failed", "startup_detail": message}


async def startup_step(rt: Runtime, snap: Snapshot, plan: Plan) -> None:
    """Run the lifecycle commands and ``.taskspace/startup.sh``. A failure is recorded and
    shown, but leaves the workspace usable: it still becomes ready. A spare runs only the
    commands meant for prebuilds (onCreateCommand, updateContentCommand); the rest runs once
    it is claimed."""
    stream = _Stream(_shell(rt, snap, plan, _startup_command(rt, snap, plan)))
    try:
        async with StepTimer(rt, snap, Step.STARTUP) as step:
            await _read_startup(rt, snap, step, stream)
    finally:
        await _settle(stream)


async def _read_startup(rt: Runtime, snap: Snapshot, step: StepTimer, stream: _Stream) -> None:
    """The startup's end, recorded on ``step``."""
    limit = rt.settings.startup_timeout + 30
    try:
        await stream.read_until(lambda: False, limit)
    except TimeoutError:
        _startup_unfinished(step, f"The startup did not finish within {limit:.0f}s.")
        return
    except BackendError as exc:
        _startup_unfinished(step, exc.message)
        return
    assert stream.exit_code is not None
    _record_startup(step, snap.ws.is_spare, stream.exit_code, bytes(stream.stderr))


def _shell(rt: Runtime, snap: Snapshot, plan: Plan, script: str) -> AsyncGenerator[ExecChunk | int, None]:
    """``script`` running in the workspace: in the shell waiting there for it when there is one
    (a container just started, a spare just claimed: no process to start), else in an exec."""
    user, env = plans.exec_user(plan), plans.command_env(plan, ticket=snap.key, branch=snap.ws.branch) or None
    if isinstance(rt.backend, SupportsHeldShell):
        return rt.backend.shell_stream(snap.id, script, user=user, env=env)
    return rt.backend.exec_stream(snap.id, ["/bin/sh", "-c", script], user=user, env=env)


async def _settle(stream: _Stream) -> None:
    """Close a stream read to its end; one given up on is closed once its command ends."""
    if stream.exit_code is not None:
        await stream.close()
    else:
        closing = asyncio.create_task(stream.close())
        _LEFT_RUNNING.add(closing)
        closing.add_done_callback(_LEFT_RUNNING.discard)


#: Execs given up on (timed out), closed once they end.
_LEFT_RUNNING: set[asyncio.Task[None]] = set()


class _Stream:
    """What a command has written so far, read on demand."""

    def __init__(self, chunks: AsyncGenerator[ExecChunk | int, None]):
        self.chunks, self.stdout, self.stderr = chunks, bytearray(), bytearray()
        self.exit_code: int | None = None

    async def read_until(self, done: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while self.exit_code is None and not done():
                item = await anext(self.chunks)
                if isinstance(item, int):
                    self.exit_code = item
                else:
                    (self.stdout if item.stream == "stdout" else self.stderr).extend(item.data)

    async def close(self) -> None:
        await self.chunks.aclose()


async def clone_then_startup(rt: Runtime, snap: Snapshot, plan: Plan,
                             cloned: Callable[[], Awaitable[None]] | None = None) -> None:
    """The clone step and the startup step in one script (an exec costs the engine tens of
    milliseconds; see ``_shell``): used by a first launch with no services to start in between, when a spare
    just claimed moves to the ticket branch, and when a first start that was cut short completes
    its clone. Each step is still recorded as soon as it ends; ``cloned`` runs between the two
    (the workspace moves from preparing to starting there) while the script goes on.

    The clone's end is a line on stdout, after the clone's own lines: the two streams of a
    command arrive in no fixed order relative to each other, the lines of one stream do."""
    marker = CLONE_DONE_PREFIX.encode()
    script = (f"( {clone_command(snap)} )\ncode=$?\necho \"{CLONE_DONE_PREFIX}$code\"\n"
              f'[ "$code" -eq 0 ] || exit "$code"\n{_startup_command(rt, snap, plan)}')
    stream = _Stream(_shell(rt, snap, plan, script))
    try:
        async with StepTimer(rt, snap, Step.CLONE) as step:
            try:
                await stream.read_until(lambda: b"\n" in stream.stdout.partition(marker)[2],
                                        rt.settings.startup_timeout)
                before, found, after = stream.stdout.partition(marker)
                code = int(after.partition(b"\n")[0]) if found else stream.exit_code
                if code != 0:  # the script ends here: all of the clone's errors
                    await stream.read_until(lambda: False, 30)
            except TimeoutError:
                raise BackendError(f"The clone did not finish within {rt.settings.startup_timeout:.0f}s.",
                                   hint="It keeps running in the workspace; look at it with a terminal.") from None
            clone = ExecResult(exit_code=-1 if code is None else code, stdout=bytes(before),
                               stderr=bytes(stream.stderr))
            if clone.exit_code == NOT_WRITABLE_EXIT:  # a start cut short before the volume was handed over
                await own_workspace(rt, snap, clone)
                await run_clone(rt, snap, plan, step)
            else:
                record_clone(step, clone)
        if cloned is not None:
            await cloned()
        if clone.exit_code == NOT_WRITABLE_EXIT:
            await startup_step(rt, snap, plan)
            return
        async with StepTimer(rt, snap, Step.STARTUP) as step:
            await _read_startup(rt, snap, step, stream)
    finally:
        await _settle(stream)


async def start_phase(rt: Runtime, snap: Snapshot, plan: Plan, *, resumed: bool, clone: bool = False) -> None:
    """Everything from a created workspace to a usable one; run on first launch and on every
    start. ``clone``: the repositories are not on the ticket branch yet (a spare just claimed,
    or a first start cut short): the clone runs after the services, in the startup's script."""
    if resumed:
        async with StepTimer(rt, snap, Step.CONTAINER) as step:
            step.values = {"backend_state": await ensure_container(rt, snap, plan)}
    await services_step(rt, snap, plan)
    if clone:
        await clone_then_startup(rt, snap, plan)
    else:
        await startup_step(rt, snap, plan)
