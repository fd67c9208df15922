"""Pipeline runs: create them (by hand, for a schedule's period, idempotently by key), read,
change and delete them, and read their block runs.

Every function takes its store explicitly and returns
:class:`~mage_nb_sched.service.records.RunRecord` / ``BlockRunRecord`` values. Status changes
go through the run state machine (:mod:`mage_nb_sched.core.run_states`). The connection-level
writers the runner and the scheduler use (``end_run``, ``requeue_run`` ...) live in
:mod:`mage_nb_sched.service.transitions`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from mage_nb_sched.core import run_states, timing
from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.core.datetimes import UTC
from mage_nb_sched.core.enums import PipelineRunStatus
from mage_nb_sched.core.errors import NotFoundError, ValidationError
from mage_nb_sched.core.project import require_notebook
from mage_nb_sched.service import fields
from mage_nb_sched.service.asynchronous import twin
from mage_nb_sched.service.records import BlockRunRecord, RunRecord, ScheduleRecord, from_row
from mage_nb_sched.service.schedules import get_schedule, project_dir_of, timing_of
from mage_nb_sched.service.transitions import (
    end_run,
    insert_runs_ignoring_duplicates,
    requeue_run,
    take_run,
)
from mage_nb_sched.store import schema
from mage_nb_sched.store.engine import Store

RUNS = schema.pipeline_run
BLOCKS = schema.block_run

RUN_FIELDS = {
    "id",
    "pipeline_schedule_id",
    "pipeline_uuid",
    "execution_date",
    "status",
    "started_at",
    "completed_at",
    "variables",
    "event_variables",
    "metrics",
    "backfill_id",
    "run_key",
}
UPDATE_FIELDS = {"status", "started_at", "completed_at", "variables", "metrics", "sla_breached"}

__all__ = [
    "RUN_FIELDS",
    "UPDATE_FIELDS",
    "block_runs",
    "create_run",
    "create_scheduled_run",
    "delete_run",
    "end_run",
    "get_run",
    "insert_run_once",
    "insert_runs_ignoring_duplicates",
    "list_runs",
    "manual_run_key",
    "requeue_run",
    "scheduled_run_key",
    "scheduled_run_values",
    "take_run",
    "update_run",
]


def scheduled_run_key(schedule_id: int, execution_date: datetime) -> str:
    """The key of a schedule's run for one period: at most one such run can exist."""
    return f"schedule:{schedule_id}:{execution_date.astimezone(UTC).isoformat()}"


def manual_run_key() -> str:
    return f"manual:{uuid.uuid4().hex}"


def _clean_run_fields(values: dict[str, Any]) -> dict[str, Any]:
    fields.unknown_fields(values, RUN_FIELDS, "pipeline run")
    cleaned: dict[str, Any] = {}
    for key, value in values.items():
        if key in ("execution_date", "started_at", "completed_at"):
            cleaned[key] = fields.optional_datetime(value, key)
        elif key == "status":
            cleaned[key] = fields.enum_value(value, PipelineRunStatus, "status")
        elif key in ("variables", "event_variables", "metrics"):
            cleaned[key] = fields.variables(value, key)
        elif key == "pipeline_uuid":
            cleaned[key] = fields.pipeline_uuid(value)
        elif key == "run_key":
            if not isinstance(value, str) or not value.strip() or len(value) > 255:
                raise ValidationError(
                    "run_key",
                    value,
                    "expected a non-empty string of at most 255 characters",
                    "Use e.g. run_key='orders-2024-01-15' to make the call idempotent.",
                )
            cleaned[key] = value
        else:
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValidationError(key, value, "expected an integer id", f"Use e.g. {key}=1.")
            cleaned[key] = value
    return cleaned


def _read(connection: Connection, run_id: int) -> RunRecord | None:
    row = connection.execute(select(RUNS).where(RUNS.c.id == run_id)).first()
    return None if row is None else from_row(RunRecord, row)


def _not_found(run_id: Any) -> NotFoundError:
    return NotFoundError(
        f"pipeline_run_id={run_id!r}: no such run. List runs with schedule.pipeline_runs or "
        "list_runs(store)."
    )


# --------------------------------------------------------------------------------------------
# Reads
# --------------------------------------------------------------------------------------------


def get_run(store: Store, run_id: int) -> RunRecord:
    """A run by id, or a :class:`NotFoundError`."""
    with store.engine.connect() as connection:
        record = _read(connection, run_id)
    if record is None:
        raise _not_found(run_id)
    return record


