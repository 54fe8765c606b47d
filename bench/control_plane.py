"""The control plane at scale, on SQLite and on PostgreSQL.

The database gets the fixture's project with ``tickets`` tickets (a large share assigned to the
admin, so the board has real work) and ``workspaces`` workspaces, most ``stopped`` or
``purged`` and ``running`` of them ``ready``, inserted directly through the server's own models
(a Runtime from ``build_runtime`` on the same database, before the server starts). Each ready
one has a REAL running container: a ``sleep infinity`` container of the base image, labelled
exactly like a workspace container of this installation, so the reconciler sees it running.
The containers are created once and serve both databases (both get the same installation id
and the same workspace ids).

The server then runs with ``DOCKER_HOST`` pointing at a counting proxy of the engine's socket.
Measured: latency and throughput of the board page (signed in with a session cookie) and of
``GET /api/v1/workspaces?everyone=true`` (its first page) under a closed-loop load generator
(``bench.load``, with the server's and its own CPU per request),
and the time to list every workspace page after page; the duration of a
reconcile pass (``POST /api/v1/reconcile``) and the engine requests it makes; and, for
reference, one metrics sampling round (``?sample=true``) with its engine requests.
"""

from __future__ import annotations

import asyncio
import random
import re
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker.errors
import httpx
from sqlalchemy import insert, select

from bench.engine_proxy import CountingProxy
from bench.fixture import FIXTURE_LABEL, PRIMARY, SECONDARY, BenchServer, Fixture, Log
from bench.load import hammer
from bench.stats import summarize
from taskspace.db.engine import transaction
from taskspace.db.models import Event, Meta, Project, Repo, Ticket, User, Workspace, WorkspaceRepo
from taskspace.services.bootstrap import bootstrap
from taskspace.services.runtime import build_runtime
from taskspace.settings import load_settings
from taskspace.testing.postgres import PostgresServer

BATCH = 1000
# Background work that would otherwise run during the measurements (one engine call per
# running container each): postponed, and the passes only run when asked for.
QUIET = {"TASKSPACE_METRICS_INTERVAL": "86400", "TASKSPACE_ACTIVITY_CHECK_INTERVAL": "86400",
         "TASKSPACE_POOL_CHECK_INTERVAL": "86400", "TASKSPACE_HOUSEKEEPING_INTERVAL": "86400",
         "TASKSPACE_RECONCILE_INTERVAL": "3600", "TASKSPACE_LEASE_SECONDS": "10800"}
STATUSES = [("To Do", "todo"), ("In Progress", "in_progress"), ("In Review", "in_progress"), ("Done", "done")]


@dataclass(frozen=True)
class Scale:
    tickets: int
    workspaces: int
    running: int
    duration: float
    connections: int
    passes: int = 5
    sample_cap: float = 60.0


@dataclass(frozen=True)
class Plan:
    """What goes in the database, decided once so that both databases get the same rows."""

    installation: str
    workspace_ids: list[str]
    states: list[str]  # per workspace: ready, stopped or purged

    @property
    def ready_ids(self) -> list[str]:
        return [w for w, s in zip(self.workspace_ids, self.states, strict=True) if s == "ready"]


