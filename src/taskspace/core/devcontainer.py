"""Reading ``devcontainer.json``: the workspace container as the repository describes it.

The file comes from a user's repository, so it is untrusted: every problem becomes an
:class:`InvalidInput` naming the file (and, for syntax errors, the line and column), and the
parser enforces a size and a nesting limit.

Honoured: ``image``; ``build.dockerfile``/``context``/``args``/``target`` (and the legacy
top-level ``dockerFile``/``context``); ``containerEnv``; ``remoteEnv``; ``onCreateCommand``;
``updateContentCommand``; ``postCreateCommand``; ``postStartCommand``; ``forwardPorts``; ``mounts`` (volumes and tmpfs only); ``remoteUser``;
``containerUser``. Settings that a workspace cannot honour safely are reported in
``EnvironmentConfig.warnings``; keys this module does not know (``name``, ``customizations``
and the many tool-specific ones) are ignored.

Paths in ``build`` are relative to the folder holding ``devcontainer.json``; they are returned
relative to the repository root, POSIX style, and may never leave the repository.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from taskspace.core.environment import (
    DockerBuild,
    EnvironmentConfig,
    LifecycleCommand,
    MountSpec,
)
from taskspace.core.errors import InvalidInput
from taskspace.core.naming import IMAGE_REF_RE

MAX_DEVCONTAINER_BYTES = 256 * 1024
MAX_JSON_DEPTH = 64
DEVCONTAINER_PATH = ".devcontainer/devcontainer.json"
ROOT_DEVCONTAINER_PATH = ".devcontainer.json"

# Longer numbers are never meaningful here, and Python refuses to convert integers of more
# than a few thousand digits (with a ValueError that carries no position).
_MAX_NUMBER_LENGTH = 100

_JSONC_HINT = "Fix the JSON at that position; comments (// and /* */) and trailing commas are allowed."

_BAD_ESCAPE = 'invalid escape in string (use \\", \\\\, \\/, \\b, \\f, \\n, \\r, \\t or \\uXXXX)'
_CONTROL_IN_STRING = "control character in string (write it as an escape such as \\n or \\t)"

_JSONC_TOKEN_RE = re.compile(
    r"""
      (?P<ws>[ \t\r\n]+)
    | (?P<string>"[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*")
    | (?P<line_comment>//[^\n]*)
    | (?P<block_comment>/\*.*?\*/)
    | (?P<open>[\[{])
    | (?P<close>[\]}])
    | (?P<comma>,)
    | (?P<number>-?[0-9][0-9.eE+-]*)
    | (?P<word>-?[A-Za-z_$][A-Za-z0-9_$]*)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_VALUE_END_TOKENS = frozenset({"string", "number", "word", "close"})
_JSON_WORDS = frozenset({"true", "false", "null"})
_ESCAPE_RE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)
_RAW_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_NOT_NEWLINE_RE = re.compile(r"[^\n]")

_VARIABLE_RE = re.compile(r"\$\{([^{}]*)\}")
_SUBSTITUTED_VARIABLES = (
    "containerWorkspaceFolder",
    "containerWorkspaceFolderBasename",
    "localWorkspaceFolderBasename",
    "devcontainerId",
)

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_ENV_NAME_RE = re.compile(r"^[^=\s\x00-\x1f\x7f]+\Z")
_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,63})?\Z")
_VOLUME_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,127}\Z")
_HOST_PORT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}:([0-9]{1,5})\Z")

