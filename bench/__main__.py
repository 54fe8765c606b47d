"""``python -m bench all|ttr|concurrency|scale [--quick] [--runs N] [--output DIR] ...``

Prints a table and writes ``<output>/<YYYY-MM-DD>.json`` (machine facts, every raw sample,
p50/p95) and ``<output>/<YYYY-MM-DD>.png``. ``--quick`` runs every scenario once at a small
scale (the smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import concurrency, control_plane, machine, report, time_to_ready
from bench.fixture import cli_path, fixture

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCENARIOS = ("ttr", "concurrency", "scale")

NOTES = {
    "percentiles": "linear interpolation between closest ranks (numpy's default); with 10 samples p95 lies "
                   "between the two slowest",
    "ttr": "wall clock of the installed entry script .venv/bin/taskspace run as a subprocess "
           "(with a bytecode cache in bench/.cache/pycache unless --no-bytecode-cache, as an installed program "
           "has; cli_floor also gives the start-up without it) "
           "(ws launch KEY --wait --json; ws start KEY --wait for resume), not 'uv run'; server_seconds = "
           "preflight (in the launch request) + ready_seconds (row created → ready), client_seconds = wall − "
           "server_seconds (CLI start-up, the request, polling). Rounds interleave: taskspace cold, warm, resume, "
           "warm + pool, then the peer cold and warm. Cold removes every image built from the fixture's "
           "Dockerfile (taskspace's and the peer's vsc-… images share its layers) and taskspace's git mirrors.",
    "peer": "git clone of both repositories over the same authenticated HTTP (inline credential helper) on a "
            "ticket branch + devcontainer up (@devcontainers/cli) of an equivalent devcontainer.json: same "
            "Dockerfile, --network=host, postStartCommand running the same startup script",
    "concurrency": "threads call POST /api/v1/workspaces at the same instant, then long-poll the events like "
                   "the CLI; image and mirrors warm; RSS from /proc/<pid>/status VmRSS every 100 ms",
    "scale": "rows inserted through taskspace.db.models before the server starts; ready rows have real "
             "sleep-infinity containers labelled as workspaces; background samplers postponed and timed passes "
             "only (reconcile interval 3600 s) so the numbers are the endpoints' own; the load generator runs "
             "in the benchmark process on the same machine",
}


def _options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=("all", *SCENARIOS), nargs="?", default="all")
    parser.add_argument("--quick", action="store_true", help="one iteration of everything, small scale")
    parser.add_argument("--runs", type=int, help="interleaved rounds of time to ready (default 10)")
    parser.add_argument("--launches", type=int, help="concurrent launches (default 20)")
    parser.add_argument("--tickets", type=int, help="tickets in the scale database (default 10000)")
    parser.add_argument("--workspaces", type=int, help="workspaces in the scale database (default 2000)")
    parser.add_argument("--running", type=int, help="really running containers among them (default 200)")
    parser.add_argument("--duration", type=float, help="seconds of load per endpoint (default 10)")
    parser.add_argument("--connections", type=int, help="concurrent connections of the load (default 8)")
    parser.add_argument("--passes", type=int, help="timed reconcile passes (default 5)")
    parser.add_argument("--no-peer", action="store_true", help="leave out the devcontainer peer")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="run the CLI exactly as the environment says (PYTHONDONTWRITEBYTECODE honoured)")
    parser.add_argument("--output", type=Path, default=HERE / "results", help="where the JSON and PNG go")
    options = parser.parse_args(argv)
    quick = options.quick
    defaults = {"runs": (1, 10), "launches": (3, 20), "tickets": (500, 10_000), "workspaces": (100, 2_000),
                "running": (10, 200), "duration": (2.0, 10.0), "connections": (4, 8), "passes": (1, 5)}
    for name, (small, full) in defaults.items():
        if getattr(options, name) is None:
            setattr(options, name, small if quick else full)
    return options


def _terminate(signum: int, _frame: Any) -> None:
    # Turn SIGTERM into the same path as Ctrl-C, so every finally block cleans up.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    options = _options(argv)
    signal.signal(signal.SIGTERM, _terminate)
    console = Console(stderr=True)
    began = time.monotonic()

    def log(message: str) -> None:
        console.print(f"[dim]{time.monotonic() - began:7.1f}s[/] {message}", highlight=False, soft_wrap=True)

    wanted = SCENARIOS if options.scenario == "all" else (options.scenario,)
    started_at = datetime.now(UTC)
    results: dict[str, Any] = {
        "date": datetime.now().date().isoformat(),
        "command": "python -m bench " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "started_at": started_at.isoformat(),
        "quick": options.quick,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(options).items()},
        "cli": str(cli_path()),
        "notes": NOTES,
        "scenarios": {},
    }
    failed = False
    log(f"bench {' '.join(wanted)}{' (quick)' if options.quick else ''}: preparing the fixture")
    try:
        pycache = None if options.no_bytecode_cache else HERE / ".cache" / "pycache"
        with fixture(log, pycache=pycache) as fx:
            results["machine"] = machine.facts(REPO, fx.docker)
            results["machine"]["python_dont_write_bytecode"] = os.environ.get("PYTHONDONTWRITEBYTECODE")
            results["base_image"] = fx.base_image
            for name in wanted:
                scenario_began = time.monotonic()
                try:
                    if name == "ttr":
                        outcome = time_to_ready.run(fx, runs=options.runs, cache=HERE / ".cache", log=log,
                                                    with_peer=not options.no_peer)
                    elif name == "concurrency":
                        outcome = concurrency.run(fx, launches=options.launches, log=log)
                    else:
                        outcome = control_plane.run(fx, log=log, scale=control_plane.Scale(
                            tickets=options.tickets, workspaces=options.workspaces, running=options.running,
                            duration=options.duration, connections=options.connections, passes=options.passes,
                            sample_cap=20.0 if options.quick else 30.0))
                except KeyboardInterrupt:
                    raise
                except Exception as exc:
                    failed = True
                    outcome = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
                    log(f"[red]{name} failed:[/] {type(exc).__name__}: {exc}")
                outcome["scenario_seconds"] = round(time.monotonic() - scenario_began, 1)
                results["scenarios"][name] = outcome
            results["machine"]["load_average_at_end"] = machine.load_average()
    except KeyboardInterrupt:
        log("[red]interrupted[/]: cleaned up; no results written")
        return 130
    results["finished_at"] = datetime.now(UTC).isoformat()
    results["wall_seconds"] = round(time.monotonic() - began, 1)

    out = Console(width=None if sys.stdout.isatty() else 170)
    report.print_tables(results, out)
    json_path = options.output / f"{results['date']}.json"
    previous = None
    if json_path.exists():
        try:
            previous = json.loads(json_path.read_text())
        except ValueError:
            previous = None
    merged = report.merge(previous, results)
    report.write_json(merged, json_path)
    png_path = json_path.with_suffix(".png")
    report.write_chart(merged, png_path)
    out.print(f"results: {json_path}\nchart:   {png_path}\nwall time: {results['wall_seconds']:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
