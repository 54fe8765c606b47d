"""Users and API tokens. Tokens are shown once and stored as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from taskspace.core.errors import Unauthorized
from taskspace.db.models import ApiToken, User, utcnow

TOKEN_PREFIX = "tsp_"
_LAST_USED_RESOLUTION = timedelta(minutes=1)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_api_token(*, session: AsyncSession, user: User, name: str) -> str:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, name=name, token_hash=_hash(token)))
    await session.flush()
    return token


async def ensure_admin(*, session: AsyncSession, username: str = "admin") -> User:
    """The first admin, created on an empty database."""
    count = await session.scalar(select(func.count()).select_from(User))
    if count:
        admin = await session.scalar(select(User).where(User.is_admin).order_by(User.id))
        if admin is not None:
            return admin
    user = User(username=username, display_name="Administrator", is_admin=True)
    session.add(user)
    await session.flush()
    return user


async def authenticate(*, session: AsyncSession, token: str | None) -> User:
    if not token:
        raise Unauthorized("This request carries no API token.",
                           hint="Send 'Authorization: Bearer <token>' (the CLI reads TASKSPACE_TOKEN "
                                "or the admin token in the data dir).")
    row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == _hash(token)))
    if row is None or row.revoked_at is not None:
        raise Unauthorized("The API token is unknown or revoked.",
                           hint="Check TASKSPACE_TOKEN, or create a new token.")
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > _LAST_USED_RESOLUTION:
        row.last_used_at = now
    return row.user


async def get_by_username(*, session: AsyncSession, username: str) -> User | None:
    return await session.scalar(select(User).where(User.username == username))
