"""The runner under pressure: a write-locked database, huge outputs, dying kernels, its logs.

No stopwatch anywhere: "the loop keeps running" is a count of ticks made while a write is
known to wait for the lock, "longer than the busy timeout" is a retry warning (which only comes
after a timed-out attempt), and waits for events carry generous hang guards only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import write_notebook
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from mage_nb_sched import PipelineRun, PipelineSchedule
from mage_nb_sched.core.errors import ValidationError
from mage_nb_sched.execution import runner as runner_module
from mage_nb_sched.execution.kernels import KernelPool
from mage_nb_sched.execution.runner import (
    PipelineRunner,
    _BoundedText,
    _capped_client_class,
    _OutputCap,
    _RunDatabase,
    truncation_marker,
)
from mage_nb_sched.service.transitions import database_unavailable
from mage_nb_sched.store import Store
from mage_nb_sched.store import engine as engine_module

LOGGER = "mage_nb_sched.execution.runner"
#: A hang guard for awaited events (never an expectation about speed).
HANG_GUARD = 120.0
MiB = 1024 * 1024


def make_schedule(project_dir: Path, cells: list[Any], name: str = "pipe") -> PipelineSchedule:
    write_notebook(project_dir / f"{name}.ipynb", cells)
    return PipelineSchedule.create(
        name=f"{name}_trigger", pipeline_uuid=name, schedule_interval="@daily"
    )


def fresh_run(run_id: int) -> PipelineRun:
    run = PipelineRun.query.get(run_id)
    assert run is not None
    return run


def db_path(store: Store) -> str:
    database = make_url(store.url).database
    assert database
    return database


class WriteLock:
    """SQLite's write lock, held from a connection of its own (``BEGIN IMMEDIATE``)."""

    def __init__(self, path: str) -> None:
        self.connection = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=HANG_GUARD
        )
        self.held = False

    def take(self) -> None:
        self.connection.execute("BEGIN IMMEDIATE")
        self.held = True

    def release(self, commit: bool = False) -> None:
        if self.held:
            self.connection.execute("COMMIT" if commit else "ROLLBACK")
            self.held = False

    def read(self, sql: str, *args: Any) -> Any:
        return self.connection.execute(sql, args).fetchone()

    def close(self) -> None:
        self.release()
        self.connection.close()


def lock_before_first_call(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    lock: WriteLock,
    matches: Callable[..., bool] = lambda *args, **kwargs: True,
) -> threading.Event:
    """Make the runner's ``name`` (a database step) take ``lock`` right before its first
    matching call — in the thread that then runs the step, so the step is certain to meet the
    lock — and set the returned event."""
    real = getattr(runner_module, name)
    entered = threading.Event()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not entered.is_set() and matches(*args, **kwargs):
            lock.take()
            entered.set()
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_module, name, wrapper)
    return entered


class Ticker:
    """Counts turns of the event loop it runs on."""

    def __init__(self) -> None:
        self.ticks = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0.001)
            self.ticks += 1

    async def reach(self, count: int) -> None:
        while self.ticks < count:
            await asyncio.sleep(0.001)


class Records(logging.Handler):
    """Log records of the runner; ``event`` is set (on the loop) by the first that ``wanted``."""

    def __init__(self, wanted: Callable[[logging.LogRecord], bool]) -> None:
        super().__init__(logging.DEBUG)
        self.wanted = wanted
        self.records: list[logging.LogRecord] = []
        self.matched: list[logging.LogRecord] = []
        self.event = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self.wanted(record):
            self.matched.append(record)
            self.loop.call_soon_threadsafe(self.event.set)


# --------------------------------------------------------------------------------------------
# 1. Database work is off the event loop
# --------------------------------------------------------------------------------------------


