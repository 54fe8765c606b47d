"""Statuses from labels, for trackers whose issues are only open or closed (GitLab, GitHub).

A board column is usually a label ("Doing", "In Review", "workflow::review"). The tracker
config lists those labels in ``status_labels``, in priority order: when an issue carries
several, the one listed first wins (the APIs return an issue's labels alphabetically, which
would make the choice arbitrary). ``label_categories`` maps a status label to its category;
unmapped status labels are in progress. Labels are matched without regard to case, and the
status takes the spelling of the config.

A closed issue is done whatever its labels say: the boards of both trackers move it to their
Closed column, and the platform must be able to purge its workspace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from taskspace.core.tickets import StatusCategory, Workflow, WorkflowStatus

OPEN = "Open"
CLOSED = "Closed"


def status_of(*, closed: bool, labels: Iterable[str], status_labels: list[str],
              label_categories: Mapping[str, StatusCategory]) -> tuple[str, StatusCategory]:
    if closed:
        return CLOSED, StatusCategory.DONE
    carried = {label.casefold() for label in labels}
    for status in status_labels:
        if status.casefold() in carried:
            return status, category_of_label(status, label_categories)
    return OPEN, StatusCategory.TODO


def category_of_label(label: str, label_categories: Mapping[str, StatusCategory]) -> StatusCategory:
    for name, category in label_categories.items():
        if name.casefold() == label.casefold():
            return category
    return StatusCategory.IN_PROGRESS


def label_workflow(status_labels: list[str], label_categories: Mapping[str, StatusCategory]) -> Workflow:
    """Open, then the status labels in config order, then Closed."""
    return Workflow(statuses=[
        WorkflowStatus(name=OPEN, category=StatusCategory.TODO),
        *(WorkflowStatus(name=label, category=category_of_label(label, label_categories))
          for label in status_labels),
        WorkflowStatus(name=CLOSED, category=StatusCategory.DONE),
    ])


def check_label_config(status_labels: list[str], label_categories: Mapping[str, StatusCategory]) -> None:
    """Config validation: no duplicate status label, no category for a label that is not one."""
    seen: set[str] = set()
    for label in status_labels:
        folded = label.strip().casefold()
        if not folded:
            raise ValueError("status_labels has an empty label")
        if folded in {OPEN.casefold(), CLOSED.casefold()}:
            raise ValueError(f"status label {label!r} clashes with the built-in status {label.title()!r}")
        if folded in seen:
            raise ValueError(f"status label {label!r} is listed twice")
        seen.add(folded)
    stray = [name for name in label_categories if name.casefold() not in seen]
    if stray:
        raise ValueError(f"label_categories names labels that are not in status_labels: {', '.join(stray)}")
