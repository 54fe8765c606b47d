"""A remote's branches and tags over git's smart HTTP protocol, without a git process.

Every launch asks each of its repositories' remotes for their refs (its access check and its
base commits). ``git ls-remote`` spends more time starting (git, its HTTP helper, the
credential helper, and a first request that the remote refuses for want of credentials) than
the remote takes to answer. Here the request carries the credential from the start, the
connection is kept for the next launch, and several remotes are asked at once on the event
loop. It speaks protocol version 2 (``ls-refs`` with ref prefixes, gitprotocol-v2) and reads
the version 0 advertisement of servers that answer with it (gitprotocol-http).

What it cannot read (a dumb HTTP server, an answer that is not git's) it leaves to
``git ls-remote``: :meth:`SmartHttp.ls_refs` returns None. Failures are reported in the words
git uses, so that they are explained as git's are (:func:`taskspace.gitops.runner.git_error`).
Like the git processes of the server (see ``runner``), it uses no proxy from the environment
and checks TLS against the system's trust store."""

from __future__ import annotations

import asyncio
import ssl
from base64 import b64encode
from dataclasses import dataclass, field
from typing import Any

import httpx

from taskspace.core.errors import GitError
from taskspace.core.repo_url import RepoUrl
from taskspace.gitops.runner import GitCredential, git_error

ADVERTISEMENT = "application/x-git-upload-pack-advertisement"
RESULT = "application/x-git-upload-pack-result"
FLUSH, DELIM = b"0000", b"0001"
#: Refs are short lines; an answer this big is not one git would send for branches and tags.
MAX_ANSWER = 64 * 1024 * 1024


@dataclass
class Refs:
    """What the remote advertised: ref name → object id, and where HEAD points."""

    refs: dict[str, str] = field(default_factory=dict)
    head: str | None = None  # the ref HEAD points to, e.g. refs/heads/main


def pkt(line: str | bytes) -> bytes:
    data = line.encode() if isinstance(line, str) else line
    return b"%04x" % (len(data) + 4) + data


def read_pkts(data: bytes) -> list[bytes | None]:
    """The pkt-lines of ``data``; None for a flush, delimiter or end-of-response packet."""
    packets: list[bytes | None] = []
    at = 0
    while at < len(data):
        try:
            size = int(data[at:at + 4], 16)
        except ValueError:
            raise ValueError(f"not a pkt-line at byte {at}") from None
        if size < 4:
            packets.append(None)
            at += 4
            continue
        if at + size > len(data):
            raise ValueError(f"a pkt-line at byte {at} runs past the end")
        packets.append(data[at + 4:at + size])
        at += size
    return packets


def _text(packet: bytes) -> str:
    return packet.decode(errors="replace").rstrip("\n")


def _first(packets: list[bytes | None]) -> str:
    """The first packet's text; "" when there is none or it is a flush."""
    return _text(packets[0]) if packets and packets[0] is not None else ""


def parse_v0(packets: list[bytes | None]) -> Refs:
    """A version 0 advertisement: ``<oid> <ref>`` lines, capabilities after a NUL on the first
    (``symref=HEAD:<ref>`` among them); an empty repository advertises ``capabilities^{}``."""
    found = Refs()
    for index, packet in enumerate(packets):
        if packet is None:
            break
        line, _, capabilities = packet.partition(b"\0")
        if index == 0:
            for capability in _text(capabilities).split():
                if capability.startswith("symref=HEAD:"):
                    found.head = capability.removeprefix("symref=HEAD:")
        oid, _, ref = _text(line).partition(" ")
        if ref and ref != "capabilities^{}" and not ref.endswith("^{}"):
            found.refs[ref] = oid
    return found


def parse_ls_refs(packets: list[bytes | None]) -> Refs:
    """The answer to ``ls-refs``: ``<oid> <ref>[ symref-target:<ref>]`` lines up to a flush."""
    found = Refs()
    for packet in packets:
        if packet is None:
            break
        oid, _, rest = _text(packet).partition(" ")
        ref, *attributes = rest.split(" ")
        found.refs[ref] = oid
        for attribute in attributes:
            if ref == "HEAD" and attribute.startswith("symref-target:"):
                found.head = attribute.removeprefix("symref-target:")
    return found


