"""Launching and asking: a launch runs the git preflight and records a workspace in
``requested`` (or returns the existing one); a launch that cannot work creates nothing."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from taskspace.core.errors import Conflict, GitError, InvalidInput, NotFound, TaskspaceError
from taskspace.core.naming import ticket_branch
from taskspace.core.states import Desired, State, Step
from taskspace.db.engine import transaction
from taskspace.db.models import Event, GitToken, Project, Repo, User, Workspace, WorkspaceRepo
from taskspace.services import git_tokens, tickets, workspaces
from taskspace.services.lifecycle import driver
from taskspace.services.lifecycle.snapshot import StepTimer, load, transition
from taskspace.services.runtime import Runtime
from taskspace.services.workspaces import LaunchRequest
from taskspace.testing.git_server import GitHttpServer
from tests.services.support import NewRepo, count, launchable_dockerfile, repo_name

pytestmark = pytest.mark.docker  # a launch checks the environment's images with the engine
TITLE = "Add a health endpoint"
BRANCH = ticket_branch("DEMO-1", TITLE)


@dataclass
class Board:
    project: Project
    api: str  # the primary repository's name
    web: str | None


@dataclass(frozen=True)
class Remotes:
    api: str
    web: str


@pytest.fixture(scope="session")
def remotes(git_server: GitHttpServer, base_image: str) -> Remotes:
    """The repositories most tests launch from (a launch only reads them): ``api`` with a
    Dockerfile on ``main``, ``web`` on ``trunk`` with a ``release`` branch."""
    suffix = uuid.uuid4().hex[:8]
    return Remotes(
        api=git_server.create_repo(f"launch-api-{suffix}", {"Dockerfile": launchable_dockerfile(base_image)}),
        web=git_server.create_repo(f"launch-web-{suffix}", {"index.html": "<h1>web</h1>\n"}, branch="trunk",
                                   extra_branches={"release": {"index.html": "<h1>release</h1>\n"}}),
    )


async def make_board(rt: Runtime, admin: User, api_url: str, web_url: str | None = None, *,
                     key: str = "DEMO") -> Board:
    """A project stored as ``projects.create`` stores it (tested in test_projects), with ticket KEY-1."""
    urls = [(api_url, "main"), *([(web_url, "trunk")] if web_url else [])]
    async with transaction(rt.sessions) as session:
        project = Project(key=key, name=key.lower(), purge_on_category="done", repos=[
            Repo(name=repo_name(url), url=url, default_branch=branch, is_primary=i == 0, position=i)
            for i, (url, branch) in enumerate(urls)])
        session.add(project)
        await session.flush()
        await tickets.create(session=session, project=project, title=TITLE, assignee=admin.username)
    return Board(project, repo_name(api_url), repo_name(web_url) if web_url else None)


@pytest.fixture
async def board(rt: Runtime, admin: User, git_token: GitToken, remotes: Remotes) -> Board:
    return await make_board(rt, admin, remotes.api, remotes.web)


async def launch(rt: Runtime, user: User, key: str = "DEMO-1", **options: object) -> tuple[Workspace, bool]:
    return await workspaces.launch(rt, user=user, request=LaunchRequest(key=key, **options))  # type: ignore[arg-type]


async def events_of(rt: Runtime, workspace_id: str) -> list[Event]:
    async with transaction(rt.sessions) as session:
        return await workspaces.events(session=session, workspace_id=workspace_id)


async def test_launch_records_the_workspace_with_its_plan(rt: Runtime, admin: User, git_token: GitToken,
                                                          board: Board, git_server: GitHttpServer,
                                                          base_image: str) -> None:
    ws, created = await launch(rt, admin)

    assert created
    async with transaction(rt.sessions) as session:
        stored = await workspaces.find(session=session, user=admin, ref="demo-1")
    assert stored.id == ws.id
    assert (stored.state, stored.desired, stored.branch, stored.backend) == ("requested", "ready", BRANCH, "docker")
    assert stored.version == 0 and stored.step is None and stored.failure_reason is None
    assert stored.plan["primary"] == board.api
    assert stored.plan["commit"] == git_server.branches(board.api)["main"]
    assert stored.image == stored.plan["image"]["ref"]
    assert stored.image.startswith("taskspace/demo:")
    assert set(stored.plan["mirrors"]) == {board.api, board.web}
    assert stored.environment["source"] == "dockerfile"
    assert stored.environment["base_images"] == [base_image]
    assert stored.environment["workdir"] == "/workspace"
    assert [(r.name, r.is_primary, r.position, r.source_branch, r.target_branch, r.branch_existed, r.base_sha,
             r.token_id) for r in stored.repos] == [
        (board.api, True, 0, "main", "main", False, git_server.branches(board.api)["main"], git_token.id),
        (board.web, False, 1, "trunk", "trunk", False, git_server.branches(board.web)["trunk"], git_token.id),
    ]

    transition, preflight = await events_of(rt, ws.id)
    assert (transition.kind, transition.actor, transition.from_state, transition.to_state) == (
        "transition", "admin", None, "requested")
    assert (preflight.kind, preflight.step, preflight.status) == ("step", "preflight", "ok")
    assert preflight.data["repos"][board.api] == {
        "branch_existed": False, "base": git_server.branches(board.api)["main"][:12], "source": "main"}
    assert ws.id in rt.bus.take_pending()


async def test_launch_again_returns_the_same_workspace(rt: Runtime, admin: User, board: Board) -> None:
    first, created = await launch(rt, admin)
    again, created_again = await launch(rt, admin, source_branch="does-not-matter-now")

    assert (created, created_again) == (True, False)
    assert again.id == first.id
    assert await count(rt, Workspace) == 1
    assert len(await events_of(rt, first.id)) == 2


async def test_concurrent_launches_create_one_workspace(rt: Runtime, admin: User, board: Board) -> None:
    results = await asyncio.gather(launch(rt, admin), launch(rt, admin))

    assert len({ws.id for ws, _ in results}) == 1
    assert sorted(created for _, created in results) == [False, True]
    assert await count(rt, Workspace) == 1
    assert await count(rt, WorkspaceRepo) == 2
    assert await count(rt, Event) == 2


async def test_an_existing_ticket_branch_and_chosen_branches_are_used(
        rt: Runtime, admin: User, git_token: GitToken, new_repo: NewRepo, remotes: Remotes,
        git_server: GitHttpServer, base_image: str) -> None:
    api_url = new_repo({"Dockerfile": launchable_dockerfile(base_image)},
                       extra_branches={BRANCH: {"WORK.md": "in progress\n"}})
    board = await make_board(rt, admin, api_url, remotes.web)

    ws, _ = await launch(rt, admin, source_branches={board.web: "release"}, target_branch="main")

    api, web = ws.repos
    assert (api.branch_existed, api.base_sha, api.target_branch) == (
        True, git_server.branches(board.api)[BRANCH], "main")
    assert (web.branch_existed, web.base_sha, web.source_branch, web.target_branch) == (
        False, git_server.branches(board.web)["release"], "release", "main")


async def test_only_the_chosen_repositories_and_always_the_primary(rt: Runtime, admin: User, board: Board) -> None:
    ws, _ = await launch(rt, admin, repos=[board.web])

    assert [(r.name, r.position) for r in ws.repos] == [(board.api, 0), (board.web, 1)]
    ws_only_primary = (await launch(rt, admin))[0]
    assert ws_only_primary.id == ws.id


async def test_a_launch_that_cannot_work_creates_nothing(rt: Runtime, admin: User, board: Board) -> None:
    async with transaction(rt.sessions) as session:
        await git_tokens.add(session=session, vault=rt.vault, user=admin, name="elsewhere", host="github.com",
                             secret="ghp_elsewhere")
    cases: list[tuple[dict[str, object], type[TaskspaceError], str]] = [
        ({"source_branch": "no-such-branch"}, InvalidInput, "Branch 'no-such-branch' does not exist in"),
        ({"source_branch": "bad..name"}, InvalidInput, "not a valid branch name"),
        ({"target_branch": "-x"}, InvalidInput, "not a valid branch name"),
        ({"source_branches": {"nope": "main"}}, InvalidInput, "names repository 'nope', which is not chosen"),
        ({"repos": ["nope"]}, InvalidInput, "no repository named 'nope'"),
        ({"repos": [board.web, board.web]}, InvalidInput, "chosen twice"),
        ({"token": "elsewhere"}, InvalidInput, "Token 'elsewhere' is not for the host"),
        ({"token": "missing"}, NotFound, "no token named 'missing'"),
        ({"key": "DEMO-99"}, NotFound, "No ticket DEMO-99"),
        ({"key": "not a key"}, InvalidInput, "is not a ticket key"),
    ]
    for options, error, message in cases:
        with pytest.raises(error, match=message):
            await launch(rt, admin, **{"key": "DEMO-1", **options})  # type: ignore[arg-type]
    assert await count(rt, Workspace) == 0
    assert await count(rt, Event) == 0


async def test_repositories_the_user_cannot_read_are_all_named_and_nothing_is_created(
        rt: Runtime, admin: User, board: Board, git_server: GitHttpServer) -> None:
    async with transaction(rt.sessions) as session:
        await git_tokens.remove(session=session, user=admin, name="local")

    with pytest.raises(InvalidInput, match=r"^Preflight found problems: ") as caught:
        await launch(rt, admin)

    for name in (board.api, board.web):
        assert f"You don't have access to `{git_server.url(name)}` without a token" in caught.value.message
    assert "authentication failed" in caught.value.message
    assert await count(rt, Workspace) == 0
    assert await count(rt, Event) == 0


async def test_a_wrong_token_is_named_in_the_error(rt: Runtime, admin: User, board: Board,
                                                   git_server: GitHttpServer) -> None:
    async with transaction(rt.sessions) as session:
        await git_tokens.remove(session=session, user=admin, name="local")
        await git_tokens.add(session=session, vault=rt.vault, user=admin, name="stale",
                             host=f"127.0.0.1:{git_server.port}", username="alice", secret="not-the-password")

    with pytest.raises(GitError, match=r"with token `stale`.*authentication failed") as caught:
        await launch(rt, admin, repos=[board.api])

    assert "not-the-password" not in str(caught.value)
    assert await count(rt, Workspace) == 0


async def test_a_primary_repository_without_a_usable_dockerfile_creates_nothing(
        rt: Runtime, admin: User, git_token: GitToken, new_repo: NewRepo) -> None:
    cases = [
        ("NODF", {"README.md": "no Dockerfile here\n"}, "has no Dockerfile and no .devcontainer/devcontainer.json"),
        ("RUNFIRST", {"Dockerfile": "# a comment\nRUN true\n"}, "line 2: RUN comes before the first FROM"),
        ("NOFROM", {"Dockerfile": "# nothing at all\n"}, "has no FROM instruction"),
        ("NOIMAGE", {"Dockerfile": "FROM registry.invalid/nothing/here:1\n"},
         "Image `registry.invalid/nothing/here:1` is not on the engine and its registry does not serve it"),
    ]
    for key, files, message in cases:
        await make_board(rt, admin, new_repo(files), key=key)
        with pytest.raises(InvalidInput, match=message):
            await launch(rt, admin, key=f"{key}-1")

    assert await count(rt, Workspace) == 0
    assert await count(rt, Event) == 0


async def test_a_ticket_in_done_cannot_be_launched(rt: Runtime, admin: User, board: Board) -> None:
    async with transaction(rt.sessions) as session:
        await tickets.move(session=session, key="DEMO-1", status="Done")

    with pytest.raises(Conflict, match="DEMO-1 is Done") as caught:
        await launch(rt, admin)

    assert "Move the ticket back" in (caught.value.hint or "")
    assert await count(rt, Workspace) == 0


async def test_after_a_purge_a_new_workspace_is_launched(rt: Runtime, admin: User, board: Board) -> None:
    first, _ = await launch(rt, admin)
    async with transaction(rt.sessions) as session:
        await session.execute(update(Workspace).where(Workspace.id == first.id).values(state="purged"))

    second, created = await launch(rt, admin)

    assert created and second.id != first.id
    async with transaction(rt.sessions) as session:
        states = dict((await session.execute(select(Workspace.id, Workspace.state))).all())
        found = await workspaces.find(session=session, user=admin, ref="DEMO-1")
    assert states == {first.id: "purged", second.id: "requested"}
    assert found.id == second.id


# Asking for a state ------------------------------------------------------------------------


async def set_columns(rt: Runtime, workspace_id: str, **values: object) -> None:
    async with transaction(rt.sessions) as session:
        await session.execute(update(Workspace).where(Workspace.id == workspace_id).values(**values))


async def test_request_records_intent_and_bumps_the_version(rt: Runtime, admin: User, board: Board) -> None:
    ws, _ = await launch(rt, admin)
    rt.bus.take_pending()

    stopped = await workspaces.request(rt, user=admin, ref="DEMO-1", desired=Desired.STOPPED)
    purged = await workspaces.request(rt, user=admin, ref=ws.id, desired=Desired.PURGED, discard_unpushed=True)

    assert (stopped.desired, stopped.version) == ("stopped", 1)
    assert (purged.desired, purged.version, purged.discard_unpushed, purged.state) == ("purged", 2, True, "requested")
    notes = [(e.kind, e.actor, e.reason) for e in (await events_of(rt, ws.id))[2:]]
    assert notes == [("note", "admin", "stop requested by admin"),
                     ("note", "admin", "purge requested by admin (discarding unpushed work)")]
    assert rt.bus.take_pending() == {ws.id}


async def test_starting_a_failed_workspace_retries_from_the_failed_step(rt: Runtime, admin: User,
                                                                       board: Board) -> None:
    ws, _ = await launch(rt, admin)
    plan, bases = ws.plan, {r.id: r.base_sha for r in ws.repos}
    cases = [
        ("preflight", "preparing", False),
        ("image", "preparing", False),
        ("volume", "preparing", True),
        ("clone", "preparing", True),
        ("services", "starting", True),
        ("startup", "starting", True),
    ]
    for failure_step, state, keeps_plan in cases:
        async with transaction(rt.sessions) as session:
            for repo_id, base in bases.items():
                await session.execute(update(WorkspaceRepo).where(WorkspaceRepo.id == repo_id)
                                      .values(base_sha=base, branch_existed=False))
        await set_columns(rt, ws.id, state="failed", failure_step=failure_step, failure_reason="it broke",
                          plan=plan, version=5)

        retried = await workspaces.request(rt, user=admin, ref="DEMO-1", desired=Desired.READY)

        assert (retried.state, retried.desired, retried.version) == (state, "ready", 6), failure_step
        assert (retried.failure_step, retried.failure_reason) == (None, None)
        assert bool(retried.plan) == keeps_plan, failure_step
        # Re-planning forgets the base of branches that did not exist yet, so they are decided again.
        async with transaction(rt.sessions) as session:
            rows = list(await session.scalars(select(WorkspaceRepo).where(WorkspaceRepo.workspace_id == ws.id)))
        assert [(r.base_sha is not None, r.branch_existed is not None) for r in rows] == \
            [(keeps_plan, keeps_plan)] * 2, failure_step
        last = (await events_of(rt, ws.id))[-1]
        assert (last.kind, last.from_state, last.to_state, last.reason) == (
            "transition", "failed", state, "start requested by admin")


async def test_a_purged_or_purging_workspace_cannot_be_started(rt: Runtime, admin: User, board: Board) -> None:
    ws, _ = await launch(rt, admin)

    await set_columns(rt, ws.id, state=State.PURGING.value)
    with pytest.raises(Conflict, match="being purged"):
        await workspaces.request(rt, user=admin, ref="DEMO-1", desired=Desired.READY)
    await set_columns(rt, ws.id, state=State.PURGED.value)
    with pytest.raises(Conflict, match="was purged") as caught:
        await workspaces.request(rt, user=admin, ref="DEMO-1", desired=Desired.READY)

    assert "taskspace ws launch DEMO-1" in (caught.value.hint or "")
    async with transaction(rt.sessions) as session:
        stored = await session.get(Workspace, ws.id)
    assert stored is not None and (stored.desired, stored.version) == ("ready", 0)


async def test_find_knows_only_the_callers_workspaces(rt: Runtime, admin: User, board: Board) -> None:
    ws, _ = await launch(rt, admin)
    async with transaction(rt.sessions) as session:
        bob = User(username="bob")
        session.add(bob)

    async with transaction(rt.sessions) as session:
        assert (await workspaces.find(session=session, user=admin, ref=ws.id.upper())).id == ws.id
        assert [w.id for w in (await workspaces.list_page(session=session, user=admin)).items] == [ws.id]
        assert (await workspaces.list_page(session=session, user=bob)).items == []
        with pytest.raises(NotFound, match="no workspace for DEMO-1"):
            await workspaces.find(session=session, user=bob, ref="DEMO-1")


async def test_a_step_is_written_with_the_next_write_unless_it_runs_long_and_kept_when_a_failure_follows(
        rt: Runtime, admin: User, board: Board) -> None:
    # One commit is a few milliseconds of a launch, as long as most steps: a step and its
    # outcome go with the next write, which follows at once; a step that runs long is shown
    # as current while it runs.
    ws, _ = await launch(rt, admin)
    snap = await load(rt, ws.id)

    async with StepTimer(rt, snap, Step.IMAGE) as step:
        step.values, step.data = {"image": "taskspace/demo:next"}, {"cached": True}
    stored = await stored_workspace(rt, ws.id)
    assert (stored.version, stored.step, stored.image) == (0, None, ws.image)  # nothing written yet
    assert (snap.ws.step, snap.ws.image) == ("image", "taskspace/demo:next")  # what the next steps read

    async with StepTimer(rt, snap, Step.VOLUME):
        await asyncio.sleep(StepTimer.SHOWN_AFTER * 4)
        during = await stored_workspace(rt, ws.id)
        image = (await events_of(rt, ws.id))[-1]
    assert (during.version, during.step, during.image) == (1, "volume", "taskspace/demo:next")
    assert (image.step, image.status, image.data) == ("image", "ok", {"cached": True})
    assert (await stored_workspace(rt, ws.id)).version == 1  # the volume's outcome waits for the next write

    # A failure after a finished step: the step's outcome, then the failure.
    await driver._fail(rt, snap, TaskspaceError("the engine said no"))
    stored = await stored_workspace(rt, ws.id)
    assert (stored.state, stored.failure_step, stored.failure_reason) == ("failed", "volume", "the engine said no")
    assert [(e.kind, e.step, e.to_state) for e in (await events_of(rt, ws.id))[-2:]] == [
        ("step", "volume", None), ("transition", "volume", "failed")]


async def test_a_step_that_fails_at_once_is_named_as_the_failed_one(rt: Runtime, admin: User, board: Board) -> None:
    ws, _ = await launch(rt, admin)
    snap = await load(rt, ws.id)
    async with StepTimer(rt, snap, Step.IMAGE):
        pass
    with pytest.raises(TaskspaceError):
        async with StepTimer(rt, snap, Step.VOLUME):
            raise TaskspaceError("no space left on the engine")

    await driver._fail(rt, snap, TaskspaceError("no space left on the engine"))
    stored = await stored_workspace(rt, ws.id)
    assert (stored.state, stored.step, stored.failure_step) == ("failed", "volume", "volume")
    assert [(e.kind, e.step, e.status) for e in (await events_of(rt, ws.id))[-2:]] == [
        ("step", "image", "ok"), ("transition", "volume", None)]


async def test_a_failure_is_recorded_on_the_workspace_as_it_is_when_it_changed_meanwhile(
        rt: Runtime, admin: User, board: Board) -> None:
    ws, _ = await launch(rt, admin)
    snap = await load(rt, ws.id)
    async with StepTimer(rt, snap, Step.IMAGE):
        pass
    await set_columns(rt, ws.id, version=7, step="volume")  # another worker went on

    await driver._fail(rt, snap, TaskspaceError("the engine said no"))
    stored = await stored_workspace(rt, ws.id)
    assert (stored.state, stored.failure_step, stored.version) == ("failed", "volume", 8)
    assert "image" not in [e.step for e in await events_of(rt, ws.id)]  # went with the stale snapshot


async def test_a_follower_is_told_the_state_its_events_lead_to(
        rt: Runtime, admin: User, board: Board, monkeypatch: pytest.MonkeyPatch) -> None:
    # The workspace moves on while a follower's request reads it. Told a state newer than its
    # events, a CLI waiting for that state stops before printing the step and transition that
    # led there; given events newer than the state, it waits for more events in vain.
    ws, _ = await launch(rt, admin)
    get, moved = AsyncSession.get, []

    async def get_once_it_moved_on(self: AsyncSession, *args: Any, **kwargs: Any) -> Any:
        if not moved:
            moved.append(True)
            await transition(rt, await load(rt, ws.id), State.PREPARING, reason="moved on meanwhile")
        return await get(self, *args, **kwargs)

    monkeypatch.setattr(AsyncSession, "get", get_once_it_moved_on)
    seen, found = await workspaces.wait_for_events(rt, workspace_id=ws.id, after=0, timeout=0)

    assert moved
    assert [e.to_state for e in found if e.kind == "transition"][-1] == seen.state == "preparing"


async def stored_workspace(rt: Runtime, workspace_id: str) -> Workspace:
    async with transaction(rt.sessions) as session:
        found = await session.get(Workspace, workspace_id)
        assert found is not None
        return found
