"""One HTTP client per tracker instance, with the retry rules every tracker shares.

- 429, and 403 that carries rate-limit headers (GitHub's primary and secondary limits), wait
  ``Retry-After`` seconds or until the reset time, as long as the operation's wait budget
  (``max_wait_seconds``) allows; past it the call raises ``TrackerUnavailable`` at once
  instead of sleeping in vain.
- 5xx answers and connection failures are tried twice more after a short back-off.
- 401 and other 403 answers mean the credentials were refused; 404 that the configured
  project or URL is wrong. Both raise ``TrackerUnavailable`` with what to check.

Credentials travel only in headers set on the client. Messages name the tracker, its base URL
and the path, never a header; every configured secret is also scrubbed from any text a
tracker sends back before it reaches an error message.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from taskspace.plugins.trackers.base import TrackerUnavailable

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
#: Pauses before the second and third try of a request answered with 5xx or not answered.
RETRY_BACKOFF = (0.25, 0.5)
#: A rate-limited answer that says nothing about when to come back.
FALLBACK_RATE_LIMIT_WAIT = 5.0
#: "Retry-After: 0" still waits this long, so a tracker that keeps saying it cannot make the
#: budget last forever.
MIN_RATE_LIMIT_WAIT = 1.0
_MAX_ERROR_TEXT = 300


class WaitBudget:
    """Seconds an operation (one sync, one fetch) may spend waiting out rate limits."""

    def __init__(self, seconds: float):
        self.remaining = max(0.0, seconds)

    def take(self, seconds: float) -> bool:
        if seconds > self.remaining:
            return False
        self.remaining -= seconds
        return True


class TrackerHttp:
    """An ``httpx.AsyncClient`` made on first use, and the rules above around it.

    ``tracker`` is the name people know (``"Jira"``); ``credentials_hint`` says which config
    fields hold the credentials and what they need, for the message when they are refused;
    ``secrets`` are scrubbed from every message.
    """

    def __init__(self, *, tracker: str, base_url: str, headers: Mapping[str, str] | None = None,
                 auth: httpx.Auth | None = None, credentials_hint: str, secrets: Iterable[str] = (),
                 timeout: httpx.Timeout = DEFAULT_TIMEOUT):
        self.tracker = tracker
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers or {})
        self._auth = auth
        self._timeout = timeout
        self._credentials_hint = credentials_hint
        self._secrets = [s for s in secrets if s]
        self._client: httpx.AsyncClient | None = None
        origin = urlsplit(self.base_url)
        self._origin = (origin.scheme, origin.netloc)

    def _ensure_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.base_url, headers=self._headers, auth=self._auth,
                                             timeout=self._timeout, follow_redirects=False)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def same_origin(self, url: str) -> bool:
        """Whether ``url`` (a next-page link the tracker sent) points at the configured host, so
        following it cannot hand the credentials to anyone else."""
        parts = urlsplit(url)
        return (parts.scheme, parts.netloc) == self._origin

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def request(self, method: str, url: str, *, budget: WaitBudget, params: Any = None,
                      json_body: Any = None, accept_status: tuple[int, ...] = ()) -> httpx.Response:
        """The tracker's 2xx answer to ``method url`` (a path under the base URL, or a full URL on
        the same host), or one whose status is in ``accept_status``; TrackerUnavailable when there
        is none within the rules above."""
        if url.startswith(("http://", "https://")) and not self.same_origin(url):
            raise TrackerUnavailable(
                f"{self.tracker} sent a link to another host ({urlsplit(url).netloc}); taskspace does "
                f"not follow it with this tracker's credentials.",
                hint=f"Check that base URL {self.base_url} is the address {self.tracker} itself uses.")
        client = self._ensure_client()
        path = urlsplit(url).path or "/"
        failures = 0
        while True:
            try:
                response = await client.request(method, url, params=params, json=json_body)
            except httpx.TransportError as exc:
                if failures < len(RETRY_BACKOFF):
                    logger.warning("%s at %s: %s on %s %s; retrying", self.tracker, self.base_url,
                                   type(exc).__name__, method, path)
                    await asyncio.sleep(RETRY_BACKOFF[failures])
                    failures += 1
                    continue
                raise TrackerUnavailable(
                    f"Cannot reach {self.tracker} at {self.base_url} ({type(exc).__name__}"
                    f"{': ' + self.scrub(str(exc)) if str(exc) else ''}).",
                    hint="Check the base URL, DNS, proxy and firewall between taskspace and the tracker; "
                         "the next sync tries again.") from None
            if response.is_success or response.status_code in accept_status:
                return response
            wait = rate_limit_wait(response)
            if wait is not None:
                wait = max(wait, MIN_RATE_LIMIT_WAIT)
                if budget.take(wait):
                    logger.warning("%s at %s rate-limited %s %s (%d); waiting %.1f s", self.tracker,
                                   self.base_url, method, path, response.status_code, wait)
                    await asyncio.sleep(wait)
                    continue
                raise TrackerUnavailable(
                    f"{self.tracker} at {self.base_url} is rate limiting taskspace ({response.status_code}) "
                    f"and asks for a wait of {wait:.0f} s, more than the {budget.remaining:.0f} s left to "
                    f"wait in this sync.",
                    hint="The next sync tries again. If this repeats, give taskspace its own token (limits "
                         "are per token), sync less often, or raise max_wait_seconds.")
            if response.status_code >= 500:
                if failures < len(RETRY_BACKOFF):
                    logger.warning("%s at %s answered %d to %s %s; retrying", self.tracker, self.base_url,
                                   response.status_code, method, path)
                    await asyncio.sleep(RETRY_BACKOFF[failures])
                    failures += 1
                    continue
                raise TrackerUnavailable(
                    f"{self.tracker} at {self.base_url} answered {status_text(response)} to {method} {path}, "
                    f"{failures + 1} times in a row.",
                    hint=f"Check {self.tracker}'s status page and that the base URL points at the tracker, "
                         f"not at a proxy or login page; the next sync tries again.")
            raise self._refusal(response, method, path)

    def _refusal(self, response: httpx.Response, method: str, path: str) -> TrackerUnavailable:
        said = self.scrub(error_text(response))
        detail = f" It said: {said}" if said else ""
        if response.status_code in (401, 403):
            return TrackerUnavailable(
                f"{self.tracker} at {self.base_url} refused the credentials ({status_text(response)} to "
                f"{method} {path}).{detail}",
                hint=self._credentials_hint)
        if response.status_code == 404:
            return TrackerUnavailable(
                f"{self.tracker} at {self.base_url} has nothing at {path} (404), or hides it from these "
                f"credentials.{detail}",
                hint="Check the base URL and the project, group or repository in the tracker config, and "
                     "that the token can read it.")
        return TrackerUnavailable(
            f"{self.tracker} at {self.base_url} answered {status_text(response)} to {method} {path}.{detail}",
            hint="Check the tracker config (query, project, labels); the tracker's message says what it "
                 "did not accept.")

    def json_of(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise TrackerUnavailable(
                f"{self.tracker} at {self.base_url} answered {urlsplit(str(response.url)).path} with "
                f"something that is not JSON ({response.headers.get('content-type', 'no content type')}).",
                hint="Check that the base URL points at the tracker's API, not at a proxy or login page.",
            ) from None


def status_text(response: httpx.Response) -> str:
    return f"{response.status_code} {response.reason_phrase}".strip()


def error_text(response: httpx.Response) -> str:
    """What the tracker said about the failure, from the error shapes Jira, GitLab and GitHub
    use (``errorMessages``/``errors``, ``message``/``error``), cut short."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ""
    parts: list[str] = []
    if isinstance(body, dict):
        for key in ("errorMessages", "message", "error", "error_description", "errors"):
            value = body.get(key)
            if isinstance(value, str) and value:
                parts.append(value)
            elif isinstance(value, list):
                parts.extend(str(v) for v in value if v)
            elif isinstance(value, dict):
                parts.extend(f"{k}: {v}" for k, v in value.items())
    text = " ".join(parts)
    return text if len(text) <= _MAX_ERROR_TEXT else text[:_MAX_ERROR_TEXT] + "…"


