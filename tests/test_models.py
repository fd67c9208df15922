"""Mage's Python model API end to end, on a real SQLite file (no mocks).

Every read-back that matters goes through a *fresh* session (``store.new_session()``) so what is
checked is what the database holds, not what an identity map remembers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytz
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from mage_nb_sched import (
    Backfill,
    BlockRun,
    PipelineRun,
    PipelineSchedule,
    ScheduleInterval,
    ScheduleStatus,
    ScheduleType,
    ValidationError,
)
from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.core.enums import PipelineRunStatus
from mage_nb_sched.service import runs as run_service
from mage_nb_sched.service import schedules as schedule_service
from mage_nb_sched.store import Store

UTC = timezone.utc


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.fixture
def fresh(store: Store) -> Iterator[Session]:
    """A session independent of the thread-local one the model API uses."""
    session = store.new_session()
    yield session
    session.close()


def count(store: Store, model: Any, **where: Any) -> int:
    with store.new_session() as session:
        statement = select(func.count()).select_from(model)
        for key, value in where.items():
            statement = statement.where(getattr(model, key) == value)
        return int(session.scalar(statement) or 0)


def daily(name: str = "daily_etl_trigger", **extra: Any) -> PipelineSchedule:
    values: dict[str, Any] = {
        "name": name,
        "pipeline_uuid": "my_pipeline",
        "schedule_type": ScheduleType.TIME,
        "schedule_interval": ScheduleInterval.DAILY,
    }
    values.update(extra)
    return PipelineSchedule.create(**values)


def set_row(store: Store, model: Any, row_id: int, **values: Any) -> None:
    """Change a row behind the model API's back (as another process would)."""
    with store.new_session() as session:
        row = session.get(model, row_id)
        assert row is not None
        for key, value in values.items():
            setattr(row, key, value)
        session.commit()


# =============================================================================================
# PipelineSchedule.create
# =============================================================================================


def test_create_defaults_inactive_time_schedule(store: Store, fresh: Session) -> None:
    schedule = PipelineSchedule.create(
        name="plain", pipeline_uuid="my_pipeline", schedule_interval="@daily"
    )
    row = fresh.get(PipelineSchedule, schedule.id)
    assert row is not None
    assert row.status == ScheduleStatus.INACTIVE
    assert row.schedule_type == ScheduleType.TIME
    assert row.last_enabled_at is None
    assert row.pipeline_uuid == "my_pipeline"
    assert row.in_code is False


def test_create_active_stamps_last_enabled_at(store: Store, fresh: Session) -> None:
    before = utcnow()
    schedule = daily(status=ScheduleStatus.ACTIVE)
    after = utcnow()
    row = fresh.get(PipelineSchedule, schedule.id)
    assert row is not None
    assert row.status == ScheduleStatus.ACTIVE
    assert row.last_enabled_at is not None
    assert before <= row.last_enabled_at <= after


def test_create_active_with_given_now_stamps_that_instant(store: Store, fresh: Session) -> None:
    schedule = schedule_service.create_schedule(
        store, name="n", pipeline_uuid="my_pipeline", schedule_interval="@hourly",
        status="active", now=utc(2024, 5, 1, 12, 34),
    )
    row = fresh.get(PipelineSchedule, schedule.id)
    assert row is not None
    assert row.last_enabled_at == utc(2024, 5, 1, 12, 34)


def test_seed_time_schedule_example_round_trips(store: Store, fresh: Session) -> None:
    schedule = PipelineSchedule.create(
        name="daily_etl_trigger",
        pipeline_uuid="my_pipeline",
        schedule_type=ScheduleType.TIME,
        schedule_interval=ScheduleInterval.DAILY,
        start_time=datetime(2024, 1, 1, 9, 0, 0, tzinfo=pytz.UTC),
        status=ScheduleStatus.ACTIVE,
        variables={"env": "production"},
    )
    row = fresh.get(PipelineSchedule, schedule.id)
    assert row is not None
    assert row.name == "daily_etl_trigger"
    assert row.schedule_interval == "@daily"
    assert row.start_time == utc(2024, 1, 1, 9)
    assert row.variables == {"env": "production"}


