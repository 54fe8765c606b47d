"""Jira Cloud (REST v3) and Jira Server / Data Center (REST v2) as a ticket source.

Which issues: ``jql_scope`` selects the project's issues (default: those assigned to the
account whose credentials are configured). A full sync lists every issue in scope; an
incremental sync asks for ``updated >= "<since>" AND (<jql_scope>)``. Neither filters by status:
an issue that moves to Done must reach the platform so its workspace can be purged, and the
board hides done tickets itself. That is why the scope may not mention status, status category
or resolution (the config refuses it).

Time zone: JQL reads a date literal in the time zone of the account that runs the query. The
tracker asks Jira for that zone once (``/myself``) and writes ``since`` in it, a couple of
minutes early because Jira's search index may lag.

Paging: Cloud's ``/rest/api/3/search/jql`` pages with ``nextPageToken`` (the older
``/rest/api/3/search`` with ``startAt`` is gone from Cloud); Server/Data Center's
``/rest/api/2/search`` pages with ``startAt``/``maxResults``/``total``, and may return fewer
issues per page than asked, so the next page starts after the issues received.

Statuses: each issue carries its status and ``statusCategory.key`` (``new`` → todo,
``indeterminate`` → in progress, ``done`` → done), so tickets need no configuration.
``workflow()`` returns the ``statuses`` of the config (by default one per category: To Do, In
Progress, Done) followed by any other status this instance has met while syncing; list the
board's real statuses in ``statuses`` to use them in purge rules by name.

Webhooks: ``jira:issue_created`` and ``jira:issue_updated`` carry the issue (in REST v2 form,
description in wiki markup even on Cloud), ``jira:issue_deleted`` its key. A delivery is
verified by ``X-Hub-Signature: sha256=<HMAC of the body>`` (admin webhooks with a secret, on
Cloud and on Data Center 10+) or, for Data Center versions that cannot sign, by the secret in
the webhook URL: ``…/hooks/jira?secret=<webhook_secret>``. Give the webhook the same JQL filter
as ``jql_scope`` so it reports only this project's issues.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any, Literal, Self
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from taskspace.core.errors import InvalidInput
from taskspace.core.tickets import StatusCategory, TicketData, Workflow, WorkflowStatus
from taskspace.plugins.trackers.base import (
    SupportsFetch,
    SupportsWebhooks,
    Tracker,
    TrackerConfig,
    TrackerUnavailable,
    WebhookDelivery,
)
from taskspace.plugins.trackers.http_client import TrackerHttp, WaitBudget, check_base_url
from taskspace.plugins.trackers.jira.issues import (
    FIELDS,
    TRACKER,
    check_issue_key,
    check_scope,
    search_jql,
    ticket_of,
)
from taskspace.plugins.trackers.json_fields import items, mapping, text
from taskspace.plugins.trackers.webhook_auth import (
    configured_secret,
    delivery_id,
    json_object,
    lower_keys,
    verify_shared_secret,
    verify_signature,
)

logger = logging.getLogger(__name__)

DEFAULT_STATUSES = {
    "To Do": StatusCategory.TODO,
    "In Progress": StatusCategory.IN_PROGRESS,
    "Done": StatusCategory.DONE,
}
_WEBHOOK_HINT = ("Set the same secret in the Jira webhook (System → WebHooks → Secret; on Data Center "
                 "before 10, add ?secret=<secret> to the webhook URL) and as webhook_secret in this "
                 "project's tracker config.")


class JiraConfig(TrackerConfig):
    """How to reach Jira and which issues are this project's tickets."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    base_url: str = Field(description="Jira's address, e.g. https://example.atlassian.net or "
                                      "https://jira.example.com (no credentials in it)")
    deployment: Literal["cloud", "server"] = Field(
        "cloud", description="'cloud' (REST v3) or 'server' for Jira Server and Data Center (REST v2)")
    jql_scope: str = Field(
        "assignee = currentUser()",
        description="JQL condition selecting the project's issues, e.g. 'project = PAY'. No ORDER BY and "
                    "no status condition: incremental syncs add 'updated >= …' and must see issues that "
                    "move to Done")
    email: str | None = Field(None, description="Cloud: the Atlassian account's email (with api_token)")
    api_token: SecretStr | None = Field(None, description="Cloud: an API token of that account")
    username: str | None = Field(None, description="Server/Data Center: login name (with password)")
    password: SecretStr | None = Field(None, description="Server/Data Center: that login's password")
    token: SecretStr | None = Field(None, description="Server/Data Center: a personal access token (sent as "
                                                      "Bearer), instead of username and password")
    webhook_secret: SecretStr | None = Field(
        None, description="Secret of the Jira webhook: checks X-Hub-Signature, or the ?secret= URL parameter "
                          "on Data Center versions that cannot sign")
    statuses: dict[str, StatusCategory] = Field(
        default_factory=lambda: dict(DEFAULT_STATUSES),
        description="The board's statuses and their category, in workflow order, for purge rules by "
                    "status name; statuses met while syncing are added")
    page_size: int = Field(100, ge=1, le=1000, description="Issues asked for per search page")
    max_wait_seconds: float = Field(60.0, ge=0, le=3600,
                                    description="Longest total wait for rate limits within one sync")

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return check_base_url(value)

    @field_validator("jql_scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        return check_scope(value)

    @field_validator("statuses")
    @classmethod
    def _statuses(cls, value: dict[str, StatusCategory]) -> dict[str, StatusCategory]:
        if not value:
            raise ValueError("needs at least one status")
        return value

    @model_validator(mode="after")
    def _one_auth_scheme(self) -> Self:
        cloud_basic = self.email is not None or self.api_token is not None
        server_basic = self.username is not None or self.password is not None
        bearer = self.token is not None
        if self.deployment == "cloud":
            if server_basic or bearer:
                raise ValueError("Jira Cloud takes email and api_token; username, password and token are for "
                                 "Server/Data Center (deployment: server)")
            if not (self.email and self.api_token):
                raise ValueError("Jira Cloud needs both email and api_token")
        else:
            if cloud_basic:
                raise ValueError("email and api_token are for Jira Cloud; Server/Data Center takes username "
                                 "and password, or token")
            if server_basic and bearer:
                raise ValueError("set either username and password, or token — not both")
            if not bearer and not (self.username and self.password):
                raise ValueError("Jira Server/Data Center needs username and password, or a personal access "
                                 "token in token")
        return self


class JiraTracker(Tracker, SupportsWebhooks, SupportsFetch):
    name = "jira"
    webhook_name = "jira"
    config_model = JiraConfig

    def __init__(self, config: JiraConfig):
        super().__init__(config)
        self.config: JiraConfig = config
        self._api = "/rest/api/3" if config.deployment == "cloud" else "/rest/api/2"
        self._zone: tzinfo | None = None
        self._zone_known = False
        self._seen: dict[str, StatusCategory] = {}
        auth: httpx.Auth | None = None
        headers = {"Accept": "application/json", "User-Agent": "taskspace"}
        if config.token is not None:
            headers["Authorization"] = f"Bearer {config.token.get_secret_value()}"
            hint = "Check token in the tracker config: the personal access token may be expired or revoked."
        elif config.deployment == "cloud":
            auth = httpx.BasicAuth(config.email or "", config.api_token.get_secret_value())  # type: ignore[union-attr]
            hint = ("Check email and api_token in the tracker config: the API token may be revoked or belong "
                    "to another account (create one at id.atlassian.com → Security → API tokens).")
        else:
            auth = httpx.BasicAuth(config.username or "", config.password.get_secret_value())  # type: ignore[union-attr]
            hint = ("Check username and password in the tracker config, and that the account is not locked "
                    "by CAPTCHA after failed logins (log in once in a browser).")
        secrets = [s.get_secret_value() for s in (config.api_token, config.password, config.token,
                                                  config.webhook_secret) if s is not None]
        self._http = TrackerHttp(tracker=TRACKER, base_url=config.base_url, headers=headers, auth=auth,
                                 credentials_hint=hint, secrets=secrets)

    def workflow(self) -> Workflow:
        statuses = dict(self.config.statuses)
        for name, category in self._seen.items():
            if not any(known.casefold() == name.casefold() for known in statuses):
                statuses[name] = category
        return Workflow(statuses=[WorkflowStatus(name=n, category=c) for n, c in statuses.items()])

    async def fetch_updated(self, since: datetime | None) -> list[TicketData]:
        budget = WaitBudget(self.config.max_wait_seconds)
        zone = await self._account_zone(budget) if since is not None else None
        jql = search_jql(self.config.jql_scope, since, zone)
        return [self._ticket(issue) for issue in await self._search(jql, budget)]

    async def fetch(self, keys: list[str]) -> list[TicketData]:
        """The named issues, one GET each; an issue that is gone (or hidden from these
        credentials) is left out. Not a JQL ``key in (…)`` search: that fails as a whole when
        any one key no longer exists."""
        budget = WaitBudget(self.config.max_wait_seconds)
        tickets = []
        for key in dict.fromkeys(check_issue_key(k) for k in keys):
            response = await self._http.request("GET", f"{self._api}/issue/{quote(key)}", budget=budget,
                                                 params={"fields": ",".join(FIELDS)}, accept_status=(404,))
            if response.status_code == 404:
                continue
            tickets.append(self._ticket(self._http.json_of(response)))
        return tickets

    def parse_webhook(self, headers: Mapping[str, str], body: bytes,
                      query: Mapping[str, str] | None = None) -> WebhookDelivery:
        headers = lower_keys(headers)
        secret = configured_secret(self.config.webhook_secret, tracker=TRACKER, hint=_WEBHOOK_HINT)
        signature = headers.get("x-hub-signature")
        url_secret = (query or {}).get("secret")
        if signature:
            verify_signature(body, secret, signature, header="X-Hub-Signature", tracker=TRACKER,
                             hint=_WEBHOOK_HINT)
        elif url_secret:
            verify_shared_secret(url_secret, secret, where="secret URL parameter", tracker=TRACKER,
                                 hint=_WEBHOOK_HINT)
        else:
            verify_signature(body, secret, None, header="X-Hub-Signature (or a ?secret= URL parameter)",
                             tracker=TRACKER, hint=_WEBHOOK_HINT)
        data = json_object(body, tracker=TRACKER)
        delivery = delivery_id(headers.get("x-atlassian-webhook-identifier"), body)
        event = text(data.get("webhookEvent"))
        issue = mapping(data.get("issue"))
        if event in ("jira:issue_created", "jira:issue_updated"):
            return WebhookDelivery(delivery_id=delivery, tickets=[self._ticket(issue, from_tracker=False)])
        if event == "jira:issue_deleted":
            key = text(issue.get("key"))
            if not key:
                raise InvalidInput("The Jira jira:issue_deleted delivery names no issue key.",
                                   hint="Check that the URL is registered as a Jira webhook.")
            return WebhookDelivery(delivery_id=delivery, deleted=[key])
        if not event:
            raise InvalidInput("The Jira delivery has no webhookEvent.",
                               hint="Check that the URL is registered as a Jira webhook.")
        return WebhookDelivery(delivery_id=delivery)

    async def close(self) -> None:
        await self._http.aclose()

    # ---------------------------------------------------------------------------------------

    def _ticket(self, issue: Any, *, from_tracker: bool = True) -> TicketData:
        try:
            ticket = ticket_of(issue, base_url=self.config.base_url)
        except InvalidInput as exc:
            if from_tracker:
                raise TrackerUnavailable(exc.message, hint=exc.hint) from None
            raise
        self._seen.setdefault(ticket.status, ticket.status_category)
        return ticket

    async def _account_zone(self, budget: WaitBudget) -> tzinfo | None:
        if not self._zone_known:
            me = mapping(self._http.json_of(await self._http.request("GET", f"{self._api}/myself", budget=budget)))
            name = text(me.get("timeZone"))
            try:
                self._zone = ZoneInfo(name) if name else None
            except (ZoneInfoNotFoundError, ValueError):
                logger.warning("Jira account time zone %r is unknown here; incremental queries reach back "
                               "further to cover every offset", name)
                self._zone = None
            self._zone_known = True
        return self._zone

    async def _search(self, jql: str, budget: WaitBudget) -> list[Any]:
        if self.config.deployment == "cloud":
            return await self._search_cloud(jql, budget)
        return await self._search_server(jql, budget)

    async def _search_cloud(self, jql: str, budget: WaitBudget) -> list[Any]:
        issues: list[Any] = []
        token: str | None = None
        seen_tokens: set[str] = set()
        while True:
            params = {"jql": jql, "fields": ",".join(FIELDS), "maxResults": str(self.config.page_size)}
            if token:
                params["nextPageToken"] = token
            page = mapping(self._http.json_of(
                await self._http.request("GET", f"{self._api}/search/jql", budget=budget, params=params)))
            issues.extend(items(page.get("issues")))
            token = text(page.get("nextPageToken")) or None
            if page.get("isLast") is True or token is None:
                return issues
            if token in seen_tokens:
                raise TrackerUnavailable(f"Jira at {self.config.base_url} repeated a search page token; the "
                                         f"issue list cannot be read to its end.",
                                         hint="Try again later; if it persists, report it to Atlassian support.")
            seen_tokens.add(token)

    async def _search_server(self, jql: str, budget: WaitBudget) -> list[Any]:
        issues: list[Any] = []
        start = 0
        while True:
            params = {"jql": jql, "fields": ",".join(FIELDS), "startAt": str(start),
                      "maxResults": str(self.config.page_size)}
            page = mapping(self._http.json_of(
                await self._http.request("GET", f"{self._api}/search", budget=budget, params=params)))
            batch = items(page.get("issues"))
            issues.extend(batch)
            start += len(batch)
            total = page.get("total")
            if not batch or (isinstance(total, int) and start >= total):
                return issues
