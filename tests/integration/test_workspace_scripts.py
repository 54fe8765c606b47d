"""The shell scripts run inside a workspace, run for real in a container of the base image.

The mirrors are bare repositories created on the host, owned by root and bind-mounted read-only;
the scripts run as an unprivileged user ``dev``, as in a real workspace, so git's ownership
check on the mirrors is exercised too.
"""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import tarfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import docker
import pytest
from docker.types import Mount

from taskspace.core.environment import LifecycleCommand
from taskspace.core.workspace_scripts import (
    MIRRORS_DIR,
    NO_GIT_EXIT,
    NOT_WRITABLE_EXIT,
    ON_CREATE_DONE,
    POST_CREATE_DONE,
    SPARE_MARKER,
    STARTUP_LOG,
    CloneTarget,
    chown_script,
    clone_script,
    handover_script,
    is_root,
    parse_status,
    rescue_script,
    startup_script,
)
from taskspace.gitops.seed import create_bare_repo

pytestmark = pytest.mark.docker

ORIGIN = {"api": "https://git.example.com/team/api.git", "web": "https://git.example.com/team/web.git"}
EXISTING = "PAY-2-existing-work"
BRANCH = "PAY-1-fix-login"


@dataclass
class Run:
    code: int
    out: str
    err: str


@dataclass
class Box:
    """A running container of the base image with the mirrors mounted and a user ``dev``."""

    container: docker.models.containers.Container
    mirrors: Path

    def run(self, script: str, *, user: str = "dev", timeout: float = 60) -> Run:
        """Run ``script`` with /bin/sh; fail the test if it does not end within ``timeout``."""
        def call() -> Run:
            code, (out, err) = self.container.exec_run(["/bin/sh", "-c", script], user=user, demux=True)
            return Run(code, (out or b"").decode(), (err or b"").decode())

        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(call)
            try:
                return future.result(timeout=timeout)
            except FutureTimeout:
                # Killing the container ends the exec, so the pool can shut down.
                self.container.kill()
                pytest.fail(f"the script did not return within {timeout}s:\n{script}")

    def sh(self, script: str, *, user: str = "dev") -> str:
        """Run ``script`` and return its stdout; fail on a non-zero exit."""
        result = self.run(script, user=user)
        assert result.code == 0, f"{script!r} exited with {result.code}: {result.out}{result.err}"
        return result.out.strip()

    def write(self, path: str, content: str, *, executable: bool = False) -> None:
        """Write a file as ``dev`` (the content is passed as an argument, never through a shell)."""
        directory = os.path.dirname(path)
        code, output = self.container.exec_run(
            ["/bin/sh", "-c", 'mkdir -p "$1" && printf %s "$2" > "$3"', "sh", directory, content, path], user="dev"
        )
        assert code == 0, output
        if executable:
            self.sh(f"chmod +x {path}")

    def read(self, path: str) -> bytes:
        stream, _ = self.container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.next()
            assert member is not None
            extracted = tar.extractfile(member)
            assert extracted is not None
            return extracted.read()


def host_git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def mirrors(tmp_path: Path) -> Path:
    """Bare repositories ``api`` (with a second branch) and ``web``, owned by root."""
    root = tmp_path / "mirrors"
    create_bare_repo(root / "api.git", {"README.md": "# api\n", "src/app.py": "print('hello')\n"},
                     extra_branches={EXISTING: {"feature.txt": "work in progress\n"}})
    create_bare_repo(root / "web.git", {"index.html": "<h1>web</h1>\n"})
    for path in [root, *root.rglob("*")]:
        os.chown(path, 0, 0, follow_symlinks=False)
    return root


@pytest.fixture
def box(docker_client: docker.DockerClient, base_image: str, mirrors: Path) -> Iterator[Box]:
    suffix = secrets.token_hex(4)
    volume = docker_client.volumes.create(f"ts-test-scripts-{suffix}")
    container = None
    try:
        container = docker_client.containers.run(
            base_image,
            ["sleep", "infinity"],
            name=f"ts-test-scripts-{suffix}",
            detach=True,
            init=True,
            network_mode="host",
            mounts=[
                Mount(target="/workspace", source=volume.name, type="volume"),
                *[Mount(target=f"{MIRRORS_DIR}/{name}.git", source=str(mirrors / f"{name}.git"), type="bind",
                        read_only=True) for name in ("api", "web")],
            ],
        )
        code, output = container.exec_run(
            ["/bin/sh", "-c", "useradd --create-home dev && chown dev:dev /workspace"], user="root"
        )
        assert code == 0, output
        yield Box(container, mirrors)
    finally:
        if container is not None:
            container.remove(force=True)
        volume.remove(force=True)


