"""The period of a usage report and the fold of a workspace's transitions into its usage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from taskspace.core.errors import InvalidInput
from taskspace.core.usage import Period, UsageTally, make_period, parse_instant

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


def test_instants_are_dates_times_or_ages() -> None:
    assert parse_instant("2025-06-01", field="since", now=NOW) == datetime(2025, 6, 1, tzinfo=UTC)
    assert parse_instant("2025-06-01T08:30:00Z", field="since", now=NOW) == datetime(2025, 6, 1, 8, 30, tzinfo=UTC)
    assert parse_instant("2025-06-01T10:30+02:00", field="since", now=NOW) == datetime(2025, 6, 1, 8, 30, tzinfo=UTC)
    assert parse_instant(" 12h ", field="since", now=NOW) == NOW - 12 * H
    assert parse_instant("2W", field="since", now=NOW) == NOW - timedelta(weeks=2)
    for text in ("", "soon", "2025-02-30", "7 days", "-1d", "12m", "=1+1"):
        with pytest.raises(InvalidInput) as caught:
            parse_instant(text, field="until", now=NOW)
        assert caught.value.field == "until" and "not a date" in caught.value.message


def test_a_period_is_at_most_366_days_and_not_empty() -> None:
    assert make_period(None, None, now=NOW) == Period(NOW - timedelta(days=30), NOW)
    assert make_period(None, "2025-06-01", now=NOW) == Period(datetime(2025, 5, 2, tzinfo=UTC),
                                                             datetime(2025, 6, 1, tzinfo=UTC))
    assert make_period("2024-06-15T12:00Z", None, now=NOW).since.year == 2024  # 365 days
    with pytest.raises(InvalidInput, match="longer than 366 days"):
        make_period("2024-06-01", None, now=NOW)
    with pytest.raises(InvalidInput, match="not before"):
        make_period(NOW, NOW, now=NOW)
    with pytest.raises(InvalidInput, match="outside the calendar"):
        make_period(None, "0001-01-02", now=NOW)


def tally(period: Period, *transitions: tuple[datetime, str], now: datetime = NOW) -> UsageTally:
    result = UsageTally(period, now)
    for at, to in transitions:
        result.add(at, to)
    result.finish()
    return result


def test_time_in_ready_is_active_and_clipped_to_the_period() -> None:
    t = NOW - 10 * H
    period = Period(t + H, t + 8 * H)
    usage = tally(period, (t, "starting"), (t + 30 * timedelta(minutes=1), "ready"), (t + 3 * H, "stopped"),
                  (t + 5 * H, "starting"), (t + 6 * H, "ready")).usage
    # Ready from 1 h (the period's start) to 3 h, and from 6 h to 8 h (its end).
    assert usage.active_seconds == 4 * 3600
    assert (usage.starts, usage.stops) == (1, 1), "the first ready came before the period"
    assert usage.stopped == [(t + 3 * H, t + 5 * H)] and usage.stopped_seconds == 2 * 3600
    assert usage.state == "ready"


def test_a_workspace_still_ready_counts_up_to_now_and_a_clock_step_back_counts_nothing() -> None:
    t = NOW - 10 * H
    assert tally(Period(t, NOW + 100 * H), (t, "ready")).usage.active_seconds == 10 * 3600
    usage = tally(Period(t, NOW), (t + 2 * H, "ready"), (t + H, "stopped"), (t + 4 * H, "ready")).usage
    assert usage.active_seconds == 6 * 3600 and usage.stopped == [(t + H, t + 4 * H)]
    assert tally(Period(t, NOW)).usage.state is None
