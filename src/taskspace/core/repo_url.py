"""Repository URL validation.

Accepted: ``https://``, ``ssh://`` and scp-like ``user@host:path``; plain ``http://`` only for
loopback hosts and hosts an admin lists; ``file://`` only under roots an admin lists (the local
demo). Never: git remote helpers (``ext::``, ``fd::``), credentials in the URL, anything git
could read as an option, ``git://`` (unauthenticated and unencrypted).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from taskspace.core.errors import InvalidInput
from taskspace.core.naming import REPO_NAME_RE

MAX_URL_LENGTH = 2048
_HELPER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_SCP_RE = re.compile(r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9.-]+):(?P<path>[^/].*|/.*)$")
_HOST_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
_HINT = "Use an https:// or ssh:// URL, e.g. https://git.example.com/team/api.git."


@dataclass(frozen=True)
class RepoUrlPolicy:
    """What an installation accepts. Loopback hosts may always use plain http."""

    allowed_hosts: tuple[str, ...] | None = None
    http_hosts: tuple[str, ...] = ()
    file_roots: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class RepoUrl:
    url: str
    scheme: str  # https | http | ssh | file
    host: str  # lower-case host name or address; "" for file
    port: int | None
    path: str

    @property
    def host_port(self) -> str:
        """``host`` or ``host:port`` as written in URLs (``[::1]:8080``): what a git token is
        matched against."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port else host

    @property
    def name(self) -> str:
        """The directory name the repository gets under /workspace."""
        last = PurePosixPath(self.path.rstrip("/")).name
        return last.removesuffix(".git")

    @property
    def uses_token(self) -> bool:
        return self.scheme in {"https", "http"}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _invalid(raw: str, why: str, hint: str = _HINT) -> InvalidInput:
    shown = raw if len(raw) <= 120 else raw[:117] + "..."
    return InvalidInput(f"Repository URL {shown!r} is not accepted: {why}.", hint=hint, field="url")


def _check_host(raw: str, host: str, policy: RepoUrlPolicy) -> None:
    if not host:
        raise _invalid(raw, "it has no host")
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        if not _HOST_RE.match(host):
            raise _invalid(raw, f"{host!r} is not a valid host name") from None
    if policy.allowed_hosts is not None and host not in policy.allowed_hosts:
        allowed = ", ".join(policy.allowed_hosts) or "none"
        raise _invalid(raw, f"host {host!r} is not in the allowed list ({allowed})",
                       "Ask an admin to add the host to TASKSPACE_ALLOWED_GIT_HOSTS.")


def _check_path(raw: str, path: str) -> str:
    path = path.rstrip("/")
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise _invalid(raw, "it names no repository")
    if any(p in {".", ".."} for p in parts):
        raise _invalid(raw, "its path contains '.' or '..'")
    if any(p.startswith("-") for p in parts):
        raise _invalid(raw, "a path component starts with '-', which git could read as an option")
    name = parts[-1].removesuffix(".git")
    if not REPO_NAME_RE.match(name):
        raise _invalid(raw, f"its last path component {parts[-1]!r} cannot be a directory name")
    return path


def parse_repo_url(raw: str, policy: RepoUrlPolicy | None = None) -> RepoUrl:
    """Validate ``raw`` and return its parts; raise :class:`InvalidInput` saying why not."""
    policy = policy or RepoUrlPolicy()
    if not isinstance(raw, str) or not raw.strip():
        raise _invalid(str(raw), "it is empty")
    # The most telling reason first: a remote helper or an option is an attack, not a typo.
    if _HELPER_RE.match(raw):
        raise _invalid(raw, "git remote helpers (such as ext:: or fd::) can run commands")
    if raw.startswith("-"):
        raise _invalid(raw, "it starts with '-', which git would read as an option")
    if raw != raw.strip() or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in raw):
        raise _invalid(raw, "it contains spaces or control characters")
    if len(raw) > MAX_URL_LENGTH:
        raise _invalid(raw, f"it is longer than {MAX_URL_LENGTH} characters")

    if "://" not in raw:
        scp = _SCP_RE.match(raw)
        if not scp:
            raise _invalid(raw, "it is not a URL")
        if (scp.group("user") or "").startswith("-") or scp.group("host").startswith("-"):
            raise _invalid(raw, "its user or host starts with '-', which ssh would read as an option")
        host = scp.group("host").lower()
        _check_host(raw, host, policy)
        path = _check_path(raw, scp.group("path"))
        return RepoUrl(url=raw, scheme="ssh", host=host, port=None, path=path)

    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise _invalid(raw, f"it cannot be parsed ({exc})") from None
    scheme = parts.scheme.lower()
    if parts.query or parts.fragment:
        raise _invalid(raw, "it has a query string or fragment")

    if scheme == "file":
        if parts.netloc not in {"", "localhost"}:
            raise _invalid(raw, "a file:// URL cannot name a host")
        path = _check_path(raw, parts.path)
        if not any(PurePosixPath(path).is_relative_to(root) for root in policy.file_roots):
            raise _invalid(raw, "file:// repositories are not enabled for this path",
                           "Serve the repository over https, or ask an admin to list its folder "
                           "in TASKSPACE_ALLOWED_FILE_ROOTS.")
        return RepoUrl(url=f"file://{path}", scheme="file", host="", port=None, path=path)

    if scheme == "git":
        raise _invalid(raw, "git:// is unauthenticated and unencrypted")
    if scheme not in {"https", "http", "ssh", "git+ssh", "ssh+git"}:
        raise _invalid(raw, f"the scheme {scheme!r} is not supported")
    host = (parts.hostname or "").lower()
    if scheme in {"https", "http"} and (parts.username is not None or parts.password is not None):
        raise _invalid(raw, "it contains credentials",
                       "Remove them from the URL and add a token with 'taskspace token add'.")
    if scheme in {"ssh", "git+ssh", "ssh+git"} and parts.password is not None:
        raise _invalid(raw, "it contains a password")
    if (parts.username or "").startswith("-"):
        raise _invalid(raw, "its user starts with '-', which ssh would read as an option")
    _check_host(raw, host, policy)
    if scheme == "http" and not is_loopback(host) and host not in policy.http_hosts:
        raise _invalid(raw, "plain http sends tokens unencrypted",
                       "Use https, or ask an admin to list this internal host in TASKSPACE_ALLOWED_HTTP_HOSTS.")
    path = _check_path(raw, parts.path)
    scheme = "ssh" if "ssh" in scheme else scheme
    netloc = parts.netloc.lower() if scheme != "ssh" else parts.netloc
    return RepoUrl(url=f"{scheme}://{netloc}{path}", scheme=scheme, host=host, port=port, path=path)
