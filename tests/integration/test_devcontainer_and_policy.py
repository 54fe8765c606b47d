"""A devcontainer.json environment honoured end to end, and workspaces that follow their ticket:
purged when it is done (after the grace period), kept when it is reopened."""

from __future__ import annotations

import json
import textwrap

import docker
import pytest

from tests.integration.conftest import Stack, StackFactory

pytestmark = pytest.mark.docker


def test_devcontainer_json_is_honoured(make_stack: StackFactory, docker_client: docker.DockerClient,
                                       base_image: str) -> None:
    devcontainer = textwrap.dedent("""\
        // A devcontainer.json as people write it: comments and trailing commas.
        {
          "name": "api",
          "build": {"dockerfile": "Dockerfile", "context": "..", "args": {"GREETING": "hi from args"}},
          "containerEnv": {"APP_ENV": "dev", "CODE_DIR": "${containerWorkspaceFolder}"},
          "remoteEnv": {"EDITOR_MODE": "vim"},
          "remoteUser": "dev",
          "postCreateCommand": "echo created >> /workspace/.taskspace/post-create-runs",
          "postStartCommand": ["sh", "-c", "echo started >> /workspace/.taskspace/post-start-runs"],
          "forwardPorts": [3000, "db:5432"],
          "mounts": ["source=cache,target=/home/dev/.cache,type=volume"],
          "features": {"ghcr.io/devcontainers/features/node:1": {}},
        }
        """)
    files = {
        ".devcontainer/devcontainer.json": devcontainer,
        ".devcontainer/Dockerfile": (f"FROM {base_image}\nARG GREETING\n"
                                     'RUN useradd -m dev && echo "$GREETING" > /greeting\n'
                                     "EXPOSE 3000\nENV APP_HOME=/app\n"),
        ".taskspace/startup.sh": "#!/bin/sh\necho startup >> /workspace/.taskspace/startup-runs\n",
    }
    stack = make_stack(files=files)
    key = stack.ticket()
    volume = f"ts-{stack.project.upper()[:10].lower()}-cache"
    try:
        ws = stack.launch_ready(key)

        env = ws["environment"]
        assert env["source"] == "devcontainer" and env["config_path"] == ".devcontainer/devcontainer.json"
        assert env["exposed_ports"] == ["3000"] and env["forward_ports"] == [3000, "db:5432"]
        assert {"APP_ENV", "APP_HOME", "CODE_DIR", "EDITOR_MODE"} <= set(env["env_names"])
        assert "dev" not in json.dumps(env["env_names"]), "names only, never values"
        assert any("features" in w for w in env["warnings"])
        assert stack.sh(key, "id -un; cat /greeting").splitlines() == ["dev", "hi from args"]
        assert stack.sh(key, "echo $APP_ENV $CODE_DIR $EDITOR_MODE").split() == [
            "dev", f"/workspace/{stack.primary}", "vim"]
        assert stack.sh(key, "grep -c ' /home/dev/.cache ' /proc/self/mounts").strip() == "1"
        assert docker_client.volumes.get(volume)

        stack.request(key, "stop", "stopped")
        stack.request(key, "start", "ready")
        runs = stack.sh(key, "cd /workspace/.taskspace && wc -l < post-create-runs && wc -l < post-start-runs "
                             "&& wc -l < startup-runs").split()
        assert runs == ["1", "2", "2"], "postCreate once; postStart and startup.sh on every start"
        log = stack.api("GET", f"/workspaces/{key}/logs/startup").text
        assert log.index("postStartCommand") < log.index(".taskspace/startup.sh")
        stack.request(key, "purge", "purged")
        assert docker_client.volumes.get(volume), "a project's shared volume outlives one workspace"
    finally:
        stack.server.stop()
        try:
            docker_client.volumes.get(volume).remove(force=True)
        except docker.errors.NotFound:
            pass


def test_a_workspace_follows_its_ticket(stack: Stack, docker_client: docker.DockerClient) -> None:
    # A second project on the same repositories, with a grace period before the purge.
    response = stack.api("POST", "/projects", json={
        "name": f"{stack.project}-g", "key": f"G{stack.project.upper()[1:8]}", "grace": "1h",
        "repos": [stack.git.url(stack.primary), stack.git.url(stack.secondary)]})
    assert response.status_code == 201, response.text
    graced = response.json()["name"]
    key = stack.api("POST", "/tickets", json={"project": graced, "title": "Graced"}).json()["key"]
    stack.launch_ready(key)

    stack.api("POST", f"/tickets/{key}/move", json={"status": "Done"})
    stack.api("POST", "/reconcile")
    ws = stack.api("GET", f"/workspaces/{key}").json()
    assert ws["state"] == "ready" and ws["purge_due_at"] is not None, "due in an hour, not now"

    stack.api("POST", f"/tickets/{key}/move", json={"status": "In Progress"})
    stack.api("POST", "/reconcile")
    ws = stack.api("GET", f"/workspaces/{key}").json()
    assert ws["purge_due_at"] is None, "reopening cancels the scheduled purge"
    reasons = [e["reason"] for e in stack.api("GET", f"/workspaces/{key}/events").json()["events"]]
    assert any(r and r.startswith("purge scheduled") for r in reasons)
    assert any(r and r.startswith("scheduled purge cancelled") for r in reasons)
    stack.request(key, "purge", "purged")

    # Without grace, Done purges at once, rescuing the work.
    key = stack.ticket("Quick fix")
    stack.launch_ready(key)
    stack.sh(key, "echo fix > fix.txt")
    stack.api("POST", f"/tickets/{key}/move", json={"status": "Done"})
    ws = stack.server.wait_for(key, {"purged", "purge_blocked"}, 60)
    assert ws["state"] == "purged"
    assert [r["repo"] for r in ws["rescue"]] == [stack.primary]
    events = stack.api("GET", f"/workspaces/{key}/events").json()["events"]
    assert any(e["actor"] == "policy" and "Done" in e["reason"] for e in events)


def test_a_done_ticket_cannot_be_launched(stack: Stack) -> None:
    key = stack.ticket()
    stack.api("POST", f"/tickets/{key}/move", json={"status": "Done"})
    response = stack.api("POST", "/workspaces", json={"key": key})
    assert response.status_code == 409
    assert "Move the ticket back" in response.json()["error"]["hint"]
    assert stack.workspaces() == []
