"""Docker engines for tests: the shared one (started when none answers) and private ones.

Integration tests run against a real engine. ``ensure_docker_engine`` returns a client for the
engine ``docker.from_env()`` finds, starting ``dockerd`` when the machine has none running.
``PrivateEngine`` runs a second, throwaway ``dockerd`` for tests that must stop or restart the
engine without disturbing everything else that uses the shared one.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import docker
import docker.errors
import requests.exceptions

from taskspace.core.errors import BackendError

_POLL_INTERVAL = 0.2
# A unix socket path holds at most 107 bytes; the deepest one dockerd creates below the root is
# exec/containerd/containerd-debug.sock.
_MAX_ROOT_LENGTH = 107 - len("/exec/containerd/containerd-debug.sock")

# Engines started by ensure_docker_engine outlive the test session on purpose; holding the
# handles keeps Python from warning that a child is still running when they are collected.
_detached_engines: list[subprocess.Popen[bytes]] = []


def ensure_docker_engine(timeout: float = 60) -> docker.DockerClient:
    """Return a client for a Docker engine that answers a ping.

    Uses the engine ``docker.from_env()`` points at. When none answers, ``DOCKER_HOST`` is not
    set, ``dockerd`` is installed and this process is root, starts ``dockerd`` detached in its
    own session (log: ``<tmp>/taskspace-dockerd.log``) and waits up to ``timeout`` seconds for
    it. That engine keeps running after the caller exits, like one started by an init system.
    Concurrent callers on the host serialize on a lock file, so only one of them starts it.

    Raises ``BackendError`` when no engine answers and none can be started.
    """
    client = _connect(docker.from_env)
    if client is not None:
        return client

    dockerd = _which("dockerd")
    if dockerd is None or os.geteuid() != 0 or os.environ.get("DOCKER_HOST"):
        raise BackendError(
            f"No Docker engine answers at {os.environ.get('DOCKER_HOST', 'unix:///var/run/docker.sock')}.",
            hint="Start dockerd (or run the tests as root on a machine with dockerd installed, "
            "and they start it), or point DOCKER_HOST at a running engine.",
        )

    tmp = Path(tempfile.gettempdir())
    with open(tmp / "taskspace-dockerd.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        client = _connect(docker.from_env)
        if client is not None:
            return client
        log_path = tmp / "taskspace-dockerd.log"
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                [dockerd],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            client = _wait_for_engine(docker.from_env, process, log_path, timeout)
        except BackendError:
            if process.poll() is None:
                process.kill()
                process.wait()
            raise
        _detached_engines.append(process)
        return client


class PrivateEngine:
    """A ``dockerd`` of its own, with every path it writes under ``root``.

    It listens on ``unix://<root>/docker.sock`` only, keeps images and containers in
    ``<root>/data`` and state in ``<root>/exec``, starts its own containerd (below ``exec``)
    and reads ``<root>/daemon.json`` instead of ``/etc/docker/daemon.json``. It creates no
    bridge and no iptables rules, and runs in a network namespace of its own (loopback only), so
    containers on it must use ``network_mode="host"`` (or ``"none"``) and cannot reach the
    host's network. It does share ``/etc/docker/key.json`` with the main engine, so both report the
    same engine ID.

    ``stop()`` ends dockerd and its containerd, then unmounts what dockerd left mounted below
    ``root``; the data stays for the owner of ``root`` to delete. Live restore is off, so
    dockerd stops running containers as it shuts down, waiting up to each one's stop timeout
    (10 s for a PID 1 that ignores SIGTERM): remove containers first to keep it quick. Only if
    dockerd has to be killed (no exit within 60 s) can the ``containerd-shim`` of a container
    that still runs outlive ``stop()``; it is left alone, with its mounts, because killing it
    would orphan the container's processes.
    """

    def __init__(self, root: Path, *, timeout: float = 60) -> None:
        self.root = Path(root).absolute()
        if len(str(self.root)) > _MAX_ROOT_LENGTH:
            raise ValueError(
                f"PrivateEngine root {self.root} is longer than {_MAX_ROOT_LENGTH} characters; "
                "the engine's unix sockets below it would not fit. Use a shorter directory."
            )
        self.timeout = timeout
        self.log_path = self.root / "dockerd.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._client: docker.DockerClient | None = None

    @property
    def socket_url(self) -> str:
        """The engine's address, as ``DOCKER_HOST`` or ``DockerClient(base_url=...)`` take it."""
        return f"unix://{self.root}/docker.sock"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start dockerd and wait until it answers; does nothing if it is already running.

        Raises ``BackendError`` (with the end of ``dockerd.log``) if it exits or does not answer
        within ``timeout`` seconds.
        """
        if self.running:
            return
        dockerd = _which("dockerd")
        if dockerd is None or os.geteuid() != 0:
            raise BackendError(
                "Cannot start a private Docker engine: it needs dockerd and root.",
                hint="Install docker.io (Debian) and run the tests as root.",
            )
        self.root.mkdir(parents=True, exist_ok=True)
        config_file = self.root / "daemon.json"
        config_file.write_text(json.dumps({}))
        # Its own network namespace: a dockerd started with --bridge=none deletes the host's
        # docker0 interface, which would break the main engine's default network.
        argv = [
            "unshare", "--net", "--", "/bin/sh", "-c", 'ip link set lo up && exec "$@"', "dockerd",
            dockerd,
            f"--host={self.socket_url}",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'docker.pid'}",
            f"--config-file={config_file}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            # dockerd uses a system containerd (/run/containerd) when one runs, and the main
            # engine would then see this engine's containers in the shared "moby" namespace.
            "--containerd-namespace=taskspace-private",
            "--containerd-plugins-namespace=taskspace-private-plugins",
        ]
        with open(self.log_path, "ab") as log_file:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            client = _wait_for_engine(self._new_client, self._process, self.log_path, self.timeout)
        except BackendError:
            self._terminate()
            raise
        client.close()

    def client(self) -> docker.DockerClient:
        """A client for this engine; the same one on every call, valid across ``restart()``."""
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def restart(self) -> None:
        """Stop dockerd with SIGTERM, wait for it to exit, start it again and wait for a ping."""
        self._terminate()
        self.start()

    def stop(self) -> None:
        """Stop dockerd and its containerd. Safe to call when already stopped."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self._terminate()

    def processes(self) -> list[int]:
        """Pids of the processes serving this engine: dockerd, containerd and shims."""
        marker = str(self.root).encode() + b"/"
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:  # the process exited while being looked at
                continue
            if marker in cmdline:
                pids.append(int(entry.name))
        return pids

    def load_image_from(self, source_client: docker.DockerClient, ref: str) -> None:
        """Copy image ``ref`` from the engine of ``source_client`` into this one, tag included.

        The image is streamed from one engine to the other without a file in between.
        Raises ``docker.errors.ImageNotFound`` if the source engine does not have it.
        """
        image = source_client.images.get(ref)
        named: str | bool = ref if ref in image.tags else True
        self.client().images.load(image.save(named=named))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _new_client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.socket_url)

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                # dockerd waits up to each running container's stop timeout before it exits.
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._kill_leftover_containerd()
        if not self.processes():
            # dockerd leaves its network namespace (exec/netns/default) bind-mounted, which
            # would keep root from being deleted. With nothing left running, no mount is in use.
            _unmount_below(self.root)

    def _kill_leftover_containerd(self) -> None:
        """Kill the managed containerd if dockerd died without stopping it (SIGKILL, crash)."""
        pid_file = self.root / "exec" / "containerd" / "containerd.pid"
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        if pid not in self.processes():  # gone, or the pid now belongs to someone else
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while pid in self.processes() and time.monotonic() < deadline:
            time.sleep(_POLL_INTERVAL)
        if pid in self.processes():
            os.kill(pid, signal.SIGKILL)


