"""End-to-end fixtures: a real taskspace server (subprocess) on a real engine, with a project
of two repositories served by the authenticated git server."""

from __future__ import annotations

import base64
import json
import secrets
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest

from taskspace.testing.git_server import GitHttpServer
from taskspace.testing.postgres import PostgresServer
from taskspace.testing.server import ServerProcess, free_port


def project_files(base_image: str, *, service_port: int, startup: str | None = None,
                  unique_image: bool = False) -> dict[str, str]:
    """A primary repository: a Dockerfile on the local base image (non-root user), a startup
    script that counts its runs, and one dependency service answering PONG on ``service_port``.
    Images are content-addressed, so stacks share them; ``unique_image`` makes this one new."""
    label = f"LABEL test.nonce={secrets.token_hex(4)}\n" if unique_image else ""
    return {
        "README.md": "# api\n",
        "Dockerfile": f"FROM {base_image}\n{label}RUN useradd --create-home dev\nUSER dev\nWORKDIR /workspace\n",
        ".taskspace/startup.sh": startup or textwrap.dedent("""\
            #!/bin/sh
            echo "run $(date +%s)" >> /workspace/.taskspace/startup-runs
            echo STARTUP-RAN for "$TASKSPACE_TICKET"
            """),
        ".taskspace/services.yaml": textwrap.dedent(f"""\
            services:
              echo:
                build: {{dockerfile: .taskspace/echo.Dockerfile, context: .taskspace}}
                ports: [{service_port}]
                healthcheck:
                  test: perl -MIO::Socket::INET -e 'exit !IO::Socket::INET->new("127.0.0.1:{service_port}")'
                  interval: 100ms
                  retries: 100
                init:
                  - {{source: .taskspace/reply.txt, target: /srv/reply.txt}}
                  - {{run: "date +%s%N >> /srv/initialized"}}
                publish:
                  ECHO_ADDR: "${{host}}:{service_port}"
            """),
        ".taskspace/reply.txt": "PONG\n",
        ".taskspace/echo.Dockerfile": f"FROM {base_image}\nCOPY echo.pl /echo.pl\nCMD [\"perl\", \"/echo.pl\"]\n",
        ".taskspace/echo.pl": textwrap.dedent(f"""\
            use IO::Socket::INET;
            open my $f, "<", "/srv/reply.txt" or die "no init file: $!";
            my $reply = <$f>;
            my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1:{service_port}", Listen => 5, ReuseAddr => 1) or die $!;
            while (my $c = $s->accept) {{ print $c $reply; close $c; }}
            """),
    }


@dataclass
class Stack:
    """A running server with an admin token for the git server and a two-repository project."""

    server: ServerProcess
    git: GitHttpServer
    project: str
    primary: str
    secondary: str
    service_port: int
    git_secret: str
    responses: list[str] = field(default_factory=list)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.server.api.request(method, path, **kwargs)
        self.responses.append(response.text)
        return response

    def workspaces(self, **params: Any) -> list[dict[str, Any]]:
        """``GET /workspaces`` with ``params``: every item, page after page."""
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            response = self.api("GET", "/workspaces", params={**params, **({"cursor": cursor} if cursor else {})})
            assert response.status_code == 200, response.text
            page = response.json()
            found += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return found

    def ticket(self, title: str = "Fix the login page") -> str:
        response = self.api("POST", "/tickets", json={"project": self.project, "title": title, "assignee": "admin"})
        assert response.status_code == 201, response.text
        return response.json()["key"]

    def launch(self, key: str, **body: Any) -> dict[str, Any]:
        response = self.api("POST", "/workspaces", json={"key": key, **body})
        assert response.status_code in (200, 201), response.text
        return response.json()

    def launch_ready(self, key: str, timeout: float = 180, **body: Any) -> dict[str, Any]:
        self.launch(key, **body)
        ws = self.server.wait_for(key, {"ready", "failed"}, timeout)
        assert ws["state"] == "ready", ws["failure_reason"]
        return ws

    def exec(self, key: str, *argv: str) -> tuple[int, str]:
        """Run argv in the workspace through the API; returns (exit code, stdout+stderr)."""
        response = self.api("POST", f"/workspaces/{key}/exec", json={"argv": list(argv)})
        assert response.status_code == 200, response.text
        code, output = None, b""
        for line in response.text.splitlines():
            item = json.loads(line)
            if "exit_code" in item:
                code = item["exit_code"]
            elif "data" in item:
                output += base64.b64decode(item["data"])
        assert code is not None, response.text
        return code, output.decode(errors="replace")

    def sh_or_none(self, key: str, script: str) -> str | None:
        """Output of a successful run, or None when the workspace cannot run it (yet)."""
        response = self.api("POST", f"/workspaces/{key}/exec", json={"argv": ["/bin/sh", "-c", script]})
        if response.status_code != 200 or '"exit_code": 0' not in response.text:
            return None
        return "".join(base64.b64decode(json.loads(line).get("data", "")).decode()
                       for line in response.text.splitlines())

    def sh(self, key: str, script: str) -> str:
        code, output = self.exec(key, "/bin/sh", "-c", script)
        assert code == 0, output
        return output

    def request(self, key: str, action: str, state: str, **body: Any) -> dict[str, Any]:
        response = self.api("POST", f"/workspaces/{key}/{action}", json=body or None)
        assert response.status_code == 202, response.text
        return self.server.wait_for(key, {state, "failed", "purge_blocked"}, 180)


