"""The plan of a workspace: what preflight decided from the primary repository's own files.

Stored as JSON on the workspace so every later step (and every restart of the server) works
from the same decisions. Pure functions here; the reading of files happens in preflight.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, Field

from taskspace.core.environment import (
    DockerBuild,
    DockerfileSummary,
    EnvironmentConfig,
    EnvironmentSummary,
    ServiceDecl,
)
from taskspace.core.services_spec import resolve_publish
from taskspace.core.workspace_scripts import MIRRORS_DIR, WORKSPACE
from taskspace.plugins.backends.base import (
    LABEL_INSTALLATION,
    LABEL_TICKET,
    LABEL_WORKSPACE,
    ServiceRuntime,
    WorkspaceSpec,
)

RECIPE_VERSION = "1"


class ImagePlan(BaseModel):
    ref: str = Field(description="The content-addressed tag to build, or the image to pull")
    build: DockerBuild | None = None
    repo: str = Field(description="Repository holding the build context")
    commit: str
    context_tree: str | None = None
    bases: list[str] = Field(default_factory=list, description="Images the build starts FROM")

    @property
    def needed(self) -> list[str]:
        """Images that must come from the engine or a registry."""
        return self.bases if self.build else [self.ref]


class ServicePlan(BaseModel):
    decl: ServiceDecl
    image: ImagePlan


class Plan(BaseModel):
    primary: str
    commit: str = Field(description="Commit of the primary repository the environment came from")
    environment: EnvironmentConfig
    image: ImagePlan
    services: list[ServicePlan] = Field(default_factory=list)
    mirrors: dict[str, str] = Field(default_factory=dict, description="Repository name → host mirror path")


def image_tag(project_key: str, *, dockerfile: str, dockerfile_text: bytes, context_tree: str,
              build: DockerBuild, role: str = "workspace") -> str:
    """A tag that changes exactly when the Dockerfile, the build context or the args change."""
    digest = hashlib.sha256()
    for part in (RECIPE_VERSION, role, dockerfile, context_tree, json.dumps(build.args, sort_keys=True),
                 build.target or ""):
        digest.update(part.encode() + b"\0")
    digest.update(dockerfile_text)
    name = project_key.lower() if role == "workspace" else f"{project_key.lower()}-{role}"
    return f"taskspace/{name}:{digest.hexdigest()[:16]}"


def summarize(plan: Plan, dockerfile: DockerfileSummary | None) -> EnvironmentSummary:
    env = plan.environment
    names = set(env.container_env) | set(env.remote_env)
    for service in plan.services:
        names |= set(service.decl.publish)
    if dockerfile:
        names |= set(dockerfile.env_names)
    return EnvironmentSummary(
        source=env.source,
        config_path=env.config_path,
        image=plan.image.ref,
        base_images=dockerfile.base_images if dockerfile else [plan.image.ref],
        exposed_ports=dockerfile.exposed_ports if dockerfile else [],
        env_names=sorted(names),
        workdir=dockerfile.workdir if dockerfile else None,
        user=env.remote_user or env.container_user or (dockerfile.user if dockerfile else None),
        forward_ports=env.forward_ports,
        services=[s.decl.name for s in plan.services],
        warnings=env.warnings,
    )


def container_env(plan: Plan, *, hosts: dict[str, str], workspace_id: str, ticket: str, branch: str,
                  primary: str) -> dict[str, str]:
    """The workspace's environment: what each service publishes (``${host}`` resolved through
    ``hosts``), devcontainer.json's containerEnv over that, and taskspace's own ``TASKSPACE_*``
    variables, which nothing overrides."""
    env: dict[str, str] = {}
    for service in plan.services:
        env.update(resolve_publish(service.decl, hosts[service.decl.name]))
    env.update(plan.environment.container_env)
    env.update({"TASKSPACE_WORKSPACE": workspace_id, "TASKSPACE_PRIMARY_REPO": f"{WORKSPACE}/{primary}",
                **ticket_env(ticket, branch)})
    return env


def ticket_env(ticket: str | None, branch: str | None) -> dict[str, str]:
    """The ticket's variables. A workspace of the warm pool was created before it had a ticket, so
    its container lacks them: every command taskspace runs in a workspace gets them this way."""
    return {"TASKSPACE_TICKET": ticket, "TASKSPACE_BRANCH": branch or ""} if ticket else {}


def command_env(plan: Plan, *, ticket: str | None, branch: str | None) -> dict[str, str]:
    """The environment of a command run in the workspace as its user: remoteEnv, then the ticket's."""
    return {**plan.environment.remote_env, **ticket_env(ticket, branch)}


def scoped_volume(project_key: str, source: str) -> str:
    """devcontainer volumes are shared by a project's workspaces, never across projects."""
    return f"ts-{project_key.lower()}-{source}"


def workspace_spec(plan: Plan, *, workspace_id: str, installation: str, project_key: str, ticket: str,
                   branch: str, network: str, hosts: dict[str, str], pids_limit: int | None,
                   cpus: float | None = None, memory_bytes: int | None = None,
                   services: list[ServiceRuntime] | None = None, owner: str | None = None) -> WorkspaceSpec:
    env_config = plan.environment
    mounts = [m.model_copy(update={"source": scoped_volume(project_key, m.source)})
              if m.type == "volume" and m.source else m for m in env_config.mounts]
    return WorkspaceSpec(
        id=workspace_id,
        # A spare has no ticket yet and keeps this name once claimed: a container's name is fixed.
        hostname=ticket.lower() if ticket else f"{project_key.lower()}-{workspace_id[:6]}",
        image=plan.image.ref,
        labels={LABEL_WORKSPACE: workspace_id, LABEL_INSTALLATION: installation, LABEL_TICKET: ticket},
        env=container_env(plan, hosts=hosts, workspace_id=workspace_id, ticket=ticket, branch=branch,
                          primary=plan.primary),
        user=env_config.container_user,
        owner=owner,
        workdir=f"{WORKSPACE}/{plan.primary}",
        network=network,
        read_only_binds={f"{MIRRORS_DIR}/{name}.git": path for name, path in plan.mirrors.items()},
        mounts=mounts,
        services=services or [],
        pids_limit=pids_limit,
        cpus=cpus,
        memory_bytes=memory_bytes,
    )


def exec_user(plan: Plan) -> str | None:
    return plan.environment.remote_user or plan.environment.container_user


def dump(plan: Plan) -> dict[str, Any]:
    return plan.model_dump(mode="json")


def pool_key(plan: Plan, *, workspace_id: str, shape: dict[str, Any]) -> str:
    """What a workspace of the warm pool must share with a launch to serve it: the image, the
    environment, the services, the repositories (by mirror) and ``shape`` (what else the
    container was made with: limits, network, the services' init files). The workspace's id,
    which devcontainer.json can use as ``${devcontainerId}``, is left out."""
    document = {
        "recipe": RECIPE_VERSION,
        "image": plan.image.ref,
        "environment": plan.environment.model_dump(mode="json"),
        "services": [[s.decl.model_dump(mode="json"), s.image.ref] for s in plan.services],
        "repos": plan.mirrors,
        "shape": shape,
    }
    text = json.dumps(document, sort_keys=True).replace(workspace_id, "${devcontainerId}")
    return hashlib.sha256(text.encode()).hexdigest()


def rebind(plan: dict[str, Any], old_id: str, new_id: str) -> dict[str, Any]:
    """A plan decided for workspace ``old_id``, for ``new_id`` (only ``${devcontainerId}`` differs)."""
    return json.loads(json.dumps(plan).replace(old_id, new_id))
