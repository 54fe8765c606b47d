"""Housekeeping: the pace of its rounds, the disk figures, one alert to the admins per crossing
of the threshold, and the retention of build logs, events, tracker deliveries and
notifications — never of anything a live workspace still has."""

from __future__ import annotations

import logging
import os
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import docker
import pytest
from sqlalchemy import func, select

from taskspace.core.errors import BackendError
from taskspace.core.states import Desired, State
from taskspace.db.engine import transaction
from taskspace.db.models import (
    Event,
    Meta,
    Notification,
    Project,
    Ticket,
    User,
    WebhookDelivery,
    Workspace,
    utcnow,
)
from taskspace.plugins.backends.base import SupportsStoragePath
from taskspace.services import housekeeping
from taskspace.services.lifecycle.prepare import build_log_path
from taskspace.services.runtime import Runtime

HOOK = "http://127.0.0.1:9/team"  # never called: these tests only look at the outbox


def configure(rt: Runtime, **values: Any) -> None:
    rt.settings = rt.settings.model_copy(update=values)


async def disk_alerts(rt: Runtime) -> int:
    async with rt.readers() as session:
        return await session.scalar(select(func.count()).select_from(Notification)
                                    .where(Notification.kind == "disk")) or 0


# The pace ---------------------------------------------------------------------------------------


async def test_a_round_runs_once_per_interval(rt: Runtime) -> None:
    configure(rt, housekeeping_interval=3600)
    assert await housekeeping.run(rt) is not None
    assert await housekeeping.run(rt) is None, "not due again within the interval"
    assert await housekeeping.run(rt, force=True) is not None
    async with rt.readers() as session:
        assert await session.get(Meta, housekeeping.RAN_AT) is not None


# Disk space -------------------------------------------------------------------------------------


async def test_disk_figures_of_the_data_dir(rt: Runtime) -> None:
    disks = await housekeeping.disk_usage(rt)

    data = disks[0]
    assert data.name == "data" and data.path == str(rt.settings.data_dir)
    usage = shutil.disk_usage(rt.settings.data_dir)
    assert data.total_bytes == usage.total and 0 < data.used_bytes < data.total_bytes
    assert 0 < data.used_percent < 100
    assert data.threshold_percent == rt.settings.disk_alert_percent
    assert len({d.name for d in disks}) == len(disks)


async def test_one_alert_per_crossing(rt: Runtime, admin: User, caplog: pytest.LogCaptureFixture) -> None:
    configure(rt, notify_webhook_url=HOOK, disk_alert_percent=0)  # every file system is over 0 %
    with caplog.at_level(logging.WARNING, logger="taskspace"):
        report = await housekeeping.run(rt, force=True)
    assert report is not None
    storages = [d.name for d in report.disks]
    assert report.alerts == storages and await disk_alerts(rt) == len(storages)
    assert "over the alert threshold of 0%" in caplog.text
    async with rt.readers() as session:
        [row] = [r for r in await session.scalars(select(Notification)) if r.payload["path"] == str(rt.settings.data_dir)]
    assert row.target == HOOK and row.subject.startswith("Disk ") and row.payload["threshold"] == 0

    report = await housekeeping.run(rt, force=True)
    assert report is not None and report.alerts == [] and await disk_alerts(rt) == len(storages), "still over: quiet"

    configure(rt, disk_alert_percent=100)  # back under
    report = await housekeeping.run(rt, force=True)
    assert report is not None and report.alerts == [] and await disk_alerts(rt) == len(storages)
    async with rt.readers() as session:
        assert await session.scalar(select(func.count()).select_from(Meta).where(Meta.key.like("disk_alert:%"))) == 0

    configure(rt, disk_alert_percent=0)  # over again: a new crossing, a new alert
    report = await housekeeping.run(rt, force=True)
    assert report is not None and report.alerts == storages and await disk_alerts(rt) == 2 * len(storages)


class StorageAt(SupportsStoragePath):
    """Stands in for a backend's answer (which engine storage exists depends on the machine)."""

    def __init__(self, answer: str | Exception | None):
        self.answer = answer

    async def storage_path(self) -> str | None:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def test_engine_storage_is_measured_when_it_is_on_this_host(rt: Runtime, tmp_path: Path) -> None:
    real = rt.backend
    try:
        rt.backend = StorageAt(str(tmp_path))  # type: ignore[assignment]
        [data] = await housekeeping.disk_usage(rt)
        assert data.label == "data directory and container engine storage", "one file system: measured once"

        for answer in ("/no/such/engine/root", None, BackendError("engine unreachable")):
            rt.backend = StorageAt(answer)  # type: ignore[assignment]
            assert [d.name for d in await housekeeping.disk_usage(rt)] == ["data"]
    finally:
        rt.backend = real