def test_token_is_shown_once_and_only_its_hash_is_stored(store: Store, fresh: Session) -> None:
    schedule = PipelineSchedule.create(
        name="api_trigger", pipeline_uuid="my_pipeline", schedule_type=ScheduleType.API,
        status=ScheduleStatus.ACTIVE,
    )
    clear = schedule.token
    assert isinstance(clear, str) and len(clear) >= 32

    row = fresh.get(PipelineSchedule, schedule.id)
    assert row is not None
    assert row.token is None
    assert row.token_hash and row.token_hash != clear
    assert row.check_token(clear) is True
    assert row.check_token(clear + "x") is False
    assert row.check_token("") is False

    # The clear token is nowhere in the database row.
    raw = fresh.execute(
        text("SELECT * FROM pipeline_schedule WHERE id = :id"), {"id": schedule.id}
    ).one()
    assert all(clear not in str(value) for value in raw)


def test_caller_token_accepted_and_short_token_refused(store: Store, fresh: Session) -> None:
    given = "unique-api-token-123"  # the seed's token (20 chars)
    schedule = PipelineSchedule.create(
        name="api_trigger", pipeline_uuid="my_pipeline", schedule_type=ScheduleType.API,
        status=ScheduleStatus.ACTIVE, token=given,
    )
    assert schedule.token == given
    row = fresh.get(PipelineSchedule, schedule.id)
    assert row is not None and row.token is None
    assert row.check_token(given)
    assert not row.check_token("unique-api-token-124")

    with pytest.raises(ValidationError) as info:
        PipelineSchedule.create(
            name="api_short", pipeline_uuid="my_pipeline", schedule_type=ScheduleType.API,
            token="short-token",
        )
    assert info.value.field == "token"
    assert "short-token" not in str(info.value)  # tokens are never echoed
    assert count(store, PipelineSchedule, name="api_short") == 0


def test_rotate_token_replaces_the_old_one(store: Store, fresh: Session) -> None:
    schedule = PipelineSchedule.create(
        name="api", pipeline_uuid="my_pipeline", schedule_type="api"
    )
    old = schedule.token
    assert old is not None
    new = schedule.rotate_token()
    assert new != old
    row = fresh.get(PipelineSchedule, schedule.id)
    assert row is not None
    assert row.check_token(new) and not row.check_token(old)


# =============================================================================================
# update
# =============================================================================================


def test_update_returns_self_and_persists(store: Store, fresh: Session) -> None:
    schedule = daily()
    result = schedule.update(
        schedule_interval=ScheduleInterval.HOURLY,
        start_time=datetime(2024, 1, 1, 9, 0, 0, tzinfo=pytz.UTC),
        variables={"env": "production", "region": "eu-west-1", "batch_size": 1000},
    )
    assert result is schedule
    row = fresh.get(PipelineSchedule, schedule.id)
    assert row is not None
    assert row.schedule_interval == "@hourly"
    assert row.start_time == utc(2024, 1, 1, 9)
    assert row.variables == {"env": "production", "region": "eu-west-1", "batch_size": 1000}


def test_update_can_be_awaited(store: Store, fresh: Session) -> None:
    schedule = daily()

    async def cell() -> PipelineSchedule:
        return await schedule.update(sla=3600)

    result = asyncio.run(cell())
    assert result is schedule
    row = fresh.get(PipelineSchedule, schedule.id)
    assert row is not None and row.sla == 3600


def test_settings_assigned_then_awaited_update_as_in_seed(store: Store, fresh: Session) -> None:
    schedule = daily(start_time=utc(2024, 1, 1, 9))
    schedule.settings = {
        "skip_if_previous_running": True,
        "timeout": 3600,
        "timeout_status": "cancelled",
        "landing_time_enabled": True,
        "create_initial_pipeline_run": False,
    }

    async def cell() -> None:
        await schedule.update(settings=schedule.settings)

    asyncio.run(cell())
    row = fresh.get(PipelineSchedule, schedule.id)
    assert row is not None
    assert row.settings == {
        "skip_if_previous_running": True,
        "timeout": 3600,
        "timeout_status": "cancelled",
        "landing_time_enabled": True,
        "create_initial_pipeline_run": False,
    }
    assert row.timeout == 3600
    assert row.timeout_status == "cancelled"
    assert row.landing_time_enabled() is True


def test_activation_stamps_last_enabled_at(store: Store, fresh: Session) -> None:
    schedule = daily()
    assert schedule.last_enabled_at is None
    schedule_service.update_schedule(
        store, schedule.id, status="active", now=utc(2024, 3, 1, 8, 15)
    )
    schedule.refresh()
    row = fresh.get(PipelineSchedule, schedule.id)
    assert row is not None
    assert row.status == "active"
    assert row.last_enabled_at == utc(2024, 3, 1, 8, 15)

    # Deactivate and re-activate through the model API: stamped with the current time.
    schedule.update(status=ScheduleStatus.INACTIVE)
    before = utcnow()
    schedule.update(status=ScheduleStatus.ACTIVE)
    fresh.rollback()  # end the read snapshot and forget loaded rows
    row = fresh.get(PipelineSchedule, schedule.id)
    assert row is not None and row.last_enabled_at is not None
    assert before <= row.last_enabled_at <= utcnow()


