"""Contract tests of the Jira tracker: Jira Cloud (REST v3, ADF, nextPageToken) and Jira Server /
Data Center (REST v2, startAt paging, personal access token), against a local server replaying
the documented responses. These are fakes of services that cannot run here."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from taskspace.core.errors import InvalidInput
from taskspace.core.tickets import StatusCategory
from taskspace.plugins.registry import load_tracker
from taskspace.plugins.trackers.base import (
    SupportsFetch,
    SupportsWebhooks,
    TrackerUnavailable,
    WebhookRejected,
)
from taskspace.plugins.trackers.jira import JiraConfig, JiraTracker
from taskspace.testing.replay import ReplayServer, Reply
from tests.contract.support import assert_no_secret, closed_port_url, payload, payload_bytes

EMAIL = "mia@example.com"
API_TOKEN = "ATATT3xFfGF0-cloud-token-value"
PAT = "NjM0OTk3-server-pat-value"
SERVER_PASSWORD = "correct horse battery staple"
WEBHOOK_SECRET = "jira-webhook-secret-7f3a"
CLOUD_BASIC = "Basic " + base64.b64encode(f"{EMAIL}:{API_TOKEN}".encode()).decode()
SEARCH_V3 = "/rest/api/3/search/jql"
SEARCH_V2 = "/rest/api/2/search"

ED_1_MARKDOWN = """\
## Steps

