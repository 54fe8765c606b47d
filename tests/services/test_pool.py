"""The warm pool's bookkeeping: what a spare is built from, which launch claims it (exactly
once, under concurrency), and when the keeper retires one. The engine work of building and
adopting a spare is exercised end to end in tests/integration/test_warm_pool.py; here a spare
is made ``ready`` by writing its state, as the reconciler would after building it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from taskspace.core.states import Desired, State
from taskspace.db.engine import transaction
from taskspace.db.models import Event, GitToken, Project, Repo, User, Workspace, utcnow
from taskspace.services import git_tokens, pool, tickets, users, workspaces
from taskspace.services.runtime import Runtime
from taskspace.services.workspaces import LaunchRequest
from taskspace.testing.git_server import GitHttpServer
from tests.services.support import launchable_dockerfile, repo_name

pytestmark = pytest.mark.docker  # preflight checks the environment's images with the engine


@pytest.fixture
async def project(rt: Runtime, admin: User, git_token: GitToken, git_server: GitHttpServer,
                  base_image: str) -> Project:
    """Two repositories (``web``'s default branch is ``trunk``), a pool of one, tickets POOL-1..3."""
    suffix = uuid.uuid4().hex[:8]
    api = git_server.create_repo(f"pool-api-{suffix}", {"Dockerfile": launchable_dockerfile(base_image)})
    web = git_server.create_repo(f"pool-web-{suffix}", {"index.html": "<h1>web</h1>\n"}, branch="trunk")
    async with transaction(rt.sessions) as session:
        found = Project(key="POOL", name="pool", warm_pool=1, repos=[
            Repo(name=repo_name(api), url=api, default_branch="main", is_primary=True, position=0),
            Repo(name=repo_name(web), url=web, default_branch="trunk", position=1)])
        session.add(found)
        await session.flush()
        for title in ("First", "Second", "Third"):
            await tickets.create(session=session, project=found, title=title, assignee=admin.username)
    return found


async def launch(rt: Runtime, user: User, key: str, **options: object) -> tuple[Workspace, bool]:
    return await workspaces.launch(rt, user=user, request=LaunchRequest(key=key, **options))  # type: ignore[arg-type]


async def spares(rt: Runtime) -> list[Workspace]:
    async with transaction(rt.sessions) as session:
        return list(await session.scalars(select(Workspace).where(Workspace.ticket_id.is_(None))
                                          .order_by(Workspace.created_at)))


async def built(rt: Runtime, keeper: pool.Keeper) -> Workspace:
    """A new spare, as the reconciler leaves it once built: ready."""
    report = await keeper.run(force=True)
    assert len(report.created) == 1, report
    async with transaction(rt.sessions) as session:
        await session.execute(update(Workspace).where(Workspace.id == report.created[0])
                              .values(state=State.READY.value, ready_at=utcnow()))
        spare = await session.get(Workspace, report.created[0])
        assert spare is not None
        return spare


async def test_a_spare_is_built_from_the_mirrors_on_the_default_branches(
        rt: Runtime, admin: User, project: Project, git_server: GitHttpServer) -> None:
    keeper = pool.Keeper(rt)
    # No launch has fetched the repositories yet: the pool talks to no remote and waits.
    report = await keeper.run(force=True)
    assert report.created == [] and "has not been fetched" in report.skipped["POOL"]

    await launch(rt, admin, "POOL-1")
    report = await keeper.run(force=True)
    again = await keeper.run()

    [spare] = await spares(rt)
    assert report.created == [spare.id]
    assert (again.created, again.recycled, again.skipped) == ([], [], {}), "the pool is full while it builds"
    assert (spare.ticket_id, spare.owner_id, spare.branch, spare.state) == (None, None, "", State.REQUESTED.value)
    assert spare.pool_key and spare.plan["primary"] == project.repos[0].name
    heads = {r.name: git_server.branches(r.name)[r.default_branch] for r in project.repos}
    assert {r.name: (r.source_branch, r.base_sha, r.token_id) for r in spare.repos} == {
        r.name: (r.default_branch, heads[r.name], None) for r in project.repos}


async def test_a_launch_claims_a_ready_spare_once_when_two_race_for_it(
        rt: Runtime, admin: User, project: Project, git_token: GitToken, git_server: GitHttpServer) -> None:
    keeper = pool.Keeper(rt)
    await launch(rt, admin, "POOL-1")
    spare = await built(rt, keeper)
    async with transaction(rt.sessions) as session:
        bob = await users.create_user(session=session, actor=admin, username="bob", password="bob-password-1")
        await git_tokens.add(session=session, vault=rt.vault, user=bob, name="local", host=git_token.host,
                             username="alice", secret=git_server.users["alice"])

    (first, first_new), (second, second_new) = await asyncio.gather(
        launch(rt, admin, "POOL-2"), launch(rt, bob, "POOL-3"))

    assert first_new and second_new
    claimed, other = (first, second) if first.id == spare.id else (second, first)
    assert claimed.id == spare.id and other.id != spare.id
    assert (claimed.state, other.state) == (State.STARTING.value, State.REQUESTED.value)
    assert claimed.pool_key is None and claimed.ticket_id is not None and claimed.ready_at is None
    assert claimed.created_at > spare.created_at, "requested when claimed: its time as a spare is nobody's"
    assert claimed.branch.startswith(f"{claimed.ticket.key}-")
    async with transaction(rt.sessions) as session:
        rows = {r.name: r for r in (await session.get(Workspace, claimed.id)).repos}
        reasons = [e.reason for e in await session.scalars(select(Event).where(Event.workspace_id == claimed.id))]
    assert all(r.branch_existed is False and r.base_sha for r in rows.values())
    assert any("claimed a prebuilt workspace" in (reason or "") for reason in reasons)
    assert await spares(rt) == []


async def test_one_user_launching_one_ticket_twice_at_once_gets_one_workspace(
        rt: Runtime, admin: User, project: Project) -> None:
    async with transaction(rt.sessions) as session:
        await session.execute(update(Project).where(Project.id == project.id).values(warm_pool=2))
    keeper = pool.Keeper(rt)
    await launch(rt, admin, "POOL-1")
    await built(rt, keeper)
    await built(rt, keeper)

    results = await asyncio.gather(*(launch(rt, admin, "POOL-2") for _ in range(4)))

    assert len({ws.id for ws, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert len([s for s in await spares(rt) if s.state == State.READY.value]) == 1, "the other spare is left"


async def test_a_launch_of_some_repositories_does_not_claim_a_spare(
        rt: Runtime, admin: User, project: Project) -> None:
    keeper = pool.Keeper(rt)
    await launch(rt, admin, "POOL-1")
    spare = await built(rt, keeper)

    ws, _ = await launch(rt, admin, "POOL-2", repos=[project.repos[0].name])

    assert ws.id != spare.id and [s.id for s in await spares(rt)] == [spare.id]


async def test_the_keeper_retires_spares_that_changed_failed_or_are_too_many(
        rt: Runtime, admin: User, project: Project) -> None:
    keeper = pool.Keeper(rt)
    await launch(rt, admin, "POOL-1")
    spare = await built(rt, keeper)

    # Another environment on the default branch: the spare no longer matches launches.
    async with transaction(rt.sessions) as session:
        await session.execute(update(Workspace).where(Workspace.id == spare.id).values(pool_key="0" * 64))
    report = await keeper.run(force=True)
    assert report.recycled == [spare.id]
    assert len(report.created) == 1
    async with transaction(rt.sessions) as session:
        retired = await session.get(Workspace, spare.id)
        assert (retired.desired, retired.discard_unpushed) == (Desired.PURGED.value, True)
        replacement = await session.get(Workspace, report.created[0])
        # It failed a minute ago: no new spare for a while, and the failed one stays to be seen.
        await session.execute(update(Workspace).where(Workspace.id == replacement.id).values(
            state=State.FAILED.value, failure_reason="the image did not build", updated_at=utcnow()))
    report = await keeper.run(force=True)
    assert (report.created, report.recycled) == ([], [])
    assert report.skipped == {"POOL": "a spare failed recently"}
    async with transaction(rt.sessions) as session:
        status = (await pool.status(session, [project]))[project.id]
    assert (status.size, status.ready, status.failed, status.last_error) == (1, 0, 1, "the image did not build")

    # After the back-off the failed spare goes and a new one is built.
    async with transaction(rt.sessions) as session:
        await session.execute(update(Workspace).where(Workspace.id == replacement.id)
                              .values(updated_at=utcnow() - pool.FAILED_BACKOFF - timedelta(seconds=1)))
    report = await keeper.run(force=True)
    assert report.recycled == [replacement.id] and len(report.created) == 1
    newest = report.created[0]

    # No pool: every spare goes.
    async with transaction(rt.sessions) as session:
        await session.execute(update(Project).where(Project.id == project.id).values(warm_pool=0))
    report = await keeper.run(force=True)
    assert (report.recycled, report.created) == ([newest], [])
    assert all(s.desired == Desired.PURGED.value for s in await spares(rt))
