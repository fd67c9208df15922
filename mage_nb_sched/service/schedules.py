"""Creating, changing and deleting schedules: validation, activation and tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.core.datetimes import to_utc
from mage_nb_sched.core.enums import ScheduleStatus, ScheduleType
from mage_nb_sched.core.errors import ConflictError, ValidationError
from mage_nb_sched.core.project import (
    normalize_pipeline_uuid,
    require_notebook,
    resolve_project_dir,
)
from mage_nb_sched.core.tokens import generate_token, hash_token, token_hint, validate_token
from mage_nb_sched.models import Backfill, PipelineRun, PipelineSchedule, fresh_session
from mage_nb_sched.service import fields
from mage_nb_sched.store.engine import Store, current_store

SCHEDULE_FIELDS = {*fields.SCHEDULE_VALUE_CHECKS, "id", "pipeline_uuid", "token", "in_code"}


def _project_dir(store: Store) -> Any:
    return store.project_dir or resolve_project_dir()


def clean_schedule_fields(values: dict[str, Any], store: Store) -> dict[str, Any]:
    """Validate each given field; returns normalised values (only the keys given)."""
    fields.unknown_fields(values, SCHEDULE_FIELDS, "schedule")
    cleaned: dict[str, Any] = {}
    for key, value in values.items():
        if key == "id":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValidationError("id", value, "expected an integer", "Leave id out.")
            cleaned[key] = value
        elif key in fields.SCHEDULE_VALUE_CHECKS:
            cleaned[key] = fields.SCHEDULE_VALUE_CHECKS[key](value)
        elif key == "pipeline_uuid":
            uuid = normalize_pipeline_uuid(value)
            require_notebook(_project_dir(store), uuid)
            cleaned[key] = uuid
        elif key == "token":
            cleaned[key] = None if value is None else validate_token(value)
        elif key == "in_code":
            cleaned[key] = bool(value)
    return cleaned


def _check_whole(state: dict[str, Any]) -> None:
    """Rules that involve more than one field, checked on the schedule as it would be saved."""
    if state.get("schedule_type") == ScheduleType.TIME and not state.get("schedule_interval"):
        raise ValidationError(
            "schedule_interval",
            state.get("schedule_interval"),
            "a time schedule needs an interval",
            "Use e.g. schedule_interval=ScheduleInterval.DAILY or a cron such as '0 9 * * *'.",
        )
    settings = state.get("settings") or {}
    if settings.get("landing_time_enabled") and not state.get("start_time"):
        raise ValidationError(
            "settings.landing_time_enabled",
            True,
            "landing time needs start_time (its time of day is the landing time)",
            "Set start_time, e.g. datetime(2024, 1, 1, 9, 0, tzinfo=pytz.UTC) to land by 09:00.",
        )


def _apply_token(schedule: PipelineSchedule, token: str | None) -> str:
    clear = token or generate_token()
    schedule.token_hash = hash_token(clear)
    schedule.token_hint = token_hint(clear)
    return clear


def create_schedule(*, now: datetime | None = None, **values: Any) -> PipelineSchedule:
    """Validate and insert one schedule. Nothing is written when anything is wrong."""
    store = current_store()
    for required in ("name", "pipeline_uuid"):
        if values.get(required) is None:
            raise ValidationError(
                required,
                None,
                "this field is required",
                "Use e.g. PipelineSchedule.create(name='nightly', pipeline_uuid='etl/daily', "
                "schedule_type=ScheduleType.TIME, schedule_interval='@daily').",
            )
    cleaned = clean_schedule_fields(values, store)
    cleaned.setdefault("schedule_type", ScheduleType.TIME)
    cleaned.setdefault("status", ScheduleStatus.INACTIVE)
    _check_whole(cleaned)
    if cleaned["status"] == ScheduleStatus.ACTIVE and cleaned.get("last_enabled_at") is None:
        cleaned["last_enabled_at"] = to_utc(now) if now else utcnow()
    token = cleaned.pop("token", None)
    try:
        with store.write() as session:
            _refuse_duplicate_name(session, cleaned["pipeline_uuid"], cleaned["name"], None)
            schedule = PipelineSchedule(**cleaned)
            clear = _apply_token(schedule, token)
            session.add(schedule)
            session.flush()
    except IntegrityError as err:
        raise _integrity_error(err, cleaned) from err
    schedule.token = clear
    return schedule


def update_schedule(
    schedule: PipelineSchedule,
    *,
    now: datetime | None = None,
    sync_file: bool = True,
    **values: Any,
) -> PipelineSchedule:
    """Validate and apply changes to a schedule; activation stamps ``last_enabled_at``.

    A schedule defined in a ``triggers.yaml`` writes its new values back to the file unless
    ``sync_file`` is False (the file sync itself passes False)."""
    store = current_store()
    if "id" in values:
        raise ValidationError("id", values["id"], "the id cannot change", "Leave id out.")
    cleaned = clean_schedule_fields(values, store)
    session = store.session()
    if schedule not in session:
        schedule = session.merge(schedule)
    old_name, old_pipeline = schedule.name, schedule.pipeline_uuid
    state = {key: getattr(schedule, key) for key in SCHEDULE_FIELDS - {"token", "id"}}
    state.update(cleaned)
    _check_whole(state)
    activating = (
        cleaned.get("status") == ScheduleStatus.ACTIVE
        and schedule.status != ScheduleStatus.ACTIVE
        and "last_enabled_at" not in cleaned
    )
    token = cleaned.pop("token", None)
    try:
        with store.write(session):
            if "name" in cleaned or "pipeline_uuid" in cleaned:
                _refuse_duplicate_name(session, state["pipeline_uuid"], state["name"], schedule.id)
            for key, value in cleaned.items():
                setattr(schedule, key, value)
            if activating:
                schedule.last_enabled_at = to_utc(now) if now else utcnow()
            if "token" in values:
                schedule.token = _apply_token(schedule, token)
    except IntegrityError as err:
        session.refresh(schedule)
        raise _integrity_error(err, state) from err
    if sync_file and schedule.in_code:
        from mage_nb_sched import triggers

        if (old_name, old_pipeline) != (schedule.name, schedule.pipeline_uuid):
            triggers.remove_from_file(old_pipeline, old_name, _project_dir(store))
        triggers.write_back(schedule, _project_dir(store))
    return schedule


def rotate_token(schedule: PipelineSchedule) -> str:
    """Give the schedule a new random API token; the old one stops working at once."""
    store = current_store()
    session = store.session()
    with store.write(session):
        schedule = session.merge(schedule)
        clear = _apply_token(schedule, None)
    schedule.token = clear
    return clear


def delete_schedule(schedule: PipelineSchedule, *, sync_file: bool = True) -> None:
    """Delete a schedule with its runs, block runs and backfills (in one transaction).

    A schedule defined in a ``triggers.yaml`` is removed from the file too (unless
    ``sync_file`` is False)."""
    store = current_store()
    session = store.session()
    in_code, name, pipeline_uuid = schedule.in_code, schedule.name, schedule.pipeline_uuid
    with store.write(session):
        schedule_id = schedule.id
        # Bulk deletes so this stays one statement per table however many runs there are; the
        # foreign keys cascade block runs.
        session.execute(delete(PipelineRun).where(PipelineRun.pipeline_schedule_id == schedule_id))
        session.execute(delete(Backfill).where(Backfill.pipeline_schedule_id == schedule_id))
        session.execute(delete(PipelineSchedule).where(PipelineSchedule.id == schedule_id))
    if schedule in session:
        session.expunge(schedule)
    if sync_file and in_code:
        from mage_nb_sched import triggers

        triggers.remove_from_file(pipeline_uuid, name, _project_dir(store))


def get_schedule(schedule_id: int) -> PipelineSchedule:
    """A schedule by id, or a NotFoundError that says how to list them."""
    from mage_nb_sched.core.errors import NotFoundError

    # A fresh snapshot: a schedule another process created since our last read must be found.
    schedule = fresh_session().get(PipelineSchedule, schedule_id, populate_existing=True)
    if schedule is None:
        raise NotFoundError(
            f"pipeline_schedule_id={schedule_id!r}: no such schedule. "
            "List schedules with PipelineSchedule.query.all()."
        )
    return schedule


def _refuse_duplicate_name(session: Any, pipeline_uuid: str, name: str, own_id: int | None) -> None:
    existing = session.scalar(
        select(PipelineSchedule.id).where(
            PipelineSchedule.pipeline_uuid == pipeline_uuid, PipelineSchedule.name == name
        )
    )
    if existing is not None and existing != own_id:
        raise ConflictError(
            "name",
            name,
            f"pipeline {pipeline_uuid!r} already has a schedule with this name (id {existing})",
            "Choose another name, or update the existing schedule: "
            f"PipelineSchedule.query.get({existing}).update(...).",
        )


def _integrity_error(err: IntegrityError, state: dict[str, Any]) -> ConflictError:
    message = str(err.orig)
    if "pipeline_uuid" in message or "uq_pipeline_schedule" in message or "name" in message:
        return ConflictError(
            "name",
            state.get("name"),
            f"pipeline {state.get('pipeline_uuid')!r} already has a schedule with this name",
            "Choose another name or update the existing schedule.",
        )
    if "PRIMARY" in message.upper() or ".id" in message:
        return ConflictError(
            "id",
            state.get("id"),
            "a schedule with this id exists",
            "Leave id out to get a new one.",
        )
    return ConflictError(
        "schedule",
        None,
        f"the database refused the write ({message})",
        "Check the values and try again.",
    )
