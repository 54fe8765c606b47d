"""Bare mirrors of git remotes on the server's disk.

One mirror per remote URL, refreshed before use, makes a warm clone a local copy. A mirror only
maps the remote's branches and tags (``refs/heads/*``, ``refs/tags/*``, pruned); refs that
taskspace writes itself live under ``refs/taskspace/`` and are never pruned by a fetch.

A refresh asks the remote for its refs with the caller's credential (the access check, which
needs no lock) and fetches only when the mirror differs, under the mirror's lock: launches of
one project at once wait for one fetch at most. What is read at a commit id never changes, so
such reads are remembered (within a byte budget).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import io
import os
import re
import tarfile
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from taskspace.core.errors import GitError
from taskspace.core.repo_url import RepoUrl
from taskspace.gitops.runner import GitCredential, GitResult, run_git
from taskspace.gitops.smart_http import Refs, SmartHttp


@dataclass(frozen=True)
class RemoteHeads:
    default_branch: str | None
    branches: dict[str, str]  # name → sha
    tags: dict[str, str] = field(default_factory=dict)  # name → sha (of the tag object, for annotated tags)


T = TypeVar("T")
_COMMIT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
#: Bytes of remembered reads at commit ids (environment files, trees) kept at most.
READ_CACHE_BYTES = 16 * 1024 * 1024


class Mirrors:
    def __init__(self, root: Path):
        self.root = root
        self._locks: dict[Path, asyncio.Lock] = {}
        self.home = root / ".home"
        self._reads: OrderedDict[tuple[str, ...], tuple[Any, int]] = OrderedDict()
        self._read_bytes = 0
        self.http = SmartHttp()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _remembered(self, key: tuple[str, ...], commit: str, read: Callable[[], Awaitable[T]],
                          size: Callable[[T], int]) -> T:
        """``read()``, remembered when ``commit`` is a commit id (what it names never changes)."""
        if not _COMMIT_ID.fullmatch(commit):
            return await read()
        if key in self._reads:
            self._reads.move_to_end(key)
            return cast(T, self._reads[key][0])
        value = await read()
        cost = size(value) + 200
        if cost <= READ_CACHE_BYTES // 16:
            self._reads[key] = (value, cost)
            self._read_bytes += cost
            while self._read_bytes > READ_CACHE_BYTES:
                _, (_, dropped) = self._reads.popitem(last=False)
                self._read_bytes -= dropped
        return value

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

    async def ls_remote(self, repo: RepoUrl, credential: GitCredential | None, *, tags: bool = False) -> RemoteHeads:
        """Ask the remote directly (an access check that writes nothing): over HTTP without a
        git process (``smart_http``), else with ``git ls-remote``."""
        if repo.scheme in {"http", "https"}:
            found = await self.http.ls_refs(repo, credential, tags=tags)
            if found is not None:
                return _heads(found, tags=tags)
        self.root.mkdir(parents=True, exist_ok=True)
        patterns = ["HEAD", "refs/heads/*", *(["refs/tags/*"] if tags else [])]
        result = await self._git(["ls-remote", "--symref", repo.url, *patterns],
                                 cwd=self.root, credential=credential, timeout=60)
        return _parse_ls_remote(result.stdout.decode())

    async def refresh(self, repo: RepoUrl, credential: GitCredential | None) -> Path:
        """The mirror of ``repo``, as the remote has it now (see ``sync``)."""
        return (await self.sync(repo, credential))[0]

    async def sync(self, repo: RepoUrl, credential: GitCredential | None) -> tuple[Path, dict[str, str]]:
        """Make the mirror what the remote has now, creating it if needed; returns its path and
        branches. Reading the remote's refs with the caller's credential is their access check;
        the fetch happens only when the mirror differs."""
        remote = await self.ls_remote(repo, credential, tags=True)
        path = self.path_for(repo)
        if await self._mirrors(path, remote):
            return path, remote.branches
        async with self._locked(path):
            if await self._mirrors(path, remote):  # fetched meanwhile by a launch that held the lock
                return path, remote.branches
            await self._fetch(repo, credential, path)
        return path, await self.branches(path)

    async def _mirrors(self, path: Path, remote: RemoteHeads) -> bool:
        """Whether the mirror has exactly the remote's branches and tags."""
        if not (path / "taskspace-fetched").exists():
            return False
        result = await self._git(["for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags"],
                                 cwd=path)
        local = dict(line.split(" ", 1) for line in result.stdout.decode().splitlines() if line)
        wanted = {**{f"refs/heads/{k}": v for k, v in remote.branches.items()},
                  **{f"refs/tags/{k}": v for k, v in remote.tags.items()}}
        return local == wanted

    async def _fetch(self, repo: RepoUrl, credential: GitCredential | None, path: Path) -> None:
        """Create the mirror if needed and fetch the remote into it (under the mirror's lock)."""
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
        return await self._remembered(("blob", str(mirror), commit, path, str(limit)), commit,
                                      lambda: self._read_blob(mirror, commit, path, limit=limit),
                                      lambda blob: len(blob or b""))

    async def _read_blob(self, mirror: Path, commit: str, path: str, *, limit: int) -> bytes | None:
        spec = f"{commit}:{path}"
        size = await self._git(["cat-file", "-s", spec], cwd=mirror, check=False)
        if size.returncode != 0:
            return None
        if int(size.stdout) > limit:
            raise GitError(f"{path} is {int(size.stdout)} bytes, more than the {limit} allowed.",
                           hint="Keep environment files small.")
        return (await self._git(["cat-file", "blob", spec], cwd=mirror)).stdout

    async def tree_id(self, mirror: Path, commit: str, path: str) -> str | None:
        return await self._remembered(("tree", str(mirror), commit, path), commit,
                                      lambda: self._tree_id(mirror, commit, path), lambda _: 64)

    async def _tree_id(self, mirror: Path, commit: str, path: str) -> str | None:
        spec = f"{commit}:{path}" if path not in {"", "."} else f"{commit}^{{tree}}"
        result = await self._git(["rev-parse", "--verify", "--quiet", spec], cwd=mirror, check=False)
        return result.stdout.decode().strip() or None

    async def ls_tree(self, mirror: Path, commit: str, path: str) -> list[tuple[str, str, str]]:
        """(mode, object id, path relative to ``path``) of every file below ``path``."""
        return await self._remembered(("ls-tree", str(mirror), commit, path), commit,
                                      lambda: self._ls_tree(mirror, commit, path),
                                      lambda entries: sum(60 + len(e[2]) for e in entries))

    async def _ls_tree(self, mirror: Path, commit: str, path: str) -> list[tuple[str, str, str]]:
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
        return await self._remembered(("files", str(mirror), commit), commit,
                                      lambda: self._list_files(mirror, commit),
                                      lambda names: sum(50 + len(n) for n in names))

    async def _list_files(self, mirror: Path, commit: str) -> list[str]:
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


def _heads(found: Refs, *, tags: bool) -> RemoteHeads:
    return RemoteHeads(
        default_branch=found.head.removeprefix("refs/heads/") if found.head else None,
        branches={ref.removeprefix("refs/heads/"): oid for ref, oid in found.refs.items() if ref.startswith("refs/heads/")},
        tags={ref.removeprefix("refs/tags/"): oid for ref, oid in found.refs.items() if ref.startswith("refs/tags/")}
        if tags else {})


def _parse_ls_remote(text: str) -> RemoteHeads:
    default = None
    branches: dict[str, str] = {}
    tags: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ref: ") and line.endswith("\tHEAD"):
            default = line[5:-5].removeprefix("refs/heads/")
            continue
        sha, _, ref = line.partition("\t")
        if ref.startswith("refs/heads/"):
            branches[ref.removeprefix("refs/heads/")] = sha
        elif ref.startswith("refs/tags/") and not ref.endswith("^{}"):  # ^{}: the peeled commit of a tag
            tags[ref.removeprefix("refs/tags/")] = sha
    return RemoteHeads(default_branch=default, branches=branches, tags=tags)