def make_plan(fixture: Fixture, scale: Scale) -> Plan:
    if scale.running > scale.workspaces:
        raise ValueError("--running cannot exceed --workspaces")
    rest = scale.workspaces - scale.running
    states = ["ready"] * scale.running + ["stopped"] * (rest // 2) + ["purged"] * (rest - rest // 2)
    # Ids look like the server's (12 hex digits) and are unique to this benchmark run.
    ids = [f"{fixture.nonce[:4]}{i:08x}" for i in range(scale.workspaces)]
    return Plan(installation=secrets.token_hex(4), workspace_ids=ids, states=states)


# Containers ----------------------------------------------------------------------------------------


def create_containers(fixture: Fixture, plan: Plan, log: Log) -> list[str]:
    """One ``sleep infinity`` container per ready workspace, labelled as its workspace
    container (and with the fixture's label, for the cleanup); host network, so no veth each."""
    client = fixture.docker

    def one(workspace_id: str) -> str:
        container = client.containers.run(
            fixture.base_image, ["sleep", "infinity"], name=f"ts-{workspace_id}", detach=True,
            network_mode="host",
            labels={"taskspace.installation": plan.installation, "taskspace.workspace": workspace_id,
                    "taskspace.role": "workspace", FIXTURE_LABEL: fixture.nonce})
        return container.id

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        made = list(pool.map(one, plan.ready_ids))
    log(f"scale: {len(made)} running containers created in {time.monotonic() - started:.1f} s")
    return made


def remove_containers(fixture: Fixture) -> int:
    client = fixture.docker
    found = client.containers.list(all=True, filters={"label": f"{FIXTURE_LABEL}={fixture.nonce}"})

    def one(container: Any) -> None:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, found))
    return len(found)


# Database ------------------------------------------------------------------------------------------


