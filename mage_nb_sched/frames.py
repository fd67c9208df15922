"""Run history as pandas DataFrames: ``schedules_frame()``, ``runs_frame(...)``,
``block_runs_frame(run_id)``.

Every frame is built from the service's records through :func:`~mage_nb_sched.service.records.
to_row` (the one place a record becomes a row) and then given fixed columns and dtypes, so a frame
looks the same whether it has rows or not: datetimes are ``datetime64[ns, UTC]``, durations
``timedelta64[ns]``, counts ``int64``, text ``object``. (An instant past 2262, which nanoseconds
cannot hold, makes that one column ``datetime64[us, UTC]`` instead of failing.)

The frames read the current store (:func:`mage_nb_sched.store.current_store`: the project's
default, or the one set with ``use_store``); errors are the package's own
(:class:`~mage_nb_sched.core.errors.ValidationError`, :class:`~mage_nb_sched.core.errors.
NotFoundError`), naming the argument and the fix.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from mage_nb_sched.core.errors import ValidationError
from mage_nb_sched.core.settings import with_defaults
from mage_nb_sched.service import api_triggers, runs, schedules
from mage_nb_sched.service.records import BlockRunRecord, RunRecord, ScheduleRecord, to_row
from mage_nb_sched.store.engine import Store, current_store

DATETIME = "datetime64[ns, UTC]"
DURATION = "timedelta64[ns]"

#: ``schedules_frame()``: column → dtype, in order.
SCHEDULE_COLUMNS: dict[str, str] = {
    "name": "object",
    "pipeline_uuid": "object",
    "schedule_type": "object",
    "schedule_interval": "object",
    "timezone": "object",
    "status": "object",
    "next_run": DATETIME,
    "last_status": "object",
    "runs": "int64",
    "sla_breaches": "int64",
    "id": "int64",
}
#: ``runs_frame(...)``: column → dtype, in order.
RUN_COLUMNS: dict[str, str] = {
    "id": "int64",
    "execution_date": DATETIME,
    "status": "object",
    "started_at": DATETIME,
    "completed_at": DATETIME,
    "duration": DURATION,
    "passed_sla": "bool",
    "partition": "object",
    "pipeline_uuid": "object",
    "pipeline_schedule_id": "Int64",
}
#: ``block_runs_frame(run_id)``: column → dtype, in order.
BLOCK_COLUMNS: dict[str, str] = {
    "block_uuid": "object",
    "status": "object",
    "started_at": DATETIME,
    "completed_at": DATETIME,
    "duration": DURATION,
    "error": "object",
    "id": "int64",
}

__all__ = [
    "BLOCK_COLUMNS",
    "RUN_COLUMNS",
    "SCHEDULE_COLUMNS",
    "block_rows",
    "block_runs_frame",
    "frame",
    "resolve_schedule",
    "run_rows",
    "runs_frame",
    "schedule_rows",
    "schedules_frame",
]


def _pandas() -> Any:
    # Imported on first use: ``import mage_nb_sched`` stays light, and pandas has no type stubs
    # here (an ``Any`` is honest about that).
    return importlib.import_module("pandas")


def frame(rows: Iterable[Mapping[str, Any]], columns: Mapping[str, str]) -> Any:
    """A DataFrame of ``rows`` with exactly ``columns`` (name → dtype), in that order — also
    when there are no rows."""
    pd = _pandas()
    listed = list(rows)
    data = {
        name: _column(pd, [row.get(name) for row in listed], dtype)
        for name, dtype in columns.items()
    }
    return pd.DataFrame(data, columns=list(columns))


def _column(pd: Any, values: list[Any], dtype: str) -> Any:
    if dtype == DATETIME:
        parsed = pd.to_datetime(pd.Series(values, dtype=object), utc=True)
        try:
            return parsed.astype(DATETIME)
        except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime):
            return parsed.astype("datetime64[us, UTC]")
    if dtype == DURATION:
        return pd.to_timedelta(pd.Series(values, dtype=object)).astype(DURATION)
    if dtype == "object":
        return pd.Series(values, dtype=object)
    return pd.Series(values, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Rows (records → rows through records.to_row)
# --------------------------------------------------------------------------------------------


def schedule_rows(store: Store, records: Sequence[ScheduleRecord]) -> list[dict[str, Any]]:
    """One row per schedule with Mage's computed fields and the SLA-breach count, in a bounded
    number of statements whatever the number of schedules."""
    views = schedules.describe_schedules(store, records)
    rows = []
    for view in views:
        record = view.schedule
        try:
            zone = str(with_defaults(record.settings)["timezone"])
        except Exception:  # settings stored in a shape that cannot be read: shown as stored
            zone = "UTC"
        last = view.stats.last_pipeline_run_status
        rows.append(
            to_row(
                record,
                timezone=zone,
                next_run=view.next_pipeline_run_date,
                last_status=None if last is None else str(getattr(last, "value", last)),
                runs=view.stats.pipeline_runs_count,
                sla_breaches=view.stats.sla_breaches,
            )
        )
    return rows


def run_rows(records: Iterable[RunRecord]) -> list[dict[str, Any]]:
    """One row per run (``partition`` is the run's execution partition)."""
    rows = []
    for record in records:
        row = to_row(record)
        row["partition"] = row["execution_partition"]
        rows.append(row)
    return rows


def block_rows(records: Iterable[BlockRunRecord]) -> list[dict[str, Any]]:
    """One row per block run, with its ``duration`` (None until it has ended)."""
    return [to_row(record, duration=_duration(record)) for record in records]


def _duration(record: BlockRunRecord) -> timedelta | None:
    started, completed = record.started_at, record.completed_at
    return None if started is None or completed is None else completed - started


# --------------------------------------------------------------------------------------------
# The public helpers
# --------------------------------------------------------------------------------------------


def schedules_frame() -> Any:
    """Every schedule, oldest first: ``name``, ``pipeline_uuid``, ``schedule_type``,
    ``schedule_interval``, ``timezone`` (its ``settings.timezone``, default UTC), ``status``,
    ``next_run`` (tz-aware), ``last_status``, ``runs``, ``sla_breaches`` (runs that breached
    the SLA) and ``id``."""
    store = current_store()
    return frame(schedule_rows(store, schedules.list_schedules(store)), SCHEDULE_COLUMNS)


def resolve_schedule(
    store: Store, schedule: Any, pipeline_uuid: str | None = None
) -> ScheduleRecord:
    """A schedule given as a record (anything with an integer ``id``: a ``ScheduleRecord``, a
    ``PipelineSchedule``), an id, or a name (``pipeline_uuid`` narrows a name two pipelines
    share)."""
    if isinstance(schedule, bool):
        raise _bad_schedule(schedule)
    if isinstance(schedule, ScheduleRecord):
        return schedule
    if isinstance(schedule, int):
        return api_triggers.find_schedule_by_ref(store, str(schedule), pipeline_uuid)
    if isinstance(schedule, str):
        if not schedule.strip():
            raise _bad_schedule(schedule)
        return api_triggers.find_schedule_by_ref(store, schedule, pipeline_uuid)
    schedule_id = getattr(schedule, "id", None)
    if isinstance(schedule_id, int) and not isinstance(schedule_id, bool):
        return schedules.get_schedule(store, schedule_id)
    raise _bad_schedule(schedule)


def _bad_schedule(value: Any) -> ValidationError:
    return ValidationError(
        "schedule",
        value,
        "expected a schedule name, id or record",
        "Use e.g. runs_frame('nightly'), runs_frame(12) or runs_frame(schedule) with a "
        "PipelineSchedule.",
    )


def _check_last(last: Any) -> int | None:
    if last is None:
        return None
    if isinstance(last, bool) or not isinstance(last, int) or last < 0:
        raise ValidationError(
            "last", last, "expected a whole number of runs (0 or more)", "Use e.g. last=10."
        )
    return last


def runs_frame(
    schedule: Any = None,
    pipeline_uuid: str | None = None,
    status: str | None = None,
    last: int | None = None,
) -> Any:
    """Runs, oldest first: ``id``, ``execution_date``, ``status``, ``started_at``,
    ``completed_at``, ``duration``, ``passed_sla``, ``partition``, ``pipeline_uuid``,
    ``pipeline_schedule_id``.

    ``schedule``: a name, id or record (``pipeline_uuid`` then narrows a name two pipelines
    share); without it, ``pipeline_uuid`` selects a pipeline's runs (of every schedule and by
    hand). ``status``: e.g. ``'failed'``. ``last=N``: only the newest N (still oldest first).
    """
    store = current_store()
    limit = _check_last(last)
    schedule_id = None
    if schedule is not None:
        record = resolve_schedule(store, schedule, pipeline_uuid)
        schedule_id = record.id
    records = runs.list_runs(
        store,
        schedule_id=schedule_id,
        pipeline_uuid=pipeline_uuid,
        status=status,
        last=limit,
    )
    return frame(run_rows(records), RUN_COLUMNS)


def block_runs_frame(run_id: int) -> Any:
    """A run's block runs in execution order: ``block_uuid``, ``status``, ``started_at``,
    ``completed_at``, ``duration``, ``error`` and ``id``; a
    :class:`~mage_nb_sched.core.errors.NotFoundError` when there is no such run."""
    if isinstance(run_id, bool) or not isinstance(run_id, int):
        raise ValidationError(
            "run_id", run_id, "expected a run id (an integer)", "Use e.g. block_runs_frame(42)."
        )
    store = current_store()
    runs.get_run(store, run_id)
    return frame(block_rows(runs.block_runs(store, run_id)), BLOCK_COLUMNS)
