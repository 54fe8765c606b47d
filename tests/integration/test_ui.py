"""The pages in a real browser (Debian's Chromium driven by Playwright) against a real server
and engine: board → launch → live progress → terminal → workspace page → purge; untrusted
ticket text stays text; every page fits a phone and a laptop screen."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.integration.conftest import Stack

pytestmark = pytest.mark.docker

CHROMIUM = "/usr/bin/chromium"
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
OUTPUT = Path(os.environ.get("TASKSPACE_TEST_OUTPUT", Path(__file__).resolve().parents[2] / "test-output"))

#: Elements wider than the viewport, outside anything that scrolls or clips on purpose.
OVERFLOW_CHECK = """() => {
  const width = document.documentElement.clientWidth;
  const clipped = (el) => {
    for (let p = el.parentElement; p; p = p.parentElement) {
      const s = getComputedStyle(p);
      if (['auto', 'scroll', 'hidden', 'clip'].includes(s.overflowX)) return true;
    }
    return false;
  };
  const bad = [];
  if (document.documentElement.scrollWidth > width + 1) bad.push('document ' + document.documentElement.scrollWidth);
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width && r.right > width + 1 && !clipped(el) && getComputedStyle(el).position !== 'fixed') {
      bad.push(el.tagName.toLowerCase() + (el.className ? '.' + String(el.className).split(' ')[0] : '') + ' ' + Math.round(r.right));
    }
  }
  return bad.slice(0, 10);
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


def shoot(page: Page, name: str) -> None:
    """A screenshot at each size, and no element wider than the screen at either."""
    OUTPUT.joinpath("screenshots").mkdir(parents=True, exist_ok=True)
    original = page.viewport_size
    for size, (width, height) in SIZES.items():
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(150)
        page.screenshot(path=OUTPUT / "screenshots" / f"{name}-{size}.png", full_page=True)
        overflow = page.evaluate(OVERFLOW_CHECK)
        assert overflow == [], f"{name} at {width}px: elements wider than the screen: {overflow}"
    if original:
        page.set_viewport_size(original)


def sign_in(page: Page, stack: Stack) -> None:
    password = (stack.server.data_dir / "initial-admin-password").read_text().strip()
    page.goto(f"{stack.server.url}/login")
    shoot(page, "login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{stack.server.url}/")


def test_from_the_board_to_a_terminal_and_a_purge(stack: Stack, browser: Browser) -> None:
    key = stack.ticket("Make the checkout page faster")
    hostile = stack.ticket("<img src=x onerror=alert(1)>")
    long_title = stack.ticket("A very long title " + "with-a-word-that-does-not-break-anywhere-at-all" * 3)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    alerts: list[str] = []
    page.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.dismiss()))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    sign_in(page, stack)

    # Untrusted ticket text is text.
    card = page.locator(f"article[data-key='{hostile}']")
    assert card.locator(".title").inner_text() == "<img src=x onerror=alert(1)>"
    assert card.locator("img").count() == 0
    assert page.locator(f"article[data-key='{long_title}']").is_visible()
    shoot(page, "board")

    # Launch from the card: the dialog, then live progress to ready.
    page.locator(f"article[data-key='{key}'] button", has_text="Launch").click()
    dialog = page.locator("dialog.launch")
    dialog.wait_for()
    assert f"{key}-make-the-checkout-page-faster" in dialog.inner_text()
    assert dialog.locator(f"input[value='{stack.primary}'][type=checkbox]").is_checked()
    shoot(page, "launch")
    dialog.locator("button[type=submit]").click()
    page.wait_for_selector("#progress .ready", timeout=120_000)
    steps = page.locator("#progress .steps li").all_inner_texts()
    for name in ("preflight", "image", "clone", "services", "startup"):
        assert any(step.split()[1] == name and "✓" in step for step in steps), steps
    assert re.search(r"\d+\.\ds", " ".join(steps)), "each step says how long it took"
    shoot(page, "progress")

    # The workspace page: state, repositories, environment, timeline.
    page.locator("#progress a", has_text="Open my workspace").click()
    page.wait_for_url(f"{stack.server.url}/w/{key}")
    page.wait_for_selector("#repo-table .ok", timeout=20_000)
    body = page.inner_text("main")
    assert "ready" in body and stack.primary in body and stack.secondary in body and "clean, pushed" in body
    assert "ECHO_ADDR" in body, "ENV names are shown"
    assert stack.git_secret not in page.content()
    shoot(page, "workspace")

    # The terminal: a shell in /workspace.
    page.locator("a", has_text="Open terminal").click()
    page.wait_for_selector("#terminal-status:text('Connected')", timeout=20_000)
    page.locator(".xterm").click()
    page.keyboard.type("pwd\n")
    page.wait_for_function(
        "() => { const b = window.taskspaceTerminal.buffer.active; for (let i = 0; i < b.length; i++)"
        " { if (b.getLine(i).translateToString(true).trim() === '/workspace') return true; } return false; }",
        timeout=20_000)
    shoot(page, "terminal")

    # Profile and audit pages.
    page.goto(f"{stack.server.url}/me")
    assert "git" in page.inner_text("main") and "sha256:" in page.inner_text("main")
    shoot(page, "profile")
    page.goto(f"{stack.server.url}/admin/audit")
    assert "create_ticket" in page.inner_text("main")
    shoot(page, "audit")

    # Purge from the workspace page, after a confirmation that says what will be rescued.
    stack.sh(key, "echo wip > wip.txt")
    page.goto(f"{stack.server.url}/w/{key}")
    page.locator("button[data-open-dialog=purge-dialog]").click()
    confirm = page.locator("#purge-dialog")
    confirm.wait_for()
    page.wait_for_selector("#purge-dialog .repo-state", timeout=20_000)
    assert "will be rescued" in confirm.inner_text()
    shoot(page, "purge")
    confirm.locator("button[type=submit]").click()
    ws = stack.server.wait_for(key, {"purged", "purge_blocked"}, 60)
    assert ws["state"] == "purged"
    assert any(b.startswith(f"rescue/{key}-") for b in stack.git.branches(stack.primary))
    page.goto(f"{stack.server.url}/")
    assert page.locator(f"article[data-key='{key}'] button", has_text="Launch").is_visible()

    assert alerts == [], "no script from ticket text ran"
    assert errors == [], f"errors in the page's scripts: {errors}"


def test_a_long_column_shows_its_newest_cards_and_pages_on_its_own(stack: Stack, browser: Browser) -> None:
    keys = [stack.ticket(f"Ticket number {n} of a long backlog") for n in range(1, 24)]
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    sign_in(page, stack)

    column = page.locator("section.column[aria-label='To Do']")
    assert column.locator("article.ticket").count() == 20
    shown = column.locator("article.ticket").evaluate_all("cards => cards.map(c => c.dataset.key)")
    assert shown == keys[::-1][:20], "the most recently updated first"
    more = column.locator("a.more")
    assert more.inner_text().startswith("3 more in To Do")

    more.click()
    page.wait_for_url(re.compile(r".*status=To\+Do.*"))
    assert page.locator("article.ticket").count() == 23
    assert page.locator("section.column").count() == 1
    shoot(page, "board-column")
    page.locator("a", has_text="All columns").click()
    page.wait_for_url(f"{stack.server.url}/")
