"""SQLAlchemy models. Schema changes go through Alembic migrations (db/migrations)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    literal_column,
    text,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def _utc_from_sqlite(value: str | None) -> datetime | None:
    """SQLite's text of a UTC time, as ``UTCDateTime`` stores it (naive), straight into an aware
    datetime: a listing reads hundreds of them, and ``datetime.replace(tzinfo=...)`` on each costs
    four times the parse."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value + "+00:00")
    except ValueError:  # a text with an offset of its own (not written by UTCDateTime)
        return datetime.fromisoformat(value)


class _SQLiteUTCDateTime(sqlite.DATETIME):
    def result_processor(self, dialect: Any, coltype: object) -> Callable[[str | None], datetime | None]:
        return _utc_from_sqlite


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(_SQLiteUTCDateTime(timezone=True))
        return dialect.type_descriptor(self.impl)

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None or value.tzinfo is UTC:  # PostgreSQL's, and SQLite's as read above
            return value
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}  # noqa: RUF012


class Meta(Base):
    """Installation-wide values (e.g. the installation id that labels engine resources)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("oidc_issuer", "oidc_subject"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(254))
    display_name: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20), default="developer")
    password_hash: Mapped[str | None] = mapped_column(String(200))
    oidc_issuer: Mapped[str | None] = mapped_column(String(500))
    oidc_subject: Mapped[str | None] = mapped_column(String(255))
    disabled_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]
    notify_email: Mapped[bool] = mapped_column(Boolean, default=True)
    notify_webhook_url: Mapped[str | None] = mapped_column(String(2048))
    #: Accounts of this person in trackers (Jira account ids, GitLab/GitHub logins), for "my tickets".
    tracker_accounts: Mapped[list[Any]] = mapped_column(default=list)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class WebSession(Base):
    """A signed-in browser. Only the SHA-256 of the cookie's value is stored."""

    __tablename__ = "web_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    source: Mapped[str | None] = mapped_column(String(100))
    user: Mapped[User] = relationship(lazy="joined")


class AuditEvent(Base):
    """Append-only record of every state-changing action: who, what, target, from where, result."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(100), index=True)
    action: Mapped[str] = mapped_column(String(100), index=True)
    target: Mapped[str | None] = mapped_column(String(300))
    source: Mapped[str | None] = mapped_column(String(100))
    result: Mapped[str] = mapped_column(String(40))
    status_code: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ApiToken(Base):
    """A bearer token for the API. Only its SHA-256 is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    user: Mapped[User] = relationship(lazy="joined")


class GitToken(Base):
    """A user's git credential for one host, encrypted with the server key."""

    __tablename__ = "git_tokens"
    __table_args__ = (UniqueConstraint("user_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(260))
    username: Mapped[str] = mapped_column(String(200))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(32), index=True)
    fingerprint: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(10), unique=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    tracker: Mapped[str] = mapped_column(String(40), default="builtin")
    tracker_config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dockerfile: Mapped[str] = mapped_column(String(500), default="Dockerfile")
    # No default: None means "no category ends a workspace", and the ORM would replace None by a default.
    purge_on_category: Mapped[str | None] = mapped_column(String(20))
    purge_on_statuses: Mapped[list[Any]] = mapped_column(default=list)
    purge_grace_seconds: Mapped[int] = mapped_column(Integer, default=0)
    ticket_counter: Mapped[int] = mapped_column(Integer, default=0)
    cpus: Mapped[float | None] = mapped_column(Float)
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    pids_limit: Mapped[int | None] = mapped_column(Integer)
    max_age_seconds: Mapped[int | None] = mapped_column(Integer)
    idle_stop_seconds: Mapped[int | None] = mapped_column(Integer)
    #: How many ready workspaces of the warm pool to keep for launches to claim (services.pool).
    warm_pool: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: The tracker's credentials, sealed by the vault like git tokens (the rest is tracker_config).
    tracker_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    tracker_wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    tracker_key_id: Mapped[str | None] = mapped_column(String(32))
    tracker_synced_at: Mapped[datetime | None]
    tracker_stale_since: Mapped[datetime | None]
    tracker_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    repos: Mapped[list[Repo]] = relationship(
        back_populates="project", order_by="Repo.position", cascade="all, delete-orphan", lazy="selectin"
    )


class Repo(Base):
    __tablename__ = "repos"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    url: Mapped[str] = mapped_column(String(2048))
    default_branch: Mapped[str | None] = mapped_column(String(200))
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False)
    position: Mapped[int] = mapped_column(Integer, default=0)
    project: Mapped[Project] = relationship(back_populates="repos")


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        # The board: a column of someone's tickets, newest change first, read from the index
        # (and counted from it alone).
        Index("ix_tickets_assignee_status", "assignee", "status", "status_category", "updated_at"),
        # The projects someone has tickets in: one probe per project.
        Index("ix_tickets_assignee_project_id", "assignee", "project_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(40), unique=True)
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(100))
    status_category: Mapped[str] = mapped_column(String(20), index=True)
    assignee: Mapped[str | None] = mapped_column(String(200))
    url: Mapped[str | None] = mapped_column(String(2048))
    reference: Mapped[str | None] = mapped_column(String(300))
    external_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    project: Mapped[Project] = relationship(lazy="joined")


_NOT_PURGED = "state != 'purged'"


