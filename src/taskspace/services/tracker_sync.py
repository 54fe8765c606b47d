"""Keeping the platform's copy of external tickets current: incremental polling and webhooks.

A tracker that cannot be read marks its project's tickets stale; the purge policy decides
nothing on stale data. A webhook delivery is applied once: its id is recorded with the change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from taskspace.core.errors import InvalidInput, NotFound, TaskspaceError
from taskspace.core.naming import TICKET_KEY_RE
from taskspace.core.roles import require_admin
from taskspace.core.tickets import StatusCategory, TicketData
from taskspace.db.engine import transaction
from taskspace.db.models import Project, Ticket, User, WebhookDelivery, utcnow
from taskspace.plugins.trackers.base import (
    SupportsFetch,
    SupportsWebhooks,
    TrackerUnavailable,
    WebhookRejected,
)
from taskspace.plugins.trackers.base import (
    WebhookDelivery as Delivery,
)
from taskspace.services import projects, tracker_links
from taskspace.services import tickets as ticket_rules
from taskspace.services.runtime import Runtime

log = logging.getLogger(__name__)
#: Reach a little before the last sync: trackers' search indexes lag behind their writes.
OVERLAP = timedelta(minutes=2)
DELETED = "Deleted"


@dataclass
class SyncResult:
    project: str
    tickets: int = 0
    changed: int = 0
    error: str | None = None


@dataclass
class Accounts:
    """Who a tracker's assignee is in taskspace: by tracker account, email, then user name."""

    by_account: dict[str, str] = field(default_factory=dict)
    by_email: dict[str, str] = field(default_factory=dict)
    usernames: set[str] = field(default_factory=set)

    @classmethod
    async def load(cls, session: AsyncSession) -> Accounts:
        accounts = cls()
        for user in await session.scalars(select(User).where(User.disabled_at.is_(None))):
            accounts.usernames.add(user.username)
            if user.email:
                accounts.by_email[user.email.lower()] = user.username
            for account in user.tracker_accounts or []:
                accounts.by_account[str(account)] = user.username
        return accounts

    def user_of(self, data: TicketData) -> str | None:
        for who in data.assignees:
            for value in (who.id, who.username):
                if value and value in self.by_account:
                    return self.by_account[value]
            if who.email and who.email.lower() in self.by_email:
                return self.by_email[who.email.lower()]
            if who.username and who.username in self.usernames:
                return who.username
        raw = data.assignee
        if raw and ticket_rules.ASSIGNEE_RE.match(raw):
            return self.by_account.get(raw) or raw
        return None


