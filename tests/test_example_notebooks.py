"""The example notebooks in ``notebooks/``, each executed top to bottom with nbclient on a real
kernel, in a copy of the project (the repository's layout: the project dir holds ``notebooks/``,
so the pipelines are ``notebooks/pipelines/...``), with a real scheduler executing their runs —
the headless ``mage-nb-sched scheduler``, or for ``api_trigger.ipynb``'s ``requests.post`` path
a real Jupyter server with the extension (whose scheduler runs the run, as in JupyterLab).

Each test checks what its notebook produced: in the store (schedules, runs, their variables and
execution dates, backfills), on disk (outputs, exported files, triggers.yaml) and in the cells'
outputs (found by the cells' ids), and that no cell shows an error or writes to stderr.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nbformat
import pytest
import requests
import yaml
from conftest import write_notebook
from live_server import live_server
from nbclient import NotebookClient

from mage_nb_sched import PipelineRun
from mage_nb_sched.service import backfills, runs, schedules
from mage_nb_sched.service.records import RunRecord, ScheduleRecord
from mage_nb_sched.store import Store, use_store

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXAMPLES = ("quickstart", "daily_etl", "api_trigger", "event_trigger", "backfill")
PIPELINES = ("hello", "daily_sales", "on_demand_report", "process_upload")
#: What the user's shell may have set that a kernel of the test must not see.
NOT_SET = (
    "MAGE_NB_SCHED_DB_URL",
    "MAGE_NB_SCHED_SERVER_URL",
    "JUPYTER_SERVER_URL",
    "JPY_SESSION_NAME",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
UTC = timezone.utc


# --------------------------------------------------------------------------------------------
# Executing a notebook and reading what it showed
# --------------------------------------------------------------------------------------------


class Executed:
    """An executed notebook: its cells by id, their outputs as text."""

    def __init__(self, notebook: nbformat.NotebookNode) -> None:
        self.notebook = notebook
        self.cells = {cell.id: cell for cell in notebook.cells}

    def outputs(self, cell_id: str) -> list[Any]:
        cell = self.cells[cell_id]
        assert cell.cell_type == "code", cell_id
        return list(cell.outputs)

    def stdout(self, cell_id: str) -> str:
        return "".join(
            output.text
            for output in self.outputs(cell_id)
            if output.output_type == "stream" and output.name == "stdout"
        )

    def data(self, cell_id: str, mime: str) -> list[str]:
        """Every ``mime`` representation the cell displayed or returned."""
        return [
            output.data[mime]
            for output in self.outputs(cell_id)
            if output.output_type in ("display_data", "execute_result") and mime in output.data
        ]

    def text(self, cell_id: str) -> str:
        """The cell's stdout and plain-text results, in order."""
        parts = []
        for output in self.outputs(cell_id):
            if output.output_type == "stream" and output.name == "stdout":
                parts.append(output.text)
            elif output.output_type in ("display_data", "execute_result"):
                parts.append(output.data.get("text/plain", ""))
        return "\n".join(parts)

    def result(self, cell_id: str) -> str:
        """The plain text of the cell's value (its last expression)."""
        (value,) = [
            output.data["text/plain"]
            for output in self.outputs(cell_id)
            if output.output_type == "execute_result"
        ]
        return str(value)

    def widget_states(self, model_name: str) -> list[dict[str, Any]]:
        """The last state of every widget model called ``model_name`` (as nbclient stored it)."""
        stored = self.notebook.metadata.get("widgets", {})
        state = stored.get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
        return [model["state"] for model in state.values() if model["model_name"] == model_name]


def copy_examples(target: Path) -> None:
    """The repository's ``notebooks/`` folder, as a fresh clone has it, to ``target``."""
    shutil.copytree(
        NOTEBOOKS,
        target,
        ignore=shutil.ignore_patterns("*.triggers.yaml", ".ipynb_checkpoints"),
        dirs_exist_ok=True,
    )


