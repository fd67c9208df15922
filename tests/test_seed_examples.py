"""Every code example of the user's spec (Mage's "Pipeline Schedules" page) runs in a notebook.

The examples are read from the seed file at test time (never copied here): each one is located by
its distinctive first line and its last line(s), in page order. ``from mage_ai.<...> import X``
becomes ``from mage_nb_sched import X``; everything else is run verbatim, one notebook cell per
example, in one real IPython kernel driven by nbclient (top-level ``await`` included).

Between examples a few *glue* cells (tagged ``glue`` in the notebook) keep the page's sequence
working where it would otherwise break, and check that each example did what the page says.

The page's trigger request (``requests.post('http://mage-instance/api/pipeline_schedules/123/
pipeline_runs/<token>', ...)``) goes to a real ``jupyter server`` with the extension, started on
loopback for the test in the same project dir: the only changes to it are the base URL (Mage's
``http://mage-instance/api/`` → the server's ``.../mage/api/``) and the schedule id (the page's
123 → the API schedule its previous example created, ``api_schedule.id``).

The seed lives outside the repo (``shared/seed/pipeline-schedules.txt``, the user's spec): it is
found only through ``$MAGE_NB_SCHED_SEED`` (the ``seed_file`` fixture of ``conftest.py``). Unset,
these tests are skipped with that reason; ``.ci/run`` sets it, and sets
``$MAGE_NB_SCHED_REQUIRE_SEED`` so that such a skip fails the run.
"""

from __future__ import annotations

import ast
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from live_server import LiveServer, live_server
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

#: Pipelines (notebooks) the seed's examples schedule.
SEED_PIPELINES = (
    "my_pipeline",
    "process_uploads",
    "on_demand_pipeline",
    "customer_sync_pipeline",
    "etl_pipeline",
    "daily_report",
)
API_TOKEN = "unique-api-token-123"


@dataclass(frozen=True)
class Example:
    """Where one example sits on the page: its first line and its last line(s), exactly."""

    label: str
    first: str
    last: str
    #: Why the example is not executed (empty: it runs).
    excluded: str = ""
    #: The ``class PipelineRunStatus:`` listing is checked value by value, not defined.
    status_listing: bool = False


#: The page's code examples, in page order. Only anchors live here; the code comes from the seed.
EXAMPLES: tuple[Example, ...] = (
    Example(
        "time_based_schedule",
        "from mage_ai.orchestration.db.models.schedules import PipelineSchedule",
        "    variables={'env': 'production'}\n)",
    ),
    Example(
        "schedule_intervals",
        "from mage_ai.data_preparation.models.triggers import ScheduleInterval",
        "schedule_interval = ScheduleInterval.MONTHLY",
    ),
    Example(
        "event_based_schedule",
        "from mage_ai.data_preparation.models.triggers import ScheduleType",
        "        'bucket': 'my-data-bucket'\n    }\n)",
    ),
    Example(
        "api_schedule",
        "# Create API-triggered schedule",
        f"    token='{API_TOKEN}'  # Auto-generated if not provided\n)",
    ),
    Example(
        "api_trigger_request",
        "# Trigger via API",
        "            }\n        }\n    }\n)",
    ),
    Example(
        "create_with_model",
        "from mage_ai.orchestration.db.models.schedules import PipelineSchedule",
        "        'timeout': 1800  # 30 minutes\n    }\n)",
    ),
    Example(
        "trigger_config",
        "from mage_ai.data_preparation.models.triggers import Trigger, "
        "add_or_update_trigger_for_pipeline_and_persist",
        "    'etl_pipeline'\n)",
    ),
    Example(
        "advanced_settings",
        "schedule.settings = {",
        "await schedule.update(settings=schedule.settings)",
    ),
    Example(
        "activate_deactivate",
        "# Activate schedule",
        "schedule.update(status=ScheduleStatus.INACTIVE)",
    ),
    Example(
        "update_schedule",
        "# Update schedule interval",
        "        'batch_size': 1000\n    }\n)",
    ),
    Example("delete_schedule", "schedule.delete()", "schedule.delete()"),
    Example(
        "pipeline_runs",
        "from mage_ai.orchestration.db.models.schedules import PipelineRun",
        "    print(f'  Block runs: {run.block_runs_count}')",
    ),
    Example(
        "pipeline_run_status",
        "from mage_ai.orchestration.db.models.schedules import PipelineRun",
        "    CANCELLED = 'cancelled'  # Manually cancelled",
        status_listing=True,
    ),
    Example(
        "manual_run",
        "# Create a manual pipeline run",
        "    status=PipelineRun.PipelineRunStatus.INITIAL\n)",
    ),
    Example(
        "execution_date_block",
        "# Access execution date in blocks",
        "    return run_query(query)",
    ),
    Example(
        "execution_partition",
        "# Execution partition format",
        "# .variables/pipelines/my_pipeline/123/20240115T093000/block_uuid/output_0",
    ),
    Example(
        "landing_time",
        "schedule = PipelineSchedule.create(",
        "# to ensure it completes by 9:00 AM",
    ),
    Example("sla", "# Set 1-hour SLA", "    # Send alert"),
    Example(
        "skip_if_previous_running",
        "schedule.settings = {",
        "    'skip_if_previous_running': True\n}",
    ),
    Example(
        "in_progress_runs",
        "# Check running pipeline runs",
        "print(f'{in_progress_count} runs currently in progress')",
    ),
    Example(
        "backfill",
        "from mage_ai.orchestration.db.models.schedules import Backfill",
        "backfill.start()",
    ),
    Example("schedule_variables", "schedule.variables = {", "    'batch_size': 1000\n}"),
    Example(
        "runtime_variables",
        "pipeline_run = PipelineRun.create(",
        "        'date': '2024-01-15'  # Add new variable\n    }\n)",
    ),
    Example(
        "builtin_variables",
        "@data_loader",
        "    env = kwargs.get('env', 'development')",
    ),
    Example(
        "schedule_health",
        "# Get last run status",
        "print(f'Average runtime: {avg_runtime} seconds')",
    ),
    Example(
        "active_schedules",
        "# Get all active schedules",
        "    print(f'{schedule.name}: {schedule.schedule_interval}')",
    ),
)

