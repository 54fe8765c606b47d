import time

import pytest

from taskspace.core.dockerfile import (
    INSTRUCTIONS,
    MAX_DOCKERFILE_BYTES,
    MAX_INSTRUCTION_LINES,
    summarize_dockerfile,
)
from taskspace.core.environment import Stage
from taskspace.core.errors import InvalidInput

MULTI_STAGE = """\
# syntax=docker/dockerfile:1.7
# escape=\\
ARG PYTHON=3.12
ARG REGISTRY
FROM --platform=$BUILDPLATFORM python:${PYTHON}-slim AS build
ENV PIP_NO_CACHE_DIR=1 \\
    BUILD_SECRET_HINT="not a secret"
WORKDIR /src
COPY requirements.txt .
RUN pip install -r requirements.txt

FROM ${REGISTRY:-docker.io}/library/debian:12 AS runtime
ARG APP_PORT=8080
ENV APP_HOME=/srv/app PATH=/srv/app/bin:$PATH
ENV LEGACY_FORM some value with spaces
EXPOSE $APP_PORT 53/udp
EXPOSE 9000/tcp 8000-8010
WORKDIR $APP_HOME
WORKDIR current
USER app:app
COPY --from=build /src /srv/app
CMD ["app"]
"""


def invalid(text: str, **kwargs) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        summarize_dockerfile(text, **kwargs)
    return caught.value


# --------------------------------------------------------------------------------------------
# Valid files


def test_multi_stage_summary_describes_the_final_stage():
    summary = summarize_dockerfile(MULTI_STAGE)
    assert summary.stages == [
        Stage(name="build", base_image="python:3.12-slim"),
        Stage(name="runtime", base_image="docker.io/library/debian:12"),
    ]
    assert summary.base_images == ["python:3.12-slim", "docker.io/library/debian:12"]
    assert summary.exposed_ports == ["8080", "53/udp", "9000", "8000-8010"]
    assert summary.env_names == ["APP_HOME", "PATH", "LEGACY_FORM"]
    assert summary.workdir == "/srv/app/current"
    assert summary.user == "app:app"


def test_target_stage_and_build_args():
    summary = summarize_dockerfile(MULTI_STAGE, target="build", build_args={"PYTHON": "3.11"})
    assert summary.stages[0] == Stage(name="build", base_image="python:3.11-slim")
    assert summary.exposed_ports == []
    assert summary.env_names == ["PIP_NO_CACHE_DIR", "BUILD_SECRET_HINT"]
    assert summary.workdir == "/src"
    assert summary.user is None


def test_env_values_never_appear_in_the_summary():
    dumped = summarize_dockerfile("FROM a\nENV TOKEN=hunter2\nENV B hunter3\n").model_dump_json()
    assert "hunter" not in dumped
    assert "TOKEN" in dumped


