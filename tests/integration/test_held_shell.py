"""The Docker backend's held shells: an exec started ahead of time in a running workspace, or the
container's first shell right after a start, runs the one script given to it — with its
environment, as its user, its output and exit code as an exec's — and anything it cannot serve
goes to a new exec with the same result."""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator

import docker
import pytest

from taskspace.plugins.backends.base import LABEL_INSTALLATION, LABEL_WORKSPACE, ExecChunk, WorkspaceSpec
from taskspace.plugins.backends.docker import specs
from taskspace.plugins.backends.docker.backend import DockerBackend, DockerBackendConfig

pytestmark = pytest.mark.docker

SCRIPT = """\
echo "pid $$"
echo "value $VALUE"
echo "user $(id -un)"
echo "stdin [$(cat)]"
echo "environ $(tr '\\0' '\\n' </proc/$$/environ | grep -c '^VALUE=')"
echo oops >&2
exit 3
"""


@pytest.fixture
def workspace(docker_client: docker.DockerClient, base_image: str) -> Iterator[str]:
    """A running container named as a workspace's, kept alive as a workspace container is."""
    workspace_id = secrets.token_hex(6)
    container = docker_client.containers.run(
        base_image, ["/bin/sh", "-c", specs.KEEPALIVE], name=specs.container_name(workspace_id), detach=True,
        network_mode="none")
    try:
        yield workspace_id
    finally:
        container.remove(force=True)


@pytest.fixture
def backend() -> DockerBackend:
    return DockerBackend(DockerBackendConfig(), installation=secrets.token_hex(4))


async def run(chunks: AsyncGenerator[ExecChunk | int, None]) -> tuple[dict[str, str], str, int]:
    out, err, code = bytearray(), bytearray(), None
    async for item in chunks:
        if isinstance(item, int):
            code = item
        else:
            (out if item.stream == "stdout" else err).extend(item.data)
    assert code is not None
    fields = dict(line.split(" ", 1) for line in out.decode().splitlines())
    return fields, err.decode(), code


def held_pids(docker_client: docker.DockerClient, workspace_id: str, timeout: float = 10) -> list[str]:
    """The process ids of the shells waiting for a script (``/bin/sh -s``); waits for at least
    one to show when ``timeout``, else reads once."""
    deadline = time.monotonic() + timeout
    while True:
        top = docker_client.api.top(specs.container_name(workspace_id), ps_args="-eo pid,args")
        pids = [p[0] for p in top["Processes"] if p[1] == "/bin/sh -s"]
        if pids or time.monotonic() >= deadline:
            return pids
        time.sleep(0.05)


async def test_the_held_shell_runs_the_script_like_an_exec(
        backend: DockerBackend, workspace: str, docker_client: docker.DockerClient) -> None:
    await backend.hold_shell(workspace, user="nobody")
    await backend.hold_shell(workspace, user="nobody")  # held already: nothing more
    pids = held_pids(docker_client, workspace)
    assert len(pids) == 1

    fields, err, code = await run(backend.shell_stream(workspace, SCRIPT, user="nobody",
                                                       env={"VALUE": "it's $HOME `x`"}))

    assert code == 3 and err == "oops\n"
    # Exported by the held shell, not in its environment from the start as an exec's would be.
    assert fields == {"pid": fields["pid"], "value": "it's $HOME `x`", "user": "nobody", "stdin": "[]",
                      "environ": "0"}
    assert held_pids(docker_client, workspace, timeout=0) == []  # used up

    # Nothing held now: the same script in a new exec gives the same answers.
    again, err, code = await run(backend.shell_stream(workspace, SCRIPT, user="nobody",
                                                      env={"VALUE": "it's $HOME `x`"}))
    assert (again | {"pid": ""}, err, code) == (fields | {"pid": "", "environ": "1"}, "oops\n", 3)