def sha(mirrors: Path, name: str, ref: str) -> str:
    return host_git("rev-parse", ref, cwd=mirrors / f"{name}.git")


def target(mirrors: Path, name: str = "api", *, branch: str = BRANCH, base: str = "main",
           existed: bool = False) -> CloneTarget:
    return CloneTarget(name=name, mirror=f"{MIRRORS_DIR}/{name}.git", url=ORIGIN[name], branch=branch,
                       base_sha=sha(mirrors, name, base), branch_existed=existed)


def clone(box: Box, *targets: CloneTarget) -> Run:
    return box.run(clone_script(list(targets), user_name="Dev \"O'One\" = x", user_email="dev@example.com"))


# --------------------------------------------------------------------------------------------
# clone_script


def test_the_mirrors_belong_to_root_and_the_scripts_run_as_another_user(box):
    assert box.sh(f"stat -c %U {MIRRORS_DIR}/api.git/HEAD") == "root"
    assert box.sh("id -un") == "dev"
    assert box.run(f"touch {MIRRORS_DIR}/api.git/x", user="root").code != 0  # read-only, even for root


def test_clone_makes_a_new_branch_from_the_base_commit(box):
    # The base is not the mirror's HEAD, so the branch provably starts where it was told to.
    api = target(box.mirrors, base=EXISTING)
    web = target(box.mirrors, "web")

    result = clone(box, api, web)

    assert result.code == 0, result.err
    assert result.out.splitlines() == ["cloned api", "cloned web"]
    assert box.sh("git -C /workspace/api symbolic-ref --short HEAD") == BRANCH
    assert box.sh("git -C /workspace/api rev-parse HEAD") == api.base_sha
    assert box.sh("git -C /workspace/web rev-parse HEAD") == web.base_sha
    assert box.sh("git -C /workspace/api remote get-url origin") == ORIGIN["api"]
    assert box.sh("git -C /workspace/web remote get-url origin") == ORIGIN["web"]
    assert box.sh("cat /workspace/api/feature.txt") == "work in progress"
    assert box.sh("git -C /workspace/api status --porcelain") == ""
    assert box.sh("stat -c %U /workspace/api/README.md") == "dev"
    # The upstream the clone set for the mirror's HEAD (main) is gone; the new branch has none yet.
    config = box.sh("cat /workspace/api/.git/config")
    assert '[branch "main"]' not in config
    assert box.run("git -C /workspace/api config --get-regexp '^branch[.]'").out == ""
    assert box.sh("git -C /workspace/api config push.autoSetupRemote") == "true"
    assert box.sh("git -C /workspace/api config user.name") == "Dev \"O'One\" = x"
    assert box.sh("git -C /workspace/api config user.email") == "dev@example.com"
    # The remote-tracking refs come from the mirror, named as on the real remote.
    assert box.sh(f"git -C /workspace/api rev-parse origin/{EXISTING}") == api.base_sha
    assert box.sh("ls -A /workspace/.taskspace") == "logs"  # no temporary clone left behind
    assert box.sh("test -e /workspace/api/.git/taskspace-cloned && echo marked") == "marked"


def test_clone_of_an_existing_branch_tracks_it(box):
    api = target(box.mirrors, branch=EXISTING, base="main", existed=True)

    result = clone(box, api)

    assert result.code == 0, result.err
    assert box.sh("git -C /workspace/api symbolic-ref --short HEAD") == EXISTING
    assert box.sh("git -C /workspace/api rev-parse HEAD") == sha(box.mirrors, "api", EXISTING)
    assert box.sh("git -C /workspace/api rev-parse --abbrev-ref '@{upstream}'") == f"origin/{EXISTING}"
    assert box.sh("cat /workspace/api/feature.txt") == "work in progress"
    assert box.sh("git -C /workspace/api config --get-regexp '^branch[.]' | sort") == (
        f"branch.{EXISTING}.merge refs/heads/{EXISTING}\nbranch.{EXISTING}.remote origin"
    )


