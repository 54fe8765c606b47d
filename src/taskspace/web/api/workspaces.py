from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import PlainTextResponse, StreamingResponse

from taskspace.core.errors import TaskspaceError
from taskspace.core.roles import Access
from taskspace.core.states import Desired, State
from taskspace.services import workspaces
from taskspace.web.api.deps import ReaderDep, RuntimeDep, UserDep
from taskspace.web.api.schemas import (
    EventOut,
    EventsOut,
    ExecIn,
    LaunchIn,
    PurgeIn,
    WorkspaceOut,
    WorkspacePageOut,
)

router = APIRouter(prefix="/workspaces", tags=["workspaces"])


@router.post("", response_model=WorkspaceOut, status_code=status.HTTP_201_CREATED,
             responses={200: {"model": WorkspaceOut, "description": "The ticket already had your workspace"}})
async def launch(body: LaunchIn, rt: RuntimeDep, user: UserDep, response: Response) -> WorkspaceOut:
    """Launch a workspace for a ticket, or return yours if it has one. Provisioning continues in
    the background: follow it with GET /workspaces/{ref}/events."""
    ws, created = await workspaces.launch(rt, user=user, request=workspaces.LaunchRequest(**body.model_dump()))
    if not created:
        response.status_code = status.HTTP_200_OK
    async with rt.readers() as session:
        fresh = await workspaces.find(session=session, user=user, ref=ws.id)
    return WorkspaceOut.of(fresh, rt.settings.base_url)


@router.get("", response_model=WorkspacePageOut)
async def list_workspaces(rt: RuntimeDep, session: ReaderDep, user: UserDep,
                          all: bool = Query(False, description="Include purged workspaces"),
                          everyone: bool = Query(False, description="Everyone's, not just yours "
                                                 "(reviewers and admins)"),
                          limit: int = Query(workspaces.PAGE_DEFAULT, ge=1, le=workspaces.PAGE_MAX,
                                             description="Workspaces per page"),
                          cursor: str | None = Query(None, max_length=200, description="The next_cursor of the "
                                                     "previous page; leave out for the first")) -> WorkspacePageOut:
    """Your workspaces (or everyone's), newest first, a page at a time: follow `next` (or pass
    `next_cursor` as `cursor`) until it is null; `total` counts them all."""
    async with rt.turn():
        page = await workspaces.list_page(session=session, user=user, include_purged=all, everyone=everyone,
                                          limit=limit, cursor=cursor)
        following = None
        if page.next_cursor is not None:
            query = urlencode({"all": str(all).lower(), "everyone": str(everyone).lower(), "limit": limit,
                               "cursor": page.next_cursor})
            following = f"{rt.settings.base_url}/api/v1/workspaces?{query}"
        return WorkspacePageOut(items=[WorkspaceOut.of(w, rt.settings.base_url) for w in page.items],
                                total=page.total, next_cursor=page.next_cursor, next=following)


@router.get("/{ref}", response_model=WorkspaceOut)
async def show(ref: str, rt: RuntimeDep, session: ReaderDep, user: UserDep) -> WorkspaceOut:
    """Your workspace for a ticket key (or by id)."""
    return WorkspaceOut.of(await workspaces.find(session=session, user=user, ref=ref), rt.settings.base_url)


async def _request(rt: RuntimeDep, user: UserDep, ref: str, desired: Desired, discard: bool = False) -> WorkspaceOut:
    ws = await workspaces.request(rt, user=user, ref=ref, desired=desired, discard_unpushed=discard)
    async with rt.readers() as session:
        return WorkspaceOut.of(await workspaces.find(session=session, user=user, ref=ws.id), rt.settings.base_url)


@router.post("/{ref}/stop", response_model=WorkspaceOut, status_code=status.HTTP_202_ACCEPTED)
async def stop(ref: str, rt: RuntimeDep, user: UserDep) -> WorkspaceOut:
    """Stop the workspace and its services. Files are kept."""
    return await _request(rt, user, ref, Desired.STOPPED)


@router.post("/{ref}/start", response_model=WorkspaceOut, status_code=status.HTTP_202_ACCEPTED)
async def start(ref: str, rt: RuntimeDep, user: UserDep) -> WorkspaceOut:
    """Start a stopped workspace (the startup script runs again), or retry a failed one."""
    return await _request(rt, user, ref, Desired.READY)


@router.post("/{ref}/purge", response_model=WorkspaceOut, status_code=status.HTTP_202_ACCEPTED)
async def purge(ref: str, rt: RuntimeDep, user: UserDep, body: PurgeIn | None = None) -> WorkspaceOut:
    """Delete the workspace. Uncommitted and unpushed work is first pushed to rescue branches;
    if that fails the workspace is purge_blocked and nothing is deleted."""
    return await _request(rt, user, ref, Desired.PURGED, discard=bool(body and body.discard_unpushed))


@router.get("/{ref}/events", response_model=EventsOut)
async def events(ref: str, rt: RuntimeDep, user: UserDep, after: int = Query(0, ge=0, le=2**63 - 1),
                 wait: float = Query(0, ge=0, le=60, description="Seconds to wait for a new event"),
                 until: list[State] | None = Query(None, description="With wait: wait instead until the "
                                                   "workspace is in one of these states (repeat)")) -> EventsOut:
    """Events after ``after``; with ``wait``, returns as soon as there is one (long polling), or,
    with ``until``, as soon as the workspace is in one of those states."""
    async with rt.readers() as session:
        ws = await workspaces.find(session=session, user=user, ref=ref)
    ws, found = await workspaces.wait_for_events(rt, workspace_id=ws.id, after=after, timeout=wait,
                                                 until=set(until) if until else None)
    return EventsOut(workspace=WorkspaceOut.of(ws, rt.settings.base_url), events=[EventOut.of(e) for e in found])


@router.get("/{ref}/logs/startup", response_class=PlainTextResponse)
async def startup_log(ref: str, rt: RuntimeDep, user: UserDep) -> str:
    """Output of the last start's lifecycle commands and .taskspace/startup.sh."""
    async with rt.readers() as session:  # closed before the engine is asked
        ws = await workspaces.find(session=session, user=user, ref=ref)
    return await workspaces.startup_log(rt, ws)


@router.get("/{ref}/logs/build", response_class=PlainTextResponse)
async def build_log(ref: str, rt: RuntimeDep, session: ReaderDep, user: UserDep) -> str:
    """The log of the build that produced the workspace's image."""
    return workspaces.build_log(rt, await workspaces.find(session=session, user=user, ref=ref))


@router.post("/{ref}/exec", responses={200: {"content": {"application/x-ndjson": {}},
                                             "description": "Lines of {stream, data(base64)} then {exit_code}"}})
async def exec_command(ref: str, body: ExecIn, rt: RuntimeDep, user: UserDep) -> StreamingResponse:
    """Run a command in the workspace and stream its output as it comes."""
    async with rt.readers() as session:
        ws = await workspaces.find(session=session, user=user, ref=ref, access=Access.ENTER)
    stream = workspaces.exec_stream(rt, ws, body.argv)
    first = await anext(stream)  # errors before the first byte still become a JSON error response

    async def lines() -> AsyncIterator[bytes]:
        item = first
        try:
            while True:
                if isinstance(item, int):
                    yield json.dumps({"exit_code": item}).encode() + b"\n"
                    return
                data = base64.b64encode(item.data).decode()
                yield json.dumps({"stream": item.stream, "data": data}).encode() + b"\n"
                item = await anext(stream)
        except TaskspaceError as exc:
            yield json.dumps({"error": exc.to_dict()}).encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")
