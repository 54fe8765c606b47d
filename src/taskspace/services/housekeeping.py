"""Housekeeping: the disk space check, and the retention of old files and records.

The reconciler calls :func:`run` on every turn of its loop; a round runs once per
``housekeeping_interval`` (the time of the last round is kept in the ``Meta`` table, so restarts
and other replicas keep the pace). A round:

* measures the data dir's file system and the engine's storage (:func:`disk_usage`); while one
  is fuller than ``disk_alert_percent`` it logs a warning, and it tells the admins
  (``notifications.enqueue_admins(kind="disk")``) once per crossing: the alert is remembered in
  ``Meta`` and re-armed only once that storage went back to the threshold or below;
* deletes what is older than ``retention_days``: build log files, events of purged workspaces,
  tracker webhook deliveries, and notifications sent (or given up). Nothing of a live workspace
  goes: not its events, not its notifications, not the build log of its image.

Each part fails on its own: a failure is logged and the other part still runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

from sqlalchemy import ColumnElement, delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute

from taskspace.core.errors import BackendError
from taskspace.core.states import State
from taskspace.db.engine import transaction
from taskspace.db.models import (
    NOT_PURGED,
    Base,
    Event,
    Meta,
    Notification,
    WebhookDelivery,
    Workspace,
    utcnow,
)
from taskspace.plugins.backends.base import SupportsStoragePath
from taskspace.services import notifications, rounds
from taskspace.services.lifecycle.prepare import build_log_path
from taskspace.services.runtime import Runtime

log = logging.getLogger(__name__)

#: Meta key holding the time of the last round (ISO 8601, UTC).
RAN_AT = "housekeeping_ran_at"
#: Meta key, per storage, present while that storage is over the threshold (alert sent).
ALERT_KEY = "disk_alert:{name}"
#: Seconds the engine may take to say where its storage is.
ENGINE_TIMEOUT = 10.0
#: Rows deleted per transaction, so no delete holds the database for long.
DELETE_BATCH = 5000


@dataclass(frozen=True)
class DiskUsage:
    """One file system the platform fills: the data dir's (``name="data"``) or the engine's
    storage (``"engine"``; left out when it is the same file system as the data dir)."""

    name: str
    label: str  # for people: "data directory", "container engine storage"
    path: str
    total_bytes: int
    used_bytes: int
    free_bytes: int  # available to unprivileged users, as df counts it
    threshold_percent: float

    @property
    def used_percent(self) -> float:
        """Used space as df reports it: used / (used + available)."""
        room = self.used_bytes + self.free_bytes
        return 100.0 * self.used_bytes / room if room else 0.0

    @property
    def over_threshold(self) -> bool:
        return self.used_percent > self.threshold_percent


@dataclass
class HousekeepingReport:
    disks: list[DiskUsage] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)  # names of storages whose alert was raised now
    build_logs: int = 0
    events: int = 0
    deliveries: int = 0
    notifications: int = 0


async def run(rt: Runtime, *, force: bool = False) -> HousekeepingReport | None:
    """One round if ``housekeeping_interval`` has passed since the last (or ``force``); None when
    it was not due. Cheap when not due: one primary-key read. The round is claimed in a short
    transaction first, so two processes do not both run it."""
    interval = timedelta(seconds=rt.settings.housekeeping_interval)
    if not force and not await rounds.due(rt, RAN_AT, interval):
        return None
    try:
        async with transaction(rt.sessions) as session:
            if not await rounds.claim(session, RAN_AT, interval=interval, force=force):
                return None
    except IntegrityError:  # another process recorded its first round at the same moment
        return None

    report = HousekeepingReport()
    try:
        report.disks = await disk_usage(rt)
        report.alerts = await check_disk(rt, report.disks)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("the disk space check failed; trying again next round")
    try:
        await prune(rt, report)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("deleting old logs and records failed; trying again next round")
    return report


# Disk space -------------------------------------------------------------------------------------


def _measure(path: Path) -> tuple[int, int, int, int] | None:
    """(total, used, free, device) of the file system holding ``path``; None if unreadable."""
    try:
        usage = shutil.disk_usage(path)
        return usage.total, usage.used, usage.free, os.stat(path).st_dev
    except OSError:
        return None


async def _engine_storage(rt: Runtime) -> Path | None:
    """The engine's storage when the backend says where it is and that path is on this host."""
    if not issubclass(type(rt.backend), SupportsStoragePath):
        return None
    backend = cast(SupportsStoragePath, rt.backend)
    try:
        path = await asyncio.wait_for(backend.storage_path(), ENGINE_TIMEOUT)
    except (BackendError, TimeoutError) as exc:
        log.debug("the engine did not say where its storage is: %s", exc)
        return None
    if not path:
        return None
    exists = await asyncio.to_thread(os.path.isdir, path)
    return Path(path) if exists else None


async def disk_usage(rt: Runtime) -> list[DiskUsage]:
    """The file systems the platform fills, measured now: the data dir's, and the engine's
    storage when the backend says where it is (``SupportsStoragePath``), that path exists on
    this host, and it is another file system. For the dashboard and the disk alert."""
    threshold = rt.settings.disk_alert_percent
    found: list[DiskUsage] = []
    data = await asyncio.to_thread(_measure, rt.settings.data_dir)
    engine_path = await _engine_storage(rt)
    engine = await asyncio.to_thread(_measure, engine_path) if engine_path else None
    same = data is not None and engine is not None and data[3] == engine[3]
    if data is not None:
        total, used, free, _ = data
        found.append(DiskUsage(
            name="data", label="data directory and container engine storage" if same else "data directory",
            path=str(rt.settings.data_dir), total_bytes=total, used_bytes=used, free_bytes=free,
            threshold_percent=threshold))
    if engine is not None and not same:
        total, used, free, _ = engine
        found.append(DiskUsage(
            name="engine", label="container engine storage", path=str(engine_path), total_bytes=total,
            used_bytes=used, free_bytes=free, threshold_percent=threshold))
    return found


