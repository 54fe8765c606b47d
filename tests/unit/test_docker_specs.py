"""Pure builders of the docker backend: WorkspaceSpec → keyword arguments of the docker SDK."""

from __future__ import annotations

import pytest
from docker.models.containers import _create_container_args
from docker.types import Healthcheck, Mount

from taskspace.core.environment import HealthCheck, MountSpec
from taskspace.plugins.backends.base import (
    LABEL_INSTALLATION,
    LABEL_ROLE,
    LABEL_SERVICE,
    LABEL_TICKET,
    LABEL_WORKSPACE,
    ServiceRuntime,
    WorkspaceSpec,
)
from taskspace.plugins.backends.docker import specs

NANO = 1_000_000_000
LABELS = {LABEL_WORKSPACE: "w1", LABEL_INSTALLATION: "inst-a", LABEL_TICKET: "PAY-12"}
MIRRORS = {"/opt/taskspace/mirrors/web.git": "/srv/mirrors/cd34.git",
           "/opt/taskspace/mirrors/api.git": "/srv/mirrors/ab12.git"}
DB = ServiceRuntime(
    name="db",
    image="postgres:16",
    env={"POSTGRES_PASSWORD": "dev"},
    command=["postgres", "-c", "fsync=off"],
    healthcheck=HealthCheck(test=["CMD-SHELL", "pg_isready"], interval_seconds=0.5, timeout_seconds=2,
                            retries=10, start_period_seconds=1.25),
)
CACHE = ServiceRuntime(name="cache", image="redis:7")
FORBIDDEN_KEYS = {"cap_add", "devices", "pid_mode", "ipc_mode", "userns_mode", "security_opt", "volumes",
                  "volumes_from", "device_requests", "sysctls"}


def make_spec(**changes) -> WorkspaceSpec:
    fields = {
        "id": "w1",
        "hostname": "pay-12",
        "image": "taskspace/pay:0123456789abcdef",
        "labels": LABELS,
        "env": {"TASKSPACE_TICKET": "PAY-12"},
        "user": "vscode",
        "workdir": "/workspace/api",
        "network": "per-workspace",
        "read_only_binds": MIRRORS,
        "mounts": [
            MountSpec(type="volume", source="ts-pay-node-modules", target="/workspace/api/node_modules"),
            MountSpec(type="volume", source="ts-pay-cache", target="/cache", read_only=True),
            MountSpec(type="tmpfs", target="/tmp/scratch"),
        ],
        "services": [DB, CACHE],
        "pids_limit": 2048,
    }
    fields.update(changes)
    return WorkspaceSpec(**fields)


def engine_args(kwargs: dict) -> dict:
    """What the docker SDK sends to the engine for these kwargs (``containers.create``)."""
    args = {k: v for k, v in kwargs.items() if k != "detach"}
    return _create_container_args({**args, "version": "1.45"})


# --------------------------------------------------------------------------------------------
# Names


def test_names():
    assert specs.container_name("w1") == "ts-w1"
    assert specs.service_container_name("w1", "db") == "ts-w1-db"
    assert specs.volume_name("w1") == "ts-w1-workspace"


@pytest.mark.parametrize(
    ("network", "name"), [("per-workspace", "ts-w1"), ("host", "host"), ("team-net", "team-net")]
)
def test_network_name(network, name):
    assert specs.network_name(network, "w1") == name


@pytest.mark.parametrize(
    ("network", "host"), [("per-workspace", "db"), ("host", "127.0.0.1"), ("team-net", "ts-w1-db")]
)
def test_service_host(network, host):
    assert specs.service_host(network, "w1", "db") == host


def test_on_a_shared_network_the_service_host_is_the_service_container_name():
    spec = make_spec(network="team-net")

    kwargs = specs.service_container_kwargs(spec, DB)

    assert kwargs["name"] == specs.service_host("team-net", "w1", "db")
    assert specs.service_host("team-net", "w1", "db") != specs.service_host("team-net", "w2", "db")


def test_owned_filter():
    assert specs.owned_filter("inst-a") == {"label": [f"{LABEL_INSTALLATION}=inst-a"]}
    assert specs.owned_filter("inst-a", "w1") == {
        "label": [f"{LABEL_INSTALLATION}=inst-a", f"{LABEL_WORKSPACE}=w1"]
    }


# --------------------------------------------------------------------------------------------
# The workspace container