# ----------------------------------------------------------------------------------------------
# Reading the seed
# ----------------------------------------------------------------------------------------------


def _find(lines: list[str], wanted: list[str], start: int) -> int:
    """Index of the first line of the first run of ``wanted`` at or after ``start`` (-1: none)."""
    for index in range(start, len(lines) - len(wanted) + 1):
        if all(lines[index + k].rstrip() == wanted[k].rstrip() for k in range(len(wanted))):
            return index
    return -1


def locate_examples(text: str) -> dict[str, tuple[str, tuple[int, int]]]:
    """Each example's text and (first, last) 0-based line numbers, searched in page order."""
    lines = text.splitlines()
    found: dict[str, tuple[str, tuple[int, int]]] = {}
    cursor = 0
    for example in EXAMPLES:
        first = _find(lines, [example.first], cursor)
        assert first >= 0, (
            f"seed example {example.label!r}: no line {example.first!r} after line {cursor + 1}"
        )
        last_lines = example.last.split("\n")
        end = _find(lines, last_lines, first)
        assert end >= 0, (
            f"seed example {example.label!r} (from line {first + 1}): "
            f"its last line(s) {example.last!r} were not found"
        )
        last = end + len(last_lines) - 1
        found[example.label] = ("\n".join(lines[first : last + 1]) + "\n", (first, last))
        cursor = last + 1
    return found


#: ``from mage_ai.<module> import X, Y`` (also a parenthesised, multi-line name list).
MAGE_IMPORT = re.compile(
    r"^(?P<indent>[ \t]*)from[ \t]+mage_ai(?:\.\w+)*[ \t]+import[ \t]+"
    r"(?P<names>\([^)]*\)|[^\n]*)",
    re.MULTILINE,
)


def rewrite_imports(code: str) -> str:
    """``from mage_ai.… import X`` → ``from mage_nb_sched import X``; nothing else changes."""
    rewritten = MAGE_IMPORT.sub(
        lambda match: f"{match['indent']}from mage_nb_sched import {match['names']}", code
    )
    assert "mage_ai" not in rewritten, f"a mage_ai reference survived the rewrite:\n{rewritten}"
    return rewritten


#: The base URL of the page's trigger request (Mage's API root).
SEED_BASE_URL = "http://mage-instance/api/"