@pytest.mark.kernel
@pytest.mark.parametrize("step", ["claim_run", "_set_block", "_finish_run"])
def test_a_write_waiting_for_the_lock_does_not_stall_the_loop(
    store: Store, project_dir: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    schedule = make_schedule(project_dir, ["x = 41 + 1\nprint(x)"])
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)
    lock = WriteLock(db_path(store))

    def matches(*args: Any, **kwargs: Any) -> bool:
        # For block writes: the one recording the block completed (after its code ran).
        return step != "_set_block" or kwargs.get("status") == "completed"

    entered = lock_before_first_call(monkeypatch, step, lock, matches)

    async def scenario() -> Any:
        ticker = Ticker()
        ticking = asyncio.ensure_future(ticker.run())
        pool = KernelPool(size=0)
        await pool.start()
        try:
            task = asyncio.ensure_future(PipelineRunner(store, pool).execute(run.id))
            assert await asyncio.to_thread(entered.wait, HANG_GUARD), "the step never ran"
            # The step now waits in its thread for the lock (busy timeout: 30 s). Were it on
            # this loop, nothing here would run until it gave up.
            await ticker.reach(ticker.ticks + 50)
            assert not task.done()
            status = lock.read("SELECT status FROM pipeline_run WHERE id = ?", run.id)[0]
            if step == "claim_run":
                assert status == "initial"  # the claim is still waiting
            elif step == "_set_block":
                assert status == "running"
                block = lock.read("SELECT status FROM block_run WHERE pipeline_run_id = ?", run.id)
                assert block[0] == "running"  # its "completed" is still waiting
            else:
                assert status == "running"  # the final write is still waiting
            lock.release()
            return await asyncio.wait_for(task, HANG_GUARD)
        finally:
            ticking.cancel()
            await pool.close()

    try:
        outcome = asyncio.run(scenario())
    finally:
        lock.close()
    assert outcome.status == "completed", outcome
    run = fresh_run(run.id)
    assert run.status == "completed"
    assert [(b.block_uuid, str(b.status)) for b in run.block_runs] == [("cell_0", "completed")]


# --------------------------------------------------------------------------------------------
# 2. The final write outlasts a lock held past the busy timeout
# --------------------------------------------------------------------------------------------


@pytest.fixture
def short_busy_timeout(store: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    """The store with a 50 ms SQLite busy timeout (new connections read the setting)."""
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 50)
    store.engine.dispose()
    return store


