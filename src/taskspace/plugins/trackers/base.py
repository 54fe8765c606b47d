"""The tracker contract: where tickets come from.

A tracker plugin gets typed config (credentials as ``SecretStr``) and reports tickets as
:class:`~taskspace.core.tickets.TicketData`; it never touches the database. The platform keeps
a copy of every ticket it has seen. Trackers whose tickets live in taskspace itself (the
built-in board) declare :class:`LocalTickets`: the platform then creates and moves tickets
directly, validated against the tracker's workflow.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from taskspace.core.tickets import TicketData, Workflow


class TrackerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Tracker(ABC):
    name: ClassVar[str]
    config_model: ClassVar[type[TrackerConfig]] = TrackerConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not inspect.isabstract(cls) and not getattr(cls, "name", None):
            raise TypeError(f"{cls.__name__} must set a short `name`")

    def __init__(self, config: TrackerConfig):
        self.config = config

    @abstractmethod
    def workflow(self) -> Workflow:
        """The statuses tickets move through, each with its category."""

    @abstractmethod
    async def fetch_updated(self, since: datetime | None) -> list[TicketData]:
        """Tickets changed since ``since`` (all when None)."""


class LocalTickets:
    """Capability (a marker): tickets are created and moved in taskspace itself."""
