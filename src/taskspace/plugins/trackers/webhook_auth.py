"""Checks every webhook delivery goes through before its body is read.

Secrets and signatures are compared with ``hmac.compare_digest`` (constant time). A delivery
whose tracker sent no delivery id gets the SHA-256 of its body as id, so a retried delivery —
the same bytes — is recognised as a repeat.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from taskspace.core.errors import InvalidInput
from taskspace.plugins.trackers.base import WebhookRejected

#: HMAC algorithms accepted in ``<algorithm>=<hex digest>`` signature headers.
_HMAC_ALGORITHMS = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


def lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names are case-insensitive; look them up lower-cased."""
    return {name.lower(): value for name, value in headers.items()}


def configured_secret(secret: SecretStr | None, *, tracker: str, hint: str) -> bytes:
    """The webhook secret as bytes; WebhookRejected when none is configured, since a delivery
    that cannot be verified is not trusted."""
    value = secret.get_secret_value() if secret is not None else ""
    if not value:
        raise WebhookRejected(
            f"This project's {tracker} tracker has no webhook_secret, so taskspace cannot verify "
            f"deliveries and accepts none.",
            hint=hint)
    return value.encode()


def verify_signature(body: bytes, secret: bytes, signature: str | None, *, header: str, tracker: str,
                     hint: str) -> None:
    """Check ``<algorithm>=<hex HMAC of the raw body>`` from ``header``."""
    if not signature:
        raise WebhookRejected(f"The {tracker} delivery has no {header} header; taskspace expects one "
                              f"signed with the webhook secret.", hint=hint)
    algorithm, _, digest = signature.strip().partition("=")
    hash_function = _HMAC_ALGORITHMS.get(algorithm.lower())
    if hash_function is None or not digest:
        raise WebhookRejected(f"The {tracker} delivery's {header} header is not '<algorithm>=<hex digest>' "
                              f"with sha256, sha384 or sha512.", hint=hint)
    expected = hmac.new(secret, body, hash_function).hexdigest()
    if not hmac.compare_digest(expected.encode(), digest.strip().lower().encode()):
        raise WebhookRejected(f"The {tracker} delivery's {header} signature does not match the body "
                              f"signed with the configured webhook secret.", hint=hint)


def verify_shared_secret(given: str | None, secret: bytes, *, where: str, tracker: str, hint: str) -> None:
    """Check a secret sent as is (GitLab's ``X-Gitlab-Token``, a URL query parameter)."""
    if not given:
        raise WebhookRejected(f"The {tracker} delivery has no {where}; taskspace expects the webhook "
                              f"secret there.", hint=hint)
    if not hmac.compare_digest(given.encode(), secret):
        raise WebhookRejected(f"The {tracker} delivery's {where} does not match the configured webhook "
                              f"secret.", hint=hint)


def delivery_id(given: str | None, body: bytes) -> str:
    """The tracker's delivery id, or the SHA-256 of the body when it sent none."""
    given = (given or "").strip()
    return given or "sha256:" + hashlib.sha256(body).hexdigest()


def json_object(body: bytes, *, tracker: str) -> dict[str, Any]:
    """The delivery's JSON object; InvalidInput when the body is something else."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidInput(f"The {tracker} webhook delivery is not valid JSON.",
                           hint=f"Check that the webhook in {tracker} sends JSON (application/json).") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"The {tracker} webhook delivery is JSON but not an object.",
                           hint=f"Check that the URL is registered as a {tracker} webhook.")
    return data
