"""The peer: ``git clone`` of the fixture's two repositories plus ``devcontainer up`` of the
reference devcontainer CLI (npm package ``@devcontainers/cli``) on an equivalent
``devcontainer.json``, which builds the same Dockerfile, joins the host network and runs the
same startup script after start.

Both repositories are cloned under one workspace folder (``<folder>/api``, ``<folder>/web``),
the layout a multi-repository devcontainer setup uses, and the folder holds the
``.devcontainer/devcontainer.json``. Credentials reach git through an inline credential helper
that reads them from the environment: never in a URL or on a command line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors

from bench.fixture import GIT_USER, PRIMARY, SECONDARY, Fixture, Log

PACKAGE = "@devcontainers/cli"
LOCAL_FOLDER_LABEL = "devcontainer.local_folder"
# Prints the credentials from the environment when git asks for them ("get"), nothing otherwise.
_CREDENTIAL_HELPER = ('!f() { test "$1" = get || exit 0; echo "username=$BENCH_GIT_USERNAME"; '
                      'echo "password=$BENCH_GIT_PASSWORD"; }; f')


def devcontainer_json() -> dict[str, Any]:
    """The peer's configuration, equivalent to what taskspace reads from the primary repository."""
    return {
        "name": "bench",
        "build": {"dockerfile": f"../{PRIMARY}/Dockerfile", "context": f"../{PRIMARY}"},
        "runArgs": ["--network=host"],
        # The working directory of lifecycle commands is the workspace folder.
        "postStartCommand": f"cd {PRIMARY} && sh .taskspace/startup.sh",
    }


@dataclass
class PeerRun:
    ok: bool
    wall_seconds: float
    clone_seconds: float
    up_seconds: float
    error: str | None = None
    images_left: int = 0

    def as_sample(self) -> dict[str, Any]:
        sample: dict[str, Any] = {"ok": self.ok, "wall_seconds": round(self.wall_seconds, 4),
                                  "steps": {"clone": round(self.clone_seconds, 4), "up": round(self.up_seconds, 4)}}
        if self.error:
            sample["error"] = self.error
        if self.images_left:
            sample["images_left_before_cold_run"] = self.images_left
        return sample


