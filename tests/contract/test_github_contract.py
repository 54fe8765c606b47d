"""Contract tests of the GitHub tracker (REST issues, Projects v2 status through GraphQL, issues
webhooks) against a local server replaying the documented responses. These are fakes of a
service that cannot run here."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
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
from taskspace.plugins.trackers.github import GitHubConfig, GitHubTracker
from taskspace.testing.replay import ReplayServer, Reply
from tests.contract.support import assert_no_secret, closed_port_url, payload, payload_bytes

TOKEN = "github_pat_11ABCDEFG0example-token-value"
WEBHOOK_SECRET = "github-hook-secret-5d8e"
ISSUES = "/repos/octo-org/payments/issues"
NEXT_PAGE = "/repositories/1296269/issues"


@pytest.fixture
def server() -> Iterator[ReplayServer]:
    with ReplayServer(credentials=[f"Bearer {TOKEN}"],
                      unauthorized=Reply(401, payload("github/bad_credentials.json"))) as s:
        yield s


def github(server_url: str, **overrides: object) -> GitHubTracker:
    config = {"api_url": server_url, "token": TOKEN, "repository": "octo-org/payments", "key_prefix": "PAY",
              "status_labels": ["In Review", "Doing"], "webhook_secret": WEBHOOK_SECRET} | overrides
    return GitHubTracker(GitHubConfig(**config))


def signed(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def hook_headers(body: bytes, event: str = "issues", delivery: str | None = "72d3162e-cc78-11e3-81ab-4c9367dc0958",
                 ) -> dict[str, str]:
    headers = {"X-GitHub-Event": event, "X-Hub-Signature-256": signed(body), "Content-Type": "application/json",
               "User-Agent": "GitHub-Hookshot/044aadd", "X-GitHub-Hook-ID": "109948940"}
    return headers | ({"X-GitHub-Delivery": delivery} if delivery else {})


def test_the_plugin_is_registered_with_its_capabilities() -> None:
    cls = load_tracker("github")
    assert cls is GitHubTracker
    assert issubclass(cls, SupportsWebhooks) and issubclass(cls, SupportsFetch)


async def test_full_sync_follows_link_next_and_skips_pull_requests(server: ReplayServer) -> None:
    next_url = f"{server.url}{NEXT_PAGE}?page=2&per_page=100&state=all&sort=created&direction=asc"
    links = f'<{next_url}>; rel="next", <{next_url}>; rel="last"'
    server.route("GET", NEXT_PAGE, Reply(200, payload("github/issues_page2.json"), headers={
        "Link": f'<{next_url.replace("page=2", "page=1")}>; rel="prev", <{next_url.replace("page=2", "page=1")}>; rel="first"'}))
    server.route("GET", ISSUES, Reply(200, payload("github/issues_page1.json"), headers={"Link": links}))
    tracker = github(server.url)
    try:
        tickets = await tracker.fetch_updated(None)
    finally:
        await tracker.close()

    assert [(t.key, t.status, t.status_category) for t in tickets] == [
        ("PAY-1347", "Doing", StatusCategory.IN_PROGRESS),
        ("PAY-1349", "Open", StatusCategory.TODO),
        ("PAY-1350", "Closed", StatusCategory.DONE),  # closed as not planned: done all the same
    ]
    first = tickets[0]
    assert first.reference == "octo-org/payments#1347" and first.external_id == "1"
    assert first.url == "https://github.com/octo-org/payments/issues/1347"
    assert first.assignee == "hubot" and first.assignees[0].id == "1002"
    assert first.labels == ["bug", "Doing"] and first.description == "I'm having a problem with refunds."
    assert tickets[1].description == "" and tickets[1].assignee is None
    assert first.created_at == datetime(2024, 5, 1, 9, 0, tzinfo=UTC)

    listed, paged = server.requests
    assert listed.path == ISSUES and paged.path == NEXT_PAGE and paged.param("page") == "2"
    assert listed.param("state") == "all" and listed.param("per_page") == "100" and listed.param("since") is None
    assert listed.headers["x-github-api-version"] == "2022-11-28"
    assert listed.headers["accept"] == "application/vnd.github+json"
    assert all(r.auth_scheme == "Bearer" and r.authorized for r in server.requests)


async def test_incremental_sync_sends_since_and_sees_close_and_reopen(server: ReplayServer) -> None:
    server.route("GET", ISSUES, Reply(200, payload("github/issues_closed.json")),
                 Reply(200, payload("github/issues_reopened.json")))
    tracker = github(server.url)
    try:
        closed = await tracker.fetch_updated(datetime(2024, 5, 4, 15, 0, tzinfo=UTC))
        reopened = await tracker.fetch_updated(datetime(2024, 5, 5, 7, 30, tzinfo=UTC))
    finally:
        await tracker.close()
    assert [(t.key, t.status, t.status_category) for t in closed] == [("PAY-1347", "Closed", StatusCategory.DONE)]
    assert [(t.key, t.status, t.status_category) for t in reopened] == [
        ("PAY-1347", "In Review", StatusCategory.IN_PROGRESS)]
    assert [r.param("since") for r in server.requests] == ["2024-05-04T15:00:00Z", "2024-05-05T07:30:00Z"]


def test_webhook_with_a_good_signature_reports_the_issue(server: ReplayServer) -> None:
    tracker = github(server.url)
    body = payload_bytes("github/webhook_issues_closed.json")
    delivery = tracker.parse_webhook(hook_headers(body), body)
    assert delivery.delivery_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    [ticket] = delivery.tickets
    assert (ticket.key, ticket.status, ticket.status_category) == ("PAY-1347", "Closed", StatusCategory.DONE)
    # A redelivery keeps its X-GitHub-Delivery; a delivery without one is known by its body.
    assert tracker.parse_webhook(hook_headers(body), body).delivery_id == delivery.delivery_id
    anonymous = tracker.parse_webhook(hook_headers(body, delivery=None), body)
    assert anonymous.delivery_id == "sha256:" + hashlib.sha256(body).hexdigest()

    deleted_body = payload_bytes("github/webhook_issues_deleted.json")
    deleted = tracker.parse_webhook(hook_headers(deleted_body, delivery="a1"), deleted_body)
    assert deleted.deleted == ["PAY-1349"] and deleted.tickets == []
    ping_body = payload_bytes("github/webhook_ping.json")
    ping = tracker.parse_webhook(hook_headers(ping_body, event="ping", delivery="p1"), ping_body)
    assert (ping.delivery_id, ping.tickets, ping.deleted) == ("p1", [], [])


def test_webhook_with_a_wrong_or_missing_signature_is_rejected(server: ReplayServer) -> None:
    tracker = github(server.url)
    body = payload_bytes("github/webhook_issues_closed.json")
    with pytest.raises(WebhookRejected) as wrong:
        tracker.parse_webhook(hook_headers(body) | {"X-Hub-Signature-256": signed(body, "guess")}, body)
    assert "X-Hub-Signature-256" in wrong.value.message and "webhook_secret" in (wrong.value.hint or "")
    headers = hook_headers(body)
    del headers["X-Hub-Signature-256"]
    with pytest.raises(WebhookRejected) as missing:
        tracker.parse_webhook(headers | {"X-Hub-Signature": "sha1=" + "0" * 40}, body)
    assert "X-Hub-Signature-256" in missing.value.message
    for error in (wrong.value, missing.value):
        assert_no_secret(error, WEBHOOK_SECRET, TOKEN)


def test_webhooks_that_are_not_json_or_for_another_repository(server: ReplayServer) -> None:
    tracker = github(server.url)
    with pytest.raises(InvalidInput):
        tracker.parse_webhook(hook_headers(b"[not json"), b"[not json")
    hook = payload("github/webhook_issues_closed.json")
    hook["repository"]["full_name"] = "octo-org/shipping"
    body = json.dumps(hook).encode()
    assert tracker.parse_webhook(hook_headers(body), body).tickets == []


async def test_waits_out_a_primary_rate_limit_403_until_the_reset(server: ReplayServer) -> None:
    reset = math.ceil(time.time()) + 1
    limited = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0", "x-ratelimit-used": "5000",
               "x-ratelimit-reset": str(reset), "x-ratelimit-resource": "core"}
    server.route("GET", ISSUES, Reply(403, payload("github/rate_limited.json"), headers=limited),
                 Reply(200, payload("github/issues_closed.json")))
    tracker = github(server.url)
    try:
        tickets = await tracker.fetch_updated(None)
    finally:
        await tracker.close()
    assert [t.key for t in tickets] == ["PAY-1347"]
    first, second = server.requests
    assert (first.status, second.status) == (403, 200)
    assert 0.9 <= second.at - first.at < 3 and time.time() >= reset - 0.05


async def test_waits_out_a_secondary_rate_limit_429_with_retry_after(server: ReplayServer) -> None:
    server.route("GET", ISSUES, Reply(429, {"message": "You have exceeded a secondary rate limit."},
                                      headers={"retry-after": "1"}),
                 Reply(200, payload("github/issues_closed.json")))
    tracker = github(server.url)
    try:
        assert [t.key for t in await tracker.fetch_updated(None)] == ["PAY-1347"]
    finally:
        await tracker.close()
    first, second = server.requests
    assert 0.9 <= second.at - first.at < 3


async def test_a_403_without_rate_limit_headers_is_refused_access(server: ReplayServer) -> None:
    server.route("GET", ISSUES, Reply(403, payload("github/forbidden.json"), headers={"x-ratelimit-remaining": "4999"}))
    tracker = github(server.url)
    try:
        with pytest.raises(TrackerUnavailable) as caught:
            await tracker.fetch_updated(None)
    finally:
        await tracker.close()
    assert len(server.requests) == 1
    assert "refused the credentials" in caught.value.message
    assert "Resource not accessible by personal access token" in caught.value.message
    assert_no_secret(caught.value, TOKEN)


async def test_bad_credentials_are_tracker_unavailable_without_the_token(server: ReplayServer) -> None:
    wrong = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
    tracker = github(server.url, token=wrong)
    try:
        with pytest.raises(TrackerUnavailable) as caught:
            await tracker.fetch_updated(None)
    finally:
        await tracker.close()
    assert [(r.auth_scheme, r.authorized, r.status) for r in server.requests] == [("Bearer", False, 401)]
    assert "Bad credentials" in caught.value.message and "token" in (caught.value.hint or "")
    assert_no_secret(caught.value, wrong)


async def test_a_500_is_retried_and_a_permanent_one_is_tracker_unavailable(server: ReplayServer) -> None:
    route = server.route("GET", ISSUES, Reply(500, {"message": "Server Error"}),
                         Reply(200, payload("github/issues_closed.json")))
    tracker = github(server.url)
    try:
        assert [t.key for t in await tracker.fetch_updated(None)] == ["PAY-1347"]
        route.replies, route.hits = [Reply(500, {"message": "Server Error"})], 0
        with pytest.raises(TrackerUnavailable) as caught:
            await tracker.fetch_updated(None)
    finally:
        await tracker.close()
    assert [r.status for r in server.requests] == [500, 200, 500, 500, 500]
    assert "GitHub" in caught.value.message and "500" in caught.value.message
    assert_no_secret(caught.value, TOKEN)


async def test_unreachable_github_is_tracker_unavailable() -> None:
    tracker = github(closed_port_url())
    try:
        with pytest.raises(TrackerUnavailable) as caught:
            await tracker.fetch_updated(None)
    finally:
        await tracker.close()
    assert "Cannot reach GitHub" in caught.value.message
    assert_no_secret(caught.value, TOKEN)


# --- Projects (v2) board status ---------------------------------------------------------------


def board(server_url: str) -> GitHubTracker:
    return github(server_url, project_number=7, status_categories={"Todo": "todo", "In Progress": "in_progress",
                                                                   "Done": "done"})


async def test_board_mode_reads_the_status_field_and_finds_cards_moved_since_the_last_sync(
        server: ReplayServer) -> None:
    server.route("POST", "/graphql", Reply(200, payload("github/graphql_project_items.json")), body="projectV2(")
    server.route("GET", f"{ISSUES}/1351", Reply(200, payload("github/issue_1351.json")))
    server.route("GET", ISSUES, Reply(200, payload("github/issues_page1.json")))
    tracker = board(server.url)
    try:
        tickets = await tracker.fetch_updated(datetime(2024, 5, 6, 9, 0, tzinfo=UTC))
        workflow = tracker.workflow()
    finally:
        await tracker.close()
    # 1351 was not updated as an issue, but its card moved to Done after the last sync.
    assert [(t.key, t.status, t.status_category) for t in tickets] == [
        ("PAY-1347", "In Progress", StatusCategory.IN_PROGRESS),
        ("PAY-1351", "Done", StatusCategory.DONE),
    ]
    [query] = server.requests_to("/graphql")
    sent = query.json()
    assert sent["variables"] == {"owner": "octo-org", "number": 7, "field": "Status", "after": None}
    assert "organization(login: $owner)" in sent["query"]
    assert server.requests_to(ISSUES)[0].param("since") == "2024-05-06T09:00:00Z"
    assert [s.name for s in workflow.statuses] == ["Todo", "In Progress", "Done", "Open", "In Review", "Doing",
                                                   "Closed"]


async def test_board_mode_fetch_and_webhooks(server: ReplayServer) -> None:
    server.route("POST", "/graphql", Reply(200, payload("github/graphql_issue_project_items.json")),
                 body="projectItems")
    server.route("GET", f"{ISSUES}/1347", Reply(200, payload("github/issues_reopened.json")[0]))
    server.route("GET", f"{ISSUES}/9999", Reply(404, {"message": "Not Found"}))
    tracker = board(server.url)
    try:
        tickets = await tracker.fetch(["PAY-1347", "PAY-9999"])
        with pytest.raises(InvalidInput):
            await tracker.fetch(["OPS-1347"])
    finally:
        await tracker.close()
    # The issue is on two projects; the status comes from project 7 of octo-org.
    assert [(t.key, t.status, t.status_category) for t in tickets] == [
        ("PAY-1347", "In Progress", StatusCategory.IN_PROGRESS)]
    body = payload_bytes("github/webhook_issues_closed.json")
    delivery = tracker.parse_webhook(hook_headers(body), body)
    assert (delivery.tickets, delivery.refetch) == ([], ["PAY-1347"])


async def test_board_mode_graphql_errors_are_tracker_unavailable(server: ReplayServer) -> None:
    server.route("GET", ISSUES, Reply(200, []))
    server.route("POST", "/graphql", Reply(200, {"data": {"organization": {"projectV2": None}}, "errors": [
        {"type": "NOT_FOUND", "path": ["organization", "projectV2"],
         "message": "Could not resolve to a ProjectV2 with the number 7."}]}))
    tracker = board(server.url)
    try:
        with pytest.raises(TrackerUnavailable) as caught:
            await tracker.fetch_updated(None)
    finally:
        await tracker.close()
    assert "Could not resolve to a ProjectV2" in caught.value.message
    assert "project_number" in (caught.value.hint or "")


def test_config_validation() -> None:
    base = {"token": TOKEN, "key_prefix": "PAY"}
    with pytest.raises(ValidationError):
        GitHubConfig(**base, repository="octo-org")
    with pytest.raises(ValidationError):
        GitHubConfig(**base, repository="octo-org/payments", status_labels=["Doing", "doing"])
    with pytest.raises(ValidationError) as in_url:
        GitHubConfig(**base, repository="octo-org/payments", api_url=f"https://x:{TOKEN}@ghe.example.com/api/v3")
    assert_no_secret(in_url.value, TOKEN)
    enterprise = GitHubTracker(GitHubConfig(**base, repository="octo-org/payments",
                                            api_url="https://ghe.example.com/api/v3/"))
    assert enterprise._graphql_url == "https://ghe.example.com/api/graphql"
