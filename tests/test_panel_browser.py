"""The JupyterLab sidebar in a real browser: Debian's chromium driven by Playwright against a
real ``jupyter lab`` (its own process, loopback) with the extension installed by the package.

In light and dark theme: the panel's sidebar tab opens it, a schedule made through REST is
listed, activated with its toggle, run now — the run row reaches ``completed`` and its block log
opens —, paused, and a server error (the schedule deleted behind the panel's back) is shown and
dismissed. Screenshots of each step are saved under :data:`ARTIFACTS`.

Needs ``/usr/bin/chromium`` (``.ci/run`` installs it with apt); without it the test is skipped
with that reason, and fails instead under ``$MAGE_NB_SCHED_REQUIRE_BROWSER`` (CI).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import urllib.parse
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
#: Screenshots of every step: ``$MAGE_NB_SCHED_UI_ARTIFACTS`` (``.ci/run`` sets it to the clone's
#: ``test-artifacts/ui``), else ``$TMPDIR/mage-nb-sched-ui``.
ARTIFACTS = Path(
    os.environ.get("MAGE_NB_SCHED_UI_ARTIFACTS") or Path(tempfile.gettempdir()) / "mage-nb-sched-ui"
)
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
    # No "official Jupyter news?" toast over the panel's own.
    news = (
        base
        / "settings"
        / "@jupyterlab"
        / "apputils-extension"
        / "notification.jupyterlab-settings"
    )
    news.parent.mkdir(parents=True, exist_ok=True)
    news.write_text(json.dumps({"fetchNews": "false"}), "utf-8")
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

    expect.set_options(timeout=PAGE_TIMEOUT_MS)
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
            action_error = panel.locator('.jp-MageNbSched-error[data-error-kind="action"]')
            expect(action_error).to_contain_text("no such schedule")
            # The schedule being gone is no failure to refresh (the panel drops its row).
            expect(panel.locator('[data-error-kind="connection"]')).to_have_count(0)
            expect(row).to_have_count(0)
            page.screenshot(path=str(shots / "4-error.png"))
            panel.get_by_label("Dismiss error").click()
            expect(panel.locator(".jp-MageNbSched-error")).to_have_count(0)
        finally:
            browser.close()
    ours = [error for error in errors if "mage" in error.lower() or "schedul" in error.lower()]
    assert not ours, ours


def _open_lab(
    playwright: Any, lab: LiveServer, theme: str, notebook: str, errors: list[str]
) -> Any:
    """A page of the lab in ``theme`` with ``notebook`` open and the panel shown."""
    from playwright.sync_api import expect

    assert lab.settings_dir is not None
    themes = lab.settings_dir / "@jupyterlab" / "apputils-extension" / "themes.jupyterlab-settings"
    themes.parent.mkdir(parents=True, exist_ok=True)
    themes.write_text(json.dumps({"theme": f"JupyterLab {theme.title()}"}), "utf-8")
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-dev-shm-usage"]
    )
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    origin = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(lab.url))
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=origin)
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{lab.url}lab/tree/{notebook}?token={lab.token}&reset")
    page.wait_for_selector(".jp-NotebookPanel")
    expect(page.locator("body")).to_have_attribute(
        "data-jp-theme-name", f"JupyterLab {theme.title()}"
    )
    return browser, page


@pytest.mark.kernel
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_a_new_user_schedules_runs_debugs_and_backfills_a_notebook(
    lab: LiveServer, theme: str
) -> None:
    """Everything from the notebook's own toolbar: create a schedule in the form (a server
    error shown under its field first), run it and open the executed notebook, pause and resume,
    a failing run's traceback and toast, a backfill to the end, and the notebook's context menu
    running it on its own."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=PAGE_TIMEOUT_MS)
    shots = ARTIFACTS / theme / "flows"
    shots.mkdir(parents=True, exist_ok=True)
    name = f"flow_{theme}"
    write_notebook(
        lab.root / f"{name}.ipynb",
        [
            "print('flow step one', 6 * 7)",
            "if mage_nb_sched_variables.get('explode'):\n"
            "    raise ValueError('exploded on purpose')",
        ],
    )
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser, page = _open_lab(playwright, lab, theme, f"{name}.ipynb", errors)
        try:
            # 1. The notebook toolbar's button opens the panel with the create form.
            page.locator('[data-command="mage-nb-sched:schedule-notebook"]').first.click()
            panel = page.locator("#mage-nb-sched-panel")
            form = panel.locator('form[data-form="schedule"]')
            expect(form).to_be_visible()
            expect(form).to_contain_text(name)
            form.locator('[name="name"]').fill(f"nightly {theme}")
            form.locator('[name="schedule_interval"]').select_option("custom")
            form.locator('[name="cron"]').fill("61 * * * *")
            form.locator('[name="timezone"]').fill("Europe/Paris")
            form.locator('button[type="submit"]').click()
            # The server's message and fix, under the field it names; nothing saved.
            field_error = form.locator('.jp-MageNbSched-field-error[data-field="cron"]')
            expect(field_error).to_contain_text("out of range")
            expect(field_error).to_contain_text("5-field cron expression")
            expect(form.locator('[name="cron"]')).to_have_attribute("aria-invalid", "true")
            assert (
                call(lab, "GET", f"pipeline_schedules?pipeline_uuid={name}")["pipeline_schedules"]
                == []
            )
            page.screenshot(path=str(shots / "1-form-error.png"))
            form.locator('[name="cron"]').fill("0 6 * * *")
            form.locator('button[type="submit"]').click()
            expect(form).to_have_count(0)
            row = panel.locator("[data-schedule-id]").filter(has_text=f"nightly {theme}")
            expect(row).to_be_visible()
            expect(row).to_contain_text("0 6 * * *")
            expect(row).to_contain_text("Europe/Paris")
            schedule_id = int(row.get_attribute("data-schedule-id") or 0)
            stored = call(lab, "GET", f"pipeline_schedules/{schedule_id}")["pipeline_schedule"]
            assert stored["schedule_interval"] == "0 6 * * *"
            assert stored["settings"]["timezone"] == "Europe/Paris"
            page.screenshot(path=str(shots / "2-created.png"))

            # 2. Activate, run now: it completes with its blocks; open the executed notebook.
            row.locator('[data-action="toggle"]').click()
            expect(row).to_have_attribute("data-status", "active")
            row.locator('[data-action="run-now"]').click()
            first = panel.locator("[data-run-id]").first
            expect(first).to_have_attribute("data-status", re.compile("completed|failed"))
            expect(first).to_have_attribute("data-status", "completed")
            if first.get_attribute("aria-expanded") != "true":
                first.click()
            blocks = panel.locator(".jp-MageNbSched-block")
            expect(blocks).to_have_count(2)
            expect(blocks.nth(0)).to_contain_text("completed")
            expect(panel.locator(".jp-MageNbSched-timeline rect")).not_to_have_count(0)
            page.screenshot(path=str(shots / "3-run-completed.png"))
            panel.locator('[data-action="open-notebook"]').click()
            run_id = int(first.get_attribute("data-run-id") or 0)
            executed = page.locator(f'.jp-NotebookPanel[data-mage-run-id="{run_id}"]')
            expect(executed.locator(".jp-OutputArea-output").first).to_contain_text(
                "flow step one 42"
            )
            page.screenshot(path=str(shots / "4-executed-notebook.png"))
            # The panel stayed open beside it (a click on its tab now would collapse it).
            expect(panel).to_be_visible()
            # Back to the notebook: the panel follows the notebook in focus.
            page.locator("#jp-main-dock-panel .lm-TabBar-tab").filter(
                has_text=f"{name}.ipynb"
            ).first.click()

            # 3. Pause and resume from the row.
            row.locator('[data-action="toggle"]').click()
            expect(row).to_have_attribute("data-status", "inactive")
            assert (
                call(lab, "GET", f"pipeline_schedules/{schedule_id}")["pipeline_schedule"]["status"]
                == "inactive"
            )
            row.locator('[data-action="toggle"]').click()
            expect(row).to_have_attribute("data-status", "active")

            # 4. A failing run: its status, its traceback, and a toast.
            row.locator(".jp-MageNbSched-variables").fill('{"explode": true}')
            row.locator('[data-action="run-now"]').click()
            failing = panel.locator("[data-run-id]").first
            expect(failing).to_have_attribute("data-status", "failed")
            expect(failing).to_contain_text("failed")
            if failing.get_attribute("aria-expanded") != "true":
                failing.click()
            expect(panel.locator(".jp-MageNbSched-traceback").first).to_contain_text(
                "exploded on purpose"
            )
            expect(page.locator(".Toastify__toast").filter(has_text="failed").first).to_be_visible()
            page.screenshot(path=str(shots / "5-failed-run.png"))

            # 5. A small backfill, to the end, with its progress.
            panel.locator('[data-action="backfill"]').click()
            backfill = panel.locator('form[data-form="backfill"]')
            expect(backfill).to_be_visible()
            backfill.locator('[name="interval_type"]').select_option("day")
            backfill.locator('button[type="submit"]').click()
            status = panel.locator("[data-backfill-status]")
            expect(status).to_have_attribute("data-backfill-status", "completed")
            expect(status).to_contain_text("3 of 3")
            backfill_id = int(
                panel.locator("[data-backfill-id]").get_attribute("data-backfill-id") or 0
            )
            stored_backfill = call(lab, "GET", f"backfills/{backfill_id}")["backfill"]
            assert stored_backfill["status"] == "completed"
            assert stored_backfill["progress"]["completed"] == 3
            page.screenshot(path=str(shots / "6-backfill.png"))

            # 6. The notebook's context menu runs it on its own, outside any schedule.
            page.locator(".jp-NotebookPanel .jp-Cell").first.click(button="right")
            page.locator(".lm-Menu-item").filter(has_text="Run this notebook now").click()
            started = page.locator(".Toastify__toast").filter(
                has_text=re.compile(rf"Run \d+ of {name} started")
            )
            expect(started).to_be_visible()
            found = re.search(r"Run (\d+) of", started.inner_text())
            assert found, started.inner_text()
            adhoc_id = int(found.group(1))
            adhoc = panel.locator(f'li[data-run-id="{adhoc_id}"]')
            expect(adhoc).to_have_attribute("data-status", "completed")
            expect(panel.locator(".jp-MageNbSched-history h3")).to_have_text(f"Runs of {name}")
            adhoc_run = call(lab, "GET", f"pipeline_runs/{adhoc_id}")["pipeline_run"]
            assert adhoc_run["pipeline_schedule_id"] is None
            assert adhoc_run["pipeline_uuid"] == name
            page.screenshot(path=str(shots / "7-adhoc-run.png"))
        finally:
            browser.close()
    ours = [error for error in errors if "mage" in error.lower() or "schedul" in error.lower()]
    assert not ours, ours


