"""``preparing``: preflight, image, volume, container, clone."""

from __future__ import annotations

import asyncio
import posixpath
import re
import shutil
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskspace.core.devcontainer import dockerfile_environment, find_devcontainer, parse_devcontainer
from taskspace.core.dockerfile import summarize_dockerfile
from taskspace.core.environment import DockerBuild, DockerfileSummary, EnvironmentConfig
from taskspace.core.errors import BackendError, GitError, InvalidInput, TaskspaceError
from taskspace.core.repo_url import parse_repo_url
from taskspace.core.services_spec import parse_services
from taskspace.core.states import Step
from taskspace.core.workspace_scripts import (
    IDENTITY_SCRIPT,
    MIRRORS_DIR,
    NO_GIT_EXIT,
    CloneTarget,
    chown_script,
    clone_script,
    prepare_script,
)
from taskspace.db.engine import transaction
from taskspace.db.models import Build, GitToken, WorkspaceRepo, utcnow
from taskspace.plugins.backends.base import ImageSpec, WorkspaceSpec
from taskspace.services.lifecycle import plan as plans
from taskspace.services.lifecycle.plan import ImagePlan, Plan, ServicePlan
from taskspace.services.lifecycle.snapshot import Snapshot, StepTimer
from taskspace.services.runtime import Runtime

DEVCONTAINER_LIMIT = 256 * 1024
DOCKERFILE_LIMIT = 1024 * 1024
SERVICES_PATH = ".taskspace/services.yaml"
LOG_TAIL = 20


@dataclass
class RepoDecision:
    name: str
    mirror: Path
    branch_existed: bool
    base_sha: str
    source_branch: str
    target_branch: str


def plan_of(snap: Snapshot) -> Plan | None:
    return Plan.model_validate(snap.ws.plan) if snap.ws.plan else None


def spec_for(rt: Runtime, snap: Snapshot, plan: Plan, **extra: Any) -> WorkspaceSpec:
    network = rt.settings.workspace_network
    hosts = {s.decl.name: rt.backend.service_host(network, snap.id, s.decl.name) for s in plan.services}
    return plans.workspace_spec(plan, workspace_id=snap.id, installation=rt.installation,
                                project_key=snap.project.key, ticket=snap.ticket.key, branch=snap.ws.branch,
                                network=network, hosts=hosts, pids_limit=rt.settings.workspace_pids_limit,
                                **extra)


# Preflight -----------------------------------------------------------------------------------


async def _check_repo(rt: Runtime, snap: Snapshot, repo: WorkspaceRepo, token_name: str | None) -> RepoDecision:
    url = parse_repo_url(repo.url, rt.settings.repo_url_policy)
    try:
        mirror = await rt.mirrors.refresh(url, snap.credentials.get(repo.name))
    except GitError as exc:
        with_token = f"with token `{token_name}`" if token_name else "without a token"
        raise GitError(f"You don't have access to `{repo.url}` {with_token} ({exc.message.removeprefix('git fetch failed: ')}).",
                       hint="Ask for access or choose another token." if token_name else
                       "Add a token for this host with 'taskspace token add', or ask for access.") from None
    branches = await rt.mirrors.branches(mirror)
    project_repo = next((r for r in snap.project.repos if r.id == repo.repo_id), None)
    default = (project_repo.default_branch if project_repo else None) or next(iter(sorted(branches)), "main")
    source = repo.source_branch or default
    if repo.base_sha and repo.branch_existed is not None:  # decided before a restart: keep it
        return RepoDecision(repo.name, mirror, repo.branch_existed, repo.base_sha, source,
                            repo.target_branch or source)
    if snap.ws.branch in branches:
        return RepoDecision(repo.name, mirror, True, branches[snap.ws.branch], source, repo.target_branch or source)
    if source not in branches:
        known = ", ".join(sorted(branches)[:15]) or "none"
        raise InvalidInput(f"Branch {source!r} does not exist in {repo.name}.",
                           hint=f"Choose a source branch that exists (branches: {known}).", field="source_branch")
    return RepoDecision(repo.name, mirror, False, branches[source], source, repo.target_branch or source)


def _combine(problems: list[BaseException]) -> TaskspaceError:
    if len(problems) == 1 and isinstance(problems[0], TaskspaceError):
        return problems[0]
    return InvalidInput("Preflight found problems: " + " | ".join(str(p) for p in problems),
                        hint="Fix each of them, then start the workspace again.")


