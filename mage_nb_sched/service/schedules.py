"""Schedules: create, change, delete and read them; activation, tokens and Mage's statistics.

Every function takes its :class:`~mage_nb_sched.store.engine.Store` explicitly and returns
:class:`~mage_nb_sched.service.records.ScheduleRecord` values (never ORM rows). Nothing is written
when any value is wrong. Each blocking function has an async twin (``acreate_schedule`` ...) that
runs the database work off the caller's event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from mage_nb_sched.core import timing
from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.core.datetimes import to_utc
from mage_nb_sched.core.enums import PipelineRunStatus, ScheduleStatus, ScheduleType
from mage_nb_sched.core.errors import ConflictError, NotFoundError, ValidationError
from mage_nb_sched.core.project import notebook_path, require_notebook, resolve_project_dir
from mage_nb_sched.core.settings import with_defaults
from mage_nb_sched.core.tokens import (
    generate_token,
    hash_token,
    token_hint,
    validate_token,
    verify_token,
)
from mage_nb_sched.service import fields
from mage_nb_sched.service.asynchronous import twin
from mage_nb_sched.service.records import RunRecord, ScheduleRecord, from_row
from mage_nb_sched.store import schema
from mage_nb_sched.store.engine import Store

SCHEDULES = schema.pipeline_schedule
RUNS = schema.pipeline_run
BACKFILLS = schema.backfill

SCHEDULE_FIELDS = {
    *fields.SCHEDULE_VALUE_CHECKS,
    "id",
    "pipeline_uuid",
    "token",
    "in_code",
    "orphaned_at",
}
#: Runs Mage averages for landing time and ``runtime_average``.
RUNTIME_SAMPLE = 7


def project_dir_of(store: Store) -> Path:
    """The store's project dir (where notebooks and ``triggers.yaml`` files live)."""
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
            uuid = fields.pipeline_uuid(value)
            require_notebook(project_dir_of(store), uuid)
            cleaned[key] = uuid
        elif key == "token":
            cleaned[key] = None if value is None else validate_token(value)
        elif key == "in_code":
            cleaned[key] = bool(value)
        elif key == "orphaned_at":
            cleaned[key] = fields.optional_datetime(value, key)
    return cleaned


def _check_whole(state: dict[str, Any]) -> None:
    """Rules that involve more than one field, checked on the schedule as it would be saved."""
    if state.get("schedule_type") == ScheduleType.EVENT:
        # The seed's shorthand (variables.event_type / bucket / path globs) is how an event
        # schedule matches: a bad glob is a 400 now, not a log line at the first event.
        from mage_nb_sched.core.event_patterns import validate_shorthand

        validate_shorthand(state.get("variables"))
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


def _token_columns(token: str | None) -> tuple[str, dict[str, Any]]:
    clear = token or generate_token()
    return clear, {"token_hash": hash_token(clear), "token_hint": token_hint(clear)}


def _read(connection: Connection, schedule_id: int) -> ScheduleRecord | None:
    row = connection.execute(select(SCHEDULES).where(SCHEDULES.c.id == schedule_id)).first()
    return None if row is None else from_row(ScheduleRecord, row)


def _not_found(schedule_id: Any) -> NotFoundError:
    return NotFoundError(
        f"pipeline_schedule_id={schedule_id!r}: no such schedule. "
        "List schedules with PipelineSchedule.query.all() or list_schedules(store)."
    )


# --------------------------------------------------------------------------------------------
# Reads
# --------------------------------------------------------------------------------------------


def get_schedule(store: Store, schedule_id: int) -> ScheduleRecord:
    """A schedule by id, or a :class:`NotFoundError` that says how to list them."""
    with store.engine.connect() as connection:
        record = _read(connection, schedule_id)
    if record is None:
        raise _not_found(schedule_id)
    return record


def find_schedule(store: Store, pipeline_uuid: str, name: str) -> ScheduleRecord | None:
    """The schedule called ``name`` of pipeline ``pipeline_uuid``, if there is one."""
    with store.engine.connect() as connection:
        row = connection.execute(
            select(SCHEDULES).where(
                SCHEDULES.c.pipeline_uuid == pipeline_uuid, SCHEDULES.c.name == name
            )
        ).first()
    return None if row is None else from_row(ScheduleRecord, row)


