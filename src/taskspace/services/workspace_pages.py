"""What the workspace pages show: launch options read from the remotes, the workspace with its
timeline, and its repositories' state (changed files, commits on no remote)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from taskspace.core.errors import GitError, TaskspaceError
from taskspace.core.naming import ticket_branch
from taskspace.core.repo_url import parse_repo_url
from taskspace.core.roles import Access, may
from taskspace.core.states import State
from taskspace.core.workspace_scripts import parse_repo_status, status_script
from taskspace.db.models import Event, GitToken, Ticket, User, Workspace
from taskspace.services import git_tokens, tickets, workspaces
from taskspace.services.runtime import Runtime

MAX_BRANCHES = 300


@dataclass
class RepoOption:
    name: str
    url: str
    primary: bool
    default_branch: str | None
    tokens: list[str]
    token: str | None
    branches: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class LaunchOptions:
    ticket: Ticket
    branch: str
    repos: list[RepoOption]
    existing: Workspace | None


async def launch_options(rt: Runtime, *, user: User, key: str) -> LaunchOptions:
    """The launch dialog: the project's repositories with their branches (read from the remotes
    with the user's token for each host — the same access check a launch makes) and tokens."""
    async with rt.readers() as session:
        ticket = await tickets.get(session=session, key=key)
        existing = await workspaces.active_for(session, ticket.id, user.id)
        mine = list(await session.scalars(select(GitToken).where(GitToken.user_id == user.id)))
        options, creds = [], []
        for repo in ticket.project.repos:
            url = parse_repo_url(repo.url, rt.settings.repo_url_policy)
            host_tokens = [t for t in mine if git_tokens.matches(t, url)]
            chosen = await git_tokens.choose(session=session, user=user, repo=url, preferred=None)
            options.append(RepoOption(name=repo.name, url=repo.url, primary=repo.is_primary,
                                      default_branch=repo.default_branch, tokens=[t.name for t in host_tokens],
                                      token=chosen.name if chosen else None))
            creds.append((url, git_tokens.credential(rt.vault, chosen) if chosen else None))

    async def branches_of(option: RepoOption, url: object, credential: object) -> None:
        try:
            _, branches = await rt.mirrors.sync(url, credential)  # type: ignore[arg-type]
            names = sorted(branches)
        except GitError as exc:
            option.error = f"{exc.message} {exc.hint or ''}".strip()
            return
        if option.default_branch in names:
            names.remove(option.default_branch)
            names.insert(0, option.default_branch)
        option.branches = names[:MAX_BRANCHES]

    await asyncio.gather(*(branches_of(o, u, c) for o, (u, c) in zip(options, creds, strict=True)))
    return LaunchOptions(ticket=ticket, branch=ticket_branch(ticket.key, ticket.title), repos=options,
                         existing=existing)


@dataclass
class RepoState:
    branch: str
    changed: int
    unpushed: int


@dataclass
class WorkspacePage:
    workspace: Workspace
    events: list[Event]
    can_change: bool
    can_enter: bool


async def workspace_page(*, session: AsyncSession, user: User, ref: str) -> WorkspacePage:
    ws = await workspaces.find(session=session, user=user, ref=ref)
    events = await workspaces.events(session=session, workspace_id=ws.id)
    owner = ws.owner_id == user.id
    return WorkspacePage(workspace=ws, events=events, can_change=may(user.role, Access.CHANGE, owner=owner),
                         can_enter=may(user.role, Access.ENTER, owner=owner))


@dataclass
class RepoStates:
    repos: list[Any]
    branch: str
    state: str
    states: dict[str, RepoState] | None  # None: not running, so not looked at


async def repo_states(rt: Runtime, *, user: User, ref: str) -> RepoStates:
    """Each repository's branch, changed files and commits on no remote (what a purge would
    rescue). Its files are looked at only while the workspace runs."""
    async with rt.readers() as session:
        ws = await workspaces.find(session=session, user=user, ref=ref)
        view = RepoStates(repos=list(ws.repos), branch=ws.branch, state=ws.state, states=None)
        plan = ws.plan or {}
    if ws.state != State.READY.value:
        return view
    env = plan.get("environment") or {}
    try:
        result = await rt.backend.exec(ws.id, ["/bin/sh", "-c", status_script([r.name for r in view.repos])],
                                       user=env.get("remote_user") or env.get("container_user"), timeout=30)
    except TaskspaceError:
        return view
    view.states = {name: RepoState(*s) for name, s in parse_repo_status(result.stdout.decode()).items()}
    return view


@dataclass
class LaunchOutcome:
    workspace: Workspace | None
    options: LaunchOptions | None = None
    errors: list[str] = field(default_factory=list)
    hint: str | None = None


async def submit_launch(rt: Runtime, *, user: User, request: workspaces.LaunchRequest) -> LaunchOutcome:
    """Launch from the dialog; when the launch cannot work, the dialog again with every problem."""
    try:
        ws, _ = await workspaces.launch(rt, user=user, request=request)
    except TaskspaceError as exc:
        options = await launch_options(rt, user=user, key=request.key)
        problems = exc.message.removeprefix("Preflight found problems: ").split(" | ")
        return LaunchOutcome(workspace=None, options=options, errors=problems, hint=exc.hint)
    return LaunchOutcome(workspace=ws)


#: The steps people follow in the progress view, in order.
PROGRESS_STEPS = ("preflight", "image", "volume", "container", "clone", "services", "startup")


@dataclass
class StepView:
    name: str
    status: str  # pending | running | ok | failed | skipped
    seconds: float | None = None
    detail: str | None = None


def progress_steps(ws: Workspace, events: list[Event]) -> list[StepView]:
    """Each provisioning step with its outcome and time, from the last launch or start on."""
    last: dict[str, Event] = {}
    for event in events:
        if event.kind == "transition" and event.to_state in {State.REQUESTED.value, State.PREPARING.value} \
                and event.from_state in {None, State.FAILED.value}:
            last.clear()  # a retry starts the list again
        if event.kind == "step" and event.step:
            last[event.step] = event
    views = []
    for name in PROGRESS_STEPS:
        event = last.get(name)
        if event is not None:
            detail = None
            data = event.data or {}
            if name == "image":
                detail = "cached" if data.get("cached") else "built"
            elif name == "clone":
                detail = ", ".join(data.get("cloned", []) + data.get("switched", []) + data.get("kept", [])) or None
            elif name == "services":
                detail = ", ".join(data.get("services", [])) or None
            if event.reason:
                detail = f"{detail} — {event.reason}" if detail else event.reason
            views.append(StepView(name, event.status or "ok", (event.duration_ms or 0) / 1000, detail))
        elif ws.step == name and ws.state not in {State.READY.value, State.FAILED.value}:
            views.append(StepView(name, "running"))
        elif ws.state == State.FAILED.value and ws.failure_step == name:
            views.append(StepView(name, "failed", detail=ws.failure_reason))
        else:
            views.append(StepView(name, "pending"))
    if ws.state == State.READY.value:
        views = [v if v.status != "pending" else StepView(v.name, "skipped") for v in views]
    return views
