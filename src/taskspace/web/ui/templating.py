"""Templates: autoescaped everywhere (ticket text comes from trackers and is untrusted)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import nh3
from fastapi import Request
from fastapi.templating import Jinja2Templates
from markdown_it import MarkdownIt
from markupsafe import Markup
from starlette.responses import HTMLResponse

from taskspace import __version__
from taskspace.core.sizes import format_size
from taskspace.services import workspace_pages
from taskspace.services.board import Card

# Templates ship with the package: compiled once, never looked for on disk again.
templates = Jinja2Templates(env=jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True, auto_reload=False))
templates.env.globals["version"] = __version__
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def markdown(text: str | None) -> Markup:
    """Tracker text as HTML: raw HTML in it stays text, and the result is sanitized again."""
    rendered = _markdown.render(text or "")
    return Markup(nh3.clean(rendered, link_rel="noopener noreferrer nofollow",
                            url_schemes={"http", "https", "mailto"}))


def ago(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    seconds = int((datetime.now(UTC) - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return "just now"


#: Board cards whose HTML is kept. A card's HTML depends on the card alone (every value it shows
#: is one of its fields, its age in days included) and on its column's category, so what is kept
#: is never out of date. Rendering the 80 cards of a board was a third of the page's CPU; a card
#: rendered anew costs a fifth more than inline in the page, one already seen a fortieth.
BOARD_CARDS_KEPT = 4096


@lru_cache(maxsize=BOARD_CARDS_KEPT)
def board_card(card: Card, category: str) -> Markup:
    """The HTML of one card of the board (the macro in board_card.html)."""
    # A macro rather than a template of its own: rendering a template starts with a new context
    # built from the globals, which costs more than the card.
    macro = templates.get_template("board_card.html").module.board_card  # type: ignore[attr-defined]
    return Markup(macro(card, category))


templates.env.globals["board_card"] = board_card
templates.env.globals["steps_of"] = workspace_pages.progress_steps
templates.env.filters["markdown"] = markdown
templates.env.filters["ago"] = ago
templates.env.filters["size"] = lambda n: format_size(n) if n is not None else "-"
templates.env.filters["seconds"] = lambda s: f"{s:.1f}s" if s is not None else "-"


#: Pages run only their own scripts; no other site may frame them.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
                                "base-uri 'none'; form-action 'self'; object-src 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    web = getattr(request.state, "web_session", None)
    context.setdefault("user", getattr(request.state, "user", None) or (web.user if web else None))
    context.setdefault("csrf_token", web.csrf_token if web else "")
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response