@pytest.mark.parametrize(
    ("text", "build_args", "expected"),
    [
        ("FROM alpine", None, ["alpine"]),
        ("from alpine:3.20 as Base\nfrom base", None, ["alpine:3.20", "base"]),
        ("ARG V=1\nFROM img:$V", None, ["img:1"]),
        ("ARG V=1\nFROM img:${V}", {"V": "2"}, ["img:2"]),
        ("ARG V\nFROM img:${V:-latest}", None, ["img:latest"]),
        ("ARG V=\nFROM img:${V:-latest}", None, ["img:latest"]),
        ("ARG V=\nFROM img:${V-latest}", None, ["img:"]),
        ("ARG V=x\nFROM img${V:+-suffix}", None, ["img-suffix"]),
        ("ARG V\nFROM img${V:+-suffix}", None, ["img"]),
        ("ARG A=one B=two\nFROM $A/$B", None, ["one/two"]),
        ("ARG BASE=ubuntu\nARG TAG=${BASE}-24.04\nFROM $TAG", None, ["ubuntu-24.04"]),
        ('ARG IMG="quoted:1"\nFROM $IMG', None, ["quoted:1"]),
        ("FROM --platform=linux/amd64 golang:1.22 AS build\nFROM scratch", None, ["golang:1.22", "scratch"]),
        ("FROM a\nARG V=late\nFROM img:${V:-early}", None, ["a", "img:early"]),
        ("FROM a\n", {"UNUSED": "1"}, ["a"]),
    ],
)
def test_base_images_with_arg_substitution(text, build_args, expected):
    assert summarize_dockerfile(text, build_args=build_args).base_images == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("EXPOSE 80", ["80"]),
        ("EXPOSE 80 443", ["80", "443"]),
        ("EXPOSE 80/tcp 80", ["80"]),
        ("EXPOSE 53/udp 53/UDP", ["53/udp"]),
        ("EXPOSE 5000/sctp", ["5000/sctp"]),
        ("EXPOSE 8000-8010/udp", ["8000-8010/udp"]),
        ("EXPOSE 1 65535", ["1", "65535"]),
        ("ARG P=3000\nEXPOSE ${P}", ["3000"]),
        ("ENV P=4000\nEXPOSE $P", ["4000"]),
        ("ARG P\nEXPOSE ${P:-5000}", ["5000"]),
        ("EXPOSE 80 \\\n    81", ["80", "81"]),
        ("EXPOSE 80\nEXPOSE 81", ["80", "81"]),
    ],
)
def test_exposed_ports(body, expected):
    assert summarize_dockerfile(f"FROM a\n{body}\n").exposed_ports == expected


@pytest.mark.parametrize(
    ("body", "workdir", "user"),
    [
        ("", None, None),
        ("WORKDIR /app\nWORKDIR /srv", "/srv", None),
        ("WORKDIR /app\nWORKDIR sub/../src", "/app/src", None),
        ("WORKDIR rel", "/rel", None),
        ('WORKDIR "/with space"', "/with space", None),
        ("ENV HOME=/home/dev\nWORKDIR $HOME/code", "/home/dev/code", None),
        ("USER root\nUSER 1000:1000", None, "1000:1000"),
        ("ARG U=dev\nUSER ${U}", None, "dev"),
    ],
)
def test_workdir_and_user_are_the_last_ones(body, workdir, user):
    summary = summarize_dockerfile(f"FROM a\n{body}\n")
    assert (summary.workdir, summary.user) == (workdir, user)


def test_a_stage_built_from_another_inherits_what_it_set():
    text = (
        "FROM node:20 AS base\nENV NODE_ENV=dev\nWORKDIR /app\nUSER node\nEXPOSE 3000\n"
        "FROM base AS dev\nENV DEBUG=1\nEXPOSE 9229\n"
        "FROM nginx AS prod\n"
    )
    dev = summarize_dockerfile(text, target="dev")
    assert dev.env_names == ["NODE_ENV", "DEBUG"]
    assert dev.workdir == "/app"
    assert dev.user == "node"
    assert dev.exposed_ports == ["3000", "9229"]
    prod = summarize_dockerfile(text)
    assert (prod.env_names, prod.workdir, prod.user, prod.exposed_ports) == ([], None, None, [])


def test_target_is_matched_without_case():
    assert summarize_dockerfile("FROM a AS Dev\nUSER x\nFROM b\n", target="DEV").user == "x"


def test_heredoc_bodies_are_data_not_instructions():
    text = (
        "# syntax=docker/dockerfile:1\n"
        "FROM debian\n"
        "RUN <<EOF\n"
        "apt-get update\n"
        "NOT an instruction \\\n"
        "EOF\n"
        "COPY <<-'CONF' /etc/app.conf\n"
        "\tlisten 80\n"
        "\tCONF\n"
        "RUN <<ONE cat > /a && <<TWO cat > /b\n"
        "first\n"
        "ONE\n"
        "second\n"
        "TWO\n"
        "USER done\n"
    )
    assert summarize_dockerfile(text).user == "done"


def test_a_here_string_is_not_a_heredoc():
    text = "FROM bash\nRUN cat <<<hello\nUSER after\n"
    assert summarize_dockerfile(text).user == "after"


