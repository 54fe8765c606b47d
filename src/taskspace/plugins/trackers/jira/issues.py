"""Pure builders for the Jira tracker: the JQL it sends and the tickets it makes of issues."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from taskspace.core.errors import InvalidInput
from taskspace.core.tickets import Assignee, StatusCategory, TicketData
from taskspace.plugins.trackers.jira.adf import adf_to_markdown
from taskspace.plugins.trackers.json_fields import items, mapping, text, timestamp

TRACKER = "Jira"
FIELDS = ("summary", "status", "assignee", "created", "updated", "description", "labels")

#: Jira's statusCategory.key → the platform's category. "undefined" ("No category") is to do.
CATEGORIES = {
    "new": StatusCategory.TODO,
    "indeterminate": StatusCategory.IN_PROGRESS,
    "done": StatusCategory.DONE,
}

#: Jira's search index may lag behind a change by a moment; an incremental query reaches this
#: much further back so a change made just before the previous sync is not missed.
INDEX_LAG = timedelta(minutes=2)
#: Widest UTC offset: used when the account's time zone is unknown (see ``updated_since``).
_WIDEST_OFFSET = timedelta(hours=14)

ISSUE_KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]*-[1-9][0-9]*\Z")
_ORDER_BY_RE = re.compile(r"\border\s+by\b", re.IGNORECASE)
# A condition on the status (other than its history, "was"/"changed") would hide the moment a
# ticket becomes done.
_STATUS_FILTER_RE = re.compile(
    r"\b(status|statusCategory|resolution)\s*(!=|=|!~|~|\bnot\s+in\b|\bin\b|\bis\b)", re.IGNORECASE)


def check_scope(jql: str) -> str:
    """Config validation of ``jql_scope``: a JQL condition that selects the project's issues."""
    jql = jql.strip()
    if not jql:
        raise ValueError("must select the project's issues, e.g. 'project = PAY' or 'assignee = currentUser()'")
    if _ORDER_BY_RE.search(jql):
        raise ValueError("must not have an ORDER BY clause: taskspace adds its own")
    if _STATUS_FILTER_RE.search(jql):
        raise ValueError("must not filter by status, status category or resolution: taskspace must see "
                         "tickets move to Done to purge their workspaces, and leaves done tickets off the "
                         "board itself")
    return jql


def search_jql(scope: str, since: datetime | None, zone: tzinfo | None) -> str:
    """The query of a sync: every issue in scope (since None), or those updated since ``since``.

    Incremental: ``updated >= "<since>" AND (<scope>)`` — no status condition, so an issue that
    moved to Done is reported and its workspace can be purged. Ordered by key, which does not
    change while the pages are read."""
    if since is None:
        return f"({scope}) ORDER BY key ASC"
    return f"{updated_since(since, zone)} AND ({scope}) ORDER BY key ASC"


def updated_since(since: datetime, zone: tzinfo | None) -> str:
    """``updated >= "yyyy-MM-dd HH:mm"``. JQL reads such a literal in the time zone of the
    account that runs the query, so ``since`` is written in that zone; when the zone is
    unknown the query reaches back by the widest UTC offset instead of missing changes."""
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    moment = since - INDEX_LAG
    if zone is None:
        zone, moment = UTC, moment - _WIDEST_OFFSET
    return f'updated >= "{moment.astimezone(zone):%Y-%m-%d %H:%M}"'


def check_issue_key(key: str) -> str:
    if not ISSUE_KEY_RE.match(key):
        raise InvalidInput(f"{key!r} is not a Jira issue key.", hint="A Jira issue key looks like 'PAY-123'.",
                           field="key")
    return key


def assignee_of(user: Any) -> Assignee | None:
    """Cloud users have ``accountId`` (and an ``emailAddress`` only when the user's privacy
    settings show it); Server/Data Center users have ``name`` (the login) and ``key``."""
    user = mapping(user)
    if not user:
        return None
    return Assignee(
        id=text(user.get("accountId")) or text(user.get("key")) or None,
        username=text(user.get("name")) or None,
        email=text(user.get("emailAddress")) or None,
        display_name=text(user.get("displayName")) or None,
    )


def description_of(value: Any) -> str:
    """Cloud REST v3 sends Atlassian Document Format (converted to Markdown); REST v2 — Server,
    Data Center, and every webhook — sends wiki markup or plain text, kept as it is."""
    if isinstance(value, dict):
        return adf_to_markdown(value)
    return text(value)


def ticket_of(issue: Any, *, base_url: str) -> TicketData:
    """A ticket from an issue of a search, an issue GET or a webhook; InvalidInput when the
    issue lacks what a ticket needs."""
    issue = mapping(issue)
    key = text(issue.get("key"))
    fields = mapping(issue.get("fields"))
    if not key or not fields:
        raise InvalidInput(f"{TRACKER} sent an issue without a key or fields.",
                           hint="Check that the search asks for the fields " + ",".join(FIELDS) + ".")
    status = mapping(fields.get("status"))
    category_key = text(mapping(status.get("statusCategory")).get("key"))
    assignee = assignee_of(fields.get("assignee"))
    return TicketData(
        key=key,
        title=text(fields.get("summary")) or key,
        description=description_of(fields.get("description")),
        status=text(status.get("name")) or "Unknown",
        status_category=CATEGORIES.get(category_key, StatusCategory.TODO),
        assignee=(assignee.username or assignee.email or assignee.id) if assignee else None,
        assignees=[assignee] if assignee else [],
        labels=[label for label in items(fields.get("labels")) if isinstance(label, str)],
        created_at=timestamp(fields.get("created"), field="created", tracker=TRACKER),
        updated_at=timestamp(fields.get("updated"), field="updated", tracker=TRACKER),
        url=f"{base_url}/browse/{key}",
        reference=key,
        external_id=text(issue.get("id")) or None,
    )
