"""The dashboard, its CSV export and /metrics against a real server with a real running
workspace: samples taken on request, what an admin, a reviewer and a developer see, and the page
in Chromium at phone and laptop widths."""

from __future__ import annotations

import csv
import io
import json
import re
import time

import httpx
import pytest
from playwright.sync_api import sync_playwright

from tests.integration.conftest import Stack
from tests.integration.test_ui import CHROMIUM, OUTPUT, OVERFLOW_CHECK, SIZES

pytestmark = pytest.mark.docker
TITLE = '=SUM(1,2) <b>bold</b> & "quoted"'
DATA = re.compile(r'<script type="application/json" id="dashboard-data">(.*?)</script>', re.DOTALL)


def sign_in(stack: Stack, username: str, password: str) -> httpx.Client:
    """A browser session through the sign-in form, as served."""
    client = httpx.Client(base_url=stack.server.url, follow_redirects=False, timeout=30)
    page = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    response = client.post("/login", data={"username": username, "password": password, "login_token": token,
                                           "next": "/"})
    assert response.status_code == 303, response.text
    return client


def admin_password(stack: Stack) -> str:
    return (stack.server.data_dir / "initial-admin-password").read_text().strip()


def add_user(stack: Stack, username: str, role: str) -> httpx.Client:
    password = f"{username}-password-1"
    response = stack.api("POST", "/users", json={"username": username, "password": password, "role": role})
    assert response.status_code == 201, response.text
    return sign_in(stack, username, password)


def metric_lines(text: str, name: str, key: str) -> list[float]:
    return [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(name + "{") and f'ticket="{key}"' in line]


def test_a_running_workspace_on_the_dashboard_the_csv_and_metrics(stack: Stack) -> None:
    key = stack.ticket(TITLE)
    ws = stack.launch_ready(key)
    for _ in range(2):  # the CPU use of a workspace needs two samples
        response = stack.api("POST", "/reconcile", params={"sample": "true"})
        assert response.status_code == 200, response.text
        time.sleep(1)

    # The admin's page: everyone's workspaces, ticket text escaped, chart data as inert JSON.
    admin = sign_in(stack, "admin", admin_password(stack))
    page = admin.get("/dashboard")
    assert page.status_code == 200 and "Everyone&#39;s workspaces" in page.text
    assert key in page.text and "<b>bold</b>" not in page.text and "&lt;b&gt;bold&lt;/b&gt;" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.DOTALL)
    assert all("src=" in attrs or 'type="application/json"' in attrs for attrs, _ in scripts), "no inline script"
    data = json.loads(DATA.search(page.text).group(1))  # type: ignore[union-attr]
    assert len(data["running"][0]) >= 2 and data["running"][1][-1] == 1
    assert data["ready"][1] == [round(ws["ready_seconds"], 2)]
    for asset in ("dashboard.js", "vendor/uplot-1.6.32.min.js", "vendor/uplot-1.6.32.min.css"):
        asset = f"/static/{asset}"
        assert admin.get(asset).status_code == 200, asset

    # The CSV: the same row, with non-zero memory, a CPU reading, and the title defused.
    export = admin.get("/dashboard.csv")
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    [row] = [r for r in csv.DictReader(io.StringIO(export.text)) if r["ticket"] == key]
    assert int(row["memory_bytes"]) > 0 and row["cpu_percent"] != "" and row["workspace"] == ws["id"]
    assert row["title"] == "'" + TITLE and row["owner"] == "admin"

    # /metrics with the admin's API token (what Prometheus sends).
    metrics = httpx.get(f"{stack.server.url}/metrics", headers={"Authorization": f"Bearer {stack.server.token}"})
    assert metrics.status_code == 200, metrics.text
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'taskspace_workspaces{state="ready"} 1' in metrics.text.splitlines()
    [memory] = metric_lines(metrics.text, "taskspace_workspace_memory_bytes", key)
    assert memory > 0
    assert len(metric_lines(metrics.text, "taskspace_workspace_cpu_percent", key)) == 1
    assert "taskspace_time_to_ready_seconds_count 1" in metrics.text.splitlines()

    # A reviewer reads /metrics with a browser session; a developer may not, and sees only theirs.
    assert add_user(stack, "rita", "reviewer").get("/metrics").status_code == 200
    devon = add_user(stack, "devon", "developer")
    refused = devon.get("/metrics")
    assert refused.status_code == 403 and "reviewers and admins" in refused.json()["error"]["message"]
    assert httpx.get(f"{stack.server.url}/metrics").status_code == 401
    mine = devon.get("/dashboard")
    assert mine.status_code == 200 and "Your workspaces" in mine.text
    assert key not in mine.text and ws["id"] not in mine.text
    assert json.loads(DATA.search(mine.text).group(1))["running"] == [[], []]  # type: ignore[union-attr]
    assert devon.get("/dashboard.csv").text.splitlines()[1:] == []
    signed_out = httpx.get(f"{stack.server.url}/dashboard", follow_redirects=False)
    assert signed_out.status_code == 303 and signed_out.headers["location"].startswith("/login")

    # In Chromium: both charts drawn, no script error, nothing wider than a phone's screen.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            tab.on("pageerror", lambda error: errors.append(str(error)))
            tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            tab.goto(f"{stack.server.url}/login")
            tab.fill("input[name=username]", "admin")
            tab.fill("input[name=password]", admin_password(stack))
            tab.click("button[type=submit]")
            tab.wait_for_url(f"{stack.server.url}/")
            tab.goto(f"{stack.server.url}/dashboard")
            tab.wait_for_selector("#chart-running canvas")
            assert tab.locator("#chart-ready canvas").count() == 1
            assert tab.locator(".dash-table td .muted").first.inner_text() == TITLE
            OUTPUT.joinpath("screenshots").mkdir(parents=True, exist_ok=True)
            for size, (width, height) in SIZES.items():
                tab.set_viewport_size({"width": width, "height": height})
                tab.wait_for_timeout(200)
                tab.screenshot(path=OUTPUT / "screenshots" / f"dashboard-{size}.png", full_page=True)
                assert tab.evaluate(OVERFLOW_CHECK) == [], f"dashboard at {width}px is wider than the screen"
                chart = tab.locator("#chart-running .uplot").bounding_box()
                assert chart is not None and chart["width"] <= width, "the charts follow the width"
            assert errors == [], errors
        finally:
            browser.close()