class SmartHttp:
    """Kept connections to git hosts (one pool per event loop)."""

    def __init__(self, *, timeout: float = 60):
        self.timeout = timeout
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for stale in [other for other in self._clients if other.is_closed()]:
                del self._clients[stale]
            client = self._clients[loop] = httpx.AsyncClient(
                verify=ssl.create_default_context(), trust_env=False,
                timeout=httpx.Timeout(self.timeout, connect=30), headers={"User-Agent": "git/2 (taskspace)"})
        return client

    async def aclose(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    async def ls_refs(self, repo: RepoUrl, credential: GitCredential | None, *, tags: bool) -> Refs | None:
        """HEAD, the branches and (with ``tags``) the tags of ``repo``, an http(s) URL; None when
        the remote does not speak smart HTTP. Raises GitError as ``git ls-remote`` would fail."""
        headers = {"Git-Protocol": "version=2"}
        if credential is not None:
            pair = f"{credential.username}:{credential.password}".encode()
            headers["Authorization"] = "Basic " + b64encode(pair).decode()
        base = repo.url.rstrip("/")
        try:
            # Redirects are followed for this first request only, as git does; the client drops
            # the credential on a redirect to another host.
            answer, body = await self._send(repo, "GET", f"{base}/info/refs", params={"service": "git-upload-pack"},
                                            headers=headers, follow_redirects=True)
            if _type(answer) != ADVERTISEMENT:
                return None
            base = str(answer.url.copy_with(query=None)).removesuffix("/info/refs")
            packets = read_pkts(body)
            if _first(packets).startswith("# service="):
                packets = packets[2:]  # the service line and its flush
            version = _first(packets)
            if version != "version 2":
                return parse_v0(packets[1:] if version == "version 1" else packets)
            capabilities = [_text(p) for p in packets[1:] if p is not None]
            if not any(c.partition("=")[0] == "ls-refs" for c in capabilities):
                return None
            request = [pkt("command=ls-refs\n")]
            request += [pkt(c + "\n") for c in capabilities if c.startswith("object-format=")]
            request += [DELIM, pkt("symrefs\n"), pkt("ref-prefix HEAD\n"), pkt("ref-prefix refs/heads/\n")]
            request += [pkt("ref-prefix refs/tags/\n")] if tags else []
            request.append(FLUSH)
            answer, body = await self._send(
                repo, "POST", f"{base}/git-upload-pack", content=b"".join(request),
                headers={**headers, "Content-Type": "application/x-git-upload-pack-request", "Accept": RESULT})
            return parse_ls_refs(read_pkts(body)) if _type(answer) == RESULT else None
        except httpx.HTTPError as exc:
            raise git_error("ls-remote", f"fatal: unable to access '{repo.url}/': {_transport_reason(exc)}") from None
        except ValueError as exc:  # not git's pkt-lines
            raise git_error("ls-remote", f"fatal: the remote's answer is not git's protocol: {exc}") from None

    async def _send(self, repo: RepoUrl, method: str, url: str, **options: Any) -> tuple[httpx.Response, bytes]:
        """The answer and its body (at most :data:`MAX_ANSWER` bytes); GitError for an error status."""
        async with self._client().stream(method, url, **options) as answer:
            if answer.status_code >= 400:
                raise _refused(repo, answer.status_code)
            body = bytearray()
            async for chunk in answer.aiter_bytes():
                body += chunk
                if len(body) > MAX_ANSWER:
                    raise git_error("ls-remote", f"fatal: the answer of '{repo.url}/' is bigger than {MAX_ANSWER} bytes")
        return answer, bytes(body)


def _refused(repo: RepoUrl, status: int) -> GitError:
    """An error status of the remote, in the words git uses for it."""
    if status == 401:
        stderr = f"fatal: Authentication failed for '{repo.url}/'"
    elif status == 404:
        stderr = f"fatal: repository '{repo.url}/' not found"
    else:
        stderr = f"fatal: unable to access '{repo.url}/': The requested URL returned error: {status}"
    return git_error("ls-remote", stderr)


def _type(answer: httpx.Response) -> str:
    return answer.headers.get("content-type", "").split(";")[0].strip()


def _transport_reason(exc: httpx.HTTPError) -> str:
    """The failure in the words git (curl) uses for it, which ``explain`` knows."""
    if isinstance(exc, httpx.TimeoutException):
        return f"Connection timed out ({exc})"
    cause = exc.__cause__ or exc.__context__
    text = f"{exc} {cause or ''}"
    if isinstance(cause, ssl.SSLError) or "SSL" in text or "certificate" in text:
        return f"SSL certificate problem: {exc}"
    if "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text:
        return f"Could not resolve host: {exc}"
    if isinstance(exc, httpx.ConnectError):
        return f"Failed to connect: {exc}"
    return str(exc) or type(exc).__name__
