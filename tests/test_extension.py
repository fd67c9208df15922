"""The Jupyter server extension end to end: a real server (pytest-jupyter, loopback), the
scheduler it starts, real worker processes and kernels, and ``jupyter server extension list``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import write_notebook
from processes import alive, descendants, until
from server_fixtures import *  # noqa: F403
from server_fixtures import GRACE

from mage_nb_sched import PipelineRun, PipelineSchedule
from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.core.project import DB_URL_ENV, PROJECT_DIR_ENV, SERVER_URL_ENV
from mage_nb_sched.extension import MageNbSchedApp
from mage_nb_sched.scheduling.notifications import RUN_NOTIFICATION_SCHEMA_ID
from mage_nb_sched.store import current_store

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
CONFIG_FILE = REPO / "jupyter-config" / "jupyter_server_config.d" / "mage_nb_sched.json"
FINAL = ("completed", "failed", "cancelled")


def run_status(run_id: int) -> str:
    return str(PipelineRun.query.get(run_id).status)


async def finished(run_id: int, timeout: float = 60.0) -> None:
    await until(lambda: run_status(run_id) in FINAL, timeout, f"run {run_id} finishes")


def process_gone(pid: int) -> bool:
    """``os.kill(pid, 0)`` fails, or the process is a zombie nobody reaped yet (a container's
    init may never reap): either way it no longer runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


def retired(executor: Any, count: int) -> Callable[[], bool]:
    """Whether ``executor`` has stopped its idle workers ``count`` times."""
    return lambda: [event.kind for event in executor.events].count("retired") == count


def extra_children(before: set[int]) -> set[int]:
    """Live descendants of this process that were not there before the extension started."""
    return {pid for pid in descendants(os.getpid()) if alive(pid)} - before


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


@pytest.mark.kernel
def test_extension_loads_and_its_scheduler_leads(
    jp_serverapp: Any,
    mage_app: MageNbSchedApp,
    jp_root_dir: Path,
    jp_fetch: Any,
    on_server_loop: Any,
) -> None:
    scheduler = mage_app.scheduler
    assert scheduler is not None, "the extension started no scheduler"
    assert jp_serverapp.web_app.settings.get("mage_nb_sched_scheduler") is scheduler
    # The extension's shorthand traits reached the parts that own them.
    assert scheduler.executor.workers == 1
    assert scheduler.executor.kernel_pool_size == 1
    assert scheduler.shutdown_grace == GRACE
    # In a server, workers start on demand by default.
    assert scheduler.executor.lazy_workers is True
    assert scheduler.executor.idle_timeout == mage_app.idle_timeout == 300
    # The default store in the server's root dir, exported for kernels, and the one the model
    # API in this process uses.
    root = Path(jp_root_dir).resolve()
    assert mage_app.store.project_dir == root
    assert mage_app.store.url == f"sqlite:///{root / '.mage_nb_sched' / 'scheduler.db'}"
    assert os.environ[PROJECT_DIR_ENV] == str(root)
    assert os.environ[DB_URL_ENV] == mage_app.store.url
    # ... and the server's URL with its base_url (the trigger URLs magics show).
    assert os.environ[SERVER_URL_ENV] == jp_serverapp.connection_url
    assert os.environ[SERVER_URL_ENV].endswith(jp_serverapp.base_url)
    assert current_store() is mage_app.store

    async def scenario() -> int:
        await until(lambda: scheduler.is_leader, 15.0, "the scheduler takes the leader lease")
        assert scheduler.running, "the scheduler loop is not running"
        # The server still answers on loopback with the scheduler running in it.
        response = await jp_fetch("api", "status")
        return int(response.code)

    assert on_server_loop(scenario()) == 200