def _retry_warning_for(run_id: int, path: str) -> Callable[[logging.LogRecord], bool]:
    def wanted(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return (
            record.levelno == logging.WARNING
            and f"run {run_id}:" in message
            and path in message
            and "final status" in message
            and "retrying" in message
        )

    return wanted


@pytest.mark.kernel
def test_a_finished_run_is_recorded_completed_after_a_lock_past_the_busy_timeout(
    short_busy_timeout: Store, project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = short_busy_timeout
    schedule = make_schedule(project_dir, ["print('done')"])
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)
    path = db_path(store)
    lock = WriteLock(path)
    entered = lock_before_first_call(monkeypatch, "_finish_run", lock)

    async def scenario() -> tuple[Any, list[logging.LogRecord]]:
        records = Records(_retry_warning_for(run.id, path))
        logging.getLogger(LOGGER).addHandler(records)
        pool = KernelPool(size=0)
        await pool.start()
        try:
            task = asyncio.ensure_future(PipelineRunner(store, pool).execute(run.id))
            # A retry warning comes only after an attempt timed out: the lock has been held
            # past the busy timeout across the run's end.
            await asyncio.wait_for(records.event.wait(), HANG_GUARD)
            assert entered.is_set() and not task.done()
            assert lock.read("SELECT status FROM pipeline_run WHERE id = ?", run.id)[0] == (
                "running"
            )
            lock.release()
            return await asyncio.wait_for(task, HANG_GUARD), records.records
        finally:
            logging.getLogger(LOGGER).removeHandler(records)
            await pool.close()

    try:
        outcome, records = asyncio.run(scenario())
    finally:
        lock.close()
    assert outcome.status == "completed", outcome
    run = fresh_run(run.id)
    assert run.status == "completed" and "error" not in (run.metrics or {})
    assert not [r for r in records if r.levelno >= logging.ERROR]
    answered = [r.getMessage() for r in records if "answered after" in r.getMessage()]
    assert answered and f"run {run.id}:" in answered[0]


@pytest.mark.kernel
def test_the_retried_final_write_never_overwrites_a_run_taken_over_elsewhere(
    short_busy_timeout: Store, project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = short_busy_timeout
    schedule = make_schedule(project_dir, ["print('done')"])
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)
    path = db_path(store)
    lock = WriteLock(path)
    lock_before_first_call(monkeypatch, "_finish_run", lock)

    async def scenario() -> Any:
        records = Records(_retry_warning_for(run.id, path))
        logging.getLogger(LOGGER).addHandler(records)
        pool = KernelPool(size=0)
        await pool.start()
        try:
            task = asyncio.ensure_future(PipelineRunner(store, pool).execute(run.id))
            await asyncio.wait_for(records.event.wait(), HANG_GUARD)
            # Meanwhile another executor took the run over (a new claim): commit that.
            lock.connection.execute(
                "UPDATE pipeline_run SET claim_token = 'elsewhere' WHERE id = ?", (run.id,)
            )
            lock.release(commit=True)
            return await asyncio.wait_for(task, HANG_GUARD)
        finally:
            logging.getLogger(LOGGER).removeHandler(records)
            await pool.close()

    try:
        outcome = asyncio.run(scenario())
    finally:
        lock.close()
    assert outcome.status == "running"  # what the run is: not ours to finish any more
    row = sqlite3.connect(path).execute(
        "SELECT status, claim_token, completed_at FROM pipeline_run WHERE id = ?", (run.id,)
    )
    assert row.fetchone() == ("running", "elsewhere", None)


def _locked() -> OperationalError:
    return OperationalError("UPDATE ...", {}, sqlite3.OperationalError("database is locked"))


def test_database_unavailable_tells_try_again_from_wrong() -> None:
    assert database_unavailable(_locked())
    table = sqlite3.OperationalError("database table is locked")
    assert database_unavailable(OperationalError("x", {}, table))
    missing = sqlite3.OperationalError("no such table: pipeline_run")
    assert not database_unavailable(OperationalError("x", {}, missing))
    assert not database_unavailable(IntegrityError("x", {}, sqlite3.IntegrityError("UNIQUE")))
    assert not database_unavailable(ValueError("database is locked"))


def test_run_database_retries_until_answered_warning_once_per_n_attempts(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "_retry_delay", lambda attempt: 0.0)
    failures = 2 * runner_module.RETRY_WARN_EVERY + 3
    calls: list[int] = []

    def flaky(value: int) -> int:
        calls.append(value)
        if len(calls) <= failures:
            raise _locked()
        return value * 2

    async def scenario() -> tuple[int, list[logging.LogRecord]]:
        records = Records(lambda record: False)
        logging.getLogger(LOGGER).addHandler(records)
        try:
            pool = runner_module.ThreadPoolExecutor(1)
            result = await _RunDatabase(store, pool, 7)("writing something", flaky, 21)
            pool.shutdown()
            return result, records.records
        finally:
            logging.getLogger(LOGGER).removeHandler(records)

    result, records = asyncio.run(scenario())
    assert result == 42 and len(calls) == failures + 1
    retrying = [r.getMessage() for r in records if "retrying" in r.getMessage()]
    assert len(retrying) == 3  # attempts 1, 1 + N, 1 + 2N
    assert all("run 7:" in m and db_path(store) in m and "writing something" in m for m in retrying)
    assert all(r.levelno == logging.WARNING for r in records)


def test_run_database_raises_errors_a_retry_would_only_repeat(store: Store) -> None:
    def broken() -> None:
        raise OperationalError("x", {}, sqlite3.OperationalError("no such table: pipeline_run"))

    async def scenario() -> None:
        pool = runner_module.ThreadPoolExecutor(1)
        try:
            await _RunDatabase(store, pool, 7)("reading", broken)
        finally:
            pool.shutdown()

    with pytest.raises(OperationalError, match="no such table"):
        asyncio.run(scenario())


def test_run_database_keeps_the_order_of_calls_when_a_caller_is_cancelled(store: Store) -> None:
    order: list[str] = []
    first_running = threading.Event()
    let_first_finish = threading.Event()

    def first() -> None:
        first_running.set()
        assert let_first_finish.wait(HANG_GUARD)
        order.append("first")

    def second() -> None:
        order.append("second")

    async def scenario() -> None:
        pool = runner_module.ThreadPoolExecutor(4)  # room to run both at once, were it allowed
        db = _RunDatabase(store, pool, 7)
        caller = asyncio.ensure_future(db("first", first))
        assert await asyncio.to_thread(first_running.wait, HANG_GUARD)
        caller.cancel()  # the worker stops: the thread runs on
        await asyncio.gather(caller, return_exceptions=True)
        follow_up = asyncio.ensure_future(db("second", second))
        await asyncio.sleep(0)  # let it start: it must wait for the first call
        assert order == []
        let_first_finish.set()
        await asyncio.wait_for(follow_up, HANG_GUARD)
        pool.shutdown()

    asyncio.run(scenario())
    assert order == ["first", "second"]


# --------------------------------------------------------------------------------------------
# 3. Output caps
# --------------------------------------------------------------------------------------------


def _stream(text: str, name: str = "stdout") -> dict[str, Any]:
    return {
        "msg_type": "stream",
        "header": {"msg_type": "stream", "msg_id": "m"},
        "parent_header": {"msg_id": "parent"},
        "metadata": {},
        "content": {"name": name, "text": text},
    }


def _display(data: dict[str, Any], kind: str = "display_data") -> dict[str, Any]:
    return {
        "msg_type": kind,
        "header": {"msg_type": kind, "msg_id": "m"},
        "parent_header": {"msg_id": "parent"},
        "metadata": {},
        "content": {"data": data, "metadata": {}, "transient": {}, "execution_count": 1},
    }


def _client_and_cell(limit: int) -> tuple[Any, Any]:
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print('x')")
    notebook.cells.append(cell)
    client = _capped_client_class()(notebook)
    client.clear_before_next_output = False  # as nbclient sets it for each cell it executes
    client.output_cap = _OutputCap(limit)
    return client, cell


def _output_bytes(cell: Any) -> int:
    total = 0
    for output in cell.outputs:
        if output["output_type"] == "stream":
            total += len(output["text"].encode())
        elif "data" in output:
            total += sum(len(str(v).encode()) for v in output["data"].values())
    return total


def test_outputs_are_capped_while_they_stream_in() -> None:
    limit = 1 * MiB
    client, cell = _client_and_cell(limit)
    marker_room = len(truncation_marker(limit, 10**12).encode()) + 1
    chunk = "é" * 32 * 1024 + "\n"  # 64 KiB + 1 of two-byte characters
    chunk_bytes = len(chunk.encode())
    count = 1000  # ~64 MiB in all
    tracemalloc.start()
    try:
        for _ in range(count):
            client.process_message(_stream(chunk), cell, 0)
            # Never more than the cap (plus the marker) held, at any point of the stream.
            assert _output_bytes(cell) <= limit + marker_room
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * limit  # the cap plus a message in flight, not the 64 MiB streamed
    kept = sum(len(o["text"].encode()) for o in cell.outputs if o["name"] == "stdout")
    assert kept <= limit and limit - kept < 2  # cut on a character boundary
    marker = cell.outputs[-1]
    assert marker["name"] == "stderr"
    assert marker["text"] == truncation_marker(limit, count * chunk_bytes - kept) + "\n"
    # nbformat accepts the capped cell.
    nbformat.validate(client.nb)


def test_a_cleared_output_frees_its_share_of_the_cap() -> None:
    client, cell = _client_and_cell(2048)
    clear = {
        "msg_type": "clear_output",
        "header": {"msg_type": "clear_output", "msg_id": "c"},
        "parent_header": {"msg_id": "parent"},
        "metadata": {},
        "content": {"wait": False},
    }
    for step in range(10):  # a progress display redrawn 10 times, 1500 bytes each
        client.process_message(clear, cell, 0)
        client.process_message(_stream(f"{step}" + "#" * 1499), cell, 0)
    assert len(cell.outputs) == 1 and cell.outputs[0]["text"].startswith("9")


def test_a_display_bigger_than_the_cap_is_replaced_by_the_marker() -> None:
    limit = 4096
    client, cell = _client_and_cell(limit)
    big = "A" * (3 * limit)
    client.process_message(_display({"image/png": big, "text/plain": "<Figure>"}), cell, 0)
    client.process_message(_display({"text/plain": "small"}, "execute_result"), cell, 0)
    assert cell.outputs[0]["data"] == {
        "text/plain": truncation_marker(limit, 3 * limit + len("<Figure>"))
    }
    assert cell.outputs[1]["data"] == {"text/plain": "small"}


def test_an_error_is_always_kept_trimmed_to_its_end() -> None:
    limit = 4096
    client, cell = _client_and_cell(limit)
    client.process_message(_stream("x" * 2 * limit), cell, 0)  # the cap is used up
    error = {
        "msg_type": "error",
        "header": {"msg_type": "error", "msg_id": "e"},
        "parent_header": {"msg_id": "parent"},
        "metadata": {},
        "content": {
            "ename": "ValueError",
            "evalue": "v" * 10 * limit,
            "traceback": [f"frame {i} " + "." * 200 for i in range(100)] + ["ValueError: vvv"],
        },
    }
    client.process_message(error, cell, 0)
    output = cell.outputs[-1]
    assert output["output_type"] == "error"
    assert output["traceback"][-1] == "ValueError: vvv"  # the end is kept
    assert "output truncated at" in output["traceback"][0]
    size = len(output["evalue"].encode()) + sum(len(line.encode()) for line in output["traceback"])
    assert size <= limit + len(output["traceback"][0].encode())


def test_block_log_is_capped_with_the_error_kept() -> None:
    log_text = _BoundedText(1000)
    for _ in range(100):
        log_text.write("[stdout] " + "z" * 91)
    error = "[error] ValueError: boom\n"
    value = log_text.getvalue(error)
    assert value.endswith(error)
    marker = truncation_marker(1000, 100 * 100 - (1000 - len(error)))
    assert marker in value
    assert len(value.encode()) <= 1000 + len(marker.encode()) + 2
    small = _BoundedText(1000)
    small.write("fits")
    assert small.getvalue("[error] e\n") == "fits[error] e\n"


@pytest.mark.parametrize("name", ["max_cell_output_bytes", "max_block_log_bytes"])
@pytest.mark.parametrize("value", [0, 1023, 2**30 + 1, True, 1.5e6, "10MB"])
def test_caps_are_bounded(store: Store, name: str, value: Any) -> None:
    with pytest.raises(ValidationError, match=name):
        PipelineRunner(store, KernelPool(size=0), **{name: value})


@pytest.mark.kernel
def test_a_cell_printing_30_mb_keeps_the_capped_output_and_the_run_completes(
    store: Store, project_dir: Path
) -> None:
    limit = 1 * MiB
    cells = [
        "for _ in range(30):\n    print('x' * 1_000_000)",  # 30 MB in many messages
        "print('y' * 5_000_000)",  # one message bigger than the cap
        "print('after')",
    ]
    schedule = make_schedule(project_dir, cells)
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)

    async def scenario() -> Any:
        pool = KernelPool(size=0)
        await pool.start()
        try:
            runner = PipelineRunner(
                store, pool, max_cell_output_bytes=limit, max_block_log_bytes=limit
            )
            return await runner.execute(run.id)
        finally:
            await pool.close()

    outcome = asyncio.run(scenario())
    assert outcome.status == "completed", outcome
    run = fresh_run(run.id)
    printed = {"cell_0": 30 * 1_000_001, "cell_1": 5_000_001}
    marker_room = len(truncation_marker(limit, 10**12).encode()) + 2
    for block in printed:
        log_text = run.logs(block)
        assert f"output truncated at {limit} bytes" in log_text
        assert len(log_text.encode()) <= limit + marker_room
    assert run.logs("cell_2") == "[stdout] after\n"
    executed_path = Path(run.executed_notebook_path or "")
    executed = json.loads(executed_path.read_text())
    by_source = {"".join(c["source"]): c for c in executed["cells"] if c["cell_type"] == "code"}
    for source, total in zip(cells[:2], printed.values(), strict=True):
        outputs = by_source[source]["outputs"]
        kept = sum(len("".join(o["text"]).encode()) for o in outputs if o["name"] == "stdout")
        assert kept == limit
        assert outputs[-1]["name"] == "stderr"
        assert "".join(outputs[-1]["text"]) == truncation_marker(limit, total - kept) + "\n"
    assert "".join(by_source[cells[2]]["outputs"][0]["text"]) == "after\n"
    # The notebook holds the two capped cells and little else.
    assert executed_path.stat().st_size <= 2 * (limit + marker_room) + 64 * 1024


