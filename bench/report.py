"""The results: a table on the terminal (Rich), the JSON file and the PNG chart (matplotlib)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

LABELS = {
    "taskspace_cold": "taskspace cold", "taskspace_warm": "taskspace warm", "taskspace_resume": "taskspace resume",
    "taskspace_pool": "taskspace warm + pool", "peer_cold": "peer cold", "peer_warm": "peer warm",
}


def _s(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def _mib(value: int | None) -> str:
    return "-" if not value else f"{value / 2**20:.0f}"


def _top_steps(steps: dict[str, float | None], count: int = 3) -> str:
    known = [(k, v) for k, v in steps.items() if v is not None]
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(known, key=lambda kv: -kv[1])[:count])


def _sample_round(info: dict[str, Any] | None) -> str:
    if not info:
        return "-"
    if info.get("finished"):
        return _s(info.get("wall_seconds_including_a_pass"))
    return f"~{_s(info.get('estimated_round_seconds'), 0)} (est.)"


def print_tables(results: dict[str, Any], console: Console) -> None:
    scenarios = results.get("scenarios", {})
    ttr = scenarios.get("ttr")
    if ttr:
        table = Table(title=f"Time to ready, seconds (wall clock of the CLI / the peer; {ttr['runs']} interleaved "
                            "rounds)", title_justify="left")
        for column in ("scenario", "n", "fail", "p50", "p95", "server p50", "client p50", "largest steps (p50 s)"):
            table.add_column(column, justify="left" if column in ("scenario", "largest steps (p50 s)") else "right")
        for name, label in LABELS.items():
            series = ttr.get("series", {}).get(name)
            if series is None:
                continue
            if "skipped" in series:
                table.add_row(label, "-", "-", "-", "-", "-", "-", f"skipped: {series['skipped'][:90]}")
                continue
            wall = series["wall_seconds"]
            table.add_row(label, str(wall["n"]), str(len(series["failures"])), _s(wall["p50"]), _s(wall["p95"]),
                          _s((series.get("server_seconds") or {}).get("p50")),
                          _s((series.get("client_seconds") or {}).get("p50")), _top_steps(series["steps_p50"]))
        console.print(table)
        ratios = ttr.get("ratios", {})
        console.print(f"taskspace / peer, p50: cold {_s(ratios.get('cold', {}).get('taskspace_over_peer_p50'))}, "
                      f"warm {_s(ratios.get('warm', {}).get('taskspace_over_peer_p50'))}   "
                      f"(p95: cold {_s(ratios.get('cold', {}).get('taskspace_over_peer_p95'))}, "
                      f"warm {_s(ratios.get('warm', {}).get('taskspace_over_peer_p95'))})")
        floor = ttr.get("cli_floor")
        if floor:
            console.print(f"CLI floor (start-up, one GET, exit: {floor['command'].split(' (')[0]}): p50 "
                          f"{_s(floor['wall_seconds']['p50'])} s; without a bytecode cache "
                          f"{_s((floor.get('without_bytecode_cache_seconds') or {}).get('p50'))} s")
        if not ttr.get("peer", {}).get("available"):
            console.print(f"[yellow]peer not run:[/] {ttr.get('peer', {}).get('reason')}")
        if not ttr.get("pool", {}).get("supported"):
            console.print(f"[yellow]warm + pool skipped:[/] {ttr.get('pool', {}).get('reason')}")
        console.print()

    conc = scenarios.get("concurrency")
    if conc:
        table = Table(title=f"Concurrency: {conc['launches']} launches at once (API), seconds", title_justify="left")
        for column in ("launches", "failures", "p50", "p95", "all ready after", "server ready p50",
                       "waiting p50", "peak RSS server MiB", "peak RSS + children MiB", "largest steps (p50 s)"):
            table.add_column(column, justify="right")
        table.add_row(str(conc["launches"]), str(conc["failures"]), _s(conc["wall_seconds"]["p50"]),
                      _s(conc["wall_seconds"]["p95"]), _s(conc.get("all_ready_seconds")),
                      _s(conc["server_ready_seconds"]["p50"]), _s((conc.get("waiting_seconds") or {}).get("p50")),
                      _mib(conc.get("peak_rss_server_bytes")),
                      _mib(conc.get("peak_rss_server_and_children_bytes")), _top_steps(conc.get("steps_p50", {})))
        console.print(table)
        for failure in conc.get("failure_reasons", [])[:10]:
            console.print(f"[red]failed[/] {failure['key']}: {failure['error']}")
        console.print()

    scale = scenarios.get("scale")
    if scale:
        s = scale["scale"]
        table = Table(title=f"Control plane: {s['tickets']} tickets, {s['workspaces']} workspaces, "
                            f"{scale.get('running_containers', 0)} running containers; "
                            f"{s['connections']} connections × {s['duration']:g} s; milliseconds",
                      title_justify="left")
        for column in ("database", "board p50", "board p95", "board req/s", "board CPU/req", "workspaces p50",
                       "workspaces p95", "workspaces req/s", "workspaces CPU/req", "all workspaces", "reconcile p50", "reconcile p95", "engine req/pass",
                       "sample round s"):
            table.add_column(column, justify="right")
        for name, db in scale.get("databases", {}).items():
            if "skipped" in db:
                table.add_row(name, f"skipped: {db['skipped'][:80]}", *["-"] * 12)
                continue
            board, api, rec = db["board_page"], db["workspaces_api"], db["reconcile"]
            walk = api.get("all_pages")
            table.add_row(name, _ms(board["latency_seconds"]["p50"]), _ms(board["latency_seconds"]["p95"]),
                          _s(board["requests_per_second"], 1), _s(board.get("server_cpu_ms_per_request"), 1),
                          _ms(api["latency_seconds"]["p50"]), _ms(api["latency_seconds"]["p95"]),
                          _s(api["requests_per_second"], 1), _s(api.get("server_cpu_ms_per_request"), 1),
                          f"{walk['items']} in {_ms(walk['seconds']['p50'])}" if walk else "-",
                          _ms(rec["seconds"]["p50"]), _ms(rec["seconds"]["p95"]), str(rec["engine_requests_per_pass"]),
                          _sample_round(db.get("metrics_sample_round")))
        console.print(table)
        console.print()


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write atomically (a ``.tmp`` beside it, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def merge(previous: dict[str, Any] | None, current: dict[str, Any]) -> dict[str, Any]:
    """Today's file keeps the scenarios an earlier run of the day measured and this one did not."""
    if not previous or not isinstance(previous.get("scenarios"), dict):
        return current
    merged = dict(current)
    merged["scenarios"] = {**previous["scenarios"], **current["scenarios"]}
    return merged


