"""Fixtures shared by the service tests: the admin, a git token for the test git server, and
fresh repositories on it. Every test here runs on SQLite and on PostgreSQL (see ``rt``)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import pytest

from taskspace.db.engine import transaction
from taskspace.db.models import GitToken, User
from taskspace.services import git_tokens, users
from taskspace.services.runtime import Runtime
from taskspace.testing.git_server import GitHttpServer
from tests.services.support import NewRepo


@pytest.fixture
async def admin(rt: Runtime) -> User:
    async with transaction(rt.sessions) as session:
        return (await users.ensure_admin(session=session))[0]


@pytest.fixture
async def git_token(rt: Runtime, admin: User, git_server: GitHttpServer) -> GitToken:
    """The admin's token for the test git server, as user ``alice`` (read/write)."""
    async with transaction(rt.sessions) as session:
        return await git_tokens.add(session=session, vault=rt.vault, user=admin, name="local",
                                    host=f"127.0.0.1:{git_server.port}", username="alice",
                                    secret=git_server.users["alice"])


@pytest.fixture
def new_repo(git_server: GitHttpServer) -> NewRepo:
    """Create a repository with a unique name on the git server; returns its URL."""

    def create(files: Mapping[str, str], **options: object) -> str:
        return git_server.create_repo(f"svc-{uuid.uuid4().hex[:12]}", files, **options)  # type: ignore[arg-type]

    return create
