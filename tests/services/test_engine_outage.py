"""An engine that cannot be reached does not fail a workspace: while dockerd restarts, a
connection kept from before may still list containers (stopped by the shutdown) when a new
connection finds no socket. The start the reconciler asks for then waits for the next pass."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import docker
import pytest
import requests
from sqlalchemy import select

from taskspace.core.states import State
from taskspace.db.engine import transaction
from taskspace.db.models import Event, Project, Repo, User, Workspace
from taskspace.plugins.backends.docker.backend import _engine_unreachable
from taskspace.reconciler.loop import Reconciler
from taskspace.services import tickets, workspaces
from taskspace.services.lifecycle.driver import drive
from taskspace.services.runtime import Runtime
from taskspace.services.workspaces import LaunchRequest
from tests.services.support import NewRepo, launchable_dockerfile, repo_name

pytestmark = pytest.mark.docker


@pytest.fixture
def engine_cleanup(rt: Runtime, docker_client: docker.DockerClient) -> Iterator[None]:
    yield
    label = {"label": [f"taskspace.installation={rt.installation}"]}
    for container in docker_client.containers.list(all=True, filters=label):
        container.remove(force=True, v=True)
    for volume in docker_client.volumes.list(filters=label):
        volume.remove(force=True)


async def ready_workspace(rt: Runtime, admin: User, url: str) -> Workspace:
    async with transaction(rt.sessions) as session:
        project = Project(key="OUT", name="outage", repos=[
            Repo(name=repo_name(url), url=url, default_branch="main", is_primary=True, position=0)])
        session.add(project)
        await session.flush()
        await tickets.create(session=session, project=project, title="Survive a restart", assignee=admin.username)
    ws, _ = await workspaces.launch(rt, user=admin, request=LaunchRequest(key="OUT-1"))
    await drive(rt, ws.id)
    return await state_of(rt, ws.id)


async def state_of(rt: Runtime, workspace_id: str) -> Workspace:
    async with transaction(rt.sessions) as session:
        found = await session.get(Workspace, workspace_id)
        assert found is not None
        return found


@pytest.mark.usefixtures("git_token", "engine_cleanup")
async def test_a_restart_that_finds_no_engine_waits_for_the_next_pass(
        rt: Runtime, admin: User, new_repo: NewRepo, base_image: str, docker_client: docker.DockerClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ws = await ready_workspace(rt, admin, new_repo({"Dockerfile": launchable_dockerfile(base_image)}))
    assert ws.state == State.READY.value, ws.failure_reason
    docker_client.containers.get(f"ts-{ws.id}").stop(timeout=0)  # what an engine shutdown does

    # The pass still lists containers; the start that follows finds no socket, as when dockerd
    # has closed its listener but not yet its open connections.
    start_workspace = rt.backend.start_workspace
    refused: list[str] = []

    async def no_socket(spec: Any, state: dict[str, Any]) -> dict[str, Any]:
        refused.append(spec.id)
        raise _engine_unreachable(requests.ConnectionError(
            "('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))"))

    monkeypatch.setattr(rt.backend, "start_workspace", no_socket)
    reconciler = Reconciler(rt)
    report = await reconciler.run_pass(wait=True)
    assert report.restarted == [ws.id] and refused == [ws.id]
    waiting = await state_of(rt, ws.id)
    assert (waiting.state, waiting.failure_reason) == (State.STARTING.value, None)

    monkeypatch.setattr(rt.backend, "start_workspace", start_workspace)
    report = await reconciler.run_pass(wait=True)
    assert report.jobs_started == [ws.id]
    back = await state_of(rt, ws.id)
    assert back.state == State.READY.value, back.failure_reason
    assert docker_client.containers.get(f"ts-{ws.id}").attrs["State"]["Running"]
    async with transaction(rt.sessions) as session:
        moves = [(e.from_state, e.to_state) for e in await session.scalars(
            select(Event).where(Event.workspace_id == ws.id, Event.kind == "transition").order_by(Event.id))]
    assert moves[-2:] == [("ready", "starting"), ("starting", "ready")]