def write_chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = results.get("scenarios", {})
    fig, axes = plt.subplots(2, 2, figsize=(15, 10))
    fig.suptitle(f"taskspace benchmarks {results.get('date', '')} — {results['machine'].get('cpu_count')} CPUs, "
                 f"{results['machine'].get('cpu_model', '')[:50]}, git {str(results['machine'].get('git_sha'))[:10]}",
                 fontsize=11)

    ax = axes[0][0]
    ttr = scenarios.get("ttr", {})
    names, data = [], []
    for name, label in LABELS.items():
        series = ttr.get("series", {}).get(name, {})
        values = [s["wall_seconds"] for s in series.get("samples", []) if s.get("ok")]
        if values:
            names.append(label.replace(" ", "\n", 1))
            data.append(values)
    if data:
        ax.boxplot(data, whis=(5, 95), showfliers=False)
        for i, values in enumerate(data, start=1):
            ax.scatter([i + (j % 5 - 2) * 0.04 for j in range(len(values))], values, s=12, alpha=0.6)
        ax.set_xticks(range(1, len(names) + 1), names, fontsize=8)
    ax.set_ylabel("seconds to ready (wall clock)")
    ax.set_title("Time to ready (whiskers: p5–p95)")
    ax.grid(axis="y", alpha=0.3)

    ax = axes[0][1]
    order = ["client", "preflight", "image", "volume", "container", "clone", "services", "startup", "up"]
    bars = []
    for name in ("taskspace_cold", "taskspace_warm", "taskspace_resume", "taskspace_pool", "peer_cold", "peer_warm"):
        series = ttr.get("series", {}).get(name, {})
        if not series.get("samples") or "skipped" in series:
            continue
        steps = dict(series.get("steps_p50", {}))
        client = (series.get("client_seconds") or {}).get("p50")
        if client is not None:
            steps["client"] = max(client, 0.0)
        bars.append((LABELS[name].replace(" ", "\n", 1), steps))
    if bars:
        bottoms = [0.0] * len(bars)
        for step in order:
            heights = [steps.get(step) or 0.0 for _, steps in bars]
            if any(heights):
                ax.bar(range(len(bars)), heights, bottom=bottoms, label=step)
                bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
        ax.set_xticks(range(len(bars)), [label for label, _ in bars], fontsize=8)
        ax.legend(fontsize=8, ncols=3)
    ax.set_ylabel("seconds (p50 of each step)")
    ax.set_title("Where the time goes (server step events; client = CLI wall − server)")
    ax.grid(axis="y", alpha=0.3)

    ax = axes[1][0]
    conc = scenarios.get("concurrency", {})
    times = sorted(s["wall_seconds"] for s in conc.get("samples", []) if s.get("ok"))
    series = conc.get("rss_series") or []
    if series:
        ax.plot([t for t, _, _ in series], [own / 2**20 for _, own, _ in series], color="tab:red",
                label="RSS server")
        ax.plot([t for t, _, _ in series], [tree / 2**20 for _, _, tree in series], color="tab:orange",
                label="RSS server + children")
        ax.set_ylabel("MiB")
        ax.set_xlabel("seconds since the launches")
    if times:
        twin = ax.twinx()
        twin.step([0.0, *times], list(range(len(times) + 1)), where="post", color="tab:blue",
                  label="workspaces ready")
        twin.set_ylabel("workspaces ready", color="tab:blue")
        twin.legend(loc="lower right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"{conc.get('launches', 0)} concurrent launches: {conc.get('failures', 0)} failed, "
                 f"p50 {_s((conc.get('wall_seconds') or {}).get('p50'))} s, "
                 f"peak RSS {_mib(conc.get('peak_rss_server_and_children_bytes'))} MiB")
    ax.grid(alpha=0.3)

    ax = axes[1][1]
    scale = scenarios.get("scale", {})
    groups = []
    for db_name, db in scale.get("databases", {}).items():
        if "skipped" in db:
            continue
        for key, label in (("board_page", "board"), ("workspaces_api", "workspaces API")):
            latency = db[key]["latency_seconds"]
            groups.append((f"{label}\n{db_name}\n{db[key]['requests_per_second']} req/s",
                           latency["p50"], latency["p95"]))
        groups.append((f"reconcile pass\n{db_name}\n{db['reconcile']['engine_requests_per_pass']} engine req",
                       db["reconcile"]["seconds"]["p50"], db["reconcile"]["seconds"]["p95"]))
    if groups:
        xs = range(len(groups))
        ax.bar([x - 0.2 for x in xs], [g[1] * 1000 for g in groups], width=0.4, label="p50")
        ax.bar([x + 0.2 for x in xs], [g[2] * 1000 for g in groups], width=0.4, label="p95")
        ax.set_xticks(list(xs), [g[0] for g in groups], fontsize=7)
        ax.legend(fontsize=8)
    s = scale.get("scale", {})
    ax.set_title(f"Control plane: {s.get('tickets')} tickets, {s.get('workspaces')} workspaces, "
                 f"{scale.get('running_containers')} running")
    ax.set_ylabel("milliseconds")
    ax.grid(axis="y", alpha=0.3)

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