def rate_limit_wait(response: httpx.Response, *, now: float | None = None) -> float | None:
    """Seconds to wait before asking again when ``response`` says "slow down"; None when it does
    not. 429 always does; 403 only with ``Retry-After`` or an exhausted
    ``x-ratelimit-remaining`` (otherwise it is a permission answer)."""
    headers = response.headers
    status = response.status_code
    exhausted = headers.get("x-ratelimit-remaining", "").strip() == "0"
    if not (status == 429 or (status == 403 and ("retry-after" in headers or exhausted))):
        return None
    now = time.time() if now is None else now
    retry_after = _seconds_from(headers.get("retry-after"), now)
    if retry_after is not None:
        return retry_after
    for name in ("x-ratelimit-reset", "ratelimit-reset"):
        reset = _reset_from(headers.get(name), now)
        if reset is not None:
            return reset
    return FALLBACK_RATE_LIMIT_WAIT


def _seconds_from(value: str | None, now: float) -> float | None:
    """``Retry-After``: delay seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _reset_from(value: str | None, now: float) -> float | None:
    """A reset time: epoch seconds (GitHub, GitLab) or an ISO timestamp (Jira Cloud)."""
    if not value:
        return None
    value = value.strip()
    try:
        number = float(value)
    except ValueError:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - now)
    # GitLab's RateLimit-Reset and GitHub's x-ratelimit-reset are epoch seconds; a small number
    # is a delay in seconds instead.
    return max(0.0, number - now) if number > 1_000_000_000 else max(0.0, number)


def check_base_url(url: str) -> str:
    """Config validation of a tracker's base URL: http(s), a host, no credentials, no query.
    Returned without a trailing slash."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host, e.g. https://example.atlassian.net")
    if parts.username or parts.password:
        raise ValueError("must not contain credentials; put them in the credential fields")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query string or fragment")
    return url.strip().rstrip("/")
