"""A ticket becomes a real two-repository workspace on Docker, and lives through stop, start
and purge — on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import docker
import pytest

from taskspace.testing.server import free_port
from tests.integration.conftest import Stack, engine_resources, project_files

pytestmark = pytest.mark.docker


def _database_text(stack: Stack) -> str:
    """Every byte the database holds, as text: the SQLite files, or every row of PostgreSQL."""
    if stack.server.database_url is None:
        db = stack.server.data_dir / "taskspace.db"
        return b"".join(p.read_bytes() for p in db.parent.glob("taskspace.db*")).decode(errors="replace")

    async def dump() -> str:
        conn = await asyncpg.connect(stack.server.database_url)
        try:
            tables = [r["tablename"] for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            rows = [await conn.fetch(f'SELECT row_to_json(t)::text AS j FROM "{t}" t') for t in tables]
            return "\n".join(r["j"] for table in rows for r in table)
        finally:
            await conn.close()

    return asyncio.run(dump())


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes()]


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_two_repository_workspace_lives_and_is_purged_with_rescue(
        make_stack: Callable[..., Stack], docker_client: docker.DockerClient, database: str) -> None:
    stack = make_stack(database=database)
    key = stack.ticket("Fix the login page")
    branch = f"{key}-fix-the-login-page"

    ws = stack.launch_ready(key)

    # Both repositories, over authenticated HTTP, on the ticket branch made from main.
    assert ws["branch"] == branch
    assert {r["name"]: r["path"] for r in ws["repos"]} == {
        stack.primary: f"/workspace/{stack.primary}", stack.secondary: f"/workspace/{stack.secondary}"}
    for repo in (stack.primary, stack.secondary):
        out = stack.sh(key, f"cd /workspace/{repo} && git branch --show-current && git remote get-url origin "
                            "&& git rev-parse HEAD && git status --porcelain | wc -l")
        current, origin, head, dirty = out.split()
        assert current == branch
        assert origin == stack.git.url(repo)
        assert head == stack.git.branches(repo)["main"]
        assert dirty == "0"
    served = {r.user for r in stack.git.requests if stack.primary in r.path and r.status == 200}
    assert served == {"alice"}, "the preflight fetched with the token, through the credential helper"

    # The startup script ran, as the image's user, in the primary repository.
    assert ws["startup_status"] == "ok"
    log = stack.api("GET", f"/workspaces/{key}/logs/startup").text
    assert f"STARTUP-RAN for {key}" in log
    assert stack.sh(key, "wc -l < /workspace/.taskspace/startup-runs").strip() == "1"
    assert stack.sh(key, "id -un; pwd").split() == ["dev", f"/workspace/{stack.primary}"]

    # The dependency service is healthy and reachable through the address it publishes.
    answer = stack.sh(key, 'host=${ECHO_ADDR%:*}; port=${ECHO_ADDR#*:}; '
                           'perl -MIO::Socket::INET -e \'print IO::Socket::INET->new("$ARGV[0]:$ARGV[1]")->getline\' '
                           '"$host" "$port"')
    assert answer.strip() == "PONG", "the reply comes from the init file copied into the service"
    assert ws["environment"]["services"] == ["echo"]
    service = docker_client.containers.get(f"ts-{ws['id']}-echo")
    initialized = service.exec_run(["cat", "/srv/initialized"]).output
    assert initialized.count(b"\n") == 1, "the init command ran once the service was healthy"
    assert ws["environment"]["base_images"] and ws["environment"]["user"] == "dev"

    # The token is nowhere: not in the container's environment, .git/config, the server's
    # files (database, logs, mirrors), the database rows, or any API response.
    secret = stack.git_secret
    container = docker_client.containers.get(f"ts-{ws['id']}")
    assert not any(secret in e for e in container.attrs["Config"]["Env"])
    assert secret not in stack.sh(key, "env; cat /workspace/*/.git/config; cat /proc/1/environ | tr '\\0' '\\n'")
    assert secret not in stack.server.log()
    assert _files_containing(stack.server.data_dir, secret.encode()) == []
    assert secret not in _database_text(stack)

    # Stop keeps the files; start runs the startup script again.
    stack.sh(key, "echo draft > notes.txt")
    ws = stack.request(key, "stop", "stopped")
    assert ws["state"] == "stopped"
    assert not docker_client.containers.get(f"ts-{ws['id']}").attrs["State"]["Running"]
    ws = stack.request(key, "start", "ready")
    assert ws["state"] == "ready"
    assert stack.sh(key, "cat notes.txt").strip() == "draft"
    assert stack.sh(key, "wc -l < /workspace/.taskspace/startup-runs").strip() == "2"
    assert service.exec_run(["cat", "/srv/initialized"]).output == initialized, "init commands run once"

    # Purge: the uncommitted file and an unpushed commit on another branch are rescued first.
    stack.sh(key, "git checkout -q -b experiment && echo idea > idea.txt && git add idea.txt "
                  "&& git -c user.email=dev@example.com commit -qm idea && git checkout -q -")
    ws = stack.request(key, "purge", "purged")
    assert ws["state"] == "purged", ws["failure_reason"]
    branches = stack.git.branches(stack.primary)
    rescue = [b for b in branches if b.startswith(f"rescue/{key}-")]
    assert len(rescue) == 2, branches
    tip = next(b for b in rescue if not b.endswith("-experiment"))
    assert stack.git.read_file(stack.primary, tip, "notes.txt") == b"draft\n"
    assert stack.git.read_file(stack.primary, f"{tip}-experiment", "idea.txt") == b"idea\n"
    assert {r["branch"] for r in ws["rescue"]} == set(rescue)
    assert not any(b.startswith("rescue/") for b in stack.git.branches(stack.secondary)), "nothing to rescue there"
    events = stack.api("GET", f"/workspaces/{ws['id']}/events").json()["events"]
    purged = next(e for e in events if e["to_state"] == "purged")
    assert tip in purged["reason"]
    assert engine_resources(docker_client, stack.server.installation) == {
        "containers": set(), "volumes": set(), "networks": set()}
    assert not any(secret in text for text in stack.responses)


def test_purge_is_blocked_and_deletes_nothing_when_the_rescue_push_is_refused(
        stack: Stack, docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch) -> None:
    key = stack.ticket("Refactor the parser")
    ws = stack.launch_ready(key)
    stack.sh(key, "echo unsaved > wip.txt")
    monkeypatch.setattr(stack.git, "deny_push_refs", ["refs/heads/rescue/*"])

    ws = stack.request(key, "purge", "purge_blocked")

    assert ws["state"] == "purge_blocked"
    assert "rejected" in ws["failure_reason"] and stack.primary in ws["failure_reason"]
    assert engine_resources(docker_client, stack.server.installation)["volumes"] == {f"ts-{ws['id']}-workspace"}
    assert not any(b.startswith("rescue/") for b in stack.git.branches(stack.primary))

    # Once the remote accepts the push, purging again rescues the work and deletes everything.
    monkeypatch.setattr(stack.git, "deny_push_refs", [])
    assert stack.api("POST", f"/workspaces/{key}/purge").status_code == 202
    ws = stack.server.wait_for(key, {"purged", "failed"}, 180)  # it is still purge_blocked at first
    assert ws["state"] == "purged"
    rescued = [b for b in stack.git.branches(stack.primary) if b.startswith(f"rescue/{key}-")]
    assert stack.git.read_file(stack.primary, rescued[0], "wip.txt") == b"unsaved\n"
    assert engine_resources(docker_client, stack.server.installation)["containers"] == set()


def test_a_failing_startup_script_leaves_the_workspace_usable(
        make_stack: Callable[..., Stack], base_image: str) -> None:
    from taskspace.testing.server import free_port
    from tests.integration.conftest import project_files

    files = project_files(base_image, service_port=free_port(),
                          startup="#!/bin/sh\necho about to fail\nexit 3\n")
    stack = make_stack(files=files)
    key = stack.ticket()

    ws = stack.launch_ready(key)

    assert ws["startup_status"] == "failed"
    assert "startup.sh exited with code 3" in ws["startup_detail"]
    assert "about to fail" in stack.api("GET", f"/workspaces/{key}/logs/startup").text
    assert stack.exec(key, "true")[0] == 0


def test_an_existing_ticket_branch_is_checked_out_and_an_unchanged_image_is_not_rebuilt(
        make_stack: Callable[..., Stack], base_image: str) -> None:
    stack = make_stack(files=project_files(base_image, service_port=free_port(), unique_image=True))
    first = stack.ticket("First")
    stack.launch_ready(first)
    key = stack.ticket("Second change")
    branch = f"{key}-second-change"
    # A workspace holds no credential: pushing from inside it is refused by the remote.
    stack.sh(first, f"GIT_TERMINAL_PROMPT=0 git push -q origin HEAD:refs/heads/{branch} 2>&1 || true")
    assert branch not in stack.git.branches(stack.primary)
    # The services of both workspaces would share the host's ports: one at a time.
    stack.request(first, "purge", "purged")

    # Someone else already pushed the ticket branch: the workspace continues it.
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_TERMINAL_PROMPT": "0", "HOME": tmp, "PATH": "/usr/bin:/bin",
               "GIT_AUTHOR_NAME": "A", "GIT_AUTHOR_EMAIL": "a@example.com",
               "GIT_COMMITTER_NAME": "A", "GIT_COMMITTER_EMAIL": "a@example.com"}
        helper = f"!f() {{ echo username=alice; echo password={stack.git_secret}; }}; f"
        git = ["git", "-c", f"credential.helper={helper}"]
        subprocess.run([*git, "clone", "-q", stack.git.url(stack.primary), f"{tmp}/r"], check=True, env=env)
        subprocess.run([*git, "-C", f"{tmp}/r", "commit", "-q", "--allow-empty", "-m", "started"], check=True,
                       env=env)
        subprocess.run([*git, "-C", f"{tmp}/r", "push", "-q", "origin", f"HEAD:refs/heads/{branch}"], check=True,
                       env=env)
    pushed = stack.git.branches(stack.primary)[branch]

    ws = stack.launch_ready(key)

    out = stack.sh(key, "git rev-parse HEAD; git rev-parse --abbrev-ref @{upstream}")
    assert out.split() == [pushed, f"origin/{branch}"]
    primary = next(r for r in ws["repos"] if r["primary"])
    assert primary["branch_existed"] is True
    secondary = next(r for r in ws["repos"] if not r["primary"])
    assert secondary["branch_existed"] is False
    events = stack.api("GET", f"/workspaces/{key}/events").json()["events"]
    image = next(e for e in events if e["step"] == "image")
    assert image["data"]["cached"] is True
    assert "Step 1/" in stack.api("GET", f"/workspaces/{key}/logs/build").text


def test_a_first_launch_without_services_clones_and_starts_up_without_an_exec_and_is_waited_for_at_once(
        make_stack: Callable[..., Stack], base_image: str, docker_client: docker.DockerClient) -> None:
    # Each engine exec costs tens of milliseconds. The first workspace of an image gets
    # /workspace handed to the image's user (USER dev) by a root exec before the first clone;
    # the image is then made again with /workspace theirs (its WORKDIR made it root's), and the
    # next workspaces start with it. The clone and the startup script run together in the
    # container's first shell, which was waiting for them: no exec.
    files = {name: text for name, text in project_files(base_image, service_port=free_port(), unique_image=True).items()
             if name in {"README.md", "Dockerfile", ".taskspace/startup.sh"}}
    stack = make_stack(files=files)

    first = _launch_counting_execs(stack, docker_client)
    assert first["execs"] == 1  # the handover as root
    source = docker_client.images.get(first["image"]).id
    deadline = time.monotonic() + 60
    while not (owned := docker_client.images.list(filters={"label": f"taskspace.owned-from={source}"})):
        assert time.monotonic() < deadline, "the owned image was not built"
        time.sleep(0.2)
    assert (owned[0].attrs["Config"]["User"], owned[0].attrs["Config"]["WorkingDir"]) == ("dev", "/workspace")

    second = _launch_counting_execs(stack, docker_client)
    assert second["execs"] == 0
    assert docker_client.containers.get(f"ts-{second['id']}").image.id == owned[0].id


def _launch_counting_execs(stack: Stack, docker_client: docker.DockerClient) -> dict[str, object]:
    """Launch a new ticket, wait for ready with one long poll; the workspace with ``execs``, the
    engine execs its container ran."""
    key = stack.ticket()
    launched = int(time.time()) - 1
    stack.launch(key)
    # One long poll waits for the end, whatever steps happen on the way.
    page = stack.api("GET", f"/workspaces/{key}/events",
                     params={"wait": 60, "until": ["ready", "failed"]}, timeout=90).json()

    ws, events = page["workspace"], page["events"]
    assert ws["state"] == "ready" and ws["startup_status"] == "ok", ws
    flow = [(e["step"], e["status"]) if e["kind"] == "step" else e["to_state"] for e in events]
    assert flow[flow.index(("clone", "ok")):] == [("clone", "ok"), "starting", ("startup", "ok"), "ready"]
    assert sorted(next(e for e in events if e["step"] == "clone")["data"]["cloned"]) == sorted(
        r["name"] for r in ws["repos"])
    seen = docker_client.api.events(since=launched, until=time.time() + 1, decode=True,
                                    filters={"type": "container", "container": f"ts-{ws['id']}"})
    execs = len([e for e in seen if e["Action"].startswith("exec_start")])
    assert stack.sh(key, "stat -c %U /workspace; wc -l < /workspace/.taskspace/startup-runs").split() == ["dev", "1"]
    return {**ws, "execs": execs}
