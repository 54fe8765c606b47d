"""Pure builders: WorkspaceSpec → keyword arguments for the docker SDK. No I/O here."""

from __future__ import annotations

import hashlib
import io
import tarfile
from typing import Any

from docker.types import Healthcheck, Mount

from taskspace.core.environment import HealthCheck
from taskspace.plugins.backends.base import (
    LABEL_INSTALLATION,
    LABEL_ROLE,
    LABEL_SERVICE,
    LABEL_WORKSPACE,
    ServiceRuntime,
    WorkspaceSpec,
)

# PID 1 of a workspace is docker-init; this shell idles and exits at once on SIGTERM so that a
# stop takes milliseconds, not the engine's 10-second grace period.
KEEPALIVE = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"
_EXIT_WORD = "__taskspace_script_exit__"
#: Written on stdout and on stderr by a workspace container's first shell once its script
#: ended, followed by the script's exit code and a newline. It starts with a character that
#: output hardly has (ASCII's record separator), so that whatever precedes it is the script's.
SCRIPT_EXIT = f"\x1e{_EXIT_WORD} "
#: A workspace container's main process: first a shell that runs the script the server writes
#: to the container's stdin right after a start, so that the first command after a start needs
#: no exec; it says how the script ended on both streams, then KEEPALIVE (``$0``) keeps the
#: container running. Until a script comes, the shell waits (and a stop ends it at once).
FIRST_SHELL = (f'/bin/sh -s; code=$?; printf "\\036%s %s\\n" {_EXIT_WORD} "$code"; '
               f'printf "\\036%s %s\\n" {_EXIT_WORD} "$code" >&2; exec /bin/sh -c "$0"')
NANO = 1_000_000_000


def container_name(workspace_id: str) -> str:
    return f"ts-{workspace_id}"


def service_container_name(workspace_id: str, service: str) -> str:
    return f"ts-{workspace_id}-{service}"


def volume_name(workspace_id: str) -> str:
    return f"ts-{workspace_id}-workspace"


def network_name(spec_network: str, workspace_id: str) -> str:
    """The engine network a workspace joins: its own, the host's, or a shared one."""
    if spec_network == "per-workspace":
        return f"ts-{workspace_id}"
    return spec_network


def service_host(network: str, workspace_id: str, service: str) -> str:
    """How the workspace reaches a service: by name on its own network, loopback on the host
    network, the unique container name on a shared network (aliases would collide there)."""
    if network == "per-workspace":
        return service
    if network == "host":
        return "127.0.0.1"
    return service_container_name(workspace_id, service)


#: On an image made from another with /workspace given to a user: the other image's id.
LABEL_OWNED_FROM = "taskspace.owned-from"


def owned_image_ref(image_id: str, owner: str) -> str:
    """The name of ``image_id`` with /workspace given to ``owner``: a container made from it gets
    a new volume that is already the owner's (the engine copies the directory's owner into it)."""
    return "taskspace/owned:" + hashlib.sha256(f"{image_id}\0{owner}".encode()).hexdigest()[:20]


