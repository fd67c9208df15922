"""``schedules_frame()``, ``runs_frame(...)``, ``block_runs_frame(run_id)`` on a real SQLite store:
columns and dtypes (tz-aware datetimes) with and without rows, filters, ``last``, and a number of
statements that does not grow with the number of schedules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import event, insert

import mage_nb_sched
from mage_nb_sched.core.errors import NotFoundError, ValidationError
from mage_nb_sched.frames import BLOCK_COLUMNS, RUN_COLUMNS, SCHEDULE_COLUMNS
from mage_nb_sched.service import runs, schedules
from mage_nb_sched.store import Store, schema

UTC = timezone.utc
JAN = datetime(2024, 1, 1, tzinfo=UTC)


def dtypes(frame: Any) -> dict[str, str]:
    return {name: str(dtype) for name, dtype in frame.dtypes.items()}


def finished_run(
    store: Store,
    schedule_id: int | None,
    day: int,
    status: str = "completed",
    seconds: float = 30.0,
    pipeline_uuid: str | None = None,
) -> Any:
    execution_date = JAN + timedelta(days=day)
    values: dict[str, Any] = {
        "execution_date": execution_date,
        "status": status,
        "started_at": execution_date + timedelta(seconds=5),
        "completed_at": execution_date + timedelta(seconds=5 + seconds),
    }
    if schedule_id is not None:
        values["pipeline_schedule_id"] = schedule_id
    if pipeline_uuid is not None:
        values["pipeline_uuid"] = pipeline_uuid
    return runs.create_run(store, **values)


@contextmanager
def counted_selects(store: Store) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(*args: Any) -> None:
        statement = str(args[2])
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", record)


def test_empty_frames_keep_their_columns_and_dtypes(store: Store) -> None:
    run = runs.create_run(store, pipeline_uuid="my_pipeline")
    for frame, columns in (
        (mage_nb_sched.schedules_frame(), SCHEDULE_COLUMNS),
        (mage_nb_sched.runs_frame(), RUN_COLUMNS),
        (mage_nb_sched.runs_frame(status="failed"), RUN_COLUMNS),
        (mage_nb_sched.block_runs_frame(run.id), BLOCK_COLUMNS),
    ):
        assert isinstance(frame, pd.DataFrame)
        assert list(frame.columns) == list(columns)
        assert dtypes(frame) == columns
    assert len(mage_nb_sched.runs_frame(status="failed")) == 0


def test_schedules_frame_has_one_row_per_schedule_with_its_statistics(store: Store) -> None:
    nightly = schedules.create_schedule(
        store,
        name="nightly",
        pipeline_uuid="etl/daily",
        schedule_interval="@daily",
        status="active",
        settings={"timezone": "Europe/Berlin"},
        sla=60,
    )
    hook = schedules.create_schedule(
        store, name="hook", pipeline_uuid="my_pipeline", schedule_type="api"
    )
    finished_run(store, nightly.id, 1)
    late = finished_run(store, nightly.id, 2, seconds=600)
    runs.update_run(store, late.id, sla_breached=True)
    finished_run(store, nightly.id, 3, status="failed")

    frame = mage_nb_sched.schedules_frame()
    assert list(frame.columns) == list(SCHEDULE_COLUMNS)
    assert dtypes(frame) == SCHEDULE_COLUMNS
    rows = {row["name"]: row for row in frame.to_dict("records")}
    assert list(frame["id"]) == [nightly.id, hook.id]
    first = rows["nightly"]
    assert first["pipeline_uuid"] == "etl/daily"
    assert (first["schedule_type"], first["schedule_interval"]) == ("time", "@daily")
    assert (first["timezone"], first["status"]) == ("Europe/Berlin", "active")
    assert (first["runs"], first["sla_breaches"], first["last_status"]) == (3, 1, "failed")
    # The next run is the next local midnight in Berlin, as a tz-aware UTC timestamp.
    next_run = first["next_run"]
    assert next_run.tzinfo is not None
    assert next_run > pd.Timestamp.now(tz="UTC")
    local = next_run.tz_convert("Europe/Berlin")
    assert (local.hour, local.minute) == (0, 0)
    second = rows["hook"]
    assert (second["schedule_type"], second["timezone"], second["status"]) == (
        "api",
        "UTC",
        "inactive",
    )
    assert (second["runs"], second["sla_breaches"]) == (0, 0)
    assert second["last_status"] is None and pd.isna(second["next_run"])


def test_schedules_frame_reads_a_fixed_number_of_statements(store: Store) -> None:
    def selects() -> int:
        with counted_selects(store) as seen:
            mage_nb_sched.schedules_frame()
        return len(seen)

    for index in range(2):
        made = schedules.create_schedule(
            store, name=f"s{index}", pipeline_uuid="my_pipeline", schedule_interval="@hourly"
        )
        finished_run(store, made.id, index)
    few = selects()
    for index in range(2, 12):
        made = schedules.create_schedule(
            store, name=f"s{index}", pipeline_uuid="my_pipeline", schedule_interval="@hourly"
        )
        finished_run(store, made.id, index)
    assert len(mage_nb_sched.schedules_frame()) == 12
    assert selects() == few <= 6


def test_runs_frame_columns_durations_and_sla(store: Store) -> None:
    nightly = schedules.create_schedule(
        store, name="nightly", pipeline_uuid="etl/daily", schedule_interval="@daily"
    )
    done = finished_run(store, nightly.id, 1, seconds=90)
    late = finished_run(store, nightly.id, 2, seconds=5)
    runs.update_run(store, late.id, sla_breached=True)
    waiting = runs.create_run(
        store, pipeline_schedule_id=nightly.id, execution_date=JAN + timedelta(days=3)
    )
    frame = mage_nb_sched.runs_frame("nightly")
    assert list(frame.columns) == list(RUN_COLUMNS)
    assert dtypes(frame) == RUN_COLUMNS
    assert list(frame["id"]) == [done.id, late.id, waiting.id]
    first = frame.iloc[0]
    assert first["execution_date"] == pd.Timestamp("2024-01-02T00:00:00Z")
    assert first["started_at"] == pd.Timestamp("2024-01-02T00:00:05Z")
    assert first["duration"] == pd.Timedelta(seconds=90)
    assert first["partition"] == done.execution_partition == f"{nightly.id}/20240102T000000"
    assert first["pipeline_uuid"] == "etl/daily"
    assert first["pipeline_schedule_id"] == nightly.id
    assert list(frame["passed_sla"]) == [True, False, True]
    assert list(frame["status"]) == ["completed", "completed", "initial"]
    # A run that has not started has no times and no duration (NaT, not an error).
    assert pd.isna(frame.iloc[2]["started_at"]) and pd.isna(frame.iloc[2]["duration"])


def test_runs_frame_filters_and_last(store: Store) -> None:
    nightly = schedules.create_schedule(
        store, name="nightly", pipeline_uuid="etl/daily", schedule_interval="@daily"
    )
    other = schedules.create_schedule(
        store, name="nightly", pipeline_uuid="my_pipeline", schedule_interval="@daily"
    )
    ours = [finished_run(store, nightly.id, day) for day in range(4)]
    failed = finished_run(store, nightly.id, 4, status="failed")
    theirs = finished_run(store, other.id, 1)
    by_hand = finished_run(store, None, 2, pipeline_uuid="etl/daily")

    def ids(frame: Any) -> list[int]:
        return [int(value) for value in frame["id"]]

    ours_ids = [run.id for run in ours] + [failed.id]
    # A name two pipelines share needs the pipeline; an id or a record does not.
    with pytest.raises(ValidationError) as ambiguous:
        mage_nb_sched.runs_frame("nightly")
    assert ambiguous.value.field == "--pipeline" and "my_pipeline" in str(ambiguous.value)
    assert ids(mage_nb_sched.runs_frame("nightly", pipeline_uuid="etl/daily")) == ours_ids
    assert ids(mage_nb_sched.runs_frame(nightly.id)) == ours_ids
    assert ids(mage_nb_sched.runs_frame(str(nightly.id))) == ours_ids
    assert ids(mage_nb_sched.runs_frame(nightly)) == ours_ids
    model = mage_nb_sched.PipelineSchedule.query.get(other.id)
    assert ids(mage_nb_sched.runs_frame(model)) == [theirs.id]
    # A pipeline's runs: every schedule's and the ones made by hand.
    assert ids(mage_nb_sched.runs_frame(pipeline_uuid="etl/daily")) == [*ours_ids, by_hand.id]
    assert ids(mage_nb_sched.runs_frame(nightly, status="failed")) == [failed.id]
    assert ids(mage_nb_sched.runs_frame(nightly, status="completed", last=2)) == [
        ours[2].id,
        ours[3].id,
    ]
    assert ids(mage_nb_sched.runs_frame(nightly, last=2)) == [ours[3].id, failed.id]
    assert ids(mage_nb_sched.runs_frame(nightly, last=0)) == []
    assert len(mage_nb_sched.runs_frame()) == 7


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"status": "exploded"}, "status"),
        ({"last": -1}, "last"),
        ({"last": "3"}, "last"),
        ({"schedule": 2.5}, "schedule"),
        ({"schedule": ""}, "schedule"),
    ],
)
def test_runs_frame_refuses_bad_arguments(store: Store, kwargs: Any, field: str) -> None:
    schedules.create_schedule(
        store, name="nightly", pipeline_uuid="etl/daily", schedule_interval="@daily"
    )
    with pytest.raises(ValidationError) as caught:
        mage_nb_sched.runs_frame(**kwargs)
    assert caught.value.field == field


def test_runs_frame_of_an_unknown_schedule_lists_the_known_ones(store: Store) -> None:
    schedules.create_schedule(
        store, name="nightly", pipeline_uuid="etl/daily", schedule_interval="@daily"
    )
    with pytest.raises(NotFoundError, match="nightly"):
        mage_nb_sched.runs_frame("weekly")


def test_block_runs_frame_has_durations_and_errors(store: Store) -> None:
    run = finished_run(store, None, 1, status="failed", pipeline_uuid="my_pipeline")
    start = JAN + timedelta(days=1, seconds=5)
    rows = [
        {
            "pipeline_run_id": run.id,
            "block_uuid": "load",
            "status": "completed",
            "started_at": start,
            "completed_at": start + timedelta(seconds=2.5),
        },
        {
            "pipeline_run_id": run.id,
            "block_uuid": "transform",
            "status": "failed",
            "started_at": start + timedelta(seconds=3),
            "completed_at": start + timedelta(seconds=4),
            "error": "ZeroDivisionError: division by zero",
        },
        {"pipeline_run_id": run.id, "block_uuid": "export", "status": "upstream_failed"},
    ]
    with store.write_engine.begin() as connection:
        for row in rows:
            connection.execute(insert(schema.block_run).values(**row))
    frame = mage_nb_sched.block_runs_frame(run.id)
    assert list(frame.columns) == list(BLOCK_COLUMNS)
    assert dtypes(frame) == BLOCK_COLUMNS
    assert list(frame["block_uuid"]) == ["load", "transform", "export"]
    assert list(frame["status"]) == ["completed", "failed", "upstream_failed"]
    assert frame.iloc[0]["duration"] == pd.Timedelta(seconds=2.5)
    assert frame.iloc[0]["started_at"] == pd.Timestamp(start)
    assert frame.iloc[1]["error"] == "ZeroDivisionError: division by zero"
    assert frame.iloc[0]["error"] is None
    assert pd.isna(frame.iloc[2]["duration"]) and pd.isna(frame.iloc[2]["completed_at"])
    with pytest.raises(NotFoundError):
        mage_nb_sched.block_runs_frame(run.id + 100)
    with pytest.raises(ValidationError):
        mage_nb_sched.block_runs_frame("1")  # type: ignore[arg-type]


def test_an_instant_nanoseconds_cannot_hold_keeps_its_value(store: Store) -> None:
    far = datetime(2900, 1, 1, tzinfo=UTC)
    run = runs.create_run(store, pipeline_uuid="my_pipeline", execution_date=far)
    frame = mage_nb_sched.runs_frame(pipeline_uuid="my_pipeline")
    assert frame.iloc[0]["id"] == run.id
    assert str(frame["execution_date"].dtype) == "datetime64[us, UTC]"
    assert frame.iloc[0]["execution_date"].to_pydatetime() == far
