"""The warm pool end to end: prebuilt workspaces that launches claim and move to their ticket.

The project uses devcontainer.json with onCreateCommand (run while the workspace waits in the
pool) and postCreateCommand (run once it is claimed), and a dependency service that a claim
keeps running. Each lifecycle command writes the branch it saw and the ticket it was given.
"""

from __future__ import annotations

import json
import textwrap
import time
from typing import Any

import docker
import pytest

from tests.integration.conftest import Stack, StackFactory

pytestmark = pytest.mark.docker

LIFECYCLE = "/workspace/.taskspace/lifecycle"


def pool_files(base_image: str) -> dict[str, str]:
    record = 'echo "{what} on $(git branch --show-current) ticket=${{TASKSPACE_TICKET:-none}}" >> ' + LIFECYCLE
    return {
        "README.md": "# api\n",
        "Dockerfile": f"FROM {base_image}\nRUN useradd --create-home dev\nUSER dev\n",
        ".devcontainer/devcontainer.json": json.dumps({
            "build": {"dockerfile": "../Dockerfile", "context": ".."},
            "remoteUser": "dev",
            "onCreateCommand": record.format(what="onCreate"),
            "postCreateCommand": record.format(what="postCreate"),
        }),
        ".taskspace/startup.sh": "#!/bin/sh\n" + record.format(what="startup") + "\n",
        ".taskspace/services.yaml": textwrap.dedent(f"""\
            services:
              cache:
                image: {base_image}
                command: [sleep, infinity]
                init:
                  - {{run: "date +%s%N >> /srv/initialized"}}
            """),
    }


def pool(stack: Stack) -> dict[str, Any]:
    response = stack.api("GET", f"/projects/{stack.project}")
    assert response.status_code == 200, response.text
    return response.json()["pool"]


