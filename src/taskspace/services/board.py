"""The board: the signed-in user's tickets by status column, each with its age and the state
of the user's workspace for it.

It stays fast with thousands of tickets: a column shows its ``COLUMN_CARDS`` most recently
updated tickets and says how many more it has; the column on its own (``status``) pages through
all of them, ``PAGE_CARDS`` at a time. Three short statements whatever the number of tickets:
the user's projects (a probe of ``(assignee, project_id)`` per project), the count of each
column (a range of ``(assignee, status, status_category, updated_at)`` each), and the cards of
every column (a range of that index per column), each with the state of the user's workspace
for it (by ticket). Only the columns a card shows are read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache, lru_cache
from operator import itemgetter
from typing import Any, NamedTuple
from urllib.parse import urlencode

from sqlalchemy import (
    ColumnElement,
    Executable,
    Integer,
    ScalarSelect,
    Select,
    bindparam,
    case,
    exists,
    func,
    literal,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from taskspace.core.tickets import StatusCategory
from taskspace.db.models import NOT_PURGED, Project, Ticket, User, Workspace, utcnow

#: Done tickets stay on the board this long after they were last changed.
DONE_VISIBLE = timedelta(days=14)
#: Cards of a column on the board; the rest are counted and a link away.
COLUMN_CARDS = 20
#: Cards of a page of one column on its own.
PAGE_CARDS = 60
MAX_PAGE = 10_000
_CATEGORY_ORDER = {StatusCategory.TODO.value: 0, StatusCategory.IN_PROGRESS.value: 1, StatusCategory.DONE.value: 2}
_CARD_COLUMNS = (Ticket.id, Ticket.project_id, Ticket.key, Ticket.title, Ticket.status, Ticket.status_category,
                 Ticket.assignee, Ticket.url, Ticket.reference, Ticket.created_at, Ticket.updated_at,
                 Ticket.status_changed_at)
#: A card row (``_CARD_COLUMNS``, then its workspace's state and purge time) by (updated_at, id).
_newest_first = itemgetter(10, 0)


class CardWorkspace(NamedTuple):
    state: str
    purge_due_at: datetime | None


class Card(NamedTuple):
    """Everything a card shows, computed: the page keeps a card's HTML for as long as the card
    is equal (see ``web.ui.templating.board_card``), so the template must show nothing else.
    A tuple: made, hashed and compared at C speed, 80 times per board."""

    key: str
    title: str
    status: str
    project: str
    project_stale: bool
    assignee: str | None
    url: str | None
    reference: str | None
    created_at: datetime
    age_days: int
    status_days: int
    workspace: CardWorkspace | None

    @property
    def purge_due_at(self) -> datetime | None:
        return self.workspace.purge_due_at if self.workspace else None


@dataclass
class Column:
    status: str
    category: str
    #: Tickets in the column (those matching the filters), shown or not.
    total: int
    cards: list[Card] = field(default_factory=list)

    @property
    def more(self) -> int:
        """Tickets of the column not shown (on the board: beyond the first COLUMN_CARDS)."""
        return max(0, self.total - len(self.cards))


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
    #: Tickets matching the filters, in every column.
    total: int
    stale: list[StaleTracker] = field(default_factory=list)
    #: One column on its own (``status``), a page at a time; None: the whole board.
    status: str | None = None
    page: int = 1
    pages: int = 1

    def link(self, **changes: str | int | None) -> str:
        """This board's address with ``changes`` (None or empty: left out)."""
        params: dict[str, str | int | None] = {"project": self.project, "q": self.text, "status": self.status,
                                               "page": self.page if self.page > 1 else None}
        params.update(changes)
        query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
        return f"/?{query}" if query else "/"


# Statements are built once per shape (which filters apply, which columns are shown), with bound
# parameters, and reused: building one and computing its cache key costs more than running it.


def _filters(*, project: bool, text: bool) -> list[ColumnElement[bool]]:
    """The user's tickets (``assignee``), of a project (``project_id``), matching ``like``."""
    conditions: list[ColumnElement[bool]] = [Ticket.assignee == bindparam("assignee")]
    if project:
        conditions.append(Ticket.project_id == bindparam("project_id"))
    if text:
        like = bindparam("like")
        conditions.append(or_(Ticket.title.ilike(like, escape="\\"), Ticket.key.ilike(like, escape="\\")))
    return conditions


@cache
def projects_statement() -> Select[tuple[int, str, datetime | None, str | None]]:
    """The projects ``assignee`` has tickets in, by name."""
    theirs = exists().where(Ticket.assignee == bindparam("assignee"), Ticket.project_id == Project.id)
    return (select(Project.id, Project.name, Project.tracker_stale_since, Project.tracker_error)
            .where(theirs).order_by(Project.name))


@cache
def count_statement(*, project: bool, text: bool) -> Select[tuple[str, str, int]]:
    """Tickets per (status, category) — done ones only while changed after ``cutoff`` — for
    every status of the user's tickets and every category (0 for most pairs).

    Not a GROUP BY: grouping the thousands of index entries of a busy user cost SQLite four
    times what counting them does. The statuses come from a walk along ``(assignee, status,
    ...)``, one seek from each to the next (a recursive CTE), and each pair is counted over its
    own range of that index. A ticket's category is one of ``StatusCategory``: trackers and the
    built-in workflow map every status to one."""
    theirs = Ticket.assignee == bindparam("assignee")
    statuses = select(select(func.min(Ticket.status)).where(theirs).scalar_subquery().label("status")).cte(
        "statuses", recursive=True)
    following = select(func.min(Ticket.status)).where(theirs, Ticket.status > statuses.c.status).scalar_subquery()
    statuses = statuses.union_all(select(following).where(statuses.c.status.is_not(None)))
    categories = union_all(*(select(literal(c.value).label("category")) for c in StatusCategory)).subquery("categories")

    def count(*recent: ColumnElement[bool]) -> ScalarSelect[int]:
        return (select(func.count()).select_from(Ticket)
                .where(*_filters(project=project, text=text), Ticket.status == statuses.c.status,
                       Ticket.status_category == categories.c.category, *recent)
                .scalar_subquery())

    tickets = case((categories.c.category == StatusCategory.DONE.value, count(Ticket.updated_at >= bindparam("cutoff"))),
                   else_=count())
    return (select(statuses.c.status, categories.c.category, tickets)  # type: ignore[return-value]
            .select_from(statuses).join(categories, true()).where(statuses.c.status.is_not(None)))


