"""The board page as a browser gets it (the app in process, signed in with a session cookie), on
SQLite and on PostgreSQL: a fixed number of statements whatever the number of cards, and a card
rendered again only when something it shows has changed."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import event, update

from taskspace.db.engine import transaction
from taskspace.db.models import Project, Ticket, User, Workspace, utcnow
from taskspace.services.runtime import Runtime
from taskspace.web.ui import templating


@pytest.fixture
async def project(rt: Runtime) -> Project:
    async with transaction(rt.sessions) as session:
        project = Project(key="PAY", name="pay", purge_on_category="done")
        session.add(project)
    return project


async def add_tickets(rt: Runtime, admin: User, project: Project, count: int, *, first: int = 1) -> list[Ticket]:
    """``count`` tickets of the admin's over three columns; every other one with a workspace."""
    async with transaction(rt.sessions) as session:
        made = []
        for n in range(first, first + count):
            status, category = [("To Do", "todo"), ("In Progress", "in_progress"), ("Done", "done")][n % 3]
            changed = utcnow() - timedelta(minutes=n)
            ticket = Ticket(project_id=project.id, key=f"PAY-{n}", title=f"Ticket {n}", status=status,
                            status_category=category, assignee="admin", created_at=changed - timedelta(days=2),
                            updated_at=changed, status_changed_at=changed)
            session.add(ticket)
            await session.flush()
            if n % 2:
                session.add(Workspace(id=uuid.uuid4().hex[:12], ticket_id=ticket.id, owner_id=admin.id,
                                      project_id=project.id, state="stopped", desired="stopped", branch=f"PAY-{n}",
                                      backend="docker", purge_due_at=utcnow() + timedelta(days=1)))
            made.append(ticket)
    return made


async def statements_of_the_board(rt: Runtime, browser: httpx.AsyncClient) -> tuple[int, str]:
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        seen.append(statement)

    event.listen(rt.engine.sync_engine, "before_cursor_execute", record)
    try:
        page = await browser.get("/")
    finally:
        event.remove(rt.engine.sync_engine, "before_cursor_execute", record)
    assert page.status_code == 200, page.text[:500]
    return len(seen), page.text


def cards(html: str) -> list[str]:
    return re.findall(r'<article class="ticket" data-key="([^"]+)"', html)


async def test_the_board_runs_the_same_statements_for_three_cards_as_for_sixty(
        rt: Runtime, admin: User, project: Project, browser: httpx.AsyncClient) -> None:
    await add_tickets(rt, admin, project, 3)
    few, html = await statements_of_the_board(rt, browser)
    assert len(cards(html)) == 3

    await add_tickets(rt, admin, project, 57, first=4)
    many, html = await statements_of_the_board(rt, browser)

    assert len(cards(html)) == 60  # 20 in each of the three columns
    assert many == few <= 8


async def test_a_card_is_rendered_again_only_when_what_it_shows_changes(
        rt: Runtime, admin: User, project: Project, browser: httpx.AsyncClient) -> None:
    tickets = await add_tickets(rt, admin, project, 6)
    first = (await browser.get("/")).text
    before = templating.board_card.cache_info()

    again = (await browser.get("/")).text
    after = templating.board_card.cache_info()
    assert again == first
    assert (after.hits - before.hits, after.misses - before.misses) == (6, 0)

    async with transaction(rt.sessions) as session:
        await session.execute(update(Ticket).where(Ticket.id == tickets[1].id).values(title="Renamed <b>ticket</b>"))
        await session.execute(update(Workspace).where(Workspace.ticket_id == tickets[0].id).values(state="ready"))
    changed = (await browser.get("/")).text
    last = templating.board_card.cache_info()

    assert last.misses - after.misses == 2
    assert "Renamed &lt;b&gt;ticket&lt;/b&gt;" in changed and "Ticket 2<" not in changed
    card = changed.split('data-key="PAY-1"')[1].split("</article>")[0]
    assert '<span class="badge ready">ready</span>' in card
    assert cards(changed) == cards(first)
