"""Tracker webhooks: /hooks/<tracker>[/<project>]. Authenticated by the tracker's shared secret
or HMAC signature (never by a session), applied once per delivery id."""

from __future__ import annotations

from fastapi import APIRouter, Request

from taskspace.services import tracker_sync
from taskspace.web.api.deps import RuntimeDep

router = APIRouter(prefix="/hooks", tags=["webhooks"])


async def _deliver(request: Request, rt: RuntimeDep, tracker: str, project: str | None) -> dict[str, object]:
    request.state.audit_actor = f"webhook:{tracker}"
    outcome = await tracker_sync.handle_webhook(rt, tracker=tracker, project_ref=project,
                                                headers=dict(request.headers), body=await request.body(),
                                                query=dict(request.query_params))
    return {"project": outcome.project, "duplicate": outcome.duplicate, "changed": outcome.changed}


@router.post("/{tracker}")
async def webhook(tracker: str, request: Request, rt: RuntimeDep) -> dict[str, object]:
    """A delivery for whichever project's secret verifies it."""
    return await _deliver(request, rt, tracker, None)


@router.post("/{tracker}/{project}")
async def project_webhook(tracker: str, project: str, request: Request, rt: RuntimeDep) -> dict[str, object]:
    """A delivery for one project (when several share a tracker)."""
    return await _deliver(request, rt, tracker, project)
