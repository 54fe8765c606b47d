"""The app in process (no server, no reconciler) on the ``rt`` of each database, and clients
signed in as the admin: a browser with a session cookie, an API client with a token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI

from taskspace.db.engine import transaction
from taskspace.db.models import User
from taskspace.services import users
from taskspace.services.runtime import Runtime
from taskspace.web.api.deps import SESSION_COOKIE
from taskspace.web.app import create_app


@pytest.fixture
async def admin(rt: Runtime) -> User:
    async with transaction(rt.sessions) as session:
        return (await users.ensure_admin(session=session))[0]


@pytest.fixture
async def app(rt: Runtime) -> AsyncIterator[FastAPI]:
    app = create_app(rt.settings, runtime=rt, run_reconciler=False)
    async with app.router.lifespan_context(app):
        yield app


def _client(app: FastAPI, **options: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://taskspace.test",
                             **options)  # type: ignore[arg-type]


@pytest.fixture
async def browser(rt: Runtime, app: FastAPI, admin: User) -> AsyncIterator[httpx.AsyncClient]:
    async with transaction(rt.sessions) as session:
        cookie, _ = await users.start_session(session=session, user=admin, lifetime=timedelta(hours=1), source=None)
    async with _client(app, cookies={SESSION_COOKIE: cookie}) as client:
        yield client


@pytest.fixture
async def api(rt: Runtime, app: FastAPI, admin: User) -> AsyncIterator[httpx.AsyncClient]:
    async with transaction(rt.sessions) as session:
        token, _ = await users.create_api_token(session=session, user=admin, name="tests")
    async with _client(app, headers={"Authorization": f"Bearer {token}"}) as client:
        yield client