# --------------------------------------------------------------------------------------------
# 4. One INFO line at the start and at the end of a run
# --------------------------------------------------------------------------------------------


@pytest.mark.kernel
def test_a_run_logs_one_line_when_it_starts_and_one_when_it_finishes(
    store: Store, project_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fine = make_schedule(project_dir, ["x = 1"], name="fine")
    broken = make_schedule(project_dir, ["raise ValueError('boom')"], name="broken")
    runs = [
        PipelineRun.create(pipeline_schedule_id=fine.id),
        PipelineRun.create(pipeline_schedule_id=broken.id),
    ]

    async def scenario() -> list[Any]:
        pool = KernelPool(size=0)
        await pool.start()
        try:
            runner = PipelineRunner(store, pool)
            return [await runner.execute(run.id) for run in runs]
        finally:
            await pool.close()

    caplog.set_level(logging.INFO, logger=LOGGER)
    outcomes = asyncio.run(scenario())
    assert [o.status for o in outcomes] == ["completed", "failed"]
    for run, schedule, status in zip(runs, (fine, broken), ("completed", "failed"), strict=True):
        mine = [
            r
            for r in caplog.records
            if r.name == LOGGER
            and r.levelno == logging.INFO
            and getattr(r, "run_id", None) == run.id
        ]
        started, finished = (r.getMessage() for r in mine)  # exactly two
        assert started == (
            f"run {run.id} started: schedule {schedule.id}, pipeline {schedule.pipeline_uuid}"
        )
        assert finished.startswith(f"run {run.id} finished: {status} in ")
        assert f"(schedule {schedule.id}, pipeline {schedule.pipeline_uuid})" in finished
        assert mine[1].status == status and mine[1].duration >= 0  # type: ignore[attr-defined]
        assert mine[1].schedule_id == schedule.id  # type: ignore[attr-defined]
        assert mine[1].pipeline_uuid == schedule.pipeline_uuid  # type: ignore[attr-defined]
        if status == "failed":
            assert finished.endswith(": block 'cell_0' failed: ValueError: boom")


# --------------------------------------------------------------------------------------------
# 5. A dead kernel's signal or exit code
# --------------------------------------------------------------------------------------------


@pytest.mark.kernel
@pytest.mark.parametrize(
    ("code", "expected", "forked"),
    [
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "killed by SIGKILL", True),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "killed by SIGKILL", False),
        ("import os\nos._exit(3)", "kernel exited with code 3", True),
    ],
    ids=["sigkill-forked", "sigkill-spawned", "exit-3-forked"],
)
def test_a_dead_kernel_is_reported_with_its_signal_or_exit_code(
    store: Store, project_dir: Path, code: str, expected: str, forked: bool
) -> None:
    schedule = make_schedule(project_dir, [code, "x = 1"])
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)

    async def scenario() -> Any:
        pool = KernelPool(size=0, use_forkserver=forked)
        await pool.start()
        try:
            return await PipelineRunner(store, pool).execute(run.id)
        finally:
            await pool.close()

    outcome = asyncio.run(scenario())
    assert outcome.status == "failed"
    run = fresh_run(run.id)
    block = run.block_runs[0]
    assert block.status == "failed" and expected in (block.error or ""), block.error
    assert expected in run.metrics["error"]
    assert expected in run.logs("cell_0")
