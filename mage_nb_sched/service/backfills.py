"""Backfills: validate a date range, preview its runs, create them idempotently, start,
cancel, edit and delete; page them with their progress.

Every function takes its store explicitly and returns
:class:`~mage_nb_sched.service.records.BackfillRecord` / ``RunRecord`` values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, delete, func, insert, select, update

from mage_nb_sched.core import run_states, timing
from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.core.datetimes import UTC
from mage_nb_sched.core.enums import BackfillStatus, PipelineRunStatus
from mage_nb_sched.core.errors import ConflictError, NotFoundError, ValidationError
from mage_nb_sched.core.project import notebook_path
from mage_nb_sched.core.settings import with_defaults
from mage_nb_sched.service import fields
from mage_nb_sched.service.asynchronous import twin
from mage_nb_sched.service.records import BackfillRecord, RunRecord, ScheduleRecord, from_row
from mage_nb_sched.service.runs import require_pipeline_notebook
from mage_nb_sched.service.schedules import get_schedule, project_dir_of
from mage_nb_sched.service.transitions import end_run
from mage_nb_sched.store import schema
from mage_nb_sched.store.engine import Store

BACKFILLS = schema.backfill
RUNS = schema.pipeline_run
SCHEDULES = schema.pipeline_schedule

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


def _zone(schedule: ScheduleRecord | None) -> str:
    return str(with_defaults(schedule.settings)["timezone"]) if schedule is not None else "UTC"


def _timezone_of(connection: Connection, backfill: BackfillRecord) -> str:
    if backfill.pipeline_schedule_id is None:
        return "UTC"
    settings = connection.execute(
        select(SCHEDULES.c.settings).where(SCHEDULES.c.id == backfill.pipeline_schedule_id)
    ).scalar()
    return str(with_defaults(settings)["timezone"])


def _read(connection: Connection, backfill_id: int) -> BackfillRecord | None:
    row = connection.execute(select(BACKFILLS).where(BACKFILLS.c.id == backfill_id)).first()
    return None if row is None else from_row(BackfillRecord, row)


def _not_found(backfill_id: Any) -> NotFoundError:
    return NotFoundError(
        f"backfill_id={backfill_id!r}: no such backfill. List them with list_backfills(store) "
        "or Backfill.query.all()."
    )


def get_backfill(store: Store, backfill_id: int) -> BackfillRecord:
    """A backfill by id, or a :class:`NotFoundError`."""
    with store.engine.connect() as connection:
        record = _read(connection, backfill_id)
    if record is None:
        raise _not_found(backfill_id)
    return record


def list_backfills(
    store: Store, *, pipeline_uuid: str | None = None, schedule_id: int | None = None
) -> list[BackfillRecord]:
    """Backfills matching the filters given, oldest first."""
    statement = select(BACKFILLS).order_by(BACKFILLS.c.id)
    if pipeline_uuid is not None:
        statement = statement.where(BACKFILLS.c.pipeline_uuid == pipeline_uuid)
    if schedule_id is not None:
        statement = statement.where(BACKFILLS.c.pipeline_schedule_id == schedule_id)
    with store.engine.connect() as connection:
        return [from_row(BackfillRecord, row) for row in connection.execute(statement)]


def create_backfill(
    store: Store, *, start: bool = False, now: datetime | None = None, **values: Any
) -> BackfillRecord:
    """Validate and insert a backfill; its runs are created by :func:`start_backfill` — or, with
    ``start=True``, in the same transaction as the backfill itself, so a failure leaves neither
    behind (no backfill created but never started)."""
    fields.unknown_fields(values, BACKFILL_FIELDS, "backfill")
    cleaned: dict[str, Any] = {}
    schedule = None
    if values.get("pipeline_schedule_id") is not None:
        schedule = get_schedule(store, values["pipeline_schedule_id"])
        cleaned["pipeline_schedule_id"] = schedule.id
    pipeline_uuid = values.get("pipeline_uuid") or (schedule.pipeline_uuid if schedule else None)
    if pipeline_uuid is None:
        raise ValidationError(
            "pipeline_schedule_id",
            None,
            "a backfill needs a schedule or a pipeline",
            "Give pipeline_schedule_id=schedule.id (or pipeline_uuid='my_pipeline').",
        )
    cleaned["pipeline_uuid"] = fields.pipeline_uuid(pipeline_uuid)
    if schedule is not None and cleaned["pipeline_uuid"] != schedule.pipeline_uuid:
        raise ValidationError(
            "pipeline_uuid",
            pipeline_uuid,
            f"schedule {schedule.id} runs pipeline {schedule.pipeline_uuid!r}",
            "Leave pipeline_uuid out to backfill the schedule's pipeline, or leave "
            "pipeline_schedule_id out to backfill the notebook on its own.",
        )
    require_pipeline_notebook(store, cleaned["pipeline_uuid"])
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
        fields.interval_units(values.get("interval_units", 1)),
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
        _zone(schedule),
    )
    with store.write_engine.begin() as connection:
        result = connection.execute(
            insert(BACKFILLS).values(status=BackfillStatus.INITIAL, **cleaned)
        )
        primary = result.inserted_primary_key
        assert primary is not None
        if start:
            _start(connection, int(primary[0]), now)
        record = _read(connection, int(primary[0]))
    assert record is not None
    return record


def update_backfill(store: Store, backfill_id: int, **values: Any) -> BackfillRecord:
    """Change a backfill's name, variables or settings (the range is fixed once created)."""
    allowed = {"name", "variables", "settings"}
    fields.unknown_fields(values, allowed, "changeable backfill")
    cleaned: dict[str, Any] = {}
    if "name" in values:
        cleaned["name"] = fields.name(values["name"])
    if "variables" in values:
        cleaned["variables"] = fields.variables(values["variables"])
    if "settings" in values:
        cleaned["settings"] = fields.variables(values["settings"], "settings")
    with store.write_engine.begin() as connection:
        if cleaned:
            connection.execute(
                update(BACKFILLS).where(BACKFILLS.c.id == backfill_id).values(**cleaned)
            )
        record = _read(connection, backfill_id)
    if record is None:
        raise _not_found(backfill_id)
    return record


