"""The plan of a workspace: image tags, the workspace environment and the workspace spec."""

from __future__ import annotations

import re

import pytest

from taskspace.core.environment import (
    DockerBuild,
    DockerfileSummary,
    EnvironmentConfig,
    LifecycleCommand,
    MountSpec,
    ServiceDecl,
    Stage,
)
from taskspace.plugins.backends.base import LABEL_INSTALLATION, LABEL_TICKET, LABEL_WORKSPACE, ServiceRuntime
from taskspace.services.lifecycle.plan import (
    ImagePlan,
    Plan,
    ServicePlan,
    container_env,
    dump,
    exec_user,
    image_tag,
    scoped_volume,
    summarize,
    workspace_spec,
)

COMMIT = "3" * 40
DOCKERFILE = b"FROM python:3.12\nRUN pip install uv\n"
BUILD = DockerBuild(dockerfile=".devcontainer/Dockerfile", context=".", args={"PY": "3.12", "NODE": "20"},
                    target="dev")
TAG_RE = re.compile(r"^taskspace/[a-z0-9-]+:[0-9a-f]{16}$")

# Values that must never reach a summary shown to people.
SECRET_VALUES = ["s3cret-db-pass", "redis-pa55", "container-env-secret", "remote-env-secret"]


def tag(**changes) -> str:
    args = {"dockerfile": ".devcontainer/Dockerfile", "dockerfile_text": DOCKERFILE, "context_tree": "a" * 40,
            "build": BUILD, "role": "workspace"}
    args.update(changes)
    project = args.pop("project_key", "PAY")
    return image_tag(project, **args)


def service(name: str, publish: dict[str, str], env: dict[str, str] | None = None) -> ServicePlan:
    decl = ServiceDecl(name=name, image=f"{name}:latest", env=env or {}, publish=publish)
    return ServicePlan(decl=decl, image=ImagePlan(ref=f"{name}:latest", repo="api", commit=COMMIT))


def make_plan(*, container_env: dict[str, str] | None = None, services: list[ServicePlan] | None = None,
              mounts: list[MountSpec] | None = None, container_user: str | None = "vscode",
              remote_user: str | None = "dev") -> Plan:
    environment = EnvironmentConfig(
        source="devcontainer",
        config_path=".devcontainer/devcontainer.json",
        build=BUILD,
        container_env=container_env if container_env is not None else {"APP_MODE": "container-env-secret"},
        remote_env={"EDITOR_TOKEN": "remote-env-secret"},
        post_create=LifecycleCommand(commands={"": "make setup"}),
        forward_ports=[8000, "db:5432"],
        mounts=mounts or [],
        container_user=container_user,
        remote_user=remote_user,
        warnings=["'features' is not supported"],
    )
    return Plan(
        primary="api",
        commit=COMMIT,
        environment=environment,
        image=ImagePlan(ref=tag(), build=BUILD, repo="api", commit=COMMIT, context_tree="a" * 40),
        services=services if services is not None else [
            service("db", {"DATABASE_URL": "postgresql://postgres:s3cret-db-pass@${host}:5432/app"},
                    env={"POSTGRES_PASSWORD": "s3cret-db-pass"}),
            service("cache", {"REDIS_URL": "redis://:redis-pa55@${host}:6379/0", "CACHE_HOST": "${host}"}),
        ],
        mirrors={"api": "/var/lib/taskspace/mirrors/ab12.git", "web": "/var/lib/taskspace/mirrors/cd34.git"},
    )


HOSTS = {"db": "ts-w1-db", "cache": "ts-w1-cache"}


# --------------------------------------------------------------------------------------------
# image_tag


def test_image_tag_shape():
    assert TAG_RE.match(tag())
    assert tag().startswith("taskspace/pay:")
    assert tag(role="svc-db").startswith("taskspace/pay-svc-db:")


def test_image_tag_is_deterministic():
    assert tag() == tag()


