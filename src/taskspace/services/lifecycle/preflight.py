"""Preflight: before anything is created, check access to every repository (listing every
problem at once), refresh the mirrors, decide each repository's branch, and resolve the
environment from the primary repository's own files into a plan.

It runs in the launch request, so a launch that cannot work creates nothing, and again only
when a failed workspace is retried after its plan was cleared.
"""

from __future__ import annotations

import asyncio
import hashlib
import posixpath
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docker.utils.build import PatternMatcher

from taskspace.core.devcontainer import dockerfile_environment, find_devcontainer, parse_devcontainer
from taskspace.core.dockerfile import summarize_dockerfile
from taskspace.core.environment import DockerBuild, DockerfileSummary, EnvironmentConfig, EnvironmentSummary
from taskspace.core.errors import GitError, InvalidInput, TaskspaceError
from taskspace.core.repo_url import parse_repo_url
from taskspace.core.services_spec import parse_services
from taskspace.gitops.runner import GitCredential
from taskspace.plugins.backends.base import ChecksImages
from taskspace.services.lifecycle import plan as plans
from taskspace.services.lifecycle.plan import ImagePlan, Plan, ServicePlan
from taskspace.services.runtime import Runtime

DEVCONTAINER_LIMIT = 256 * 1024
DOCKERFILE_LIMIT = 1024 * 1024
SERVICES_PATH = ".taskspace/services.yaml"


@dataclass
class RepoChoice:
    """A repository as chosen for a workspace, with what a previous preflight decided (if any)."""

    name: str
    url: str
    default_branch: str | None
    source_branch: str | None
    target_branch: str | None
    credential: GitCredential | None
    token_name: str | None
    base_sha: str | None = None
    branch_existed: bool | None = None


@dataclass
class PreflightInput:
    workspace_id: str
    project_key: str
    dockerfile: str
    branch: str
    primary: str
    repos: list[RepoChoice]
    #: False: work from the mirrors as they are, talking to no remote (the warm pool does).
    refresh: bool = True


@dataclass
class RepoDecision:
    name: str
    mirror: Path
    branch_existed: bool
    base_sha: str
    source_branch: str
    target_branch: str

    def apply_to(self, row: Any) -> None:
        """Record on a WorkspaceRepo row."""
        row.source_branch, row.target_branch = self.source_branch, self.target_branch
        row.base_sha, row.branch_existed = self.base_sha, self.branch_existed


@dataclass
class PreflightResult:
    plan: Plan
    summary: EnvironmentSummary
    decisions: dict[str, RepoDecision]
    seconds: float

    def workspace_values(self) -> dict[str, Any]:
        return {"plan": plans.dump(self.plan), "environment": self.summary.model_dump(mode="json"),
                "image": self.plan.image.ref}

    def event_data(self) -> dict[str, Any]:
        return {"repos": {d.name: {"branch_existed": d.branch_existed, "base": d.base_sha[:12],
                                   "source": d.source_branch} for d in self.decisions.values()}}


async def _check_repo(rt: Runtime, inp: PreflightInput, repo: RepoChoice) -> RepoDecision:
    url = parse_repo_url(repo.url, rt.settings.repo_url_policy)
    try:
        if inp.refresh:
            mirror, branches = await rt.mirrors.sync(url, repo.credential)
        elif (found := rt.mirrors.fetched(url)) is not None:
            mirror, branches = found, await rt.mirrors.branches(found)
        else:
            raise GitError(f"`{repo.url}` has not been fetched to this server yet.",
                           hint="A launch fetches it with its user's token.")
    except GitError as exc:
        if not inp.refresh:
            raise
        reason = exc.message.removeprefix("git ls-remote failed: ").removeprefix("git fetch failed: ")
        if repo.token_name:
            error = GitError(f"You don't have access to `{repo.url}` with token `{repo.token_name}` ({reason}).",
                             hint="Ask for access or choose another token.")
        else:
            error = GitError(f"You don't have access to `{repo.url}` without a token ({reason}).",
                             hint="Add a token for this host with 'taskspace token add', or ask for access.")
        error.status_code = exc.status_code
        raise error from None
    source = repo.source_branch or repo.default_branch or next(iter(sorted(branches)), "main")
    target = repo.target_branch or source
    if repo.base_sha and repo.branch_existed is not None:  # decided before a restart: keep it
        return RepoDecision(repo.name, mirror, repo.branch_existed, repo.base_sha, source, target)
    if inp.branch in branches:
        return RepoDecision(repo.name, mirror, True, branches[inp.branch], source, target)
    if source not in branches:
        known = ", ".join(sorted(branches)[:15]) or "none"
        raise InvalidInput(f"Branch {source!r} does not exist in {repo.name}.",
                           hint=f"Choose a source branch that exists (branches: {known}).", field="source_branch")
    return RepoDecision(repo.name, mirror, False, branches[source], source, target)


def _combine(problems: list[TaskspaceError]) -> TaskspaceError:
    if len(problems) == 1:
        return problems[0]
    return InvalidInput("Preflight found problems: " + " | ".join(str(p) for p in problems),
                        hint="Fix each of them, then launch again.")


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


