"""Notifications: the messages (plain text and Slack-compatible JSON, untrusted titles kept as
text), the outbox rows per channel, and delivery to a real SMTP server (aiosmtpd, in this
process) and a real HTTP receiver on loopback: retries with back-off, giving up, the claim that
keeps two senders from sending one row twice, and errors that never hold the SMTP password."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import json
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import SecretStr
from sqlalchemy import select, update

from taskspace.db.engine import transaction
from taskspace.db.models import Notification, User, utcnow
from taskspace.services import notifications
from taskspace.services.notifications import NotificationSender, deliver_due, enqueue, enqueue_admins, render
from taskspace.services.runtime import Runtime, build_runtime

TITLE = 'Fix <b>login</b> & "quotes" {braces} %s — café 🚀'


# Real receivers ---------------------------------------------------------------------------------


class Inbox:
    """An aiosmtpd handler that keeps what it receives; optionally checks a login."""

    def __init__(self, *, password: str | None = None, echo_password: bool = False):
        self.messages: list[Envelope] = []
        self.logins: list[tuple[str, str]] = []
        self.password = password
        self.echo_password = echo_password
        self.port = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append(envelope)
        return "250 OK"

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                     auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((login, password))
        if password == self.password:
            return AuthResult(success=True)
        if self.echo_password:  # a careless server that repeats what it was given
            blob = base64.b64encode(f"\0{login}\0{password}".encode()).decode()
            return AuthResult(success=False, handled=False,
                              message=f"535 5.7.8 {login}/{password} ({blob}) not accepted")
        return AuthResult(success=False, handled=False)

    def parsed(self, index: int = -1) -> EmailMessage:
        content = self.messages[index].original_content
        assert content is not None
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return message


async def start_smtp(inbox: Inbox) -> asyncio.Server:
    """A real SMTP server (aiosmtpd) on 127.0.0.1, a free port, in this event loop. Plain SMTP:
    no STARTTLS, no TLS; AUTH allowed without TLS (loopback only)."""
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(inbox, hostname="smtp.test", auth_require_tls=False, authenticator=inbox.authenticate),
        "127.0.0.1", 0)
    inbox.port = server.sockets[0].getsockname()[1]
    return server


@pytest.fixture
async def inbox() -> AsyncIterator[Inbox]:
    box = Inbox(password="s3cret-smtp-pass")
    server = await start_smtp(box)
    yield box
    server.close()


class Receiver:
    """A JSON webhook receiver: a standard-library HTTP server on 127.0.0.1 in a thread. It
    answers the statuses in ``statuses`` in turn, then ``default``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses: deque[int] = deque()
        self.default = 200
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers),
                                              "json": json.loads(body)})
                    status = receiver.statuses.popleft() if receiver.statuses else receiver.default
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"receiver is down")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


# Helpers ----------------------------------------------------------------------------------------


def configure(rt: Runtime, **values: Any) -> None:
    rt.settings = rt.settings.model_copy(update=values)


def use_smtp(rt: Runtime, inbox: Inbox, **values: Any) -> None:
    configure(rt, **{"smtp_host": "127.0.0.1", "smtp_port": inbox.port, "smtp_security": "none",
                     "smtp_from": "taskspace <taskspace@example.com>", **values})


async def add_user(rt: Runtime, username: str, **values: Any) -> User:
    async with transaction(rt.sessions) as session:
        user = User(username=username, **values)
        session.add(user)
    return user


async def notify(rt: Runtime, user: User | None, kind: str = "ready", **context: Any) -> int:
    async with transaction(rt.sessions) as session:
        return await enqueue(session, settings=rt.settings, user=user, kind=kind,
                             context={"ticket": "DEMO-1", "title": TITLE, **context}, workspace_id="ws1")


async def rows(rt: Runtime) -> list[Notification]:
    async with rt.readers() as session:
        return list(await session.scalars(select(Notification).order_by(Notification.id)))


