"""What a Dockerfile builds, in the words a person wants: stages, ports, env names, user.

The file comes from a user's repository, so it is untrusted. ``dockerfile-parse`` splits it
into instructions (it is lenient and validates nothing); the checks that the engine would make
late, after minutes of building, are made here and reported as :class:`InvalidInput` with the
line number. ENV values are read only to expand variables and never leave this module.
"""

from __future__ import annotations

import io
import posixpath
import re
from dataclasses import dataclass, field

from dockerfile_parse import DockerfileParser
from dockerfile_parse.util import WordSplitter, extract_key_values

from taskspace.core.environment import DockerfileSummary, Stage
from taskspace.core.errors import InvalidInput

MAX_DOCKERFILE_BYTES = 1024 * 1024
#: Lines one instruction may span. dockerfile-parse joins continuation lines in quadratic time,
#: and no hand-written instruction comes near this.
MAX_INSTRUCTION_LINES = 2000

INSTRUCTIONS = frozenset(
    {
        "ADD",
        "ARG",
        "CMD",
        "COPY",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "FROM",
        "HEALTHCHECK",
        "LABEL",
        "MAINTAINER",
        "ONBUILD",
        "RUN",
        "SHELL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    }
)
_COMMENT = "COMMENT"  # what dockerfile-parse calls a comment line
_HEREDOC_INSTRUCTIONS = frozenset({"RUN", "COPY", "ADD"})
# "<<<word" is a shell here-string, not a heredoc.
_HEREDOC_RE = re.compile(r"(?<!<)<<(-?)([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2")
_JUNK_RE = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f\ud800-\udfff]")
_STAGE_NAME_RE = re.compile(r"^[a-z][a-z0-9._-]{0,127}$")
_PORT_RE = re.compile(r"^([0-9]{1,5})(?:-([0-9]{1,5}))?(?:/([A-Za-z]+))?$")
_PROTOCOLS = ("tcp", "udp", "sctp")
_VARIABLE_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass
class _Instruction:
    keyword: str
    value: str
    line: int  # 1-based


@dataclass
class _StageState:
    """What one stage has set so far; a stage built ``FROM`` another starts from a copy."""

    name: str | None
    base_image: str
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    exposed: list[str] = field(default_factory=list)
    workdir: str | None = None
    user: str | None = None

    def variables(self) -> dict[str, str]:
        # ENV wins over ARG of the same name, as in the engine.
        return {**self.args, **self.env}


def summarize_dockerfile(
    text: str,
    *,
    path: str = "Dockerfile",
    build_args: dict[str, str] | None = None,
    target: str | None = None,
) -> DockerfileSummary:
    """Stages, and for the final stage (or ``target``): exposed ports, ENV names, WORKDIR, USER.

    ``build_args`` override ARG defaults, as ``docker build --build-arg`` does. A stage built
    ``FROM`` an earlier stage inherits what that stage set. Raises :class:`InvalidInput` naming
    ``path`` and the line for: a file over :data:`MAX_DOCKERFILE_BYTES` or holding binary data,
    no FROM, an instruction before the first FROM other than ARG, an unknown instruction, a
    malformed FROM/ARG/ENV/EXPOSE, or a ``target`` that names no stage.
    """
    instructions = _instructions(text, path)
    stages = _run_stages(instructions, path, build_args or {})
    chosen = _chosen_stage(stages, target, path)
    return DockerfileSummary(
        stages=[Stage(name=stage.name, base_image=stage.base_image) for stage in stages],
        uses_context=any(_reads_context(instruction) for instruction in instructions),
        exposed_ports=list(chosen.exposed),
        env_names=list(chosen.env),
        workdir=chosen.workdir,
        user=chosen.user,
    )


# --------------------------------------------------------------------------------------------
# Reading instructions


def _instructions(text: str, path: str) -> list[_Instruction]:
    """The file's instructions in order, comments and heredoc bodies left out, validated."""
    text = _checked_text(text, path)
    lines = text.split("\n")
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode("utf-8")))
    heredoc_end = -1
    instructions = []
    for entry in parser.structure:
        start = entry["startline"]
        if start <= heredoc_end:
            continue
        keyword = entry["instruction"]
        if keyword == _COMMENT and lines[start].lstrip().startswith("#"):
            continue
        instruction = _Instruction(keyword=keyword, value=entry["value"].strip(), line=start + 1)
        _check_keyword(instruction, path)
        if keyword in _HEREDOC_INSTRUCTIONS:
            heredoc_end = max(heredoc_end, _heredoc_end(instruction, lines, entry["endline"], path))
        instructions.append(instruction)
    return instructions