def test_updating_an_active_schedule_keeps_last_enabled_at(store: Store, fresh: Session) -> None:
    schedule = PipelineSchedule.query.get(schedule_service.create_schedule(
        store, name="n", pipeline_uuid="my_pipeline", schedule_interval="@daily",
        status="active", now=utc(2024, 1, 1),
    ).id)
    schedule.update(status=ScheduleStatus.ACTIVE, sla=60)
    row = fresh.get(PipelineSchedule, schedule.id)
    assert row is not None and row.last_enabled_at == utc(2024, 1, 1)


def test_activation_with_explicit_last_enabled_at_as_in_seed(
    store: Store, fresh: Session
) -> None:
    schedule = daily()
    schedule.update(
        status=ScheduleStatus.ACTIVE,
        last_enabled_at=datetime(2024, 2, 2, 10, 0, tzinfo=pytz.UTC),
    )
    row = fresh.get(PipelineSchedule, schedule.id)
    assert row is not None
    assert row.last_enabled_at == utc(2024, 2, 2, 10)


# =============================================================================================
# delete
# =============================================================================================


def test_delete_cascades_runs_block_runs_and_backfills(store: Store) -> None:
    schedule = daily()
    other = daily(name="other")
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)
    kept_run = PipelineRun.create(pipeline_schedule_id=other.id)
    with store.new_session() as session:
        session.add(BlockRun(pipeline_run_id=run.id, block_uuid="load_data"))
        session.add(BlockRun(pipeline_run_id=kept_run.id, block_uuid="load_data"))
        session.commit()
    backfill = Backfill.create(
        pipeline_schedule_id=schedule.id, name="jan",
        start_datetime=utc(2024, 1, 1), end_datetime=utc(2024, 1, 3), interval_type="day",
    )
    backfill.start()
    assert count(store, PipelineRun, pipeline_schedule_id=schedule.id) == 4
    assert count(store, BlockRun) == 2

    schedule.delete()

    assert count(store, PipelineSchedule, id=schedule.id) == 0
    assert count(store, PipelineRun, pipeline_schedule_id=schedule.id) == 0
    assert count(store, Backfill) == 0
    assert count(store, BlockRun, pipeline_run_id=run.id) == 0
    # The other schedule's rows are untouched.
    assert count(store, PipelineSchedule, id=other.id) == 1
    assert count(store, PipelineRun, id=kept_run.id) == 1
    assert count(store, BlockRun, pipeline_run_id=kept_run.id) == 1
    assert PipelineSchedule.query.get(schedule.id) is None


def test_deleting_a_run_cascades_its_block_runs_in_sqlite(store: Store) -> None:
    schedule = daily()
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)
    with store.new_session() as session:
        session.add_all([BlockRun(pipeline_run_id=run.id, block_uuid=f"b{i}") for i in range(3)])
        session.commit()
    assert run.block_runs_count == 3
    run.delete()
    assert count(store, BlockRun) == 0
    assert count(store, PipelineRun) == 0


# =============================================================================================
# PipelineRun.create / query
# =============================================================================================


def test_run_create_defaults(store: Store, fresh: Session) -> None:
    schedule = daily()
    before = utcnow()
    run = PipelineRun.create(
        pipeline_schedule_id=schedule.id,
        variables={"date": "2024-01-15", "env": "production"},
        status=PipelineRun.PipelineRunStatus.INITIAL,
    )
    after = utcnow()
    row = fresh.get(PipelineRun, run.id)
    assert row is not None
    assert row.pipeline_uuid == "my_pipeline"  # the schedule's
    assert before <= row.execution_date <= after
    assert row.status == "initial"
    assert row.variables == {"date": "2024-01-15", "env": "production"}
    assert row.run_key  # every run has a key


def test_run_create_seed_manual_run(store: Store, fresh: Session) -> None:
    schedule = daily()
    run = PipelineRun.create(
        pipeline_schedule_id=schedule.id,
        pipeline_uuid="my_pipeline",
        execution_date=datetime(2024, 1, 15, 9, 30, tzinfo=pytz.UTC),
        variables={"env": "staging", "date": "2024-01-15"},
        status=PipelineRun.PipelineRunStatus.INITIAL,
    )
    row = fresh.get(PipelineRun, run.id)
    assert row is not None
    assert row.execution_date == utc(2024, 1, 15, 9, 30)
    assert row.pipeline_schedule_id == schedule.id