async def make_due(rt: Runtime) -> None:
    async with transaction(rt.sessions) as session:
        await session.execute(update(Notification).where(Notification.sent_at.is_(None))
                              .values(next_attempt_at=utcnow() - timedelta(seconds=1)))


# Rendering --------------------------------------------------------------------------------------


def test_ready_reads_well_and_keeps_the_title_as_text() -> None:
    subject, body, payload = render("ready", {"ticket": "DEMO-1", "title": TITLE, "owner": "dora",
                                              "url": "https://ts.example.com/w/DEMO-1", "branch": "DEMO-1-fix-login",
                                              "workspace": "ws1"})

    assert subject == "DEMO-1 is ready"
    assert f"  DEMO-1: {TITLE}\n" in body
    assert "  Open: https://ts.example.com/w/DEMO-1\n" in body
    assert "    taskspace ws exec DEMO-1 -- bash\n" in body, "the next step, on a line of its own"
    assert max(len(line) for line in body.splitlines() if TITLE not in line) <= 80
    assert payload["kind"] == "ready" and payload["ticket"] == "DEMO-1" and payload["workspace"] == "ws1"
    assert payload["title"] == TITLE and payload["url"] == "https://ts.example.com/w/DEMO-1"
    # Slack reads <...> as links and mentions: the title's are escaped, the link is ours.
    assert payload["text"] == ("Workspace <https://ts.example.com/w/DEMO-1|DEMO-1> (dora) is ready: "
                               'Fix &lt;b&gt;login&lt;/b&gt; &amp; "quotes" {braces} %s — café 🚀')


def test_an_untrusted_title_cannot_forge_lines_links_or_mentions() -> None:
    title = "Harmless\nOpen: https://evil.example/\r\n<!channel> <https://evil.example|click>\u202eevil"
    _, body, payload = render("ready", {"ticket": "DEMO-1", "title": title, "url": "https://ts.example.com/w/DEMO-1"})

    assert "\nOpen: https://evil" not in body and "  Open: https://evil" not in body
    assert [line for line in body.splitlines() if "evil.example" in line] == [
        "  DEMO-1: Harmless Open: https://evil.example/  <!channel> <https://evil.example|click>evil"]
    assert "<!channel>" not in payload["text"] and "<https://evil" not in payload["text"]
    assert payload["title"] == title, "in the JSON the title is data, as given"


def test_failed_purge_scheduled_purged_and_disk() -> None:
    subject, body, payload = render("failed", {"ticket": "DEMO-1", "title": "T", "step": "image",
                                               "reason": "The build failed.\n--- end of the build log ---\nERROR x"})
    assert subject == "DEMO-1 failed at image"
    assert "the image step failed" in body and "    ERROR x\n" in body and "    taskspace ws start DEMO-1" in body
    assert payload["step"] == "image" and payload["reason"].endswith("ERROR x")

    due = datetime(2030, 1, 2, 12, 30, tzinfo=UTC)
    subject, body, payload = render("purge_scheduled", {"ticket": "DEMO-1", "title": "T", "due_at": due,
                                                        "reason": "the ticket moved to Done"})
    assert subject == "DEMO-1 will be purged on 2030-01-02 12:30 UTC"
    assert "the ticket moved to Done" in body.replace("\n", " ") and "    taskspace ws purge DEMO-1\n" in body
    assert payload["due_at"] == "2030-01-02T12:30:00+00:00"

    subject, body, payload = render("purged", {"ticket": "DEMO-1", "title": "T", "rescue": [
        {"repo": "api", "branch": "rescue/DEMO-1-20300102T123000Z", "sha": "abc"}]})
    assert subject == "DEMO-1 was purged"
    assert "  api: rescue/DEMO-1-20300102T123000Z\n" in body
    assert payload["rescue"] == [{"repo": "api", "branch": "rescue/DEMO-1-20300102T123000Z"}]
    _, body, _ = render("purged", {"ticket": "DEMO-1", "rescue": []})
    assert "Nothing needed rescuing" in body

    subject, body, payload = render("disk", {"storage": "data directory", "path": "/srv/taskspace",
                                             "used_percent": 93.44, "threshold": 90, "free_bytes": 12 * 2**30,
                                             "total_bytes": 200 * 2**30})
    assert subject == "Disk 93.4% full: data directory"
    assert "/srv/taskspace is 93.4% full (12.0 GiB free of 200.0 GiB)" in body.replace("\n", " ")
    assert payload["kind"] == "disk" and payload["used_percent"] == 93.44 and payload["threshold"] == 90