@pytest.mark.parametrize(
    "change",
    [
        {"dockerfile_text": DOCKERFILE + b"RUN true\n"},
        {"dockerfile_text": DOCKERFILE.replace(b"3.12", b"3.13")},
        {"dockerfile_text": DOCKERFILE + b" "},
        {"context_tree": "b" * 40},
        {"context_tree": "unused"},
        {"build": BUILD.model_copy(update={"args": {"PY": "3.13", "NODE": "20"}})},
        {"build": BUILD.model_copy(update={"args": {"PY": "3.12"}})},
        {"build": BUILD.model_copy(update={"args": {**BUILD.args, "EXTRA": ""}})},
        {"build": BUILD.model_copy(update={"target": "prod"})},
        {"build": BUILD.model_copy(update={"target": None})},
        {"role": "svc-db"},
        {"dockerfile": "Dockerfile"},
    ],
    ids=["text-appended", "text-edited", "text-whitespace", "context", "context-unused", "arg-value",
         "arg-removed", "arg-added", "target", "no-target", "role", "dockerfile-path"],
)
def test_image_tag_changes_with_the_recipe(change):
    changed = tag(**change)

    assert changed.rpartition(":")[2] != tag().rpartition(":")[2]


@pytest.mark.parametrize(
    "change",
    [
        {"build": BUILD.model_copy(update={"args": dict(reversed(list(BUILD.args.items())))})},
        {"build": BUILD.model_copy(update={"context": "other"})},  # the tree says what the context holds
        {"build": BUILD.model_copy(update={"dockerfile": "elsewhere/Dockerfile"})},  # the path given counts
        {"project_key": "OPS"},  # names the image but does not change its content
        {"project_key": "pay"},
    ],
    ids=["arg-order", "context-path", "build-dockerfile-field", "project", "project-case"],
)
def test_image_tag_digest_ignores_what_does_not_change_the_image(change):
    assert tag(**change).rpartition(":")[2] == tag().rpartition(":")[2]


def test_image_tag_does_not_confuse_a_missing_target_with_an_empty_one():
    assert tag(build=BUILD.model_copy(update={"target": None})) == \
        tag(build=BUILD.model_copy(update={"target": ""}))


def test_image_tag_names_the_project():
    assert tag(project_key="OPS").startswith("taskspace/ops:")
    assert tag(project_key="OPS", role="svc-cache").startswith("taskspace/ops-svc-cache:")


def test_image_tag_fields_cannot_run_into_each_other():
    a = tag(dockerfile="Dockerfile", context_tree="x")
    b = tag(dockerfile="Dockerfilex", context_tree="")

    assert a != b


# --------------------------------------------------------------------------------------------
# container_env


def env_of(plan: Plan, hosts: dict[str, str] = HOSTS) -> dict[str, str]:
    return container_env(plan, hosts=hosts, workspace_id="w1", ticket="PAY-12", branch="PAY-12-fix",
                         primary="api")


def test_container_env_has_taskspace_variables_and_service_urls():
    env = env_of(make_plan())

    assert env == {
        "TASKSPACE_WORKSPACE": "w1",
        "TASKSPACE_TICKET": "PAY-12",
        "TASKSPACE_BRANCH": "PAY-12-fix",
        "TASKSPACE_PRIMARY_REPO": "/workspace/api",
        "DATABASE_URL": "postgresql://postgres:s3cret-db-pass@ts-w1-db:5432/app",
        "REDIS_URL": "redis://:redis-pa55@ts-w1-cache:6379/0",
        "CACHE_HOST": "ts-w1-cache",
        "APP_MODE": "container-env-secret",
    }


def test_container_env_resolves_host_through_the_hosts_map():
    plan = make_plan()

    on_host_network = env_of(plan, {"db": "127.0.0.1", "cache": "127.0.0.1"})
    per_workspace = env_of(plan, {"db": "db", "cache": "cache"})

    assert on_host_network["DATABASE_URL"] == "postgresql://postgres:s3cret-db-pass@127.0.0.1:5432/app"
    assert per_workspace["DATABASE_URL"] == "postgresql://postgres:s3cret-db-pass@db:5432/app"
    assert per_workspace["CACHE_HOST"] == "cache"
    assert not any("${host}" in value for value in per_workspace.values())