#: Every control of the panel: what a screen reader announces for it (empty: nothing).
_NAMELESS_CONTROLS_JS = """
root => [...root.querySelectorAll('button, input, select, textarea, [role=button], [role=switch]')]
  .filter(e => e.offsetParent !== null)
  .filter(e => !((e.getAttribute('aria-label') || '').trim()
    || (e.labels && [...e.labels].some(l => l.textContent.trim()))
    || (e.tagName === 'BUTTON' && e.textContent.trim())
    || (e.getAttribute('title') || '').trim()))
  .map(e => e.outerHTML.slice(0, 120))
"""


@pytest.mark.kernel
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_api_trigger_url_sla_toast_edit_keyboard_and_palette(lab: LiveServer, theme: str) -> None:
    """An API-triggered schedule: its trigger URL copied (placeholder, then a new token after a
    confirmation), called from outside to start a run that misses its SLA (a toast says so);
    the schedule edited in the form; the rows worked from the keyboard; every control named;
    the palette's command opening the form."""
    import requests
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=PAGE_TIMEOUT_MS)
    shots = ARTIFACTS / theme / "api"
    shots.mkdir(parents=True, exist_ok=True)
    name = f"slow_{theme}"
    write_notebook(lab.root / f"{name}.ipynb", ["import time\ntime.sleep(4)", "print('slept')"])
    created = call(
        lab,
        "POST",
        "pipeline_schedules",
        {
            "pipeline_schedule": {
                "name": f"webhook {theme}",
                "pipeline_uuid": name,
                "schedule_type": "api",
                "status": "active",
                "sla": 1,
            }
        },
    )["pipeline_schedule"]
    schedule_id = created["id"]
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser, page = _open_lab(playwright, lab, theme, f"{name}.ipynb", errors)
        try:
            page.locator('.lm-TabBar-tab[data-id="mage-nb-sched-panel"]').click()
            panel = page.locator("#mage-nb-sched-panel")
            row = panel.locator(f'[data-schedule-id="{schedule_id}"]')
            expect(row).to_contain_text("on API call")
            # Keyboard: Tab reaches the row's "Runs" button; Enter opens the runs and actions.
            disclose = row.locator('[data-action="select"]')
            row.locator('[data-action="run-now"]').focus()
            page.keyboard.press("Tab")
            expect(disclose).to_be_focused()
            page.keyboard.press("Enter")
            expect(disclose).to_have_attribute("aria-expanded", "true")
            expect(row).to_have_attribute("aria-current", "true")
            # A render (the poll) keeps the focus where it was.
            expect(disclose).to_be_focused()

            # The trigger URL: a placeholder until this session has seen a token.
            expect(panel.locator('[data-action="copy-url"]')).to_have_text("Copy URL template")
            panel.locator('[data-action="copy-url"]').click()
            copied = page.evaluate("navigator.clipboard.readText()")
            assert copied == f"{lab.api}pipeline_schedules/{schedule_id}/pipeline_runs/<token>"
            panel.locator('[data-action="new-token"]').click()
            dialog = page.locator(".jp-Dialog")
            expect(dialog).to_contain_text("stops working")
            dialog.locator(".jp-Dialog-button.jp-mod-warn").click()
            expect(panel.locator(".jp-MageNbSched-trigger")).not_to_contain_text("<token>")
            url = page.evaluate("navigator.clipboard.readText()")
            assert url.startswith(f"{lab.api}pipeline_schedules/{schedule_id}/pipeline_runs/")
            assert "<token>" not in url
            page.screenshot(path=str(shots / "1-trigger-url.png"))

            # Called from outside with the copied URL: a run that misses its 1 s SLA.
            answer = requests.post(url, json={"source": "browser test"}, timeout=60)
            assert answer.status_code == 201, answer.text
            run_id = answer.json()["pipeline_run"]["id"]
            run_row = panel.locator(f'li[data-run-id="{run_id}"]')
            expect(run_row).to_be_visible()
            toast = page.locator(".Toastify__toast").filter(has_text="missed its SLA")
            expect(toast).to_contain_text(f"webhook {theme}: run {run_id} missed its SLA")
            expect(run_row).to_contain_text("SLA breached")
            expect(run_row).to_have_attribute("data-status", "completed")
            page.screenshot(path=str(shots / "2-sla-toast.png"))

            # Edit in the form: the SLA raised to two minutes.
            panel.locator('[data-action="edit"]').click()
            form = panel.locator('form[data-form="schedule"]')
            expect(form.locator('[name="sla"]')).to_have_value("1")
            form.locator('[name="sla"]').fill("120")
            form.locator('button[type="submit"]').click()
            expect(form).to_have_count(0)
            stored = call(lab, "GET", f"pipeline_schedules/{schedule_id}")["pipeline_schedule"]
            assert stored["sla"] == 120 and stored["schedule_type"] == "api"

            # Every visible control of the panel has a name, with a form open too.
            panel.locator('[data-action="new-schedule"]').click()
            expect(form).to_be_visible()
            nameless = panel.evaluate(_NAMELESS_CONTROLS_JS)
            assert nameless == [], nameless
            page.screenshot(path=str(shots / "3-form-open.png"))
            # Escape closes the form and leaves the panel where it was.
            form.locator('[name="name"]').focus()
            page.keyboard.press("Escape")
            expect(form).to_have_count(0)
            expect(disclose).to_have_attribute("aria-expanded", "true")
            # …and the focus goes back to the button that opened it.
            expect(panel.locator('[data-action="new-schedule"]')).to_be_focused()

            # The command palette has the commands; "Schedule this notebook…" opens the form.
            page.locator(".jp-NotebookPanel .jp-Cell").first.click()
            page.locator(".lm-MenuBar-itemLabel").filter(has_text="View").click()
            page.locator(".lm-Menu-itemLabel").filter(has_text="Activate Command Palette").click()
            palette = page.locator(".lm-CommandPalette-input")
            expect(palette).to_be_focused()
            palette.fill("schedule this notebook")
            item = page.locator(".lm-CommandPalette-item").filter(has_text="Schedule this notebook")
            expect(item).to_be_visible()
            item.click()
            expect(form).to_be_visible()
            expect(form).to_contain_text(name)
        finally:
            browser.close()
    ours = [error for error in errors if "mage" in error.lower() or "schedul" in error.lower()]
    assert not ours, ours


