"""The backend contract: where workspaces run.

A backend is a small abstract class checked when a subclass is defined. It receives typed
config and pure specs, keeps whatever it needs in an opaque JSON ``state`` that the caller
stores, and never sees the database. Every method is idempotent: creating what exists, stopping
what is stopped and deleting what is gone all succeed. Engine resources carry the labels in
``WorkspaceSpec.labels`` (at least ``taskspace.workspace`` and ``taskspace.installation``) so
``list_owned`` can find them in one call.

Optional features are capability mixins found with ``issubclass`` (see ``SupportsStats``).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from taskspace.core.environment import HealthCheck, MountSpec

LABEL_WORKSPACE = "taskspace.workspace"
LABEL_INSTALLATION = "taskspace.installation"
LABEL_ROLE = "taskspace.role"
LABEL_SERVICE = "taskspace.service"
LABEL_TICKET = "taskspace.ticket"

LogSink = Callable[[str], None]


class BackendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegistryAuth(BaseModel):
    """Service credentials for one container registry."""

    username: str
    password: SecretStr


class ImageSpec(BaseModel):
    """An image to build from a context directory on the server's disk."""

    tag: str = Field(description="Content-addressed reference to produce, e.g. taskspace/pay:3f2a…")
    context_dir: str = Field(description="Host path of the build context")
    dockerfile: str = Field(description="Dockerfile path relative to the context, or absolute")
    build_args: dict[str, str] = Field(default_factory=dict)
    target: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class ServiceRuntime(BaseModel):
    """A dependency container, its image already present on the engine."""

    name: str
    image: str
    env: dict[str, str] = Field(default_factory=dict)
    command: list[str] | None = None
    healthcheck: HealthCheck | None = None
    init_files: dict[str, bytes] = Field(default_factory=dict, description="Absolute target path → content")
    init_commands: list[list[str]] = Field(default_factory=list)


class WorkspaceSpec(BaseModel):
    """Everything a backend needs to create a workspace. Built by a pure function from the plan."""

    id: str
    hostname: str
    image: str
    labels: dict[str, str]
    env: dict[str, str] = Field(default_factory=dict)
    user: str | None = None
    #: Who works in /workspace (devcontainer.json's remoteUser or containerUser, the Dockerfile's
    #: USER, as Docker's ``--user`` takes it): a new workspace's /workspace is theirs before the
    #: first command runs. None or root: left as the engine makes it.
    owner: str | None = None
    workdir: str = "/workspace"
    network: str = "per-workspace"
    read_only_binds: dict[str, str] = Field(default_factory=dict, description="Container path → host path")
    mounts: list[MountSpec] = Field(default_factory=list)
    services: list[ServiceRuntime] = Field(default_factory=list)
    pids_limit: int | None = 4096
    cpus: float | None = None
    memory_bytes: int | None = None


class ExecResult(BaseModel):
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""

    @property
    def output(self) -> str:
        return (self.stdout + self.stderr).decode(errors="replace")


class ExecChunk(BaseModel):
    stream: Literal["stdout", "stderr"]
    data: bytes


class WorkspaceStatus(BaseModel):
    exists: bool
    running: bool = False
    started_at: datetime | None = None
    services: dict[str, str] = Field(default_factory=dict, description="Service name → engine status")


class OwnedResource(BaseModel):
    kind: Literal["container", "volume", "network"]
    name: str
    workspace_id: str
    role: str
    running: bool = False
    started_at: datetime | None = None


class ResourceStats(BaseModel):
    """One reading of a workspace's resource use. CPU is cumulative (nanoseconds of CPU time and
    of the host's time): a percentage needs two readings."""

    memory_bytes: int
    cpu_total: int | None = None
    cpu_system: int | None = None
    online_cpus: int = 1
    disk_bytes: int | None = None


