"""Durations in settings, CLI flags and services.yaml."""

import math

import pytest

from taskspace.core.durations import format_duration, parse_duration
from taskspace.core.errors import InvalidInput


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (1, 1.0),
        (0.25, 0.25),
        ("2", 2.0),
        ("2.5", 2.5),
        ("500ms", 0.5),
        ("2s", 2.0),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("1h1m1s500ms", 3661.5),
        (" 3s ", 3.0),
    ],
)
def test_parse_duration(value, seconds):
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "abc",
        "5 minutes",
        "1x",
        "-1s",
        "1.s",
        "s",
        -1,
        -0.5,
        True,
        None,
        [1],
        {"s": 1},
        math.nan,
        math.inf,
    ],
)
def test_parse_duration_refuses(value):
    with pytest.raises(InvalidInput) as caught:
        parse_duration(value)
    assert "duration" in caught.value.message
    assert caught.value.hint


@pytest.mark.parametrize(("text", "seconds"), [("24h", 86400), ("2d", 172800), ("1h30m", 5400), ("1m 30s", 90)])
def test_parse_duration_long_forms(text, seconds):
    assert parse_duration(text) == seconds


def test_parse_duration_names_the_field():
    with pytest.raises(InvalidInput) as caught:
        parse_duration("soon", field="grace")
    assert caught.value.field == "grace"


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (90, "1m30s"), (86400 + 3600, "1d1h")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds
