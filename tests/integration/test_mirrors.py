"""Mirrors against the authenticated git server: the access check reads the remote's refs with
the caller's credential, a fetch happens only when the mirror differs (and once for launches
at once), and reads at commit ids are remembered while reads at names are not."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from taskspace.core.errors import GitError
from taskspace.core.repo_url import RepoUrlPolicy, parse_repo_url
from taskspace.gitops.mirrors import Mirrors
from taskspace.gitops.runner import GitCredential
from taskspace.testing.git_server import GitHttpServer


@pytest.fixture
def repo(git_server: GitHttpServer) -> str:
    name = f"mirror-{uuid.uuid4().hex[:10]}"
    git_server.create_repo(name, {"README.md": "# one\n"}, extra_branches={"feature": {"f.txt": "f\n"}})
    return name


class Counted(Mirrors):
    """Mirrors that count their fetches (an ls-remote and a fetch both POST to upload-pack with
    git's protocol v2, so the server's request log cannot tell them apart)."""

    fetches = 0

    async def _fetch(self, *args: object) -> None:
        self.fetches += 1
        await super()._fetch(*args)  # type: ignore[arg-type]


async def test_a_mirror_is_fetched_only_when_the_remote_changed(git_server: GitHttpServer, repo: str,
                                                                 tmp_path: Path) -> None:
    mirrors = Counted(tmp_path / "mirrors")
    url = parse_repo_url(git_server.url(repo), RepoUrlPolicy(http_hosts=("127.0.0.1",)))
    alice = GitCredential("alice", git_server.users["alice"])

    path, branches = await mirrors.sync(url, alice)
    assert set(branches) == {"main", "feature"} and mirrors.fetches == 1
    again, same = await mirrors.sync(url, alice)
    assert (again, same) == (path, branches) and mirrors.fetches == 1, "nothing new: no fetch"

    moved = git_server.commit(repo, {"NEWS": "more\n"})
    git_server.commit(repo, {"x": "y"}, branch="ticket", start="refs/heads/main")
    _, branches = await mirrors.sync(url, alice)
    assert branches["main"] == moved and "ticket" in branches and mirrors.fetches == 2

    # A branch deleted on the remote goes from the mirror too (a fetch prunes it).
    git_server_git = ["git", "-C", str(git_server.repo_path(repo)), "branch", "-D", "ticket"]
    proc = await asyncio.create_subprocess_exec(*git_server_git)
    assert await proc.wait() == 0
    _, branches = await mirrors.sync(url, alice)
    assert "ticket" not in branches and set(await mirrors.branches(path)) == {"main", "feature"}


async def test_the_access_check_is_the_callers_and_a_refused_one_creates_no_mirror(
        git_server: GitHttpServer, repo: str, tmp_path: Path) -> None:
    mirrors = Counted(tmp_path / "mirrors")
    url = parse_repo_url(git_server.url(repo), RepoUrlPolicy(http_hosts=("127.0.0.1",)))
    await mirrors.sync(url, GitCredential("alice", git_server.users["alice"]))

    with pytest.raises(GitError) as refused:
        await mirrors.sync(url, GitCredential("alice", "wrong-password"))
    assert refused.value.status_code == 422
    with pytest.raises(GitError):
        await Mirrors(tmp_path / "other").sync(url, None)
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").glob("*.git"))


async def test_launches_at_once_share_one_fetch(git_server: GitHttpServer, repo: str, tmp_path: Path) -> None:
    mirrors = Counted(tmp_path / "mirrors")
    url = parse_repo_url(git_server.url(repo), RepoUrlPolicy(http_hosts=("127.0.0.1",)))
    alice = GitCredential("alice", git_server.users["alice"])
    await mirrors.sync(url, alice)
    moved = git_server.commit(repo, {"NEWS": "pushed\n"})

    results = await asyncio.gather(*(mirrors.sync(url, alice) for _ in range(8)))

    assert all(branches["main"] == moved for _, branches in results)
    assert mirrors.fetches == 2, "the first fetch serves the launches waiting for the lock"


async def test_reads_at_a_commit_id_are_remembered_and_reads_at_a_name_are_not(
        git_server: GitHttpServer, repo: str, tmp_path: Path) -> None:
    mirrors = Counted(tmp_path / "mirrors")
    url = parse_repo_url(git_server.url(repo), RepoUrlPolicy(http_hosts=("127.0.0.1",)))
    alice = GitCredential("alice", git_server.users["alice"])
    path, branches = await mirrors.sync(url, alice)
    first = branches["main"]

    assert await mirrors.read_blob(path, first, "README.md", limit=1000) == b"# one\n"
    assert await mirrors.read_blob(path, "main", "README.md", limit=1000) == b"# one\n"
    assert await mirrors.list_files(path, first) == ["README.md"]
    second = git_server.commit(repo, {"README.md": "# two\n"})
    await mirrors.sync(url, alice)

    assert await mirrors.read_blob(path, first, "README.md", limit=1000) == b"# one\n"
    assert await mirrors.read_blob(path, "main", "README.md", limit=1000) == b"# two\n"
    assert await mirrors.read_blob(path, second, "README.md", limit=1000) == b"# two\n"
    assert await mirrors.read_blob(path, second, "absent", limit=1000) is None
    with pytest.raises(GitError, match="more than the 3 allowed"):
        await mirrors.read_blob(path, second, "README.md", limit=3)
