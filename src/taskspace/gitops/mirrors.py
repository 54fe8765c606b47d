"""Bare mirrors of git remotes on the server's disk.

One mirror per remote URL, refreshed before use, makes a warm clone a local copy. A mirror only
maps the remote's branches and tags (``refs/heads/*``, ``refs/tags/*``, pruned); refs that
taskspace writes itself live under ``refs/taskspace/`` and are never pruned by a fetch.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import io
import os
import tarfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from taskspace.core.errors import GitError
from taskspace.core.repo_url import RepoUrl
from taskspace.gitops.runner import GitCredential, GitResult, run_git


@dataclass(frozen=True)
class RemoteHeads:
    default_branch: str | None
    branches: dict[str, str]  # name → sha


class Mirrors:
    def __init__(self, root: Path):
        self.root = root
        self._locks: dict[Path, asyncio.Lock] = {}
        self.home = root / ".home"

    def path_for(self, repo: RepoUrl) -> Path:
        digest = hashlib.sha256(repo.url.encode()).hexdigest()[:16]
        return self.root / f"{repo.name}-{digest}.git"

    async def _git(self, args: list[str], cwd: Path, **kwargs: object) -> GitResult:
        self.home.mkdir(parents=True, exist_ok=True)
        return await run_git(args, cwd=cwd, home=self.home, **kwargs)  # type: ignore[arg-type]

    @asynccontextmanager
    async def _locked(self, path: Path) -> AsyncIterator[None]:
        """One writer per mirror, within this process (asyncio) and across processes (flock)."""
        lock = self._locks.setdefault(path, asyncio.Lock())
        async with lock:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(f"{path}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        await asyncio.sleep(0.02)
                yield
            finally:
                os.close(fd)

    async def ls_remote(self, repo: RepoUrl, credential: GitCredential | None) -> RemoteHeads:
        """Ask the remote directly (an access check that writes nothing)."""
        self.root.mkdir(parents=True, exist_ok=True)
        result = await self._git(["ls-remote", "--symref", repo.url, "HEAD", "refs/heads/*"],
                                 cwd=self.root, credential=credential, timeout=60)
        return _parse_ls_remote(result.stdout.decode())

    async def refresh(self, repo: RepoUrl, credential: GitCredential | None) -> Path:
        """Create the mirror if needed and fetch the remote into it. Returns its path.
        Fetching with the launching user's credential doubles as their access check."""
        path = self.path_for(repo)
        async with self._locked(path):
            if not (path / "HEAD").exists():
                tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
                await self._git(["init", "--quiet", "--bare", str(tmp)], cwd=self.root)
                for key, value in [
                    ("remote.origin.url", repo.url),
                    ("remote.origin.fetch", "+refs/heads/*:refs/heads/*"),
                    ("gc.auto", "0"),
                    ("core.sharedRepository", "0644"),
                ]:
                    await self._git(["config", key, value], cwd=tmp)
                await self._git(["config", "--add", "remote.origin.fetch", "+refs/tags/*:refs/tags/*"], cwd=tmp)
                tmp.rename(path)
            await self._git(["fetch", "--quiet", "--prune", "--no-write-fetch-head", "origin"],
                            cwd=path, credential=credential, timeout=600)
            (path / "taskspace-fetched").write_text(str(time.time()))
        return path

    def fetched(self, repo: RepoUrl) -> Path | None:
        """The mirror of ``repo`` if a fetch into it has ever succeeded, without fetching."""
        path = self.path_for(repo)
        return path if (path / "taskspace-fetched").exists() else None

    async def branches(self, mirror: Path) -> dict[str, str]:
        result = await self._git(["for-each-ref", "--format=%(refname:lstrip=2) %(objectname)", "refs/heads"],
                                 cwd=mirror)
        return dict(line.split(" ", 1) for line in result.stdout.decode().splitlines() if line)

    async def read_blob(self, mirror: Path, commit: str, path: str, *, limit: int) -> bytes | None:
        """The file at ``path`` in ``commit``, None when absent; GitError when over ``limit``."""
        spec = f"{commit}:{path}"
        size = await self._git(["cat-file", "-s", spec], cwd=mirror, check=False)
        if size.returncode != 0:
            return None
        if int(size.stdout) > limit:
            raise GitError(f"{path} is {int(size.stdout)} bytes, more than the {limit} allowed.",
                           hint="Keep environment files small.")
        return (await self._git(["cat-file", "blob", spec], cwd=mirror)).stdout

    async def tree_id(self, mirror: Path, commit: str, path: str) -> str | None:
        spec = f"{commit}:{path}" if path not in {"", "."} else f"{commit}^{{tree}}"
        result = await self._git(["rev-parse", "--verify", "--quiet", spec], cwd=mirror, check=False)
        return result.stdout.decode().strip() or None

    async def ls_tree(self, mirror: Path, commit: str, path: str) -> list[tuple[str, str, str]]:
        """(mode, object id, path relative to ``path``) of every file below ``path``."""
        spec = commit if path in {"", "."} else f"{commit}:{path}"
        result = await self._git(["ls-tree", "-r", "-z", spec], cwd=mirror)
        entries = []
        for record in result.stdout.decode().split("\0"):
            if record:
                meta, _, name = record.partition("\t")
                mode, _kind, sha = meta.split(" ")
                entries.append((mode, sha, name))
        return entries

    async def list_files(self, mirror: Path, commit: str) -> list[str]:
        result = await self._git(["ls-tree", "-r", "--name-only", "-z", commit], cwd=mirror)
        return [p for p in result.stdout.decode().split("\0") if p]

    async def export(self, mirror: Path, commit: str, subdir: str, dest: Path) -> None:
        """Write the tree ``commit:subdir`` into ``dest`` (a build context)."""
        spec = commit if subdir in {"", "."} else f"{commit}:{subdir}"
        result = await self._git(["archive", "--format=tar", spec], cwd=mirror, timeout=600)
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(result.stdout)) as tar:
            tar.extractall(dest, filter="data")

    async def import_bundle(self, mirror: Path, bundle: Path, prefix: str) -> dict[str, str]:
        """Fetch every ref of ``bundle`` into ``refs/taskspace/<prefix>/``; returns ref → sha."""
        async with self._locked(mirror):
            await self._git(["fetch", "--quiet", "--no-write-fetch-head", str(bundle),
                             f"+refs/*:refs/taskspace/{prefix}/*"], cwd=mirror, timeout=600)
            result = await self._git(["for-each-ref", "--format=%(refname) %(objectname)",
                                      f"refs/taskspace/{prefix}/"], cwd=mirror)
        refs = {}
        for line in result.stdout.decode().splitlines():
            ref, sha = line.split(" ", 1)
            refs[ref.removeprefix(f"refs/taskspace/{prefix}/")] = sha
        return refs

    async def drop_refs(self, mirror: Path, prefix: str) -> None:
        result = await self._git(["for-each-ref", "--format=delete %(refname)", f"refs/taskspace/{prefix}/"],
                                 cwd=mirror)
        if result.stdout.strip():
            await self._git(["update-ref", "--stdin"], cwd=mirror, stdin=result.stdout)

    async def unpushed_count(self, mirror: Path, sha: str) -> int:
        """Commits reachable from ``sha`` that no branch or tag of the remote has."""
        result = await self._git(["rev-list", "--count", sha, "--not", "--branches", "--tags"], cwd=mirror)
        return int(result.stdout)

    async def push(self, mirror: Path, repo: RepoUrl, credential: GitCredential | None,
                   sha: str, branch: str) -> None:
        await self._git(["push", "--quiet", "--no-verify", repo.url, f"{sha}:refs/heads/{branch}"],
                        cwd=mirror, credential=credential, timeout=600)


def _parse_ls_remote(text: str) -> RemoteHeads:
    default = None
    branches: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ref: ") and line.endswith("\tHEAD"):
            default = line[5:-5].removeprefix("refs/heads/")
            continue
        sha, _, ref = line.partition("\t")
        if ref.startswith("refs/heads/"):
            branches[ref.removeprefix("refs/heads/")] = sha
    return RemoteHeads(default_branch=default, branches=branches)