def _checked_text(text: str, path: str) -> str:
    """``text`` with Windows line ends and a byte-order mark removed, after the sanity checks."""
    too_big = InvalidInput(
        f"{path} is larger than {MAX_DOCKERFILE_BYTES // 1024 // 1024} MiB.",
        hint="Keep large files out of the Dockerfile; COPY them from the build context.",
    )
    if len(text) > MAX_DOCKERFILE_BYTES:
        raise too_big
    junk = _JUNK_RE.search(text)
    if junk:
        line = text.count("\n", 0, junk.start()) + 1
        raise InvalidInput(
            f"{path} line {line}: the file holds binary data (character {junk.group()!r}), not text.",
            hint="Check that the Dockerfile path points at a text Dockerfile.",
        )
    if len(text.encode("utf-8")) > MAX_DOCKERFILE_BYTES:
        raise too_big
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    _check_instruction_lengths(text, path)
    # A last line without a newline would be dropped by dockerfile-parse if it has one word.
    return text if text.endswith("\n") else text + "\n"


def _check_instruction_lengths(text: str, path: str) -> None:
    """Refuse an instruction continued over more than :data:`MAX_INSTRUCTION_LINES` lines.

    Counts as dockerfile-parse joins lines: comment lines inside a continuation do not end it.
    Both escape characters (``\\`` and the backtick) count, which can only over-count.
    """
    span = 0
    first = 0
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if span and stripped.startswith("#"):
            continue
        if not span:
            first = number
        span += 1
        if stripped.endswith(("\\", "`")):
            if span > MAX_INSTRUCTION_LINES:
                raise InvalidInput(
                    f"{path} line {first}: an instruction spans more than {MAX_INSTRUCTION_LINES} lines.",
                    hint="Split it, or move long scripts into a file that you COPY and RUN.",
                )
        else:
            span = 0


def _check_keyword(instruction: _Instruction, path: str) -> None:
    keyword = instruction.keyword
    if keyword == "ONBUILD":
        keyword = _required(instruction, path).split(maxsplit=1)[0].upper()
        if keyword in ("ONBUILD", "FROM", "MAINTAINER"):
            raise InvalidInput(
                f"{path} line {instruction.line}: ONBUILD cannot trigger {keyword}.",
                hint="ONBUILD takes any instruction except ONBUILD, FROM and MAINTAINER.",
            )
    if keyword not in INSTRUCTIONS:
        shown = keyword if len(keyword) <= 40 else keyword[:37] + "..."
        raise InvalidInput(
            f"{path} line {instruction.line}: unknown instruction {shown!r}.",
            hint=f"Valid instructions are {', '.join(sorted(INSTRUCTIONS))}.",
        )


def _heredoc_end(instruction: _Instruction, lines: list[str], endline: int, path: str) -> int:
    """The 0-based index of the last line of the heredoc bodies after ``instruction``, or -1.

    ``RUN <<EOF`` (Dockerfile syntax 1.4) is followed by lines up to ``EOF`` that are data,
    not instructions; dockerfile-parse does not know this.
    """
    end = -1
    position = endline + 1
    for match in _HEREDOC_RE.finditer(instruction.value):
        strip_tabs, delimiter = match.group(1) == "-", match.group(3)
        while position < len(lines):
            line = lines[position].lstrip("\t") if strip_tabs else lines[position]
            position += 1
            if line == delimiter:
                break
        else:
            raise InvalidInput(
                f"{path} line {instruction.line}: the heredoc <<{delimiter} is never closed.",
                hint=f"End it with a line holding only {delimiter}.",
            )
        end = position - 1
    return end


