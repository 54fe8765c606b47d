"""Contract tests of the GitLab tracker (REST v4 issues, Issue Hook webhooks) against a local server
replaying the documented responses. These are fakes of a service that cannot run here."""

from __future__ import annotations

import hashlib
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
from taskspace.plugins.trackers.gitlab import GitLabConfig, GitLabTracker
from taskspace.testing.replay import ReplayServer, Reply
from tests.contract.support import assert_no_secret, closed_port_url, payload, payload_bytes

TOKEN = "glpat-3xAmPlE-tOkEn-vAlUe"
WEBHOOK_SECRET = "gitlab-hook-secret-91c2"
PROJECT_ISSUES = "/api/v4/projects/shop%2Fpayments/issues"
GROUP_ISSUES = "/api/v4/groups/shop/issues"


@pytest.fixture
def server() -> Iterator[ReplayServer]:
    credentials = [f"PRIVATE-TOKEN {TOKEN}", f"Bearer {TOKEN}"]
    with ReplayServer(credentials=credentials, unauthorized=Reply(401, payload("gitlab/unauthorized.json"))) as s:
        yield s


def gitlab(server_url: str, **overrides: object) -> GitLabTracker:
    config = {"base_url": server_url, "token": TOKEN, "project": "shop/payments", "key_prefix": "PAY",
              "status_labels": ["In Review", "Doing"], "label_categories": {"Doing": "in_progress"},
              "webhook_secret": WEBHOOK_SECRET} | overrides
    return GitLabTracker(GitLabConfig(**config))


def page_headers(page: int, next_page: int | None, total_pages: int = 2) -> dict[str, str]:
    return {"X-Page": str(page), "X-Per-Page": "100", "X-Next-Page": str(next_page or ""),
            "X-Prev-Page": str(page - 1 if page > 1 else ""), "X-Total": "3", "X-Total-Pages": str(total_pages)}


def test_the_plugin_is_registered_with_its_capabilities() -> None:
    cls = load_tracker("gitlab")
    assert cls is GitLabTracker
    assert issubclass(cls, SupportsWebhooks) and not issubclass(cls, SupportsFetch)


async def test_full_sync_follows_x_next_page(server: ReplayServer) -> None:
    server.route("GET", PROJECT_ISSUES, Reply(200, payload("gitlab/issues_page2.json"), headers=page_headers(2, None)),
                 query={"page": "2"})
    server.route("GET", PROJECT_ISSUES, Reply(200, payload("gitlab/issues_page1.json"), headers=page_headers(1, 2)),
                 query={"page": None})
    tracker = gitlab(server.url)
    try:
        tickets = await tracker.fetch_updated(None)
    finally:
        await tracker.close()

    assert [(t.key, t.status, t.status_category) for t in tickets] == [
        ("PAY-1", "Doing", StatusCategory.IN_PROGRESS),
        ("PAY-2", "Open", StatusCategory.TODO),
        # Carries both status labels: the one listed first in status_labels wins.
        ("PAY-3", "In Review", StatusCategory.IN_PROGRESS),
    ]
    pay1 = tickets[0]
    assert pay1.reference == "shop/payments#1" and pay1.external_id == "84"
    assert pay1.url == "https://gitlab.example.com/shop/payments/-/issues/1"
    assert pay1.description == "Clicking **Refund** shows a spinner forever."
    assert pay1.assignee == "alice" and pay1.assignees[0].id == "5" and pay1.assignees[0].display_name == "Alice Liddell"
    assert pay1.labels == ["bug", "Doing"]
    assert pay1.updated_at == datetime(2024, 4, 3, 15, 20, 11, 123000, tzinfo=UTC)
    assert [a.username for a in tickets[2].assignees] == ["alice", "bob"]

    first, second = server.requests_to(PROJECT_ISSUES)
    assert first.param("page") is None and second.param("page") == "2"
    assert first.param("scope") == "all" and first.param("per_page") == "100" and first.param("state") is None
    assert first.param("updated_after") is None
    assert all(r.auth_scheme == "PRIVATE-TOKEN" and r.authorized for r in server.requests)
    assert "private-token" not in first.headers