def test_unknown_kinds_and_missing_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown notification kind"):
        render("exploded", {"ticket": "DEMO-1"})
    with pytest.raises(ValueError, match="step, reason"):
        render("failed", {"ticket": "DEMO-1"})


# The outbox -------------------------------------------------------------------------------------


async def test_one_row_per_channel_the_user_wants(rt: Runtime, receiver: Receiver) -> None:
    configure(rt, smtp_host="127.0.0.1", notify_webhook_url=receiver.url("/team"), public_url="https://ts.example.com")
    dora = await add_user(rt, "dora", email="dora@example.com", notify_webhook_url=receiver.url("/dora"))
    assert await notify(rt, dora) == 3

    made = await rows(rt)
    assert sorted((r.channel, r.target) for r in made) == [
        ("email", "dora@example.com"), ("webhook", receiver.url("/dora")), ("webhook", receiver.url("/team"))]
    assert {r.user_id for r in made} == {dora.id, None}
    assert all(r.subject == "DEMO-1 is ready" and r.workspace_id == "ws1" and r.sent_at is None for r in made)
    assert made[0].payload["url"] == "https://ts.example.com/w/DEMO-1" and made[0].payload["owner"] == "dora"

    # No SMTP server: no email. The user's webhook is the platform's: sent once.
    configure(rt, smtp_host=None, notify_webhook_url=receiver.url("/dora"))
    assert await notify(rt, dora) == 1
    # Email off in the profile, no address, or a disabled account: only the platform hears of it.
    configure(rt, smtp_host="127.0.0.1", notify_webhook_url=receiver.url("/team"))
    for values in ({"notify_email": False, "notify_webhook_url": None}, {"email": None, "notify_webhook_url": None},
                   {"disabled_at": utcnow()}):
        async with transaction(rt.sessions) as session:
            await session.execute(update(User).where(User.id == dora.id).values(**values))
            user = await session.get(User, dora.id)
            assert await enqueue(session, settings=rt.settings, user=user, kind="ready",
                                 context={"ticket": "DEMO-1"}) == 1


async def test_a_rolled_back_change_leaves_no_message(rt: Runtime, receiver: Receiver) -> None:
    configure(rt, notify_webhook_url=receiver.url())
    with pytest.raises(RuntimeError):
        async with transaction(rt.sessions) as session:
            await enqueue(session, settings=rt.settings, user=None, kind="ready", context={"ticket": "DEMO-1"})
            raise RuntimeError("the change failed")
    assert await rows(rt) == []


async def test_platform_events_go_to_every_enabled_admin_and_the_platform_once(
        rt: Runtime, admin: User, receiver: Receiver) -> None:
    configure(rt, notify_webhook_url=receiver.url("/team"))
    await add_user(rt, "ada", role="admin", notify_webhook_url=receiver.url("/ada"))
    await add_user(rt, "old", role="admin", notify_webhook_url=receiver.url("/old"), disabled_at=utcnow())
    await add_user(rt, "dev", role="developer", notify_webhook_url=receiver.url("/dev"))
    async with transaction(rt.sessions) as session:
        count = await enqueue_admins(session, settings=rt.settings, kind="disk", context={
            "storage": "data directory", "path": "/srv", "used_percent": 95.0, "threshold": 90.0})
    assert count == 2
    assert sorted(r.target for r in await rows(rt)) == [receiver.url("/ada"), receiver.url("/team")]


