"""The run state machine: its tables, the writers that go through them, the fences' query plans,
and real runs (kernels, the scheduler's passes) that take only transitions the tables list.

Every status a run or block row takes is recorded by SQLite triggers in the database itself, so
writes from any connection, thread or process are seen, in commit order, without polling.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import write_notebook
from processes import wait_until
from sqlalchemy import event, insert, select, update

from mage_nb_sched import PipelineRun, PipelineSchedule
from mage_nb_sched.core import run_states
from mage_nb_sched.core.datetimes import UTC
from mage_nb_sched.core.enums import BlockRunStatus, PipelineRunStatus
from mage_nb_sched.core.run_states import (
    BLOCK_TRANSITIONS,
    RUN_PATHS,
    RUN_TRANSITIONS,
    InvalidTransition,
)
from mage_nb_sched.execution.kernels import KernelPool
from mage_nb_sched.execution.runner import (
    PipelineRunner,
    _cancel_remaining,
    _finish_run,
    _set_block,
    claim_run,
)
from mage_nb_sched.service import transitions
from mage_nb_sched.store import Store, schema

RUNS = schema.pipeline_run
BLOCKS = schema.block_run
T0 = datetime(2024, 1, 15, 10, 20, tzinfo=UTC)

RUN_STATUSES = [status.value for status in PipelineRunStatus]
BLOCK_STATUSES = [status.value for status in BlockRunStatus]


# --------------------------------------------------------------------------------------------
# (a) the tables: every pair is either allowed or refused naming both statuses
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "check", "table", "statuses"),
    [
        ("pipeline run", run_states.check_run, RUN_TRANSITIONS, RUN_STATUSES),
        ("block run", run_states.check_block, BLOCK_TRANSITIONS, BLOCK_STATUSES),
    ],
)
def test_every_pair_is_allowed_by_the_table_or_refused_naming_both(
    kind: str,
    check: Callable[[object, object], None],
    table: dict[str, frozenset[str]],
    statuses: list[str],
) -> None:
    assert set(table) == set(statuses)  # one row per status of the enum
    assert set().union(*table.values()) <= set(statuses)
    for current, wanted in itertools.product(statuses, repeat=2):
        if wanted in table[current]:
            check(current, wanted)
            check(PipelineRunStatus(current) if kind == "pipeline run" else current, wanted)
            continue
        with pytest.raises(InvalidTransition) as refused:
            check(current, wanted)
        message = str(refused.value)
        assert f"{current!r}" in message and f"{wanted!r}" in message, message
        assert (refused.value.current, refused.value.wanted) == (current, wanted)
        assert refused.value.kind == kind


def test_unknown_statuses_are_refused_naming_both() -> None:
    for current, wanted in (("running", "missing"), ("missing", "running"), ("done", "gone")):
        with pytest.raises(InvalidTransition) as refused:
            run_states.check_run(current, wanted)
        assert f"{current!r}" in str(refused.value) and f"{wanted!r}" in str(refused.value)
        assert "is not a pipeline run status" in str(refused.value)
    with pytest.raises(InvalidTransition, match="'missing'"):
        run_states.run_fence("missing")
    with pytest.raises(InvalidTransition, match="'sleeping'"):
        run_states.block_fence("sleeping")


def test_fences_are_the_allowed_sources() -> None:
    for wanted in RUN_STATUSES:
        sources = tuple(sorted(s for s, nexts in RUN_TRANSITIONS.items() if wanted in nexts))
        assert run_states.run_sources(wanted) == sources
        if sources:
            assert run_states.run_fence(wanted) == sources
        else:
            with pytest.raises(InvalidTransition):
                run_states.run_fence(wanted)
        for current in RUN_STATUSES:
            if wanted in RUN_TRANSITIONS[current]:
                assert run_states.run_fence(wanted, [current]) == (current,)
            else:
                with pytest.raises(InvalidTransition):
                    run_states.run_fence(wanted, [current])
    for wanted in BLOCK_STATUSES:
        sources = tuple(sorted(s for s, nexts in BLOCK_TRANSITIONS.items() if wanted in nexts))
        assert run_states.block_sources(wanted) == sources


# --------------------------------------------------------------------------------------------
# (b) named paths
# --------------------------------------------------------------------------------------------


def test_every_named_path_is_in_the_table() -> None:
    assert RUN_PATHS
    for name, (sources, target) in RUN_PATHS.items():
        assert sources, name
        for source in sources:
            assert target in RUN_TRANSITIONS[source], (name, source, target)
            run_states.check_run(source, target)
        assert run_states.run_path(name) == (tuple(sorted(sources)), target)


# --------------------------------------------------------------------------------------------
# The writers
# --------------------------------------------------------------------------------------------


def _insert_run(store: Store, status: str = "initial", **values: Any) -> int:
    with store.write_engine.begin() as connection:
        result = connection.execute(
            insert(RUNS).values(
                pipeline_uuid="my_pipeline",
                execution_date=T0,
                status=status,
                run_key=f"test:{os.urandom(8).hex()}",
                **values,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


def _status(store: Store, run_id: int) -> str:
    with store.engine.connect() as connection:
        return str(connection.execute(select(RUNS.c.status).where(RUNS.c.id == run_id)).scalar())


def test_set_run_status_checks_the_table_and_fences_on_the_sources(store: Store) -> None:
    run_id = _insert_run(store)
    with store.write_engine.begin() as connection:
        with pytest.raises(InvalidTransition, match="'initial' to 'completed'"):
            transitions.set_run_status(
                connection, run_id, "completed", now=T0, from_statuses=["initial"]
            )
        with pytest.raises(InvalidTransition, match="'missing'"):
            transitions.set_run_status(connection, run_id, "missing", now=T0)
        # completed is reachable only from running: the fence does not match an initial run.
        assert not transitions.set_run_status(connection, run_id, "completed", now=T0)
        assert transitions.set_run_status(connection, run_id, "running", now=T0)
        # A stale writer (another claim) is fenced out, the right one gets through.
        connection.execute(update(RUNS).where(RUNS.c.id == run_id).values(claim_token="new"))
        assert not transitions.set_run_status(
            connection, run_id, "completed", now=T0, claimed_with="old"
        )
        assert transitions.set_run_status(
            connection, run_id, "completed", now=T0, claimed_with="new", completed_at=T0
        )
        # Final: nothing but the retry path leads out, and staying is not a transition.
        with pytest.raises(InvalidTransition, match="'completed' to 'completed'"):
            transitions.set_run_status(
                connection, run_id, "completed", now=T0, from_statuses=["completed"]
            )
    assert _status(store, run_id) == "completed"


def test_end_run_closes_blocks_and_refuses_a_non_final_status(store: Store) -> None:
    run_id = _insert_run(store, status="running")
    with store.write_engine.begin() as connection:
        for block_uuid, status in (
            ("a", "completed"),
            ("b", "running"),
            ("c", "queued"),
            ("d", "initial"),
        ):
            connection.execute(
                insert(BLOCKS).values(pipeline_run_id=run_id, block_uuid=block_uuid, status=status)
            )
        with pytest.raises(InvalidTransition, match="final status"):
            transitions.end_run(connection, run_id, "initial", "no", T0)
        with pytest.raises(InvalidTransition, match="'completed' to 'cancelled'"):
            transitions.end_run(
                connection, run_id, "cancelled", "no", T0, from_statuses=("completed",)
            )
        assert transitions.end_runs(connection, [run_id], "cancelled", "by hand", T0) == [run_id]
        assert not transitions.end_run(connection, run_id, "failed", "again", T0)
        blocks = dict(
            connection.execute(
                select(BLOCKS.c.block_uuid, BLOCKS.c.status).where(
                    BLOCKS.c.pipeline_run_id == run_id
                )
            ).all()
        )
    assert {uuid: str(status) for uuid, status in blocks.items()} == {
        "a": "completed",
        "b": "cancelled",
        "c": "cancelled",
        "d": "cancelled",
    }
    assert _status(store, run_id) == "cancelled"


# --------------------------------------------------------------------------------------------
# The fences use the primary key (issue: an uncorrelated EXISTS scanned pipeline_run)
# --------------------------------------------------------------------------------------------


def _plans_of(store: Store, action: Callable[[], Any]) -> dict[str, list[str]]:
    """``EXPLAIN QUERY PLAN`` of every UPDATE ``action`` sends, with the parameters it sent."""
    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE"):
            sent.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        action()
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    with store.engine.connect() as connection:
        return {
            statement: [
                str(row[-1])
                for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            ]
            for statement, parameters in sent
        }


@dataclass
class _Block:
    uuid: str


def test_fenced_writes_of_an_execution_search_by_primary_key(store: Store) -> None:
    run_id = _insert_run(store)
    blocks = claim_run(store, run_id, T0, [_Block("load"), _Block("save")], "token")  # type: ignore[list-item]
    assert blocks is not None

    def execution() -> None:
        assert _set_block(store, blocks["load"], "token", status="running", started_at=T0)
        assert _set_block(store, blocks["load"], "token", status="completed", completed_at=T0)
        _cancel_remaining(store, run_id, T0, "token")
        assert _finish_run(store, run_id, "completed", T0, {"x": 1}, "token") == "completed"

    plans = _plans_of(store, execution)
    finish = [sql for sql in plans if sql.startswith("UPDATE pipeline_run")]
    block_writes = [sql for sql in plans if sql.startswith("UPDATE block_run")]
    assert len(finish) == 1 and len(block_writes) == 3, list(plans)
    # The run's own row: a plain condition on its claim token, no subquery.
    assert "EXISTS" not in finish[0] and "claim_token = ?" in finish[0], finish[0]
    assert any(
        d.startswith("SEARCH pipeline_run USING INTEGER PRIMARY KEY") for d in plans[finish[0]]
    )
    for sql in block_writes:
        # Each block row, then its run by primary key (correlated on pipeline_run_id).
        assert any(d.startswith("SEARCH block_run USING") for d in plans[sql]), plans[sql]
        assert "CORRELATED SCALAR SUBQUERY 1" in plans[sql], plans[sql]
        assert any(
            d.startswith("SEARCH pipeline_run USING INTEGER PRIMARY KEY") for d in plans[sql]
        ), plans[sql]
    for sql, plan in plans.items():
        assert not any(d.startswith("SCAN") for d in plan), (sql, plan)


def test_the_old_uncorrelated_fence_scanned_the_table(store: Store) -> None:
    """The control: the condition the fix replaced is caught by the same check."""
    from sqlalchemy import exists

    old = (
        update(RUNS)
        .where(
            RUNS.c.id == 1,
            exists().where(RUNS.c.id == RUNS.c.id, RUNS.c.claim_token == "token"),
        )
        .values(status="completed")
    )
    compiled = old.compile(dialect=store.engine.dialect)
    params = compiled.construct_params()
    positional = tuple(params[name] for name in compiled.positiontup or ())
    with store.engine.connect() as connection:
        plan = [
            str(row[-1])
            for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", positional)
        ]
    assert "SCAN pipeline_run" in plan, plan


# --------------------------------------------------------------------------------------------
# (c) real runs take only transitions the tables list
# --------------------------------------------------------------------------------------------

_LOG_TABLE = """
CREATE TABLE status_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL, row_id INTEGER NOT NULL, run_id INTEGER NOT NULL, block_uuid TEXT,
    old TEXT, new TEXT
)
"""
_LOG_TRIGGERS = [
    """CREATE TRIGGER status_log_run_insert AFTER INSERT ON pipeline_run BEGIN
        INSERT INTO status_log (kind, row_id, run_id, block_uuid, old, new)
        VALUES ('run', NEW.id, NEW.id, NULL, NULL, NEW.status); END""",
    """CREATE TRIGGER status_log_run_update AFTER UPDATE OF status ON pipeline_run BEGIN
        INSERT INTO status_log (kind, row_id, run_id, block_uuid, old, new)
        VALUES ('run', NEW.id, NEW.id, NULL, OLD.status, NEW.status); END""",
    """CREATE TRIGGER status_log_block_insert AFTER INSERT ON block_run BEGIN
        INSERT INTO status_log (kind, row_id, run_id, block_uuid, old, new)
        VALUES ('block', NEW.id, NEW.pipeline_run_id, NEW.block_uuid, NULL, NEW.status); END""",
    """CREATE TRIGGER status_log_block_update AFTER UPDATE OF status ON block_run BEGIN
        INSERT INTO status_log (kind, row_id, run_id, block_uuid, old, new)
        VALUES ('block', NEW.id, NEW.pipeline_run_id, NEW.block_uuid, OLD.status, NEW.status);
        END""",
]

Step = tuple[str | None, str]


@dataclass
class StatusLog:
    """Every status a run or block row was born with or written with, in commit order (SQLite
    triggers write it in the same transaction as the change, whichever process made it)."""

    store: Store

    def entries(self) -> list[tuple[str, int, int, str | None, str | None, str]]:
        with self.store.engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT kind, row_id, run_id, block_uuid, old, new FROM status_log ORDER BY seq"
            )
            return [tuple(row) for row in rows]  # type: ignore[misc]

    def of_run(self, run_id: int) -> list[Step]:
        return [
            (old, new)
            for kind, row, _, _, old, new in self.entries()
            if kind == "run" and row == run_id
        ]

    def of_blocks(self, run_id: int) -> dict[str, list[Step]]:
        steps: dict[str, list[Step]] = {}
        for kind, _, run, block_uuid, old, new in self.entries():
            if kind == "block" and run == run_id:
                steps.setdefault(str(block_uuid), []).append((old, new))
        return steps

    def observed(self, kind: str) -> set[tuple[str, str]]:
        return {
            (old, new) for k, _, _, _, old, new in self.entries() if k == kind and old is not None
        }

    def assert_only_listed(self) -> None:
        for kind, row_id, _, _, old, new in self.entries():
            table = RUN_TRANSITIONS if kind == "run" else BLOCK_TRANSITIONS
            if old is None:
                assert new == "initial", f"{kind} {row_id} was born {new!r}"
                continue
            # Writing a row's status again with the same value is no transition either.
            assert new in table[old], f"{kind} {row_id}: {old!r} → {new!r} is not in the table"


@pytest.fixture
def status_log(store: Store) -> Iterator[StatusLog]:
    with store.write_engine.begin() as connection:
        connection.exec_driver_sql(_LOG_TABLE)
        for trigger in _LOG_TRIGGERS:
            connection.exec_driver_sql(trigger)
    log = StatusLog(store)
    yield log
    log.assert_only_listed()


def _schedule(project_dir: Path, name: str, cells: list[str], **settings: Any) -> PipelineSchedule:
    write_notebook(project_dir / f"{name}.ipynb", cells)
    return PipelineSchedule.create(
        name=f"{name}_trigger",
        pipeline_uuid=name,
        schedule_interval="@daily",
        settings=settings or None,
    )


def _wait_for(path: Path) -> str:
    """A cell that writes ``path`` and then blocks until the test stops it (the first time)."""
    return (
        "import pathlib, time\n"
        f"flag = pathlib.Path({str(path)!r})\n"
        "if not flag.exists():\n"
        "    flag.write_text('running')\n"
        "    time.sleep(120)"
    )


BORN: Step = (None, "initial")


@pytest.mark.kernel
def test_cancel_then_retry_of_a_real_run(
    store: Store, project_dir: Path, tmp_path: Path, status_log: StatusLog
) -> None:
    flag = tmp_path / "started"
    schedule = _schedule(project_dir, "cancel_me", [_wait_for(flag), "x = 1"])
    run_id = PipelineRun.create(pipeline_schedule_id=schedule.id).id

    async def scenario() -> tuple[Any, Any]:
        pool = KernelPool(size=0)
        await pool.start()
        try:
            runner = PipelineRunner(store, pool, cancel_grace=2.0)
            task = asyncio.ensure_future(runner.execute(run_id))
            assert await wait_until(flag.exists), "the cell never started"
            PipelineRun.query.get(run_id).update(status="cancelled")  # the API's cancel
            first = await asyncio.wait_for(task, 60)
            PipelineRun.query.get(run_id).update(status="initial")  # the retry path
            return first, await runner.execute(run_id)
        finally:
            await pool.close()

    first, second = asyncio.run(scenario())
    assert (first.status, second.status) == ("cancelled", "completed"), (first, second)
    assert status_log.of_run(run_id) == [
        BORN,
        ("initial", "running"),
        ("running", "cancelled"),
        ("cancelled", "initial"),
        ("initial", "running"),
        ("running", "completed"),
    ]
    second_blocks = [BORN, ("initial", "running"), ("running", "completed")]
    assert status_log.of_blocks(run_id) == {
        # The first execution's block runs, then the retry's (created afresh at its claim).
        "cell_0": [*[BORN, ("initial", "running"), ("running", "cancelled")], *second_blocks],
        "cell_1": [*[BORN, ("initial", "cancelled")], *second_blocks],
    }
    status_log.assert_only_listed()


@pytest.mark.kernel
def test_timeouts_of_real_runs(store: Store, project_dir: Path, status_log: StatusLog) -> None:
    sleeper = ["import time\ntime.sleep(60)", "x = 1"]
    run_timeout = _schedule(
        project_dir, "run_timeout", sleeper, timeout=1, timeout_status="cancelled"
    )
    block_timeout = _schedule(project_dir, "block_timeout", sleeper, block_timeout=1)
    runs = [PipelineRun.create(pipeline_schedule_id=s.id).id for s in (run_timeout, block_timeout)]

    async def scenario() -> list[Any]:
        pool = KernelPool(size=1)
        await pool.start()
        try:
            runner = PipelineRunner(store, pool, cancel_grace=2.0)
            return [await runner.execute(run_id) for run_id in runs]
        finally:
            await pool.close()

    outcomes = asyncio.run(scenario())
    assert [o.status for o in outcomes] == ["cancelled", "failed"], outcomes
    cancelled, failed = runs
    assert status_log.of_run(cancelled) == [BORN, ("initial", "running"), ("running", "cancelled")]
    assert status_log.of_blocks(cancelled) == {
        "cell_0": [BORN, ("initial", "running"), ("running", "cancelled")],
        "cell_1": [BORN, ("initial", "cancelled")],
    }
    assert status_log.of_run(failed) == [BORN, ("initial", "running"), ("running", "failed")]
    assert status_log.of_blocks(failed) == {
        "cell_0": [BORN, ("initial", "running"), ("running", "failed")],
        "cell_1": [BORN, ("initial", "cancelled")],
    }
    status_log.assert_only_listed()


@pytest.mark.kernel
def test_failures_and_block_retries_of_real_runs(
    store: Store, project_dir: Path, tmp_path: Path, status_log: StatusLog
) -> None:
    once = tmp_path / "failed_once"
    paused = tmp_path / "paused"
    fails_once = (
        "import pathlib\n"
        f"flag = pathlib.Path({str(once)!r})\n"
        "if not flag.exists():\n    flag.write_text('x')\n    raise RuntimeError('once')"
    )
    always = _schedule(
        project_dir, "always", ["raise RuntimeError('always')", "x = 1"], retries=1, retry_delay=0.2
    )
    flaky = _schedule(project_dir, "flaky", [fails_once], retries=2, retry_delay=0)
    pausing = _schedule(
        project_dir,
        "pausing",
        [f"import pathlib\npathlib.Path({str(paused)!r}).write_text('x')\nraise RuntimeError('x')"],
        retries=3,
        retry_delay=60,
    )
    dying = _schedule(
        project_dir, "dying", ["import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"]
    )
    ids = {
        name: PipelineRun.create(pipeline_schedule_id=schedule.id).id
        for name, schedule in (
            ("always", always),
            ("flaky", flaky),
            ("pausing", pausing),
            ("dying", dying),
        )
    }

    async def scenario() -> dict[str, Any]:
        pool = KernelPool(size=1)
        await pool.start()
        try:
            runner = PipelineRunner(store, pool, cancel_grace=2.0)
            outcomes = {
                name: await runner.execute(ids[name]) for name in ("always", "flaky", "dying")
            }
            task = asyncio.ensure_future(runner.execute(ids["pausing"]))
            assert await wait_until(paused.exists)
            # The block is waiting out its retry delay once its status says so (no sleep).
            assert await wait_until(
                lambda: (
                    status_log.of_blocks(ids["pausing"]).get("cell_0", [])[-1:]
                    == [("running", "queued")]
                )
            )
            runner.cancel(ids["pausing"])
            outcomes["pausing"] = await asyncio.wait_for(task, 60)
            return outcomes
        finally:
            await pool.close()

    outcomes = asyncio.run(scenario())
    assert {name: o.status for name, o in outcomes.items()} == {
        "always": "failed",
        "flaky": "completed",
        "dying": "failed",
        "pausing": "cancelled",
    }, outcomes
    started, failed = ("initial", "running"), ("running", "failed")
    assert status_log.of_blocks(ids["always"]) == {
        "cell_0": [BORN, started, ("running", "queued"), ("queued", "running"), failed],
        "cell_1": [BORN, ("initial", "cancelled")],
    }
    # A retry without a delay keeps the block running: no status is written for it.
    assert status_log.of_blocks(ids["flaky"]) == {
        "cell_0": [BORN, started, ("running", "completed")]
    }
    assert status_log.of_blocks(ids["dying"]) == {"cell_0": [BORN, started, failed]}
    assert status_log.of_blocks(ids["pausing"]) == {
        "cell_0": [BORN, started, ("running", "queued"), ("queued", "cancelled")]
    }
    assert status_log.of_run(ids["pausing"]) == [BORN, started, ("running", "cancelled")]
    for name in ("always", "dying"):
        assert status_log.of_run(ids[name]) == [BORN, started, failed]
    status_log.assert_only_listed()


@pytest.mark.kernel
def test_requeue_at_shutdown_then_executed_again(
    store: Store, project_dir: Path, tmp_path: Path, status_log: StatusLog
) -> None:
    """A scheduler stopping with a run executing queues it again (``running → initial``, its
    block runs dropped); the old execution's last writes are fenced out; it runs again."""
    from mage_nb_sched.execution.executors.local import LocalExecutor
    from mage_nb_sched.execution.runner import run_with_fresh_kernel
    from mage_nb_sched.scheduling.loop import Scheduler

    flag = tmp_path / "started"
    write_notebook(project_dir / "long.ipynb", [_wait_for(flag), "x = 1"])

    async def scenario() -> tuple[int, Any]:
        scheduler = Scheduler(store, executor=LocalExecutor(store, workers=1, kernel_pool_size=0))
        await scheduler.start()
        try:
            run_id = PipelineRun.create(pipeline_uuid="long").id
            assert await wait_until(flag.exists, timeout=60), "the run never started"
        finally:
            await scheduler.stop(grace=0.1)
        return run_id, await run_with_fresh_kernel(store, run_id)

    run_id, outcome = asyncio.run(scenario())
    assert outcome.status == "completed", outcome
    fresh = PipelineRun.query.get(run_id)
    assert str(fresh.status) == "completed"
    assert status_log.of_run(run_id) == [
        BORN,
        ("initial", "running"),
        ("running", "initial"),
        ("initial", "running"),
        ("running", "completed"),
    ]
    status_log.assert_only_listed()


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_the_scheduler_passes_take_only_listed_transitions(
    store: Store, status_log: StatusLog
) -> None:
    """Skips, timeouts, recovery (requeue, then failure) through the loop's own passes, with a
    stub executor that claims runs as the runner does."""
    from stub_executor import StubExecutor

    from mage_nb_sched.scheduling.loop import Scheduler
    from mage_nb_sched.service.schedules import create_schedule

    clock = _Clock(T0)
    create_schedule(
        store,
        now=T0,
        name="hourly",
        pipeline_uuid="my_pipeline",
        schedule_interval="@hourly",
        status="active",
        settings={
            "skip_if_previous_running": True,
            "timeout": 3000,
            "create_initial_pipeline_run": True,
        },
    )
    dead = "sched:elsewhere:4026531836:1:deadbeef"

    async def scenario() -> dict[str, int]:
        executor = StubExecutor(store, clock=clock)
        scheduler = Scheduler(store, executor=executor, clock=clock, max_recovery_attempts=1)
        [first] = (await scheduler.run_pass()).started  # initial → running (held)
        clock.now = T0 + timedelta(minutes=41)  # the 11:00 period, while the first still runs
        report = await scheduler.run_pass()
        [skipped] = report.created
        assert report.skipped and skipped in report.skipped  # initial → cancelled
        clock.now = T0 + timedelta(minutes=52)  # past settings.timeout: running → failed
        assert first in (await scheduler.run_pass()).stopped
        # A run of a scheduler that died: running → initial, executed again, then failed when
        # its next owner dies too (attempts exhausted).
        orphan = PipelineRun.create(pipeline_uuid="my_pipeline").id
        assert claim_run(store, orphan, clock.now, None, "dead-token") == {}
        with store.write_engine.begin() as connection:
            connection.execute(update(RUNS).where(RUNS.c.id == orphan).values(owner=dead))
        scheduler._next_recovery = 0.0
        again = await scheduler.run_pass()
        assert again.requeued == [orphan] and orphan in again.started
        with store.write_engine.begin() as connection:
            connection.execute(update(RUNS).where(RUNS.c.id == orphan).values(owner=dead))
        executor._futures.pop(orphan)
        scheduler._in_flight.pop(orphan)
        scheduler._recently_done.clear()
        scheduler._next_recovery = 0.0
        assert (await scheduler.run_pass()).failed == [orphan]
        return {"first": first, "skipped": skipped, "orphan": orphan}

    ids = asyncio.run(scenario())
    started = ("initial", "running")
    assert status_log.of_run(ids["first"]) == [BORN, started, ("running", "failed")]
    assert status_log.of_run(ids["skipped"]) == [BORN, ("initial", "cancelled")]
    assert status_log.of_run(ids["orphan"]) == [
        BORN,
        started,
        ("running", "initial"),
        started,
        ("running", "failed"),
    ]
    status_log.assert_only_listed()


def test_the_scenarios_cover_the_transitions_the_code_uses() -> None:
    """The transitions the runner, executors, passes and service use (see the report in
    ``service.transitions``): each is in the table."""
    used_by_runs = {
        ("initial", "running"),  # claim
        ("running", "completed"),
        ("running", "failed"),  # failure, block timeout, dead worker, recovery exhausted
        ("running", "cancelled"),  # cancel, run timeout (timeout_status)
        ("initial", "cancelled"),  # skip rules, cancelled before it started
        ("initial", "failed"),  # no worker could start it
        ("running", "initial"),  # requeue: recovery, shutdown
        ("cancelled", "initial"),  # retry
        ("failed", "initial"),  # retry
    }
    used_by_blocks = {
        ("initial", "running"),
        ("running", "completed"),
        ("running", "failed"),
        ("running", "cancelled"),
        ("running", "queued"),  # waiting out a retry delay
        ("queued", "running"),
        ("queued", "cancelled"),
        ("initial", "cancelled"),
    }
    for old, new in used_by_runs:
        assert new in RUN_TRANSITIONS[old]
    for old, new in used_by_blocks:
        assert new in BLOCK_TRANSITIONS[old]
