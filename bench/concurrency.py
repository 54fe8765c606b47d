"""Concurrent launches: N tickets launched at the same instant through the API
(``POST /api/v1/workspaces``, one thread each), each followed to ready by long-polling its
events the way the CLI does. Reports time to ready, the failures and their reasons, and the
peak RSS of the server process (alone, and with its children: git and the like). The image
and the mirrors are warm (one launch before, not counted); everything is purged afterwards.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from bench.fixture import BenchServer, Fixture, Log, step_breakdown
from bench.rss import RssSampler, rss_bytes
from bench.stats import summarize


def _follow(client: httpx.Client, key: str, barrier: threading.Barrier, timeout: float) -> dict[str, Any]:
    barrier.wait()
    started = time.perf_counter()
    response = client.post("/workspaces", json={"key": key})
    accepted = time.perf_counter() - started
    if response.status_code not in (200, 201):
        return {"key": key, "ok": False, "wall_seconds": round(accepted, 4),
                "error": f"launch answered {response.status_code}: {response.text[:300]}"}
    ws = response.json()
    after = 0
    deadline = started + timeout
    while time.perf_counter() < deadline:
        page = client.get(f"/workspaces/{ws['id']}/events", params={"after": after, "wait": 20}, timeout=60)
        if page.status_code != 200:
            return {"key": key, "ok": False, "wall_seconds": round(time.perf_counter() - started, 4),
                    "error": f"events answered {page.status_code}: {page.text[:300]}"}
        body = page.json()
        if body["events"]:
            after = body["events"][-1]["id"]
        ws = body["workspace"]
        if ws["state"] in {"ready", "failed", "purge_blocked", "purged"}:
            break
    elapsed = time.perf_counter() - started
    sample = {"key": key, "id": ws["id"], "wall_seconds": round(elapsed, 4), "accepted_seconds": round(accepted, 4),
              "ok": ws["state"] == "ready", "ready_seconds": ws.get("ready_seconds")}
    if ws["state"] != "ready":
        sample["error"] = (f"{ws['state']} at {ws.get('failure_step')}: {ws.get('failure_reason')}"
                           if ws["state"] == "failed" else f"still {ws['state']} after {timeout:.0f} s")
    return sample


def run(fixture: Fixture, *, launches: int, log: Log, timeout: float = 600) -> dict[str, Any]:
    server = BenchServer(fixture, "concurrency")
    result: dict[str, Any] = {"launches": launches, "via": "API: POST /api/v1/workspaces, then long-polled events"}
    try:
        log("concurrency: starting a server")
        server.start()
        server.register()
        warmup_key = server.ticket("Warm-up launch")
        server.expect(server.api.post("/workspaces", json={"key": warmup_key}), 201)
        warm = server.wait_for(warmup_key, {"ready"})
        result["warmup_ready_seconds"] = warm.get("ready_seconds")
        server.purge_all([warm["id"]])
        keys = [server.ticket(f"Concurrent launch {i}") for i in range(1, launches + 1)]
        time.sleep(1)
        result["rss_before_bytes"] = rss_bytes(server.pid)

        barrier = threading.Barrier(launches)
        samples: list[dict[str, Any]] = [{} for _ in keys]
        headers = {"Authorization": f"Bearer {server.process.token}"}

        def one(index: int, key: str) -> None:
            with httpx.Client(base_url=f"{server.process.url}/api/v1", headers=headers, timeout=120) as client:
                try:
                    samples[index] = _follow(client, key, barrier, timeout)
                except (httpx.HTTPError, threading.BrokenBarrierError) as exc:
                    samples[index] = {"key": key, "ok": False, "wall_seconds": None,
                                      "error": f"{type(exc).__name__}: {exc}"}

        log(f"concurrency: launching {launches} workspaces at once")
        sampler = RssSampler(server.pid, interval=0.1).start()
        started = time.perf_counter()
        threads = [threading.Thread(target=one, args=(i, key)) for i, key in enumerate(keys)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        result["all_ready_seconds"] = round(time.perf_counter() - started, 3)
        sampler.stop()

        for sample in samples:
            if sample.get("ok"):
                sample["steps"] = step_breakdown(server.events(sample["id"]))
                # From the row's creation to ready, the time no step accounts for: waiting for
                # one of the reconciler's job slots, and the writes between steps.
                worked = sum(v for k, v in sample["steps"].items() if k != "preflight")
                sample["waiting_seconds"] = round((sample.get("ready_seconds") or 0.0) - worked, 4)
        good = [s for s in samples if s.get("ok")]
        steps: dict[str, list[float]] = {}
        for sample in good:
            for step, seconds in sample["steps"].items():
                steps.setdefault(step, []).append(seconds)
        result.update({
            "wall_seconds": summarize(s["wall_seconds"] for s in good),
            "accepted_seconds": summarize(s["accepted_seconds"] for s in good),
            "server_ready_seconds": summarize(s["ready_seconds"] for s in good if s.get("ready_seconds")),
            "waiting_seconds": summarize(s["waiting_seconds"] for s in good),
            "steps_p50": {step: summarize(v)["p50"] for step, v in steps.items()},
            "steps_p95": {step: summarize(v)["p95"] for step, v in steps.items()},
            "failures": len(samples) - len(good),
            "failure_reasons": [{"key": s["key"], "error": s.get("error")} for s in samples if not s.get("ok")],
            "peak_rss_server_bytes": sampler.peak_process,
            "peak_rss_server_and_children_bytes": sampler.peak_tree,
            "processes_at_peak": sampler.peak_tree_processes,
            "rss_samples": sampler.samples,
            "rss_series": sampler.series,
            "samples": samples,
        })
        log(f"concurrency: {len(good)}/{launches} ready, p50 {result['wall_seconds']['p50']} s, "
            f"p95 {result['wall_seconds']['p95']} s, waiting p50 {result['waiting_seconds']['p50']} s, "
            f"peak RSS {sampler.peak_tree / 2**20:.0f} MiB")
        log("concurrency: purging everything")
        problems = server.purge_all(server.active_workspaces(), timeout=600)
        result["purge_problems"] = problems
    finally:
        server.stop()
        server.remove_engine_resources()
    return result