def _reads_context(instruction: _Instruction) -> bool:
    """Whether the instruction reads files of the build context (so they belong in the image's
    content address). COPY --from reads another stage; ADD of URLs reads the network."""
    words = instruction.value.split()
    flags = [w.lower() for w in words if w.startswith("--")]
    if instruction.keyword == "COPY":
        return not any(f.startswith("--from=") for f in flags)
    if instruction.keyword == "ADD":
        sources = [w for w in words if not w.startswith("--")][:-1]
        return not sources or not all(re.match(r"^(https?|git)://", s) for s in sources)
    if instruction.keyword == "RUN":
        mounts = [f for f in flags if f.startswith("--mount=")]
        return any("type=bind" in m and "from=" not in m for m in mounts)
    return False


# --------------------------------------------------------------------------------------------
# Following the stages


def _run_stages(instructions: list[_Instruction], path: str, build_args: dict[str, str]) -> list[_StageState]:
    global_args: dict[str, str] = {}
    stages: list[_StageState] = []
    for instruction in instructions:
        keyword = instruction.keyword
        if keyword == "FROM":
            stages.append(_start_stage(instruction, stages, global_args, path))
        elif not stages:
            if keyword != "ARG":
                raise InvalidInput(
                    f"{path} line {instruction.line}: {keyword} comes before the first FROM.",
                    hint="A Dockerfile starts with FROM; only ARG may come before it.",
                )
            _apply_global_arg(instruction, global_args, build_args, path)
        else:
            _apply(instruction, stages[-1], global_args, build_args, path)
    if not stages:
        raise InvalidInput(f"{path} has no FROM instruction.", hint="Start the Dockerfile with FROM <image>.")
    return stages


def _start_stage(
    instruction: _Instruction, stages: list[_StageState], global_args: dict[str, str], path: str
) -> _StageState:
    hint = "Write FROM [--platform=...] <image> [AS <name>]."
    words = [word for word in _words(instruction, path) if not word.startswith("--")]
    if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
        raise InvalidInput(f"{path} line {instruction.line}: FROM is malformed.", hint=hint)
    image = _dequote(_expand(words[0], global_args))
    if not image:
        raise InvalidInput(
            f"{path} line {instruction.line}: FROM names no image once build args are substituted "
            f"({words[0]!r}).",
            hint="Give the ARG a default value before the first FROM, or pass it as a build arg.",
        )
    name = words[2].lower() if len(words) == 3 else None
    if name is not None:
        if not _STAGE_NAME_RE.match(name):
            raise InvalidInput(
                f"{path} line {instruction.line}: {words[2]!r} is not a valid stage name.",
                hint="Stage names start with a letter and hold letters, digits, '.', '_' and '-'.",
            )
        if any(stage.name == name for stage in stages):
            raise InvalidInput(
                f"{path} line {instruction.line}: the stage name {name!r} is used twice.",
                hint="Give every stage a distinct name.",
            )
    parent = next((stage for stage in reversed(stages) if stage.name == image.lower()), None)
    if parent is None:
        return _StageState(name=name, base_image=image)
    return _StageState(
        name=name,
        base_image=image,
        env=dict(parent.env),
        exposed=list(parent.exposed),
        workdir=parent.workdir,
        user=parent.user,
    )


def _apply_global_arg(
    instruction: _Instruction, global_args: dict[str, str], build_args: dict[str, str], path: str
) -> None:
    for name, default in _arg_declarations(instruction, path):
        if name in build_args:
            global_args[name] = build_args[name]
        elif default is not None:
            global_args[name] = _expand(default, global_args)


def _apply(
    instruction: _Instruction,
    stage: _StageState,
    global_args: dict[str, str],
    build_args: dict[str, str],
    path: str,
) -> None:
    keyword = instruction.keyword
    if keyword == "ARG":
        for name, default in _arg_declarations(instruction, path):
            if name in build_args:
                stage.args[name] = build_args[name]
            elif default is not None:
                stage.args[name] = _expand(default, stage.variables())
            elif name in global_args:
                stage.args[name] = global_args[name]
    elif keyword == "ENV":
        for name, value in _key_values(instruction, path):
            stage.env[name] = _expand(value, stage.variables())
    elif keyword == "EXPOSE":
        for word in _words(instruction, path, required=True):
            port = _port(_dequote(_expand(word, stage.variables())), instruction, path)
            if port not in stage.exposed:
                stage.exposed.append(port)
    elif keyword == "WORKDIR":
        workdir = _dequote(_expand(_required(instruction, path), stage.variables()))
        stage.workdir = posixpath.normpath(posixpath.join(stage.workdir or "/", workdir))
    elif keyword == "USER":
        stage.user = _dequote(_expand(_required(instruction, path), stage.variables()))


