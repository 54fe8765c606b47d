"""Audit middleware: every state-changing request is recorded — who, what (the route), target
(its path parameters), source address and result — once its status is known and before the
answer goes out, so whoever reads the log next sees it."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskspace.services import audit
from taskspace.services.runtime import Runtime

log = logging.getLogger(__name__)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def client_address(scope: Scope, trusted_proxies: list[str]) -> str | None:
    client = scope.get("client")
    address = client[0] if client else None
    if address and address in trusted_proxies:
        for name, value in scope.get("headers") or []:
            if name == b"x-forwarded-for":
                first = value.decode("latin-1").split(",")[0].strip()
                try:
                    return str(ipaddress.ip_address(first))
                except ValueError:
                    return address
    return address


class AuditMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS or scope["path"].startswith("/p/"):
            # (/p/ is a workspace's own app behind the port proxy: its traffic is not ours to log)
            await self.app(scope, receive, send)
            return
        recorded = False

        async def capture(message: Message) -> None:
            nonlocal recorded
            if message["type"] == "http.response.start" and not recorded:
                recorded = True
                await self._record(scope, message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            if not recorded:  # no answer began: the request failed (or the client left)
                await self._record(scope, 500)

    async def _record(self, scope: Scope, status: int) -> None:
        rt: Runtime | None = getattr(scope.get("app").state, "rt", None) if scope.get("app") else None
        if rt is None:
            return
        state: dict[str, Any] = scope.get("state") or {}
        user = state.get("user")
        actor = user.username if user is not None else state.get("audit_actor") or "anonymous"
        route = scope.get("route")
        action = getattr(route, "name", None) or "unknown"
        params = scope.get("path_params") or {}
        target = ", ".join(f"{k}={v}" for k, v in params.items()) or None
        try:
            await audit.record(rt, actor=str(actor)[:100], action=f"{scope['method']} {action}",
                               target=target[:300] if target else None,
                               source=client_address(scope, rt.settings.trusted_proxies), status_code=status,
                               detail={"path": scope.get("path", "")[:300]})
        except Exception:  # the answer was sent; a lost audit row must not break the server
            log.exception("could not write the audit record of %s %s", scope["method"], scope.get("path"))