async def _image_plan(rt: Runtime, inp: PreflightInput, decision: RepoDecision, build: DockerBuild, *,
                      role: str, origin: str) -> tuple[ImagePlan, DockerfileSummary]:
    text = await _text(rt, decision.mirror, decision.base_sha, build.dockerfile, DOCKERFILE_LIMIT)
    if text is None:
        raise InvalidInput(f"{origin} builds from {build.dockerfile}, which is not in {decision.name} "
                           f"({decision.source_branch}).", hint="Add the Dockerfile, or fix the path.")
    summary = summarize_dockerfile(text, path=build.dockerfile, build_args=build.args, target=build.target)
    tree = await rt.mirrors.tree_id(decision.mirror, decision.base_sha, build.context)
    if tree is None:
        raise InvalidInput(f"The build context {build.context!r} of {origin} is not a folder in {decision.name}.",
                           hint="Fix the context path.")
    key = await _context_key(rt, decision, build, tree) if summary.uses_context else "unused"
    tag = plans.image_tag(inp.project_key, dockerfile=build.dockerfile, dockerfile_text=text.encode(),
                          context_tree=key, build=build, role=role)
    return ImagePlan(ref=tag, build=build, repo=decision.name, commit=decision.base_sha, context_tree=key,
                     bases=summary.external_images), summary


async def _context_key(rt: Runtime, decision: RepoDecision, build: DockerBuild, tree: str) -> str:
    """What of the build context the build can see: the context's tree, less what its
    .dockerignore excludes. A commit that touches only ignored files keeps the image."""
    ignore = await _text(rt, decision.mirror, decision.base_sha, posixpath.join(build.context, ".dockerignore"),
                         DEVCONTAINER_LIMIT)
    if ignore is None:
        return tree
    patterns = [line.strip() for line in ignore.splitlines() if line.strip() and not line.strip().startswith("#")]
    dockerfile = posixpath.relpath(build.dockerfile, build.context)
    matcher = PatternMatcher([*patterns, f"!{dockerfile}"])
    entries = await rt.mirrors.ls_tree(decision.mirror, decision.base_sha, build.context)
    digest = hashlib.sha256()
    for mode, sha, name in entries:
        if not matcher.matches(name):
            digest.update(f"{mode} {sha} {name}\0".encode())
    return "filtered:" + digest.hexdigest()


async def _environment(rt: Runtime, inp: PreflightInput, primary: RepoDecision, files: set[str]) -> EnvironmentConfig:
    config_path = find_devcontainer(files)
    if config_path:
        text = await _text(rt, primary.mirror, primary.base_sha, config_path, DEVCONTAINER_LIMIT)
        assert text is not None
        return parse_devcontainer(text, path=config_path, substitutions={
            "containerWorkspaceFolder": f"/workspace/{primary.name}",
            "localWorkspaceFolderBasename": primary.name,
            "devcontainerId": inp.workspace_id,
        })
    env = dockerfile_environment(inp.dockerfile)
    if env.build and env.build.dockerfile not in files:
        raise InvalidInput(
            f"{primary.name} ({primary.source_branch}) has no {env.build.dockerfile} and no "
            ".devcontainer/devcontainer.json.",
            hint="Add a Dockerfile or a devcontainer.json to the primary repository, or set the "
                 "project's Dockerfile path.")
    return env


async def _plan(rt: Runtime, inp: PreflightInput, decisions: dict[str, RepoDecision]) -> tuple[Plan, EnvironmentSummary]:
    primary = decisions[inp.primary]
    files = set(await rt.mirrors.list_files(primary.mirror, primary.base_sha))
    env = await _environment(rt, inp, primary, files)
    summary: DockerfileSummary | None = None
    if env.build:
        image, summary = await _image_plan(rt, inp, primary, env.build, role="workspace", origin=env.config_path)
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
            svc_image, _ = await _image_plan(rt, inp, primary, decl.build, role=f"svc-{decl.name}",
                                             origin=f"service {decl.name!r}")
        else:
            assert decl.image
            svc_image = ImagePlan(ref=decl.image, repo=primary.name, commit=primary.base_sha)
        services.append(ServicePlan(decl=decl, image=svc_image))
    plan = Plan(primary=primary.name, commit=primary.base_sha, environment=env, image=image, services=services,
                mirrors={name: str(d.mirror) for name, d in decisions.items()})
    return plan, plans.summarize(plan, summary)


async def run_preflight(rt: Runtime, inp: PreflightInput) -> PreflightResult:
    """Raises one TaskspaceError naming every repository problem, or the environment's problem."""
    started = time.monotonic()
    results = await asyncio.gather(*(_check_repo(rt, inp, r) for r in inp.repos), return_exceptions=True)
    problems = []
    for result in results:
        if isinstance(result, TaskspaceError):
            problems.append(result)
        elif isinstance(result, BaseException):
            raise result
    if problems:
        raise _combine(problems)
    decisions = {d.name: d for d in results if isinstance(d, RepoDecision)}
    plan, summary = await _plan(rt, inp, decisions)
    await _check_images(rt, plan)
    return PreflightResult(plan=plan, summary=summary, decisions=decisions, seconds=time.monotonic() - started)


async def _check_images(rt: Runtime, plan: Plan) -> None:
    """Every image the environment needs is on the engine or served by its registry."""
    if not isinstance(rt.backend, ChecksImages):
        return
    refs = list(dict.fromkeys(ref for image in [plan.image, *(s.image for s in plan.services)]
                              for ref in image.needed))
    answers = await asyncio.gather(*(rt.backend.image_problem(ref) for ref in refs))
    problems = [InvalidInput(f"Image `{ref}` is not on the engine and its registry does not serve it ({why}).",
                             hint="Fix the image name, build it on the engine, or set the registry's "
                                  "credentials (TASKSPACE_REGISTRY_AUTH).")
                for ref, why in zip(refs, answers, strict=True) if why]
    if problems:
        raise _combine(problems)