async def _seed(data_dir: Path, database_url: str | None, fixture: Fixture, scale: Scale, plan: Plan,
                project_name: str, key: str) -> dict[str, Any]:
    overrides: dict[str, Any] = {"data_dir": data_dir, "workspace_network": "host", "build_network": "host"}
    if database_url:
        overrides["database_url"] = database_url
    settings = load_settings(**overrides)
    rt = await build_runtime(settings)  # migrations; an installation id
    try:
        async with transaction(rt.sessions) as session:
            row = await session.get(Meta, "installation")
            assert row is not None
            row.value = plan.installation  # the one the running containers carry
    finally:
        await rt.close()
    rt = await build_runtime(settings)
    started = time.monotonic()
    try:
        await bootstrap(rt, with_demo=False, say=lambda _m: None)  # the admin, its token and password
        rng = random.Random(7)
        now = datetime.now(UTC)
        async with transaction(rt.sessions) as session:
            admin = await session.scalar(select(User).where(User.username == "admin"))
            assert admin is not None
            project = Project(key=key, name=project_name, tracker="builtin", purge_on_category="done",
                              ticket_counter=scale.tickets)
            session.add(project)
            await session.flush()
            repo_ids = []
            for position, (name, url) in enumerate(zip((PRIMARY, SECONDARY), fixture.repo_urls, strict=True)):
                repo = Repo(project_id=project.id, name=name, url=url, default_branch="main",
                            is_primary=position == 0, position=position)
                session.add(repo)
                await session.flush()
                repo_ids.append(repo.id)
            project_id, admin_id = project.id, admin.id
            # Every workspace has its own ticket, assigned to the admin; live ones on active tickets.
            tickets = []
            for number in range(1, scale.tickets + 1):
                index = number - 1
                if index < len(plan.states):
                    status = STATUSES[3] if plan.states[index] == "purged" else STATUSES[index % 3]
                    assignee = "admin"
                else:
                    status = rng.choice(STATUSES)
                    assignee = "admin" if rng.random() < 0.4 else f"dev{rng.randrange(50)}"
                created = now - timedelta(days=rng.uniform(0, 120))
                changed = created + (now - created) * rng.random()
                tickets.append({"project_id": project_id, "key": f"{key}-{number}",
                                "title": f"Ticket {number}: make the {rng.choice(['login', 'cart', 'search'])} "
                                         f"page {rng.choice(['faster', 'accessible', 'work offline'])}",
                                "description": "", "status": status[0], "status_category": status[1],
                                "assignee": assignee, "created_at": created, "updated_at": changed,
                                "status_changed_at": changed})
            for start in range(0, len(tickets), BATCH):
                await session.execute(insert(Ticket), tickets[start:start + BATCH])
            ticket_ids = dict((await session.execute(
                select(Ticket.key, Ticket.id).where(Ticket.project_id == project_id))).tuples().all())

            workspaces, repos, events = [], [], []
            for index, (workspace_id, state) in enumerate(zip(plan.workspace_ids, plan.states, strict=True)):
                ticket_key = f"{key}-{index + 1}"
                created = now - timedelta(days=rng.uniform(1, 60))
                ready_seconds = rng.uniform(5, 40)
                ready_at = created + timedelta(seconds=ready_seconds)
                workspaces.append({
                    "id": workspace_id, "ticket_id": ticket_ids[ticket_key], "owner_id": admin_id,
                    "project_id": project_id, "state": state, "desired": state, "step": None,
                    "branch": f"{ticket_key}-ticket", "backend": "docker", "backend_state": {}, "plan": {},
                    "environment": {}, "image": f"taskspace/{project_name}:0123456789abcdef",
                    "startup_status": "ok", "created_at": created, "updated_at": ready_at, "ready_at": ready_at,
                    "ready_seconds": ready_seconds, "last_started_at": ready_at, "rescue": [],
                    "purged_at": ready_at + timedelta(days=1) if state == "purged" else None, "version": 3})
                for position, name in enumerate((PRIMARY, SECONDARY)):
                    repos.append({"workspace_id": workspace_id, "repo_id": repo_ids[position], "name": name,
                                  "url": fixture.repo_urls[position], "is_primary": position == 0,
                                  "position": position, "source_branch": "main", "target_branch": "main",
                                  "branch_existed": False, "base_sha": "0" * 40})
                path = [(None, "requested"), ("requested", "preparing"), ("preparing", "starting"),
                        ("starting", "ready")]
                if state == "stopped":
                    path.append(("ready", "stopped"))
                if state == "purged":
                    path += [("ready", "purging"), ("purging", "purged")]
                for from_state, to_state in path:
                    events.append({"workspace_id": workspace_id, "at": ready_at, "actor": "admin",
                                   "kind": "transition", "from_state": from_state, "to_state": to_state,
                                   "reason": "seeded", "data": {}})
                for step, seconds in (("preflight", 0.4), ("image", 0.01), ("clone", 0.2), ("startup", 0.1)):
                    events.append({"workspace_id": workspace_id, "at": ready_at, "actor": "taskspace", "kind": "step",
                                   "step": step, "status": "ok", "duration_ms": int(seconds * 1000), "data": {}})
            for rows, model in ((workspaces, Workspace), (repos, WorkspaceRepo), (events, Event)):
                for start in range(0, len(rows), BATCH):
                    await session.execute(insert(model), rows[start:start + BATCH])
            # The resource sampler and the IDE check have "just run": they stay out of the measurements.
            for meta_key in ("metrics_sampled_at", "activity_checked_at"):
                existing = await session.get(Meta, meta_key)
                if existing is None:
                    session.add(Meta(key=meta_key, value=now.isoformat()))
                else:
                    existing.value = now.isoformat()
        if database_url:
            # What autovacuum does to a table filled over months: without it, PostgreSQL's
            # counts read the heap of a table it has just been handed thousands of rows.
            async with rt.engine.connect() as conn:
                autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await autocommit.exec_driver_sql("VACUUM ANALYZE")
        return {"seed_seconds": round(time.monotonic() - started, 2), "tickets": len(tickets),
                "admin_tickets": sum(1 for t in tickets if t["assignee"] == "admin"),
                "workspaces": {s: plan.states.count(s) for s in ("ready", "stopped", "purged")},
                "workspace_repos": len(repos), "events": len(events)}
    finally:
        await rt.close()


# Measurements --------------------------------------------------------------------------------------


def sign_in(url: str, password: str) -> dict[str, str]:
    """A browser session: the sign-in form as served, then posted; returns its cookies."""
    with httpx.Client(base_url=url, follow_redirects=False, timeout=30) as client:
        page = client.get("/login")
        match = re.search(r'name="login_token" value="([^"]+)"', page.text)
        if match is None:
            raise RuntimeError("the sign-in page has no login_token field")
        response = client.post("/login", data={"username": "admin", "password": password,
                                               "login_token": match.group(1), "next": "/"})
        if response.status_code != 303:
            raise RuntimeError(f"signing in answered {response.status_code}: {response.text[:300]}")
        return dict(client.cookies.items())


