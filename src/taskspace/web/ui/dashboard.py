"""The dashboard (workspace counts, resource use, time to ready, storage), its CSV export, and
the Prometheus endpoint. Each handler makes one service call.

``/dashboard`` and ``/dashboard.csv`` are pages (the browser session, like every page);
``/metrics`` is for Prometheus: an API token (``Authorization: Bearer``) or a session of a
reviewer or admin.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from taskspace.core.sizes import format_size
from taskspace.db.models import utcnow
from taskspace.services import metrics
from taskspace.services.runtime import Runtime
from taskspace.web.api.deps import UserDep
from taskspace.web.ui.pages import PageUser
from taskspace.web.ui.templating import render

router = APIRouter(include_in_schema=False)
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def _rt(request: Request) -> Runtime:
    return request.app.state.rt


def size(value: float | None) -> str:
    return "—" if value is None else format_size(int(value))


def duration(seconds: float | None) -> str:
    """``4.2 s``, ``42 s``, ``3 min 20 s``, ``17 min``, ``3 h 5 min``, ``2 d 4 h``."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 10:
        rest = int(seconds % 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} %"


@router.get("/dashboard")
async def dashboard_page(request: Request, user: PageUser) -> Response:
    rt = _rt(request)
    async with rt.turn():
        async with rt.readers() as session:
            view = await metrics.dashboard(session=session, user=user, now=utcnow())
        return render(request, "dashboard.html", nav="dashboard", view=view, size=size, duration=duration,
                      percent=percent, interval=rt.settings.metrics_interval)


@router.get("/dashboard.csv")
async def dashboard_csv(request: Request, user: PageUser) -> Response:
    rt = _rt(request)
    async with rt.turn(), rt.readers() as session:
        text = await metrics.running_csv(session=session, user=user, now=utcnow())
    return Response(text, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": 'attachment; filename="running-workspaces.csv"', "Cache-Control": "no-store"})


@router.get("/metrics")
async def prometheus(request: Request, user: UserDep) -> Response:
    rt = _rt(request)
    async with rt.turn(), rt.readers() as session:
        text = await metrics.prometheus(session=session, user=user, now=utcnow())
    return Response(text, media_type=PROMETHEUS_TEXT, headers={"Cache-Control": "no-store"})