1. Save a card on [the profile page](https://shop.example.com/profile)
2. Pay with it

Fails with `card_token_expired` for **every** saved card, *not just old ones*.\\
Reported by @Sam Ortiz

- iOS app
  - version 4.2
- web

```python
token = vault.card_token(card_id)
assert token.valid
```

> Customers are angry.

---

Chart text survives"""


@pytest.fixture
def server() -> Iterator[ReplayServer]:
    credentials = [CLOUD_BASIC, f"Bearer {PAT}",
                   "Basic " + base64.b64encode(f"jdoe:{SERVER_PASSWORD}".encode()).decode()]
    with ReplayServer(credentials=credentials, unauthorized=Reply(401, payload("jira_cloud/unauthorized.json"))) as s:
        yield s


def cloud(server_url: str, **overrides: object) -> JiraTracker:
    config = {"base_url": server_url, "deployment": "cloud", "email": EMAIL, "api_token": API_TOKEN,
              "webhook_secret": WEBHOOK_SECRET, "jql_scope": "project = ED"} | overrides
    return JiraTracker(JiraConfig(**config))


def server_dc(server_url: str, **overrides: object) -> JiraTracker:
    config = {"base_url": server_url, "deployment": "server", "token": PAT, "webhook_secret": WEBHOOK_SECRET,
              "jql_scope": "project = OPS", "page_size": 2} | overrides
    return JiraTracker(JiraConfig(**config))


def signed(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_the_plugin_is_registered_with_its_capabilities() -> None:
    cls = load_tracker("jira")
    assert cls is JiraTracker
    assert issubclass(cls, SupportsWebhooks) and issubclass(cls, SupportsFetch)
    assert cls.webhook_name == "jira"


# --- Jira Cloud -------------------------------------------------------------------------------


async def test_cloud_full_sync_follows_every_page_and_converts_adf(server: ReplayServer) -> None:
    server.route("GET", SEARCH_V3, Reply(200, payload("jira_cloud/search_page2.json")),
                 query={"nextPageToken": "CAEaAggD"})
    server.route("GET", SEARCH_V3, Reply(200, payload("jira_cloud/search_page1.json")), query={"nextPageToken": None})
    tracker = cloud(server.url)
    try:
        tickets = await tracker.fetch_updated(None)
    finally:
        await tracker.close()

    assert [t.key for t in tickets] == ["ED-1", "ED-2", "ED-3"]
    ed1, ed2, ed3 = tickets
    assert (ed1.status, ed1.status_category) == ("In Progress", StatusCategory.IN_PROGRESS)
    assert (ed2.status, ed2.status_category) == ("To Do", StatusCategory.TODO)
    assert (ed3.status, ed3.status_category) == ("In Review", StatusCategory.IN_PROGRESS)
    assert ed1.description == ED_1_MARKDOWN
    assert ed2.description == "" and ed3.description == "Shows USD for EUR orders."
    assert ed1.title == "Checkout fails for saved cards"
    assert ed1.url == f"{server.url}/browse/ED-1" and ed1.external_id == "10002" and ed1.reference == "ED-1"
    assert ed1.labels == ["payments", "regression"]
    assert ed1.created_at == datetime(2024, 3, 3, 22, 15, 22, 417000, tzinfo=UTC)
    # Cloud accounts have no user name: the email when the account shows it, else the account id.
    assert ed1.assignee == EMAIL
    assert ed1.assignees[0].id == "5b10a2844c20165700ede21g" and ed1.assignees[0].display_name == "Mia Krystof"
    assert ed2.assignee == "5b10ac8d82e05b22cc7d4ef5" and ed2.assignees[0].email is None
    assert ed3.assignee is None and ed3.assignees == []

    searches = server.requests_to(SEARCH_V3)
    assert len(searches) == 2
    assert searches[0].param("nextPageToken") is None and searches[1].param("nextPageToken") == "CAEaAggD"
    assert searches[0].param("jql") == "(project = ED) ORDER BY key ASC"
    assert searches[0].param("fields") == "summary,status,assignee,created,updated,description,labels"
    assert all(r.auth_scheme == "Basic" and r.authorized for r in server.requests)
    assert "authorization" not in searches[0].headers
    assert server.requests_to("/rest/api/3/myself") == []  # a full sync needs no time zone


async def test_cloud_incremental_sync_sees_the_move_to_done_and_the_reopen(server: ReplayServer) -> None:
    server.route("GET", "/rest/api/3/myself", Reply(200, payload("jira_cloud/myself.json")))
    server.route("GET", SEARCH_V3, Reply(200, payload("jira_cloud/search_moved_to_done.json")),
                 Reply(200, payload("jira_cloud/search_reopened.json")))
    tracker = cloud(server.url)
    try:
        # 00:30 UTC is 11:30 in Sydney (AEDT, the account's zone), where JQL reads the literal.
        moved = await tracker.fetch_updated(datetime(2024, 3, 7, 0, 30, tzinfo=UTC))
        reopened = await tracker.fetch_updated(datetime(2024, 3, 7, 1, 0, tzinfo=UTC))
        workflow = tracker.workflow()
    finally:
        await tracker.close()

    assert [(t.key, t.status, t.status_category) for t in moved] == [("ED-1", "Done", StatusCategory.DONE)]
    assert [(t.key, t.status, t.status_category) for t in reopened] == [("ED-1", "Reopened", StatusCategory.TODO)]
    first, second = server.requests_to(SEARCH_V3)
    # No status condition: the issue that moved to Done is in the answer, so its workspace can go.
    assert first.param("jql") == 'updated >= "2024-03-07 11:28" AND (project = ED) ORDER BY key ASC'
    assert second.param("jql") == 'updated >= "2024-03-07 11:58" AND (project = ED) ORDER BY key ASC'
    assert len(server.requests_to("/rest/api/3/myself")) == 1  # the zone is asked once
    assert [s.name for s in workflow.statuses] == ["To Do", "In Progress", "Done", "Reopened"]
    assert workflow.category_of("reopened") == StatusCategory.TODO


async def test_cloud_fetch_reads_named_issues_and_leaves_out_gone_ones(server: ReplayServer) -> None:
    issue = payload("jira_cloud/search_moved_to_done.json")["issues"][0]
    server.route("GET", "/rest/api/3/issue/ED-1", Reply(200, issue))
    server.route("GET", "/rest/api/3/issue/ED-404", Reply(404, {
        "errorMessages": ["Issue does not exist or you do not have permission to see it."], "errors": {}}))
    tracker = cloud(server.url)
    try:
        tickets = await tracker.fetch(["ED-1", "ED-404", "ED-1"])
        with pytest.raises(InvalidInput):
            await tracker.fetch(["ED-1) OR project = SECRET"])
    finally:
        await tracker.close()
    assert [(t.key, t.status_category) for t in tickets] == [("ED-1", StatusCategory.DONE)]
    assert [r.path for r in server.requests] == ["/rest/api/3/issue/ED-1", "/rest/api/3/issue/ED-404"]


def test_cloud_webhook_with_a_good_signature_reports_the_issue(server: ReplayServer) -> None:
    tracker = cloud(server.url)
    body = payload_bytes("jira_cloud/webhook_issue_updated.json")
    headers = {"X-Hub-Signature": signed(body), "X-Atlassian-Webhook-Identifier": "d0e3f3a4-7c5f-4c1d-9a11-5b0e",
               "Content-Type": "application/json"}
    delivery = tracker.parse_webhook(headers, body)
    assert delivery.delivery_id == "d0e3f3a4-7c5f-4c1d-9a11-5b0e"
    [ticket] = delivery.tickets
    assert (ticket.key, ticket.status, ticket.status_category) == ("ED-1", "Done", StatusCategory.DONE)
    # Webhooks carry the REST v2 form: wiki markup, kept as it is.
    assert ticket.description == "h2. Steps\n# Save a card\n# Pay with it"
    assert delivery.deleted == []

    retried = tracker.parse_webhook(headers | {"X-Atlassian-Webhook-Retry": "1"}, body)
    assert retried.delivery_id == delivery.delivery_id


def test_cloud_webhook_without_an_id_gets_one_from_its_body(server: ReplayServer) -> None:
    tracker = cloud(server.url)
    body = payload_bytes("jira_cloud/webhook_issue_deleted.json")
    first = tracker.parse_webhook({"x-hub-signature": signed(body)}, body)
    again = tracker.parse_webhook({"x-hub-signature": signed(body)}, body)
    assert first.deleted == ["ED-3"] and first.tickets == []
    assert first.delivery_id == again.delivery_id == "sha256:" + hashlib.sha256(body).hexdigest()


def test_cloud_webhook_with_a_wrong_or_missing_signature_is_rejected(server: ReplayServer) -> None:
    tracker = cloud(server.url)
    body = payload_bytes("jira_cloud/webhook_issue_updated.json")
    with pytest.raises(WebhookRejected) as wrong:
        tracker.parse_webhook({"X-Hub-Signature": signed(body, "another-secret")}, body)
    assert "X-Hub-Signature" in wrong.value.message and "webhook_secret" in (wrong.value.hint or "")
    with pytest.raises(WebhookRejected) as tampered:
        tracker.parse_webhook({"X-Hub-Signature": signed(body)}, body.replace(b"Done", b"Open"))
    with pytest.raises(WebhookRejected) as missing:
        tracker.parse_webhook({}, body)
    assert "X-Hub-Signature" in missing.value.message and "?secret=" in missing.value.message
    with pytest.raises(WebhookRejected) as unconfigured:
        cloud(server.url, webhook_secret=None).parse_webhook({"X-Hub-Signature": signed(body)}, body)
    assert "webhook_secret" in unconfigured.value.message
    for error in (wrong.value, tampered.value, missing.value, unconfigured.value):
        assert_no_secret(error, WEBHOOK_SECRET, API_TOKEN)


def test_cloud_webhook_that_is_not_json_is_invalid_input(server: ReplayServer) -> None:
    tracker = cloud(server.url)
    body = b"<html>not json</html>"
    with pytest.raises(InvalidInput):
        tracker.parse_webhook({"X-Hub-Signature": signed(body)}, body)


async def test_cloud_waits_out_a_429_with_retry_after_then_succeeds(server: ReplayServer) -> None:
    server.route("GET", SEARCH_V3,
                 Reply(429, payload("jira_cloud/rate_limited.json"),
                       headers={"Retry-After": "1", "X-RateLimit-Reset": "2024-03-07T00:31:00Z"}),
                 Reply(200, payload("jira_cloud/search_page2.json")))
    tracker = cloud(server.url)
    started = time.monotonic()
    try:
        tickets = await tracker.fetch_updated(None)
    finally:
        await tracker.close()
    elapsed = time.monotonic() - started
    assert [t.key for t in tickets] == ["ED-3"]
    limited, answered = server.requests_to(SEARCH_V3)
    assert (limited.status, answered.status) == (429, 200)
    assert 0.9 <= answered.at - limited.at < 3 and elapsed < 4


async def test_cloud_rate_limit_longer_than_the_budget_fails_at_once(server: ReplayServer) -> None:
    server.route("GET", SEARCH_V3, Reply(429, payload("jira_cloud/rate_limited.json"), headers={"Retry-After": "120"}))
    tracker = cloud(server.url, max_wait_seconds=5)
    started = time.monotonic()
    try:
        with pytest.raises(TrackerUnavailable) as caught:
            await tracker.fetch_updated(None)
    finally:
        await tracker.close()
    assert time.monotonic() - started < 1
    assert "rate limiting" in caught.value.message and "120 s" in caught.value.message
    assert "max_wait_seconds" in (caught.value.hint or "")


async def test_cloud_retries_a_500_then_succeeds(server: ReplayServer) -> None:
    server.route("GET", SEARCH_V3, Reply(500, {"errorMessages": ["Internal server error"]}),
                 Reply(200, payload("jira_cloud/search_page2.json")))
    tracker = cloud(server.url)
    try:
        tickets = await tracker.fetch_updated(None)
    finally:
        await tracker.close()
    assert [t.key for t in tickets] == ["ED-3"]
    assert [r.status for r in server.requests] == [500, 200]


async def test_cloud_permanent_500_is_tracker_unavailable_after_two_retries(server: ReplayServer) -> None:
    server.route("GET", SEARCH_V3, Reply(503, b"<html>Service Unavailable</html>", headers={"Content-Type": "text/html"}))
    tracker = cloud(server.url)
    try:
        with pytest.raises(TrackerUnavailable) as caught:
            await tracker.fetch_updated(None)
    finally:
        await tracker.close()
    assert len(server.requests) == 3
    message = caught.value.message
    assert "Jira" in message and "503" in message and server.url in message
    assert "status page" in (caught.value.hint or "")
    assert_no_secret(caught.value, API_TOKEN, CLOUD_BASIC)


async def test_cloud_refused_credentials_are_tracker_unavailable_without_the_token(server: ReplayServer) -> None:
    wrong = "ATATT3xFfGF0-revoked-token"
    tracker = cloud(server.url, api_token=wrong)
    try:
        with pytest.raises(TrackerUnavailable) as caught:
            await tracker.fetch_updated(None)
    finally:
        await tracker.close()
    assert [(r.auth_scheme, r.authorized, r.status) for r in server.requests] == [("Basic", False, 401)]
    assert "refused the credentials" in caught.value.message and "401" in caught.value.message
    assert "api_token" in (caught.value.hint or "")
    assert_no_secret(caught.value, wrong, base64.b64encode(f"{EMAIL}:{wrong}".encode()).decode())


async def test_unreachable_jira_is_tracker_unavailable() -> None:
    tracker = cloud(closed_port_url())
    try:
        with pytest.raises(TrackerUnavailable) as caught:
            await tracker.fetch_updated(None)
    finally:
        await tracker.close()
    assert "Cannot reach Jira" in caught.value.message
    assert_no_secret(caught.value, API_TOKEN)


def test_config_takes_exactly_one_credential_scheme_and_never_echoes_it() -> None:
    base = {"base_url": "https://example.atlassian.net"}
    with pytest.raises(ValidationError) as both:
        JiraConfig(**base, deployment="server", username="jdoe", password=SERVER_PASSWORD, token=PAT)
    with pytest.raises(ValidationError):
        JiraConfig(**base, deployment="cloud", email=EMAIL)
    with pytest.raises(ValidationError):
        JiraConfig(**base, deployment="cloud", email=EMAIL, api_token=API_TOKEN, token=PAT)
    with pytest.raises(ValidationError):
        JiraConfig(**base, deployment="server", email=EMAIL, api_token=API_TOKEN)
    with pytest.raises(ValidationError) as in_url:
        JiraConfig(base_url=f"https://mia:{API_TOKEN}@example.atlassian.net", email=EMAIL, api_token=API_TOKEN)
    with pytest.raises(ValidationError) as done_filter:
        JiraConfig(**base, email=EMAIL, api_token=API_TOKEN, jql_scope="project = ED AND statusCategory != Done")
    assert "status" in str(done_filter.value)
    for error in (both.value, in_url.value):
        assert_no_secret(error, SERVER_PASSWORD, PAT, API_TOKEN)
    assert JiraConfig(**base, deployment="server", token=PAT).token is not None


# --- Jira Server / Data Center ----------------------------------------------------------------


async def test_server_full_sync_pages_with_start_at_and_a_bearer_token(server: ReplayServer) -> None:
    server.route("GET", SEARCH_V2, Reply(200, payload("jira_server/search_page2.json")), query={"startAt": "2"})
    server.route("GET", SEARCH_V2, Reply(200, payload("jira_server/search_page1.json")), query={"startAt": "0"})
    tracker = server_dc(server.url)
    try:
        tickets = await tracker.fetch_updated(None)
    finally:
        await tracker.close()

    assert [(t.key, t.status, t.status_category) for t in tickets] == [
        ("OPS-7", "In Progress", StatusCategory.IN_PROGRESS),
        ("OPS-8", "Open", StatusCategory.TODO),
        ("OPS-9", "Ready for Review", StatusCategory.IN_PROGRESS),
    ]
    ops7 = tickets[0]
    assert ops7.description.startswith("h3. Why\nThe certificates expire on *1 March*.\n{code:bash}")
    assert ops7.assignee == "jdoe"
    assert (ops7.assignees[0].id, ops7.assignees[0].email) == ("JIRAUSER10100", "jdoe@example.com")
    assert ops7.url == f"{server.url}/browse/OPS-7"
    first, second = server.requests_to(SEARCH_V2)
    assert (first.param("startAt"), second.param("startAt")) == ("0", "2")
    assert first.param("maxResults") == "2" and first.param("jql") == "(project = OPS) ORDER BY key ASC"
    assert all(r.auth_scheme == "Bearer" and r.authorized for r in server.requests)


async def test_server_incremental_sync_sees_the_move_to_done(server: ReplayServer) -> None:
    server.route("GET", "/rest/api/2/myself", Reply(200, payload("jira_server/myself.json")))
    server.route("GET", SEARCH_V2, Reply(200, payload("jira_server/search_moved_to_done.json")))
    tracker = server_dc(server.url, page_size=100)
    try:
        tickets = await tracker.fetch_updated(datetime(2024, 2, 15, 8, 0, tzinfo=UTC))
    finally:
        await tracker.close()
    assert [(t.key, t.status, t.status_category) for t in tickets] == [("OPS-7", "Closed", StatusCategory.DONE)]
    [search] = server.requests_to(SEARCH_V2)
    # 08:00 UTC is 09:00 in Berlin, the account's zone.
    assert search.param("jql") == 'updated >= "2024-02-15 08:58" AND (project = OPS) ORDER BY key ASC'


async def test_server_with_username_and_password_uses_basic_auth(server: ReplayServer) -> None:
    server.route("GET", SEARCH_V2, Reply(200, payload("jira_server/search_moved_to_done.json")))
    tracker = server_dc(server.url, token=None, username="jdoe", password=SERVER_PASSWORD)
    try:
        tickets = await tracker.fetch_updated(None)
    finally:
        await tracker.close()
    assert [t.key for t in tickets] == ["OPS-7"]
    assert [(r.auth_scheme, r.authorized) for r in server.requests] == [("Basic", True)]


async def test_server_refused_token_is_tracker_unavailable(server: ReplayServer) -> None:
    tracker = server_dc(server.url, token="expired-pat-value")
    try:
        with pytest.raises(TrackerUnavailable) as caught:
            await tracker.fetch_updated(None)
    finally:
        await tracker.close()
    assert "refused the credentials" in caught.value.message and "token" in (caught.value.hint or "")
    assert_no_secret(caught.value, "expired-pat-value")


def test_data_center_webhook_with_the_secret_in_the_url(server: ReplayServer) -> None:
    tracker = server_dc(server.url)
    body = payload_bytes("jira_server/webhook_issue_created.json")
    delivery = tracker.parse_webhook({"Content-Type": "application/json"}, body, query={"secret": WEBHOOK_SECRET})
    [ticket] = delivery.tickets
    assert (ticket.key, ticket.status_category, ticket.assignee) == ("OPS-10", StatusCategory.TODO, "jdoe")
    assert delivery.delivery_id == "sha256:" + hashlib.sha256(body).hexdigest()
    assert tracker.parse_webhook({}, body, query={"secret": WEBHOOK_SECRET}).delivery_id == delivery.delivery_id

    with pytest.raises(WebhookRejected) as wrong:
        tracker.parse_webhook({}, body, query={"secret": "guess"})
    assert "secret URL parameter" in wrong.value.message
    assert_no_secret(wrong.value, WEBHOOK_SECRET)
    # Data Center 10 signs like Cloud; a signature is checked even when the URL has a secret.
    assert tracker.parse_webhook({"X-Hub-Signature": signed(body)}, body).tickets[0].key == "OPS-10"
    with pytest.raises(WebhookRejected):
        tracker.parse_webhook({"X-Hub-Signature": signed(body, "guess")}, body, query={"secret": WEBHOOK_SECRET})


def test_webhook_events_without_an_issue_change_carry_nothing(server: ReplayServer) -> None:
    tracker = cloud(server.url)
    body = json.dumps({"timestamp": 1, "webhookEvent": "comment_created", "comment": {"id": "1"}}).encode()
    delivery = tracker.parse_webhook({"X-Hub-Signature": signed(body)}, body)
    assert (delivery.tickets, delivery.deleted, delivery.refetch) == ([], [], [])
