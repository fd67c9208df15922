"""``%load_ext mage_nb_sched``, ``%%schedule`` and ``%schedule``, driven through a real IPython
kernel with nbclient: one notebook per kernel (a kernel start costs about a second), its cells
labelled, their outputs read back; the store and the ``triggers.yaml`` files checked from here.
``run --wait`` and ``backfill --wait`` run against a real headless scheduler."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
import yaml
from conftest import write_notebook
from nbclient import NotebookClient

from mage_nb_sched.core.tokens import verify_token
from mage_nb_sched.service import runs, schedules
from mage_nb_sched.store import Store

STARTUP = 60.0  # bound for the headless scheduler to start (slow CI machines)
NOT_SET = ("MAGE_NB_SCHED_DB_URL", "JUPYTER_SERVER_URL", "MAGE_NB_SCHED_SERVER_URL")


@dataclass
class Output:
    """What one cell showed: its streams, its display / result texts, its errors."""

    stdout: str
    stderr: str
    plain: list[str]
    html: list[str]
    errors: list[str]

    @property
    def text(self) -> str:
        return "\n".join([self.stdout, self.stderr, *self.plain, *self.errors])


def execute(
    project_dir: Path, cells: list[tuple[str, str]], **env: str
) -> dict[str, Output]:
    """Run ``(label, source)`` cells in one fresh kernel whose environment has the project dir
    and ``env``; the outputs by label (errors do not stop the notebook)."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    for label, source in cells:
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["label"] = label
        notebook.cells.append(cell)
    kernel_env = {key: value for key, value in os.environ.items() if key not in NOT_SET}
    kernel_env.pop("JPY_SESSION_NAME", None)
    kernel_env.update(MAGE_NB_SCHED_PROJECT_DIR=str(project_dir), **env)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        allow_errors=True,
        resources={"metadata": {"path": str(project_dir)}},
    )
    client.execute(env=kernel_env)
    results: dict[str, Output] = {}
    for cell in notebook.cells:
        stdout = stderr = ""
        plain: list[str] = []
        html: list[str] = []
        errors: list[str] = []
        for output in cell.outputs:
            if output.output_type == "stream":
                if output.name == "stdout":
                    stdout += output.text
                else:
                    stderr += output.text
            elif output.output_type in ("display_data", "execute_result"):
                plain.append(output.data.get("text/plain", ""))
                html.append(output.data.get("text/html", ""))
            elif output.output_type == "error":
                errors.append("\n".join(output.traceback))
        results[cell.metadata["label"]] = Output(stdout, stderr, plain, html, errors)
    return results


def usage_error(output: Output) -> str:
    """The one-line ``UsageError`` a cell printed (and nothing else, no traceback)."""
    assert not output.errors, output.errors
    assert "Traceback" not in output.text, output.text
    lines = output.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("UsageError: "), output.text
    return lines[0]


# --------------------------------------------------------------------------------------------
# Defining and managing schedules, every usage error — one kernel, no scheduler
# --------------------------------------------------------------------------------------------

NIGHTLY = """%%schedule nightly
schedule_interval: '@daily'
status: active
settings:
  timezone: Europe/Berlin
sla: 600
"""
NIGHTLY_CHANGED = """%%schedule nightly
schedule_interval: '30 6 * * *'
status: active
settings:
  timezone: Europe/Berlin
description: at half past six
"""
HOOK = "%%schedule hook\nschedule_type: api\nstatus: active\n"
PROJECT = "os.environ['MAGE_NB_SCHED_PROJECT_DIR']"

