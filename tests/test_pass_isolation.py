"""One bad row never stops the other schedules (DESIGN §7), the pass costs the same whatever the
run history, each run's end is notified once, and created runs are logged.

Bad rows are written straight into the tables (Core, bypassing validation) — values the
service refuses now but an older version stored, or someone wrote by hand. Every scenario runs
each pass twice and checks that the second changed nothing, flags included (DESIGN §8.2).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, select, text, update
from test_scheduler_pass import FakeClock, make_scheduler, run

from mage_nb_sched.core.datetimes import UTC
from mage_nb_sched.scheduling import passes
from mage_nb_sched.scheduling.loop import PassReport, Scheduler
from mage_nb_sched.scheduling.notifications import Notification
from mage_nb_sched.scheduling.passes import PROBLEM_RETRY, RowProblem, row_problems
from mage_nb_sched.service.runs import create_run
from mage_nb_sched.service.schedules import create_schedule
from mage_nb_sched.store import Store, schema

T0 = datetime(2024, 3, 4, 10, 30, tzinfo=UTC)  # a Monday
RUNS = schema.pipeline_run
SCHEDULES = schema.pipeline_schedule
BLOCKS = schema.block_run
BACKFILLS = schema.backfill
HUGE = 10**12  # seconds: no datetime can hold now + this


def naive(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the scheduler's tables as stored (raw driver values: a planted row need not
    decode), flags included."""
    tables = ("pipeline_schedule", "pipeline_run", "block_run", "backfill", "scheduler_problem")
    with store.engine.connect() as connection:
        return {
            table: [tuple(row) for row in connection.exec_driver_sql(f"SELECT * FROM {table}")]
            for table in tables
        }


async def pass_twice(scheduler: Scheduler) -> PassReport:
    """A pass, then the same pass again: the second changes nothing, flags included."""
    first = await scheduler.run_pass()
    before = snapshot(scheduler.store)
    scheduler._next_recovery = 0.0  # the second pass runs every step, recovery included
    second = await scheduler.run_pass()
    assert not second.changed_anything, second
    assert snapshot(scheduler.store) == before
    # Flagged rows never make the loop spin: nothing is due before the clock moves on.
    assert second.next_wake is None or second.next_wake > scheduler.clock()
    return first


def flags(store: Store) -> set[tuple[str, str, int]]:
    return {(p.step, p.row_kind, p.row_id) for p in row_problems(store)}


def schedule(store: Store, name: str, **values: Any) -> int:
    values.setdefault("schedule_interval", "@hourly")
    settings = {"create_initial_pipeline_run": True, **values.pop("settings", {})}
    record = create_schedule(
        store,
        now=T0,
        name=name,
        pipeline_uuid="my_pipeline",
        status="active",
        settings=settings,
        **values,
    )
    return record.id


def corrupt(store: Store, table: Any, row_id: int, **values: Any) -> None:
    """Write ``values`` as they are, past every validation."""
    with store.write_engine.begin() as connection:
        connection.execute(update(table).where(table.c.id == row_id).values(**values))


def runs_of(store: Store, schedule_id: int) -> list[Any]:
    with store.engine.connect() as connection:
        return list(
            connection.execute(
                select(RUNS).where(RUNS.c.pipeline_schedule_id == schedule_id).order_by(RUNS.c.id)
            ).all()
        )


def only_run(store: Store, schedule_id: int) -> Any:
    [found] = runs_of(store, schedule_id)
    return found


