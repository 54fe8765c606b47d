"""Users and API tokens: the first admin, bearer tokens stored only as hashes."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import func, select, text, update

from taskspace.core.errors import Unauthorized
from taskspace.db.engine import transaction
from taskspace.db.models import ApiToken, User, utcnow
from taskspace.services import users
from taskspace.services.runtime import Runtime


async def test_ensure_admin_creates_one_admin_and_returns_it_again(rt: Runtime) -> None:
    async with transaction(rt.sessions) as session:
        first = (await users.ensure_admin(session=session))[0]
    async with transaction(rt.sessions) as session:
        again = (await users.ensure_admin(session=session, username="someone-else"))[0]
        count = await session.scalar(select(func.count()).select_from(User))

    assert first.username == "admin" and first.is_admin
    assert again.id == first.id and again.username == "admin"
    assert count == 1


async def test_a_created_token_authenticates_its_user(rt: Runtime) -> None:
    async with transaction(rt.sessions) as session:
        admin = (await users.ensure_admin(session=session))[0]
        token, _ = await users.create_api_token(session=session, user=admin, name="laptop")

    async with transaction(rt.sessions) as session:
        user = await users.authenticate(session=session, token=token)
    async with transaction(rt.sessions) as session:
        row = await session.scalar(select(ApiToken).where(ApiToken.name == "laptop"))

    assert token.startswith(users.TOKEN_PREFIX)
    assert user.id == admin.id
    assert row is not None and row.last_used_at is not None


async def test_a_missing_or_unknown_token_is_refused_with_a_hint(rt: Runtime) -> None:
    async with transaction(rt.sessions) as session:
        admin = (await users.ensure_admin(session=session))[0]
        token, _ = await users.create_api_token(session=session, user=admin, name="laptop")

    for wrong in (None, "", "tsp_not-a-token-this-server-made", token[:-1], token.upper()):
        async with transaction(rt.sessions) as session:
            with pytest.raises(Unauthorized) as caught:
                await users.authenticate(session=session, token=wrong)
        assert "TASKSPACE_TOKEN" in (caught.value.hint or ""), wrong


async def test_a_revoked_token_is_refused(rt: Runtime) -> None:
    async with transaction(rt.sessions) as session:
        admin = (await users.ensure_admin(session=session))[0]
        token, _ = await users.create_api_token(session=session, user=admin, name="laptop")
    async with transaction(rt.sessions) as session:
        await session.execute(update(ApiToken).where(ApiToken.name == "laptop").values(revoked_at=utcnow()))

    async with transaction(rt.sessions) as session:
        with pytest.raises(Unauthorized, match="unknown or revoked") as caught:
            await users.authenticate(session=session, token=token)
    assert caught.value.hint


async def test_the_token_is_stored_only_as_its_hash(rt: Runtime) -> None:
    async with transaction(rt.sessions) as session:
        admin = (await users.ensure_admin(session=session))[0]
        token, _ = await users.create_api_token(session=session, user=admin, name="laptop")

    async with transaction(rt.sessions) as session:
        rows = (await session.execute(text("SELECT * FROM api_tokens"))).mappings().all()

    assert len(rows) == 1
    assert rows[0]["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    secret_part = token.removeprefix(users.TOKEN_PREFIX)
    for column, value in rows[0].items():
        assert secret_part not in str(value), column