async def test_incremental_sync_sends_updated_after_and_sees_close_and_reopen(server: ReplayServer) -> None:
    server.route("GET", PROJECT_ISSUES, Reply(200, payload("gitlab/issues_closed.json"), headers=page_headers(1, None, 1)),
                 Reply(200, payload("gitlab/issues_reopened.json"), headers=page_headers(1, None, 1)))
    tracker = gitlab(server.url)
    try:
        closed = await tracker.fetch_updated(datetime(2024, 4, 5, 11, 0, tzinfo=UTC))
        reopened = await tracker.fetch_updated(datetime(2024, 4, 6, 8, 0, tzinfo=UTC))
    finally:
        await tracker.close()
    # Closed wins over the Doing label it still carries.
    assert [(t.key, t.status, t.status_category) for t in closed] == [("PAY-1", "Closed", StatusCategory.DONE)]
    assert [(t.key, t.status, t.status_category) for t in reopened] == [("PAY-1", "Open", StatusCategory.TODO)]
    first, second = server.requests_to(PROJECT_ISSUES)
    assert first.param("updated_after") == "2024-04-05T11:00:00Z"
    assert second.param("updated_after") == "2024-04-06T08:00:00Z"


async def test_group_mode_keys_by_global_id_and_pages_by_link_header(server: ReplayServer) -> None:
    next_url = f"{server.url}{GROUP_ISSUES}?page=2&per_page=100&scope=all"
    server.route("GET", GROUP_ISSUES, Reply(200, [], headers={"Link": f'<{next_url.replace("page=2", "page=1")}>; rel="first"'}),
                 query={"page": "2"})
    server.route("GET", GROUP_ISSUES, Reply(200, payload("gitlab/group_issues.json"),
                                            headers={"Link": f'<{next_url}>; rel="next"'}), query={"page": None})
    tracker = gitlab(server.url, project=None, group="shop", auth_header="bearer")
    try:
        tickets = await tracker.fetch_updated(None)
    finally:
        await tracker.close()
    # Both issues are #1 of their project: the global id keeps their keys apart.
    assert [(t.key, t.reference) for t in tickets] == [("PAY-84", "shop/payments#1"), ("PAY-97", "shop/shipping#1")]
    assert [r.param("page") for r in server.requests] == [None, "2"]
    assert all(r.auth_scheme == "Bearer" and r.authorized for r in server.requests)


async def test_a_next_link_to_another_host_is_not_followed(server: ReplayServer) -> None:
    server.route("GET", GROUP_ISSUES, Reply(200, payload("gitlab/group_issues.json"),
                                            headers={"Link": '<https://attacker.example/issues?page=2>; rel="next"'}))
    tracker = gitlab(server.url, project=None, group="shop")
    try:
        with pytest.raises(TrackerUnavailable) as caught:
            await tracker.fetch_updated(None)
    finally:
        await tracker.close()
    assert "attacker.example" in caught.value.message
    assert len(server.requests) == 1


