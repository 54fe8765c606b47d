"""A real taskspace server in a subprocess, for end-to-end tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``taskspace up [--no-demo]`` on loopback with its own data dir (and database).

    Workspaces and image builds use host networking, so everything stays on loopback.
    ``env`` adds or overrides ``TASKSPACE_*`` settings (e.g. ``TASKSPACE_FAILPOINTS``).
    The output of every run goes to ``log_path``. ``kill()`` is SIGKILL: nothing gets to clean up.
    """

    def __init__(self, data_dir: Path, *, database_url: str | None = None, docker_host: str | None = None,
                 env: dict[str, str] | None = None, demo: bool = False):
        self.demo = demo
        self.data_dir = data_dir
        self.database_url = database_url
        self.docker_host = docker_host
        self.env = dict(env or {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._api: httpx.Client | None = None
        self.installation = ""

    def environment(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKSPACE_")}
        env |= {
            "TASKSPACE_DATA_DIR": str(self.data_dir),
            "TASKSPACE_CONFIG": str(self.data_dir / "no-such-taskspace.toml"),
            "TASKSPACE_WORKSPACE_NETWORK": "host",
            "TASKSPACE_BUILD_NETWORK": "host",
            "TASKSPACE_RECONCILE_INTERVAL": "2",
            "TASKSPACE_LEASE_SECONDS": "15",
            "TASKSPACE_LOG_LEVEL": "INFO",
        }
        if self.database_url:
            env["TASKSPACE_DATABASE_URL"] = self.database_url
        if self.docker_host:
            env["DOCKER_HOST"] = self.docker_host
        return env | self.env | overrides

    def start(self, timeout: float = 60, **overrides: str) -> Self:
        """Start and wait until /api/v1/health answers. ``overrides`` apply to this run only."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {time.strftime('%H:%M:%S')} {overrides}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "taskspace", "up", *([] if self.demo else ["--no-demo"]),
                 "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.environment(**overrides), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"taskspace up exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                health = httpx.get(f"{self.url}/api/v1/health", timeout=1)
                if health.status_code == 200:
                    self.installation = health.json()["installation"]
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"taskspace up did not answer within {timeout}s:\n{self.log()[-3000:]}")

    @property
    def token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    @property
    def api(self) -> httpx.Client:
        """An API client authenticated as the admin (base URL /api/v1)."""
        if self._api is None:
            self._api = httpx.Client(base_url=f"{self.url}/api/v1", timeout=120,
                                     headers={"Authorization": f"Bearer {self.token}"})
        return self._api

    def cli_env(self) -> dict[str, str]:
        return {"TASKSPACE_URL": self.url, "TASKSPACE_TOKEN": self.token,
                "TASKSPACE_DATA_DIR": str(self.data_dir)}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the server (and nothing else): what a crash or an OOM kill does."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def wait_for(self, ref: str, states: set[str], timeout: float = 120) -> dict[str, Any]:
        """Poll the workspace until its state is one of ``states``; returns it."""
        deadline = time.monotonic() + timeout
        ws: dict[str, Any] = {}
        while time.monotonic() < deadline:
            response = self.api.get(f"/workspaces/{ref}")
            if response.status_code == 200:
                ws = response.json()
                if ws["state"] in states:
                    return ws
            time.sleep(0.1)
        raise TimeoutError(f"workspace {ref} stayed {ws.get('state')} (step {ws.get('step')}); wanted {states}")
