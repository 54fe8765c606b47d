"""Listings that stay fast with thousands of rows: the board shows each column's most recently
updated cards and counts the rest (one column pages on its own), and the workspace list comes a
page at a time, in a stable order, with the total."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from taskspace.core.errors import Forbidden, InvalidInput
from taskspace.db.engine import transaction
from taskspace.db.models import Project, Ticket, User, Workspace, utcnow
from taskspace.services import board, workspaces
from taskspace.services.runtime import Runtime

NOW = utcnow()


async def add_tickets(rt: Runtime, project: Project, assignee: str, status: str, category: str, count: int, *,
                      first: int, age: timedelta = timedelta(0), title: str = "Ticket") -> list[Ticket]:
    """``count`` tickets KEY-first… in ``status``, the higher the number the more recently updated."""
    made = []
    async with transaction(rt.sessions) as session:
        for n in range(first, first + count):
            changed = NOW - age - timedelta(minutes=1000 - n)
            ticket = Ticket(project_id=project.id, key=f"{project.key}-{n}", title=f"{title} {n}", status=status,
                            status_category=category, assignee=assignee, created_at=changed - timedelta(days=3),
                            updated_at=changed, status_changed_at=changed - timedelta(days=1))
            session.add(ticket)
            made.append(ticket)
    return made


async def add_project(rt: Runtime, key: str) -> Project:
    async with transaction(rt.sessions) as session:
        project = Project(key=key, name=key.lower(), purge_on_category="done")
        session.add(project)
    return project


async def add_workspace(rt: Runtime, owner: User | None, ticket: Ticket | None, project: Project, *,
                        state: str = "stopped", created: timedelta = timedelta(0)) -> str:
    async with transaction(rt.sessions) as session:
        ws = Workspace(id=uuid.uuid4().hex[:12], ticket_id=ticket.id if ticket else None, owner_id=owner.id if owner else None,
                       project_id=project.id, state=state, desired="stopped", branch="b", backend="docker",
                       created_at=NOW - created, purge_due_at=NOW + timedelta(hours=5) if state == "stopped" else None)
        session.add(ws)
    return ws.id


@pytest.fixture
async def bob(rt: Runtime) -> User:
    async with transaction(rt.sessions) as session:
        user = User(username="bob")
        session.add(user)
    return user


async def show(rt: Runtime, user: User, **options: object) -> board.Board:
    async with rt.readers() as session:
        return await board.board(session=session, user=user, now=NOW, **options)  # type: ignore[arg-type]


async def test_the_board_shows_each_columns_newest_cards_and_counts_the_rest(rt: Runtime, admin: User,
                                                                               bob: User) -> None:
    pay, web = await add_project(rt, "PAY"), await add_project(rt, "WEB")
    todo = await add_tickets(rt, pay, "admin", "To Do", "todo", 25, first=1)
    doing = await add_tickets(rt, web, "admin", "In Progress", "in_progress", 3, first=1)
    await add_tickets(rt, pay, "admin", "Done", "done", 2, first=100, age=timedelta(days=30))  # long done: hidden
    done = await add_tickets(rt, web, "admin", "Done", "done", 1, first=200)
    await add_tickets(rt, pay, "bob", "To Do", "todo", 4, first=300)  # bob's
    await add_workspace(rt, admin, doing[0], web, state="stopped")
    await add_workspace(rt, bob, doing[1], web, state="ready")  # not admin's: no badge on admin's card

    view = await show(rt, admin)

    assert [(c.status, c.total, len(c.cards), c.more) for c in view.columns] == [
        ("To Do", 25, board.COLUMN_CARDS, 25 - board.COLUMN_CARDS), ("In Progress", 3, 3, 0), ("Done", 1, 1, 0)]
    assert view.total == 29 and view.projects == ["pay", "web"]
    assert [c.key for c in view.columns[0].cards] == [t.key for t in reversed(todo)][:board.COLUMN_CARDS]
    cards = {c.key: c for c in view.columns[1].cards}
    assert cards[doing[0].key].workspace is not None and cards[doing[0].key].workspace.state == "stopped"
    assert cards[doing[0].key].purge_due_at is not None
    assert cards[doing[1].key].workspace is None and cards[doing[2].key].workspace is None
    first = view.columns[0].cards[0]
    assert (first.project, first.age_days, first.status_days) == ("pay", 3, 1)
    assert view.columns[2].cards[0].key == done[0].key

    mine = await show(rt, bob)
    assert [(c.status, c.total) for c in mine.columns] == [("To Do", 4)]


async def test_one_column_pages_through_all_its_cards(rt: Runtime, admin: User,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(board, "PAGE_CARDS", 10)
    pay = await add_project(rt, "PAY")
    todo = await add_tickets(rt, pay, "admin", "To Do", "todo", 25, first=1)
    await add_tickets(rt, pay, "admin", "In Progress", "in_progress", 3, first=50)
    newest_first = [t.key for t in reversed(todo)]

    pages = [await show(rt, admin, status="To Do", page=n) for n in (1, 2, 3)]

    assert [p.pages for p in pages] == [3, 3, 3]
    assert [[c.status for c in p.columns] for p in pages] == [["To Do"]] * 3
    assert [c.key for p in pages for c in p.columns[0].cards] == newest_first
    beyond = await show(rt, admin, status="To Do", page=99)
    assert beyond.page == 3 and [c.key for c in beyond.columns[0].cards] == newest_first[20:]
    assert pages[0].link(page=2) == "/?status=To+Do&page=2"
    assert pages[1].link(status=None, page=None) == "/"
    assert (await show(rt, admin, status="Nope")).columns == []


async def test_the_board_filters_by_project_and_by_literal_text(rt: Runtime, admin: User) -> None:
    pay, web = await add_project(rt, "PAY"), await add_project(rt, "WEB")
    await add_tickets(rt, pay, "admin", "To Do", "todo", 3, first=1, title="Fix 100% of the_bugs")
    await add_tickets(rt, web, "admin", "To Do", "todo", 2, first=1, title="Fix 100 of thexbugs")

    assert (await show(rt, admin, project="web")).total == 2
    assert (await show(rt, admin, project="nope")).columns == []
    assert (await show(rt, admin, project="nope")).projects == ["pay", "web"]
    assert (await show(rt, admin, text="100%")).total == 3  # % and _ are letters, not wildcards
    assert (await show(rt, admin, text="the_bugs")).total == 3
    assert {c.key for c in (await show(rt, admin, text="web-2")).columns[0].cards} == {"WEB-2"}


async def test_the_workspace_list_comes_a_page_at_a_time_newest_first(rt: Runtime, admin: User,
                                                                       bob: User) -> None:
    pay = await add_project(rt, "PAY")
    tickets = await add_tickets(rt, pay, "admin", "To Do", "todo", 7, first=1)
    # Two launched in the same microsecond: the id decides their order, and neither is skipped.
    mine = [await add_workspace(rt, admin, t, pay, created=timedelta(minutes=10 - (i // 2 * 2)))
            for i, t in enumerate(tickets[:5])]
    purged = await add_workspace(rt, admin, tickets[5], pay, state="purged", created=timedelta(minutes=30))
    theirs = await add_workspace(rt, bob, tickets[6], pay)
    await add_workspace(rt, None, None, pay, state="ready")  # a spare of the warm pool: no one's

    async def walk(user: User, **options: object) -> tuple[list[str], set[int]]:
        found, totals, cursor = [], set(), None
        while True:
            async with rt.readers() as session:
                page = await workspaces.list_page(session=session, user=user, limit=2, cursor=cursor,
                                                  **options)  # type: ignore[arg-type]
            assert len(page.items) <= 2
            found += [w.id for w in page.items]
            totals.add(page.total)
            cursor = page.next_cursor
            if cursor is None:
                return found, totals

    listed, totals = await walk(admin)
    assert sorted(listed) == sorted(mine) and len(listed) == 5 and totals == {5}
    async with rt.readers() as session:
        rows = {w.id: w for w in (await workspaces.list_page(session=session, user=admin, limit=500)).items}
    assert listed == sorted(rows, key=lambda i: (rows[i].created_at, i), reverse=True)
    assert rows[listed[0]].project == "pay" and rows[listed[0]].key == tickets[4].key  # the newest

    assert (await walk(admin, include_purged=True))[0] == [*listed, purged]
    assert set((await walk(admin, everyone=True))[0]) == {*mine, theirs}
    assert (await walk(bob))[0] == [theirs]
    async with rt.readers() as session:
        with pytest.raises(Forbidden, match="reviewers and admins"):
            await workspaces.list_page(session=session, user=bob, everyone=True)
        for cursor in ("nonsense", "bm8gc2VwYXJhdG9y", "MjAyNi0xMS0yMXxhYmM"):  # "no separator", naive time
            with pytest.raises(InvalidInput, match="cursor"):
                await workspaces.list_page(session=session, user=admin, cursor=cursor)
        with pytest.raises(InvalidInput, match="1 to 500"):
            await workspaces.list_page(session=session, user=admin, limit=0)


async def test_the_board_names_every_stale_tracker_of_the_projects_it_shows(rt: Runtime, admin: User) -> None:
    pay, web = await add_project(rt, "PAY"), await add_project(rt, "WEB")
    await add_tickets(rt, pay, "admin", "To Do", "todo", 2, first=1)
    await add_tickets(rt, web, "admin", "To Do", "todo", 2, first=10)  # the newest cards are web's
    async with transaction(rt.sessions) as session:
        for project in (pay, web):
            row = await session.get(Project, project.id)
            assert row is not None
            row.tracker_stale_since, row.tracker_error = NOW - timedelta(hours=1), f"{project.key} is down"

    assert sorted(s.project for s in (await show(rt, admin)).stale) == ["pay", "web"]
    assert [s.project for s in (await show(rt, admin, project="pay")).stale] == ["pay"]