def test_run_create_explicit_id_is_honoured(store: Store, fresh: Session) -> None:
    schedule = daily()
    run = PipelineRun.create(id=456, pipeline_schedule_id=schedule.id)
    assert run.id == 456
    assert fresh.get(PipelineRun, 456) is not None
    assert PipelineRun.query.get(456).pipeline_schedule_id == schedule.id


def test_run_key_makes_create_idempotent(store: Store) -> None:
    schedule = daily()
    first = PipelineRun.create(pipeline_schedule_id=schedule.id, run_key="orders-2024-01-15")
    second = PipelineRun.create(pipeline_schedule_id=schedule.id, run_key="orders-2024-01-15")
    assert first.id == second.id
    assert count(store, PipelineRun) == 1
    third = PipelineRun.create(pipeline_schedule_id=schedule.id, run_key="orders-2024-01-16")
    assert third.id != first.id
    assert count(store, PipelineRun) == 2


def test_query_get_sees_changes_committed_by_another_session(store: Store) -> None:
    schedule = daily()
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)
    # A read first, so the model API's session has something it could cache.
    assert PipelineRun.query.get(run.id).status == PipelineRunStatus.INITIAL

    set_row(store, PipelineRun, run.id, status=PipelineRunStatus.RUNNING)
    assert PipelineRun.query.get(run.id).status == "running"

    set_row(store, PipelineRun, run.id, status=PipelineRunStatus.COMPLETED)
    assert PipelineRun.query.get(run.id).status == "completed"
    assert PipelineRun.query.filter_by(id=run.id).one().status == "completed"


def test_schedule_properties_see_changes_committed_by_another_session(store: Store) -> None:
    schedule = daily()
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)
    assert schedule.last_pipeline_run_status == "initial"
    assert schedule.pipeline_in_progress_runs_count == 1

    set_row(store, PipelineRun, run.id, status=PipelineRunStatus.FAILED)
    assert schedule.last_pipeline_run_status == "failed"
    assert schedule.pipeline_in_progress_runs_count == 0
    assert [r.status for r in schedule.pipeline_runs] == ["failed"]


def test_run_create_for_a_schedule_created_by_another_session(store: Store) -> None:
    daily(name="first")
    assert len(PipelineSchedule.query.all()) == 1  # the model API's session has read
    with store.new_session() as session:  # e.g. the server process creates a schedule
        other = PipelineSchedule(
            name="made_elsewhere", pipeline_uuid="my_pipeline", schedule_interval="@daily"
        )
        session.add(other)
        session.commit()
        other_id = other.id
    run = PipelineRun.create(pipeline_schedule_id=other_id)
    assert run.pipeline_schedule_id == other_id
    assert run.pipeline_uuid == "my_pipeline"


def test_query_get_unknown_id_is_none(store: Store) -> None:
    assert PipelineRun.query.get(987654) is None
    assert PipelineSchedule.query.get(987654) is None


# =============================================================================================
# Run properties
# =============================================================================================


def test_execution_partition_format(store: Store) -> None:
    schedule = daily(id=123)
    assert schedule.id == 123
    run = PipelineRun.create(
        pipeline_schedule_id=123, execution_date=datetime(2024, 1, 15, 9, 30, tzinfo=pytz.UTC)
    )
    assert run.execution_partition == "123/20240115T093000"
    assert PipelineRun.query.get(run.id).execution_partition == "123/20240115T093000"

    precise = PipelineRun.create(
        pipeline_schedule_id=123, execution_date=utc(2024, 1, 15, 9, 30, 0, 123456)
    )
    assert precise.execution_partition == "123/20240115T093000_123456"


def test_execution_partition_of_a_non_utc_execution_date_uses_utc(store: Store) -> None:
    schedule = daily(id=7)
    run = PipelineRun.create(
        pipeline_schedule_id=schedule.id,
        execution_date=datetime(2024, 1, 15, 10, 30, tzinfo=ZoneInfo("Europe/Berlin")),
    )
    assert run.execution_partition == "7/20240115T093000"


def test_passed_sla_and_sla_breached(store: Store, fresh: Session) -> None:
    schedule = daily(sla=3600)
    run = PipelineRun.create(pipeline_schedule_id=schedule.id)
    assert run.passed_sla is True
    assert run.sla_breached is False
    run.update(sla_breached=True)
    loaded = PipelineRun.query.get(run.id)
    assert loaded.passed_sla is False
    assert loaded.sla_breached is True
    row = fresh.get(PipelineRun, run.id)
    assert row is not None and row.sla_breached is True


