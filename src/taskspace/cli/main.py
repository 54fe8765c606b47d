"""The ``taskspace`` command: ``up`` runs the server; everything else is a client of its REST API
(``TASKSPACE_URL``, default http://127.0.0.1:8080; token from ``TASKSPACE_TOKEN`` or the admin
token that ``taskspace up`` writes to the data dir)."""

# No ``from __future__ import annotations`` here: typer reads every command's annotations on each
# run, and evaluating them from strings costs a command 10 ms more than building them once.
import base64
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import typer
from typer.core import TyperGroup

from taskspace.cli.analytics import analytics
from taskspace.cli.client import Client, CliError
from taskspace.cli.output import err, escape, out, print_json, table_of
from taskspace.core.errors import TaskspaceError

if TYPE_CHECKING:
    from taskspace.settings import Settings


class _Commands(TyperGroup):
    """Turns errors from the server into a message, a hint and exit code 1 (no traceback)."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as exc:
            # The message often repeats what was typed: it must not be read as markup.
            err.print(f"[red]Error:[/] {escape(exc.message)}", markup=True)
            if exc.hint:
                err.print(exc.hint)
            raise typer.Exit(exc.code) from None


app = typer.Typer(help="Developer workspaces from tickets.", no_args_is_help=True, add_completion=False,
                  cls=_Commands)
project_app = typer.Typer(help="Projects: repositories and purge policy.", no_args_is_help=True)
token_app = typer.Typer(help="Your git tokens (stored encrypted, never shown again).", no_args_is_help=True)
ticket_app = typer.Typer(help="Tickets of the built-in board.", no_args_is_help=True)
ws_app = typer.Typer(help="Workspaces.", no_args_is_help=True)
app.add_typer(project_app, name="project")
app.add_typer(token_app, name="token")
app.add_typer(ticket_app, name="ticket")
app.add_typer(ws_app, name="ws")
admin_app = typer.Typer(help="Administration: users and the token vault's keys.", no_args_is_help=True)
user_app = typer.Typer(help="Accounts (admins).", no_args_is_help=True)
api_token_app = typer.Typer(help="Your personal API tokens for the CLI and scripts.", no_args_is_help=True)
admin_app.add_typer(user_app, name="user")
app.add_typer(admin_app, name="admin")
app.add_typer(api_token_app, name="api-token")

#: Set by a command that acts on the server's side: it ends with the interpreter's teardown
#: (see :func:`taskspace.cli.run`).
server_side = False


def _settings(**overrides: Any) -> "Settings":
    """The server's settings (only commands that act on the server's side load them)."""
    global server_side
    server_side = True
    from taskspace.settings import load_settings

    try:
        return load_settings(**overrides)
    except Exception as exc:  # pydantic's message names the setting
        raise CliError(f"The settings are not valid: {exc}",
                       "Check the TASKSPACE_* variables and taskspace.toml.") from None


def _run(work: Any) -> Any:
    """Run a coroutine of the server's side (asyncio is imported only by the commands that need it)."""
    import asyncio

    return asyncio.run(work)


def _client() -> Client:
    return Client.from_env()


def _segment(value: str) -> str:
    """``value`` as one segment of an API path: a '/', '?', '#' or '..' in a name given on the
    command line must not reach another route."""
    return quote(value, safe="").replace(".", "%2E")


def _age(iso: str | None) -> str:
    if not iso:
        return "-"
    then = datetime.fromisoformat(iso)
    days = (datetime.now(UTC) - then).days
    return f"{days}d"


# Server ----------------------------------------------------------------------------------------


