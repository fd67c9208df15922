"""Creating pipeline runs: by hand, for a schedule's period, and idempotently by key."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, select, update
from sqlalchemy.exc import IntegrityError

from mage_nb_sched.core import timing
from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.core.datetimes import UTC
from mage_nb_sched.core.enums import BlockRunStatus, PipelineRunStatus
from mage_nb_sched.core.errors import ValidationError
from mage_nb_sched.core.project import (
    normalize_pipeline_uuid,
    require_notebook,
    resolve_project_dir,
)
from mage_nb_sched.models import BlockRun, PipelineRun, PipelineSchedule
from mage_nb_sched.service import fields
from mage_nb_sched.service.schedules import get_schedule
from mage_nb_sched.store.engine import Store, current_store

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
            cleaned[key] = normalize_pipeline_uuid(value)
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


def create_run(*, now: datetime | None = None, **values: Any) -> PipelineRun:
    """Create one run (Mage's ``PipelineRun.create``).

    ``execution_date`` defaults to now; ``pipeline_uuid`` defaults to the schedule's. A caller
    ``run_key`` makes the call idempotent: creating the same key twice returns the first run.
    """
    cleaned = _clean_run_fields(values)
    store = current_store()
    schedule: PipelineSchedule | None = None
    if cleaned.get("pipeline_schedule_id") is not None:
        schedule = get_schedule(cleaned["pipeline_schedule_id"])
        cleaned.setdefault("pipeline_uuid", schedule.pipeline_uuid)
    if not cleaned.get("pipeline_uuid"):
        raise ValidationError(
            "pipeline_uuid",
            None,
            "a run needs a pipeline",
            "Give pipeline_schedule_id=schedule.id or pipeline_uuid='my_pipeline'.",
        )
    require_notebook(store.project_dir or resolve_project_dir(), cleaned["pipeline_uuid"])
    if cleaned.get("execution_date") is None:
        cleaned["execution_date"] = now or utcnow()
    cleaned.setdefault("status", PipelineRunStatus.INITIAL)
    cleaned.setdefault("run_key", manual_run_key())
    return insert_run_once(cleaned)[0]


def insert_run_once(values: dict[str, Any]) -> tuple[PipelineRun, bool]:
    """Insert a run unless its ``run_key`` exists; returns (run, created).

    Uniqueness is the database's job (a unique index on ``run_key``), so two processes racing
    for the same period get one row between them.
    """
    store = current_store()
    session = store.session()
    try:
        with store.write(session):
            run = PipelineRun(**values)
            session.add(run)
            session.flush()
        return run, True
    except IntegrityError:
        existing = session.scalar(
            select(PipelineRun).where(PipelineRun.run_key == values["run_key"]),
            execution_options={"populate_existing": True},
        )
        if existing is None:
            raise
        return existing, False


def scheduled_run_values(
    schedule: PipelineSchedule,
    execution_date: datetime,
    variables: dict[str, Any] | None = None,
    *,
    schedule_timing: timing.ScheduleTiming | None = None,
) -> dict[str, Any]:
    """Column values of ``schedule``'s run for the period starting at ``execution_date``
    (``schedule_timing``: the schedule's timing when the caller has it already).

    The run carries Mage's ``interval_*`` variables plus ``ds``/``hr`` as ISO strings.
    """
    facts = schedule_timing or schedule.timing
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
    schedule: PipelineSchedule, execution_date: datetime, variables: dict[str, Any] | None = None
) -> tuple[PipelineRun, bool]:
    """The run of ``schedule`` for the period starting at ``execution_date`` (at most one)."""
    return insert_run_once(scheduled_run_values(schedule, execution_date, variables))


def insert_runs_ignoring_duplicates(
    connection: Connection, rows: list[dict[str, Any]]
) -> list[int]:
    """Insert many runs in the caller's transaction; rows whose ``run_key`` exists are skipped.

    Returns the ids of the rows inserted. The unique index on ``run_key`` decides, so two
    schedulers (or a pass repeated after a crash) can never create a period's run twice.
    """
    if not rows:
        return []
    table: Table = PipelineRun.__table__  # type: ignore[assignment]
    dialect = connection.dialect.name
    if dialect in ("sqlite", "postgresql"):
        from sqlalchemy.dialects import postgresql, sqlite

        insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        statement = (
            insert(table).on_conflict_do_nothing(index_elements=["run_key"]).returning(table.c.id)
        )
        return [int(row[0]) for row in connection.execute(statement, rows)]
    inserted: list[int] = []
    for row in rows:  # other databases: one savepoint per row
        try:
            with connection.begin_nested():
                result = connection.execute(table.insert().values(**row))
                key = result.inserted_primary_key
                assert key is not None
                inserted.append(int(key[0]))
        except IntegrityError:
            continue
    return inserted


def end_run(
    connection: Connection,
    run_id: int,
    status: str,
    reason: str,
    now: datetime,
    *,
    from_statuses: tuple[str, ...] = (PipelineRunStatus.RUNNING.value,),
) -> bool:
    """Give a run that is still in one of ``from_statuses`` its final ``status`` with ``reason``
    (in ``metrics['error']``), in the caller's transaction: the running block gets the same
    status and reason, blocks that never ran are cancelled. Fenced on the status: a run that
    finished meanwhile is left alone. Returns whether the run was ended here."""
    row = connection.execute(
        select(PipelineRun.metrics).where(
            PipelineRun.id == run_id, PipelineRun.status.in_(from_statuses)
        )
    ).first()
    if row is None:
        return False
    metrics = {**(row[0] or {}), "error": reason}
    ended = connection.execute(
        update(PipelineRun)
        .where(PipelineRun.id == run_id, PipelineRun.status.in_(from_statuses))
        .values(status=status, completed_at=now, updated_at=now, metrics=metrics)
    )
    if ended.rowcount != 1:
        return False
    block_status = (
        BlockRunStatus.FAILED.value
        if status == PipelineRunStatus.FAILED.value
        else BlockRunStatus.CANCELLED.value
    )
    for current, final, error in (
        (BlockRunStatus.RUNNING.value, block_status, reason),
        (BlockRunStatus.INITIAL.value, BlockRunStatus.CANCELLED.value, None),
        (BlockRunStatus.QUEUED.value, BlockRunStatus.CANCELLED.value, None),
    ):
        connection.execute(
            update(BlockRun)
            .where(BlockRun.pipeline_run_id == run_id, BlockRun.status == current)
            .values(status=final, completed_at=now, updated_at=now, error=error)
        )
    return True


def requeue_run(connection: Connection, run_id: int, reason: str, now: datetime) -> bool:
    """Put a run whose executor stopped (scheduler shutdown or crash) back to ``initial`` so it
    is executed again; counts the attempt and keeps the reason in ``metrics['requeued']``."""
    row = connection.execute(
        select(PipelineRun.metrics, PipelineRun.attempts).where(
            PipelineRun.id == run_id,
            PipelineRun.status.in_(
                [PipelineRunStatus.RUNNING.value, PipelineRunStatus.INITIAL.value]
            ),
        )
    ).first()
    if row is None:
        return False
    metrics = dict(row[0] or {})
    metrics["requeued"] = [*metrics.get("requeued", []), {"at": now.isoformat(), "why": reason}]
    written = connection.execute(
        update(PipelineRun)
        .where(
            PipelineRun.id == run_id,
            PipelineRun.status.in_(
                [PipelineRunStatus.RUNNING.value, PipelineRunStatus.INITIAL.value]
            ),
        )
        .values(
            status=PipelineRunStatus.INITIAL.value,
            owner=None,
            claim_token=None,
            started_at=None,
            updated_at=now,
            attempts=int(row[1] or 0) + 1,
            metrics=metrics,
        )
    )
    if written.rowcount != 1:
        return False
    # The next claim creates them afresh; none may stay "running" meanwhile.
    connection.execute(delete(BlockRun).where(BlockRun.pipeline_run_id == run_id))
    return True


def take_run(store: Store, run_id: int, owner: str) -> bool:
    """Mark an ``initial`` run nobody has taken as ``owner``'s, so the scheduler leaves it alone.
    False when it is taken already (by the scheduler, or it is no longer initial)."""
    with store.write_engine.begin() as connection:
        taken = connection.execute(
            update(PipelineRun)
            .where(
                PipelineRun.id == run_id,
                PipelineRun.status == PipelineRunStatus.INITIAL.value,
                PipelineRun.owner.is_(None),
            )
            .values(owner=owner)
        )
        return taken.rowcount == 1


def update_run(run: PipelineRun, **values: Any) -> PipelineRun:
    """Change a run's status, timestamps, variables, metrics or SLA flag."""
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
    store = current_store()
    session = store.session()
    with store.write(session):
        run = session.merge(run)
        for key, value in cleaned.items():
            setattr(run, key, value)
        if sla_breached is not None:
            run.sla_breached = bool(sla_breached)
    return run


def delete_run(run: PipelineRun) -> None:
    """Delete a run; its block runs go with it (foreign-key cascade)."""
    store = current_store()
    session = store.session()
    with store.write(session):
        session.delete(session.merge(run))