class Backend(ABC):
    """Base class of workspace backends. Subclasses must implement every abstract method."""

    name: ClassVar[str]
    config_model: ClassVar[type[BackendConfig]] = BackendConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if inspect.isabstract(cls):
            return
        if not getattr(cls, "name", None):
            raise TypeError(f"{cls.__name__} must set a short `name`")
        for method in ("has_image", "ensure_image", "pull_image", "prepare", "start_workspace",
                       "start_services", "stop", "delete", "status", "exec", "list_owned", "remove_owned"):
            if not inspect.iscoroutinefunction(getattr(cls, method)):
                raise TypeError(f"{cls.__name__}.{method} must be `async def`")
        if not inspect.isasyncgenfunction(cls.exec_stream):
            raise TypeError(f"{cls.__name__}.exec_stream must be an async generator")

    def __init__(self, config: BackendConfig, *, installation: str):
        self.config = config
        self.installation = installation

    def service_host(self, network: str, workspace_id: str, service: str) -> str:
        """The host name under which a workspace reaches one of its services."""
        return service

    # Images ----------------------------------------------------------------------------------

    @abstractmethod
    async def has_image(self, ref: str) -> bool:
        """Whether the engine already holds ``ref``."""

    @abstractmethod
    async def ensure_image(self, spec: ImageSpec, log: LogSink) -> bool:
        """Build ``spec.tag`` unless the engine has it. Returns True when a build ran.
        Build output goes to ``log`` line by line; a failed build raises BackendError."""

    @abstractmethod
    async def pull_image(self, ref: str, log: LogSink) -> None:
        """Make ``ref`` present (pull it from its registry when missing)."""

    # Lifecycle -------------------------------------------------------------------------------

    @abstractmethod
    async def prepare(self, spec: WorkspaceSpec, state: dict[str, Any]) -> dict[str, Any]:
        """Create the workspace's volume and network. Returns the new state."""

    @abstractmethod
    async def start_workspace(self, spec: WorkspaceSpec, state: dict[str, Any]) -> dict[str, Any]:
        """Create the workspace container if missing, and start it if not running. A container
        it creates has /workspace given to ``spec.owner`` (a user the image does not know is
        left alone: the clone then says which user it runs as)."""

    @abstractmethod
    async def start_services(self, spec: WorkspaceSpec, state: dict[str, Any]) -> dict[str, Any]:
        """Create and start the dependency services and wait until each is healthy.
        Init files are copied before a service's first start; init commands run once."""

    @abstractmethod
    async def stop(self, workspace_id: str, state: dict[str, Any]) -> dict[str, Any]:
        """Stop the workspace container and its services; keep all data."""

    @abstractmethod
    async def delete(self, workspace_id: str, state: dict[str, Any]) -> dict[str, Any]:
        """Remove containers, services, network and volume. Missing resources are fine."""

    @abstractmethod
    async def status(self, workspace_id: str, state: dict[str, Any]) -> WorkspaceStatus:
        """What the engine says about the workspace right now."""

    # Inside the workspace --------------------------------------------------------------------

    @abstractmethod
    async def exec(
        self,
        workspace_id: str,
        argv: list[str],
        *,
        user: str | None = None,
        env: dict[str, str] | None = None,
        workdir: str | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run ``argv`` in the running workspace container and collect its output."""

    @abstractmethod
    def exec_stream(
        self,
        workspace_id: str,
        argv: list[str],
        *,
        user: str | None = None,
        env: dict[str, str] | None = None,
        workdir: str | None = None,
    ) -> AsyncGenerator[ExecChunk | int, None]:
        """Run ``argv`` and yield output chunks as they come, then the exit code (an int)."""

    # Reconciliation --------------------------------------------------------------------------

    @abstractmethod
    async def list_owned(self) -> list[OwnedResource]:
        """Every resource of this installation, in one call to the engine."""

    @abstractmethod
    async def remove_owned(self, resource: OwnedResource) -> None:
        """Remove one resource found by ``list_owned`` (orphan clean-up)."""


class SupportsStats(ABC):
    """Capability: resource use of running workspaces."""

    @abstractmethod
    async def sample(self, workspace_ids: list[str]) -> dict[str, ResourceStats]:
        """One reading for each running workspace of ``workspace_ids`` (others are left out),
        with a bounded number of engine calls (not a slow streaming read per container)."""


class SupportsProcessList(ABC):
    """Capability: the processes running in workspace containers (to see an attached IDE)."""

    @abstractmethod
    async def process_commands(self, workspace_ids: list[str]) -> dict[str, list[str]]:
        """The command line of every process in each running workspace container of
        ``workspace_ids`` (others are left out), with one engine call per running container."""


class SupportsHeldShell(ABC):
    """Capability: a shell started ahead of time in a running workspace, waiting for the one
    script it will run, so that the command does not wait for the engine to start a process
    (tens of milliseconds with runc). A spare of the warm pool holds one for the launch that
    claims it; a backend may also hold one of its own making, e.g. in a container it has just
    started, for the first command after the start."""

    @abstractmethod
    async def hold_shell(self, workspace_id: str, *, user: str | None = None) -> None:
        """Start ``/bin/sh`` as ``user`` in the running workspace, reading its script from
        stdin, and keep it until ``shell_stream`` uses it or the workspace stops (a second call
        for a workspace that holds one does nothing)."""

    @abstractmethod
    def shell_stream(self, workspace_id: str, script: str, *, user: str | None = None,
                     env: dict[str, str] | None = None) -> AsyncGenerator[ExecChunk | int, None]:
        """``exec_stream`` of ``/bin/sh -c script``, in the shell held for the workspace when it
        holds one for ``user`` that is still running (``env`` exported first, stdin /dev/null),
        else in a new exec."""

    @abstractmethod
    def release_shell(self, workspace_id: str) -> None:
        """Let go of the shell held for the workspace, if any (one of ``hold_shell`` reads the
        end of its input and exits)."""


class SupportsStoragePath(ABC):
    """Capability: where the engine keeps images, containers and volumes (for disk alerts)."""

    @abstractmethod
    async def storage_path(self) -> str | None:
        """The engine's data directory as the engine names it (e.g. ``/var/lib/docker``), or
        None when it does not say. It may be on another host: the caller checks it exists."""


class SupportsFileRead(ABC):
    """Capability: read a file from a workspace's volume, also while it is stopped."""

    @abstractmethod
    async def read_file(self, workspace_id: str, path: str) -> bytes | None: ...


class ChecksImages(ABC):
    """Capability: tell, before anything is created, whether an image can be had."""

    @abstractmethod
    async def image_problem(self, ref: str) -> str | None:
        """None when the engine has ``ref`` or its registry serves the manifest (with the
        configured credentials); else the reason in plain words."""


class Terminal(ABC):
    """An interactive shell with a pseudo-terminal in a running workspace."""

    @abstractmethod
    async def read(self) -> bytes:
        """The next output; b"" once the shell has ended."""

    @abstractmethod
    async def write(self, data: bytes) -> None: ...

    @abstractmethod
    async def resize(self, cols: int, rows: int) -> None: ...

    @abstractmethod
    async def close(self) -> None:
        """End the shell (idempotent)."""


class SupportsTerminal(ABC):
    """Capability: an interactive shell in a workspace."""

    @abstractmethod
    async def open_terminal(self, workspace_id: str, *, user: str | None, workdir: str, env: dict[str, str],
                            cols: int, rows: int) -> Terminal: ...


class SupportsPorts(ABC):
    """Capability: where the server reaches a port of a workspace (for its proxy)."""

    @abstractmethod
    async def port_address(self, workspace_id: str, port: int) -> tuple[str, int]: ...


class SupportsIdeAttach(ABC):
    """Capability: a link that opens a local VS Code attached to the workspace's container."""

    @abstractmethod
    def ide_uri(self, workspace_id: str, path: str) -> str: ...


class SupportsLocalBaseImage(ABC):
    """Capability: build a minimal Debian base image (with git) without any registry."""

    @abstractmethod
    async def ensure_local_base_image(self, log: LogSink) -> str:
        """The image reference; BackendError when this host cannot build it."""
