"""``preparing``: preflight, image, volume, container, clone."""

from __future__ import annotations

import asyncio
import posixpath
import re
import shutil
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from taskspace.core.errors import BackendError, GitError, InvalidInput, TaskspaceError
from taskspace.core.sizes import parse_size
from taskspace.core.states import Step
from taskspace.core.workspace_scripts import (
    MIRRORS_DIR,
    NO_GIT_EXIT,
    NOT_WRITABLE_EXIT,
    CloneTarget,
    chown_script,
    clone_script,
)
from taskspace.db.engine import transaction
from taskspace.db.models import Build, Project, WorkspaceRepo, utcnow
from taskspace.plugins.backends.base import ExecResult, ImageSpec, WorkspaceSpec
from taskspace.services.lifecycle import plan as plans
from taskspace.services.lifecycle.plan import ImagePlan, Plan
from taskspace.services.lifecycle.preflight import DOCKERFILE_LIMIT, PreflightInput, RepoChoice, run_preflight
from taskspace.services.lifecycle.snapshot import Snapshot, StepTimer
from taskspace.services.runtime import Runtime
from taskspace.settings import Settings

LOG_TAIL = 20


def plan_of(snap: Snapshot) -> Plan | None:
    return Plan.model_validate(snap.ws.plan) if snap.ws.plan else None


def limits(settings: Settings, project: Project) -> dict[str, Any]:
    """The resource limits of the project's containers: its own, else the defaults."""
    default_memory = parse_size(settings.workspace_memory) if settings.workspace_memory else None
    return {"pids_limit": project.pids_limit or settings.workspace_pids_limit,
            "cpus": project.cpus or settings.workspace_cpus,
            "memory_bytes": project.memory_bytes or default_memory}


def spec_for(rt: Runtime, snap: Snapshot, plan: Plan, **extra: Any) -> WorkspaceSpec:
    """The backend spec of a workspace."""
    network = rt.settings.workspace_network
    hosts = {s.decl.name: rt.backend.service_host(network, snap.id, s.decl.name) for s in plan.services}
    return plans.workspace_spec(plan, workspace_id=snap.id, installation=rt.installation,
                                project_key=snap.project.key, ticket=snap.key or "", branch=snap.ws.branch,
                                network=network, hosts=hosts, owner=(snap.ws.environment or {}).get("user"),
                                **limits(rt.settings, snap.project), **extra)


# Preflight -----------------------------------------------------------------------------------


def preflight_input(snap: Snapshot) -> PreflightInput:
    defaults = {r.id: r.default_branch for r in snap.project.repos}
    return PreflightInput(
        workspace_id=snap.id, project_key=snap.project.key, dockerfile=snap.project.dockerfile,
        branch=snap.ws.branch, primary=snap.primary.name,
        repos=[RepoChoice(name=r.name, url=r.url, default_branch=defaults.get(r.repo_id) if r.repo_id else None,
                          source_branch=r.source_branch, target_branch=r.target_branch,
                          credential=snap.credentials.get(r.name),
                          token_name=snap.token_names.get(r.name),
                          base_sha=r.base_sha, branch_existed=r.branch_existed) for r in snap.repos])


async def preflight(rt: Runtime, snap: Snapshot) -> Plan:
    """The plan decided at launch; decided again here only after a retry cleared it."""
    existing = plan_of(snap)
    if existing is not None:
        return existing
    async with StepTimer(rt, snap, Step.PREFLIGHT) as step:
        result = await run_preflight(rt, preflight_input(snap))
        step.values = result.workspace_values()
        step.data = result.event_data()
        async with transaction(rt.sessions) as session:
            for repo in snap.repos:
                row = await session.get(WorkspaceRepo, repo.id)
                for target in (row, repo):
                    if target is not None:
                        result.decisions[repo.name].apply_to(target)
    return result.plan


# Image ---------------------------------------------------------------------------------------


