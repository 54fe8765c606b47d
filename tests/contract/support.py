"""Helpers of the contract tests, which run the tracker plugins against a local server that
replays the documented responses of Jira, GitLab and GitHub (services that cannot run here).
The payloads under ``payloads/`` are written from the trackers' API documentation."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from taskspace.core.errors import TaskspaceError

PAYLOADS = Path(__file__).parent / "payloads"


def payload(name: str) -> Any:
    """The JSON document ``payloads/<name>``."""
    return json.loads((PAYLOADS / name).read_text())


def payload_bytes(name: str) -> bytes:
    """The raw bytes of ``payloads/<name>``, as a webhook would deliver them."""
    return (PAYLOADS / name).read_bytes()


def closed_port_url() -> str:
    """A loopback URL where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def assert_no_secret(error: BaseException, *secrets: str) -> None:
    """Neither the message, the hint nor the text of ``error`` contains any of ``secrets``."""
    texts = [str(error), repr(error)]
    if isinstance(error, TaskspaceError):
        texts += [error.message, error.hint or "", str(error.to_dict())]
    for secret in secrets:
        assert all(secret not in text for text in texts), f"a credential leaked into {type(error).__name__}"
