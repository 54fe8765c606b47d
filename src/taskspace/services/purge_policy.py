"""What the policy does to a workspace, decided from its ticket and its project's rules:

* purge when the ticket's status category is the project's (default ``done``) or its status is
  one of the listed ones, once the grace period since the status change has passed — never on
  stale tracker data;
* purge when the workspace is older than the project's maximum age (off by default);
* stop a ready workspace nobody used for the project's idle time (off by default).

Pure: the reconciler applies decisions, ``preview`` only shows them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from taskspace.core.durations import format_duration


@dataclass(frozen=True)
class PolicyInput:
    state: str
    desired: str
    created_at: datetime
    last_started_at: datetime | None
    last_active_at: datetime | None
    status: str
    status_category: str
    status_changed_at: datetime
    stale_since: datetime | None
    purge_on_category: str | None
    purge_on_statuses: list[str]
    grace_seconds: int
    max_age_seconds: int | None = None
    idle_stop_seconds: int | None = None


@dataclass(frozen=True)
class PolicyDecision:
    due_at: datetime | None = None
    reason: str | None = None
    stop: bool = False
    stop_reason: str | None = None
    held: str | None = None

    def purge_now(self, now: datetime) -> bool:
        return self.due_at is not None and self.due_at <= now


def decide(inp: PolicyInput, now: datetime) -> PolicyDecision:
    candidates: list[tuple[datetime, str]] = []
    held = None
    if inp.purge_on_category and inp.status_category == inp.purge_on_category:
        rule = f"ticket is {inp.status} (category {inp.status_category})"
    elif inp.status in inp.purge_on_statuses:
        rule = f"ticket is {inp.status}"
    else:
        rule = None
    if rule and inp.stale_since is not None:
        held = f"the tracker could not be read since {inp.stale_since:%Y-%m-%d %H:%M} UTC: no purge on stale data"
    elif rule:
        if inp.grace_seconds:
            rule += f", grace period of {format_duration(inp.grace_seconds)}"
        candidates.append((inp.status_changed_at + timedelta(seconds=inp.grace_seconds), rule))
    if inp.max_age_seconds:
        candidates.append((inp.created_at + timedelta(seconds=inp.max_age_seconds),
                           f"workspace is older than the maximum age of {format_duration(inp.max_age_seconds)}"))
    due, reason = min(candidates) if candidates else (None, None)
    stop, stop_reason = False, None
    if inp.idle_stop_seconds and inp.state == "ready" and inp.desired == "ready":
        since = max(t for t in (inp.last_active_at, inp.last_started_at, inp.created_at) if t is not None)
        if since + timedelta(seconds=inp.idle_stop_seconds) <= now:
            unused = format_duration((now - since).total_seconds())
            stop, stop_reason = True, f"unused for {unused} (idle stop after {format_duration(inp.idle_stop_seconds)})"
    return PolicyDecision(due_at=due, reason=reason, stop=stop, stop_reason=stop_reason, held=held)
