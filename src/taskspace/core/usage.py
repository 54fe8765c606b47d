"""How much a workspace was used over a period, from its transition events.

A workspace is *active* while it is ``ready``: its active time is the sum of the intervals from
each transition into ``ready`` to the next transition (any transition leaves ``ready``), or to
now while it is still ready. Every interval is clipped to the period ``[since, until)``. A
*start* is a transition into ``ready`` (the first launch counts, and so does a restart after the
engine restarted); a *stop* is a transition into ``stopped``.

Pure: the caller feeds one workspace's transitions in the order they were written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from taskspace.core.errors import InvalidInput
from taskspace.core.states import State

DEFAULT_PERIOD = timedelta(days=30)
MAX_PERIOD = timedelta(days=366)
_AGO = re.compile(r"(\d{1,4})([hdw])")
_AGO_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
HINT = "Use an ISO 8601 date or time (2024-05-01, 2024-05-01T09:30:00Z) or an age such as 12h, 7d or 2w."


@dataclass(frozen=True)
class Period:
    """``[since, until)``, both timezone-aware (UTC)."""

    since: datetime
    until: datetime

    def clip(self, start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
        """The part of ``[start, end)`` inside the period, or None when nothing is."""
        start, end = max(start, self.since), min(end, self.until)
        return (start, end) if start < end else None

    def __contains__(self, at: datetime | None) -> bool:
        return at is not None and self.since <= at < self.until


def parse_instant(value: str, *, field: str, now: datetime) -> datetime:
    """An ISO 8601 date (midnight UTC), date and time (UTC when it has no offset), or an age
    before ``now`` such as ``12h``, ``7d`` or ``2w``. InvalidInput names ``field`` otherwise."""
    text = value.strip()
    shown = repr(text) if len(text) <= 40 else repr(text[:37] + "...")
    if match := _AGO.fullmatch(text.lower()):
        return now - int(match[1]) * _AGO_UNITS[match[2]]
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{field}: {shown} is not a date.", hint=HINT, field=field) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def make_period(since: str | datetime | None, until: str | datetime | None, *, now: datetime) -> Period:
    """The period asked for: ``until`` defaults to now and ``since`` to 30 days before
    ``until``. InvalidInput when ``since`` is not before ``until`` or the period is longer
    than MAX_PERIOD."""
    try:
        end = parse_instant(until, field="until", now=now) if isinstance(until, str) else until or now
        start = parse_instant(since, field="since", now=now) if isinstance(since, str) else since
        start = start or end - DEFAULT_PERIOD
    except OverflowError:
        raise InvalidInput("The period lies outside the calendar.", hint=HINT) from None
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidInput("since and until need a time zone.", hint=HINT)
    if start >= end:
        raise InvalidInput(f"since ({start:%Y-%m-%d %H:%M} UTC) is not before until ({end:%Y-%m-%d %H:%M} UTC).",
                           hint="Give a since earlier than until.", field="since")
    if end - start > MAX_PERIOD:
        raise InvalidInput(f"The period from {start:%Y-%m-%d} to {end:%Y-%m-%d} is longer than "
                           f"{MAX_PERIOD.days} days.",
                           hint=f"Ask for at most {MAX_PERIOD.days} days at a time (give both since and until).",
                           field="since")
    return Period(start.astimezone(UTC), end.astimezone(UTC))


@dataclass
class Usage:
    """One workspace's use within a period."""

    active_seconds: float = 0.0
    stopped_seconds: float = 0.0
    starts: int = 0
    stops: int = 0
    stopped: list[tuple[datetime, datetime]] = field(default_factory=list)
    #: The state at the end of the period (None: the workspace did not exist yet).
    state: str | None = None


class UsageTally:
    """Folds one workspace's transitions, oldest first, into its Usage over ``period``.

    Feed it the last transition before the period (it gives the state at ``since``) and every
    transition inside it; transitions after the period must be left out. ``now`` ends the
    interval of the state the workspace is still in."""

    def __init__(self, period: Period, now: datetime):
        self.period, self.now = period, now
        self.usage = Usage()
        self._since: datetime | None = None  # when the current state began

    def add(self, at: datetime, to_state: str | None) -> None:
        if to_state is None:
            return
        if self.usage.state is not None and self._since is not None:
            self._close(at)
        if at in self.period:
            self.usage.starts += to_state == State.READY
            self.usage.stops += to_state == State.STOPPED
        self.usage.state, self._since = to_state, at

    def finish(self) -> Usage:
        if self.usage.state is not None and self._since is not None:
            self._close(min(self.now, self.period.until))
            self._since = None
        return self.usage

    def _close(self, end: datetime) -> None:
        assert self._since is not None
        part = self.period.clip(self._since, end)  # clocks may step back: an empty part counts nothing
        if part is None:
            return
        seconds = (part[1] - part[0]).total_seconds()
        if self.usage.state == State.READY:
            self.usage.active_seconds += seconds
        elif self.usage.state == State.STOPPED:
            self.usage.stopped_seconds += seconds
            self.usage.stopped.append(part)
