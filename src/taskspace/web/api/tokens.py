from __future__ import annotations

from fastapi import APIRouter, Response, status

from taskspace.services import git_tokens
from taskspace.web.api.deps import ReaderDep, RuntimeDep, SessionDep, UserDep
from taskspace.web.api.schemas import GitTokenIn, GitTokenOut

router = APIRouter(prefix="/tokens", tags=["git tokens"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=GitTokenOut)
async def add_token(body: GitTokenIn, rt: RuntimeDep, session: SessionDep, user: UserDep) -> GitTokenOut:
    """Store a git token, encrypted. It is never returned; its fingerprint identifies it."""
    token = await git_tokens.add(session=session, vault=rt.vault, user=user, name=body.name, host=body.host,
                                 username=body.username, secret=body.secret.get_secret_value(),
                                 redactor=rt.redactor)
    return GitTokenOut.of(token)


@router.get("", response_model=list[GitTokenOut])
async def list_tokens(session: ReaderDep, user: UserDep) -> list[GitTokenOut]:
    return [GitTokenOut.of(t) for t in await git_tokens.list_for(session=session, user=user)]


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_token(name: str, session: SessionDep, user: UserDep) -> Response:
    await git_tokens.remove(session=session, user=user, name=name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