async def check_disk(rt: Runtime, disks: list[DiskUsage]) -> list[str]:
    """Alert the admins about each storage over the threshold, once per crossing; re-arm those
    back at or below it. Returns the names of the storages alerted about now."""
    keys = {ALERT_KEY.format(name=d.name): d for d in disks}
    async with rt.readers() as session:
        alerted = set(await session.scalars(select(Meta.key).where(Meta.key.in_(keys))))
    raised = []
    for key, disk in keys.items():
        if disk.over_threshold:
            log.warning("the %s (%s) is %.1f%% full, over the alert threshold of %g%%: make room before "
                        "workspaces fail to build or start", disk.label, disk.path, disk.used_percent,
                        disk.threshold_percent)
        if disk.over_threshold == (key in alerted):
            continue
        try:
            async with transaction(rt.sessions) as session:
                row = await session.get(Meta, key, with_for_update=True)
                if disk.over_threshold and row is None:
                    session.add(Meta(key=key, value=utcnow().isoformat()))
                    await session.flush()
                    await notifications.enqueue_admins(
                        session, settings=rt.settings, kind="disk", bus=rt.bus,
                        context={"storage": disk.label, "path": disk.path, "used_percent": disk.used_percent,
                                 "threshold": disk.threshold_percent, "free_bytes": disk.free_bytes,
                                 "total_bytes": disk.total_bytes})
                    raised.append(disk.name)
                elif not disk.over_threshold and row is not None:
                    await session.delete(row)
                    log.info("the %s (%s) is back under the alert threshold (%.1f%% full)",
                             disk.label, disk.path, disk.used_percent)
        except IntegrityError:  # another process raised the same alert at the same moment
            continue
    return raised


# Retention --------------------------------------------------------------------------------------


def _delete_old_files(folder: Path, cutoff: datetime, keep: set[str]) -> int:
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    limit = cutoff.timestamp()
    for entry in entries:
        try:
            if entry.name in keep or not entry.is_file(follow_symlinks=False):
                continue
            if entry.stat(follow_symlinks=False).st_mtime < limit:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:  # removed by someone else meanwhile
            continue
    return removed


async def _delete_in_batches(rt: Runtime, table: type[Base], condition: ColumnElement[bool],
                             key: InstrumentedAttribute[int]) -> int:
    """Delete the rows matching ``condition`` a batch (by primary ``key``) per transaction."""
    total = 0
    while True:
        async with transaction(rt.sessions) as session:
            batch = select(key).where(condition).limit(DELETE_BATCH)
            result = await session.execute(delete(table).where(key.in_(batch)))
            count = result.rowcount or 0
        total += count
        if count < DELETE_BATCH:
            return total


def _image_refs(image: str | None, plan: object) -> set[str]:
    """The images a workspace runs: its own and its services' (from the stored plan)."""
    refs = {image} if image else set()
    if isinstance(plan, dict):
        for item in [plan.get("image"), *(s.get("image") for s in plan.get("services") or [] if isinstance(s, dict))]:
            if isinstance(item, dict) and isinstance(item.get("ref"), str):
                refs.add(item["ref"])
    return refs


async def prune(rt: Runtime, report: HousekeepingReport | None = None) -> HousekeepingReport:
    """Delete what is older than ``retention_days``; returns (or fills) the counts.

    * build log files (``logs/builds``) not modified since, except the logs of the images a live
      workspace runs (its own and its services');
    * events of purged workspaces;
    * tracker webhook deliveries (a delivery repeated after that is applied again: trackers
      retry for hours, not weeks);
    * notifications sent or given up, except those about a live workspace.
    """
    report = report or HousekeepingReport()
    settings = rt.settings
    cutoff = utcnow() - timedelta(days=settings.retention_days)
    live = select(Workspace.id).where(NOT_PURGED)

    async with rt.readers() as session:
        plans = (await session.execute(
            select(Workspace.image, Workspace.plan).where(NOT_PURGED))).all()
    keep = {build_log_path(rt, ref).name for image, plan in plans for ref in _image_refs(image, plan)}
    report.build_logs = await asyncio.to_thread(_delete_old_files, settings.logs_dir / "builds", cutoff, keep)

    purged = select(Workspace.id).where(Workspace.state == State.PURGED.value)
    report.events = await _delete_in_batches(
        rt, Event, (Event.at < cutoff) & Event.workspace_id.in_(purged), Event.id)
    report.notifications = await _delete_in_batches(
        rt, Notification,
        (Notification.created_at < cutoff)
        & or_(Notification.sent_at.is_not(None), Notification.attempts > settings.notification_retries)
        & or_(Notification.workspace_id.is_(None), Notification.workspace_id.not_in(live)),
        Notification.id)
    async with transaction(rt.sessions) as session:
        result = await session.execute(delete(WebhookDelivery).where(WebhookDelivery.received_at < cutoff))
        report.deliveries = result.rowcount or 0
    if report.build_logs or report.events or report.deliveries or report.notifications:
        log.info("retention (%g days): deleted %d build logs, %d events of purged workspaces, %d tracker "
                 "deliveries, %d notifications", settings.retention_days, report.build_logs, report.events,
                 report.deliveries, report.notifications)
    return report