def test_cloning_again_keeps_the_first_clone_and_its_changes(box):
    api = target(box.mirrors)
    assert clone(box, api).code == 0
    box.write("/workspace/api/README.md", "# changed locally\n")
    box.write("/workspace/api/notes.txt", "untracked\n")
    box.sh("git -C /workspace/api add notes.txt")
    before = box.sh("git -C /workspace/api status --porcelain")

    again = clone(box, api, target(box.mirrors, "web"))

    assert again.code == 0, again.err
    assert again.out.splitlines() == ["kept api", "cloned web"]
    assert box.sh("cat /workspace/api/README.md") == "# changed locally"
    assert box.sh("git -C /workspace/api status --porcelain") == before
    assert {line.split()[-1] for line in before.splitlines()} == {"README.md", "notes.txt"}


def test_a_half_finished_clone_is_cloned_again(box):
    # A directory without the marker is what a crash mid-clone leaves: it is replaced.
    box.write("/workspace/api/leftover.txt", "partial\n")

    result = clone(box, target(box.mirrors))

    assert result.code == 0, result.err
    assert result.out.strip() == "cloned api"
    assert box.run("test -e /workspace/api/leftover.txt").code == 1
    assert box.sh("git -C /workspace/api symbolic-ref --short HEAD") == BRANCH


def test_clone_into_a_workspace_of_root_says_who_must_own_it_and_clones_once_it_does(box):
    box.sh("chown root:root /workspace", user="root")  # a new volume, as the engine creates it

    refused = clone(box, target(box.mirrors))

    assert refused.code == NOT_WRITABLE_EXIT
    assert refused.out.strip() == box.sh("echo $(id -u):$(id -g)")
    assert box.sh("ls -A /workspace") == ""
    assert box.run(chown_script(refused.out.strip()), user="root").code == 0
    assert clone(box, target(box.mirrors)).out.strip() == "cloned api"
    assert box.sh("stat -c %U /workspace /workspace/.taskspace/logs") == "dev\ndev"


@pytest.mark.parametrize(("user", "printed"), [("dev", "1000:1000"), ("dev:dev", "1000:dev"),
                                               ("1000:1000", "1000:1000")])
def test_a_new_workspace_handed_over_to_its_user_is_cloned_at_the_first_attempt(box, user, printed):
    box.sh("chown root:root /workspace", user="root")  # a new volume, as the engine creates it
    uid_gid = box.sh("echo $(id -u):$(id -g)")
    assert uid_gid == "1000:1000"  # the numeric form above names the same user

    handed = box.run(handover_script(user), user="root")

    assert (handed.code, handed.out) == (0, f"{printed}\n")  # what the owned image is made with
    assert box.sh("stat -c %u:%g /workspace /workspace/.taskspace/logs") == f"{uid_gid}\n{uid_gid}"
    assert clone(box, target(box.mirrors)).out.strip() == "cloned api"


def test_a_user_the_image_does_not_know_is_left_to_the_clone(box):
    box.sh("chown root:root /workspace", user="root")

    handed = box.run(handover_script("ghost"), user="root")

    assert (handed.code, handed.out) == (0, "")

    assert box.sh("stat -c %U /workspace") == "root"
    assert clone(box, target(box.mirrors)).code == NOT_WRITABLE_EXIT


def test_root_users_are_told_apart_from_others():
    assert all(is_root(u) for u in ["root", "0", "root:staff", "0:0"])
    assert not any(is_root(u) for u in ["dev", "1000", "rootless", "dev:root"])


def test_clone_without_git_exits_with_the_no_git_code(box):
    box.sh("rm /usr/bin/git", user="root")

    result = clone(box, target(box.mirrors))

    assert result.code == NO_GIT_EXIT
    assert box.sh("ls -A /workspace") == ""


def test_clone_of_an_unknown_base_fails_and_leaves_nothing_that_looks_finished(box):
    bad = CloneTarget(name="api", mirror=f"{MIRRORS_DIR}/api.git", url=ORIGIN["api"], branch=BRANCH,
                      base_sha="0" * 40, branch_existed=False)

    result = clone(box, bad)

    assert result.code != 0
    assert box.run("test -e /workspace/api").code == 1
    assert clone(box, target(box.mirrors)).out.strip() == "cloned api"


