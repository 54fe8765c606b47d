"""``stopped`` and ``purging``: stop, rescue unpushed work, delete."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from taskspace.core.errors import BackendError, GitError, TaskspaceError
from taskspace.core.naming import slugify
from taskspace.core.repo_url import parse_repo_url
from taskspace.core.states import Step
from taskspace.core.workspace_scripts import rescue_script
from taskspace.plugins.backends.base import SupportsFileRead
from taskspace.services.lifecycle import plan as plans
from taskspace.services.lifecycle.prepare import ensure_container, plan_of
from taskspace.services.lifecycle.snapshot import Snapshot, StepTimer
from taskspace.services.runtime import Runtime


async def stop_step(rt: Runtime, snap: Snapshot) -> None:
    async with StepTimer(rt, snap, Step.STOP) as step:
        step.values = {"backend_state": await rt.backend.stop(snap.id, snap.ws.backend_state)}


@dataclass
class RepoSnapshot:
    """What the rescue script reported for one repository."""

    skip: str | None = None
    branch: str | None = None
    tip: str | None = None
    dirty: bool = False
    bundle: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _parse_report(output: str) -> RepoSnapshot:
    report = RepoSnapshot()
    for line in output.splitlines():
        key, _, value = line.partition(" ")
        if key == "SKIP":
            report.skip = value
        elif key == "BRANCH":
            report.branch = None if value == "-" else value
        elif key == "TIP":
            report.tip = value
        elif key == "DIRTY":
            report.dirty = value == "1"
        elif key == "BUNDLE":
            report.bundle = None if value == "none" else value
    return report


async def _read_bundle(rt: Runtime, snap: Snapshot, path: str, user: str | None) -> bytes:
    if isinstance(rt.backend, SupportsFileRead):
        data = await rt.backend.read_file(snap.id, path)
        if data is not None:
            return data
    result = await rt.backend.exec(snap.id, ["cat", path], user=user)
    if result.exit_code != 0:
        raise BackendError(f"Could not read the rescue bundle {path}: {result.output.strip()[-300:]}")
    return result.stdout


async def _rescue_repo(rt: Runtime, snap: Snapshot, name: str, user: str | None, stamp: str) -> list[dict[str, str]]:
    """Push this repository's unpushed work to rescue branches. Returns what was pushed."""
    repo = next(r for r in snap.repos if r.name == name)
    url = parse_repo_url(repo.url, rt.settings.repo_url_policy)
    credential = snap.credentials.get(name)
    mirror = await rt.mirrors.refresh(url, credential)
    pushed: list[dict[str, str]] = []
    for full in (False, True):
        result = await rt.backend.exec(snap.id, ["/bin/sh", "-c", rescue_script(name=name, ticket=snap.ticket.key,
                                                                                full=full)],
                                       user=user, timeout=600)
        if result.exit_code != 0:
            raise GitError(f"Could not snapshot the work in {name}: {result.output.strip()[-500:]}",
                           hint="Open a terminal in the workspace and commit or push the work by hand.")
        report = _parse_report(result.stdout.decode(errors="replace"))
        if report.skip or report.bundle is None:
            return pushed
        data = await _read_bundle(rt, snap, report.bundle, user)
        prefix = f"rescue/{snap.id}/{name}"
        with tempfile.NamedTemporaryFile(suffix=".bundle", dir=rt.settings.data_dir / "tmp") as fh:
            fh.write(data)
            fh.flush()
            try:
                refs = await rt.mirrors.import_bundle(mirror, Path(fh.name), prefix)
            except GitError:
                if full:
                    raise
                continue  # the remote lost commits the bundle builds on: send everything
        try:
            base = f"rescue/{snap.ticket.key}-{stamp}"
            tip = refs.get("taskspace/rescue-tip")
            if tip and await rt.mirrors.unpushed_count(mirror, tip) > 0:
                await rt.mirrors.push(mirror, url, credential, tip, base)
                pushed.append({"repo": name, "branch": base, "sha": tip, "uncommitted": str(report.dirty).lower()})
            for ref, sha in refs.items():
                local = ref.removeprefix("heads/")
                if ref == local or local == report.branch or sha == tip:
                    continue
                if await rt.mirrors.unpushed_count(mirror, sha) > 0:
                    branch = f"{base}-{slugify(local, 60) or 'branch'}"
                    await rt.mirrors.push(mirror, url, credential, sha, branch)
                    pushed.append({"repo": name, "branch": branch, "sha": sha, "uncommitted": "false"})
        finally:
            await rt.mirrors.drop_refs(mirror, prefix)
        return pushed
    return pushed


async def rescue_step(rt: Runtime, snap: Snapshot) -> list[dict[str, str]]:
    """Commit and push everything not on the remote to ``rescue/<KEY>-<UTC timestamp>``.
    Raises (so nothing is deleted) when any repository's work cannot be pushed."""
    plan = plan_of(snap)
    async with StepTimer(rt, snap, Step.RESCUE) as step:
        status = await rt.backend.status(snap.id, snap.ws.backend_state)
        if plan is None or not status.exists:
            step.status, step.reason = "skipped", "the workspace has no container, so no work to rescue"
            return []
        if not status.running:
            await ensure_container(rt, snap, plan)
        (rt.settings.data_dir / "tmp").mkdir(exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        pushed: list[dict[str, str]] = []
        problems: list[str] = []
        for repo in snap.repos:
            try:
                pushed += await _rescue_repo(rt, snap, repo.name, plans.exec_user(plan), stamp)
            except TaskspaceError as exc:
                problems.append(f"{repo.name}: {exc.message}")
        if problems:
            raise GitError("Unpushed work could not be rescued, so nothing was deleted. " + " | ".join(problems),
                           hint="Fix access to the remote (or push the work yourself), then purge again.")
        step.data = {"pushed": pushed}
        step.values = {"rescue": pushed}
        if not pushed:
            step.reason = "nothing to rescue: every commit is on the remote and no files were changed"
        return pushed


async def delete_step(rt: Runtime, snap: Snapshot) -> None:
    async with StepTimer(rt, snap, Step.DELETE) as step:
        step.values = {"backend_state": await rt.backend.delete(snap.id, snap.ws.backend_state)}
