"""``.taskspace/services.yaml``: the dependencies that run beside a workspace.

The file lives in the primary repository. Every service gets its own container, reachable
from the workspace under the service's name::

    services:
      db:
        image: postgres:16              # a ready image, or build: (exactly one of the two)
        env:                            # environment of the service container
          POSTGRES_PASSWORD: dev
        command: ["postgres", "-c", "fsync=off"]   # argv list, or a string run by /bin/sh -c
        ports: [5432]                   # ports the service listens on
        healthcheck:                    # the service counts as started once this passes
          test: "pg_isready -U postgres"   # string: run by a shell (CMD-SHELL); list: argv
          interval: 1s                  # durations: seconds as a number, or 500ms, 2s, 1m, 1h, 1m30s
          timeout: 5s
          retries: 60
          start_period: 0s
        init:
          # copied into the container before it starts (path in the primary repository)
          - {source: db/schema.sql, target: /docker-entrypoint-initdb.d/schema.sql}
        publish:                        # environment variables given to the workspace
          DATABASE_URL: "postgresql://postgres:dev@${host}:5432/postgres"

      broker:
        build:                          # built from the primary repository
          dockerfile: .taskspace/broker.Dockerfile   # relative to the repository root
          context: .taskspace           # relative to the repository root; default "."
          args: {KAFKA_VERSION: "3.7"}
          target: runtime
        init:
          # run once in the service after it is healthy: argv list, or a /bin/sh -c string
          - {run: ["kafka-topics.sh", "--create", "--topic", "orders"]}

Rules: at most 20 services; a service name is 1 to 31 lower-case letters, digits and ``-``,
starting with a letter and not ending with ``-`` (it becomes a host name); ``env`` and
``publish`` names are environment variable names and their values scalars (numbers and
booleans become strings); a ``publish`` value may use ``${host}`` (the service's host name)
and no other variable; ``build: <dir>`` is short for ``{context: <dir>}``, and the Dockerfile
defaults to ``<context>/Dockerfile``; ``healthcheck.test`` may also be given in Docker's own
form, ``["CMD", ...]`` or ``["CMD-SHELL", "..."]``, and ``["NONE"]`` turns it off. Paths stay
inside the repository; container paths are absolute. Top-level keys and service keys starting
with ``x-`` are ignored, so they can hold YAML anchors shared by several services. An empty
file, or ``services: {}``, declares no services.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import yaml

from taskspace.core.devcontainer import describe_type, resolve_repo_path, validate_container_path
from taskspace.core.durations import HINT as DURATION_HINT
from taskspace.core.durations import parse_duration
from taskspace.core.environment import DockerBuild, HealthCheck, InitFile, ServiceDecl
from taskspace.core.errors import InvalidInput
from taskspace.core.naming import IMAGE_REF_RE

SERVICES_PATH = ".taskspace/services.yaml"
MAX_SERVICES_BYTES = 256 * 1024
MAX_SERVICES = 20
#: Values the document may hold once YAML aliases are expanded: far above any real file, far
#: below what a "billion laughs" document expands to.
MAX_EXPANDED_VALUES = 100_000
MAX_YAML_DEPTH = 32
MAX_HEALTHCHECK_SECONDS = 3600.0

SERVICE_NAME_RE = re.compile(r"^[a-z](?:[a-z0-9-]{0,29}[a-z0-9])?\Z")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
HOST_PLACEHOLDER = "${host}"

_SERVICE_KEYS = ("image", "build", "env", "command", "ports", "healthcheck", "init", "publish")
_BUILD_KEYS = ("dockerfile", "context", "args", "target")
_HEALTHCHECK_KEYS = ("test", "interval", "timeout", "retries", "start_period")
_PLACEHOLDER_RE = re.compile(r"\$\{([^}]*)\}?")
_USER_SHELL = ["/bin/sh", "-c"]


def parse_services(text: str, *, path: str = SERVICES_PATH) -> list[ServiceDecl]:
    """The services declared in ``text`` (the services file at ``path``), in file order.

    Raises :class:`InvalidInput` naming ``path`` (and the line and column for YAML syntax
    errors) and the offending key for anything malformed, over the limits, or unsafe.
    """
    data = _load_yaml(text, path)
    if data is None:
        return []
    if not isinstance(data, dict):
        raise InvalidInput(
            f"{path} must be a mapping with a 'services' key, not {describe_type(data)}.",
            hint="Start the file with 'services:'.",
        )
    _check_keys(data, ("services",), path, None)
    services = data.get("services")
    if services is None:
        return []
    if not isinstance(services, dict):
        raise _type_error(path, "services", "a mapping of service names to settings", services)
    if len(services) > MAX_SERVICES:
        raise InvalidInput(
            f"{path} declares {len(services)} services; at most {MAX_SERVICES} are allowed.",
            hint="Run fewer dependencies per workspace, or share one service for several purposes.",
            field="services",
        )
    return [_service(name, spec, path) for name, spec in services.items()]


def resolve_publish(decl: ServiceDecl, host: str) -> dict[str, str]:
    """The workspace environment a service publishes, with ``${host}`` replaced by ``host``."""
    return {name: template.replace(HOST_PLACEHOLDER, host) for name, template in decl.publish.items()}


# --------------------------------------------------------------------------------------------
# Loading YAML safely


def _load_yaml(text: str, path: str) -> Any:
    """``yaml.safe_load`` within the size, expansion and depth limits."""
    too_big = InvalidInput(
        f"{path} is larger than {MAX_SERVICES_BYTES // 1024} KiB.",
        hint="Keep the services file small; put data in files that init copies.",
    )
    if len(text) > MAX_SERVICES_BYTES:
        raise too_big
    if re.search("[\ud800-\udfff]", text):
        raise InvalidInput(f"{path} is not valid UTF-8 text.", hint="Save the file as UTF-8.")
    if len(text.encode("utf-8")) > MAX_SERVICES_BYTES:
        raise too_big
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(path, exc) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        raise InvalidInput(
            f"{path} line {line}, column {column}: the character #x{exc.character:04x} is not allowed.",
            hint="Remove control characters; write them as escapes inside double-quoted strings.",
        ) from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path} is not valid YAML: {_one_line(str(exc))}.", hint=_YAML_HINT) from None
    except RecursionError:
        raise InvalidInput(f"{path} is nested too deeply.", hint="Flatten the structure.") from None
    except (ValueError, OverflowError) as exc:
        # The YAML constructors raise these for values like 2024-13-45 or a 5000-digit number.
        raise InvalidInput(
            f"{path} holds a value YAML cannot read: {_one_line(str(exc))}.",
            hint="Quote values that are meant as strings.",
        ) from None
    _check_expansion(data, path)
    return data


_YAML_HINT = "Fix the YAML syntax at that position (indent with spaces, quote strings holding ': ' or '#')."


def _yaml_error(path: str, exc: yaml.MarkedYAMLError) -> InvalidInput:
    what = _one_line(exc.problem or exc.context or "invalid YAML")
    hint = _YAML_HINT
    if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in what:
        hint = "Only plain YAML values are allowed here: remove the tag."
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return InvalidInput(f"{path}: {what}.", hint=hint)
    return InvalidInput(f"{path} line {mark.line + 1}, column {mark.column + 1}: {what}.", hint=hint)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


def _check_expansion(data: Any, path: str) -> None:
    """Refuse documents whose aliases expand beyond the limits (or refer to themselves).

    ``safe_load`` shares one object for every alias of an anchor, so loading is cheap; walking
    the result is what would explode, and every later step walks it.
    """
    budget = MAX_EXPANDED_VALUES
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise InvalidInput(
                f"{path} expands to more than {MAX_EXPANDED_VALUES} values.",
                hint="Keep the file small; note that YAML anchors and aliases multiply what they repeat.",
            )
        if depth > MAX_YAML_DEPTH:
            raise InvalidInput(
                f"{path} is nested deeper than {MAX_YAML_DEPTH} levels (or an alias refers to itself).",
                hint="Flatten the structure.",
            )
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for pair in value.items() for item in pair)
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


# --------------------------------------------------------------------------------------------
# One service


def _service(name: Any, spec: Any, path: str) -> ServiceDecl:
    if not isinstance(name, str) or not SERVICE_NAME_RE.match(name):
        raise InvalidInput(
            f"{path}: {str(name)[:40]!r} is not a valid service name.",
            hint="Use 1 to 31 lower-case letters, digits and '-', starting with a letter "
            "(the name becomes the service's host name).",
            field=f"services.{str(name)[:40]}",
        )
    key = f"services.{name}"
    if spec is None:
        raise InvalidInput(f"{path}: {key} has no settings.", hint="Give it an image or a build.", field=key)
    if not isinstance(spec, dict):
        raise _type_error(path, key, "a mapping of settings", spec)
    _check_keys(spec, _SERVICE_KEYS, path, key)
    image, build = _image_or_build(spec, key, path)
    init = _list(spec.get("init"), f"{key}.init", path)
    init_files: list[InitFile] = []
    init_commands: list[list[str]] = []
    for index, item in enumerate(init):
        _init_step(item, f"{key}.init[{index}]", path, init_files, init_commands)
    return ServiceDecl(
        name=name,
        image=image,
        build=build,
        env=_env(spec.get("env"), f"{key}.env", path),
        command=_command(spec["command"], f"{key}.command", path)
        if spec.get("command") is not None
        else None,
        ports=_ports(spec.get("ports"), f"{key}.ports", path),
        healthcheck=_healthcheck(spec.get("healthcheck"), f"{key}.healthcheck", path),
        init_files=init_files,
        init_commands=init_commands,
        publish=_publish(spec.get("publish"), f"{key}.publish", path),
    )


def _image_or_build(spec: dict[str, Any], key: str, path: str) -> tuple[str | None, DockerBuild | None]:
    image, build = spec.get("image"), spec.get("build")
    choose = "Give the service either image: <name:tag> or build: {dockerfile: ..., context: ...}."
    if image is not None and build is not None:
        raise InvalidInput(f"{path}: {key} sets both image and build.", hint=choose, field=key)
    if image is None and build is None:
        raise InvalidInput(f"{path}: {key} has neither image nor build.", hint=choose, field=key)
    if image is not None:
        if not isinstance(image, str) or not IMAGE_REF_RE.match(image):
            raise InvalidInput(
                f"{path}: {key}.image must be an image name such as postgres:16.",
                hint="Write the image reference in lower case without spaces, e.g. redis:7-alpine.",
                field=f"{key}.image",
            )
        return image, None
    return None, _build(build, f"{key}.build", path)


def _build(build: Any, key: str, path: str) -> DockerBuild:
    if isinstance(build, str):
        build = {"context": build}
    if not isinstance(build, dict):
        raise _type_error(path, key, "a mapping (dockerfile, context, args, target) or a directory", build)
    _check_keys(build, _BUILD_KEYS, path, key)
    context = resolve_repo_path(
        _string(build.get("context", "."), f"{key}.context", path), config_path=path, field=f"{key}.context"
    )
    dockerfile = build.get("dockerfile")
    if dockerfile is None:
        dockerfile = "Dockerfile" if context == "." else f"{context}/Dockerfile"
    target = build.get("target")
    return DockerBuild(
        dockerfile=resolve_repo_path(
            _string(dockerfile, f"{key}.dockerfile", path), config_path=path, field=f"{key}.dockerfile"
        ),
        context=context,
        args=_scalar_map(build.get("args"), f"{key}.args", path),
        target=_string(target, f"{key}.target", path) if target is not None else None,
    )


def _command(value: Any, key: str, path: str) -> list[str]:
    """A string runs in ``/bin/sh -c``; a list is the argv itself. Never empty."""
    if isinstance(value, str):
        if not value.strip():
            raise InvalidInput(
                f"{path}: {key} is empty.", hint="Give a command or remove the key.", field=key
            )
        return [*_USER_SHELL, value]
    if isinstance(value, list):
        if not value:
            raise InvalidInput(
                f"{path}: {key} is an empty list.", hint="Give a command or remove the key.", field=key
            )
        return [_scalar(item, f"{key}[{index}]", path) for index, item in enumerate(value)]
    raise _type_error(path, key, "a list of arguments or a shell command string", value)


def _ports(value: Any, key: str, path: str) -> list[int]:
    ports: list[int] = []
    for index, item in enumerate(_list(value, key, path)):
        if isinstance(item, str) and item.isascii() and item.isdigit():
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= 65535:
            raise InvalidInput(
                f"{path}: {key}[{index}] must be a port number between 1 and 65535, not {item!r}."[:300],
                hint="List the ports the service listens on, e.g. ports: [5432].",
                field=f"{key}[{index}]",
            )
        if item not in ports:
            ports.append(item)
    return ports


def _healthcheck(value: Any, key: str, path: str) -> HealthCheck | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _type_error(path, key, "a mapping with a test", value)
    _check_keys(value, _HEALTHCHECK_KEYS, path, key)
    if value.get("test") is None:
        raise InvalidInput(
            f"{path}: {key} has no test.",
            hint='Add test: "<shell command that succeeds when the service is ready>".',
            field=f"{key}.test",
        )
    test = _healthcheck_test(value["test"], f"{key}.test", path)
    if test is None:
        return None
    defaults = HealthCheck(test=test)
    return HealthCheck(
        test=test,
        interval_seconds=_seconds(value, "interval", key, path, defaults.interval_seconds, positive=True),
        timeout_seconds=_seconds(value, "timeout", key, path, defaults.timeout_seconds, positive=True),
        retries=_retries(value.get("retries", defaults.retries), f"{key}.retries", path),
        start_period_seconds=_seconds(value, "start_period", key, path, defaults.start_period_seconds),
    )


def _healthcheck_test(value: Any, key: str, path: str) -> list[str] | None:
    """Docker's form of a test; None for ``["NONE"]`` (no health check)."""
    if isinstance(value, str):
        return ["CMD-SHELL", _command(value, key, path)[-1]]  # the string, checked non-empty
    argv = _command(value, key, path)
    if argv[0] == "NONE" and len(argv) == 1:
        return None
    if argv[0] in ("CMD", "CMD-SHELL"):
        if len(argv) == 1 or (argv[0] == "CMD-SHELL" and len(argv) != 2):
            raise InvalidInput(
                f"{path}: {key} is malformed: {argv[0]} must be followed by "
                + (
                    "one shell command string."
                    if argv[0] == "CMD-SHELL"
                    else "the command and its arguments."
                ),
                hint='Write test: "pg_isready" (a shell command) or test: ["pg_isready", "-q"] (argv).',
                field=key,
            )
        return argv
    return ["CMD", *argv]


