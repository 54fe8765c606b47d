"""Plugins are registered as entry points with short names and validated against their base class.

Groups: ``taskspace.backends`` (:class:`~taskspace.plugins.backends.base.Backend`),
``taskspace.trackers`` (:class:`~taskspace.plugins.trackers.base.Tracker`) and, later,
``taskspace.agents``. A third-party package adds one with, in its pyproject::

    [project.entry-points."taskspace.backends"]
    nomad = "taskspace_nomad:NomadBackend"
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from typing import TypeVar

from taskspace.core.errors import InvalidInput
from taskspace.plugins.backends.base import Backend
from taskspace.plugins.trackers.base import Tracker

T = TypeVar("T")

GROUPS: dict[str, type] = {"taskspace.backends": Backend, "taskspace.trackers": Tracker}


@cache
def available(group: str) -> dict[str, str]:
    """Short name → ``module:attr`` of every plugin installed in ``group``."""
    return {ep.name: ep.value for ep in entry_points(group=group)}


def load(group: str, name: str) -> type:
    """The plugin class registered as ``name``; InvalidInput when unknown or not a subclass."""
    base = GROUPS[group]
    matches = [ep for ep in entry_points(group=group) if ep.name == name]
    if not matches:
        known = ", ".join(sorted(available(group))) or "none"
        raise InvalidInput(f"No {group.rsplit('.', 1)[-1][:-1]} plugin named {name!r} is installed.",
                           hint=f"Installed: {known}.")
    cls = matches[0].load()
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise InvalidInput(f"Plugin {name!r} ({matches[0].value}) is not a {base.__name__}.",
                           hint="Check the package that registers it.")
    return cls


def load_backend(name: str) -> type[Backend]:
    return load("taskspace.backends", name)


def load_tracker(name: str) -> type[Tracker]:
    return load("taskspace.trackers", name)