def test_container_env_needs_a_host_for_every_service():
    with pytest.raises(KeyError):
        env_of(make_plan(), {"db": "db"})


def test_container_env_does_not_pass_the_service_own_env():
    assert "POSTGRES_PASSWORD" not in env_of(make_plan())


def test_container_env_precedence_taskspace_over_container_env_over_publish():
    plan = make_plan(
        services=[
            service("db", {"SHARED": "from-db", "TASKSPACE_TICKET": "from-db", "ONLY_DB": "db"}),
            service("cache", {"SHARED": "from-cache", "ONLY_CACHE": "cache"}),
        ],
        container_env={"SHARED": "from-devcontainer", "TASKSPACE_BRANCH": "from-devcontainer"},
    )

    env = env_of(plan)

    assert env["SHARED"] == "from-devcontainer"
    # taskspace's own variables describe the workspace: nothing in a repository overrides them.
    assert env["TASKSPACE_BRANCH"] != "from-devcontainer"
    assert env["TASKSPACE_TICKET"] != "from-db"
    assert env["TASKSPACE_WORKSPACE"] == "w1"
    assert env["ONLY_DB"] == "db"
    assert env["ONLY_CACHE"] == "cache"


def test_a_later_service_wins_over_an_earlier_one():
    plan = make_plan(services=[service("db", {"X": "db"}), service("cache", {"X": "cache"})], container_env={})

    assert env_of(plan)["X"] == "cache"


def test_container_env_without_services():
    plan = make_plan(services=[], container_env={})

    assert set(env_of(plan, {})) == {"TASKSPACE_WORKSPACE", "TASKSPACE_TICKET", "TASKSPACE_BRANCH",
                                     "TASKSPACE_PRIMARY_REPO"}


# --------------------------------------------------------------------------------------------
# workspace_spec


def spec_of(plan: Plan, **kwargs):
    args = {"workspace_id": "w1", "installation": "inst-a", "project_key": "PAY", "ticket": "PAY-12",
            "branch": "PAY-12-fix", "network": "per-workspace", "hosts": HOSTS, "pids_limit": 1024}
    args.update(kwargs)
    return workspace_spec(plan, **args)


def test_workspace_spec_labels_identity_and_limits():
    spec = spec_of(make_plan())

    assert spec.labels == {LABEL_WORKSPACE: "w1", LABEL_INSTALLATION: "inst-a", LABEL_TICKET: "PAY-12"}
    assert spec.id == "w1"
    assert spec.hostname == "pay-12"
    assert spec.image == make_plan().image.ref
    assert spec.workdir == "/workspace/api"
    assert spec.user == "vscode"
    assert spec.network == "per-workspace"
    assert spec.pids_limit == 1024
    assert spec.services == []
    assert spec.env == env_of(make_plan())


def test_workspace_spec_binds_each_mirror_read_only_by_repository_name():
    spec = spec_of(make_plan())

    assert spec.read_only_binds == {
        "/opt/taskspace/mirrors/api.git": "/var/lib/taskspace/mirrors/ab12.git",
        "/opt/taskspace/mirrors/web.git": "/var/lib/taskspace/mirrors/cd34.git",
    }


def test_workspace_spec_scopes_devcontainer_volumes_to_the_project():
    mounts = [
        MountSpec(type="volume", source="node-modules", target="/workspace/api/node_modules"),
        MountSpec(type="volume", source="pip-cache", target="/root/.cache/pip", read_only=True),
        MountSpec(type="tmpfs", target="/tmp/scratch"),
        MountSpec(type="volume", source=None, target="/anonymous"),
    ]
    plan = make_plan(mounts=mounts)

    pay = spec_of(plan, project_key="PAY").mounts
    ops = spec_of(plan, project_key="OPS").mounts

    assert pay == [
        MountSpec(type="volume", source="ts-pay-node-modules", target="/workspace/api/node_modules"),
        MountSpec(type="volume", source="ts-pay-pip-cache", target="/root/.cache/pip", read_only=True),
        MountSpec(type="tmpfs", target="/tmp/scratch"),
        MountSpec(type="volume", source=None, target="/anonymous"),
    ]
    assert [m.source for m in ops[:2]] == ["ts-ops-node-modules", "ts-ops-pip-cache"]
    assert plan.environment.mounts == mounts  # the plan itself is not changed


