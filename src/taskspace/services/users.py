"""Accounts: local (argon2 password hashes) or OpenID Connect; personal API tokens (shown once,
stored as SHA-256, revocable); browser sessions (server-side, revocable at logout)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from taskspace.core.errors import Conflict, InvalidInput, NotFound, Unauthorized
from taskspace.core.roles import Role, require_admin
from taskspace.db.models import ApiToken, User, WebSession, utcnow
from taskspace.services import git_tokens

TOKEN_PREFIX = "tsp_"
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
EMAIL_RE = re.compile(r"^[^@\s<>\x00-\x1f\x7f]+@[^@\s<>\x00-\x1f\x7f]+\Z")
MIN_PASSWORD = 10
_LAST_USED_RESOLUTION = timedelta(minutes=1)
_hasher = PasswordHasher()
#: Verified against when the user does not exist, so both cases take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def validate_username(name: str) -> str:
    if not USERNAME_RE.match(name or ""):
        raise InvalidInput(f"{name!r} is not a valid user name.",
                           hint="Use up to 64 lower-case letters, digits, '.', '_' and '-'.", field="username")
    return name


def validate_profile(email: str | None, display_name: str | None) -> None:
    """The e-mail address and display name become the author of the workspace's commits (git config)."""
    if email and not EMAIL_RE.match(email):
        raise InvalidInput(f"{email!r} is not an e-mail address.",
                           hint="Give one address such as ada@example.com, or leave it out.", field="email")
    if display_name and any(ord(c) < 0x20 or ord(c) == 0x7F for c in display_name):
        raise InvalidInput("The display name contains a line break or control character.",
                           hint="Give the name on one line.", field="display_name")


def validate_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"The password is shorter than {MIN_PASSWORD} characters.",
                           hint="Use a longer passphrase.", field="password")
    if len(password) > 1024:
        raise InvalidInput("The password is longer than 1024 characters.", hint="Use a shorter passphrase.",
                           field="password")
    return password


# Users -----------------------------------------------------------------------------------------


async def ensure_admin(*, session: AsyncSession, username: str = "admin") -> tuple[User, str | None]:
    """The first admin, created with a random password on an empty database. Returns it and
    that password (None when the admin existed already)."""
    count = await session.scalar(select(func.count()).select_from(User))
    if count:
        admin = await session.scalar(select(User).where(User.role == Role.ADMIN).order_by(User.id))
        if admin is not None:
            return admin, None
    password = secrets.token_urlsafe(12)
    user = User(username=username, display_name="Administrator", role=Role.ADMIN.value,
                password_hash=_hasher.hash(password))
    session.add(user)
    await session.flush()
    return user, password


async def create_user(*, session: AsyncSession, actor: User, username: str, role: str = Role.DEVELOPER.value,
                      password: str | None = None, email: str | None = None,
                      display_name: str | None = None) -> User:
    require_admin(actor.role, "create users")
    validate_username(username)
    validate_profile(email, display_name)
    if role not in set(Role):
        raise InvalidInput(f"{role!r} is not a role.", hint="Roles: developer, reviewer, admin.", field="role")
    if await get_by_username(session=session, username=username) is not None:
        raise Conflict(f"A user named {username!r} exists already.", hint="Choose another name.")
    user = User(username=username, role=role, email=email, display_name=display_name,
                password_hash=_hasher.hash(validate_password(password)) if password else None)
    session.add(user)
    await session.flush()
    return user


EMAIL_RE = re.compile(r"^[^@\s<>\"']{1,64}@[A-Za-z0-9.-]{1,253}\Z")
ACCOUNT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+:-]{0,199}\Z")


async def update_user(*, session: AsyncSession, actor: User, username: str, role: str | None = None,
                      disabled: bool | None = None, password: str | None = None, email: str | None = None,
                      tracker_accounts: list[str] | None = None) -> User:
    require_admin(actor.role, "change users")
    user = await get_by_username(session=session, username=username)
    if user is None:
        raise NotFound(f"No user named {username!r}.", hint="See the list of users.")
    if role is not None:
        if role not in set(Role):
            raise InvalidInput(f"{role!r} is not a role.", hint="Roles: developer, reviewer, admin.", field="role")
        if user.id == actor.id and role != Role.ADMIN:
            raise Conflict("You cannot take the admin role from yourself.", hint="Ask another admin.")
        user.role = role
    if disabled is not None:
        if user.id == actor.id and disabled:
            raise Conflict("You cannot disable yourself.", hint="Ask another admin.")
        user.disabled_at = utcnow() if disabled else None
        if disabled:  # sign them out everywhere
            for web in await session.scalars(select(WebSession).where(WebSession.user_id == user.id)):
                await session.delete(web)
    if password is not None:
        user.password_hash = _hasher.hash(validate_password(password))
    if email is not None:
        if email and not EMAIL_RE.match(email):
            raise InvalidInput(f"{email!r} is not an email address.", field="email")
        user.email = email or None
    if tracker_accounts is not None:
        bad = [a for a in tracker_accounts if not ACCOUNT_RE.match(a)]
        if bad:
            raise InvalidInput(f"{bad[0]!r} is not a tracker account.", hint="Give account ids or logins.",
                               field="tracker_accounts")
        user.tracker_accounts = list(dict.fromkeys(tracker_accounts))
    return user


