"""The JupyterLab sidebar in a real browser: Debian's chromium driven by Playwright against a
real ``jupyter lab`` (its own process, loopback) with the extension installed by the package.

In light and dark theme: the panel's sidebar tab opens it, a schedule made through REST is
listed, activated with its toggle, run now — the run row reaches ``completed`` and its block log
opens —, paused, and a server error (the schedule deleted behind the panel's back) is shown and
dismissed. Screenshots of each step are saved under ``$TMPDIR/mage-nb-sched-ui/``.

Needs ``/usr/bin/chromium`` (``.ci/run`` installs it with apt); without it the test is skipped
with that reason, and fails instead under ``$MAGE_NB_SCHED_REQUIRE_BROWSER`` (CI).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import write_notebook
from live_server import LiveServer, live_server

CHROMIUM = Path("/usr/bin/chromium")
REQUIRE_ENV = "MAGE_NB_SCHED_REQUIRE_BROWSER"
SKIP_REASON = (
    f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it "
    f"and sets {REQUIRE_ENV}=1)"
)
ARTIFACTS = Path(tempfile.gettempdir()) / "mage-nb-sched-ui"
#: Generous: a cold JupyterLab page in a shared 2-core machine.
PAGE_TIMEOUT_MS = 90_000


def browser_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() not in {"", "0", "false", "no"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    if not CHROMIUM.exists():
        if browser_required():
            pytest.fail(SKIP_REASON, pytrace=False)
        pytest.skip(SKIP_REASON)
    base = tmp_path_factory.mktemp("lab")
    root = base / "project"
    write_notebook(root / "hello.ipynb", ["print('hello from the panel test')"])
    # Settings, workspaces and config of this lab only: a theme chosen here does not leak.
    env = {
        "JUPYTER_CONFIG_DIR": str(base / "config"),
        "JUPYTERLAB_SETTINGS_DIR": str(base / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
    }
    with live_server(root, app="jupyterlab", env=env) as server:
        server.settings_dir = base / "settings"
        yield server


def call(server: LiveServer, method: str, path: str, body: object = None) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{server.api}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={**server.headers, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        text = answer.read()
    return dict(json.loads(text)) if text else {}


@pytest.mark.kernel
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_panel_lists_toggles_runs_and_shows_errors(lab: LiveServer, theme: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    shots = ARTIFACTS / theme
    shots.mkdir(parents=True, exist_ok=True)
    created = call(
        lab,
        "POST",
        "pipeline_schedules",
        {
            "pipeline_schedule": {
                "name": f"panel {theme}",
                "pipeline_uuid": "hello",
                "schedule_interval": "0 6 * * *",
                "settings": {"timezone": "Europe/Paris"},
            }
        },
    )
    schedule_id = created["pipeline_schedule"]["id"]
    # The theme comes from the user settings the page loads (deterministic, unlike typing into
    # the command palette before the shell has focus).
    assert lab.settings_dir is not None
    themes = lab.settings_dir / "@jupyterlab" / "apputils-extension" / "themes.jupyterlab-settings"
    themes.parent.mkdir(parents=True, exist_ok=True)
    themes.write_text(json.dumps({"theme": f"JupyterLab {theme.title()}"}), "utf-8")
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{lab.url}lab/tree/hello.ipynb?token={lab.token}&reset")
            page.wait_for_selector(".jp-NotebookPanel")

            wanted = f"JupyterLab {theme.title()}"
            expect(page.locator("body")).to_have_attribute("data-jp-theme-name", wanted)
            # The panel's tab is in the left sidebar from the start.
            page.locator('.lm-TabBar-tab[data-id="mage-nb-sched-panel"]').click()
            panel = page.locator("#mage-nb-sched-panel")
            row = panel.locator(f'[data-schedule-id="{schedule_id}"]')
            expect(row).to_be_visible()
            expect(row).to_have_attribute("data-status", "inactive")
            expect(row).to_contain_text("0 6 * * *")
            page.screenshot(path=str(shots / "1-schedules.png"))

            row.locator('[data-action="toggle"]').click()
            expect(row).to_have_attribute("data-status", "active")
            stored = call(lab, "GET", f"pipeline_schedules/{schedule_id}")["pipeline_schedule"]
            assert stored["status"] == "active"

            row.locator('[data-action="run-now"]').click()
            run = panel.locator("[data-run-id]").first
            expect(run).to_contain_text(re.compile("completed|failed"))
            expect(run).to_contain_text("completed")
            run_id = int(run.get_attribute("data-run-id") or 0)
            assert call(lab, "GET", f"pipeline_runs/{run_id}")["pipeline_run"]["status"] == (
                "completed"
            )
            if run.get_attribute("aria-expanded") != "true":
                run.click()
            expect(panel.locator(".jp-MageNbSched-block").first).to_be_visible()
            panel.locator(".jp-MageNbSched-block button").first.click()
            expect(panel.locator(".jp-MageNbSched-log")).to_contain_text(
                "hello from the panel test"
            )
            page.screenshot(path=str(shots / "2-run.png"))

            row.locator('[data-action="toggle"]').click()
            expect(row).to_have_attribute("data-status", "inactive")
            page.screenshot(path=str(shots / "3-paused.png"))

            # The server's error reaches the panel: the schedule is deleted behind its back.
            call(lab, "DELETE", f"pipeline_schedules/{schedule_id}")
            row.locator('[data-action="toggle"]').click()
            expect(panel.locator(".jp-MageNbSched-error")).to_contain_text("no such schedule")
            page.screenshot(path=str(shots / "4-error.png"))
            panel.get_by_label("Dismiss error").click()
            expect(panel.locator(".jp-MageNbSched-error")).to_have_count(0)
        finally:
            browser.close()
    ours = [error for error in errors if "mage" in error.lower() or "schedul" in error.lower()]
    assert not ours, ours
