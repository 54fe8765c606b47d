"""A private dockerd beside the shared one: isolated, restartable, and gone after stop()."""

from __future__ import annotations

import docker
import docker.errors
import pytest

from taskspace.testing.engine import PrivateEngine

pytestmark = pytest.mark.docker


def test_private_engine_restarts_beside_the_shared_one(
    docker_client: docker.DockerClient, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A short root: the engine's unix sockets live below it.
    engine = PrivateEngine(tmp_path_factory.mktemp("engine"))
    with engine:
        client = engine.client()
        assert client.info()["DockerRootDir"] == str(engine.root / "data")
        assert any(b"containerd" in _cmdline(pid) for pid in engine.processes())

        engine.load_image_from(docker_client, base_image)
        container = client.containers.run(base_image, ["git", "--version"], network_mode="host", detach=True)
        assert container.wait()["StatusCode"] == 0
        assert container.logs().startswith(b"git version ")
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(container.id)

        engine.restart()

        assert client.ping()
        container.reload()
        assert container.status == "exited"
        other = docker.DockerClient(base_url=engine.socket_url)
        assert [c.id for c in other.containers.list(all=True)] == [container.id]
        other.close()
        container.remove()

    assert engine.processes() == []
    with open("/proc/self/mounts") as mounts:
        assert not [line for line in mounts if f" {engine.root}/" in line]
    assert docker_client.ping()


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read()
    except OSError:
        return b""
