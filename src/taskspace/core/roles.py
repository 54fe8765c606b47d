"""Roles and what they may do.

``developer`` works in their own workspaces; ``reviewer`` reads everything; ``admin`` manages
projects, users and policies and may stop, start or purge anyone's workspace. Entering a
workspace (exec, terminal, forwarded ports) is for its owner only: it holds their work.
"""

from __future__ import annotations

from enum import Enum, StrEnum

from taskspace.core.errors import Forbidden, NotFound


class Role(StrEnum):
    DEVELOPER = "developer"
    REVIEWER = "reviewer"
    ADMIN = "admin"


class Access(Enum):
    READ = "read"  # see it, its events and logs
    CHANGE = "change"  # stop, start, purge
    ENTER = "enter"  # run commands in it, open its terminal or ports


def may(role: str, access: Access, *, owner: bool) -> bool:
    if owner:
        return True
    if access == Access.READ:
        return role in {Role.REVIEWER, Role.ADMIN}
    if access == Access.CHANGE:
        return role == Role.ADMIN
    return False


def check_workspace(role: str, access: Access, *, owner: bool, what: str) -> None:
    """Raise NotFound when the caller may not even see it (its existence is not revealed),
    Forbidden when they may see it but not do this."""
    if may(role, access, owner=owner):
        return
    if not may(role, Access.READ, owner=owner):
        raise NotFound(f"You have no workspace for {what}.", hint="Check the ticket key.")
    verb = {Access.CHANGE: "stop, start or purge", Access.ENTER: "open"}[access]
    raise Forbidden(f"You may not {verb} another person's workspace.",
                    hint="Ask its owner, or an admin for stop, start and purge.")


def require_admin(role: str, what: str) -> None:
    if role != Role.ADMIN:
        raise Forbidden(f"Only admins may {what}.", hint="Ask an admin of this taskspace.")
