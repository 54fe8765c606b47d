"""Named git tokens per user, encrypted at rest, used only through the host-side credential helper."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from taskspace.core.errors import Conflict, InvalidInput, NotFound
from taskspace.core.naming import validate_token_name
from taskspace.core.redaction import SecretRedactor
from taskspace.core.repo_url import RepoUrl
from taskspace.db.models import GitToken, User, utcnow
from taskspace.gitops.runner import GitCredential
from taskspace.services.vault import Sealed, Vault, fingerprint

_HOST_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[0-9]{1,5})?$|^\[[0-9a-f:]+\](:[0-9]{1,5})?$")
MAX_SECRET = 4096


def _context(user_id: int, name: str) -> str:
    return f"git-token:{user_id}:{name}"


def _check_text(value: str, what: str, limit: int) -> str:
    if not value:
        raise InvalidInput(f"The {what} is empty.", hint=f"Give a {what}.", field=what)
    if len(value) > limit:
        raise InvalidInput(f"The {what} is longer than {limit} characters.",
                           hint=f"Check that you copied only the {what}.", field=what)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidInput(f"The {what} contains a line break or control character.",
                           hint="Copy it again without the trailing newline.", field=what)
    return value


async def add(*, session: AsyncSession, vault: Vault, user: User, name: str, host: str,
              secret: str, username: str | None = None, redactor: SecretRedactor | None = None) -> GitToken:
    """Store a token, sealed; from now on the log filter (``redactor``) hides its value."""
    validate_token_name(name)
    host = host.strip().lower()
    if not _HOST_RE.match(host):
        raise InvalidInput(f"{host!r} is not a host name.",
                           hint="Give the git host as it appears in repository URLs, e.g. github.com "
                                "or git.example.com:8443.", field="host")
    _, colon, port = host.rsplit("]", 1)[-1].rpartition(":")
    if colon and not 0 < int(port) <= 65535:
        raise InvalidInput(f"{host!r} has a port out of range.", hint="A port is a number from 1 to 65535.",
                           field="host")
    _check_text(secret, "secret", MAX_SECRET)
    username = _check_text(username or "x-access-token", "username", 200)
    exists = await session.scalar(select(GitToken).where(GitToken.user_id == user.id, GitToken.name == name))
    if exists is not None:
        raise Conflict(f"You already have a token named {name!r}.",
                       hint="Choose another name, or remove the old token first.")
    sealed = vault.seal(secret, context=_context(user.id, name))
    token = GitToken(user_id=user.id, name=name, host=host, username=username, ciphertext=sealed.ciphertext,
                     wrapped_key=sealed.wrapped_key, key_id=sealed.key_id, fingerprint=fingerprint(secret))
    session.add(token)
    await session.flush()
    if redactor is not None:
        redactor.add(secret)
    return token


async def list_for(*, session: AsyncSession, user: User) -> list[GitToken]:
    return list(await session.scalars(select(GitToken).where(GitToken.user_id == user.id).order_by(GitToken.name)))


async def remove(*, session: AsyncSession, user: User, name: str) -> None:
    token = await session.scalar(select(GitToken).where(GitToken.user_id == user.id, GitToken.name == name))
    if token is None:
        raise NotFound(f"You have no token named {name!r}.", hint="See 'taskspace token list'.")
    await session.delete(token)


def matches(token: GitToken, repo: RepoUrl) -> bool:
    return token.host in {repo.host_port, repo.host}


async def choose(*, session: AsyncSession, user: User, repo: RepoUrl, preferred: str | None) -> GitToken | None:
    """The token to use for ``repo``: ``preferred`` when it is for that host, else the user's
    token for that host (exact host:port first). None for transports that take no token."""
    if not repo.uses_token:
        return None
    tokens = await list_for(session=session, user=user)
    if preferred:
        named = next((t for t in tokens if t.name == preferred), None)
        if named is None:
            raise NotFound(f"You have no token named {preferred!r}.", hint="See 'taskspace token list'.",
                           field="token")
        if matches(named, repo):
            return named
    for wanted in (repo.host_port, repo.host):
        for token in tokens:
            if token.host == wanted:
                return token
    return None


def credential(vault: Vault, token: GitToken) -> GitCredential:
    return GitCredential(username=token.username, password=vault.open(_sealed(token), context=_context(
        token.user_id, token.name)))


def _sealed(token: GitToken) -> Sealed:
    return Sealed(ciphertext=token.ciphertext, wrapped_key=token.wrapped_key, key_id=token.key_id)


def rewrap(vault: Vault, token: GitToken) -> bool:
    """Re-wrap the token's data key under the vault's current key; False if it already is."""
    if token.key_id == vault.key_id:
        return False
    sealed = vault.rewrap(_sealed(token), context=_context(token.user_id, token.name))
    token.wrapped_key, token.key_id = sealed.wrapped_key, sealed.key_id
    return True


def mark_used(token: GitToken) -> None:
    token.last_used_at = utcnow()
