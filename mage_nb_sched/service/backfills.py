"""Backfills: validate a date range, preview its runs, create them idempotently, cancel."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update

from mage_nb_sched.core import timing
from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.core.datetimes import UTC
from mage_nb_sched.core.enums import BackfillStatus, PipelineRunStatus
from mage_nb_sched.core.errors import ValidationError
from mage_nb_sched.core.project import (
    normalize_pipeline_uuid,
    require_notebook,
    resolve_project_dir,
)
from mage_nb_sched.models import Backfill, PipelineRun, fresh_session
from mage_nb_sched.service import fields
from mage_nb_sched.service.schedules import get_schedule
from mage_nb_sched.store.engine import current_store

BACKFILL_FIELDS = {
    "id",
    "name",
    "pipeline_uuid",
    "pipeline_schedule_id",
    "start_datetime",
    "end_datetime",
    "interval_type",
    "interval_units",
    "variables",
    "settings",
    "status",
}


def _timezone_of(backfill: Backfill) -> str:
    schedule = backfill.pipeline_schedule
    return schedule.timezone if schedule is not None else "UTC"


def create_backfill(**values: Any) -> Backfill:
    """Validate and insert a backfill; its runs are created by :func:`start_backfill`."""
    fields.unknown_fields(values, BACKFILL_FIELDS, "backfill")
    store = current_store()
    cleaned: dict[str, Any] = {}
    schedule = None
    if values.get("pipeline_schedule_id") is not None:
        schedule = get_schedule(values["pipeline_schedule_id"])
        cleaned["pipeline_schedule_id"] = schedule.id
    pipeline_uuid = values.get("pipeline_uuid") or (schedule.pipeline_uuid if schedule else None)
    if pipeline_uuid is None:
        raise ValidationError(
            "pipeline_schedule_id",
            None,
            "a backfill needs a schedule or a pipeline",
            "Give pipeline_schedule_id=schedule.id (or pipeline_uuid='my_pipeline').",
        )
    cleaned["pipeline_uuid"] = normalize_pipeline_uuid(pipeline_uuid)
    require_notebook(store.project_dir or resolve_project_dir(), cleaned["pipeline_uuid"])
    cleaned["name"] = fields.name(values.get("name") or f"backfill {cleaned['pipeline_uuid']}")
    for key in ("start_datetime", "end_datetime"):
        if values.get(key) is None:
            raise ValidationError(
                key,
                None,
                "this field is required",
                f"Use e.g. {key}=datetime(2024, 1, 1, tzinfo=pytz.UTC).",
            )
        cleaned[key] = fields.optional_datetime(values[key], key)
    kind, units = timing.validate_backfill_range(
        cleaned["start_datetime"],
        cleaned["end_datetime"],
        values.get("interval_type", "day"),
        values.get("interval_units", 1),
    )
    cleaned["interval_type"], cleaned["interval_units"] = kind, units
    cleaned["variables"] = fields.variables(values.get("variables"))
    cleaned["settings"] = fields.variables(values.get("settings"), "settings")
    if values.get("id") is not None:
        cleaned["id"] = values["id"]
    # Expanding validates the size of the range before anything is written.
    timing.expand_backfill(
        cleaned["start_datetime"],
        cleaned["end_datetime"],
        kind,
        units,
        schedule.timezone if schedule else "UTC",
    )
    session = store.session()
    with store.write(session):
        backfill = Backfill(status=BackfillStatus.INITIAL, **cleaned)
        session.add(backfill)
        session.flush()
    return backfill


def update_backfill(backfill: Backfill, **values: Any) -> Backfill:
    """Change a backfill's name, variables or settings (the range is fixed once created)."""
    allowed = {"name", "variables", "settings"}
    fields.unknown_fields(values, allowed, "changeable backfill")
    store = current_store()
    session = store.session()
    with store.write(session):
        backfill = session.merge(backfill)
        if "name" in values:
            backfill.name = fields.name(values["name"])
        if "variables" in values:
            backfill.variables = fields.variables(values["variables"])
        if "settings" in values:
            backfill.settings = fields.variables(values["settings"], "settings")
    return backfill