#: Keys that are understood but not honoured, with the reason given to the user.
_NOT_HONOURED = {
    "features": "Dev container features are not installed: bake them into your Dockerfile instead.",
    "runArgs": "runArgs are not passed to the container engine: the platform decides how workspaces run.",
    "initializeCommand": "initializeCommand runs on the host and is never run.",
    "postAttachCommand": "postAttachCommand is not run: use postStartCommand instead.",
    "appPort": "appPort is not published: use forwardPorts instead.",
    "privileged": "privileged is ignored: workspaces never run privileged.",
    "capAdd": "capAdd is ignored: workspaces get no extra capabilities.",
    "securityOpt": "securityOpt is ignored: workspaces keep the platform's security options.",
    "workspaceFolder": "workspaceFolder is ignored: the platform decides where repositories are cloned.",
    "workspaceMount": "workspaceMount is ignored: the platform decides where repositories are cloned.",
    "hostRequirements": "hostRequirements is ignored: the platform sets workspace resources.",
    "overrideCommand": "overrideCommand is ignored: the platform keeps the container running itself.",
    "shutdownAction": "shutdownAction is ignored: workspaces stop and are purged with their ticket.",
}
#: Values of not-honoured keys that match what a workspace does anyway, so need no warning.
_HARMLESS_VALUES: dict[str, object] = {"overrideCommand": True, "privileged": False}

_HONOURED = frozenset(
    {
        "image",
        "build",
        "dockerFile",
        "context",
        "containerEnv",
        "remoteEnv",
        "onCreateCommand",
        "updateContentCommand",
        "postCreateCommand",
        "postStartCommand",
        "forwardPorts",
        "mounts",
        "remoteUser",
        "containerUser",
    }
)
_BUILD_KEYS = ("dockerfile", "context", "args", "target")
_MOUNT_STRING_KEYS = {
    "type": "type",
    "source": "source",
    "src": "source",
    "target": "target",
    "destination": "target",
    "dst": "target",
}


# --------------------------------------------------------------------------------------------
# JSON with comments


def parse_jsonc(text: str, *, path: str) -> Any:
    """Parse JSON that may hold ``//`` and ``/* */`` comments and trailing commas.

    Comments inside strings are left alone. Every problem raises :class:`InvalidInput` whose
    message names ``path`` and, for syntax errors, the line and column in ``text`` (1-based).
    ``NaN``/``Infinity``, lone UTF-16 surrogates, documents larger than
    :data:`MAX_DEVCONTAINER_BYTES` and nesting deeper than :data:`MAX_JSON_DEPTH` are refused.
    """
    _check_text_size(text, path, MAX_DEVCONTAINER_BYTES)
    plain, problem = _strip_jsonc(text)
    if not plain.strip():
        raise InvalidInput(f"{path} is empty.", hint='Write a JSON object, e.g. {"image": "ubuntu:24.04"}.')
    if problem:
        raise _first_error(path, text, plain, problem)
    try:
        return json.loads(plain)
    except json.JSONDecodeError as exc:
        raise _syntax_error(path, text, exc.pos, exc.msg) from None
    except (ValueError, RecursionError) as exc:  # pre-checks should make this unreachable
        raise InvalidInput(f"{path} is not valid JSON: {exc.__class__.__name__}.", hint=_JSONC_HINT) from None


def _check_text_size(text: str, path: str, limit: int) -> None:
    too_big = InvalidInput(
        f"{path} is larger than {limit // 1024} KiB.",
        hint="Keep the file small; large data does not belong in configuration.",
    )
    if len(text) > limit:
        raise too_big
    surrogate = _RAW_SURROGATE_RE.search(text)
    if surrogate:
        raise _syntax_error(path, text, surrogate.start(), "the file is not valid UTF-8 text")
    if len(text.encode("utf-8")) > limit:
        raise too_big


def _position(text: str, pos: int) -> tuple[int, int]:
    """1-based line and column of offset ``pos`` in ``text``."""
    line = text.count("\n", 0, pos) + 1
    column = pos - text.rfind("\n", 0, pos)
    return line, column


def _syntax_error(path: str, text: str, pos: int, what: str, hint: str = _JSONC_HINT) -> InvalidInput:
    line, column = _position(text, pos)
    return InvalidInput(f"{path} line {line}, column {column}: {what}.", hint=hint)


@dataclass(frozen=True)
class _Problem:
    """Something :func:`json.loads` would miss, accept, or choke on, found at ``pos``."""

    pos: int
    what: str
    hint: str = _JSONC_HINT
    #: Where the token holding the problem starts: the text before it is sound so far.
    token_start: int | None = None

    @property
    def scanned_up_to(self) -> int:
        return self.pos if self.token_start is None else self.token_start


