"""Keeping the log filter's list of secrets current."""

from __future__ import annotations

from sqlalchemy import func, select

from taskspace.db.models import GitToken
from taskspace.services import git_tokens
from taskspace.services.runtime import Runtime


async def refresh(rt: Runtime) -> None:
    """Load every stored token into the log filter when the set of tokens changed."""
    redactor = rt.redactor
    async with rt.readers() as session:
        version = tuple((await session.execute(select(func.count(GitToken.id), func.max(GitToken.id)))).one())
        if version == redactor.version:
            return
        tokens = list(await session.scalars(select(GitToken)))
    secrets = set()
    for token in tokens:
        try:
            secrets.add(git_tokens.credential(rt.vault, token).password)
        except Exception:  # an unreadable token is reported where it is used
            continue
    redactor.replace_all(secrets)
    redactor.version = (int(version[0] or 0), int(version[1] or 0))