def test_workspace_container_kwargs():
    kwargs = specs.workspace_container_kwargs(make_spec())

    assert kwargs["image"] == "taskspace/pay:0123456789abcdef"
    assert kwargs["name"] == "ts-w1"
    assert kwargs["labels"] == {**LABELS, LABEL_ROLE: "workspace"}
    assert kwargs["environment"] == {"TASKSPACE_TICKET": "PAY-12"}
    assert kwargs["working_dir"] == "/workspace/api"
    # The first shell waits on stdin for the script the server writes after a start, then KEEPALIVE ($0).
    assert kwargs["entrypoint"] == ["/bin/sh", "-c", specs.FIRST_SHELL, specs.KEEPALIVE]
    assert kwargs["stdin_open"] is True
    assert kwargs["command"] == []
    assert kwargs["init"] is True
    assert kwargs["detach"] is True
    assert kwargs["privileged"] is False
    assert kwargs["pids_limit"] == 2048
    assert kwargs["user"] == "vscode"
    assert kwargs["hostname"] == "pay-12"
    assert not FORBIDDEN_KEYS & set(kwargs)
    assert "nano_cpus" not in kwargs
    assert "mem_limit" not in kwargs


def test_workspace_mounts():
    mounts = specs.workspace_container_kwargs(make_spec())["mounts"]

    assert mounts == [
        Mount(target="/workspace", source="ts-w1-workspace", type="volume"),
        Mount(target="/opt/taskspace/mirrors/api.git", source="/srv/mirrors/ab12.git", type="bind", read_only=True),
        Mount(target="/opt/taskspace/mirrors/web.git", source="/srv/mirrors/cd34.git", type="bind", read_only=True),
        Mount(target="/workspace/api/node_modules", source="ts-pay-node-modules", type="volume"),
        Mount(target="/cache", source="ts-pay-cache", type="volume", read_only=True),
        Mount(target="/tmp/scratch", source=None, type="tmpfs"),
    ]


def test_the_only_binds_are_the_read_only_mirrors_and_no_docker_socket():
    kwargs = specs.workspace_container_kwargs(make_spec())

    binds = [m for m in kwargs["mounts"] if m["Type"] == "bind"]
    assert {m["Target"] for m in binds} == set(MIRRORS)
    assert all(m["ReadOnly"] for m in binds)
    for m in kwargs["mounts"]:
        assert "docker.sock" not in str(m["Source"]) and "docker.sock" not in m["Target"]
    host_config = engine_args(kwargs)["host_config"]
    assert "Binds" not in host_config
    assert not host_config.get("Privileged")


def test_a_workspace_without_user_and_extras():
    kwargs = specs.workspace_container_kwargs(make_spec(user=None, read_only_binds={}, mounts=[]))

    assert "user" not in kwargs
    assert kwargs["mounts"] == [Mount(target="/workspace", source="ts-w1-workspace", type="volume")]


def test_cpu_and_memory_limits():
    kwargs = specs.workspace_container_kwargs(make_spec(cpus=1.5, memory_bytes=2 * 1024**3))

    assert kwargs["nano_cpus"] == 1_500_000_000
    assert isinstance(kwargs["nano_cpus"], int)
    assert kwargs["mem_limit"] == 2 * 1024**3


def test_workspace_on_the_host_network_has_no_hostname_or_alias():
    kwargs = specs.workspace_container_kwargs(make_spec(network="host"))

    assert kwargs["network_mode"] == "host"
    assert "hostname" not in kwargs
    assert "network" not in kwargs
    assert "networking_config" not in kwargs
    assert engine_args(kwargs)["host_config"]["NetworkMode"] == "host"


def test_workspace_on_its_own_network_is_reachable_as_workspace():
    kwargs = specs.workspace_container_kwargs(make_spec())

    assert kwargs["network"] == "ts-w1"
    assert kwargs["hostname"] == "pay-12"
    args = engine_args(kwargs)
    assert args["networking_config"] == {"EndpointsConfig": {"ts-w1": {"Aliases": ["workspace"]}}}
    assert args["host_config"]["NetworkMode"] == "ts-w1"
    assert args["host_config"]["Init"] is True


def test_workspace_on_a_shared_network_gets_no_alias():
    kwargs = specs.workspace_container_kwargs(make_spec(network="team-net"))

    assert kwargs["network"] == "team-net"
    assert "networking_config" not in kwargs  # "workspace" would collide between workspaces
    assert kwargs["hostname"] == "pay-12"


# --------------------------------------------------------------------------------------------
# Service containers