def test_webhook_with_the_secret_token_reports_the_issue(server: ReplayServer) -> None:
    tracker = gitlab(server.url)
    body = payload_bytes("gitlab/webhook_issue_closed.json")
    headers = {"X-Gitlab-Event": "Issue Hook", "X-Gitlab-Token": WEBHOOK_SECRET,
               "X-Gitlab-Event-UUID": "13792a34-cac6-4fda-95a8-c58e00a3954e",
               "Idempotency-Key": "f5e5f430-f57b-4e6e-9fac-d9128cd7232f",
               "X-Gitlab-Webhook-UUID": "9a3e07b1-6b2c-4a1e-bb1c-3f0e1b5c2d11"}
    delivery = tracker.parse_webhook(headers, body)
    assert delivery.delivery_id == "f5e5f430-f57b-4e6e-9fac-d9128cd7232f"
    [ticket] = delivery.tickets
    assert (ticket.key, ticket.status, ticket.status_category) == ("PAY-1", "Closed", StatusCategory.DONE)
    assert ticket.reference == "shop/payments#1" and ticket.labels == ["bug"]
    assert ticket.created_at == datetime(2024, 4, 2, 9, 0, tzinfo=UTC)  # "2024-04-02 09:00:00 UTC"
    # Webhooks show "[REDACTED]" for a user without a public email.
    assert ticket.assignees[0].username == "alice" and ticket.assignees[0].email is None

    retried = tracker.parse_webhook(headers | {"X-Gitlab-Webhook-UUID": "another-request"}, body)
    assert retried.delivery_id == delivery.delivery_id
    # Before GitLab 17.4 there is no Idempotency-Key: the event UUID, then the body, identify it.
    older = {k: v for k, v in headers.items() if k != "Idempotency-Key"}
    assert tracker.parse_webhook(older, body).delivery_id == "13792a34-cac6-4fda-95a8-c58e00a3954e"
    bare = {"X-Gitlab-Event": "Issue Hook", "X-Gitlab-Token": WEBHOOK_SECRET}
    assert tracker.parse_webhook(bare, body).delivery_id == "sha256:" + hashlib.sha256(body).hexdigest()


def test_webhook_with_a_wrong_or_missing_token_is_rejected(server: ReplayServer) -> None:
    tracker = gitlab(server.url)
    body = payload_bytes("gitlab/webhook_issue_closed.json")
    with pytest.raises(WebhookRejected) as wrong:
        tracker.parse_webhook({"X-Gitlab-Event": "Issue Hook", "X-Gitlab-Token": "guess"}, body)
    assert "X-Gitlab-Token" in wrong.value.message and "webhook_secret" in (wrong.value.hint or "")
    with pytest.raises(WebhookRejected) as missing:
        tracker.parse_webhook({"X-Gitlab-Event": "Issue Hook"}, body)
    assert "X-Gitlab-Token" in missing.value.message
    for error in (wrong.value, missing.value):
        assert_no_secret(error, WEBHOOK_SECRET, TOKEN)


def test_webhook_that_is_not_json_is_invalid_input(server: ReplayServer) -> None:
    with pytest.raises(InvalidInput):
        gitlab(server.url).parse_webhook({"X-Gitlab-Token": WEBHOOK_SECRET, "X-Gitlab-Event": "Issue Hook"}, b"{oops")


def test_webhooks_for_other_projects_and_events_carry_nothing(server: ReplayServer) -> None:
    tracker = gitlab(server.url)
    hook = payload("gitlab/webhook_issue_closed.json")
    hook["project"]["path_with_namespace"] = "shop/shipping"
    other_project = tracker.parse_webhook({"X-Gitlab-Event": "Issue Hook", "X-Gitlab-Token": WEBHOOK_SECRET},
                                          json.dumps(hook).encode())
    push = tracker.parse_webhook({"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": WEBHOOK_SECRET},
                                 json.dumps({"object_kind": "push", "ref": "refs/heads/main"}).encode())
    assert other_project.tickets == [] and push.tickets == []


async def test_waits_out_a_429_with_retry_after_then_succeeds(server: ReplayServer) -> None:
    limited_headers = {"Retry-After": "1", "RateLimit-Limit": "600", "RateLimit-Observed": "601",
                       "RateLimit-Remaining": "0", "RateLimit-Reset": str(int(time.time()) + 1),
                       "Content-Type": "text/plain"}
    server.route("GET", PROJECT_ISSUES, Reply(429, b"Retry later\n", headers=limited_headers),
                 Reply(200, payload("gitlab/issues_page2.json"), headers=page_headers(1, None, 1)))
    tracker = gitlab(server.url)
    try:
        tickets = await tracker.fetch_updated(None)
    finally:
        await tracker.close()
    assert [t.key for t in tickets] == ["PAY-3"]
    limited, answered = server.requests
    assert (limited.status, answered.status) == (429, 200)
    assert 0.9 <= answered.at - limited.at < 3