def execute(project: Path, name: str, folder: str = "notebooks", **env: str) -> Executed:
    """Run ``<folder>/<name>.ipynb`` of ``project`` top to bottom in a fresh kernel started in
    the notebook's folder (as JupyterLab does) whose environment names the project (as the
    Jupyter server's kernels have it) and holds ``env``. Fails, naming the cell, if a cell
    raised or wrote to stderr."""
    path = project / folder / f"{name}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    kernel_env = {key: value for key, value in os.environ.items() if key not in NOT_SET}
    kernel_env.update(MAGE_NB_SCHED_PROJECT_DIR=str(project), **env)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        allow_errors=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(env=kernel_env)
    problems = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        if cell.execution_count is None:
            problems.append(f"{cell.id}: not executed")
        for output in cell.outputs:
            if output.output_type == "error":
                problems.append(f"{cell.id}: {output.ename}: {output.evalue}")
            elif output.output_type == "stream" and output.name == "stderr":
                problems.append(f"{cell.id}: wrote to stderr: {output.text.strip()}")
    assert not problems, f"{name}.ipynb:\n" + "\n".join(problems)
    return Executed(notebook)


@pytest.fixture
def project(project_dir: Path) -> Iterator[Path]:
    """A project dir holding a copy of ``notebooks/`` (before any scheduler starts)."""
    copy_examples(project_dir / "notebooks")
    yield project_dir


@pytest.fixture
def store(project: Path) -> Store:
    """The copied project's store (conftest's ``store`` adds notebooks these tests do not use)."""
    return use_store(project_dir=project)


def schedule_named(
    store: Store, name: str, pipeline: str, folder: str = "notebooks/"
) -> ScheduleRecord:
    found = schedules.find_schedule(store, f"{folder}pipelines/{pipeline}", name)
    assert found is not None, [s.name for s in schedules.list_schedules(store)]
    return found


def block_statuses(store: Store, run: RunRecord) -> dict[str, str]:
    return {block.block_uuid: str(block.status) for block in runs.block_runs(store, run.id)}


def trigger_entries(
    project: Path, pipeline: str, folder: str = "notebooks/"
) -> dict[str, dict[str, Any]]:
    path = project / f"{folder}pipelines" / f"{pipeline}.triggers.yaml"
    content = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {entry["name"]: entry for entry in content["triggers"]}


# --------------------------------------------------------------------------------------------
# As stored
# --------------------------------------------------------------------------------------------


def test_the_notebooks_are_stored_clean_and_documented() -> None:
    for name in [*EXAMPLES, *(f"pipelines/{pipeline}" for pipeline in PIPELINES)]:
        path = NOTEBOOKS / f"{name}.ipynb"
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        assert notebook.metadata["kernelspec"]["name"] == "python3", name
        assert "widgets" not in notebook.metadata, name
        ids = [cell.id for cell in notebook.cells]
        assert len(set(ids)) == len(ids), name
        assert notebook.cells[0].cell_type == "markdown", name
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (name, cell.id)
    readme = (NOTEBOOKS / "README.md").read_text(encoding="utf-8")
    for name in EXAMPLES:
        assert f"({name}.ipynb)" in readme, name
    # Every example explains each step: at most three code cells in a row without a markdown
    # cell saying what they do.
    for name in EXAMPLES:
        cells = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4).cells
        kinds = "".join("c" if cell.cell_type == "code" else "m" for cell in cells)
        assert "cccc" not in kinds, (name, kinds)


# --------------------------------------------------------------------------------------------
# Executed, with a scheduler serving the project
# --------------------------------------------------------------------------------------------


