"""Workspaces follow their tracker's tickets: a GitLab project (its documented API replayed on
loopback — a contract fake, since GitLab cannot run here) feeds the board; a webhook closing
the issue leads, after the grace period, to a purge with rescue and an email received by a real
SMTP server; a tracker outage marks tickets stale and purges nothing."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from taskspace.testing.replay import ReplayServer, Reply
from taskspace.testing.server import free_port
from tests.integration.conftest import Stack, StackFactory

pytestmark = pytest.mark.docker

PAYLOADS = Path(__file__).resolve().parents[1] / "contract" / "payloads" / "gitlab"
SECRET = "hook-secret-value"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages.append(message_from_bytes(envelope.content))  # type: ignore[attr-defined]
        return "250 OK"

    def wait_for(self, subject_part: str, timeout: float = 30) -> Message:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages:
                if subject_part in str(message["Subject"]):
                    return message
            time.sleep(0.1)
        raise AssertionError(f"no email about {subject_part!r}; got {[m['Subject'] for m in self.messages]}")


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


def issue(iid: int, title: str, *, state: str = "opened", assignee: str = "alice") -> dict:
    data = copy.deepcopy(json.loads((PAYLOADS / "issues_page1.json").read_text())[0])
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    data.update(iid=iid, id=1000 + iid, title=title, state=state, created_at=now, updated_at=now, labels=[],
                web_url=f"https://gitlab.example.com/shop/payments/-/issues/{iid}")
    data["assignees"] = [{**data["assignees"][0], "username": assignee}]
    data["assignee"] = data["assignees"][0]
    return data


def closing_hook(iid: int, title: str) -> bytes:
    hook = json.loads((PAYLOADS / "webhook_issue_closed.json").read_text())
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    attributes = hook["object_attributes"]
    attributes.update(iid=iid, id=1000 + iid, title=title, state="closed", action="close", updated_at=now,
                      closed_at=now, url=f"https://gitlab.example.com/shop/payments/-/issues/{iid}")
    return json.dumps(hook).encode()


def link_project(stack: Stack, gitlab: ReplayServer, *, grace: str) -> str:
    """A second project on the stack's repositories, whose tickets come from GitLab."""
    response = stack.api("POST", "/projects", json={
        "name": "payments", "key": "PAY", "grace": grace, "tracker": "gitlab",
        "repos": [stack.git.url(stack.primary), stack.git.url(stack.secondary)],
        "tracker_config": {"base_url": gitlab.url, "token": "glpat-test-token", "project": "4",
                           "webhook_secret": SECRET}})
    assert response.status_code == 201, response.text
    assert "glpat-test-token" not in response.text and response.json()["tracker_config"]["token"] == "***"
    return "payments"


def hook(stack: Stack, body: bytes, *, secret: str = SECRET, delivery: str) -> dict:
    response = stack.server.api.post(f"{stack.server.url}/hooks/gitlab", content=body, headers={
        "X-Gitlab-Token": secret, "X-Gitlab-Event": "Issue Hook", "Idempotency-Key": delivery,
        "Content-Type": "application/json"})
    return {"status": response.status_code, **(response.json() if response.content else {})}


