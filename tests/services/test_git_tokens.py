"""Git tokens: named per user, validated, encrypted at rest, chosen by repository host."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from taskspace.core.errors import Conflict, InvalidInput, NotFound
from taskspace.core.repo_url import parse_repo_url
from taskspace.db.engine import transaction
from taskspace.db.models import GitToken, User
from taskspace.services import git_tokens
from taskspace.services.runtime import Runtime
from tests.services.support import count


def new_secret() -> str:
    return "ghp_" + secrets.token_hex(20)


async def add(rt: Runtime, user: User, name: str, host: str, secret: str | None = None,
              username: str | None = None) -> GitToken:
    async with transaction(rt.sessions) as session:
        return await git_tokens.add(session=session, vault=rt.vault, user=user, name=name, host=host,
                                    secret=secret or new_secret(), username=username)


async def names(rt: Runtime, user: User) -> list[str]:
    async with transaction(rt.sessions) as session:
        return [t.name for t in await git_tokens.list_for(session=session, user=user)]


async def test_add_list_and_remove(rt: Runtime, admin: User) -> None:
    await add(rt, admin, "work", "GitHub.com ")
    await add(rt, admin, "home", "git.example.com:8443", username="me")

    async with transaction(rt.sessions) as session:
        tokens = await git_tokens.list_for(session=session, user=admin)
    assert [(t.name, t.host, t.username) for t in tokens] == [
        ("home", "git.example.com:8443", "me"),
        ("work", "github.com", "x-access-token"),
    ]

    async with transaction(rt.sessions) as session:
        await git_tokens.remove(session=session, user=admin, name="work")
    assert await names(rt, admin) == ["home"]

    async with transaction(rt.sessions) as session:
        with pytest.raises(NotFound, match="no token named 'work'"):
            await git_tokens.remove(session=session, user=admin, name="work")


async def test_a_duplicate_name_conflicts_but_other_users_may_use_it(rt: Runtime, admin: User) -> None:
    await add(rt, admin, "work", "github.com")
    async with transaction(rt.sessions) as session:
        bob = User(username="bob")
        session.add(bob)

    with pytest.raises(Conflict, match="already have a token named 'work'"):
        await add(rt, admin, "work", "gitlab.com")
    await add(rt, bob, "work", "gitlab.com")

    assert await names(rt, admin) == ["work"]
    assert await names(rt, bob) == ["work"]


async def test_a_bad_host_is_refused(rt: Runtime, admin: User) -> None:
    for host in ("https://github.com", "github.com/org", "", "git hub.com", "-github.com", "github.com:port",
                 "github.com:123456"):
        with pytest.raises(InvalidInput) as caught:
            await add(rt, admin, "work", host)
        assert caught.value.field == "host", host
        assert "git.example.com:8443" in (caught.value.hint or ""), host
    assert await count(rt, GitToken) == 0


async def test_line_breaks_and_control_characters_are_refused(rt: Runtime, admin: User) -> None:
    cases = [
        ("ghp_abc\n", None, "secret"),
        ("ghp_a\rbc", None, "secret"),
        ("ghp_\x00abc", None, "secret"),
        ("ghp_abc\x7f", None, "secret"),
        ("ghp_abc", "ali\nce", "username"),
    ]
    for secret, username, field in cases:
        with pytest.raises(InvalidInput, match="line break or control character") as caught:
            await add(rt, admin, "work", "github.com", secret=secret, username=username)
        assert caught.value.field == field, (secret, username)
        assert "trailing newline" in (caught.value.hint or "")
    assert await count(rt, GitToken) == 0


async def test_an_empty_secret_or_a_bad_name_is_refused(rt: Runtime, admin: User) -> None:
    async with transaction(rt.sessions) as session:
        with pytest.raises(InvalidInput, match="secret is empty"):
            await git_tokens.add(session=session, vault=rt.vault, user=admin, name="work", host="github.com",
                                 secret="")
        with pytest.raises(InvalidInput, match="not a valid token name"):
            await git_tokens.add(session=session, vault=rt.vault, user=admin, name="my token",
                                 host="github.com", secret=new_secret())
    assert await count(rt, GitToken) == 0


def _checkpoint(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


async def test_the_secret_is_never_stored_in_clear(rt: Runtime, admin: User) -> None:
    secret = new_secret()
    token = await add(rt, admin, "ci-bot-7f3a", "github.com", secret=secret)

    async with transaction(rt.sessions) as session:
        rows = (await session.execute(text("SELECT * FROM git_tokens"))).mappings().all()
    assert len(rows) == 1
    for column, value in rows[0].items():
        raw = bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
        assert secret.encode() not in raw, column
        assert secret[4:].encode() not in raw, column

    if rt.engine.dialect.name == "sqlite":
        database = Path(make_url(rt.engine.url).database or "")
        await rt.engine.dispose()
        await asyncio.to_thread(_checkpoint, database)
        stored = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
        assert token.name.encode() in stored  # the row did reach the file
        assert secret[4:].encode() not in stored

    assert git_tokens.credential(rt.vault, token).password == secret


async def test_credential_decrypts_the_secret(rt: Runtime, admin: User) -> None:
    secret = new_secret()
    await add(rt, admin, "work", "github.com", secret=secret, username="alice")

    async with transaction(rt.sessions) as session:
        (token,) = await git_tokens.list_for(session=session, user=admin)
    credential = git_tokens.credential(rt.vault, token)

    assert (credential.username, credential.password) == ("alice", secret)
    assert secret not in repr(credential)


async def test_choose_prefers_host_and_port_then_host(rt: Runtime, admin: User, tmp_path: Path) -> None:
    # Named so that the host-only token is listed first: an exact host:port match must still win.
    await add(rt, admin, "a-host", "git.example.com")
    await add(rt, admin, "b-host-port", "git.example.com:8443")
    await add(rt, admin, "c-elsewhere", "code.example.org")

    async def choose(url: str, preferred: str | None = None) -> str | None:
        repo = parse_repo_url(url, rt.settings.repo_url_policy)
        async with transaction(rt.sessions) as session:
            token = await git_tokens.choose(session=session, user=admin, repo=repo, preferred=preferred)
        return token.name if token else None

    assert await choose("https://git.example.com:8443/team/api.git") == "b-host-port"
    assert await choose("https://git.example.com/team/api.git") == "a-host"
    assert await choose("https://git.example.com:9000/team/api.git") == "a-host"
    assert await choose("https://code.example.org/team/api.git") == "c-elsewhere"
    assert await choose("https://unknown.example.net/team/api.git") is None
    # A preferred token is used when it is for the repository's host; otherwise it is ignored.
    assert await choose("https://git.example.com:8443/team/api.git", preferred="a-host") == "a-host"
    assert await choose("https://git.example.com:8443/team/api.git", preferred="c-elsewhere") == "b-host-port"
    with pytest.raises(NotFound, match="no token named 'missing'"):
        await choose("https://git.example.com/team/api.git", preferred="missing")
    # Transports that take no token.
    assert await choose("ssh://git@git.example.com/team/api.git") is None
    assert await choose("git@git.example.com:team/api.git") is None
    assert await choose(f"file://{tmp_path}/repos/api.git", preferred="a-host") is None
