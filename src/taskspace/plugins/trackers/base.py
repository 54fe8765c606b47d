"""The tracker contract: where tickets come from.

A tracker plugin gets typed config (credentials as ``SecretStr``) and reports tickets as
:class:`~taskspace.core.tickets.TicketData`; it never touches the database. The platform keeps
a copy of every ticket it has seen (incremental polling plus webhooks) and decides purges from
that copy — never from data it could not refresh (see ``TrackerUnavailable``).

Trackers whose tickets live in taskspace itself (the built-in board) declare
:class:`LocalTickets`: the platform then creates and moves tickets directly, validated against
the tracker's workflow. Optional features are capability mixins found with ``issubclass``.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from taskspace.core.errors import TaskspaceError
from taskspace.core.tickets import TicketData, Workflow


class TrackerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrackerUnavailable(TaskspaceError):
    """The tracker could not be read (down, 5xx, rate limited past the retry budget, refused
    credentials). The platform marks the project's tickets stale and decides no purge."""

    status_code = 502
    code = "tracker_unavailable"


class WebhookRejected(TaskspaceError):
    """A webhook delivery failed verification (missing or wrong secret or signature)."""

    status_code = 401
    code = "webhook_rejected"


class WebhookDelivery(BaseModel):
    """What a verified webhook delivery says."""

    delivery_id: str = Field(description="Unique per delivery; a repeated id is ignored")
    tickets: list[TicketData] = Field(default_factory=list, description="Tickets as they are now")
    deleted: list[str] = Field(default_factory=list, description="Keys of tickets deleted in the tracker")
    refetch: list[str] = Field(default_factory=list,
                               description="Keys of tickets that changed but whose new state the delivery does "
                                           "not carry: fetch them (SupportsFetch) or wait for the next sync")


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
        """The statuses tickets move through, each with its category. Trackers whose statuses
        are discovered (Jira, labels) return the ones they know; tickets carry their category."""

    @abstractmethod
    async def fetch_updated(self, since: datetime | None) -> list[TicketData]:
        """Every ticket of the linked project/query changed since ``since`` (all when None),
        following every page. Waits out rate limits within a bounded budget (Retry-After);
        raises TrackerUnavailable when the tracker cannot answer."""

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections. Called when the platform is done with this instance."""


class LocalTickets:
    """Capability (a marker): tickets are created and moved in taskspace itself."""


class SupportsWebhooks(ABC):
    """Capability: the tracker pushes changes to ``/hooks/<webhook_name>``."""

    webhook_name: ClassVar[str]

    @abstractmethod
    def parse_webhook(self, headers: Mapping[str, str], body: bytes,
                      query: Mapping[str, str] | None = None) -> WebhookDelivery:
        """Verify the delivery (shared secret or HMAC signature, compared in constant time) and
        say what it changes. Raises WebhookRejected when verification fails, and InvalidInput
        when the body is not a delivery this tracker sends.

        ``query`` is the delivery URL's query string: trackers that cannot sign (Jira Data
        Center before 10) carry the shared secret there."""


class SupportsFetch(ABC):
    """Capability: fetch named tickets (after a webhook that carries only keys)."""

    @abstractmethod
    async def fetch(self, keys: list[str]) -> list[TicketData]: ...