async def list_users(*, session: AsyncSession, actor: User) -> list[User]:
    require_admin(actor.role, "list users")
    return list(await session.scalars(select(User).order_by(User.username)))


async def get_by_username(*, session: AsyncSession, username: str) -> User | None:
    return await session.scalar(select(User).where(User.username == username))


async def change_own_password(*, session: AsyncSession, user: User, current: str, new: str) -> None:
    _verify(user, current)
    user.password_hash = _hasher.hash(validate_password(new))


def _verify(user: User | None, password: str) -> None:
    try:
        _hasher.verify(user.password_hash if user and user.password_hash else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        raise Unauthorized("Wrong user name or password.", hint="Check both, or sign in with single sign-on.") \
            from None
    if user is None or not user.password_hash:
        raise Unauthorized("Wrong user name or password.", hint="Check both, or sign in with single sign-on.")


# Signing in ------------------------------------------------------------------------------------


async def login(*, session: AsyncSession, username: str, password: str) -> User:
    """The user, when the password is theirs. The same error, in the same time, for an unknown
    user, a wrong password and a disabled account."""
    user = await get_by_username(session=session, username=(username or "").strip().lower())
    _verify(user, password or "")
    assert user is not None
    if user.disabled_at is not None:
        raise Unauthorized("Wrong user name or password.", hint="Check both, or sign in with single sign-on.")
    if _hasher.check_needs_rehash(user.password_hash or ""):
        user.password_hash = _hasher.hash(password)
    user.last_login_at = utcnow()
    return user


@dataclass(frozen=True)
class OidcMapping:
    username_claim: str = "preferred_username"
    email_claim: str = "email"
    name_claim: str = "name"
    groups_claim: str = "groups"
    role_by_group: tuple[tuple[str, str], ...] = ()
    default_role: str = Role.DEVELOPER.value


def _role_from_groups(groups: Any, mapping: OidcMapping) -> str | None:
    if not isinstance(groups, list):
        return None
    rank = {Role.DEVELOPER.value: 0, Role.REVIEWER.value: 1, Role.ADMIN.value: 2}
    roles = [role for group, role in mapping.role_by_group if group in groups]
    return max(roles, key=lambda r: rank.get(r, -1)) if roles else None


async def login_oidc(*, session: AsyncSession, issuer: str, claims: dict[str, Any], mapping: OidcMapping) -> User:
    """The user of an ID token's claims, created on first sign-in. With a group-to-role
    mapping, the role follows the groups at every sign-in."""
    subject = str(claims.get("sub") or "")
    if not subject:
        raise Unauthorized("The identity provider sent no subject.", hint="Check the provider's client settings.")
    user = await session.scalar(select(User).where(User.oidc_issuer == issuer, User.oidc_subject == subject))
    role = _role_from_groups(claims.get(mapping.groups_claim), mapping)
    if user is None:
        wanted = str(claims.get(mapping.username_claim) or claims.get(mapping.email_claim) or subject)
        username = re.sub(r"[^a-z0-9._-]+", "-", wanted.lower().split("@")[0]).strip("-._")[:64] or "user"
        if await get_by_username(session=session, username=username) is not None:
            username = f"{username[:55]}-{secrets.token_hex(3)}"
        user = User(username=username, oidc_issuer=issuer, oidc_subject=subject,
                    role=role or mapping.default_role)
        session.add(user)
    elif role is not None:
        user.role = role
    if user.disabled_at is not None:
        raise Unauthorized("This account is disabled.", hint="Ask an admin of this taskspace.")
    user.email = claims.get(mapping.email_claim) or user.email
    user.display_name = claims.get(mapping.name_claim) or user.display_name
    user.last_login_at = utcnow()
    await session.flush()
    return user


# Browser sessions ------------------------------------------------------------------------------


async def start_session(*, session: AsyncSession, user: User, lifetime: timedelta,
                        source: str | None) -> tuple[str, WebSession]:
    """A new session; returns the cookie value (shown to the browser only) and the row."""
    cookie = secrets.token_urlsafe(32)
    web = WebSession(id=_hash(cookie), user_id=user.id, csrf_token=secrets.token_urlsafe(24),
                     expires_at=utcnow() + lifetime, source=source)
    session.add(web)
    await session.flush()
    return cookie, web


def use_worth_recording(last: datetime | None) -> bool:
    """Whether a use now should be written: a session's last sight (and sliding expiry) and a
    token's last use are kept to the minute, so most requests only read them."""
    return last is None or utcnow() - last > _LAST_USED_RESOLUTION


async def resume_session(*, session: AsyncSession, cookie: str | None, lifetime: timedelta,
                         touch: bool = True) -> WebSession | None:
    """The live session of a cookie, or None. With ``touch`` (a write transaction) its expiry
    slides on when ``use_worth_recording``; without, nothing changes (a read-only session does)."""
    if not cookie:
        return None
    web = await session.get(WebSession, _hash(cookie))
    now = utcnow()
    if web is None or web.expires_at <= now or web.user.disabled_at is not None:
        return None
    if touch and use_worth_recording(web.last_seen_at):
        web.last_seen_at = now
        web.expires_at = now + lifetime
    return web


async def end_session(*, session: AsyncSession, cookie: str | None) -> None:
    if cookie:
        web = await session.get(WebSession, _hash(cookie))
        if web is not None:
            await session.delete(web)


def csrf_matches(web: WebSession, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(web.csrf_token, token or "")


# API tokens ------------------------------------------------------------------------------------


async def create_api_token(*, session: AsyncSession, user: User, name: str) -> tuple[str, ApiToken]:
    """A personal API token: the secret is returned once and stored only as a hash."""
    name = (name or "").strip()
    if not name or len(name) > 64 or any(ord(c) < 0x20 for c in name):
        raise InvalidInput("Give the token a name of 1 to 64 characters, on one line.",
                           hint="Name it after where it is used, e.g. 'laptop' or 'ci'.", field="name")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, name=name, token_hash=_hash(token))
    session.add(row)
    await session.flush()
    return token, row


async def list_api_tokens(*, session: AsyncSession, user: User) -> list[ApiToken]:
    return list(await session.scalars(select(ApiToken).where(ApiToken.user_id == user.id,
                                                             ApiToken.revoked_at.is_(None)).order_by(ApiToken.id)))


async def revoke_api_token(*, session: AsyncSession, user: User, token_id: int) -> None:
    row = await session.get(ApiToken, token_id)
    if row is None or row.user_id != user.id or row.revoked_at is not None:
        raise NotFound(f"You have no API token {token_id}.", hint="See your API tokens.")
    row.revoked_at = utcnow()


async def api_token(*, session: AsyncSession, token: str | None) -> ApiToken:
    """The live API token ``token`` with its user; changes nothing (see ``authenticate``).
    Raises Unauthorized when it is missing, unknown, revoked, or its user is disabled."""
    if not token:
        raise Unauthorized("This request carries no API token.",
                           hint="Send 'Authorization: Bearer <token>' (the CLI reads TASKSPACE_TOKEN "
                                "or the admin token in the data dir), or sign in.")
    row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == _hash(token)))
    if row is None or row.revoked_at is not None or row.user.disabled_at is not None:
        raise Unauthorized("The API token is unknown or revoked.",
                           hint="Check TASKSPACE_TOKEN, or create a new token on your profile.")
    return row


