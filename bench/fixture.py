"""The one fixture every scenario uses, and a taskspace server driven through its CLI and API.

The fixture is a project of two repositories served by the authenticated git smart-HTTP server
on loopback: ``api`` (primary: a Dockerfile on the locally built Debian base image and a
``.taskspace/startup.sh``) and ``web``. No dependency services, so the comparison with the
devcontainer peer stays fair. The Dockerfile carries a label unique to this benchmark run, so
its layers are shared with no other image on the engine: removing the images that carry it
(:meth:`Fixture.remove_images`) makes the next build really cold.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx

from taskspace.plugins.backends.docker.base_image import ensure_base_image
from taskspace.testing.engine import ensure_docker_engine
from taskspace.testing.git_server import GitHttpServer
from taskspace.testing.server import ServerProcess

FIXTURE_LABEL = "bench.fixture"
GIT_USER = "bench"
PRIMARY, SECONDARY = "api", "web"

STARTUP_SCRIPT = textwrap.dedent("""\
    #!/bin/sh
    # Runs in the primary repository on every start. Idempotent: it checks that both
    # repositories are in place and leaves a mark in the user's home.
    set -e
    test -f Dockerfile
    test -f ../web/index.html
    echo "started $(date +%s)" >> "${HOME:-/tmp}/.bench-startup-runs"
    echo "startup done"
    """)

Log = Callable[[str], None]


def dockerfile(base_image: str, nonce: str) -> str:
    return (f"FROM {base_image}\n"
            f"LABEL {FIXTURE_LABEL}={nonce}\n"
            "RUN useradd --create-home dev\n"
            "USER dev\n"
            "WORKDIR /workspace\n")


@dataclass
class Fixture:
    """The engine, the base image, the git server with the two repositories, a scratch dir."""

    root: Path
    docker: docker.DockerClient
    base_image: str
    git: GitHttpServer
    nonce: str
    log: Log
    #: Where the CLI's compiled bytecode is cached (None: run the CLI as the environment says).
    pycache: Path | None = None

    @property
    def secret(self) -> str:
        return self.git.users[GIT_USER]

    @property
    def repo_urls(self) -> list[str]:
        return [self.git.url(f"bench-{self.nonce}/{PRIMARY}"), self.git.url(f"bench-{self.nonce}/{SECONDARY}")]

    def remove_images(self) -> list[str]:
        """Remove every image built from the fixture's Dockerfile, by taskspace or the peer
        (its ``vsc-…`` images included), with the untagged layers under them. Containers using
        them must be gone first. Returns the removed tags."""
        removed: list[str] = []
        attempts = 4
        for attempt in range(attempts):
            images = self.docker.images.list(all=True, filters={"label": f"{FIXTURE_LABEL}={self.nonce}"})
            if not images:
                break
            # Tagged images first: an untagged parent goes with its last child, or on a later round.
            for image in sorted(images, key=lambda i: not i.tags):
                try:
                    self.docker.images.remove(image.id, force=True)
                    removed += image.tags
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as exc:
                    if attempt == attempts - 1:
                        self.log(f"could not remove image {image.tags or image.short_id}: {exc.explanation}")
        return removed


@contextmanager
def fixture(log: Log, *, pycache: Path | None = None) -> Iterator[Fixture]:
    """Start the engine if needed, build the base image if missing, serve the two
    repositories; on exit stop the git server, remove the fixture's images and the scratch dir.
    ``pycache``: see :meth:`BenchServer.cli_env`."""
    client = ensure_docker_engine()
    lock_dir = Path(tempfile.gettempdir()) / "taskspace-locks"
    base = ensure_base_image(client, mirror=os.environ.get("TASKSPACE_TEST_DEBIAN_MIRROR") or None,
                             lock_dir=lock_dir, log=log)
    # Short: unix socket paths (the engine proxy) must fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="tsbench-"))
    nonce = secrets.token_hex(4)
    git = GitHttpServer(root / "git", {GIT_USER: secrets.token_urlsafe(16)})
    git.start()
    made = Fixture(root=root, docker=client, base_image=base, git=git, nonce=nonce, log=log, pycache=pycache)
    try:
        git.create_repo(f"bench-{nonce}/{PRIMARY}", {
            "README.md": "# api\n",
            "Dockerfile": dockerfile(base, nonce),
            ".taskspace/startup.sh": STARTUP_SCRIPT,
        }, executable=[".taskspace/startup.sh"])
        git.create_repo(f"bench-{nonce}/{SECONDARY}", {"README.md": "# web\n", "index.html": "<h1>web</h1>\n"})
        yield made
    finally:
        git.stop()
        try:
            made.remove_images()
        except docker.errors.DockerException as exc:
            log(f"could not remove the fixture's images: {exc}")
        shutil.rmtree(root, ignore_errors=True)
        client.close()


def cli_path() -> Path:
    """The ``taskspace`` entry script installed in this virtual environment (not ``uv run``,
    whose own start-up would be measured too)."""
    path = Path(sys.executable).parent / "taskspace"
    if not path.exists():
        raise RuntimeError(f"{path} does not exist: run the benchmarks with the project's virtual "
                           "environment (uv run python -m bench ...).")
    return path


@dataclass
class CliRun:
    """One timed run of the CLI."""

    argv: list[str]
    seconds: float
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.stdout)
        except ValueError:
            return None

    def error(self) -> str:
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return " ".join(text[-3:])[:500] if text else f"exit code {self.code}"


@dataclass
class BenchServer:
    """A taskspace server (``taskspace up`` in a subprocess, own data dir and database) with the
    fixture's project registered, driven through its CLI and API as the admin."""

    fixture: Fixture
    name: str
    database_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    docker_host: str | None = None
    process: ServerProcess = field(init=False)
    project: str = field(init=False)
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.process = ServerProcess(self.fixture.root / self.name, database_url=self.database_url,
                                     env=self.env, docker_host=self.docker_host)
        suffix = secrets.token_hex(2)
        self.project = f"bench{self.fixture.nonce}{suffix}"
        self.key = ("B" + self.fixture.nonce[:4] + suffix).upper()[:10]

    # Life cycle ----------------------------------------------------------------------------------

    def start(self) -> BenchServer:
        self.process.start(timeout=120)
        return self

    def register(self) -> None:
        """Store the admin's git token for the git server's host and add the project."""
        host = self.fixture.git.base_url.removeprefix("http://")
        self.expect(self.api.post("/tokens", json={"name": "git", "host": host, "username": GIT_USER,
                                                   "secret": self.fixture.secret}), 201)
        self.expect(self.api.post("/projects", json={"name": self.project, "key": self.key,
                                                     "repos": self.fixture.repo_urls}), 201)

    def stop(self) -> None:
        self.process.stop()

    def remove_engine_resources(self) -> None:
        """Remove whatever this installation still has on the engine (teardown)."""
        installation = self.process.installation
        if not installation:
            return
        client = self.fixture.docker
        label = {"label": [f"taskspace.installation={installation}"]}
        for container in client.containers.list(all=True, filters=label):
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
        for network in client.networks.list(filters=label):
            try:
                network.remove()
            except docker.errors.APIError:
                pass
        for volume in client.volumes.list(filters=label):
            try:
                volume.remove(force=True)
            except docker.errors.APIError:
                pass

    @property
    def api(self) -> httpx.Client:
        return self.process.api

    @property
    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid

    @property
    def mirrors_dir(self) -> Path:
        return self.process.data_dir / "mirrors"

    @staticmethod
    def expect(response: httpx.Response, *codes: int) -> Any:
        if response.status_code not in codes:
            raise RuntimeError(f"{response.request.method} {response.request.url.path} answered "
                               f"{response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None

    # Tickets and workspaces ----------------------------------------------------------------------

    def ticket(self, title: str) -> str:
        body = {"project": self.project, "title": title, "assignee": "admin"}
        return self.expect(self.api.post("/tickets", json=body), 201)["key"]

    def workspace(self, ref: str) -> dict[str, Any]:
        return self.expect(self.api.get(f"/workspaces/{ref}"), 200)

    def events(self, ref: str, after: int = 0) -> list[dict[str, Any]]:
        return self.expect(self.api.get(f"/workspaces/{ref}/events", params={"after": after}), 200)["events"]

    def last_event_id(self, ref: str) -> int:
        events = self.events(ref)
        return events[-1]["id"] if events else 0

    def wait_for(self, ref: str, states: set[str], timeout: float = 300) -> dict[str, Any]:
        return self.process.wait_for(ref, states | {"failed", "purge_blocked"}, timeout)

    def request(self, ref: str, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.expect(self.api.post(f"/workspaces/{ref}/{action}", json=body), 202)

    def purge_all(self, refs: list[str], timeout: float = 300) -> list[str]:
        """Purge workspaces without rescuing (nothing in them is worth keeping) and wait for
        all; returns the problems met."""
        problems = []
        asked = []
        for ref in refs:
            response = self.api.post(f"/workspaces/{ref}/purge", json={"discard_unpushed": True})
            if response.status_code == 202:
                asked.append(ref)
            elif response.status_code != 404:
                problems.append(f"purge {ref}: {response.status_code} {response.text[:200]}")
        deadline = time.monotonic() + timeout
        for ref in asked:
            try:
                ws = self.wait_for(ref, {"purged"}, max(1.0, deadline - time.monotonic()))
                if ws["state"] != "purged":
                    problems.append(f"purge {ref}: {ws['state']} ({ws.get('failure_reason')})")
            except TimeoutError as exc:
                problems.append(str(exc))
        return problems

    def workspaces(self, **params: str) -> list[dict[str, Any]]:
        """``GET /api/v1/workspaces`` with ``params``, every page."""
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            body = self.expect(self.api.get("/workspaces", params={**params, **({"cursor": cursor} if cursor else {}),
                                                                   "limit": "500"}), 200)
            found += body["items"]
            cursor = body.get("next_cursor")
            if not cursor:
                return found

    def active_workspaces(self) -> list[str]:
        return [w["id"] for w in self.workspaces(everyone="true") if w["state"] != "purged"]

    # The CLI ---------------------------------------------------------------------------------------

    def cli_env(self, *, bytecode_cache: bool = True) -> dict[str, str]:
        """The CLI's environment: the server's URL and the admin's token. With the fixture's
        ``pycache``, Python may keep compiled bytecode there, as an installed program does
        (``PYTHONDONTWRITEBYTECODE`` and an installer that compiles nothing would otherwise make
        every run compile every module it imports); ``bytecode_cache=False`` runs as is."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKSPACE_")}
        if bytecode_cache and self.fixture.pycache is not None:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(self.fixture.pycache)
        return env | {"TASKSPACE_URL": self.process.url, "TASKSPACE_TOKEN": self.process.token}

    def cli(self, *args: str, timeout: float = 900, bytecode_cache: bool = True) -> CliRun:
        """Run ``taskspace ARGS`` as a subprocess; the wall clock is the CLI's, start to exit."""
        argv = [str(cli_path()), *args]
        env = self.cli_env(bytecode_cache=bytecode_cache)
        started = time.perf_counter()
        try:
            result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                                    stdin=subprocess.DEVNULL, check=False)
            code, stdout, stderr = result.returncode, result.stdout, result.stderr
        except subprocess.TimeoutExpired as exc:
            code = -1
            stdout = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            stderr = f"timed out after {timeout}s"
        return CliRun(argv=list(args), seconds=time.perf_counter() - started, code=code, stdout=stdout,
                      stderr=stderr)


def events_since(events: list[dict[str, Any]], since: datetime) -> list[dict[str, Any]]:
    """The events recorded at or after ``since`` (a spare of the warm pool brings the events
    of its build, which happened before the launch)."""
    edge = since - timedelta(milliseconds=50)
    return [e for e in events if datetime.fromisoformat(e["at"]) >= edge]


def step_breakdown(events: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per step (``preflight``, ``image``, ``clone``, ``startup``...) from the step
    events; a step that ran twice (a resume after a restart) is added up."""
    steps: dict[str, float] = {}
    for event in events:
        if event["kind"] == "step" and event.get("duration_ms") is not None and event.get("status") != "started":
            steps[event["step"]] = round(steps.get(event["step"], 0.0) + event["duration_ms"] / 1000, 4)
    return steps


def ready_transition_seconds(events: list[dict[str, Any]]) -> float | None:
    """The duration the server recorded on the last transition to ``ready``."""
    for event in reversed(events):
        if event["kind"] == "transition" and event.get("to_state") == "ready" and event.get("duration_ms") is not None:
            return event["duration_ms"] / 1000
    return None