def live_trigger_request(code: str, api_base: str) -> str:
    """The page's trigger request aimed at the live server: ``http://mage-instance/api/`` becomes
    ``api_base`` (the server's ``.../mage/api/``) and schedule 123 the API schedule the page
    created just before (``api_schedule``; the page's 123 is a placeholder). Nothing else
    changes."""
    old = f"'{SEED_BASE_URL}pipeline_schedules/123/"
    assert code.count(old) == 1, f"the trigger request's URL changed on the page:\n{code}"
    return code.replace(old, f"f'{api_base}pipeline_schedules/{{api_schedule.id}}/")


def status_listing_cell(code: str) -> str:
    """The ``class PipelineRunStatus:`` listing as assertions on ``PipelineRun.PipelineRunStatus``.

    The statements before the class (the import) are kept; each ``NAME = 'value'`` of the class
    becomes ``assert PipelineRun.PipelineRunStatus.NAME == 'value'``.
    """
    tree = ast.parse(code)
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    assert [c.name for c in classes] == ["PipelineRunStatus"], code
    listing = classes[0]
    members: list[tuple[str, str]] = []
    for statement in listing.body:
        assert isinstance(statement, ast.Assign), ast.dump(statement)
        target, value = statement.targets[0], statement.value
        assert isinstance(target, ast.Name) and isinstance(value, ast.Constant), ast.dump(statement)
        members.append((target.id, value.value))
    assert len(members) >= 5, members
    before = "\n".join(code.splitlines()[: listing.lineno - 1]).rstrip()
    checks = "\n".join(
        f"assert PipelineRun.PipelineRunStatus.{name} == {value!r}, "
        f"PipelineRun.PipelineRunStatus.{name}"
        for name, value in members
    )
    header = "# The page's `class PipelineRunStatus:` listing, member by member:"
    return f"{before}\n\n{header}\n{checks}\n"


#: A line that looks like Python on this page (prose lines are plain sentences / field names).
CODE_LIKE = re.compile(r"^(from |import |@|#|await |[ \t]+\S|[)}\]]|[A-Za-z_][\w.]*\s*(=|\(|\[))")


def test_every_code_line_of_the_seed_is_in_an_example(seed_file: Path) -> None:
    """Guards the anchors: no Python-looking line of the page is left out of the examples."""
    text = seed_file.read_text(encoding="utf-8")
    covered: set[int] = set()
    for _code, (first, last) in locate_examples(text).values():
        covered.update(range(first, last + 1))
    missed = [
        f"{number + 1}: {line}"
        for number, line in enumerate(text.splitlines())
        if number not in covered and CODE_LIKE.match(line)
    ]
    assert not missed, "seed lines that look like code but belong to no example:\n" + "\n".join(
        missed
    )


# ----------------------------------------------------------------------------------------------
# The notebook
# ----------------------------------------------------------------------------------------------


def setup_cell(project_dir: Path) -> str:
    """Notebooks for the seed's pipelines, the extension, and the objects the page assumes."""
    return f'''\
# Setup (not from the seed). The kernel was started with MAGE_NB_SCHED_PROJECT_DIR set; it must
# point at this test's project dir before mage_nb_sched is first imported.
import os
import sys
assert "mage_nb_sched" not in sys.modules
assert os.environ["MAGE_NB_SCHED_PROJECT_DIR"] == {str(project_dir)!r}
assert "MAGE_NB_SCHED_DB_URL" not in os.environ

import datetime as _dt

import nbformat as _nbformat
import pytz as _pytz

for _uuid in {SEED_PIPELINES!r}:
    _notebook = _nbformat.v4.new_notebook()
    _notebook.cells.append(_nbformat.v4.new_code_cell("x = 1"))
    _path = os.path.join(os.environ["MAGE_NB_SCHED_PROJECT_DIR"], _uuid + ".ipynb")
    _nbformat.write(_notebook, _path)

# Puts ScheduleStatus, PipelineSchedule, ... into the namespace (the first example relies on it).
%load_ext mage_nb_sched

# The page refers to schedule 123 and runs 456 and 123 without creating them.
_fixture_schedule = PipelineSchedule.create(
    id=123,
    name="seed_fixture_schedule",
    pipeline_uuid="my_pipeline",
    schedule_type=ScheduleType.TIME,
    schedule_interval=ScheduleInterval.DAILY,
)
PipelineRun.create(
    id=456,
    pipeline_schedule_id=123,
    pipeline_uuid="my_pipeline",
    execution_date=_dt.datetime(2024, 1, 15, 9, 30, tzinfo=_pytz.UTC),
)
PipelineRun.create(
    id=123,
    pipeline_schedule_id=123,
    pipeline_uuid="my_pipeline",
    execution_date=_dt.datetime(2024, 1, 14, tzinfo=_pytz.UTC),
)


def run_query(query):
    """The page's data loader calls run_query(query); here it hands the SQL back."""
    return query
'''


