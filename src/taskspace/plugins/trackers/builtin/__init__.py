"""The built-in board: tickets live in taskspace's own database."""

from __future__ import annotations

from datetime import datetime

from taskspace.core.tickets import StatusCategory, TicketData, Workflow, WorkflowStatus
from taskspace.plugins.trackers.base import LocalTickets, Tracker

WORKFLOW = Workflow(
    statuses=[
        WorkflowStatus(name="To Do", category=StatusCategory.TODO),
        WorkflowStatus(name="In Progress", category=StatusCategory.IN_PROGRESS),
        WorkflowStatus(name="In Review", category=StatusCategory.IN_PROGRESS),
        WorkflowStatus(name="Done", category=StatusCategory.DONE),
    ]
)


class BuiltinTracker(Tracker, LocalTickets):
    name = "builtin"

    def workflow(self) -> Workflow:
        return WORKFLOW

    async def fetch_updated(self, since: datetime | None) -> list[TicketData]:
        # The platform's own table is the source of truth: there is nothing to fetch.
        return []