def test_without_a_scheduler_the_panel_says_runs_wait(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A lab whose server runs no scheduler (and none elsewhere): the panel shows the server's
    own words about it, and a run made from the panel stays waiting."""
    from playwright.sync_api import expect, sync_playwright

    if not CHROMIUM.exists():
        if browser_required():
            pytest.fail(SKIP_REASON, pytrace=False)
        pytest.skip(SKIP_REASON)
    expect.set_options(timeout=PAGE_TIMEOUT_MS)
    base = tmp_path_factory.mktemp("lab-idle")
    root = base / "project"
    write_notebook(root / "idle.ipynb", ["print('never runs here')"])
    settings = base / "settings"
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True, exist_ok=True)
    news.write_text(json.dumps({"fetchNews": "false"}), "utf-8")
    env = {
        "JUPYTER_CONFIG_DIR": str(base / "config"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
    }
    shots = ARTIFACTS / "light" / "no-scheduler"
    shots.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with live_server(
        root, "--MageNbSchedApp.scheduler_enabled=False", app="jupyterlab", env=env
    ) as server:
        server.settings_dir = settings
        schedule = call(
            server,
            "POST",
            "pipeline_schedules",
            {
                "pipeline_schedule": {
                    "name": "idle",
                    "pipeline_uuid": "idle",
                    "schedule_interval": "@daily",
                }
            },
        )["pipeline_schedule"]
        with sync_playwright() as playwright:
            browser, page = _open_lab(playwright, server, "light", "idle.ipynb", errors)
            try:
                page.locator('.lm-TabBar-tab[data-id="mage-nb-sched-panel"]').click()
                panel = page.locator("#mage-nb-sched-panel")
                banner = panel.locator('[data-scheduler="inactive"]')
                expect(banner).to_contain_text("No scheduler is active for this store")
                expect(banner).to_contain_text("mage-nb-sched scheduler")
                row = panel.locator(f'[data-schedule-id="{schedule["id"]}"]')
                row.locator('[data-action="run-now"]').click()
                waiting = panel.locator("li[data-run-id]").first
                expect(waiting).to_have_attribute("data-status", "initial")
                page.screenshot(path=str(shots / "1-runs-wait.png"))
            finally:
                browser.close()
    ours = [error for error in errors if "mage" in error.lower() or "schedul" in error.lower()]
    assert not ours, ours