def advance(mirrors: Path, name: str, branch: str, files: dict[str, str], tmp: Path) -> str:
    """Commit ``files`` on ``branch`` of the mirror (from main when new), as a push would. Returns the commit."""
    work = tmp / f"advance-{name}-{secrets.token_hex(3)}"
    host_git("clone", "--quiet", str(mirrors / f"{name}.git"), str(work))
    host_git("checkout", "--quiet", "-B", branch, f"origin/{branch}" if branch == "main" else "origin/main", cwd=work)
    for path, content in files.items():
        (work / path).write_text(content)
    host_git("add", "-A", cwd=work)
    host_git("-c", "user.name=Other", "-c", "user.email=other@example.com", "commit", "--quiet", "-m", "more",
             cwd=work)
    host_git("push", "--quiet", "origin", f"{branch}:{branch}", cwd=work)
    return host_git("rev-parse", "HEAD", cwd=work)


def spare_targets(mirrors: Path) -> list[CloneTarget]:
    return [CloneTarget(name=n, mirror=f"{MIRRORS_DIR}/{n}.git", url=ORIGIN[n], branch="main",
                        base_sha=sha(mirrors, n, "main"), branch_existed=True) for n in ("api", "web")]


def test_a_spare_is_cloned_on_the_default_branches_without_anyone_s_identity(box):
    result = box.run(clone_script(spare_targets(box.mirrors), user_name=None, user_email=None, spare=True))

    assert result.code == 0, result.err
    assert result.out.splitlines() == ["cloned api", "cloned web"]
    assert box.sh("git -C /workspace/api symbolic-ref --short HEAD") == "main"
    assert box.sh("git -C /workspace/api rev-parse --abbrev-ref '@{upstream}'") == "origin/main"
    assert box.sh(f"test -e /workspace/api/{SPARE_MARKER} && echo spare") == "spare"
    assert box.run("git -C /workspace/api config user.name").code == 1


def test_a_claimed_spare_moves_to_the_ticket_branch_as_the_mirror_has_it_now(box, tmp_path):
    assert box.run(clone_script(spare_targets(box.mirrors), user_name=None, user_email=None, spare=True)).code == 0
    box.write("/workspace/api/build-cache.txt", "made by onCreateCommand\n")  # untracked: comes along
    # Pushed since the spare was built: main moved on, and web got the ticket's branch.
    main_now = advance(box.mirrors, "api", "main", {"CHANGELOG": "more\n"}, tmp_path)
    ticket_tip = advance(box.mirrors, "web", BRANCH, {"ticket.txt": "started elsewhere\n"}, tmp_path)
    claim = [CloneTarget(name="api", mirror=f"{MIRRORS_DIR}/api.git", url=ORIGIN["api"], branch=BRANCH,
                         base_sha=main_now, branch_existed=False),
             CloneTarget(name="web", mirror=f"{MIRRORS_DIR}/web.git", url=ORIGIN["web"], branch=BRANCH,
                         base_sha=ticket_tip, branch_existed=True)]

    result = clone(box, *claim)
    again = clone(box, *claim)

    assert result.code == 0, result.err
    assert result.out.splitlines() == ["switched api", "switched web"]
    assert again.out.splitlines() == ["kept api", "kept web"]
    assert box.sh("git -C /workspace/api symbolic-ref --short HEAD") == BRANCH
    assert box.sh("git -C /workspace/api rev-parse HEAD") == main_now
    assert box.sh("cat /workspace/api/CHANGELOG /workspace/api/build-cache.txt") == "more\nmade by onCreateCommand"
    assert box.sh("git -C /workspace/api branch --format='%(refname:short)'") == BRANCH  # the spare's main is gone
    assert box.sh("git -C /workspace/web rev-parse HEAD") == ticket_tip
    assert box.sh("git -C /workspace/web rev-parse --abbrev-ref '@{upstream}'") == f"origin/{BRANCH}"
    for name in ("api", "web"):
        assert box.run(f"test -e /workspace/{name}/{SPARE_MARKER}").code == 1
        assert box.sh(f"git -C /workspace/{name} config user.email") == "dev@example.com"
        assert box.sh(f"git -C /workspace/{name} remote get-url origin") == ORIGIN[name]
        assert box.sh(f"git -C /workspace/{name} status --porcelain --untracked-files=no") == ""


def test_a_claimed_spare_whose_changes_conflict_with_the_branch_fails_and_stays_a_spare(box, tmp_path):
    assert box.run(clone_script(spare_targets(box.mirrors), user_name=None, user_email=None, spare=True)).code == 0
    box.write("/workspace/api/README.md", "# changed by onCreateCommand\n")
    moved = advance(box.mirrors, "api", "main", {"README.md": "# api, moved on\n"}, tmp_path)

    result = clone(box, CloneTarget(name="api", mirror=f"{MIRRORS_DIR}/api.git", url=ORIGIN["api"], branch=BRANCH,
                                    base_sha=moved, branch_existed=False))

    assert result.code != 0
    assert "README.md" in result.err
    assert box.sh(f"test -e /workspace/api/{SPARE_MARKER} && echo spare") == "spare"  # a retry tries again