# Delivery ---------------------------------------------------------------------------------------


async def test_email_reaches_a_real_smtp_server(rt: Runtime, inbox: Inbox) -> None:
    use_smtp(rt, inbox, smtp_username="taskspace", smtp_password=SecretStr("s3cret-smtp-pass"),
             public_url="https://ts.example.com")
    dora = await add_user(rt, "dora", email="dora@example.com", display_name="Dora")
    assert await notify(rt, dora, branch="DEMO-1-fix-login") == 1

    assert await deliver_due(rt) == 1

    assert inbox.logins == [("taskspace", "s3cret-smtp-pass")], "logged in because a username is set"
    envelope = inbox.messages[0]
    assert envelope.rcpt_tos == ["dora@example.com"] and envelope.mail_from == "taskspace@example.com"
    message = inbox.parsed()
    assert message["Subject"] == "DEMO-1 is ready"
    assert message["To"] == "dora@example.com" and message["From"] == "taskspace <taskspace@example.com>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "text/plain"
    text = message.get_content().replace("\r\n", "\n")
    assert "  Open: https://ts.example.com/w/DEMO-1\n" in text
    assert f"  DEMO-1: {TITLE}\n" in text, "the title arrives as the same text"
    assert "https://ts.example.com/me" in text
    [row] = await rows(rt)
    assert row.sent_at is not None and row.attempts == 1 and row.error is None
    assert await deliver_due(rt) == 0 and len(inbox.messages) == 1, "sent once"


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_encryption_against_a_plain_server_fails_with_a_clear_error(
        rt: Runtime, inbox: Inbox, security: str) -> None:
    use_smtp(rt, inbox, smtp_security=security)
    await notify(rt, await add_user(rt, "dora", email="dora@example.com"))

    assert await deliver_due(rt) == 0

    [row] = await rows(rt)
    assert row.sent_at is None and row.attempts == 1 and row.next_attempt_at > utcnow()
    assert row.error is not None
    assert f"SMTP server 127.0.0.1:{inbox.port}" in row.error
    assert f"TASKSPACE_SMTP_SECURITY={security}" in row.error, row.error
    if security == "starttls":
        assert "STARTTLS" in row.error
    assert inbox.messages == []


