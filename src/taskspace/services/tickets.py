"""Tickets: created and moved here for the built-in board, synced from other trackers."""

from __future__ import annotations

import re

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from taskspace.core.errors import InvalidInput, NotFound
from taskspace.core.tickets import Workflow
from taskspace.db.engine import transaction
from taskspace.db.models import Project, Ticket, utcnow
from taskspace.plugins.registry import load_tracker
from taskspace.plugins.trackers.base import LocalTickets
from taskspace.services import projects, tracker_links
from taskspace.services.runtime import Runtime

MAX_TITLE = 500
MAX_DESCRIPTION = 65536
#: Also Jira account ids such as 557058:f58131cb-b67d-43c7-b30d-6b58d40bd077.
ASSIGNEE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+:-]{0,199}\Z")


def workflow_of(project: Project) -> Workflow:
    cls = load_tracker(project.tracker)
    config = {k: v for k, v in (project.tracker_config or {}).items() if k != tracker_links.SEALED_NAMES}
    return cls(cls.config_model(**config)).workflow()


def _clean_title(title: str) -> str:
    title = (title or "").strip()
    if not title:
        raise InvalidInput("The ticket needs a title.", hint="Give a one-line summary of the work.", field="title")
    if len(title) > MAX_TITLE:
        raise InvalidInput(f"The title is longer than {MAX_TITLE} characters.",
                           hint="Shorten it; put details in the description.", field="title")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in title):
        raise InvalidInput("The title contains a line break or control character.",
                           hint="Put details in the description.", field="title")
    return title


def _clean_description(text: str) -> str:
    if len(text) > MAX_DESCRIPTION:
        raise InvalidInput(f"The description is longer than {MAX_DESCRIPTION} characters.",
                           hint="Shorten it, or link to a longer document.", field="description")
    if "\x00" in text:
        raise InvalidInput("The description contains a NUL character.",
                           hint="Remove it; the text was probably pasted from a binary file.", field="description")
    return text


def _clean_assignee(assignee: str | None) -> str | None:
    if assignee is None or assignee == "":
        return None
    if not ASSIGNEE_RE.match(assignee):
        raise InvalidInput(f"{assignee!r} is not a user name.",
                           hint="Give the assignee's user name, e.g. 'ada', or leave it out.", field="assignee")
    return assignee


async def create(*, session: AsyncSession, project: Project, title: str, description: str = "",
                 assignee: str | None = None) -> Ticket:
    tracker = load_tracker(project.tracker)
    if not issubclass(tracker, LocalTickets):
        raise InvalidInput(f"Tickets of project {project.name!r} live in {project.tracker}.",
                           hint=f"Create the ticket in {project.tracker}; it appears here on the next sync.")
    title, description, assignee = _clean_title(title), _clean_description(description), _clean_assignee(assignee)
    number = await session.scalar(
        update(Project).where(Project.id == project.id)
        .values(ticket_counter=Project.ticket_counter + 1).returning(Project.ticket_counter))
    initial = workflow_of(project).initial
    now = utcnow()
    ticket = Ticket(project_id=project.id, key=f"{project.key}-{number}", title=title, description=description,
                    status=initial.name, status_category=initial.category.value, assignee=assignee,
                    created_at=now, updated_at=now, status_changed_at=now)
    session.add(ticket)
    await session.flush()
    return ticket


async def get(*, session: AsyncSession, key: str) -> Ticket:
    ticket = await session.scalar(select(Ticket).where(Ticket.key == key.upper()))
    if ticket is None:
        raise NotFound(f"No ticket {key!r}.", hint="See 'taskspace ticket list'.")
    return ticket


async def list_tickets(*, session: AsyncSession, assignee: str | None = None,
                       project: Project | None = None, limit: int = 500) -> list[Ticket]:
    stmt = select(Ticket).order_by(Ticket.created_at.desc(), Ticket.id.desc()).limit(limit)
    if assignee:
        stmt = stmt.where(Ticket.assignee == assignee)
    if project is not None:
        stmt = stmt.where(Ticket.project_id == project.id)
    return list(await session.scalars(stmt))


async def move(*, session: AsyncSession, key: str, status: str) -> Ticket:
    ticket = await get(session=session, key=key)
    if not issubclass(load_tracker(ticket.project.tracker), LocalTickets):
        raise InvalidInput(f"{ticket.key} lives in {ticket.project.tracker}.",
                           hint=f"Move it in {ticket.project.tracker}; taskspace follows on the next sync.")
    workflow = workflow_of(ticket.project)
    canonical = workflow.canonical(status)
    if canonical is None:
        names = ", ".join(s.name for s in workflow.statuses)
        raise InvalidInput(f"{status!r} is not a status of this board.", hint=f"Statuses: {names}.",
                           field="status")
    if canonical != ticket.status:
        now = utcnow()
        ticket.status = canonical
        ticket.status_category = workflow.category_of(canonical).value  # type: ignore[union-attr]
        ticket.updated_at = now
        ticket.status_changed_at = now
    return ticket


async def move_and_notify(rt: Runtime, *, key: str, status: str) -> Ticket:
    """Move a ticket and let the reconciler apply the purge policy right away."""
    async with transaction(rt.sessions) as session:
        ticket = await move(session=session, key=key, status=status)
    rt.bus.wake_reconciler()
    return ticket


async def list_for_query(*, session: AsyncSession, assignee: str | None, project_ref: str | None) -> list[Ticket]:
    project = None
    if project_ref:
        project = await projects.get(session=session, ref=project_ref)
    return await list_tickets(session=session, assignee=assignee, project=project)