def test_bad_rows_are_skipped_and_flagged_and_every_other_schedule_goes_on(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mage_nb_sched.scheduling.passes")
    clock = FakeClock(T0)
    good_finish = schedule(store, "good_finish")
    good_timeout = schedule(store, "good_timeout", settings={"timeout": 60})
    good_sla = schedule(store, "good_sla", sla=60)
    bad_sla = schedule(store, "bad_sla")
    bad_timeout = schedule(store, "bad_timeout")
    bad_block_timeout = schedule(store, "bad_block_timeout")
    not_a_dict = schedule(store, "not_a_dict")
    bad_zone = schedule(store, "bad_zone")
    bad_cron = schedule(store, "bad_cron")
    garbled = schedule(store, "garbled")
    # A run made by API on a schedule whose settings then went bad: it can never be judged
    # against its limits (plan_starts).
    waiting_api_run = create_run(store, pipeline_schedule_id=not_a_dict, now=T0).id
    # A backfill whose settings cannot be read, with a run waiting.
    with store.write_engine.begin() as connection:
        backfill_key = connection.execute(
            insert(BACKFILLS).values(
                name="bf",
                pipeline_uuid="my_pipeline",
                start_datetime=naive(T0 - timedelta(days=2)),
                end_datetime=naive(T0 - timedelta(days=1)),
                interval_type="day",
                interval_units=1,
                status="running",
                settings={"pipeline_run_limit": "many"},
                created_at=naive(T0),
                updated_at=naive(T0),
            )
        ).inserted_primary_key
    assert backfill_key is not None
    backfill = int(backfill_key[0])
    backfill_run = create_run(store, pipeline_uuid="my_pipeline", now=T0, backfill_id=backfill).id
    # A failed run whose metrics are not an object (its failure reason cannot be read).
    odd_metrics = create_run(store, pipeline_uuid="my_pipeline", now=T0).id
    corrupt(store, RUNS, odd_metrics, status="failed", metrics=["not", "an", "object"])

    corrupt(store, SCHEDULES, bad_sla, sla=HUGE)
    initial = {"create_initial_pipeline_run": True}
    corrupt(store, SCHEDULES, bad_timeout, settings={**initial, "timeout": HUGE})
    corrupt(store, SCHEDULES, bad_block_timeout, settings={**initial, "block_timeout": HUGE})
    corrupt(store, SCHEDULES, not_a_dict, settings=[1, 2, 3])
    corrupt(store, SCHEDULES, bad_zone, settings={**initial, "timezone": "Mars/Olympus_Mons"})
    corrupt(store, SCHEDULES, bad_cron, schedule_interval="61 25 * * *")
    with store.write_engine.begin() as connection:  # not even JSON
        connection.execute(
            text("UPDATE pipeline_schedule SET settings = '{\"catchup\": tru' WHERE id = :id"),
            {"id": garbled},
        )
    seen: list[Notification] = []

    async def scenario() -> None:
        scheduler, executor = make_scheduler(store, clock)
        assert scheduler.notifier is not None
        scheduler.notifier.add_sink(seen.append)

        # 10:31: every good (or not yet bad) schedule gets its 10:00 run, started at once.
        clock.now = T0 + timedelta(minutes=1)
        first = await scheduler.run_pass()
        made = {row.pipeline_schedule_id for row in _all_runs(store) if row.id in first.created}
        assert made == {good_finish, good_timeout, good_sla, bad_sla, bad_timeout,
                        bad_block_timeout}  # fmt: skip
        assert sorted(first.started) == sorted(first.created)
        # The steps run in the loop's order: a run started by a pass is timed by the next.
        await pass_twice(scheduler)
        assert [(n.kind, n.run_id) for n in seen] == [("sla_breach", only_run(store, good_sla).id)]
        bad_sla_run = only_run(store, bad_sla).id
        bad_timeout_run = only_run(store, bad_timeout).id
        block_run = only_run(store, bad_block_timeout).id
        assert flags(store) == {
            ("create_due_runs", "schedule", not_a_dict),
            ("create_due_runs", "schedule", bad_zone),
            ("create_due_runs", "schedule", bad_cron),
            ("create_due_runs", "schedule", garbled),
            ("check_slas", "run", bad_sla_run),
            ("enforce_timeouts", "run", bad_timeout_run),
            ("plan_starts", "schedule", not_a_dict),
            ("plan_starts", "backfill", backfill),
            ("finalize_runs", "run", odd_metrics),
        }
        # A block of the bad_block_timeout run is executing.
        with store.write_engine.begin() as connection:
            connection.execute(
                insert(BLOCKS).values(
                    pipeline_run_id=block_run,
                    block_uuid="load",
                    status="running",
                    started_at=naive(clock.now),
                    created_at=naive(clock.now),
                    updated_at=naive(clock.now),
                )
            )

        # 10:33: good_timeout's run overran its 60 s and is ended; the two runs whose timeouts
        # no date can hold are flagged and go on running.
        clock.now = T0 + timedelta(minutes=3)
        report = await pass_twice(scheduler)
        assert report.stopped == [only_run(store, good_timeout).id]
        assert str(only_run(store, good_timeout).status.value) == "failed"
        assert ("enforce_timeouts", "run", block_run) in flags(store)
        assert {
            str(r.status.value)
            for r in (only_run(store, bad_timeout), only_run(store, bad_block_timeout))
        } == {"running"}

        # The others finish; bad_sla's run cannot be closed (its SLA), the rest are.
        executor.finish(only_run(store, good_finish).id, "completed")
        executor.finish(bad_sla_run, "completed")
        executor.finish(only_run(store, good_sla).id, "failed")
        clock.now += timedelta(seconds=5)
        await pass_twice(scheduler)
        assert only_run(store, good_finish).finalized_at is not None
        assert only_run(store, good_sla).finalized_at is not None
        assert only_run(store, bad_sla).finalized_at is None
        assert ("finalize_runs", "run", bad_sla_run) in flags(store)
        # The run no longer waits or executes: check_slas is done with it.
        assert ("check_slas", "run", bad_sla_run) not in flags(store)

        # Fixed by hand: each row passes its step again at its retry, and its flag goes.
        corrupt(store, SCHEDULES, bad_zone, settings={"create_initial_pipeline_run": True})
        corrupt(store, SCHEDULES, bad_sla, sla=3600)
        clock.now += PROBLEM_RETRY + timedelta(seconds=1)
        fixed = await pass_twice(scheduler)
        assert [
            row.pipeline_schedule_id for row in _all_runs(store) if row.id in fixed.created
        ] == [bad_zone]
        assert only_run(store, bad_sla).finalized_at is not None
        remaining = flags(store)
        assert ("create_due_runs", "schedule", bad_zone) not in remaining
        assert ("finalize_runs", "run", bad_sla_run) not in remaining
        assert ("create_due_runs", "schedule", bad_cron) in remaining

    run(scenario)
    # The runs that could not be judged still wait; nothing of theirs was started.
    with store.engine.connect() as connection:
        waiting = connection.execute(
            select(RUNS.c.id, RUNS.c.status, RUNS.c.owner).where(
                RUNS.c.id.in_([waiting_api_run, backfill_run])
            )
        ).all()
    assert {(row.id, str(row.status.value), row.owner) for row in waiting} == {
        (waiting_api_run, "initial", None),
        (backfill_run, "initial", None),
    }
    # Each flag was logged once, at WARNING, with the step and the row (its retries at DEBUG).
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for step, kind, row_id in [
        ("create_due_runs", "schedule", bad_cron),
        ("create_due_runs", "schedule", garbled),
        ("check_slas", "run", only_run(store, bad_sla).id),
        ("enforce_timeouts", "run", only_run(store, bad_timeout).id),
        ("plan_starts", "backfill", backfill),
    ]:
        mine = [m for m in warned if m.startswith(f"{step}: skipped {kind} {row_id}")]
        assert len(mine) == 1, (step, kind, row_id, warned)
    problem = next(p for p in row_problems(store) if p.row_id == bad_cron)
    assert isinstance(problem, RowProblem) and problem.schedule_id == bad_cron
    assert "61 25 * * *" in problem.error and problem.retry_at is not None
    assert problem.first_seen_at == T0 + timedelta(minutes=1)


def _all_runs(store: Store) -> list[Any]:
    with store.engine.connect() as connection:
        return list(connection.execute(select(RUNS).order_by(RUNS.c.id)).all())


# --------------------------------------------------------------------------------------------
# Batched statements: the fast path, and row by row only for a batch that fails
# --------------------------------------------------------------------------------------------


def bulk_schedules(
    store: Store, count: int, *, enabled: datetime, prefix: str = "bulk"
) -> list[int]:
    """``count`` active @hourly schedules, inserted with Core (as the benchmark does)."""
    rows = [
        {
            "name": f"{prefix}{i}",
            "pipeline_uuid": "my_pipeline",
            "schedule_type": "time",
            "schedule_interval": "@hourly",
            "status": "active",
            "last_enabled_at": naive(enabled),
            "in_code": False,
            "next_due_at": naive(schema.EVALUATE_NOW),
            "created_at": naive(enabled),
            "updated_at": naive(enabled),
        }
        for i in range(count)
    ]
    with store.write_engine.begin() as connection:
        connection.execute(insert(SCHEDULES), rows)
        names = [row["name"] for row in rows]
        found = connection.execute(select(SCHEDULES.c.id).where(SCHEDULES.c.name.in_(names)))
        return sorted(int(row[0]) for row in found)


def test_a_batch_the_database_refuses_is_done_again_schedule_by_schedule(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A statement the database refuses for one row's values (here a trigger, as PostgreSQL
    refuses an out-of-range value) fails the batched INSERT: that batch — only that one — is
    done again with a savepoint per schedule; the refused schedule is flagged."""
    monkeypatch.setattr(passes, "DUE_BATCH", 50)
    clock = FakeClock(T0 + timedelta(minutes=1))
    ids = bulk_schedules(store, 120, enabled=T0 - timedelta(hours=2))
    refused = ids[70]  # in the second of three batches
    with store.write_engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON pipeline_run "
            f"WHEN NEW.pipeline_schedule_id = {refused} "
            "BEGIN SELECT RAISE(ABORT, 'refused by the database'); END"
        )
    savepoints: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.upper().startswith("SAVEPOINT"):
            savepoints.append(statement)

    async def scenario() -> None:
        scheduler, _executor = make_scheduler(store, clock, capacity=0)
        event.listen(store.engine, "before_cursor_execute", count)
        try:
            first = await scheduler.run_pass()
        finally:
            event.remove(store.engine, "before_cursor_execute", count)
        assert len(first.created) == 119
        assert len(savepoints) == 50  # the refused batch, row by row; the others batched
        await pass_twice(scheduler)
        assert flags(store) == {("create_due_runs", "schedule", refused)}
        [problem] = row_problems(store)
        assert "IntegrityError" in problem.error and "refused by the database" in problem.error
        # The database takes it again: at its retry the schedule gets its run.
        with store.write_engine.begin() as connection:
            connection.exec_driver_sql("DROP TRIGGER refuse")
        clock.now += PROBLEM_RETRY
        again = await pass_twice(scheduler)
        assert [
            row.pipeline_schedule_id for row in _all_runs(store) if row.id in again.created
        ] == [refused]
        assert flags(store) == set()

    run(scenario)
    assert any("creating its runs schedule by schedule" in r.getMessage() for r in caplog.records)
    assert any(
        r.getMessage().startswith(f"create_due_runs: skipped schedule {refused}")
        for r in caplog.records
    )


def _dead_owned_run(store: Store, dead: str, **values: Any) -> int:
    created = create_run(store, pipeline_uuid="my_pipeline", now=T0).id
    corrupt(store, RUNS, created, status="running", owner=dead, started_at=naive(T0), **values)
    return created


def test_recovery_and_skips_go_on_past_a_run_that_raises(store: Store) -> None:
    dead = "sched:elsewhere:4026531836:1:deadbeef"
    odd = _dead_owned_run(store, dead, metrics=["not", "an", "object"])
    plain = _dead_owned_run(store, dead)
    recovered = passes.recover_runs(store, T0, "sched:me:1:2:3", set(), 0)
    assert recovered.failed == [plain]
    assert flags(store) == {("recover_runs", "run", odd)}
    before = snapshot(store)
    assert passes.recover_runs(store, T0, "sched:me:1:2:3", set(), 0).failed == []
    assert snapshot(store) == before

    api = create_schedule(
        store,
        now=T0,
        name="api",
        pipeline_uuid="my_pipeline",
        schedule_type="api",
        status="active",
        settings={"skip_if_previous_running": True},
    ).id
    executing = create_run(store, pipeline_schedule_id=api, now=T0).id
    corrupt(store, RUNS, executing, status="running", owner="sched:me:1:2:3")
    to_skip = create_run(store, pipeline_schedule_id=api, now=T0).id
    cannot_skip = create_run(store, pipeline_schedule_id=api, now=T0).id
    corrupt(store, RUNS, cannot_skip, metrics=["not", "an", "object"])
    plan = passes.plan_starts(store, T0, "sched:me:1:2:3", 10)
    assert list(plan.skipped) == [to_skip] and plan.start == []
    assert ("plan_starts", "run", cannot_skip) in flags(store)
    with store.engine.connect() as connection:
        statuses = dict(
            connection.execute(
                select(RUNS.c.id, RUNS.c.status).where(RUNS.c.id.in_([to_skip, cannot_skip]))
            ).all()
        )
    assert {k: str(v.value) for k, v in statuses.items()} == {
        to_skip: "cancelled",
        cannot_skip: "initial",
    }
    before = snapshot(store)
    again = passes.plan_starts(store, T0, "sched:me:1:2:3", 10)
    assert again.skipped == {} and again.start == [] and snapshot(store) == before


def test_retention_never_deletes_outside_the_data_dir(store: Store, project_dir: Path) -> None:
    from mage_nb_sched.core.project import data_dir

    finished = T0 - timedelta(days=40)
    kept = create_run(store, pipeline_uuid="my_pipeline", now=finished)
    deleted = create_run(store, pipeline_uuid="my_pipeline", now=finished)
    for run_id in (kept.id, deleted.id):
        corrupt(
            store,
            RUNS,
            run_id,
            status="completed",
            completed_at=naive(finished),
            finalized_at=naive(finished),
        )
    corrupt(store, RUNS, kept.id, pipeline_uuid="../../outside")
    outside = (data_dir(project_dir) / "runs" / "../../outside").resolve()
    precious = outside / kept.execution_partition / "keep.txt"
    precious.parent.mkdir(parents=True)
    precious.write_text("not the scheduler's")

    assert passes.delete_old_runs(store, T0, 30) == 1
    assert precious.read_text() == "not the scheduler's"
    assert [row.id for row in _all_runs(store)] == [kept.id]
    assert flags(store) == {("retention", "run", kept.id)}
    assert passes.delete_old_runs(store, T0, 30) == 0
    assert flags(store) == {("retention", "run", kept.id)}


# --------------------------------------------------------------------------------------------
# Each run's end is notified once, whoever closes it
# --------------------------------------------------------------------------------------------


def _failed_run(store: Store) -> int:
    run_id = create_run(store, pipeline_uuid="my_pipeline", now=T0).id
    corrupt(store, RUNS, run_id, status="failed", completed_at=naive(T0), metrics={"error": "x"})
    return run_id


def test_two_finalize_calls_interleaved_on_one_run_notify_once(store: Store) -> None:
    """One call reads the run, another closes it meanwhile, then the first writes: only the
    update that closed the run (``finalized_at IS NULL``) notifies."""
    run_id = _failed_run(store)
    now = T0 + timedelta(minutes=1)
    with store.engine.connect() as first:
        plan = passes.closing_plan(first, now)
    assert [closing.run_id for closing in plan.closings] == [run_id]
    other = Store(store.url, store.project_dir)  # a second scheduler: its own connections
    try:
        second = passes.finalize_runs(other, now)
    finally:
        other.dispose()
    with store.write_engine.begin() as connection:
        late = passes.close(connection, plan, now)
    assert [(n.kind, n.run_id) for n in second] == [("failure", run_id)]
    assert late == []


def test_two_schedulers_racing_to_close_a_run_notify_once(store: Store) -> None:
    """Two finalize_runs calls on two engines: the second runs in full right after the first
    has read the finished run, before the first writes."""
    run_id = _failed_run(store)
    now = T0 + timedelta(minutes=1)
    other = Store(store.url, store.project_dir)  # a second scheduler: its own connections
    raced: list[list[Notification]] = []

    def after_read(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        reads_finished = "pipeline_run.finalized_at IS NULL" in statement
        if reads_finished and statement.lstrip().startswith("SELECT") and not raced:
            raced.append(passes.finalize_runs(other, now))

    event.listen(store.engine, "after_cursor_execute", after_read)
    try:
        mine = passes.finalize_runs(store, now)
    finally:
        event.remove(store.engine, "after_cursor_execute", after_read)
        other.dispose()
    [theirs] = raced
    assert [(n.kind, n.run_id) for n in theirs] == [("failure", run_id)]
    assert mine == []
    with store.engine.connect() as connection:
        closed = connection.execute(select(RUNS.c.finalized_at).where(RUNS.c.id == run_id))
        assert closed.scalar() == now


# --------------------------------------------------------------------------------------------
# Created runs are logged: one line each, a burst in one line
# --------------------------------------------------------------------------------------------


def test_created_runs_are_logged_one_line_each_and_a_burst_in_one_line(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mage_nb_sched.scheduling.passes")
    clock = FakeClock(T0 + timedelta(minutes=1))
    few = bulk_schedules(store, 3, enabled=T0 - timedelta(hours=2))
    created = passes.create_due_runs(store, clock.now)
    lines = [r for r in caplog.records if r.getMessage().startswith("created run")]
    assert [r.levelno for r in lines] == [logging.INFO] * 3
    by_run = {row.id: row for row in _all_runs(store)}
    assert [r.getMessage() for r in lines] == [
        f"created run {run_id} of schedule {by_run[run_id].pipeline_schedule_id} for execution "
        "date 2024-03-04T10:00:00+00:00"
        for run_id in created
    ]
    assert {by_run[run_id].pipeline_schedule_id for run_id in created} == set(few)

    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="mage_nb_sched.scheduling.passes")
    bulk_schedules(
        store, passes.LOG_CREATED_RUNS_MAX + 5, enabled=T0 - timedelta(hours=2), prefix="burst"
    )
    burst = passes.create_due_runs(store, clock.now)
    assert len(burst) == passes.LOG_CREATED_RUNS_MAX + 5
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos[0] == (
        f"created {len(burst)} runs in this pass; {passes.LOG_CREATED_RUNS_MAX} are listed "
        "below, the other 5 at DEBUG"
    )
    assert len([m for m in infos if m.startswith("created run ")]) == passes.LOG_CREATED_RUNS_MAX
    debugs = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert len([m for m in debugs if m.startswith("created run ")]) == 5


# --------------------------------------------------------------------------------------------
# The pass does not grow with history
# --------------------------------------------------------------------------------------------


def _plans(connection: Any, statement: Any, params: dict[str, Any] | None = None) -> list[str]:
    """EXPLAIN QUERY PLAN of ``statement`` as SQLAlchemy sends it."""
    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, sql: str, parameters: Any, *_args: Any) -> None:
        sent.append((sql, parameters))

    event.listen(connection.engine, "before_cursor_execute", record)
    try:
        connection.execute(statement, params or {}).fetchall()
    finally:
        event.remove(connection.engine, "before_cursor_execute", record)
    sql, parameters = sent[-1]
    return [
        str(row[3]) for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, parameters)
    ]


def test_scheduler_queries_read_live_runs_only_whatever_the_statistics(store: Store) -> None:
    """With planner statistics (``ANALYZE``) saying every run is finished, SQLite would scan
    the whole run table for "any run waiting?" — the partial indexes of live runs keep every
    query of the pass to the live runs."""
    [schedule_id] = bulk_schedules(store, 1, enabled=T0 - timedelta(days=30))
    history = [
        {
            "pipeline_schedule_id": schedule_id,
            "pipeline_uuid": "my_pipeline",
            "execution_date": naive(T0 - timedelta(hours=hour)),
            "status": "completed",
            "run_key": f"history:{hour}",
            "owner": "sched:gone:1:2:3",
            "completed_at": naive(T0 - timedelta(hours=hour)),
            "finalized_at": naive(T0 - timedelta(hours=1)),
            "sla_breached": False,
            "attempts": 0,
            "created_at": naive(T0 - timedelta(hours=hour)),
            "updated_at": naive(T0 - timedelta(hours=hour)),
        }
        for hour in range(1, 501)
    ]
    with store.write_engine.begin() as connection:
        connection.execute(insert(RUNS), history)
        connection.exec_driver_sql("ANALYZE")
    with store.engine.connect() as connection:
        statements: dict[str, tuple[Any, dict[str, Any] | None]] = {
            "probe": (passes._PROBE, {"now": T0}),
            "finalize": (passes._FINALIZE_BATCH, {"now": T0, "after": 0}),
            "waiting": (select(RUNS.c.id).where(*passes._WAITING), None),
            "active counts": (
                select(RUNS.c.id).where(passes._unfinished_run(), RUNS.c.owner.is_not(None)),
                None,
            ),
            "timeouts": (passes._RUNNING_WITH_SETTINGS, None),
            "slas": (passes._SLA_CANDIDATES, None),
            "recovery": (passes._OWNED, None),
        }
        for name, (statement, params) in statements.items():
            plans = _plans(connection, statement, params)
            scans = [
                p for p in plans if p.startswith("SCAN pipeline_run") and "unfinished" not in p
            ]
            assert not scans, (name, plans)
            searches = [p for p in plans if "pipeline_run" in p]
            assert searches and all(
                "ix_pipeline_run_unfinished" in p
                or "ix_pipeline_run_schedule_unfinished" in p
                or "ix_pipeline_run_unfinalized" in p
                or "ix_pipeline_run_finalized_status" in p
                for p in searches
            ), (name, plans)


def test_the_partial_indexes_after_migrating_are_the_schemas(store: Store) -> None:
    """Alembic's comparison (tests/test_store.py) ignores an index's WHERE: checked here."""
    from sqlalchemy import inspect

    wanted = {
        "ix_pipeline_run_unfinished": schema.UNFINISHED_RUNS_WHERE,
        "ix_pipeline_run_schedule_unfinished": schema.UNFINISHED_RUNS_WHERE,
        "ix_pipeline_run_unfinalized": schema.UNFINALIZED_RUNS_WHERE,
    }
    with store.engine.connect() as connection:
        found = {
            index["name"]: str(index.get("dialect_options", {}).get("sqlite_where"))
            for index in inspect(connection).get_indexes("pipeline_run")
            if index["name"] in wanted
        }
    assert found == wanted
    declared = {
        index.name: str(index.dialect_options["sqlite"]["where"])
        for index in RUNS.indexes
        if index.name in wanted
    }
    assert declared == wanted
