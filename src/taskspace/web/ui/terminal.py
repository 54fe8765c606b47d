"""The browser terminal (xterm.js over a WebSocket) and the forwarded-port proxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from taskspace.core.errors import TaskspaceError
from taskspace.core.roles import Access
from taskspace.services import access, audit, workspaces
from taskspace.services.runtime import Runtime
from taskspace.web.api.deps import browser_session
from taskspace.web.audit import client_address
from taskspace.web.ui.pages import PageUser
from taskspace.web.ui.templating import render

router = APIRouter(include_in_schema=False)
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length", "cookie"}
#: The proxied app is the workspace owner's code: it runs in a sandbox (an opaque origin), so
#: it can neither read taskspace's pages nor use the session cookie.
SANDBOX = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"


@router.get("/w/{ref}/terminal")
async def terminal_page(request: Request, ref: str, user: PageUser) -> Response:
    async with request.app.state.rt.readers() as session:
        ws = await workspaces.find(session=session, user=user, ref=ref, access=Access.ENTER)
    return render(request, "terminal.html", ref=ws.id, key=ws.ticket.key)


def _same_origin(websocket: WebSocket, base_url: str) -> bool:
    """Browsers send Origin on WebSockets; another site's page must not open a shell here."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return False
    host = websocket.headers.get("host", "")
    parsed = urlsplit(origin)
    return parsed.netloc == host or origin.rstrip("/") == base_url


@router.websocket("/w/{ref}/terminal/ws")
async def terminal_socket(websocket: WebSocket, ref: str, cols: int = 80, rows: int = 24) -> None:
    rt: Runtime = websocket.app.state.rt
    web = await browser_session(websocket)  # type: ignore[arg-type]
    if web is None or not _same_origin(websocket, rt.settings.base_url):
        await websocket.close(code=4401)
        return
    try:
        ws, terminal = await access.open_terminal(rt, user=web.user, ref=ref, cols=cols, rows=rows)
    except TaskspaceError as exc:
        await websocket.accept()
        await websocket.send_text(json.dumps({"error": exc.message, "hint": exc.hint}))
        await websocket.close(code=4403)
        return
    await audit.record(rt, actor=web.user.username, action="WS terminal", target=f"ref={ws.id}",
                       source=client_address(websocket.scope, rt.settings.trusted_proxies), status_code=101)
    await websocket.accept()

    async def output() -> None:
        while data := await terminal.read():
            await websocket.send_bytes(data)
        await websocket.close(code=1000)

    pump = asyncio.create_task(output())
    try:
        while True:
            message = json.loads(await websocket.receive_text())
            if message.get("type") == "input":
                await terminal.write(str(message.get("data", "")).encode())
            elif message.get("type") == "resize":
                await terminal.resize(int(message.get("cols", 80)), int(message.get("rows", 24)))
    except (WebSocketDisconnect, ValueError, TypeError, RuntimeError):
        pass
    finally:
        pump.cancel()
        await terminal.close()
        with contextlib.suppress(asyncio.CancelledError):
            await pump


@router.get("/w/{ref}/ports/{port}/")
async def open_port(request: Request, ref: str, port: int, user: PageUser) -> Response:
    return RedirectResponse(await access.port_link(request.app.state.rt, user=user, ref=ref, port=port),
                            status_code=303)


@router.api_route("/p/{token}/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
async def proxy(request: Request, token: str, path: str) -> Response:
    rt: Runtime = request.app.state.rt
    target = await access.resolve_port_link(rt, token=token)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    url = f"http://{target.host}:{target.port}/{path}"
    client = httpx.AsyncClient(timeout=httpx.Timeout(60, connect=5), follow_redirects=False)
    try:
        upstream = await client.send(client.build_request(request.method, url, params=request.query_params,
                                                          headers=headers, content=request.stream()), stream=True)
    except httpx.HTTPError as exc:
        await client.aclose()
        return Response(f"Nothing answers on port {target.port} of the workspace ({type(exc).__name__}).",
                        status_code=502, media_type="text/plain", headers={"Content-Security-Policy": SANDBOX})
    prefix = f"/p/{token}"
    out_headers = {k: v for k, v in upstream.headers.items()
                   if k.lower() not in HOP_BY_HOP | {"set-cookie", "content-security-policy", "content-encoding"}}
    location = upstream.headers.get("location")
    if location and location.startswith("/") and not location.startswith("//"):
        out_headers["location"] = prefix + location
    out_headers["content-security-policy"] = SANDBOX
    out_headers["x-content-type-options"] = "nosniff"

    async def body() -> object:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await upstream.aclose()
            await client.aclose()

    if upstream.headers.get("content-encoding"):
        out_headers["content-encoding"] = upstream.headers["content-encoding"]
    return StreamingResponse(body(), status_code=upstream.status_code, headers=out_headers)  # type: ignore[arg-type]