class Workspace(Base):
    """One workspace per (ticket, owner) among those not purged; purged rows stay as history.

    A workspace of the warm pool (a *spare*) has no ticket and no owner until a launch claims it;
    ``pool_key`` says which launches it can serve (see ``services.pool``)."""

    __tablename__ = "workspaces"
    __table_args__ = (
        Index(
            "uq_workspaces_active_ticket_owner",
            "ticket_id",
            "owner_id",
            unique=True,
            sqlite_where=text(_NOT_PURGED),
            postgresql_where=text(_NOT_PURGED),
        ),
        # Listings, newest first, a page at a time: someone's, and everyone's.
        Index("ix_workspaces_owner_id_created_at", "owner_id", "created_at", "id"),
        Index("ix_workspaces_created_at", "created_at", "id"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    pool_key: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(20), index=True)
    desired: Mapped[str] = mapped_column(String(20))
    step: Mapped[str | None] = mapped_column(String(20))
    failure_step: Mapped[str | None] = mapped_column(String(20))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    branch: Mapped[str] = mapped_column(String(255))
    backend: Mapped[str] = mapped_column(String(40))
    backend_state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    plan: Mapped[dict[str, Any]] = mapped_column(default=dict)
    environment: Mapped[dict[str, Any]] = mapped_column(default=dict)
    image: Mapped[str | None] = mapped_column(String(300))
    startup_status: Mapped[str | None] = mapped_column(String(20))
    startup_detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    ready_at: Mapped[datetime | None]
    ready_seconds: Mapped[float | None] = mapped_column(Float)
    last_started_at: Mapped[datetime | None]
    first_opened_at: Mapped[datetime | None]
    last_active_at: Mapped[datetime | None]
    purge_due_at: Mapped[datetime | None]
    purge_retry_at: Mapped[datetime | None]
    purged_at: Mapped[datetime | None]
    rescue: Mapped[list[Any]] = mapped_column(default=list)
    discard_unpushed: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=0)

    ticket: Mapped[Ticket | None] = relationship(lazy="joined")
    owner: Mapped[User | None] = relationship(lazy="joined")
    repos: Mapped[list[WorkspaceRepo]] = relationship(
        order_by="WorkspaceRepo.position", cascade="all, delete-orphan", lazy="selectin"
    )

    @property
    def is_spare(self) -> bool:
        return self.ticket_id is None


#: Workspaces not purged, with the state written in the SQL as the partial unique index has it: the
#: planner sees when it prepares the statement that the index applies. With the state bound as a
#: parameter SQLite prepared the statement again at every execution (whether the index applies
#: depends on the value bound), and a generic plan of PostgreSQL leaves the index out.
NOT_PURGED = Workspace.state != literal_column("'purged'")


class WorkspaceRepo(Base):
    __tablename__ = "workspace_repos"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    repo_id: Mapped[int | None] = mapped_column(ForeignKey("repos.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(100))
    url: Mapped[str] = mapped_column(String(2048))
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False)
    position: Mapped[int] = mapped_column(Integer, default=0)
    source_branch: Mapped[str | None] = mapped_column(String(255))
    target_branch: Mapped[str | None] = mapped_column(String(255))
    branch_existed: Mapped[bool | None] = mapped_column(Boolean)
    base_sha: Mapped[str | None] = mapped_column(String(64))
    token_id: Mapped[int | None] = mapped_column(ForeignKey("git_tokens.id", ondelete="SET NULL"))


class Event(Base):
    """Append-only history of a workspace: transitions and steps."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))  # transition | step | note
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str | None] = mapped_column(String(20))
    step: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str | None] = mapped_column(String(20))  # started | ok | failed | skipped
    reason: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Build(Base):
    """An image build, keyed by its content-addressed tag. The log is a file in the data dir."""

    __tablename__ = "builds"
    tag: Mapped[str] = mapped_column(String(300), primary_key=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(20))  # building | ok | failed
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)


class MetricSample(Base):
    """Resource use of one running workspace at one time, sampled by the reconciler."""

    __tablename__ = "metric_samples"
    # (workspace, at): the latest sample of a workspace is one index lookup, whatever the history.
    __table_args__ = (Index("ix_metric_samples_workspace_id_at", "workspace_id", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    cpu_percent: Mapped[float | None] = mapped_column(Float)
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    disk_bytes: Mapped[int | None] = mapped_column(BigInteger)
    cpu_total: Mapped[int | None] = mapped_column(BigInteger)
    cpu_system: Mapped[int | None] = mapped_column(BigInteger)


class WebhookDelivery(Base):
    """A tracker delivery already applied: a repeated one (a retry) is ignored."""

    __tablename__ = "webhook_deliveries"
    tracker: Mapped[str] = mapped_column(String(40), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="SET NULL"))
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Notification(Base):
    """The outbox: a message written with the change it tells of, sent (and retried) after."""

    __tablename__ = "notifications"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    workspace_id: Mapped[str | None] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(20))  # email | webhook
    target: Mapped[str] = mapped_column(String(2048))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    sent_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)


class Orphan(Base):
    """An engine resource labelled as ours with no workspace to own it, first seen at a time."""

    __tablename__ = "orphans"
    resource: Mapped[str] = mapped_column(String(300), primary_key=True)  # kind:name
    workspace_id: Mapped[str | None] = mapped_column(String(32))
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class Lease(Base):
    """Leadership of a singleton loop (the reconciler) across processes and replicas."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]
