"""When a workspace is purged: its ticket's status category (default ``done``) or one of the
project's listed statuses, plus a grace period counted from the status change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class PolicyDecision:
    due_at: datetime | None
    reason: str | None


def decide(*, status: str, status_category: str, status_changed_at: datetime, purge_on_category: str | None,
           purge_on_statuses: list[str], grace_seconds: int) -> PolicyDecision:
    """When the workspace of a ticket in this status is due for purge (None: not at all)."""
    if purge_on_category and status_category == purge_on_category:
        why = f"ticket is {status} (category {status_category})"
    elif status in purge_on_statuses:
        why = f"ticket is {status}"
    else:
        return PolicyDecision(None, None)
    due = status_changed_at + timedelta(seconds=grace_seconds)
    if grace_seconds:
        why += f", grace period of {grace_seconds}s"
    return PolicyDecision(due, why)