async def authenticate(*, session: AsyncSession, token: str | None) -> User:
    """The user of a live API token, recording its use when ``use_worth_recording``."""
    row = await api_token(session=session, token=token)
    if use_worth_recording(row.last_used_at):
        row.last_used_at = utcnow()
    return row.user


# Profile ---------------------------------------------------------------------------------------


@dataclass
class Profile:
    user: User
    git_tokens: list[Any]
    api_tokens: list[ApiToken]


async def profile(*, session: AsyncSession, user: User) -> Profile:
    return Profile(user=user, git_tokens=await git_tokens.list_for(session=session, user=user),
                   api_tokens=await list_api_tokens(session=session, user=user))


async def profile_with_new_token(*, session: AsyncSession, user: User, name: str) -> tuple[Profile, str]:
    token, _ = await create_api_token(session=session, user=user, name=name)
    return await profile(session=session, user=user), token


async def set_notifications(*, session: AsyncSession, user: User, email: bool, webhook_url: str | None) -> None:
    """Which notifications reach the user: email (to their address) and a JSON webhook."""
    if webhook_url:
        url = webhook_url.strip()
        if not re.match(r"^https?://[^\s/]+(/\S*)?$", url) or len(url) > 2048:
            raise InvalidInput("The webhook address is not an http(s) URL.",
                               hint="Give e.g. https://hooks.example.com/T000/B000.", field="webhook_url")
        webhook_url = url
    row = await session.get(User, user.id)
    assert row is not None
    row.notify_email, row.notify_webhook_url = email, webhook_url