def _column(index: int, *, done: bool, project: bool, text: bool) -> Select[tuple[Any, ...]]:
    """Column ``index`` (``status_<index>``, ``category_<index>``): ``limit`` cards after
    ``offset``, most recently updated first (a range of the board's index), each with the state
    of the ``owner_id``'s live workspace for it, if any (at most one: a unique index). The
    workspace is a subquery by ticket rather than a join, so that its plan is an index lookup
    per card whatever the planner's statistics say (a freshly filled PostgreSQL table has none)."""
    def workspace(column: InstrumentedAttribute[Any]) -> ScalarSelect[Any]:
        return (select(column).where(Workspace.ticket_id == Ticket.id, Workspace.owner_id == bindparam("owner_id"),
                                     NOT_PURGED)
                .limit(1).scalar_subquery())

    stmt = (select(*_CARD_COLUMNS, workspace(Workspace.state).label("workspace_state"),
                   workspace(Workspace.purge_due_at).label("workspace_purge_due_at"))
            .where(*_filters(project=project, text=text), Ticket.status == bindparam(f"status_{index}"),
                   Ticket.status_category == bindparam(f"category_{index}")))
    if done:
        stmt = stmt.where(Ticket.updated_at >= bindparam("cutoff"))
    return (stmt.order_by(Ticket.updated_at.desc(), Ticket.id.desc())
            .limit(bindparam("limit", type_=Integer)).offset(bindparam("offset", type_=Integer)))


@lru_cache(maxsize=256)
def cards_statement(*, done: tuple[bool, ...], project: bool, text: bool) -> Executable:
    """The cards of every column in one statement: ``done[i]`` says whether column ``i`` is of
    the done category (its tickets only while changed after ``cutoff``)."""
    parts = [_column(i, done=d, project=project, text=text) for i, d in enumerate(done)]
    if len(parts) == 1:
        return parts[0]
    return union_all(*(select(part.subquery()) for part in parts))


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def board(*, session: AsyncSession, user: User, project: str | None = None, text: str = "",
                status: str | None = None, page: int = 1, now: datetime | None = None) -> Board:
    """Tickets assigned to ``user`` (done ones only while recent), grouped by status, in the
    order of their category, each column's most recently updated first; ``project`` and
    ``text`` (key or words of the title) filter. With ``status``, that column alone, page
    ``page`` of it (a page past the last is the last)."""
    now = now or utcnow()
    text = text.strip()[:200]
    params: dict[str, Any] = {"assignee": user.username, "owner_id": user.id, "cutoff": now - DONE_VISIBLE}
    projects = (await session.execute(projects_statement(), params)).all()
    project_id = None
    if project:
        project_id = next((p.id for p in projects if p.name == project), -1)  # -1: none of theirs
        params["project_id"] = project_id
    if text:
        params["like"] = _like(text)
    shape = {"project": project_id is not None, "text": bool(text)}
    counts = [(s, c, n) for s, c, n in (await session.execute(count_statement(**shape), params)) if n]
    columns = {(s, c): Column(status=s, category=c, total=n) for s, c, n in counts}
    pages = 1
    if status is None:
        page = 1
    else:
        columns = {k: v for k, v in columns.items() if k[0] == status}
        pages = max(1, math.ceil(sum(c.total for c in columns.values()) / PAGE_CARDS))
        page = min(max(1, page), pages)
    rows: list[Any] = []
    if columns:
        params["limit"], params["offset"] = ((PAGE_CARDS, (page - 1) * PAGE_CARDS) if status is not None
                                             else (COLUMN_CARDS, 0))
        for i, (s, c) in enumerate(columns):
            params[f"status_{i}"], params[f"category_{i}"] = s, c
        done = tuple(c == StatusCategory.DONE.value for _, c in columns)
        rows = list((await session.execute(cards_statement(done=done, **shape), params)).all())
    by_id = {p.id: (p.name, bool(p.tracker_stale_since)) for p in projects}
    # Rows are read by position, cards made by position: by name, both cost more than the card.
    for (_, card_project, key, title, row_status, category, assignee, url, reference, created_at, _,
         status_changed_at, workspace_state, purge_due_at) in sorted(rows, key=_newest_first, reverse=True):
        name, stale = by_id.get(card_project, ("?", False))
        columns[(row_status, category)].cards.append(Card(
            key, title, row_status, name, stale, assignee, url, reference, created_at,
            max(0, (now - created_at).days), max(0, (now - status_changed_at).days),
            CardWorkspace(workspace_state, purge_due_at) if workspace_state else None))
    ordered = sorted(columns.values(), key=lambda c: (_CATEGORY_ORDER.get(c.category, 9), c.status))
    stale = [StaleTracker(p.name, p.tracker_stale_since, p.tracker_error) for p in projects
             if p.tracker_stale_since is not None and (project_id is None or p.id == project_id)]
    return Board(columns=ordered, projects=[p.name for p in projects], project=project, text=text,
                 total=sum(n for _, _, n in counts), stale=stale, status=status, page=page, pages=pages)