def test_scoped_volume():
    assert scoped_volume("PAY", "cache") == "ts-pay-cache"
    assert scoped_volume("PAY", "cache") != scoped_volume("OPS", "cache")


def test_workspace_spec_passes_services_and_network():
    runtime = [ServiceRuntime(name="db", image="postgres:16")]

    spec = spec_of(make_plan(), network="host", services=runtime, hosts={"db": "127.0.0.1", "cache": "127.0.0.1"})

    assert spec.network == "host"
    assert spec.services == runtime
    assert spec.env["DATABASE_URL"].endswith("@127.0.0.1:5432/app")


@pytest.mark.parametrize(
    ("container_user", "remote_user", "expected"),
    [("vscode", "dev", "dev"), ("vscode", None, "vscode"), (None, "dev", "dev"), (None, None, None)],
)
def test_exec_user_prefers_the_remote_user(container_user, remote_user, expected):
    assert exec_user(make_plan(container_user=container_user, remote_user=remote_user)) == expected


def test_dump_round_trips():
    plan = make_plan(mounts=[MountSpec(type="tmpfs", target="/tmp/x")])

    assert Plan.model_validate(dump(plan)) == plan


# --------------------------------------------------------------------------------------------
# summarize


DOCKERFILE_SUMMARY = DockerfileSummary(
    stages=[Stage(name="base", base_image="python:3.12"), Stage(name=None, base_image="base")],
    exposed_ports=["8000/tcp"],
    env_names=["PIP_INDEX_URL"],
    workdir="/app",
    user="app",
)


def test_summarize_lists_names_only():
    plan = make_plan()

    summary = summarize(plan, DOCKERFILE_SUMMARY)

    assert summary.env_names == ["APP_MODE", "CACHE_HOST", "DATABASE_URL", "EDITOR_TOKEN", "PIP_INDEX_URL",
                                 "REDIS_URL"]
    text = summary.model_dump_json()
    for value in SECRET_VALUES:
        assert value not in text
    assert "POSTGRES_PASSWORD" not in text  # the service's own environment is the service's


def test_summarize_with_a_dockerfile():
    summary = summarize(make_plan(remote_user=None, container_user=None), DOCKERFILE_SUMMARY)

    assert summary.source == "devcontainer"
    assert summary.config_path == ".devcontainer/devcontainer.json"
    assert summary.image == tag()
    assert summary.base_images == ["python:3.12", "base"]
    assert summary.exposed_ports == ["8000/tcp"]
    assert summary.workdir == "/app"
    assert summary.user == "app"
    assert summary.forward_ports == [8000, "db:5432"]
    assert summary.services == ["db", "cache"]
    assert summary.warnings == ["'features' is not supported"]


def test_summarize_without_a_dockerfile_names_the_image():
    plan = make_plan(services=[], remote_user=None, container_user=None)
    plan = plan.model_copy(update={"image": ImagePlan(ref="mcr.microsoft.com/devcontainers/python:3",
                                                       repo="api", commit=COMMIT)})

    summary = summarize(plan, None)

    assert summary.image == "mcr.microsoft.com/devcontainers/python:3"
    assert summary.base_images == ["mcr.microsoft.com/devcontainers/python:3"]
    assert summary.exposed_ports == []
    assert summary.workdir is None
    assert summary.user is None
    assert summary.services == []
    assert summary.env_names == ["APP_MODE", "EDITOR_TOKEN"]


@pytest.mark.parametrize(
    ("container_user", "remote_user", "expected"),
    [("vscode", "dev", "dev"), ("vscode", None, "vscode"), (None, None, "app")],
)
def test_summarize_user(container_user, remote_user, expected):
    plan = make_plan(container_user=container_user, remote_user=remote_user)

    assert summarize(plan, DOCKERFILE_SUMMARY).user == expected
