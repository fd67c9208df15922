"""The service speaks plain records, reads never write, and its async twins keep the caller's
event loop free (real SQLite files throughout)."""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from mage_nb_sched import Backfill, PipelineRun, PipelineSchedule
from mage_nb_sched.service import backfills as backfill_service
from mage_nb_sched.service import records
from mage_nb_sched.service import runs as run_service
from mage_nb_sched.service import schedules as schedule_service
from mage_nb_sched.store import Store

UTC = timezone.utc
WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "BEGIN IMMEDIATE", "CREATE", "DROP", "ALTER")


@pytest.fixture
def statements(store: Store) -> Iterator[list[str]]:
    """Every SQL statement the store's engine sends (including BEGINs the engine emits)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement.strip())

    event.listen(store.engine, "before_cursor_execute", record)
    yield seen
    event.remove(store.engine, "before_cursor_execute", record)


def writes(statements: list[str]) -> list[str]:
    return [s for s in statements if s.upper().startswith(WRITES)]


def _history(store: Store) -> tuple[PipelineSchedule, PipelineRun, Backfill]:
    schedule = PipelineSchedule.create(
        name="nightly",
        pipeline_uuid="my_pipeline",
        schedule_interval="@daily",
        status="active",
        start_time=datetime(2024, 1, 1, 9, tzinfo=UTC),
        sla=3600,
        settings={"landing_time_enabled": True, "timezone": "Europe/Berlin"},
    )
    run = PipelineRun.create(pipeline_schedule_id=schedule.id, variables={"k": 1})
    run.update(status="running")
    run.update(status="completed", completed_at=run.created_at + timedelta(seconds=30))
    backfill = Backfill.create(
        pipeline_schedule_id=schedule.id,
        start_datetime=datetime(2024, 1, 1, tzinfo=UTC),
        end_datetime=datetime(2024, 1, 3, tzinfo=UTC),
        interval_type="day",
    )
    backfill.start()
    return schedule, run, backfill


def test_reading_every_mage_property_issues_no_write(
    store: Store, statements: list[str]
) -> None:
    schedule, run, backfill = _history(store)
    # A value assigned directly and not saved: reading must neither save nor drop it.
    schedule.variables = {"pending": True}
    statements.clear()
    now = datetime(2024, 6, 1, 12, tzinfo=UTC)

    read: dict[str, Any] = {
        "pipeline_runs": schedule.pipeline_runs,
        "pipeline_runs_count": schedule.pipeline_runs_count,
        "in_progress": schedule.pipeline_in_progress_runs_count,
        "last_status": schedule.last_pipeline_run_status,
        "recent": schedule.recently_completed_pipeline_runs(sample_size=3),
        "average": schedule.runtime_average(sample_size=7),
        "history": schedule.runtime_history(),
        "active": PipelineSchedule.active_schedules(pipeline_uuids=["my_pipeline"]),
        "settings": (schedule.timeout, schedule.timeout_status, schedule.timezone),
        "timing": schedule.timing,
        "landing": schedule.landing_time_enabled(),
        "should": schedule.should_schedule(now=now),
        "current": schedule.current_execution_date(now=now),
        "next": schedule.next_execution_date(now=now),
        "backfills": schedule.backfills,
        "matchers": schedule.event_matchers,
        "get": PipelineSchedule.query.get(schedule.id),
        "filter": PipelineSchedule.query.filter_by(pipeline_uuid="my_pipeline").all(),
        "order": PipelineRun.query.order_by(PipelineRun.id.desc()).all(),
        "partition": run.execution_partition,
        "passed_sla": run.passed_sla,
        "block_runs": run.block_runs,
        "block_runs_count": run.block_runs_count,
        "run_schedule": run.pipeline_schedule,
        "run_backfill": run.backfill,
        "runtime": run.runtime,
        "notebook": run.executed_notebook_path,
        "progress": backfill.progress(),
        "preview": backfill.preview_run_dates(),
        "backfill_runs": backfill.pipeline_runs,
        "backfill_schedule": backfill.pipeline_schedule,
        "refresh": run.refresh(),
    }

    assert statements, "the reads above must have reached the database"
    assert writes(statements) == []
    assert read["pipeline_runs_count"] == 1 + 3  # the hand-made run and the backfill's three
    assert read["progress"]["total"] == 3
    assert schedule.variables == {"pending": True}  # still pending, not lost
    stored = PipelineSchedule.query.get(schedule.id)
    assert stored.variables is None  # and not saved by any read


def test_a_pending_assignment_is_saved_by_update_or_save(store: Store) -> None:
    schedule, _run, _backfill = _history(store)
    schedule.variables = {"env": "prod"}
    schedule.update(sla=60)
    stored = PipelineSchedule.query.get(schedule.id)
    assert stored.variables == {"env": "prod"} and stored.sla == 60
    schedule.description = "nightly load"
    schedule.save()
    assert PipelineSchedule.query.get(schedule.id).description == "nightly load"


def test_service_functions_return_immutable_records(store: Store) -> None:
    created = schedule_service.create_schedule(
        store, name="api", pipeline_uuid="my_pipeline", schedule_type="api", status="active"
    )
    assert isinstance(created, records.ScheduleRecord)
    assert created.token is not None and len(created.token) >= 16  # shown once
    with pytest.raises(dataclasses.FrozenInstanceError):
        created.name = "other"  # type: ignore[misc]
    fetched = schedule_service.get_schedule(store, created.id)
    assert fetched.token is None and fetched.token_hint == created.token_hint
    run = run_service.create_run(store, pipeline_schedule_id=created.id)
    assert isinstance(run, records.RunRecord)
    assert run.execution_partition.startswith(f"{created.id}/")
    backfill = backfill_service.create_backfill(
        store,
        pipeline_schedule_id=created.id,
        start_datetime="2024-01-01T00:00:00+00:00",
        end_datetime="2024-01-02T00:00:00+00:00",
        interval_type="day",
    )
    assert isinstance(backfill, records.BackfillRecord)
    started = backfill_service.start_backfill(store, backfill.id)
    assert all(isinstance(r, records.RunRecord) for r in started) and len(started) == 2
    for kind in (records.ScheduleRecord, records.RunRecord, records.BackfillRecord):
        assert dataclasses.is_dataclass(kind) and kind.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_one_place_turns_records_into_json_and_frame_rows(store: Store) -> None:
    schedule = schedule_service.create_schedule(
        store, name="n", pipeline_uuid="my_pipeline", schedule_interval="@hourly"
    )
    run = run_service.create_run(store, pipeline_schedule_id=schedule.id, variables={"a": 1})
    as_json = records.to_json(run)
    assert as_json["status"] == "initial"
    assert as_json["execution_date"] == run.execution_date.isoformat()
    assert as_json["execution_partition"] == run.execution_partition
    assert "token_hash" not in records.to_json(schedule)
    assert records.to_json(schedule)["token"] == schedule.token  # the creating record shows it
    stored = schedule_service.get_schedule(store, schedule.id)
    assert "token" not in records.to_json(stored) and "token_hash" not in records.to_json(stored)
    assert records.to_json(schedule, pipeline_runs_count=1)["pipeline_runs_count"] == 1
    row = records.to_row(run)
    assert row["status"] == "initial" and row["execution_date"].tzinfo is not None
    assert row["duration"] is None


def test_records_hold_no_session_or_connection(store: Store) -> None:
    schedule = schedule_service.create_schedule(
        store, name="n", pipeline_uuid="my_pipeline", schedule_interval="@hourly"
    )
    store.engine.dispose()  # every pooled connection gone
    assert schedule.name == "n" and schedule.status == "inactive"  # still fully readable
    assert store.engine.pool.checkedout() == 0


# --------------------------------------------------------------------------------------------
# Async twins
# --------------------------------------------------------------------------------------------


def _many_schedules(store: Store, count: int) -> None:
    """Enough rows that one listing costs tens of milliseconds of Python work."""
    from sqlalchemy import insert

    from mage_nb_sched.store import schema

    now = datetime(2024, 1, 1, tzinfo=UTC)
    with store.write_engine.begin() as connection:
        connection.execute(
            insert(schema.pipeline_schedule),
            [
                {
                    "name": f"s{index}",
                    "pipeline_uuid": "my_pipeline",
                    "schedule_type": "time",
                    "schedule_interval": "@daily",
                    "status": "active",
                    "settings": {"timezone": "UTC"},
                    "variables": {"index": index},
                    "created_at": now,
                    "updated_at": now,
                }
                for index in range(count)
            ],
        )


async def _lag_while(work: Any) -> float:
    """The worst delay of a 1 ms ticker on this loop while ``work`` runs."""
    worst = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - before - 0.001)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        await work()
    finally:
        done.set()
        await task
    return worst


def test_fifty_concurrent_twin_calls_leave_the_loop_free(store: Store) -> None:
    # Big enough that one call costs far more than the GIL hand-offs the pool's threads cause
    # (bounded by the interpreter's switch interval per thread, whatever the call's size).
    _many_schedules(store, 10_000)
    costs = []
    for _ in range(3):
        started = time.perf_counter()
        listed = schedule_service.list_schedules(store, status="active")
        costs.append(time.perf_counter() - started)
    assert len(listed) == 10_000
    one_call = statistics.median(costs)

    async def one_twin() -> int:
        # Only the count is kept: 50 x 10,000 live records would make the garbage collector's
        # pauses (process-wide, not the twins' doing) the thing measured.
        return len(await schedule_service.alist_schedules(store, status="active"))

    async def fifty_twins() -> None:
        counts = await asyncio.gather(*(one_twin() for _ in range(50)))
        assert counts == [10_000] * 50

    async def fifty_on_the_loop() -> None:
        schedule_service.list_schedules(store, status="active")

    import gc

    # The garbage collector stays on, but what the rest of the test session left on the heap is
    # frozen out of it: a full collection over that heap stalls every thread alike, twins or not.
    gc.collect()
    gc.freeze()
    try:
        twin_lag = asyncio.run(_lag_while(fifty_twins))
        blocking_lag = asyncio.run(_lag_while(fifty_on_the_loop))
    finally:
        gc.unfreeze()
    # The control shows the ticker sees blocking work: calling the plain function on the loop
    # stalls it by about one call.
    assert blocking_lag > one_call * 0.5
    # The twins: however many are in flight, the loop never waits as long as one call takes.
    assert twin_lag < one_call, (twin_lag, one_call)


def test_twins_give_the_same_results_and_errors(store: Store) -> None:
    async def cell() -> None:
        created = await schedule_service.acreate_schedule(
            store, name="t", pipeline_uuid="my_pipeline", schedule_interval="@daily"
        )
        again = await schedule_service.aget_schedule(store, created.id)
        assert again == dataclasses.replace(created, token=None)
        from mage_nb_sched import NotFoundError, ValidationError

        with pytest.raises(NotFoundError):
            await schedule_service.aget_schedule(store, 10_000)
        with pytest.raises(ValidationError) as caught:
            await schedule_service.aupdate_schedule(store, created.id, sla=-1)
        assert caught.value.field == "sla"

    asyncio.run(cell())
    assert schedule_service.acreate_schedule.__name__ == "acreate_schedule"


def test_no_layer_below_the_front_ends_resolves_the_default_store() -> None:
    package = Path(__file__).resolve().parents[1] / "mage_nb_sched"
    offenders = [
        str(path.relative_to(package))
        for layer in ("core", "service", "execution", "scheduling")
        for path in (package / layer).rglob("*.py")
        if "current_store" in path.read_text(encoding="utf-8")
        or "use_store" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


def test_polling_the_mage_query_holds_no_connection(store: Store) -> None:
    import gc

    schedule, run, _backfill = _history(store)
    gc.disable()  # only prompt closing may return connections, not the garbage collector
    try:
        for _ in range(100):
            PipelineRun.query.get(run.id)
            PipelineSchedule.query.filter_by(name="nightly").all()
            PipelineRun.query.filter_by(pipeline_schedule_id=schedule.id).count()
            PipelineRun.query.order_by(PipelineRun.id).first()
            list(PipelineSchedule.query)
        assert store.engine.pool.checkedout() == 0
    finally:
        gc.enable()
