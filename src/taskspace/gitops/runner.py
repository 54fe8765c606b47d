"""Run git on the server with a credential that never reaches argv, a URL, a file or a log.

The secret travels in the environment of that one git process only and is handed to git by an
inline credential helper; the user's own git config (and any credential store in it) is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path

from taskspace.core.errors import GitError

_HELPER = (
    '!f() { test "$1" = get || exit 0; '
    'printf "username=%s\\npassword=%s\\n" "$TASKSPACE_GIT_USERNAME" "$TASKSPACE_GIT_PASSWORD"; }; f'
)


@dataclass(frozen=True)
class GitCredential:
    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"GitCredential(username={self.username!r}, password=***)"


@dataclass
class GitResult:
    returncode: int
    stdout: bytes
    stderr: str


def _base_env(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o ConnectTimeout=30",
        # Only these transports, whatever a URL or a config says (no ext::, fd:: or others).
        "GIT_ALLOW_PROTOCOL": "https:http:ssh:file",
    }


def redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


async def run_git(
    args: list[str],
    *,
    cwd: Path | None = None,
    credential: GitCredential | None = None,
    home: Path,
    stdin: bytes | None = None,
    timeout: float = 300,
    check: bool = True,
) -> GitResult:
    """Run ``git <args>``. With a credential, git gets it from the inline helper when a remote
    asks. Raises GitError (with a redacted, readable reason) when ``check`` and git fails."""
    env = _base_env(home)
    config = ["-c", "credential.helper=", "-c", "credential.interactive=never", "-c", "core.askPass="]
    if credential is not None:
        env["TASKSPACE_GIT_USERNAME"] = credential.username
        env["TASKSPACE_GIT_PASSWORD"] = credential.password
        config += ["-c", f"credential.helper={_HELPER}"]
    proc = await asyncio.create_subprocess_exec(
        "git", *config, *args,
        cwd=cwd, env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group: a timeout ends git's ssh too
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except (TimeoutError, asyncio.CancelledError) as exc:
        # Kill the group: an ssh left running would hold the pipes (and wait()) open.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        if isinstance(exc, TimeoutError):
            raise GitError(f"git {args[0]} did not finish within {timeout:.0f} seconds: the remote did not answer.",
                           hint="Check the URL and that the server can reach the git host.") from None
        raise
    secret = credential.password if credential else None
    result = GitResult(proc.returncode or 0, out, redact(err.decode(errors="replace"), secret))
    if check and result.returncode != 0:
        raise git_error(args[0], result.stderr)
    return result


def git_error(command: str, stderr: str) -> GitError:
    """The failure of ``git <command>`` with ``stderr``, explained, with what to do about it."""
    error = GitError(f"git {command} failed: {explain(stderr)}", hint=hint_for(stderr))
    if refused_by_remote(stderr):
        error.status_code = 422  # the input (URL, token, branch) is what is wrong, not this server
    return error


def refused_by_remote(stderr: str) -> bool:
    """Whether the remote answered no (credentials, access, no such repository or host), as
    opposed to not answering at all (connection, TLS, timeouts: upstream trouble)."""
    return any(pattern.search(stderr) for pattern, _ in _REASONS[:5])


_REASONS = [
    # First: a hook's own message may say "not allowed", which is not an access problem.
    (re.compile(r"pre-receive hook declined|protected branch|\[remote rejected\]", re.IGNORECASE),
     "the remote rejected the push"),
    (re.compile(r"Authentication failed|401|could not read Username|terminal prompts disabled", re.IGNORECASE),
     "the remote refused the credentials (authentication failed)"),
    (re.compile(r"\b403\b|permission denied|not allowed|access denied", re.IGNORECASE),
     "the credentials are valid but not allowed to do this (permission denied)"),
    (re.compile(r"not found|does not appear to be a git repository|\b404\b", re.IGNORECASE),
     "the repository was not found (or is hidden from these credentials)"),
    (re.compile(r"Could not resolve host|Name or service not known", re.IGNORECASE), "the host name does not resolve"),
    (re.compile(r"Connection refused|Failed to connect|Connection timed out|timed out", re.IGNORECASE),
     "the host could not be reached"),
    (re.compile(r"SSL|certificate", re.IGNORECASE), "the TLS connection failed (certificate problem)"),
]


def explain(stderr: str) -> str:
    """A plain-words reason from git's stderr, followed by git's own last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else "no output"
    for pattern, reason in _REASONS:
        if pattern.search(stderr):
            return f"{reason} ({last})"
    return last


def hint_for(stderr: str) -> str:
    """What to do about the failure ``explain`` describes (same order of checks)."""
    hints = [
        "Ask the repository's admins to allow the push, or push the work yourself.",
        "Check the token (taskspace token list) or add one for this host with 'taskspace token add'.",
        "Ask for access to the repository, or choose another token.",
        "Check the repository URL, and that your token can see the repository.",
    ]
    for (pattern, _), hint in zip(_REASONS, hints, strict=False):
        if pattern.search(stderr):
            return hint
    return "Check the URL and that the server can reach the git host."