# --------------------------------------------------------------------------------------------
# startup_script


def one(command: str | list[str]) -> LifecycleCommand:
    return LifecycleCommand(commands={"": command})


def startup(box: Box, *, post_create: LifecycleCommand | None = None, post_start: LifecycleCommand | None = None,
            timeout_seconds: int = 60, keep_logs: int = 5, wait: float = 60) -> Run:
    script = startup_script(primary="api", post_create=post_create, post_start=post_start,
                            timeout_seconds=timeout_seconds, keep_logs=keep_logs)
    return box.run(script, timeout=wait)


@pytest.fixture
def primary(box: Box) -> Box:
    """/workspace/api with a startup script that counts its runs."""
    box.write("/workspace/api/.taskspace/startup.sh", 'echo "startup ran in $(pwd)"\necho run >> /workspace/runs\n')
    return box


def test_startup_runs_post_create_once_and_the_rest_every_time(primary):
    hooks = {"post_create": one("echo created >> /workspace/created"),
             "post_start": one(["/bin/sh", "-c", "echo started >> /workspace/started"])}

    first = startup(primary, **hooks)
    second = startup(primary, **hooks)

    assert (first.code, second.code) == (0, 0)
    assert parse_status(first.err) == [("postCreateCommand", "0"), ("postStartCommand", "0"), ("startup.sh", "0")]
    assert parse_status(second.err) == [("postStartCommand", "0"), ("startup.sh", "0")]
    assert primary.sh("cat /workspace/created") == "created"
    assert primary.sh("cat /workspace/started") == "started\nstarted"
    assert primary.sh("cat /workspace/runs") == "run\nrun"
    assert primary.sh(f"test -e {POST_CREATE_DONE} && echo done") == "done"
    assert first.out == second.out == ""  # everything else goes to the log

    log = primary.read(STARTUP_LOG).decode()
    previous = primary.read(STARTUP_LOG + ".1").decode()
    assert log.startswith("# startup at ")
    assert "==> postCreateCommand" not in log
    assert "==> postStartCommand" in log
    assert "startup ran in /workspace/api" in log
    assert "<== .taskspace/startup.sh exited with code 0" in log
    assert "==> postCreateCommand" in previous
    assert "<== postCreateCommand exited with code 0" in previous


def test_startup_stops_at_the_first_failing_step(primary):
    result = startup(primary, post_create=one("echo creating; exit 0"),
                     post_start=one("echo broken >&2; exit 3"))

    assert result.code == 3
    assert parse_status(result.err) == [("postCreateCommand", "0"), ("postStartCommand", "3")]
    assert primary.run("test -e /workspace/runs").code == 1  # startup.sh did not run
    log = primary.read(STARTUP_LOG).decode()
    assert "broken" in log
    assert "<== postStartCommand exited with code 3" in log


def test_a_failed_post_create_runs_again_on_the_next_start(primary):
    primary.write("/workspace/attempts", "")
    hook = one("echo attempt >> /workspace/attempts; [ $(wc -l < /workspace/attempts) -ge 2 ]")

    first = startup(primary, post_create=hook)
    marked_after_failure = primary.run(f"test -e {POST_CREATE_DONE}").code == 0
    second = startup(primary, post_create=hook)
    third = startup(primary, post_create=hook)

    assert parse_status(first.err) == [("postCreateCommand", "1")]
    assert first.code == 1
    assert not marked_after_failure
    assert parse_status(second.err) == [("postCreateCommand", "0"), ("startup.sh", "0")]
    assert parse_status(third.err) == [("startup.sh", "0")]
    assert primary.sh("wc -l < /workspace/attempts") == "2"


def test_a_failing_startup_sh_sets_the_exit_code(box):
    box.write("/workspace/api/.taskspace/startup.sh", "echo about to fail\nexit 5\n")

    result = startup(box)

    assert result.code == 5
    assert parse_status(result.err) == [("startup.sh", "5")]
    assert "<== .taskspace/startup.sh exited with code 5" in box.read(STARTUP_LOG).decode()