def build_log_path(rt: Runtime, ref: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", ref)
    return rt.settings.logs_dir / "builds" / f"{safe}.log"


class BuildLog:
    """Writes build output to the build's log file, keeping the last lines for error messages."""

    def __init__(self, path: Path):
        self.path = path
        self.tail: deque[str] = deque(maxlen=LOG_TAIL)
        self._fh: Any = None

    def __call__(self, line: str) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("w", encoding="utf-8")
        self._fh.write(line + "\n")
        self._fh.flush()
        self.tail.append(line)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


async def _record_build(rt: Runtime, snap: Snapshot, ref: str, **values: Any) -> None:
    async with transaction(rt.sessions) as session:
        row = await session.get(Build, ref)
        if row is None:
            row = Build(tag=ref, project_id=snap.project.id, status="building")
            session.add(row)
        for key, value in values.items():
            setattr(row, key, value)


async def ensure_image(rt: Runtime, snap: Snapshot, plan: Plan, image: ImagePlan) -> bool:
    """Make ``image.ref`` present: build it from the mirror (content-addressed, so an unchanged
    environment is never rebuilt) or pull it. Returns True when it built or pulled."""
    if await rt.backend.has_image(image.ref):
        return False
    log = BuildLog(build_log_path(rt, image.ref))
    started = time.monotonic()
    await _record_build(rt, snap, image.ref, status="building", started_at=utcnow(), error=None)
    try:
        if image.build is None:
            await rt.backend.pull_image(image.ref, log)
        else:
            await _build(rt, plan, image, log)
    except TaskspaceError as exc:
        log(f"ERROR: {exc.message}")
        await _record_build(rt, snap, image.ref, status="failed", finished_at=utcnow(), error=exc.message,
                            duration_ms=int((time.monotonic() - started) * 1000))
        tail = "\n".join(log.tail)
        raise BackendError(f"{exc.message}\n--- end of the build log ---\n{tail}", hint=exc.hint) from None
    finally:
        log.close()
    await _record_build(rt, snap, image.ref, status="ok", finished_at=utcnow(),
                        duration_ms=int((time.monotonic() - started) * 1000))
    return True


async def _build(rt: Runtime, plan: Plan, image: ImagePlan, log: BuildLog) -> None:
    assert image.build is not None
    build = image.build
    mirror = Path(plan.mirrors[image.repo])
    tmp_root = rt.settings.data_dir / "tmp"
    tmp_root.mkdir(exist_ok=True)
    for base in image.bases:  # with the configured registry credentials, which builds do not use
        await rt.backend.pull_image(base, log)
    tmp = Path(tempfile.mkdtemp(prefix="build-", dir=tmp_root))
    try:
        context = tmp / "context"
        await rt.mirrors.export(mirror, image.commit, build.context, context)
        relative = posixpath.relpath(build.dockerfile, build.context)
        if relative.startswith("../"):
            # A Dockerfile outside its context (allowed by devcontainer.json): hand it over apart.
            text = await rt.mirrors.read_blob(mirror, image.commit, build.dockerfile, limit=DOCKERFILE_LIMIT)
            outside = tmp / "Dockerfile"
            outside.write_bytes(text or b"")
            dockerfile = str(outside)
        else:
            dockerfile = relative
        await rt.backend.ensure_image(ImageSpec(
            tag=image.ref, context_dir=str(context), dockerfile=dockerfile, build_args=build.args,
            target=build.target, labels={"taskspace.installation": rt.installation,
                                         "taskspace.context": image.context_tree or ""}), log)
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)


async def image_step(rt: Runtime, snap: Snapshot, plan: Plan) -> None:
    async with StepTimer(rt, snap, Step.IMAGE) as step:
        images = {plan.image.ref: plan.image, **{s.image.ref: s.image for s in plan.services}}
        built = {}
        for ref, image in images.items():
            built[ref] = await ensure_image(rt, snap, plan, image)
        step.data = {"images": built, "cached": not any(built.values())}