async def test_a_shell_held_for_another_user_is_not_used(
        backend: DockerBackend, workspace: str, docker_client: docker.DockerClient) -> None:
    await backend.hold_shell(workspace, user="nobody")
    assert held_pids(docker_client, workspace)

    fields, _, code = await run(backend.shell_stream(workspace, SCRIPT, user="root", env={"VALUE": "v"}))

    assert code == 3 and (fields["user"], fields["value"], fields["environ"]) == ("root", "v", "1")
    deadline = time.monotonic() + 10
    while held_pids(docker_client, workspace, timeout=0):  # let go: it read the end of its input
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_a_held_shell_that_ended_is_replaced_by_an_exec(
        backend: DockerBackend, workspace: str, docker_client: docker.DockerClient) -> None:
    await backend.hold_shell(workspace)
    assert held_pids(docker_client, workspace)
    docker_client.containers.get(specs.container_name(workspace)).restart(timeout=0)

    fields, err, code = await run(backend.shell_stream(workspace, SCRIPT, env={"VALUE": "after"}))

    assert (fields["value"], fields["user"], fields["environ"], err, code) == ("after", "root", "1", "oops\n", 3)


async def test_names_a_shell_cannot_export_go_to_an_exec(
        backend: DockerBackend, workspace: str, docker_client: docker.DockerClient) -> None:
    await backend.hold_shell(workspace)
    assert held_pids(docker_client, workspace)

    fields, _, code = await run(backend.shell_stream(
        workspace, "echo \"value $(tr '\\0' '\\n' </proc/$$/environ | grep -c '^odd-name=1$')\"",
        env={"odd-name": "1"}))

    assert (fields, code) == ({"value": "1"}, 0)


async def test_stopping_the_workspace_lets_its_held_shell_go(
        backend: DockerBackend, workspace: str, docker_client: docker.DockerClient) -> None:
    await backend.hold_shell(workspace)
    assert held_pids(docker_client, workspace)

    await backend.stop(workspace, {})

    assert workspace not in backend._held


async def test_a_held_shell_whose_connection_is_gone_is_replaced_by_an_exec(
        backend: DockerBackend, workspace: str, docker_client: docker.DockerClient) -> None:
    await backend.hold_shell(workspace)
    assert held_pids(docker_client, workspace)
    backend._held[workspace].raw().shutdown(socket.SHUT_WR)  # nothing more can be written to it

    fields, err, code = await run(backend.shell_stream(workspace, SCRIPT, env={"VALUE": "v"}))

    assert (fields["value"], fields["environ"], err, code) == ("v", "1", "oops\n", 3)


# The container's first shell ----------------------------------------------------------------------


@pytest.fixture
async def started(backend: DockerBackend, base_image: str) -> AsyncIterator[WorkspaceSpec]:
    """A workspace container made and started by the backend (host network, no owner)."""
    workspace_id = secrets.token_hex(6)
    spec = WorkspaceSpec(id=workspace_id, hostname="held", image=base_image, network="host",
                         labels={LABEL_INSTALLATION: backend.installation, LABEL_WORKSPACE: workspace_id})
    state = await backend.prepare(spec, {})
    await backend.start_workspace(spec, state)
    try:
        yield spec
    finally:
        await backend.delete(workspace_id, state)


async def test_the_first_command_after_a_start_runs_in_the_container_s_first_shell(
        backend: DockerBackend, started: WorkspaceSpec, docker_client: docker.DockerClient) -> None:
    workspace = started.id
    fields, err, code = await run(backend.shell_stream(workspace, SCRIPT, env={"VALUE": "first"}))

    # Not in an exec: the value is exported, not in the process's environment from its start.
    assert (fields["value"], fields["environ"], fields["stdin"], err, code) == ("first", "0", "[]", "oops\n", 3)
    container = docker_client.containers.get(specs.container_name(workspace))
    assert container.status == "running"  # kept alive after its script
    assert held_pids(docker_client, workspace, timeout=0) == []
    # Output is exact, even without a final newline; the next command is an exec.
    _, err, code = await run(backend.shell_stream(workspace, "printf 'no newline' >&2"))
    assert (err, code) == ("no newline", 0)

    # Stopped and started again: the first command after the start runs in the first shell again.
    await backend.stop(workspace, {})
    await backend.start_workspace(started, {"container": container.id})
    fields, err, code = await run(backend.shell_stream(workspace, 'printf "%s" "$VALUE" >&2; exit 4',
                                                       env={"VALUE": "again"}))
    assert (err, code) == ("again", 4)


