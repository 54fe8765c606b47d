"""Pages. Each handler makes one service call; a signed-out visitor is sent to /login."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from taskspace.core.errors import Unauthorized
from taskspace.db.models import User
from taskspace.web.api.deps import browser_session
from taskspace.web.ui.templating import render

router = APIRouter(include_in_schema=False)


class SignInRequired(Exception):
    def __init__(self, next_path: str):
        self.next_path = next_path


async def page_user(request: Request) -> User:
    web = await browser_session(request)
    if web is None:
        raise SignInRequired(request.url.path)
    request.state.user = web.user
    return web.user


PageUser = Annotated[User, Depends(page_user)]


def sign_in_redirect(request: Request, exc: SignInRequired) -> Response:
    return RedirectResponse(f"/login?next={exc.next_path}", status_code=303)


@router.get("/")
async def home(request: Request, user: PageUser) -> Response:
    return render(request, "home.html", nav="board")


__all__ = ["SignInRequired", "Unauthorized", "page_user", "router", "sign_in_redirect"]