#: (label, cell, what its one-line error must say) — every wrong usage of the magics.
USAGE_ERRORS: list[tuple[str, str, str]] = [
    ("bogus", "%schedule bogus", "invalid choice: 'bogus'"),
    ("runs_no_name", "%schedule runs", "%schedule runs: the following arguments are required"),
    ("runs_unknown", "%schedule runs nope", "No schedule with id or name 'nope'"),
    ("runs_last_text", "%schedule runs 1 --last x", "--last: invalid int value: 'x'"),
    ("runs_last_negative", "%schedule runs 1 --last -1", "--last"),
    ("runs_status", "%schedule runs 1 --status weird", "status='weird'"),
    (
        "runs_unknown_option",
        "%schedule runs 1 --colour red",
        "%schedule runs: unrecognized arguments: --colour red",
    ),
    ("blocks_text", "%schedule blocks abc", "RUN_ID: invalid int value: 'abc'"),
    ("blocks_unknown", "%schedule blocks 999999", "pipeline_run_id=999999: no such run"),
    ("cancel_unknown", "%schedule cancel 999999", "no such run"),
    ("run_bad_var", "%schedule run 1 --var novalue", "--var='novalue': expected NAME=VALUE"),
    ("run_unknown", "%schedule run nope", "No schedule with id or name 'nope'"),
    (
        "backfill_reversed",
        "%schedule backfill 1 --start 2024-01-05 --end 2024-01-01 --interval day",
        "end_datetime",
    ),
    (
        "backfill_bad_date",
        "%schedule backfill 1 --start someday --end 2024-01-01",
        "start_datetime",
    ),
    ("backfill_no_end", "%schedule backfill 1 --start 2024-01-01", "--end"),
    (
        "backfill_interval",
        "%schedule backfill 1 --start 2024-01-01 --end 2024-01-02 --interval fortnight",
        "--interval: invalid choice: 'fortnight'",
    ),
    (
        "backfill_limit",
        "%schedule backfill 1 --start 2024-01-01 --end 2024-01-02 --limit 0",
        "--limit",
    ),
    ("pause_unknown", "%schedule pause nope", "No schedule with id or name 'nope'"),
    ("unbalanced_quote", "%schedule runs 'nightly", "cannot read the arguments"),
    ("cell_no_name", "%%schedule\nschedule_interval: '@daily'", "arguments are required: NAME"),
    ("cell_bad_option", "%%schedule bad --bogus\nschedule_interval: '@daily'", "--bogus"),
    (
        "yaml_syntax",
        "%%schedule bad\nstatus: active\nschedule_interval: [",
        "invalid YAML at line 3 of the cell",
    ),
    (
        "yaml_indent",
        "%%schedule bad\nschedule_interval: '@daily'\n  status: active",
        "invalid YAML at line 3 of the cell",
    ),
    (
        "bad_cron",
        "%%schedule bad\nstatus: active\nschedule_interval: every day",
        "line 3 (schedule_interval)",
    ),
    (
        "bad_setting",
        "%%schedule bad\nschedule_interval: '@daily'\nsettings:\n  timeout: -5",
        "line 4 (settings.timeout)",
    ),
    (
        "bad_zone",
        "%%schedule bad\nschedule_interval: '@daily'\nsettings: {timezone: Mars/Olympus}",
        "line 3 (settings.timezone)",
    ),
    ("unknown_key", "%%schedule bad\nschedule_interval: '@daily'\ncolour: blue", "line 3 (colour)"),
    ("name_in_body", "%%schedule bad\nname: other", "line 2 (name)"),
    ("not_a_mapping", "%%schedule bad\n- schedule_interval: '@daily'", "YAML mapping"),
    ("no_interval", "%%schedule bad\nstatus: active", "schedule_interval"),
    (
        "missing_notebook",
        "%%schedule bad --pipeline nowhere\nschedule_interval: '@daily'",
        "no notebook",
    ),
    (
        "escaping_pipeline",
        "%%schedule bad --pipeline ../outside\nschedule_interval: '@daily'",
        "--pipeline",
    ),
    (
        "rotate_not_api",
        "%%schedule bad --rotate-token\nschedule_interval: '@daily'",
        "--rotate-token",
    ),
]


