"""Dependencies shared by the routers: the runtime, a session, the calling user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from taskspace.db.engine import transaction
from taskspace.db.models import User
from taskspace.reconciler.loop import Reconciler
from taskspace.services import users
from taskspace.services.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    return request.app.state.rt


def get_reconciler(request: Request) -> Reconciler:
    return request.app.state.reconciler


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A write transaction for the request. Routes that call the engine or git must not use it."""
    async with transaction(request.app.state.rt.sessions) as session:
        yield session


async def get_reader(request: Request) -> AsyncIterator[AsyncSession]:
    """A read-only session for the request."""
    async with request.app.state.rt.readers() as session:
        yield session


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


async def get_user(request: Request) -> User:
    async with transaction(request.app.state.rt.sessions) as session:
        return await users.authenticate(session=session, token=_bearer(request))


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
ReaderDep = Annotated[AsyncSession, Depends(get_reader)]
UserDep = Annotated[User, Depends(get_user)]
ReconcilerDep = Annotated[Reconciler, Depends(get_reconciler)]
