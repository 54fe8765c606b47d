"""Shell scripts run inside a workspace container, built as pure functions of their inputs.

Layout of the volume: each repository at ``/workspace/<name>``; taskspace's own files under
``/workspace/.taskspace`` (logs, markers, rescue bundles). Every script is idempotent.
Values are quoted with :func:`shlex.quote`; nothing from a user reaches a shell unquoted.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from taskspace.core.environment import LifecycleCommand

WORKSPACE = "/workspace"
STATE_DIR = "/workspace/.taskspace"
LOG_DIR = f"{STATE_DIR}/logs"
STARTUP_LOG = f"{LOG_DIR}/startup.log"
ON_CREATE_DONE = f"{STATE_DIR}/on-create.done"
UPDATE_CONTENT_DONE = f"{STATE_DIR}/update-content.done"
POST_CREATE_DONE = f"{STATE_DIR}/post-create.done"
MIRRORS_DIR = "/opt/taskspace/mirrors"
CLONED_MARKER = ".git/taskspace-cloned"
#: In a repository cloned for a workspace of the warm pool, until a launch claims it.
SPARE_MARKER = ".git/taskspace-spare"
NO_GIT_EXIT = 97
#: The clone script's exit code when the workspace user cannot write to /workspace; it prints
#: that user's ``uid:gid`` first, for :func:`chown_script`.
NOT_WRITABLE_EXIT = 96
#: Lines the startup runner writes on stderr to report each lifecycle step.
STATUS_PREFIX = "TASKSPACE-STATUS "
#: The line on stdout that ends the clone when the startup follows it in the same exec.
CLONE_DONE_PREFIX = "TASKSPACE-CLONE-DONE "


def q(value: str) -> str:
    return shlex.quote(value)


@dataclass(frozen=True)
class CloneTarget:
    name: str
    mirror: str  # path of the read-only mirror inside the container
    url: str  # the real remote, set as origin
    branch: str
    base_sha: str
    branch_existed: bool


def _chown(owner: str) -> str:
    """Give /workspace and the state dir to ``owner``, a shell word (``uid:gid``)."""
    return f"mkdir -p {q(LOG_DIR)}; chown {owner} {q(WORKSPACE)}; chown -R {owner} {q(STATE_DIR)}"


def chown_script(owner: str) -> str:
    """Run as root: give /workspace and the state dir to ``owner`` (``uid:gid``)."""
    return f"set -e; {_chown(q(owner))}"


def is_root(user: str) -> bool:
    """Whether a container user (``name``, ``uid``, ``name:group``…) is root."""
    return user.partition(":")[0] in {"root", "0"}


def handover_script(user: str) -> str:
    """Run as root in a new workspace: give /workspace to ``user`` (as Docker's ``--user`` takes
    it) before the first clone, resolved in the container's own user database, and print the
    ``uid:gid`` it was given to (a group given by name stays a name). A user it does not know
    is left alone and nothing is printed: the clone then says which uid it runs as
    (:data:`NOT_WRITABLE_EXIT`)."""
    name, _, group = user.partition(":")
    return "\n".join([
        "set -e",
        f"u={q(name)}; g={q(group)}",
        'uid=$(id -u "$u" 2>/dev/null) || case "$u" in \'\'|*[!0-9]*) exit 0 ;; *) uid=$u ;; esac',
        '[ -n "$g" ] || g=$(id -g "$u" 2>/dev/null) || exit 0',
        _chown('"$uid:$g"'),
        'echo "$uid:$g"',
    ]) + "\n"


def _checkout(t: CloneTarget) -> str:
    if t.branch_existed:
        return f"git checkout --quiet -B {q(t.branch)} --track {q('origin/' + t.branch)}"
    return f"git checkout --quiet -B {q(t.branch)} {q(t.base_sha)}"


def _identity(user_name: str | None, user_email: str | None) -> dict[str, str]:
    return {key: value for key, value in (("user.name", user_name), ("user.email", user_email)) if value}


#: The mirror belongs to the server's user: git refuses another owner's repository unless told,
#: and upload-pack runs with the caller's config environment cleared.
_FROM_MIRROR = "-c safe.directory='*'", "--upload-pack=\"git -c safe.directory='*' upload-pack\""


def clone_script(targets: list[CloneTarget], *, user_name: str | None, user_email: str | None,
                 spare: bool = False) -> str:
    """Clone each repository from its mirror into /workspace/<name> on the ticket branch, all
    at once; print one line a repository (``cloned``, ``switched`` or ``kept``), in order, and
    exit with the first failure's code (:data:`NOT_WRITABLE_EXIT` before anything, when the
    user cannot write to /workspace).

    A repository is cloned into a temporary directory and renamed into place once complete
    (with a marker), so a crash never leaves a half clone that looks finished. ``spare``: a
    workspace of the warm pool, cloned on each target's branch and marked as such; a later run
    without ``spare`` (the workspace was claimed) fetches from the mirror and moves each
    repository to the ticket branch."""
    lines = [
        "set -u",
        f"command -v git >/dev/null 2>&1 || exit {NO_GIT_EXIT}",
        (f"{{ [ -d {q(LOG_DIR)} ] || mkdir -p {q(LOG_DIR)} 2>/dev/null; }} && test -w {q(WORKSPACE)} "
         f"|| {{ echo \"$(id -u):$(id -g)\"; exit {NOT_WRITABLE_EXIT}; }}"),
        "pids=''",
    ]
    for index, t in enumerate(targets):
        out = f"{STATE_DIR}/clone-{index}"
        body = "\n".join("  " + line for line in _clone_one(t, user_name=user_name, user_email=user_email, spare=spare))
        lines.append(f"( set -eu\n{body}\n) >{q(out + '.out')} 2>{q(out + '.err')} </dev/null & pids=\"$pids $!\"")
    lines += ["code=0", "for pid in $pids; do wait \"$pid\" || { c=$?; [ \"$code\" -ne 0 ] || code=$c; }; done"]
    # In order, one process per stream (the repositories are cloned at once, and each process
    # started here is a millisecond or more of the launch).
    outs = " ".join(q(f"{STATE_DIR}/clone-{index}.out") for index in range(len(targets)))
    errs = " ".join(q(f"{STATE_DIR}/clone-{index}.err") for index in range(len(targets)))
    if targets:
        lines.append(f"cat {outs}; cat {errs} >&2; rm -f {outs} {errs}")
    lines.append('exit "$code"')
    return "\n".join(lines) + "\n"


def _clone_one(t: CloneTarget, *, user_name: str | None, user_email: str | None, spare: bool) -> list[str]:
    config, upload = _FROM_MIRROR
    dest, tmp = f"{WORKSPACE}/{t.name}", f"{STATE_DIR}/clone-{t.name}"
    lines = []
    if not spare:
        lines += [
            f"if [ -e {q(dest + '/' + SPARE_MARKER)} ]; then",
            f"  cd {q(dest)}",
            '  was=$(git symbolic-ref -q --short HEAD || true)',
            f"  git {config} fetch --quiet --prune {upload} {q(t.mirror)} '+refs/heads/*:refs/remotes/origin/*'",
            f"  {_checkout(t)}",
            f'  if [ -n "$was" ] && [ "$was" != {q(t.branch)} ]; then git branch --quiet -D "$was"; fi',
            *[f"  git config {key} {q(value)}" for key, value in _identity(user_name, user_email).items()],
            f"  rm -f {q(SPARE_MARKER)}",
            f"  echo 'switched {t.name}'",
            f"elif [ ! -e {q(dest + '/' + CLONED_MARKER)} ]; then",
        ]
    else:
        lines.append(f"if [ ! -e {q(dest + '/' + CLONED_MARKER)} ]; then")
    # Settings of the new repository go with the clone: a git process less for each.
    settings = {"push.autoSetupRemote": "true", **_identity(user_name, user_email)}
    options = " ".join(f"--config {q(f'{key}={value}')}" for key, value in settings.items())
    lines += [
        f"  rm -rf {q(tmp)}",
        f"  git {config} clone --quiet --no-checkout {options} {upload} {q(t.mirror)} {q(tmp)}",
        f"  cd {q(tmp)}",
        f"  git remote set-url origin {q(t.url)}",
        # Drop the upstream that clone set for the mirror's HEAD; the ticket branch gets its own.
        '  git config --remove-section "branch.$(git symbolic-ref --short HEAD)" 2>/dev/null || true',
        f"  {_checkout(t)}",
        *([f"  touch {q(SPARE_MARKER)}"] if spare else []),
        f"  touch {q(CLONED_MARKER)}",
        "  cd /",
        f"  rm -rf {q(dest)}",
        f"  mv {q(tmp)} {q(dest)}",
        f"  echo 'cloned {t.name}'",
        "else",
        f"  echo 'kept {t.name}'",
        "fi",
    ]
    return lines


def _command_lines(cmd: str | list[str]) -> str:
    if isinstance(cmd, str):
        return f"/bin/sh -c {q(cmd)}"
    return " ".join(q(part) for part in cmd)


def _hook(label: str, command: LifecycleCommand) -> list[str]:
    """Run a lifecycle command (several named ones in parallel) and stop at its failure.

    Commands get fd 3 closed: a background process they leave must not hold the exec's stderr,
    or the exec would never end. Parallel commands write to files, not a pipe, for the same
    reason, and each records its own exit code."""
    lines = [f"echo {q('==> ' + label)}"]
    if len(command.commands) == 1:
        (cmd,) = command.commands.values()
        lines += [f"( {_command_lines(cmd)} ) </dev/null 3>&-", "code=$?"]
    else:
        lines += ["code=0; pids=''", "out=$(mktemp -d)"]
        for index, cmd in enumerate(command.commands.values()):
            lines.append(f'( ( {_command_lines(cmd)} ) </dev/null >"$out/{index}.log" 2>&1; '
                         f'echo $? >"$out/{index}.code" ) 3>&- & pids="$pids $!"')
        lines.append('for p in $pids; do wait "$p"; done')
        for index, name in enumerate(command.commands):
            lines += [f'sed {q("s/^/[" + name + "] /")} "$out/{index}.log"',
                      f'c=$(cat "$out/{index}.code"); if [ "$c" -ne 0 ] && [ "$code" -eq 0 ]; then code=$c; fi']
        lines.append('rm -rf "$out"')
    lines += [
        f'echo "<== {label} exited with code $code"',
        f'echo "{STATUS_PREFIX}{label} $code" >&3',
        'if [ "$code" -ne 0 ]; then exit "$code"; fi',
    ]
    return lines


def _once(label: str, command: LifecycleCommand, marker: str) -> list[str]:
    """A lifecycle command that runs until it succeeds once in the workspace's volume."""
    return [f"if [ ! -e {q(marker)} ]; then",
            *["  " + line for line in _hook(label, command)],
            f"  touch {q(marker)}", "fi"]


