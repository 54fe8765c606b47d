from __future__ import annotations

from fastapi import APIRouter, Query

from taskspace import __version__
from taskspace.core.errors import Conflict
from taskspace.core.roles import require_admin
from taskspace.services import activity, metrics
from taskspace.web.api.deps import ReconcilerDep, RuntimeDep, UserDep
from taskspace.web.api.schemas import ReconcileOut

router = APIRouter(tags=["system"])


@router.get("/health")
async def health(rt: RuntimeDep) -> dict[str, str]:
    """Liveness, the version, and the installation id that labels this server's engine resources."""
    return {"status": "ok", "version": __version__, "installation": rt.installation}


@router.post("/reconcile", response_model=ReconcileOut)
async def reconcile(user: UserDep, reconciler: ReconcilerDep, rt: RuntimeDep,
                    sample: bool = Query(False, description="Also sample the running workspaces' resource "
                                         "use now."),
                    check_activity: bool = Query(False, alias="activity", description="Also look for IDEs "
                                                 "attached to the running workspaces now.")) -> ReconcileOut:
    """Run one reconcile pass now and wait for the work it starts (admins). With
    `?sample=true`, then also take a resource sample of the running workspaces (CPU, memory,
    disk: the dashboard and /metrics) without waiting for `TASKSPACE_METRICS_INTERVAL`; the CPU
    use of a workspace needs two samples. With `?activity=true`, also look for attached IDEs
    (usage analytics' last activity) without waiting for `TASKSPACE_ACTIVITY_CHECK_INTERVAL`."""
    require_admin(user.role, "run the reconciler")
    if not await reconciler.lead():
        raise Conflict("Another server holds the reconciler lease.", hint="Run this against that server.")
    report = await reconciler.run_pass(wait=True)
    if sample:
        await metrics.sample(rt, force=True)
    if check_activity:
        await activity.check_ides(rt, force=True)
    return ReconcileOut(**report.__dict__)
