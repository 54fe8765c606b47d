"""Rotating the vault's key-encryption key without downtime.

1. A new key goes first in the key file, the old ones stay: every server re-reads the file and
   seals with the new key while still opening the old.
2. Every stored token's data key is re-wrapped under the new key, in small transactions.
3. With ``prune``, keys no token uses any more are dropped from the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from sqlalchemy import select

from taskspace.core.errors import InvalidInput
from taskspace.db.engine import transaction
from taskspace.db.models import GitToken, Project
from taskspace.services import git_tokens, tracker_links
from taskspace.services.runtime import Runtime
from taskspace.services.vault import new_key_line

BATCH = 100


@dataclass
class Rotation:
    current: str
    rewrapped: int = 0
    pruned: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def _write_atomically(path: os.PathLike[str], text: str) -> None:
    tmp = f"{os.fspath(path)}.new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


async def rotate(rt: Runtime, *, new_key: bool = True, prune: bool = False) -> Rotation:
    key_file = rt.vault.key_file
    if key_file is None and (new_key or prune):
        raise InvalidInput("The vault's keys come from TASKSPACE_SECRET_KEY, which taskspace cannot edit.",
                           hint="Put a new key first in TASKSPACE_SECRET_KEY (keep the old ones after it), "
                                "restart the servers, then run 'taskspace admin rotate-key --rewrap-only'.")
    if new_key and key_file is not None:
        _write_atomically(key_file, new_key_line() + "\n" + key_file.read_text())
    report = Rotation(current=rt.vault.key_id)
    while True:
        async with transaction(rt.sessions) as session:
            batch = list(await session.scalars(
                select(GitToken).where(GitToken.key_id != report.current).order_by(GitToken.id).limit(BATCH)))
            for token in batch:
                report.rewrapped += git_tokens.rewrap(rt.vault, token)
        if len(batch) < BATCH:
            break
    async with transaction(rt.sessions) as session:  # trackers' credentials (one row per project)
        for project in await session.scalars(select(Project).where(Project.tracker_key_id != report.current)):
            report.rewrapped += tracker_links.rewrap(project, rt.vault)
    async with rt.readers() as session:
        used = set(await session.scalars(select(GitToken.key_id).distinct()))
        used |= {k for k in await session.scalars(select(Project.tracker_key_id).distinct()) if k}
    ring = rt.vault.keyring
    unused = [key_id for key_id in ring.keys if key_id != ring.current and key_id not in used]
    if prune and key_file is not None and unused:
        lines = [line for line in key_file.read_text().splitlines()
                 if line.strip() and line.split(" ", 1)[0] not in unused]
        _write_atomically(key_file, "\n".join(lines) + "\n")
        report.pruned = unused
    else:
        report.kept = unused
    return report
