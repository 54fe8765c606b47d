"""Usage analytics: per workspace, and added up per project or per user, over a period."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from taskspace.services import analytics
from taskspace.web.api.deps import ReaderDep, UserDep

router = APIRouter(prefix="/analytics", tags=["analytics"])
TRUNCATED_HEADER = "X-Taskspace-Truncated"
PERIOD = ("ISO 8601 date (2024-05-01, midnight UTC) or time (2024-05-01T09:30:00Z; UTC without an offset), "
          "or an age such as 12h, 7d or 2w. ")


class IntervalOut(BaseModel):
    start: datetime
    end: datetime


class WorkspaceUsageOut(BaseModel):
    workspace_id: str
    ticket: str
    title: str
    project: str
    owner: str
    state: str = Field(description="Its state now")
    requested_at: datetime = Field(description="When it was launched")
    ready_at: datetime | None = Field(description="When it first became ready")
    time_to_ready_seconds: float | None = Field(description="From launch to first ready")
    first_opened_at: datetime | None = Field(description="First terminal, command, port or IDE")
    last_active_at: datetime | None = Field(description="Last terminal input, command, port request or "
                                            "attached IDE (to the minute)")
    purged_at: datetime | None
    active_hours: float = Field(description="Hours spent ready within the period")
    starts: int = Field(description="Times it became ready within the period (the first launch included)")
    stops: int = Field(description="Times it was stopped within the period")
    stopped_hours: float = Field(description="Hours spent stopped within the period")
    stopped_intervals: list[IntervalOut] = Field(description="When it was stopped, clipped to the period")

    @classmethod
    def of(cls, w: analytics.WorkspaceUsage) -> WorkspaceUsageOut:
        values = {k: v for k, v in w.__dict__.items() if k != "stopped_intervals"}
        return cls(**values, stopped_intervals=[IntervalOut(start=a, end=b) for a, b in w.stopped_intervals])


class GroupUsageOut(BaseModel):
    name: str = Field(description="The project's or the user's name; 'total' for the total")
    workspaces: int = Field(description="Workspaces that existed during the period")
    launched: int = Field(description="Workspaces launched during the period")
    time_to_ready_median: float | None = Field(description="Seconds from launch to ready (those launched)")
    time_to_ready_mean: float | None
    active_hours: float
    starts: int
    stops: int
    purged: int = Field(description="Workspaces purged during the period")


class SummaryOut(BaseModel):
    since: datetime
    until: datetime
    group_by: Literal["project", "user"]
    groups: list[GroupUsageOut]
    total: GroupUsageOut
    truncated: bool = Field(description=f"More than {analytics.MAX_WORKSPACES} workspaces matched; the newest "
                            "were counted")


def _query(since: str | None, until: str | None, project: str | None, owner: str | None,
           limit: int = analytics.MAX_WORKSPACES) -> analytics.UsageQuery:
    return analytics.UsageQuery(since=since, until=until, project=project, owner=owner, limit=limit)


Since = Annotated[str | None, Query(max_length=40, description="Start of the period (included). " + PERIOD
                                    + "Default: 30 days before until.")]
Until = Annotated[str | None, Query(max_length=40, description="End of the period (excluded). " + PERIOD
                                    + "Default: now.")]
ProjectRef = Annotated[str | None, Query(max_length=100, description="Only this project (name or key)")]
Owner = Annotated[str | None, Query(alias="user", max_length=64, description="Only this user's workspaces "
                                    "(reviewers and admins may name anyone)")]
GroupBy = Annotated[Literal["project", "user"], Query(description="Add up per project or per user")]


@router.get("/workspaces", response_model=list[WorkspaceUsageOut])
async def workspace_usage(session: ReaderDep, user: UserDep, response: Response, since: Since = None,
                          until: Until = None, project: ProjectRef = None, owner: Owner = None,
                          limit: int = Query(1000, ge=1, le=analytics.MAX_WORKSPACES)) -> list[WorkspaceUsageOut]:
    """Each workspace that existed during the period (launched before its end, not purged before
    its start), newest first: when it was launched, became ready and was purged, when it was
    first opened and last used, and its active hours, starts and stops within the period.
    Developers see their own workspaces, reviewers and admins everyone's. A period is at most
    366 days. When more than `limit` workspaces match, the header X-Taskspace-Truncated is set."""
    report = await analytics.workspace_usage(session=session, user=user,
                                             query=_query(since, until, project, owner, limit))
    if report.truncated:
        response.headers[TRUNCATED_HEADER] = "true"
    return [WorkspaceUsageOut.of(w) for w in report.workspaces]


@router.get("/workspaces.csv", response_class=PlainTextResponse)
async def workspace_usage_csv(session: ReaderDep, user: UserDep, since: Since = None, until: Until = None,
                              project: ProjectRef = None, owner: Owner = None) -> PlainTextResponse:
    """The workspaces of GET /analytics/workspaces as CSV (at most 50,000 rows)."""
    text = await analytics.workspace_usage_csv(session=session, user=user, query=_query(since, until, project, owner))
    return PlainTextResponse(text, media_type="text/csv",
                             headers={"Content-Disposition": 'attachment; filename="taskspace-usage.csv"'})


@router.get("/summary", response_model=SummaryOut)
async def summary(session: ReaderDep, user: UserDep, since: Since = None, until: Until = None,
                  project: ProjectRef = None, owner: Owner = None, group_by: GroupBy = "project") -> SummaryOut:
    """Per project or per user, and in total, over the period: workspaces launched, median and
    mean time to ready of those, active hours, starts, stops and workspaces purged."""
    found = await analytics.summary(session=session, user=user, query=_query(since, until, project, owner),
                                    group_by=group_by)
    return SummaryOut(since=found.period.since, until=found.period.until, group_by=found.group_by,
                      groups=[GroupUsageOut(**g.__dict__) for g in found.groups],
                      total=GroupUsageOut(**found.total.__dict__), truncated=found.truncated)


@router.get("/summary.csv", response_class=PlainTextResponse)
async def summary_csv(session: ReaderDep, user: UserDep, since: Since = None, until: Until = None,
                      project: ProjectRef = None, owner: Owner = None,
                      group_by: GroupBy = "project") -> PlainTextResponse:
    """The summary as CSV: one row per project or user, then the total."""
    text = await analytics.summary_csv(session=session, user=user, query=_query(since, until, project, owner),
                                       group_by=group_by)
    return PlainTextResponse(text, media_type="text/csv",
                             headers={"Content-Disposition": 'attachment; filename="taskspace-usage-summary.csv"'})