def _first_error(path: str, text: str, plain: str, problem: _Problem) -> InvalidInput:
    """The error a reader should see first: ``problem``, or a syntax error found before it.

    Only the text before the problem is handed to :func:`json.loads`, so nothing it could
    choke on (deep nesting, huge numbers) reaches it.
    """
    try:
        json.loads(plain[: problem.scanned_up_to])
    except json.JSONDecodeError as exc:
        if exc.pos < problem.scanned_up_to:
            return _syntax_error(path, text, exc.pos, exc.msg)
    return _syntax_error(path, text, problem.pos, problem.what, problem.hint)


def _strip_jsonc(text: str) -> tuple[str, _Problem | None]:
    """``text`` as plain JSON, every character keeping its offset, and the first problem.

    Comments, trailing commas and a leading byte-order mark become spaces (newlines are kept),
    so positions reported by :func:`json.loads` are positions in the original text. The
    problem is what :func:`json.loads` would accept but JSON does not, nesting deeper than
    :data:`MAX_JSON_DEPTH`, or a string or comment that never ends; scanning stops there.
    """
    blanks: list[tuple[int, int]] = []
    if text.startswith("\ufeff"):
        blanks.append((0, 1))
    depth = 0
    previous_kind = ""
    pending_comma: int | None = None
    for match in _JSONC_TOKEN_RE.finditer(text, 1 if blanks else 0):
        kind = match.lastgroup or "other"
        start, end = match.span()
        if kind in ("ws", "line_comment", "block_comment"):
            if kind != "ws":
                blanks.append((start, end))
            continue
        problem = None
        if kind == "other":
            problem = _unclosed(text, start)
        elif kind == "open":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                problem = _Problem(
                    start, f"nested deeper than {MAX_JSON_DEPTH} levels", "Flatten the structure."
                )
        elif kind == "close":
            depth -= 1
            if pending_comma is not None:
                blanks.append((pending_comma, pending_comma + 1))
        elif kind == "word" and match.group() not in _JSON_WORDS:
            problem = _Problem(
                start,
                f"unexpected {match.group()!r}",
                "Values are strings in double quotes, numbers, true, false or null.",
            )
        elif kind == "number" and end - start > _MAX_NUMBER_LENGTH:
            problem = _Problem(start, f"a number longer than {_MAX_NUMBER_LENGTH} characters")
        elif kind == "string" and "\\u" in match.group():
            problem = _lone_surrogate(start, match.group())
        if problem:
            return _blank_out(text, blanks), problem
        # Only a comma that follows a value can be trailing: "[,]" stays an error.
        pending_comma = start if kind == "comma" and previous_kind in _VALUE_END_TOKENS else None
        previous_kind = kind
    return _blank_out(text, blanks), None


def _unclosed(text: str, start: int) -> _Problem | None:
    """The problem with a comment or string opening at ``start`` that the tokenizer refused.

    None for any other stray character: json.loads names what it expected there.
    """
    if text.startswith("/*", start):
        return _Problem(start, "a /* comment is never closed", "End it with */.")
    if text[start] == '"':
        return _string_problem(text, start)
    return None


def _string_problem(text: str, start: int) -> _Problem:
    """Where and why the string opening at ``start`` is not a valid JSON string."""
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char == '"':
            break
        if char == "\\":
            escape = _ESCAPE_RE.match(text, pos)
            if not escape or (escape.group(1) is None and text[pos + 1 : pos + 2] not in '"\\/bfnrt'):
                return _Problem(pos, _BAD_ESCAPE, token_start=start)
            pos = escape.end()
            continue
        if ord(char) < 0x20:
            return _Problem(pos, _CONTROL_IN_STRING, token_start=start)
        pos += 1
    return _Problem(start, "string is never closed")


