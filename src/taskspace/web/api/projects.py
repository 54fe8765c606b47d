from __future__ import annotations

from fastapi import APIRouter, status

from taskspace.core.durations import parse_duration
from taskspace.services import pool, projects, tracker_sync
from taskspace.web.api.deps import ReaderDep, RuntimeDep, SessionDep, UserDep
from taskspace.web.api.schemas import ProjectIn, ProjectOut, ProjectPatchIn

router = APIRouter(prefix="/projects", tags=["projects"])


def _optional(value: str | None, field: str) -> float | None:
    return parse_duration(value, field=field) if value not in (None, "", "never") else None


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ProjectOut)
async def create_project(body: ProjectIn, rt: RuntimeDep, user: UserDep) -> ProjectOut:
    """Register a project (admins). Every repository must answer (with your token for its host)."""
    data = projects.ProjectInput(name=body.name, repos=body.repos, key=body.key, dockerfile=body.dockerfile,
                                 purge_on=body.purge_on, purge_on_category=body.purge_on_category,
                                 grace_seconds=parse_duration(body.grace, field="grace"), cpus=body.cpus,
                                 memory=body.memory, pids=body.pids, tracker=body.tracker,
                                 tracker_config=body.tracker_config,
                                 max_age_seconds=_optional(body.max_age, "max_age"),
                                 idle_stop_seconds=_optional(body.idle_stop, "idle_stop"), warm_pool=body.warm_pool)
    return ProjectOut.of(await projects.create(rt, user=user, data=data))


@router.patch("/{ref}", response_model=ProjectOut)
async def update_project(ref: str, body: ProjectPatchIn, rt: RuntimeDep, session: SessionDep,
                         user: UserDep) -> ProjectOut:
    """Change a project's purge policy, limits, warm pool or tracker link (admins)."""
    patch = projects.ProjectPatch(
        purge_on=body.purge_on, clear_purge_category=body.purge_on_category == "none",
        purge_on_category=body.purge_on_category if body.purge_on_category != "none" else None,
        grace_seconds=_optional(body.grace, "grace"), max_age_seconds=_optional(body.max_age, "max_age"),
        idle_stop_seconds=_optional(body.idle_stop, "idle_stop"),
        clear_timers=[name for name in ("max_age", "idle_stop") if getattr(body, name) == "never"],
        cpus=body.cpus, memory=body.memory, pids=body.pids, tracker=body.tracker, tracker_config=body.tracker_config,
        warm_pool=body.warm_pool)
    return ProjectOut.of(await projects.update(session=session, vault=rt.vault, user=user, ref=ref, patch=patch))


@router.get("", response_model=list[ProjectOut])
async def list_projects(session: ReaderDep, user: UserDep) -> list[ProjectOut]:
    found = await projects.list_all(session=session)
    pools = await pool.status(session, found)
    return [ProjectOut.of(p, pools[p.id]) for p in found]


@router.get("/{ref}", response_model=ProjectOut)
async def get_project(ref: str, session: ReaderDep, user: UserDep) -> ProjectOut:
    project = await projects.get(session=session, ref=ref)
    return ProjectOut.of(project, (await pool.status(session, [project]))[project.id])


@router.post("/{ref}/sync", response_model=ProjectOut)
async def sync_project(ref: str, rt: RuntimeDep, user: UserDep) -> ProjectOut:
    """Fetch the project's tickets from its tracker now (admins). A failure marks them stale."""
    return ProjectOut.of(await tracker_sync.sync_now(rt, user=user, ref=ref))
