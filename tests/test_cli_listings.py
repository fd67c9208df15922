"""``mage-nb-sched schedules | runs | blocks | backfill | pause | resume`` and ``--version``: the
real entry point in subprocesses (and ``cli.main`` in-process where that is faithful) over a real
SQLite project; ``backfill --wait`` against a real headless scheduler executing the runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import write_notebook

# The headless-scheduler fixture of the trigger tests, reused (not copied).
from sqlalchemy import event

from mage_nb_sched import cli
from mage_nb_sched.core.version import __version__
from mage_nb_sched.service import backfills, records, runs, schedules
from mage_nb_sched.store import Store, schema

UTC = timezone.utc
T0 = datetime(2024, 1, 2, tzinfo=UTC)
TRACEBACK = (
    "---------------------------------------------------------------------------\n"
    "SystemError                               Traceback (most recent call last)\n"
    "Cell In[1], line 1\n"
    "----> 1 raise SystemError('nope')\n"
    "\n"
    "SystemError: nope"
)


def run_cli(
    project_dir: Path, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """The installed ``mage-nb-sched`` script (the console entry point) in a subprocess."""
    env = dict(os.environ, MAGE_NB_SCHED_PROJECT_DIR=str(project_dir))
    env.pop("MAGE_NB_SCHED_DB_URL", None)
    script = Path(sys.executable).with_name("mage-nb-sched")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "mage_nb_sched.cli"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``cli.main(args)`` in this process (the project from the fixture's environment)."""
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def parse_table(text: str, right: tuple[str, ...] = ()) -> tuple[list[str], list[list[str]]]:
    """A printed table's header and rows (columns are two or more spaces apart), after checking
    that every cell is aligned under its header: left-aligned cells start where the header
    starts, the ``right``-aligned ones end where it ends."""
    lines = text.rstrip("\n").splitlines()
    header = re.split(r"\s{2,}", lines[0].strip())
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]
    if rows == [["(none)"]]:
        return header, []
    starts = [match.start() for match in re.finditer(r"\S+(?: \S+)*", lines[0])]
    for line, row in zip(lines[1:], rows, strict=True):
        assert len(row) == len(header), (header, line)
        for name, start, cell in zip(header, starts, row, strict=True):
            if name in right:
                assert line[: start + len(name)].endswith(cell), (name, cell, line)
            else:
                assert line[start:].startswith(cell), (name, cell, line)
    return header, rows