def startup_script(*, primary: str, post_create: LifecycleCommand | None,
                   post_start: LifecycleCommand | None, timeout_seconds: int, keep_logs: int = 5,
                   on_create: LifecycleCommand | None = None, update_content: LifecycleCommand | None = None,
                   prebuild: bool = False) -> str:
    """onCreateCommand, updateContentCommand and postCreateCommand (each until it has succeeded
    once), postStartCommand, then the primary repository's ``.taskspace/startup.sh``; output to
    the startup log, one status line per step on fd 3 (stderr of the exec). Exits with the first
    failing step's code. ``prebuild`` (a workspace of the warm pool, not yet anyone's) stops
    after updateContentCommand: the rest runs once the workspace is claimed."""
    log = STARTUP_LOG
    rotate = [f'[ -e "{log}.{i}" ] && mv -f "{log}.{i}" "{log}.{i + 1}"' for i in range(keep_logs - 1, 0, -1)]
    lines = [
        "exec 3>&2",
        f"mkdir -p {q(LOG_DIR)}",
        *[r + " || true" for r in rotate],
        f'[ -e "{log}" ] && mv -f "{log}" "{log}.1" || true',
        f'exec >"{log}" 2>&1',
        f'echo "# {"prebuild" if prebuild else "startup"} at $(date -u +%Y-%m-%dT%H:%M:%SZ)"',
        f"cd {q(WORKSPACE + '/' + primary)} || exit 1",
    ]
    for label, command, marker in (("onCreateCommand", on_create, ON_CREATE_DONE),
                                   ("updateContentCommand", update_content, UPDATE_CONTENT_DONE)):
        if command:
            lines += _once(label, command, marker)
    if prebuild:
        return "\n".join([*lines, "exit 0"]) + "\n"
    if post_create:
        lines += _once("postCreateCommand", post_create, POST_CREATE_DONE)
    if post_start:
        lines += _hook("postStartCommand", post_start)
    script = ".taskspace/startup.sh"
    run = f'if [ -x {script} ]; then ./{script}; else /bin/sh {script}; fi'
    lines += [
        f"if [ -f {script} ]; then",
        f"  echo '==> {script}'",
        "  if command -v timeout >/dev/null 2>&1; then",
        f"    timeout -k 10 {int(timeout_seconds)} /bin/sh -c {q(run)} </dev/null 3>&-; code=$?",
        "  else",
        f"    /bin/sh -c {q(run)} </dev/null 3>&-; code=$?",
        "  fi",
        f'  echo "<== {script} exited with code $code"',
        f'  echo "{STATUS_PREFIX}startup.sh $code" >&3',
        '  exit "$code"',
        "fi",
        f'echo "{STATUS_PREFIX}startup.sh none" >&3',
    ]
    return "\n".join(lines) + "\n"