def test_a_started_server_freezes_the_collector_once_and_can_be_told_not_to(
    mage_app: MageNbSchedApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    from mage_nb_sched import extension

    # The server above started: it froze what it had made (once per process, whoever first).
    assert extension._GC_FROZEN is True
    assert gc.get_freeze_count() > 0
    # What it does, counted, as a fresh process would see it.
    calls: list[str] = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(extension, "_GC_FROZEN", False)
    mage_app._freeze_gc()
    mage_app._freeze_gc()
    assert calls == ["freeze"]  # once, not per server
    monkeypatch.setattr(extension, "_GC_FROZEN", False)
    monkeypatch.setattr(mage_app, "freeze_gc", False)
    mage_app._freeze_gc()
    assert calls == ["freeze"] and extension._GC_FROZEN is False


@pytest.mark.kernel
def test_once_schedule_made_with_the_python_api_fires_and_completes(
    mage_app: MageNbSchedApp, jp_root_dir: Path, on_server_loop: Any
) -> None:
    write_notebook(Path(jp_root_dir) / "hello.ipynb", ["value = 6 * 7", "print('answer', value)"])
    schedule = PipelineSchedule.create(
        name="once",
        pipeline_uuid="hello",
        schedule_interval="@once",
        start_time=utcnow(),
        status="active",
    )

    async def scenario() -> int:
        runs = await until(
            lambda: PipelineSchedule.query.get(schedule.id).pipeline_runs, 30.0, "a run is made"
        )
        await finished(runs[0].id)
        await until(
            lambda: str(PipelineSchedule.query.get(schedule.id).status) == "inactive",
            15.0,
            "the @once schedule is switched off",
        )
        return int(runs[0].id)

    run = PipelineRun.query.get(on_server_loop(scenario()))
    assert str(run.status) == "completed", run.metrics
    assert run.owner is not None and run.owner.startswith("sched:")
    assert "answer 42" in run.logs("cell_1")
    assert len(PipelineSchedule.query.get(schedule.id).pipeline_runs) == 1


@pytest.mark.kernel
def test_a_manual_run_starts_at_once(
    mage_app: MageNbSchedApp, jp_root_dir: Path, on_server_loop: Any
) -> None:
    write_notebook(Path(jp_root_dir) / "quick.ipynb", ["x = 1"])
    scheduler = mage_app.scheduler

    async def scenario() -> list[int]:
        # After the scheduler's first (cold) pass, as a user would be.
        await until(lambda: scheduler.is_leader and scheduler.passes, 15.0, "a first pass")
        ids = []
        for _ in range(2):  # the worker's first run, then a warm one
            run_id = int(PipelineRun.create(pipeline_uuid="quick").id)
            await finished(run_id)
            ids.append(run_id)
        return ids

    for label, run_id in zip(("first", "second"), on_server_loop(scenario()), strict=True):
        run = PipelineRun.query.get(run_id)
        assert str(run.status) == "completed", run.metrics
        assert run.started_at is not None and run.completed_at is not None
        latency = (run.started_at - run.created_at).total_seconds() * 1000
        print(f"\n{label} manual run in the server: created → started {latency:.1f} ms")


@pytest.mark.kernel
def test_a_failed_run_emits_a_jupyter_server_event(
    jp_serverapp: Any, mage_app: MageNbSchedApp, jp_root_dir: Path, on_server_loop: Any
) -> None:
    write_notebook(Path(jp_root_dir) / "broken.ipynb", ["x = 1", "1 / 0"])
    events: list[dict[str, Any]] = []

    async def listener(logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        events.append({"schema_id": schema_id, **data})

    jp_serverapp.event_logger.add_listener(schema_id=RUN_NOTIFICATION_SCHEMA_ID, listener=listener)

    async def scenario() -> tuple[int, list[dict[str, Any]]]:
        run = PipelineRun.create(pipeline_uuid="broken")
        await finished(run.id)
        mine = await until(
            lambda: [event for event in events if event["run_id"] == run.id],
            10.0,
            "a notification event for the finished run",
        )
        return int(run.id), mine

    run_id, mine = on_server_loop(scenario())
    assert len(mine) == 1, mine
    event = mine[0]
    assert event["schema_id"] == RUN_NOTIFICATION_SCHEMA_ID
    assert event["kind"] == "failure"
    assert event["pipeline_uuid"] == "broken"
    assert event["status"] == "failed"
    assert event["schedule_id"] is None
    assert "ZeroDivisionError" in (event["reason"] or ""), event
    assert run_status(run_id) == "failed"


@pytest.mark.kernel
def test_stopping_the_server_requeues_a_run_in_flight_and_kills_its_kernel(
    jp_serverapp: Any, mage_app: MageNbSchedApp, jp_root_dir: Path, on_server_loop: Any
) -> None:
    pid_file = Path(jp_root_dir) / "kernel.pid"
    write_notebook(
        Path(jp_root_dir) / "slow.ipynb",
        [
            "import os, time\n"
            f"with open({str(pid_file)!r}, 'w') as f:\n"
            "    f.write(str(os.getpid()))\n"
            "time.sleep(60)"
        ],
    )
    run = PipelineRun.create(pipeline_uuid="slow")

    async def scenario() -> tuple[int, float]:
        await until(lambda: pid_file.exists() and pid_file.read_text().strip(), 60.0, "cell runs")
        kernel_pid = int(pid_file.read_text())
        assert run_status(run.id) == "running"
        assert not process_gone(kernel_pid)
        started = time.monotonic()
        await jp_serverapp.cleanup_extensions()  # what the server does when it shuts down
        elapsed = time.monotonic() - started
        await until(lambda: process_gone(kernel_pid), 10.0, f"kernel {kernel_pid} exits")
        return kernel_pid, elapsed

    kernel_pid, elapsed = on_server_loop(scenario())
    print(f"\nextension stop with a run in flight: {elapsed:.2f} s (shutdown_grace {GRACE} s)")
    assert elapsed < GRACE + 10, "stopping hung"  # a hang guard, not a performance bound
    assert mage_app.scheduler is None
    assert process_gone(kernel_pid)
    run = PipelineRun.query.get(run.id)
    assert str(run.status) == "initial"
    assert run.owner is None
    assert run.started_at is None


@pytest.mark.kernel
@pytest.mark.parametrize("mage_settings", [{"idle_timeout": 0.5}])
def test_workers_start_on_demand_and_stop_when_idle(
    mage_app: MageNbSchedApp,
    jp_root_dir: Path,
    children_before_start: set[int],
    on_server_loop: Any,
) -> None:
    write_notebook(Path(jp_root_dir) / "quick.ipynb", ["x = 1"])
    scheduler = mage_app.scheduler
    assert scheduler is not None
    executor = scheduler.executor
    assert executor.lazy_workers and executor.idle_timeout == 0.5  # forwarded from the app

    async def scenario() -> list[int]:
        await until(lambda: scheduler.is_leader and scheduler.passes, 15.0, "a first pass")
        # Serving, with no schedule and no run: not one extra process.
        assert extra_children(children_before_start) == set()
        assert executor.process_pids == [] and executor.capacity == 1
        ids = []
        for _ in range(2):  # the second run comes after the workers stopped for being idle
            run_id = int(PipelineRun.create(pipeline_uuid="quick").id)
            await finished(run_id)
            ids.append(run_id)
            await until(
                retired(executor, len(ids)),
                30.0,
                "idle workers are stopped after idle_timeout",
            )
            await until(
                lambda: not extra_children(children_before_start) and not executor.process_pids,
                30.0,
                "no process of the extension is left once its workers stopped",
            )
        return ids

    first, second = on_server_loop(scenario())
    for run_id in (first, second):
        run = PipelineRun.query.get(run_id)
        assert str(run.status) == "completed", run.metrics
        # The worker that executed it was started for it: after the run was recorded.
        spawned = [e.at for e in executor.events if e.kind == "spawned" and e.at >= run.created_at]
        assert spawned, (run.created_at, list(executor.events))
    kinds = [event.kind for event in executor.events]
    assert kinds.count("spawned") == 2 and kinds.count("retired") == 2, kinds


def test_jupyter_server_extension_list_shows_it_enabled_and_ok(tmp_path: Path) -> None:
    # The file the wheel installs, and the wheel maps it to etc/jupyter/jupyter_server_config.d.
    assert json.loads(CONFIG_FILE.read_text()) == {
        "ServerApp": {"jpserver_extensions": {"mage_nb_sched": True}}
    }
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    shared = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["shared-data"]
    assert shared["jupyter-config/jupyter_server_config.d"] == "etc/jupyter/jupyter_server_config.d"
    installed = Path(sys.prefix) / "etc" / "jupyter" / "jupyter_server_config.d" / CONFIG_FILE.name
    if installed.exists():
        assert installed.read_text() == CONFIG_FILE.read_text()
    # An editable install ships no data files: list with the repo's file as the user config
    # (`extension list` reads the user, sys.prefix and system dirs, not JUPYTER_CONFIG_PATH).
    config_dir = tmp_path / "jupyter-config"
    (config_dir / "jupyter_server_config.d").mkdir(parents=True)
    shutil.copy(CONFIG_FILE, config_dir / "jupyter_server_config.d" / CONFIG_FILE.name)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config_dir), "HOME": str(tmp_path)}
    env.pop(DB_URL_ENV, None)
    result = subprocess.run(
        [sys.executable, "-m", "jupyter", "server", "extension", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    assert result.returncode == 0, output
    section = output.split(f"Config dir: {config_dir}", 1)[1].split("Config dir:", 1)[0]
    assert re.search(r"^\s*mage_nb_sched enabled\s*$", section, re.M), output
    assert re.search(r"^\s*mage_nb_sched \S+ OK\s*$", section, re.M), output