async def apply_tickets(session: AsyncSession, project: Project, found: list[TicketData],
                        deleted: list[str] = ()) -> int:  # type: ignore[assignment]
    """Upsert the project's copy of ``found`` tickets; returns how many changed."""
    accounts = await Accounts.load(session)
    keys = [t.key for t in found] + list(deleted)
    existing = {t.key: t for t in await session.scalars(select(Ticket).where(Ticket.key.in_(keys)))} if keys else {}
    changed = 0
    for data in found:
        if not TICKET_KEY_RE.match(data.key):
            log.warning("project %s: skipping ticket with an unusable key %r", project.name, data.key)
            continue
        ticket = existing.get(data.key)
        if ticket is not None and ticket.project_id != project.id:
            log.warning("ticket %s belongs to project %s already; project %s links the same tickets",
                        data.key, ticket.project_id, project.name)
            continue
        values = {
            "title": (data.title or data.key)[: ticket_rules.MAX_TITLE].replace("\n", " ").replace("\r", " "),
            "description": data.description[: ticket_rules.MAX_DESCRIPTION].replace("\x00", ""),
            "status": data.status[:100], "status_category": data.status_category.value,
            "assignee": accounts.user_of(data), "url": data.url, "reference": data.reference,
            "external_id": data.external_id, "updated_at": data.updated_at,
        }
        if ticket is None:
            session.add(Ticket(project_id=project.id, key=data.key, created_at=data.created_at,
                               status_changed_at=data.updated_at, **values))
            changed += 1
            continue
        if data.updated_at < ticket.updated_at:
            # Older than what we have (a poll answered from a lagging index after a webhook).
            continue
        if ticket.status != values["status"]:
            ticket.status_changed_at = data.updated_at
        if any(getattr(ticket, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(ticket, k, v)
            changed += 1
    for key in deleted:
        ticket = existing.get(key)
        if ticket is not None and ticket.project_id == project.id and ticket.status != DELETED:
            ticket.status, ticket.status_category = DELETED, StatusCategory.DONE.value
            ticket.status_changed_at = ticket.updated_at = utcnow()
            changed += 1
    await session.flush()
    return changed


async def sync_project(rt: Runtime, project_id: int, *, full: bool = False) -> SyncResult:
    """Fetch what changed since the last sync (with paging and back-off in the plugin) and apply
    it. On failure the project is marked stale, with the reason."""
    async with rt.readers() as session:
        project = await session.get(Project, project_id)
        if project is None:
            raise NotFound(f"Project {project_id} does not exist.", hint="It was removed; nothing to sync.")
        name, since = project.name, None if full or project.tracker_synced_at is None else \
            project.tracker_synced_at - OVERLAP
        tracker = tracker_links.tracker_for(project, rt.vault)
    started = utcnow()
    result = SyncResult(project=name)
    try:
        found = await tracker.fetch_updated(since)
    except TaskspaceError as exc:
        result.error = f"{exc.message} {exc.hint or ''}".strip()
        async with transaction(rt.sessions) as session:
            row = await session.get(Project, project_id)
            if row is not None:
                row.tracker_stale_since = row.tracker_stale_since or started
                row.tracker_error = result.error[:2000]
        log.warning("tracker of project %s unavailable, its tickets are stale: %s", name, result.error)
        return result
    finally:
        await tracker.close()
    async with transaction(rt.sessions) as session:
        row = await session.get(Project, project_id)
        if row is None:
            return result
        result.tickets, result.changed = len(found), await apply_tickets(session, row, found)
        row.tracker_synced_at, row.tracker_stale_since, row.tracker_error = started, None, None
    if result.changed:
        rt.bus.wake_reconciler()
    return result


async def sync_due(rt: Runtime, *, interval: float, limit: int = 4) -> list[SyncResult]:
    """Sync every external project whose last sync is older than ``interval`` seconds."""
    now = utcnow()
    async with rt.readers() as session:
        projects = [p for p in await session.scalars(select(Project)) if tracker_links.is_external(p)
                    and (p.tracker_synced_at is None or now - p.tracker_synced_at >= timedelta(seconds=interval))]
    slots = asyncio.Semaphore(limit)

    async def one(project_id: int) -> SyncResult:
        async with slots:
            return await sync_project(rt, project_id)

    return list(await asyncio.gather(*(one(p.id) for p in projects)))


@dataclass
class WebhookOutcome:
    project: str
    duplicate: bool
    changed: int


async def handle_webhook(rt: Runtime, *, tracker: str, project_ref: str | None, headers: Mapping[str, str],
                         body: bytes, query: Mapping[str, str]) -> WebhookOutcome:
    """Verify a delivery against the projects linked to ``tracker`` (or the one named), apply
    it once, and let the reconciler apply the purge policy."""
    async with rt.readers() as session:
        stmt = select(Project).where(Project.tracker == tracker)
        if project_ref:
            stmt = stmt.where((Project.name == project_ref) | (Project.key == project_ref.upper()))
        candidates = list(await session.scalars(stmt))
        plugins = [(p.id, p.name, tracker_links.tracker_for(p, rt.vault)) for p in candidates]
    if not plugins:
        raise NotFound(f"No project is linked to a {tracker} tracker{' named ' + project_ref if project_ref else ''}.",
                       hint="Check the webhook's address: /hooks/<tracker>[/<project>].")
    delivery: Delivery | None = None
    rejected: WebhookRejected | None = None
    chosen = None
    for project_id, name, plugin in plugins:
        if not isinstance(plugin, SupportsWebhooks):
            continue
        try:
            delivery = plugin.parse_webhook(headers, body, query)
        except WebhookRejected as exc:
            rejected = exc
            continue
        chosen = (project_id, name, plugin)
        break
    if chosen is None or delivery is None:
        for _, _, plugin in plugins:
            await plugin.close()
        raise rejected or InvalidInput(f"The {tracker} tracker takes no webhooks.",
                                       hint="Point the webhook at /hooks/jira, /hooks/gitlab or /hooks/github.")
    project_id, name, plugin = chosen
    try:
        found = list(delivery.tickets)
        if delivery.refetch and isinstance(plugin, SupportsFetch):
            try:
                found += await plugin.fetch(delivery.refetch)
            except TrackerUnavailable as exc:  # the next sync brings them
                log.warning("webhook of %s: could not fetch %s: %s", name, delivery.refetch, exc.message)
    finally:
        for _, _, each in plugins:
            await each.close()
    try:
        async with transaction(rt.sessions) as session:
            session.add(WebhookDelivery(tracker=tracker, delivery_id=delivery.delivery_id[:200],
                                        project_id=project_id))
            await session.flush()
            project = await session.get(Project, project_id)
            assert project is not None
            changed = await apply_tickets(session, project, found, delivery.deleted)
    except IntegrityError:
        return WebhookOutcome(project=name, duplicate=True, changed=0)
    if changed:
        rt.bus.wake_reconciler()
    return WebhookOutcome(project=name, duplicate=False, changed=changed)



async def sync_now(rt: Runtime, *, user: User, ref: str) -> Project:
    """Sync the project's tickets from its tracker now (admins); the project as it is after."""
    require_admin(user.role, "sync projects")
    async with rt.readers() as session:
        project = await projects.get(session=session, ref=ref)
    if not tracker_links.is_external(project):
        raise InvalidInput(f"Project {project.name} uses the built-in board: there is nothing to sync.",
                           hint="Link it to a tracker first (taskspace project set --tracker).")
    await sync_project(rt, project.id, full=True)
    async with rt.readers() as session:
        return await projects.get(session=session, ref=ref)
