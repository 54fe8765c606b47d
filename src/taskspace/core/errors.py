"""Errors that reach a person: each says what happened and what to do next."""

from __future__ import annotations


class TaskspaceError(Exception):
    """Base error. ``message`` says what happened, ``hint`` what to do next."""

    status_code = 400
    code = "error"

    def __init__(self, message: str, *, hint: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.field = field

    def to_dict(self) -> dict[str, str]:
        body = {"code": self.code, "message": self.message}
        if self.hint:
            body["hint"] = self.hint
        if self.field:
            body["field"] = self.field
        return body

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class InvalidInput(TaskspaceError):
    status_code = 422
    code = "invalid_input"


class NotFound(TaskspaceError):
    status_code = 404
    code = "not_found"


class Conflict(TaskspaceError):
    status_code = 409
    code = "conflict"


class Unauthorized(TaskspaceError):
    status_code = 401
    code = "unauthorized"


class Forbidden(TaskspaceError):
    status_code = 403
    code = "forbidden"


class BackendError(TaskspaceError):
    """The container engine failed or could not be reached."""

    status_code = 502
    code = "backend_error"


class EngineUnreachable(BackendError):
    """No connection to the container engine could be made: it is down or restarting. What
    was asked is worth asking again once it answers; it says nothing about the workspace."""


class GitError(TaskspaceError):
    """A git operation against a remote or a workspace failed."""

    status_code = 502
    code = "git_error"


class StaleWrite(TaskspaceError):
    """Another worker changed the row since it was loaded; this worker's result is dropped."""

    status_code = 409
    code = "stale_write"