async def test_a_500_is_retried_and_a_permanent_one_is_tracker_unavailable(server: ReplayServer) -> None:
    route = server.route("GET", PROJECT_ISSUES, Reply(500, {"message": "500 Internal Server Error"}),
                         Reply(200, payload("gitlab/issues_page2.json"), headers=page_headers(1, None, 1)))
    tracker = gitlab(server.url)
    try:
        assert [t.key for t in await tracker.fetch_updated(None)] == ["PAY-3"]
        route.replies = [Reply(502, b"<html>502 Bad Gateway</html>", headers={"Content-Type": "text/html"})]
        route.hits = 0
        with pytest.raises(TrackerUnavailable) as caught:
            await tracker.fetch_updated(None)
    finally:
        await tracker.close()
    assert [r.status for r in server.requests] == [500, 200, 502, 502, 502]
    assert "GitLab" in caught.value.message and "502" in caught.value.message
    assert_no_secret(caught.value, TOKEN)


async def test_refused_token_is_tracker_unavailable_without_the_token(server: ReplayServer) -> None:
    wrong = "glpat-revoked-token-value"
    tracker = gitlab(server.url, token=wrong)
    try:
        with pytest.raises(TrackerUnavailable) as caught:
            await tracker.fetch_updated(None)
    finally:
        await tracker.close()
    assert [(r.auth_scheme, r.authorized, r.status) for r in server.requests] == [("PRIVATE-TOKEN", False, 401)]
    assert "refused the credentials" in caught.value.message and "read_api" in (caught.value.hint or "")
    assert_no_secret(caught.value, wrong)


async def test_a_project_that_is_not_there_says_so(server: ReplayServer) -> None:
    server.route("GET", PROJECT_ISSUES, Reply(404, {"message": "404 Project Not Found"}))
    tracker = gitlab(server.url)
    try:
        with pytest.raises(TrackerUnavailable) as caught:
            await tracker.fetch_updated(None)
    finally:
        await tracker.close()
    assert "404 Project Not Found" in caught.value.message and "project" in (caught.value.hint or "")


async def test_unreachable_gitlab_is_tracker_unavailable() -> None:
    tracker = gitlab(closed_port_url())
    try:
        with pytest.raises(TrackerUnavailable) as caught:
            await tracker.fetch_updated(None)
    finally:
        await tracker.close()
    assert "Cannot reach GitLab" in caught.value.message
    assert_no_secret(caught.value, TOKEN)


def test_config_needs_exactly_one_of_project_and_group_and_sane_labels() -> None:
    base = {"token": TOKEN, "key_prefix": "PAY"}
    with pytest.raises(ValidationError):
        GitLabConfig(**base)
    with pytest.raises(ValidationError):
        GitLabConfig(**base, project="shop/payments", group="shop")
    with pytest.raises(ValidationError):
        GitLabConfig(**base, project="shop/payments", label_categories={"Doing": "in_progress"})
    with pytest.raises(ValidationError):
        GitLabConfig(**base | {"key_prefix": "pay"}, project="shop/payments")
    with pytest.raises(ValidationError) as in_url:
        GitLabConfig(**base, project="1", base_url=f"https://oauth2:{TOKEN}@gitlab.example.com")
    assert_no_secret(in_url.value, TOKEN)
    assert GitLabConfig(**base, project="shop%2Fpayments").project == "shop/payments"
    workflow = gitlab("https://gitlab.example.com").workflow()
    assert [(s.name, s.category) for s in workflow.statuses] == [
        ("Open", StatusCategory.TODO), ("In Review", StatusCategory.IN_PROGRESS),
        ("Doing", StatusCategory.IN_PROGRESS), ("Closed", StatusCategory.DONE)]