#: Glue cells run right after the example with the given label.
GLUE_AFTER: dict[str, str] = {
    "time_based_schedule": """\
assert schedule.id is not None and schedule.pipeline_uuid == 'my_pipeline'
assert schedule.schedule_interval == ScheduleInterval.DAILY == '@daily'
assert schedule.variables == {'env': 'production'}
""",
    "schedule_intervals": """\
assert schedule_interval == ScheduleInterval.MONTHLY == '@monthly'
assert [ScheduleInterval.ONCE, ScheduleInterval.ALWAYS_ON, ScheduleInterval.HOURLY] == [
    '@once', '@always_on', '@hourly']
""",
    "event_based_schedule": """\
assert event_schedule.schedule_type == ScheduleType.EVENT
assert PipelineSchedule.query.get(event_schedule.id).variables['bucket'] == 'my-data-bucket'
""",
    "api_schedule": f"""\
# The clear token is only on the creating object; the store keeps a hash.
print('check_token', api_schedule.check_token({API_TOKEN!r}))
_reloaded = PipelineSchedule.query.get(api_schedule.id)
print('check_token_reloaded', _reloaded.check_token({API_TOKEN!r}))
print('check_token_wrong', api_schedule.check_token('wrong-api-token-1234'))
""",
    "api_trigger_request": """\
# The live server answered with the run it created, with the page's variables.
assert response.status_code == 201, (response.status_code, response.text)
_triggered = response.json()['pipeline_run']
assert _triggered['pipeline_schedule_id'] == api_schedule.id
assert response.headers['Location'].endswith(f"/mage/api/pipeline_runs/{_triggered['id']}")
_stored_run = PipelineRun.query.get(_triggered['id'])
assert _stored_run.variables == {'date': '2024-01-15', 'env': 'production'}, _stored_run.variables
print('api_trigger_request', response.status_code, _stored_run.pipeline_uuid)
""",
    "create_with_model": """\
_reloaded = PipelineSchedule.query.get(schedule.id)
assert _reloaded.description == 'Sync customer data every hour'
assert _reloaded.sla == 3600
assert _reloaded.settings == {'skip_if_previous_running': True, 'timeout': 1800}
""",
    "trigger_config": """\
_nightly = PipelineSchedule.query.filter_by(pipeline_uuid='etl_pipeline', name='nightly_etl').one()
assert _nightly.sla == 7200 and _nightly.variables == {'env': 'production'}
""",
    "advanced_settings": """\
assert PipelineSchedule.query.get(schedule.id).settings == {
    'skip_if_previous_running': True,
    'timeout': 3600,
    'timeout_status': 'cancelled',
    'landing_time_enabled': True,
    'create_initial_pipeline_run': False,
}
""",
    "activate_deactivate": """\
assert PipelineSchedule.query.get(schedule.id).status == ScheduleStatus.INACTIVE
assert PipelineSchedule.query.get(schedule.id).last_enabled_at is not None
""",
    "update_schedule": """\
_reloaded = PipelineSchedule.query.get(schedule.id)
assert _reloaded.schedule_interval == '@daily'
assert _reloaded.start_time == datetime(2024, 1, 1, 9, 0, 0, tzinfo=pytz.UTC)
assert _reloaded.variables == {'env': 'production', 'region': 'eu-west-1', 'batch_size': 1000}
""",
    "delete_schedule": """\
# The page goes on with `schedule` after deleting it; continue with schedule 123 (which has runs).
assert PipelineSchedule.query.filter_by(name='hourly_data_sync').first() is None
schedule = PipelineSchedule.query.get(123)
""",
    "manual_run": """\
assert pipeline_run.status == PipelineRun.PipelineRunStatus.INITIAL == 'initial'
assert pipeline_run.variables == {'date': '2024-01-15', 'env': 'production'}
""",
    "execution_date_block": """\
_sql = load_data(execution_date=datetime(2024, 1, 15, 9, 30, tzinfo=pytz.UTC))
assert "WHERE event_date = '2024-01-15'" in _sql, _sql
""",
    "backfill": """\
print('backfill_runs', len(backfill.start()))
print('backfill_total', backfill.progress()['total'])
""",
    "builtin_variables": """\
assert load_data(
    execution_date=datetime(2024, 1, 15, tzinfo=pytz.UTC),
    execution_partition='123/20240115T000000',
) is None
""",
    "active_schedules": """\
print('active_schedules', type(active_schedules).__name__, len(active_schedules))
""",
}