@app.command()
def up(host: Annotated[str | None, typer.Option(help="Address to listen on")] = None,
       port: Annotated[int | None, typer.Option(help="Port to listen on")] = None,
       no_demo: Annotated[bool, typer.Option("--no-demo", help="Do not seed the demo project")] = False) -> None:
    """Start the server (API and reconciler) on the embedded default: SQLite in the data dir,
    the Docker backend, the built-in tracker, and a demo project on first start."""
    import logging

    import uvicorn

    from taskspace.services.bootstrap import bootstrap
    from taskspace.services.runtime import build_runtime
    from taskspace.web.app import create_app

    overrides: dict[str, Any] = {}
    if host:
        overrides["host"] = host
    if port:
        overrides["port"] = port
    settings = _settings(**overrides)
    logging.basicConfig(level=os.environ.get("TASKSPACE_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "httpx"):  # one line per migration step / per tracker request
        logging.getLogger(noisy).setLevel(logging.WARNING)

    async def prepare() -> Any:
        rt = await build_runtime(settings)
        try:
            return await bootstrap(rt, with_demo=not no_demo, say=lambda m: err.print(m))
        finally:
            await rt.close()

    try:
        report = _run(prepare())
    except TaskspaceError as exc:
        raise CliError(exc.message, exc.hint) from None
    say = lambda text: err.print(text, soft_wrap=True, markup=True)  # noqa: E731 - paths must stay on one line
    say(f"[bold]taskspace[/] on {settings.base_url}  (API reference: {settings.base_url}/docs)")
    say(f"Admin token for the CLI and API: {report.token_file}")
    if report.password:
        say(f"Sign in at {settings.base_url}/login as [bold]{report.admin}[/] with password "
            f"[bold]{report.password}[/] (also in {report.password_file}; change it on your profile).")
    if report.demo_seeded:
        say("Try: taskspace ticket list   then   taskspace ws launch DEMO-1 --wait")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")


@admin_app.command("rotate-key")
def admin_rotate_key(
    prune: Annotated[bool, typer.Option("--prune", help="Drop keys no stored token uses any more")] = False,
    rewrap_only: Annotated[bool, typer.Option("--rewrap-only", help="Add no key; re-wrap under the current one")]
    = False,
) -> None:
    """Put a new key first in the vault's key file and re-wrap every stored token under it.
    Run on the server's host; running servers keep working (they re-read the key file)."""
    from taskspace.services import keys
    from taskspace.services.runtime import build_runtime

    async def rotate() -> Any:
        rt = await build_runtime(_settings())
        try:
            return await keys.rotate(rt, new_key=not rewrap_only, prune=prune)
        finally:
            await rt.close()

    try:
        report = _run(rotate())
    except TaskspaceError as exc:
        raise CliError(exc.message, exc.hint) from None
    out.print(f"Current key {report.current}; re-wrapped {report.rewrapped} token(s).")
    if report.pruned:
        out.print(f"Dropped unused key(s): {', '.join(report.pruned)}.")
    elif report.kept:
        out.print(f"Older key(s) kept for readers: {', '.join(report.kept)} (drop them later with --prune).")


@user_app.command("add")
def user_add(username: str, role: Annotated[str, typer.Option(help="developer, reviewer or admin")] = "developer",
             password_env: Annotated[str | None, typer.Option(
                 "--password-env", help="Environment variable holding a password (else single sign-on only)")]
             = None,
             email: Annotated[str | None, typer.Option()] = None) -> None:
    password = os.environ.get(password_env) if password_env else None
    if password_env and not password:
        raise CliError(f"The environment variable {password_env} is not set or empty.")
    user = _client().call("POST", "/users", json_body={"username": username, "role": role, "password": password,
                                                       "email": email})
    out.print(f"Created {user['username']} ({user['role']}).")


@user_app.command("list")
def user_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    found = _client().call("GET", "/users")
    if as_json:
        print_json(found)
        return
    table = table_of("user", "role", "sign-in", "email", "last sign-in", "state")
    for u in found:
        table.add_row(u["username"], u["role"], "single sign-on" if u["sso"] else "password", u["email"] or "-",
                      (u["last_login_at"] or "-")[:19], "disabled" if u["disabled"] else "active")
    out.print(table)


@user_app.command("set")
def user_set(username: str, role: Annotated[str | None, typer.Option()] = None,
             disabled: Annotated[bool | None, typer.Option("--disabled/--enabled")] = None) -> None:
    """Change a user's role, or disable (signing them out) or enable them."""
    user = _client().call("PATCH", f"/users/{_segment(username)}", json_body={"role": role, "disabled": disabled})
    out.print(f"{user['username']}: {user['role']}, {'disabled' if user['disabled'] else 'active'}.")


@api_token_app.command("create")
def api_token_create(name: str) -> None:
    """Create a personal API token; it is printed once."""
    token = _client().call("POST", "/me/api-tokens", json_body={"name": name})
    err.print(f"API token {token['name']} (id {token['id']}). It is shown only now:")
    out.print(token["token"])


@api_token_app.command("list")
def api_token_list() -> None:
    table = table_of("id", "name", "created", "last used")
    for t in _client().call("GET", "/me/api-tokens"):
        table.add_row(str(t["id"]), t["name"], t["created_at"][:19], (t["last_used_at"] or "-")[:19])
    out.print(table)


@api_token_app.command("revoke")
def api_token_revoke(token_id: int) -> None:
    _client().call("DELETE", f"/me/api-tokens/{token_id}")
    out.print(f"Revoked API token {token_id}.")


policy_app = typer.Typer(help="The purge policy.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command("preview")
def policy_preview(project: Annotated[str | None, typer.Argument(help="Only this project")] = None,
                   as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What the next reconcile pass would do to each workspace, and why. Changes nothing."""
    rows = _client().call("GET", "/policy/preview", params={"project": project} if project else None)
    if as_json:
        print_json(rows)
        return
    table = table_of("ticket", "owner", "state", "next", "when", "why")
    for r in rows:
        table.add_row(r["key"], r["owner"], r["state"], r["action"], (r["at"] or "-")[:16].replace("T", " "),
                      r["reason"])
    out.print(table)


@app.command()
def reconcile(once: Annotated[bool, typer.Option("--once", help="Run one pass and exit")] = True) -> None:
    """Run one reconcile pass on the server now and wait for the work it starts."""
    report = _client().call("POST", "/reconcile", timeout=3600)
    out.print(f"{report['workspaces']} workspaces; started {len(report['jobs_started'])}, "
              f"restarted {len(report['restarted'])}, purges requested {len(report['purges_requested'])}, "
              f"orphans {len(report['orphans'])} (removed {len(report['orphans_removed'])}) "
              f"in {report['seconds']:.2f}s")


app.command("analytics")(analytics)


# Projects --------------------------------------------------------------------------------------


@project_app.command("add")
def project_add(
    name: str,
    repo: Annotated[list[str], typer.Option("--repo", help="Repository URL (or NAME=URL); repeat; first is primary")],
    dockerfile: Annotated[str, typer.Option(help="Dockerfile path in the primary repository")] = "Dockerfile",
    purge_on: Annotated[list[str] | None, typer.Option("--purge-on", help="Status that ends a workspace; repeat")] = None,
    grace: Annotated[str, typer.Option(help="Grace period before a purge, e.g. 24h")] = "0",
    key: Annotated[str | None, typer.Option(help="Ticket key prefix (default: from the name)")] = None,
    cpus: Annotated[float | None, typer.Option(help="CPUs per container (default: the server's)")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory per container, e.g. 4g")] = None,
    pids: Annotated[int | None, typer.Option(help="Process limit per container")] = None,
    tracker: Annotated[str, typer.Option(help="builtin, jira, gitlab or github")] = "builtin",
    tracker_config_file: Annotated[Path | None, typer.Option(
        "--tracker-config-file", help="JSON file with the tracker's settings (credentials included)")] = None,
    max_age: Annotated[str | None, typer.Option(help="Purge workspaces older than this, e.g. 30d")] = None,
    idle_stop: Annotated[str | None, typer.Option(help="Stop workspaces unused for this long, e.g. 8h")] = None,
    warm_pool: Annotated[int, typer.Option(help="Prebuilt workspaces kept ready for launches (0 to 10)")] = 0,
) -> None:
    """Register a project made of one or more git repositories (admins)."""
    body = {"name": name, "repos": repo, "dockerfile": dockerfile, "purge_on": purge_on, "grace": grace,
            "key": key, "cpus": cpus, "memory": memory, "pids": pids, "tracker": tracker,
            "tracker_config": _read_config(tracker_config_file) or {}, "max_age": max_age,
            "idle_stop": idle_stop, "warm_pool": warm_pool}
    project = _client().call("POST", "/projects", json_body=body, timeout=300)
    out.print(f"Project {project['name']} ({project['key']}) with "
              + ", ".join(f"{r['name']}@{r['default_branch']}" for r in project["repos"]))


def _read_config(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"Cannot read the tracker config {path}: {exc}", "Give a JSON object in a file.") from None
    if not isinstance(data, dict):
        raise CliError(f"The tracker config {path} is not a JSON object.")
    return data


@project_app.command("set")
def project_set(
    name: str,
    purge_on: Annotated[list[str] | None, typer.Option("--purge-on", help="Statuses that end a workspace")] = None,
    purge_on_category: Annotated[str | None, typer.Option(help="todo, in_progress, done or none")] = None,
    grace: Annotated[str | None, typer.Option(help="Grace period before a purge, e.g. 24h")] = None,
    max_age: Annotated[str | None, typer.Option(help="e.g. 30d, or never")] = None,
    idle_stop: Annotated[str | None, typer.Option(help="e.g. 8h, or never")] = None,
    tracker: Annotated[str | None, typer.Option(help="builtin, jira, gitlab or github")] = None,
    tracker_config_file: Annotated[Path | None, typer.Option("--tracker-config-file")] = None,
    warm_pool: Annotated[int | None, typer.Option(help="Prebuilt workspaces kept ready (0 to 10)")] = None,
) -> None:
    """Change a project's purge policy, warm pool or tracker link (admins)."""
    body = {"purge_on": purge_on, "purge_on_category": purge_on_category, "grace": grace, "max_age": max_age,
            "idle_stop": idle_stop, "tracker": tracker, "tracker_config": _read_config(tracker_config_file),
            "warm_pool": warm_pool}
    project = _client().call("PATCH", f"/projects/{name}", json_body={k: v for k, v in body.items() if v is not None})
    out.print(f"Project {project['name']}: tracker {project['tracker']}, purge on "
              f"{project['purge_on_category'] or '-'} {', '.join(project['purge_on_statuses'])}, "
              f"grace {project['purge_grace_seconds']}s, warm pool {project['warm_pool']}.")


@project_app.command("sync")
def project_sync(name: str) -> None:
    """Fetch the project's tickets from its tracker now (admins)."""
    project = _client().call("POST", f"/projects/{name}/sync", timeout=600)
    if project["tracker_stale_since"]:
        raise CliError(f"The tracker could not be read: {project['tracker_error']}")
    out.print(f"Synced {project['name']} at {project['tracker_synced_at']}.")


@project_app.command("list")
def project_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    projects = _client().call("GET", "/projects")
    if as_json:
        print_json(projects)
        return
    table = table_of("key", "name", "repositories", "purge on", "grace", "warm pool")
    for p in projects:
        purge = ", ".join(filter(None, [p["purge_on_category"] and f"category {p['purge_on_category']}",
                                        *p["purge_on_statuses"]]))
        table.add_row(p["key"], p["name"], "\n".join(f"{r['name']}  {r['url']}" for r in p["repos"]), purge,
                      f"{p['purge_grace_seconds']}s", _pool_cell(p))
    out.print(table)


def _pool_cell(project: dict[str, Any]) -> str:
    pool = project.get("pool")
    if not project["warm_pool"] and not (pool and pool["building"] + pool["ready"]):
        return "-"
    if not pool:
        return str(project["warm_pool"])
    parts = [f"{pool['ready']}/{project['warm_pool']} ready"]
    if pool["building"]:
        parts.append(f"{pool['building']} building")
    if pool["failed"]:
        parts.append(f"{pool['failed']} failed: {pool['error']}")
    return ", ".join(parts)


# Tokens ----------------------------------------------------------------------------------------


@token_app.command("add")
def token_add(
    name: str,
    host: Annotated[str, typer.Option(help="Git host as in repository URLs, e.g. github.com")],
    secret_env: Annotated[str, typer.Option("--secret-env", help="Environment variable that holds the token")],
    username: Annotated[str | None, typer.Option(help="User name for the host (default x-access-token)")] = None,
) -> None:
    """Store a git token. It is read from an environment variable, never from the command line."""
    secret = os.environ.get(secret_env)
    if not secret:
        raise CliError(f"The environment variable {secret_env} is not set or empty.",
                       f"Export the token first, e.g. read -rs {secret_env} && export {secret_env}")
    token = _client().call("POST", "/tokens", json_body={"name": name, "host": host, "username": username,
                                                         "secret": secret.strip()})
    out.print(f"Stored token {token['name']} for {token['host']} ({token['fingerprint']}).")


@token_app.command("list")
def token_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    tokens = _client().call("GET", "/tokens")
    if as_json:
        print_json(tokens)
        return
    table = table_of("name", "host", "username", "fingerprint", "created", "last used")
    for t in tokens:
        table.add_row(t["name"], t["host"], t["username"], t["fingerprint"], t["created_at"][:19],
                      (t["last_used_at"] or "-")[:19])
    out.print(table)


@token_app.command("remove")
def token_remove(name: str) -> None:
    _client().call("DELETE", f"/tokens/{_segment(name)}")
    out.print(f"Removed token {name}.")


# Tickets ---------------------------------------------------------------------------------------


@ticket_app.command("add")
def ticket_add(project: str, title: Annotated[str, typer.Option(help="Title")],
               description: Annotated[str, typer.Option(help="Markdown description")] = "",
               assignee: Annotated[str | None, typer.Option(help="User name")] = None) -> None:
    """Create a ticket; prints its key."""
    ticket = _client().call("POST", "/tickets", json_body={"project": project, "title": title,
                                                           "description": description, "assignee": assignee})
    out.print(ticket["key"])


@ticket_app.command("list")
def ticket_list(as_json: Annotated[bool, typer.Option("--json")] = False,
                project: Annotated[str | None, typer.Option(help="Only this project")] = None,
                mine: Annotated[bool, typer.Option("--mine", help="Only tickets assigned to me")] = False) -> None:
    tickets = _client().call("GET", "/tickets", params={"project": project, "mine": mine} if project else
                             {"mine": mine})
    if as_json:
        print_json(tickets)
        return
    table = table_of("key", "title", "status", "assignee", "age", "in status")
    for t in tickets:
        table.add_row(t["key"], t["title"], t["status"], t["assignee"] or "-", _age(t["created_at"]),
                      _age(t["status_changed_at"]))
    out.print(table)


@ticket_app.command("move")
def ticket_move(key: str, status: str) -> None:
    """Move a ticket to another status (To Do, In Progress, In Review, Done)."""
    ticket = _client().call("POST", f"/tickets/{_segment(key)}/move", json_body={"status": status})
    out.print(f"{ticket['key']} is now {ticket['status']}.")


# Workspaces ------------------------------------------------------------------------------------


def _ws_summary(ws: dict[str, Any]) -> dict[str, Any]:
    return {"key": ws["key"], "id": ws["id"], "state": ws["state"], "branch": ws["branch"], "url": ws["url"],
            "ready_seconds": ws["ready_seconds"]}


def _describe(event: dict[str, Any]) -> str | None:
    seconds = f"{event['duration_ms'] / 1000:.2f}s" if event["duration_ms"] is not None else ""
    if event["kind"] == "step":
        mark = {"ok": "[green]✓[/]", "failed": "[yellow]![/]", "skipped": "[dim]-[/]"}.get(event["status"], "·")
        detail = ""
        data = event.get("data") or {}
        if event["step"] == "image" and data.get("cached"):
            detail = " (cached)"
        if event["step"] == "clone" and data:
            detail = f" ({', '.join(data.get('cloned', []) + data.get('switched', []) + data.get('kept', []))})"
        if event.get("reason"):
            detail += f" — {event['reason']}"
        return f"{mark} {event['step']:<10} {seconds:>7}{escape(detail)}"
    if event["kind"] == "transition" and event["to_state"] == "failed":
        return f"[red]✗ failed[/] at {event.get('step') or 'a step'}: {escape(event['reason'] or '')}"
    if event["kind"] == "transition":
        return f"→ {event['to_state']}" + (f" ({escape(event['reason'])})" if event.get("reason") else "")
    return f"· {escape(event['reason'])}" if event.get("reason") else None


def _follow(client: Client, ref: str, *, until: set[str], quiet: bool, after: int = 0,
            timeout: float = 3600) -> dict[str, Any]:
    """Print events after ``after`` as they come until the workspace reaches one of ``until``
    (or fails)."""
    deadline = time.monotonic() + timeout
    ws: dict[str, Any] = {}
    settled = sorted(until | {"failed", "purge_blocked", "purged"})
    with err.status("working...", spinner="dots") if not quiet and err.is_terminal else _Null():
        while time.monotonic() < deadline:
            # Quiet, nothing is shown on the way: one request waits for the end.
            params = {"after": after, "wait": 20, **({"until": settled} if quiet else {})}
            page = client.call("GET", f"/workspaces/{ref}/events", params=params, timeout=60)
            ws = page["workspace"]
            for event in page["events"]:
                after = event["id"]
                line = None if quiet else _describe(event)
                if line:
                    err.print(line, markup=True)
            if ws["state"] in settled:
                return ws
    raise CliError(f"Gave up waiting after {timeout:.0f}s; the workspace is {ws.get('state')}.")


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def _finish(ws: dict[str, Any], as_json: bool, want: str, took: float | None = None) -> None:
    """Say where the workspace got to; ``took``: how long the asked change took (default: its
    launch's time to ready)."""
    if as_json:
        print_json(_ws_summary(ws))
    if ws["state"] != want:
        reason = ws.get("failure_reason") or f"the workspace is {ws['state']}"
        raise CliError(f"{ws['key']}: {reason}" if not as_json else reason)
    if not as_json:
        seconds = took if took is not None else ws.get("ready_seconds") if want == "ready" else None
        extra = f" in {seconds:.2f}s" if seconds else ""
        out.print(f"{ws['key']} is {ws['state']}{extra} — branch {ws['branch']}")
        if want == "ready" and ws.get("startup_status") == "failed":
            err.print(f"[yellow]startup failed:[/] {escape(ws['startup_detail'])} (taskspace ws logs {ws['key']})",
                      markup=True)


def _split_per_repo(values: list[str] | None) -> tuple[str | None, dict[str, str]]:
    single, per_repo = None, {}
    for value in values or []:
        name, sep, branch = value.partition("=")
        if sep:
            per_repo[name] = branch
        else:
            single = value
    return single, per_repo


@ws_app.command("launch")
def ws_launch(
    key: str,
    repo: Annotated[list[str] | None, typer.Option("--repo", help="Repository to include; repeat (default all)")] = None,
    source_branch: Annotated[list[str] | None, typer.Option(
        "--source-branch", help="Branch to start from (B, or REPO=B; repeat)")] = None,
    target_branch: Annotated[list[str] | None, typer.Option(
        "--target-branch", help="Branch to merge into (B, or REPO=B; repeat)")] = None,
    token: Annotated[str | None, typer.Option(help="Name of the git token to use")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until ready, showing each step")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print {key, id, state, branch, url, ready_seconds}")] = False,
) -> None:
    """Launch (or return) your workspace for a ticket."""
    client = _client()
    source, sources = _split_per_repo(source_branch)
    target, targets = _split_per_repo(target_branch)
    ws = client.call("POST", "/workspaces", json_body={
        "key": key, "repos": repo, "source_branch": source, "source_branches": sources,
        "target_branch": target, "target_branches": targets, "token": token})
    if wait:
        ws = _follow(client, ws["id"], until={"ready"}, quiet=as_json)
        _finish(ws, as_json, "ready")
    elif as_json:
        print_json(_ws_summary(ws))
    else:
        out.print(f"{ws['key']}: {ws['state']} — follow with 'taskspace ws show {ws['key']}'")


@ws_app.command("list")
def ws_list(as_json: Annotated[bool, typer.Option("--json")] = False,
            all_: Annotated[bool, typer.Option("--all", help="Include purged workspaces")] = False) -> None:
    found = _client().pages("/workspaces", params={"all": all_})
    if as_json:
        print_json(found)
        return
    table = table_of("ticket", "state", "branch", "repositories", "ready in", "startup")
    for ws in found:
        ready = f"{ws['ready_seconds']:.1f}s" if ws["ready_seconds"] else "-"
        table.add_row(ws["key"], ws["state"], ws["branch"], ", ".join(r["name"] for r in ws["repos"]), ready,
                      ws["startup_status"] or "-")
    out.print(table)


@ws_app.command("show")
def ws_show(key: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    ws = _client().call("GET", f"/workspaces/{_segment(key)}")
    if as_json:
        print_json(ws)
        return
    out.print(f"[bold]{ws['key']}[/] {escape(ws['title'])}", markup=True)
    out.print(f"state     {ws['state']}" + (f" (step {ws['step']})" if ws["step"] else ""))
    if ws["failure_reason"]:
        out.print(f"[red]failed at {ws['failure_step']}:[/] {escape(ws['failure_reason'])}", markup=True)
    out.print(f"branch    {ws['branch']}")
    for r in ws["repos"]:
        out.print(f"  {r['path']:<24} from {r['source_branch'] or '?'} → merge into {r['target_branch'] or '?'}")
    env = ws.get("environment") or {}
    if env:
        out.print(f"image     {ws['image']} ({env['source']}: {env['config_path']})")
        if env.get("services"):
            out.print(f"services  {', '.join(env['services'])}")
    if ws["startup_status"]:
        out.print(f"startup   {ws['startup_status']}" + (f" — {ws['startup_detail']}" if ws["startup_detail"] else ""))
    if ws["purge_due_at"]:
        out.print(f"purge due {ws['purge_due_at']}")
    for rescued in ws["rescue"]:
        out.print(f"rescued   {rescued['repo']} → {rescued['branch']}")


@ws_app.command("exec", context_settings={"allow_interspersed_args": False})
def ws_exec(key: str, command: Annotated[list[str], typer.Argument(help="The command, after --")]) -> None:
    """Run a command in the workspace; streams its output and exits with its code."""
    if command and command[0] == "--":
        command = command[1:]
    code = 1
    for item in _client().stream_lines(f"/workspaces/{_segment(key)}/exec", json_body={"argv": command}):
        if "exit_code" in item:
            code = item["exit_code"]
        elif "error" in item:
            raise CliError(item["error"]["message"], item["error"].get("hint"))
        else:
            stream = sys.stdout.buffer if item["stream"] == "stdout" else sys.stderr.buffer
            stream.write(base64.b64decode(item["data"]))
            stream.flush()
    raise typer.Exit(code)


def _request(key: str, action: str, wait: bool, until: str, body: dict[str, Any] | None = None) -> None:
    client = _client()
    seen = client.call("GET", f"/workspaces/{_segment(key)}/events") if wait else {"events": []}
    started = time.monotonic()
    ws = client.call("POST", f"/workspaces/{_segment(key)}/{action}", json_body=body)
    if wait:
        after = seen["events"][-1]["id"] if seen["events"] else 0
        ws = _follow(client, ws["id"], until={until}, quiet=False, after=after)
        _finish(ws, False, until, took=time.monotonic() - started)
    else:
        out.print(f"{ws['key']}: {action} requested (now {ws['state']}).")


@ws_app.command("stop")
def ws_stop(key: str, wait: Annotated[bool, typer.Option("--wait", help="Wait until stopped")] = False) -> None:
    """Stop the workspace and its services; files are kept."""
    _request(key, "stop", wait, "stopped")


@ws_app.command("start")
def ws_start(key: str, wait: Annotated[bool, typer.Option("--wait", help="Wait until ready")] = False) -> None:
    """Start a stopped workspace (the startup script runs again), or retry a failed one."""
    _request(key, "start", wait, "ready")


@ws_app.command("purge")
def ws_purge(key: str, wait: Annotated[bool, typer.Option("--wait", help="Wait until purged")] = False,
             discard_unpushed: Annotated[bool, typer.Option(
                 "--discard-unpushed", help="Do not rescue unpushed work: it is lost")] = False) -> None:
    """Delete the workspace after pushing unpushed work to rescue/<KEY>-<timestamp> branches."""
    _request(key, "purge", wait, "purged", {"discard_unpushed": discard_unpushed})


@ws_app.command("logs")
def ws_logs(key: str, startup: Annotated[bool, typer.Option("--startup", help="The startup log (default)")] = False,
            build: Annotated[bool, typer.Option("--build", help="The image build log")] = False) -> None:
    which = "build" if build and not startup else "startup"
    sys.stdout.write(_client().call("GET", f"/workspaces/{_segment(key)}/logs/{which}"))