def delete_backfill(backfill: Backfill) -> None:
    """Delete a backfill and its runs."""
    store = current_store()
    session = store.session()
    with store.write(session):
        session.execute(
            delete(PipelineRun).where(PipelineRun.backfill_id == backfill.id)
        )
        session.delete(session.merge(backfill))


def preview_run_dates(backfill: Backfill) -> list[dict[str, Any]]:
    """One dict per run of the range: ``execution_date`` and its variables (datetimes)."""
    return [
        run.as_dict()
        for run in timing.expand_backfill(
            backfill.start_datetime,
            backfill.end_datetime,
            str(backfill.interval_type),
            backfill.interval_units,
            _timezone_of(backfill),
        )
    ]


def backfill_run_key(backfill_id: int, execution_date: datetime) -> str:
    return f"backfill:{backfill_id}:{execution_date.astimezone(UTC).isoformat()}"


def start_backfill(backfill: Backfill, now: datetime | None = None) -> list[PipelineRun]:
    """Create every run of the range (one transaction; a repeated call creates nothing new) and
    mark the backfill running. The scheduler executes the runs oldest first."""
    store = current_store()
    session = store.session()
    backfill = session.merge(backfill)
    if backfill.status == BackfillStatus.CANCELLED:
        raise ValidationError(
            "status",
            str(backfill.status),
            "a cancelled backfill cannot be started again",
            "Create a new backfill for the same range.",
        )
    dates = timing.expand_backfill(
        backfill.start_datetime,
        backfill.end_datetime,
        str(backfill.interval_type),
        backfill.interval_units,
        _timezone_of(backfill),
    )
    with store.write(session):
        existing = set(
            session.scalars(
                select(PipelineRun.run_key).where(PipelineRun.backfill_id == backfill.id)
            )
        )
        for run_date in dates:
            key = backfill_run_key(backfill.id, run_date.execution_date)
            if key in existing:
                continue
            variables = dict(backfill.variables or {})
            for name, value in run_date.as_dict().items():
                if name != "execution_date":
                    variables[name] = value.isoformat() if isinstance(value, datetime) else value
            session.add(
                PipelineRun(
                    pipeline_schedule_id=backfill.pipeline_schedule_id,
                    pipeline_uuid=backfill.pipeline_uuid,
                    execution_date=run_date.execution_date,
                    status=PipelineRunStatus.INITIAL,
                    variables=variables,
                    backfill_id=backfill.id,
                    run_key=key,
                )
            )
        if backfill.status == BackfillStatus.INITIAL:
            backfill.status = BackfillStatus.RUNNING
            backfill.started_at = now or utcnow()
    return list(
        session.scalars(
            select(PipelineRun)
            .where(PipelineRun.backfill_id == backfill.id)
            .order_by(PipelineRun.execution_date),
            execution_options={"populate_existing": True},
        )
    )


def cancel_backfill(backfill: Backfill, now: datetime | None = None) -> Backfill:
    """Mark unfinished runs cancelled and the backfill cancelled (the scheduler stops kernels)."""
    store = current_store()
    session = store.session()
    with store.write(session):
        backfill = session.merge(backfill)
        session.execute(
            update(PipelineRun)
            .where(
                PipelineRun.backfill_id == backfill.id,
                PipelineRun.status.in_(
                    [PipelineRunStatus.INITIAL.value, PipelineRunStatus.RUNNING.value]
                ),
            )
            .values(status=PipelineRunStatus.CANCELLED.value, completed_at=now or utcnow())
        )
        backfill.status = BackfillStatus.CANCELLED
        backfill.completed_at = now or utcnow()
    return backfill


def backfill_progress(backfill: Backfill) -> dict[str, int]:
    """Run counts by status plus ``total`` and ``done`` (completed)."""
    # A fresh snapshot, so polling shows the scheduler's progress from other processes.
    rows = fresh_session().execute(
        select(PipelineRun.status, func.count(PipelineRun.id))
        .where(PipelineRun.backfill_id == backfill.id)
        .group_by(PipelineRun.status)
    )
    counts = {str(status): int(count) for status, count in rows}
    result = {status.value: counts.get(status.value, 0) for status in PipelineRunStatus}
    result["total"] = sum(counts.values())
    result["done"] = counts.get(PipelineRunStatus.COMPLETED.value, 0)
    return result
