"""Scheduler passes with an injected clock and a kernel-less executor (real SQLite store).

Every scenario also runs the same pass a second time and checks that it changed nothing
(DESIGN §8.2: a pass is idempotent).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select, update
from stub_executor import StubExecutor

from mage_nb_sched import Backfill, PipelineRun, PipelineSchedule
from mage_nb_sched.core.datetimes import UTC
from mage_nb_sched.models import Backfill as BackfillModel
from mage_nb_sched.models import BlockRun
from mage_nb_sched.models import PipelineRun as RunModel
from mage_nb_sched.models import PipelineSchedule as ScheduleModel
from mage_nb_sched.scheduling.loop import PassReport, Scheduler
from mage_nb_sched.scheduling.notifications import Notification
from mage_nb_sched.service.runs import create_run
from mage_nb_sched.service.schedules import create_schedule
from mage_nb_sched.store import Store
from mage_nb_sched.store import leases as leases_module
from mage_nb_sched.store.schema import scheduler_lease

T = TypeVar("T")
T0 = datetime(2024, 3, 4, 10, 30, tzinfo=UTC)  # a Monday


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_scheduler(store: Store, clock: FakeClock, **kwargs: Any) -> tuple[Scheduler, StubExecutor]:
    executor = StubExecutor(
        store,
        clock=clock,
        capacity=kwargs.pop("capacity", 100),
        auto_complete=kwargs.pop("auto_complete", False),
        honour_cancel=kwargs.pop("honour_cancel", True),
    )
    scheduler = Scheduler(store, executor=executor, clock=clock, **kwargs)
    return scheduler, executor


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await coro_fn()

    return asyncio.run(main())


def snapshot(store: Store) -> dict[str, list[tuple[str, ...]]]:
    tables = [ScheduleModel, RunModel, BlockRun, BackfillModel]
    result: dict[str, list[tuple[str, ...]]] = {}
    with store.engine.connect() as connection:
        for model in tables:
            table = model.__table__
            rows = connection.execute(select(table).order_by(table.c.id))
            result[table.name] = [tuple(repr(value) for value in row) for row in rows]
    return result


async def pass_twice(scheduler: Scheduler) -> PassReport:
    """A pass, then the same pass again: the second must change nothing."""
    first = await scheduler.run_pass()
    before = snapshot(scheduler.store)
    scheduler._next_recovery = 0.0  # the second pass runs every step, recovery included
    second = await scheduler.run_pass()
    assert not second.changed_anything, second
    assert snapshot(scheduler.store) == before
    return first


def runs_of(schedule: Any) -> list[Any]:
    return sorted(
        PipelineSchedule.query.get(schedule.id).pipeline_runs, key=lambda r: r.execution_date
    )


def hourly(store: Store, clock: FakeClock, **values: Any) -> Any:
    values.setdefault("schedule_interval", "@hourly")
    return create_schedule(
        store,
        now=clock.now,
        name=values.pop("name", "hourly"),
        pipeline_uuid=values.pop("pipeline_uuid", "my_pipeline"),
        status="active",
        **values,
    )


# --------------------------------------------------------------------------------------------
# Creating runs
# --------------------------------------------------------------------------------------------


def test_after_downtime_only_the_current_period_runs(store: Store) -> None:
    clock = FakeClock(T0)
    schedule = hourly(store, clock)

    async def scenario() -> None:
        scheduler, _executor = make_scheduler(store, clock)
        clock.now = T0 + timedelta(minutes=40)  # 11:10: the 11:00 period
        await pass_twice(scheduler)
        clock.now = T0 + timedelta(hours=5, minutes=5)  # down for hours: 15:35
        report = await pass_twice(scheduler)
        assert len(report.created) == 1

    run(scenario)
    assert [r.execution_date.hour for r in runs_of(schedule)] == [11, 15]


def test_catchup_creates_every_missed_period_oldest_first_capped(store: Store) -> None:
    clock = FakeClock(T0)
    schedule = hourly(store, clock, settings={"catchup": True, "max_catchup_runs": 3})

    async def scenario() -> None:
        scheduler, _executor = make_scheduler(store, clock, capacity=0)
        clock.now = T0 + timedelta(minutes=40)
        await pass_twice(scheduler)
        clock.now = T0 + timedelta(hours=5, minutes=5)  # 12, 13, 14, 15 missed; cap 3
        report = await pass_twice(scheduler)
        created = [PipelineRun.query.get(i).execution_date.hour for i in report.created]
        assert created == [13, 14, 15]

    run(scenario)
    assert [r.execution_date.hour for r in runs_of(schedule)] == [11, 13, 14, 15]


def test_activation_skips_the_period_under_way_unless_asked(store: Store) -> None:
    clock = FakeClock(T0)  # activated at 10:30
    plain = hourly(store, clock, name="plain")
    initial = hourly(store, clock, name="initial", settings={"create_initial_pipeline_run": True})

    async def scenario() -> None:
        scheduler, _executor = make_scheduler(store, clock, capacity=0)
        clock.now = T0 + timedelta(minutes=1)
        await pass_twice(scheduler)
        clock.now = T0 + timedelta(minutes=30)  # 11:00
        await pass_twice(scheduler)

    run(scenario)
    assert [r.execution_date.hour for r in runs_of(plain)] == [11]
    assert [r.execution_date.hour for r in runs_of(initial)] == [10, 11]


def test_cron_in_a_time_zone_fires_at_the_local_time(store: Store) -> None:
    clock = FakeClock(datetime(2024, 3, 4, 12, 0, tzinfo=UTC))
    schedule = hourly(
        store,
        clock,
        schedule_interval="30 9 * * *",
        settings={"timezone": "America/New_York"},
    )

    async def scenario() -> None:
        scheduler, _executor = make_scheduler(store, clock, capacity=0)
        await pass_twice(scheduler)  # 07:00 in New York: nothing yet
        assert runs_of(schedule) == []
        clock.now = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)  # 09:30 EST
        await pass_twice(scheduler)

    run(scenario)
    assert [r.execution_date for r in runs_of(schedule)] == [
        datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
    ]


def test_once_runs_once_and_deactivates_when_its_run_finishes(store: Store) -> None:
    clock = FakeClock(T0)
    start = T0 + timedelta(hours=2)
    schedule = hourly(store, clock, schedule_interval="@once", start_time=start)

    async def scenario() -> None:
        scheduler, executor = make_scheduler(store, clock)
        await pass_twice(scheduler)
        assert runs_of(schedule) == []
        clock.now = start + timedelta(seconds=1)
        report = await pass_twice(scheduler)
        assert len(report.created) == 1 and report.started == report.created
        assert PipelineSchedule.query.get(schedule.id).status == "active"
        executor.finish(report.created[0], "completed")
        await pass_twice(scheduler)

    run(scenario)
    assert [r.execution_date for r in runs_of(schedule)] == [start]
    assert PipelineSchedule.query.get(schedule.id).status == "inactive"


def test_always_on_starts_the_next_run_when_the_previous_ends(store: Store) -> None:
    clock = FakeClock(T0)
    schedule = hourly(store, clock, schedule_interval="@always_on")

    async def scenario() -> None:
        scheduler, executor = make_scheduler(store, clock)
        first = await pass_twice(scheduler)
        assert len(first.created) == 1
        clock.now += timedelta(minutes=5)
        await pass_twice(scheduler)  # still running: no second run
        executor.finish(first.created[0], "failed")
        clock.now += timedelta(seconds=1)
        second = await pass_twice(scheduler)
        assert len(second.created) == 1 and second.created != first.created

    run(scenario)
    assert [str(r.status) for r in runs_of(schedule)] == ["failed", "running"]


def test_landing_time_creates_the_run_early_by_the_runtime_history(store: Store) -> None:
    clock = FakeClock(datetime(2024, 3, 1, 0, 0, tzinfo=UTC))
    schedule = hourly(
        store,
        clock,
        schedule_interval="@daily",
        start_time=datetime(2024, 3, 1, 6, 0, tzinfo=UTC),
        settings={"landing_time_enabled": True},
    )
    # History: three runs of 600 s → lead = 600 s (no spread).
    with store.write_engine.begin() as connection:
        for day in (1, 2, 3):
            created = datetime(2024, 3, day, 5, 50, tzinfo=UTC)
            connection.execute(
                RunModel.__table__.insert().values(
                    pipeline_schedule_id=schedule.id,
                    pipeline_uuid="my_pipeline",
                    execution_date=datetime(2024, 3, day, 6, 0, tzinfo=UTC).replace(tzinfo=None),
                    status="completed",
                    created_at=created.replace(tzinfo=None),
                    updated_at=created.replace(tzinfo=None),
                    completed_at=(created + timedelta(seconds=600)).replace(tzinfo=None),
                    finalized_at=created.replace(tzinfo=None),
                    sla_breached=False,
                    run_key=f"history-{day}",
                )
            )

    async def scenario() -> None:
        scheduler, _executor = make_scheduler(store, clock, capacity=0)
        clock.now = datetime(2024, 3, 4, 5, 49, 59, tzinfo=UTC)
        first = await pass_twice(scheduler)
        assert first.created == []
        assert first.next_wake == datetime(2024, 3, 4, 5, 50, tzinfo=UTC)
        clock.now = datetime(2024, 3, 4, 5, 50, tzinfo=UTC)
        second = await pass_twice(scheduler)
        assert len(second.created) == 1
        assert PipelineRun.query.get(second.created[0]).execution_date == datetime(
            2024, 3, 4, 6, 0, tzinfo=UTC
        )

    run(scenario)


# --------------------------------------------------------------------------------------------
# Starting runs: skip-if-running, limits
# --------------------------------------------------------------------------------------------


def test_skip_if_previous_running_records_the_period_cancelled_with_reason(store: Store) -> None:
    clock = FakeClock(T0)
    schedule = hourly(store, clock, settings={"skip_if_previous_running": True})

    async def scenario() -> None:
        scheduler, _executor = make_scheduler(store, clock)
        clock.now = T0 + timedelta(minutes=30)
        first = await pass_twice(scheduler)
        assert first.started == first.created  # executing, never finishes
        clock.now = T0 + timedelta(minutes=90)
        second = await pass_twice(scheduler)
        assert list(second.skipped) == second.created

    run(scenario)
    statuses = [(str(r.status), (r.metrics or {}).get("error")) for r in runs_of(schedule)]
    assert statuses[0] == ("running", None)
    assert statuses[1][0] == "cancelled"
    assert "skip_if_previous_running" in statuses[1][1]


def test_skip_if_previous_running_applies_to_api_runs(store: Store) -> None:
    clock = FakeClock(T0)
    schedule = create_schedule(
        store,
        now=T0,
        name="api",
        pipeline_uuid="my_pipeline",
        schedule_type="api",
        status="active",
        settings={"skip_if_previous_running": True},
    )

    async def scenario() -> None:
        scheduler, _executor = make_scheduler(store, clock)
        first = create_run(store, pipeline_schedule_id=schedule.id, now=T0)
        await pass_twice(scheduler)
        second = create_run(store, pipeline_schedule_id=schedule.id, now=T0)
        report = await pass_twice(scheduler)
        assert list(report.skipped) == [second.id]
        assert str(PipelineRun.query.get(first.id).status) == "running"

    run(scenario)


@pytest.mark.parametrize("action", ["wait", "skip"])
def test_pipeline_run_limit_waits_or_skips(store: Store, action: str) -> None:
    clock = FakeClock(T0)
    schedule = hourly(
        store,
        clock,
        settings={
            "catchup": True,
            "create_initial_pipeline_run": True,
            "pipeline_run_limit": 1,
            "on_pipeline_run_limit_reached": action,
        },
        start_time=T0 - timedelta(hours=3),
    )

    async def scenario() -> None:
        scheduler, executor = make_scheduler(store, clock)
        clock.now = T0 + timedelta(minutes=1)  # periods 8, 9, 10 are due at once
        report = await pass_twice(scheduler)
        assert len(report.created) == 3
        assert len(report.started) == 1
        oldest = min(report.created, key=lambda i: PipelineRun.query.get(i).execution_date)
        assert report.started == [oldest]
        waiting = [i for i in report.created if i != oldest]
        if action == "skip":
            assert sorted(report.skipped) == sorted(waiting)
        else:
            assert report.skipped == {}
            executor.finish(oldest)
            nxt = await pass_twice(scheduler)
            assert nxt.started == [waiting[0]]  # oldest waiting first

    run(scenario)
    statuses = [str(r.status) for r in runs_of(schedule)]
    if action == "skip":
        assert statuses == ["running", "cancelled", "cancelled"]
    else:
        assert statuses == ["completed", "running", "initial"]


def test_pipeline_limit_counts_runs_of_every_trigger(store: Store) -> None:
    clock = FakeClock(T0)
    settings = {"pipeline_run_limit_all_triggers": 1, "create_initial_pipeline_run": True}
    hourly(store, clock, name="a", settings=settings)
    hourly(store, clock, name="b", settings=settings)
    hourly(store, clock, name="other", pipeline_uuid="etl/daily", settings=settings)

    async def scenario() -> None:
        scheduler, _executor = make_scheduler(store, clock)
        report = await pass_twice(scheduler)
        assert len(report.created) == 3
        started = [PipelineRun.query.get(i).pipeline_uuid for i in report.started]
        assert sorted(started) == ["etl/daily", "my_pipeline"]

    run(scenario)


def test_capacity_bounds_what_is_handed_to_the_executor(store: Store) -> None:
    clock = FakeClock(T0)
    for index in range(5):
        create_run(store, pipeline_uuid="my_pipeline", now=T0 + timedelta(seconds=index))

    async def scenario() -> None:
        scheduler, executor = make_scheduler(store, clock, capacity=2)
        report = await pass_twice(scheduler)
        assert len(report.started) == 2
        executor.finish(report.started[0])
        nxt = await pass_twice(scheduler)
        assert len(nxt.started) == 1

    run(scenario)


# --------------------------------------------------------------------------------------------
# SLA, timeouts, notifications
# --------------------------------------------------------------------------------------------


def test_sla_breach_is_flagged_and_notified_once_while_the_run_waits(store: Store) -> None:
    clock = FakeClock(T0)
    schedule = hourly(store, clock, sla=600)
    seen: list[Notification] = []

    async def scenario() -> None:
        scheduler, _executor = make_scheduler(store, clock, capacity=0)  # nothing can start
        assert scheduler.notifier is not None
        scheduler.notifier.add_sink(seen.append)
        clock.now = T0 + timedelta(minutes=30, seconds=1)  # 11:00:01
        report = await pass_twice(scheduler)
        assert report.next_wake is not None
        assert report.next_wake <= datetime(2024, 3, 4, 11, 10, tzinfo=UTC)
        clock.now = datetime(2024, 3, 4, 11, 10, tzinfo=UTC)
        await pass_twice(scheduler)
        clock.now += timedelta(minutes=5)
        await pass_twice(scheduler)

    run(scenario)
    [only] = runs_of(schedule)
    assert only.sla_breached and not only.passed_sla
    assert [n.kind for n in seen] == ["sla_breach"]
    assert seen[0].run_id == only.id and "SLA of 600 s" in (seen[0].reason or "")


def test_a_run_that_finished_late_is_flagged_when_closed(store: Store) -> None:
    clock = FakeClock(T0)
    schedule = hourly(store, clock, sla=60, settings={"create_initial_pipeline_run": True})
    seen: list[Notification] = []

    async def scenario() -> None:
        scheduler, executor = make_scheduler(store, clock)
        assert scheduler.notifier is not None
        scheduler.notifier.add_sink(seen.append)
        clock.now = datetime(2024, 3, 4, 11, 0, 30, tzinfo=UTC)  # 30 s into the 11:00 period
        report = await pass_twice(scheduler)
        assert seen == []  # within its SLA while running
        # It finishes at 11:02 — past the SLA — and no pass ran in between (scheduler busy).
        clock.now = datetime(2024, 3, 4, 11, 2, tzinfo=UTC)
        executor.finish(report.started[0], "completed")
        await pass_twice(scheduler)

    run(scenario)
    assert [n.kind for n in seen] == ["sla_breach"]
    only = runs_of(schedule)[-1]
    assert only.sla_breached and only.finalized_at is not None


def test_failure_notification_once_success_filtered_by_default(store: Store) -> None:
    clock = FakeClock(T0)
    seen: list[Notification] = []
    ok = create_run(store, pipeline_uuid="my_pipeline", now=T0)
    bad = create_run(store, pipeline_uuid="etl/daily", now=T0)

    async def scenario() -> None:
        scheduler, executor = make_scheduler(store, clock)
        assert scheduler.notifier is not None
        scheduler.notifier.add_sink(seen.append)
        await pass_twice(scheduler)
        executor.finish(ok.id, "completed")
        executor.finish(bad.id, "failed")
        await pass_twice(scheduler)

    run(scenario)
    assert [(n.kind, n.run_id) for n in seen] == [("failure", bad.id)]


def test_run_timeout_is_enforced_even_if_the_worker_hangs(store: Store) -> None:
    clock = FakeClock(T0)
    schedule = hourly(
        store,
        clock,
        settings={
            "timeout": 60,
            "timeout_status": "cancelled",
            "create_initial_pipeline_run": True,
        },
    )

    async def scenario() -> None:
        scheduler, executor = make_scheduler(store, clock, honour_cancel=False, kill_grace=0.0)
        first = await pass_twice(scheduler)
        [run_id] = first.started
        clock.now += timedelta(seconds=30)
        await pass_twice(scheduler)
        assert executor.cancelled == []
        clock.now += timedelta(seconds=32)
        report = await scheduler.run_pass()
        assert report.stopped == [run_id]
        assert executor.cancelled == [run_id]
        # The worker does not answer the cancel: the next pass kills it.
        await scheduler.run_pass()
        assert executor.killed == [run_id]
        await pass_twice(scheduler)

    run(scenario)
    [only] = runs_of(schedule)
    assert str(only.status) == "cancelled"
    assert "settings.timeout (60 s)" in only.metrics["error"]


def test_block_timeout_fails_the_run(store: Store) -> None:
    clock = FakeClock(T0)
    schedule = hourly(
        store, clock, settings={"block_timeout": 10, "create_initial_pipeline_run": True}
    )

    async def scenario() -> None:
        scheduler, executor = make_scheduler(store, clock)
        [run_id] = (await pass_twice(scheduler)).started
        with store.write_engine.begin() as connection:
            connection.execute(
                BlockRun.__table__.insert().values(
                    pipeline_run_id=run_id,
                    block_uuid="load",
                    status="running",
                    started_at=clock.now.replace(tzinfo=None),
                    created_at=clock.now.replace(tzinfo=None),
                    updated_at=clock.now.replace(tzinfo=None),
                )
            )
        clock.now += timedelta(seconds=12)
        report = await scheduler.run_pass()
        assert report.stopped == [run_id] and executor.cancelled == [run_id]
        await pass_twice(scheduler)

    run(scenario)
    [only] = runs_of(schedule)
    assert str(only.status) == "failed"
    assert "block load ran longer than settings.block_timeout (10 s)" in only.metrics["error"]
    [block] = only.block_runs
    assert str(block.status) == "failed" and "block_timeout" in (block.error or "")


def test_a_run_cancelled_through_the_store_is_stopped_in_the_executor(store: Store) -> None:
    clock = FakeClock(T0)
    manual = create_run(store, pipeline_uuid="my_pipeline", now=T0)

    async def scenario() -> None:
        scheduler, executor = make_scheduler(store, clock)
        await pass_twice(scheduler)
        PipelineRun.query.get(manual.id).update(status="cancelled")
        report = await scheduler.run_pass()
        assert report.stopped == [manual.id]
        assert executor.cancelled == [manual.id]

    run(scenario)


# --------------------------------------------------------------------------------------------
# Backfills
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_backfill_runs_oldest_first_under_its_limit_then_completes(
    store: Store, outcome: str
) -> None:
    clock = FakeClock(T0)
    schedule = hourly(store, clock, name="src")
    backfill = Backfill.create(
        pipeline_schedule_id=schedule.id,
        start_datetime=datetime(2024, 1, 1, tzinfo=UTC),
        end_datetime=datetime(2024, 1, 5, tzinfo=UTC),
        interval_type="day",
        settings={"pipeline_run_limit": 2},
    )
    backfill.start()
    order: list[datetime] = []

    async def scenario() -> None:
        scheduler, executor = make_scheduler(store, clock)
        while True:
            report = await pass_twice(scheduler)
            assert len(executor.active_runs) <= 2
            if not report.started:
                break
            for run_id in report.started:
                order.append(PipelineRun.query.get(run_id).execution_date)
                third = len(order) == 3
                executor.finish(run_id, "failed" if outcome == "failed" and third else "completed")

    run(scenario)
    assert order == sorted(order) and len(order) == 5
    fresh = BackfillModel.query.get(backfill.id)
    assert str(fresh.status) == outcome
    progress = fresh.progress()
    assert progress["total"] == 5 and progress["done"] == (5 if outcome == "completed" else 4)


def test_backfill_cancel_stops_its_executing_runs(store: Store) -> None:
    clock = FakeClock(T0)
    backfill = Backfill.create(
        pipeline_uuid="my_pipeline",
        start_datetime=datetime(2024, 1, 1, tzinfo=UTC),
        end_datetime=datetime(2024, 1, 3, tzinfo=UTC),
        interval_type="day",
    )
    backfill.start()

    async def scenario() -> None:
        scheduler, executor = make_scheduler(store, clock)
        report = await pass_twice(scheduler)
        assert len(report.started) == 3
        backfill.cancel()
        stopped = await scheduler.run_pass()
        assert sorted(stopped.stopped) == sorted(report.started)
        assert sorted(executor.cancelled) == sorted(report.started)

    run(scenario)
    assert str(BackfillModel.query.get(backfill.id).status) == "cancelled"


# --------------------------------------------------------------------------------------------
# Recovery and leases
# --------------------------------------------------------------------------------------------


def _owned_running_run(store: Store, owner: str, now: datetime) -> int:
    created = create_run(store, pipeline_uuid="my_pipeline", now=now)
    with store.write_engine.begin() as connection:
        connection.execute(
            update(RunModel)
            .where(RunModel.id == created.id)
            .values(status="running", owner=owner, started_at=now)
        )
    return created.id


def test_runs_of_a_dead_scheduler_are_retried_then_failed_with_the_reason(store: Store) -> None:
    clock = FakeClock(T0)
    dead = "sched:elsewhere:4026531836:1:deadbeef"
    run_id = _owned_running_run(store, dead, T0)

    async def scenario() -> None:
        scheduler, executor = make_scheduler(store, clock, max_recovery_attempts=1)
        report = await pass_twice(scheduler)
        assert report.requeued == [run_id] and report.started == [run_id]
        # That scheduler dies too while executing it: the second time it is failed.
        with store.write_engine.begin() as connection:
            connection.execute(update(RunModel).where(RunModel.id == run_id).values(owner=dead))
        executor._futures.pop(run_id)
        scheduler._in_flight.pop(run_id)
        scheduler._recently_done.clear()
        scheduler._next_recovery = 0.0
        again = await pass_twice(scheduler)
        assert again.failed == [run_id]

    run(scenario)
    fresh = PipelineRun.query.get(run_id)
    assert str(fresh.status) == "failed" and fresh.attempts == 1
    assert f"its owner {dead} stopped" in fresh.metrics["error"]


def test_runs_of_a_live_scheduler_are_left_alone(store: Store) -> None:
    clock = FakeClock(T0)
    other = "sched:elsewhere:4026531836:2:cafebabe"
    leases_module.acquire(store, leases_module.instance_lease_name(other), other, T0, 30)
    run_id = _owned_running_run(store, other, T0)

    async def scenario() -> None:
        scheduler, _executor = make_scheduler(store, clock)
        report = await pass_twice(scheduler)
        assert report.requeued == [] and report.failed == []

    run(scenario)
    assert str(PipelineRun.query.get(run_id).status) == "running"


def test_a_run_of_a_process_that_exited_is_recovered(store: Store) -> None:
    import subprocess
    import sys

    clock = FakeClock(T0)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    run_id = _owned_running_run(store, leases_module.direct_owner(child.pid), T0)
    alive = _owned_running_run(store, leases_module.direct_owner(), T0)

    async def scenario() -> None:
        scheduler, _executor = make_scheduler(store, clock, max_recovery_attempts=0)
        report = await pass_twice(scheduler)
        assert report.failed == [run_id]

    run(scenario)
    assert str(PipelineRun.query.get(alive).status) == "running"


def test_one_leader_and_takeover_after_the_lease_expires(store: Store) -> None:
    now = T0
    assert leases_module.acquire(store, "leader", "a", now, 10)
    assert not leases_module.acquire(store, "leader", "b", now + timedelta(seconds=9), 10)
    assert leases_module.acquire(store, "leader", "a", now + timedelta(seconds=9), 10)  # renew
    assert not leases_module.acquire(store, "leader", "b", now + timedelta(seconds=18), 10)
    assert leases_module.acquire(store, "leader", "b", now + timedelta(seconds=19), 10)
    assert leases_module.holder(store, "leader") == ("b", now + timedelta(seconds=29))
    leases_module.release(store, "leader", "a")  # not a's any more: no effect
    assert leases_module.holder(store, "leader") is not None
    leases_module.release(store, "leader", "b")
    with store.engine.connect() as connection:
        assert connection.execute(select(scheduler_lease)).all() == []


def test_shutdown_requeues_runs_still_executing(store: Store) -> None:
    clock = FakeClock(T0)
    manual = create_run(store, pipeline_uuid="my_pipeline", now=T0)

    async def scenario() -> None:
        scheduler, executor = make_scheduler(store, clock)
        await scheduler.start()
        # The loop's first pass hands the run over (the stub holds it "executing").
        await asyncio.wait_for(_until(lambda: manual.id in executor.submitted), 30)
        await scheduler.stop(grace=0.05)
        assert executor.shut_down

    run(scenario)
    fresh = PipelineRun.query.get(manual.id)
    assert str(fresh.status) == "initial" and fresh.owner is None and fresh.started_at is None
    with store.engine.connect() as connection:
        assert connection.execute(select(scheduler_lease)).all() == []


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------------------------
# triggers.yaml and retention
# --------------------------------------------------------------------------------------------


def test_changed_triggers_files_are_synced(store: Store, project_dir: Path) -> None:
    clock = FakeClock(T0)
    path = project_dir / "my_pipeline.triggers.yaml"

    async def scenario() -> None:
        scheduler, _executor = make_scheduler(store, clock)
        await scheduler.maintain()
        assert PipelineSchedule.active_schedules() == []
        path.write_text(
            "triggers:\n- name: nightly\n  schedule_type: time\n  schedule_interval: '@daily'\n"
            "  status: active\n"
        )
        await scheduler.maintain()
        [schedule] = PipelineSchedule.active_schedules()
        assert schedule.name == "nightly" and schedule.in_code
        path.write_text(
            "triggers:\n- name: nightly\n  schedule_type: time\n  schedule_interval: '@hourly'\n"
            "  status: active\n"
        )
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        await scheduler.maintain()
        assert PipelineSchedule.query.get(schedule.id).schedule_interval == "@hourly"

    run(scenario)


def test_retention_deletes_old_runs_with_their_files(store: Store, project_dir: Path) -> None:
    from mage_nb_sched.store.artifacts import run_dir

    clock = FakeClock(T0)
    old = create_run(store, pipeline_uuid="my_pipeline", now=T0 - timedelta(days=40))
    recent = create_run(store, pipeline_uuid="my_pipeline", now=T0 - timedelta(days=1))
    for item, finished in ((old, T0 - timedelta(days=40)), (recent, T0 - timedelta(days=1))):
        with store.write_engine.begin() as connection:
            connection.execute(
                update(RunModel)
                .where(RunModel.id == item.id)
                .values(status="completed", completed_at=finished, finalized_at=finished)
            )
        folder = run_dir(project_dir, "my_pipeline", item.execution_partition)
        folder.mkdir(parents=True)
        (folder / "notebook.ipynb").write_text("{}")
    old_folder = run_dir(project_dir, "my_pipeline", old.execution_partition)

    async def scenario() -> None:
        scheduler, _executor = make_scheduler(store, clock, run_retention_days=30)
        await scheduler.maintain()

    run(scenario)
    assert PipelineRun.query.get(old.id) is None and not old_folder.exists()
    assert PipelineRun.query.get(recent.id) is not None


def test_schedule_changes_make_the_scheduler_look_again(store: Store) -> None:
    clock = FakeClock(T0)
    schedule = hourly(store, clock)

    async def scenario() -> None:
        scheduler, _executor = make_scheduler(store, clock, capacity=0)
        report = await pass_twice(scheduler)
        assert report.next_wake == datetime(2024, 3, 4, 11, 0, tzinfo=UTC)
        PipelineSchedule.query.get(schedule.id).update(schedule_interval="*/5 * * * *")
        again = await pass_twice(scheduler)
        assert again.next_wake == datetime(2024, 3, 4, 10, 35, tzinfo=UTC)

    run(scenario)


def test_idle_pass_reads_no_schedule_rows(store: Store) -> None:
    """An idle pass asks the index for due schedules and finds none: nothing is loaded."""
    from sqlalchemy import event

    clock = FakeClock(T0)
    for index in range(50):
        hourly(store, clock, name=f"s{index}")
    statements: list[str] = []

    async def scenario() -> None:
        scheduler, _executor = make_scheduler(store, clock, capacity=0)
        await scheduler.run_pass()  # evaluates the 50 new schedules once

        def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements.append(statement)

        event.listen(store.engine, "before_cursor_execute", record)
        try:
            await scheduler.run_pass()
        finally:
            event.remove(store.engine, "before_cursor_execute", record)

    run(scenario)
    queries = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # One probe answers everything an idle pass needs; no schedule or run rows are loaded.
    assert len(queries) == 1, queries
    assert "EXISTS" in queries[0] and "min(pipeline_schedule.next_due_at)" in queries[0]
    assert not [s for s in statements if s.lstrip().upper().startswith(("UPDATE", "INSERT"))]


def test_a_dead_local_leader_is_replaced_without_waiting_for_its_lease(store: Store) -> None:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = leases_module.new_instance_id(child.pid)
    alive = leases_module.new_instance_id()
    assert leases_module.acquire(store, "leader", dead, T0, 10)
    assert not leases_module.acquire(store, "leader", "sched:new:1:x", T0, 10)
    assert leases_module.take_over_from_dead(store, "leader", "sched:new:1:x", T0, 10)
    assert leases_module.holder(store, "leader") == ("sched:new:1:x", T0 + timedelta(seconds=10))
    # A live holder (this very process) is never displaced.
    leases_module.release(store, "leader", "sched:new:1:x")
    assert leases_module.acquire(store, "leader", alive, T0, 10)
    assert not leases_module.take_over_from_dead(store, "leader", "sched:new:1:x", T0, 10)


def test_a_scheduler_in_another_pid_namespace_is_not_judged_by_pid(store: Store) -> None:
    """Same host name, different pid namespace (a container): pid 1 there is not pid 1 here."""
    host = leases_module.local_identity().split(":")[0]
    foreign = f"sched:{host}:1:{os.getpid() + 10_000_000}:abcdef12"
    assert leases_module.owner_is_alive(foreign, {foreign})  # live heartbeat: alive
    assert not leases_module.owner_is_alive(foreign, set())  # no heartbeat: dead
    local_dead = leases_module.new_instance_id(os.getpid() + 10_000_000)
    assert not leases_module.owner_is_alive(local_dead, {local_dead})


def test_a_stalled_executor_cannot_overwrite_the_run_claimed_again(store: Store) -> None:
    """Fencing: a runner whose run was requeued and claimed by another executor writes
    nothing — not the run's status, not its blocks."""
    from mage_nb_sched.execution.runner import _finish_run, _set_block, claim_run, fail_run
    from mage_nb_sched.service.transitions import requeue_run

    manual = create_run(store, pipeline_uuid="my_pipeline", now=T0)
    old_blocks = claim_run(store, manual.id, T0, None, "old-token")
    assert old_blocks == {}
    with store.write_engine.begin() as connection:
        assert requeue_run(connection, manual.id, "its scheduler stalled", T0)
    assert claim_run(store, manual.id, T0, None, "new-token") == {}
    with store.write_engine.begin() as connection:
        connection.execute(
            BlockRun.__table__.insert().values(
                pipeline_run_id=manual.id,
                block_uuid="load",
                status="running",
                created_at=T0.replace(tzinfo=None),
                updated_at=T0.replace(tzinfo=None),
            )
        )
    [block] = PipelineRun.query.get(manual.id).block_runs
    assert _finish_run(store, manual.id, "completed", T0, {}, "old-token") == "running"
    assert not fail_run(store, manual.id, "old worker stopped", T0, token="old-token")
    _set_block(store, block.id, "old-token", status="cancelled")
    fresh = PipelineRun.query.get(manual.id)
    assert str(fresh.status) == "running" and str(fresh.block_runs[0].status) == "running"
    # The current execution's writes go through.
    assert _finish_run(store, manual.id, "completed", T0, {}, "new-token") == "completed"