# Volume, container, clone --------------------------------------------------------------------


async def volume_step(rt: Runtime, snap: Snapshot, plan: Plan) -> None:
    async with StepTimer(rt, snap, Step.VOLUME) as step:
        state = await rt.backend.prepare(spec_for(rt, snap, plan), snap.ws.backend_state)
        step.values = {"backend_state": state}


async def ensure_container(rt: Runtime, snap: Snapshot, plan: Plan) -> dict[str, Any]:
    return await rt.backend.start_workspace(spec_for(rt, snap, plan), snap.ws.backend_state)


async def container_step(rt: Runtime, snap: Snapshot, plan: Plan) -> None:
    async with StepTimer(rt, snap, Step.CONTAINER) as step:
        step.values = {"backend_state": await ensure_container(rt, snap, plan)}


def clone_command(snap: Snapshot) -> str:
    """The clone script for the workspace's repositories: cloned on the ticket branch, or, in a
    spare just claimed, moved to it (a spare being built is cloned on the source branches)."""
    spare = snap.ws.is_spare
    targets = [CloneTarget(name=r.name, mirror=f"{MIRRORS_DIR}/{r.name}.git", url=r.url,
                           branch=(r.source_branch or "") if spare else snap.ws.branch,
                           base_sha=r.base_sha or "", branch_existed=spare or bool(r.branch_existed))
               for r in snap.repos]
    owner = snap.owner
    return clone_script(targets, user_name=owner.display_name or owner.username if owner else None,
                        user_email=owner.email if owner else None, spare=spare)


async def own_workspace(rt: Runtime, snap: Snapshot, refused: ExecResult) -> None:
    """A new volume belongs to root: hand /workspace to the user the clone ran as (its
    ``uid:gid`` is what the refused clone printed); the volume keeps it."""
    fix = await rt.backend.exec(snap.id, ["/bin/sh", "-c", chown_script(refused.stdout.decode().strip())], user="0")
    if fix.exit_code != 0:
        raise BackendError(f"/workspace could not be made writable for the workspace user: "
                           f"{(refused.output + fix.output).strip()[-500:]}",
                           hint="Check the image's USER (or remoteUser) exists in the image.")


def record_clone(step: StepTimer, result: ExecResult) -> None:
    """The clone's outcome: the step's data (``cloned``/``switched``/``kept`` repositories), or
    the error that fails the workspace."""
    if result.exit_code == NO_GIT_EXIT:
        raise InvalidInput("The workspace image has no git, so the repositories cannot be cloned.",
                           hint="Install git in the image (e.g. RUN apt-get install -y git) and launch again.")
    if result.exit_code != 0:
        raise GitError(f"Cloning into the workspace failed: {result.output.strip()[-800:]}",
                       hint="Retry; if it fails again, check the workspace user can write to /workspace "
                            "and that nothing in it conflicts with the branch.")
    lines = result.stdout.decode().split("\n")
    step.data = {verb: [line[len(verb) + 1:] for line in lines if line.startswith(verb + " ")]
                 for verb in ("cloned", "switched", "kept")}


async def run_clone(rt: Runtime, snap: Snapshot, plan: Plan, step: StepTimer) -> None:
    script, user = clone_command(snap), plans.exec_user(plan)
    result = await rt.backend.exec(snap.id, ["/bin/sh", "-c", script], user=user, timeout=rt.settings.startup_timeout)
    if result.exit_code == NOT_WRITABLE_EXIT:
        await own_workspace(rt, snap, result)
        result = await rt.backend.exec(snap.id, ["/bin/sh", "-c", script], user=user,
                                       timeout=rt.settings.startup_timeout)
    record_clone(step, result)


async def clone_step(rt: Runtime, snap: Snapshot, plan: Plan) -> None:
    """Clone the repositories on the ticket branch (a spare being built: on its source branches)."""
    async with StepTimer(rt, snap, Step.CLONE) as step:
        await run_clone(rt, snap, plan, step)
