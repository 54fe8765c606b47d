"""Usage analytics against a real server and a real workspace: launch, a command through the
API, stop, start and purge show up in the analytics API, its CSV and the CLI; an IDE server
process in the workspace's container marks it active."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import docker
import pytest
from typer.testing import CliRunner

from taskspace.cli.main import app
from taskspace.plugins.backends.docker import specs
from tests.integration.conftest import Stack

pytestmark = pytest.mark.docker


def cli(stack: Stack, *args: str) -> str:
    result = CliRunner().invoke(app, ["analytics", *args], env=stack.server.cli_env())
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.stdout + result.stderr
    return result.stdout


def usage_of(stack: Stack, key: str, **params: Any) -> dict[str, Any]:
    response = stack.api("GET", "/analytics/workspaces", params=params)
    assert response.status_code == 200, response.text
    [row] = [w for w in response.json() if w["ticket"] == key]
    return row


def instant(text: str | None) -> datetime:
    assert text is not None
    return datetime.fromisoformat(text)


def test_launch_exec_stop_start_purge_in_the_analytics_api_csv_and_cli(stack: Stack) -> None:
    key = stack.ticket("Measure the usage")
    launched = datetime.now(UTC)
    ws = stack.launch_ready(key)

    row = usage_of(stack, key)
    assert (row["state"], row["starts"], row["stops"]) == ("ready", 1, 0)
    assert row["first_opened_at"] is None and row["last_active_at"] is None, "nobody opened it yet"

    before = datetime.now(UTC) - timedelta(seconds=1)
    assert stack.exec(key, "true")[0] == 0
    after = datetime.now(UTC) + timedelta(seconds=1)
    stack.request(key, "stop", "stopped")
    stack.request(key, "start", "ready")
    assert stack.request(key, "purge", "purged")["state"] == "purged"

    period = {"since": (launched - timedelta(hours=1)).isoformat(),
              "until": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}
    row = usage_of(stack, key, **period)
    assert row["workspace_id"] == ws["id"] and row["project"] == stack.project and row["owner"] == "admin"
    assert (row["state"], row["starts"], row["stops"]) == ("purged", 2, 1)
    assert row["time_to_ready_seconds"] > 0
    assert before <= instant(row["first_opened_at"]) <= after, "set by the command"
    assert row["last_active_at"] == row["first_opened_at"]
    assert instant(row["requested_at"]) < instant(row["ready_at"]) < instant(row["purged_at"])
    assert 0 < row["active_hours"] < 1 and row["stopped_hours"] > 0
    [stopped] = row["stopped_intervals"]
    assert instant(stopped["start"]) < instant(stopped["end"]) <= instant(row["purged_at"])

    response = stack.api("GET", "/analytics/summary", params={**period, "group_by": "project"})
    assert response.status_code == 200, response.text
    [group] = [g for g in response.json()["groups"] if g["name"] == stack.project]
    assert (group["workspaces"], group["launched"], group["purged"], group["starts"], group["stops"]) == (
        1, 1, 1, 2, 1)
    assert group["time_to_ready_median"] == group["time_to_ready_mean"] == pytest.approx(row["time_to_ready_seconds"])

    response = stack.api("GET", "/analytics/workspaces.csv", params={**period, "project": stack.project})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    [csv_row] = list(csv.DictReader(io.StringIO(response.text)))
    assert (csv_row["ticket"], csv_row["starts"], csv_row["stops"], csv_row["state"]) == (key, "2", "1", "purged")

    # Errors a person can act on.
    for params, field in (({"since": "last tuesday"}, "since"), ({"until": "2025-02-30"}, "until"),
                          ({"since": "2023-01-01", "until": "2025-01-01"}, "since"), ({"group_by": "team"}, "group_by")):
        response = stack.api("GET", "/analytics/summary", params=params)
        assert response.status_code == 422, (params, response.text)
        error = response.json()["error"]
        assert error["field"] == field and error["message"], error

    table = cli(stack, "--since", period["since"][:10], "--project", stack.project)
    assert key in table and "purged" in table
    summary = cli(stack, "--group-by", "user", "--since", "1d")
    assert "admin" in summary and "total" in summary
    text = cli(stack, "--csv", "--since", "1d", "--project", stack.project)
    assert text.splitlines()[0].startswith("workspace,ticket,") and key in text
    text = cli(stack, "--csv", "--group-by", "project", "--since", "1d")
    assert stack.project in text


def test_an_attached_ide_marks_the_workspace_active(stack: Stack, docker_client: docker.DockerClient) -> None:
    key = stack.ticket("Work in VS Code")
    ws = stack.launch_ready(key)

    def check() -> dict[str, Any]:
        response = stack.api("POST", "/reconcile", params={"activity": "true"})
        assert response.status_code == 200, response.text
        return usage_of(stack, key)

    assert check()["last_active_at"] is None, "no IDE yet"

    # What VS Code's server looks like from the engine: a node process under ~/.vscode-server.
    # Started through the engine, not the API, so that no command marks the workspace first.
    container = docker_client.containers.get(specs.container_name(ws["id"]))
    container.exec_run(["bash", "-c", "exec -a /home/dev/.vscode-server/bin/abc/node sleep 300"], detach=True)
    deadline = time.monotonic() + 20
    row = check()
    while row["last_active_at"] is None and time.monotonic() < deadline:
        time.sleep(0.2)
        row = check()
    assert row["last_active_at"] is not None and row["first_opened_at"] == row["last_active_at"]
    assert datetime.now(UTC) - instant(row["last_active_at"]) < timedelta(minutes=1)