def list_schedules(
    store: Store,
    *,
    pipeline_uuid: str | None = None,
    pipeline_uuids: Sequence[str] | None = None,
    status: str | None = None,
    schedule_type: str | None = None,
    in_code: bool | None = None,
) -> list[ScheduleRecord]:
    """Schedules matching every filter given, oldest first."""
    statement = select(SCHEDULES).order_by(SCHEDULES.c.id)
    if pipeline_uuid is not None:
        statement = statement.where(SCHEDULES.c.pipeline_uuid == pipeline_uuid)
    if pipeline_uuids is not None:
        statement = statement.where(SCHEDULES.c.pipeline_uuid.in_(list(pipeline_uuids)))
    if status is not None:
        value = fields.enum_value(status, ScheduleStatus, "status")
        statement = statement.where(SCHEDULES.c.status == value.value)
    if schedule_type is not None:
        value = fields.enum_value(schedule_type, ScheduleType, "schedule_type")
        statement = statement.where(SCHEDULES.c.schedule_type == value.value)
    if in_code is not None:
        statement = statement.where(SCHEDULES.c.in_code.is_(in_code))
    with store.engine.connect() as connection:
        return [from_row(ScheduleRecord, row) for row in connection.execute(statement)]


@dataclass(frozen=True)
class ScheduleStats:
    """Mage's computed schedule fields, read in one round trip."""

    pipeline_runs_count: int
    pipeline_in_progress_runs_count: int
    last_pipeline_run_status: PipelineRunStatus | None
    #: Runs of the schedule that breached its SLA.
    sla_breaches: int = 0


def schedule_stats(store: Store, schedule_id: int) -> ScheduleStats:
    """Run count, runs in progress (initial or running) and the newest run's status."""
    unfinished = [PipelineRunStatus.INITIAL.value, PipelineRunStatus.RUNNING.value]
    of_schedule = RUNS.c.pipeline_schedule_id == schedule_id
    with store.engine.connect() as connection:
        counts = connection.execute(
            select(
                func.count(RUNS.c.id),
                func.count(RUNS.c.id).filter(RUNS.c.status.in_(unfinished)),
                func.count(RUNS.c.id).filter(RUNS.c.sla_breached.is_(True)),
            ).where(of_schedule)
        ).one()
        last = connection.execute(
            select(RUNS.c.status)
            .where(of_schedule)
            .order_by(RUNS.c.created_at.desc(), RUNS.c.id.desc())
            .limit(1)
        ).scalar()
    status = None if last is None else PipelineRunStatus(last)
    return ScheduleStats(int(counts[0] or 0), int(counts[1] or 0), status, int(counts[2] or 0))


def recently_completed_runs(
    store: Store,
    schedule_id: int,
    *,
    exclude_run_id: int | None = None,
    sample_size: int | None = None,
) -> list[RunRecord]:
    """Completed runs of a schedule, newest execution date first (at most ``sample_size``)."""
    statement = select(RUNS).where(
        RUNS.c.pipeline_schedule_id == schedule_id,
        RUNS.c.status == PipelineRunStatus.COMPLETED.value,
    )
    if exclude_run_id is not None:
        statement = statement.where(RUNS.c.id != exclude_run_id)
    statement = statement.order_by(RUNS.c.execution_date.desc(), RUNS.c.id.desc())
    if sample_size:
        statement = statement.limit(sample_size)
    with store.engine.connect() as connection:
        return [from_row(RunRecord, row) for row in connection.execute(statement)]


def runtime_history(
    store: Store,
    schedule_id: int,
    *,
    run: RunRecord | None = None,
    sample_size: int | None = None,
) -> list[float]:
    """Runtimes in seconds (creation → completion, Mage's measure) of up to ``sample_size``
    (7) recent completed runs; ``run``'s own runtime first when given and completed."""
    size = sample_size or RUNTIME_SAMPLE
    exclude = None if run is None else run.id
    runtimes = [
        (done.completed_at - done.created_at).total_seconds()
        for done in recently_completed_runs(
            store, schedule_id, exclude_run_id=exclude, sample_size=size
        )
        if done.completed_at is not None
    ]
    if run is not None and run.completed_at is not None:
        runtimes.insert(0, (run.completed_at - run.created_at).total_seconds())
    return runtimes[:size]