def parse_status(stderr: str) -> list[tuple[str, str]]:
    """(step, exit code or 'none') pairs from the startup runner's status lines."""
    found = []
    for line in stderr.splitlines():
        if line.startswith(STATUS_PREFIX):
            step, _, code = line[len(STATUS_PREFIX):].strip().rpartition(" ")
            found.append((step, code))
    return found


def rescue_script(*, name: str, ticket: str, full: bool) -> str:
    """Snapshot uncommitted work as a commit (without touching the branch, index or files), then
    write a bundle of every local commit the remote-tracking refs lack (``full``: of all local
    commits). Prints ``KEY value`` lines: ``SKIP``, ``BRANCH``, ``TIP``, ``DIRTY``, ``BUNDLE``."""
    repo = f"{WORKSPACE}/{name}"
    bundle = f"{STATE_DIR}/rescue-{name}.bundle"
    message = f"Rescue uncommitted work of {ticket} before purge"
    scope = "--branches" if full else "--branches --not --remotes"
    return "\n".join([
        "set -u",
        f"cd {q(repo)} 2>/dev/null || {{ echo 'SKIP no-repository'; exit 0; }}",
        f"[ -e {q(CLONED_MARKER)} ] || {{ echo 'SKIP incomplete-clone'; exit 0; }}",
        "git rev-parse --verify -q HEAD >/dev/null || { echo 'SKIP no-commits'; exit 0; }",
        'echo "BRANCH $(git symbolic-ref -q --short HEAD || echo -)"',
        "tip=$(git rev-parse HEAD)",
        "dirty=0",
        'if [ -n "$(git status --porcelain --untracked-files=all)" ]; then',
        '  idx=$(mktemp) && cp .git/index "$idx" 2>/dev/null',
        '  GIT_INDEX_FILE="$idx" git add -A || exit 1',
        '  tree=$(GIT_INDEX_FILE="$idx" git write-tree) || exit 1',
        '  rm -f "$idx"',
        ("  tip=$(GIT_AUTHOR_NAME=taskspace GIT_AUTHOR_EMAIL=taskspace@localhost "
         "GIT_COMMITTER_NAME=taskspace GIT_COMMITTER_EMAIL=taskspace@localhost "
         f'git commit-tree "$tree" -p HEAD -m {q(message)}) || exit 1'),
        "  dirty=1",
        "fi",
        'git update-ref refs/taskspace/rescue-tip "$tip" || exit 1',
        'echo "TIP $tip"',
        'echo "DIRTY $dirty"',
        f"rm -f {q(bundle)}",
        f"if out=$(git bundle create {q(bundle)} refs/taskspace/rescue-tip {scope} 2>&1); then",
        f"  echo {q('BUNDLE ' + bundle)}",
        'elif echo "$out" | grep -q "empty bundle"; then',
        "  echo 'BUNDLE none'",
        "else",
        '  echo "$out" >&2; exit 1',
        "fi",
    ]) + "\n"


def status_script(names: list[str]) -> str:
    """One line a repository: ``REPO <name> <branch> <changed files> <commits on no remote>``."""
    lines = []
    for name in names:
        lines.append(
            f"if cd {q(WORKSPACE + '/' + name)} 2>/dev/null && [ -e {q(CLONED_MARKER)} ]; then "
            f'echo "REPO {name} $(git branch --show-current || echo -) '
            '$(git status --porcelain --untracked-files=all | wc -l) '
            '$(git rev-list --count HEAD --not --remotes 2>/dev/null || echo 0)"; fi')
    return "\n".join(lines) + "\n"


def parse_repo_status(output: str) -> dict[str, tuple[str, int, int]]:
    """Repository name → (branch, changed files, unpushed commits)."""
    found = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] == "REPO" and parts[3].isdigit() and parts[4].isdigit():
            found[parts[1]] = (parts[2], int(parts[3]), int(parts[4]))
    return found
