"""The workspace state machine and the driver's choice of the next phase."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from taskspace.core.states import (
    ACTIVE,
    IN_FLIGHT,
    PREPARE_STEPS,
    START_STEPS,
    TRANSITIONS,
    Desired,
    State,
    Step,
    can_transition,
)
from taskspace.services.lifecycle.driver import Phase, next_phase


def reachable(src: State) -> set[State]:
    seen: set[State] = set()
    todo = deque([src])
    while todo:
        for dst in TRANSITIONS[todo.popleft()]:
            if dst not in seen:
                seen.add(dst)
                todo.append(dst)
    return seen


def path(src: State, dst: State) -> list[State] | None:
    """A shortest path of allowed transitions from ``src`` to ``dst``."""
    previous: dict[State, State | None] = {src: None}
    todo = deque([src])
    while todo:
        state = todo.popleft()
        if state == dst:
            steps = [state]
            while (before := previous[steps[-1]]) is not None:
                steps.append(before)
            return steps[::-1]
        for nxt in sorted(TRANSITIONS[state]):
            if nxt not in previous:
                previous[nxt] = state
                todo.append(nxt)
    return None


# --------------------------------------------------------------------------------------------
# The transition table


def test_the_table_covers_every_state_and_names_only_states():
    assert set(TRANSITIONS) == set(State)
    for src, targets in TRANSITIONS.items():
        assert targets <= set(State)
        assert src not in targets, f"{src} lists itself"


def test_purged_is_terminal():
    assert TRANSITIONS[State.PURGED] == frozenset()
    assert not any(can_transition(State.PURGED, dst) for dst in State)
    assert State.PURGED not in ACTIVE
    assert set(State) - {State.PURGED} == ACTIVE


def test_only_purging_leads_to_purged():
    assert {src for src, targets in TRANSITIONS.items() if State.PURGED in targets} == {State.PURGING}


@pytest.mark.parametrize("state", sorted(ACTIVE))
def test_every_active_state_can_be_purged(state):
    assert State.PURGED in reachable(state)


@pytest.mark.parametrize("state", sorted(ACTIVE - {State.PURGING}))
def test_a_purge_can_start_from_every_active_state(state):
    assert can_transition(state, State.PURGING)


@pytest.mark.parametrize(
    ("state", "on_failure"),
    [
        (State.REQUESTED, State.FAILED),
        (State.PREPARING, State.FAILED),
        (State.STARTING, State.FAILED),
        (State.READY, State.FAILED),  # a failing stop
        (State.STOPPED, State.FAILED),
        (State.PURGING, State.PURGE_BLOCKED),  # nothing deleted when the rescue fails
        (State.PURGING, State.FAILED),
    ],
)
def test_active_steps_can_fail(state, on_failure):
    assert can_transition(state, on_failure)


def test_failed_is_reached_only_from_active_steps():
    sources = {src for src, targets in TRANSITIONS.items() if State.FAILED in targets}

    assert sources == {State.REQUESTED, State.PREPARING, State.STARTING, State.READY, State.STOPPED,
                       State.PURGING}


def test_purge_blocked_is_entered_only_from_purging():
    assert {src for src, targets in TRANSITIONS.items() if State.PURGE_BLOCKED in targets} == {State.PURGING}


@pytest.mark.parametrize("state", [State.FAILED, State.PURGE_BLOCKED])
def test_a_failed_or_blocked_workspace_can_be_started_again_or_purged(state):
    assert can_transition(state, State.STARTING)
    assert can_transition(state, State.PURGING)
    assert can_transition(state, State.STOPPED)


def test_ready_and_stopped_go_both_ways_through_starting():
    assert can_transition(State.READY, State.STOPPED)
    assert path(State.STOPPED, State.READY) == [State.STOPPED, State.STARTING, State.READY]
    # A start always runs the start steps (services, startup script): never stopped → ready.
    assert not can_transition(State.STOPPED, State.READY)


@pytest.mark.parametrize("state", sorted(IN_FLIGHT))
def test_every_in_flight_state_has_a_path_to_ready(state):
    assert path(state, State.READY) is not None


def test_the_happy_path_is_allowed_step_by_step():
    happy = [State.REQUESTED, State.PREPARING, State.STARTING, State.READY, State.STOPPED, State.STARTING,
             State.READY, State.PURGING, State.PURGED]

    for src, dst in pairwise(happy):
        assert can_transition(src, dst), f"{src} → {dst}"


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (State.REQUESTED, State.READY),
        (State.REQUESTED, State.STARTING),
        (State.PREPARING, State.READY),
        (State.READY, State.PREPARING),
        (State.READY, State.PURGED),
        (State.STOPPED, State.PURGED),
        (State.FAILED, State.PURGED),
        (State.FAILED, State.READY),
        (State.PURGE_BLOCKED, State.PURGED),
        (State.PURGE_BLOCKED, State.FAILED),
        (State.PURGING, State.READY),
        (State.PURGING, State.STARTING),
    ],
)
def test_shortcuts_are_refused(src, dst):
    assert not can_transition(src, dst)


def test_in_flight_states():
    assert {State.REQUESTED, State.PREPARING, State.STARTING, State.PURGING} == IN_FLIGHT


def test_steps_run_in_declaration_order():
    order = list(Step)

    assert list(PREPARE_STEPS) == sorted(PREPARE_STEPS, key=order.index)
    assert list(START_STEPS) == sorted(START_STEPS, key=order.index)
    assert PREPARE_STEPS[0] == Step.PREFLIGHT
    assert START_STEPS[-1] == Step.STARTUP


# --------------------------------------------------------------------------------------------
# next_phase over State × Desired

R, S, P = Desired.READY, Desired.STOPPED, Desired.PURGED
EXPECTED_PHASE: dict[State, dict[Desired, Phase | None]] = {
    State.REQUESTED: {R: Phase.PREPARE, S: Phase.PREPARE, P: Phase.PURGE},
    State.PREPARING: {R: Phase.PREPARE, S: Phase.PREPARE, P: Phase.PURGE},
    State.STARTING: {R: Phase.START, S: Phase.START, P: Phase.PURGE},
    State.READY: {R: None, S: Phase.STOP, P: Phase.PURGE},
    State.STOPPED: {R: Phase.START, S: None, P: Phase.PURGE},
    State.PURGING: {R: Phase.PURGE, S: Phase.PURGE, P: Phase.PURGE},
    State.PURGE_BLOCKED: {R: None, S: None, P: Phase.PURGE},
    State.PURGED: {R: None, S: None, P: None},
    State.FAILED: {R: None, S: None, P: Phase.PURGE},
}


def test_the_expected_table_is_complete():
    assert set(EXPECTED_PHASE) == set(State)
    assert all(set(row) == set(Desired) for row in EXPECTED_PHASE.values())


@pytest.mark.parametrize(
    ("state", "desired", "phase"),
    [(state, desired, phase) for state, row in EXPECTED_PHASE.items() for desired, phase in row.items()],
    ids=lambda v: str(v),
)
def test_next_phase(state, desired, phase):
    assert next_phase(state, desired) == phase


# The state each phase moves a workspace into first (the driver's first transition).
PHASE_ENTERS = {Phase.PREPARE: State.PREPARING, Phase.START: State.STARTING, Phase.STOP: State.STOPPED,
                Phase.PURGE: State.PURGING}


@pytest.mark.parametrize(
    ("state", "desired"),
    [(state, desired) for state, row in EXPECTED_PHASE.items() for desired, phase in row.items() if phase],
    ids=lambda v: str(v),
)
def test_every_chosen_phase_starts_with_an_allowed_transition(state, desired):
    enters = PHASE_ENTERS[next_phase(state, desired)]

    assert state == enters or can_transition(state, enters)


NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("retry_at", "phase"),
    [
        (None, Phase.PURGE),
        (NOW + timedelta(minutes=5), None),
        (NOW + timedelta(microseconds=1), None),
        (NOW, Phase.PURGE),
        (NOW - timedelta(seconds=1), Phase.PURGE),
    ],
)
def test_a_blocked_purge_waits_until_its_retry_time(retry_at, phase):
    assert next_phase(State.PURGE_BLOCKED, Desired.PURGED, purge_retry_at=retry_at, now=NOW) == phase


@pytest.mark.parametrize("state", [State.PURGING, State.READY, State.STOPPED, State.FAILED, State.REQUESTED])
def test_the_retry_time_only_holds_back_a_blocked_purge(state):
    later = NOW + timedelta(hours=1)

    assert next_phase(state, Desired.PURGED, purge_retry_at=later, now=NOW) == Phase.PURGE


@pytest.mark.parametrize("desired", [Desired.READY, Desired.STOPPED])
def test_a_blocked_workspace_not_wanted_purged_waits_for_a_person(desired):
    past = NOW - timedelta(hours=1)

    assert next_phase(State.PURGE_BLOCKED, desired, purge_retry_at=past, now=NOW) is None


def test_the_retry_time_is_compared_with_the_clock_by_default():
    now = datetime.now(UTC)

    assert next_phase(State.PURGE_BLOCKED, Desired.PURGED, purge_retry_at=now + timedelta(hours=1)) is None
    assert next_phase(State.PURGE_BLOCKED, Desired.PURGED, purge_retry_at=now - timedelta(seconds=1)) \
        == Phase.PURGE