def test_block_runs_count_and_pipeline_runs(store: Store) -> None:
    schedule = daily()
    first = PipelineRun.create(pipeline_schedule_id=schedule.id, execution_date=utc(2024, 1, 1))
    second = PipelineRun.create(pipeline_schedule_id=schedule.id, execution_date=utc(2024, 1, 2))
    assert first.block_runs_count == 0
    with store.new_session() as session:
        session.add_all(
            [BlockRun(pipeline_run_id=first.id, block_uuid=u) for u in ("load", "clean", "save")]
        )
        session.add(BlockRun(pipeline_run_id=second.id, block_uuid="load"))
        session.commit()
    assert first.block_runs_count == 3
    assert second.block_runs_count == 1
    assert [b.block_uuid for b in first.block_runs] == ["load", "clean", "save"]
    runs = schedule.pipeline_runs
    assert [r.id for r in runs] == [first.id, second.id]
    assert all(isinstance(r, PipelineRun) for r in runs)
    assert daily(name="empty").pipeline_runs == []


def test_in_progress_count_and_last_status(store: Store) -> None:
    schedule = daily()
    assert schedule.last_pipeline_run_status is None
    assert schedule.pipeline_in_progress_runs_count == 0
    statuses = ["completed", "running", "initial", "failed", "cancelled"]
    created = []
    for index, status in enumerate(statuses):
        run = PipelineRun.create(
            pipeline_schedule_id=schedule.id, execution_date=utc(2024, 1, 1 + index),
            status=status,
        )
        set_row(store, PipelineRun, run.id, created_at=utc(2024, 2, 1, index))
        created.append(run)
    assert schedule.pipeline_in_progress_runs_count == 2
    assert schedule.last_pipeline_run_status == "cancelled"
    # "last" means most recently created, not highest execution date.
    set_row(store, PipelineRun, created[1].id, created_at=utc(2024, 3, 1))
    assert schedule.last_pipeline_run_status == "running"


def _completed_run(
    store: Store, schedule: PipelineSchedule, execution_date: datetime, seconds: float
) -> PipelineRun:
    run = PipelineRun.create(pipeline_schedule_id=schedule.id, execution_date=execution_date)
    start = utc(2024, 6, 1, 0, 0)
    set_row(
        store, PipelineRun, run.id,
        status=PipelineRunStatus.COMPLETED,
        created_at=start,
        completed_at=start + timedelta(seconds=seconds),
    )
    return run


def test_recently_completed_runs_newest_first(store: Store) -> None:
    schedule = daily()
    a = _completed_run(store, schedule, utc(2024, 1, 1), 10)
    c = _completed_run(store, schedule, utc(2024, 1, 3), 35)
    b = _completed_run(store, schedule, utc(2024, 1, 2), 20)
    PipelineRun.create(pipeline_schedule_id=schedule.id, execution_date=utc(2024, 1, 4))
    failed = PipelineRun.create(
        pipeline_schedule_id=schedule.id, execution_date=utc(2024, 1, 5), status="failed"
    )
    recent = schedule.recently_completed_pipeline_runs(sample_size=10)
    assert [r.id for r in recent] == [c.id, b.id, a.id]
    assert failed.id not in [r.id for r in recent]
    assert [r.id for r in schedule.recently_completed_pipeline_runs(sample_size=2)] == [c.id, b.id]


def test_runtime_average(store: Store) -> None:
    schedule = daily()
    assert schedule.runtime_average() is None
    PipelineRun.create(pipeline_schedule_id=schedule.id, execution_date=utc(2024, 1, 9))
    assert schedule.runtime_average() is None  # an unfinished run is no sample
    _completed_run(store, schedule, utc(2024, 1, 1), 10)
    _completed_run(store, schedule, utc(2024, 1, 2), 20)
    _completed_run(store, schedule, utc(2024, 1, 3), 35)
    assert schedule.runtime_average() == 21.67
    assert schedule.runtime_average(sample_size=20) == 21.67
    assert schedule.runtime_average(sample_size=2) == 27.5  # the two newest: 35, 20
    assert schedule.runtime_average(sample_size=1) == 35


def test_runtime_average_defaults_to_seven_samples(store: Store) -> None:
    schedule = daily()
    _completed_run(store, schedule, utc(2024, 1, 1), 1000)  # the oldest: outside the 7
    for day in range(2, 9):
        _completed_run(store, schedule, utc(2024, 1, day), 10 * (day - 1))  # 10..70
    assert schedule.runtime_average() == 40.0
    assert schedule.runtime_average(sample_size=8) == round((280 + 1000) / 8, 2)