def test_catchup_is_not_hidden_by_a_hand_made_run_of_the_schedule(store: Store) -> None:
    clock = FakeClock(T0)
    schedule = hourly(store, clock, settings={"catchup": True})

    async def scenario() -> None:
        scheduler, _executor = make_scheduler(store, clock, capacity=0)
        clock.now = T0 + timedelta(minutes=40)  # the 11:00 period
        await pass_twice(scheduler)
        # Down until 14:10, when someone clicks "run now" on the schedule first.
        clock.now = T0 + timedelta(hours=3, minutes=40)
        create_run(store, pipeline_schedule_id=schedule.id, now=clock.now)
        report = await pass_twice(scheduler)
        hours = sorted(PipelineRun.query.get(i).execution_date.hour for i in report.created)
        assert hours == [12, 13, 14]

    run(scenario)


def test_backfill_runs_are_not_skipped_by_skip_if_previous_running(store: Store) -> None:
    clock = FakeClock(T0)
    schedule = hourly(
        store, clock, settings={"skip_if_previous_running": True, "pipeline_run_limit": 1}
    )
    backfill = Backfill.create(
        pipeline_schedule_id=schedule.id,
        start_datetime=datetime(2024, 1, 1, tzinfo=UTC),
        end_datetime=datetime(2024, 1, 3, tzinfo=UTC),
        interval_type="day",
    )
    backfill.start()

    async def scenario() -> None:
        scheduler, _executor = make_scheduler(store, clock)
        report = await pass_twice(scheduler)
        # The schedule's own rules do not apply to the backfill's runs (its own limit does).
        assert len(report.started) == 3 and report.skipped == {}
        clock.now = T0 + timedelta(minutes=30)  # the schedule's 11:00 period
        own = await pass_twice(scheduler)
        assert len(own.created) == 1 and own.started == own.created

    run(scenario)


