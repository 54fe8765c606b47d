"""Projects: a named application made of repositories (the first is primary) and a purge policy."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from taskspace.core.errors import Conflict, GitError, InvalidInput, NotFound
from taskspace.core.naming import REPO_NAME_RE, validate_project_key, validate_repo_name
from taskspace.core.repo_url import RepoUrl, parse_repo_url
from taskspace.core.roles import require_admin
from taskspace.core.sizes import parse_size
from taskspace.core.tickets import StatusCategory
from taskspace.db.engine import transaction
from taskspace.db.models import Project, Repo, User
from taskspace.plugins.registry import load_tracker
from taskspace.plugins.trackers.base import LocalTickets
from taskspace.services import git_tokens, tracker_links
from taskspace.services.runtime import Runtime
from taskspace.services.vault import Vault

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
MAX_REPOS = 20
#: Far above any machine, and below what the database column holds.
MAX_MEMORY = 1024**5


@dataclass
class RepoInput:
    name: str
    url: RepoUrl


@dataclass
class ProjectInput:
    name: str
    repos: list[str]
    key: str | None = None
    dockerfile: str = "Dockerfile"
    purge_on: list[str] | None = None
    purge_on_category: str | None = StatusCategory.DONE.value
    grace_seconds: float = 0
    tracker: str = "builtin"
    cpus: float | None = None
    memory: str | None = None
    pids: int | None = None
    tracker_config: dict[str, Any] = field(default_factory=dict)
    max_age_seconds: float | None = None
    idle_stop_seconds: float | None = None
    warm_pool: int = 0


MAX_WARM_POOL = 10


def _warm_pool(size: int) -> int:
    if not 0 <= size <= MAX_WARM_POOL:
        raise InvalidInput(f"A warm pool of {size} workspaces is out of range.",
                           hint=f"Give 0 (no pool) to {MAX_WARM_POOL}.", field="warm_pool")
    return size


def derive_key(name: str) -> str:
    letters = re.sub(r"[^A-Z0-9]", "", name.upper())
    letters = letters.lstrip("0123456789")
    return letters[:10]


def parse_repo_arg(raw: str, rt: Runtime) -> RepoInput:
    """``URL`` or ``NAME=URL`` (to choose the directory name)."""
    name, sep, rest = raw.partition("=")
    if sep and REPO_NAME_RE.match(name) and "/" not in name and ":" not in name:
        url = parse_repo_url(rest, rt.settings.repo_url_policy)
        return RepoInput(validate_repo_name(name), url)
    url = parse_repo_url(raw, rt.settings.repo_url_policy)
    return RepoInput(validate_repo_name(url.name), url)


def validate_dockerfile_path(path: str) -> str:
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or "\\" in path or len(path) > 500 \
            or any(ord(c) < 0x20 for c in path):
        raise InvalidInput(f"{path!r} is not a Dockerfile path inside the primary repository.",
                           hint="Give a relative path such as 'Dockerfile' or 'docker/dev.Dockerfile'.",
                           field="dockerfile")
    return str(p)


def _validate(data: ProjectInput, rt: Runtime) -> tuple[str, list[RepoInput], list[str]]:
    if not NAME_RE.match(data.name or ""):
        raise InvalidInput(f"{data.name!r} is not a valid project name.",
                           hint="Use up to 64 letters, digits, '.', '_' and '-'.", field="name")
    key = validate_project_key(data.key or derive_key(data.name))
    if not data.repos:
        raise InvalidInput("A project needs at least one repository.", hint="Add --repo URL.", field="repos")
    if len(data.repos) > MAX_REPOS:
        raise InvalidInput(f"A project can have at most {MAX_REPOS} repositories.",
                           hint="Split the repositories over several projects.", field="repos")
    repos = [parse_repo_arg(r, rt) for r in data.repos]
    seen: set[str] = set()
    for repo in repos:
        if repo.name in seen:
            raise InvalidInput(f"Two repositories would both be cloned to /workspace/{repo.name}.",
                               hint="Name one explicitly with --repo NAME=URL.", field="repos")
        seen.add(repo.name)
    validate_dockerfile_path(data.dockerfile)
    config = tracker_links.validate_config(data.tracker, data.tracker_config, project_key=key)
    statuses = _statuses(data.tracker, config, data.purge_on or [])
    _timer(data.max_age_seconds, "max_age")
    _timer(data.idle_stop_seconds, "idle_stop")
    _limits(data)
    _warm_pool(data.warm_pool)
    if data.purge_on_category is not None and data.purge_on_category not in set(StatusCategory):
        raise InvalidInput(f"{data.purge_on_category!r} is not a status category.",
                           hint="Use todo, in_progress or done.", field="purge_on_category")
    return key, repos, statuses


def _statuses(tracker: str, config: Any, wanted: list[str]) -> list[str]:
    """The purge statuses, spelled as the tracker does. A tracker whose statuses are not all
    known in advance (Jira, labels) accepts any name."""
    cls = load_tracker(tracker)
    workflow = cls(config).workflow()
    statuses = []
    for status in wanted:
        canonical = workflow.canonical(status)
        if canonical is None and issubclass(cls, LocalTickets):
            names = ", ".join(s.name for s in workflow.statuses)
            raise InvalidInput(f"{status!r} is not a status of the {tracker} tracker.",
                               hint=f"Statuses: {names}.", field="purge_on")
        statuses.append(canonical or status.strip())
    return statuses


def _timer(seconds: float | None, field_name: str) -> None:
    if seconds is not None and not 60 <= seconds <= 366 * 86400:
        raise InvalidInput(f"{field_name} must be between a minute and a year.", hint="Give e.g. 30d or 8h.",
                           field=field_name)


def _limits(data: ProjectInput) -> int | None:
    """Validated resource limits; returns the memory limit in bytes."""
    if data.cpus is not None and not 0.1 <= data.cpus <= 512:
        raise InvalidInput(f"{data.cpus} CPUs is out of range.", hint="Give 0.1 to 512.", field="cpus")
    if data.pids is not None and not 64 <= data.pids <= 1_000_000:
        raise InvalidInput(f"A limit of {data.pids} processes is out of range.", hint="Give 64 to 1000000.",
                           field="pids")
    memory = parse_size(data.memory, field="memory") if data.memory else None
    if memory is not None and memory < 64 * 1024**2:
        raise InvalidInput("A workspace needs at least 64 MiB of memory.", hint="Give e.g. 2g.", field="memory")
    if memory is not None and memory > MAX_MEMORY:
        raise InvalidInput(f"{data.memory!r} is more memory than a machine has.", hint="Give e.g. 8g (at most 1024t).",
                           field="memory")
    return memory


async def create(rt: Runtime, *, user: User, data: ProjectInput) -> Project:
    """Validate, check every repository answers (with the caller's token for its host), then
    store. Admins only. Nothing is created when any check fails."""
    require_admin(user.role, "add projects")
    key, repos, statuses = _validate(data, rt)
    async with transaction(rt.sessions) as session:
        clash = await session.scalar(select(Project).where(or_(Project.name == data.name, Project.key == key)))
        if clash is not None:
            raise Conflict(f"A project named {clash.name!r} with key {clash.key} exists already.",
                           hint="Choose another name (or --key).")
        creds = []
        for repo in repos:
            token = await git_tokens.choose(session=session, user=user, repo=repo.url, preferred=None)
            creds.append(git_tokens.credential(rt.vault, token) if token else None)

    async def probe(repo: RepoInput, cred: object) -> str:
        try:
            heads = await rt.mirrors.ls_remote(repo.url, cred)  # type: ignore[arg-type]
        except GitError as exc:
            error = GitError(f"Cannot read {repo.url.url}: {exc.message}", hint=exc.hint)
            error.status_code = exc.status_code
            raise error from None
        if not heads.branches:
            raise InvalidInput(f"{repo.url.url} has no branches yet.",
                               hint="Push a first commit, then add the project.", field="repos")
        return heads.default_branch or next(iter(heads.branches))

    defaults = await asyncio.gather(*(probe(r, c) for r, c in zip(repos, creds, strict=True)))

    async with transaction(rt.sessions) as session:
        project = Project(
            key=key, name=data.name, tracker=data.tracker, dockerfile=data.dockerfile,
            purge_on_category=data.purge_on_category, purge_on_statuses=statuses,
            purge_grace_seconds=int(data.grace_seconds), cpus=data.cpus, memory_bytes=_limits(data),
            pids_limit=data.pids,
            max_age_seconds=int(data.max_age_seconds) if data.max_age_seconds else None,
            idle_stop_seconds=int(data.idle_stop_seconds) if data.idle_stop_seconds else None,
            warm_pool=data.warm_pool,
            repos=[Repo(name=r.name, url=r.url.url, default_branch=d, is_primary=i == 0, position=i)
                   for i, (r, d) in enumerate(zip(repos, defaults, strict=True))],
        )
        tracker_links.store(project, rt.vault, data.tracker,
                            tracker_links.validate_config(data.tracker, data.tracker_config, project_key=key))
        session.add(project)
        try:
            await session.flush()
        except Exception as exc:  # a concurrent create won the unique name/key
            raise Conflict(f"A project named {data.name!r} or with key {key} exists already.") from exc
    return project


async def list_all(*, session: AsyncSession) -> list[Project]:
    return list(await session.scalars(select(Project).order_by(Project.name)))


async def get(*, session: AsyncSession, ref: str) -> Project:
    project = await session.scalar(select(Project).where(or_(Project.name == ref, Project.key == ref.upper())))
    if project is None:
        raise NotFound(f"No project named {ref!r}.", hint="See 'taskspace project list'.")
    return project


@dataclass
class ProjectPatch:
    """Changes to a project; None leaves a setting as it is."""

    purge_on: list[str] | None = None
    purge_on_category: str | None = None
    clear_purge_category: bool = False
    grace_seconds: float | None = None
    max_age_seconds: float | None = None
    idle_stop_seconds: float | None = None
    clear_timers: list[str] = field(default_factory=list)
    cpus: float | None = None
    memory: str | None = None
    pids: int | None = None
    tracker: str | None = None
    tracker_config: dict[str, Any] | None = None
    warm_pool: int | None = None


async def update(*, session: AsyncSession, vault: Vault, user: User, ref: str, patch: ProjectPatch) -> Project:
    """Change a project's policy, limits, warm pool or tracker link (admins). Validated before
    anything changes; the purge policy and the pool apply the new settings on the next pass."""
    require_admin(user.role, "change projects")
    project = await get(session=session, ref=ref)
    tracker = patch.tracker or project.tracker
    if patch.tracker is not None or patch.tracker_config is not None:
        if patch.tracker_config is None and patch.tracker != project.tracker:
            raise InvalidInput("A new tracker needs its config.", hint="Give tracker_config too.",
                               field="tracker_config")
        config = tracker_links.validate_config(tracker, patch.tracker_config or {}, project_key=project.key)
        tracker_links.store(project, vault, tracker, config)
        project.tracker_synced_at = project.tracker_stale_since = project.tracker_error = None
    if patch.purge_on is not None:
        project.purge_on_statuses = _statuses(tracker, tracker_links.tracker_for(project, vault).config,
                                              patch.purge_on)
    if patch.clear_purge_category:
        project.purge_on_category = None
    elif patch.purge_on_category is not None:
        if patch.purge_on_category not in set(StatusCategory):
            raise InvalidInput(f"{patch.purge_on_category!r} is not a status category.",
                               hint="Use todo, in_progress or done.", field="purge_on_category")
        project.purge_on_category = patch.purge_on_category
    if patch.grace_seconds is not None:
        project.purge_grace_seconds = int(patch.grace_seconds)
    for name in ("max_age_seconds", "idle_stop_seconds"):
        value = getattr(patch, name)
        if value is not None:
            _timer(value, name.removesuffix("_seconds"))
            setattr(project, name, int(value))
        if name.removesuffix("_seconds") in patch.clear_timers:
            setattr(project, name, None)
    limits = ProjectInput(name=project.name, repos=["-"], cpus=patch.cpus, memory=patch.memory, pids=patch.pids)
    memory = _limits(limits)
    if patch.cpus is not None:
        project.cpus = patch.cpus
    if memory is not None:
        project.memory_bytes = memory
    if patch.pids is not None:
        project.pids_limit = patch.pids
    if patch.warm_pool is not None:
        project.warm_pool = _warm_pool(patch.warm_pool)
    await session.flush()
    return project