@pytest.mark.kernel
@pytest.mark.parametrize(
    "folder",
    [
        pytest.param("notebooks/", id="jupyterlab-in-the-repository-root"),
        pytest.param("", id="jupyterlab-in-notebooks"),
    ],
)
def test_quickstart_defines_runs_and_lists_a_schedule(
    folder: str, project_dir: Path, headless_scheduler: subprocess.Popen[bytes]
) -> None:
    project = project_dir
    if folder:
        copy_examples(project / "notebooks")
    else:  # JupyterLab started in notebooks/: that folder is the project
        copy_examples(project)
    store = use_store(project_dir=project)
    done = execute(project, "quickstart", folder=folder or ".")

    uuid = f"{folder}pipelines/hello"
    assert done.result("setup") == repr(uuid)
    schedule = schedule_named(store, "hello_every_morning", "hello", folder)
    assert str(schedule.schedule_interval) == "0 7 * * *"
    assert schedule.settings == {"timezone": "Europe/Berlin"} and schedule.sla == 600
    assert schedule.variables == {"name": "notebook user"}
    assert str(schedule.status) == "inactive"  # the last step paused it
    entries = trigger_entries(project, "hello", folder)
    assert entries["hello_every_morning"]["status"] == "inactive"

    summary = done.text("define")
    assert f"schedule 'hello_every_morning' of {uuid}: created" in summary
    next_runs = re.findall(r"\d{4}-\d\d-\d\d 07:00:00\+0[12]:00 CES?T", summary)
    assert len(next_runs) == 3, summary
    assert "hello_every_morning" in done.data("list", "text/html")[0]

    (run,) = runs.list_runs(store, schedule_id=schedule.id)
    assert str(run.status) == "completed" and run.passed_sla
    assert run.variables == {"name": "Jupyter"}
    assert block_statuses(store, run) == {"parameters": "completed", "greet": "completed"}
    printed = done.stdout("run").splitlines()
    assert printed[0] == f"run {run.id}: hello_every_morning ({uuid}) initial"
    assert re.fullmatch(rf"run {run.id} completed in \d+\.\d s", printed[-1]), printed
    assert any(text.startswith(f"run {run.id}") for text in done.data("run", "text/plain"))
    assert "greet" in done.result("run")  # the block runs it returned

    assert run.execution_partition in done.result("runs")
    history = done.result("history")
    assert "completed" in history
    assert re.search(r"\+0[12]:00", history), history  # execution dates in Berlin time
    assert "Hello, Jupyter!" in done.stdout("logs")
    assert "is inactive" in done.stdout("pause")


@pytest.mark.kernel
def test_daily_etl_runs_for_a_date_and_reads_its_outputs_back(
    project: Path, store: Store, headless_scheduler: subprocess.Popen[bytes]
) -> None:
    done = execute(project, "daily_etl")

    schedule = schedule_named(store, "daily_sales", "daily_sales")
    assert str(schedule.schedule_interval) == "@daily" and str(schedule.status) == "active"
    assert schedule.settings == {"timeout": 600, "retries": 1}
    (run,) = runs.list_runs(store, schedule_id=schedule.id)
    assert run.execution_date == datetime(2024, 1, 15, tzinfo=UTC)
    assert str(run.status) == "completed"
    assert run.execution_partition == f"{schedule.id}/20240115T000000"
    assert block_statuses(store, run) == {
        "imports": "completed",
        "load_orders": "completed",
        "daily_totals": "completed",
        "export_totals": "completed",
    }
    assert "status=completed" in done.result("run-for-date")
    assert "load_orders" in done.result("blocks")

    # The outputs, read back here with the public API as the notebook did.
    model = PipelineRun.query.get(run.id)
    orders = model.get_output("load_orders")
    assert len(orders) == 20 and set(orders["order_date"]) == {"2024-01-15"}
    totals = model.get_output("daily_totals")
    assert totals["revenue"].sum() == orders["amount"].sum()
    assert totals["orders"].sum() == 20
    exported = model.get_output("export_totals")
    assert exported == {"path": "exports/daily_totals_2024-01-15.csv", "rows": len(totals)}
    csv = (project / exported["path"]).read_text(encoding="utf-8").splitlines()
    assert csv[0] == "order_date,region,orders,revenue" and len(csv) == len(totals) + 1

    # ... and what the notebook showed of them.
    assert done.stdout("orders").strip() == f"{run.execution_partition} 20 orders"
    assert "2024-01-15" in done.result("orders")
    shown_totals = done.result("totals")
    for region in totals["region"]:
        assert region in shown_totals
    assert "wrote" in done.stdout("export") and exported["path"] in done.result("export")


