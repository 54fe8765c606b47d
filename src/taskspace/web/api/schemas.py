"""Request and response bodies of the REST API (the OpenAPI schema is the contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from taskspace.core.environment import EnvironmentSummary
from taskspace.db.models import Event, GitToken, Project, Ticket, Workspace
from taskspace.services import tracker_links, workspaces
from taskspace.services.pool import PoolStatus
from taskspace.services.workspaces import WorkspaceSummary


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    code: str
    message: str
    hint: str | None = None
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorOut


# Projects ------------------------------------------------------------------------------------


class ProjectIn(Body):
    name: str = Field(description="Project name, e.g. payments", max_length=64)
    repos: list[str] = Field(description="Repository URLs (or NAME=URL); the first is primary", max_length=20)
    key: str | None = Field(None, description="Ticket key prefix; derived from the name by default", max_length=10)
    dockerfile: str = Field("Dockerfile", description="Dockerfile path in the primary repository", max_length=500)
    purge_on: list[str] | None = Field(None, description="Statuses that end a workspace (besides the category)",
                                       max_length=20)
    purge_on_category: str | None = Field("done", description="Status category that ends a workspace (null: none)")
    grace: str = Field("0", description="Grace period before a purge, e.g. 24h", max_length=20)
    cpus: float | None = Field(None, description="CPUs per container (default: the server's)")
    memory: str | None = Field(None, description="Memory per container, e.g. 4g (default: the server's)",
                               max_length=20)
    pids: int | None = Field(None, description="Process limit per container (default: the server's)")
    tracker: str = Field("builtin", description="Where tickets come from: builtin, jira, gitlab or github",
                         max_length=40)
    tracker_config: dict[str, Any] = Field(default_factory=dict, description="The tracker's settings; "
                                           "credentials are stored sealed and never returned")
    max_age: str | None = Field(None, description="Purge workspaces older than this, e.g. 30d (default: never)",
                                max_length=20)
    idle_stop: str | None = Field(None, description="Stop workspaces unused for this long, e.g. 8h (default: never)",
                                  max_length=20)
    warm_pool: int = Field(0, description="Prebuilt workspaces kept ready for launches to claim (0 to 10)")


class ProjectPatchIn(Body):
    purge_on: list[str] | None = Field(None, max_length=20)
    purge_on_category: str | None = Field(None, description="todo, in_progress, done, or 'none'")
    grace: str | None = Field(None, max_length=20)
    max_age: str | None = Field(None, description="e.g. 30d, or 'never'", max_length=20)
    idle_stop: str | None = Field(None, description="e.g. 8h, or 'never'", max_length=20)
    cpus: float | None = None
    memory: str | None = Field(None, max_length=20)
    pids: int | None = None
    tracker: str | None = Field(None, max_length=40)
    tracker_config: dict[str, Any] | None = None
    warm_pool: int | None = Field(None, description="Prebuilt workspaces kept ready (0 to 10)")


class RepoOut(BaseModel):
    name: str
    url: str
    default_branch: str | None
    primary: bool


class PoolOut(BaseModel):
    """The project's warm pool now: spares ready to be claimed, being built, failed."""

    size: int
    ready: int
    building: int
    failed: int
    error: str | None = Field(None, description="Why a spare failed, when one did")


