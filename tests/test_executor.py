"""The local executor: runs in worker processes, off the caller's loop, survives worker death."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from conftest import write_notebook
from processes import alive, child_pids, wait_until

from mage_nb_sched import PipelineRun, PipelineSchedule
from mage_nb_sched.execution.executors import LocalExecutor
from mage_nb_sched.execution.executors.base import ExecutorError
from mage_nb_sched.store import Store

pytestmark = pytest.mark.kernel


def schedule_for(project_dir: Path, name: str, cells: list[str]) -> PipelineSchedule:
    write_notebook(project_dir / f"{name}.ipynb", cells)
    return PipelineSchedule.create(name=name, pipeline_uuid=name, schedule_interval="@daily")


def test_runs_execute_in_worker_processes_off_the_loop(
    store: Store, project_dir: Path, tmp_path: Path
) -> None:
    # "Off the loop" without a stopwatch: each cell, once running, waits for an answer that only
    # a coroutine on the caller's loop writes, after that loop has gone on ticking. If running a
    # cell blocked the caller's loop, no answer could come while the cell runs: the cell gives up
    # (a hang guard, not a time limit) and its run fails.
    handshake = tmp_path / "handshake"
    handshake.mkdir()
    schedule = schedule_for(
        project_dir,
        "work",
        [
            "import os, time, pathlib, uuid\n"
            "chain, pid = [], os.getpid()\n"
            "while pid > 1:\n"
            "    pid = int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1])\n"
            "    chain.append(pid)\n"
            "print('CHAIN', *chain)\n"
            f"me = pathlib.Path({str(handshake)!r}) / uuid.uuid4().hex\n"
            "me.with_suffix('.running').touch()\n"
            "guard = time.monotonic() + 30\n"
            "while not me.with_suffix('.answer').exists():\n"
            "    assert time.monotonic() < guard, 'no answer: the calling loop was blocked'\n"
            "    time.sleep(0.01)\n"
            "print('ANSWERED', me.with_suffix('.answer').read_text())"
        ],
    )

    async def scenario() -> tuple[list[Any], list[str], list[int]]:
        executor = LocalExecutor(store, workers=2, kernel_pool_size=1)
        await executor.start()
        ticks = 0
        answered: list[str] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                await asyncio.sleep(0.01)
                ticks += 1

        async def answer() -> None:
            # Answer each running cell, but only after the loop ticked again since the cell
            # was seen running: the loop made progress while that cell was blocked waiting.
            seen: dict[Path, int] = {}
            while not stop.is_set():
                for running in handshake.glob("*.running"):
                    seen.setdefault(running, ticks)
                    reply = running.with_suffix(".answer")
                    if ticks >= seen[running] + 2 and not reply.exists():
                        draft = reply.with_suffix(".draft")
                        draft.write_text(f"after {ticks - seen[running]} ticks")
                        draft.replace(reply)  # atomic: the cell never reads half an answer
                        answered.append(running.stem)
                await asyncio.sleep(0.01)

        background = [asyncio.ensure_future(ticker()), asyncio.ensure_future(answer())]
        try:
            runs = [PipelineRun.create(pipeline_schedule_id=schedule.id) for _ in range(4)]
            futures = [await executor.submit(run.id) for run in runs]
            results = await asyncio.gather(*futures)
            return results, answered, executor.worker_pids
        finally:
            stop.set()
            await asyncio.gather(*background)
            await executor.shutdown(grace=5)

    results, answered, worker_pids = asyncio.run(scenario())
    assert [r.status for r in results] == ["completed"] * 4, [r.reason for r in results]
    # The caller's loop ran (ticked, answered) while each of the four cells was running.
    assert len(answered) == len(set(answered)) == 4, answered
    for result in results:
        run = PipelineRun.query.get(result.run_id)
        logs = run.logs("cell_0")
        assert "ANSWERED after" in logs, logs
        chain = [int(p) for p in logs.split("CHAIN")[1].splitlines()[0].split()]
        assert set(chain) & set(worker_pids), "kernel not under a worker"
        assert chain[0] != os.getpid(), "the kernel is a direct child of the caller"


def test_killed_worker_fails_its_run_and_leaves_no_kernel(
    store: Store, project_dir: Path, tmp_path: Path
) -> None:
    pid_file = tmp_path / "kernel.pid"
    schedule = schedule_for(
        project_dir,
        "slow",
        [
            "import os, time, pathlib\n"
            f"pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))"
            "\ntime.sleep(120)"
        ],
    )
    quick = schedule_for(project_dir, "quick", ["x = 1"])
    # multiprocessing's resource tracker lives as long as this interpreter once any spawn-context
    # process has started; start it now so it is not mistaken for something left behind.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    before = child_pids()

    async def scenario() -> tuple[Any, Any, int]:
        executor = LocalExecutor(store, workers=1, kernel_pool_size=1)
        await executor.start()
        try:
            run = PipelineRun.create(pipeline_schedule_id=schedule.id)
            future = await executor.submit(run.id)
            assert await wait_until(pid_file.exists), "the cell never started"
            kernel_pid = int(pid_file.read_text())
            os.kill(executor.worker_pids[0], signal.SIGKILL)
            result = await asyncio.wait_for(future, timeout=30)
            assert await wait_until(lambda: not alive(kernel_pid)), "kernel outlived its worker"
            # A replacement worker takes the next run.
            assert await wait_until(lambda: len(executor.worker_pids) == 1)
            nxt = PipelineRun.create(pipeline_schedule_id=quick.id)
            second = await asyncio.wait_for(await executor.submit(nxt.id), timeout=60)
            return result, second, kernel_pid
        finally:
            await executor.shutdown(grace=5)

    result, second, kernel_pid = asyncio.run(scenario())
    assert result.status == "failed" and "died" in (result.reason or "")
    run = PipelineRun.query.get(result.run_id)
    assert run.status == "failed" and "died" in run.metrics["error"]
    block = run.block_runs[0]
    assert block.status == "failed" and "died" in (block.error or "")
    assert second.status == "completed"
    assert not alive(kernel_pid)
    leftover = {pid for pid in child_pids() - before if alive(pid)}
    assert leftover == set(), [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in leftover]


def test_cancel_through_the_executor(store: Store, project_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    schedule = schedule_for(
        project_dir,
        "cancel_me",
        [f"import time, pathlib\npathlib.Path({str(marker)!r}).write_text('x')\ntime.sleep(120)"],
    )

    async def scenario() -> Any:
        executor = LocalExecutor(store, workers=1, kernel_pool_size=1)
        await executor.start()
        try:
            run = PipelineRun.create(pipeline_schedule_id=schedule.id)
            future = await executor.submit(run.id)
            assert await wait_until(marker.exists)
            await executor.cancel(run.id)
            return await asyncio.wait_for(future, timeout=30)
        finally:
            await executor.shutdown(grace=5)

    result = asyncio.run(scenario())
    assert result.status == "cancelled"
    assert PipelineRun.query.get(result.run_id).status == "cancelled"


def test_spawned_kernels_die_with_their_owner(tmp_path: Path) -> None:
    """Without the fork server a kernel is spawned; it must still die with a killed owner."""
    import subprocess
    import sys

    script = tmp_path / "owner.py"
    script.write_text(
        "import asyncio, sys\n"
        "from mage_nb_sched.execution.kernels import KernelPool\n"
        "async def main():\n"
        "    pool = KernelPool(size=0, use_forkserver=False)\n"
        "    await pool.start()\n"
        "    handle = await pool.acquire()\n"
        "    print(handle.pid, flush=True)\n"
        "    await asyncio.sleep(3600)\n"
        "asyncio.run(main())\n"
    )
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        kernel_pid = int(owner.stdout.readline())
        assert alive(kernel_pid)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=10)
        assert asyncio.run(wait_until(lambda: not alive(kernel_pid), timeout=15))
    finally:
        if owner.poll() is None:
            owner.kill()


def test_runs_fail_with_a_reason_when_no_worker_can_start(store: Store) -> None:
    """Workers that die at start (here: a database they cannot open) are not respawned
    forever: start() says so (it does not report ready), and a run submitted then fails at
    once with a reason instead of waiting."""
    from types import SimpleNamespace

    from processes import until

    run = PipelineRun.create(pipeline_uuid="my_pipeline")

    async def scenario() -> Any:
        executor = LocalExecutor(store, workers=1, kernel_pool_size=0)
        # The workers get a URL they cannot open; the parent keeps the real store.
        executor.store = SimpleNamespace(  # type: ignore[assignment]
            url="sqlite:////proc/no-such-dir/scheduler.db",
            project_dir=store.project_dir,
            write_engine=store.write_engine,
        )
        try:
            with pytest.raises(ExecutorError, match="no worker process could start") as raised:
                await executor.start()
            assert "exit code 1" in str(raised.value)
            assert executor.worker_pids == [] and executor.process_pids == []
            future = await executor.submit(run.id)
            result = await asyncio.wait_for(future, 10)
            await until(lambda: str(PipelineRun.query.get(run.id).status) == "failed", 10)
            return result
        finally:
            await executor.shutdown(0)

    result = asyncio.run(scenario())
    assert result.status == "failed" and "no worker process could start" in (result.reason or "")
    assert "no worker process could start" in PipelineRun.query.get(run.id).metrics["error"]


def test_lazy_workers_start_for_the_work_there_is_and_stop_when_idle(
    store: Store, project_dir: Path
) -> None:
    """With ``lazy_workers``: no process until a run is submitted, as many workers as the runs
    need (up to ``workers``), none again ``idle_timeout`` after the last run ended."""
    from multiprocessing import resource_tracker

    from processes import until

    resource_tracker.ensure_running()  # not ours; started by other tests of this process
    before = {pid for pid in child_pids() if alive(pid)}
    schedule = schedule_for(project_dir, "quick", ["x = 1"])

    async def scenario() -> tuple[list[str], list[str]]:
        executor = LocalExecutor(
            store, workers=2, kernel_pool_size=0, lazy_workers=True, idle_timeout=0.2
        )
        await executor.start()
        try:
            assert executor.process_pids == [] and executor.capacity == 2
            statuses = []
            for _ in range(2):  # the second run after the workers stopped for being idle
                run = PipelineRun.create(pipeline_schedule_id=schedule.id)
                result = await asyncio.wait_for(await executor.submit(run.id), 60)
                statuses.append(result.status)
                await until(lambda: not executor.process_pids, 30, "idle workers stop")
                await until(
                    lambda: not {pid for pid in child_pids() if alive(pid)} - before,
                    30,
                    "no worker process is left",
                )
            return statuses, [event.kind for event in executor.events]
        finally:
            await executor.shutdown(0)

    statuses, kinds = asyncio.run(scenario())
    assert statuses == ["completed", "completed"]
    # One run at a time needs one worker (of two), started for it each time.
    assert kinds == ["spawned", "ready", "retired", "exited"] * 2, kinds
