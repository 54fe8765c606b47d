"""The server can be killed at any instant, and the engine restarted under running workspaces:
work in flight is finished, nothing is left behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import docker
import httpx
import pytest

from taskspace.testing.engine import PrivateEngine
from taskspace.testing.server import free_port
from tests.integration.conftest import Stack, engine_resources, project_files

pytestmark = pytest.mark.docker

STEPS = ["image", "volume", "container", "clone", "services", "startup"]


def _expected(ws_id: str) -> dict[str, set[str]]:
    return {"containers": {f"ts-{ws_id}", f"ts-{ws_id}-echo"}, "volumes": {f"ts-{ws_id}-workspace"},
            "networks": set()}


@pytest.mark.parametrize("step", STEPS)
def test_server_killed_during_a_provisioning_step_finishes_the_workspace_after_restart(
        make_stack: Callable[..., Stack], docker_client: docker.DockerClient, step: str) -> None:
    # The failpoint holds the step open after it is recorded, so the kill lands inside it.
    stack = make_stack(env={"TASKSPACE_FAILPOINTS": f"{step}=60"})
    key = stack.ticket()
    ws = stack.launch(key)
    deadline = time.monotonic() + 120
    while stack.api("GET", f"/workspaces/{key}").json()["step"] != step:
        assert time.monotonic() < deadline, f"never reached {step}"
        time.sleep(0.05)

    stack.server.kill()
    stack.server.start(TASKSPACE_FAILPOINTS="")

    ws = stack.server.wait_for(key, {"ready", "failed"}, 180)
    assert ws["state"] == "ready", ws["failure_reason"]
    assert stack.sh(key, "git branch --show-current").strip() == ws["branch"]
    assert stack.sh(key, "cat /workspace/.taskspace/startup-runs | wc -l").strip() in {"1", "2"}
    assert engine_resources(docker_client, stack.server.installation) == _expected(ws["id"])
    report = stack.api("POST", "/reconcile").json()
    assert report["orphans"] == []


def test_server_killed_in_the_middle_of_an_image_build_rebuilds_it(
        make_stack: Callable[..., Stack], docker_client: docker.DockerClient, base_image: str) -> None:
    files = project_files(base_image, service_port=free_port())
    files["Dockerfile"] = (f"FROM {base_image}\nARG NONCE={time.time_ns()}\nRUN sleep 3 && useradd -m dev\n"
                           "USER dev\n")
    stack = make_stack(files=files)
    key = stack.ticket()
    stack.launch(key)
    while stack.api("GET", f"/workspaces/{key}").json()["step"] != "image":
        time.sleep(0.05)
    time.sleep(1.5)  # the build's RUN step is running now

    stack.server.kill()
    stack.server.start()

    ws = stack.server.wait_for(key, {"ready", "failed"}, 180)
    assert ws["state"] == "ready", ws["failure_reason"]
    assert engine_resources(docker_client, stack.server.installation) == _expected(ws["id"])


def test_server_killed_during_the_launch_preflight_creates_nothing(
        make_stack: Callable[..., Stack], docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = make_stack()
    key = stack.ticket()
    monkeypatch.setattr(stack.git, "delay", 1.0)
    outcome: list[object] = []

    def launch() -> None:
        try:
            outcome.append(stack.server.api.post("/workspaces", json={"key": key}))
        except httpx.HTTPError as exc:  # the server dies under the request
            outcome.append(exc)

    thread = threading.Thread(target=launch)
    thread.start()
    time.sleep(0.5)  # the launch request is waiting on the slowed git server

    stack.server.kill()
    thread.join()
    assert isinstance(outcome[0], httpx.HTTPError), "the launch was cut off by the kill"
    monkeypatch.setattr(stack.git, "delay", 0.0)
    stack.server.start()

    assert stack.workspaces() == []
    assert engine_resources(docker_client, stack.server.installation)["containers"] == set()
    assert stack.launch_ready(key)["state"] == "ready"


@pytest.mark.parametrize("step", ["rescue", "delete"])
def test_server_killed_during_a_purge_finishes_the_purge_after_restart(
        make_stack: Callable[..., Stack], docker_client: docker.DockerClient, step: str) -> None:
    stack = make_stack(env={"TASKSPACE_FAILPOINTS": f"{step}=60"})
    key = stack.ticket()
    stack.launch_ready(key)
    stack.sh(key, "echo keep > keep.txt")
    stack.api("POST", f"/workspaces/{key}/purge")
    while stack.api("GET", f"/workspaces/{key}").json()["step"] != step:
        time.sleep(0.05)

    stack.server.kill()
    stack.server.start(TASKSPACE_FAILPOINTS="")

    ws = stack.server.wait_for(key, {"purged", "purge_blocked", "failed"}, 120)
    assert ws["state"] == "purged", ws["failure_reason"]
    rescued = [b for b in stack.git.branches(stack.primary) if b.startswith(f"rescue/{key}-")]
    assert rescued and stack.git.read_file(stack.primary, rescued[-1], "keep.txt") == b"keep\n"
    assert engine_resources(docker_client, stack.server.installation) == {
        "containers": set(), "volumes": set(), "networks": set()}


def test_workspaces_come_back_after_the_engine_restarts(
        make_stack: Callable[..., Stack], docker_client: docker.DockerClient, base_image: str) -> None:
    root = Path(f"/tmp/tse-{time.time_ns() % 10**8}")
    with PrivateEngine(root) as engine:
        engine.load_image_from(docker_client, base_image)
        stack = make_stack(docker_host=engine.socket_url)
        key = stack.ticket()
        ws = stack.launch_ready(key)
        stack.sh(key, "echo survive > survive.txt")

        engine.restart()
        assert not engine.client().containers.get(f"ts-{ws['id']}").attrs["State"]["Running"]

        deadline = time.monotonic() + 90
        while stack.sh_or_none(key, "cat survive.txt") is None:
            if time.monotonic() > deadline:
                events = stack.api("GET", f"/workspaces/{key}/events").json()["events"][-5:]
                pytest.fail(f"the reconciler did not restart the workspace; its last events: {events}; "
                            f"server log: {stack.server.log()[-3000:]}")
            time.sleep(0.5)
        ws = stack.server.wait_for(key, {"ready"}, 60)
        assert stack.sh(key, "cat survive.txt").strip() == "survive"
        assert stack.sh(key, "wc -l < /workspace/.taskspace/startup-runs").strip() == "2"
        events = stack.api("GET", f"/workspaces/{key}/events").json()["events"]
        assert any("engine restarted" in (e["reason"] or "") for e in events)
        assert engine.client().containers.get(f"ts-{ws['id']}-echo").attrs["State"]["Running"]
        stack.server.stop()
        for container in engine.client().containers.list(all=True):
            container.remove(force=True, v=True)


def test_unowned_engine_resources_are_removed_after_the_grace_period(
        make_stack: Callable[..., Stack], docker_client: docker.DockerClient, base_image: str) -> None:
    stack = make_stack(env={"TASKSPACE_ORPHAN_GRACE": "0"})
    labels = {"taskspace.installation": stack.server.installation, "taskspace.workspace": "0123456789ab",
              "taskspace.role": "workspace"}
    container = docker_client.containers.create(base_image, ["true"], labels=labels, name="ts-0123456789ab")
    volume = docker_client.volumes.create("ts-0123456789ab-workspace", labels=labels)
    stranger = docker_client.containers.create(base_image, ["true"], labels={"taskspace.installation": "other",
                                                                              "taskspace.workspace": "x"})
    try:
        first = stack.api("POST", "/reconcile").json()
        assert set(first["orphans"]) == {"container:ts-0123456789ab", "volume:ts-0123456789ab-workspace"}
        second = stack.api("POST", "/reconcile").json()
        assert set(second["orphans_removed"]) == set(first["orphans"])
        assert engine_resources(docker_client, stack.server.installation)["volumes"] == set()
        docker_client.containers.get(stranger.id)  # another installation's resource is left alone
    finally:
        for thing in (container, volume, stranger):
            try:
                thing.remove(force=True)
            except docker.errors.NotFound:
                pass
