"""GitLab issues (REST v4, GitLab.com or self-managed) as a ticket source.

Which issues: those of one ``project`` or of one ``group`` (with its subgroups), in every state.
A sync lists ``/projects/:id/issues`` or ``/groups/:id/issues`` with ``scope=all`` and, when
incremental, ``updated_after``; pages follow ``X-Next-Page`` (or ``Link: rel="next"``), sorted
by creation so that an issue updated while the pages are read does not push another one out.

Keys: ``<key_prefix>-<iid>`` in project mode. In group mode ``<key_prefix>-<id>`` with the
issue's global id, because iids repeat across a group's projects. ``reference`` is GitLab's
own ``group/project#iid``.

Statuses: a closed issue is Closed (done). An open one takes the first of ``status_labels``
it carries (see :mod:`taskspace.plugins.trackers.label_status`), else it is Open (to do).

Webhooks (``Issue Hook`` and ``Confidential Issue Hook``) carry the whole issue, so no fetch is
needed after one. The secret token of the webhook arrives in ``X-Gitlab-Token``. A delivery is
identified by ``Idempotency-Key`` (GitLab 17.4+, the same on every retry), else
``X-Gitlab-Event-UUID``, else the SHA-256 of the body. GitLab sends no webhook when an issue is
deleted; a deleted issue simply stops being reported.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, Self
from urllib.parse import quote, unquote

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from taskspace.core.errors import InvalidInput
from taskspace.core.naming import PROJECT_KEY_RE
from taskspace.core.tickets import Assignee, StatusCategory, TicketData, Workflow
from taskspace.plugins.trackers.base import (
    SupportsWebhooks,
    Tracker,
    TrackerConfig,
    TrackerUnavailable,
    WebhookDelivery,
)
from taskspace.plugins.trackers.http_client import TrackerHttp, WaitBudget, check_base_url
from taskspace.plugins.trackers.json_fields import items, mapping, text, timestamp
from taskspace.plugins.trackers.label_status import check_label_config, label_workflow, status_of
from taskspace.plugins.trackers.webhook_auth import (
    configured_secret,
    delivery_id,
    json_object,
    lower_keys,
    verify_shared_secret,
)

logger = logging.getLogger(__name__)

TRACKER = "GitLab"
ISSUE_EVENTS = {"issue hook", "confidential issue hook"}
_WEBHOOK_HINT = ("Set the same value as the webhook's Secret token in GitLab (Settings → Webhooks) and as "
                 "webhook_secret in this project's tracker config.")


class GitLabConfig(TrackerConfig):
    """How to reach GitLab and which project's or group's issues are this project's tickets."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    base_url: str = Field("https://gitlab.com", description="GitLab's address, e.g. https://gitlab.com or "
                                                            "https://gitlab.example.com (no credentials in it)")
    token: SecretStr = Field(description="Access token (personal, project or group) with the read_api scope")
    auth_header: Literal["private-token", "bearer"] = Field(
        "private-token", description="How the token is sent: 'private-token' (PRIVATE-TOKEN header) or "
                                     "'bearer' (Authorization: Bearer, for OAuth tokens)")
    project: str | None = Field(None, description="The project: numeric id or full path such as "
                                                  "'group/app' (set this or group)")
    group: str | None = Field(None, description="The group: numeric id or full path, its subgroups included "
                                                "(set this or project)")
    key_prefix: str = Field(description="The taskspace project key; tickets are <key_prefix>-<iid> (project) "
                                        "or <key_prefix>-<id> (group, where iids repeat)")
    status_labels: list[str] = Field(
        default_factory=list,
        description="Labels that are board columns, in priority order, e.g. ['Doing', 'In Review']: an open "
                    "issue's status is the first of them it carries, else 'Open'")
    label_categories: dict[str, StatusCategory] = Field(
        default_factory=dict, description="Category of each status label; unlisted ones are in_progress")
    webhook_secret: SecretStr | None = Field(None, description="The webhook's secret token (X-Gitlab-Token)")
    page_size: int = Field(100, ge=1, le=100, description="Issues asked for per page")
    max_wait_seconds: float = Field(60.0, ge=0, le=3600,
                                    description="Longest total wait for rate limits within one sync")

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return check_base_url(value)

    @field_validator("project", "group")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # Accept the path as shown in GitLab or already URL-encoded; it is encoded when sent.
        value = unquote(value.strip()).strip("/")
        if not value or any(part in ("", ".", "..") for part in value.split("/")):
            raise ValueError("must be a numeric id or a path such as 'group/subgroup/app'")
        return value

    @field_validator("key_prefix")
    @classmethod
    def _key_prefix(cls, value: str) -> str:
        if not PROJECT_KEY_RE.match(value):
            raise ValueError("must be a taskspace project key: 2 to 10 upper-case letters or digits, starting "
                             "with a letter")
        return value

    @model_validator(mode="after")
    def _scope(self) -> Self:
        if (self.project is None) == (self.group is None):
            raise ValueError("set exactly one of project and group")
        check_label_config(self.status_labels, self.label_categories)
        return self


