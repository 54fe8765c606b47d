from __future__ import annotations

from fastapi import APIRouter, Query, status

from taskspace.services import projects, tickets
from taskspace.web.api.deps import ReaderDep, RuntimeDep, SessionDep, UserDep
from taskspace.web.api.schemas import TicketIn, TicketMoveIn, TicketOut

router = APIRouter(prefix="/tickets", tags=["tickets"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TicketOut)
async def create_ticket(body: TicketIn, session: SessionDep, user: UserDep) -> TicketOut:
    """Create a ticket on the built-in board."""
    project = await projects.get(session=session, ref=body.project)
    ticket = await tickets.create(session=session, project=project, title=body.title,
                                  description=body.description, assignee=body.assignee)
    return TicketOut.of(ticket)


@router.get("", response_model=list[TicketOut])
async def list_tickets(session: ReaderDep, user: UserDep,
                       assignee: str | None = Query(None, max_length=200),
                       project: str | None = Query(None, max_length=64),
                       mine: bool = False) -> list[TicketOut]:
    found = await tickets.list_for_query(session=session, assignee=user.username if mine else assignee,
                                         project_ref=project)
    return [TicketOut.of(t) for t in found]


@router.get("/{key}", response_model=TicketOut)
async def get_ticket(key: str, session: ReaderDep, user: UserDep) -> TicketOut:
    return TicketOut.of(await tickets.get(session=session, key=key))


@router.post("/{key}/move", response_model=TicketOut)
async def move_ticket(key: str, body: TicketMoveIn, rt: RuntimeDep, user: UserDep) -> TicketOut:
    """Move a built-in ticket to another status (the purge policy follows)."""
    return TicketOut.of(await tickets.move_and_notify(rt, key=key, status=body.status))
