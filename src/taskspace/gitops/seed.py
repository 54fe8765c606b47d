"""Create bare repositories with content in one step (the demo project, test fixtures)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

DEFAULT_AUTHOR = "taskspace <taskspace@localhost>"


def create_bare_repo(path: Path, files: dict[str, str | bytes], *, branch: str = "main",
                     executable: Iterable[str] = (), extra_branches: dict[str, dict[str, str | bytes]] | None = None,
                     author: str = DEFAULT_AUTHOR, message: str = "Initial commit") -> None:
    """A bare repository at ``path`` with one commit of ``files`` on ``branch`` (HEAD), and
    for each of ``extra_branches`` a commit on top of it. Paths in ``executable`` get mode 755.
    Raises FileExistsError when ``path`` exists, CalledProcessError when git fails."""
    if path.exists():
        raise FileExistsError(f"repository {path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    _git("init", "--bare", "--quiet", f"--initial-branch={branch}", str(path))
    marked = frozenset(executable)
    stream = _commit(f"refs/heads/{branch}", message, files, marked, None, author)
    for extra, extra_files in (extra_branches or {}).items():
        stream += _commit(f"refs/heads/{extra}", f"Work on {extra}", extra_files, marked, f"refs/heads/{branch}",
                          author)
    _git("fast-import", "--quiet", "--date-format=raw", cwd=path, input=stream)


def add_commit(path: Path, files: dict[str, str | bytes], *, branch: str = "main", start: str | None = None,
               author: str = DEFAULT_AUTHOR, message: str = "Change") -> str:
    """Commit ``files`` (added or replaced) on ``branch`` of the bare repository at ``path``, on
    top of the branch, or of ``start`` for a new branch. Returns the new commit's id."""
    ref = f"refs/heads/{branch}"
    parent = f"{start or ref}^0"
    _git("fast-import", "--quiet", "--date-format=raw", cwd=path,
         input=_commit(ref, message, files, frozenset(), parent, author))
    return _git("rev-parse", ref, cwd=path).decode().strip()


def _git(*args: str, cwd: Path | None = None, input: bytes | None = None) -> bytes:
    return subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True, check=True).stdout


def _commit(ref: str, message: str, files: dict[str, str | bytes], executable: frozenset[str],
            parent: str | None, author: str) -> bytes:
    """``git fast-import`` commands for one commit of ``files`` on ``ref``."""
    now = int(time.time())
    text = message.encode()
    parts = [
        f"commit {ref}\n".encode(),
        f"author {author} {now} +0000\n".encode(),
        f"committer {author} {now} +0000\n".encode(),
        b"data %d\n%s\n" % (len(text), text),
    ]
    if parent:
        parts.append(f"from {parent}\n".encode())
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        mode = "100755" if name in executable else "100644"
        parts.append(f"M {mode} inline {_quote(name)}\n".encode())
        parts.append(b"data %d\n%s\n" % (len(data), data))
    parts.append(b"\n")
    return b"".join(parts)


def _quote(name: str) -> str:
    # fast-import's C-style quoting; always quoting is valid and handles spaces and quotes.
    escaped = name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
