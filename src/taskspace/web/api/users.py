from __future__ import annotations

from fastapi import APIRouter, Path, Query, Response, status
from fastapi.responses import PlainTextResponse

from taskspace.db.models import User
from taskspace.services import audit, users
from taskspace.web.api.deps import ReaderDep, SessionDep, UserDep
from taskspace.web.api.schemas import (
    AdminUserOut,
    ApiTokenCreated,
    ApiTokenIn,
    ApiTokenOut,
    AuditOut,
    PasswordChangeIn,
    UserIn,
    UserOut,
    UserPatch,
)

router = APIRouter(tags=["users"])
#: The largest row id the databases store (a 64-bit integer): a larger one would overflow the query.
MAX_ID = 2**63 - 1


def _admin_view(u: User) -> AdminUserOut:
    return AdminUserOut(username=u.username, role=u.role, email=u.email, display_name=u.display_name,
                        sso=u.oidc_subject is not None, disabled=u.disabled_at is not None,
                        tracker_accounts=list(u.tracker_accounts or []), created_at=u.created_at,
                        last_login_at=u.last_login_at)


@router.get("/me", response_model=UserOut)
async def me(user: UserDep) -> UserOut:
    return UserOut(username=user.username, display_name=user.display_name, email=user.email, role=user.role)


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT)
async def change_password(body: PasswordChangeIn, session: SessionDep, user: UserDep) -> Response:
    await users.change_own_password(session=session, user=user, current=body.current.get_secret_value(),
                                    new=body.new.get_secret_value())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me/api-tokens", response_model=list[ApiTokenOut])
async def list_api_tokens(session: ReaderDep, user: UserDep) -> list[ApiTokenOut]:
    return [ApiTokenOut(id=t.id, name=t.name, created_at=t.created_at, last_used_at=t.last_used_at)
            for t in await users.list_api_tokens(session=session, user=user)]


@router.post("/me/api-tokens", response_model=ApiTokenCreated, status_code=status.HTTP_201_CREATED)
async def create_api_token(body: ApiTokenIn, session: SessionDep, user: UserDep) -> ApiTokenCreated:
    """A personal API token for the CLI and scripts. The token is in this answer only."""
    token, row = await users.create_api_token(session=session, user=user, name=body.name)
    return ApiTokenCreated(id=row.id, name=row.name, created_at=row.created_at, last_used_at=None, token=token)


@router.delete("/me/api-tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_api_token(session: SessionDep, user: UserDep,
                           token_id: int = Path(ge=1, le=MAX_ID)) -> Response:
    await users.revoke_api_token(session=session, user=user, token_id=token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/users", response_model=list[AdminUserOut])
async def list_users(session: ReaderDep, user: UserDep) -> list[AdminUserOut]:
    """Everyone's accounts (admins)."""
    return [_admin_view(u) for u in await users.list_users(session=session, actor=user)]


@router.post("/users", response_model=AdminUserOut, status_code=status.HTTP_201_CREATED)
async def create_user(body: UserIn, session: SessionDep, user: UserDep) -> AdminUserOut:
    """Create an account (admins). Without a password it can only sign in with single sign-on."""
    created = await users.create_user(session=session, actor=user, username=body.username, role=body.role,
                                      password=body.password.get_secret_value() if body.password else None,
                                      email=body.email, display_name=body.display_name)
    return _admin_view(created)


@router.patch("/users/{username}", response_model=AdminUserOut)
async def update_user(username: str, body: UserPatch, session: SessionDep, user: UserDep) -> AdminUserOut:
    """Change a role, disable or enable, or set a password (admins). Disabling signs out."""
    updated = await users.update_user(session=session, actor=user, username=username, role=body.role,
                                      disabled=body.disabled,
                                      password=body.password.get_secret_value() if body.password else None,
                                      email=body.email, tracker_accounts=body.tracker_accounts)
    return _admin_view(updated)


def _query(actor: str | None, action: str | None, target: str | None, result: str | None,
           limit: int) -> audit.AuditQuery:
    return audit.AuditQuery(actor=actor, action=action, target=target, result=result, limit=limit)


@router.get("/audit", response_model=list[AuditOut], tags=["audit"])
async def audit_log(session: ReaderDep, user: UserDep, actor: str | None = Query(None, max_length=100),
                    action: str | None = Query(None, max_length=100), target: str | None = Query(None, max_length=300),
                    result: str | None = Query(None, max_length=20), limit: int = Query(500, ge=1, le=10000)
                    ) -> list[AuditOut]:
    """Every state-changing action, newest first (admins)."""
    rows = await audit.search(session=session, actor=user, query=_query(actor, action, target, result, limit))
    return [AuditOut(id=r.id, at=r.at, actor=r.actor, action=r.action, target=r.target, source=r.source,
                     result=r.result, status_code=r.status_code) for r in rows]


@router.get("/audit.csv", response_class=PlainTextResponse, tags=["audit"])
async def audit_csv(session: ReaderDep, user: UserDep, actor: str | None = Query(None, max_length=100),
                    action: str | None = Query(None, max_length=100), target: str | None = Query(None, max_length=300),
                    result: str | None = Query(None, max_length=20), limit: int = Query(10000, ge=1, le=10000)
                    ) -> PlainTextResponse:
    rows = await audit.search(session=session, actor=user, query=_query(actor, action, target, result, limit))
    return PlainTextResponse(audit.to_csv(rows), media_type="text/csv",
                             headers={"Content-Disposition": 'attachment; filename="taskspace-audit.csv"'})
