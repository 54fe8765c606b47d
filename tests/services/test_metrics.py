"""Resource samples and what is read from them: the CPU use between two readings, the pace and
retention of sampling rounds, a real container sampled through the Docker backend, and the
dashboard, CSV and Prometheus views with their role scoping, aggregates and series."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import docker
import pytest
from sqlalchemy import event, select

from taskspace.core.errors import Forbidden
from taskspace.core.states import Desired, State
from taskspace.db.engine import transaction
from taskspace.db.models import Meta, MetricSample, Project, Ticket, User, Workspace, utcnow
from taskspace.plugins.backends.base import LABEL_INSTALLATION, LABEL_ROLE, LABEL_WORKSPACE, ResourceStats
from taskspace.plugins.backends.docker import specs
from taskspace.services import metrics
from taskspace.services.runtime import Runtime

MiB = 1024 * 1024


# The CPU use between two readings ---------------------------------------------------------------


def test_cpu_use_is_the_containers_share_of_the_hosts_time_times_its_cpus() -> None:
    reading = ResourceStats(memory_bytes=1, cpu_total=1_500, cpu_system=10_000, online_cpus=4)

    assert metrics.cpu_percent((500, 6_000), reading) == pytest.approx(1_000 / 4_000 * 4 * 100)  # 100 %: one CPU
    assert metrics.cpu_percent(None, reading) is None, "a first reading has nothing to compare with"
    assert metrics.cpu_percent((9_000, 6_000), reading) is None, "counters went back: the container restarted"
    assert metrics.cpu_percent((500, 10_000), reading) is None, "no host time passed"
    assert metrics.cpu_percent((None, None), reading) is None
    assert metrics.cpu_percent((500, 6_000), ResourceStats(memory_bytes=1)) is None


# Data put in through the ORM ---------------------------------------------------------------------


@dataclass
class Seeded:
    now: datetime
    admin: User
    dora: User  # developer
    rita: User  # reviewer
    ids: dict[str, str]  # name → workspace id


async def add_user(rt: Runtime, username: str, role: str) -> User:
    async with transaction(rt.sessions) as session:
        user = User(username=username, role=role)
        session.add(user)
    return user


async def add_workspace(rt: Runtime, *, owner: User, project: str, key: str, title: str = "Fix the login",
                        state: State = State.READY, ready_at: datetime | None = None,
                        ready_seconds: float | None = None, started_at: datetime | None = None,
                        workspace_id: str | None = None) -> str:
    async with transaction(rt.sessions) as session:
        row = await session.scalar(select(Project).where(Project.name == project))
        if row is None:
            row = Project(key=key.split("-")[0], name=project)
            session.add(row)
            await session.flush()
        ticket = Ticket(project_id=row.id, key=key, title=title, status="In Progress", status_category="in_progress")
        session.add(ticket)
        await session.flush()
        desired = Desired.PURGED if state == State.PURGED else Desired.READY
        ws = Workspace(id=workspace_id or secrets.token_hex(8), ticket_id=ticket.id, owner_id=owner.id,
                       project_id=row.id, state=state.value, desired=desired.value,
                       branch=f"{key}-x", backend="docker", ready_at=ready_at, ready_seconds=ready_seconds,
                       last_started_at=started_at)
        session.add(ws)
    return ws.id


async def add_samples(rt: Runtime, workspace_id: str, *samples: tuple[datetime, dict[str, object]]) -> None:
    async with transaction(rt.sessions) as session:
        ws = await session.get(Workspace, workspace_id)
        assert ws is not None
        for at, values in samples:
            session.add(MetricSample(at=at, workspace_id=ws.id, project_id=ws.project_id, owner_id=ws.owner_id,
                                     **values))


@pytest.fixture
async def seeded(rt: Runtime, admin: User) -> Seeded:
    """Dora (developer) has a ready, a stopped and a failed workspace in ``pay``; the admin a
    ready one in ``web`` (with a hostile title and a project name full of quotes) and a purged one."""
    now = utcnow().replace(microsecond=0)
    dora, rita = await add_user(rt, "dora", "developer"), await add_user(rt, "rita", "reviewer")
    ids = {
        "dora-ready": await add_workspace(rt, owner=dora, project="pay", key="PAY-1",
                                          ready_at=now - timedelta(days=2), ready_seconds=10.0,
                                          started_at=now - timedelta(hours=3)),
        "dora-stopped": await add_workspace(rt, owner=dora, project="pay", key="PAY-2", state=State.STOPPED,
                                            ready_at=now - timedelta(days=40), ready_seconds=99.0),
        "dora-failed": await add_workspace(rt, owner=dora, project="pay", key="PAY-3", state=State.FAILED),
        "admin-ready": await add_workspace(rt, owner=admin, project='we"b\\ops\n', key="WEB-1",
                                           title='=HYPERLINK("http://evil.example","x") <script>alert(1)</script>',
                                           ready_at=now - timedelta(days=1), ready_seconds=30.0,
                                           started_at=now - timedelta(minutes=5)),
        "admin-purged": await add_workspace(rt, owner=admin, project="pay", key="PAY-4", state=State.PURGED,
                                            ready_at=now - timedelta(days=3), ready_seconds=20.0),
    }
    minute = timedelta(minutes=1)
    await add_samples(rt, ids["dora-ready"],
                      (now - 2 * minute, {"cpu_percent": 10.0, "memory_bytes": 50 * MiB, "disk_bytes": 900 * MiB}),
                      (now - minute, {"cpu_percent": 50.0, "memory_bytes": 100 * MiB, "disk_bytes": 1024 * MiB}),
                      (now - timedelta(days=8), {"memory_bytes": 1, "disk_bytes": 1}))  # out of the 7-day series
    await add_samples(rt, ids["admin-ready"], (now - minute, {"memory_bytes": 200 * MiB, "disk_bytes": 2048 * MiB}))
    await add_samples(rt, ids["dora-stopped"],
                      (now - timedelta(hours=5), {"memory_bytes": 5, "disk_bytes": 512 * MiB}))
    return Seeded(now=now, admin=admin, dora=dora, rita=rita, ids=ids)


async def view_of(rt: Runtime, user: User, now: datetime) -> metrics.Dashboard:
    async with rt.readers() as session:
        return await metrics.dashboard(session=session, user=user, now=now)


async def test_a_developer_sees_only_their_own_workspaces(rt: Runtime, seeded: Seeded) -> None:
    view = await view_of(rt, seeded.dora, seeded.now)

    assert not view.everyone
    assert {k: v for k, v in view.states.items() if v} == {"ready": 1, "stopped": 1, "failed": 1}
    assert list(view.states) == [s.value for s in State], "every state, in the state machine's order"
    [row] = view.running
    assert (row.workspace_id, row.ticket, row.owner, row.project) == (
        seeded.ids["dora-ready"], "PAY-1", "dora", "pay")
    assert (row.cpu_percent, row.memory_bytes, row.disk_bytes) == (50.0, 100 * MiB, 1024 * MiB), "the latest sample"
    assert row.sampled_at == seeded.now - timedelta(minutes=1)
    assert row.uptime_seconds == 3 * 3600 and row.ready_seconds == 10.0
    assert (view.totals.running, view.totals.memory_sum, view.totals.cpu_percent_avg) == (1, 100 * MiB, 50.0)
    # Storage counts the stopped workspace's volume too (its latest size), and nothing of the admin's.
    assert [(p.project, p.disk_bytes, p.workspaces) for p in view.storage] == [("pay", 1536 * MiB, 2)]
    stopped_round, rounds = (seeded.now - timedelta(hours=5)).timestamp(), [
        (seeded.now - timedelta(minutes=m)).timestamp() for m in (2, 1)]
    assert view.running_points == [(stopped_round, 1), ((stopped_round + rounds[0]) / 2, None),
                                   (rounds[0], 1), (rounds[1], 1)], "five hours without a sample is a gap"
    assert view.ready_points == [((seeded.now - timedelta(days=2)).timestamp(), 10.0)], "30 days, own only"


async def test_reviewers_and_admins_see_everyone_with_totals_and_series(rt: Runtime, seeded: Seeded) -> None:
    for user in (seeded.rita, seeded.admin):
        view = await view_of(rt, user, seeded.now)

        assert view.everyone
        assert {k: v for k, v in view.states.items() if v} == {"ready": 2, "stopped": 1, "failed": 1, "purged": 1}
        assert [r.ticket for r in view.running] == ["PAY-1", "WEB-1"]
        totals = view.totals
        assert (totals.running, totals.sampled) == (2, 2)
        assert totals.cpu_percent_avg == 50.0, "a workspace without a CPU reading does not count as 0 %"
        assert (totals.memory_sum, totals.memory_avg, totals.disk_sum) == (300 * MiB, 150 * MiB, 3072 * MiB)
        assert [(p.project, p.disk_bytes) for p in view.storage] == [
            ('we"b\\ops\n', 2048 * MiB), ("pay", 1536 * MiB)]
        # Time to ready: the last 30 days (the purged workspace counts; the 40-day-old one does not).
        assert [s for _, s in view.ready_points] == [20.0, 10.0, 30.0], "oldest first"
        assert (view.time_to_ready.count, view.time_to_ready.average) == (3, 20.0)
        assert view.time_to_ready.quantiles[0.5] == 20.0
        assert view.time_to_ready.quantiles[0.9] == pytest.approx(28.0)
        # Running workspaces per sampling round of the last 7 days.
        counts = [n for _, n in view.running_points]
        assert counts == [1, None, 1, 2]
        assert view.last_sample_at == seeded.now - timedelta(minutes=1)
        assert view.chart_data()["running"][1] == counts


async def test_a_workspace_not_sampled_yet_is_listed_without_readings(rt: Runtime, seeded: Seeded) -> None:
    fresh = await add_workspace(rt, owner=seeded.dora, project="pay", key="PAY-9", started_at=seeded.now)

    view = await view_of(rt, seeded.dora, seeded.now)

    row = next(r for r in view.running if r.workspace_id == fresh)
    assert (row.cpu_percent, row.memory_bytes, row.sampled_at, row.uptime_seconds) == (None, None, None, 0.0)
    assert (view.totals.running, view.totals.sampled) == (2, 1)


async def test_the_csv_export_is_the_table_with_formulas_defused(rt: Runtime, seeded: Seeded) -> None:
    async with rt.readers() as session:
        text = await metrics.running_csv(session=session, user=seeded.rita, now=seeded.now)
        mine = await metrics.running_csv(session=session, user=seeded.dora, now=seeded.now)

    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(metrics.CSV_COLUMNS)
    assert [r["ticket"] for r in rows] == ["PAY-1", "WEB-1"]
    assert rows[0]["memory_bytes"] == str(100 * MiB) and rows[0]["cpu_percent"] == "50.0"
    assert rows[1]["title"].startswith("'=HYPERLINK("), "a title a spreadsheet would run is quoted"
    assert rows[1]["cpu_percent"] == "" and rows[1]["uptime_seconds"] == "300"
    assert [r["ticket"] for r in csv.DictReader(io.StringIO(mine))] == ["PAY-1"]


async def test_prometheus_exposition_for_reviewers_only(rt: Runtime, seeded: Seeded) -> None:
    async with rt.readers() as session:
        with pytest.raises(Forbidden):
            await metrics.prometheus(session=session, user=seeded.dora, now=seeded.now)
        text = await metrics.prometheus(session=session, user=seeded.rita, now=seeded.now)

    lines = text.splitlines()
    assert text.endswith("\n")
    assert "# TYPE taskspace_workspaces gauge" in lines
    assert 'taskspace_workspaces{state="ready"} 2' in lines and 'taskspace_workspaces{state="requested"} 0' in lines
    dora = seeded.ids["dora-ready"]
    labels = f'workspace="{dora}",ticket="PAY-1",project="pay",owner="dora"'
    assert f"taskspace_workspace_cpu_percent{{{labels}}} 50.0" in lines
    assert f"taskspace_workspace_memory_bytes{{{labels}}} {100 * MiB}" in lines
    assert f"taskspace_workspace_disk_bytes{{{labels}}} {1024 * MiB}" in lines
    # Label values are escaped: backslash, double quote, line feed.
    admin = seeded.ids["admin-ready"]
    assert (f'taskspace_workspace_memory_bytes{{workspace="{admin}",ticket="WEB-1",project="we\\"b\\\\ops\\n",'
            f'owner="admin"}} {200 * MiB}') in lines
    assert not any(line.startswith(f'taskspace_workspace_cpu_percent{{workspace="{admin}"') for line in lines), \
        "no CPU reading, no series"
    assert "# TYPE taskspace_time_to_ready_seconds summary" in lines
    assert 'taskspace_time_to_ready_seconds{quantile="0.5"} 20.0' in lines
    assert "taskspace_time_to_ready_seconds_sum 60.0" in lines and "taskspace_time_to_ready_seconds_count 3" in lines
    sample_line = re.compile(r'[a-z_]+(\{([a-z_]+="([^"\\\n]|\\[\\"n])*",?)*\})? (-?[0-9.e+-]+|NaN|[+-]Inf)')
    for line in lines:
        assert line.startswith(("# HELP ", "# TYPE ")) or sample_line.fullmatch(line), line


async def test_an_empty_installation_reads_cleanly(rt: Runtime, admin: User) -> None:
    view = await view_of(rt, admin, utcnow())
    assert (view.running, view.storage, view.ready_points, view.running_points) == ([], [], [], [])
    assert view.totals.memory_sum is None and view.time_to_ready.average is None and view.last_sample_at is None
    async with rt.readers() as session:
        text = await metrics.prometheus(session=session, user=admin, now=utcnow())
    assert 'taskspace_time_to_ready_seconds{quantile="0.9"} NaN' in text.splitlines()


async def test_reading_makes_the_same_queries_whatever_the_number_of_workspaces(rt: Runtime, seeded: Seeded) -> None:
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    async def count_queries() -> int:
        statements.clear()
        event.listen(rt.engine.sync_engine, "before_cursor_execute", record)
        try:
            await view_of(rt, seeded.rita, seeded.now)
            async with rt.readers() as session:
                await metrics.prometheus(session=session, user=seeded.rita, now=seeded.now)
        finally:
            event.remove(rt.engine.sync_engine, "before_cursor_execute", record)
        return len(statements)

    before = await count_queries()
    for n in range(20):
        ws = await add_workspace(rt, owner=seeded.dora, project=f"p{n % 4}", key=f"P{n % 4}-{n}",
                                 ready_at=seeded.now - timedelta(hours=n), ready_seconds=n + 1.0)
        await add_samples(rt, ws, (seeded.now - timedelta(minutes=1), {"memory_bytes": n, "disk_bytes": n}))

    assert await count_queries() == before, "no query per workspace"
    assert len((await view_of(rt, seeded.rita, seeded.now)).running) == 22


# Sampling rounds -------------------------------------------------------------------------------


async def test_rounds_keep_their_pace_and_the_retention(rt: Runtime, admin: User, monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    # A stopped workspace: nothing runs, so the rounds make no engine call.
    ws = await add_workspace(rt, owner=admin, project="pay", key="PAY-1", state=State.STOPPED)
    now = utcnow()
    await add_samples(rt, ws, (now - timedelta(days=15), {"memory_bytes": 1}), (now - timedelta(days=13),
                                                                                 {"memory_bytes": 2}))

    first = await metrics.sample(rt)

    assert first is not None and (first.running, first.sampled, first.expired) == (0, 0, 1)
    async with rt.readers() as session:
        assert list(await session.scalars(select(MetricSample.memory_bytes))) == [2], "14 days are kept"
        assert (await session.get(Meta, metrics.SAMPLED_AT)) is not None
    assert await metrics.sample(rt) is None, "not due before metrics_interval has passed"
    assert await metrics.sample(rt, force=True) is not None, "unless asked"

    monkeypatch.setattr(rt.settings, "metrics_interval", 0.2)
    await asyncio.sleep(0.25)
    assert await metrics.sample(rt) is not None
    monkeypatch.setattr(rt.settings, "metrics_retention_days", 12)
    report = await metrics.sample(rt, force=True)
    assert report is not None and report.expired == 1


# A real container, sampled through the Docker backend ------------------------------------------


@pytest.fixture
def busy_container(rt: Runtime, docker_client: docker.DockerClient, base_image: str) -> Iterator[str]:
    """A container labelled as a workspace of ``rt``'s installation, with 2 MiB in its volume and
    one CPU kept busy. Yields the workspace id; removed afterwards."""
    workspace_id = secrets.token_hex(8)
    labels = {LABEL_INSTALLATION: rt.installation, LABEL_ROLE: "workspace", LABEL_WORKSPACE: workspace_id}
    volume = docker_client.volumes.create(specs.volume_name(workspace_id), labels=labels)
    container = docker_client.containers.run(
        base_image, ["/bin/sh", "-c", "head -c 2097152 /dev/zero > /workspace/blob; while :; do :; done"],
        name=specs.container_name(workspace_id), detach=True, labels=labels, network_mode="none",
        volumes={volume.name: {"bind": "/workspace", "mode": "rw"}})
    try:
        yield workspace_id
    finally:
        container.remove(force=True)
        volume.remove(force=True)


@pytest.mark.docker
async def test_a_running_container_is_sampled_through_the_docker_backend(
        rt: Runtime, admin: User, busy_container: str, docker_client: docker.DockerClient) -> None:
    # The workspace row stands for the labelled container.
    await add_workspace(rt, owner=admin, project="pay", key="PAY-1", started_at=utcnow(),
                        workspace_id=busy_container)
    await asyncio.sleep(0.5)  # the blob is written

    first = await metrics.sample(rt, force=True)
    await asyncio.sleep(1.0)
    second = await metrics.sample(rt, force=True)

    assert first is not None and second is not None and (first.sampled, second.sampled) == (1, 1)
    async with rt.readers() as session:
        before, after = list(await session.scalars(select(MetricSample).order_by(MetricSample.at)))
    assert before.memory_bytes and before.memory_bytes > 0
    assert before.cpu_percent is None, "a first reading has no CPU use"
    assert before.disk_bytes is not None and before.disk_bytes >= 2 * MiB
    assert after.cpu_total > before.cpu_total and after.cpu_system > before.cpu_system  # type: ignore[operator]
    stats = docker_client.api.stats(specs.container_name(busy_container), stream=False, one_shot=True)
    used = after.cpu_total - before.cpu_total  # type: ignore[operator]
    elapsed = after.cpu_system - before.cpu_system  # type: ignore[operator]
    expected = used / elapsed * stats["cpu_stats"]["online_cpus"] * 100
    assert after.cpu_percent == pytest.approx(expected)
    assert after.cpu_percent > 10, "the busy loop shows"

    view = await view_of(rt, admin, utcnow())
    [row] = view.running
    assert (row.workspace_id, row.cpu_percent, row.memory_bytes) == (busy_container, after.cpu_percent,
                                                                     after.memory_bytes)