def _seconds(
    value: dict[str, Any], name: str, key: str, path: str, default: float, *, positive: bool = False
) -> float:
    if value.get(name) is None:
        return default
    field = f"{key}.{name}"
    try:
        seconds = parse_duration(value[name])
    except InvalidInput as exc:
        raise InvalidInput(f"{path}: {field}: {exc.message}", hint=exc.hint, field=field) from None
    if (positive and seconds <= 0) or seconds > MAX_HEALTHCHECK_SECONDS:
        low = "more than 0" if positive else "0 or more"
        raise InvalidInput(
            f"{path}: {field} must be {low} and at most {MAX_HEALTHCHECK_SECONDS:.0f} seconds.",
            hint=DURATION_HINT,
            field=field,
        )
    return seconds


def _retries(value: Any, key: str, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000:
        raise InvalidInput(
            f"{path}: {key} must be a whole number between 1 and 10000.",
            hint="Give how many failed tests in a row mark the service unhealthy, e.g. retries: 60.",
            field=key,
        )
    return value


def _init_step(item: Any, key: str, path: str, files: list[InitFile], commands: list[list[str]]) -> None:
    hint = "Write {source: <path in the repository>, target: <absolute path>} or {run: <command>}."
    if not isinstance(item, dict):
        raise _type_error(path, key, "a mapping", item, hint)
    _check_keys(item, ("source", "target", "run"), path, key)
    if "run" in item:
        if "source" in item or "target" in item:
            raise InvalidInput(f"{path}: {key} mixes run with source/target.", hint=hint, field=key)
        commands.append(_command(item["run"], f"{key}.run", path))
        return
    if item.get("source") is None or item.get("target") is None:
        raise InvalidInput(f"{path}: {key} needs both source and target.", hint=hint, field=key)
    source = resolve_repo_path(
        _string(item["source"], f"{key}.source", path), config_path=path, field=f"{key}.source"
    )
    target = validate_container_path(
        _string(item["target"], f"{key}.target", path), config_path=path, field=f"{key}.target"
    )
    files.append(InitFile(source=source, target=target))


def _env(value: Any, key: str, path: str) -> dict[str, str]:
    return _scalar_map(value, key, path)


def _publish(value: Any, key: str, path: str) -> dict[str, str]:
    publish = _scalar_map(value, key, path)
    for name, template in publish.items():
        for match in _PLACEHOLDER_RE.finditer(template):
            if match.group(0) != HOST_PLACEHOLDER:
                raise InvalidInput(
                    f"{path}: {key}.{name} uses {match.group(0)[:40]!r}; only ${{host}} may be used.",
                    hint="${host} is replaced by the service's host name; write other values out.",
                    field=f"{key}.{name}",
                )
    return publish


# --------------------------------------------------------------------------------------------
# Values


def _check_keys(mapping: dict[Any, Any], allowed: tuple[str, ...], path: str, where: str | None) -> None:
    """Refuse keys that are not ``allowed`` (a typo must not pass silently); ``x-`` keys pass.

    ``where`` is the dotted key of ``mapping``, None for the top level.
    """
    for name in mapping:
        if isinstance(name, str) and (name in allowed or name.startswith("x-")):
            continue
        shown = str(name)[:40]
        raise InvalidInput(
            f"{path}: unknown key {shown!r} in {where or 'the top level'}.",
            hint=f"Known keys: {', '.join(allowed)}.",
            field=f"{where}.{shown}" if where else shown,
        )


def _list(value: Any, key: str, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _type_error(path, key, "a list", value)
    return value


def _string(value: Any, key: str, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise _type_error(path, key, "a non-empty string", value)
    return value


def _scalar(value: Any, key: str, path: str) -> str:
    """A YAML scalar as the string it stands for: booleans as ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date):  # YAML reads 2024-01-31 as a date
        return value.isoformat()
    if isinstance(value, (str, int, float)):
        text = str(value)
        if "\x00" in text:
            raise InvalidInput(f"{path}: {key} contains a NUL character.", hint="Remove it.", field=key)
        return text
    raise _type_error(path, key, "a string, number or boolean", value, 'Quote the value, e.g. "dev".')


def _scalar_map(value: Any, key: str, path: str) -> dict[str, str]:
    """A mapping of variable names to scalars, the scalars as strings."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _type_error(path, key, "a mapping of names to values", value)
    result = {}
    for name, item in value.items():
        if not isinstance(name, str) or not ENV_NAME_RE.match(name):
            raise InvalidInput(
                f"{path}: {key} has the invalid name {str(name)[:40]!r}.",
                hint="Names are letters, digits and '_', not starting with a digit.",
                field=key,
            )
        if item is None:
            raise InvalidInput(
                f"{path}: {key}.{name} has no value.",
                hint='Give it a value; write "" for an empty one.',
                field=f"{key}.{name}",
            )
        result[name] = _scalar(item, f"{key}.{name}", path)
    return result


def _type_error(path: str, key: str, expected: str, value: Any, hint: str | None = None) -> InvalidInput:
    return InvalidInput(
        f"{path}: {key} must be {expected}, not {describe_type(value)}.",
        hint=hint or f"Set {key} to {expected}.",
        field=key,
    )
