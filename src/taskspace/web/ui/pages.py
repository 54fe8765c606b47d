"""Pages. Each handler makes one service call; a signed-out visitor is sent to /login; a form
post must carry the session's CSRF token (field ``csrf_token`` or htmx's header)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response

from taskspace.core.errors import Forbidden, TaskspaceError
from taskspace.core.states import Desired
from taskspace.db.engine import transaction
from taskspace.db.models import User
from taskspace.services import audit, board, git_tokens, users, workspace_pages, workspaces
from taskspace.services.runtime import Runtime
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


async def form_user(request: Request) -> User:
    """The signed-in user of a form post whose CSRF token matches the session's."""
    user = await page_user(request)
    token = request.headers.get("x-csrf-token")
    if token is None:
        form = await request.form()
        token = str(form.get("csrf_token") or "")
    if not users.csrf_matches(request.state.web_session, token):
        raise Forbidden("This form is out of date or did not come from taskspace.", hint="Reload the page.")
    return user


PageUser = Annotated[User, Depends(page_user)]
FormUser = Annotated[User, Depends(form_user)]


def sign_in_redirect(request: Request, exc: SignInRequired) -> Response:
    return RedirectResponse(f"/login?next={quote(exc.next_path)}", status_code=303)


def _rt(request: Request) -> Runtime:
    return request.app.state.rt


def _htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def _back(request: Request, target: str) -> Response:
    """After a form post: htmx follows HX-Redirect, a plain form a 303."""
    if _htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


# Board and launch ------------------------------------------------------------------------------


@router.get("/")
async def board_page(request: Request, user: PageUser, project: str | None = Query(None, max_length=64),
                     q: str = Query("", max_length=200), status: str | None = Query(None, max_length=100),
                     page: int = Query(1, ge=1, le=board.MAX_PAGE)) -> Response:
    """The board; with ``status``, that column alone, a page at a time."""
    rt = _rt(request)
    async with rt.turn():
        async with rt.readers() as session:
            view = await board.board(session=session, user=user, project=project or None, text=q,
                                     status=status or None, page=page)
        return render(request, "board.html", nav="board", board=view)


@router.get("/w/{key}/launch")
async def launch_dialog(request: Request, key: str, user: PageUser) -> Response:
    options = await workspace_pages.launch_options(_rt(request), user=user, key=key)
    if options.existing is not None:
        return _back(request, f"/w/{options.ticket.key}")
    return render(request, "launch.html", options=options, errors=[], fragment=_htmx(request))


@router.post("/w/{key}/launch")
async def launch(request: Request, key: str, user: FormUser) -> Response:
    form = await request.form()
    repos = [str(v) for v in form.getlist("repo")]
    outcome = await workspace_pages.submit_launch(_rt(request), user=user, request=workspaces.LaunchRequest(
        key=key, repos=repos or None,
        source_branches={name: str(form.get(f"source:{name}")) for name in repos if form.get(f"source:{name}")},
        target_branches={name: str(form.get(f"target:{name}")) for name in repos if form.get(f"target:{name}")},
        token=str(form.get("token")) if form.get("token") else None))
    if outcome.workspace is None:
        return render(request, "launch.html", options=outcome.options, errors=outcome.errors, hint=outcome.hint,
                      fragment=_htmx(request))
    if not _htmx(request):
        return RedirectResponse(f"/w/{key}", status_code=303)
    return render(request, "progress.html", key=key.upper(), ws=outcome.workspace, events=[], fragment=True)


@router.get("/w/{ref}/progress")
async def progress(request: Request, ref: str, user: PageUser) -> Response:
    async with _rt(request).readers() as session:
        view = await workspace_pages.workspace_page(session=session, user=user, ref=ref)
    return render(request, "progress.html", key=view.workspace.ticket.key, ws=view.workspace, events=view.events,
                  fragment=True, build_tail=workspaces.build_tail(_rt(request), view.workspace))


# Workspace -------------------------------------------------------------------------------------


@router.get("/w/{ref}")
async def workspace_page(request: Request, ref: str, user: PageUser) -> Response:
    async with _rt(request).readers() as session:
        view = await workspace_pages.workspace_page(session=session, user=user, ref=ref)
    return render(request, "workspace.html", nav="board", view=view, ws=view.workspace,
                  vscode_url=workspaces.vscode_url(_rt(request), view.workspace))


@router.get("/w/{ref}/repos")
async def repo_states(request: Request, ref: str, user: PageUser, view: str = "table") -> Response:
    repos = await workspace_pages.repo_states(_rt(request), user=user, ref=ref)
    return render(request, "repo_states.html" if view == "list" else "repo_table.html", view=repos)