class Peer:
    """Installs the devcontainer CLI once into ``cache`` and runs the peer's launches."""

    def __init__(self, fixture: Fixture, cache: Path, log: Log):
        self.fixture = fixture
        self.cache = cache
        self.log = log
        self.cli = cache / "node_modules" / ".bin" / "devcontainer"
        self.folder = fixture.root / "peer" / "ws"
        self.facts: dict[str, Any] = {}

    def prepare(self) -> str | None:
        """Install the CLI if needed and check it runs; returns why it cannot, or None."""
        node, npm, docker_cli = shutil.which("node"), shutil.which("npm"), shutil.which("docker")
        if docker_cli is None:
            return "the docker command-line client is not installed; the devcontainer CLI drives the engine with it"
        if node is None:
            return "Node.js is not installed (the devcontainer CLI is a Node.js program)"
        if not self.cli.exists():
            if npm is None:
                return "npm is not installed, so the devcontainer CLI cannot be installed"
            self.log(f"installing {PACKAGE} into {self.cache} (once)")
            self.cache.mkdir(parents=True, exist_ok=True)
            result = subprocess.run([npm, "install", "--prefix", str(self.cache), "--no-audit", "--no-fund", PACKAGE],
                                    capture_output=True, text=True, timeout=600, check=False)
            if result.returncode != 0 or not self.cli.exists():
                tail = " ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
                return f"npm install {PACKAGE} failed (exit {result.returncode}): {tail[:400]}"
        version = subprocess.run([str(self.cli), "--version"], capture_output=True, text=True, timeout=60,
                                 check=False)
        if version.returncode != 0:
            return f"devcontainer --version failed: {(version.stderr or version.stdout).strip()[:400]}"
        floor = []
        for _ in range(3):  # the CLI's own start-up, for comparison with taskspace's CLI floor
            started = time.perf_counter()
            subprocess.run([str(self.cli), "--version"], capture_output=True, timeout=60, check=False)
            floor.append(round(time.perf_counter() - started, 4))
        buildx = subprocess.run(["docker", "buildx", "version"], capture_output=True, text=True, check=False)
        self.facts = {
            "cli": PACKAGE, "cli_version": version.stdout.strip(),
            "node_version": subprocess.run([node, "--version"], capture_output=True, text=True,
                                           check=False).stdout.strip(),
            "builder": "buildx" if buildx.returncode == 0 else "classic docker build (no buildx on this machine)",
            "cli_version_seconds": sorted(floor)[1],
            "devcontainer_json": devcontainer_json(),
            "layout": f"<folder>/{PRIMARY}, <folder>/{SECONDARY}, <folder>/.devcontainer/devcontainer.json",
        }
        return None

    def _git_env(self) -> dict[str, str]:
        return os.environ | {"BENCH_GIT_USERNAME": GIT_USER, "BENCH_GIT_PASSWORD": self.fixture.secret,
                             "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1",
                             "GIT_CONFIG_GLOBAL": os.devnull}

    def remove_containers(self) -> None:
        client = self.fixture.docker
        for container in client.containers.list(all=True, filters={"label": f"{LOCAL_FOLDER_LABEL}={self.folder}"}):
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass

    def run(self, *, cold: bool, branch: str) -> PeerRun:
        """One launch: clone both repositories on ``branch``, then ``devcontainer up``. Cold
        first removes every image of the fixture (the peer's ``vsc-…`` images and taskspace's,
        which share their layers). The container is removed afterwards, whatever happened."""
        self.remove_containers()
        shutil.rmtree(self.folder, ignore_errors=True)
        images_left = 0
        if cold:
            self.fixture.remove_images()
            images_left = len(self.fixture.docker.images.list(
                all=True, filters={"label": f"bench.fixture={self.fixture.nonce}"}))
        self.folder.mkdir(parents=True)
        env = self._git_env()
        started = time.perf_counter()
        try:
            for name, url in zip((PRIMARY, SECONDARY), self.fixture.repo_urls, strict=True):
                clone = subprocess.run(
                    ["git", "-c", "credential.helper=", "-c", f"credential.helper={_CREDENTIAL_HELPER}",
                     "clone", "--quiet", url, str(self.folder / name)],
                    env=env, capture_output=True, text=True, timeout=300, check=False)
                if clone.returncode != 0:
                    return PeerRun(False, time.perf_counter() - started, time.perf_counter() - started, 0.0,
                                   f"git clone {name} failed: {clone.stderr.strip()[-400:]}", images_left)
                switch = subprocess.run(["git", "-C", str(self.folder / name), "switch", "--quiet", "-c", branch],
                                        env=env, capture_output=True, text=True, check=False)
                if switch.returncode != 0:
                    return PeerRun(False, time.perf_counter() - started, time.perf_counter() - started, 0.0,
                                   f"git switch -c {branch} in {name} failed: {switch.stderr.strip()[-400:]}",
                                   images_left)
            (self.folder / ".devcontainer").mkdir()
            (self.folder / ".devcontainer" / "devcontainer.json").write_text(json.dumps(devcontainer_json(), indent=2))
            cloned = time.perf_counter()
            up = subprocess.run([str(self.cli), "up", "--workspace-folder", str(self.folder)],
                                capture_output=True, text=True, timeout=900, check=False, stdin=subprocess.DEVNULL)
            finished = time.perf_counter()
            outcome = _outcome(up.stdout)
            if up.returncode != 0 or outcome.get("outcome") != "success":
                message = outcome.get("message") or outcome.get("description") or ""
                tail = " ".join(up.stderr.strip().splitlines()[-3:])
                return PeerRun(False, finished - started, cloned - started, finished - cloned,
                               f"devcontainer up failed (exit {up.returncode}): {message} {tail}"[:600], images_left)
            return PeerRun(True, finished - started, cloned - started, finished - cloned, None, images_left)
        finally:
            self.remove_containers()

    def close(self) -> None:
        self.remove_containers()
        shutil.rmtree(self.folder, ignore_errors=True)


def _outcome(stdout: str) -> dict[str, Any]:
    """The JSON result ``devcontainer up`` prints as its last line of standard output."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}