def test_an_executable_startup_sh_runs_with_its_own_interpreter(box):
    box.write("/workspace/api/.taskspace/startup.sh", "#!/bin/bash\n[[ -n $BASH_VERSION ]] && echo in-bash\n",
              executable=True)

    result = startup(box)

    assert result.code == 0, box.read(STARTUP_LOG)
    assert "in-bash" in box.read(STARTUP_LOG).decode()


def test_without_startup_sh_the_status_says_none(box):
    box.sh("mkdir -p /workspace/api")

    result = startup(box, post_start=one("true"))

    assert result.code == 0
    assert parse_status(result.err) == [("postStartCommand", "0"), ("startup.sh", "none")]


def test_without_the_primary_repository_startup_fails(box):
    result = startup(box)

    assert result.code == 1
    assert parse_status(result.err) == []


def test_named_commands_run_in_parallel_with_prefixed_output(primary):
    # Each waits for the other: they only finish if they run at the same time.
    def meet(me: str, other: str) -> str:
        up = f"/workspace/{other}-up"
        return (f"touch /workspace/{me}-up; for i in $(seq 100); do [ -e {up} ] && break; sleep 0.1; done; "
                f"[ -e {up} ] && echo from-{me}")

    hook = LifecycleCommand(commands={"a": meet("a", "b"), "b": ["/bin/sh", "-c", meet("b", "a")]})

    result = startup(primary, post_start=hook)

    assert result.code == 0
    assert parse_status(result.err) == [("postStartCommand", "0"), ("startup.sh", "0")]
    log = primary.read(STARTUP_LOG).decode()
    assert "[a] from-a" in log
    assert "[b] from-b" in log


def test_a_failing_named_command_stops_startup(primary):
    hook = LifecycleCommand(commands={"a": "echo from-a", "b": ["/bin/sh", "-c", "echo from-b; exit 4"]})

    result = startup(primary, post_start=hook)

    assert "[b] from-b" in primary.read(STARTUP_LOG).decode()
    assert result.code == 4
    assert parse_status(result.err) == [("postStartCommand", "4")]


def test_startup_returns_while_a_named_command_leaves_a_background_process(primary):
    hook = LifecycleCommand(commands={"server": "sleep 300 &", "other": "true"})

    result = startup(primary, post_start=hook, wait=5)

    assert result.code == 0


# Whether the exec's stderr (fd 3 of the runner) reached the command; dup'ing a closed fd fails.
def fd3_probe(label: str) -> str:
    return f'if (exec 9>&3) 2>/dev/null; then echo "{label}: fd 3 open"; else echo "{label}: fd 3 closed"; fi'


def test_startup_returns_while_a_background_process_it_started_keeps_running(box):
    # A child holding fd 3 would keep the exec's stderr open: the engine waits for it (docker
    # gives up after a grace period of a few seconds, and drops what the child writes later).
    box.write("/workspace/api/.taskspace/startup.sh",
              f"{fd3_probe('startup.sh')}\nsleep 300 &\necho server started\n")
    started = time.monotonic()

    result = startup(box, post_start=one(["/bin/sh", "-c", f"{fd3_probe('postStart')}; sleep 301 &"]), wait=30)

    elapsed = time.monotonic() - started
    assert result.code == 0
    assert parse_status(result.err) == [("postStartCommand", "0"), ("startup.sh", "0")]
    log = box.read(STARTUP_LOG).decode()
    assert "postStart: fd 3 closed" in log
    assert "startup.sh: fd 3 closed" in log
    assert elapsed < 10
    commands = [process[-1] for process in box.container.top(ps_args="-o pid,args")["Processes"]]
    assert {"sleep 300", "sleep 301"} <= set(commands)  # still running, detached from the exec


def test_startup_sh_is_stopped_at_its_timeout(box):
    box.write("/workspace/api/.taskspace/startup.sh", "echo slow\nsleep 60\n")
    started = time.monotonic()

    result = startup(box, timeout_seconds=1, wait=30)

    assert time.monotonic() - started < 15
    assert result.code == 124
    assert parse_status(result.err) == [("startup.sh", "124")]


def test_startup_logs_are_rotated_and_bounded(primary):
    for _ in range(5):
        assert startup(primary, keep_logs=3).code == 0

    logs = primary.sh("cd /workspace/.taskspace/logs && ls").split()

    assert logs == ["startup.log", "startup.log.1", "startup.log.2", "startup.log.3"]


@pytest.mark.parametrize(
    ("stderr", "expected"),
    [
        ("", []),
        ("TASKSPACE-STATUS startup.sh 0\n", [("startup.sh", "0")]),
        ("noise\nTASKSPACE-STATUS postCreateCommand 0\nmore noise\nTASKSPACE-STATUS startup.sh none\n",
         [("postCreateCommand", "0"), ("startup.sh", "none")]),
        ("TASKSPACE-STATUS postStartCommand 127  \r\n", [("postStartCommand", "127")]),
        ("  TASKSPACE-STATUS indented 1\nTASKSPACE-STATUSx 2\n", []),
    ],
)
def test_parse_status(stderr, expected):
    assert parse_status(stderr) == expected


# --------------------------------------------------------------------------------------------
# rescue_script


def rescue(box: Box, *, full: bool = False, name: str = "api") -> dict[str, str]:
    result = box.run(rescue_script(name=name, ticket="PAY-1", full=full))
    assert result.code == 0, result.err
    return dict(line.split(" ", 1) for line in result.out.splitlines())


def state_of(box: Box) -> dict[str, str]:
    """Everything a rescue must leave as it was: files, index, branch and HEAD."""
    repo = "git -C /workspace/api"
    return {
        "status": box.sh(f"{repo} status --porcelain --untracked-files=all"),
        "head": box.sh(f"{repo} rev-parse HEAD"),
        "branch": box.sh(f"{repo} symbolic-ref HEAD"),
        "staged": box.sh(f"{repo} diff --cached"),
        "unstaged": box.sh(f"{repo} diff"),
        "files": box.sh("cd /workspace/api && find . -path ./.git -prune -o -type f -print | sort | xargs sha1sum"),
    }


def fetch_bundle(box: Box, bundle_path: str, tmp_path: Path, *, into: Path | None = None) -> tuple[Path, str]:
    """Copy the bundle out, verify it against ``into`` (default: the api mirror) and fetch it there."""
    local = tmp_path / "rescue.bundle"
    local.write_bytes(box.read(bundle_path))
    repo = into or box.mirrors / "api.git"
    verified = host_git("bundle", "verify", str(local), cwd=repo)
    host_git("fetch", "--quiet", str(local), "refs/taskspace/rescue-tip:refs/heads/rescued", cwd=repo)
    return repo, verified


def test_rescue_of_a_clean_clone_has_nothing_to_bundle(box):
    assert clone(box, target(box.mirrors)).code == 0

    report = rescue(box)

    assert report == {"BRANCH": BRANCH, "TIP": sha(box.mirrors, "api", "main"), "DIRTY": "0", "BUNDLE": "none"}


def test_rescue_skips_what_is_not_a_finished_clone(box):
    assert rescue(box) == {"SKIP": "no-repository"}
    box.sh("mkdir -p /workspace/api/.git")
    assert rescue(box) == {"SKIP": "incomplete-clone"}


def test_rescue_snapshots_uncommitted_work_without_touching_the_repository(box, tmp_path):
    assert clone(box, target(box.mirrors)).code == 0
    box.write("/workspace/api/README.md", "# api\nstaged line\n")
    box.sh("git -C /workspace/api add README.md")
    box.write("/workspace/api/README.md", "# api\nstaged line\nunstaged line\n")
    box.write("/workspace/api/src/new_module.py", "NEW = 1\n")  # untracked
    box.sh("git -C /workspace/api rm --quiet src/app.py")
    before = state_of(box)

    report = rescue(box)

    assert state_of(box) == before
    assert report["BRANCH"] == BRANCH
    assert report["DIRTY"] == "1"
    assert report["TIP"] != before["head"]
    assert report["BUNDLE"] == "/workspace/.taskspace/rescue-api.bundle"
    assert box.sh("git -C /workspace/api rev-parse refs/taskspace/rescue-tip") == report["TIP"]

    repo, _ = fetch_bundle(box, report["BUNDLE"], tmp_path)
    assert host_git("rev-parse", "rescued", cwd=repo) == report["TIP"]
    assert host_git("rev-parse", "rescued^", cwd=repo) == before["head"]
    assert host_git("show", "rescued:README.md", cwd=repo) == "# api\nstaged line\nunstaged line"
    assert host_git("show", "rescued:src/new_module.py", cwd=repo) == "NEW = 1"
    assert "src/app.py" not in host_git("ls-tree", "-r", "--name-only", "rescued", cwd=repo)
    assert host_git("log", "-1", "--format=%an <%ae>|%s", "rescued", cwd=repo) == (
        "taskspace <taskspace@localhost>|Rescue uncommitted work of PAY-1 before purge"
    )