def _lone_surrogate(start: int, token: str) -> _Problem | None:
    """``\\uD800``-``\\uDFFF`` escapes in the string ``token`` that do not form a UTF-16 pair."""
    pending_high: int | None = None
    for escape in _ESCAPE_RE.finditer(token):
        code = int(escape.group(1), 16) if escape.group(1) else None
        if pending_high is not None:
            if code is None or not 0xDC00 <= code <= 0xDFFF:
                break
            pending_high = None
            continue
        if code is not None and 0xD800 <= code <= 0xDBFF:
            pending_high = start + escape.start()
        elif code is not None and 0xDC00 <= code <= 0xDFFF:
            return _Problem(start + escape.start(), "a lone UTF-16 surrogate escape", token_start=start)
    if pending_high is not None:
        return _Problem(pending_high, "a lone UTF-16 surrogate escape", token_start=start)
    return None


def _blank_out(text: str, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return text
    pieces = []
    last = 0
    for start, end in sorted(spans):
        pieces.append(text[last:start])
        pieces.append(_NOT_NEWLINE_RE.sub(" ", text[start:end]))
        last = end
    pieces.append(text[last:])
    return "".join(pieces)


# --------------------------------------------------------------------------------------------
# Repository and container paths (shared with the services file)


def resolve_repo_path(value: str, *, base: str = ".", config_path: str, field: str) -> str:
    """``value`` (relative to the repository folder ``base``) as a path from the repository root.

    The result is POSIX, normalized, and ``"."`` for the root itself. Raises
    :class:`InvalidInput` naming ``config_path`` and ``field`` for an empty or absolute path, a
    backslash, a control character, or a path that climbs out of the repository.
    """
    shown = _shorten(value)
    relative_to = "the repository root" if base in ("", ".") else f"{base}/"
    hint = f"Use a relative path inside the repository (relative to {relative_to}) with '/' separators."
    if not value:
        raise InvalidInput(f"{config_path}: {field} is empty.", hint=hint, field=field)
    if _CONTROL_RE.search(value):
        raise InvalidInput(f"{config_path}: {field} contains a control character.", hint=hint, field=field)
    if "\\" in value:
        raise InvalidInput(f"{config_path}: {field} {shown} contains a backslash.", hint=hint, field=field)
    if value.startswith("/") or re.match(r"^[A-Za-z]:", value):
        raise InvalidInput(f"{config_path}: {field} {shown} is an absolute path.", hint=hint, field=field)
    parts: list[str] = []
    for part in f"{base}/{value}".split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise InvalidInput(
                    f"{config_path}: {field} {shown} points outside the repository.", hint=hint, field=field
                )
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts) or "."


def validate_container_path(value: str, *, config_path: str, field: str) -> str:
    """An absolute path inside a container, normalized; never ``/`` itself."""
    hint = "Use an absolute path inside the container, e.g. /home/dev/.cache."
    if not value.startswith("/"):
        raise InvalidInput(
            f"{config_path}: {field} {_shorten(value)} is not an absolute path.", hint=hint, field=field
        )
    if _CONTROL_RE.search(value):
        raise InvalidInput(f"{config_path}: {field} contains a control character.", hint=hint, field=field)
    normalized = "/" + posixpath.normpath(value).lstrip("/")
    if normalized == "/":
        raise InvalidInput(
            f"{config_path}: {field} cannot be the container's root '/'.", hint=hint, field=field
        )
    return normalized