def timing_of(schedule: ScheduleRecord | Any) -> timing.ScheduleTiming:
    """A schedule's time facts for :mod:`mage_nb_sched.core.timing` (pure maths)."""
    settings = with_defaults(schedule.settings)
    interval = schedule.schedule_interval
    return timing.ScheduleTiming(
        schedule_interval=interval,
        timezone=str(settings["timezone"]),
        start_time=schedule.start_time,
        last_enabled_at=schedule.last_enabled_at,
        landing_time_enabled=(
            schedule.schedule_type == ScheduleType.TIME
            and interval in timing.LANDING_INTERVALS
            and bool(settings["landing_time_enabled"])
        ),
    )


def _runtimes_for(store: Store, schedule: ScheduleRecord | Any) -> list[float]:
    facts = timing_of(schedule)
    if not facts.landing_time_enabled or schedule.id is None:
        return []
    return runtime_history(store, schedule.id)


def current_execution_date(
    store: Store, schedule: ScheduleRecord | Any, now: datetime
) -> datetime | None:
    """The execution date a run created at ``now`` would get."""
    return timing.current_execution_date(timing_of(schedule), now, _runtimes_for(store, schedule))


def next_execution_date(
    store: Store, schedule: ScheduleRecord | Any, now: datetime
) -> datetime | None:
    """The execution date of the period after the current one (None if not periodic)."""
    return timing.next_execution_date(timing_of(schedule), now, _runtimes_for(store, schedule))


def should_schedule(
    store: Store, schedule: ScheduleRecord | Any, now: datetime
) -> timing.ScheduleDecision:
    """Mage's ``should_schedule`` at ``now``: truthy when a run is due, ``.reason`` says why."""
    if schedule.schedule_type != ScheduleType.TIME:
        return timing.ScheduleDecision(
            False,
            None,
            f"{schedule.schedule_type!s} schedules fire on events or API calls, not on time",
        )
    settings = with_defaults(schedule.settings)
    stats = schedule_stats(store, schedule.id)

    def run_exists_for(execution_date: datetime) -> bool:
        with store.engine.connect() as connection:
            found = connection.execute(
                select(RUNS.c.id)
                .where(
                    RUNS.c.pipeline_schedule_id == schedule.id,
                    RUNS.c.execution_date == execution_date,
                )
                .limit(1)
            ).scalar()
        return found is not None

    last = stats.last_pipeline_run_status
    return timing.decide(
        timing_of(schedule),
        now,
        status=str(schedule.status),
        create_initial_pipeline_run=bool(settings["create_initial_pipeline_run"]),
        run_count=stats.pipeline_runs_count,
        last_run_status=None if last is None else str(last),
        run_exists_for=run_exists_for,
        runtimes=_runtimes_for(store, schedule),
    )


def check_token(store: Store, schedule_id: int, token: str) -> bool:
    """Whether ``token`` is the schedule's API token (constant-time comparison of hashes)."""
    with store.engine.connect() as connection:
        stored = connection.execute(
            select(SCHEDULES.c.token_hash).where(SCHEDULES.c.id == schedule_id)
        ).scalar()
    return verify_token(token, stored)


# --------------------------------------------------------------------------------------------
# Many schedules at once (REST lists): a bounded number of statements whatever their count
# --------------------------------------------------------------------------------------------


def schedule_stats_for(store: Store, schedule_ids: Sequence[int]) -> dict[int, ScheduleStats]:
    """:func:`schedule_stats` of many schedules in two statements (counts, newest statuses).
    Every id given is a key; a schedule without runs has zero counts and no last status."""
    with store.engine.connect() as connection:
        return _stats_on(connection, schedule_ids)


