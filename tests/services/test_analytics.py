"""Usage analytics on SQLite and PostgreSQL: active hours from the transition events (clipped to
the period, and up to now for a workspace still ready), starts and stops, stopped intervals,
aggregates per project and per user, role scoping, the CSV, bounded queries, and the throttle
of activity marks."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, select, update

from taskspace.core.errors import Forbidden, InvalidInput, NotFound
from taskspace.core.states import Desired, State
from taskspace.db.engine import transaction
from taskspace.db.models import Event, Project, Ticket, User, Workspace
from taskspace.services import activity, analytics
from taskspace.services.runtime import Runtime

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=3)
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)


# Data put in through the ORM ---------------------------------------------------------------------


async def add_user(rt: Runtime, username: str, role: str) -> User:
    async with transaction(rt.sessions) as session:
        user = User(username=username, role=role)
        session.add(user)
    return user


async def add_workspace(rt: Runtime, *, owner: User, project: str, key: str, created: datetime,
                        transitions: list[tuple[datetime, str]], ready_seconds: float | None = None,
                        title: str = "Fix the login", version: int = 0) -> str:
    """A workspace with its transition events (None → the first state at ``created``)."""
    ready_at = next((at for at, to in transitions if to == State.READY), None)
    purged_at = next((at for at, to in transitions if to == State.PURGED), None)
    state = transitions[-1][1]
    async with transaction(rt.sessions) as session:
        row = await session.scalar(select(Project).where(Project.name == project))
        if row is None:
            row = Project(key=key.split("-")[0], name=project)
            session.add(row)
            await session.flush()
        ticket = Ticket(project_id=row.id, key=key, title=title, status="In Progress", status_category="in_progress")
        session.add(ticket)
        await session.flush()
        ws = Workspace(id=f"w{key.lower().replace('-', '')}", ticket_id=ticket.id, owner_id=owner.id,
                       project_id=row.id, state=state,
                       desired=Desired.PURGED.value if state == State.PURGED else Desired.READY.value,
                       branch=f"{key}-x", backend="docker", created_at=created, ready_at=ready_at,
                       ready_seconds=ready_seconds, purged_at=purged_at, version=version)
        session.add(ws)
        await session.flush()
        previous = None
        for at, to in transitions:
            session.add(Event(workspace_id=ws.id, at=at, actor="taskspace", kind="transition",
                              from_state=previous, to_state=to))
            # Steps and notes are history too, but not transitions: they must not count.
            session.add(Event(workspace_id=ws.id, at=at, actor="taskspace", kind="note", reason="noise"))
            previous = to
    return ws.id


def launch(created: datetime, ready_after: timedelta) -> list[tuple[datetime, str]]:
    return [(created, "requested"), (created + MINUTE, "preparing"), (created + 2 * MINUTE, "starting"),
            (created + ready_after, "ready")]


@dataclass
class Seeded:
    admin: User
    dora: User  # developer: SHOP-1 (stopped, started, purged) and SHOP-2 (still ready)
    eve: User  # developer: WEB-1 (stopped since before the period)
    rita: User  # reviewer


@pytest.fixture
async def seeded(rt: Runtime, admin: User) -> Seeded:
    dora, eve = await add_user(rt, "dora", "developer"), await add_user(rt, "eve", "developer")
    rita = await add_user(rt, "rita", "reviewer")
    # Ready 5 min after launch for 5 h, stopped until the next day, ready again for 3 h, purged.
    await add_workspace(rt, owner=dora, project="shop", key="SHOP-1", created=T0, ready_seconds=300,
                        title='=HYPERLINK("http://evil.example","x")',
                        transitions=[*launch(T0, 5 * MINUTE), (T0 + 5 * HOUR + 5 * MINUTE, "stopped"),
                                     (T0 + DAY, "starting"), (T0 + DAY + MINUTE, "ready"),
                                     (T0 + DAY + 3 * HOUR + MINUTE, "purging"),
                                     (T0 + DAY + 3 * HOUR + 2 * MINUTE, "purged")])
    # Launched two days later, ready after 10 min, still ready now.
    await add_workspace(rt, owner=dora, project="shop", key="SHOP-2", created=T0 + 2 * DAY, ready_seconds=600,
                        transitions=launch(T0 + 2 * DAY, 10 * MINUTE))
    # Launched 40 days before, stopped a day before T0: its state at the period's start comes
    # from the last transition before it.
    await add_workspace(rt, owner=eve, project="web", key="WEB-1", created=T0 - 40 * DAY, ready_seconds=120,
                        transitions=[*launch(T0 - 40 * DAY, 2 * MINUTE), (T0 - DAY, "stopped")])
    # Outside every period asked for below: purged before it, and launched after it.
    await add_workspace(rt, owner=dora, project="shop", key="SHOP-3", created=T0 - 20 * DAY, ready_seconds=60,
                        transitions=[*launch(T0 - 20 * DAY, MINUTE), (T0 - 5 * DAY, "purging"),
                                     (T0 - 5 * DAY + MINUTE, "purged")])
    await add_workspace(rt, owner=dora, project="shop", key="SHOP-4", created=T0 + 10 * DAY, ready_seconds=60,
                        transitions=launch(T0 + 10 * DAY, MINUTE))
    return Seeded(admin=admin, dora=dora, eve=eve, rita=rita)


async def usage(rt: Runtime, user: User, now: datetime = NOW, **query: object) -> analytics.UsageReport:
    async with rt.readers() as session:
        return await analytics.workspace_usage(session=session, user=user, query=analytics.UsageQuery(**query),
                                               now=now)


async def summary(rt: Runtime, user: User, group_by: analytics.GroupBy, **query: object) -> analytics.Summary:
    async with rt.readers() as session:
        return await analytics.summary(session=session, user=user, query=analytics.UsageQuery(**query),
                                       group_by=group_by, now=NOW)


def by_ticket(report: analytics.UsageReport) -> dict[str, analytics.WorkspaceUsage]:
    return {w.ticket: w for w in report.workspaces}


# Per workspace ----------------------------------------------------------------------------------


async def test_active_hours_starts_and_stops_over_a_whole_period(rt: Runtime, seeded: Seeded) -> None:
    report = await usage(rt, seeded.rita, since=T0 - HOUR, until=T0 + 4 * DAY)

    # Newest first; SHOP-3 was purged before the period and SHOP-4 launched after it.
    assert [w.ticket for w in report.workspaces] == ["SHOP-2", "SHOP-1", "WEB-1"]
    assert not report.truncated
    found = by_ticket(report)
    shop1 = found["SHOP-1"]
    assert shop1.active_hours == pytest.approx(5 + 3)
    assert (shop1.starts, shop1.stops) == (2, 1)
    assert shop1.stopped_intervals == [(T0 + 5 * HOUR + 5 * MINUTE, T0 + DAY)]
    assert shop1.stopped_hours == pytest.approx(24 - 5 - 5 / 60)
    assert (shop1.requested_at, shop1.ready_at, shop1.time_to_ready_seconds) == (T0, T0 + 5 * MINUTE, 300)
    assert shop1.purged_at == T0 + DAY + 3 * HOUR + 2 * MINUTE
    assert (shop1.state, shop1.project, shop1.owner) == ("purged", "shop", "dora")

    shop2 = found["SHOP-2"]
    assert shop2.active_hours == pytest.approx(24 - 10 / 60), "still ready: counted up to now, not to until"
    assert (shop2.starts, shop2.stops, shop2.stopped_intervals) == (1, 0, [])

    web1 = found["WEB-1"]
    assert (web1.active_hours, web1.starts, web1.stops) == (0, 0, 0), "stopped before the period began"
    assert web1.stopped_intervals == [(T0 - HOUR, NOW)]


async def test_intervals_are_clipped_to_the_period(rt: Runtime, seeded: Seeded) -> None:
    report = await usage(rt, seeded.admin, since=T0 + 2 * HOUR, until=T0 + DAY + HOUR)

    found = by_ticket(report)
    assert set(found) == {"SHOP-1", "WEB-1"}
    shop1 = found["SHOP-1"]
    # Ready from 2 h (the start of the period) to 5 h 5 min, then from 1 d 1 min to 1 d 1 h (its end).
    assert shop1.active_hours == pytest.approx((3 * 60 + 5 + 59) / 60)
    assert (shop1.starts, shop1.stops) == (1, 1), "the first launch's ready came before the period"
    assert shop1.purged_at is not None and shop1.purged_at > T0 + DAY + HOUR
    assert found["WEB-1"].stopped_intervals == [(T0 + 2 * HOUR, T0 + DAY + HOUR)]

    # A period in the past that ends while SHOP-2 is ready stops counting at its end, not now.
    [shop2] = (await usage(rt, seeded.dora, since=T0 + 2 * DAY, until=T0 + 2 * DAY + 70 * MINUTE,
                           project="shop")).workspaces
    assert shop2.ticket == "SHOP-2" and shop2.active_hours == pytest.approx(1)


async def test_aggregates_per_project_and_per_user(rt: Runtime, seeded: Seeded) -> None:
    per_project = await summary(rt, seeded.rita, "project", since=T0 - HOUR, until=T0 + 4 * DAY)

    assert (per_project.period.since, per_project.period.until) == (T0 - HOUR, T0 + 4 * DAY)
    shop, web = per_project.groups
    assert (shop.name, shop.workspaces, shop.launched, shop.purged) == ("shop", 2, 2, 1)
    assert (shop.time_to_ready_median, shop.time_to_ready_mean) == (450, 450)
    assert shop.active_hours == pytest.approx(8 + 24 - 10 / 60)
    assert (shop.starts, shop.stops) == (3, 1)
    assert (web.name, web.workspaces, web.launched, web.purged, web.active_hours) == ("web", 1, 0, 0, 0)
    assert web.time_to_ready_median is None and web.time_to_ready_mean is None, "launched before the period"
    total = per_project.total
    assert (total.workspaces, total.launched, total.purged, total.starts) == (3, 2, 1, 3)
    assert total.active_hours == pytest.approx(shop.active_hours)

    per_user = await summary(rt, seeded.rita, "user", since=T0 - HOUR, until=T0 + 4 * DAY)
    assert [(g.name, g.workspaces, g.launched) for g in per_user.groups] == [("dora", 2, 2), ("eve", 1, 0)]

    # A later period: SHOP-4 is launched in it, SHOP-1 and SHOP-3 are gone.
    later = await summary(rt, seeded.rita, "project", since=T0 + 9 * DAY, until=T0 + 11 * DAY)
    assert [(g.name, g.workspaces, g.launched, g.time_to_ready_median) for g in later.groups] == [
        ("shop", 2, 1, 60), ("web", 1, 0, None)]


async def test_developers_see_their_own_and_reviewers_everyones(rt: Runtime, seeded: Seeded) -> None:
    period = {"since": T0 - HOUR, "until": T0 + 4 * DAY}

    assert set(by_ticket(await usage(rt, seeded.dora, **period))) == {"SHOP-1", "SHOP-2"}
    assert set(by_ticket(await usage(rt, seeded.dora, owner="dora", **period))) == {"SHOP-1", "SHOP-2"}
    assert set(by_ticket(await usage(rt, seeded.eve, **period))) == {"WEB-1"}
    with pytest.raises(Forbidden):
        await usage(rt, seeded.dora, owner="eve", **period)
    assert [g.name for g in (await summary(rt, seeded.eve, "user", **period)).groups] == ["eve"]

    for everyone in (seeded.rita, seeded.admin):
        assert set(by_ticket(await usage(rt, everyone, **period))) == {"SHOP-1", "SHOP-2", "WEB-1"}
        assert set(by_ticket(await usage(rt, everyone, owner="eve", **period))) == {"WEB-1"}
    assert set(by_ticket(await usage(rt, seeded.rita, project="WEB", **period))) == {"WEB-1"}, "by key"
    assert set(by_ticket(await usage(rt, seeded.rita, project="shop", owner="dora", **period))) == {
        "SHOP-1", "SHOP-2"}
    with pytest.raises(NotFound):
        await usage(rt, seeded.rita, owner="nobody", **period)
    with pytest.raises(NotFound):
        await usage(rt, seeded.rita, project="nope", **period)


async def test_the_period_defaults_to_30_days_and_is_bounded(rt: Runtime, seeded: Seeded) -> None:
    report = await usage(rt, seeded.rita)
    assert (report.period.since, report.period.until) == (NOW - 30 * DAY, NOW)
    report = await usage(rt, seeded.rita, since="7d")
    assert (report.period.since, report.period.until) == (NOW - 7 * DAY, NOW)
    report = await usage(rt, seeded.rita, since="2025-03-01", until="2025-03-02T12:00:00+02:00")
    assert report.period.since == datetime(2025, 3, 1, tzinfo=UTC)
    assert report.period.until == datetime(2025, 3, 2, 10, tzinfo=UTC)
    report = await usage(rt, seeded.rita, until="2025-03-02T12:00")
    assert report.period.until == datetime(2025, 3, 2, 12, tzinfo=UTC), "UTC without an offset"

    for query, words in (({"since": "2025-13-01"}, "not a date"), ({"until": "yesterday"}, "not a date"),
                         ({"since": "2024-01-01", "until": "2025-03-01"}, "longer than 366 days"),
                         ({"since": "2020-01-01"}, "longer than 366 days"),
                         ({"since": "2025-03-02", "until": "2025-03-01"}, "is not before"),
                         ({"since": "9999-12-31", "until": "0001-01-01"}, "is not before")):
        with pytest.raises(InvalidInput) as caught:
            await usage(rt, seeded.rita, **query)
        assert words in caught.value.message, (query, caught.value.message)
        assert caught.value.hint
    assert (await usage(rt, seeded.rita, since="2024-01-01", until="2025-01-01")).period.since.year == 2024, \
        "366 days (a leap year) is allowed"


async def test_the_csv_has_a_row_per_workspace_and_quotes_formulas(rt: Runtime, seeded: Seeded) -> None:
    async with rt.readers() as session:
        text = await analytics.workspace_usage_csv(session=session, user=seeded.rita, now=NOW,
                                                   query=analytics.UsageQuery(since=T0 - HOUR, until=T0 + 4 * DAY))
        per_user = await analytics.summary_csv(session=session, user=seeded.rita, group_by="user", now=NOW,
                                               query=analytics.UsageQuery(since=T0 - HOUR, until=T0 + 4 * DAY))

    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(analytics.WORKSPACE_COLUMNS)
    assert [r["ticket"] for r in rows] == ["SHOP-2", "SHOP-1", "WEB-1"]
    shop1 = rows[1]
    assert shop1["title"].startswith("'=HYPERLINK"), "a spreadsheet must not run it"
    assert (shop1["starts"], shop1["stops"], shop1["active_hours"]) == ("2", "1", "8.0")
    assert shop1["stopped_intervals"] == f"{(T0 + 5 * HOUR + 5 * MINUTE).isoformat()}/{(T0 + DAY).isoformat()}"
    assert shop1["time_to_ready_seconds"] == "300.0" and shop1["purged_at"].startswith("2025-03-04T12:02")
    assert rows[0]["first_opened_at"] == "" and rows[0]["purged_at"] == ""

    summary_rows = list(csv.reader(io.StringIO(per_user)))
    assert summary_rows[0][:3] == ["user", "workspaces", "launched"]
    assert [r[0] for r in summary_rows[1:]] == ["dora", "eve", "total"]


async def test_events_are_read_in_one_query_whatever_the_number_of_workspaces(rt: Runtime, seeded: Seeded) -> None:
    @contextmanager
    def recorded() -> Iterator[list[str]]:
        statements: list[str] = []

        def record(conn: object, cursor: object, statement: str, *args: object) -> None:
            statements.append(statement)

        event.listen(rt.engine.sync_engine, "before_cursor_execute", record)
        try:
            yield statements
        finally:
            event.remove(rt.engine.sync_engine, "before_cursor_execute", record)

    async def queries() -> tuple[int, int]:
        with recorded() as statements:
            await usage(rt, seeded.rita, since=T0 - HOUR, until=T0 + 20 * DAY)
        return len(statements), sum(1 for s in statements if "FROM events" in s)

    before = await queries()
    for n in range(20):
        created = T0 + n * HOUR
        await add_workspace(rt, owner=seeded.eve, project="web", key=f"WEB-{n + 10}", created=created,
                            ready_seconds=60, transitions=[*launch(created, MINUTE), (created + HOUR, "stopped")])
    after = await queries()
    assert before == after and before[1] == 1
    report = await usage(rt, seeded.rita, since=T0 - HOUR, until=T0 + 20 * DAY)
    assert len(report.workspaces) == 24
    assert all(w.active_hours == pytest.approx(1 - 1 / 60) for w in report.workspaces if w.ticket >= "WEB-10")

    limited = await usage(rt, seeded.rita, now=T0 + 30 * DAY, since=T0 - HOUR, until=T0 + 20 * DAY, limit=5)
    assert limited.truncated
    assert [w.ticket for w in limited.workspaces] == ["SHOP-4", "SHOP-2", "WEB-29", "WEB-28", "WEB-27"]
    assert by_ticket(limited)["SHOP-4"].active_hours == pytest.approx(10 * 24 - 1 / 60), "ready until the end"
    assert by_ticket(limited)["WEB-27"].active_hours == pytest.approx(1 - 1 / 60)


# Activity ---------------------------------------------------------------------------------------


async def workspace_row(rt: Runtime, workspace_id: str) -> Workspace:
    async with rt.readers() as session:
        row = await session.get(Workspace, workspace_id)
    assert row is not None
    return row


async def test_activity_is_written_at_most_once_a_minute_and_never_bumps_the_version(
        rt: Runtime, seeded: Seeded) -> None:
    ws_id = await add_workspace(rt, owner=seeded.dora, project="shop", key="SHOP-9", created=T0, version=7,
                                transitions=launch(T0, MINUTE))
    activity.forget(rt)

    assert await activity.mark_active(rt, ws_id, "exec") is True
    first = await workspace_row(rt, ws_id)
    assert first.first_opened_at is not None and first.first_opened_at == first.last_active_at
    assert first.version == 7, "the lifecycle's guard is left alone"

    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(rt.engine.sync_engine, "before_cursor_execute", record)
    try:
        assert await activity.mark_active(rt, ws_id, "terminal") is False
    finally:
        event.remove(rt.engine.sync_engine, "before_cursor_execute", record)
    assert statements == [], "the memo answers: no database round trip at all"

    activity.forget(rt)  # as another process would: the guarded UPDATE matches nothing
    assert await activity.mark_active(rt, ws_id, "port") is False
    again = await workspace_row(rt, ws_id)
    assert (again.last_active_at, again.first_opened_at, again.version) == (
        first.last_active_at, first.first_opened_at, 7)

    assert first.last_active_at is not None
    async with transaction(rt.sessions) as session:
        await session.execute(update(Workspace).where(Workspace.id == ws_id)
                              .values(last_active_at=first.last_active_at - 2 * MINUTE))
    activity.forget(rt)
    assert await activity.mark_active(rt, ws_id, "ide") is True
    later = await workspace_row(rt, ws_id)
    assert later.last_active_at is not None and later.last_active_at >= first.last_active_at
    assert later.first_opened_at == first.first_opened_at, "first opened is written once"
    assert later.version == 7

    assert await activity.mark_active(rt, "no-such-workspace", "exec") is False


def test_ide_processes_are_recognised() -> None:
    vscode = "/home/dev/.vscode-server/bin/abc123/node /home/dev/.vscode-server/bin/abc123/out/server-main.js"
    assert activity.ide_attached(["/bin/sh", f"{vscode} --host=127.0.0.1"])
    assert activity.ide_attached(["/usr/lib/code-server/lib/node /usr/lib/code-server --bind-addr 0.0.0.0:8080"])
    assert activity.ide_attached(["/root/.vscode-server-insiders/bin/x/node x"])
    assert activity.ide_attached(["/home/dev/.cursor-server/bin/x/node"])
    assert not activity.ide_attached(["sleep 30", "/bin/bash -l", "vim code.py", "python -m http.server"])
    assert not activity.ide_attached([])
