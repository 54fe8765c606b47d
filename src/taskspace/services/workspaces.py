"""Workspaces as users see them: launch, look up, ask to stop/start/purge, follow events, logs, exec.

These calls record intent and return at once; the reconciler does the work (see
``services.lifecycle``). Launching a ticket that already has a workspace returns that one,
also when two launches race (a partial unique index decides).
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Integer, Select, bindparam, func, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from taskspace.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from taskspace.core.naming import TICKET_KEY_RE, ticket_branch, validate_branch_name, validate_ticket_key
from taskspace.core.repo_url import parse_repo_url
from taskspace.core.roles import Access, check_workspace, may
from taskspace.core.states import PREPARE_STEPS, Desired, State, Step
from taskspace.core.tickets import StatusCategory
from taskspace.core.workspace_scripts import STARTUP_LOG
from taskspace.db.engine import transaction
from taskspace.db.models import (
    NOT_PURGED,
    Event,
    Project,
    Repo,
    Ticket,
    User,
    Workspace,
    WorkspaceRepo,
    utcnow,
)
from taskspace.plugins.backends.base import ExecChunk, SupportsFileRead, SupportsIdeAttach
from taskspace.services import activity, git_tokens, pool
from taskspace.services.lifecycle.plan import ticket_env
from taskspace.services.lifecycle.preflight import PreflightInput, RepoChoice, run_preflight
from taskspace.services.lifecycle.prepare import build_log_path
from taskspace.services.runtime import Runtime

MAX_ARGV = 256
MAX_ARG_LENGTH = 65536


@dataclass
class LaunchRequest:
    key: str
    repos: list[str] | None = None
    source_branch: str | None = None
    source_branches: dict[str, str] = field(default_factory=dict)
    target_branch: str | None = None
    target_branches: dict[str, str] = field(default_factory=dict)
    token: str | None = None


def _branches(request: LaunchRequest, names: set[str]) -> None:
    for label, single, per_repo in (("source_branch", request.source_branch, request.source_branches),
                                    ("target_branch", request.target_branch, request.target_branches)):
        if single:
            validate_branch_name(single, field=label)
        for repo, branch in per_repo.items():
            if repo not in names:
                raise InvalidInput(f"{label} names repository {repo!r}, which is not chosen for this workspace.",
                                   hint=f"Chosen: {', '.join(sorted(names))}.", field=label)
            validate_branch_name(branch, field=label)


async def active_for(session: AsyncSession, ticket_id: int, owner_id: int) -> Workspace | None:
    return await session.scalar(select(Workspace).where(
        Workspace.ticket_id == ticket_id, Workspace.owner_id == owner_id, NOT_PURGED))


async def launch(rt: Runtime, *, user: User, request: LaunchRequest) -> tuple[Workspace, bool]:
    """Return the caller's workspace for the ticket, or run the preflight and create one
    (state ``requested``; the reconciler takes it from there) or claim a matching spare of the
    project's warm pool (state ``starting``; see ``services.pool``). Returns (workspace,
    created). Bad input or a failed preflight raises before anything is created."""
    key = validate_ticket_key(request.key.strip().upper())
    async with transaction(rt.sessions) as session:
        ticket = await session.scalar(select(Ticket).where(Ticket.key == key))
        if ticket is None:
            raise NotFound(f"No ticket {key}.", hint="See 'taskspace ticket list'.")
        existing = await active_for(session, ticket.id, user.id)
        if existing is not None:
            return existing, False
        if ticket.status_category == StatusCategory.DONE.value:
            raise Conflict(f"{key} is {ticket.status}: its workspace would be purged at once.",
                           hint="Move the ticket back to a working status to launch a workspace.")
        project = ticket.project
        rows, choices = await _choose_repos(rt, session, user, project.repos, request)
        ticket_id, branch = ticket.id, ticket_branch(key, ticket.title)
        inp = PreflightInput(workspace_id=secrets.token_hex(6), project_key=project.key,
                             dockerfile=project.dockerfile, branch=branch,
                             primary=next(r.name for r in rows if r.is_primary), repos=choices)
        project_id = project.id
        # A spare of the warm pool has every repository of the project.
        pooled = project.warm_pool > 0 and len(rows) == len(project.repos)

    result = await run_preflight(rt, inp)  # no session open: this talks to git remotes
    pool_key = await pool.key_for(rt, project, result.plan, inp.workspace_id) if pooled else None
    workspace: Workspace | None = None

    async with transaction(rt.sessions) as session:
        if pool_key is not None:
            want = pool.Claim(project_id=project_id, ticket_id=ticket_id, user=user, branch=branch, key=pool_key,
                              workspace_id=inp.workspace_id, result=result, repos=rows)
            try:
                workspace = await pool.claim(session, want)
            except IntegrityError:
                return await _raced(session, ticket_id, user), False
        if workspace is None:
            for row in rows:
                result.decisions[row.name].apply_to(row)
            workspace = Workspace(id=inp.workspace_id, ticket_id=ticket_id, owner_id=user.id, project_id=project_id,
                                  state=State.REQUESTED.value, desired=Desired.READY.value, branch=branch,
                                  backend=rt.settings.backend, repos=rows, **result.workspace_values())
            try:
                async with session.begin_nested():
                    session.add(workspace)
                    await session.flush()
            except IntegrityError:
                return await _raced(session, ticket_id, user), False
            session.add_all([
                Event(workspace_id=workspace.id, actor=user.username, kind="transition", from_state=None,
                      to_state=State.REQUESTED.value, reason=f"launched by {user.username}"),
                Event(workspace_id=workspace.id, actor="taskspace", kind="step", step="preflight", status="ok",
                      duration_ms=int(result.seconds * 1000), data=result.event_data()),
            ])
    rt.bus.wake_reconciler(workspace.id)
    await rt.bus.published()
    return workspace, True


async def _raced(session: AsyncSession, ticket_id: int, user: User) -> Workspace:
    """A concurrent launch of the same ticket by the same user won the race: its workspace."""
    existing = await active_for(session, ticket_id, user.id)
    if existing is None:
        raise Conflict("The launch collided with another change.", hint="Launch again.")
    return existing


async def _choose_repos(rt: Runtime, session: AsyncSession, user: User, project_repos: list[Repo],
                        request: LaunchRequest) -> tuple[list[WorkspaceRepo], list[RepoChoice]]:
    """The chosen repositories (the primary always among them) with branches and tokens."""
    by_name = {r.name: r for r in project_repos}
    wanted = list(request.repos or by_name)
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise InvalidInput(f"The project has no repository named {', '.join(map(repr, unknown))}.",
                           hint=f"Repositories: {', '.join(by_name)}.", field="repos")
    if len(set(wanted)) != len(wanted):
        raise InvalidInput("A repository is chosen twice.", hint="Name each repository once.", field="repos")
    primary = next(r for r in project_repos if r.is_primary)
    if primary.name not in wanted:
        wanted.insert(0, primary.name)  # its .taskspace/ and Dockerfile make the environment
    _branches(request, set(wanted))
    rows, choices = [], []
    token_found = request.token is None
    for position, name in enumerate(sorted(wanted, key=lambda n: by_name[n].position)):
        repo = by_name[name]
        url = parse_repo_url(repo.url, rt.settings.repo_url_policy)
        token = await git_tokens.choose(session=session, user=user, repo=url, preferred=request.token)
        token_found = token_found or (token is not None and token.name == request.token)
        if token is not None:
            git_tokens.mark_used(token)
        source = request.source_branches.get(name) or request.source_branch
        target = request.target_branches.get(name) or request.target_branch
        rows.append(WorkspaceRepo(repo_id=repo.id, name=name, url=repo.url, is_primary=repo.is_primary,
                                  position=position, source_branch=source, target_branch=target,
                                  token_id=token.id if token else None))
        choices.append(RepoChoice(name=name, url=repo.url, default_branch=repo.default_branch,
                                  source_branch=source, target_branch=target,
                                  credential=git_tokens.credential(rt.vault, token) if token else None,
                                  token_name=token.name if token else None))
    if not token_found:
        raise InvalidInput(f"Token {request.token!r} is not for the host of any chosen repository.",
                           hint="See 'taskspace token list' for each token's host.", field="token")
    return rows, choices


async def find(*, session: AsyncSession, user: User, ref: str, access: Access = Access.READ) -> Workspace:
    """A workspace by ticket key — the caller's own (the active one, else the latest) — or by
    id, anyone's, if the caller's role allows ``access`` (see ``core.roles``). A workspace the
    caller may not see is reported as not found."""
    ref = ref.strip()
    by_id = await session.get(Workspace, ref.lower()) if len(ref) <= 32 else None
    if by_id is not None and not by_id.is_spare:  # spares are the pool's, seen through their project
        check_workspace(user.role, access, owner=by_id.owner_id == user.id, what=ref)
        return by_id
    stmt = (select(Workspace).join(Ticket).where(Workspace.owner_id == user.id, Ticket.key == ref.upper())
            .order_by(Workspace.created_at.desc()))
    rows = list(await session.scalars(stmt))
    for ws in rows:
        if ws.state != State.PURGED.value:
            return ws
    if rows:
        return rows[0]
    if not TICKET_KEY_RE.match(ref.upper()):
        raise NotFound(f"You have no workspace {ref[:40]!r}.", hint="Give a ticket key (PAY-12) or a workspace id.")
    raise NotFound(f"You have no workspace for {ref.upper()}.",
                   hint=f"Launch one with 'taskspace ws launch {ref.upper()}'.")


#: Workspaces of a listing page when the caller does not say, and at most.
PAGE_DEFAULT = 100
PAGE_MAX = 500


@dataclass(frozen=True, slots=True)
class RepoSummary:
    name: str
    url: str
    is_primary: bool
    source_branch: str | None
    target_branch: str | None
    base_sha: str | None
    branch_existed: bool | None


@dataclass(frozen=True, slots=True)
class WorkspaceSummary:
    """A workspace as the API shows it, and no more: not the plan, the backend's state or the
    ticket's text. A listing reads these straight from its rows (fields in the order of
    ``_SUMMARY_COLUMNS``), without the objects of the ORM; ``summary`` makes one of a workspace."""

    id: str
    key: str
    title: str
    project: str
    owner: str
    state: str
    desired: str
    step: str | None
    failure_step: str | None
    failure_reason: str | None
    branch: str
    image: str | None
    environment: dict[str, Any] | None
    startup_status: str | None
    startup_detail: str | None
    created_at: datetime
    ready_at: datetime | None
    ready_seconds: float | None
    last_started_at: datetime | None
    purge_due_at: datetime | None
    purged_at: datetime | None
    rescue: list[Any] | None
    repos: list[RepoSummary]


_SUMMARY_COLUMNS = (Workspace.id, Ticket.key, Ticket.title, Project.name, User.username, Workspace.state,
                    Workspace.desired, Workspace.step, Workspace.failure_step, Workspace.failure_reason,
                    Workspace.branch, Workspace.image, Workspace.environment, Workspace.startup_status,
                    Workspace.startup_detail, Workspace.created_at, Workspace.ready_at, Workspace.ready_seconds,
                    Workspace.last_started_at, Workspace.purge_due_at, Workspace.purged_at, Workspace.rescue)
_REPO_COLUMNS = (WorkspaceRepo.name, WorkspaceRepo.url, WorkspaceRepo.is_primary, WorkspaceRepo.source_branch,
                 WorkspaceRepo.target_branch, WorkspaceRepo.base_sha, WorkspaceRepo.branch_existed)


def summary(ws: Workspace) -> WorkspaceSummary:
    """What the API shows of a workspace loaded whole (with its ticket, project, owner, repos)."""
    assert ws.ticket is not None and ws.owner is not None  # a spare of the pool is no one's and is not shown
    return WorkspaceSummary(
        id=ws.id, key=ws.ticket.key, title=ws.ticket.title, project=ws.ticket.project.name, owner=ws.owner.username,
        state=ws.state, desired=ws.desired, step=ws.step, failure_step=ws.failure_step,
        failure_reason=ws.failure_reason, branch=ws.branch, image=ws.image, environment=ws.environment,
        startup_status=ws.startup_status, startup_detail=ws.startup_detail, created_at=ws.created_at,
        ready_at=ws.ready_at, ready_seconds=ws.ready_seconds, last_started_at=ws.last_started_at,
        purge_due_at=ws.purge_due_at, purged_at=ws.purged_at, rescue=ws.rescue,
        repos=[RepoSummary(name=r.name, url=r.url, is_primary=r.is_primary, source_branch=r.source_branch,
                           target_branch=r.target_branch, base_sha=r.base_sha, branch_existed=r.branch_existed)
               for r in ws.repos])


@dataclass
class WorkspacePage:
    """A page of a listing, newest first: ``total`` counts every page; ``next_cursor`` asks
    for the next one (None on the last)."""

    items: list[WorkspaceSummary]
    total: int
    next_cursor: str | None


def _cursor(ws: WorkspaceSummary) -> str:
    """Opaque to callers: where a page ended, as (created_at, id) of its last workspace."""
    return base64.urlsafe_b64encode(f"{ws.created_at.isoformat()}|{ws.id}".encode()).decode().rstrip("=")


def _after(cursor: str) -> tuple[datetime, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, workspace_id = text.split("|", 1)
        at = datetime.fromisoformat(moment)
        if at.tzinfo is None or not workspace_id or len(workspace_id) > 32:
            raise ValueError(text)
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise InvalidInput("This cursor is not one the server gave.", field="cursor",
                           hint="Pass the next_cursor of the previous page as it came, or leave it out "
                                "for the first page.") from None
    return at, workspace_id


async def list_page(*, session: AsyncSession, user: User, include_purged: bool = False, everyone: bool = False,
                    limit: int = PAGE_DEFAULT, cursor: str | None = None) -> WorkspacePage:
    """The caller's workspaces, newest first, ``limit`` (at most PAGE_MAX) after ``cursor``;
    with ``everyone`` (reviewers and admins), all of them. Pages follow the (created_at, id)
    index, so a workspace launched while someone pages is neither skipped nor repeated.

    Three statements whatever the page's size: the count, the page (a row per workspace, with
    its ticket's key and title, its project's name and its owner's), and the page's
    repositories. Rows, not objects of the ORM: building those for a page of a hundred
    workspaces and their repositories cost more than everything else the request does."""
    if not 1 <= limit <= PAGE_MAX:
        raise InvalidInput(f"A page has 1 to {PAGE_MAX} workspaces.", field="limit")
    if everyone and not may(user.role, Access.READ, owner=False):
        raise Forbidden("Only reviewers and admins may list everyone's workspaces.",
                        hint="Leave out the everyone option to list yours.")
    params: dict[str, Any] = {"owner_id": user.id, "limit": limit + 1}
    if cursor:
        params["after_created_at"], params["after_id"] = _after(cursor)
    count, page = _listing_statements(everyone=everyone, include_purged=include_purged, after=bool(cursor))
    total = await session.scalar(count, params) or 0
    rows = (await session.execute(page, params)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    repos: dict[str, list[RepoSummary]] = {row[0]: [] for row in rows}
    if rows:
        for workspace_id, *fields in await session.execute(_REPOS_OF_PAGE, {"ids": list(repos)}):
            repos[workspace_id].append(RepoSummary(*fields))
    items = [WorkspaceSummary(*row, repos=repos[row[0]]) for row in rows]
    return WorkspacePage(items=items, total=total, next_cursor=_cursor(items[-1]) if more else None)


_REPOS_OF_PAGE = (select(WorkspaceRepo.workspace_id, *_REPO_COLUMNS)
                  .where(WorkspaceRepo.workspace_id.in_(bindparam("ids", expanding=True)))
                  .order_by(WorkspaceRepo.position))


@cache
def _listing_statements(*, everyone: bool, include_purged: bool,
                        after: bool) -> tuple[Select[tuple[int]], Select[tuple[Any, ...]]]:
    """The count and the page of a listing of this shape, built once (with bound parameters):
    building a statement and computing its cache key costs more than running it."""
    conditions: list[ColumnElement[bool]] = [Workspace.ticket_id.is_not(None)]
    if not everyone:
        conditions.append(Workspace.owner_id == bindparam("owner_id"))
    if not include_purged:
        conditions.append(NOT_PURGED)
    count = select(func.count()).select_from(Workspace).where(*conditions)
    page = (select(*_SUMMARY_COLUMNS).select_from(Workspace)
            .join(Ticket, Ticket.id == Workspace.ticket_id).join(Project, Project.id == Ticket.project_id)
            .outerjoin(User, User.id == Workspace.owner_id).where(*conditions))
    if after:
        page = page.where(tuple_(Workspace.created_at, Workspace.id) < tuple_(
            bindparam("after_created_at", type_=Workspace.created_at.type), bindparam("after_id")))
    page = page.order_by(Workspace.created_at.desc(), Workspace.id.desc()).limit(bindparam("limit", type_=Integer))
    return count, page


def _retry_values(ws: Workspace) -> tuple[State, dict[str, Any]]:
    """Where a failed workspace starts again. A failure before the container existed re-plans
    (the Dockerfile may have been fixed); later ones keep the plan."""
    step = ws.failure_step
    if not ws.plan or step in {Step.PREFLIGHT.value, Step.IMAGE.value}:
        return State.PREPARING, {"plan": {}}
    if step in {s.value for s in PREPARE_STEPS}:
        return State.PREPARING, {}
    return State.STARTING, {}


async def request(rt: Runtime, *, user: User, ref: str, desired: Desired, discard_unpushed: bool = False) -> Workspace:
    """Ask for ``desired``. Bumps the version so that a step in flight drops its result and the
    reconciler drives the workspace again towards the new goal."""
    async with transaction(rt.sessions) as session:
        ws = await find(session=session, user=user, ref=ref, access=Access.CHANGE)
        state = State(ws.state)
        if state == State.PURGED:
            raise Conflict(f"The workspace for {ws.ticket.key} was purged.",
                           hint=f"Launch a new one with 'taskspace ws launch {ws.ticket.key}'.")
        if state == State.PURGING and desired != Desired.PURGED:
            raise Conflict("The workspace is being purged.", hint="Wait for the purge to finish.")
        values: dict[str, Any] = {"desired": desired.value, "version": ws.version + 1, "updated_at": utcnow()}
        verb = {Desired.READY: "start", Desired.STOPPED: "stop", Desired.PURGED: "purge"}[desired]
        event = {"actor": user.username, "kind": "note", "reason": f"{verb} requested by {user.username}"}
        if desired == Desired.PURGED:
            values |= {"purge_retry_at": None, "discard_unpushed": discard_unpushed}
            if discard_unpushed:
                event["reason"] += " (discarding unpushed work)"
        if desired == Desired.READY and state in {State.FAILED, State.PURGE_BLOCKED}:
            to, extra = _retry_values(ws) if state == State.FAILED else (State.STARTING, {})
            values |= {"state": to.value, "failure_step": None, "failure_reason": None, **extra}
            if "plan" in extra:
                await session.execute(update(WorkspaceRepo).where(
                    WorkspaceRepo.workspace_id == ws.id, WorkspaceRepo.branch_existed.is_(False))
                    .values(base_sha=None, branch_existed=None))
            event |= {"kind": "transition", "from_state": state.value, "to_state": to.value}
        await session.execute(update(Workspace).where(Workspace.id == ws.id).values(**values))
        session.add(Event(workspace_id=ws.id, **event))
        await session.flush()
        await session.refresh(ws)
    rt.bus.wake_reconciler(ws.id)
    await rt.bus.published()
    return ws


async def events(*, session: AsyncSession, workspace_id: str, after: int = 0) -> list[Event]:
    return list(await session.scalars(
        select(Event).where(Event.workspace_id == workspace_id, Event.id > after).order_by(Event.id)))


async def wait_for_events(rt: Runtime, *, workspace_id: str, after: int, timeout: float,
                          until: set[State] | None = None) -> tuple[Workspace, list[Event]]:
    """The workspace and its new events after ``after``, waiting up to ``timeout`` seconds for
    the first one; with ``until``, for the workspace to be in one of those states (the events
    are then all that came meanwhile: a script that waits for ``ready`` asks once, not once per
    step). The workspace is as of its events — a follower that stops at ``ready`` has seen the
    step and transition that led there, and one told ``starting`` has not been given them yet:
    a change of state bumps the row's version and writes its events in one transaction, and one
    statement reads the version, the state and the events."""
    deadline = time.monotonic() + timeout
    wanted = {s.value for s in until or ()}
    stmt = (select(Workspace.version, Workspace.state, Event)
            .outerjoin(Event, (Event.workspace_id == Workspace.id) & (Event.id > after))
            .where(Workspace.id == workspace_id).order_by(Event.id))
    while True:
        seen = rt.bus.generation
        async with rt.readers() as session:
            rows = (await session.execute(stmt)).all()
            if not rows:
                raise NotFound(f"Workspace {workspace_id} no longer exists.")
            version, state = rows[0][0], rows[0][1]
            found = [event for _, _, event in rows if event is not None]
            left = deadline - time.monotonic()
            if (state in wanted if wanted else found) or left <= 0:
                ws = await session.get(Workspace, workspace_id)
                if ws is not None and ws.version == version:  # else it moved on since: again
                    return ws, found
                continue
        # Woken by any workspace's events; also looks again every half second for events
        # written by other processes.
        await rt.bus.wait(min(0.5, left), since=seen)


async def startup_log(rt: Runtime, ws: Workspace) -> str:
    """The last startup run's output (kept in the workspace volume; readable while stopped)."""
    data = None
    if isinstance(rt.backend, SupportsFileRead):
        data = await rt.backend.read_file(ws.id, STARTUP_LOG)
    elif ws.state == State.READY.value:
        result = await rt.backend.exec(ws.id, ["cat", STARTUP_LOG])
        data = result.stdout if result.exit_code == 0 else None
    if data is None:
        raise NotFound("There is no startup log yet.", hint="It is written when the workspace starts.")
    return data.decode(errors="replace")