def build_notebook(project_dir: Path, examples: dict[str, tuple[str, Any]], api_base: str) -> Any:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    cells = notebook.cells
    cells.append(nbformat.v4.new_code_cell(setup_cell(project_dir), metadata={"tags": ["setup"]}))
    for example in EXAMPLES:
        if example.excluded:
            continue
        code = rewrite_imports(examples[example.label][0])
        if example.status_listing:
            code = status_listing_cell(code)
        if example.label == "api_trigger_request":
            code = live_trigger_request(code, api_base)
        cells.append(nbformat.v4.new_code_cell(code, metadata={"seed_example": example.label}))
        glue = GLUE_AFTER.get(example.label)
        if glue:
            cells.append(
                nbformat.v4.new_code_cell(
                    glue, metadata={"glue_after": example.label, "tags": ["glue"]}
                )
            )
    return notebook


def stream_text(cell: Any) -> str:
    return "".join(
        output.get("text", "")
        for output in cell.get("outputs", [])
        if output.output_type == "stream"
    )


def cell_for(notebook: Any, key: str, label: str) -> Any:
    matches = [cell for cell in notebook.cells if cell.metadata.get(key) == label]
    assert len(matches) == 1, f"expected one cell with {key}={label!r}"
    return matches[0]


def failed_cell(notebook: Any) -> str:
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                what = cell.metadata.get("seed_example") or (
                    f"glue after {cell.metadata.get('glue_after')}"
                    if "glue_after" in cell.metadata
                    else "setup"
                )
                return f"cell {index} ({what}): {output.ename}: {output.evalue}"
    return "(no cell recorded an error)"