class ProjectOut(BaseModel):
    key: str
    name: str
    tracker: str
    dockerfile: str
    purge_on_category: str | None
    purge_on_statuses: list[str]
    purge_grace_seconds: int
    cpus: float | None
    memory_bytes: int | None
    pids_limit: int | None
    max_age_seconds: int | None
    idle_stop_seconds: int | None
    tracker_config: dict[str, Any]
    tracker_synced_at: datetime | None
    tracker_stale_since: datetime | None
    tracker_error: str | None
    warm_pool: int
    pool: PoolOut | None = Field(None, description="The warm pool's state (absent right after a change)")
    repos: list[RepoOut]

    @classmethod
    def of(cls, p: Project, pool: PoolStatus | None = None) -> ProjectOut:
        return cls(key=p.key, name=p.name, tracker=p.tracker, dockerfile=p.dockerfile,
                   purge_on_category=p.purge_on_category, purge_on_statuses=list(p.purge_on_statuses or []),
                   purge_grace_seconds=p.purge_grace_seconds, cpus=p.cpus, memory_bytes=p.memory_bytes,
                   pids_limit=p.pids_limit, max_age_seconds=p.max_age_seconds, idle_stop_seconds=p.idle_stop_seconds,
                   tracker_config=tracker_links.describe(p), tracker_synced_at=p.tracker_synced_at,
                   tracker_stale_since=p.tracker_stale_since, tracker_error=p.tracker_error,
                   warm_pool=p.warm_pool,
                   pool=PoolOut(size=pool.size, ready=pool.ready, building=pool.building, failed=pool.failed,
                                error=pool.last_error) if pool else None,
                   repos=[RepoOut(name=r.name, url=r.url, default_branch=r.default_branch, primary=r.is_primary)
                          for r in p.repos])


# Git tokens ----------------------------------------------------------------------------------


class GitTokenIn(Body):
    name: str = Field(max_length=64)
    host: str = Field(description="Git host as in repository URLs, e.g. github.com", max_length=260)
    username: str | None = Field(None, description="Defaults to x-access-token", max_length=200)
    secret: SecretStr = Field(description="The token; never returned by the API")


class GitTokenOut(BaseModel):
    name: str
    host: str
    username: str
    fingerprint: str
    created_at: datetime
    last_used_at: datetime | None

    @classmethod
    def of(cls, t: GitToken) -> GitTokenOut:
        return cls(name=t.name, host=t.host, username=t.username, fingerprint=t.fingerprint,
                   created_at=t.created_at, last_used_at=t.last_used_at)


# Tickets -------------------------------------------------------------------------------------


class TicketIn(Body):
    project: str = Field(max_length=64)
    title: str = Field(max_length=500)
    description: str = Field("", max_length=65536)
    assignee: str | None = Field(None, max_length=200)


class TicketMoveIn(Body):
    status: str = Field(max_length=100)


class TicketOut(BaseModel):
    key: str
    project: str
    title: str
    description: str
    status: str
    status_category: str
    assignee: str | None
    created_at: datetime
    updated_at: datetime
    status_changed_at: datetime

    @classmethod
    def of(cls, t: Ticket) -> TicketOut:
        return cls(key=t.key, project=t.project.name, title=t.title, description=t.description, status=t.status,
                   status_category=t.status_category, assignee=t.assignee, created_at=t.created_at,
                   updated_at=t.updated_at, status_changed_at=t.status_changed_at)


# Workspaces ----------------------------------------------------------------------------------


class LaunchIn(Body):
    key: str = Field(description="Ticket key", max_length=40)
    repos: list[str] | None = Field(None, description="Repository names (default: all; the primary always)",
                                    max_length=20)
    source_branch: str | None = Field(None, description="Branch to start from, for every repository",
                                      max_length=255)
    source_branches: dict[str, str] = Field(default_factory=dict, description="Per repository",
                                            max_length=20)
    target_branch: str | None = Field(None, description="Branch the work is meant to merge into", max_length=255)
    target_branches: dict[str, str] = Field(default_factory=dict, max_length=20)
    token: str | None = Field(None, description="Name of the git token to use", max_length=64)


class PurgeIn(Body):
    discard_unpushed: bool = Field(False, description="Skip the rescue of unpushed work (it is lost)")


class WorkspaceRepoOut(BaseModel):
    name: str
    url: str
    primary: bool
    branch: str
    source_branch: str | None
    target_branch: str | None
    base_sha: str | None
    branch_existed: bool | None
    path: str


