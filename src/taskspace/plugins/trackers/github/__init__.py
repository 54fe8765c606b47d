"""GitHub issues (REST, github.com or GitHub Enterprise Server) as a ticket source.

Which issues: those of one ``repository`` ("owner/name"), in every state. A sync lists
``/repos/{owner}/{repo}/issues?state=all`` (with ``since`` when incremental) and follows
``Link: rel="next"``. Pull requests appear in that list too (they are issues to GitHub, marked
by a ``pull_request`` key) and are skipped.

Keys: ``<key_prefix>-<number>``; ``reference`` is ``owner/name#<number>``.

Statuses, two modes:

- Labels (default): a closed issue is Closed (done, whatever ``state_reason`` says —
  completed, not planned or duplicate). An open one takes the first of ``status_labels`` it
  carries (see :mod:`taskspace.plugins.trackers.label_status`), else it is Open (to do).
- Project board, when ``project_number`` is set: the status is the issue's value of the
  single-select field ``status_field`` ("Status") on that GitHub Project, categorised by
  ``status_categories`` (unlisted values are in progress); issues without a value fall back to
  labels. Moving a card changes the project item, not the issue, so the issue's
  ``updated_at`` does not move: each sync therefore also reads the project's items through
  GraphQL and fetches the issues whose item changed since the last sync. The token needs the
  ``read:project`` scope (or, for a fine-grained token, Projects read access).

Webhooks: ``issues`` events, verified by ``X-Hub-Signature-256`` (HMAC-SHA256 of the body with
the webhook secret), identified by ``X-GitHub-Delivery`` (kept on redelivery). ``deleted`` and
``transferred`` issues are reported as deleted. In project-board mode the delivery cannot say
the board status, so it names the issue in ``refetch`` instead of carrying it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, Self

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from taskspace.core.errors import InvalidInput
from taskspace.core.naming import PROJECT_KEY_RE
from taskspace.core.tickets import Assignee, StatusCategory, TicketData, Workflow, WorkflowStatus
from taskspace.plugins.trackers.base import (
    SupportsFetch,
    SupportsWebhooks,
    Tracker,
    TrackerConfig,
    TrackerUnavailable,
    WebhookDelivery,
)
from taskspace.plugins.trackers.http_client import TrackerHttp, WaitBudget, check_base_url
from taskspace.plugins.trackers.json_fields import items, mapping, text, timestamp
from taskspace.plugins.trackers.label_status import (
    CLOSED,
    check_label_config,
    label_workflow,
    status_of,
)
from taskspace.plugins.trackers.webhook_auth import (
    configured_secret,
    delivery_id,
    json_object,
    lower_keys,
    verify_signature,
)

logger = logging.getLogger(__name__)

TRACKER = "GitHub"
API_VERSION = "2022-11-28"
_REPOSITORY_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}\Z")
_WEBHOOK_HINT = ("Set the same secret in the GitHub webhook (repository Settings → Webhooks → Secret) and "
                 "as webhook_secret in this project's tracker config.")
DEFAULT_STATUS_CATEGORIES = {
    "Todo": StatusCategory.TODO,
    "In Progress": StatusCategory.IN_PROGRESS,
    "Done": StatusCategory.DONE,
}
#: Issues whose board status is asked for in one GraphQL query (one alias each).
_STATUS_BATCH = 50

_PROJECT_ITEMS_QUERY = """
query($owner: String!, $number: Int!, $field: String!, $after: String) {
  %(owner_type)s(login: $owner) {
    projectV2(number: $number) {
      items(first: 100, after: $after) {
        pageInfo { hasNextPage endCursor }
        nodes {
          updatedAt
          fieldValueByName(name: $field) { ... on ProjectV2ItemFieldSingleSelectValue { name } }
          content { ... on Issue { number repository { nameWithOwner } } }
        }
      }
    }
  }
}
"""

_ISSUE_STATUS_FRAGMENT = """
  i%(number)d: issue(number: %(number)d) {
    projectItems(first: 50) {
      nodes {
        project { number owner { ... on Organization { login } ... on User { login } } }
        fieldValueByName(name: $field) { ... on ProjectV2ItemFieldSingleSelectValue { name } }
      }
    }
  }"""


class GitHubConfig(TrackerConfig):
    """How to reach GitHub, which repository's issues are this project's tickets, and where
    their status comes from."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    api_url: str = Field("https://api.github.com",
                         description="REST API address: https://api.github.com, or https://HOST/api/v3 for "
                                     "GitHub Enterprise Server")
    token: SecretStr = Field(description="Token that can read the repository's issues (fine-grained: Issues "
                                         "read; classic: repo, plus read:project for board statuses)")
    repository: str = Field(description="The repository, 'owner/name'")
    key_prefix: str = Field(description="The taskspace project key; tickets are <key_prefix>-<number>")
    status_labels: list[str] = Field(
        default_factory=list,
        description="Labels that are board columns, in priority order, e.g. ['Doing', 'In Review']: an open "
                    "issue's status is the first of them it carries, else 'Open'")
    label_categories: dict[str, StatusCategory] = Field(
        default_factory=dict, description="Category of each status label; unlisted ones are in_progress")
    project_number: int | None = Field(
        None, ge=1, description="Number of a GitHub Project (v2) whose status field gives the status; unset: "
                                "labels give it")
    project_owner: str | None = Field(None, description="Login of the project's owner; default: the "
                                                        "repository's owner")
    project_owner_type: Literal["organization", "user"] = Field(
        "organization", description="Whether the project belongs to an organization or a user")
    status_field: str = Field("Status", min_length=1,
                              description="Name of the project's single-select status field")
    status_categories: dict[str, StatusCategory] = Field(
        default_factory=lambda: dict(DEFAULT_STATUS_CATEGORIES),
        description="Category of each value of the status field, in board order; unlisted ones are "
                    "in_progress")
    webhook_secret: SecretStr | None = Field(None, description="The webhook's secret (X-Hub-Signature-256)")
    page_size: int = Field(100, ge=1, le=100, description="Issues asked for per page")
    max_wait_seconds: float = Field(60.0, ge=0, le=3600,
                                    description="Longest total wait for rate limits within one sync")

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        return check_base_url(value)

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        value = value.strip().strip("/")
        if not _REPOSITORY_RE.match(value) or value.split("/")[1] in (".", ".."):
            raise ValueError("must be 'owner/name', e.g. 'octo-org/payments'")
        return value

    @field_validator("key_prefix")
    @classmethod
    def _key_prefix(cls, value: str) -> str:
        if not PROJECT_KEY_RE.match(value):
            raise ValueError("must be a taskspace project key: 2 to 10 upper-case letters or digits, starting "
                             "with a letter")
        return value

    @model_validator(mode="after")
    def _labels(self) -> Self:
        check_label_config(self.status_labels, self.label_categories)
        return self

    @property
    def board_owner(self) -> str:
        return self.project_owner or self.repository.split("/")[0]