def list_runs(
    store: Store,
    *,
    schedule_id: int | None = None,
    pipeline_uuid: str | None = None,
    status: str | None = None,
    backfill_id: int | None = None,
    last: int | None = None,
    before_id: int | None = None,
) -> list[RunRecord]:
    """Runs matching every filter given, oldest first; ``last=N`` keeps the newest N (still
    oldest first); ``before_id`` pages backwards (runs with a smaller id)."""
    statement = select(RUNS)
    if schedule_id is not None:
        statement = statement.where(RUNS.c.pipeline_schedule_id == schedule_id)
    if pipeline_uuid is not None:
        statement = statement.where(RUNS.c.pipeline_uuid == pipeline_uuid)
    if status is not None:
        value = fields.enum_value(status, PipelineRunStatus, "status")
        statement = statement.where(RUNS.c.status == value.value)
    if backfill_id is not None:
        statement = statement.where(RUNS.c.backfill_id == backfill_id)
    if before_id is not None:
        statement = statement.where(RUNS.c.id < before_id)
    if last is not None:
        statement = statement.order_by(RUNS.c.id.desc()).limit(max(0, int(last)))
    else:
        statement = statement.order_by(RUNS.c.id)
    with store.engine.connect() as connection:
        records = [from_row(RunRecord, row) for row in connection.execute(statement)]
    return sorted(records, key=lambda record: record.id) if last is not None else records


def block_runs(store: Store, run_id: int) -> list[BlockRunRecord]:
    """A run's block runs in creation order."""
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(BLOCKS).where(BLOCKS.c.pipeline_run_id == run_id).order_by(BLOCKS.c.id)
        )
        return [from_row(BlockRunRecord, row) for row in rows]


# --------------------------------------------------------------------------------------------
# Writes
# --------------------------------------------------------------------------------------------


def create_run(store: Store, *, now: datetime | None = None, **values: Any) -> RunRecord:
    """Create one run (Mage's ``PipelineRun.create``).

    ``execution_date`` defaults to now; ``pipeline_uuid`` defaults to the schedule's. A caller
    ``run_key`` makes the call idempotent: creating the same key twice returns the first run.
    """
    cleaned = _clean_run_fields(values)
    if cleaned.get("pipeline_schedule_id") is not None:
        schedule = get_schedule(store, cleaned["pipeline_schedule_id"])
        cleaned.setdefault("pipeline_uuid", schedule.pipeline_uuid)
    if not cleaned.get("pipeline_uuid"):
        raise ValidationError(
            "pipeline_uuid",
            None,
            "a run needs a pipeline",
            "Give pipeline_schedule_id=schedule.id or pipeline_uuid='my_pipeline'.",
        )
    require_notebook(project_dir_of(store), cleaned["pipeline_uuid"])
    if cleaned.get("execution_date") is None:
        cleaned["execution_date"] = now or utcnow()
    # Inserting a run in any status is allowed (Mage does, e.g. to record history made
    # elsewhere); only *changes* of status go through the state machine.
    cleaned.setdefault("status", PipelineRunStatus.INITIAL)
    cleaned.setdefault("run_key", manual_run_key())
    return insert_run_once(store, cleaned)[0]


def insert_run_once(store: Store, values: dict[str, Any]) -> tuple[RunRecord, bool]:
    """Insert a run unless its ``run_key`` exists; returns (run, created).

    Uniqueness is the database's job (a unique index on ``run_key``), so two processes racing
    for the same period get one row between them.
    """
    try:
        with store.write_engine.begin() as connection:
            result = connection.execute(insert(RUNS).values(**values))
            key = result.inserted_primary_key
            assert key is not None
            record = _read(connection, int(key[0]))
        assert record is not None
        return record, True
    except IntegrityError:
        with store.engine.connect() as connection:
            row = connection.execute(
                select(RUNS).where(RUNS.c.run_key == values["run_key"])
            ).first()
        if row is None:
            raise
        return from_row(RunRecord, row), False


def scheduled_run_values(
    schedule: ScheduleRecord | Any,
    execution_date: datetime,
    variables: dict[str, Any] | None = None,
    *,
    schedule_timing: timing.ScheduleTiming | None = None,
) -> dict[str, Any]:
    """Column values of ``schedule``'s run for the period starting at ``execution_date``
    (``schedule_timing``: the schedule's timing when the caller has it already).

    The run carries Mage's ``interval_*`` variables plus ``ds``/``hr`` as ISO strings.
    """
    facts = schedule_timing or timing_of(schedule)
    run_variables = dict(variables or {})
    for key, value in timing.interval_variables(facts, execution_date).items():
        run_variables[key] = value.isoformat() if isinstance(value, datetime) else value
    run_variables.update(timing.date_variables(execution_date, facts.timezone))
    return {
        "pipeline_schedule_id": schedule.id,
        "pipeline_uuid": schedule.pipeline_uuid,
        "execution_date": execution_date,
        "status": PipelineRunStatus.INITIAL,
        "variables": run_variables,
        "run_key": scheduled_run_key(schedule.id, execution_date),
    }


