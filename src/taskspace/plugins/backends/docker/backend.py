"""Workspaces as Docker containers: one container, one named volume at /workspace, a network,
and a container per dependency service. The docker SDK is synchronous; every call runs in a
worker thread so the event loop never blocks on the engine."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import shlex
import socket
import tarfile
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import docker
import docker.auth
import docker.errors
import docker.utils
import docker.utils.socket
from docker.models.containers import Container
from pydantic import Field

from taskspace.core.errors import BackendError, EngineUnreachable
from taskspace.core.workspace_scripts import handover_script, is_root
from taskspace.plugins.backends.base import (
    LABEL_INSTALLATION,
    LABEL_ROLE,
    LABEL_WORKSPACE,
    Backend,
    BackendConfig,
    ChecksImages,
    ExecChunk,
    ExecResult,
    ImageSpec,
    LogSink,
    OwnedResource,
    RegistryAuth,
    ResourceStats,
    ServiceRuntime,
    SupportsFileRead,
    SupportsHeldShell,
    SupportsIdeAttach,
    SupportsLocalBaseImage,
    SupportsPorts,
    SupportsProcessList,
    SupportsStats,
    SupportsStoragePath,
    SupportsTerminal,
    Terminal,
    WorkspaceSpec,
    WorkspaceStatus,
)
from taskspace.plugins.backends.docker import base_image, specs

T = TypeVar("T")
log = logging.getLogger(__name__)
INIT_MARKER = "/.taskspace-init-done"
#: The user's login shell from the passwd database, else bash, else sh.
LOGIN_SHELL = ('shell=$(getent passwd "$(id -un)" 2>/dev/null | cut -d: -f7); '
               '[ -x "$shell" ] || shell=$(command -v bash || echo /bin/sh); exec "$shell" -l')


class DockerBackendConfig(BackendConfig):
    base_url: str | None = Field(None, description="Engine URL; default DOCKER_HOST or the local socket.")
    timeout: float = Field(300, description="Seconds an engine API call may take.")
    build_timeout: float = Field(1800, description="Seconds an image build may take.")
    stop_timeout: int = Field(10, description="Seconds a container gets to stop before it is killed.")
    build_network: str | None = Field(None, description="Network mode of RUN steps; default: the engine's.")
    registry_auth: dict[str, RegistryAuth] = Field(default_factory=dict, description="Registry host → "
                                                   "credentials for pulls and manifest checks")


def _engine_unreachable(exc: Exception) -> EngineUnreachable:
    return EngineUnreachable(f"The Docker engine could not be reached ({exc}).",
                        hint="Check that dockerd is running and that TASKSPACE_DOCKER_HOST points at it.")


#: What a shell takes as a variable's name (others go to a new exec, which the engine sets).
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class _Started:
    """A command started in a workspace: its output as (stdout, stderr) pairs, its exit code
    once the output has ended, and what to do then."""

    output: Iterable[tuple[bytes | None, bytes | None]]
    code: Callable[[], int | None]
    done: Callable[[], None] = lambda: None


@dataclass
class _HeldShell:
    """``/bin/sh -s`` waiting on the engine's connection for its script: an exec (``exec_id``),
    or the container's first shell (``specs.FIRST_SHELL``, no ``exec_id``: the connection is an
    attach to the container)."""

    exec_id: str | None
    user: str
    sock: Any  # the connection the engine hands over for the shell's stdin and output
    started_at: str | None = None  # the container's start the first shell belongs to

    def serves(self, user: str | None) -> bool:
        """Whether a command as ``user`` (None: the container's user) may run in this shell. An
        exec's shell runs as asked; the first shell as the container's user, which ``user`` is
        for the first shell of a container."""
        if self.exec_id is None:
            return not user or user == self.user
        return (user or "") == self.user

    def raw(self) -> socket.socket:
        return getattr(self.sock, "_sock", self.sock)

    def close(self) -> None:
        """Let go of the connection: an exec's shell reads the end of its input and exits, the
        first shell goes on waiting (and keeps the container running)."""
        for end in (self.sock, self.raw()):
            try:
                end.close()
            except OSError:
                pass


class _FirstShellOutput:
    """The output of the container's first shell, read from an attach to the container, up to
    the end of its script: ``specs.SCRIPT_EXIT`` on each stream (either may come first; each
    comes after all of its stream's output). ``code`` is the script's exit code."""

    _MARK = specs.SCRIPT_EXIT.encode()

    def __init__(self, sock: Any):
        self.sock, self.code = sock, None

    def __iter__(self) -> Iterator[tuple[bytes | None, bytes | None]]:
        pending = {docker.utils.socket.STDOUT: b"", docker.utils.socket.STDERR: b""}
        ended: set[int] = set()
        for stream, data in docker.utils.socket.frames_iter(self.sock, tty=False):
            if stream not in pending or stream in ended:
                continue
            text = pending[stream] + data
            # The mark's first byte is nowhere else in it: from its last one on, the end of the
            # text may be the start of the mark, kept until more comes; the rest goes out now.
            at = text.rfind(self._MARK[:1])
            end = text.find(b"\n", at + len(self._MARK)) if at >= 0 and text[at:].startswith(self._MARK) else -1
            if end >= 0:
                if stream == docker.utils.socket.STDOUT:
                    self.code = int(text[at + len(self._MARK):end])
                ended.add(stream)
                text, pending[stream] = text[:at], b""
            elif at >= 0 and (self._MARK.startswith(text[at:]) or text[at:].startswith(self._MARK)):
                text, pending[stream] = text[:at], text[at:]
            else:
                pending[stream] = b""
            if text:
                yield docker.utils.socket.demux_adaptor(stream, text)
            if len(ended) == 2:
                return
        raise BackendError("The workspace container stopped while its first command ran.",
                           hint="Start the workspace again; the server log says what stopped it.")


def _parse_time(value: str | None) -> datetime | None:
    if not value or value.startswith("0001-"):
        return None
    # Docker reports nanoseconds; Python parses microseconds.
    head, _, frac = value.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")


class DockerBackend(Backend, SupportsStats, SupportsFileRead, SupportsLocalBaseImage, ChecksImages,
                    SupportsIdeAttach, SupportsTerminal, SupportsPorts, SupportsProcessList,
                    SupportsStoragePath, SupportsHeldShell):
    name = "docker"
    config_model = DockerBackendConfig
    config: DockerBackendConfig

    def __init__(self, config: DockerBackendConfig, *, installation: str):
        super().__init__(config, installation=installation)
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()
        self._build_locks: dict[str, asyncio.Lock] = {}
        self._cpus: int | None = None
        self._owned_builds: set[str] = set()  # owned images built (or tried) by this process
        self._background: set[asyncio.Task[None]] = set()
        self._held: dict[str, _HeldShell] = {}  # workspace id → its shell waiting for a script

    def service_host(self, network: str, workspace_id: str, service: str) -> str:
        return specs.service_host(network, workspace_id, service)

    # Plumbing --------------------------------------------------------------------------------

    def _docker(self, timeout: float | None = None) -> docker.DockerClient:
        if timeout is not None:
            return self._new_client(timeout)
        with self._client_lock:
            if self._client is None:
                self._client = self._new_client(self.config.timeout)
            return self._client

    def _new_client(self, timeout: float) -> docker.DockerClient:
        try:
            if self.config.base_url:
                return docker.DockerClient(base_url=self.config.base_url, version="auto",
                                           timeout=int(timeout), max_pool_size=32)
            return docker.from_env(version="auto", timeout=int(timeout), max_pool_size=32)
        except docker.errors.DockerException as exc:
            raise _engine_unreachable(exc) from exc

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except docker.errors.APIError as exc:
            raise BackendError(f"The Docker engine refused a request: {exc.explanation or exc}",
                               hint="See the server log for the request; retry once the cause is fixed.") from exc
        except docker.errors.DockerException as exc:
            raise _engine_unreachable(exc) from exc
        except OSError as exc:
            raise _engine_unreachable(exc) from exc

    def _find(self, name: str) -> Container | None:
        try:
            return self._docker().containers.get(name)
        except docker.errors.NotFound:
            return None

    def _owned_containers(self, workspace_id: str) -> list[Container]:
        return self._docker().containers.list(
            all=True, filters=specs.owned_filter(self.installation, workspace_id))

    # Images ----------------------------------------------------------------------------------

    async def has_image(self, ref: str) -> bool:
        def check() -> bool:
            try:
                self._docker().images.get(ref)
                return True
            except docker.errors.ImageNotFound:
                return False
        return await self._run(check)

    async def ensure_image(self, spec: ImageSpec, log: LogSink) -> bool:
        lock = self._build_locks.setdefault(spec.tag, asyncio.Lock())
        async with lock:
            if await self.has_image(spec.tag):
                return False
            await self._run(self._build, spec, log)
            return True

    def _build(self, spec: ImageSpec, log: LogSink) -> None:
        client = self._docker(timeout=self.config.build_timeout)
        try:
            stream = client.api.build(
                path=spec.context_dir, dockerfile=spec.dockerfile, tag=spec.tag,
                buildargs=spec.build_args or None, target=spec.target, labels=spec.labels,
                rm=True, forcerm=True, decode=True, pull=False, network_mode=self.config.build_network,
            )
            error = None
            for item in stream:
                if "stream" in item:
                    for line in item["stream"].splitlines():
                        log(line)
                elif "status" in item:
                    log(f"{item.get('id', '')} {item['status']} {item.get('progress', '')}".strip())
                if "error" in item:
                    error = item["error"].strip()
                    log(f"ERROR: {error}")
            if error:
                hint = "Fix the Dockerfile and launch again; the build log has the details."
                if "pull access denied" in error or ("not found" in error and "manifest" in error):
                    hint = ("A base image could not be found or pulled. Build it locally, or make "
                            "sure the engine can reach its registry.")
                raise BackendError(f"The image build failed: {error}", hint=hint)
        finally:
            client.close()

    def _auth_for(self, ref: str) -> dict[str, str] | None:
        registry, _ = docker.auth.resolve_repository_name(docker.utils.parse_repository_tag(ref)[0])
        auth = self.config.registry_auth.get(registry) or self.config.registry_auth.get(
            "docker.io" if registry == docker.auth.INDEX_NAME else registry)
        return {"username": auth.username, "password": auth.password.get_secret_value()} if auth else None

    async def image_problem(self, ref: str) -> str | None:
        if await self.has_image(ref):
            return None

        def check() -> str | None:
            try:
                self._docker().api.inspect_distribution(ref, auth_config=self._auth_for(ref))
                return None
            except docker.errors.APIError as exc:
                return str(exc.explanation or exc).strip()
        return await self._run(check)

    async def pull_image(self, ref: str, log: LogSink) -> None:
        if await self.has_image(ref):
            return

        def pull() -> None:
            repo, tag = docker.utils.parse_repository_tag(ref)
            try:
                for item in self._docker().api.pull(repo, tag=tag or "latest", stream=True, decode=True,
                                                    auth_config=self._auth_for(ref)):
                    if "status" in item:
                        log(f"{item.get('id', '')} {item['status']}".strip())
            except docker.errors.APIError as exc:
                raise BackendError(
                    f"Image {ref!r} is not on the engine and could not be pulled: {exc.explanation or exc}",
                    hint="Check the image name, or that the engine can reach its registry "
                         "(docker login for private ones).") from exc
        await self._run(pull)

    # Lifecycle -------------------------------------------------------------------------------

    async def prepare(self, spec: WorkspaceSpec, state: dict[str, Any]) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            client = self._docker()
            volume = specs.volume_name(spec.id)
            try:
                client.volumes.get(volume)
            except docker.errors.NotFound:
                client.volumes.create(volume, labels=specs.labels(spec, "volume"))
            network = specs.network_name(spec.network, spec.id)
            if spec.network == "per-workspace":
                if not client.networks.list(names=[network]):
                    client.networks.create(network, driver="bridge", labels=specs.labels(spec, "network"),
                                           check_duplicate=True)
            elif spec.network != "host" and not client.networks.list(names=[network]):
                raise BackendError(f"Docker network {network!r} does not exist.",
                                   hint="Create it (docker network create) or change TASKSPACE_WORKSPACE_NETWORK.")
            return {**state, "volume": volume, "network": network}
        return await self._run(work)

    def _engine_cpus(self) -> int | None:
        if self._cpus is None:
            self._cpus = int(self._docker().info().get("NCPU") or 0) or None
        return self._cpus

    def _create_or_get(self, kwargs: dict[str, Any]) -> tuple[Container, bool]:
        """The container named in ``kwargs``, and whether it was created now."""
        client = self._docker()
        found = self._find(kwargs["name"])
        if found is not None:
            return found, False
        # The engine refuses a CPU limit above its own CPU count; on a smaller machine the
        # default (or a project's) limit means "all of them".
        cpus = self._engine_cpus() if kwargs.get("nano_cpus") else None
        if cpus is not None:
            kwargs = {**kwargs, "nano_cpus": min(kwargs["nano_cpus"], cpus * specs.NANO)}
        try:
            return client.containers.create(**kwargs), True
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # created concurrently by another worker
                found = self._find(kwargs["name"])
                if found is not None:
                    return found, False
            if isinstance(exc, docker.errors.ImageNotFound):
                raise BackendError(f"Image {kwargs['image']!r} is missing on the engine.",
                                   hint="Launch again: the image step rebuilds it.") from exc
            raise

    async def start_workspace(self, spec: WorkspaceSpec, state: dict[str, Any]) -> dict[str, Any]:
        """A new /workspace is the owner's either from the start (the container is made from
        the owned image, :func:`specs.owned_image_ref`) or by a root exec right after the start,
        which is followed by building the owned image in the background for the next ones."""

        def work() -> tuple[Container, _Owned | None, _HeldShell | None]:
            # A container made before (a start, a claimed spare) has its /workspace already.
            owned = None if state.get("container") else self._owned_image(spec)
            kwargs = specs.workspace_container_kwargs(spec)
            if owned is not None and owned.exists:
                kwargs["image"] = owned.ref
            container, created = self._create_or_get(kwargs)
            started = container.status != "running"
            if started:
                container.start()
                container.reload()
            if container.status != "running":
                logs = container.logs(tail=20).decode(errors="replace").strip()
                raise BackendError(f"The workspace container stopped right after starting: {logs or 'no output'}",
                                   hint="Check that the image has /bin/sh and does not exit on start.")
            first, config = None, container.attrs["Config"]
            if started and config.get("OpenStdin"):  # its first shell waits for a script (specs.FIRST_SHELL)
                first = _HeldShell(None, config.get("User") or "", self._docker().api.attach_socket(
                    container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}),
                    started_at=container.attrs["State"].get("StartedAt"))
            return container, owned if created else None, first

        container, owned, first = await self._run(work)
        if first is not None:
            self.release_shell(spec.id)
            self._held[spec.id] = first
        if owned is not None and not owned.exists:
            await self._hand_over(spec, owned)
        return {**state, "container": container.id}

    def _owned_image(self, spec: WorkspaceSpec) -> _Owned | None:
        """The owned image of the spec's image and owner, built or not; None when /workspace
        needs no owner (root, none) or the image is missing (the create says so)."""
        if not spec.owner or is_root(spec.owner):
            return None
        api = self._docker().api
        try:
            image_id = api.inspect_image(spec.image)["Id"]
        except docker.errors.ImageNotFound:
            return None
        ref = specs.owned_image_ref(image_id, spec.owner)
        try:
            api.inspect_image(ref)
            return _Owned(image_id, ref, exists=True)
        except docker.errors.ImageNotFound:
            return _Owned(image_id, ref, exists=False)

    async def _hand_over(self, spec: WorkspaceSpec, owned: _Owned) -> None:
        assert spec.owner is not None
        result = await self.exec(spec.id, ["/bin/sh", "-c", handover_script(spec.owner)], user="0")
        uid_gid = result.stdout.decode(errors="replace").strip()  # a group may be a name
        if result.exit_code != 0 or not re.fullmatch(r"\d+:[\w.-]+", uid_gid) or owned.ref in self._owned_builds:
            return  # a user the image does not know: the clone says so
        self._owned_builds.add(owned.ref)
        task = asyncio.create_task(self._build_owned(owned, uid_gid))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _build_owned(self, owned: _Owned, uid_gid: str) -> None:
        def build() -> None:
            try:
                self._docker().images.build(
                    fileobj=io.BytesIO(specs.owned_image_context(owned.source_id, uid_gid)), custom_context=True,
                    tag=owned.ref, labels={specs.LABEL_OWNED_FROM: owned.source_id}, rm=True, forcerm=True,
                    pull=False)
            except docker.errors.BuildError as exc:
                raise BackendError(f"The owned image could not be built: {exc.msg}") from exc
        try:
            await self._run(build)
        except BackendError as exc:  # the next workspaces of the image are handed over by an exec
            log.warning("image %s for its workspace user: %s", owned.source_id, exc.message)

    async def start_services(self, spec: WorkspaceSpec, state: dict[str, Any]) -> dict[str, Any]:
        if not spec.services:
            return state

        def start_all() -> list[tuple[ServiceRuntime, Container]]:
            started = []
            for service in spec.services:
                kwargs = specs.service_container_kwargs(spec, service)
                container, created = self._create_or_get(kwargs)
                if created and service.init_files:
                    container.put_archive("/", _tar(service.init_files))
                if container.status != "running":
                    container.start()
                started.append((service, container))
            return started

        started = await self._run(start_all)
        await asyncio.gather(*(self._wait_healthy(s, c) for s, c in started))
        for service, container in started:
            if service.init_commands:
                await self._run(self._run_init_commands, service, container)
        return {**state, "services": {s.name: c.id for s, c in started}}

    async def _wait_healthy(self, service: ServiceRuntime, container: Container) -> None:
        image_health = await self._run(lambda: (container.reload(), container.attrs["Config"].get("Healthcheck"))[1])
        budget = specs.health_budget(service, image_health)
        deadline = time.monotonic() + budget
        delay = 0.05
        while True:
            await self._run(container.reload)
            st = container.attrs["State"]
            if st["Status"] in {"exited", "dead"}:
                logs = await self._run(lambda: container.logs(tail=30).decode(errors="replace").strip())
                raise BackendError(f"Service {service.name!r} exited with code {st.get('ExitCode')}: "
                                   f"{logs[-1500:] or 'no output'}",
                                   hint="Fix the service in .taskspace/services.yaml and start the workspace again.")
            health = (st.get("Health") or {}).get("Status")
            if health in {None, "healthy"} and st["Status"] == "running":
                return
            if health == "unhealthy" or time.monotonic() > deadline:
                last = ((st.get("Health") or {}).get("Log") or [{}])[-1].get("Output", "").strip()
                raise BackendError(f"Service {service.name!r} did not become healthy within {budget:.0f}s"
                                   + (f": {last[-500:]}" if last else "."),
                                   hint="Check its healthcheck in .taskspace/services.yaml and its logs.")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _run_init_commands(self, service: ServiceRuntime, container: Container) -> None:
        try:
            container.get_archive(INIT_MARKER)
            return
        except docker.errors.NotFound:
            pass
        for argv in service.init_commands:
            code, output = container.exec_run(argv)
            if code != 0:
                text = output.decode(errors="replace").strip()[-1500:]
                raise BackendError(f"Init command {' '.join(argv)!r} of service {service.name!r} failed "
                                   f"with exit code {code}: {text}",
                                   hint="Fix it in .taskspace/services.yaml; it runs again on the next start.")
        container.put_archive("/", _tar({INIT_MARKER: b"done\n"}))

    async def stop(self, workspace_id: str, state: dict[str, Any]) -> dict[str, Any]:
        self.release_shell(workspace_id)

        def work() -> None:
            running = [c for c in self._owned_containers(workspace_id) if c.status in {"running", "restarting"}]
            # Stop the workspace first, then its services.
            running.sort(key=lambda c: c.labels.get(LABEL_ROLE) != "workspace")
            for container in running:
                try:
                    container.stop(timeout=self.config.stop_timeout)
                except docker.errors.NotFound:
                    pass
        await self._run(work)
        return state

    async def delete(self, workspace_id: str, state: dict[str, Any]) -> dict[str, Any]:
        self.release_shell(workspace_id)

        def work() -> None:
            client = self._docker()
            for container in self._owned_containers(workspace_id):
                try:
                    container.remove(force=True, v=True)
                except docker.errors.NotFound:
                    pass
            flt = specs.owned_filter(self.installation, workspace_id)
            for network in client.networks.list(filters=flt):
                try:
                    network.remove()
                except docker.errors.NotFound:
                    pass
            for volume in client.volumes.list(filters=flt):
                try:
                    volume.remove(force=True)
                except docker.errors.NotFound:
                    pass
        await self._run(work)
        return {}

    async def status(self, workspace_id: str, state: dict[str, Any]) -> WorkspaceStatus:
        def work() -> WorkspaceStatus:
            result = WorkspaceStatus(exists=False)
            for c in self._owned_containers(workspace_id):
                role = c.labels.get(LABEL_ROLE)
                if role == "workspace":
                    result.exists = True
                    result.running = c.status == "running"
                    result.started_at = _parse_time(c.attrs["State"].get("StartedAt"))
                elif role == "service":
                    health = (c.attrs["State"].get("Health") or {}).get("Status")
                    result.services[c.labels.get("taskspace.service", c.name)] = health or c.status
            return result
        return await self._run(work)

    # Inside the workspace --------------------------------------------------------------------

    def _exec_create(self, workspace_id: str, argv: list[str], user: str | None,
                     env: dict[str, str] | None, workdir: str | None) -> str:
        return self._docker().api.exec_create(
            specs.container_name(workspace_id), argv, user=user or "",
            environment=env or None, workdir=workdir)["Id"]

    async def exec(self, workspace_id: str, argv: list[str], *, user: str | None = None,
                   env: dict[str, str] | None = None, workdir: str | None = None,
                   timeout: float | None = None) -> ExecResult:
        def work() -> ExecResult:
            api = self._docker().api
            exec_id = self._exec_create(workspace_id, argv, user, env, workdir)
            out, err = api.exec_start(exec_id, demux=True)
            code = api.exec_inspect(exec_id)["ExitCode"]
            return ExecResult(exit_code=code if code is not None else -1, stdout=out or b"", stderr=err or b"")
        if timeout is None:
            return await self._run(work)
        try:
            return await asyncio.wait_for(self._run(work), timeout)
        except TimeoutError:
            raise BackendError(f"{argv[0]} did not finish within {timeout:.0f}s.",
                               hint="It keeps running in the workspace; look at it with a terminal.") from None

    async def exec_stream(self, workspace_id: str, argv: list[str], *, user: str | None = None,
                          env: dict[str, str] | None = None,
                          workdir: str | None = None) -> AsyncGenerator[ExecChunk | int, None]:
        def start() -> _Started:
            return self._exec_started(workspace_id, argv, user, env, workdir)
        async with aclosing(self._stream(start)) as items:
            async for item in items:
                yield item

    async def hold_shell(self, workspace_id: str, *, user: str | None = None) -> None:
        if workspace_id in self._held:
            return

        def work() -> _HeldShell:
            api = self._docker().api
            exec_id = api.exec_create(specs.container_name(workspace_id), ["/bin/sh", "-s"], stdin=True,
                                      user=user or "")["Id"]
            return _HeldShell(exec_id, user or "", api.exec_start(exec_id, socket=True))
        held = await self._run(work)
        if self._held.setdefault(workspace_id, held) is not held:
            held.close()

    async def shell_stream(self, workspace_id: str, script: str, *, user: str | None = None,
                           env: dict[str, str] | None = None) -> AsyncGenerator[ExecChunk | int, None]:
        held = self._held.pop(workspace_id, None)

        def start() -> _Started:
            if (held is not None and held.serves(user) and all(map(_SHELL_NAME.fullmatch, env or {}))
                    and self._still_waiting(workspace_id, held)):
                raw = held.raw()
                exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in (env or {}).items())
                try:
                    raw.settimeout(None)  # the script's output comes when it comes, as with an exec
                    # One compound command: the shell reads all of it before running any (a part
                    # of it runs nothing), and what it runs reads /dev/null, not the rest; then
                    # the shell ends with the script's code.
                    raw.sendall(f"{{\n{exports}{script}\n}} </dev/null\nexit $?\n".encode())
                except OSError as exc:  # the connection is gone: a new exec instead
                    log.info("the shell held in %s took no script (%s); a new exec runs it", workspace_id, exc)
                else:
                    if held.exec_id is None:
                        output = _FirstShellOutput(held.sock)
                        return _Started(output, lambda: output.code, held.close)
                    frames = docker.utils.socket.frames_iter(held.sock, tty=False)
                    return _Started((docker.utils.socket.demux_adaptor(*f) for f in frames),
                                    self._exit_code(held.exec_id), held.close)
            if held is not None:
                held.close()
            return self._exec_started(workspace_id, ["/bin/sh", "-c", script], user, env, None)
        async with aclosing(self._stream(start)) as items:
            async for item in items:
                yield item

    def _still_waiting(self, workspace_id: str, held: _HeldShell) -> bool:
        """Whether the held shell still runs: its exec, or the container's start it came with."""
        api = self._docker().api
        if held.exec_id is not None:
            return bool(api.exec_inspect(held.exec_id).get("Running"))
        state = api.inspect_container(specs.container_name(workspace_id))["State"]
        return bool(state.get("Running")) and state.get("StartedAt") == held.started_at

    def _exec_started(self, workspace_id: str, argv: list[str], user: str | None, env: dict[str, str] | None,
                      workdir: str | None) -> _Started:
        exec_id = self._exec_create(workspace_id, argv, user, env, workdir)
        return _Started(self._docker().api.exec_start(exec_id, stream=True, demux=True), self._exit_code(exec_id))

    def _exit_code(self, exec_id: str) -> Callable[[], int | None]:
        return lambda: self._docker().api.exec_inspect(exec_id)["ExitCode"]

    def release_shell(self, workspace_id: str) -> None:
        held = self._held.pop(workspace_id, None)
        if held is not None:
            held.close()

    async def _stream(self, start: Callable[[], _Started]) -> AsyncGenerator[ExecChunk | int, None]:
        """What ``start`` (run on a worker thread) started: its output as it comes, then its exit code."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[ExecChunk | int | BaseException] = asyncio.Queue()

        def pump() -> None:
            try:
                started = start()
                try:
                    for out, err in started.output:
                        if out:
                            loop.call_soon_threadsafe(queue.put_nowait, ExecChunk(stream="stdout", data=out))
                        if err:
                            loop.call_soon_threadsafe(queue.put_nowait, ExecChunk(stream="stderr", data=err))
                finally:
                    started.done()
                code = started.code()
                loop.call_soon_threadsafe(queue.put_nowait, code if code is not None else -1)
            except BaseException as exc:  # delivered to the consumer below
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        worker = asyncio.ensure_future(self._run(pump))
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    if isinstance(item, docker.errors.DockerException | OSError | ValueError):
                        raise BackendError(f"Running the command failed: {item}",
                                           hint="Check that the workspace is running.") from item
                    raise item
                yield item
                if isinstance(item, int):
                    break
        finally:
            await asyncio.shield(worker)

    # Reconciliation --------------------------------------------------------------------------

    async def list_owned(self) -> list[OwnedResource]:
        def work() -> list[OwnedResource]:
            client = self._docker()
            flt = specs.owned_filter(self.installation)
            found: list[OwnedResource] = []
            for c in client.api.containers(all=True, filters=flt):
                found.append(OwnedResource(
                    kind="container", name=c["Names"][0].lstrip("/"),
                    workspace_id=c["Labels"].get(LABEL_WORKSPACE, ""), role=c["Labels"].get(LABEL_ROLE, ""),
                    running=c["State"] == "running"))
            for v in client.api.volumes(filters=flt).get("Volumes") or []:
                found.append(OwnedResource(kind="volume", name=v["Name"],
                                           workspace_id=(v.get("Labels") or {}).get(LABEL_WORKSPACE, ""),
                                           role="volume"))
            for n in client.api.networks(filters=flt):
                found.append(OwnedResource(kind="network", name=n["Name"],
                                           workspace_id=(n.get("Labels") or {}).get(LABEL_WORKSPACE, ""),
                                           role="network"))
            return found
        return await self._run(work)

    async def remove_owned(self, resource: OwnedResource) -> None:
        def work() -> None:
            client = self._docker()
            try:
                if resource.kind == "container":
                    client.containers.get(resource.name).remove(force=True, v=True)
                elif resource.kind == "volume":
                    client.volumes.get(resource.name).remove(force=True)
                else:
                    client.networks.get(resource.name).remove()
            except docker.errors.NotFound:
                pass
        await self._run(work)

    # Capabilities ----------------------------------------------------------------------------

    async def read_file(self, workspace_id: str, path: str) -> bytes | None:
        def work() -> bytes | None:
            container = self._find(specs.container_name(workspace_id))
            if container is None:
                return None
            try:
                stream, _ = container.get_archive(path)
            except docker.errors.NotFound:
                return None
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                member = tar.next()
                if member is None or not member.isfile():
                    return None
                fh = tar.extractfile(member)
                return fh.read() if fh else None
        return await self._run(work)

    async def open_terminal(self, workspace_id: str, *, user: str | None, workdir: str, env: dict[str, str],
                            cols: int, rows: int) -> Terminal:
        def work() -> tuple[str, Any]:
            api = self._docker().api
            exec_id = api.exec_create(specs.container_name(workspace_id), ["/bin/sh", "-c", LOGIN_SHELL],
                                      stdin=True, tty=True, user=user or "", workdir=workdir,
                                      environment={"TERM": "xterm-256color", **env})["Id"]
            sock = api.exec_start(exec_id, socket=True, tty=True)
            raw = getattr(sock, "_sock", sock)
            raw.settimeout(None)
            api.exec_resize(exec_id, height=rows, width=cols)
            return exec_id, raw
        exec_id, raw = await self._run(work)
        return DockerTerminal(self, exec_id, raw)

    async def port_address(self, workspace_id: str, port: int) -> tuple[str, int]:
        def work() -> tuple[str, int]:
            container = self._find(specs.container_name(workspace_id))
            if container is None:
                raise BackendError("The workspace's container is gone.", hint="Start the workspace again.")
            networks = container.attrs["NetworkSettings"]["Networks"] or {}
            if "host" in networks or container.attrs["HostConfig"].get("NetworkMode") == "host":
                return "127.0.0.1", port
            for network in networks.values():
                if network.get("IPAddress"):
                    return network["IPAddress"], port
            raise BackendError("The workspace's container has no address.", hint="Start the workspace again.")
        return await self._run(work)

    def ide_uri(self, workspace_id: str, path: str) -> str:
        """VS Code's Dev Containers "attach to running container" link (the engine must be one
        the person's VS Code can reach: the local one, or DOCKER_HOST in their settings)."""
        target = {"containerName": "/" + specs.container_name(workspace_id)}
        if self.config.base_url and not self.config.base_url.startswith("unix://"):
            target["settings"] = {"host": self.config.base_url}  # type: ignore[assignment]
        encoded = json.dumps(target, separators=(",", ":")).encode().hex()
        return f"vscode://vscode-remote/attached-container+{encoded}{path}"

    async def ensure_local_base_image(self, log: LogSink) -> str:
        return await self._run(base_image.ensure_base_image, self._docker(), log=log)

    async def storage_path(self) -> str | None:
        """``DockerRootDir`` of the engine's info (one call)."""
        info = await self._run(lambda: self._docker().info())
        return info.get("DockerRootDir") or None

    def _running_workspaces(self, wanted: set[str]) -> list[tuple[str, str]]:
        """(workspace id, container id) of the running workspace containers of ``wanted``: one list call."""
        flt = specs.owned_filter(self.installation)
        flt["label"].append(f"{LABEL_ROLE}=workspace")
        return [(c["Labels"][LABEL_WORKSPACE], c["Id"])
                for c in self._docker().api.containers(filters={**flt, "status": ["running"]})
                if c["Labels"].get(LABEL_WORKSPACE) in wanted]

    async def _each(self, call: Callable[[str], T], container_ids: list[str], *, at_once: int) -> list[T]:
        """``call`` of each container, ``at_once`` in worker threads at a time, in order."""
        slots = asyncio.Semaphore(at_once)

        async def one(container_id: str) -> T:
            async with slots:
                return await self._run(call, container_id)

        return await asyncio.gather(*(one(container_id) for container_id in container_ids))

    async def sample(self, workspace_ids: list[str]) -> dict[str, ResourceStats]:
        """One list call, one disk-usage call (volumes' sizes), then a one-shot stats call per
        running workspace container, many at a time. A container that stopped in between is
        left out."""
        wanted = set(workspace_ids)

        def running() -> tuple[list[tuple[str, str]], dict[str, int | None]]:
            found = self._running_workspaces(wanted)
            if not found:
                return [], {}
            volumes = self._docker().api.df().get("Volumes") or []
            return found, {v["Name"]: (v.get("UsageData") or {}).get("Size") for v in volumes}

        def stats(container_id: str) -> dict[str, Any] | None:
            try:
                return self._docker().api.stats(container_id, stream=False, one_shot=True)
            except docker.errors.NotFound:
                return None

        containers, sizes = await self._run(running)
        # The engine answers a one-shot stats call at its next sampling tick (up to a second
        # later) whatever the load: the calls wait together rather than in turn.
        sampled = await self._each(stats, [container_id for _, container_id in containers], at_once=24)
        found = {}
        for (workspace_id, _), figures in zip(containers, sampled, strict=True):
            if figures is None:
                continue
            cpu = figures.get("cpu_stats") or {}
            size = sizes.get(specs.volume_name(workspace_id))
            found[workspace_id] = ResourceStats(
                memory_bytes=(figures.get("memory_stats") or {}).get("usage") or 0,
                cpu_total=(cpu.get("cpu_usage") or {}).get("total_usage"),
                cpu_system=cpu.get("system_cpu_usage"), online_cpus=cpu.get("online_cpus") or 1,
                disk_bytes=size if size is not None and size >= 0 else None)
        return found

    async def process_commands(self, workspace_ids: list[str]) -> dict[str, list[str]]:
        """One list call, then the engine's ``top`` of each running workspace container, a few
        at a time. A container that stopped in between is left out."""
        wanted = set(workspace_ids)

        def top(container_id: str) -> list[str] | None:
            try:
                listing = self._docker().api.top(container_id)
            except docker.errors.NotFound:
                return None
            except docker.errors.APIError as exc:
                if exc.status_code == 409:  # not running any more
                    return None
                raise
            titles = listing.get("Titles") or []
            column = next((i for i, t in enumerate(titles) if t in {"CMD", "COMMAND"}), len(titles) - 1)
            return [str(p[column]) for p in listing.get("Processes") or [] if 0 <= column < len(p)]

        containers = await self._run(self._running_workspaces, wanted)
        found = await self._each(top, [container_id for _, container_id in containers], at_once=8)
        return {workspace_id: commands for (workspace_id, _), commands in zip(containers, found, strict=True)
                if commands is not None}


class DockerTerminal(Terminal):
    """A hijacked exec connection. A thread of its own reads it (not the shared worker threads,
    which a few idle terminals would otherwise fill)."""

    def __init__(self, backend: DockerBackend, exec_id: str, sock: Any):
        self._backend, self._exec_id, self._sock = backend, exec_id, sock
        self._loop = asyncio.get_running_loop()
        self._output: asyncio.Queue[bytes] = asyncio.Queue()
        self._closed = False
        threading.Thread(target=self._pump, name=f"terminal-{exec_id[:12]}", daemon=True).start()

    def _pump(self) -> None:
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                data = b""
            self._loop.call_soon_threadsafe(self._output.put_nowait, data)
            if not data:
                return

    async def read(self) -> bytes:
        return await self._output.get()

    async def write(self, data: bytes) -> None:
        if not self._closed:
            await asyncio.to_thread(self._sock.sendall, data)

    async def resize(self, cols: int, rows: int) -> None:
        await self._backend._run(self._backend._docker().api.exec_resize, self._exec_id, height=rows, width=cols)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(2)
        except OSError:
            pass
        self._sock.close()


@dataclass(frozen=True)
class _Owned:
    source_id: str  # the image's id
    ref: str  # the image made from it with /workspace given to the workspace user
    exists: bool


def _tar(files: dict[str, bytes]) -> bytes:
    """A tar to unpack at ``/``: each absolute path with its parent directories."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirs: set[str] = set()
        for path, content in sorted(files.items()):
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            info = tarfile.TarInfo("/".join(parts))
            info.size, info.mode, info.mtime = len(content), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


__all__ = ["LABEL_INSTALLATION", "DockerBackend", "DockerBackendConfig"]
