"""What a workspace runs: the environment resolved from a repository's own files.

Parsers for ``devcontainer.json``, Dockerfiles and ``.taskspace/services.yaml`` produce these
models; the provisioning service turns them into backend specs. All paths here are relative to
the primary repository's root, POSIX style, and never escape it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

#: A lifecycle command as devcontainer.json allows it: a shell string, an argv list, or several
#: named commands of either form that run in parallel.
Command = str | list[str]


class LifecycleCommand(BaseModel):
    """One or several commands. An unnamed command is stored under the key ``""``."""

    commands: dict[str, Command] = Field(description="Command name → shell string or argv list")


class MountSpec(BaseModel):
    type: Literal["volume", "tmpfs"]
    source: str | None = Field(None, description="Volume name (shared by the project's workspaces)")
    target: str = Field(description="Absolute path in the container")
    read_only: bool = False


class DockerBuild(BaseModel):
    dockerfile: str = Field(description="Dockerfile path, relative to the repository root")
    context: str = Field(".", description="Build context directory, relative to the repository root")
    args: dict[str, str] = Field(default_factory=dict)
    target: str | None = None


class EnvironmentConfig(BaseModel):
    """The workspace container as the primary repository describes it."""

    source: Literal["dockerfile", "devcontainer"]
    config_path: str = Field(description="The file this came from, e.g. .devcontainer/devcontainer.json")
    image: str | None = Field(None, description="A ready image to run instead of building one")
    build: DockerBuild | None = None
    container_env: dict[str, str] = Field(default_factory=dict)
    remote_env: dict[str, str] = Field(default_factory=dict)
    #: onCreateCommand and updateContentCommand run once, before postCreateCommand; in a workspace
    #: of the warm pool they run while it waits to be claimed (see services.pool).
    on_create: LifecycleCommand | None = None
    update_content: LifecycleCommand | None = None
    post_create: LifecycleCommand | None = None
    post_start: LifecycleCommand | None = None
    forward_ports: list[int | str] = Field(default_factory=list)
    mounts: list[MountSpec] = Field(default_factory=list)
    container_user: str | None = None
    remote_user: str | None = None
    warnings: list[str] = Field(default_factory=list, description="Settings seen but not honoured")


class Stage(BaseModel):
    name: str | None
    base_image: str


class DockerfileSummary(BaseModel):
    """What a person wants to see of a Dockerfile (the final stage unless said otherwise)."""

    stages: list[Stage]
    uses_context: bool = Field(True, description="Whether any step reads the build context (COPY, ADD)")
    exposed_ports: list[str] = Field(default_factory=list)
    env_names: list[str] = Field(default_factory=list)
    workdir: str | None = None
    user: str | None = None

    @property
    def base_images(self) -> list[str]:
        return [s.base_image for s in self.stages]

    @property
    def external_images(self) -> list[str]:
        """Base images that come from outside the file (not an earlier stage, not scratch)."""
        found: list[str] = []
        names: set[str] = set()
        for stage in self.stages:
            base = stage.base_image
            if base.lower() not in names and base.lower() != "scratch" and base not in found:
                found.append(base)
            if stage.name:
                names.add(stage.name.lower())
        return found


class HealthCheck(BaseModel):
    test: list[str] = Field(description='Docker form: ["CMD", ...] or ["CMD-SHELL", "..."]')
    interval_seconds: float = 1.0
    timeout_seconds: float = 5.0
    retries: int = 60
    start_period_seconds: float = 0.0


class InitFile(BaseModel):
    source: str = Field(description="Path in the primary repository")
    target: str = Field(description="Absolute path in the service container")


class ServiceDecl(BaseModel):
    """A dependency declared in ``.taskspace/services.yaml``."""

    name: str
    image: str | None = None
    build: DockerBuild | None = None
    env: dict[str, str] = Field(default_factory=dict)
    command: list[str] | None = None
    ports: list[int] = Field(default_factory=list)
    healthcheck: HealthCheck | None = None
    init_files: list[InitFile] = Field(default_factory=list)
    init_commands: list[list[str]] = Field(
        default_factory=list, description="Run once in the service after it is healthy"
    )
    publish: dict[str, str] = Field(
        default_factory=dict, description="Env vars for the workspace; ${host} is the service's host name"
    )


class EnvironmentSummary(BaseModel):
    """Stored with the workspace and shown to people; never holds secret values."""

    source: Literal["dockerfile", "devcontainer"]
    config_path: str
    image: str
    base_images: list[str] = Field(default_factory=list)
    exposed_ports: list[str] = Field(default_factory=list)
    env_names: list[str] = Field(default_factory=list)
    workdir: str | None = None
    user: str | None = None
    forward_ports: list[int | str] = Field(default_factory=list)
    services: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