def delete_backfill(store: Store, backfill_id: int) -> None:
    """Delete a backfill and its runs."""
    with store.write_engine.begin() as connection:
        connection.execute(delete(RUNS).where(RUNS.c.backfill_id == backfill_id))
        connection.execute(delete(BACKFILLS).where(BACKFILLS.c.id == backfill_id))


def preview_run_dates(store: Store, backfill: BackfillRecord | int) -> list[dict[str, Any]]:
    """One dict per run of the range: ``execution_date`` and its variables (datetimes)."""
    record = get_backfill(store, backfill) if isinstance(backfill, int) else backfill
    with store.engine.connect() as connection:
        zone = _timezone_of(connection, record)
    return [
        run.as_dict()
        for run in timing.expand_backfill(
            record.start_datetime,
            record.end_datetime,
            str(record.interval_type),
            record.interval_units,
            zone,
        )
    ]


def backfill_run_key(backfill_id: int, execution_date: datetime) -> str:
    return f"backfill:{backfill_id}:{execution_date.astimezone(UTC).isoformat()}"


def start_backfill(
    store: Store, backfill_id: int, now: datetime | None = None
) -> list[RunRecord]:
    """Create every run of the range (one transaction; a repeated call creates nothing new) and
    mark the backfill running. The scheduler executes the runs oldest first."""
    with store.write_engine.begin() as connection:
        return _start(connection, backfill_id, now)


