"""``starting``: container (on resume), services, startup script, then ``ready``."""

from __future__ import annotations

from pathlib import Path

from taskspace.core.errors import BackendError
from taskspace.core.states import Step
from taskspace.core.workspace_scripts import parse_status, startup_script
from taskspace.plugins.backends.base import ServiceRuntime
from taskspace.services.lifecycle import plan as plans
from taskspace.services.lifecycle.plan import Plan
from taskspace.services.lifecycle.prepare import clone_step, ensure_container, spec_for
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


async def startup_step(rt: Runtime, snap: Snapshot, plan: Plan) -> None:
    """Run the lifecycle commands and ``.taskspace/startup.sh``. A failure is recorded and
    shown, but leaves the workspace usable: it still becomes ready. A spare runs only the
    commands meant for prebuilds (onCreateCommand, updateContentCommand); the rest runs once
    it is claimed."""
    async with StepTimer(rt, snap, Step.STARTUP) as step:
        env, spare = plan.environment, snap.ws.is_spare
        script = startup_script(primary=plan.primary, on_create=env.on_create, update_content=env.update_content,
                                post_create=env.post_create, post_start=env.post_start,
                                timeout_seconds=int(rt.settings.startup_timeout), prebuild=spare)
        try:
            result = await rt.backend.exec(snap.id, ["/bin/sh", "-c", script], user=plans.exec_user(plan),
                                           env=plans.command_env(plan, ticket=snap.key, branch=snap.ws.branch)
                                           or None, timeout=rt.settings.startup_timeout + 30)
        except BackendError as exc:
            step.status, step.reason = "failed", exc.message
            step.values = {"startup_status": "failed", "startup_detail": exc.message}
            return
        statuses = parse_status(result.stderr.decode(errors="replace"))
        failed = [(name, code) for name, code in statuses if code not in {"0", "none"}]
        if failed or result.exit_code != 0:
            name, code = failed[0] if failed else ("startup", str(result.exit_code))
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


async def start_phase(rt: Runtime, snap: Snapshot, plan: Plan, *, resumed: bool, clone: bool = False) -> None:
    """Everything from a created workspace to a usable one; run on first launch and on every
    start. ``clone``: run the clone step too (a spare just claimed moves to the ticket branch)."""
    if resumed:
        async with StepTimer(rt, snap, Step.CONTAINER) as step:
            step.values = {"backend_state": await ensure_container(rt, snap, plan)}
    if clone:
        await clone_step(rt, snap, plan)
    await services_step(rt, snap, plan)
    await startup_step(rt, snap, plan)
