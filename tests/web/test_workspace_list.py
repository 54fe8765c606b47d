"""``GET /api/v1/workspaces`` on SQLite and on PostgreSQL: each listed workspace is exactly what
``GET /api/v1/workspaces/{id}`` answers for it, and a page of fifty costs the statements a page
of two does."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import event

from taskspace.db.engine import transaction
from taskspace.db.models import Project, Ticket, User, Workspace, WorkspaceRepo, utcnow
from taskspace.services.runtime import Runtime


async def add_workspaces(rt: Runtime, admin: User, count: int) -> None:
    """``count`` workspaces of the admin's and one of someone else's, in every state, with
    repositories, an environment and rescued branches on some."""
    now = utcnow()
    async with transaction(rt.sessions) as session:
        bob = User(username="bob")
        project = Project(key="PAY", name="pay", purge_on_category="done")
        session.add_all([bob, project])
        await session.flush()
        for n in range(count + 1):
            ticket = Ticket(project_id=project.id, key=f"PAY-{n}", title=f"Ticket {n} <with> \"quotes\"",
                            status="To Do", status_category="todo", assignee="admin", created_at=now,
                            updated_at=now, status_changed_at=now)
            session.add(ticket)
            await session.flush()
            state = ["ready", "stopped", "failed", "purged"][n % 4]
            ws = Workspace(
                id=uuid.uuid4().hex[:12], ticket_id=ticket.id, owner_id=bob.id if n == count else admin.id,
                project_id=project.id, state=state, desired="stopped" if state == "stopped" else "ready",
                step="clone" if state == "failed" else None, failure_step="clone" if state == "failed" else None,
                failure_reason="the remote hung up" if state == "failed" else None, branch=f"PAY-{n}-ticket",
                backend="docker", image=f"taskspace/pay:{n:016x}" if n % 3 else None,
                environment={"source": "dockerfile", "config_path": "Dockerfile", "image": "debian:12",
                             "services": ["db"]} if n % 5 == 0 else {},
                startup_status="ok" if state == "ready" else None, created_at=now - timedelta(minutes=n),
                ready_at=now - timedelta(minutes=n) + timedelta(seconds=9) if state != "failed" else None,
                ready_seconds=9.5 if state != "failed" else None, purge_due_at=now + timedelta(days=n),
                purged_at=now if state == "purged" else None,
                rescue=[{"repo": "api", "branch": f"rescue/PAY-{n}"}] if state == "purged" else [])
            session.add(ws)
            for position, name in enumerate(["api", "web"][: 1 + n % 2]):
                session.add(WorkspaceRepo(workspace_id=ws.id, name=name, url=f"https://git.test/{name}.git",
                                          is_primary=position == 0, position=position, source_branch="main",
                                          target_branch="main", branch_existed=bool(n % 2), base_sha="0" * 40))


async def listing(rt: Runtime, api: httpx.AsyncClient, limit: int) -> tuple[list[dict[str, Any]], list[int]]:
    """Every page of everyone's workspaces, purged ones included; the statements of each page."""
    items, statements, url = [], [], f"/api/v1/workspaces?everyone=true&all=true&limit={limit}"
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        seen.append(statement)

    event.listen(rt.engine.sync_engine, "before_cursor_execute", record)
    try:
        while url:
            seen.clear()
            response = await api.get(url)
            assert response.status_code == 200, response.text[:500]
            page = response.json()
            items += page["items"]
            statements.append(len(seen))
            url = page["next"] and page["next"].removeprefix(rt.settings.base_url)
    finally:
        event.remove(rt.engine.sync_engine, "before_cursor_execute", record)
    return items, statements


async def test_a_listed_workspace_is_what_its_own_answer_says(rt: Runtime, admin: User,
                                                             api: httpx.AsyncClient) -> None:
    await add_workspaces(rt, admin, 11)

    items, _ = await listing(rt, api, limit=5)

    assert len(items) == 12 and len({i["id"] for i in items}) == 12
    assert [i["created_at"] for i in items] == sorted((i["created_at"] for i in items), reverse=True)
    for item in items:
        assert item == (await api.get(f"/api/v1/workspaces/{item['id']}")).json()
    assert {len(i["repos"]) for i in items} == {1, 2} and any(i["environment"] for i in items)
    assert any(i["rescue"] for i in items) and any(i["owner"] == "bob" for i in items)


async def test_a_page_of_fifty_runs_the_statements_of_a_page_of_two(rt: Runtime, admin: User,
                                                                    api: httpx.AsyncClient) -> None:
    await add_workspaces(rt, admin, 59)
    await api.get("/api/v1/workspaces")  # the token's first use is written down; later ones within a minute are not

    _, small = await listing(rt, api, limit=2)
    _, large = await listing(rt, api, limit=50)

    assert len(small) == 30 and len(large) == 2
    assert set(small) == set(large) and len(set(small)) == 1