def _api_run(store: Store) -> tuple[ScheduleRecord, RunRecord]:
    schedule = schedule_named(store, "on_demand", "on_demand_report")
    assert str(schedule.schedule_type) == "api" and str(schedule.status) == "active"
    (run,) = runs.list_runs(store, schedule_id=schedule.id)
    assert str(run.status) == "completed"
    assert run.variables == {"date": "2024-01-15"}
    assert block_statuses(store, run) == {"imports": "completed", "build_report": "completed"}
    return schedule, run


@pytest.mark.kernel
def test_api_trigger_posts_to_the_trigger_url_of_a_live_server(project: Path, store: Store) -> None:
    with live_server(project) as server:
        done = execute(project, "api_trigger", MAGE_NB_SCHED_SERVER_URL=server.url)
        schedule, run = _api_run(store)
        # The request's other keys reached the run as its event.
        assert run.event_variables == {"source": "api_trigger.ipynb"}
        assert done.stdout("trigger").strip() == (
            f"POST {server.url}.../pipeline_runs/<token>: 201, run {run.id}"
        )
        # The trigger URL the summary showed, with its token, this once ...
        (url,) = re.findall(r"trigger URL: (\S+)", done.text("define"))
        assert url.startswith(f"{server.url}mage/api/pipeline_schedules/{schedule.id}/")
        assert "Server URL from $MAGE_NB_SCHED_SERVER_URL." in done.text("define")
        # ... no longer works: the notebook rotated the token.
        assert requests.post(url, json={}, timeout=30).status_code == 403
    assert done.stdout("wait").strip() == (
        "completed {'date': '2024-01-15'} {'source': 'api_trigger.ipynb'}"
    )
    assert "build_report" in done.result("blocks")
    assert PipelineRun.query.get(run.id).get_output("build_report") == {
        "date": "2024-01-15",
        "requested_by": "api_trigger.ipynb",
        "pipeline_run_id": run.id,
    }
    assert f"'pipeline_run_id': {run.id}" in done.result("output")


@pytest.mark.kernel
def test_api_trigger_without_a_server_uses_trigger_pipeline(
    project: Path, store: Store, headless_scheduler: subprocess.Popen[bytes]
) -> None:
    done = execute(project, "api_trigger")
    schedule, run = _api_run(store)
    assert run.event_variables is None
    assert "http://<jupyter server>/ is a placeholder" in done.text("define")
    assert done.stdout("trigger").startswith(
        f"Pipeline run {run.id} for pipeline notebooks/pipelines/on_demand_report created "
        f"(schedule 'on_demand', id {schedule.id})."
    )
    assert done.stdout("wait").strip() == "completed {'date': '2024-01-15'} None"
    assert PipelineRun.query.get(run.id).get_output("build_report")["requested_by"] == "(not given)"


def _wait_for_the_file_watcher(store: Store, project: Path) -> None:
    """The headless scheduler gives no signal once its file watcher is in place (watchfiles
    cannot tell): drop files for a probe event schedule until one has fired (bounded), then
    pause the probe. In JupyterLab the watcher is up long before a user runs a cell."""
    write_notebook(project / "probe.ipynb", ["x = 1"])
    probe = schedules.create_schedule(
        store,
        name="probe",
        pipeline_uuid="probe",
        schedule_type="event",
        status="active",
        variables={"event_type": "file:*", "path": "probe/*.txt"},
    )
    (project / "probe").mkdir()
    deadline = time.monotonic() + 60
    attempt = 0
    while not runs.list_runs(store, schedule_id=probe.id):
        assert time.monotonic() < deadline, "the scheduler's file watcher fired nothing in 60 s"
        attempt += 1
        (project / "probe" / f"ping-{attempt}.txt").write_text("ping\n", encoding="utf-8")
        # Bounded polling of the store for the run that ping makes (or the next one).
        until = time.monotonic() + 0.5
        while time.monotonic() < until and not runs.list_runs(store, schedule_id=probe.id):
            time.sleep(0.02)
    schedules.update_schedule(store, probe.id, status="inactive")


@pytest.mark.kernel
def test_event_trigger_runs_the_pipeline_for_the_file_that_landed(
    project: Path, store: Store, headless_scheduler: subprocess.Popen[bytes]
) -> None:
    _wait_for_the_file_watcher(store, project)
    done = execute(project, "event_trigger")

    schedule = schedule_named(store, "new_orders_file", "process_upload")
    assert str(schedule.schedule_type) == "event"
    assert schedule.variables == {"event_type": "file:*", "path": "incoming/*.csv"}
    assert "running (leader" in done.text("status")
    (run,) = runs.list_runs(store, schedule_id=schedule.id)
    event = {"event_type": "file:created", "path": "incoming/orders_2024-01-15.csv"}
    assert run.event_variables == event
    assert str(run.status) == "completed"
    assert (project / event["path"]).is_file()
    assert done.stdout("wait").strip() == f"completed {event}"
    assert run.execution_partition in done.result("runs")
    summary = {"file": event["path"], "orders": 3, "revenue": 61.75}
    assert PipelineRun.query.get(run.id).get_output("summarize") == summary
    assert done.result("output") == repr(summary)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


@pytest.mark.kernel
def test_backfill_shows_its_progress_and_the_timeline(
    project: Path, store: Store, headless_scheduler: subprocess.Popen[bytes]
) -> None:
    done = execute(project, "backfill")

    schedule = schedule_named(store, "sales_history", "daily_sales")
    assert str(schedule.status) == "inactive"
    (backfill,) = backfills.list_backfills(store, schedule_id=schedule.id)
    made = runs.list_runs(store, backfill_id=backfill.id)
    assert [run.execution_date for run in made] == [
        datetime(2024, 1, day, tzinfo=UTC) for day in range(1, 8)
    ]
    assert {str(run.status) for run in made} == {"completed"}
    assert backfills.backfill_progress(store, backfill.id)["done"] == 7

    # The progress bar (tqdm.auto: a widget in a kernel) ended at 100 %.
    printed = done.stdout("backfill").splitlines()
    assert printed[0].startswith(f"backfill {backfill.id}: 7 run(s) of sales_history")
    assert printed[-1] == f"backfill {backfill.id}: 7 of 7 run(s) ended (7 completed)"
    labels = [state.get("value", "") for state in done.widget_states("HTMLModel")]
    assert any("7/7" in label for label in labels), labels
    assert any("100%" in label for label in labels), labels
    bars = done.widget_states("FloatProgressModel")
    assert bars and all(bar["value"] == bar["max"] for bar in bars), bars
    assert bars[-1]["max"] == 7, bars  # the bar knew the total (not an "unknown total" stub)
    assert bars[-1]["bar_style"] == "success"
    shown = done.result("backfill")
    assert "2024-01-01" in shown and "2024-01-07" in shown

    # The week's outputs, read back.
    for day in range(1, 8):
        assert f"2024-01-0{day}" in done.result("totals")

    # The live timeline widget, then its PNG snapshot in the outputs.
    assert done.data("timeline", "application/vnd.jupyter.widget-view+json")
    assert "RunTimeline" in done.result("timeline")
    (png,) = done.data("snapshot", "image/png")
    assert _png_size(base64.b64decode(png)) == (900, 480)