def test_retention_keeps_files_shared_with_a_kept_run(store: Store, project_dir: Path) -> None:
    from mage_nb_sched.store.artifacts import run_dir

    clock = FakeClock(T0)
    day = T0 - timedelta(days=40)
    old = create_run(store, pipeline_uuid="my_pipeline", now=day)
    with store.write_engine.begin() as connection:
        connection.execute(
            update(RunModel)
            .where(RunModel.id == old.id)
            .values(status="completed", completed_at=day, finalized_at=day)
        )
    # A re-run of the same day (same partition), finished yesterday: kept, with its files.
    again = create_run(store, pipeline_uuid="my_pipeline", now=day, run_key="rerun-of-that-day")
    with store.write_engine.begin() as connection:
        yesterday = T0 - timedelta(days=1)
        connection.execute(
            update(RunModel)
            .where(RunModel.id == again.id)
            .values(status="completed", completed_at=yesterday, finalized_at=yesterday)
        )
    folder = run_dir(project_dir, "my_pipeline", old.execution_partition)
    assert old.execution_partition == again.execution_partition
    folder.mkdir(parents=True)
    (folder / "notebook.ipynb").write_text("{}")

    async def scenario() -> None:
        scheduler, _executor = make_scheduler(store, clock, run_retention_days=30)
        await scheduler.maintain()

    run(scenario)
    assert PipelineRun.query.get(old.id) is None
    assert folder.exists()