def one_line_error(result: subprocess.CompletedProcess[str] | tuple[int, str, str]) -> str:
    """Exit code 2, nothing on stdout, one ``error: ...`` line on stderr (no traceback)."""
    if isinstance(result, tuple):
        code, out, err = result
    else:
        code, out, err = result.returncode, result.stdout, result.stderr
    assert code == 2, (code, out, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@dataclass
class History:
    nightly: records.ScheduleRecord
    on_demand: records.ScheduleRecord
    done: records.RunRecord
    failed: records.RunRecord
    manual: records.RunRecord


@pytest.fixture
def history(store: Store) -> History:
    """Two schedules and three runs in final or running states, the failed one with block
    runs (no execution needed)."""
    nightly = schedules.create_schedule(
        store,
        name="nightly",
        pipeline_uuid="etl/daily",
        schedule_interval="@daily",
        status="active",
        start_time=datetime(2024, 1, 1, tzinfo=UTC),
        sla=600,
        settings={"timezone": "Europe/Paris"},
    )
    on_demand = schedules.create_schedule(
        store, name="on_demand", pipeline_uuid="my_pipeline", schedule_type="api"
    )
    done = runs.create_run(
        store,
        pipeline_schedule_id=nightly.id,
        execution_date=T0,
        status="completed",
        started_at=T0 + timedelta(seconds=5),
        completed_at=T0 + timedelta(seconds=70),
    )
    failed = runs.create_run(
        store,
        pipeline_schedule_id=nightly.id,
        execution_date=T0 + timedelta(days=1),
        status="failed",
        started_at=T0 + timedelta(days=1, seconds=1),
        completed_at=T0 + timedelta(days=1, seconds=3726),
        metrics={"error": "cell_1 failed"},
    )
    failed = runs.update_run(store, failed.id, sla_breached=True)
    manual = runs.create_run(
        store, pipeline_uuid="my_pipeline", status="running", started_at=T0 + timedelta(days=2)
    )
    with store.write_engine.begin() as connection:
        connection.execute(
            schema.block_run.insert(),
            [
                {
                    "pipeline_run_id": failed.id,
                    "block_uuid": "load_data",
                    "status": "completed",
                    "started_at": T0 + timedelta(days=1, seconds=1),
                    "completed_at": T0 + timedelta(days=1, seconds=66),
                    "error": None,
                },
                {
                    "pipeline_run_id": failed.id,
                    "block_uuid": "cell_1",
                    "status": "failed",
                    "started_at": T0 + timedelta(days=1, seconds=66),
                    "completed_at": T0 + timedelta(days=1, seconds=3726),
                    "error": TRACEBACK,
                },
                {
                    "pipeline_run_id": failed.id,
                    "block_uuid": "export",
                    "status": "cancelled",
                    "started_at": None,
                    "completed_at": None,
                    "error": None,
                },
            ],
        )
    return History(nightly, on_demand, done, failed, manual)


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def test_durations_and_datetimes_are_formatted_for_people() -> None:
    assert cli.format_duration(timedelta(seconds=0.42)) == "0.4s"
    assert cli.format_duration(timedelta(seconds=12)) == "12s"
    assert cli.format_duration(timedelta(seconds=65)) == "1m 05s"
    assert cli.format_duration(timedelta(hours=2, minutes=3, seconds=4)) == "2h 03m 04s"
    assert cli.format_duration(timedelta(days=3, hours=4, minutes=5)) == "3d 04h 05m"
    assert cli.format_duration(None) == "-"
    paris = timezone(timedelta(hours=1))
    assert cli.format_datetime(datetime(2024, 1, 15, 10, 30, 59, tzinfo=paris)) == (
        "2024-01-15T09:30Z"
    )
    assert cli.format_datetime(None) == "-"
    assert cli.error_summary(TRACEBACK) == "SystemError: nope"
    assert cli.error_summary("the kernel died\nmore") == "the kernel died"
    assert cli.error_summary("x" * 300) == "x" * (cli.ERROR_WIDTH - 1) + "…"


def test_an_empty_table_has_its_header_and_none() -> None:
    assert cli.format_table(("ID", "NAME"), []) == "ID  NAME\n(none)"
    table = cli.format_table(("ID", "NAME"), [(7, "a  b\nc"), (12, None)], right=("ID",))
    assert table.splitlines() == ["ID  NAME", " 7  a b c", "12  -"]


# --------------------------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------------------------


def test_schedules_table_has_mage_computed_fields(store: Store, history: History) -> None:
    before = schedules.describe_schedules(store, [history.nightly])[0].next_pipeline_run_date
    result = run_cli(store.project_dir or Path(), "schedules")
    after = schedules.describe_schedules(store, [history.nightly])[0].next_pipeline_run_date
    assert result.returncode == 0, result.stdout + result.stderr
    header, rows = parse_table(result.stdout, ("RUNS", "ID"))
    assert header == list(cli.SCHEDULE_COLUMNS)
    assert header == [
        "NAME", "PIPELINE", "TYPE", "INTERVAL", "TIME ZONE", "STATUS", "NEXT RUN",
        "LAST STATUS", "RUNS", "ID",
    ]  # fmt: skip
    nightly, on_demand = rows
    assert nightly[:6] == ["nightly", "etl/daily", "time", "@daily", "Europe/Paris", "active"]
    assert nightly[6] in {cli.format_datetime(before), cli.format_datetime(after)}
    assert nightly[6] != "-"
    assert nightly[7:] == ["failed", "2", str(history.nightly.id)]
    assert on_demand == [
        "on_demand", "my_pipeline", "api", "-", "UTC", "inactive", "-", "-", "0",
        str(history.on_demand.id),
    ]  # fmt: skip


def test_schedules_json_is_the_services_records(
    store: Store, history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    records_before = schedules.list_schedules(store)
    views = schedules.describe_schedules(store, records_before)
    code, out, _ = in_process(capsys, "schedules", "--json")
    after = schedules.describe_schedules(store, records_before)
    assert code == 0
    printed = json.loads(out)
    expected = [records.to_json(v.schedule, **v.computed_fields()) for v in views]
    expected_later = [records.to_json(v.schedule, **v.computed_fields()) for v in after]
    assert printed in (expected, expected_later)
    assert [item["pipeline_runs_count"] for item in printed] == [2, 0]
    assert printed[0]["last_pipeline_run_status"] == "failed"
    assert "token" not in printed[1]


def test_schedule_filters_and_empty_listings(
    store: Store, history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    def names(*args: str) -> list[str]:
        code, out, err = in_process(capsys, "schedules", "--json", *args)
        assert code == 0, err
        return [item["name"] for item in json.loads(out)]

    assert names() == ["nightly", "on_demand"]
    assert names("--status", "inactive") == ["on_demand"]
    assert names("--type", "time") == ["nightly"]
    assert names("--pipeline", "etl/daily") == ["nightly"]
    assert names("--pipeline", "etl/daily", "--status", "inactive") == []
    code, out, _ = in_process(capsys, "schedules", "--type", "event")
    assert code == 0
    assert out.splitlines() == ["  ".join(cli.SCHEDULE_COLUMNS), "(none)"]


def test_schedules_reads_a_bounded_number_of_statements(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    """No query per schedule: listing 8 schedules costs what listing 2 does."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    def statements_for_listing() -> int:
        seen.clear()
        event.listen(store.engine, "before_cursor_execute", record)
        try:
            code, _, err = in_process(capsys, "schedules")
        finally:
            event.remove(store.engine, "before_cursor_execute", record)
        assert code == 0, err
        return len(seen)

    def add(count: int, start: int) -> None:
        for index in range(start, start + count):
            schedule = schedules.create_schedule(
                store, name=f"s{index}", pipeline_uuid="my_pipeline", schedule_interval="@hourly"
            )
            runs.create_run(store, pipeline_schedule_id=schedule.id, status="completed")

    add(2, 0)
    few = statements_for_listing()
    add(6, 2)
    assert statements_for_listing() == few


# --------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------


def test_runs_table_lists_every_run_oldest_first(store: Store, history: History) -> None:
    result = run_cli(store.project_dir or Path(), "runs")
    assert result.returncode == 0, result.stdout + result.stderr
    header, rows = parse_table(result.stdout, ("ID", "DURATION"))
    assert header == list(cli.RUN_COLUMNS)
    assert header == [
        "ID", "SCHEDULE", "PIPELINE", "EXECUTION DATE", "STATUS", "STARTED", "COMPLETED",
        "DURATION", "PASSED SLA",
    ]  # fmt: skip
    done, failed, manual = rows
    assert done == [
        str(history.done.id), "nightly", "etl/daily", "2024-01-02T00:00Z", "completed",
        "2024-01-02T00:00Z", "2024-01-02T00:01Z", "1m 05s", "yes",
    ]  # fmt: skip
    assert failed == [
        str(history.failed.id), "nightly", "etl/daily", "2024-01-03T00:00Z", "failed",
        "2024-01-03T00:00Z", "2024-01-03T01:02Z", "1h 02m 05s", "no",
    ]  # fmt: skip
    assert manual[:3] == [str(history.manual.id), "-", "my_pipeline"]
    assert manual[4:] == ["running", "2024-01-04T00:00Z", "-", "-", "yes"]


def test_runs_json_and_filters_match_the_store(
    store: Store, history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    def printed(*args: str) -> list[dict[str, Any]]:
        code, out, err = in_process(capsys, "runs", "--json", *args)
        assert code == 0, err
        result: list[dict[str, Any]] = json.loads(out)
        return result

    assert printed() == [records.to_json(run) for run in runs.list_runs(store)]
    of_nightly = runs.list_runs(store, schedule_id=history.nightly.id)
    assert printed("nightly") == [records.to_json(run) for run in of_nightly]
    assert printed(str(history.nightly.id)) == printed("nightly")
    assert [run["id"] for run in printed("nightly", "--last", "1")] == [history.failed.id]
    assert [run["id"] for run in printed("--status", "running")] == [history.manual.id]
    assert [run["id"] for run in printed("--pipeline", "my_pipeline")] == [history.manual.id]
    assert printed("on_demand") == []
    code, out, _ = in_process(capsys, "runs", "nightly", "--status", "cancelled")
    assert code == 0 and out.splitlines() == ["  ".join(cli.RUN_COLUMNS), "(none)"]


# --------------------------------------------------------------------------------------------
# blocks
# --------------------------------------------------------------------------------------------


def test_blocks_table_shows_durations_and_the_exception_line(
    store: Store, history: History
) -> None:
    result = run_cli(store.project_dir or Path(), "blocks", str(history.failed.id))
    assert result.returncode == 0, result.stdout + result.stderr
    header, rows = parse_table(result.stdout, ("DURATION",))
    assert header == ["BLOCK", "STATUS", "STARTED", "COMPLETED", "DURATION", "ERROR"]
    assert rows == [
        ["load_data", "completed", "2024-01-03T00:00Z", "2024-01-03T00:01Z", "1m 05s", "-"],
        ["cell_1", "failed", "2024-01-03T00:01Z", "2024-01-03T01:02Z", "1h 01m 00s",
         "SystemError: nope"],
        ["export", "cancelled", "-", "-", "-", "-"],
    ]  # fmt: skip


def test_blocks_json_has_the_whole_records(
    store: Store, history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = in_process(capsys, "blocks", str(history.failed.id), "--json")
    assert code == 0
    printed = json.loads(out)
    assert printed == [records.to_json(b) for b in runs.block_runs(store, history.failed.id)]
    assert printed[1]["error"] == TRACEBACK
    code, out, _ = in_process(capsys, "blocks", str(history.done.id), "--json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = in_process(capsys, "blocks", str(history.done.id))
    assert code == 0 and out.splitlines()[1:] == ["(none)"]


# --------------------------------------------------------------------------------------------
# Usage and not-found errors: exit 2, one line, nothing written
# --------------------------------------------------------------------------------------------


def test_not_found_and_usage_errors_exit_2_with_one_line(
    store: Store, history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    project = store.project_dir or Path()
    unknown = one_line_error(run_cli(project, "runs", "nope"))
    assert "'nope'" in unknown and "nightly" in unknown  # names the schedules there are
    missing_run = one_line_error(run_cli(project, "blocks", "999"))
    assert "RUN_ID=999" in missing_run and "mage-nb-sched runs" in missing_run
    checks = {
        ("blocks", "abc"): "RUN_ID",
        ("runs", "--status", "done"): "--status",
        ("runs", "--last", "0"): "--last",
        ("schedules", "--type", "cron"): "--type",
        ("schedules", "--pipeline", "nowhere"): "--pipeline='nowhere'",
        ("runs", "--pipeline", "nowhere"): "--pipeline='nowhere'",
        ("runs", "--pipeline", "../up"): "--pipeline",
        ("pause", "nope"): "'nope'",
        ("resume",): "NAME|ID",
        ("backfill", "nightly"): "--start",
        ("backfill", "nightly", "--start", "soon", "--end", "2024-01-02", "--interval", "day"):
            "--start='soon'",
        ("backfill", "nightly", "--start", "2024-01-05", "--end", "2024-01-02",
         "--interval", "day"): "--end",
        ("backfill", "nightly", "--start", "2024-01-01", "--end", "2024-01-02",
         "--interval", "fortnight"): "--interval",
        ("backfill", "nightly", "--start", "2024-01-01", "--end", "2024-01-02",
         "--interval", "day", "--units", "-1"): "--units",
        ("backfill", "nightly", "--start", "2024-01-01", "--end", "2024-01-02",
         "--interval", "day", "--var", "novalue"): "--var",
        (): "command",
    }  # fmt: skip
    for args, named in checks.items():
        message = one_line_error(in_process(capsys, *args))
        assert named in message, (args, message)
    assert backfills.list_backfills(store) == []
    assert schedules.get_schedule(store, history.nightly.id).status == "active"


def test_every_help_documents_the_exit_codes() -> None:
    parser = cli.build_parser()
    commands = next(
        action for action in parser._actions if isinstance(action, cli.argparse._SubParsersAction)
    )
    for name in commands.choices:
        text = " ".join(commands.choices[name].format_help().split())
        assert "Exit codes: 0" in text and "2 bad usage" in text, name
    assert "1 with --wait" in " ".join(commands.choices["backfill"].format_help().split())


def test_version() -> None:
    result = run_cli(Path.cwd(), "--version")
    assert result.returncode == 0 and result.stdout.strip() == f"mage-nb-sched {__version__}"


def test_startup_imports_nothing_heavy() -> None:
    """``--version`` / ``--help`` never pay for pandas, SQLAlchemy, asyncio or tqdm."""
    probe = (
        "import sys, mage_nb_sched.cli as c\n"
        "heavy = [m for m in ('pandas', 'sqlalchemy', 'asyncio', 'tqdm', 'traitlets') "
        "if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_a_read_only_database_lists_but_refuses_writes_with_exit_2(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    write_notebook(project / "nb.ipynb")
    database = project / ".mage_nb_sched" / "scheduler.db"
    writable = Store(f"sqlite:///{database}", project)
    schedules.create_schedule(
        writable, name="nightly", pipeline_uuid="nb", schedule_interval="@daily", status="active"
    )
    writable.dispose()
    env = {
        **os.environ,
        "MAGE_NB_SCHED_PROJECT_DIR": str(project),
        "MAGE_NB_SCHED_DB_URL": f"sqlite:///file:{database}?mode=ro&uri=true",
    }

    def cli_ro(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mage_nb_sched.cli", *args],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip

    listed = cli_ro("schedules", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [item["name"] for item in json.loads(listed.stdout)] == ["nightly"]
    for args in (
        ("pause", "nightly"),
        ("backfill", "nightly", "--start", "2024-01-01", "--end", "2024-01-02",
         "--interval", "day"),
    ):  # fmt: skip
        message = one_line_error(cli_ro(*args))
        assert "read-only" in message and str(database) in message


# --------------------------------------------------------------------------------------------
# pause / resume
# --------------------------------------------------------------------------------------------


def test_pause_and_resume_change_the_store(store: Store, history: History) -> None:
    project = store.project_dir or Path()
    paused = run_cli(project, "pause", "nightly")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == f"schedule {history.nightly.id} nightly (etl/daily): inactive"
    assert schedules.get_schedule(store, history.nightly.id).status == "inactive"
    resumed = run_cli(project, "resume", str(history.nightly.id))
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith(f"schedule {history.nightly.id} nightly (etl/daily): active")
    assert "next run " in resumed.stdout
    after = schedules.get_schedule(store, history.nightly.id)
    assert after.status == "active"
    assert after.last_enabled_at is not None and after.last_enabled_at > history.nightly.created_at


def test_pause_a_shared_name_needs_pipeline(
    store: Store, history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    twins = [
        schedules.create_schedule(
            store, name="hourly", pipeline_uuid=pipeline, schedule_interval="@hourly",
            status="active",
        )
        for pipeline in ("my_pipeline", "etl/daily")
    ]  # fmt: skip
    message = one_line_error(in_process(capsys, "pause", "hourly"))
    assert "--pipeline" in message and "etl/daily" in message and "my_pipeline" in message
    assert [schedules.get_schedule(store, s.id).status for s in twins] == ["active", "active"]
    code, out, err = in_process(capsys, "pause", "hourly", "--pipeline", "etl/daily", "--json")
    assert code == 0, err
    assert json.loads(out)["id"] == twins[1].id and json.loads(out)["status"] == "inactive"
    assert [schedules.get_schedule(store, s.id).status for s in twins] == ["active", "inactive"]
    code, out, _ = in_process(capsys, "pause", "hourly", "--pipeline", "etl/daily")
    assert code == 0 and out.strip().endswith("inactive (already)")


# --------------------------------------------------------------------------------------------
# backfill
# --------------------------------------------------------------------------------------------


def test_backfill_creates_and_starts_the_runs(store: Store, history: History) -> None:
    project = store.project_dir or Path()
    result = run_cli(
        project, "backfill", "nightly", "--start", "2023-12-01", "--end", "2023-12-07",
        "--interval", "day", "--units", "3", "--var", "region=eu", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    printed = json.loads(result.stdout)
    (backfill,) = backfills.list_backfills(store)
    made = runs.list_runs(store, backfill_id=backfill.id)
    assert printed["backfill"]["id"] == backfill.id
    assert printed["backfill"]["status"] == "running"
    assert printed["backfill"]["progress"]["total"] == 3
    assert sorted(run["id"] for run in printed["pipeline_runs"]) == [run.id for run in made]
    assert [run.execution_date.day for run in made] == [1, 4, 7]
    assert all(run.variables and run.variables["region"] == "eu" for run in made)
    assert {run.pipeline_schedule_id for run in made} == {history.nightly.id}
    table = run_cli(
        project, "backfill", "nightly", "--start", "2023-11-01", "--end", "2023-11-02",
        "--interval", "day",
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("backfill ") and table.stdout.strip().endswith(": 2 runs")


def test_backfill_wait_exits_1_when_the_backfill_is_cancelled(
    store: Store, history: History
) -> None:
    """No scheduler serves the store: ``--wait`` says so and waits; the backfill is cancelled
    meanwhile (as the sidebar or REST would), and the command ends with exit 1."""
    project = store.project_dir or Path()
    env = dict(os.environ, MAGE_NB_SCHED_PROJECT_DIR=str(project))
    env.pop("MAGE_NB_SCHED_DB_URL", None)
    waiting = subprocess.Popen(
        [sys.executable, "-m", "mage_nb_sched.cli", "backfill", "nightly", "--start",
         "2023-12-01", "--end", "2023-12-02", "--interval", "day", "--wait"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not backfills.list_backfills(store):
            assert waiting.poll() is None, waiting.communicate()
            assert time.monotonic() < deadline, "the backfill was not created"
            time.sleep(0.05)
        (backfill,) = backfills.list_backfills(store)
        backfills.cancel_backfill(store, backfill.id)
        out, err = waiting.communicate(timeout=120)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 1, out + err
    assert "no scheduler serves this store" in err
    assert out.splitlines()[-1] == f"backfill {backfill.id} cancelled: 2 cancelled"
    assert "Traceback" not in err


@pytest.mark.kernel
@pytest.mark.usefixtures("headless_scheduler")
def test_backfill_wait_with_a_scheduler_ends_completed(store: Store) -> None:
    project = store.project_dir or Path()
    write_notebook(
        project / "etl" / "daily.ipynb",
        [
            {"source": "ds = None", "tags": ["parameters"]},
            "assert ds is not None\nprint('day', ds)",
        ],
    )
    schedules.create_schedule(
        store, name="daily_etl", pipeline_uuid="etl/daily", schedule_interval="@daily"
    )
    result = run_cli(
        project, "backfill", "daily_etl", "--start", "2024-01-01", "--end", "2024-01-02",
        "--interval", "day", "--wait",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (backfill,) = backfills.list_backfills(store)
    assert str(backfill.status) == "completed"
    made = runs.list_runs(store, backfill_id=backfill.id)
    assert [str(run.status) for run in made] == ["completed", "completed"]
    assert result.stdout.splitlines()[-1] == f"backfill {backfill.id} completed: 2 completed"
    # tqdm's bar, on stderr, reached the end.
    assert "100%" in result.stderr and "2/2" in result.stderr
    assert "Traceback" not in result.stderr

