"""The workspace state machine.

``requested → preparing → starting → ready ⇄ stopped → purging → purged``; ``failed`` from any
active step (with the step and the reason); ``purge_blocked`` when rescuing work before a purge
failed, so nothing was deleted. ``desired`` is what the user or the policy asked for; the
reconciler moves ``state`` towards it one idempotent step at a time.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    REQUESTED = "requested"
    PREPARING = "preparing"
    STARTING = "starting"
    READY = "ready"
    STOPPED = "stopped"
    PURGING = "purging"
    PURGE_BLOCKED = "purge_blocked"
    PURGED = "purged"
    FAILED = "failed"


class Desired(StrEnum):
    READY = "ready"
    STOPPED = "stopped"
    PURGED = "purged"


class Step(StrEnum):
    """Provisioning steps, in the order a first launch runs them."""

    PREFLIGHT = "preflight"
    IMAGE = "image"
    VOLUME = "volume"
    CONTAINER = "container"
    CLONE = "clone"
    SERVICES = "services"
    STARTUP = "startup"
    STOP = "stop"
    RESCUE = "rescue"
    DELETE = "delete"


#: Steps run while ``preparing`` (first launch only) and while ``starting`` (every start).
PREPARE_STEPS = (Step.PREFLIGHT, Step.IMAGE, Step.VOLUME, Step.CONTAINER, Step.CLONE)
START_STEPS = (Step.CONTAINER, Step.SERVICES, Step.STARTUP)

#: States in which the reconciler is working on the workspace.
IN_FLIGHT = frozenset({State.REQUESTED, State.PREPARING, State.STARTING, State.PURGING})
#: States that hold engine resources or may hold them.
ACTIVE = frozenset(State) - {State.PURGED}

TRANSITIONS: dict[State, frozenset[State]] = {
    State.REQUESTED: frozenset({State.PREPARING, State.FAILED, State.PURGING}),
    State.PREPARING: frozenset({State.STARTING, State.FAILED, State.PURGING}),
    State.STARTING: frozenset({State.READY, State.FAILED, State.PURGING, State.STOPPED}),
    State.READY: frozenset({State.STOPPED, State.STARTING, State.PURGING, State.FAILED}),
    State.STOPPED: frozenset({State.STARTING, State.PURGING, State.FAILED}),
    State.FAILED: frozenset({State.PREPARING, State.STARTING, State.PURGING, State.STOPPED}),
    State.PURGING: frozenset({State.PURGED, State.PURGE_BLOCKED, State.FAILED}),
    State.PURGE_BLOCKED: frozenset({State.PURGING, State.STOPPED, State.STARTING}),
    State.PURGED: frozenset(),
}


def can_transition(src: State, dst: State) -> bool:
    return dst in TRANSITIONS[src]
