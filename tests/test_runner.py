"""The runner with real kernels: block runs, variables, outputs, retries, timeouts, cancel."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import write_notebook
from processes import alive, child_pids, wait_until

from mage_nb_sched import PipelineRun, PipelineSchedule
from mage_nb_sched.execution.kernels import KernelPool
from mage_nb_sched.execution.runner import PipelineRunner
from mage_nb_sched.store import Store

pytestmark = pytest.mark.kernel

UTC = timezone.utc


async def _execute(store: Store, run_id: int, pool: KernelPool | None = None) -> Any:
    own = pool is None
    pool = pool or KernelPool(size=0)
    await pool.start()
    try:
        return await PipelineRunner(store, pool, cancel_grace=2.0).execute(run_id)
    finally:
        if own:
            await pool.close()


def run_now(store: Store, run: PipelineRun) -> Any:
    return asyncio.run(_execute(store, run.id))


def make_schedule(
    project_dir: Path, cells: list[Any], name: str = "pipe", **settings: Any
) -> PipelineSchedule:
    write_notebook(project_dir / f"{name}.ipynb", cells)
    return PipelineSchedule.create(
        name=f"{name}_trigger",
        pipeline_uuid=name,
        schedule_interval="@daily",
        settings=settings or None,
    )


def fresh_run(run_id: int) -> PipelineRun:
    run = PipelineRun.query.get(run_id)
    assert run is not None
    return run


def block_statuses(run: PipelineRun) -> dict[str, str]:
    return {block.block_uuid: str(block.status) for block in run.block_runs}


# ---------------------------------------------------------------------------------------------


def test_seed_data_loader_gets_execution_date_and_output_round_trips(
    store: Store, project_dir: Path
) -> None:
    cells = [
        "from mage_nb_sched import data_loader, transformer\nimport pandas as pd",
        "@data_loader\ndef load_data(*args, **kwargs):\n"
        "    execution_date = kwargs.get('execution_date')\n"
        "    return pd.DataFrame({'day': [str(execution_date.date())],\n"
        "                         'tz': [str(execution_date.tzinfo)],\n"
        "                         'partition': [kwargs['execution_partition']],\n"
        "                         'run': [kwargs.get('pipeline_run_id')]})",
        "@transformer\ndef add_one(df, *args, **kwargs):\n"
        "    df['n'] = [len(df) + 41]\n    return df",
    ]
    schedule = make_schedule(project_dir, cells)
    run = PipelineRun.create(
        pipeline_schedule_id=schedule.id,
        execution_date=datetime(2024, 1, 15, 9, 30, tzinfo=UTC),
    )
    outcome = run_now(store, run)
    assert outcome.status == "completed", outcome
    run = fresh_run(run.id)
    assert run.status == "completed"
    assert block_statuses(run) == {
        "cell_0": "completed",
        "load_data": "completed",
        "add_one": "completed",
    }
    loaded = run.get_output("load_data")
    expected = pd.DataFrame(
        {
            "day": ["2024-01-15"],
            "tz": ["UTC"],
            "partition": [f"{schedule.id}/20240115T093000"],
            "run": [run.id],
        }
    )
    pd.testing.assert_frame_equal(loaded, expected)
    transformed = run.get_output("add_one")
    assert list(transformed["n"]) == [42]
    executed = json.loads(Path(run.executed_notebook_path or "").read_text())
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in executed["cells"])
    assert len(run.metrics["notebook_sha256"]) == 64


def test_typed_parameters_reach_plain_cells(store: Store, project_dir: Path) -> None:
    check = (
        "import datetime as dt\n"
        "assert s == 'text' and isinstance(s, str)\n"
        "assert i == 3 and type(i) is int\n"
        "assert f == 2.5 and type(f) is float\n"
        "assert b is True\n"
        "assert n is None\n"
        "assert l == [1, 'a', None] and isinstance(l, list)\n"
        "assert d == {'k': {'x': 1}} and isinstance(d, dict)\n"
        "assert isinstance(execution_date, dt.datetime) and execution_date.tzinfo is not None\n"
        "assert execution_date == dt.datetime(2024, 3, 10, 7, 0, tzinfo=dt.timezone.utc)\n"
        "assert ds == '2024-03-10' and hr == '07'\n"
        "assert pipeline_run_id > 0 and trigger_name == 'pipe_trigger'\n"
        "assert env == 'staging'\n"
        "print('params ok')"
    )
    parameters = {"source": "s = 'default'\ni = 0", "tags": ["parameters"]}
    schedule = make_schedule(project_dir, [parameters, check])
    schedule.update(variables={"env": "production", "s": "schedule"})
    run = PipelineRun.create(
        pipeline_schedule_id=schedule.id,
        execution_date=datetime(2024, 3, 10, 7, 0, tzinfo=UTC),
        variables={
            "s": "text",
            "i": 3,
            "f": 2.5,
            "b": True,
            "n": None,
            "l": [1, "a", None],
            "d": {"k": {"x": 1}},
            "env": "staging",
        },
    )
    outcome = run_now(store, run)
    assert outcome.status == "completed", outcome
    assert "params ok" in fresh_run(run.id).logs("cell_1")


def test_failing_block_records_traceback_and_cancels_later_blocks(
    store: Store, project_dir: Path
) -> None:
    schedule = make_schedule(
        project_dir, ["x = 1", "def boom():\n    raise ValueError('bad input 42')\nboom()", "y = 2"]
    )
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)
    outcome = run_now(store, run)
    run = fresh_run(run.id)
    assert outcome.status == "failed" and run.status == "failed"
    statuses = block_statuses(run)
    assert statuses == {"cell_0": "completed", "cell_1": "failed", "cell_2": "cancelled"}
    failed = next(b for b in run.block_runs if b.block_uuid == "cell_1")
    assert "ValueError" in (failed.error or "") and "bad input 42" in (failed.error or "")
    assert "boom()" in (failed.error or "")  # the traceback, not just the message
    assert "\x1b[" not in (failed.error or "")
    assert "bad input 42" in run.logs("cell_1")


def test_allow_blocks_to_fail_runs_later_blocks(store: Store, project_dir: Path) -> None:
    schedule = make_schedule(
        project_dir, ["raise RuntimeError('no')", "print('still here')"], allow_blocks_to_fail=True
    )
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)
    outcome = run_now(store, run)
    run = fresh_run(run.id)
    assert outcome.status == "completed"
    assert block_statuses(run) == {"cell_0": "failed", "cell_1": "completed"}
    assert "still here" in run.logs("cell_1")


def test_retries_then_success(store: Store, project_dir: Path, tmp_path: Path) -> None:
    counter = tmp_path / "attempts"
    cell = (
        "from pathlib import Path\n"
        f"p = Path({str(counter)!r})\n"
        "n = int(p.read_text()) + 1 if p.exists() else 1\n"
        "p.write_text(str(n))\n"
        "if n < 3:\n    raise RuntimeError(f'attempt {n}')\n"
        "print('succeeded on', n)"
    )
    schedule = make_schedule(project_dir, [cell], retries=2, retry_delay=0)
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)
    outcome = run_now(store, run)
    run = fresh_run(run.id)
    assert outcome.status == "completed", outcome
    block = run.block_runs[0]
    assert block.status == "completed" and block.metrics["attempts"] == 3
    assert counter.read_text() == "3"
    assert "succeeded on 3" in run.logs("cell_0")


def test_retries_exhausted_fail(store: Store, project_dir: Path) -> None:
    schedule = make_schedule(project_dir, ["raise RuntimeError('always')"], retries=1)
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)
    outcome = run_now(store, run)
    block = fresh_run(run.id).block_runs[0]
    assert outcome.status == "failed" and block.metrics["attempts"] == 2


def test_run_timeout_kills_the_kernel(store: Store, project_dir: Path) -> None:
    schedule = make_schedule(
        project_dir,
        ["import os\nprint('PID', os.getpid(), flush=True)", "import time\ntime.sleep(120)"],
        timeout=3,
        timeout_status="cancelled",
    )
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)
    outcome = run_now(store, run)
    run = fresh_run(run.id)
    assert outcome.status == "cancelled", outcome
    assert "timed out" in (outcome.reason or "")
    pid = int(run.logs("cell_0").split("PID")[1].split()[0])
    assert not alive(pid)
    assert block_statuses(run)["cell_1"] in ("failed", "cancelled")


def test_block_timeout_fails_with_timeout_status(store: Store, project_dir: Path) -> None:
    schedule = make_schedule(project_dir, ["import time\ntime.sleep(60)", "x = 1"], block_timeout=2)
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)
    outcome = run_now(store, run)
    run = fresh_run(run.id)
    assert outcome.status == "failed"
    assert block_statuses(run) == {"cell_0": "failed", "cell_1": "cancelled"}


def test_cancel_mid_cell_through_the_database(
    store: Store, project_dir: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    schedule = make_schedule(
        project_dir,
        [
            "import time, pathlib\n"
            f"pathlib.Path({str(marker)!r}).write_text('go')\ntime.sleep(120)",
            "x = 1",
        ],
    )
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)

    async def scenario() -> Any:
        task = asyncio.ensure_future(_execute(store, run.id))
        # Wait until the cell is really running: the marker file appears (bounded loop).
        assert await wait_until(marker.exists), "the cell never started"
        fresh_run(run.id).update(status="cancelled")
        return await asyncio.wait_for(task, timeout=30)

    outcome = asyncio.run(scenario())
    run = fresh_run(run.id)
    assert run.status == "cancelled" and outcome.status == "cancelled"
    assert block_statuses(run) == {"cell_0": "cancelled", "cell_1": "cancelled"}


def test_kernel_that_kills_itself_fails_the_block_and_next_run_is_fine(
    store: Store, project_dir: Path
) -> None:
    schedule = make_schedule(
        project_dir, ["import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "x = 1"]
    )
    first = PipelineRun.create(pipeline_schedule_id=schedule.id)
    outcome = run_now(store, first)
    first = fresh_run(first.id)
    assert outcome.status == "failed"
    block = first.block_runs[0]
    assert block.status == "failed" and "kernel died" in (block.error or "")
    assert "killed by SIGKILL" in (block.error or "")  # the signal is named
    other = make_schedule(project_dir, ["x = 41 + 1\nprint(x)"], name="other")
    second = PipelineRun.create(pipeline_schedule_id=other.id)
    assert run_now(store, second).status == "completed"


def test_run_not_initial_is_left_alone(store: Store, project_dir: Path) -> None:
    schedule = make_schedule(project_dir, ["x = 1"])
    run = PipelineRun.create(pipeline_schedule_id=schedule.id, status="running")
    outcome = run_now(store, run)
    assert "left alone" in (outcome.reason or "")
    assert fresh_run(run.id).block_runs_count == 0


def test_missing_notebook_fails_the_run_with_the_reason(store: Store, project_dir: Path) -> None:
    schedule = make_schedule(project_dir, ["x = 1"])
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)
    (project_dir / "pipe.ipynb").unlink()
    outcome = run_now(store, run)
    run = fresh_run(run.id)
    assert run.status == "failed" and "no notebook" in run.metrics["error"]
    assert outcome.status == "failed"


def test_fifty_runs_leave_no_process_behind(store: Store, project_dir: Path) -> None:
    schedule = make_schedule(project_dir, ["x = 1", "y = x + 1"])
    before = child_pids()

    async def many() -> list[str]:
        pool = KernelPool(size=2)
        await pool.start()
        try:
            statuses = []
            for _ in range(50):
                run = PipelineRun.create(pipeline_schedule_id=schedule.id)
                statuses.append((await PipelineRunner(store, pool).execute(run.id)).status)
            return statuses
        finally:
            await pool.close()

    statuses = asyncio.run(many())
    assert statuses == ["completed"] * 50
    leftover = {pid for pid in child_pids() - before if alive(pid)}
    assert leftover == set()


def test_run_created_and_executed_from_a_notebook_cell(store: Store, project_dir: Path) -> None:
    """The Python API in a real kernel: PipelineRun.create, then ``await run.execute()``."""
    import nbformat
    from nbclient import NotebookClient

    write_notebook(project_dir / "inner.ipynb", ["print('inner ran', 6 * 7)"])
    driver = nbformat.v4.new_notebook()
    driver.cells = [
        nbformat.v4.new_code_cell(
            "from mage_nb_sched import PipelineRun\n"
            "run = PipelineRun.create(pipeline_uuid='inner', variables={'who': 'notebook'})\n"
            "outcome = await run.execute()\n"
            "print('STATUS', run.status, run.block_runs_count)"
        )
    ]
    env = dict(os.environ, MAGE_NB_SCHED_PROJECT_DIR=str(project_dir))
    client = NotebookClient(driver, kernel_name="python3", timeout=120)
    client.execute(cwd=str(project_dir), env=env)
    text = "".join(o.get("text", "") for o in driver.cells[0].outputs if o.output_type == "stream")
    assert "STATUS completed 1" in text
    run = PipelineRun.query.filter_by(pipeline_uuid="inner").one()
    assert "inner ran 42" in run.logs("cell_0")


def no_block_running(run: PipelineRun) -> bool:
    return all(block.status != "running" for block in run.block_runs)


def test_timeout_stops_the_run_even_when_blocks_may_fail(store: Store, project_dir: Path) -> None:
    schedule = make_schedule(
        project_dir,
        ["import time\ntime.sleep(60)", "x = 1"],
        block_timeout=2,
        allow_blocks_to_fail=True,
    )
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)
    outcome = run_now(store, run)
    run = fresh_run(run.id)
    assert outcome.status == "failed" and "timed out" in (outcome.reason or "")
    assert block_statuses(run) == {"cell_0": "failed", "cell_1": "cancelled"}
    assert no_block_running(run)


def test_dead_kernel_stops_the_run_even_when_blocks_may_fail(
    store: Store, project_dir: Path
) -> None:
    schedule = make_schedule(
        project_dir,
        ["import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "x = 1"],
        allow_blocks_to_fail=True,
    )
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)
    outcome = run_now(store, run)
    run = fresh_run(run.id)
    assert outcome.status == "failed"
    assert block_statuses(run) == {"cell_0": "failed", "cell_1": "cancelled"}


def test_cancel_during_a_retry_delay(store: Store, project_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "failed_once"
    schedule = make_schedule(
        project_dir,
        [f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\nraise RuntimeError('x')"],
        retries=3,
        retry_delay=60,
    )
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)

    async def scenario() -> Any:
        pool = KernelPool(size=0)
        await pool.start()
        runner = PipelineRunner(store, pool)
        try:
            task = asyncio.ensure_future(runner.execute(run.id))
            assert await wait_until(marker.exists)
            runner.cancel(run.id)
            return await asyncio.wait_for(task, timeout=30)
        finally:
            await pool.close()

    outcome = asyncio.run(scenario())
    run = fresh_run(run.id)
    assert outcome.status == "cancelled" and run.status == "cancelled"
    assert block_statuses(run) == {"cell_0": "cancelled"}


def test_stopping_the_driver_fails_the_run_and_kills_the_kernel(
    store: Store, project_dir: Path, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    schedule = make_schedule(
        project_dir,
        [
            "import os, time, pathlib\n"
            f"pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))\ntime.sleep(120)",
            "x = 1",
        ],
    )
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)

    async def scenario() -> int:
        pool = KernelPool(size=0)
        await pool.start()
        try:
            task = asyncio.ensure_future(PipelineRunner(store, pool).execute(run.id))
            assert await wait_until(pid_file.exists)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return int(pid_file.read_text())
        finally:
            await pool.close()

    kernel_pid = asyncio.run(scenario())
    run = fresh_run(run.id)
    assert run.status == "failed" and "worker stopped" in run.metrics["error"]
    assert no_block_running(run)
    assert not alive(kernel_pid)


def test_dunder_variables_cannot_break_the_kernel(store: Store, project_dir: Path) -> None:
    schedule = make_schedule(
        project_dir,
        ["assert mage_nb_sched_variables['__import__'] == 'x'\nimport os\nprint('fine')"],
    )
    run = PipelineRun.create(
        pipeline_schedule_id=schedule.id, variables={"__import__": "x", "get_ipython": 1}
    )
    outcome = run_now(store, run)
    assert outcome.status == "completed", outcome
    assert "fine" in fresh_run(run.id).logs("cell_0")


def test_a_retried_block_gets_the_same_upstream_output(
    store: Store, project_dir: Path, tmp_path: Path
) -> None:
    flag = tmp_path / "failed_once"
    cells = [
        "from mage_nb_sched import data_loader, transformer",
        "@data_loader\ndef load(*args, **kwargs):\n    return 10",
        "import pathlib\n"
        "@transformer\ndef double(value, *args, **kwargs):\n    return value * 2\n"
        f"flag = pathlib.Path({str(flag)!r})\n"
        "if not flag.exists():\n    flag.write_text('x')\n    raise RuntimeError('once')",
    ]
    schedule = make_schedule(project_dir, cells, retries=1)
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)
    outcome = run_now(store, run)
    run = fresh_run(run.id)
    assert outcome.status == "completed", outcome
    assert run.get_output("double") == 20  # not 40: the retry got load's output again


def test_a_notebook_whose_kernel_is_not_installed_fails_clearly(
    store: Store, project_dir: Path
) -> None:
    write_notebook(
        project_dir / "other_kernel.ipynb",
        ["x = 1"],
        metadata={"kernelspec": {"name": "no-such-kernel", "display_name": "Nope"}},
    )
    run = PipelineRun.create(pipeline_uuid="other_kernel")
    outcome = run_now(store, run)
    run = fresh_run(run.id)
    assert outcome.status == "failed" and run.status == "failed"
    assert "no-such-kernel" in run.metrics["error"] and "Install" in run.metrics["error"]
    assert block_statuses(run) == {"cell_0": "cancelled"}