def _stats_on(connection: Connection, schedule_ids: Sequence[int]) -> dict[int, ScheduleStats]:
    ids = sorted(set(schedule_ids))
    result = {schedule_id: ScheduleStats(0, 0, None) for schedule_id in ids}
    if not ids:
        return result
    unfinished = [PipelineRunStatus.INITIAL.value, PipelineRunStatus.RUNNING.value]
    of_schedules = RUNS.c.pipeline_schedule_id.in_(ids)
    counts = (
        select(
            RUNS.c.pipeline_schedule_id,
            func.count(RUNS.c.id),
            func.count(RUNS.c.id).filter(RUNS.c.status.in_(unfinished)),
            func.count(RUNS.c.id).filter(RUNS.c.sla_breached.is_(True)),
        )
        .where(of_schedules)
        .group_by(RUNS.c.pipeline_schedule_id)
    )
    # The newest run of each schedule, ordered as schedule_stats orders them.
    newest = (
        select(
            RUNS.c.pipeline_schedule_id,
            RUNS.c.status,
            func.row_number()
            .over(
                partition_by=RUNS.c.pipeline_schedule_id,
                order_by=(RUNS.c.created_at.desc(), RUNS.c.id.desc()),
            )
            .label("position"),
        )
        .where(of_schedules)
        .subquery()
    )
    last = select(newest.c.pipeline_schedule_id, newest.c.status).where(newest.c.position == 1)
    totals = {
        int(row[0]): (int(row[1] or 0), int(row[2] or 0), int(row[3] or 0))
        for row in connection.execute(counts)
    }
    statuses = {int(row[0]): row[1] for row in connection.execute(last)}
    for schedule_id, (runs, in_progress, breaches) in totals.items():
        status = statuses.get(schedule_id)
        if status is not None and not isinstance(status, PipelineRunStatus):
            status = PipelineRunStatus(status)
        result[schedule_id] = ScheduleStats(runs, in_progress, status, breaches)
    return result


def runtime_histories(
    store: Store, schedule_ids: Sequence[int], *, sample_size: int | None = None
) -> dict[int, list[float]]:
    """:func:`runtime_history` (without a current run) of many schedules in one statement:
    runtimes in seconds of up to ``sample_size`` (7) completed runs each, newest execution date
    first. Every id given is a key."""
    with store.engine.connect() as connection:
        return _runtimes_on(connection, schedule_ids, sample_size)


def _runtimes_on(
    connection: Connection, schedule_ids: Sequence[int], sample_size: int | None
) -> dict[int, list[float]]:
    ids = sorted(set(schedule_ids))
    result: dict[int, list[float]] = {schedule_id: [] for schedule_id in ids}
    if not ids:
        return result
    size = sample_size or RUNTIME_SAMPLE
    ranked = (
        select(
            RUNS.c.pipeline_schedule_id,
            RUNS.c.created_at,
            RUNS.c.completed_at,
            func.row_number()
            .over(
                partition_by=RUNS.c.pipeline_schedule_id,
                order_by=(RUNS.c.execution_date.desc(), RUNS.c.id.desc()),
            )
            .label("position"),
        )
        .where(
            RUNS.c.pipeline_schedule_id.in_(ids),
            RUNS.c.status == PipelineRunStatus.COMPLETED.value,
        )
        .subquery()
    )
    statement = (
        select(ranked.c.pipeline_schedule_id, ranked.c.created_at, ranked.c.completed_at)
        .where(ranked.c.position <= size)
        .order_by(ranked.c.pipeline_schedule_id, ranked.c.position)
    )
    for schedule_id, created_at, completed_at in connection.execute(statement):
        if completed_at is not None:
            result[int(schedule_id)].append((completed_at - created_at).total_seconds())
    return result


