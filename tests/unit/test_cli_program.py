"""The ``taskspace`` program as a process: it ends without the interpreter's teardown, so what
it wrote must still arrive in full, and its exit code must be the command's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

LOG = "".join(f"line {n} of the startup log\n" for n in range(20_000))  # far more than a pipe holds
WORKSPACE = {"key": "WEB-1", "id": "0123456789ab", "state": "ready", "branch": "WEB-1-login"}


class Answers(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.endswith("/logs/startup"):
            status, body, kind = 200, LOG.encode(), "text/plain; charset=utf-8"
        elif self.path.endswith("/workspaces/WEB-1"):
            status, body, kind = 200, json.dumps(WORKSPACE).encode(), "application/json"
        else:
            status, body, kind = 404, b'{"error": {"message": "No workspace NOPE-1.", "hint": "See the board."}}', \
                "application/json"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def taskspace(*args: str, url: str = "http://127.0.0.1:9") -> subprocess.CompletedProcess[str]:
    # Buffered output, as a pipe gets by default.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKSPACE_") and k != "PYTHONUNBUFFERED"}
    return subprocess.run([sys.executable, "-m", "taskspace", *args], capture_output=True, text=True, timeout=60,
                          env={**env, "TASKSPACE_URL": url, "TASKSPACE_TOKEN": "t"}, check=False)


def test_what_a_command_writes_arrives_in_full(server_url: str) -> None:
    done = taskspace("ws", "logs", "WEB-1", url=server_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout == LOG

    done = taskspace("ws", "show", "WEB-1", "--json", url=server_url)  # a few bytes, still buffered at the end
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == WORKSPACE


def test_a_failed_command_says_why_and_exits_1(server_url: str) -> None:
    done = taskspace("ws", "show", "NOPE-1", url=server_url)
    assert done.returncode == 1
    assert "No workspace NOPE-1." in done.stderr and "See the board." in done.stderr
    assert done.stdout == ""


def test_a_server_that_does_not_answer_is_named() -> None:
    done = taskspace("ws", "list")
    assert done.returncode == 1
    assert "Cannot reach the taskspace server at http://127.0.0.1:9" in done.stderr


def test_a_mistyped_command_exits_2_with_its_usage() -> None:
    done = taskspace("ws", "lanch", "WEB-1")
    assert done.returncode == 2
    assert "No such command 'lanch'" in done.stderr


def test_help_is_printed_and_exits_0() -> None:
    done = taskspace("ws", "--help")
    assert done.returncode == 0, done.stderr
    assert "launch" in done.stdout and "Workspaces." in done.stdout
