"""Facts about the machine and the checkout a benchmark ran on, for the results file."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _git(repo: Path, *args: str) -> str | None:
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def facts(repo: Path, client: docker.DockerClient) -> dict[str, Any]:
    """CPU model and count, memory, kernel, OS, Docker and Python versions, the checkout's git
    sha (and whether it had uncommitted changes), and what else the engine was running."""
    try:
        engine = client.version()
        docker_version = engine.get("Version")
    except docker.errors.DockerException as exc:
        docker_version = f"unavailable: {exc}"
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "kernel": platform.release(),
        "os": _os_release(),
        "docker_version": docker_version,
        "python_version": sys.version.split()[0],
        "git_sha": _git(repo, "rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "load_average_at_start": load_average(),
        "containers_running_at_start": len(client.containers.list()),
    }
