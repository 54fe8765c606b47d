"""Signing in and out: a local password form, or OpenID Connect (authorization code + PKCE)."""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta
from urllib.parse import urlsplit

from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.starlette_client import OAuth
from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from joserfc.errors import JoseError

from taskspace.core.errors import TaskspaceError, Unauthorized
from taskspace.db.engine import transaction
from taskspace.db.models import User
from taskspace.services import audit, users
from taskspace.services.runtime import Runtime
from taskspace.settings import Settings
from taskspace.web.api.deps import SESSION_COOKIE, browser_session
from taskspace.web.audit import client_address
from taskspace.web.ui.templating import render

LOGIN_COOKIE = "taskspace_login"
router = APIRouter(include_in_schema=False)


def safe_next(value: str | None) -> str:
    """Only a path on this server: never an open redirect to another site."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    return "/" if parts.scheme or parts.netloc else value


def oauth_client(settings: Settings) -> OAuth | None:
    if not settings.oidc_enabled:
        return None
    oauth = OAuth()
    oauth.register(
        name="oidc", client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret.get_secret_value() if settings.oidc_client_secret else None,
        server_metadata_url=f"{settings.oidc_issuer.rstrip('/')}/.well-known/openid-configuration",  # type: ignore[union-attr]
        client_kwargs={"scope": settings.oidc_scopes, "code_challenge_method": "S256"})
    return oauth


def _mapping(settings: Settings) -> users.OidcMapping:
    return users.OidcMapping(username_claim=settings.oidc_username_claim, groups_claim=settings.oidc_groups_claim,
                             role_by_group=tuple(settings.oidc_role_map.items()),
                             default_role=settings.oidc_default_role)


async def _signed_in(request: Request, user: User, target: str) -> Response:
    rt: Runtime = request.app.state.rt
    lifetime = timedelta(hours=rt.settings.session_hours)
    async with transaction(rt.sessions) as session:
        cookie, _ = await users.start_session(session=session, user=user, lifetime=lifetime,
                                              source=client_address(request.scope, rt.settings.trusted_proxies))
    request.state.user = user
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, cookie, max_age=int(lifetime.total_seconds()), httponly=True,
                        samesite="lax", secure=rt.settings.secure_cookies, path="/")
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


def _login_page(request: Request, *, error: str | None = None, username: str = "", next_: str = "/",
                status_code: int = 200) -> Response:
    token = secrets.token_urlsafe(16)
    response = render(request, "login.html", status_code=status_code, error=error, username=username,
                      next=safe_next(next_), login_token=token, oidc=request.app.state.oauth is not None)
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", path="/login",
                        secure=request.app.state.rt.settings.secure_cookies)
    return response


@router.get("/login")
async def login_form(request: Request, next: str = "/") -> Response:
    if await browser_session(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_page(request, next_=next)


@router.post("/login")
async def login(request: Request, username: str = Form("", max_length=64), password: str = Form("", max_length=1024),
                login_token: str = Form(""), next: str = Form("/")) -> Response:
    request.state.audit_actor = username[:64] or "anonymous"
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, login_token):
        return _login_page(request, error="The sign-in form expired. Please try again.", username=username,
                           next_=next, status_code=403)
    rt: Runtime = request.app.state.rt
    try:
        async with transaction(rt.sessions) as session:
            user = await users.login(session=session, username=username, password=password)
    except Unauthorized as exc:
        return _login_page(request, error=exc.message, username=username, next_=next, status_code=401)
    return await _signed_in(request, user, safe_next(next))


@router.post("/logout")
async def logout(request: Request) -> Response:
    web = await browser_session(request)
    if web is not None:
        form = await request.form()
        if not users.csrf_matches(web, str(form.get("csrf_token") or request.headers.get("x-csrf-token") or "")):
            return RedirectResponse("/", status_code=303)
        request.state.user = web.user
        async with transaction(request.app.state.rt.sessions) as session:
            await users.end_session(session=session, cookie=request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/login/oidc")
async def login_oidc(request: Request, next: str = "/") -> Response:
    oauth: OAuth | None = request.app.state.oauth
    if oauth is None:
        return _login_page(request, error="Single sign-on is not set up here.", status_code=404)
    request.session["next"] = safe_next(next)
    redirect_uri = f"{request.app.state.rt.settings.base_url}/auth/oidc/callback"
    return await oauth.oidc.authorize_redirect(request, redirect_uri)


@router.get("/auth/oidc/callback")
async def oidc_callback(request: Request) -> Response:
    oauth: OAuth | None = request.app.state.oauth
    rt: Runtime = request.app.state.rt
    if oauth is None:
        return _login_page(request, error="Single sign-on is not set up here.", status_code=404)
    try:
        token = await oauth.oidc.authorize_access_token(request)
        claims = dict(token.get("userinfo") or {})
        issuer = str(claims.get("iss") or rt.settings.oidc_issuer)
        async with transaction(rt.sessions) as session:
            user = await users.login_oidc(session=session, issuer=issuer, claims=claims,
                                          mapping=_mapping(rt.settings))
    except (OAuthError, JoseError, TaskspaceError) as exc:
        if isinstance(exc, TaskspaceError):
            message = exc.message
        elif isinstance(exc, JoseError):  # the ID token's signature or claims did not check out
            message = f"Single sign-on failed: the identity provider's answer did not verify ({exc.error})."
        else:
            message = f"Single sign-on failed: {exc.description or exc.error}."
        await audit.record(rt, actor="sso", action="GET oidc_callback", target=None, status_code=401,
                           source=client_address(request.scope, rt.settings.trusted_proxies),
                           detail={"reason": message[:300]})
        return _login_page(request, error=message, status_code=401)
    # A GET that signs in: the audit middleware records only unsafe methods, so record it here.
    await audit.record(rt, actor=user.username, action="GET oidc_callback", target=None, status_code=303,
                       source=client_address(request.scope, rt.settings.trusted_proxies))
    return await _signed_in(request, user, safe_next(request.session.pop("next", "/")))