def create_scheduled_run(
    store: Store,
    schedule: ScheduleRecord | Any,
    execution_date: datetime,
    variables: dict[str, Any] | None = None,
) -> tuple[RunRecord, bool]:
    """The run of ``schedule`` for the period starting at ``execution_date`` (at most one)."""
    return insert_run_once(store, scheduled_run_values(schedule, execution_date, variables))


def update_run(store: Store, run_id: int, **values: Any) -> RunRecord:
    """Change a run's status, timestamps, variables, metrics or SLA flag.

    A status change must be one the run state machine allows from the run's current status
    (else :class:`~mage_nb_sched.core.run_states.InvalidTransition`); cancelling or failing a
    run ends it as the scheduler does (its open block runs are closed with it)."""
    for key in values:
        if key not in UPDATE_FIELDS:
            raise ValidationError(
                key,
                values[key],
                "this run field cannot be changed",
                f"Changeable fields: {', '.join(sorted(UPDATE_FIELDS))}.",
            )
    sla_breached = values.pop("sla_breached", None)
    cleaned = _clean_run_fields(values)
    if sla_breached is not None:
        cleaned["sla_breached"] = bool(sla_breached)
    wanted = cleaned.get("status")
    now = utcnow()
    with store.write_engine.begin() as connection:
        current = _read(connection, run_id)
        if current is None:
            raise _not_found(run_id)
        if wanted is not None and wanted != current.status:
            run_states.check_run(current.status, wanted)
            if wanted in (PipelineRunStatus.CANCELLED, PipelineRunStatus.FAILED):
                reason = (
                    (cleaned.get("metrics") or {}).get("error")
                    or f"{wanted.value} by hand (was {current.status.value})"
                )
                end_run(
                    connection,
                    run_id,
                    wanted.value,
                    str(reason),
                    cleaned.get("completed_at") or now,
                    from_statuses=(current.status.value,),
                )
                cleaned.pop("status")
                cleaned.pop("completed_at", None)
                if "metrics" in cleaned:
                    cleaned["metrics"] = {**cleaned["metrics"], "error": str(reason)}
            elif wanted == PipelineRunStatus.INITIAL:
                _retry(connection, current, now)
                cleaned.pop("status")
        if cleaned:
            statement = update(RUNS).where(RUNS.c.id == run_id)
            if "status" in cleaned:
                statement = statement.where(RUNS.c.status == current.status.value)
            written = connection.execute(statement.values(**cleaned))
            if written.rowcount != 1:
                raise run_states.InvalidTransition(
                    "pipeline run", "changed meanwhile", str(wanted), ()
                )
        record = _read(connection, run_id)
    assert record is not None
    return record


def _retry(connection: Connection, run: RunRecord, now: datetime) -> None:
    """The retry path (failed | cancelled → initial): the run is executed again from scratch;
    its earlier end stays in ``metrics['retried']``."""
    metrics = dict(run.metrics or {})
    metrics["retried"] = [
        *metrics.get("retried", []),
        {"at": now.isoformat(), "was": run.status.value, "error": metrics.pop("error", None)},
    ]
    written = connection.execute(
        update(RUNS)
        .where(RUNS.c.id == run.id, RUNS.c.status == run.status.value)
        .values(
            status=PipelineRunStatus.INITIAL.value,
            owner=None,
            claim_token=None,
            started_at=None,
            completed_at=None,
            finalized_at=None,
            sla_breached=False,
            metrics=metrics,
            updated_at=now,
        )
    )
    if written.rowcount != 1:
        raise run_states.InvalidTransition("pipeline run", "changed meanwhile", "initial", ())
    connection.execute(delete(BLOCKS).where(BLOCKS.c.pipeline_run_id == run.id))


def delete_run(store: Store, run_id: int) -> None:
    """Delete a run; its block runs go with it (foreign-key cascade)."""
    with store.write_engine.begin() as connection:
        connection.execute(delete(RUNS).where(RUNS.c.id == run_id))


# Async twins: the same calls, with the database work off the caller's event loop.
aget_run = twin(get_run)
alist_runs = twin(list_runs)
ablock_runs = twin(block_runs)
acreate_run = twin(create_run)
aupdate_run = twin(update_run)
adelete_run = twin(delete_run)