@dataclass(frozen=True)
class ScheduleView:
    """A schedule with Mage's computed fields: what the REST API answers for one schedule."""

    schedule: ScheduleRecord
    stats: ScheduleStats
    #: The execution date of the period after the current one (None: not periodic, or the
    #: stored values cannot be computed with — the status API flags such a row).
    next_pipeline_run_date: datetime | None
    #: Mage's ``event_matchers`` (``{"id", "name", "event_type", "pattern"}``) of the schedule.
    event_matchers: tuple[dict[str, Any], ...] = ()

    def computed_fields(self) -> dict[str, Any]:
        """Mage's computed schedule fields, by their Mage names."""
        return {
            "next_pipeline_run_date": self.next_pipeline_run_date,
            "pipeline_runs_count": self.stats.pipeline_runs_count,
            "last_pipeline_run_status": self.stats.last_pipeline_run_status,
            "pipeline_in_progress_runs_count": self.stats.pipeline_in_progress_runs_count,
            "sla_breached_runs_count": self.stats.sla_breaches,
            "event_matchers": list(self.event_matchers),
        }


@dataclass(frozen=True)
class SchedulePage:
    """One page of schedules: ``count`` matches in all, ``next_cursor`` the next page's."""

    views: list[ScheduleView]
    count: int
    next_cursor: int | None


def _next_date(schedule: ScheduleRecord, now: datetime, runtimes: list[float]) -> datetime | None:
    try:
        return timing.next_execution_date(timing_of(schedule), now, runtimes)
    except Exception:
        # One stored row whose values cannot be computed with (an unknown zone, a cron the
        # library refuses) must not break a list; the scheduler flags it for the status API.
        return None


def describe_schedules(
    store: Store, schedules: Sequence[ScheduleRecord], now: datetime | None = None
) -> list[ScheduleView]:
    """Each schedule with Mage's computed fields, in at most three statements however many
    schedules are given (run statistics; runtimes of the ones with landing time)."""
    with store.engine.connect() as connection:
        return _describe_on(connection, schedules, now)


def _describe_on(
    connection: Connection, schedules: Sequence[ScheduleRecord], now: datetime | None
) -> list[ScheduleView]:
    moment = to_utc(now) if now else utcnow()
    stats = _stats_on(connection, [schedule.id for schedule in schedules])
    landing: list[int] = []
    for schedule in schedules:
        try:
            if timing_of(schedule).landing_time_enabled:
                landing.append(schedule.id)
        except Exception:  # a stored value that cannot be read: no runtimes needed
            continue
    runtimes = _runtimes_on(connection, landing, None) if landing else {}
    from mage_nb_sched.service.events import event_matchers_on

    event_ids = [s.id for s in schedules if s.schedule_type == ScheduleType.EVENT]
    matchers = event_matchers_on(connection, event_ids) if event_ids else {}
    return [
        ScheduleView(
            schedule,
            stats[schedule.id],
            _next_date(schedule, moment, runtimes.get(schedule.id, [])),
            tuple(matchers.get(schedule.id, ())),
        )
        for schedule in schedules
    ]


def _filtered(
    statement: Any,
    pipeline_uuid: str | None,
    status: str | None,
    schedule_type: str | None,
) -> Any:
    if pipeline_uuid is not None:
        statement = statement.where(
            SCHEDULES.c.pipeline_uuid == fields.pipeline_uuid(pipeline_uuid)
        )
    if status is not None:
        value = fields.enum_value(status, ScheduleStatus, "status")
        statement = statement.where(SCHEDULES.c.status == value.value)
    if schedule_type is not None:
        value = fields.enum_value(schedule_type, ScheduleType, "schedule_type")
        statement = statement.where(SCHEDULES.c.schedule_type == value.value)
    return statement


