from __future__ import annotations

from fastapi import APIRouter, status

from taskspace.core.durations import parse_duration
from taskspace.services import projects
from taskspace.web.api.deps import ReaderDep, RuntimeDep, UserDep
from taskspace.web.api.schemas import ProjectIn, ProjectOut

router = APIRouter(prefix="/projects", tags=["projects"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ProjectOut)
async def create_project(body: ProjectIn, rt: RuntimeDep, user: UserDep) -> ProjectOut:
    """Register a project. Every repository must answer (with your token for its host)."""
    data = projects.ProjectInput(name=body.name, repos=body.repos, key=body.key, dockerfile=body.dockerfile,
                                 purge_on=body.purge_on, purge_on_category=body.purge_on_category,
                                 grace_seconds=parse_duration(body.grace, field="grace"), cpus=body.cpus,
                                 memory=body.memory, pids=body.pids)
    return ProjectOut.of(await projects.create(rt, user=user, data=data))


@router.get("", response_model=list[ProjectOut])
async def list_projects(session: ReaderDep, user: UserDep) -> list[ProjectOut]:
    return [ProjectOut.of(p) for p in await projects.list_all(session=session)]


@router.get("/{ref}", response_model=ProjectOut)
async def get_project(ref: str, session: ReaderDep, user: UserDep) -> ProjectOut:
    return ProjectOut.of(await projects.get(session=session, ref=ref))
