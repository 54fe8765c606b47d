"""Smoke test of the benchmarks: ``python -m bench all --quick`` runs every scenario once at a
small scale and writes a complete results file and chart. Nothing here asserts on speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

REPO = Path(__file__).resolve().parent.parent


def test_bench_all_quick_writes_every_scenario(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKSPACE_")}
    if os.environ.get("TASKSPACE_TEST_DEBIAN_MIRROR"):
        env["TASKSPACE_TEST_DEBIAN_MIRROR"] = os.environ["TASKSPACE_TEST_DEBIAN_MIRROR"]
    result = subprocess.run([sys.executable, "-m", "bench", "all", "--quick", "--output", str(tmp_path)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=540, check=False)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"

    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1, files
    results = json.loads(files[0].read_text())
    assert files[0].with_suffix(".png").stat().st_size > 10_000
    machine = results["machine"]
    for fact in ("cpu_model", "cpu_count", "memory_bytes", "kernel", "docker_version", "python_version", "git_sha"):
        assert machine[fact], fact

    scenarios = results["scenarios"]
    assert set(scenarios) == {"ttr", "concurrency", "scale"}
    for name, scenario in scenarios.items():
        assert "error" not in scenario, f"{name}: {scenario.get('traceback', scenario['error'])}"

    ttr = scenarios["ttr"]
    for name in ("taskspace_cold", "taskspace_warm", "taskspace_resume"):
        samples = ttr["series"][name]["samples"]
        assert samples and all(s["ok"] for s in samples), (name, samples)
        assert ttr["series"][name]["wall_seconds"]["p50"] > 0
    pool = ttr["series"]["taskspace_pool"]
    assert pool["samples"] or (pool.get("skipped") and not ttr["pool"]["supported"]), pool
    for name in ("peer_cold", "peer_warm"):
        series = ttr["series"][name]
        if ttr["peer"]["available"]:
            assert series["samples"], name
        else:
            assert ttr["peer"]["reason"] and series["skipped"], ttr["peer"]

    concurrency = scenarios["concurrency"]
    assert concurrency["samples"] and concurrency["peak_rss_server_bytes"] > 0
    assert len(concurrency["samples"]) == concurrency["launches"]

    for database in ("sqlite", "postgresql"):
        db = scenarios["scale"]["databases"][database]
        assert db["board_page"]["samples"] and db["workspaces_api"]["samples"], database
        assert db["reconcile"]["passes"] and db["reconcile"]["engine_requests_per_pass"] > 0, database