async def test_smtp_errors_never_hold_the_password(rt: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    careless = Inbox(password="the-right-one", echo_password=True)
    server = await start_smtp(careless)
    try:
        password = "hunter2-Very-Secret"
        use_smtp(rt, careless, smtp_username="taskspace", smtp_password=SecretStr(password))
        await notify(rt, await add_user(rt, "dora", email="dora@example.com"))
        with caplog.at_level(logging.INFO, logger="taskspace"):
            assert await deliver_due(rt) == 0
    finally:
        server.close()

    assert set(careless.logins) == {("taskspace", password)}, "the server did get (and echo) the password"
    [row] = await rows(rt)
    assert row.error is not None and "535" in row.error and "TASKSPACE_SMTP_PASSWORD" in row.error
    blob = base64.b64encode(f"\0taskspace\0{password}".encode()).decode()
    for secret in (password, blob, base64.b64encode(password.encode()).decode()):
        assert secret not in row.error
        assert secret not in caplog.text
    assert "***" in row.error


async def test_webhooks_get_json(rt: Runtime, receiver: Receiver) -> None:
    configure(rt, notify_webhook_url=receiver.url("/team"), public_url="https://ts.example.com")
    await notify(rt, None, kind="failed", step="clone", reason="The repository api could not be cloned.")

    assert await deliver_due(rt) == 1

    [request] = receiver.requests
    assert request["path"] == "/team"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["User-Agent"].startswith("taskspace/")
    body = request["json"]
    assert body["kind"] == "failed" and body["ticket"] == "DEMO-1" and body["workspace"] == "ws1"
    assert body["title"] == TITLE and body["step"] == "clone" and body["url"] == "https://ts.example.com/w/DEMO-1"
    assert body["text"].startswith("Workspace <https://ts.example.com/w/DEMO-1|DEMO-1> failed at clone: Fix &lt;b&gt;")
    assert body["subject"] == "DEMO-1 failed at clone"


async def test_a_failed_webhook_is_retried_with_back_off(rt: Runtime, receiver: Receiver) -> None:
    configure(rt, notify_webhook_url=receiver.url())
    receiver.statuses.extend([500])
    await notify(rt, None)

    before = utcnow()
    assert await deliver_due(rt) == 0
    [row] = await rows(rt)
    assert row.attempts == 1 and row.sent_at is None
    assert row.error == "the webhook answered HTTP 500: receiver is down"
    wait = row.next_attempt_at - before
    assert timedelta(seconds=26) < wait < timedelta(seconds=40), wait
    assert await deliver_due(rt) == 0 and receiver.count == 1, "not due before the back-off ends"

    await make_due(rt)
    assert await deliver_due(rt) == 1
    assert receiver.count == 2
    [row] = await rows(rt)
    assert row.attempts == 2 and row.sent_at is not None and row.error is None


async def test_a_message_is_given_up_after_its_retries(
        rt: Runtime, receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    configure(rt, notify_webhook_url=receiver.url("/T000/secret-token"), notification_retries=2)
    receiver.default = 503
    await notify(rt, None)

    waits = []
    with caplog.at_level(logging.INFO, logger="taskspace"):
        for _ in range(5):
            before = utcnow()
            await deliver_due(rt)
            [row] = await rows(rt)
            waits.append((row.next_attempt_at - before).total_seconds())
            await make_due(rt)

    assert receiver.count == 3, "the first attempt and 2 retries"
    [row] = await rows(rt)
    assert row.attempts == 3 and row.sent_at is None and "HTTP 503" in (row.error or "")
    assert 26 < waits[0] < 40 and 52 < waits[1] < 70, "the back-off doubles"
    assert "given up after 3 attempts" in caplog.text
    assert "secret-token" not in caplog.text, "webhook addresses stay out of the log"


async def test_two_senders_never_send_one_message_twice(rt: Runtime, receiver: Receiver) -> None:
    configure(rt, notify_webhook_url=receiver.url())
    for _ in range(5):
        await notify(rt, None)
    other = await build_runtime(rt.settings)  # another process on the same database
    try:
        sent = await asyncio.gather(deliver_due(rt), deliver_due(other), deliver_due(rt), deliver_due(other))
    finally:
        await other.close()

    assert sum(sent) == 5
    assert receiver.count == 5
    assert all(r.sent_at is not None and r.attempts == 1 for r in await rows(rt))


async def test_only_one_claim_on_a_row_succeeds(rt: Runtime, receiver: Receiver) -> None:
    configure(rt, notify_webhook_url=receiver.url())
    await notify(rt, None)
    async with rt.readers() as session:
        due = (await session.execute(select(Notification.id, Notification.next_attempt_at))).all()

    first = await notifications._claim(rt, due)
    second = await notifications._claim(rt, due)  # loaded before the first claim: stale

    assert [item.id for item in first] == [due[0].id] and second == []


async def test_the_sender_sends_as_soon_as_the_change_commits(rt: Runtime, receiver: Receiver) -> None:
    configure(rt, notify_webhook_url=receiver.url())
    sender = NotificationSender(rt, poll_seconds=60)  # only a wake-up can make it send in time
    sender.start()
    try:
        await asyncio.sleep(0.1)  # its first look finds nothing; now it waits
        async with transaction(rt.sessions) as session:
            await enqueue(session, settings=rt.settings, user=None, kind="ready", context={"ticket": "DEMO-1"},
                          bus=rt.bus)
        for _ in range(100):
            if receiver.count:
                break
            await asyncio.sleep(0.05)
    finally:
        await sender.close()
    assert receiver.count == 1
