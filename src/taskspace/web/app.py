"""The application factory. The lifespan builds the runtime and starts the reconciler."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskspace import __version__
from taskspace.core.errors import TaskspaceError
from taskspace.reconciler.loop import Reconciler
from taskspace.services import redaction
from taskspace.services.runtime import Runtime, build_runtime, open_vault
from taskspace.settings import Settings
from taskspace.web.api import projects, system, tickets, tokens, users, workspaces
from taskspace.web.audit import AuditMiddleware
from taskspace.web.ui import auth, pages
from taskspace.web.ui.pages import SignInRequired, sign_in_redirect

log = logging.getLogger(__name__)
MAX_BODY = 1024 * 1024


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes before anything reads them whole."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _too_large(self.limit)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await _too_large(self.limit)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(status_code=413, content={"error": {
        "code": "too_large", "message": f"The request body is larger than {limit // 1024} KiB.",
        "hint": "Send less data in one request."}})


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    parts = []
    first_field = None
    for error in exc.errors()[:5]:
        loc = [str(p) for p in error.get("loc", ()) if p not in {"body", "query", "path"}]
        field = ".".join(loc) or "body"
        first_field = first_field or field
        parts.append(f"{field}: {error.get('msg', 'invalid')}")
    return "The request is not valid: " + "; ".join(parts) + ".", first_field


def create_app(settings: Settings, *, runtime: Runtime | None = None, run_reconciler: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = runtime or await build_runtime(settings)
        await redaction.refresh(rt)
        rt.redactor.install()
        reconciler = Reconciler(rt)
        app.state.rt, app.state.reconciler = rt, reconciler
        if run_reconciler:
            reconciler.start()
        try:
            yield
        finally:
            await reconciler.close()
            if runtime is None:
                await rt.close()

    app = FastAPI(title="taskspace", version=__version__, lifespan=lifespan,
                  description="Developer workspaces from tickets. All routes need `Authorization: Bearer <token>` "
                              "except /api/v1/health.")

    @app.exception_handler(TaskspaceError)
    async def _domain_error(request: Request, exc: TaskspaceError) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"error": exc.to_dict()})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = _validation_message(exc)
        body = {"code": "invalid_input", "message": message,
                "hint": "Check the request against the API reference at /docs."}
        if field:
            body["field"] = field
        return JSONResponse(status_code=422, content={"error": body})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"error": {
            "code": "internal", "message": f"Internal error: {type(exc).__name__}.",
            "hint": "This is a bug in taskspace; the server log has the details."}})

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        return sign_in_redirect(request, exc)

    for router in (system.router, users.router, projects.router, tokens.router, tickets.router, workspaces.router):
        app.include_router(router, prefix="/api/v1")
    app.include_router(auth.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=str(Path(pages.__file__).parent / "static")), name="static")
    app.state.oauth = auth.oauth_client(settings)
    # Holds only the OpenID Connect state and nonce between the redirect and the callback.
    app.add_middleware(SessionMiddleware, secret_key=_state_cookie_key(settings), session_cookie="taskspace_oidc",
                       max_age=600, same_site="lax", https_only=settings.secure_cookies)
    app.add_middleware(AuditMiddleware)
    app.add_middleware(BodyLimit)
    return app


def _state_cookie_key(settings: Settings) -> str:
    """The same on every replica: derived from the vault's current key."""
    ring = open_vault(settings).keyring
    return hmac.new(ring.keys[ring.current], b"taskspace oidc state cookie", hashlib.sha256).hexdigest()