def _arg_declarations(instruction: _Instruction, path: str) -> list[tuple[str, str | None]]:
    """``ARG A B=1`` → ``[("A", None), ("B", "1")]`` (values dequoted, not yet expanded)."""
    declarations = []
    for word in _words(instruction, path, required=True):
        name, has_default, default = word.partition("=")
        name = _dequote(name)
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise InvalidInput(
                f"{path} line {instruction.line}: {name!r} is not a valid ARG name.",
                hint="Write ARG NAME or ARG NAME=default.",
            )
        declarations.append((name, _dequote(default) if has_default else None))
    return declarations


def _key_values(instruction: _Instruction, path: str) -> list[tuple[str, str]]:
    """The pairs of ``ENV a=1 b=2`` or of the legacy ``ENV a 1``, unexpanded."""
    value = _required(instruction, path)
    try:
        pairs = extract_key_values(env_replace=False, args={}, envs={}, instruction_value=value)
    except (ValueError, IndexError):
        pairs = []
    if not pairs or any(not name for name, _ in pairs):
        raise InvalidInput(
            f"{path} line {instruction.line}: ENV is malformed.",
            hint="Write ENV NAME=value [NAME=value ...].",
        )
    return pairs


def _port(word: str, instruction: _Instruction, path: str) -> str:
    """``8080``, ``8080/tcp`` → ``"8080"``; ``53/udp`` and ranges like ``8000-8010`` are kept."""
    match = _PORT_RE.match(word)
    low, high = (int(match.group(1)), int(match.group(2) or match.group(1))) if match else (0, 0)
    protocol = (match.group(3) or "tcp").lower() if match else ""
    if not match or not 1 <= low <= high <= 65535 or protocol not in _PROTOCOLS:
        raise InvalidInput(
            f"{path} line {instruction.line}: EXPOSE {word!r} is not a port.",
            hint="Write EXPOSE 8080, EXPOSE 53/udp or EXPOSE 8000-8010/tcp.",
        )
    ports = match.group(1) if low == high else f"{low}-{high}"
    return ports if protocol == "tcp" else f"{ports}/{protocol}"


def _chosen_stage(stages: list[_StageState], target: str | None, path: str) -> _StageState:
    if target is None:
        return stages[-1]
    for stage in stages:
        if stage.name == target.lower():
            return stage
    names = [stage.name for stage in stages if stage.name]
    listed = ", ".join(names) if names else "none (no stage has AS <name>)"
    raise InvalidInput(
        f"{path} has no build stage named {target!r}.",
        hint=f"Stage names in the file: {listed}.",
        field="target",
    )


# --------------------------------------------------------------------------------------------
# Words and variables


def _required(instruction: _Instruction, path: str) -> str:
    if not instruction.value:
        raise InvalidInput(
            f"{path} line {instruction.line}: {instruction.keyword} needs an argument.",
            hint=f"Give {instruction.keyword} a value or remove the line.",
        )
    return instruction.value


def _words(instruction: _Instruction, path: str, *, required: bool = False) -> list[str]:
    """The instruction's words split at unquoted whitespace, quotes still in place."""
    value = _required(instruction, path) if required or instruction.keyword == "FROM" else instruction.value
    return list(WordSplitter(value).split(dequote=False))


def _dequote(word: str) -> str:
    return WordSplitter(word).dequote()


def _expand(word: str, variables: dict[str, str]) -> str:
    """Substitute ``$NAME``, ``${NAME}``, ``${NAME:-default}``, ``${NAME:+alternative}`` (and the
    forms without ``:``) as the Dockerfile frontend does; unset names become ``""``."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        operator, word = match.group(2), match.group(3) or ""
        value = variables.get(name)
        # With ":" an empty value counts as unset, as in the shell.
        is_set = bool(value) if operator and operator.startswith(":") else value is not None
        if operator and operator.endswith("-"):
            return (value or "") if is_set else word
        if operator and operator.endswith("+"):
            return word if is_set else ""
        return value or ""

    return _VARIABLE_RE.sub(replace, word) if "$" in word else word
