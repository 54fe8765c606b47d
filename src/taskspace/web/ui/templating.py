"""Templates: autoescaped everywhere (ticket text comes from trackers and is untrusted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from taskspace import __version__

templates = Jinja2Templates(env=jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True))
templates.env.globals["version"] = __version__


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    web = getattr(request.state, "web_session", None)
    context.setdefault("user", getattr(request.state, "user", None) or (web.user if web else None))
    context.setdefault("csrf_token", web.csrf_token if web else "")
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    return response
