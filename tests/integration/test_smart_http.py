"""A remote's refs over smart HTTP without git, against the authenticated git server: the same
answer as ``git ls-remote``, the credential sent with the first request, failures explained
as git's are, and remotes it cannot read (a version 0 server, a dumb one) still answered."""

from __future__ import annotations

import subprocess
import threading
import uuid
from base64 import b64encode
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from taskspace.core.errors import GitError
from taskspace.core.repo_url import RepoUrlPolicy, parse_repo_url
from taskspace.gitops.mirrors import Mirrors, _parse_ls_remote
from taskspace.gitops.runner import GitCredential
from taskspace.gitops.smart_http import SmartHttp, pkt, read_pkts
from taskspace.testing.git_server import GitHttpServer

LOOPBACK = RepoUrlPolicy(http_hosts=("127.0.0.1",))


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def basic(credential: GitCredential) -> str:
    return b64encode(f"{credential.username}:{credential.password}".encode()).decode()


@pytest.fixture
def repo(git_server: GitHttpServer) -> str:
    """Branches, an annotated and a plain tag, and HEAD on a branch that is not ``main``."""
    name = f"refs-{uuid.uuid4().hex[:10]}"
    git_server.create_repo(name, {"README.md": "# api\n"}, branch="trunk",
                           extra_branches={"feature/login": {"f.txt": "f\n"}})
    path = git_server.repo_path(name)
    git("-c", "user.name=T", "-c", "user.email=t@example.com", "tag", "-a", "v1.0", "-m", "first", "trunk", cwd=path)
    git("tag", "plain", "feature/login", cwd=path)
    return name


@pytest.fixture
def serving() -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def serve(handler: Any) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


async def test_the_refs_are_what_git_ls_remote_says(git_server: GitHttpServer, repo: str, tmp_path: Path) -> None:
    url = parse_repo_url(git_server.url(repo), LOOPBACK)
    alice = GitCredential("alice", git_server.users["alice"])
    mirrors = Mirrors(tmp_path / "mirrors")
    before = len(git_server.requests)

    heads = await mirrors.ls_remote(url, alice, tags=True)

    with_git = _parse_ls_remote(git("-c", f"http.extraHeader=Authorization: Basic {basic(alice)}",
                                    "ls-remote", "--symref", git_server.url(repo), "HEAD", "refs/heads/*",
                                    "refs/tags/*"))
    assert heads == with_git
    assert heads.default_branch == "trunk" and set(heads.branches) == {"trunk", "feature/login"}
    tag_object = git("rev-parse", "v1.0", cwd=git_server.repo_path(repo)).strip()
    assert heads.tags == {"v1.0": tag_object, "plain": heads.branches["feature/login"]}
    assert heads.tags["v1.0"] != heads.branches["trunk"], "the tag object's id, as the mirror's refs have it"
    # Two requests, both with the credential: none refused for want of it.
    asked = git_server.requests[before:before + 2]
    assert [(r.method, r.user, r.status) for r in asked] == [("GET", "alice", 200), ("POST", "alice", 200)]

    without_tags = await mirrors.ls_remote(url, alice)
    assert without_tags.tags == {} and without_tags.branches == heads.branches
    await mirrors.aclose()


async def test_refused_and_unreachable_remotes_are_explained(git_server: GitHttpServer, repo: str) -> None:
    http = SmartHttp(timeout=10)
    url = parse_repo_url(git_server.url(repo), LOOPBACK)

    with pytest.raises(GitError) as wrong:
        await http.ls_refs(url, GitCredential("alice", "not-the-token"), tags=False)
    assert "authentication failed" in wrong.value.message and wrong.value.status_code == 422
    assert "token" in (wrong.value.hint or "")
    assert "not-the-token" not in wrong.value.message

    with pytest.raises(GitError) as anonymous:
        await http.ls_refs(url, None, tags=False)
    assert "authentication failed" in anonymous.value.message

    missing = parse_repo_url(git_server.url(f"missing-{uuid.uuid4().hex[:6]}"), LOOPBACK)
    with pytest.raises(GitError) as gone:
        await http.ls_refs(missing, GitCredential("alice", git_server.users["alice"]), tags=False)
    assert "the repository was not found" in gone.value.message and gone.value.status_code == 422

    closed = parse_repo_url("http://127.0.0.1:9/team/api.git", LOOPBACK)
    with pytest.raises(GitError) as unreachable:
        await http.ls_refs(closed, None, tags=False)
    assert "the host could not be reached" in unreachable.value.message
    assert unreachable.value.status_code != 422, "the remote did not say no: upstream trouble"
    await http.aclose()


async def test_a_version_0_server_is_read(serving: Any, git_server: GitHttpServer, repo: str) -> None:
    # What a server without protocol v2 answers: git's own advertisement of the repository.
    advertised = subprocess.run(["git", "upload-pack", "--stateless-rpc", "--advertise-refs",
                                 str(git_server.repo_path(repo))], capture_output=True, check=True).stdout
    body = pkt("# service=git-upload-pack\n") + b"0000" + advertised

    class Version0(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/x-git-upload-pack-advertisement")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    assert not read_pkts(advertised)[0].startswith(b"version")  # type: ignore[union-attr]
    url = parse_repo_url(serving(Version0) + "/team/api.git", LOOPBACK)
    found = await SmartHttp().ls_refs(url, None, tags=True)
    assert found is not None and found.head == "refs/heads/trunk"
    # What git itself reads from the repository, not this module's other path.
    expected = _parse_ls_remote(git("ls-remote", "--symref", str(git_server.repo_path(repo)), "HEAD",
                                    "refs/heads/*", "refs/tags/*"))
    assert found.refs["refs/heads/trunk"] == expected.branches["trunk"]
    assert found.refs["refs/tags/v1.0"] == expected.tags["v1.0"] and "refs/tags/v1.0^{}" not in found.refs


async def test_a_dumb_http_remote_is_left_to_git(serving: Any, git_server: GitHttpServer, repo: str,
                                                 tmp_path: Path) -> None:
    git("update-server-info", cwd=git_server.repo_path(repo))
    root = git_server.repo_path(repo).parent
    url = parse_repo_url(serving(partial(Quiet, directory=str(root))) + "/" + git_server.repo_path(repo).name,
                         LOOPBACK)

    assert await SmartHttp().ls_refs(url, None, tags=False) is None
    heads = await Mirrors(tmp_path / "mirrors").ls_remote(url, None)
    assert heads.branches["trunk"] == git("rev-parse", "trunk", cwd=git_server.repo_path(repo)).strip()


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass
