"""``mage-nb-sched trigger``: real subprocesses over a real SQLite store; ``--wait`` against a real
headless scheduler executing the run on a real kernel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_notebook

from mage_nb_sched.service import runs, schedules
from mage_nb_sched.store import Store

STARTUP = 60.0  # bound for the headless scheduler to start (slow CI machines)


def run_cli(
    project_dir: Path, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MAGE_NB_SCHED_PROJECT_DIR=str(project_dir))
    env.pop("MAGE_NB_SCHED_DB_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "mage_nb_sched.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def run_ids(store: Store) -> list[int]:
    return [run.id for run in runs.list_runs(store)]


def test_trigger_by_name_creates_a_run_with_typed_variables(store: Store) -> None:
    schedule = schedules.create_schedule(
        store, name="on_demand", pipeline_uuid="my_pipeline", schedule_type="api", status="active"
    )
    result = run_cli(
        store.project_dir or Path(),
        "trigger",
        "on_demand",
        "--var",
        "n=10",
        "--var",
        "flag=true",
        "--var",
        "date=2024-01-15",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = runs.list_runs(store, schedule_id=schedule.id)
    assert result.stdout.startswith(f"run {run.id}: on_demand (my_pipeline, schedule ")
    assert run.variables == {"n": 10, "flag": True, "date": "2024-01-15"}
    assert str(run.status) == "initial"


def test_trigger_by_id_with_json_prints_the_run(store: Store) -> None:
    schedule = schedules.create_schedule(
        store, name="nightly", pipeline_uuid="etl/daily", schedule_interval="@daily",
        status="active",
    )  # fmt: skip
    result = run_cli(store.project_dir or Path(), "trigger", str(schedule.id), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    printed = json.loads(result.stdout)["pipeline_run"]
    assert printed["pipeline_schedule_id"] == schedule.id
    assert printed["pipeline_uuid"] == "etl/daily"
    assert run_ids(store) == [printed["id"]]


def test_a_name_two_pipelines_share_needs_pipeline(store: Store) -> None:
    for pipeline in ("my_pipeline", "etl/daily"):
        schedules.create_schedule(
            store, name="shared", pipeline_uuid=pipeline, schedule_type="api", status="active"
        )
    project = store.project_dir or Path()
    ambiguous = run_cli(project, "trigger", "shared")
    assert ambiguous.returncode == 2
    assert "--pipeline" in ambiguous.stderr and "etl/daily" in ambiguous.stderr
    assert "Traceback" not in ambiguous.stderr
    assert run_ids(store) == []
    chosen = run_cli(project, "trigger", "shared", "--pipeline", "etl/daily")
    assert chosen.returncode == 0, chosen.stderr
    (run,) = runs.list_runs(store)
    assert run.pipeline_uuid == "etl/daily"


def test_unknown_inactive_and_busy_schedules_are_clear_errors(store: Store) -> None:
    project = store.project_dir or Path()
    schedules.create_schedule(
        store, name="paused", pipeline_uuid="my_pipeline", schedule_type="api"
    )
    busy = schedules.create_schedule(
        store,
        name="busy",
        pipeline_uuid="my_pipeline",
        schedule_type="api",
        status="active",
        settings={"skip_if_previous_running": True},
    )
    waiting = runs.create_run(store, pipeline_schedule_id=busy.id)

    unknown = run_cli(project, "trigger", "nope")
    assert unknown.returncode == 2
    assert "nope" in unknown.stderr and "paused" in unknown.stderr  # lists the schedules
    inactive = run_cli(project, "trigger", "paused")
    assert inactive.returncode == 2
    assert "inactive" in inactive.stderr and "status='active'" in inactive.stderr
    refused = run_cli(project, "trigger", "busy")
    assert refused.returncode == 2
    assert f"run {waiting.id}" in refused.stderr and "skip_if_previous_running" in refused.stderr
    bad_var = run_cli(project, "trigger", "busy", "--var", "novalue")
    assert bad_var.returncode == 2 and "--var" in bad_var.stderr
    for result in (unknown, inactive, refused, bad_var):
        assert "Traceback" not in result.stderr, result.stderr
    assert run_ids(store) == [waiting.id]


def test_a_read_only_database_exits_2_and_says_which_file(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    write_notebook(project / "nb.ipynb")
    database = project / ".mage_nb_sched" / "scheduler.db"
    writable = Store(f"sqlite:///{database}", project)
    schedules.create_schedule(
        writable, name="api", pipeline_uuid="nb", schedule_type="api", status="active"
    )
    writable.dispose()
    env = {
        **os.environ,
        "MAGE_NB_SCHED_PROJECT_DIR": str(project),
        "MAGE_NB_SCHED_DB_URL": f"sqlite:///file:{database}?mode=ro&uri=true",
    }
    result = subprocess.run(
        [sys.executable, "-m", "mage_nb_sched.cli", "trigger", "api"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "read-only" in result.stderr and str(database) in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------------------------
# --wait, with a headless scheduler executing the run
# --------------------------------------------------------------------------------------------


@pytest.mark.kernel
def test_wait_follows_the_run_block_by_block_and_exits_0(
    store: Store, headless_scheduler: subprocess.Popen[bytes]
) -> None:
    project = store.project_dir or Path()
    write_notebook(
        project / "report.ipynb",
        [
            {"source": "n = 1", "tags": ["parameters"]},
            "assert n == 10, n\nprint('n is', n)",
            "from mage_nb_sched import data_loader\n"
            "@data_loader\ndef load(*args, **kwargs):\n    return kwargs['n'] * 2",
        ],
    )
    schedules.create_schedule(
        store, name="report_now", pipeline_uuid="report", schedule_type="api", status="active"
    )
    result = run_cli(project, "trigger", "report_now", "--var", "n=10", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["cell_1", "completed"] for line in lines), lines
    assert any(line.split()[:2] == ["load", "completed"] for line in lines), lines
    (run,) = runs.list_runs(store)
    assert lines[-1] == f"run {run.id} completed"
    assert str(run.status) == "completed"


@pytest.mark.kernel
def test_wait_exits_1_when_the_run_fails_and_json_has_the_blocks(
    store: Store, headless_scheduler: subprocess.Popen[bytes]
) -> None:
    project = store.project_dir or Path()
    write_notebook(project / "broken.ipynb", ["raise SystemError('nope')", "x = 1"])
    schedules.create_schedule(
        store, name="broken_now", pipeline_uuid="broken", schedule_type="api", status="active"
    )
    result = run_cli(project, "trigger", "broken_now", "--wait", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    printed = json.loads(result.stdout)
    assert printed["pipeline_run"]["status"] == "failed"
    statuses = {block["block_uuid"]: block["status"] for block in printed["block_runs"]}
    assert statuses["cell_0"] == "failed"