@pytest.mark.kernel
def test_magics_define_list_and_manage_schedules_in_a_kernel(store: Store) -> None:
    project = store.project_dir
    assert project is not None
    cells: list[tuple[str, str]] = [
        (
            "load",
            "import os\n%load_ext mage_nb_sched\n"
            "print(PipelineSchedule.__name__, ScheduleStatus.ACTIVE, data_loader.__name__)",
        ),
        ("define", NIGHTLY),
        (
            "file_after_define",
            f"print(open(os.path.join({PROJECT}, 'etl', 'daily.triggers.yaml')).read())",
        ),
        ("redefine", NIGHTLY_CHANGED),
        ("hook", HOOK),
        ("hook_again", HOOK),
        ("server_url", "os.environ['JUPYTER_SERVER_URL'] = 'http://127.0.0.1:8888/base'"),
        ("hook_rotated", "%%schedule hook --rotate-token\nschedule_type: api\nstatus: active\n"),
        (
            "frames",
            "df = %schedule runs nightly\nlisted = %schedule list\n"
            "print(type(df).__name__, list(df.columns), df['execution_date'].dtype)\n"
            "print(type(listed).__name__, listed['name'].tolist(), listed['timezone'].tolist())",
        ),
        ("show", "%schedule show nightly"),
        ("status", "%schedule status"),
        ("pause_resume", "%schedule pause nightly\n%schedule resume hook"),
        ("run_no_scheduler", "%schedule run nightly --var n=10 --wait"),
        (
            "blocks",
            "_runs = %schedule runs nightly --last 1\n"
            "_blocks = %schedule blocks {int(_runs['id'].iloc[-1])}\n"
            "print(len(_runs), list(_blocks.columns), len(_blocks))",
        ),
        ("cancel", "%schedule cancel {int(_runs['id'].iloc[-1])}"),
        ("backfill", "%schedule backfill nightly --start 2024-01-01 --end 2024-01-03"),
        (
            "backfill_runs",
            "_all = %schedule runs nightly --status initial\nprint(len(_all))",
        ),
        ("help", "%schedule"),
        ("help_flag", "%schedule -h"),
        ("help_runs", "%schedule runs -h"),
        ("help_cell", "%%schedule -h\nschedule_interval: '@daily'"),
        *[(label, source) for label, source, _ in USAGE_ERRORS],
        # The pipeline: VS Code's variable, an absolute $JPY_SESSION_NAME, then neither.
        ("vscode_file", f"__vsc_ipynb_file__ = os.path.join({PROJECT}, 'my_pipeline.ipynb')"),
        ("from_vscode", "%%schedule nightly\nschedule_interval: '@hourly'\n"),
        (
            "absolute_session",
            "del __vsc_ipynb_file__\n"
            f"os.environ['JPY_SESSION_NAME'] = os.path.join({PROJECT}, 'etl', 'daily.ipynb')",
        ),
        ("from_absolute", "%%schedule absolute\nschedule_type: api\n"),
        ("no_session", "del os.environ['JPY_SESSION_NAME']"),
        ("unknown_pipeline", "%%schedule orphan\nschedule_interval: '@daily'\n"),
        ("explicit_pipeline", "%%schedule explicit --pipeline my_pipeline\nschedule_type: api\n"),
        ("show_narrowed", "%schedule show nightly --pipeline my_pipeline"),
        ("delete", "%schedule delete explicit --pipeline my_pipeline"),
        ("show_ambiguous", "%schedule show nightly"),
    ]
    out = execute(project, cells, JPY_SESSION_NAME="etl/daily.ipynb")

    refused = {name for name, _, _ in USAGE_ERRORS} | {"unknown_pipeline", "show_ambiguous"}
    for label, output in out.items():
        if label not in refused:
            assert not output.errors and not output.stderr.strip(), (label, output.text)
    assert out["load"].stdout.split() == ["PipelineSchedule", "active", "data_loader"]

    # %%schedule: created from the session's notebook, in the store and in the file.
    nightly = schedules.find_schedule(store, "etl/daily", "nightly")
    assert nightly is not None
    (summary,) = out["define"].plain
    assert summary.startswith("schedule 'nightly' of etl/daily: created")
    assert "status:" in summary and "active" in summary and "Europe/Berlin" in summary
    upcoming = re.findall(r"(\d{4}-\d\d-\d\d) 00:00:00\+0[12]:00 CE(?:S)?T", summary)
    assert len(upcoming) == 3, summary
    assert "<table>" in out["define"].html[0]
    first_file = yaml.safe_load(out["file_after_define"].stdout)["triggers"]
    assert [(e["name"], e["schedule_interval"], e["sla"]) for e in first_file] == [
        ("nightly", "@daily", 600)
    ]
    # The second %%schedule updated the same schedule, and the file.
    (changed,) = out["redefine"].plain
    assert changed.startswith("schedule 'nightly' of etl/daily: updated")
    assert len(re.findall(r" 06:30:00\+0[12]:00 ", changed)) == 3, changed
    entries = yaml.safe_load((project / "etl" / "daily.triggers.yaml").read_text())["triggers"]
    by_name = {entry["name"]: entry for entry in entries}
    assert set(by_name) == {"nightly", "hook", "absolute"}
    assert by_name["nightly"]["schedule_interval"] == "30 6 * * *"
    assert by_name["nightly"]["description"] == "at half past six"
    assert "sla" not in by_name["nightly"]
    assert all("token" not in entry for entry in entries)
    now_nightly = schedules.get_schedule(store, nightly.id)
    assert (now_nightly.schedule_interval, now_nightly.sla) == ("30 6 * * *", None)
    assert now_nightly.in_code and now_nightly.settings == {"timezone": "Europe/Berlin"}

    # An API schedule shows its trigger URL and token once: on creation and on rotation.
    hook = schedules.find_schedule(store, "etl/daily", "hook")
    assert hook is not None
    (created,) = out["hook"].plain
    match = re.search(
        rf"http://<jupyter server>/mage/api/pipeline_schedules/{hook.id}/pipeline_runs/(\S+)",
        created,
    )
    assert match, created
    assert "placeholder" in created
    first_token = match.group(1)
    (again,) = out["hook_again"].plain
    assert "unchanged" in again and first_token not in again and "<token>" in again
    (rotated,) = out["hook_rotated"].plain
    match = re.search(
        rf"http://127\.0\.0\.1:8888/base/mage/api/pipeline_schedules/{hook.id}/pipeline_runs/"
        r"(\S+)",
        rotated,
    )
    assert match, rotated
    assert "$JUPYTER_SERVER_URL" in rotated and "placeholder" not in rotated
    new_token = match.group(1)
    stored_hash = _token_hash(store, hook.id)
    assert verify_token(new_token, stored_hash) and not verify_token(first_token, stored_hash)

    # Tables are DataFrames.
    frames_lines = out["frames"].stdout.splitlines()
    assert frames_lines[0].startswith("DataFrame ['id', 'execution_date', 'status'")
    assert frames_lines[0].endswith("datetime64[ns, UTC]")
    assert frames_lines[1] == (
        "DataFrame ['nightly', 'hook'] ['Europe/Berlin', 'UTC']"
    )
    (shown,) = out["show"].plain
    assert shown.startswith("schedule 'nightly' of etl/daily") and "at half past six" in shown
    (status,) = out["status"].plain
    assert "not running" in status and "queued runs:" in status
    assert out["pause_resume"].stdout.splitlines() == [
        "schedule 'nightly' of etl/daily is inactive (written to its triggers.yaml)",
        "schedule 'hook' of etl/daily is active (written to its triggers.yaml)",
    ]
    assert by_name["nightly"]["status"] == "inactive"

    # Without a scheduler, --wait says so instead of waiting.
    (made,) = runs.list_runs(store, schedule_id=nightly.id, backfill_id=None)[:1]
    assert made.variables == {"n": 10}
    assert "no scheduler serves this store" in out["run_no_scheduler"].stdout
    assert out["blocks"].stdout.split("\n")[0].startswith("1 ['block_uuid', 'status'")
    assert out["cancel"].stdout.strip() == f"run {made.id} cancelled (was initial)"
    assert str(runs.get_run(store, made.id).status) == "cancelled"
    assert out["backfill"].stdout.startswith("backfill ")
    assert "3 run(s) of nightly" in out["backfill"].stdout
    assert out["backfill_runs"].stdout.strip() == "3"

    # Help is printed (not raised).
    for label in ("help", "help_flag"):
        assert out[label].stdout.startswith("usage: %schedule"), out[label].text
        assert "backfill" in out[label].stdout and not out[label].stderr
    assert out["help_runs"].stdout.startswith("usage: %schedule runs")
    assert "--last N" in out["help_runs"].stdout
    assert out["help_cell"].stdout.startswith("usage: %%schedule")

    # The pipeline from VS Code's variable, from an absolute session path, or refused.
    assert out["from_vscode"].plain[0].startswith("schedule 'nightly' of my_pipeline: created")
    assert out["from_absolute"].plain[0].startswith("schedule 'absolute' of etl/daily")
    assert "pass --pipeline" in usage_error(out["unknown_pipeline"])
    ambiguous = usage_error(out["show_ambiguous"])
    assert "--pipeline" in ambiguous and "my_pipeline" in ambiguous
    assert out["explicit_pipeline"].plain[0].startswith("schedule 'explicit' of my_pipeline")
    assert out["show_narrowed"].plain[0].startswith("schedule 'nightly' of my_pipeline")
    assert "deleted schedule 'explicit' of my_pipeline" in out["delete"].stdout
    assert schedules.find_schedule(store, "my_pipeline", "explicit") is None
    mine = yaml.safe_load((project / "my_pipeline.triggers.yaml").read_text())["triggers"]
    assert [entry["name"] for entry in mine] == ["nightly"]

    # Every wrong usage: one line, no traceback, nothing saved.
    for label, _source, expected in USAGE_ERRORS:
        line = usage_error(out[label])
        assert expected in line, (label, line)
    names = {(s.pipeline_uuid, s.name) for s in schedules.list_schedules(store)}
    assert names == {
        ("etl/daily", "nightly"),
        ("etl/daily", "hook"),
        ("etl/daily", "absolute"),
        ("my_pipeline", "nightly"),
    }
    assert not (project / "nowhere.triggers.yaml").exists()


