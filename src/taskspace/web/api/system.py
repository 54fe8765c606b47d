from __future__ import annotations

from fastapi import APIRouter, Query

from taskspace import __version__
from taskspace.core.errors import Conflict
from taskspace.core.roles import require_admin
from taskspace.services import metrics
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
                                         "use now.")) -> ReconcileOut:
    """Run one reconcile pass now and wait for the work it starts (admins). With
    `?sample=true`, then also take a resource sample of the running workspaces (CPU, memory,
    disk: the dashboard and /metrics) without waiting for `TASKSPACE_METRICS_INTERVAL`; the CPU
    use of a workspace needs two samples."""
    require_admin(user.role, "run the reconciler")
    if not await reconciler.lead():
        raise Conflict("Another server holds the reconciler lease.", hint="Run this against that server.")
    report = await reconciler.run_pass(wait=True)
    if sample:
        await metrics.sample(rt, force=True)
    return ReconcileOut(**report.__dict__)
