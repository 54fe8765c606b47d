"""Time to ready: a ticket becomes a workspace with both repositories cloned and the startup
script done, measured as the wall clock of the CLI (``taskspace ws launch KEY --wait --json``,
``taskspace ws start KEY --wait``), with the server's own step timings for the breakdown, and
the same for the peer (``git clone`` ×2 + ``devcontainer up``), in interleaved rounds.

One round runs, in this order: taskspace cold, warm, resume, warm with a pool (when the
server has the project setting), then the peer cold and warm. Cold removes every image built
from the fixture's Dockerfile (both tools share its layers) and, for taskspace, the project's
git mirrors; everything a round launched is purged before the next cold run.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker.errors

from bench.fixture import BenchServer, Fixture, Log, events_since, ready_transition_seconds, step_breakdown
from bench.peer import Peer
from bench.stats import ratio, summarize

TASKSPACE_SERIES = ("taskspace_cold", "taskspace_warm", "taskspace_resume", "taskspace_pool")
PEER_SERIES = ("peer_cold", "peer_warm")
POOL_SETTING = "warm_pool"


def pool_support(server: BenchServer) -> tuple[bool, str]:
    """Whether the server has the project setting ``warm_pool``: it must be in the PATCH body's
    schema and a PATCH must accept it."""
    schema = server.api.get(f"{server.process.url}/openapi.json").json()
    patch = schema.get("components", {}).get("schemas", {}).get("ProjectPatchIn", {})
    in_schema = POOL_SETTING in patch.get("properties", {})
    response = server.api.patch(f"/projects/{server.project}", json={POOL_SETTING: 0})
    if response.status_code == 200 and POOL_SETTING in response.json():
        return True, "PATCH /api/v1/projects/{ref} accepts warm_pool"
    reasons = [] if in_schema else ["warm_pool is not in ProjectPatchIn of /openapi.json"]
    reasons.append(f"PATCH /api/v1/projects/{{ref}} with {{\"warm_pool\": 0}} answered {response.status_code}: "
                   + response.text[:300].replace("\n", " "))
    return False, "the server has no project setting warm_pool: " + "; ".join(reasons)


def _launch_sample(server: BenchServer, key: str) -> dict[str, Any]:
    since = datetime.now(UTC)
    run = server.cli("ws", "launch", key, "--wait", "--json")
    data = run.json() or {}
    sample: dict[str, Any] = {"key": key, "wall_seconds": round(run.seconds, 4),
                              "ok": run.code == 0 and data.get("state") == "ready"}
    if not sample["ok"]:
        sample["error"] = run.error()
        return sample
    events = events_since(server.events(key), since)
    steps = step_breakdown(events)
    sample["ready_seconds"] = data.get("ready_seconds")
    sample["steps"] = steps
    # ready_seconds starts when the row is created, after the preflight that runs in the request.
    server_seconds = (data.get("ready_seconds") or 0.0) + steps.get("preflight", 0.0)
    sample["server_seconds"] = round(server_seconds, 4)
    sample["client_seconds"] = round(run.seconds - server_seconds, 4)
    return sample


def _resume_sample(server: BenchServer, key: str) -> dict[str, Any]:
    server.request(key, "stop")
    stopped = server.wait_for(key, {"stopped"})
    if stopped["state"] != "stopped":
        return {"key": key, "ok": False, "wall_seconds": None,
                "error": f"could not stop before the resume: {stopped['state']} {stopped.get('failure_reason')}"}
    after = server.last_event_id(key)
    run = server.cli("ws", "start", key, "--wait")
    ws = server.workspace(key)
    sample: dict[str, Any] = {"key": key, "wall_seconds": round(run.seconds, 4),
                              "ok": run.code == 0 and ws["state"] == "ready"}
    if not sample["ok"]:
        sample["error"] = run.error()
        return sample
    events = server.events(key, after)
    sample["steps"] = step_breakdown(events)
    sample["server_seconds"] = ready_transition_seconds(events)
    if sample["server_seconds"] is not None:
        sample["client_seconds"] = round(run.seconds - sample["server_seconds"], 4)
    return sample


def _spare_ready(server: BenchServer, known: set[str], timeout: float = 240) -> str | None:
    """Wait until the pool holds a ready spare, as the project's ``pool`` status says; when
    the server does not report it, until a workspace row nobody launched is ready, or a running
    workspace container of this installation that no listed workspace owns (given a few
    seconds more to finish its start). Returns what was seen, or None on timeout."""
    client = server.fixture.docker
    label = {"label": [f"taskspace.installation={server.process.installation}", "taskspace.role=workspace"]}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        project = server.api.get(f"/projects/{server.project}").json()
        if "pool" in project:
            if (project["pool"] or {}).get("ready", 0) >= 1:
                return "the project's pool status has a ready spare"
            time.sleep(0.5)
            continue
        listed = server.workspaces(everyone="true")
        spares = [w for w in listed if w["id"] not in known]
        if any(w["state"] == "ready" for w in spares):
            return "a listed spare workspace is ready"
        if not spares:
            owners = {c.labels.get("taskspace.workspace") for c in client.containers.list(filters=label)}
            if owners - known - {None}:
                time.sleep(3)
                return "a spare workspace container is running"
        time.sleep(0.5)
    return None


def _pool_sample(server: BenchServer, key: str, known: set[str]) -> dict[str, Any]:
    server.expect(server.api.patch(f"/projects/{server.project}", json={POOL_SETTING: 1}), 200)
    try:
        seen = _spare_ready(server, known)
        if seen is None:
            return {"key": key, "ok": False, "wall_seconds": None,
                    "error": "no spare appeared within 240 s of setting warm_pool to 1"}
        sample = _launch_sample(server, key)
        sample["spare"] = seen
        return sample
    finally:
        server.expect(server.api.patch(f"/projects/{server.project}", json={POOL_SETTING: 0}), 200)


def _clear(server: BenchServer, log: Log) -> None:
    """Purge what the round launched and wait until this installation has no container left
    (spares of a pool included), so the fixture's images can be removed."""
    problems = server.purge_all(server.active_workspaces())
    for problem in problems:
        log(f"  cleanup: {problem}")
    client = server.fixture.docker
    label = {"label": [f"taskspace.installation={server.process.installation}"]}
    deadline = time.monotonic() + 60
    while client.containers.list(all=True, filters=label) and time.monotonic() < deadline:
        time.sleep(0.5)