def test_a_closed_issue_purges_its_workspace_after_the_grace_period(
        make_stack: StackFactory, inbox: tuple[Inbox, int]) -> None:
    mail, smtp_port = inbox
    stack = make_stack(start=False, env={
        "TASKSPACE_SMTP_HOST": "127.0.0.1", "TASKSPACE_SMTP_PORT": str(smtp_port),
        "TASKSPACE_SMTP_SECURITY": "none", "TASKSPACE_SMTP_FROM": "taskspace <ts@example.com>",
        "TASKSPACE_TRACKER_SYNC_INTERVAL": "1", "TASKSPACE_RECONCILE_INTERVAL": "1"})
    from tests.integration.conftest import setup

    setup(stack)
    stack.api("PATCH", "/users/admin", json={"email": "admin@example.com", "tracker_accounts": ["alice"]})
    with ReplayServer(credentials=["PRIVATE-TOKEN glpat-test-token"]) as gitlab:
        gitlab.route("GET", "/api/v4/projects/4/issues",
                     Reply(200, [issue(7, "Refunds <b>fail</b> for EUR"), issue(8, "Someone else's", assignee="bob")]))
        link_project(stack, gitlab, grace="3s")
        synced = stack.api("POST", "/projects/payments/sync").json()
        assert synced["tracker_synced_at"] and synced["tracker_stale_since"] is None
        assert gitlab.requests_to("/api/v4/projects/4/issues")[0].authorized is True
        mine = stack.api("GET", "/tickets", params={"mine": True, "project": "payments"}).json()
        assert [(t["key"], t["title"], t["assignee"]) for t in mine] == [("PAY-7", "Refunds <b>fail</b> for EUR",
                                                                         "admin")]

        ws = stack.launch_ready("PAY-7")
        ready = mail.wait_for("PAY-7 is ready")
        assert ready["To"] == "admin@example.com"
        assert f"{stack.server.url}/w/PAY-7" in ready.get_payload()
        stack.sh("PAY-7", "echo half-done > refund.txt")

        # GitLab closes the issue: the webhook (signed with the shared secret) is applied once.
        body = closing_hook(7, "Refunds <b>fail</b> for EUR")
        assert hook(stack, body, secret="wrong", delivery="d-1")["status"] == 401
        first = hook(stack, body, delivery="d-1")
        assert (first["status"], first["duplicate"], first["changed"]) == (200, False, 1)
        assert hook(stack, body, delivery="d-1")["duplicate"] is True

        scheduled = mail.wait_for("PAY-7 will be purged")
        assert "rescue/PAY-7" in scheduled.get_payload()
        ws = stack.server.wait_for("PAY-7", {"purged", "purge_blocked"}, 60)
        assert ws["state"] == "purged"
        rescued = [b for b in stack.git.branches(stack.primary) if b.startswith("rescue/PAY-7-")]
        assert stack.git.read_file(stack.primary, rescued[0], "refund.txt") == b"half-done\n"
        purged = mail.wait_for("PAY-7 was purged")
        assert rescued[0] in purged.get_payload()
        events = stack.api("GET", f"/workspaces/{ws['id']}/events").json()["events"]
        assert any(e["actor"] == "policy" and "grace period of 3s" in (e["reason"] or "") for e in events)


def test_a_tracker_outage_marks_tickets_stale_and_purges_nothing(make_stack: StackFactory) -> None:
    stack = make_stack(env={"TASKSPACE_TRACKER_SYNC_INTERVAL": "1", "TASKSPACE_RECONCILE_INTERVAL": "1"})
    stack.api("PATCH", "/users/admin", json={"tracker_accounts": ["alice"]})
    with ReplayServer(credentials=["PRIVATE-TOKEN glpat-test-token"]) as gitlab:
        route = gitlab.route("GET", "/api/v4/projects/4/issues", Reply(200, [issue(9, "Export to CSV")]))
        link_project(stack, gitlab, grace="0")
        stack.api("POST", "/projects/payments/sync")
        stack.launch_ready("PAY-9")

        # GitLab goes down; meanwhile a webhook says the issue is closed.
        route.replies[:] = [Reply(500, {"message": "500 Internal Server Error"})]
        synced = stack.api("POST", "/projects/payments/sync").json()
        assert synced["tracker_stale_since"] and "500" in synced["tracker_error"]
        assert hook(stack, closing_hook(9, "Export to CSV"), delivery="d-9")["changed"] == 1
        stack.api("POST", "/reconcile")
        preview = stack.api("GET", "/policy/preview", params={"project": "payments"}).json()
        assert [(r["key"], r["action"]) for r in preview] == [("PAY-9", "hold")]
        assert "stale data" in preview[0]["reason"]
        assert stack.api("GET", "/workspaces/PAY-9").json()["state"] == "ready", "nothing purged on stale data"

        # The board says so.
        from tests.integration.test_accounts import sign_in

        password = (stack.server.data_dir / "initial-admin-password").read_text().strip()
        board = sign_in(stack, "admin", password).get("/").text
        assert "could not be read" in board and "stale" in board

        # GitLab is back and agrees the issue is closed: now the purge goes ahead.
        closed = issue(9, "Export to CSV", state="closed")
        route.replies[:] = [Reply(200, [closed])]
        synced = stack.api("POST", "/projects/payments/sync").json()
        assert synced["tracker_stale_since"] is None
        ws = stack.server.wait_for("PAY-9", {"purged", "purge_blocked"}, 60)
        assert ws["state"] == "purged"