def test_lenient_layout_is_accepted():
    text = (
        "\ufeff# comment\r\n"
        "\r\n"
        "   from   alpine  \r\n"
        "run echo a && \\\r\n"
        "    # a comment inside a continuation\r\n"
        "    echo b\r\n"
        "  env   A=1\r\n"
        "user dev"  # no final newline
    )
    summary = summarize_dockerfile(text)
    assert summary.base_images == ["alpine"]
    assert summary.env_names == ["A"]
    assert summary.user == "dev"


def test_backtick_escape_directive():
    text = "# escape=`\nFROM mcr.microsoft.com/windows/servercore\nRUN dir `\n    c:\\\nUSER ContainerUser\n"
    assert summarize_dockerfile(text).user == "ContainerUser"


def test_every_instruction_is_accepted():
    body = "\n".join(
        f"{keyword} x" for keyword in sorted(INSTRUCTIONS - {"FROM", "ONBUILD", "EXPOSE", "ENV"})
    )
    text = f"FROM a\n{body}\nONBUILD RUN make\nEXPOSE 1\nENV A=1\n"
    assert summarize_dockerfile(text).user == "x"


def test_a_long_but_reasonable_instruction_is_fine():
    packages = " \\\n    ".join(f"package-{n}" for n in range(500))
    assert summarize_dockerfile(f"FROM a\nRUN apt-get install -y \\\n    {packages}\n").base_images == ["a"]


# --------------------------------------------------------------------------------------------
# Hostile and broken files


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("", ["has no FROM"]),
        ("# just a comment\n\n", ["has no FROM"]),
        ("ARG A=1\n", ["has no FROM"]),
        ("RUN echo hi\nFROM a\n", ["line 1", "RUN comes before the first FROM"]),
        (
            "# syntax=docker/dockerfile:1\nARG A\nENV B=1\nFROM a\n",
            ["line 3", "ENV comes before the first FROM"],
        ),
        ("FROM a\nRUN x\nFORM b\n", ["line 3", "unknown instruction 'FORM'"]),
        ("FROM a\n  gibberish here\n", ["line 2", "'GIBBERISH'"]),
        ("FROM a\ncomment not a comment\n", ["line 2", "'COMMENT'"]),
        ("FROM a\nlonely", ["line 2", "'LONELY'"]),
        ("FROM a\nONBUILD FROM b\n", ["line 2", "ONBUILD cannot trigger FROM"]),
        ("FROM a\nONBUILD BOGUS x\n", ["line 2", "unknown instruction 'BOGUS'"]),
        ("FROM a\nONBUILD\n", ["line 2", "ONBUILD needs an argument"]),
        ("FROM\n", ["line 1", "FROM needs an argument"]),
        ("FROM a b\n", ["line 1", "FROM is malformed"]),
        ("FROM a AS b c\n", ["line 1", "FROM is malformed"]),
        ("FROM a FROM b\n", ["line 1", "FROM is malformed"]),
        ("FROM $NOPE\n", ["line 1", "names no image", "$NOPE"]),
        ("FROM a AS 1st\n", ["line 1", "'1st' is not a valid stage name"]),
        ("FROM a AS x\nFROM b AS X\n", ["line 2", "'x' is used twice"]),
        ("FROM a\nEXPOSE\n", ["line 2", "EXPOSE needs an argument"]),
        ("FROM a\nEXPOSE 0\n", ["line 2", "EXPOSE '0' is not a port"]),
        ("FROM a\nEXPOSE 65536\n", ["EXPOSE '65536'"]),
        ("FROM a\nEXPOSE 80/http\n", ["EXPOSE '80/http'"]),
        ("FROM a\nEXPOSE 90-80\n", ["EXPOSE '90-80'"]),
        ("FROM a\nEXPOSE web\n", ["EXPOSE 'web'"]),
        ("FROM a\nARG P\nEXPOSE $P\n", ["line 3", "EXPOSE ''"]),
        ("FROM a\n\nENV\n", ["line 3", "ENV needs an argument"]),
        ("FROM a\nENV A=1 B\n", ["line 2", "ENV is malformed"]),
        ("FROM a\nENV =1\n", ["line 2", "ENV is malformed"]),
        ("FROM a\nARG 9lives\n", ["line 2", "'9lives' is not a valid ARG name"]),
        ("ARG A-B=1\nFROM a\n", ["line 1", "'A-B'"]),
        ("FROM a\nWORKDIR\n", ["line 2", "WORKDIR needs an argument"]),
        ("FROM a\nUSER \n", ["line 2", "USER needs an argument"]),
        ("FROM a\nRUN <<EOF\necho never closed\n", ["line 2", "heredoc <<EOF is never closed"]),
        ("FROM a\nRUN echo\x00\n", ["line 2", "binary data"]),
        ("FROM a\n\x1b[31mRUN x\n", ["line 2", "binary data"]),
        ("FROM a\nRUN \ud800\n", ["line 2", "binary data"]),
        (bytes(range(256)).decode("latin-1"), ["line 1", "binary data"]),
    ],
)
def test_refuses(text, fragments):
    error = invalid(text, path="docker/app.Dockerfile")
    assert error.message.startswith("docker/app.Dockerfile")
    for fragment in fragments:
        assert fragment in error.message
    assert error.hint


