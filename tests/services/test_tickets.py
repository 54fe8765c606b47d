"""Tickets of the built-in board: keys, statuses, validation; other trackers own theirs."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import select

from taskspace.core.errors import InvalidInput, NotFound
from taskspace.core.tickets import StatusCategory
from taskspace.db.engine import transaction
from taskspace.db.models import Project, Ticket
from taskspace.services import tickets
from taskspace.services.runtime import Runtime
from tests.services.support import count

STATUSES_HINT = "Statuses: To Do, In Progress, In Review, Done."


async def insert_project(rt: Runtime, *, key: str = "DEMO", tracker: str = "builtin") -> Project:
    async with transaction(rt.sessions) as session:
        project = Project(key=key, name=key.lower(), tracker=tracker, purge_on_category="done")
        session.add(project)
    return project


@pytest.fixture
async def board(rt: Runtime) -> Project:
    return await insert_project(rt)


async def create(rt: Runtime, project: Project, title: str = "Fix the login", **fields: str) -> Ticket:
    async with transaction(rt.sessions) as session:
        return await tickets.create(session=session, project=project, title=title, **fields)


async def move(rt: Runtime, key: str, status: str) -> Ticket:
    async with transaction(rt.sessions) as session:
        return await tickets.move(session=session, key=key, status=status)


async def test_keys_count_up_per_project(rt: Runtime, board: Project) -> None:
    other = await insert_project(rt, key="OPS")

    first = await create(rt, board, "  Add a health endpoint  ", description="GET /health", assignee="admin")
    second = await create(rt, board)
    elsewhere = await create(rt, other)
    third = await create(rt, board)

    assert [first.key, second.key, third.key, elsewhere.key] == ["DEMO-1", "DEMO-2", "DEMO-3", "OPS-1"]
    assert (first.title, first.description, first.assignee) == ("Add a health endpoint", "GET /health", "admin")
    assert (first.status, first.status_category) == ("To Do", StatusCategory.TODO.value)
    async with transaction(rt.sessions) as session:
        listed = await tickets.list_tickets(session=session, project=board)
        mine = await tickets.list_tickets(session=session, assignee="admin")
        found = await tickets.get(session=session, key="demo-2")
    assert [t.key for t in listed] == ["DEMO-3", "DEMO-2", "DEMO-1"]
    assert [t.key for t in mine] == ["DEMO-1"]
    assert found.id == second.id


async def test_concurrent_creation_gives_distinct_keys(rt: Runtime, board: Project) -> None:
    created = await asyncio.gather(*(create(rt, board, f"Ticket {i}") for i in range(10)))

    assert sorted(t.key for t in created) == sorted(f"DEMO-{n}" for n in range(1, 11))
    async with transaction(rt.sessions) as session:
        counter = await session.scalar(select(Project.ticket_counter).where(Project.id == board.id))
    assert counter == 10
    assert await count(rt, Ticket) == 10


async def test_move_changes_status_category_and_time(rt: Runtime, board: Project) -> None:
    ticket = await create(rt, board)

    moved = await move(rt, "DEMO-1", "in progress")
    async with transaction(rt.sessions) as session:
        stored = await tickets.get(session=session, key="DEMO-1")

    assert (stored.status, stored.status_category) == ("In Progress", StatusCategory.IN_PROGRESS.value)
    assert stored.status_changed_at > ticket.status_changed_at
    assert stored.status_changed_at == moved.status_changed_at

    again = await move(rt, "DEMO-1", "IN PROGRESS")  # the same status: nothing changes
    assert again.status_changed_at == stored.status_changed_at

    done = await move(rt, "DEMO-1", "Done")
    assert (done.status, done.status_category) == ("Done", StatusCategory.DONE.value)
    assert done.status_changed_at > stored.status_changed_at


async def test_move_to_an_unknown_status_lists_the_statuses(rt: Runtime, board: Project) -> None:
    await create(rt, board)

    with pytest.raises(InvalidInput, match="'Closed' is not a status of this board") as caught:
        await move(rt, "DEMO-1", "Closed")

    assert caught.value.hint == STATUSES_HINT
    assert caught.value.field == "status"
    async with transaction(rt.sessions) as session:
        assert (await tickets.get(session=session, key="DEMO-1")).status == "To Do"
    with pytest.raises(NotFound, match="No ticket 'DEMO-2'"):
        await move(rt, "DEMO-2", "Done")


async def test_move_and_notify_wakes_the_reconciler(rt: Runtime, board: Project) -> None:
    await create(rt, board)

    await tickets.move_and_notify(rt, key="DEMO-1", status="Done")

    assert rt.bus.take_pending() == {"*"}


async def test_bad_fields_create_nothing(rt: Runtime, board: Project) -> None:
    cases = [
        ({"title": ""}, "needs a title"),
        ({"title": "   "}, "needs a title"),
        ({"title": "Line one\nline two"}, "line break or control character"),
        ({"title": "Tab\there"}, "line break or control character"),
        ({"title": "Bell\x07"}, "line break or control character"),
        ({"title": "x" * 501}, "longer than 500 characters"),
        ({"description": "NUL \x00 inside"}, "NUL character"),
        ({"assignee": "two words"}, "not a user name"),
    ]
    for fields, message in cases:
        with pytest.raises(InvalidInput, match=message):
            await create(rt, board, **{"title": "A fine title", **fields})

    assert await count(rt, Ticket) == 0
    assert (await create(rt, board)).key == "DEMO-1"  # no number was used up


def test_the_workflow_of_the_builtin_board() -> None:
    workflow = tickets.workflow_of(Project(key="DEMO", name="demo", tracker="builtin", tracker_config={}))

    assert [(s.name, s.category.value) for s in workflow.statuses] == [
        ("To Do", "todo"), ("In Progress", "in_progress"), ("In Review", "in_progress"), ("Done", "done")]
    assert workflow.initial.name == "To Do"


# A tracker whose tickets live elsewhere, installed as a real plugin (an entry point in a
# distribution on sys.path) for the tests below. It is a test double: it never talks to a tracker.
REMOTE_TRACKER = textwrap.dedent("""\
    from taskspace.core.tickets import StatusCategory, Workflow, WorkflowStatus
    from taskspace.plugins.trackers.base import Tracker


    class RemoteTracker(Tracker):
        name = "remote-test"

        def workflow(self):
            return Workflow(statuses=[WorkflowStatus(name="Open", category=StatusCategory.TODO),
                                      WorkflowStatus(name="Closed", category=StatusCategory.DONE)])

        async def fetch_updated(self, since):
            return []
    """)


@pytest.fixture(scope="session")
def remote_tracker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tracker-plugin")
    (root / "taskspace_remote_test_tracker.py").write_text(REMOTE_TRACKER)
    dist = root / "taskspace_remote_test_tracker-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: taskspace-remote-test-tracker\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[taskspace.trackers]\nremote-test = taskspace_remote_test_tracker:RemoteTracker\n")
    return root


@pytest.fixture
def remote_tracker(remote_tracker_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.syspath_prepend(str(remote_tracker_dir))
    monkeypatch.delitem(sys.modules, "taskspace_remote_test_tracker", raising=False)
    return "remote-test"


async def test_tickets_of_another_tracker_cannot_be_created_or_moved(rt: Runtime, remote_tracker: str) -> None:
    project = await insert_project(rt, key="EXT", tracker=remote_tracker)
    async with transaction(rt.sessions) as session:
        session.add(Ticket(project_id=project.id, key="EXT-7", title="Synced", status="Open",
                           status_category="todo"))

    assert [s.name for s in tickets.workflow_of(project).statuses] == ["Open", "Closed"]
    with pytest.raises(InvalidInput, match="live in remote-test") as caught:
        await create(rt, project)
    assert "appears here on the next sync" in (caught.value.hint or "")
    with pytest.raises(InvalidInput, match="EXT-7 lives in remote-test"):
        await move(rt, "EXT-7", "Closed")
    assert await count(rt, Ticket) == 1