def _start(connection: Connection, backfill_id: int, now: datetime | None) -> list[RunRecord]:
    """:func:`start_backfill` inside the caller's transaction."""
    backfill = _read(connection, backfill_id)
    if backfill is None:
        raise _not_found(backfill_id)
    if backfill.status == BackfillStatus.CANCELLED:
        # A conflict with what is stored (409 over REST); still a ValidationError.
        raise ConflictError(
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
        _timezone_of(connection, backfill),
    )
    existing = set(
        connection.execute(
            select(RUNS.c.run_key).where(RUNS.c.backfill_id == backfill_id)
        ).scalars()
    )
    rows = []
    for run_date in dates:
        key = backfill_run_key(backfill_id, run_date.execution_date)
        if key in existing:
            continue
        variables = dict(backfill.variables or {})
        for name, value in run_date.as_dict().items():
            if name != "execution_date":
                variables[name] = value.isoformat() if isinstance(value, datetime) else value
        rows.append(
            {
                "pipeline_schedule_id": backfill.pipeline_schedule_id,
                "pipeline_uuid": backfill.pipeline_uuid,
                "execution_date": run_date.execution_date,
                "status": PipelineRunStatus.INITIAL.value,
                "variables": variables,
                "backfill_id": backfill_id,
                "run_key": key,
            }
        )
    if rows:
        connection.execute(insert(RUNS), rows)
    if backfill.status == BackfillStatus.INITIAL:
        connection.execute(
            update(BACKFILLS)
            .where(BACKFILLS.c.id == backfill_id)
            .values(status=BackfillStatus.RUNNING.value, started_at=now or utcnow())
        )
    runs = connection.execute(
        select(RUNS)
        .where(RUNS.c.backfill_id == backfill_id)
        .order_by(RUNS.c.execution_date)
    )
    return [from_row(RunRecord, row) for row in runs]


def cancel_backfill(
    store: Store, backfill_id: int, now: datetime | None = None
) -> BackfillRecord:
    """Cancel every unfinished run of the backfill — each through the same path as a single
    cancel (its block runs closed; the scheduler stops its kernel) — and the backfill."""
    when = now or utcnow()
    unfinished = sorted(run_states.RUN_UNFINISHED)
    with store.write_engine.begin() as connection:
        backfill = _read(connection, backfill_id)
        if backfill is None:
            raise _not_found(backfill_id)
        run_ids = connection.execute(
            select(RUNS.c.id).where(
                RUNS.c.backfill_id == backfill_id, RUNS.c.status.in_(unfinished)
            )
        ).scalars()
        reason = f"backfill {backfill_id} ({backfill.name}) was cancelled"
        for run_id in list(run_ids):
            end_run(
                connection,
                run_id,
                PipelineRunStatus.CANCELLED.value,
                reason,
                when,
                from_statuses=tuple(unfinished),
            )
        connection.execute(
            update(BACKFILLS)
            .where(BACKFILLS.c.id == backfill_id)
            .values(status=BackfillStatus.CANCELLED.value, completed_at=when)
        )
        record = _read(connection, backfill_id)
    assert record is not None
    return record


def backfill_progress(store: Store, backfill_id: int) -> dict[str, int]:
    """Run counts by status plus ``total`` and ``done`` (completed)."""
    with store.engine.connect() as connection:
        return _progress(connection, [backfill_id])[backfill_id]


def empty_progress() -> dict[str, int]:
    """The progress of a backfill without runs (every count 0)."""
    result = {status.value: 0 for status in PipelineRunStatus}
    result["total"] = result["done"] = 0
    return result