def _unmount_below(path: Path) -> None:
    prefix = str(path) + "/"
    with open("/proc/self/mounts") as mounts:
        targets = [line.split()[1] for line in mounts]
    for target in sorted((t for t in targets if t.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "--lazy", target], check=False, capture_output=True)


def _which(program: str) -> str | None:
    # dockerd lives in /usr/sbin or /usr/bin depending on the package; sbin is not always on PATH.
    return shutil.which(program, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def _connect(factory: Callable[[], docker.DockerClient]) -> docker.DockerClient | None:
    """A client from ``factory`` if its engine answers a ping, else None."""
    try:
        client = factory()
    except docker.errors.DockerException:
        return None
    try:
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        client.close()
        return None
    return client


def _wait_for_engine(
    factory: Callable[[], docker.DockerClient],
    process: subprocess.Popen[bytes],
    log_path: Path,
    timeout: float,
) -> docker.DockerClient:
    deadline = time.monotonic() + timeout
    while True:
        client = _connect(factory)
        if client is not None:
            return client
        if process.poll() is not None:
            raise BackendError(
                f"dockerd exited with status {process.returncode} while starting:\n{_tail(log_path)}",
                hint=f"See {log_path} for the full log.",
            )
        if time.monotonic() > deadline:
            raise BackendError(
                f"dockerd did not answer within {timeout:.0f} s:\n{_tail(log_path)}",
                hint=f"See {log_path} for the full log.",
            )
        time.sleep(_POLL_INTERVAL)


def _tail(path: Path, lines: int = 10) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
