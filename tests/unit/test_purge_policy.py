"""When a ticket's workspace is due for purge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from taskspace.services.purge_policy import PolicyDecision, decide

CHANGED = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "category", "on_category", "on_statuses", "grace", "due", "reason"),
    [
        # the category rule
        ("Done", "done", "done", [], 0, CHANGED, "ticket is Done (category done)"),
        ("Done", "done", "done", [], 3600, CHANGED + timedelta(hours=1),
         "ticket is Done (category done), grace period of 3600s"),
        ("Closed", "done", "done", ["Won't do"], 60, CHANGED + timedelta(minutes=1),
         "ticket is Closed (category done), grace period of 60s"),
        # a listed status
        ("Won't do", "todo", "done", ["Won't do"], 0, CHANGED, "ticket is Won't do"),
        ("Cancelled", "in_progress", None, ["Cancelled", "Duplicate"], 86400, CHANGED + timedelta(days=1),
         "ticket is Cancelled, grace period of 86400s"),
        ("Duplicate", "done", None, ["Cancelled", "Duplicate"], 0, CHANGED, "ticket is Duplicate"),
        # both match: the category is named
        ("Done", "done", "done", ["Done"], 0, CHANGED, "ticket is Done (category done)"),
        # a category rule for another category, and a status listed there too
        ("In review", "in_progress", "in_progress", ["Done"], 0, CHANGED,
         "ticket is In review (category in_progress)"),
    ],
)
def test_due(status, category, on_category, on_statuses, grace, due, reason):
    decision = decide(status=status, status_category=category, status_changed_at=CHANGED,
                      purge_on_category=on_category, purge_on_statuses=on_statuses, grace_seconds=grace)

    assert decision == PolicyDecision(due, reason)


@pytest.mark.parametrize(
    ("status", "category", "on_category", "on_statuses"),
    [
        ("In progress", "in_progress", "done", []),
        ("To do", "todo", "done", ["Won't do"]),
        ("Done", "done", None, []),  # no category rule, nothing listed
        ("Done", "done", "", []),  # an empty category is no rule
        ("Done", "done", None, ["Closed"]),
        ("done", "in_progress", None, ["Done"]),  # statuses match exactly, as the tracker spells them
        ("Done ", "in_progress", None, ["Done"]),
        ("", "", "done", ["Done"]),
    ],
)
def test_not_due(status, category, on_category, on_statuses):
    decision = decide(status=status, status_category=category, status_changed_at=CHANGED,
                      purge_on_category=on_category, purge_on_statuses=on_statuses, grace_seconds=3600)

    assert decision == PolicyDecision(None, None)


def test_the_grace_period_counts_from_the_status_change_not_from_now():
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)

    decision = decide(status="Done", status_category="done", status_changed_at=long_ago, purge_on_category="done",
                      purge_on_statuses=[], grace_seconds=7200)

    assert decision.due_at == datetime(2020, 1, 1, 2, 0, tzinfo=UTC)
    assert decision.due_at.tzinfo is UTC