def schedule_page(
    store: Store,
    *,
    pipeline_uuid: str | None = None,
    status: str | None = None,
    schedule_type: str | None = None,
    limit: int = 100,
    cursor: int | None = None,
    pipeline_must_exist: bool = False,
    now: datetime | None = None,
) -> SchedulePage:
    """One page of the schedules matching the filters, by id, with Mage's computed fields.

    ``cursor`` is the id the page starts at (the previous page's ``next_cursor``), so pages
    never repeat a schedule even while schedules are created. ``count`` is every match over
    all pages. The cost is one connection and five statements at most whatever the page
    size.
    ``pipeline_must_exist``: no schedule matches and the pipeline has no notebook either →
    :class:`NotFoundError` (Mage's ``pipelines/{uuid}/pipeline_schedules``)."""
    if limit < 1:
        raise ValidationError("limit", limit, "must be at least 1", "Give e.g. limit=100.")
    counted = _filtered(select(func.count(SCHEDULES.c.id)), pipeline_uuid, status, schedule_type)
    page = _filtered(select(SCHEDULES), pipeline_uuid, status, schedule_type)
    if cursor is not None:
        page = page.where(SCHEDULES.c.id >= cursor)
    page = page.order_by(SCHEDULES.c.id).limit(limit + 1)
    with store.engine.connect() as connection:
        count = int(connection.execute(counted).scalar() or 0)
        records = [from_row(ScheduleRecord, row) for row in connection.execute(page)]
        views = _describe_on(connection, records[:limit], now)
    if pipeline_must_exist and pipeline_uuid is not None and count == 0:
        _require_pipeline(store, pipeline_uuid)
    next_cursor = records[limit].id if len(records) > limit else None
    return SchedulePage(views, count, next_cursor)


def _require_pipeline(store: Store, pipeline_uuid: str) -> None:
    uuid = fields.pipeline_uuid(pipeline_uuid)
    try:
        found = notebook_path(project_dir_of(store), uuid).is_file()
    except OSError:  # a name the file system refuses (too long): no such notebook either
        found = False
    if not found:
        raise NotFoundError(
            f"pipeline_uuid={uuid!r}: no notebook {uuid}.ipynb in the project dir and no "
            "schedule of that pipeline. List pipelines with GET mage/api/pipelines."
        )


def view_schedule(store: Store, schedule_id: int, now: datetime | None = None) -> ScheduleView:
    """One schedule with Mage's computed fields (:class:`NotFoundError` if there is none)."""
    return describe_schedules(store, [get_schedule(store, schedule_id)], now)[0]


def create_schedule_view(
    store: Store, *, now: datetime | None = None, **values: Any
) -> ScheduleView:
    """:func:`create_schedule`, answered with Mage's computed fields; the record carries the
    clear token (shown once)."""
    record = create_schedule(store, now=now, **values)
    return describe_schedules(store, [record], now)[0]


def update_schedule_view(
    store: Store,
    schedule_id: int,
    *,
    rotate: bool = False,
    now: datetime | None = None,
    **values: Any,
) -> ScheduleView:
    """:func:`update_schedule` (and :func:`rotate_token` when ``rotate``), answered with Mage's
    computed fields. With changes and ``rotate`` together, the new token is written in the
    same transaction as the changes (nothing is written when a change is refused). The record
    carries the new clear token when there is one."""
    if rotate and "token" in values:
        raise ValidationError(
            "rotate_token",
            True,
            "rotate_token and token were both given",
            "Send rotate_token: true for a random new token, or token: '...' to set one.",
        )
    if rotate and values:
        # token=None makes update_schedule generate one, in its own transaction.
        record = update_schedule(store, schedule_id, now=now, token=None, **values)
    elif rotate:
        record = rotate_token(store, schedule_id)
    elif values:
        record = update_schedule(store, schedule_id, now=now, **values)
    else:
        record = get_schedule(store, schedule_id)
    return describe_schedules(store, [record], now)[0]


def schedule_counts(store: Store, pipeline_uuids: Sequence[str] | None = None) -> dict[str, int]:
    """How many schedules each pipeline has (pipelines without any are left out), in one
    statement."""
    statement = select(SCHEDULES.c.pipeline_uuid, func.count(SCHEDULES.c.id)).group_by(
        SCHEDULES.c.pipeline_uuid
    )
    if pipeline_uuids is not None:
        statement = statement.where(SCHEDULES.c.pipeline_uuid.in_(list(pipeline_uuids)))
    with store.engine.connect() as connection:
        return {str(row[0]): int(row[1]) for row in connection.execute(statement)}


# --------------------------------------------------------------------------------------------
# Writes
# --------------------------------------------------------------------------------------------