def describe_type(value: object) -> str:
    """How a JSON/YAML value's type reads in an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _shorten(value: str, limit: int = 80) -> str:
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


# --------------------------------------------------------------------------------------------
# devcontainer.json


@dataclass
class _Reading:
    """What the parse of one file carries along: where it is, and what it has warned about."""

    path: str
    folder: str
    substitutions: dict[str, str]
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def error(self, key: str, what: str, hint: str) -> InvalidInput:
        return InvalidInput(f"{self.path}: {key} {what}", hint=hint, field=key)

    def type_error(self, key: str, expected: str, value: object, hint: str | None = None) -> InvalidInput:
        return self.error(
            key, f"must be {expected}, not {describe_type(value)}.", hint or f"Set {key} to {expected}."
        )


def parse_devcontainer(
    text: str,
    *,
    path: str = DEVCONTAINER_PATH,
    substitutions: dict[str, str] | None = None,
) -> EnvironmentConfig:
    """The workspace environment described by a ``devcontainer.json`` at ``path`` in the repo.

    ``substitutions`` gives the values of ``${containerWorkspaceFolder}``,
    ``${containerWorkspaceFolderBasename}``, ``${localWorkspaceFolderBasename}`` and
    ``${devcontainerId}``; variables it lacks are left as written. ``${localEnv:NAME}`` becomes
    its default (or ``""``) so the server's environment never reaches a workspace;
    ``${containerEnv:NAME}`` is left for the container to resolve. Raises :class:`InvalidInput`
    for anything that cannot be honoured safely or is malformed.
    """
    data = parse_jsonc(text, path=path)
    if not isinstance(data, dict):
        raise InvalidInput(
            f"{path} must hold a JSON object, not {describe_type(data)}.",
            hint='Start the file with {"image": ...} or {"build": {"dockerfile": ...}}.',
        )
    folder = posixpath.dirname(path) or "."
    reading = _Reading(path=path, folder=folder, substitutions=_complete_substitutions(substitutions or {}))
    config = {key: _substitute(value, reading) if key in _HONOURED else value for key, value in data.items()}
    if config.get("dockerComposeFile") is not None:
        raise InvalidInput(
            f"{path}: Docker Compose based devcontainers (dockerComposeFile) are not supported.",
            hint="Use an image or a Dockerfile for the workspace and declare its dependencies "
            "in .taskspace/services.yaml instead.",
            field="dockerComposeFile",
        )
    image, build = _image_or_build(config, reading)
    environment = EnvironmentConfig(
        source="devcontainer",
        config_path=path,
        image=image,
        build=build,
        container_env=_env_map(config, "containerEnv", reading, allow_unset=False),
        remote_env=_env_map(config, "remoteEnv", reading, allow_unset=True),
        on_create=_lifecycle_command(config, "onCreateCommand", reading),
        update_content=_lifecycle_command(config, "updateContentCommand", reading),
        post_create=_lifecycle_command(config, "postCreateCommand", reading),
        post_start=_lifecycle_command(config, "postStartCommand", reading),
        forward_ports=_forward_ports(config, reading),
        mounts=_mounts(config, reading),
        container_user=_user(config, "containerUser", reading),
        remote_user=_user(config, "remoteUser", reading),
    )
    _warn_not_honoured(config, reading)
    environment.warnings = list(reading.warnings)
    return environment


def _complete_substitutions(given: dict[str, str]) -> dict[str, str]:
    values = {name: given[name] for name in _SUBSTITUTED_VARIABLES if name in given}
    folder = values.get("containerWorkspaceFolder")
    if folder and "containerWorkspaceFolderBasename" not in values:
        values["containerWorkspaceFolderBasename"] = posixpath.basename(folder.rstrip("/"))
    return values


def _substitute(value: Any, reading: _Reading) -> Any:
    """``value`` with variables substituted in every string value (keys are left alone)."""
    if isinstance(value, str):
        return (
            _VARIABLE_RE.sub(lambda match: _variable_value(match, reading), value) if "${" in value else value
        )
    if isinstance(value, list):
        return [_substitute(item, reading) for item in value]
    if isinstance(value, dict):
        return {key: _substitute(item, reading) for key, item in value.items()}
    return value


def _variable_value(match: re.Match[str], reading: _Reading) -> str:
    expression = match.group(1)
    if expression in reading.substitutions:
        return reading.substitutions[expression]
    kind, _, rest = expression.partition(":")
    if kind in ("localEnv", "env") and rest:
        # A default may itself hold ':' (a URL), so only the first one after the name splits.
        name, has_default, default = rest.partition(":")
        replacement = "its default value" if has_default else "an empty string"
        reading.warn(
            f"${{{kind}:{name}}} was replaced by {replacement}: "
            "the server's environment is never passed to a workspace."
        )
        return default
    if kind == "localWorkspaceFolder":
        reading.warn(
            "${localWorkspaceFolder} was left as written: the repository is not on the server's disk."
        )
    return match.group(0)


def _image_or_build(config: dict[str, Any], reading: _Reading) -> tuple[str | None, DockerBuild | None]:
    image = _optional_str(config, "image", reading)
    build = config.get("build")
    if build is not None and not isinstance(build, dict):
        raise reading.type_error("build", "an object", build, 'Write "build": {"dockerfile": "Dockerfile"}.')
    build = build or {}
    if build.get("dockerfile") is not None and config.get("dockerFile") is not None:
        raise reading.error(
            "build.dockerfile",
            "and the legacy dockerFile are both set.",
            "Keep only build.dockerfile.",
        )
    dockerfile = _optional_str(build, "dockerfile", reading, prefix="build.")
    dockerfile_key = "build.dockerfile"
    if dockerfile is None:
        dockerfile = _optional_str(config, "dockerFile", reading)
        dockerfile_key = "dockerFile"
    choose = (
        'Set either "image" (a ready image) or "build": {"dockerfile": ...} (built from your repository).'
    )
    if image and dockerfile:
        raise InvalidInput(
            f"{reading.path}: both image and {dockerfile_key} are set.", hint=choose, field="image"
        )
    if image:
        if not IMAGE_REF_RE.match(image):
            raise InvalidInput(
                f"{reading.path}: image {_shorten(image)} is not an image reference.",
                hint="Write it in lower case without spaces, e.g. mcr.microsoft.com/devcontainers/base:debian.",
                field="image",
            )
        if build or config.get("context") is not None:
            reading.warn("build and context are ignored because image is set.")
        return image, None
    if not dockerfile:
        raise InvalidInput(
            f"{reading.path}: neither image nor build.dockerfile is set.", hint=choose, field="image"
        )
    for key in build:
        if key not in _BUILD_KEYS:
            reading.warn(f"build.{key} is ignored: only dockerfile, context, args and target are used.")
    return None, _docker_build(config, build, dockerfile_key, dockerfile, reading)


def _docker_build(
    config: dict[str, Any], build: dict[str, Any], dockerfile_key: str, dockerfile: str, reading: _Reading
) -> DockerBuild:
    context_key = "build.context"
    context = _optional_str(build, "context", reading, prefix="build.")
    if context is None:
        context_key = "context"
        context = _optional_str(config, "context", reading)
    return DockerBuild(
        dockerfile=resolve_repo_path(
            dockerfile, base=reading.folder, config_path=reading.path, field=dockerfile_key
        ),
        context=resolve_repo_path(
            context or ".", base=reading.folder, config_path=reading.path, field=context_key
        ),
        args=_string_map(build.get("args"), "build.args", reading, allow_null=False),
        target=_optional_str(build, "target", reading, prefix="build."),
    )


def _optional_str(data: dict[str, Any], key: str, reading: _Reading, *, prefix: str = "") -> str | None:
    """A string setting, None when absent or null; an empty string counts as absent."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise reading.type_error(prefix + key, "a string", value)
    return value or None


