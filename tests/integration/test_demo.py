"""The README's first command: `taskspace up` on its embedded default seeds a demo that works."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from taskspace.testing.server import ServerProcess
from tests.integration.conftest import remove_installation

pytestmark = pytest.mark.docker


def test_the_demo_project_launches_a_workspace(tmp_path: Path, docker_client: docker.DockerClient,
                                               base_image: str) -> None:
    server = ServerProcess(tmp_path / "data", demo=True)
    try:
        server.start(timeout=300)  # the demo's base image is the suite's: already built
        assert [t["key"] for t in server.api.get("/tickets").json()] == ["DEMO-3", "DEMO-2", "DEMO-1"]
        [project] = server.api.get("/projects").json()
        assert [r["name"] for r in project["repos"]] == ["api", "web"]

        response = server.api.post("/workspaces", json={"key": "DEMO-1"})
        assert response.status_code == 201, response.text
        ws = server.wait_for("DEMO-1", {"ready", "failed"}, 180)
        assert ws["state"] == "ready", ws["failure_reason"]
        assert ws["startup_status"] == "ok"
        log = server.api.get("/workspaces/DEMO-1/logs/startup").text
        assert "Hello, dev!" in log and "cache reachable at 127.0.0.1:6380" in log

        server.api.post("/workspaces/DEMO-1/purge")
        assert server.wait_for("DEMO-1", {"purged", "purge_blocked"}, 60)["state"] == "purged"

        # A restart does not seed again.
        server.stop()
        server.start()
        assert len(server.api.get("/projects").json()) == 1
    finally:
        server.stop()
        remove_installation(docker_client, server.installation)