def _progress(connection: Connection, backfill_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """:func:`backfill_progress` of several backfills in one grouped query."""
    ids = list(backfill_ids)
    result = {backfill_id: empty_progress() for backfill_id in ids}
    if not ids:
        return result
    rows = connection.execute(
        select(RUNS.c.backfill_id, RUNS.c.status, func.count(RUNS.c.id))
        .where(RUNS.c.backfill_id.in_(ids))
        .group_by(RUNS.c.backfill_id, RUNS.c.status)
    )
    for backfill_id, status, count in rows:
        progress = result[int(backfill_id)]
        key = str(getattr(status, "value", status))
        progress[key] = progress.get(key, 0) + int(count)
        progress["total"] += int(count)
        if key == PipelineRunStatus.COMPLETED.value:
            progress["done"] += int(count)
    return result


@dataclass(frozen=True)
class BackfillPage:
    """One page of backfills, newest first, with each one's progress
    (``progress[backfill.id]``), the ``count`` of all matching and the ``next_cursor`` (``None``
    on the last page)."""

    backfills: list[BackfillRecord]
    progress: dict[int, dict[str, int]]
    count: int
    next_cursor: int | None


def page_backfills(
    store: Store,
    *,
    pipeline_uuid: str | None = None,
    schedule_id: int | None = None,
    status: str | None = None,
    limit: int = 100,
    cursor: int | None = None,
    require_pipeline: bool = False,
) -> BackfillPage:
    """One page of the backfills matching the filters, newest first, with their progress:
    three queries (count, page, progress) whatever their number. ``cursor`` is the previous
    page's ``next_cursor``. ``require_pipeline``: a ``pipeline_uuid`` with neither backfills
    nor a notebook is a :class:`NotFoundError`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValidationError(
            "limit", limit, "a page holds at least one item", "Use e.g. limit=100."
        )
    conditions: list[ColumnElement[bool]] = []
    if pipeline_uuid is not None:
        pipeline_uuid = fields.pipeline_uuid(pipeline_uuid)
        conditions.append(BACKFILLS.c.pipeline_uuid == pipeline_uuid)
    if schedule_id is not None:
        conditions.append(BACKFILLS.c.pipeline_schedule_id == schedule_id)
    if status is not None:
        value = fields.enum_value(status, BackfillStatus, "status")
        conditions.append(BACKFILLS.c.status == value.value)
    page = select(BACKFILLS).where(*conditions)
    if cursor is not None:
        page = page.where(BACKFILLS.c.id < cursor)
    page = page.order_by(BACKFILLS.c.id.desc()).limit(limit + 1)
    with store.engine.connect() as connection:
        count = int(
            connection.execute(select(func.count(BACKFILLS.c.id)).where(*conditions)).scalar() or 0
        )
        records = [from_row(BackfillRecord, row) for row in connection.execute(page)]
        more = len(records) > limit
        records = records[:limit]
        progress = _progress(connection, [record.id for record in records])
    if (
        require_pipeline
        and pipeline_uuid is not None
        and count == 0
        and not _notebook_exists(store, pipeline_uuid)
    ):
        raise NotFoundError(
            f"pipeline_uuid={pipeline_uuid!r}: no such pipeline (no notebook "
            f"{pipeline_uuid}.ipynb in the project dir). List them with GET pipelines."
        )
    return BackfillPage(records, progress, count, records[-1].id if more and records else None)


def _notebook_exists(store: Store, pipeline_uuid: str) -> bool:
    try:
        return notebook_path(project_dir_of(store), pipeline_uuid).is_file()
    except OSError:  # e.g. a name longer than the file system allows: no such notebook
        return False


def backfill_detail(store: Store, backfill_id: int) -> tuple[BackfillRecord, dict[str, int]]:
    """A backfill and its progress (:func:`backfill_progress`) read together, or a
    :class:`NotFoundError`."""
    with store.engine.connect() as connection:
        record = _read(connection, backfill_id)
        if record is None:
            raise _not_found(backfill_id)
        return record, _progress(connection, [backfill_id])[backfill_id]


#: Fields of a backfill that can be changed, while it is still ``initial``.
CHANGEABLE_FIELDS = {"name", "variables", "settings"}


def change_backfill(
    store: Store, backfill_id: int, *, now: datetime | None = None, **values: Any
) -> tuple[BackfillRecord, dict[str, int]]:
    """Change a backfill as Mage's ``PUT backfills/{id}`` does, and return it with its
    progress: ``status='running'`` starts it (:func:`start_backfill`), ``status='cancelled'``
    cancels it (:func:`cancel_backfill`); ``name``, ``variables`` and ``settings`` edit a
    backfill that has not started (:func:`update_backfill`), before a status change given with
    them. Everything is checked before anything is written; a change the backfill's status
    does not allow is a :class:`ConflictError`."""
    fields.unknown_fields(values, {*CHANGEABLE_FIELDS, "status"}, "changeable backfill")
    wanted: BackfillStatus | None = None
    if "status" in values:
        wanted = fields.enum_value(values.pop("status"), BackfillStatus, "status")
        if wanted not in (BackfillStatus.RUNNING, BackfillStatus.CANCELLED):
            raise ValidationError(
                "status",
                wanted.value,
                "a backfill is only started or cancelled by hand (the scheduler sets the rest)",
                "Use status='running' to start it or status='cancelled' to cancel it.",
            )
    current = get_backfill(store, backfill_id)
    status = BackfillStatus(getattr(current.status, "value", current.status))
    if values and status != BackfillStatus.INITIAL:
        field = sorted(values)[0]
        raise ConflictError(
            field,
            values[field],
            f"backfill {backfill_id} is {status.value}: only a backfill that has not started "
            "can be edited",
            "Create a new backfill with the values you want.",
        )
    if wanted == BackfillStatus.RUNNING and status not in (
        BackfillStatus.INITIAL,
        BackfillStatus.RUNNING,
    ):
        raise ConflictError(
            "status",
            wanted.value,
            f"backfill {backfill_id} is {status.value}; a backfill that has ended cannot be "
            "started again",
            "Create a new backfill for the same range, or retry its failed runs "
            "(PUT pipeline_runs/{id} with status 'initial').",
        )
    if wanted == BackfillStatus.CANCELLED and status in (
        BackfillStatus.COMPLETED,
        BackfillStatus.FAILED,
    ):
        raise ConflictError(
            "status",
            wanted.value,
            f"backfill {backfill_id} has ended ({status.value}); there is nothing to cancel",
            "Leave it, or delete it (DELETE backfills/{id}).",
        )
    if values:
        # Validates every value before writing any.
        update_backfill(store, backfill_id, **values)
    if wanted == BackfillStatus.RUNNING:
        start_backfill(store, backfill_id, now=now)
    elif wanted == BackfillStatus.CANCELLED and status != BackfillStatus.CANCELLED:
        cancel_backfill(store, backfill_id, now=now)
    return backfill_detail(store, backfill_id)


def delete_idle_backfill(store: Store, backfill_id: int) -> None:
    """Delete a backfill and its runs unless one of them is still going: a
    :class:`NotFoundError` when it does not exist, a :class:`ConflictError` while a run is
    initial or running (cancel the backfill first)."""
    unfinished = sorted(run_states.RUN_UNFINISHED)
    with store.write_engine.begin() as connection:
        if _read(connection, backfill_id) is None:
            raise _not_found(backfill_id)
        going = connection.execute(
            select(func.count(RUNS.c.id)).where(
                RUNS.c.backfill_id == backfill_id, RUNS.c.status.in_(unfinished)
            )
        ).scalar()
        if going:
            raise ConflictError(
                "status",
                f"{going} run(s) initial or running",
                f"backfill {backfill_id} still has runs to execute",
                "Cancel it first (PUT backfills/{id} with status 'cancelled'), then delete it.",
            )
        connection.execute(delete(RUNS).where(RUNS.c.backfill_id == backfill_id))
        connection.execute(delete(BACKFILLS).where(BACKFILLS.c.id == backfill_id))


# Async twins: the same calls, with the database work off the caller's event loop.
aget_backfill = twin(get_backfill)
alist_backfills = twin(list_backfills)
acreate_backfill = twin(create_backfill)
aupdate_backfill = twin(update_backfill)
adelete_backfill = twin(delete_backfill)
apreview_run_dates = twin(preview_run_dates)
astart_backfill = twin(start_backfill)
acancel_backfill = twin(cancel_backfill)
abackfill_progress = twin(backfill_progress)
apage_backfills = twin(page_backfills)
abackfill_detail = twin(backfill_detail)
achange_backfill = twin(change_backfill)
adelete_idle_backfill = twin(delete_idle_backfill)
