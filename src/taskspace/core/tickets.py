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


class Assignee(BaseModel):
    """Who a tracker says a ticket is assigned to; matched to a taskspace user by any field."""

    id: str | None = Field(None, description="Tracker account id (Jira accountId, GitLab/GitHub user id)")
    username: str | None = Field(None, description="Login name in the tracker")
    email: str | None = None
    display_name: str | None = None


class TicketData(BaseModel):
    """A ticket as a tracker reports it."""

    key: str = Field(description="Tracker key, e.g. PAY-123, or group/project#12, owner/repo#12")
    title: str
    description: str = Field("", description="Markdown (converted by the plugin when the tracker uses another format)")
    status: str
    status_category: StatusCategory
    assignee: str | None = Field(None, description="The taskspace-facing name: username, else email, else id")
    assignees: list[Assignee] = Field(default_factory=list)
    labels: list[str] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
    url: str | None = None
    reference: str | None = Field(None, description="How the tracker shows it, e.g. group/project#12")
    external_id: str | None = Field(None, description="The tracker's own id of the ticket")