async def _text(rt: Runtime, mirror: Path, commit: str, path: str, limit: int) -> str | None:
    try:
        blob = await rt.mirrors.read_blob(mirror, commit, path, limit=limit)
    except GitError as exc:
        raise InvalidInput(exc.message, hint=exc.hint) from None
    if blob is None:
        return None
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not UTF-8 text.", hint="Save it as UTF-8.") from None


async def _image_plan(rt: Runtime, snap: Snapshot, decision: RepoDecision, build: DockerBuild, *,
                      role: str, files: set[str], origin: str) -> tuple[ImagePlan, DockerfileSummary]:
    text = await _text(rt, decision.mirror, decision.base_sha, build.dockerfile, DOCKERFILE_LIMIT)
    if text is None:
        raise InvalidInput(f"{origin} builds from {build.dockerfile}, which is not in {decision.name} "
                           f"({decision.source_branch}).",
                           hint="Add the Dockerfile, or fix the path.")
    summary = summarize_dockerfile(text, path=build.dockerfile, build_args=build.args, target=build.target)
    tree = await rt.mirrors.tree_id(decision.mirror, decision.base_sha, build.context)
    if tree is None:
        raise InvalidInput(f"The build context {build.context!r} of {origin} is not a folder in {decision.name}.",
                           hint="Fix the context path.")
    tag = plans.image_tag(snap.project.key, dockerfile=build.dockerfile, dockerfile_text=text.encode(),
                          context_tree=tree, build=build, role=role)
    return ImagePlan(ref=tag, build=build, repo=decision.name, commit=decision.base_sha, context_tree=tree), summary


async def _environment(rt: Runtime, snap: Snapshot, primary: RepoDecision, files: set[str]) -> EnvironmentConfig:
    config_path = find_devcontainer(files)
    if config_path:
        text = await _text(rt, primary.mirror, primary.base_sha, config_path, DEVCONTAINER_LIMIT)
        assert text is not None
        return parse_devcontainer(text, path=config_path, substitutions={
            "containerWorkspaceFolder": f"/workspace/{primary.name}",
            "localWorkspaceFolderBasename": primary.name,
            "devcontainerId": snap.id,
        })
    env = dockerfile_environment(snap.project.dockerfile)
    if env.build and env.build.dockerfile not in files:
        raise InvalidInput(
            f"{primary.name} ({primary.source_branch}) has no {env.build.dockerfile} and no "
            ".devcontainer/devcontainer.json.",
            hint="Add a Dockerfile or a devcontainer.json to the primary repository, or set the "
                 "project's Dockerfile path.")
    return env


async def resolve_plan(rt: Runtime, snap: Snapshot, decisions: dict[str, RepoDecision]) -> tuple[Plan, Any]:
    """Read the primary repository's environment files at the chosen commit and decide images."""
    primary = decisions[snap.primary.name]
    files = set(await rt.mirrors.list_files(primary.mirror, primary.base_sha))
    env = await _environment(rt, snap, primary, files)
    summary: DockerfileSummary | None = None
    if env.build:
        image, summary = await _image_plan(rt, snap, primary, env.build, role="workspace", files=files,
                                           origin=env.config_path)
    else:
        assert env.image
        image = ImagePlan(ref=env.image, repo=primary.name, commit=primary.base_sha)
    services: list[ServicePlan] = []
    text = await _text(rt, primary.mirror, primary.base_sha, SERVICES_PATH, DEVCONTAINER_LIMIT)
    for decl in parse_services(text, path=SERVICES_PATH) if text else []:
        for init in decl.init_files:
            if init.source not in files:
                raise InvalidInput(f"{SERVICES_PATH}: service {decl.name!r} copies {init.source}, which is not "
                                   f"in {primary.name}.", hint="Add the file or fix its path.")
        if decl.build:
            svc_image, _ = await _image_plan(rt, snap, primary, decl.build, role=f"svc-{decl.name}",
                                             files=files, origin=f"service {decl.name!r}")
        else:
            assert decl.image
            svc_image = ImagePlan(ref=decl.image, repo=primary.name, commit=primary.base_sha)
        services.append(ServicePlan(decl=decl, image=svc_image))
    plan = Plan(primary=primary.name, commit=primary.base_sha, environment=env, image=image, services=services,
                mirrors={name: str(d.mirror) for name, d in decisions.items()})
    return plan, plans.summarize(plan, summary)