def _string_map(value: Any, key: str, reading: _Reading, *, allow_null: bool) -> dict[str, str]:
    """An object of string values; with ``allow_null``, null values are dropped."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise reading.type_error(key, "an object of names to strings", value)
    result: dict[str, str] = {}
    for name, item in value.items():
        if not _ENV_NAME_RE.match(name):
            raise reading.error(
                key,
                f"has an invalid name {_shorten(name)}.",
                "Names cannot be empty or contain '=', spaces or control characters.",
            )
        if item is None and allow_null:
            continue
        if not isinstance(item, str):
            raise reading.type_error(f"{key}.{name}", "a string", item, 'Quote the value, e.g. "8080".')
        if "\x00" in item:
            raise reading.error(f"{key}.{name}", "contains a NUL character.", "Remove it.")
        result[name] = item
    return result


def _env_map(config: dict[str, Any], key: str, reading: _Reading, *, allow_unset: bool) -> dict[str, str]:
    return _string_map(config.get(key), key, reading, allow_null=allow_unset)


def _lifecycle_command(config: dict[str, Any], key: str, reading: _Reading) -> LifecycleCommand | None:
    """A shell string or argv list is stored under ``""``; an object holds named commands.

    Empty commands are dropped; None when nothing is left.
    """
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, dict):
        commands = {}
        for name, command in value.items():
            parsed = _command(command, f"{key}.{name}", reading)
            if parsed:
                commands[name] = parsed
    else:
        parsed = _command(value, key, reading)
        commands = {"": parsed} if parsed else {}
    return LifecycleCommand(commands=commands) if commands else None


def _command(value: Any, key: str, reading: _Reading) -> str | list[str]:
    expected = "a shell command string or a list of strings (argv)"
    if isinstance(value, str):
        return value if value.strip() else ""
    if isinstance(value, list):
        if not all(isinstance(item, str) for item in value):
            bad = next(item for item in value if not isinstance(item, str))
            raise reading.error(
                key,
                f"must be a list of strings; it holds {describe_type(bad)}.",
                'Quote every argument, e.g. ["npm", "install"].',
            )
        return list(value)
    raise reading.type_error(key, expected, value)


def _forward_ports(config: dict[str, Any], reading: _Reading) -> list[int | str]:
    value = config.get("forwardPorts")
    if value is None:
        return []
    hint = 'List port numbers or "host:port" strings, e.g. [3000, "db:5432"].'
    if not isinstance(value, list):
        raise reading.type_error("forwardPorts", "a list", value, hint)
    ports: list[int | str] = []
    for index, item in enumerate(value):
        port = _forward_port(item, f"forwardPorts[{index}]", reading, hint)
        if port not in ports:
            ports.append(port)
    return ports


def _forward_port(item: Any, key: str, reading: _Reading, hint: str) -> int | str:
    if isinstance(item, str) and item.isascii() and item.isdigit():
        item = int(item)
    if isinstance(item, int) and not isinstance(item, bool):
        if not 1 <= item <= 65535:
            raise reading.error(key, f"{item} is not a port number between 1 and 65535.", hint)
        return item
    if isinstance(item, str):
        match = _HOST_PORT_RE.match(item)
        if not match or not 1 <= int(match.group(1)) <= 65535:
            raise reading.error(key, f'{_shorten(item)} is not a port or a "host:port" string.', hint)
        return item
    raise reading.type_error(key, 'a port number or a "host:port" string', item, hint)


def _mounts(config: dict[str, Any], reading: _Reading) -> list[MountSpec]:
    value = config.get("mounts")
    if value is None:
        return []
    if not isinstance(value, list):
        raise reading.type_error(
            "mounts", "a list", value, 'Write "mounts": ["source=cache,target=/root/.cache,type=volume"].'
        )
    mounts = []
    for index, item in enumerate(value):
        key = f"mounts[{index}]"
        if isinstance(item, str):
            mounts.append(_mount_from_string(item, key, reading))
        elif isinstance(item, dict):
            mounts.append(_mount_from_object(item, key, reading))
        else:
            raise reading.type_error(key, 'a "source=...,target=...,type=volume" string or an object', item)
    return mounts


def _mount_from_string(text: str, key: str, reading: _Reading) -> MountSpec:
    """``source=cache,target=/root/.cache,type=volume[,readonly]``, as ``docker run --mount``."""
    fields: dict[str, str] = {}
    read_only = False
    for part in text.split(","):
        name, has_value, value = part.strip().partition("=")
        name = name.strip().lower()
        if not name:
            continue
        if name in ("readonly", "ro"):
            read_only = not has_value or value.strip().lower() in ("1", "true")
        elif name in _MOUNT_STRING_KEYS:
            fields[_MOUNT_STRING_KEYS[name]] = value.strip()
        elif name != "consistency":  # a macOS file-sharing hint, meaningless here
            reading.warn(f"{key}: the mount option {name!r} is ignored.")
    return _mount(fields.get("type"), fields.get("source"), fields.get("target"), read_only, key, reading)


def _mount_from_object(item: dict[str, Any], key: str, reading: _Reading) -> MountSpec:
    values: dict[str, str | None] = {}
    for name in ("type", "source", "target"):
        value = item.get(name)
        if value is not None and not isinstance(value, str):
            raise reading.type_error(f"{key}.{name}", "a string", value)
        values[name] = value
    for name in item:
        if name not in values:
            reading.warn(f"{key}: the mount setting {name!r} is ignored.")
    return _mount(values["type"], values["source"], values["target"], False, key, reading)


def _mount(
    kind: str | None, source: str | None, target: str | None, read_only: bool, key: str, reading: _Reading
) -> MountSpec:
    kind = (kind or "volume").lower()
    if kind == "bind":
        raise reading.error(
            key,
            "is a bind mount; bind mounts would expose the server's files to the workspace.",
            'Use a volume instead, e.g. "source=my-cache,target=/home/dev/.cache,type=volume".',
        )
    if kind not in ("volume", "tmpfs"):
        raise reading.error(key, f"has the unsupported type {kind!r}.", "Use type=volume or type=tmpfs.")
    if not target:
        raise reading.error(key, "has no target.", "Add target=/absolute/path/in/the/container.")
    target = validate_container_path(target, config_path=reading.path, field=f"{key}.target")
    if kind == "tmpfs":
        if source:
            raise reading.error(key, "is a tmpfs mount with a source.", "Remove the source: tmpfs has none.")
        return MountSpec(type="tmpfs", source=None, target=target, read_only=read_only)
    if source and not _VOLUME_NAME_RE.match(source):
        raise reading.error(
            key,
            f"has the source {_shorten(source)}, which is not a volume name.",
            "A volume source is a volume name of 2 to 128 letters, digits, '_', '.' and '-', not a path.",
        )
    return MountSpec(type="volume", source=source or None, target=target, read_only=read_only)


def _user(config: dict[str, Any], key: str, reading: _Reading) -> str | None:
    value = _optional_str(config, key, reading)
    if value is not None and not _USER_RE.match(value):
        raise reading.error(
            key,
            f"{_shorten(value)} is not a user name.",
            "Use a user name or id, optionally with a group: 'dev', '1000' or '1000:1000'.",
        )
    return value


def _warn_not_honoured(config: dict[str, Any], reading: _Reading) -> None:
    for key, message in _NOT_HONOURED.items():
        if key not in config:
            continue
        value = config[key]
        if value in (None, "", [], {}) or (key in _HARMLESS_VALUES and value == _HARMLESS_VALUES[key]):
            continue
        reading.warn(message)


# --------------------------------------------------------------------------------------------
# Finding the file, and projects without one


def find_devcontainer(paths: Iterable[str]) -> str | None:
    """The devcontainer.json to use among a repository's files (POSIX paths from its root).

    ``.devcontainer/devcontainer.json`` first, then ``.devcontainer.json``, then
    ``.devcontainer/<name>/devcontainer.json`` when it is the only one of its kind (several
    would need a choice nobody made). None when there is none.
    """
    present = {path.removeprefix("./") for path in paths}
    for candidate in (DEVCONTAINER_PATH, ROOT_DEVCONTAINER_PATH):
        if candidate in present:
            return candidate
    named = [
        path
        for path in present
        if path.startswith(".devcontainer/") and path.endswith("/devcontainer.json") and path.count("/") == 2
    ]
    return named[0] if len(named) == 1 else None


def dockerfile_environment(
    dockerfile: str = "Dockerfile", *, args: dict[str, str] | None = None
) -> EnvironmentConfig:
    """The environment of a repository without devcontainer.json: build ``dockerfile``.

    ``dockerfile`` is relative to the repository root; the build context is the repository
    root, as with ``docker build -f <dockerfile> .``. Raises :class:`InvalidInput` for a path
    outside the repository or non-string build args.
    """
    path = resolve_repo_path(dockerfile, config_path="Dockerfile path", field="dockerfile")
    build_args = {}
    for name, value in (args or {}).items():
        if not isinstance(name, str) or not isinstance(value, str) or not _ENV_NAME_RE.match(name):
            raise InvalidInput(
                f"Build argument {name!r} must be a name with a string value.",
                hint="Give build arguments as NAME: value pairs of strings.",
                field="args",
            )
        build_args[name] = value
    return EnvironmentConfig(
        source="dockerfile",
        config_path=path,
        image=None,
        build=DockerBuild(dockerfile=path, context=".", args=build_args),
    )