def build_log(rt: Runtime, ws: Workspace) -> str:
    if not ws.image:
        raise NotFound("This workspace has no image yet.", hint="Its image is chosen during preflight.")
    path = build_log_path(rt, ws.image)
    if not path.exists():
        raise NotFound(f"No build log for {ws.image}: it was built before, or not by this server.",
                       hint="An unchanged environment is never rebuilt; its first build's log is kept while "
                            "the server keeps logs.")
    return path.read_text(errors="replace")


def build_tail(rt: Runtime, ws: Workspace, lines: int = 12) -> list[str]:
    """The last lines of the build log while the workspace's image builds."""
    if ws.step != "image" or not ws.image:
        return []
    path = build_log_path(rt, ws.image)
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - 8192))
            return fh.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def vscode_url(rt: Runtime, ws: Workspace) -> str | None:
    """A link that opens VS Code attached to the workspace, in its primary repository."""
    if not isinstance(rt.backend, SupportsIdeAttach) or ws.state != State.READY.value:
        return None
    primary = (ws.plan or {}).get("primary")
    return rt.backend.ide_uri(ws.id, f"/workspace/{primary}" if primary else "/workspace")


def _check_argv(argv: list[str]) -> None:
    if not argv or not argv[0]:
        raise InvalidInput("No command given.", hint="Pass the command after '--'.", field="argv")
    if len(argv) > MAX_ARGV or any(len(a) > MAX_ARG_LENGTH or "\x00" in a for a in argv):
        raise InvalidInput("The command is too long or contains NUL characters.",
                           hint=f"Give at most {MAX_ARGV} arguments of at most {MAX_ARG_LENGTH} characters, "
                                "without NUL; put long input in a file.", field="argv")


async def exec_stream(rt: Runtime, ws: Workspace, argv: list[str]) -> AsyncIterator[ExecChunk | int]:
    """Run ``argv`` in the ready workspace, in the primary repository, as the workspace user.
    Marks the workspace active (``services.activity``)."""
    _check_argv(argv)
    if ws.state != State.READY.value:
        raise Conflict(f"The workspace is {ws.state}, not ready.",
                       hint=f"Start it with 'taskspace ws start {ws.ticket.key} --wait'.")
    await activity.mark_active(rt, ws.id, "exec")
    plan = ws.plan or {}
    env = plan.get("environment", {})
    user = env.get("remote_user") or env.get("container_user")
    workdir = f"/workspace/{plan.get('primary')}" if plan.get("primary") else "/workspace"
    command_env = {**(env.get("remote_env") or {}), **ticket_env(ws.ticket.key if ws.ticket else None, ws.branch)}
    async for item in rt.backend.exec_stream(ws.id, argv, user=user, env=command_env or None, workdir=workdir):
        yield item
