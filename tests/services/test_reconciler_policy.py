"""The purge policy as the reconciler applies it: due purges are requested, purges in a grace
period are scheduled (and shown), and a ticket moved back cancels the schedule."""

from __future__ import annotations

import secrets
from datetime import timedelta

import docker
import pytest
from sqlalchemy import select

from taskspace.core.states import Desired, State
from taskspace.db.engine import transaction
from taskspace.db.models import Event, Project, Ticket, Workspace
from taskspace.reconciler.loop import PassReport, Reconciler
from taskspace.services import tickets, users
from taskspace.services.runtime import Runtime


async def insert_workspace(rt: Runtime, *, key: str = "DEMO", grace: int = 0, category: str | None = "done",
                           statuses: tuple[str, ...] = (), state: State = State.STOPPED,
                           desired: Desired = Desired.STOPPED) -> str:
    """A project, a ticket and a workspace that needs no work (``next_phase`` is None), so a
    pass starts no job."""
    async with transaction(rt.sessions) as session:
        owner = (await users.ensure_admin(session=session))[0]
        project = Project(key=key, name=key.lower(), purge_on_category=category, purge_on_statuses=list(statuses),
                          purge_grace_seconds=grace)
        session.add(project)
        await session.flush()
        ticket = await tickets.create(session=session, project=project, title="Fix the login")
        ws = Workspace(id=secrets.token_hex(6), ticket_id=ticket.id, owner_id=owner.id, project_id=project.id,
                       state=state.value, desired=desired.value, branch=f"{ticket.key}-fix-the-login",
                       backend="docker")
        session.add(ws)
    return ws.id


async def move(rt: Runtime, key: str, status: str) -> Ticket:
    async with transaction(rt.sessions) as session:
        return await tickets.move(session=session, key=key, status=status)


async def load(rt: Runtime, workspace_id: str) -> tuple[Workspace, list[str]]:
    async with transaction(rt.sessions) as session:
        ws = await session.get(Workspace, workspace_id)
        notes = list(await session.scalars(select(Event.reason).where(
            Event.workspace_id == workspace_id, Event.actor == "policy").order_by(Event.id)))
    assert ws is not None
    return ws, notes


async def apply_policy(rt: Runtime) -> PassReport:
    report = PassReport()
    await Reconciler(rt)._apply_policy(report)
    return report


async def test_a_done_ticket_without_grace_gets_its_workspace_purged(rt: Runtime) -> None:
    due = await insert_workspace(rt, key="DEMO")
    active = await insert_workspace(rt, key="OPS")
    ticket = await move(rt, "DEMO-1", "Done")

    report = await apply_policy(rt)

    ws, notes = await load(rt, due)
    assert report.purges_requested == [due]
    assert (ws.desired, ws.state, ws.version) == ("purged", "stopped", 1)
    assert ws.purge_due_at == ticket.status_changed_at
    assert notes == ["purge requested by policy: ticket is Done (category done)"]
    untouched, untouched_notes = await load(rt, active)
    assert (untouched.desired, untouched.version, untouched.purge_due_at, untouched_notes) == (
        "stopped", 0, None, [])

    assert (await apply_policy(rt)).purges_requested == []  # asked once only
    assert len((await load(rt, due))[1]) == 1


async def test_listed_statuses_purge_and_no_category_means_none(rt: Runtime) -> None:
    in_review = await insert_workspace(rt, key="DEMO", category=None, statuses=("In Review",))
    done = await insert_workspace(rt, key="OPS", category=None, statuses=("In Review",))
    await move(rt, "DEMO-1", "In Review")
    await move(rt, "OPS-1", "Done")

    report = await apply_policy(rt)

    assert report.purges_requested == [in_review]
    assert (await load(rt, in_review))[1] == ["purge requested by policy: ticket is In Review"]
    assert (await load(rt, done))[0].desired == "stopped"


async def test_workspaces_being_purged_are_left_alone(rt: Runtime) -> None:
    purging = await insert_workspace(rt, key="DEMO", state=State.PURGING, desired=Desired.PURGED)
    blocked = await insert_workspace(rt, key="OPS", state=State.PURGE_BLOCKED, desired=Desired.PURGED)
    await move(rt, "DEMO-1", "Done")
    await move(rt, "OPS-1", "Done")

    report = await apply_policy(rt)

    assert report.purges_requested == []
    for workspace_id in (purging, blocked):
        ws, notes = await load(rt, workspace_id)
        assert (ws.version, ws.purge_due_at, notes) == (0, None, [])


@pytest.mark.docker
async def test_a_grace_period_schedules_the_purge_and_a_reopened_ticket_cancels_it(
        rt: Runtime, docker_client: docker.DockerClient) -> None:
    workspace_id = await insert_workspace(rt, grace=3600)
    ticket = await move(rt, "DEMO-1", "Done")
    reconciler = Reconciler(rt)

    report = await reconciler.run_pass()

    ws, notes = await load(rt, workspace_id)
    assert (report.workspaces, report.jobs_started, report.purges_requested, report.orphans) == (1, [], [], [])
    assert (ws.desired, ws.state, ws.version) == ("stopped", "stopped", 1)
    assert ws.purge_due_at == ticket.status_changed_at + timedelta(seconds=3600)
    scheduled = f"purge scheduled for {ws.purge_due_at:%Y-%m-%d %H:%M UTC}"
    assert notes == [f"{scheduled}: ticket is Done (category done), grace period of 1h"]

    await reconciler.run_pass()  # nothing changed: nothing written
    assert (await load(rt, workspace_id))[0].version == 1

    await move(rt, "DEMO-1", "In Progress")
    report = await reconciler.run_pass()

    ws, notes = await load(rt, workspace_id)
    assert (report.jobs_started, report.purges_requested) == ([], [])
    assert (ws.desired, ws.purge_due_at, ws.version) == ("stopped", None, 2)
    assert notes[1:] == ["scheduled purge cancelled: the ticket is active again"]
    assert reconciler.jobs == {}