def create_schedule(store: Store, *, now: datetime | None = None, **values: Any) -> ScheduleRecord:
    """Validate and insert one schedule; the record carries the clear ``token`` (shown once).
    Nothing is written when anything is wrong."""
    for required in ("name", "pipeline_uuid"):
        if values.get(required) is None:
            raise ValidationError(
                required,
                None,
                "this field is required",
                "Use e.g. PipelineSchedule.create(name='nightly', pipeline_uuid='etl/daily', "
                "schedule_type=ScheduleType.TIME, schedule_interval='@daily').",
            )
    matchers = _clean_matchers(values)
    cleaned = clean_schedule_fields(values, store)
    cleaned.setdefault("schedule_type", ScheduleType.TIME)
    cleaned.setdefault("status", ScheduleStatus.INACTIVE)
    _check_whole(cleaned)
    if cleaned["status"] == ScheduleStatus.ACTIVE and cleaned.get("last_enabled_at") is None:
        # A schedule created active counts as activated (Mage's own API does the same).
        cleaned["last_enabled_at"] = to_utc(now) if now else utcnow()
    clear, token_columns = _token_columns(cleaned.pop("token", None))
    try:
        with store.write_engine.begin() as connection:
            _refuse_duplicate_name(connection, cleaned["pipeline_uuid"], cleaned["name"], None)
            result = connection.execute(insert(SCHEDULES).values(**cleaned, **token_columns))
            key = result.inserted_primary_key
            assert key is not None
            if matchers is not None:
                _write_matchers(connection, int(key[0]), matchers)
            record = _read(connection, int(key[0]))
    except IntegrityError as err:
        raise _integrity_error(err, cleaned) from err
    assert record is not None
    return _with_token(record, clear)


def _clean_matchers(values: dict[str, Any]) -> list[dict[str, Any]] | None:
    """``event_matchers`` popped from ``values`` and validated (None: not given)."""
    if "event_matchers" not in values:
        return None
    from mage_nb_sched.service.events import clean_event_matchers

    return clean_event_matchers(values.pop("event_matchers"))


def _write_matchers(
    connection: Connection, schedule_id: int, matchers: list[dict[str, Any]]
) -> None:
    from mage_nb_sched.service.events import write_event_matchers

    write_event_matchers(connection, schedule_id, matchers)


def _with_token(record: ScheduleRecord, token: str) -> ScheduleRecord:
    return replace(record, token=token)


def update_schedule(
    store: Store,
    schedule_id: int,
    *,
    now: datetime | None = None,
    sync_file: bool = True,
    **values: Any,
) -> ScheduleRecord:
    """Validate and apply changes to a schedule; activation stamps ``last_enabled_at``; a
    change that may move its next due time makes the scheduler look at it again.

    A schedule defined in a ``triggers.yaml`` writes its new values back to the file unless
    ``sync_file`` is False (the file sync itself passes False). The record carries the new
    clear ``token`` when one was given."""
    if "id" in values:
        raise ValidationError("id", values["id"], "the id cannot change", "Leave id out.")
    matchers = _clean_matchers(values)
    cleaned = clean_schedule_fields(values, store)
    current = get_schedule(store, schedule_id)
    state = {key: getattr(current, key) for key in SCHEDULE_FIELDS - {"token", "id"}}
    state.update(cleaned)
    _check_whole(state)
    activating = (
        cleaned.get("status") == ScheduleStatus.ACTIVE
        and current.status != ScheduleStatus.ACTIVE
        and "last_enabled_at" not in cleaned
    )
    clear: str | None = None
    if "token" in cleaned:
        clear, token_columns = _token_columns(cleaned.pop("token"))
        cleaned.update(token_columns)
    if activating:
        cleaned["last_enabled_at"] = to_utc(now) if now else utcnow()
    if any(key in cleaned for key in schema.TIMING_ATTRIBUTES):
        # Whatever changed, the scheduler must look at the schedule again: its next due time
        # may have moved.
        cleaned["next_due_at"] = schema.EVALUATE_NOW
    try:
        with store.write_engine.begin() as connection:
            if "name" in cleaned or "pipeline_uuid" in cleaned:
                _refuse_duplicate_name(
                    connection, state["pipeline_uuid"], state["name"], schedule_id
                )
            if cleaned:
                written = connection.execute(
                    update(SCHEDULES).where(SCHEDULES.c.id == schedule_id).values(**cleaned)
                )
                if written.rowcount != 1:
                    raise _not_found(schedule_id)
            if matchers is not None:
                if _read(connection, schedule_id) is None:
                    raise _not_found(schedule_id)
                _write_matchers(connection, schedule_id, matchers)
            record = _read(connection, schedule_id)
    except IntegrityError as err:
        raise _integrity_error(err, state) from err
    if record is None:
        raise _not_found(schedule_id)
    if sync_file and record.in_code:
        from mage_nb_sched.service import triggers

        if (current.name, current.pipeline_uuid) != (record.name, record.pipeline_uuid):
            triggers.remove_from_file(project_dir_of(store), current.pipeline_uuid, current.name)
        triggers.write_back(project_dir_of(store), record, matchers)
    return record if clear is None else _with_token(record, clear)