def test_unknown_instruction_hint_lists_the_valid_ones():
    hint = invalid("FROM a\nRUNN x\n").hint
    assert hint is not None
    for keyword in INSTRUCTIONS:
        assert keyword in hint


@pytest.mark.parametrize(
    ("text", "target", "listed"),
    [
        ("FROM a AS build\nFROM b AS dev\n", "prod", "build, dev"),
        ("FROM a\nFROM b\n", "dev", "no stage has AS <name>"),
    ],
)
def test_unknown_target_lists_the_stage_names(text, target, listed):
    error = invalid(text, target=target)
    assert f"no build stage named {target!r}" in error.message
    assert error.hint is not None and listed in error.hint
    assert error.field == "target"


def test_oversized_dockerfile_is_refused():
    text = "FROM a\n" + "# padding padding padding\n" * (MAX_DOCKERFILE_BYTES // 26 + 1)
    assert "larger than 1 MiB" in invalid(text).message


def test_size_limit_counts_utf8_bytes():
    text = "FROM a\n# " + "é" * (MAX_DOCKERFILE_BYTES // 2 + 1) + "\n"
    assert "larger than" in invalid(text).message


def test_an_endless_continuation_is_refused_quickly():
    text = "FROM a\nRUN x \\\n" + "a \\\n# comment\n" * (MAX_INSTRUCTION_LINES + 1) + "b\n"
    started = time.monotonic()
    error = invalid(text)
    assert time.monotonic() - started < 2
    assert "line 2" in error.message
    assert f"more than {MAX_INSTRUCTION_LINES} lines" in error.message


def test_a_large_file_of_many_instructions_is_summarized_quickly():
    text = "FROM a\n" + "RUN echo hello world\n" * (MAX_DOCKERFILE_BYTES // 21 - 1)
    started = time.monotonic()
    assert summarize_dockerfile(text).base_images == ["a"]
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("text", "uses"),
    [
        ("FROM a\nRUN make\n", False),
        ("FROM a\nCOPY . /src\n", True),
        ("FROM a AS b\nRUN x\nFROM c\nCOPY --from=b /x /x\n", False),
        ("FROM a\nADD https://example.com/x.tgz /x\n", False),
        ("FROM a\nADD x.tgz /x\n", True),
        ("FROM a\nRUN --mount=type=bind,target=/src make\n", True),
        ("FROM a\nRUN --mount=type=cache,target=/root/.cache make\n", False),
    ],
)
def test_uses_context_tells_whether_the_build_reads_the_context(text, uses):
    assert summarize_dockerfile(text).uses_context is uses