def _quiet(proxy: CountingProxy, *, still: float = 1.0, timeout: float = 60) -> None:
    """Wait until the server has sent the engine nothing for ``still`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = proxy.requests(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = proxy.requests()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= still:
            return


def _measure(server: BenchServer, proxy: CountingProxy, scale: Scale, log: Log, label: str,
             sample_cap: float) -> dict[str, Any]:
    url = server.process.url
    password = (server.process.data_dir / "initial-admin-password").read_text().strip()
    cookies = sign_in(url, password)
    board = httpx.get(f"{url}/", cookies=cookies, timeout=60)
    cards = board.text.count('<article class="ticket"')
    _quiet(proxy)

    log(f"scale[{label}]: board page under {scale.connections} connections for {scale.duration:g} s")
    result: dict[str, Any] = {"board_page": hammer(f"{url}/", connections=scale.connections,
                                                   duration=scale.duration, cookies=cookies, server_pid=server.pid)}
    result["board_page"]["cards_hint"] = cards
    log(f"scale[{label}]: GET /api/v1/workspaces?everyone=true under {scale.connections} connections")
    result["workspaces_api"] = hammer(f"{url}/api/v1/workspaces?everyone=true", connections=scale.connections,
                                      duration=scale.duration, server_pid=server.pid,
                                      headers={"Authorization": f"Bearer {server.process.token}"})
    first = server.expect(server.api.get("/workspaces", params={"everyone": "true"}), 200)
    result["workspaces_api"]["items"], result["workspaces_api"]["total"] = len(first["items"]), first["total"]
    walks = []
    for _ in range(3):  # the whole listing, as `ws list` gets it: every page at the largest size
        started = time.perf_counter()
        listed = server.workspaces(everyone="true")
        walks.append(time.perf_counter() - started)
    result["workspaces_api"]["all_pages"] = {"items": len(listed), "seconds": summarize(walks)}

    log(f"scale[{label}]: {scale.passes} reconcile passes")
    passes = []
    for _ in range(scale.passes):
        _quiet(proxy, still=0.5)
        proxy.reset()
        before = proxy.requests()
        started = time.perf_counter()
        report = server.expect(server.api.post("/reconcile", timeout=600), 200)
        wall = time.perf_counter() - started
        passes.append({"seconds": report["seconds"], "wall_seconds": round(wall, 4),
                       "workspaces": report["workspaces"], "jobs_started": len(report["jobs_started"]),
                       "restarted": len(report["restarted"]), "orphans": len(report["orphans"]),
                       "engine_requests": proxy.requests() - before, "engine_requests_by_path": proxy.counts()})
    result["reconcile"] = {
        "seconds": summarize(p["seconds"] for p in passes),
        "engine_requests_per_pass": max(p["engine_requests"] for p in passes),
        "engine_requests_by_path": passes[-1]["engine_requests_by_path"],
        "bounded": max(p["engine_requests"] for p in passes) < max(10, scale.running // 2),
        "passes": passes,
    }

    if sample_cap:
        log(f"scale[{label}]: one resource sampling round (?sample=true), waited for up to {sample_cap:g} s")
        result["metrics_sample_round"] = _sample_round(server, proxy, sample_cap, scale.running)
    return result


def _sample_round(server: BenchServer, proxy: CountingProxy, cap: float, running: int) -> dict[str, Any]:
    """One resource sampling round (``POST /api/v1/reconcile?sample=true``), for reference:
    its duration and engine requests. Waited for at most ``cap`` seconds; past that, the rate
    of stats calls so far gives an estimate of the whole round."""
    _quiet(proxy, still=0.5)
    proxy.reset()
    before = proxy.requests()
    outcome: dict[str, Any] = {}

    def call() -> None:
        headers = {"Authorization": f"Bearer {server.process.token}"}
        try:
            response = httpx.post(f"{server.process.url}/api/v1/reconcile", params={"sample": "true"},
                                  headers=headers, timeout=3600)
            outcome["status"] = response.status_code
        except httpx.HTTPError as exc:
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    started = time.perf_counter()
    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(cap)
    elapsed = time.perf_counter() - started
    stats_calls = sum(n for path, n in proxy.counts().items() if path.endswith("/stats"))
    finished = not worker.is_alive()
    round_info: dict[str, Any] = {
        "finished": finished, "wall_seconds_including_a_pass": round(elapsed, 3) if finished else None,
        "waited_seconds": round(elapsed, 3), "engine_requests": proxy.requests() - before,
        "engine_requests_by_path": proxy.counts(), "stats_calls": stats_calls,
        "seconds_per_stats_call": round(elapsed / stats_calls, 4) if stats_calls else None, **outcome}
    if not finished and stats_calls:
        round_info["estimated_round_seconds"] = round(elapsed / stats_calls * running, 1)
        round_info["note"] = (f"not finished after {cap:g} s: {stats_calls} of {running} stats calls done; the "
                              "server stops with the round in flight")
    return round_info


def _one_database(fixture: Fixture, scale: Scale, plan: Plan, label: str, database_url: str | None,
                  log: Log, *, sample_cap: float = 0) -> dict[str, Any]:
    proxy = CountingProxy(fixture.root / f"engine-{label}.sock").start()
    result: dict[str, Any] | None = None
    server = BenchServer(fixture, f"scale-{label}", database_url=database_url, env=dict(QUIET),
                         docker_host=proxy.url)
    try:
        log(f"scale[{label}]: inserting {scale.tickets} tickets and {scale.workspaces} workspaces")
        seeded = asyncio.run(_seed(server.process.data_dir, database_url, fixture, scale, plan,
                                   server.project, server.key))
        started = time.monotonic()
        server.start()
        seeded["server_start_seconds"] = round(time.monotonic() - started, 2)
        if server.process.installation != plan.installation:
            raise RuntimeError(f"the server's installation is {server.process.installation}, not "
                               f"{plan.installation}: the containers would not be its own")
        _quiet(proxy)
        result = {"database": label, "seeded": seeded,
                  **_measure(server, proxy, scale, log, label, sample_cap)}
        board, api, passes = result["board_page"], result["workspaces_api"], result["reconcile"]
        log(f"scale[{label}]: board p50 {board['latency_seconds']['p50']} s ({board['requests_per_second']} req/s, "
            f"{board.get('server_cpu_ms_per_request')} ms of server CPU each), "
            f"workspaces p50 {api['latency_seconds']['p50']} s ({api['requests_per_second']} req/s), "
            f"reconcile p50 {passes['seconds']['p50']} s with {passes['engine_requests_per_pass']} engine requests")
        return result
    finally:
        if not (result or {}).get("metrics_sample_round", {}).get("finished", True):
            server.process.kill()  # a graceful stop would wait for the sampling round in flight
        server.stop()
        proxy.stop()


def run(fixture: Fixture, *, scale: Scale, log: Log) -> dict[str, Any]:
    plan = make_plan(fixture, scale)
    result: dict[str, Any] = {"scale": scale.__dict__, "databases": {}}
    postgres: PostgresServer | None = None
    try:
        create_containers(fixture, plan, log)
        result["running_containers"] = len(plan.ready_ids)
        # The sampling round talks to the engine only: measured once, on the first database.
        result["databases"]["sqlite"] = _one_database(fixture, scale, plan, "sqlite", None, log,
                                                      sample_cap=scale.sample_cap)
        try:
            postgres = PostgresServer.from_env_or_start()
            postgres.start()
            database_url = postgres.create_database()
        except Exception as exc:  # the machine may have no PostgreSQL: say so, keep SQLite's numbers
            result["databases"]["postgresql"] = {"skipped": f"PostgreSQL could not be started: {exc}"}
            log(f"scale: PostgreSQL SKIPPED — {exc}")
        else:
            result["databases"]["postgresql"] = _one_database(fixture, scale, plan, "postgresql", database_url, log)
    finally:
        removed = remove_containers(fixture)
        log(f"scale: removed {removed} containers")
        if postgres is not None:
            postgres.stop()
    return result