def test_active_schedules(store: Store) -> None:
    one = daily(name="one", status="active")
    daily(name="two")  # inactive
    three = PipelineSchedule.create(
        name="three", pipeline_uuid="etl/daily", schedule_interval="@hourly", status="active"
    )
    assert [s.id for s in PipelineSchedule.active_schedules()] == [one.id, three.id]
    assert [s.id for s in PipelineSchedule.active_schedules(pipeline_uuids=["my_pipeline"])] == [
        one.id
    ]
    assert [
        s.id for s in PipelineSchedule.active_schedules(pipeline_uuids=["etl/daily", "nope"])
    ] == [three.id]
    assert PipelineSchedule.active_schedules(pipeline_uuids=[]) == []


def test_query_filter_and_order(store: Store) -> None:
    daily(name="b")
    daily(name="a")
    names = [s.name for s in PipelineSchedule.query.order_by(PipelineSchedule.name).all()]
    assert names == ["a", "b"]
    assert PipelineSchedule.query.filter_by(name="a").one().name == "a"


# =============================================================================================
# Execution dates and should_schedule
# =============================================================================================


def test_current_and_next_execution_date(store: Store) -> None:
    schedule = daily(start_time=utc(2024, 1, 1))
    now = utc(2024, 1, 15, 9, 30)
    assert schedule.current_execution_date(now=now) == utc(2024, 1, 15)
    assert schedule.next_execution_date(now=now) == utc(2024, 1, 16)
    hourly = daily(name="h", schedule_interval="@hourly")
    assert hourly.current_execution_date(now=now) == utc(2024, 1, 15, 9)
    assert hourly.next_execution_date(now=now) == utc(2024, 1, 15, 10)
    cron = daily(name="c", schedule_interval="30 2 * * *")
    assert cron.current_execution_date(now=now) == utc(2024, 1, 15, 2, 30)
    assert cron.next_execution_date(now=now) == utc(2024, 1, 16, 2, 30)
    # On a boundary the instant belongs to the period that starts there (cron too).
    assert cron.current_execution_date(now=utc(2024, 1, 15, 2, 30)) == utc(2024, 1, 15, 2, 30)


def test_execution_dates_in_the_schedule_time_zone(store: Store) -> None:
    schedule = daily(settings={"timezone": "America/New_York"})
    # 2024-07-15 03:00Z is 23:00 EDT on the 14th: the day started 2024-07-14 04:00Z.
    assert schedule.current_execution_date(now=utc(2024, 7, 15, 3)) == utc(2024, 7, 14, 4)
    assert schedule.next_execution_date(now=utc(2024, 7, 15, 3)) == utc(2024, 7, 15, 4)


def test_should_schedule_and_existing_run_for_the_period(store: Store) -> None:
    schedule = daily(
        status="active", start_time=utc(2024, 1, 1), last_enabled_at=utc(2024, 1, 1)
    )
    now = utc(2024, 1, 15, 9, 30)
    decision = schedule.should_schedule(now=now)
    assert bool(decision) is True
    assert decision.execution_date == utc(2024, 1, 15)

    run, created = run_service.create_scheduled_run(store, schedule, decision.execution_date)
    assert created is True
    again, created_again = run_service.create_scheduled_run(store, schedule, utc(2024, 1, 15))
    assert created_again is False and again.id == run.id

    decision = schedule.should_schedule(now=now)
    assert bool(decision) is False
    assert "run exists" in decision.reason
    # The next period is due again.
    assert bool(schedule.should_schedule(now=utc(2024, 1, 16, 0, 1))) is True


def test_should_schedule_inactive_and_before_start(store: Store) -> None:
    inactive = daily(name="off")
    assert bool(inactive.should_schedule(now=utc(2024, 1, 15))) is False
    future = daily(name="future", status="active", start_time=utc(2024, 2, 1),
                   last_enabled_at=utc(2024, 1, 1))
    assert bool(future.should_schedule(now=utc(2024, 1, 15, 12))) is False
    assert bool(future.should_schedule(now=utc(2024, 2, 1, 0, 5))) is True
    api = PipelineSchedule.create(name="api", pipeline_uuid="my_pipeline", schedule_type="api",
                                  status="active")
    assert bool(api.should_schedule(now=utc(2024, 1, 15))) is False