def _token_hash(store: Store, schedule_id: int) -> str:
    from sqlalchemy import select

    from mage_nb_sched.store import schema

    table = schema.pipeline_schedule
    with store.engine.connect() as connection:
        value = connection.execute(
            select(table.c.token_hash).where(table.c.id == schedule_id)
        ).scalar()
    assert isinstance(value, str)
    return value


# --------------------------------------------------------------------------------------------
# run --wait and backfill --wait, with a headless scheduler executing the runs
# --------------------------------------------------------------------------------------------


@pytest.mark.kernel
def test_run_and_backfill_wait_until_the_scheduler_has_executed_them(
    store: Store, headless_scheduler: subprocess.Popen[bytes]
) -> None:
    project = store.project_dir
    assert project is not None
    write_notebook(
        project / "report.ipynb",
        [
            {"source": "n = 1", "tags": ["parameters"]},
            "print('n is', n)",
            "from mage_nb_sched import data_loader\n"
            "@data_loader\ndef load(*args, **kwargs):\n    return kwargs.get('n', 1) * 2",
        ],
    )
    out = execute(
        project,
        [
            ("load", "%load_ext mage_nb_sched"),
            ("define", "%%schedule report --pipeline report\nschedule_type: api\nstatus: active"),
            ("status", "%schedule status"),
            (
                "run",
                "blocks = %schedule run report --var n=10 --wait\n"
                "print(type(blocks).__name__, blocks['block_uuid'].tolist(), "
                "blocks['status'].tolist(), blocks['duration'].dtype)",
            ),
            (
                "backfill",
                "done = %schedule backfill report --start 2024-01-01 --end 2024-01-02 "
                "--interval day --limit 1 --wait\n"
                "print(type(done).__name__, done['status'].tolist(), "
                "done['execution_date'].dt.day.tolist())",
            ),
            ("runs", "df = %schedule runs report\nprint(type(df).__name__, len(df))"),
        ],
    )
    for label, output in out.items():
        assert not output.errors and "Error" not in output.stderr, (label, output.text)
    assert "scheduler:" in out["status"].plain[0] and "running (leader" in out["status"].plain[0]

    schedule = schedules.find_schedule(store, "report", "report")
    assert schedule is not None
    manual = [run for run in runs.list_runs(store, schedule_id=schedule.id) if not run.backfill_id]
    (run,) = manual
    assert str(run.status) == "completed" and run.variables == {"n": 10}
    lines = out["run"].stdout.splitlines()
    assert lines[0] == f"run {run.id}: report (report) initial"
    assert re.fullmatch(rf"run {run.id} completed in \d+\.\d s", lines[-2]), lines
    assert lines[-1] == (
        "DataFrame ['cell_0', 'cell_1', 'load'] ['completed', 'completed', 'completed'] "
        "timedelta64[ns]"
    )
    # The live progress bars (tqdm.auto: a widget in a kernel, shown by its text form here).
    assert any(text.startswith(f"run {run.id}") for text in out["run"].plain), out["run"]
    assert any(text.startswith("backfill ") for text in out["backfill"].plain), out["backfill"]

    backfill_lines = out["backfill"].stdout.splitlines()
    assert "2 run(s) of report" in backfill_lines[0]
    assert "2 of 2 run(s) ended (2 completed)" in backfill_lines[-2]
    assert backfill_lines[-1] == "DataFrame ['completed', 'completed'] [1, 2]"
    assert out["runs"].stdout.strip() == "DataFrame 3"