def test_a_retry_pause_is_not_a_block_timeout(store: Store) -> None:
    clock = FakeClock(T0)
    schedule = hourly(
        store,
        clock,
        settings={"block_timeout": 10, "retries": 1, "create_initial_pipeline_run": True},
    )

    async def scenario() -> None:
        scheduler, executor = make_scheduler(store, clock)
        [run_id] = (await pass_twice(scheduler)).started
        with store.write_engine.begin() as connection:
            connection.execute(
                BlockRun.__table__.insert().values(
                    pipeline_run_id=run_id,
                    block_uuid="load",
                    status="queued",  # the runner parks a block here while it waits to retry
                    started_at=clock.now.replace(tzinfo=None),
                    created_at=clock.now.replace(tzinfo=None),
                    updated_at=clock.now.replace(tzinfo=None),
                )
            )
        clock.now += timedelta(seconds=60)
        report = await pass_twice(scheduler)
        assert report.stopped == [] and executor.cancelled == []

    run(scenario)
    assert str(runs_of(schedule)[0].status) == "running"


def test_a_standby_sleeps_instead_of_spinning(store: Store) -> None:
    """Two schedulers on one database: the standby wakes on changes but does not busy-loop
    (it shares the event loop with the Jupyter server)."""

    async def scenario() -> tuple[int, int, int]:
        # A short lease: were the standby to spin, it would still yield at each heartbeat, so
        # the test ends (and fails on the count) instead of hanging.
        leader, _ = make_scheduler(store, FakeClock(T0), lease_seconds=3)
        standby, _ = make_scheduler(store, FakeClock(T0), lease_seconds=3)
        leader.clock = standby.clock = lambda: datetime.now(UTC)
        await leader.start()
        await _until(lambda: leader.is_leader)
        await standby.start()
        try:
            await asyncio.wait_for(_until(lambda: standby.iterations > 0), 30)
            before = standby.iterations
            # Commits wake the standby (change signal); each may cost one turn, no more.
            for index in range(20):
                create_run(store, pipeline_uuid="my_pipeline", run_key=f"poke-{index}")
                await asyncio.sleep(0.03)
            return before, standby.iterations, int(standby.is_leader)
        finally:
            await standby.stop(grace=0)
            await leader.stop(grace=0)

    import faulthandler

    # A standby that never yields blocks this loop for good: end the test run with tracebacks
    # rather than hang CI.
    faulthandler.dump_traceback_later(120, exit=True)
    try:
        before, after, standby_leads = run(scenario)
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert standby_leads == 0
    assert after - before <= 60, (before, after)  # a spinning loop makes millions of turns


def test_losing_the_lease_does_not_cancel_runs_still_ours(store: Store) -> None:
    clock = FakeClock(T0)
    mine = create_run(store, pipeline_uuid="my_pipeline", now=T0)
    taken = create_run(store, pipeline_uuid="my_pipeline", now=T0)

    async def scenario() -> None:
        scheduler, executor = make_scheduler(store, clock)
        report = await pass_twice(scheduler)
        assert sorted(report.started) == sorted([mine.id, taken.id])
        # Another scheduler took over one of them (it had stalled past its heartbeat).
        with store.write_engine.begin() as connection:
            connection.execute(
                update(RunModel).where(RunModel.id == taken.id).values(owner="sched:x:1:2:y")
            )
        scheduler.is_leader = False
        await scheduler._stop_runs_taken_elsewhere()
        assert executor.cancelled == [taken.id]

    run(scenario)


def test_runs_taken_between_planning_and_writing_are_left_alone(store: Store) -> None:
    """Planning reads without the write lock; the writes only touch runs still waiting."""
    from mage_nb_sched.scheduling.passes import StartPlan, _apply_start_plan
    from mage_nb_sched.service.transitions import take_run

    to_start = create_run(store, pipeline_uuid="my_pipeline", now=T0)
    to_skip = create_run(store, pipeline_uuid="my_pipeline", now=T0)
    free = create_run(store, pipeline_uuid="my_pipeline", now=T0)
    # `mage-nb-sched run` / `await run.execute()` took two of them meanwhile.
    assert take_run(store, to_start.id, leases_module.direct_owner())
    assert take_run(store, to_skip.id, leases_module.direct_owner())
    plan = StartPlan(start=[to_start.id, free.id], skipped={to_skip.id: "skipped: test"})
    _apply_start_plan(store, plan, "sched:me:1:2:3", T0)
    assert plan.start == [free.id] and plan.skipped == {}
    assert str(PipelineRun.query.get(to_skip.id).status) == "initial"
    assert PipelineRun.query.get(to_start.id).owner == leases_module.direct_owner()
    assert PipelineRun.query.get(free.id).owner == "sched:me:1:2:3"