# ----------------------------------------------------------------------------------------------
# The live server the trigger request goes to
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def seed_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A real ``jupyter server`` serving ``tmp_path / "project"`` (made here), with the extension
    and its REST API but no scheduler (runs are only recorded: the page's other examples make
    schedules and backfills that must not start executing). Logs at DEBUG into a file, so the
    test can check that the token is in no line."""
    project_dir = tmp_path / "project"
    project_dir.mkdir()
    home = tmp_path / "server-home"
    for name in ("config", "data", "runtime"):
        (home / name).mkdir(parents=True)
    (home / "config" / "jupyter_server_config.py").write_text(
        # Only this extension: the others the environment enables only slow the start.
        "c.ServerApp.jpserver_extensions = {'mage_nb_sched': True, 'jupyterlab': False,"
        " 'jupyter_lsp': False, 'jupyter_server_terminals': False}\n"
        "c.MageNbSchedApp.scheduler_enabled = False\n",
        encoding="utf-8",
    )
    env = {
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
    }
    with live_server(project_dir, "--log-level=DEBUG", env=env) as server:
        yield server


# ----------------------------------------------------------------------------------------------
# The test
# ----------------------------------------------------------------------------------------------


@pytest.mark.kernel
def test_seed_examples_run_in_a_notebook(
    seed_file: Path, tmp_path: Path, record_property: Any, seed_server: LiveServer
) -> None:
    text = seed_file.read_text(encoding="utf-8")
    examples = locate_examples(text)

    # Every example, run or not, is valid Python once rewritten (top-level await allowed).
    for example in EXAMPLES:
        code = rewrite_imports(examples[example.label][0])
        compile(code, f"<seed:{example.label}>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    excluded = {e.label: e.excluded for e in EXAMPLES if e.excluded}
    assert not excluded, excluded
    assert SEED_BASE_URL in examples["api_trigger_request"][0]

    project_dir = tmp_path / "project"  # the live server's root dir (made by its fixture)
    notebook = build_notebook(project_dir, examples, seed_server.api)

    env = {key: value for key, value in os.environ.items() if key != "MAGE_NB_SCHED_DB_URL"}
    env["MAGE_NB_SCHED_PROJECT_DIR"] = str(project_dir)
    # The request goes to loopback directly, whatever proxy the environment names.
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(project_dir)}},
    )
    started = time.monotonic()
    try:
        client.execute(env=env)
    except CellExecutionError as err:
        nbformat.write(notebook, tmp_path / "seed_examples.executed.ipynb")
        pytest.fail(
            f"a seed example failed in the notebook: {failed_cell(notebook)}\n"
            f"(executed notebook: {tmp_path / 'seed_examples.executed.ipynb'})\n{err}",
            pytrace=False,
        )
    elapsed = time.monotonic() - started
    nbformat.write(notebook, tmp_path / "seed_examples.executed.ipynb")

    ran = [
        cell.metadata["seed_example"] for cell in notebook.cells if "seed_example" in cell.metadata
    ]
    assert ran == [e.label for e in EXAMPLES if not e.excluded]
    for cell in notebook.cells:
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.source
    report = f"seed examples run in one kernel ({elapsed:.1f}s): {', '.join(ran)}\n" + "".join(
        f"excluded {label}: {why}\n" for label, why in excluded.items()
    )
    sys.stdout.write(report)
    record_property("seed_examples_ran", ",".join(ran))
    record_property("seed_examples_excluded", ",".join(excluded))

    # Execution partition: exactly the page's output.
    assert stream_text(cell_for(notebook, "seed_example", "execution_partition")) == (
        "123/20240115T093000\n"
    )

    # The backfill's range is 2024-01-01 .. 2024-01-31 by day, inclusive.
    backfill_output = stream_text(cell_for(notebook, "glue_after", "backfill"))
    assert backfill_output == "backfill_runs 31\nbackfill_total 31\n", backfill_output

    # The trigger config was persisted as code beside the notebook.
    triggers_file = project_dir / "etl_pipeline.triggers.yaml"
    assert triggers_file.is_file(), sorted(p.name for p in project_dir.iterdir())
    triggers_text = triggers_file.read_text(encoding="utf-8")
    assert "nightly_etl" in triggers_text
    entries = yaml.safe_load(triggers_text)["triggers"]
    assert [entry["name"] for entry in entries] == ["nightly_etl"]

    # The API token works but is not in the database in clear.
    token_output = stream_text(cell_for(notebook, "glue_after", "api_schedule"))
    assert token_output == (
        "check_token True\ncheck_token_reloaded True\ncheck_token_wrong False\n"
    ), token_output
    database_files = sorted((project_dir / ".mage_nb_sched").glob("scheduler.db*"))
    assert project_dir / ".mage_nb_sched" / "scheduler.db" in database_files
    stored = b"".join(path.read_bytes() for path in database_files)
    assert b"on_demand_pipeline" in stored  # the API schedule's row is really in these files
    assert API_TOKEN.encode() not in stored
    assert API_TOKEN not in triggers_text

    # The page's trigger request reached the live server, which recorded the run; the token is
    # in none of the server's log lines (its access line for the call is there, redacted).
    trigger_output = stream_text(cell_for(notebook, "glue_after", "api_trigger_request"))
    assert trigger_output == "api_trigger_request 201 on_demand_pipeline\n", trigger_output
    server_log = seed_server.log()
    assert "/pipeline_runs/[secret]" in server_log, server_log[-3000:]
    assert API_TOKEN not in server_log

    # Active schedules of pipelines that have none: an empty list.
    assert stream_text(cell_for(notebook, "glue_after", "active_schedules")) == (
        "active_schedules list 0\n"
    )

    # The PipelineRunStatus listing was checked member by member.
    status_cell = cell_for(notebook, "seed_example", "pipeline_run_status")
    assert status_cell.source.count("assert PipelineRun.PipelineRunStatus.") == 5