def test_should_schedule_respects_activation_and_create_initial_pipeline_run(
    store: Store,
) -> None:
    activated = utc(2024, 1, 15, 9, 0)
    now = utc(2024, 1, 15, 9, 30)
    plain = schedule_service.create_schedule(
        store, name="plain", pipeline_uuid="my_pipeline", schedule_interval="@daily",
        status="active", now=activated,
    )
    plain = PipelineSchedule.query.get(plain.id)
    decision = plain.should_schedule(now=now)
    assert bool(decision) is False
    assert "activated" in decision.reason
    # The next period runs.
    assert bool(plain.should_schedule(now=utc(2024, 1, 16, 0, 0))) is True

    initial = schedule_service.create_schedule(
        store, name="initial", pipeline_uuid="my_pipeline", schedule_interval="@daily",
        status="active", now=activated, settings={"create_initial_pipeline_run": True},
    )
    initial = PipelineSchedule.query.get(initial.id)
    decision = initial.should_schedule(now=now)
    assert bool(decision) is True
    assert decision.execution_date == utc(2024, 1, 15)


# =============================================================================================
# Enums
# =============================================================================================


def test_enums_compare_equal_to_strings(store: Store, fresh: Session) -> None:
    assert ScheduleInterval.DAILY == "@daily"
    assert ScheduleInterval.ONCE == "@once"
    assert ScheduleInterval.ALWAYS_ON == "@always_on"
    assert ScheduleType.TIME == "time"
    assert ScheduleStatus.ACTIVE == "active"
    assert PipelineRun.PipelineRunStatus.CANCELLED == "cancelled"
    assert f"{ScheduleInterval.HOURLY}" == "@hourly"

    schedule = daily(status=ScheduleStatus.ACTIVE)
    row = fresh.get(PipelineSchedule, schedule.id)
    assert row is not None
    assert row.status == "active"
    assert row.status == ScheduleStatus.ACTIVE
    assert row.schedule_type == "time"
    stored = fresh.execute(
        text("SELECT status, schedule_type, schedule_interval FROM pipeline_schedule "
             "WHERE id = :id"), {"id": schedule.id}
    ).one()
    assert tuple(stored) == ("active", "time", "@daily")


def test_string_values_accepted_for_enum_fields(store: Store, fresh: Session) -> None:
    schedule = PipelineSchedule.create(
        name="s", pipeline_uuid="my_pipeline", schedule_type="time",
        schedule_interval="@weekly", status="active",
    )
    row = fresh.get(PipelineSchedule, schedule.id)
    assert row is not None
    assert row.schedule_type is ScheduleType.TIME
    assert row.status is ScheduleStatus.ACTIVE


# =============================================================================================
# Backfills
# =============================================================================================


def _january_backfill(schedule: PipelineSchedule) -> Backfill:
    return Backfill.create(
        pipeline_schedule_id=schedule.id,
        name="january_backfill",
        start_datetime=datetime(2024, 1, 1, tzinfo=pytz.UTC),
        end_datetime=datetime(2024, 1, 31, tzinfo=pytz.UTC),
        interval_type="day",
        interval_units=1,
        variables={"env": "production"},
    )


def test_backfill_preview(store: Store) -> None:
    schedule = daily()
    backfill = _january_backfill(schedule)
    assert backfill.status == "initial"
    assert count(store, PipelineRun) == 0  # create() makes no runs
    preview = backfill.preview_run_dates()
    assert len(preview) == 31
    first, last = preview[0], preview[-1]
    assert first["execution_date"] == utc(2024, 1, 1)
    assert first["ds"] == "2024-01-01"
    assert first["hr"] == "00"
    assert first["interval_start_datetime"] == utc(2024, 1, 1)
    assert first["interval_end_datetime"] == utc(2024, 1, 2)
    assert first["interval_seconds"] == 86400
    assert last["execution_date"] == utc(2024, 1, 31)
    assert last["ds"] == "2024-01-31"
    assert [p["execution_date"] for p in preview] == [utc(2024, 1, d) for d in range(1, 32)]
    assert count(store, PipelineRun) == 0  # preview writes nothing