@pytest.mark.docker
async def test_the_docker_backend_says_where_its_storage_is(rt: Runtime, docker_client: docker.DockerClient) -> None:
    assert isinstance(rt.backend, SupportsStoragePath)
    assert await rt.backend.storage_path() == docker_client.info()["DockerRootDir"]
    disks = await housekeeping.disk_usage(rt)
    assert disks[0].name == "data"
    if len(disks) == 2:
        assert disks[1].name == "engine" and disks[1].path == docker_client.info()["DockerRootDir"]


# Retention --------------------------------------------------------------------------------------


async def seed_workspaces(rt: Runtime, admin: User) -> dict[str, str]:
    """A purged workspace and a live one, both with events old and new."""
    old = utcnow() - timedelta(days=45)
    async with transaction(rt.sessions) as session:
        project = Project(key="HK", name="housekeeping")
        session.add(project)
        await session.flush()
        ids = {}
        for n, state in enumerate((State.PURGED, State.READY)):
            ticket = Ticket(project_id=project.id, key=f"HK-{n + 1}", title="t", status="To Do",
                            status_category="todo")
            session.add(ticket)
            await session.flush()
            ws = Workspace(id=f"ws-{state.value}", ticket_id=ticket.id, owner_id=admin.id, project_id=project.id,
                           state=state.value, desired=Desired.READY.value, branch=f"HK-{n + 1}-t", backend="docker",
                           image=f"taskspace/hk:{state.value}",
                           plan={"image": {"ref": f"taskspace/hk:{state.value}"},
                                 "services": [{"image": {"ref": f"taskspace/hk-db:{state.value}"}}]})
            session.add(ws)
            await session.flush()
            session.add_all([Event(workspace_id=ws.id, at=old, actor="t", kind="note", reason="old"),
                             Event(workspace_id=ws.id, at=utcnow(), actor="t", kind="note", reason="new")])
            ids[state.value] = ws.id
    return ids


def old_file(path: Path, days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("log\n")
    when = (utcnow() - timedelta(days=days)).timestamp()
    os.utime(path, (when, when))
    return path


async def test_retention_deletes_old_history_and_keeps_what_is_live(rt: Runtime, admin: User) -> None:
    ids = await seed_workspaces(rt, admin)
    old, now = utcnow() - timedelta(days=45), utcnow()
    logs = {
        "old": old_file(build_log_path(rt, "taskspace/gone:1"), days=45),
        "recent": old_file(build_log_path(rt, "taskspace/gone:2"), days=2),
        "live image": old_file(build_log_path(rt, "taskspace/hk:ready"), days=45),
        "live service": old_file(build_log_path(rt, "taskspace/hk-db:ready"), days=45),
        "purged image": old_file(build_log_path(rt, "taskspace/hk:purged"), days=45),
    }
    sent: dict[str, Any] = {"channel": "webhook", "target": HOOK, "subject": "s", "body": "b", "attempts": 1}
    async with transaction(rt.sessions) as session:
        session.add_all([
            WebhookDelivery(tracker="jira", delivery_id="old", received_at=old),
            WebhookDelivery(tracker="jira", delivery_id="new", received_at=now),
            Notification(kind="ready", created_at=old, sent_at=old, workspace_id=ids["purged"], **sent),
            Notification(kind="disk", created_at=old, sent_at=old, **sent),
            Notification(kind="ready", created_at=old, sent_at=old, workspace_id=ids["ready"], **sent),  # live
            Notification(kind="failed", created_at=old, sent_at=None, **{**sent, "attempts": 99}),  # given up
            Notification(kind="failed", created_at=old, sent_at=None, **sent),  # still being retried
            Notification(kind="purged", created_at=now, sent_at=now, **sent),
        ])

    report = await housekeeping.prune(rt)

    assert (report.build_logs, report.events, report.deliveries, report.notifications) == (2, 1, 1, 3)
    assert {name for name, path in logs.items() if path.exists()} == {"recent", "live image", "live service"}
    async with rt.readers() as session:
        events = {(e.workspace_id, e.reason) for e in await session.scalars(select(Event))}
        deliveries = set(await session.scalars(select(WebhookDelivery.delivery_id)))
        kept = sorted((n.kind, n.workspace_id, n.attempts) for n in await session.scalars(select(Notification)))
    assert events == {(ids["purged"], "new"), (ids["ready"], "old"), (ids["ready"], "new")}
    assert deliveries == {"new"}
    assert kept == [("failed", None, 1), ("purged", None, 1), ("ready", ids["ready"], 1)]

    again = await housekeeping.prune(rt)
    assert (again.build_logs, again.events, again.deliveries, again.notifications) == (0, 0, 0, 0)


async def test_a_failing_part_does_not_stop_the_other(rt: Runtime, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    async def broken(rt: Runtime) -> list[housekeeping.DiskUsage]:
        raise OSError("statvfs failed")

    monkeypatch.setattr(housekeeping, "disk_usage", broken)
    old_file(rt.settings.logs_dir / "builds" / "x.log", days=45)
    with caplog.at_level(logging.ERROR, logger="taskspace"):
        report = await housekeeping.run(rt, force=True)
    assert report is not None and report.build_logs == 1
    assert "the disk space check failed" in caplog.text
