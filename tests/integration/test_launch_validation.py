"""Bad repository URLs, branch names and environment files get clear errors and create nothing;
concurrent launches of one ticket give one workspace."""

from __future__ import annotations

import secrets
import threading

import docker
import pytest

from tests.integration.conftest import Stack, engine_resources

pytestmark = pytest.mark.docker


@pytest.fixture
def stack(module_stack: Stack) -> Stack:
    """These tests create nothing that outlives them: they share one server."""
    return module_stack

BAD_URLS = [
    ("ext::sh -c touch% /tmp/pwned", "remote helpers"),
    ("fd::17", "remote helpers"),
    ("--upload-pack=touch /tmp/pwned", "starts with '-'"),
    ("-oProxyCommand=evil", "starts with '-'"),
    ("git://example.com/repo.git", "unauthenticated"),
    ("http://example.com/repo.git", "plain http"),
    ("https://user:secret@example.com/repo.git", "credentials"),
    ("file:///etc/passwd.git", "file:// repositories are not enabled"),
    ("https://example.com/a/../b.git", "'..'"),
    ("https://example.com/repo.git?x=1", "query string"),
    ("https://example.com/repo.git\nnext", "control characters"),
    ("ftp://example.com/repo.git", "scheme"),
    ("https://exa mple.com/repo.git", "spaces"),
    ("https:///repo.git", "no host"),
    ("https://example.com/", "names no repository"),
    ("just some words", "spaces"),
]


def _projects(stack: Stack) -> list[str]:
    return [p["name"] for p in stack.api("GET", "/projects").json()]


@pytest.mark.parametrize(("url", "why"), BAD_URLS)
def test_a_bad_repository_url_is_refused_and_creates_no_project(stack: Stack, url: str, why: str) -> None:
    before = _projects(stack)
    response = stack.api("POST", "/projects", json={"name": f"bad{secrets.token_hex(2)}", "repos": [url]})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert why in error["message"] and error["hint"]
    assert _projects(stack) == before


def test_an_unreachable_repository_is_refused_with_the_reason(stack: Stack) -> None:
    response = stack.api("POST", "/projects", json={"name": "ghost", "repos": [stack.git.url("does-not-exist")]})
    assert response.status_code == 422, "the remote answered: the input is wrong, not the server"
    assert "was not found" in response.json()["error"]["message"]
    assert "ghost" not in _projects(stack)


@pytest.mark.parametrize(("branch", "why"), [
    ("..", "'..'"), ("-x", "starts with '-'"), ("a b", "' '"), ("feature..x", "'..'"), ("x.lock", ".lock"),
    ("@", "'@'"), ("a~1", "'~'"), ("refs/heads/main", "full ref name"), ("x" * 256, "at most 255 characters"),
    ("bad\u0007bell", "control character"), ("/lead", "empty path component"), ("trail/", "empty path component"),
])
def test_a_bad_branch_name_is_refused_before_anything_exists(
        stack: Stack, docker_client: docker.DockerClient, branch: str, why: str) -> None:
    key = stack.ticket()
    for field in ("source_branch", "target_branch"):
        response = stack.api("POST", "/workspaces", json={"key": key, field: branch})
        assert response.status_code == 422, response.text
        assert why in response.json()["error"]["message"]
    assert [w for w in stack.workspaces() if w["key"] == key] == []
    assert engine_resources(docker_client, stack.server.installation)["containers"] == set()


def test_a_missing_source_branch_is_named_with_the_branches_that_exist(stack: Stack) -> None:
    key = stack.ticket()
    response = stack.api("POST", "/workspaces", json={"key": key, "source_branch": "release-9"})
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert f"'release-9' does not exist in {stack.primary}" in message and "branches: main" in message
    assert f"'release-9' does not exist in {stack.secondary}" in message, "every problem at once"


BAD_ENVIRONMENTS = [
    ({"Dockerfile": "RUN echo no base\n"}, "before the first FROM"),
    ({"Dockerfile": "FROM debian\nFETCH x\n"}, "line 2"),
    ({"Dockerfile": "FROM debian\0\n"}, "Dockerfile"),
    ({"README.md": "no Dockerfile here\n"}, "has no Dockerfile"),
    ({".devcontainer/devcontainer.json": '{"image": "debian",\n  "forwardPorts": [8080,,]\n}'}, "line 2"),
    ({".devcontainer/devcontainer.json": '{"build": {"dockerfile": "../../etc/Dockerfile"}}'}, "outside"),
    ({".devcontainer/devcontainer.json": '{"image": "debian", "mounts": ["source=/,target=/host,type=bind"]}'},
     "bind"),
    ({".devcontainer/devcontainer.json": '{"dockerComposeFile": "compose.yml"}'}, "Docker Compose"),
    ({"Dockerfile": "FROM debian\n", ".taskspace/services.yaml": "services:\n  db:\n    image: [1\n"},
     "services.yaml"),
    ({"Dockerfile": "FROM debian\n", ".taskspace/services.yaml": "services:\n  Bad_Name:\n    image: x\n"},
     "Bad_Name"),
]


@pytest.mark.parametrize(("files", "why"), BAD_ENVIRONMENTS)
def test_a_bad_environment_file_fails_the_launch_and_creates_nothing(
        stack: Stack, docker_client: docker.DockerClient, files: dict[str, str], why: str) -> None:
    name = f"env-{secrets.token_hex(3)}"
    stack.git.create_repo(name, files)
    project = f"q{secrets.token_hex(3)}"
    response = stack.api("POST", "/projects", json={"name": project, "repos": [stack.git.url(name)]})
    assert response.status_code == 201, response.text
    key = stack.api("POST", "/tickets", json={"project": project, "title": "t"}).json()["key"]

    response = stack.api("POST", "/workspaces", json={"key": key})

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert why in error["message"], error
    assert error["hint"]
    assert [w for w in stack.workspaces() if w["key"] == key] == []
    assert engine_resources(docker_client, stack.server.installation) == {
        "containers": set(), "volumes": set(), "networks": set()}


def test_two_concurrent_launches_of_one_ticket_give_one_workspace(stack: Stack) -> None:
    key = stack.ticket()
    results: list[dict] = []

    def launch() -> None:
        response = stack.server.api.post("/workspaces", json={"key": key})
        assert response.status_code in (200, 201), response.text
        results.append(response.json())

    threads = [threading.Thread(target=launch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 2 and results[0]["id"] == results[1]["id"]
    mine = [w["id"] for w in stack.workspaces() if w["key"] == key]
    assert mine == [results[0]["id"]]
    assert stack.server.wait_for(key, {"ready", "failed"})["state"] == "ready"
    stack.request(key, "purge", "purged")