class GitLabTracker(Tracker, SupportsWebhooks):
    name = "gitlab"
    webhook_name = "gitlab"
    config_model = GitLabConfig

    def __init__(self, config: GitLabConfig):
        super().__init__(config)
        self.config: GitLabConfig = config
        token = config.token.get_secret_value()
        if config.auth_header == "bearer":
            headers = {"Authorization": f"Bearer {token}"}
        else:
            headers = {"PRIVATE-TOKEN": token}
        headers |= {"Accept": "application/json", "User-Agent": "taskspace"}
        secrets = [token] + ([config.webhook_secret.get_secret_value()] if config.webhook_secret else [])
        self._http = TrackerHttp(
            tracker=TRACKER, base_url=config.base_url, headers=headers, secrets=secrets,
            credentials_hint="Check token in the tracker config: it may be expired or revoked, lack the read_api "
                             "scope, or belong to a user who cannot see the project or group.")
        kind, ident = ("projects", config.project) if config.project else ("groups", config.group)
        self._issues_path = f"/api/v4/{kind}/{quote(ident or '', safe='')}/issues"

    def workflow(self) -> Workflow:
        return label_workflow(self.config.status_labels, self.config.label_categories)

    async def fetch_updated(self, since: datetime | None) -> list[TicketData]:
        budget = WaitBudget(self.config.max_wait_seconds)
        params: dict[str, str] = {"scope": "all", "order_by": "created_at", "sort": "asc",
                                  "per_page": str(self.config.page_size)}
        if since is not None:
            since = since if since.tzinfo else since.replace(tzinfo=UTC)
            params["updated_after"] = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        tickets: list[TicketData] = []
        url: str | None = self._issues_path
        page_params: dict[str, str] | None = params
        followed: set[str] = set()
        while url is not None:
            response = await self._http.request("GET", url, budget=budget, params=page_params)
            tickets.extend(self._ticket(issue) for issue in items(self._http.json_of(response)))
            next_page = response.headers.get("x-next-page")
            if next_page is not None:
                next_page = next_page.strip()
                url, page_params = (self._issues_path, params | {"page": next_page}) if next_page else (None, None)
            else:
                # Without X-Next-Page (a proxy may drop it), the Link header has the next URL.
                url, page_params = response.links.get("next", {}).get("url"), None
            marker = f"{url}?{next_page}"
            if url is not None and marker in followed:
                raise TrackerUnavailable(f"GitLab at {self.config.base_url} sent the same next page twice; the "
                                         f"issue list cannot be read to its end.",
                                         hint="Check the base URL and any proxy in front of GitLab.")
            followed.add(marker)
        return tickets

    def parse_webhook(self, headers: Mapping[str, str], body: bytes,
                      query: Mapping[str, str] | None = None) -> WebhookDelivery:
        headers = lower_keys(headers)
        secret = configured_secret(self.config.webhook_secret, tracker=TRACKER, hint=_WEBHOOK_HINT)
        verify_shared_secret(headers.get("x-gitlab-token"), secret, where="X-Gitlab-Token header",
                             tracker=TRACKER, hint=_WEBHOOK_HINT)
        data = json_object(body, tracker=TRACKER)
        delivery = delivery_id(headers.get("idempotency-key") or headers.get("x-gitlab-event-uuid"), body)
        event = headers.get("x-gitlab-event", "").strip().lower()
        if event not in ISSUE_EVENTS and text(data.get("object_kind")) != "issue":
            return WebhookDelivery(delivery_id=delivery)
        project = mapping(data.get("project"))
        if not self._is_ours(project):
            logger.info("GitLab delivery %s is for project %r, not this tracker's; ignored", delivery,
                        text(project.get("path_with_namespace")))
            return WebhookDelivery(delivery_id=delivery)
        attributes = mapping(data.get("object_attributes"))
        issue = {
            **attributes,
            "web_url": attributes.get("url"),
            "labels": data.get("labels", attributes.get("labels")),
            "assignees": data.get("assignees"),
            "references": {"full": f"{text(project.get('path_with_namespace'))}#{attributes.get('iid')}"}
            if project.get("path_with_namespace") else None,
        }
        return WebhookDelivery(delivery_id=delivery, tickets=[self._ticket(issue, from_tracker=False)])

    async def close(self) -> None:
        await self._http.aclose()

    # ---------------------------------------------------------------------------------------

    def _is_ours(self, project: dict[str, Any]) -> bool:
        path = text(project.get("path_with_namespace")).casefold()
        if self.config.project is not None:
            wanted = self.config.project
            if wanted.isdigit():
                return str(project.get("id")) == wanted
            return path == wanted.casefold()
        wanted = self.config.group or ""
        # A group given by id cannot be checked against the payload; the hook is the group's own.
        return wanted.isdigit() or path.startswith(wanted.casefold() + "/")

    def _ticket(self, issue: Any, *, from_tracker: bool = True) -> TicketData:
        try:
            return self._ticket_of(mapping(issue))
        except InvalidInput as exc:
            if from_tracker:
                raise TrackerUnavailable(exc.message, hint=exc.hint) from None
            raise

    def _ticket_of(self, issue: dict[str, Any]) -> TicketData:
        number = issue.get("iid") if self.config.project is not None else issue.get("id")
        if not isinstance(number, int) or number < 1:
            raise InvalidInput(f"{TRACKER} sent an issue without a usable {'iid' if self.config.project else 'id'}.",
                               hint="Check that the tracker's base URL points at GitLab's API.")
        labels = [_label_name(label) for label in items(issue.get("labels"))]
        labels = [label for label in labels if label]
        status, category = status_of(closed=text(issue.get("state")) == "closed", labels=labels,
                                     status_labels=self.config.status_labels,
                                     label_categories=self.config.label_categories)
        assignees = [a for a in (_assignee(user) for user in items(issue.get("assignees"))) if a]
        if not assignees and mapping(issue.get("assignee")):
            assignees = [a for a in [_assignee(issue["assignee"])] if a]
        return TicketData(
            key=f"{self.config.key_prefix}-{number}",
            title=text(issue.get("title")) or f"#{issue.get('iid')}",
            description=text(issue.get("description")),
            status=status,
            status_category=category,
            assignee=(assignees[0].username or assignees[0].id) if assignees else None,
            assignees=assignees,
            labels=labels,
            created_at=timestamp(issue.get("created_at"), field="created_at", tracker=TRACKER),
            updated_at=timestamp(issue.get("updated_at"), field="updated_at", tracker=TRACKER),
            url=text(issue.get("web_url")) or None,
            reference=text(mapping(issue.get("references")).get("full")) or None,
            external_id=str(issue["id"]) if isinstance(issue.get("id"), int) else None,
        )


def _label_name(label: Any) -> str:
    # The REST API lists label names; webhooks send label objects with a title.
    if isinstance(label, str):
        return label
    return text(mapping(label).get("title")) or text(mapping(label).get("name"))


def _assignee(user: Any) -> Assignee | None:
    user = mapping(user)
    if not user:
        return None
    email = text(user.get("email")) or text(user.get("public_email"))
    return Assignee(
        id=str(user["id"]) if isinstance(user.get("id"), int) else None,
        username=text(user.get("username")) or None,
        # Webhooks show "[REDACTED]" for users without a public email.
        email=email if email and "@" in email else None,
        display_name=text(user.get("name")) or None,
    )