def test_service_container_kwargs():
    kwargs = specs.service_container_kwargs(make_spec(), DB)

    assert kwargs["image"] == "postgres:16"
    assert kwargs["name"] == "ts-w1-db"
    assert kwargs["labels"] == {**LABELS, LABEL_ROLE: "service", LABEL_SERVICE: "db"}
    assert kwargs["environment"] == {"POSTGRES_PASSWORD": "dev"}
    assert kwargs["command"] == ["postgres", "-c", "fsync=off"]
    assert kwargs["init"] is True
    assert kwargs["detach"] is True
    assert kwargs["privileged"] is False
    assert kwargs["pids_limit"] == 2048
    assert kwargs["hostname"] == "db"
    assert kwargs["healthcheck"] == Healthcheck(test=["CMD-SHELL", "pg_isready"], interval=NANO // 2,
                                                timeout=2 * NANO, retries=10, start_period=1_250_000_000)
    assert "mounts" not in kwargs
    assert not FORBIDDEN_KEYS & set(kwargs)


def test_a_plain_service_has_no_command_or_healthcheck():
    kwargs = specs.service_container_kwargs(make_spec(), CACHE)

    assert "command" not in kwargs
    assert "healthcheck" not in kwargs
    assert kwargs["environment"] == {}
    assert kwargs["labels"][LABEL_SERVICE] == "cache"


def test_service_on_its_workspace_network_is_reachable_by_its_name():
    args = engine_args(specs.service_container_kwargs(make_spec(), DB))

    assert args["networking_config"] == {"EndpointsConfig": {"ts-w1": {"Aliases": ["db"]}}}
    assert args["hostname"] == "db"
    assert args["healthcheck"]["Interval"] == NANO // 2


def test_service_on_the_host_network():
    kwargs = specs.service_container_kwargs(make_spec(network="host"), DB)

    assert kwargs["network_mode"] == "host"
    assert "hostname" not in kwargs
    assert "networking_config" not in kwargs


def test_service_on_a_shared_network_has_no_alias():
    kwargs = specs.service_container_kwargs(make_spec(network="team-net"), DB)

    assert kwargs["network"] == "team-net"
    assert "networking_config" not in kwargs


def test_labels_keep_the_spec_labels_and_add_the_role():
    spec = make_spec()

    assert specs.labels(spec, "workspace") == {**LABELS, LABEL_ROLE: "workspace"}
    assert specs.labels(spec, "service", **{LABEL_SERVICE: "db"})[LABEL_SERVICE] == "db"
    assert spec.labels == LABELS  # not changed in place


# --------------------------------------------------------------------------------------------
# Health


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        (HealthCheck(test=["CMD", "true"]),
         {"Test": ["CMD", "true"], "Interval": NANO, "Timeout": 5 * NANO, "Retries": 60, "StartPeriod": 0}),
        (HealthCheck(test=["CMD-SHELL", "x"], interval_seconds=0.25, timeout_seconds=0.001, retries=0,
                     start_period_seconds=90),
         {"Test": ["CMD-SHELL", "x"], "Interval": 250_000_000, "Timeout": 1_000_000, "Retries": 0,
          "StartPeriod": 90 * NANO}),
        (HealthCheck(test=["NONE"]),
         {"Test": ["NONE"], "Interval": NANO, "Timeout": 5 * NANO, "Retries": 60, "StartPeriod": 0}),
    ],
)
def test_healthcheck_in_nanoseconds(check, expected):
    converted = specs.healthcheck(check)

    assert dict(converted) == expected
    assert all(isinstance(converted[k], int) for k in ("Interval", "Timeout", "StartPeriod"))


@pytest.mark.parametrize(
    ("service", "image_health", "budget"),
    [
        # the service's own check: start + (interval + timeout) × (retries + 1)
        (DB, None, 1.25 + 2.5 * 11),
        (DB, {"Interval": 100 * NANO}, 1.25 + 2.5 * 11),  # the service's check wins
        (ServiceRuntime(name="s", image="i", healthcheck=HealthCheck(test=["CMD", "true"])), None, 6.0 * 61),
        # the image's HEALTHCHECK, in nanoseconds, with docker's defaults for what it leaves out
        (CACHE, {"Test": ["CMD", "x"], "Interval": 2 * NANO, "Timeout": 3 * NANO, "StartPeriod": 10 * NANO,
                 "Retries": 4}, 10 + 5 * 5),
        (CACHE, {"Test": ["CMD", "x"]}, (30 + 30) * 4),
        (CACHE, {"Test": ["CMD", "x"], "Interval": 0, "Retries": 0}, (30 + 30) * 4),
        # no check at all
        (CACHE, None, 0.0),
        (CACHE, {}, 0.0),
    ],
)
def test_health_budget(service, image_health, budget):
    assert specs.health_budget(service, image_health) == pytest.approx(budget)