def owned_image_context(image_id: str, uid_gid: str) -> bytes:
    """The build context of :func:`owned_image_ref`: a COPY of a tree holding only ``workspace/``
    onto ``/``, which changes the owner of /workspace even where the image has it already (an
    entry below the destination, not the destination itself) and adds or runs nothing."""
    dockerfile = f"FROM {image_id}\nCOPY --chown={uid_gid} tree/ /\n".encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size, info.mode = len(dockerfile), 0o644
        tar.addfile(info, io.BytesIO(dockerfile))
        for name in ("tree", "tree/workspace"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
    return buf.getvalue()


def labels(spec: WorkspaceSpec, role: str, **extra: str) -> dict[str, str]:
    return {**spec.labels, LABEL_ROLE: role, **extra}


def owned_filter(installation: str, workspace_id: str | None = None) -> dict[str, list[str]]:
    wanted = [f"{LABEL_INSTALLATION}={installation}"]
    if workspace_id:
        wanted.append(f"{LABEL_WORKSPACE}={workspace_id}")
    return {"label": wanted}


def _network_kwargs(spec: WorkspaceSpec, alias: str | None) -> dict[str, Any]:
    if spec.network == "host":
        return {"network_mode": "host"}
    name = network_name(spec.network, spec.id)
    kwargs: dict[str, Any] = {"network": name}
    if alias and spec.network == "per-workspace":
        from docker.types import EndpointConfig

        kwargs["networking_config"] = {name: EndpointConfig(version="1.41", aliases=[alias])}
    return kwargs


def workspace_container_kwargs(spec: WorkspaceSpec) -> dict[str, Any]:
    mounts = [Mount(target="/workspace", source=volume_name(spec.id), type="volume")]
    mounts += [Mount(target=target, source=source, type="bind", read_only=True)
               for target, source in sorted(spec.read_only_binds.items())]
    for m in spec.mounts:
        if m.type == "volume":
            mounts.append(Mount(target=m.target, source=m.source, type="volume", read_only=m.read_only))
        else:
            mounts.append(Mount(target=m.target, source=None, type="tmpfs", read_only=m.read_only))
    kwargs: dict[str, Any] = {
        "image": spec.image,
        "name": container_name(spec.id),
        "labels": labels(spec, "workspace"),
        "environment": spec.env,
        "working_dir": spec.workdir,
        "entrypoint": ["/bin/sh", "-c", FIRST_SHELL, KEEPALIVE],
        "command": [],
        "stdin_open": True,
        "init": True,
        "detach": True,
        "mounts": mounts,
        "pids_limit": spec.pids_limit,
        "privileged": False,
        **_network_kwargs(spec, "workspace"),
    }
    if spec.network != "host":
        kwargs["hostname"] = spec.hostname
    if spec.user:
        kwargs["user"] = spec.user
    return kwargs | _limits(spec)


def _limits(spec: WorkspaceSpec) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if spec.cpus:
        limits["nano_cpus"] = int(spec.cpus * NANO)
    if spec.memory_bytes:
        limits["mem_limit"] = spec.memory_bytes
    return limits


def healthcheck(check: HealthCheck) -> Healthcheck:
    return Healthcheck(
        test=check.test,
        interval=int(check.interval_seconds * NANO),
        timeout=int(check.timeout_seconds * NANO),
        retries=check.retries,
        start_period=int(check.start_period_seconds * NANO),
    )


def service_container_kwargs(spec: WorkspaceSpec, service: ServiceRuntime) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "image": service.image,
        "name": service_container_name(spec.id, service.name),
        "labels": labels(spec, "service", **{LABEL_SERVICE: service.name}),
        "environment": service.env,
        "detach": True,
        # A server as PID 1 often ignores SIGTERM; docker-init forwards it so a stop is quick.
        "init": True,
        "privileged": False,
        "pids_limit": spec.pids_limit,
        **_limits(spec),
        **_network_kwargs(spec, service.name),
    }
    if service.command:
        kwargs["command"] = service.command
    if service.healthcheck:
        kwargs["healthcheck"] = healthcheck(service.healthcheck)
    if spec.network != "host":
        kwargs["hostname"] = service.name
    return kwargs


def health_budget(service: ServiceRuntime, image_health: dict[str, Any] | None) -> float:
    """Seconds to wait for a service to become healthy before giving up."""
    if service.healthcheck:
        c = service.healthcheck
        return c.start_period_seconds + (c.interval_seconds + c.timeout_seconds) * (c.retries + 1)
    if image_health:
        interval = (image_health.get("Interval") or 30 * NANO) / NANO
        timeout = (image_health.get("Timeout") or 30 * NANO) / NANO
        start = (image_health.get("StartPeriod") or 0) / NANO
        return start + (interval + timeout) * ((image_health.get("Retries") or 3) + 1)
    return 0.0