def _remove_mirrors(server: BenchServer) -> None:
    for path in server.mirrors_dir.glob("*"):
        if path.name == ".home":
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _cold_images_left(fixture: Fixture) -> int:
    return len(fixture.docker.images.list(all=True, filters={"label": f"bench.fixture={fixture.nonce}"}))


def _describe(name: str, sample: dict[str, Any]) -> str:
    if not sample.get("ok"):
        return f"  {name:<18} FAILED: {sample.get('error')}"
    steps = ", ".join(f"{k} {v:.2f}" for k, v in sorted(sample.get("steps", {}).items(), key=lambda kv: -kv[1])[:4])
    return f"  {name:<18} {sample['wall_seconds']:6.2f} s  ({steps})"


def run(fixture: Fixture, *, runs: int, cache: Path, log: Log, with_peer: bool = True) -> dict[str, Any]:
    server = BenchServer(fixture, "ttr")
    peer = Peer(fixture, cache, log)
    series: dict[str, list[dict[str, Any]]] = {name: [] for name in (*TASKSPACE_SERIES, *PEER_SERIES)}
    result: dict[str, Any] = {"runs": runs, "order": [*TASKSPACE_SERIES, *PEER_SERIES]}
    cli_floor: list[dict[str, Any]] = []
    try:
        log("time to ready: starting a server")
        server.start()
        server.register()
        result["cli_bytecode_cache"] = str(fixture.pycache) if fixture.pycache else None
        server.cli("--help")  # fills the bytecode cache: no measured run pays for it
        pool, pool_reason = pool_support(server)
        result["pool"] = {"supported": pool, "reason": pool_reason}
        if not pool:
            log(f"time to ready: warm with a pool SKIPPED — {pool_reason}")
        peer_reason = peer.prepare() if with_peer else "left out with --no-peer"
        result["peer"] = {"available": peer_reason is None, "reason": peer_reason, **peer.facts}
        if peer_reason:
            log(f"time to ready: the peer cannot run — {peer_reason}")
        for number in range(1, runs + 1):
            log(f"time to ready: round {number}/{runs}")
            round_samples: dict[str, dict[str, Any]] = {}

            _clear(server, log)
            fixture.remove_images()
            _remove_mirrors(server)
            left = _cold_images_left(fixture)
            key = server.ticket(f"Cold launch {number}")
            sample = _launch_sample(server, key)
            if left:
                sample["images_left_before_cold_run"] = left
            round_samples["taskspace_cold"] = sample

            key = server.ticket(f"Warm launch {number}")
            round_samples["taskspace_warm"] = _launch_sample(server, key)
            # The floor under every CLI number: start-up, one API call, exit; and the same
            # without a bytecode cache, the way this environment would run it.
            floor = server.cli("ws", "show", key, "--json")
            bare = server.cli("ws", "show", key, "--json", bytecode_cache=False)
            cli_floor.append({"round": number, "ok": floor.code == 0 and bare.code == 0,
                              "wall_seconds": round(floor.seconds, 4),
                              "without_bytecode_cache_seconds": round(bare.seconds, 4)})

            if round_samples["taskspace_warm"]["ok"]:
                round_samples["taskspace_resume"] = _resume_sample(server, key)

            if pool:
                known = set(server.active_workspaces())
                key = server.ticket(f"Pooled launch {number}")
                round_samples["taskspace_pool"] = _pool_sample(server, key, known)

            if peer_reason is None:
                _clear(server, log)
                branch = f"PEER-{number}-bench"
                round_samples["peer_cold"] = peer.run(cold=True, branch=branch).as_sample()
                round_samples["peer_warm"] = peer.run(cold=False, branch=branch).as_sample()

            for name, sample in round_samples.items():
                sample["round"] = number
                series[name].append(sample)
                log(_describe(name, sample))
    finally:
        try:
            peer.close()
        except docker.errors.DockerException as exc:
            log(f"peer cleanup: {exc}")
        server.stop()
        server.remove_engine_resources()

    result["cli_floor"] = {
        "command": "taskspace ws show KEY --json (one GET)",
        "wall_seconds": summarize(f["wall_seconds"] for f in cli_floor if f["ok"]),
        "without_bytecode_cache_seconds": summarize(f["without_bytecode_cache_seconds"] for f in cli_floor if f["ok"]),
        "samples": cli_floor}
    result["series"] = {}
    for name, samples in series.items():
        if name == "taskspace_pool" and not result.get("pool", {}).get("supported"):
            result["series"][name] = {"skipped": result.get("pool", {}).get("reason", "not run"), "samples": []}
            continue
        if name in PEER_SERIES and not result.get("peer", {}).get("available"):
            result["series"][name] = {"skipped": result.get("peer", {}).get("reason", "not run"), "samples": []}
            continue
        result["series"][name] = _summary(samples)
    walls = {name: s.get("wall_seconds", {}) for name, s in result["series"].items()}

    def p50(name: str) -> float | None:
        return (walls.get(name) or {}).get("p50")

    result["ratios"] = {
        "cold": {"taskspace_over_peer_p50": ratio(p50("taskspace_cold"), p50("peer_cold"))},
        "warm": {"taskspace_over_peer_p50": ratio(p50("taskspace_warm"), p50("peer_warm"))},
    }
    for mode in ("cold", "warm"):
        p95s = [(result["series"].get(f"{tool}_{mode}", {}).get("wall_seconds") or {}).get("p95")
                for tool in ("taskspace", "peer")]
        result["ratios"][mode]["taskspace_over_peer_p95"] = ratio(p95s[0], p95s[1])
    return result


def _summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    good = [s for s in samples if s.get("ok")]
    steps: dict[str, list[float]] = {}
    for sample in good:
        for step, seconds in sample.get("steps", {}).items():
            steps.setdefault(step, []).append(seconds)
    summary: dict[str, Any] = {
        "wall_seconds": summarize(s["wall_seconds"] for s in good),
        "failures": [{"round": s.get("round"), "error": s.get("error")} for s in samples if not s.get("ok")],
        "steps_p50": {step: summarize(values)["p50"] for step, values in steps.items()},
        "samples": samples,
    }
    server = [s["server_seconds"] for s in good if s.get("server_seconds") is not None]
    if server:
        summary["server_seconds"] = summarize(server)
        summary["client_seconds"] = summarize(s["client_seconds"] for s in good if s.get("client_seconds") is not None)
    return summary
