"""Creating pipeline runs: by hand, for a schedule's period, and idempotently by key."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .. import timing
from ..clock import utcnow
from ..datetimes import UTC
from ..enums import PipelineRunStatus
from ..errors import ValidationError
from ..models import PipelineRun, PipelineSchedule
from ..project import normalize_pipeline_uuid, require_notebook, resolve_project_dir
from ..store import current_store
from . import fields
from .schedules import get_schedule

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


def create_scheduled_run(
    schedule: PipelineSchedule, execution_date: datetime, variables: dict[str, Any] | None = None
) -> tuple[PipelineRun, bool]:
    """The run of ``schedule`` for the period starting at ``execution_date`` (created at most once).

    The run carries Mage's ``interval_*`` variables plus ``ds``/``hr`` as ISO strings.
    """
    run_variables = dict(variables or {})
    for key, value in timing.interval_variables(schedule.timing, execution_date).items():
        run_variables[key] = value.isoformat() if isinstance(value, datetime) else value
    run_variables.update(timing.date_variables(execution_date, schedule.timezone))
    return insert_run_once(
        {
            "pipeline_schedule_id": schedule.id,
            "pipeline_uuid": schedule.pipeline_uuid,
            "execution_date": execution_date,
            "status": PipelineRunStatus.INITIAL,
            "variables": run_variables,
            "run_key": scheduled_run_key(schedule.id, execution_date),
        }
    )


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
