"""The application factory. The lifespan builds the runtime and starts the reconciler."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import logging
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskspace import __version__
from taskspace.core.errors import TaskspaceError
from taskspace.reconciler.loop import Reconciler
from taskspace.services import redaction
from taskspace.services.notifications import NotificationSender
from taskspace.services.runtime import Runtime, build_runtime, open_vault
from taskspace.settings import Settings
from taskspace.web.api import analytics, hooks, policy, projects, system, tickets, tokens, users, workspaces
from taskspace.web.audit import AuditMiddleware
from taskspace.web.ui import auth, dashboard, pages, terminal
from taskspace.web.ui.pages import SignInRequired, sign_in_redirect

log = logging.getLogger(__name__)
MAX_BODY = 1024 * 1024
#: Worker threads for blocking calls (the engine's SDK): most of them wait, few compute.
IO_THREADS = 64


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
        # Read the body here (at most ``limit`` bytes): a body sent without a length (chunked)
        # that turns out too large gets the 413, not the error of whatever would read it first.
        received: deque[Message] = deque()
        seen, more = 0, True
        while more:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.limit:
                await _too_large(self.limit)(scope, receive, send)
                return
            more = message.get("more_body", False)

        async def replay() -> Message:
            return received.popleft() if received else await receive()

        await self.app(scope, replay, send)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(status_code=413, content={"error": {
        "code": "too_large", "message": f"The request body is larger than {limit // 1024} KiB.",
        "hint": "Send less data in one request."}})


_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
_HTTP_ERRORS = {
    400: ("The request body could not be read (it is not JSON, or nested too deeply).",
          "Send a JSON object as described in the API reference at /docs."),
    404: ("There is no API route {method} {path}.", "See the API reference at /docs."),
    405: ("{path} does not take {method}.", "See the API reference at /docs for the methods it takes."),
}


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    parts = []
    first_field = None
    for error in exc.errors()[:5]:
        if error.get("type") == "json_invalid":  # its location is a character offset, not a field
            reason = (error.get("ctx") or {}).get("error", "")
            first_field = first_field or "body"
            parts.append(f"the body is not valid JSON ({reason})" if reason else "the body is not valid JSON")
            continue
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
        sender = NotificationSender(rt)
        app.state.rt, app.state.reconciler = rt, reconciler
        if runtime is None:
            # This process serves this app: what start-up loaded (modules, the ORM's mappers,
            # the templates) lives as long as it, so full collections need not walk it again
            # and again — each would pause every request for a tenth of a second.
            gc.collect()
            gc.freeze()
            # Engine calls run in worker threads and mostly wait (an image build for minutes, a
            # stats call for the engine's next sample); the default pool (CPUs + 4 threads)
            # would let a few builds hold up every other workspace's engine call.
            asyncio.get_running_loop().set_default_executor(
                ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="taskspace-io"))
        if run_reconciler:
            reconciler.start()
            sender.start()
        try:
            yield
        finally:
            await sender.close()
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

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """Errors raised by the framework itself (no such route, wrong method, an unreadable
        body) get the API's error body under /api/; pages keep the default."""
        if not request.url.path.startswith("/api/"):
            return await http_exception_handler(request, exc)
        path = request.url.path if len(request.url.path) <= 200 else request.url.path[:197] + "..."
        known = _HTTP_ERRORS.get(exc.status_code)
        message, hint = ((known[0].format(method=request.method, path=path), known[1]) if known
                         else (str(exc.detail), "See the API reference at /docs."))
        return JSONResponse(status_code=exc.status_code, headers=getattr(exc, "headers", None), content={
            "error": {"code": _HTTP_CODES.get(exc.status_code, "http_error"), "message": message, "hint": hint}})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"error": {
            "code": "internal", "message": f"Internal error: {type(exc).__name__}.",
            "hint": "This is a bug in taskspace; the server log has the details."}})

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        return sign_in_redirect(request, exc)

    for router in (system.router, users.router, projects.router, tokens.router, tickets.router, workspaces.router,
                   policy.router):
        app.include_router(router, prefix="/api/v1")
    app.include_router(analytics.router, prefix="/api/v1")
    app.include_router(hooks.router)
    app.include_router(auth.router)
    app.include_router(dashboard.router)
    app.include_router(terminal.router)
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