def test_rescue_is_repeatable(box):
    assert clone(box, target(box.mirrors)).code == 0
    box.write("/workspace/api/scratch.txt", "x\n")

    first = rescue(box)
    second = rescue(box)

    assert first["DIRTY"] == second["DIRTY"] == "1"
    assert first["BUNDLE"] == second["BUNDLE"] != "none"
    assert box.sh("ls /workspace/.taskspace") == "logs\nrescue-api.bundle"


def test_rescue_bundles_a_local_commit_missing_on_the_remote(box, tmp_path):
    assert clone(box, target(box.mirrors)).code == 0
    box.write("/workspace/api/feature.py", "DONE = True\n")
    box.sh("git -C /workspace/api add feature.py && git -C /workspace/api commit --quiet -m 'Add the feature'")
    head = box.sh("git -C /workspace/api rev-parse HEAD")
    before = state_of(box)

    report = rescue(box)

    assert state_of(box) == before
    assert report == {"BRANCH": BRANCH, "TIP": head, "DIRTY": "0", "BUNDLE": "/workspace/.taskspace/rescue-api.bundle"}
    repo, verified = fetch_bundle(box, report["BUNDLE"], tmp_path)
    assert "requires this ref" in verified  # only the new commit, on top of the remote's history
    assert host_git("rev-parse", "rescued", cwd=repo) == head
    assert host_git("log", "-1", "--format=%s", "rescued", cwd=repo) == "Add the feature"
    heads = host_git("bundle", "list-heads", str(tmp_path / "rescue.bundle"))
    assert f"{head} refs/heads/{BRANCH}" in heads


def test_a_full_rescue_bundles_everything(box, tmp_path):
    assert clone(box, target(box.mirrors)).code == 0

    report = rescue(box, full=True)

    assert report["DIRTY"] == "0"
    assert report["BUNDLE"] == "/workspace/.taskspace/rescue-api.bundle"
    empty = tmp_path / "empty.git"
    host_git("init", "--quiet", "--bare", str(empty))
    repo, verified = fetch_bundle(box, report["BUNDLE"], tmp_path, into=empty)
    assert "complete history" in verified
    assert host_git("rev-parse", "rescued", cwd=repo) == sha(box.mirrors, "api", "main")
    assert host_git("show", "rescued:README.md", cwd=repo) == "# api"


def test_a_prebuild_runs_on_create_and_update_content_once_and_the_claim_runs_the_rest(primary):
    hooks = {"on_create": one("echo created >> /workspace/on-create"),
             "update_content": one("echo updated >> /workspace/update-content"),
             "post_create": one("echo post-created >> /workspace/post-create"),
             "post_start": one("echo started >> /workspace/started")}
    script = partial(startup_script, primary="api", timeout_seconds=60, **hooks)

    prebuild = primary.run(script(prebuild=True))
    claimed = primary.run(script())
    restart = primary.run(script())

    assert prebuild.code == claimed.code == restart.code == 0
    assert parse_status(prebuild.err) == [("onCreateCommand", "0"), ("updateContentCommand", "0")]
    assert parse_status(claimed.err) == [("postCreateCommand", "0"), ("postStartCommand", "0"), ("startup.sh", "0")]
    assert parse_status(restart.err) == [("postStartCommand", "0"), ("startup.sh", "0")]
    assert primary.sh("cat /workspace/on-create /workspace/update-content /workspace/post-create") == \
        "created\nupdated\npost-created"
    assert primary.sh("cat /workspace/runs") == "run\nrun"  # not in the prebuild
    assert primary.sh(f"test -e {ON_CREATE_DONE} && echo done") == "done"
    assert primary.read(STARTUP_LOG + ".2").decode().startswith("# prebuild at ")


def test_a_launch_without_a_pool_runs_every_lifecycle_command_in_order(primary):
    order = {name: one(f"echo {name} >> /workspace/order")
             for name in ("on_create", "update_content", "post_create", "post_start")}

    result = primary.run(startup_script(primary="api", timeout_seconds=60, **order))

    assert result.code == 0
    assert primary.sh("cat /workspace/order") == "on_create\nupdate_content\npost_create\npost_start"
