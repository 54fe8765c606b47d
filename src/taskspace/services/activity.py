"""Workspace activity: when a person first opened a workspace, and when they last used it.

A workspace is used when its terminal opens or gets input, when a command runs in it (exec),
when traffic goes through the proxy to one of its ports, and while an IDE is attached to it (a
VS Code server or code-server process in its container, found by a periodic check). Each sets
``first_opened_at`` (once) and ``last_active_at``: usage analytics read both, and the idle-stop
policy counts idleness from ``last_active_at``.

Writes are throttled to one per workspace per minute: a memo in this process skips the
database altogether, and the UPDATE itself only matches a row whose ``last_active_at`` is
older than a minute, so several processes together still write at most about once a minute.
The UPDATE never touches ``version``, which guards the lifecycle's writes: marking a workspace
active must never make a step in flight drop its result.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import func, literal, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from taskspace.core.states import State
from taskspace.db.engine import transaction
from taskspace.db.models import Workspace, utcnow
from taskspace.plugins.backends.base import SupportsProcessList, Terminal
from taskspace.services import rounds
from taskspace.services.runtime import Runtime

log = logging.getLogger(__name__)

THROTTLE = timedelta(minutes=1)
#: Meta key holding the time of the last IDE check (ISO 8601, UTC).
CHECKED_AT = "activity_checked_at"
#: A process of an attached IDE: VS Code's server (``~/.vscode-server``, ``.vscode-server-insiders``,
#: ``.vscode-remote``), code-server and openvscode-server, and VS Code's forks' servers.
IDE_PROCESS = re.compile(r"code-server|\.vscode-remote|\.cursor-server|\.windsurf-server", re.IGNORECASE)
#: Rows per UPDATE of the IDE check (a bounded IN list).
BATCH = 500
MEMO_LIMIT = 10_000

What = Literal["terminal", "exec", "port", "ide"]

#: (installation, workspace id) → time.monotonic() of the last write (or of a write found unnecessary).
_recent: dict[tuple[str, str], float] = {}


def _seen_recently(key: tuple[str, str], clock: float) -> bool:
    last = _recent.get(key)
    return last is not None and clock - last < THROTTLE.total_seconds()


def _remember(keys: Iterable[tuple[str, str]], clock: float) -> None:
    if len(_recent) >= MEMO_LIMIT:
        horizon = clock - THROTTLE.total_seconds()
        for stale in [k for k, at in _recent.items() if at <= horizon]:
            del _recent[stale]
        if len(_recent) >= MEMO_LIMIT:  # that many workspaces active within a minute: start afresh
            _recent.clear()
    for key in keys:
        _recent[key] = clock


def forget(rt: Runtime) -> None:
    """Drop this installation's memo: the next mark asks the database again (tests, and a
    database restored from a backup)."""
    for key in [k for k in _recent if k[0] == rt.installation]:
        del _recent[key]


async def touch(*, session: AsyncSession, workspace_ids: Sequence[str], now: datetime) -> int:
    """Set ``last_active_at`` (and ``first_opened_at`` if unset) to ``now`` for those of
    ``workspace_ids`` not marked within the last minute. Returns the rows written."""
    if not workspace_ids:
        return 0
    first_opened = literal(now, Workspace.__table__.c.first_opened_at.type)
    result = await session.execute(
        update(Workspace)
        .where(Workspace.id.in_(list(workspace_ids)),
               or_(Workspace.last_active_at.is_(None), Workspace.last_active_at < now - THROTTLE))
        .values(last_active_at=now, first_opened_at=func.coalesce(Workspace.first_opened_at, first_opened))
        .execution_options(synchronize_session=False))
    return result.rowcount or 0


async def mark_active(rt: Runtime, workspace_id: str, what: What) -> bool:
    """Record that the workspace is being used (``what``: terminal, exec, port or ide).
    Returns True when the row was written, False when it had been marked within the last
    minute (or is gone). Best effort: a database error is logged, never raised, so it cannot
    break the terminal, command or request that caused it."""
    key, clock = (rt.installation, workspace_id), time.monotonic()
    if _seen_recently(key, clock):
        return False
    try:
        async with transaction(rt.sessions) as session:
            written = await touch(session=session, workspace_ids=[workspace_id], now=utcnow())
    except SQLAlchemyError as exc:
        log.warning("could not record activity of workspace %s: %s", workspace_id, exc)
        return False
    _remember([key], clock)
    if written:
        log.debug("workspace %s active (%s)", workspace_id, what)
    return written > 0


class ActiveTerminal(Terminal):
    """A terminal whose input marks its workspace active (``mark_active`` keeps the pace)."""

    def __init__(self, rt: Runtime, workspace_id: str, terminal: Terminal):
        self._rt, self._workspace_id, self._terminal = rt, workspace_id, terminal

    async def read(self) -> bytes:
        return await self._terminal.read()

    async def write(self, data: bytes) -> None:
        await self._terminal.write(data)
        await mark_active(self._rt, self._workspace_id, "terminal")

    async def resize(self, cols: int, rows: int) -> None:
        await self._terminal.resize(cols, rows)

    async def close(self) -> None:
        await self._terminal.close()


# The IDE check ------------------------------------------------------------------------------------


@dataclass
class IdeCheckReport:
    at: datetime
    running: int  # workspaces in state ready when the check began
    attached: list[str] = field(default_factory=list)  # those with an IDE process
    marked: int = 0  # rows written (the others were marked within the last minute)


def ide_attached(commands: Iterable[str]) -> bool:
    """Whether one of the command lines is an IDE's server process."""
    return any(IDE_PROCESS.search(command) for command in commands)


async def check_ides(rt: Runtime, *, force: bool = False) -> IdeCheckReport | None:
    """Look for attached IDEs in the running workspaces and mark those active, if
    ``activity_check_interval`` has passed since the last check (or ``force``). None when not
    due, or when the backend cannot list a container's processes.

    Cheap when not due: one primary-key read. Otherwise load (a short transaction that also
    claims the check, so two callers do not both run it) → the engine's process lists (no
    session open) → the guarded UPDATE (a short transaction). BackendError propagates.
    """
    if not isinstance(rt.backend, SupportsProcessList):
        return None
    interval = timedelta(seconds=rt.settings.activity_check_interval)
    if not force and not await rounds.due(rt, CHECKED_AT, interval):
        return None
    try:
        async with transaction(rt.sessions) as session:
            if not await rounds.claim(session, CHECKED_AT, interval=interval, force=force):
                return None
            running = list(await session.scalars(select(Workspace.id).where(Workspace.state == State.READY.value)))
    except IntegrityError:  # another process recorded its first check at the same moment
        return None

    report = IdeCheckReport(at=utcnow(), running=len(running))
    if not running:
        return report
    commands = await rt.backend.process_commands(sorted(running))
    asked = set(running)
    report.attached = sorted(w for w, lines in commands.items() if w in asked and ide_attached(lines))
    if not report.attached:
        return report
    clock, now = time.monotonic(), utcnow()
    async with transaction(rt.sessions) as session:
        for start in range(0, len(report.attached), BATCH):
            report.marked += await touch(session=session, workspace_ids=report.attached[start:start + BATCH], now=now)
    _remember(((rt.installation, w) for w in report.attached), clock)
    return report
