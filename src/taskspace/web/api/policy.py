from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query
from pydantic import BaseModel

from taskspace.services import policy
from taskspace.web.api.deps import ReaderDep, UserDep

router = APIRouter(prefix="/policy", tags=["policy"])


class PreviewOut(BaseModel):
    key: str
    owner: str
    project: str
    state: str
    action: str
    at: datetime | None
    reason: str


@router.get("/preview", response_model=list[PreviewOut])
async def preview(session: ReaderDep, user: UserDep,
                  project: str | None = Query(None, max_length=64)) -> list[PreviewOut]:
    """What the next reconcile pass would do to each live workspace and why: purge, schedule a
    purge, stop (idle), hold (stale tracker data) or keep. Changes nothing."""
    rows = await policy.preview(session=session, user=user, project=project)
    return [PreviewOut(**row.__dict__) for row in rows]