def wait_pool(stack: Stack, *, ready: int, building: int = 0, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pool(stack)
        assert found["failed"] == 0, found["error"]
        if found["ready"] == ready and found["building"] == building:
            return found
        time.sleep(0.3)
    raise TimeoutError(f"the pool stayed {found}")


def spares(client: docker.DockerClient, stack: Stack) -> dict[str, str | None]:
    """Workspace id → its service container's id, of the engine's workspaces that no one has."""
    people = {w["id"] for w in stack.workspaces(everyone=True)}
    # One list call (no inspect per container): spares come and go while it runs.
    containers = client.api.containers(all=True, filters={"label": f"taskspace.installation={stack.server.installation}"})
    services = {c["Labels"]["taskspace.workspace"]: c["Id"] for c in containers
                if c["Labels"].get("taskspace.role") == "service"}
    return {c["Labels"]["taskspace.workspace"]: services.get(c["Labels"]["taskspace.workspace"])
            for c in containers if c["Labels"].get("taskspace.role") == "workspace"
            and c["Labels"]["taskspace.workspace"] not in people}


def held_shells(client: docker.DockerClient, workspace_id: str, want: int, timeout: float = 10) -> int:
    """Shells waiting for a script (``/bin/sh -s``) in the workspace's container: as soon as
    there are ``want`` of them, else after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        top = client.api.top(f"ts-{workspace_id}", ps_args="-eo pid,args")
        found = sum(1 for p in top["Processes"] if p[1] == "/bin/sh -s")
        if found == want or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


def set_pool(stack: Stack, size: int) -> None:
    response = stack.api("PATCH", f"/projects/{stack.project}", json={"warm_pool": size})
    assert response.status_code == 200, response.text
    assert response.json()["warm_pool"] == size


def test_a_launch_claims_a_prebuilt_workspace_and_moves_it_to_the_ticket(
        make_stack: StackFactory, docker_client: docker.DockerClient, base_image: str) -> None:
    stack = make_stack(files=pool_files(base_image), env={"TASKSPACE_POOL_CHECK_INTERVAL": "1"})
    # A first launch fetches the repositories to the server; the pool builds from those mirrors.
    first = stack.ticket("First ticket")
    stack.launch_ready(first)
    stack.request(first, "purge", "purged", discard_unpushed=True)
    assert pool(stack) == {"size": 0, "ready": 0, "building": 0, "failed": 0, "error": None}

    set_pool(stack, 1)
    wait_pool(stack, ready=1)
    (spare, service), = spares(docker_client, stack).items()
    # The spare holds a shell waiting for the claim's script (no process to start then). It ends
    # with the server's connection to the engine; the server started again gives it a new one.
    assert held_shells(docker_client, spare, 1) == 1
    stack.server.stop()
    assert held_shells(docker_client, spare, 0) == 0
    stack.server.start()
    assert held_shells(docker_client, spare, 1, timeout=60) == 1
    # Pushed after the spare was built: the claim must bring it in.
    pushed = stack.git.commit(stack.primary, {"NEWS": "pushed after the spare was built\n"})

    key = stack.ticket("Add the login page")
    claimed = stack.launch(key)
    ws = stack.server.wait_for(key, {"ready", "failed"}, 120)

    assert claimed["id"] == ws["id"] == spare
    assert ws["state"] == "ready", ws["failure_reason"]
    assert held_shells(docker_client, spare, 0) == 0  # it ran the claim's script
    assert ws["startup_status"] == "ok"
    branch = ws["branch"]
    assert branch.startswith(f"{key}-add-the-login-page")
    for repo in (stack.primary, stack.secondary):
        assert stack.sh(key, f"git -C /workspace/{repo} branch --show-current").strip() == branch
        assert stack.sh(key, f"git -C /workspace/{repo} config user.name").strip() == "Administrator"
    assert stack.sh(key, "git rev-parse HEAD").strip() == pushed
    assert stack.sh(key, "cat NEWS").strip() == "pushed after the spare was built"
    assert stack.sh(key, "echo $TASKSPACE_TICKET $TASKSPACE_BRANCH").split() == [key, branch]
    assert stack.sh(key, f"cat {LIFECYCLE}").splitlines() == [
        "onCreate on main ticket=none",  # while it waited in the pool
        f"postCreate on {branch} ticket={key}",
        f"startup on {branch} ticket={key}",
    ]
    # The service the spare started serves the claimed workspace, initialized once.
    service_container = docker_client.containers.get(service)
    assert service_container.status == "running"
    assert service_container.exec_run(["wc", "-l", "/srv/initialized"]).output.split()[0] == b"1"
    events = stack.api("GET", f"/workspaces/{key}/events").json()["events"]
    assert any(e["data"].get("claimed") for e in events)
    assert any(e["step"] == "clone" and e["data"].get("switched") == [stack.primary, stack.secondary]
               for e in events)
    assert ws["ready_seconds"] < 30
    # Spares are nobody's: no one sees them among the workspaces.
    listed = stack.workspaces(everyone=True)
    assert [w["id"] for w in listed] == [spare]
    assert stack.api("GET", f"/workspaces/{spare}").status_code == 200  # it is the claimed one now

    # The pool fills again with a new spare.
    wait_pool(stack, ready=1)
    (refill, _), = spares(docker_client, stack).items()
    assert refill != spare

    # A change to the environment on the default branch: a launch no longer matches the spare,
    # builds its own workspace, and the pool replaces the spare.
    stack.git.commit(stack.primary, {"Dockerfile": f"FROM {base_image}\nRUN useradd --create-home dev\n"
                                                   "ENV CHANGED=1\nUSER dev\n"})
    other = stack.ticket("Another ticket")
    ws = stack.launch_ready(other)
    assert ws["id"] != refill
    assert stack.sh(other, "echo $CHANGED").strip() == "1"
    deadline = time.monotonic() + 180
    while refill in spares(docker_client, stack) or pool(stack)["ready"] != 1:
        assert time.monotonic() < deadline, pool(stack)
        time.sleep(0.3)
    (rebuilt, _), = spares(docker_client, stack).items()
    assert rebuilt != refill

    # No pool: the spares go, with their containers, volumes and services.
    set_pool(stack, 0)
    wait_pool(stack, ready=0)
    # The purge removes containers, then networks, then volumes: wait for all of them.
    owned = {"label": [f"taskspace.workspace={rebuilt}"]}
    deadline = time.monotonic() + 60
    while left := (spares(docker_client, stack) or docker_client.containers.list(all=True, filters=owned)
                   or docker_client.volumes.list(filters=owned)):
        assert time.monotonic() < deadline, left
        time.sleep(0.3)


def test_a_launch_that_does_not_match_the_pool_builds_its_own_workspace(
        make_stack: StackFactory, docker_client: docker.DockerClient, base_image: str) -> None:
    stack = make_stack(files=pool_files(base_image), env={"TASKSPACE_POOL_CHECK_INTERVAL": "1"})
    first = stack.ticket()
    stack.launch_ready(first)
    set_pool(stack, 1)
    wait_pool(stack, ready=1)
    (spare, _), = spares(docker_client, stack).items()

    key = stack.ticket("Only the api")
    ws = stack.launch_ready(key, repos=[stack.primary])  # a spare has every repository

    assert ws["id"] != spare
    assert [r["name"] for r in ws["repos"]] == [stack.primary]
    assert spare in spares(docker_client, stack)
    # The pool's size is validated.
    response = stack.api("PATCH", f"/projects/{stack.project}", json={"warm_pool": 11})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "warm_pool"
    assert "0 (no pool) to 10" in response.json()["error"]["hint"]