async def test_a_command_as_another_user_leaves_the_first_shell_waiting(
        backend: DockerBackend, started: WorkspaceSpec) -> None:
    fields, _, code = await run(backend.shell_stream(started.id, SCRIPT, user="nobody", env={"VALUE": "x"}))

    assert (fields["user"], fields["environ"], code) == ("nobody", "1", 3)  # an exec


async def test_a_container_made_without_a_first_shell_gets_execs(
        backend: DockerBackend, workspace: str, docker_client: docker.DockerClient) -> None:
    docker_client.containers.get(specs.container_name(workspace)).stop(timeout=0)  # made with KEEPALIVE alone
    old = WorkspaceSpec(id=workspace, hostname="old", image="unused", network="host", labels={})
    await backend.start_workspace(old, {"container": workspace})

    fields, _, code = await run(backend.shell_stream(workspace, SCRIPT, env={"VALUE": "old"}))

    assert (fields["value"], fields["environ"], code) == ("old", "1", 3)


async def test_a_first_shell_from_an_earlier_start_is_not_used(
        backend: DockerBackend, started: WorkspaceSpec, docker_client: docker.DockerClient) -> None:
    docker_client.containers.get(specs.container_name(started.id)).restart(timeout=0)  # behind the backend's back

    fields, err, code = await run(backend.shell_stream(started.id, SCRIPT, env={"VALUE": "v"}))

    assert (fields["value"], fields["environ"], err, code) == ("v", "1", "oops\n", 3)


async def test_a_workspace_whose_first_shell_waits_stops_on_sigterm(
        backend: DockerBackend, started: WorkspaceSpec, docker_client: docker.DockerClient) -> None:
    await backend.stop(started.id, {})

    # Ended by the engine's SIGTERM (128 + 15), not killed at the end of its grace period (128 + 9).
    state = docker_client.containers.get(specs.container_name(started.id)).attrs["State"]
    assert (state["Running"], state["ExitCode"]) == (False, 143)


@pytest.mark.parametrize("asked", [None, "nobody"])
async def test_the_first_shell_runs_as_the_container_s_user(
        backend: DockerBackend, base_image: str, asked: str | None) -> None:
    workspace_id = secrets.token_hex(6)
    spec = WorkspaceSpec(id=workspace_id, hostname="held", image=base_image, network="host", user="nobody",
                         labels={LABEL_INSTALLATION: backend.installation, LABEL_WORKSPACE: workspace_id})
    state = await backend.prepare(spec, {})
    try:
        await backend.start_workspace(spec, state)

        fields, _, code = await run(backend.shell_stream(workspace_id, SCRIPT, user=asked, env={"VALUE": "v"}))

        assert (fields["user"], fields["environ"], code) == ("nobody", "0", 3)
    finally:
        await backend.delete(workspace_id, state)


async def test_the_first_shell_s_output_arrives_as_it_is_written(
        backend: DockerBackend, started: WorkspaceSpec, docker_client: docker.DockerClient) -> None:
    # The script goes on once a file is made: by the test when it has read the first line, or
    # after 20 s whatever happened (then the first line came with the rest: a failure, not a hang).
    container = docker_client.containers.get(specs.container_name(started.id))
    go = threading.Timer(20, container.exec_run, (["touch", "/tmp/go"],))
    go.start()
    chunks = backend.shell_stream(started.id, "echo cloned; until [ -e /tmp/go ]; do sleep 0.05; done; echo started")
    first = await anext(chunks)
    go.cancel()
    container.exec_run(["touch", "/tmp/go"])
    rest = [item async for item in chunks]

    assert first == ExecChunk(stream="stdout", data=b"cloned\n")
    assert rest == [ExecChunk(stream="stdout", data=b"started\n"), 0]