def engine_resources(client: docker.DockerClient, installation: str) -> dict[str, set[str]]:
    label = {"label": [f"taskspace.installation={installation}"]}
    return {
        "containers": {c.name for c in client.containers.list(all=True, filters=label)},
        "volumes": {v.name for v in client.volumes.list(filters=label)},
        "networks": {n.name for n in client.networks.list(filters=label)},
    }


def remove_installation(client: docker.DockerClient, installation: str) -> None:
    """Remove every engine resource an installation left (test teardown)."""
    if not installation:
        return
    label = {"label": [f"taskspace.installation={installation}"]}
    for container in client.containers.list(all=True, filters=label):
        container.remove(force=True, v=True)
    for network in client.networks.list(filters=label):
        network.remove()
    for volume in client.volumes.list(filters=label):
        volume.remove(force=True)


class StackFactory:
    """Makes stacks under ``root`` and tears them all down at ``close()``."""

    def __init__(self, root: Path, docker_client: docker.DockerClient, base_image: str, git: GitHttpServer,
                 postgres: Callable[[], PostgresServer]):
        self.root, self.docker_client, self.base_image, self.git = root, docker_client, base_image, git
        self.postgres = postgres
        self.made: list[Stack] = []

    def __call__(self, *, database: str = "sqlite", env: dict[str, str] | None = None,
                 files: dict[str, str] | None = None, docker_host: str | None = None, start: bool = True) -> Stack:
        suffix = secrets.token_hex(3)
        port = free_port()
        primary, secondary = f"api-{suffix}", f"web-{suffix}"
        self.git.create_repo(primary, files or project_files(self.base_image, service_port=port),
                             executable=[".taskspace/startup.sh"])
        self.git.create_repo(secondary, {"README.md": "# web\n", "index.html": "<h1>web</h1>\n"})
        database_url = self.postgres().create_database() if database == "postgresql" else None
        server = ServerProcess(self.root / f"data-{suffix}", database_url=database_url, env=env,
                               docker_host=docker_host)
        stack = Stack(server=server, git=self.git, project=f"p{suffix}", primary=primary, secondary=secondary,
                      service_port=port, git_secret=self.git.users["alice"])
        self.made.append(stack)
        if start:
            setup(stack)
        return stack

    def close(self) -> None:
        for stack in self.made:
            stack.server.stop()
            if stack.server.docker_host is None:  # a private engine is cleaned up by its own test
                remove_installation(self.docker_client, stack.server.installation)


@pytest.fixture
def make_stack(tmp_path: Path, docker_client: docker.DockerClient, base_image: str, git_server: GitHttpServer,
               request: pytest.FixtureRequest) -> Iterator[StackFactory]:
    """Build stacks: ``make_stack(database="sqlite"|"postgresql", env={...}, files={...})``."""
    factory = StackFactory(tmp_path, docker_client, base_image, git_server,
                           lambda: request.getfixturevalue("postgres_server"))
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_stack(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, base_image: str,
                 git_server: GitHttpServer, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """One stack for a whole module of tests that do not disturb each other."""
    factory = StackFactory(tmp_path_factory.mktemp("stack"), docker_client, base_image, git_server,
                           lambda: request.getfixturevalue("postgres_server"))
    yield factory()
    factory.close()


def setup(stack: Stack) -> None:
    """Start the server, store the git token and register the project."""
    stack.server.start()
    host = stack.git.base_url.removeprefix("http://")
    response = stack.api("POST", "/tokens", json={"name": "git", "host": host, "username": "alice",
                                                  "secret": stack.git_secret})
    assert response.status_code == 201, response.text
    response = stack.api("POST", "/projects", json={
        "name": stack.project, "key": stack.project.upper()[:10],
        "repos": [stack.git.url(stack.primary), stack.git.url(stack.secondary)]})
    assert response.status_code == 201, response.text


@pytest.fixture
def stack(make_stack: StackFactory) -> Stack:
    return make_stack()


__all__ = ["PostgresServer", "Stack", "engine_resources", "project_files", "remove_installation", "setup"]
