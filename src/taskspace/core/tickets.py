"""Tickets as the platform sees them, whatever tracker they come from."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class StatusCategory(StrEnum):
    TODO = "todo"
    IN_PROGRESS = "in_progress"
    DONE = "done"


class WorkflowStatus(BaseModel):
    name: str
    category: StatusCategory


class Workflow(BaseModel):
    """The statuses a tracker's tickets move through, each mapped to a category."""

    statuses: list[WorkflowStatus]

    def category_of(self, status: str) -> StatusCategory | None:
        for s in self.statuses:
            if s.name.casefold() == status.casefold():
                return s.category
        return None

    def canonical(self, status: str) -> str | None:
        for s in self.statuses:
            if s.name.casefold() == status.casefold():
                return s.name
        return None

    @property
    def initial(self) -> WorkflowStatus:
        return self.statuses[0]


class TicketData(BaseModel):
    """A ticket as a tracker reports it."""

    key: str = Field(description="Tracker key, e.g. PAY-123")
    title: str
    description: str = ""
    status: str
    status_category: StatusCategory
    assignee: str | None = None
    created_at: datetime
    updated_at: datetime
    url: str | None = None
