"""Dependencies shared by the routers: the runtime, sessions, the calling user.

A caller is authenticated by an API token (``Authorization: Bearer``) or by the browser
session cookie. A state-changing request authenticated by the cookie must carry the session's
CSRF token (header ``X-CSRF-Token`` or form field ``csrf_token``): another site can make the
browser send the cookie, but cannot read the token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from taskspace.core.errors import Forbidden, Unauthorized
from taskspace.db.engine import transaction
from taskspace.db.models import User, WebSession
from taskspace.reconciler.loop import Reconciler
from taskspace.services import users
from taskspace.services.runtime import Runtime

SESSION_COOKIE = "taskspace_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# Coroutines, though they wait for nothing: FastAPI runs a plain function dependency in a worker
# thread, a round trip through the thread pool on every request for an attribute read.


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.rt


async def get_reconciler(request: Request) -> Reconciler:
    return request.app.state.reconciler


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A write transaction for the request. Routes that call the engine or git must not use it."""
    async with transaction(request.app.state.rt.sessions) as session:
        yield session


async def get_reader(request: Request) -> AsyncIterator[AsyncSession]:
    """A read-only session for the request."""
    async with request.app.state.rt.readers() as session:
        yield session


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


async def browser_session(request: HTTPConnection) -> WebSession | None:
    """The live session of the request's cookie (cached on the request), or None. Read in a
    read-only session; a write (the sliding expiry) only when a minute has passed since the
    last, so requests do not queue for SQLite's write lock."""
    if not hasattr(request.state, "web_session"):
        rt: Runtime = request.app.state.rt
        cookie = request.cookies.get(SESSION_COOKIE)
        web = None
        if cookie:
            lifetime = timedelta(hours=rt.settings.session_hours)
            async with rt.readers() as session:
                web = await users.resume_session(session=session, cookie=cookie, lifetime=lifetime, touch=False)
            if web is not None and users.use_worth_recording(web.last_seen_at):
                async with transaction(rt.sessions) as session:
                    web = await users.resume_session(session=session, cookie=cookie, lifetime=lifetime)
        request.state.web_session = web
    return request.state.web_session


async def _csrf_token_of(request: Request) -> str | None:
    token = request.headers.get("x-csrf-token")
    if token is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get("csrf_token")
        token = value if isinstance(value, str) else None
    return token


async def get_user(request: Request) -> User:
    rt: Runtime = request.app.state.rt
    token = bearer(request)
    if token is not None:
        async with rt.readers() as session:
            row = await users.api_token(session=session, token=token)
        user = row.user
        if users.use_worth_recording(row.last_used_at):  # at most once a minute: a write
            async with transaction(rt.sessions) as session:
                user = await users.authenticate(session=session, token=token)
    else:
        web = await browser_session(request)
        if web is None:
            raise Unauthorized("You are not signed in.", hint="Sign in at /login, or send an API token.")
        if request.method not in SAFE_METHODS and not users.csrf_matches(web, await _csrf_token_of(request)):
            raise Forbidden("This form is out of date or did not come from taskspace.",
                            hint="Reload the page and try again.")
        user = web.user
    request.state.user = user
    return user


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
# Both end with the route function, before the answer is sent: a client told "created" can read
# what it created, and a commit that fails is an error answer, not a success followed by a loss.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ReaderDep = Annotated[AsyncSession, Depends(get_reader, scope="function")]
UserDep = Annotated[User, Depends(get_user)]
ReconcilerDep = Annotated[Reconciler, Depends(get_reconciler)]
