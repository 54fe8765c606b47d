"""Notifications: messages to people about their workspaces (ready, failed, purge scheduled,
purged) and to admins about the platform (disk space), by email and by JSON webhooks.

The outbox pattern. :func:`enqueue` adds one ``Notification`` row per channel inside the
caller's transaction, so a message exists exactly when the change it tells of is committed.
:func:`deliver_due` sends what is due: it claims rows first (a guarded update, so two
processes never send the same row), sends with no database session open, then records the
outcome. A failed send is retried with exponential back-off, ``notification_retries`` times;
after that the row is given up and keeps its last error. Delivery is at least once: a process
that dies between a send and its record sends that message again once the claim expires.

Every server process runs a :class:`NotificationSender`. The claim, not the reconciler's
lease, decides who sends a row: the process that made a change (and woke its own sender
through ``rt.bus``) sends at once, whichever replica leads the reconciler.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import ssl
import textwrap
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any

import aiosmtplib
import httpx
from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from taskspace import __version__
from taskspace.core.roles import Role
from taskspace.core.sizes import format_size
from taskspace.db.engine import transaction
from taskspace.db.models import Notification, User, utcnow
from taskspace.services.bus import Bus
from taskspace.services.runtime import Runtime
from taskspace.settings import Settings

log = logging.getLogger(__name__)

KINDS = ("ready", "failed", "purge_scheduled", "purge_blocked", "purged", "disk")
#: Context keys each kind cannot do without (see :func:`render` for the optional ones).
REQUIRED: dict[str, tuple[str, ...]] = {
    "ready": ("ticket",),
    "failed": ("ticket", "step", "reason"),
    "purge_scheduled": ("ticket", "due_at", "reason"),
    "purge_blocked": ("ticket", "reason"),
    "purged": ("ticket",),
    "disk": ("storage", "path", "used_percent", "threshold"),
}

#: Rows claimed at a time, and sent at once among them.
BATCH = 32
PARALLEL_SENDS = 8
#: Seconds one send (a whole SMTP conversation, or one webhook request) may take.
SEND_TIMEOUT = 20.0
#: How long a claim keeps other processes off a row: longer than a whole batch's sends.
CLAIM = timedelta(seconds=SEND_TIMEOUT * (BATCH // PARALLEL_SENDS) + 60)
#: Back-off after the n-th failed attempt: BACKOFF_BASE * 2**(n-1), at most BACKOFF_MAX, ±10 %.
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_MAX = timedelta(hours=1)
#: Seconds between two looks at the outbox when nothing wakes the sender.
POLL_SECONDS = 2.0
ERROR_LIMIT = 1000
REASON_LIMIT = 2000
TITLE_LIMIT = 300

# Rendering --------------------------------------------------------------------------------------

# Bidirectional overrides and isolates: they make text read differently from what it is.
_BIDI = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))


def _one_line(value: object, limit: int = TITLE_LIMIT) -> str:
    """Untrusted text made one plain line: control characters become spaces, direction
    overrides go; nothing else is changed (no markup is read in it)."""
    text = str(value).translate(_BIDI)
    text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _lines(value: object, limit: int = REASON_LIMIT) -> list[str]:
    """Untrusted multi-line text (a failure reason with a build log's tail): its last ``limit``
    characters, each line made plain."""
    text = str(value).translate(_BIDI).replace("\r\n", "\n")
    if len(text) > limit:
        text = "…" + text[-limit:]
    return [_one_line(line, limit) for line in text.split("\n") if line.strip()]


def _wrap(paragraph: str) -> str:
    """A paragraph of the body at email width; indented lines (details, lists) stay as they are."""
    if paragraph.startswith(" "):
        return paragraph
    return textwrap.fill(paragraph, width=76, break_long_words=False, break_on_hyphens=False)


def _slack(text: str) -> str:
    """Text for a Slack-compatible ``text`` field: ``&``, ``<`` and ``>`` escaped, so a ticket
    title cannot make a link or a mention (``<!channel>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_link(url: str | None, label: str) -> str:
    if not url:
        return _slack(label)
    return f"<{url.replace('>', '%3E').replace('|', '%7C')}|{_slack(label)}>"


def _when(value: object) -> tuple[str, str]:
    """(for people, ISO 8601) of a datetime or an ISO 8601 string."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return _one_line(value), _one_line(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("due_at must be timezone-aware")
        value = value.astimezone(UTC)
        return f"{value:%Y-%m-%d %H:%M} UTC", value.isoformat()
    raise ValueError(f"not a time: {value!r}")


def _rescued(value: object) -> list[tuple[str | None, str]]:
    """(repository, branch) of each rescue: dicts as the purge records them, or branch names."""
    found: list[tuple[str | None, str]] = []
    for item in value if isinstance(value, list | tuple) else []:
        if isinstance(item, Mapping):
            if item.get("branch"):
                found.append((_one_line(item["repo"]) if item.get("repo") else None, _one_line(item["branch"])))
        elif item:
            found.append((None, _one_line(item)))
    return found


def _percent(value: float) -> str:
    return f"{float(value):.1f}".removesuffix(".0")


def render(kind: str, context: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """The message of a notification: ``(subject, plain-text body, JSON payload)``.

    The payload has a Slack-compatible ``text`` and the structured fields ``kind``,
    ``subject`` and, as they apply, ``workspace``, ``ticket``, ``title``, ``url``, ``owner``,
    ``branch``, ``step``, ``reason``, ``due_at`` (ISO 8601), ``rescue`` (list of
    ``{repo, branch}``), ``storage``, ``path``, ``used_percent``, ``threshold``, ``free_bytes``,
    ``total_bytes``. Ticket titles and reasons are untrusted: in the payload they are data as
    given; in the body they are plain text made one line each; in ``text`` they are escaped.

    Context keys (``REQUIRED`` lists those a kind needs; the others are optional):

    * every workspace kind: ``ticket`` (key), ``title``, ``url``, ``workspace`` (id), ``owner``
      (username), ``branch``, ``profile_url`` (named in the email's footer);
    * ``ready``: ``ready_seconds``, ``startup_failed`` (why the startup script failed; the
      workspace is usable anyway);
    * ``failed``: ``step``, ``reason``;
    * ``purge_scheduled``: ``due_at`` (aware datetime or ISO 8601), ``reason`` (why, e.g. "the
      ticket moved to Done");
    * ``purged``: ``rescue`` (``Workspace.rescue``: ``[{repo, branch, ...}]``, or branch names),
      ``reason``;
    * ``disk``: ``storage`` (what it is, e.g. "data directory"), ``path``, ``used_percent``,
      ``threshold`` (percent), ``free_bytes``, ``total_bytes``.

    Raises ValueError for an unknown kind or a missing required key.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}; one of {', '.join(KINDS)}")
    missing = [key for key in REQUIRED[kind] if context.get(key) in (None, "")]
    if missing:
        raise ValueError(f"a {kind!r} notification needs {', '.join(missing)} in its context")
    if kind == "disk":
        return _render_disk(context)

    key = _one_line(context["ticket"], 40)
    title = _one_line(context.get("title") or "")
    url = context.get("url")
    owner = context.get("owner")
    heading = f"  {key}: {title}" if title else f"  {key}"
    details = [heading]
    if context.get("branch"):
        details.append(f"  Branch: {_one_line(context['branch'])}")
    payload: dict[str, Any] = {"kind": kind, "workspace": context.get("workspace"), "ticket": context["ticket"],
                               "title": context.get("title"), "url": url, "owner": owner,
                               "branch": context.get("branch")}
    link = _slack_link(url, key)
    about = f": {_slack(title)}" if title else ""
    whose = f" ({_slack(_one_line(owner, 64))})" if owner else ""

    if kind == "ready":
        subject = f"{key} is ready"
        seconds = context.get("ready_seconds")
        intro = f"Your workspace for {key} is ready" + (f" (in {float(seconds):.0f} s)." if seconds else ".")
        if url:
            details.append(f"  Open: {url}")
        after = ["Open it in the browser for a terminal and its ports, or from your machine:",
                 f"    taskspace ws exec {key} -- bash"]
        if context.get("startup_failed"):
            why = _one_line(context["startup_failed"])
            after[:0] = [f"Its startup script failed, but the workspace is usable: {why}. Its output:",
                         f"    taskspace ws logs {key} --startup", ""]
        text = f"Workspace {link}{whose} is ready{about}"
        payload["ready_seconds"] = seconds
        payload["startup_failed"] = context.get("startup_failed")
    elif kind == "failed":
        step = _one_line(context["step"], 40)
        subject = f"{key} failed at {step}"
        intro = f"Your workspace for {key} could not be made ready: the {step} step failed."
        details.append("  Reason:")
        details.extend(f"    {line}" for line in _lines(context["reason"]))
        if url:
            details.append(f"  Open: {url}")
        after = ["Fix the cause, then retry from the workspace page or with:", f"    taskspace ws start {key}"]
        text = f"Workspace {link}{whose} failed at {_slack(step)}{about}"
        payload.update(step=context["step"], reason=context["reason"])
    elif kind == "purge_scheduled":
        when, iso = _when(context["due_at"])
        reason = _one_line(context["reason"])
        subject = f"{key} will be purged on {when}"
        intro = f"The workspace for {key} will be purged on {when}: {reason}."
        if url:
            details.append(f"  Open: {url}")
        after = [(f"Unpushed work is pushed to a rescue/{key}-… branch first. To keep the workspace, move the "
                  "ticket back to an active status before then. To purge it now:"),
                 f"    taskspace ws purge {key}"]
        text = f"Workspace {link}{whose} will be purged on {when}{about} ({_slack(reason)})"
        payload.update(due_at=iso, reason=context["reason"])
    elif kind == "purge_blocked":
        subject = f"{key} could not be purged"
        intro = (f"The workspace for {key} was due for purge, but its unpushed work could not be saved, "
                 "so nothing was deleted.")
        details.append("  Reason:")
        details.extend(f"    {line}" for line in _lines(context["reason"]))
        if url:
            details.append(f"  Open: {url}")
        after = ["Push the work yourself (or fix access to the remote); the purge is retried, or run:",
                 f"    taskspace ws purge {key}"]
        text = f"Workspace {link}{whose} could not be purged{about}: its work could not be rescued"
        payload.update(reason=context["reason"])
    else:  # purged
        rescued = _rescued(context.get("rescue"))
        subject = f"{key} was purged"
        reason = context.get("reason")
        intro = f"The workspace for {key} was purged" + (f": {_one_line(reason)}." if reason else ".")
        if rescued:
            after = ["Unpushed work was saved to these branches:"]
            after.extend(f"  {repo}: {branch}" if repo else f"  {branch}" for repo, branch in rescued)
            rescue_text = "; rescued to " + ", ".join(_slack(branch) for _, branch in rescued)
        else:
            after = ["Nothing needed rescuing: every commit was on the remote."]
            rescue_text = ""
        text = f"Workspace {link}{whose} was purged{about}{rescue_text}"
        payload.update(rescue=[{"repo": repo, "branch": branch} for repo, branch in rescued], reason=reason)

    profile = context.get("profile_url") or "your profile page"
    footer = f"taskspace. You can turn these emails off on {profile}."
    body = "\n".join([_wrap(intro), "", *details, "", *map(_wrap, after), "", "-- ", footer, ""])
    payload["subject"] = subject
    payload["text"] = text
    return subject, body, payload



def _render_disk(context: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    storage = _one_line(context["storage"], 80)
    path = _one_line(context["path"], 500)
    used, threshold = _percent(context["used_percent"]), _percent(context["threshold"])
    free, total = context.get("free_bytes"), context.get("total_bytes")
    room = f" ({format_size(int(free))} free of {format_size(int(total))})" if free is not None and total else ""
    subject = f"Disk {used}% full: {storage}"
    body = "\n".join([
        _wrap(f"The {storage} at {path} is {used}% full{room}; the alert threshold is {threshold}%."),
        "",
        _wrap("Make room before workspaces fail to build or start: remove unused images and build cache "
              "(docker system prune), purge workspaces no longer needed, or keep logs and history for fewer "
              "days (TASKSPACE_RETENTION_DAYS). You are told again only after it went below the threshold "
              "and came back."),
        "", "-- ", "taskspace, to its admins.", ""])
    payload = {"kind": "disk", "subject": subject, "storage": context["storage"], "path": context["path"],
               "used_percent": float(context["used_percent"]), "threshold": float(context["threshold"]),
               "free_bytes": free, "total_bytes": total,
               "text": f":warning: {_slack(storage)} ({_slack(path)}) is {used}% full{_slack(room)}; "
                       f"threshold {threshold}%"}
    return subject, body, payload


# Enqueueing -------------------------------------------------------------------------------------


def _channels(settings: Settings, user: User | None) -> list[tuple[str, str]]:
    """A user's own channels: (channel, target)."""
    if user is None or user.disabled_at is not None:
        return []
    found = []
    if user.notify_email and user.email and settings.smtp_host:
        found.append(("email", user.email))
    if user.notify_webhook_url:
        found.append(("webhook", user.notify_webhook_url))
    return found


def _add_rows(session: AsyncSession, targets: Sequence[tuple[str, str, int | None]], *, kind: str,
              message: tuple[str, str, dict[str, Any]], workspace_id: str | None, bus: Bus | None) -> int:
    subject, body, payload = message
    seen: set[tuple[str, str]] = set()
    for channel, target, user_id in targets:
        if (channel, target) in seen:  # the same webhook for the user and the platform: once
            continue
        seen.add((channel, target))
        session.add(Notification(user_id=user_id, workspace_id=workspace_id, kind=kind, channel=channel,
                                 target=target, subject=subject, body=body, payload=payload,
                                 next_attempt_at=utcnow()))
    if seen and bus is not None:
        event.listen(session.sync_session, "after_commit", lambda _session: bus.wake_notifier(), once=True)
    return len(seen)


async def enqueue(session: AsyncSession, *, settings: Settings, user: User | None, kind: str,
                  context: Mapping[str, Any], workspace_id: str | None = None, bus: Bus | None = None) -> int:
    """Add the notification ``kind`` about ``context`` to the outbox, in the caller's
    transaction: one row per channel — email to ``user.email`` (when ``user.notify_email``
    and ``TASKSPACE_SMTP_HOST`` is set), ``user.notify_webhook_url``, and the platform's
    ``TASKSPACE_NOTIFY_WEBHOOK_URL`` — the same address only once. A disabled user (or
    ``user=None``) gets nothing; the platform webhook still does. Returns the rows added.

    Usage, in the transaction that makes the change::

        await notifications.enqueue(session, settings=rt.settings, user=ws.owner, kind="ready",
                                    context={"ticket": ws.ticket.key, "title": ws.ticket.title,
                                             "branch": ws.branch}, workspace_id=ws.id, bus=rt.bus)

    ``context`` keys per kind are listed in :func:`render` (``ready``: ``ticket``, ``title``;
    ``failed``: + ``step``, ``reason``; ``purge_scheduled``: + ``due_at``, ``reason``;
    ``purged``: + ``rescue``). Filled in when absent: ``url`` (``<public URL>/w/<ticket>``),
    ``workspace`` (``workspace_id``), ``owner`` (``user.username``) and ``profile_url``.

    Nothing is sent here: the sender does it after the commit — at once in this process when
    ``bus`` is given, else within a couple of seconds. Raises ValueError for an unknown kind or
    a missing required key (a programming error: the caller's transaction then rolls back).
    """
    full = dict(context)
    if full.get("ticket") and not full.get("url"):
        full["url"] = f"{settings.base_url}/w/{full['ticket']}"
    if workspace_id and not full.get("workspace"):
        full["workspace"] = workspace_id
    if user is not None and not full.get("owner"):
        full["owner"] = user.username
    full.setdefault("profile_url", f"{settings.base_url}/me")
    message = render(kind, full)
    targets = [(channel, target, user.id if user else None) for channel, target in _channels(settings, user)]
    if settings.notify_webhook_url:
        targets.append(("webhook", settings.notify_webhook_url, None))
    return _add_rows(session, targets, kind=kind, message=message, workspace_id=workspace_id, bus=bus)


async def enqueue_admins(session: AsyncSession, *, settings: Settings, kind: str, context: Mapping[str, Any],
                         bus: Bus | None = None) -> int:
    """A platform notification (``disk``): to every enabled admin's channels, and once to the
    platform webhook, in the caller's transaction. Returns the rows added."""
    message = render(kind, context)
    admins = await session.scalars(select(User).where(User.role == Role.ADMIN.value, User.disabled_at.is_(None))
                                   .order_by(User.id))
    targets = [(channel, target, admin.id) for admin in admins for channel, target in _channels(settings, admin)]
    if settings.notify_webhook_url:
        targets.append(("webhook", settings.notify_webhook_url, None))
    return _add_rows(session, targets, kind=kind, message=message, workspace_id=None, bus=bus)


# Delivering -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outgoing:
    id: int
    kind: str
    channel: str
    target: str
    subject: str
    body: str
    payload: dict[str, Any]
    attempts: int
    claimed_until: datetime


def backoff(attempts: int) -> timedelta:
    """Wait before the next try after ``attempts`` failed ones (jittered so that many messages
    to a receiver that was down do not all come back at once)."""
    seconds = min(BACKOFF_MAX.total_seconds(), BACKOFF_BASE.total_seconds() * 2 ** max(0, attempts - 1))
    return timedelta(seconds=seconds * random.uniform(0.9, 1.1))


async def deliver_due(rt: Runtime) -> int:
    """Send one batch of due notifications; returns how many were sent.

    Load the due rows (short read) → claim them (a short write: each row's
    ``next_attempt_at`` moves past the claim's end where it still has the loaded value, so only
    one caller gets a row) → send, no session open → record each outcome (short write, guarded by
    the claim): ``sent_at``, or ``attempts + 1``, ``error`` and the next attempt after
    :func:`backoff`. A row whose attempts passed ``notification_retries`` is given up.
    """
    return (await _deliver_batch(rt))[1]


async def _deliver_batch(rt: Runtime) -> tuple[int, int]:
    """(rows claimed, rows sent)."""
    retries = rt.settings.notification_retries
    now = utcnow()
    async with rt.readers() as session:
        due = (await session.execute(
            select(Notification.id, Notification.next_attempt_at)
            .where(Notification.sent_at.is_(None), Notification.next_attempt_at <= now,
                   Notification.attempts <= retries)
            .order_by(Notification.next_attempt_at, Notification.id).limit(BATCH))).all()
    if not due:
        return 0, 0
    outgoing = await _claim(rt, due)
    if not outgoing:
        return 0, 0
    slots = asyncio.Semaphore(PARALLEL_SENDS)
    async with httpx.AsyncClient(timeout=SEND_TIMEOUT, follow_redirects=False,
                                 headers={"User-Agent": f"taskspace/{__version__}"}) as client:

        async def one(item: _Outgoing) -> bool:
            async with slots:
                error = await _send(rt.settings, client, item)
            await _record(rt, item, error)
            return error is None

        results = await asyncio.gather(*(one(item) for item in outgoing), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):  # the outcome could not be written: resent after the claim
            log.error("recording a notification's outcome failed", exc_info=result)
    return len(outgoing), sum(result is True for result in results)


async def _claim(rt: Runtime, due: Sequence[Any]) -> list[_Outgoing]:
    claimed_until = utcnow() + CLAIM
    async with transaction(rt.sessions) as session:
        ids = []
        for row in due:
            result = await session.execute(
                update(Notification)
                .where(Notification.id == row.id, Notification.sent_at.is_(None),
                       Notification.next_attempt_at == row.next_attempt_at)
                .values(next_attempt_at=claimed_until))
            if result.rowcount == 1:
                ids.append(row.id)
        if not ids:
            return []
        rows = await session.scalars(select(Notification).where(Notification.id.in_(ids)).order_by(Notification.id))
        return [_Outgoing(id=r.id, kind=r.kind, channel=r.channel, target=r.target, subject=r.subject, body=r.body,
                          payload=dict(r.payload or {}), attempts=r.attempts, claimed_until=claimed_until)
                for r in rows]


async def _record(rt: Runtime, item: _Outgoing, error: str | None) -> None:
    now = utcnow()
    attempts = item.attempts + 1
    values: dict[str, Any] = {"attempts": attempts}
    if error is None:
        values.update(sent_at=now, error=None)
    else:
        values.update(error=error, next_attempt_at=now + backoff(attempts))
    async with transaction(rt.sessions) as session:
        await session.execute(update(Notification)
                              .where(Notification.id == item.id, Notification.sent_at.is_(None),
                                     Notification.next_attempt_at == item.claimed_until)
                              .values(**values))
    if error is not None:
        # The target is not logged: webhook addresses often carry a token.
        if attempts > rt.settings.notification_retries:
            log.warning("notification %s (%s, %s) given up after %d attempts: %s",
                        item.id, item.kind, item.channel, attempts, error)
        else:
            log.info("notification %s (%s, %s) failed (attempt %d), retrying: %s",
                     item.id, item.kind, item.channel, attempts, error)


async def _send(settings: Settings, client: httpx.AsyncClient, item: _Outgoing) -> str | None:
    """Send one message; None when it went out, else why not (no secret in it)."""
    try:
        if item.channel == "email":
            await asyncio.wait_for(_send_email(settings, item), SEND_TIMEOUT)
        elif item.channel == "webhook":
            return await _post_webhook(client, item)
        else:
            return f"unknown channel {item.channel!r}"
    except TimeoutError:
        return _scrub(settings, item, f"no answer within {SEND_TIMEOUT:.0f} s")
    except aiosmtplib.SMTPException as exc:
        return _scrub(settings, item, _smtp_problem(settings, exc))
    except (OSError, ssl.SSLError, ValueError) as exc:
        return _scrub(settings, item, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # whatever it is, it counts as an attempt, so it cannot retry forever
        log.exception("notification %s: unexpected error while sending", item.id)
        return _scrub(settings, item, f"{type(exc).__name__}: {exc}")
    return None


async def _send_email(settings: Settings, item: _Outgoing) -> None:
    if not settings.smtp_host:
        raise ValueError("email is off: TASKSPACE_SMTP_HOST is not set")
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = item.target
    message["Subject"] = item.subject
    message["Date"] = format_datetime(utcnow())
    domain = parseaddr(settings.smtp_from)[1].rpartition("@")[2] or None
    message["Message-ID"] = make_msgid("taskspace", domain=domain)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    message.set_content(item.body)
    security = settings.smtp_security
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    await aiosmtplib.send(
        message, hostname=settings.smtp_host, port=settings.smtp_port,
        username=settings.smtp_username or None, password=password if settings.smtp_username else None,
        use_tls=security == "tls", start_tls=security == "starttls", timeout=SEND_TIMEOUT)


def _smtp_problem(settings: Settings, exc: aiosmtplib.SMTPException) -> str:
    where = f"SMTP server {settings.smtp_host}:{settings.smtp_port}"
    code = getattr(exc, "code", None)
    text = f"{where}: {code} {exc.message}" if code else f"{where}: {exc.message}"
    lowered = exc.message.lower()
    if "starttls" in lowered or "ssl" in lowered or "tls" in lowered:
        text += (f" (TASKSPACE_SMTP_SECURITY={settings.smtp_security}: 'starttls' needs a server that offers "
                 "STARTTLS, usually port 587; 'tls' one that speaks TLS at once, usually port 465; 'none' neither)")
    elif isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        text += " (check TASKSPACE_SMTP_USERNAME and TASKSPACE_SMTP_PASSWORD)"
    return text


async def _post_webhook(client: httpx.AsyncClient, item: _Outgoing) -> str | None:
    if not item.target.startswith(("http://", "https://")):
        return "the webhook address is not an http(s) URL"
    try:
        response = await client.post(item.target, json=item.payload)
    except httpx.TimeoutException:
        return f"the webhook did not answer within {SEND_TIMEOUT:.0f} s"
    except httpx.HTTPError as exc:
        return _scrub_url(item.target, f"the webhook could not be reached: {type(exc).__name__}: {exc}")
    if 200 <= response.status_code < 300:
        return None
    detail = _one_line(response.text, 200) if response.text else response.reason_phrase
    return _scrub_url(item.target, f"the webhook answered HTTP {response.status_code}: {detail}")


def _scrub_url(url: str, text: str) -> str:
    return text.replace(url, "<webhook URL>")[:ERROR_LIMIT]


def _scrub(settings: Settings, item: _Outgoing, text: str) -> str:
    """``text`` without the SMTP password in any form the conversation could echo it in."""
    if settings.smtp_password is not None:
        password = settings.smtp_password.get_secret_value()
        username = settings.smtp_username or ""
        forms = {password,
                 base64.b64encode(password.encode()).decode(),
                 base64.b64encode(f"\0{username}\0{password}".encode()).decode()}
        for form in sorted((f for f in forms if f), key=len, reverse=True):
            text = text.replace(form, "***")
    if item.channel == "webhook":
        text = _scrub_url(item.target, text)
    return text[:ERROR_LIMIT]


# The sender -------------------------------------------------------------------------------------


class NotificationSender:
    """Sends the outbox in the background: every ``poll_seconds``, at once when
    ``rt.bus.wake_notifier()`` is called, and batch after batch while a backlog lasts. A
    failure is logged and the loop goes on. ``close`` cancels it; a message being sent then is
    sent again once its claim expires."""

    def __init__(self, rt: Runtime, *, poll_seconds: float = POLL_SECONDS):
        self.rt = rt
        self.poll_seconds = poll_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="notifications")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        wake = self.rt.bus.notify_requested
        while True:
            wake.clear()
            claimed = 0
            try:
                claimed, _ = await _deliver_batch(self.rt)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sending notifications failed; trying again in %.0f s", self.poll_seconds)
            if claimed >= BATCH:
                continue
            try:
                await asyncio.wait_for(wake.wait(), self.poll_seconds)
            except TimeoutError:
                pass