def rotate_token(store: Store, schedule_id: int) -> ScheduleRecord:
    """Give the schedule a new random API token; the old one stops working at once. The
    record carries the new clear token (shown once)."""
    clear, token_columns = _token_columns(None)
    with store.write_engine.begin() as connection:
        written = connection.execute(
            update(SCHEDULES).where(SCHEDULES.c.id == schedule_id).values(**token_columns)
        )
        if written.rowcount != 1:
            raise _not_found(schedule_id)
        record = _read(connection, schedule_id)
    assert record is not None
    return _with_token(record, clear)


def delete_schedule(store: Store, schedule_id: int, *, sync_file: bool = True) -> None:
    """Delete a schedule with its runs, block runs and backfills (in one transaction).

    A schedule defined in a ``triggers.yaml`` is removed from the file too (unless
    ``sync_file`` is False)."""
    with store.write_engine.begin() as connection:
        record = _read(connection, schedule_id)
        if record is None:
            raise _not_found(schedule_id)
        # Bulk deletes so this stays one statement per table however many runs there are; the
        # foreign keys cascade block runs.
        connection.execute(delete(RUNS).where(RUNS.c.pipeline_schedule_id == schedule_id))
        connection.execute(delete(BACKFILLS).where(BACKFILLS.c.pipeline_schedule_id == schedule_id))
        connection.execute(delete(SCHEDULES).where(SCHEDULES.c.id == schedule_id))
    if sync_file and record.in_code:
        from mage_nb_sched.service import triggers

        triggers.remove_from_file(project_dir_of(store), record.pipeline_uuid, record.name)


def _refuse_duplicate_name(
    connection: Connection, pipeline_uuid: str, name: str, own_id: int | None
) -> None:
    existing = connection.execute(
        select(SCHEDULES.c.id).where(
            SCHEDULES.c.pipeline_uuid == pipeline_uuid, SCHEDULES.c.name == name
        )
    ).scalar()
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


# Async twins: the same calls, with the database work off the caller's event loop.
aget_schedule = twin(get_schedule)
afind_schedule = twin(find_schedule)
alist_schedules = twin(list_schedules)
aschedule_stats = twin(schedule_stats)
arecently_completed_runs = twin(recently_completed_runs)
aruntime_history = twin(runtime_history)
acurrent_execution_date = twin(current_execution_date)
anext_execution_date = twin(next_execution_date)
ashould_schedule = twin(should_schedule)
acheck_token = twin(check_token)
acreate_schedule = twin(create_schedule)
aupdate_schedule = twin(update_schedule)
arotate_token = twin(rotate_token)
adelete_schedule = twin(delete_schedule)
aschedule_stats_for = twin(schedule_stats_for)
aruntime_histories = twin(runtime_histories)
adescribe_schedules = twin(describe_schedules)
aschedule_page = twin(schedule_page)
aview_schedule = twin(view_schedule)
acreate_schedule_view = twin(create_schedule_view)
aupdate_schedule_view = twin(update_schedule_view)
aschedule_counts = twin(schedule_counts)
