"""The board: the signed-in user's tickets by status column, each with its age and the state
of the user's workspace for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from taskspace.core.states import State
from taskspace.core.tickets import StatusCategory
from taskspace.db.models import Project, Ticket, User, Workspace, utcnow

#: Done tickets stay on the board this long after they were last changed.
DONE_VISIBLE = timedelta(days=14)
MAX_CARDS = 500
_CATEGORY_ORDER = {StatusCategory.TODO.value: 0, StatusCategory.IN_PROGRESS.value: 1, StatusCategory.DONE.value: 2}


@dataclass
class Card:
    ticket: Ticket
    age_days: int
    status_days: int
    workspace: Workspace | None

    @property
    def purge_due_at(self) -> datetime | None:
        return self.workspace.purge_due_at if self.workspace else None


@dataclass
class Column:
    status: str
    category: str
    cards: list[Card] = field(default_factory=list)


@dataclass
class StaleTracker:
    project: str
    since: datetime
    error: str | None


@dataclass
class Board:
    columns: list[Column]
    projects: list[str]
    project: str | None
    text: str
    total: int
    stale: list[StaleTracker] = field(default_factory=list)


def _days(since: datetime, now: datetime) -> int:
    return max(0, (now - since).days)


async def board(*, session: AsyncSession, user: User, project: str | None = None, text: str = "",
                now: datetime | None = None) -> Board:
    """Tickets assigned to ``user`` (done ones only while recent), grouped by status, in the
    order of their category; ``project`` and ``text`` (key or words of the title) filter."""
    now = now or utcnow()
    text = text.strip()[:200]
    stmt = (select(Ticket).join(Project).where(Ticket.assignee == user.username)
            .where(or_(Ticket.status_category != StatusCategory.DONE.value, Ticket.updated_at >= now - DONE_VISIBLE))
            .order_by(Ticket.status_changed_at.desc()).limit(MAX_CARDS))
    if project:
        stmt = stmt.where(Project.name == project)
    if text:
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        like = f"%{escaped}%"
        stmt = stmt.where(or_(Ticket.title.ilike(like, escape="\\"), Ticket.key.ilike(like, escape="\\")))
    tickets = list(await session.scalars(stmt))
    mine = {}
    if tickets:
        rows = await session.scalars(select(Workspace).where(
            Workspace.owner_id == user.id, Workspace.state != State.PURGED.value,
            Workspace.ticket_id.in_([t.id for t in tickets])))
        mine = {w.ticket_id: w for w in rows}
    columns: dict[str, Column] = {}
    for ticket in tickets:
        column = columns.setdefault(ticket.status, Column(status=ticket.status, category=ticket.status_category))
        column.cards.append(Card(ticket=ticket, age_days=_days(ticket.created_at, now),
                                 status_days=_days(ticket.status_changed_at, now), workspace=mine.get(ticket.id)))
    projects = list(await session.scalars(
        select(Project.name).join(Ticket).where(Ticket.assignee == user.username).distinct().order_by(Project.name)))
    ordered = sorted(columns.values(), key=lambda c: (_CATEGORY_ORDER.get(c.category, 9), c.status))
    stale = {t.project.name: StaleTracker(t.project.name, t.project.tracker_stale_since, t.project.tracker_error)
             for t in tickets if t.project.tracker_stale_since is not None}
    return Board(columns=ordered, projects=projects, project=project, text=text, total=len(tickets),
                 stale=sorted(stale.values(), key=lambda s: s.project))
