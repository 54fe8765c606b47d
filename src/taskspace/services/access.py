"""Entering a workspace: an interactive terminal, and its forwarded ports behind the server's
proxy. Both are for the workspace's owner only (``Access.ENTER``)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from taskspace.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from taskspace.core.roles import Access
from taskspace.core.states import State
from taskspace.db.models import User, Workspace
from taskspace.plugins.backends.base import SupportsPorts, SupportsTerminal, Terminal
from taskspace.services import activity, workspaces
from taskspace.services.lifecycle.plan import ticket_env
from taskspace.services.runtime import Runtime

#: How long a forwarded port's address stays valid once handed out.
PORT_LINK_SECONDS = 12 * 3600


def _ready(ws: Workspace) -> None:
    if ws.state != State.READY.value:
        raise Conflict(f"The workspace is {ws.state}, not ready.", hint="Start it first.")


async def open_terminal(rt: Runtime, *, user: User, ref: str, cols: int, rows: int) -> tuple[Workspace, Terminal]:
    """A login shell as the workspace's user, in /workspace. Opening it and typing in it mark
    the workspace active (``services.activity``)."""
    if not isinstance(rt.backend, SupportsTerminal):
        raise Conflict("This backend has no terminals.", hint="Use 'taskspace ws exec'.")
    async with rt.readers() as session:
        ws = await workspaces.find(session=session, user=user, ref=ref, access=Access.ENTER)
        plan, key = ws.plan or {}, ws.ticket.key
    _ready(ws)
    env = (plan.get("environment") or {})
    terminal = await rt.backend.open_terminal(
        ws.id, user=env.get("remote_user") or env.get("container_user"), workdir="/workspace",
        env={**(env.get("remote_env") or {}), **ticket_env(key, ws.branch)},
        cols=max(10, min(cols, 500)), rows=max(5, min(rows, 300)))
    await activity.mark_active(rt, ws.id, "terminal")
    return ws, activity.ActiveTerminal(rt, ws.id, terminal)


def _serializer(rt: Runtime) -> URLSafeTimedSerializer:
    ring = rt.vault.keyring
    secret = hmac.new(ring.keys[ring.current], b"taskspace port links", hashlib.sha256).hexdigest()
    return URLSafeTimedSerializer(secret, salt="ports")


async def port_link(rt: Runtime, *, user: User, ref: str, port: int) -> str:
    """A signed path for one forwarded port of the caller's ready workspace. The proxied app
    runs sandboxed (an opaque origin), so its own requests carry this path, not the session."""
    async with rt.readers() as session:
        ws = await workspaces.find(session=session, user=user, ref=ref, access=Access.ENTER)
    _ready(ws)
    forwarded = [p for p in (ws.environment or {}).get("forward_ports", []) if isinstance(p, int)]
    if port not in forwarded:
        raise NotFound(f"Port {port} is not forwarded by this workspace.",
                       hint="List it in forwardPorts of devcontainer.json." if forwarded else
                       "Add forwardPorts to devcontainer.json.")
    return "/p/" + _serializer(rt).dumps({"w": ws.id, "p": port, "u": user.id}) + "/"


@dataclass
class PortTarget:
    workspace_id: str
    host: str
    port: int


async def resolve_port_link(rt: Runtime, *, token: str) -> PortTarget:
    """Where a signed port path leads, if it is genuine, recent, and its owner still may enter.
    Each request through it marks the workspace active (``services.activity`` keeps the pace)."""
    try:
        data = _serializer(rt).loads(token, max_age=PORT_LINK_SECONDS)
    except SignatureExpired:
        raise Forbidden("This port link has expired.", hint="Open the port again from the workspace page.") from None
    except BadSignature:
        raise Forbidden("This port link is not valid.", hint="Open the port from the workspace page.") from None
    if not isinstance(data, dict) or not {"w", "p", "u"} <= set(data):
        raise InvalidInput("This port link is malformed.", hint="Open the port from the workspace page.")
    async with rt.readers() as session:
        ws = await session.get(Workspace, str(data["w"]))
        user = await session.get(User, int(data["u"]))
    if ws is None or user is None or user.disabled_at is not None or ws.owner_id != user.id:
        raise Forbidden("This port link no longer works.", hint="Open the port from the workspace page.")
    _ready(ws)
    if not isinstance(rt.backend, SupportsPorts):
        raise Conflict("This backend cannot forward ports.", hint="Reach the port from the workspace's terminal.")
    host, port = await rt.backend.port_address(ws.id, int(data["p"]))
    await activity.mark_active(rt, ws.id, "port")
    return PortTarget(workspace_id=ws.id, host=host, port=port)