@router.post("/w/{ref}/{action}")
async def workspace_action(request: Request, ref: str, action: str, user: FormUser) -> Response:
    desired = {"stop": Desired.STOPPED, "start": Desired.READY, "purge": Desired.PURGED}.get(action)
    if desired is None:
        return PlainTextResponse("Unknown action.", status_code=404)
    form = await request.form()
    ws = await workspaces.request(_rt(request), user=user, ref=ref, desired=desired,
                                  discard_unpushed=form.get("discard_unpushed") == "on")
    return _back(request, f"/w/{ws.id if ws.owner_id != user.id else ref}")


@router.get("/w/{ref}/logs/{which}")
async def workspace_log(request: Request, ref: str, which: str, user: PageUser) -> Response:
    rt = _rt(request)
    async with rt.readers() as session:
        ws = await workspaces.find(session=session, user=user, ref=ref)
    try:
        text = workspaces.build_log(rt, ws) if which == "build" else await workspaces.startup_log(rt, ws)
    except TaskspaceError as exc:
        text = f"{exc.message} {exc.hint or ''}"
    return render(request, "log.html", text=text, fragment=True)


# Profile ---------------------------------------------------------------------------------------


@router.get("/me")
async def profile(request: Request, user: PageUser, created: str | None = None) -> Response:
    async with _rt(request).readers() as session:
        view = await users.profile(session=session, user=user)
    return render(request, "profile.html", nav="me", view=view, error=request.query_params.get("error"))


@router.post("/me/git-tokens")
async def add_git_token(request: Request, user: FormUser, name: str = Form(max_length=64),
                        host: str = Form(max_length=260), username: str = Form("", max_length=200),
                        secret: str = Form(max_length=4096)) -> Response:
    rt = _rt(request)
    try:
        async with transaction(rt.sessions) as session:
            await git_tokens.add(session=session, vault=rt.vault, user=user, name=name, host=host,
                                 username=username or None, secret=secret, redactor=rt.redactor)
    except TaskspaceError as exc:
        return RedirectResponse(f"/me?error={quote(exc.message)}", status_code=303)
    return RedirectResponse("/me", status_code=303)


@router.post("/me/git-tokens/{name}/remove")
async def remove_git_token(request: Request, name: str, user: FormUser) -> Response:
    async with transaction(_rt(request).sessions) as session:
        await git_tokens.remove(session=session, user=user, name=name)
    return RedirectResponse("/me", status_code=303)


@router.post("/me/api-tokens")
async def create_api_token(request: Request, user: FormUser, name: str = Form(max_length=64)) -> Response:
    """The new token is shown in this answer only (never in a URL or a later page)."""
    async with transaction(_rt(request).sessions) as session:
        view, token = await users.profile_with_new_token(session=session, user=user, name=name)
    return render(request, "profile.html", nav="me", view=view, new_token=token, new_token_name=name)


@router.post("/me/api-tokens/{token_id}/revoke")
async def revoke_api_token(request: Request, token_id: int, user: FormUser) -> Response:
    async with transaction(_rt(request).sessions) as session:
        await users.revoke_api_token(session=session, user=user, token_id=token_id)
    return RedirectResponse("/me", status_code=303)


@router.post("/me/notifications")
async def notifications(request: Request, user: FormUser, email: str = Form(""),
                        webhook_url: str = Form("", max_length=2048)) -> Response:
    try:
        async with transaction(_rt(request).sessions) as session:
            await users.set_notifications(session=session, user=user, email=email == "on",
                                          webhook_url=webhook_url or None)
    except TaskspaceError as exc:
        return RedirectResponse(f"/me?error={quote(exc.message)}", status_code=303)
    return RedirectResponse("/me", status_code=303)


@router.post("/me/password")
async def change_password(request: Request, user: FormUser, current: str = Form(max_length=1024),
                          new: str = Form(max_length=1024)) -> Response:
    try:
        async with transaction(_rt(request).sessions) as session:
            await users.change_own_password(session=session, user=user, current=current, new=new)
    except TaskspaceError as exc:
        return RedirectResponse(f"/me?error={quote(exc.message)}", status_code=303)
    return RedirectResponse("/me", status_code=303)


# Admin -----------------------------------------------------------------------------------------


@router.get("/admin/audit")
async def audit_page(request: Request, user: PageUser, actor: str = Query("", max_length=100),
                     action: str = Query("", max_length=100), result: str = Query("", max_length=20)) -> Response:
    query = audit.AuditQuery(actor=actor or None, action=action or None, result=result or None, limit=500)
    async with _rt(request).readers() as session:
        rows = await audit.search(session=session, actor=user, query=query)
    return render(request, "audit.html", nav="audit", rows=rows, query=query)

