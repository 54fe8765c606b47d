"""Helpers for the service tests."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select

from taskspace.db.engine import transaction
from taskspace.db.models import Base
from taskspace.services.runtime import Runtime

#: Creates a repository with a unique name on the test git server and returns its URL.
NewRepo = Callable[..., str]

#: A Dockerfile for projects that are only registered, never launched.
DOCKERFILE = "FROM debian:bookworm-slim\nWORKDIR /workspace\n"


def launchable_dockerfile(base_image: str) -> str:
    """A Dockerfile that preflight accepts: its base image is on the engine (launching never
    builds it)."""
    return f"FROM {base_image}\nWORKDIR /workspace\n"


def repo_name(url: str) -> str:
    """The git server's name of the repository at ``url``."""
    return url.rsplit("/", 1)[1].removesuffix(".git")


async def count(rt: Runtime, model: type[Base]) -> int:
    async with transaction(rt.sessions) as session:
        return await session.scalar(select(func.count()).select_from(model)) or 0