class WorkspaceOut(BaseModel):
    id: str
    key: str
    title: str
    project: str
    owner: str
    state: str
    desired: str
    step: str | None
    failure_step: str | None
    failure_reason: str | None
    branch: str
    url: str
    image: str | None
    environment: EnvironmentSummary | None
    repos: list[WorkspaceRepoOut]
    startup_status: str | None
    startup_detail: str | None
    created_at: datetime
    ready_at: datetime | None
    ready_seconds: float | None
    last_started_at: datetime | None
    purge_due_at: datetime | None
    purged_at: datetime | None
    rescue: list[dict[str, Any]]

    @classmethod
    def of(cls, w: Workspace | WorkspaceSummary, base_url: str) -> WorkspaceOut:
        if isinstance(w, Workspace):
            w = workspaces.summary(w)
        return cls(
            id=w.id, key=w.key, title=w.title, project=w.project, owner=w.owner, state=w.state, desired=w.desired,
            step=w.step, failure_step=w.failure_step, failure_reason=w.failure_reason, branch=w.branch,
            url=f"{base_url}/api/v1/workspaces/{w.id}", image=w.image,
            environment=EnvironmentSummary.model_validate(w.environment) if w.environment else None,
            repos=[WorkspaceRepoOut(name=r.name, url=r.url, primary=r.is_primary, branch=w.branch,
                                    source_branch=r.source_branch, target_branch=r.target_branch,
                                    base_sha=r.base_sha, branch_existed=r.branch_existed,
                                    path=f"/workspace/{r.name}") for r in w.repos],
            startup_status=w.startup_status, startup_detail=w.startup_detail, created_at=w.created_at,
            ready_at=w.ready_at, ready_seconds=w.ready_seconds, last_started_at=w.last_started_at,
            purge_due_at=w.purge_due_at, purged_at=w.purged_at, rescue=list(w.rescue or []))


class WorkspacePageOut(BaseModel):
    """A page of workspaces, newest first."""

    items: list[WorkspaceOut]
    total: int = Field(description="Workspaces matching the query, on every page")
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last page")
    next: str | None = Field(description="The next page's URL (this query with that cursor); null on the last page")


class EventOut(BaseModel):
    id: int
    at: datetime
    actor: str
    kind: str
    from_state: str | None
    to_state: str | None
    step: str | None
    status: str | None
    reason: str | None
    duration_ms: int | None
    data: dict[str, Any]

    @classmethod
    def of(cls, e: Event) -> EventOut:
        return cls(id=e.id, at=e.at, actor=e.actor, kind=e.kind, from_state=e.from_state, to_state=e.to_state,
                   step=e.step, status=e.status, reason=e.reason, duration_ms=e.duration_ms, data=e.data or {})


class EventsOut(BaseModel):
    workspace: WorkspaceOut
    events: list[EventOut]


class ExecIn(Body):
    argv: list[str] = Field(description="Command and arguments", min_length=1, max_length=256)


class ReconcileOut(BaseModel):
    workspaces: int
    jobs_started: list[str]
    restarted: list[str]
    purges_requested: list[str]
    stops_requested: list[str]
    orphans: list[str]
    orphans_removed: list[str]
    seconds: float


class UserOut(BaseModel):
    username: str
    display_name: str | None
    email: str | None
    role: str


class UserIn(Body):
    username: str = Field(max_length=64)
    role: str = Field("developer", description="developer, reviewer or admin")
    password: SecretStr | None = Field(None, description="For a local account; leave out for single sign-on")
    email: str | None = Field(None, max_length=254)
    display_name: str | None = Field(None, max_length=200)


class UserPatch(Body):
    role: str | None = Field(None, description="developer, reviewer or admin")
    disabled: bool | None = None
    password: SecretStr | None = None
    email: str | None = Field(None, max_length=254)
    tracker_accounts: list[str] | None = Field(None, description="This person's accounts in trackers (Jira "
                                               "account ids, GitLab/GitHub logins), for 'my tickets'",
                                               max_length=20)


class AdminUserOut(BaseModel):
    username: str
    role: str
    email: str | None
    display_name: str | None
    sso: bool
    disabled: bool
    tracker_accounts: list[str]
    created_at: datetime
    last_login_at: datetime | None


class ApiTokenIn(Body):
    name: str = Field(max_length=64)


class ApiTokenOut(BaseModel):
    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None


class ApiTokenCreated(ApiTokenOut):
    token: str = Field(description="Shown this once; store it now")


class PasswordChangeIn(Body):
    current: SecretStr
    new: SecretStr


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    source: str | None
    result: str
    status_code: int | None