async def preflight(rt: Runtime, snap: Snapshot) -> Plan:
    """Check access to every repository (all problems at once), refresh the mirrors, decide
    branches and resolve the environment. A workspace already planned keeps its plan."""
    existing = plan_of(snap)
    if existing is not None:
        return existing
    async with StepTimer(rt, snap, Step.PREFLIGHT) as step:
        token_names = await _token_names(rt, snap)
        results = await asyncio.gather(*(_check_repo(rt, snap, r, token_names.get(r.name)) for r in snap.repos),
                                       return_exceptions=True)
        problems = [r for r in results if isinstance(r, BaseException)]
        if problems:
            for p in problems:
                if not isinstance(p, TaskspaceError):
                    raise p
            raise _combine(problems)
        decisions = {d.name: d for d in results if isinstance(d, RepoDecision)}
        plan, summary = await resolve_plan(rt, snap, decisions)
        step.values = {"plan": plans.dump(plan), "environment": summary.model_dump(mode="json"),
                       "image": plan.image.ref}
        step.data = {"repos": {d.name: {"branch_existed": d.branch_existed, "base": d.base_sha[:12],
                                        "source": d.source_branch} for d in decisions.values()}}
        async with transaction(rt.sessions) as session:
            for repo in snap.repos:
                d = decisions[repo.name]
                row = await session.get(WorkspaceRepo, repo.id)
                for target in (row, repo):
                    if target is not None:
                        target.source_branch, target.target_branch = d.source_branch, d.target_branch
                        target.base_sha, target.branch_existed = d.base_sha, d.branch_existed
    return plan


async def _token_names(rt: Runtime, snap: Snapshot) -> dict[str, str]:
    ids = {r.token_id: r.name for r in snap.repos if r.token_id}
    if not ids:
        return {}
    async with transaction(rt.sessions) as session:
        names = {}
        for token_id, repo in ids.items():
            token = await session.get(GitToken, token_id)
            if token is not None:
                names[repo] = token.name
        return names


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
    """Start the workspace container and make sure its user can write to /workspace."""
    state = await rt.backend.start_workspace(spec_for(rt, snap, plan), snap.ws.backend_state)
    user = plans.exec_user(plan)
    probe = await rt.backend.exec(snap.id, ["/bin/sh", "-c", prepare_script()], user=user)
    if probe.exit_code != 0:
        ident = await rt.backend.exec(snap.id, ["/bin/sh", "-c", IDENTITY_SCRIPT], user=user)
        owner = ident.stdout.decode().strip()
        fix = await rt.backend.exec(snap.id, ["/bin/sh", "-c", chown_script(owner)], user="0")
        if ident.exit_code != 0 or fix.exit_code != 0:
            raise BackendError(f"/workspace could not be made writable for the workspace user: "
                               f"{(ident.output + fix.output).strip()[-500:]}",
                               hint="Check the image's USER (or remoteUser) exists in the image.")
    return state


async def container_step(rt: Runtime, snap: Snapshot, plan: Plan) -> None:
    async with StepTimer(rt, snap, Step.CONTAINER) as step:
        step.values = {"backend_state": await ensure_container(rt, snap, plan)}


async def clone_step(rt: Runtime, snap: Snapshot, plan: Plan) -> None:
    async with StepTimer(rt, snap, Step.CLONE) as step:
        targets = [CloneTarget(name=r.name, mirror=f"{MIRRORS_DIR}/{r.name}.git", url=r.url, branch=snap.ws.branch,
                               base_sha=r.base_sha or "", branch_existed=bool(r.branch_existed))
                   for r in snap.repos]
        script = clone_script(targets, user_name=snap.owner.display_name or snap.owner.username,
                              user_email=snap.owner.email)
        result = await rt.backend.exec(snap.id, ["/bin/sh", "-c", script], user=plans.exec_user(plan),
                                       timeout=rt.settings.startup_timeout)
        if result.exit_code == NO_GIT_EXIT:
            raise InvalidInput("The workspace image has no git, so the repositories cannot be cloned.",
                               hint="Install git in the image (e.g. RUN apt-get install -y git) and launch again.")
        if result.exit_code != 0:
            raise GitError(f"Cloning into the workspace failed: {result.output.strip()[-800:]}",
                           hint="Retry; if it fails again, check the workspace user can write to /workspace.")
        lines = result.stdout.decode().split("\n")
        step.data = {"cloned": [line[7:] for line in lines if line.startswith("cloned ")],
                     "kept": [line[5:] for line in lines if line.startswith("kept ")]}
