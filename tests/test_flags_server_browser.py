"""The console in a real browser: Debian's chromium driven by Playwright (no browser download)
against `polyshift serve` running under uvicorn. Screenshots go to tests/artifacts/console/
(POLYSHIFT_TEST_ARTIFACTS overrides the folder). Skipped where chromium is not installed
(`apt-get install chromium`)."""

from __future__ import annotations

import io
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polyshift.feature_flags.admin import Change
from tests import flag_service
from tests.conftest import REPO
from tests.flag_service import PASSWORD, LiveServer

live = flag_service.live  # the fixture

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("POLYSHIFT_TEST_ARTIFACTS", REPO / "tests" / "artifacts")) / "console"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")]


def add_user(server: LiveServer, name: str, role: str) -> None:
    saved = sys.stdin
    sys.stdin = io.StringIO(PASSWORD + "\n")
    try:
        result = server.project.run("users", "add", name, "--role", role, "--password-stdin")
    finally:
        sys.stdin = saved
    assert result.exit_code == 0, result.output


@pytest.fixture
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, server: LiveServer, user: str) -> None:
    page.goto(f"{server.url}/flags")
    assert "/login" in page.url
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/flags")


def test_an_editor_raises_a_percentage_kills_with_a_reason_and_sees_it_audited(live: LiveServer, browser: Any) -> None:
    admin = live.project.admin()
    admin.change("checkout_v2", Change(enabled=True, percent=10, description="New checkout flow", owner="payments"),
                 reason="canary", create=True)
    admin.change("search_v3", Change(enabled=True, percent=100, owner="discovery"), reason="launched", create=True)
    add_user(live, "alice", "editor")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, live, "alice")
    assert page.locator('tr[data-flag="checkout_v2"]').inner_text().count("on 10%") == 1
    shot(page, "1-flags")

    page.click("text=checkout_v2")
    form = page.locator("#form-percent")
    form.locator("input[name=percent]").fill("25")
    form.locator("input[name=reason]").fill("canary healthy for an hour")
    form.locator("button").click()
    page.wait_for_selector("#notice")
    assert page.locator("#percent").inner_text() == "25%"
    shot(page, "2-percentage-raised")

    kill = page.locator("#form-kill")
    kill.locator("input[name=reason]").fill("checkout 5xx above 2%")
    kill.locator("button").click()  # the confirmation box is required: the browser refuses to submit
    assert page.locator("#state").inner_text() == "on 25%"
    kill.locator("input[name=confirm]").check()
    kill.locator("button").click()
    page.wait_for_selector("#notice")
    assert page.locator("#state").inner_text() == "KILLED"
    history = page.locator("#history").inner_text()
    assert "checkout 5xx above 2%" in history and "alice" in history and "killed: False → True" in history
    shot(page, "3-killed-with-reason")
    flag = admin.store.get("checkout_v2")
    assert flag is not None and flag.killed and flag.percent == 25 and flag.updated_by == "alice"


def test_a_viewer_sees_no_write_controls_and_a_cli_kill_shows_up(live: LiveServer, browser: Any) -> None:
    admin = live.project.admin()
    admin.change("checkout_v2", Change(enabled=True, percent=40), reason="ramp", create=True)
    add_user(live, "vera", "viewer")
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    sign_in(page, live, "vera")
    assert page.locator("#create-flag").count() == 0
    page.click("text=checkout_v2")
    assert page.locator("#controls").count() == 0 and page.locator("form.card").count() == 0
    shot(page, "4-viewer-read-only")

    assert live.project.run("flags", "kill", "checkout_v2", "--reason", "pager: error budget burnt").exit_code == 0
    page.goto(f"{live.url}/flags")
    assert "KILLED" in page.locator('tr[data-flag="checkout_v2"]').inner_text()
    page.goto(f"{live.url}/audit")
    assert "pager: error budget burnt" in page.locator("#history").inner_text()
    shot(page, "5-audit-log")
