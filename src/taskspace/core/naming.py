"""Names derived from user input: ticket branches, repository names, project keys.

All validators raise :class:`InvalidInput` with a message that names the rule broken.
"""

from __future__ import annotations

import re
import unicodedata

from taskspace.core.errors import InvalidInput

MAX_BRANCH_LENGTH = 200
_SLUG_MAX = 48

# \Z, not $: "$" also matches before a trailing newline, which would let "PAY\n" through.
PROJECT_KEY_RE = re.compile(r"^[A-Z][A-Z0-9]{1,9}\Z")
#: Jira allows keys like ABC_2-123; trackers' numbers run past nine digits.
TICKET_KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]{1,29}-[1-9][0-9]{0,11}\Z")
REPO_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
TOKEN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_IMAGE_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_DOMAIN_PART = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
#: An image reference as the engine parses it: ``[registry[:port]/]path[:tag][@digest]``. One
#: that is not (upper case, spaces, '..') would be refused by the engine only after the launch
#: got that far, or could even address another route of the engine's API.
IMAGE_REF_RE = re.compile(
    rf"^(?=.{{1,512}}\Z)(?:{_IMAGE_DOMAIN_PART}(?:\.{_IMAGE_DOMAIN_PART})*(?::[0-9]{{1,5}})?/)?"
    rf"{_IMAGE_PATH_PART}(?:/{_IMAGE_PATH_PART})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,})?\Z")


def slugify(text: str, max_length: int = _SLUG_MAX) -> str:
    """Lower-case ASCII words joined by ``-``, cut at a word boundary."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    slug = ""
    for word in words:
        candidate = f"{slug}-{word}" if slug else word
        if len(candidate) > max_length:
            if not slug:
                slug = word[:max_length]
            break
        slug = candidate
    return slug


def ticket_branch(key: str, title: str) -> str:
    """``<KEY>-<slug-of-title>``, or just the key when the title has no usable words."""
    slug = slugify(title)
    name = f"{key}-{slug}" if slug else key
    validate_branch_name(name)
    return name


def branch_problem(name: str) -> str | None:
    """Why ``name`` is not a valid branch name (``git check-ref-format --branch``), or None."""
    if not name:
        return "it is empty"
    if len(name) > MAX_BRANCH_LENGTH:
        return f"it is longer than {MAX_BRANCH_LENGTH} characters"
    if name.startswith("-"):
        return "it starts with '-', which git would read as an option"
    if name == "@":
        return "'@' alone is not a branch name"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "it contains a control character"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "it contains characters that are not valid text (lone surrogates)"
    for ch in name:
        if ch in " ~^:?*[\\":
            return f"it contains {ch!r}"
    if ".." in name:
        return "it contains '..'"
    if "@{" in name:
        return "it contains '@{'"
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return "it has an empty path component (a leading, trailing or doubled '/')"
    if name.endswith("."):
        return "it ends with '.'"
    for part in name.split("/"):
        if part.startswith("."):
            return "a component starts with '.'"
        if part.endswith(".lock"):
            return "a component ends with '.lock'"
    if name.startswith("refs/") or name == "HEAD":
        return "it would be confused with a full ref name or HEAD"
    return None


def validate_branch_name(name: str, *, field: str = "branch") -> str:
    problem = branch_problem(name)
    if problem:
        raise InvalidInput(
            f"{name!r} is not a valid branch name: {problem}.",
            hint="Use letters, digits, '-', '_', '.' and '/' (e.g. 'main' or 'feature/login').",
            field=field,
        )
    return name


def validate_project_key(key: str) -> str:
    if not PROJECT_KEY_RE.match(key or ""):
        raise InvalidInput(
            f"{key!r} is not a valid project key.",
            hint="Use 2 to 10 upper-case letters or digits, starting with a letter (e.g. 'PAY').",
            field="key",
        )
    return key


def validate_ticket_key(key: str) -> str:
    if not TICKET_KEY_RE.match(key or ""):
        raise InvalidInput(
            f"{key!r} is not a ticket key.",
            hint="A ticket key looks like 'PAY-123'.",
            field="key",
        )
    return key


def validate_repo_name(name: str) -> str:
    if not REPO_NAME_RE.match(name or "") or name in {".", ".."} or name.endswith(".git"):
        raise InvalidInput(
            f"{name!r} cannot be used as a repository directory name.",
            hint="Use letters, digits, '.', '_' and '-' (it becomes /workspace/<name>).",
            field="name",
        )
    return name


def validate_token_name(name: str) -> str:
    if not TOKEN_NAME_RE.match(name or ""):
        raise InvalidInput(
            f"{name!r} is not a valid token name.",
            hint="Use up to 64 letters, digits, '.', '_' and '-'.",
            field="name",
        )
    return name
