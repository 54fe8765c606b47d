"""The purge policy's decisions: ticket status and grace, stale tracker data, maximum age,
idle stop."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from taskspace.services.purge_policy import PolicyInput, decide

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
BASE = PolicyInput(state="ready", desired="ready", created_at=NOW - timedelta(days=3),
                   last_started_at=NOW - timedelta(hours=2), last_active_at=None, status="In Progress",
                   status_category="in_progress", status_changed_at=NOW - timedelta(hours=1), stale_since=None,
                   purge_on_category="done", purge_on_statuses=[], grace_seconds=0)


def done(**changes: object) -> PolicyInput:
    return replace(BASE, status="Done", status_category="done", **changes)


def test_an_active_ticket_keeps_its_workspace() -> None:
    decision = decide(BASE, NOW)
    assert (decision.due_at, decision.stop, decision.held) == (None, False, None)
    assert not decision.purge_now(NOW)


def test_done_without_grace_purges_now() -> None:
    decision = decide(done(), NOW)
    assert decision.purge_now(NOW)
    assert decision.reason == "ticket is Done (category done)"


def test_the_grace_period_counts_from_the_status_change() -> None:
    decision = decide(done(grace_seconds=24 * 3600), NOW)
    assert decision.due_at == BASE.status_changed_at + timedelta(hours=24)
    assert not decision.purge_now(NOW)
    assert decision.purge_now(decision.due_at)  # type: ignore[arg-type]
    assert "grace period of 1d" in (decision.reason or "")


@pytest.mark.parametrize(("status", "category", "listed", "purged"), [
    ("In Review", "in_progress", ["In Review"], True),
    ("In Review", "in_progress", [], False),
    ("Closed", "done", [], True),
    ("Won't Do", "done", ["In Review"], True),
])
def test_listed_statuses_and_the_category(status: str, category: str, listed: list[str], purged: bool) -> None:
    decision = decide(replace(BASE, status=status, status_category=category, purge_on_statuses=listed), NOW)
    assert decision.purge_now(NOW) is purged


def test_no_category_means_only_listed_statuses_purge() -> None:
    assert decide(done(purge_on_category=None), NOW).due_at is None
    assert decide(done(purge_on_category=None, purge_on_statuses=["Done"]), NOW).purge_now(NOW)


def test_stale_tracker_data_never_decides_a_purge() -> None:
    decision = decide(done(stale_since=NOW - timedelta(minutes=5)), NOW)
    assert decision.due_at is None and not decision.purge_now(NOW)
    assert "stale data" in (decision.held or "")


def test_maximum_age_purges_whatever_the_ticket_and_even_on_stale_data() -> None:
    aged = replace(BASE, max_age_seconds=2 * 86400, stale_since=NOW - timedelta(hours=1))
    decision = decide(aged, NOW)
    assert decision.purge_now(NOW) and "maximum age of 2d" in (decision.reason or "")
    young = decide(replace(BASE, max_age_seconds=7 * 86400), NOW)
    assert young.due_at == BASE.created_at + timedelta(days=7) and not young.purge_now(NOW)


def test_the_earliest_rule_wins() -> None:
    decision = decide(done(grace_seconds=10 * 86400, max_age_seconds=4 * 86400), NOW)
    assert decision.due_at == BASE.created_at + timedelta(days=4)


def test_idle_stop_counts_from_the_last_activity_or_start() -> None:
    idle = replace(BASE, idle_stop_seconds=3600)
    assert decide(idle, NOW).stop, "started two hours ago and never used"
    used = replace(idle, last_active_at=NOW - timedelta(minutes=10))
    assert not decide(used, NOW).stop
    decision = decide(replace(idle, last_active_at=NOW - timedelta(hours=5)), NOW)
    assert decision.stop and "idle stop after 1h" in (decision.stop_reason or "")


@pytest.mark.parametrize(("state", "desired"), [("stopped", "stopped"), ("starting", "ready"), ("ready", "stopped")])
def test_idle_stop_only_for_ready_workspaces_meant_to_run(state: str, desired: str) -> None:
    assert not decide(replace(BASE, idle_stop_seconds=60, state=state, desired=desired), NOW).stop
