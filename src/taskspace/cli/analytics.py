"""``taskspace analytics``: usage over a period, per workspace or added up per project or user."""

# Annotations built at definition, not kept as strings: see taskspace.cli.main.
import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from taskspace.cli.client import Client
from taskspace.cli.output import err, escape, table_of

if TYPE_CHECKING:
    from rich.table import Table

#: The most workspaces the server reports at once (services.analytics.MAX_WORKSPACES).
MAX_ROWS = 50_000


def _print(table: "Table") -> None:
    """At the table's natural width when the terminal is narrower: its lines then wrap in the
    terminal (or stay whole in a file) instead of losing the ends of dates and names."""
    from rich.console import Console
    from rich.measure import Measurement

    console = Console()
    natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
    (Console(width=natural) if natural > console.width else console).print(table)


def _warn(text: str) -> None:
    err.print(text, markup=True)


class GroupBy(StrEnum):
    PROJECT = "project"
    USER = "user"




def _when(iso: str | None) -> str:
    return iso[:16].replace("T", " ") if iso else "-"


def _seconds(value: float | None) -> str:
    return f"{value:.1f}s" if value is not None else "-"


def _hours(value: float) -> str:
    return f"{value:.2f}"


def analytics(
    since: Annotated[str | None, typer.Option(
        help="Start of the period: a date (2024-05-01), a time (2024-05-01T09:00Z) or an age (7d, 12h, 2w). "
             "Default: 30 days before --until")] = None,
    until: Annotated[str | None, typer.Option(help="End of the period (excluded), as --since. Default: now")] = None,
    project: Annotated[str | None, typer.Option(help="Only this project (name or key)")] = None,
    user: Annotated[str | None, typer.Option(help="Only this user's workspaces (reviewers and admins)")] = None,
    group_by: Annotated[GroupBy | None, typer.Option("--group-by", help="Add up per project or per user")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table")] = False,
) -> None:
    """Usage over a period (at most 366 days): each workspace's launch, time to ready, first and
    last use, starts, stops and active hours (time spent ready); or, with --group-by, these added
    up per project or per user. Developers see their own workspaces; reviewers and admins
    everyone's."""
    params: dict[str, Any] = {k: v for k, v in {"since": since, "until": until, "project": project,
                                                "user": user}.items() if v}
    client = Client.from_env()
    if group_by is not None:
        params["group_by"] = group_by.value
        if as_csv:
            sys.stdout.write(client.call("GET", "/analytics/summary.csv", params=params, timeout=300))
            return
        _print_summary(client.call("GET", "/analytics/summary", params=params, timeout=300))
        return
    if as_csv:
        sys.stdout.write(client.call("GET", "/analytics/workspaces.csv", params=params, timeout=300))
        return
    rows = client.call("GET", "/analytics/workspaces", params={**params, "limit": MAX_ROWS}, timeout=300)
    _print_workspaces(rows)


def _print_workspaces(rows: list[dict[str, Any]]) -> None:
    from rich.box import SIMPLE_HEAD

    table = table_of("ticket", "project", "owner", "state", "launched", "ready in", "first opened", "last active",
                     "starts", "stops", "active h", "purged", box=SIMPLE_HEAD)
    for w in rows:
        table.add_row(escape(w["ticket"]), escape(w["project"]), escape(w["owner"]), w["state"],
                      _when(w["requested_at"]), _seconds(w["time_to_ready_seconds"]), _when(w["first_opened_at"]),
                      _when(w["last_active_at"]), str(w["starts"]), str(w["stops"]),
                      _hours(w["active_hours"]), _when(w["purged_at"]))
    _print(table)
    if len(rows) >= MAX_ROWS:
        _warn(f"[yellow]Only the newest {MAX_ROWS} workspaces are shown;[/] ask for a shorter period.")


def _print_summary(found: dict[str, Any]) -> None:
    from rich.box import SIMPLE_HEAD

    table = table_of(found["group_by"], "workspaces", "launched", "ready in (median)",
                     "ready in (mean)", "active h", "starts", "stops", "purged", box=SIMPLE_HEAD,
                     title=f"Usage from {_when(found['since'])} to {_when(found['until'])} UTC")
    for i, g in enumerate([*found["groups"], found["total"]]):
        total = i == len(found["groups"])
        table.add_row("[bold]total[/]" if total else escape(g["name"]), str(g["workspaces"]), str(g["launched"]),
                      _seconds(g["time_to_ready_median"]), _seconds(g["time_to_ready_mean"]),
                      _hours(g["active_hours"]), str(g["starts"]), str(g["stops"]), str(g["purged"]),
                      end_section=i == len(found["groups"]) - 1)
    _print(table)
    if found["truncated"]:
        _warn(f"[yellow]Only the newest {MAX_ROWS} workspaces are counted;[/] ask for a shorter period.")