class GitHubTracker(Tracker, SupportsWebhooks, SupportsFetch):
    name = "github"
    webhook_name = "github"
    config_model = GitHubConfig

    def __init__(self, config: GitHubConfig):
        super().__init__(config)
        self.config: GitHubConfig = config
        token = config.token.get_secret_value()
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
                   "X-GitHub-Api-Version": API_VERSION, "User-Agent": "taskspace"}
        secrets = [token] + ([config.webhook_secret.get_secret_value()] if config.webhook_secret else [])
        self._http = TrackerHttp(
            tracker=TRACKER, base_url=config.api_url, headers=headers, secrets=secrets,
            credentials_hint="Check token in the tracker config: it may be expired or revoked, or lack access "
                             "to the repository's issues (and read:project for board statuses); an "
                             "organization may also require SSO authorization of the token.")
        self._issues_path = f"/repos/{config.repository}/issues"
        # GitHub Enterprise Server serves GraphQL at /api/graphql next to REST's /api/v3.
        api = config.api_url
        self._graphql_url = api[: -len("/v3")] + "/graphql" if api.endswith("/api/v3") else api + "/graphql"

    @property
    def _board_mode(self) -> bool:
        return self.config.project_number is not None

    def workflow(self) -> Workflow:
        labels = label_workflow(self.config.status_labels, self.config.label_categories)
        if not self._board_mode:
            return labels
        board = [WorkflowStatus(name=n, category=c) for n, c in self.config.status_categories.items()]
        known = {s.name.casefold() for s in board}
        return Workflow(statuses=board + [s for s in labels.statuses if s.name.casefold() not in known])

    async def fetch_updated(self, since: datetime | None) -> list[TicketData]:
        budget = WaitBudget(self.config.max_wait_seconds)
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        params = {"state": "all", "sort": "created", "direction": "asc", "per_page": str(self.config.page_size)}
        if since is not None:
            params["since"] = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        issues = await self._list_issues(params, budget)
        if not self._board_mode:
            return [self._ticket(issue) for issue in issues]
        board = await self._board_items(budget)
        listed = {issue.get("number") for issue in issues}
        moved = [number for number, (_, changed) in board.items()
                 if since is not None and changed is not None and changed >= since and number not in listed]
        for number in moved:
            issue = await self._get_issue(number, budget)
            if issue is not None:
                issues.append(issue)
        return [self._ticket(issue, board_status=board.get(issue.get("number"), (None, None))[0])
                for issue in issues]

    async def fetch(self, keys: list[str]) -> list[TicketData]:
        """The named issues, one GET each; deleted, transferred and hidden ones (404, 410) and
        pull requests are left out."""
        budget = WaitBudget(self.config.max_wait_seconds)
        numbers = list(dict.fromkeys(self._number_of(key) for key in keys))
        issues = [issue for issue in [await self._get_issue(n, budget) for n in numbers] if issue is not None]
        if not self._board_mode:
            return [self._ticket(issue) for issue in issues]
        statuses = await self._issue_board_statuses([issue["number"] for issue in issues], budget)
        return [self._ticket(issue, board_status=statuses.get(issue["number"])) for issue in issues]

    def parse_webhook(self, headers: Mapping[str, str], body: bytes,
                      query: Mapping[str, str] | None = None) -> WebhookDelivery:
        headers = lower_keys(headers)
        secret = configured_secret(self.config.webhook_secret, tracker=TRACKER, hint=_WEBHOOK_HINT)
        verify_signature(body, secret, headers.get("x-hub-signature-256"), header="X-Hub-Signature-256",
                         tracker=TRACKER, hint=_WEBHOOK_HINT)
        data = json_object(body, tracker=TRACKER)
        delivery = delivery_id(headers.get("x-github-delivery"), body)
        if headers.get("x-github-event", "").strip().lower() != "issues":
            return WebhookDelivery(delivery_id=delivery)  # ping and events taskspace does not follow
        repository = text(mapping(data.get("repository")).get("full_name"))
        if repository.casefold() != self.config.repository.casefold():
            logger.info("GitHub delivery %s is for %r, not this tracker's repository; ignored", delivery, repository)
            return WebhookDelivery(delivery_id=delivery)
        issue = mapping(data.get("issue"))
        if "pull_request" in issue:
            return WebhookDelivery(delivery_id=delivery)
        number = issue.get("number")
        if not isinstance(number, int) or number < 1:
            raise InvalidInput("The GitHub issues delivery has no issue number.",
                               hint="Check that the URL is registered as a GitHub webhook for issues events.")
        key = f"{self.config.key_prefix}-{number}"
        if text(data.get("action")) in ("deleted", "transferred"):
            return WebhookDelivery(delivery_id=delivery, deleted=[key])
        if self._board_mode:
            return WebhookDelivery(delivery_id=delivery, refetch=[key])
        return WebhookDelivery(delivery_id=delivery, tickets=[self._ticket(issue, from_tracker=False)])

    async def close(self) -> None:
        await self._http.aclose()

    # ---------------------------------------------------------------------------------------

    def _number_of(self, key: str) -> int:
        prefix, _, number = key.rpartition("-")
        if prefix != self.config.key_prefix or not number.isdigit() or number.startswith("0"):
            raise InvalidInput(f"{key!r} is not a ticket of {self.config.repository}.",
                               hint=f"Its tickets look like '{self.config.key_prefix}-12'.", field="key")
        return int(number)

    async def _list_issues(self, params: dict[str, str], budget: WaitBudget) -> list[dict[str, Any]]:
        issues: list[dict[str, Any]] = []
        url: str | None = self._issues_path
        page_params: dict[str, str] | None = params
        followed: set[str] = set()
        while url is not None:
            response = await self._http.request("GET", url, budget=budget, params=page_params)
            for issue in items(self._http.json_of(response)):
                if isinstance(issue, dict) and "pull_request" not in issue:
                    issues.append(issue)
            url, page_params = response.links.get("next", {}).get("url"), None
            if url is not None and url in followed:
                raise TrackerUnavailable(f"GitHub at {self.config.api_url} sent the same next page twice; the "
                                         f"issue list cannot be read to its end.", hint="Try again later.")
            if url is not None:
                followed.add(url)
        return issues

    async def _get_issue(self, number: int, budget: WaitBudget) -> dict[str, Any] | None:
        response = await self._http.request("GET", f"{self._issues_path}/{number}", budget=budget,
                                            accept_status=(404, 410))
        if response.status_code in (404, 410):
            return None
        issue = mapping(self._http.json_of(response))
        return None if "pull_request" in issue else issue

    async def _graphql(self, query: str, variables: dict[str, Any], budget: WaitBudget) -> dict[str, Any]:
        response = await self._http.request("POST", self._graphql_url, budget=budget,
                                            json_body={"query": query, "variables": variables})
        answer = mapping(self._http.json_of(response))
        errors = [text(mapping(e).get("message")) for e in items(answer.get("errors"))]
        if errors:
            raise TrackerUnavailable(
                f"GitHub could not read project {self.config.board_owner}#{self.config.project_number}: "
                f"{self._http.scrub('; '.join(e for e in errors if e))[:300]}",
                hint="Check project_number, project_owner and project_owner_type in the tracker config, and "
                     "that the token can read the project (read:project scope).")
        return mapping(answer.get("data"))

    async def _board_items(self, budget: WaitBudget) -> dict[int, tuple[str | None, datetime | None]]:
        """Issue number → (status field value, when the project item last changed), for this
        repository's issues on the project board."""
        query = _PROJECT_ITEMS_QUERY % {"owner_type": self.config.project_owner_type}
        variables: dict[str, Any] = {"owner": self.config.board_owner, "number": self.config.project_number,
                                     "field": self.config.status_field, "after": None}
        board: dict[int, tuple[str | None, datetime | None]] = {}
        repository = self.config.repository.casefold()
        while True:
            data = await self._graphql(query, variables, budget)
            project = mapping(mapping(data.get(self.config.project_owner_type)).get("projectV2"))
            if not project:
                raise TrackerUnavailable(
                    f"GitHub has no project {self.config.project_number} owned by {self.config.board_owner} "
                    f"that this token can read.",
                    hint="Check project_number, project_owner and project_owner_type in the tracker config.")
            page = mapping(project.get("items"))
            for node in items(page.get("nodes")):
                node = mapping(node)
                content = mapping(node.get("content"))
                number = content.get("number")
                owner_repo = text(mapping(content.get("repository")).get("nameWithOwner")).casefold()
                if not isinstance(number, int) or owner_repo != repository:
                    continue  # draft issues, pull requests, other repositories
                status = text(mapping(node.get("fieldValueByName")).get("name")) or None
                changed = _optional_time(node.get("updatedAt"))
                board[number] = (status, changed)
            info = mapping(page.get("pageInfo"))
            cursor = text(info.get("endCursor"))
            if info.get("hasNextPage") is not True or not cursor or cursor == variables["after"]:
                return board
            variables["after"] = cursor

    async def _issue_board_statuses(self, numbers: list[int], budget: WaitBudget) -> dict[int, str | None]:
        """Issue number → its status field value on the configured project, from each issue's
        ``projectItems``."""
        owner, name = self.config.repository.split("/")
        statuses: dict[int, str | None] = {}
        for start in range(0, len(numbers), _STATUS_BATCH):
            batch = numbers[start:start + _STATUS_BATCH]
            fields = "".join(_ISSUE_STATUS_FRAGMENT % {"number": n} for n in batch)
            query = ("query($owner: String!, $name: String!, $field: String!) {\n"
                     "  repository(owner: $owner, name: $name) {" + fields + "\n  }\n}")
            data = await self._graphql(query, {"owner": owner, "name": name, "field": self.config.status_field},
                                       budget)
            repo = mapping(data.get("repository"))
            for number in batch:
                statuses[number] = None
                for node in items(mapping(mapping(repo.get(f"i{number}")).get("projectItems")).get("nodes")):
                    project = mapping(mapping(node).get("project"))
                    owner_login = text(mapping(project.get("owner")).get("login"))
                    if project.get("number") == self.config.project_number and \
                            owner_login.casefold() == self.config.board_owner.casefold():
                        statuses[number] = text(mapping(mapping(node).get("fieldValueByName")).get("name")) or None
        return statuses

    def _ticket(self, issue: Any, *, board_status: str | None = None, from_tracker: bool = True) -> TicketData:
        try:
            return self._ticket_of(mapping(issue), board_status)
        except InvalidInput as exc:
            if from_tracker:
                raise TrackerUnavailable(exc.message, hint=exc.hint) from None
            raise

    def _ticket_of(self, issue: dict[str, Any], board_status: str | None) -> TicketData:
        number = issue.get("number")
        if not isinstance(number, int) or number < 1:
            raise InvalidInput(f"{TRACKER} sent an issue without a number.",
                               hint="Check that api_url points at GitHub's REST API.")
        labels = [_label_name(label) for label in items(issue.get("labels"))]
        labels = [label for label in labels if label]
        closed = text(issue.get("state")) == "closed"
        if board_status is not None and not closed:
            status, category = board_status, self._board_category(board_status)
        elif closed:
            status, category = CLOSED, StatusCategory.DONE
        else:
            status, category = status_of(closed=False, labels=labels, status_labels=self.config.status_labels,
                                         label_categories=self.config.label_categories)
        assignees = [a for a in (_assignee(user) for user in items(issue.get("assignees"))) if a]
        if not assignees and mapping(issue.get("assignee")):
            assignees = [a for a in [_assignee(issue["assignee"])] if a]
        return TicketData(
            key=f"{self.config.key_prefix}-{number}",
            title=text(issue.get("title")) or f"#{number}",
            description=text(issue.get("body")),
            status=status,
            status_category=category,
            assignee=(assignees[0].username or assignees[0].id) if assignees else None,
            assignees=assignees,
            labels=labels,
            created_at=timestamp(issue.get("created_at"), field="created_at", tracker=TRACKER),
            updated_at=timestamp(issue.get("updated_at"), field="updated_at", tracker=TRACKER),
            url=text(issue.get("html_url")) or None,
            reference=f"{self.config.repository}#{number}",
            external_id=str(issue["id"]) if isinstance(issue.get("id"), int) else None,
        )

    def _board_category(self, status: str) -> StatusCategory:
        for name, category in self.config.status_categories.items():
            if name.casefold() == status.casefold():
                return category
        return StatusCategory.IN_PROGRESS


def _label_name(label: Any) -> str:
    return label if isinstance(label, str) else text(mapping(label).get("name"))


def _assignee(user: Any) -> Assignee | None:
    user = mapping(user)
    if not user:
        return None
    return Assignee(
        id=str(user["id"]) if isinstance(user.get("id"), int) else None,
        username=text(user.get("login")) or None,
        email=text(user.get("email")) or None,
        display_name=text(user.get("name")) or None,
    )


def _optional_time(value: Any) -> datetime | None:
    try:
        return timestamp(value, field="updatedAt", tracker=TRACKER)
    except InvalidInput:
        return None
