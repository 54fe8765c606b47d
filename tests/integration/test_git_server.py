"""The test git server against git's own HTTP client: authentication, pushes, refusals."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from taskspace.testing.git_server import GitHttpServer

# git asks this helper for credentials; they reach it through the environment of the git
# process only, never through the URL or a config file.
CREDENTIAL_HELPER = (
    '!f() { test "$1" = get || exit 0; '
    'echo "username=$TEST_GIT_USER"; echo "password=$TEST_GIT_PASSWORD"; }; f'
)


class Git:
    """Runs git as one user of the server, with an isolated configuration."""

    def __init__(self, home: Path, user: str, password: str) -> None:
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "TEST_GIT_USER": user,
            "TEST_GIT_PASSWORD": password,
        }

    def run(
        self, *args: str, cwd: Path | None = None, check: bool = True, trace: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = dict(self.env)
        if trace is not None:
            env.update(GIT_TRACE_CURL=str(trace), GIT_TRACE_CURL_NO_DATA="1")
        options = [
            "credential.helper=",  # drop helpers configured elsewhere
            f"credential.helper={CREDENTIAL_HELPER}",
            "user.name=Alice",
            "user.email=alice@example.com",
        ]
        argv = ["git", *(arg for option in options for arg in ("-c", option)), *args]
        result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed:\n{result.stderr}")
        return result


@pytest.fixture
def repo_name() -> str:
    return f"repo-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def alice(git_server: GitHttpServer, tmp_path: Path) -> Git:
    return Git(tmp_path, "alice", git_server.users["alice"])


@pytest.fixture
def reader(git_server: GitHttpServer, tmp_path: Path) -> Git:
    return Git(tmp_path, "reader", git_server.users["reader"])


def requests_for(server: GitHttpServer, repo: str) -> list[tuple[str, str | None, int]]:
    return [(r.method, r.user, r.status) for r in server.requests if r.path.startswith(f"/{repo}.git/")]


def commit_file(git: Git, clone: Path, name: str, content: str | bytes) -> None:
    path = clone / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    git.run("add", name, cwd=clone)
    git.run("commit", "--quiet", "-m", f"Change {name}", cwd=clone)


def test_clone_with_credentials_from_a_helper(
    git_server: GitHttpServer, alice: Git, repo_name: str, tmp_path: Path
) -> None:
    url = git_server.create_repo(
        repo_name,
        {"README.md": "# Demo\n", "scripts/start.sh": "#!/bin/sh\necho up\n", "data.bin": b"\x00\xff"},
        executable={"scripts/start.sh"},
    )
    assert url == f"{git_server.base_url}/{repo_name}.git"
    assert "@" not in url

    alice.run("clone", "--quiet", url, str(tmp_path / "clone"))

    clone = tmp_path / "clone"
    assert (clone / "README.md").read_text() == "# Demo\n"
    assert (clone / "data.bin").read_bytes() == b"\x00\xff"
    assert os.access(clone / "scripts" / "start.sh", os.X_OK)
    assert not os.access(clone / "README.md", os.X_OK)
    assert alice.run("rev-parse", "--abbrev-ref", "HEAD", cwd=clone).stdout.strip() == "main"
    log = alice.run("log", "--format=%an <%ae>", cwd=clone).stdout.strip()
    assert log == "Test <test@example.com>"
    # git tries without credentials first, is challenged, then asks the helper.
    records = requests_for(git_server, repo_name)
    assert records[0] == ("GET", None, 401)
    assert ("POST", "alice", 200) in records
    assert all(user in (None, "alice") for _, user, _ in records)


def test_wrong_password_is_refused(git_server: GitHttpServer, tmp_path: Path, repo_name: str) -> None:
    url = git_server.create_repo(repo_name, {"README.md": "secret\n"})

    result = Git(tmp_path, "alice", "not-the-token").run("clone", url, str(tmp_path / "clone"), check=False)

    assert result.returncode != 0
    assert "Authentication failed" in result.stderr
    assert not (tmp_path / "clone").exists()
    assert {status for _, _, status in requests_for(git_server, repo_name)} == {401}


def test_reader_can_fetch_but_not_push(
    git_server: GitHttpServer, reader: Git, repo_name: str, tmp_path: Path
) -> None:
    url = git_server.create_repo(repo_name, {"README.md": "v1\n"})
    before = git_server.branches(repo_name)
    clone = tmp_path / "clone"
    reader.run("clone", "--quiet", url, str(clone))
    commit_file(reader, clone, "README.md", "v2\n")

    result = reader.run("push", "origin", "main", cwd=clone, check=False)

    assert result.returncode != 0
    assert "403" in result.stderr
    assert git_server.branches(repo_name) == before
    assert ("GET", "reader", 403) in requests_for(git_server, repo_name)


def test_alice_pushes_a_large_pack_in_a_chunked_request(
    git_server: GitHttpServer, alice: Git, repo_name: str, tmp_path: Path
) -> None:
    url = git_server.create_repo(repo_name, {"README.md": "v1\n"})
    clone = tmp_path / "clone"
    alice.run("clone", "--quiet", url, str(clone))
    payload = os.urandom(3 * 1024 * 1024)  # incompressible, above git's 1 MiB http.postBuffer
    commit_file(alice, clone, "payload.bin", payload)
    trace = tmp_path / "curl-trace"

    alice.run("push", "origin", "main", "main:refs/heads/feature/x", cwd=clone, trace=trace)

    assert "Transfer-Encoding: chunked" in trace.read_text(errors="replace")
    head = alice.run("rev-parse", "HEAD", cwd=clone).stdout.strip()
    assert git_server.branches(repo_name) == {"main": head, "feature/x": head}
    assert git_server.read_file(repo_name, "main", "payload.bin") == payload
    assert ("POST", "alice", 200) in requests_for(git_server, repo_name)


def test_denied_ref_pattern_is_refused(
    git_server: GitHttpServer,
    alice: Git,
    repo_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = git_server.create_repo(repo_name, {"README.md": "v1\n"})
    clone = tmp_path / "clone"
    alice.run("clone", "--quiet", url, str(clone))
    commit_file(alice, clone, "work.txt", "unpushed work\n")
    monkeypatch.setattr(git_server, "deny_push_refs", ["refs/heads/rescue/*"])

    refused = alice.run("push", "origin", "HEAD:refs/heads/rescue/PAY-1-20240101", cwd=clone, check=False)
    allowed = alice.run("push", "origin", "HEAD:refs/heads/PAY-1-fix", cwd=clone, check=False)

    assert refused.returncode != 0
    assert "pushes to refs/heads/rescue/* are not allowed" in refused.stderr
    assert "pre-receive hook declined" in refused.stderr
    assert allowed.returncode == 0, allowed.stderr
    assert set(git_server.branches(repo_name)) == {"main", "PAY-1-fix"}


def test_fetch_sends_gzip_request_bodies(
    git_server: GitHttpServer, alice: Git, repo_name: str, tmp_path: Path
) -> None:
    # Wanting many commits at once makes the request big enough for git to gzip it.
    branches = {f"topic-{index}": {f"topic-{index}.txt": f"{index}\n"} for index in range(40)}
    url = git_server.create_repo(repo_name, {"README.md": "v1\n"}, extra_branches=branches)
    ours = tmp_path / "ours"
    alice.run("init", "--quiet", str(ours))
    trace = tmp_path / "curl-trace"

    alice.run("fetch", "--quiet", url, "+refs/heads/*:refs/remotes/origin/*", cwd=ours, trace=trace)

    assert "Content-Encoding: gzip" in trace.read_text(errors="replace")
    fetched = alice.run(
        "for-each-ref", "--format=%(refname:lstrip=3) %(objectname)", "refs/remotes/origin", cwd=ours
    ).stdout
    assert dict(line.split() for line in fetched.splitlines()) == git_server.branches(repo_name)


def test_extra_branches_and_reading_files(git_server: GitHttpServer, repo_name: str) -> None:
    git_server.create_repo(
        repo_name,
        {"README.md": "base\n", "src/app.py": "print('app')\n"},
        branch="develop",
        extra_branches={"feature/a": {"README.md": "feature\n", "src/new.py": "x = 1\n"}},
    )

    branches = git_server.branches(repo_name)
    assert set(branches) == {"develop", "feature/a"}
    assert git_server.read_file(repo_name, "develop", "README.md") == b"base\n"
    assert git_server.read_file(repo_name, "feature/a", "README.md") == b"feature\n"
    assert git_server.read_file(repo_name, "feature/a", "src/app.py") == b"print('app')\n"
    assert git_server.read_file(repo_name, "feature/a^", "README.md") == b"base\n"
    with pytest.raises(FileNotFoundError):
        git_server.read_file(repo_name, "develop", "src/new.py")
    with pytest.raises(FileExistsError):
        git_server.create_repo(repo_name, {})


def test_delay_slows_every_request(
    git_server: GitHttpServer, alice: Git, repo_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = git_server.create_repo(repo_name, {"README.md": "v1\n"})
    monkeypatch.setattr(git_server, "delay", 0.3)

    started = time.monotonic()
    alice.run("ls-remote", url)
    elapsed = time.monotonic() - started

    # At least the challenged request and the authenticated one, each delayed.
    requests = len(requests_for(git_server, repo_name))
    assert requests >= 2
    assert elapsed >= 0.3 * requests