def test_backfill_start_is_idempotent_and_progress_and_cancel(store: Store) -> None:
    schedule = daily()
    backfill = _january_backfill(schedule)
    runs = backfill.start()
    assert len(runs) == 31
    assert count(store, PipelineRun, backfill_id=backfill.id) == 31
    assert len({r.run_key for r in runs}) == 31
    assert all(r.run_key for r in runs)
    assert [r.execution_date for r in runs] == [utc(2024, 1, d) for d in range(1, 32)]
    assert runs[0].variables["env"] == "production"
    assert runs[0].variables["ds"] == "2024-01-01"
    assert runs[0].pipeline_schedule_id == schedule.id
    assert runs[0].pipeline_uuid == "my_pipeline"
    with store.new_session() as session:
        row = session.get(Backfill, backfill.id)
        assert row is not None and row.status == "running" and row.started_at is not None

    again = backfill.start()
    assert len(again) == 31
    assert {r.id for r in again} == {r.id for r in runs}
    assert count(store, PipelineRun) == 31

    # Another process finishes two runs and starts one.
    set_row(store, PipelineRun, runs[0].id, status=PipelineRunStatus.COMPLETED)
    set_row(store, PipelineRun, runs[1].id, status=PipelineRunStatus.COMPLETED)
    set_row(store, PipelineRun, runs[2].id, status=PipelineRunStatus.RUNNING)
    progress = backfill.progress()
    assert progress["total"] == 31
    assert progress["done"] == 2
    assert progress["completed"] == 2
    assert progress["running"] == 1
    assert progress["initial"] == 28

    backfill.cancel()
    progress = backfill.progress()
    assert progress["cancelled"] == 29  # the 28 initial + the running one
    assert progress["completed"] == 2
    with store.new_session() as session:
        row = session.get(Backfill, backfill.id)
        assert row is not None and row.status == "cancelled"
        statuses = session.scalars(
            select(PipelineRun.status).where(PipelineRun.backfill_id == backfill.id)
        ).all()
        assert sorted(str(s) for s in statuses) == ["cancelled"] * 29 + ["completed"] * 2


def test_backfill_progress_sees_other_sessions(store: Store) -> None:
    schedule = daily()
    backfill = _january_backfill(schedule)
    runs = backfill.start()
    assert backfill.progress()["done"] == 0
    set_row(store, PipelineRun, runs[0].id, status=PipelineRunStatus.COMPLETED)
    assert backfill.progress()["done"] == 1


# =============================================================================================
# Datetimes
# =============================================================================================


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (datetime(2024, 1, 1, 9, tzinfo=pytz.timezone("Europe/Berlin")), utc(2024, 1, 1, 8)),
        (pytz.timezone("Europe/Berlin").localize(datetime(2024, 7, 1, 9)), utc(2024, 7, 1, 7)),
        (datetime(2024, 7, 1, 9, tzinfo=ZoneInfo("America/New_York")), utc(2024, 7, 1, 13)),
        (datetime(2024, 1, 1, 9, tzinfo=ZoneInfo("America/New_York")), utc(2024, 1, 1, 14)),
        (datetime(2024, 1, 1, 9, tzinfo=timezone(timedelta(hours=5, minutes=30))),
         utc(2024, 1, 1, 3, 30)),
        (datetime(2024, 1, 1, 9), utc(2024, 1, 1, 9)),  # naive means UTC
        ("2024-01-01T09:00:00+02:00", utc(2024, 1, 1, 7)),
        ("2024-01-01T09:00:00Z", utc(2024, 1, 1, 9)),
    ],
)
def test_start_time_stored_as_the_right_utc_instant(
    store: Store, fresh: Session, given: Any, expected: datetime
) -> None:
    schedule = daily(start_time=given)
    row = fresh.get(PipelineSchedule, schedule.id)
    assert row is not None
    assert row.start_time == expected
    assert row.start_time.tzinfo is not None
    assert row.start_time.utcoffset() == timedelta(0)
    assert row.start_time.replace(tzinfo=None) == expected.replace(tzinfo=None)


def test_all_datetimes_read_back_utc_aware(store: Store, fresh: Session) -> None:
    schedule = daily(status="active", start_time=utc(2024, 1, 1))
    run = PipelineRun.create(
        pipeline_schedule_id=schedule.id,
        execution_date=datetime(2024, 1, 2, 3, 4, tzinfo=ZoneInfo("Asia/Tokyo")),
    )
    run.update(started_at=datetime(2024, 1, 2, 3, 5), status="running")
    sched_row = fresh.get(PipelineSchedule, schedule.id)
    run_row = fresh.get(PipelineRun, run.id)
    assert sched_row is not None and run_row is not None
    for value in (sched_row.start_time, sched_row.last_enabled_at, sched_row.created_at,
                  sched_row.updated_at, run_row.execution_date, run_row.started_at,
                  run_row.created_at):
        assert value is not None
        assert value.utcoffset() == timedelta(0), value
    assert run_row.execution_date == utc(2024, 1, 1, 18, 4)
    assert run_row.started_at == utc(2024, 1, 2, 3, 5)
