"""The scheduler's steps, each one short transaction with ``now`` passed in.

A loop pass is: create the runs that are due, end runs that overran their timeout, flag SLA
breaches, pick the runs to start (within the concurrency limits), recover runs of dead
owners, and close finished runs (notifications, ``@once``, backfill status). Every step is
idempotent — running it twice with the same ``now`` changes nothing the second time — so a
pass repeated after a crash, or by a second scheduler, is harmless. Nothing here touches an
event loop or a kernel: :mod:`mage_nb_sched.scheduling.loop` drives these steps and the executor.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    delete,
    exists,
    func,
    or_,
    select,
    update,
)

from mage_nb_sched.core import run_states, timing
from mage_nb_sched.core.datetimes import UTC
from mage_nb_sched.core.enums import (
    BackfillStatus,
    BlockRunStatus,
    PipelineRunStatus,
    ScheduleInterval,
    ScheduleStatus,
    ScheduleType,
)
from mage_nb_sched.core.partitions import execution_partition
from mage_nb_sched.core.project import data_dir
from mage_nb_sched.core.settings import with_defaults
from mage_nb_sched.scheduling.notifications import Notification
from mage_nb_sched.service.runs import scheduled_run_key, scheduled_run_values
from mage_nb_sched.service.transitions import (
    end_run,
    insert_runs_ignoring_duplicates,
    requeue_run,
    set_run_status,
    status_value,
)
from mage_nb_sched.store import leases, schema
from mage_nb_sched.store.artifacts import run_dir
from mage_nb_sched.store.engine import Store
from mage_nb_sched.store.schema import EVALUATE_NOW, NEVER, UTCDateTime

RUNS = schema.pipeline_run
SCHEDULES = schema.pipeline_schedule
BLOCKS = schema.block_run
BACKFILLS = schema.backfill

UNFINISHED = tuple(sorted(run_states.RUN_UNFINISHED))
FINISHED = tuple(sorted(run_states.RUN_FINISHED))
#: Schedules evaluated per transaction, so a burst of due schedules never holds the write lock
#: for long (other processes write block statuses meanwhile).
DUE_BATCH = 2_000
#: Finished runs closed per transaction.
FINALIZE_BATCH = 1_000
#: The loop enforces a timeout this long after the runner should have (it is the backstop for a
#: worker that hangs; the runner normally ends the run itself at the deadline).
TIMEOUT_SLACK = timedelta(seconds=1)


# --------------------------------------------------------------------------------------------
# Creating due runs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What to do for one due schedule: create runs for these execution dates, then look at
    the schedule again at ``next_due_at``."""

    execution_dates: list[datetime]
    next_due_at: datetime
    timing: timing.ScheduleTiming | None = None


def timing_of(schedule: Any, settings: dict[str, Any]) -> timing.ScheduleTiming:
    """``schedule.timing`` from settings already read (the model property re-reads them)."""
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


@dataclass(frozen=True)
class Probe:
    """What a pass has to do, from one read-only query: most passes find nothing, and an idle
    pass then costs one statement and no write lock."""

    finished: bool  # runs ended but not yet closed
    due: bool  # active time schedules due
    waiting: bool  # runs nobody has taken
    unfinished: bool  # runs waiting or executing (timeouts, SLAs, recovery)
    next_due_at: datetime | None  # the earliest next_due_at of an active time schedule


#: The schedules the loop creates runs for: the index ``ix_pipeline_schedule_due`` serves them.
ACTIVE_TIME = (
    SCHEDULES.c.status == ScheduleStatus.ACTIVE.value,
    SCHEDULES.c.schedule_type == ScheduleType.TIME.value,
)


def _probe_statement() -> Any:
    return select(
        exists().where(RUNS.c.finalized_at.is_(None), RUNS.c.status.in_(FINISHED)),
        exists().where(
            *ACTIVE_TIME, SCHEDULES.c.next_due_at <= bindparam("now", type_=UTCDateTime)
        ),
        exists().where(RUNS.c.status == PipelineRunStatus.INITIAL.value, RUNS.c.owner.is_(None)),
        exists().where(RUNS.c.status.in_(UNFINISHED)),
        select(func.min(SCHEDULES.c.next_due_at)).where(*ACTIVE_TIME).scalar_subquery(),
    )


#: Built once: constructing SQLAlchemy statements costs more than SQLite answering them.
_PROBE = _probe_statement()


def probe(store: Store, now: datetime) -> Probe:
    """One read of everything a pass needs to decide which steps to run."""
    with store.engine.connect() as connection:
        finished, due, waiting, unfinished, next_due = connection.execute(
            _PROBE, {"now": now}
        ).one()
    return Probe(
        bool(finished),
        bool(due),
        bool(waiting),
        bool(unfinished),
        None if next_due is None else _utc(_as_datetime(next_due)),
    )


def _as_datetime(value: Any) -> datetime:
    # A scalar subquery's MIN() comes back as text on SQLite (no column type applies to it).
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _exists(store: Store, statement: Any) -> bool:
    """A read-only probe: most passes find nothing to do, and then take no write lock."""
    with store.engine.connect() as connection:
        return connection.execute(statement.limit(1)).first() is not None


def _due_schedules(now: datetime) -> Any:
    return select(SCHEDULES.c.id).where(*ACTIVE_TIME, SCHEDULES.c.next_due_at <= now)


def _latest_scheduled_date(connection: Connection, schedule_id: int) -> datetime | None:
    value = connection.execute(
        select(func.max(RUNS.c.execution_date)).where(
            RUNS.c.pipeline_schedule_id == schedule_id,
            # Only the schedule's own periods: a hand-made "run now" or an API run must not
            # hide the periods missed before it.
            RUNS.c.run_key.like(f"schedule:{schedule_id}:%"),
        )
    ).scalar()
    return None if value is None else _utc(value)


def _has_runs(connection: Connection, schedule_id: int, statuses: Iterable[str] | None) -> bool:
    statement = select(RUNS.c.id).where(RUNS.c.pipeline_schedule_id == schedule_id)
    if statuses is not None:
        statement = statement.where(RUNS.c.status.in_(list(statuses)))
    return connection.execute(statement.limit(1)).first() is not None


def _runtimes(connection: Connection, schedule_id: int) -> list[float]:
    """Runtimes (creation → completion, seconds) of up to 7 recent completed runs."""
    rows = connection.execute(
        select(RUNS.c.created_at, RUNS.c.completed_at)
        .where(
            RUNS.c.pipeline_schedule_id == schedule_id,
            RUNS.c.status == PipelineRunStatus.COMPLETED.value,
            RUNS.c.completed_at.is_not(None),
        )
        .order_by(RUNS.c.execution_date.desc(), RUNS.c.id.desc())
        .limit(7)
    )
    return [(completed - created).total_seconds() for created, completed in rows if completed]


class PassFacts:
    """Pure results shared by every schedule in one pass: the current period and next tick of
    each (interval, zone), and the variables of each scheduled period. A burst of 10,000
    schedules on the same interval computes each of them once."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._ticks: dict[tuple[str, str], tuple[datetime | None, datetime | None]] = {}
        self._periods: dict[tuple[str | None, str, datetime], dict[str, Any]] = {}

    def ticks(self, facts: timing.ScheduleTiming) -> tuple[datetime | None, datetime | None]:
        """(current period start, next tick) of a periodic interval at ``now``."""
        key = (str(facts.schedule_interval), facts.timezone)
        found = self._ticks.get(key)
        if found is None:
            cadence = facts.cadence()
            found = (cadence.tick_at_or_before(self.now), cadence.tick_after(self.now))
            self._ticks[key] = found
        return found

    def run_row(
        self, schedule: Any, facts: timing.ScheduleTiming, execution_date: datetime
    ) -> dict[str, Any]:
        """The new run's column values (see :func:`scheduled_run_values`)."""
        key = (facts.schedule_interval, facts.timezone, execution_date)
        found = self._periods.get(key)
        if found is None:
            values = scheduled_run_values(schedule, execution_date, schedule_timing=facts)
            found = values["variables"]
            self._periods[key] = found
        variables = found
        return {
            "pipeline_schedule_id": schedule.id,
            "pipeline_uuid": schedule.pipeline_uuid,
            "execution_date": execution_date,
            "status": PipelineRunStatus.INITIAL.value,
            "variables": variables,
            "run_key": scheduled_run_key(schedule.id, execution_date),
            "created_at": self.now,
            "updated_at": self.now,
            "sla_breached": False,
        }


def plan_schedule(
    connection: Connection, schedule: Any, now: datetime, facts: PassFacts | None = None
) -> Plan:
    """Which runs an active time schedule needs at ``now`` (Mage's rules, DESIGN §4).

    ``schedule``: a row (or record) with the schedule's columns."""
    interval = schedule.schedule_interval
    settings = with_defaults(schedule.settings)
    schedule_timing = timing_of(schedule, settings)
    start_time = schedule.start_time
    if interval is None:
        return Plan([], NEVER)
    if interval == ScheduleInterval.ONCE.value:
        if start_time is not None and now < start_time:
            return Plan([], start_time)
        if _has_runs(connection, schedule.id, None):
            return Plan([], NEVER)
        execution_date = timing.current_execution_date(schedule_timing, now)
        return Plan([execution_date] if execution_date else [], NEVER, schedule_timing)
    if interval == ScheduleInterval.ALWAYS_ON.value:
        if start_time is not None and now < start_time:
            return Plan([], start_time)
        # Woken again (next_due_at reset) when the run in progress finishes.
        if _has_runs(connection, schedule.id, UNFINISHED):
            return Plan([], NEVER)
        return Plan([now], NEVER, schedule_timing)
    runtimes = _runtimes(connection, schedule.id) if schedule_timing.uses_landing_time else []
    period: datetime | None = None
    if facts is not None and not schedule_timing.uses_landing_time:
        period, next_tick = facts.ticks(schedule_timing)
        next_due = next_tick or NEVER
    else:
        next_due = timing.next_due_time(schedule_timing, now, runtimes) or NEVER
    create_initial = bool(settings["create_initial_pipeline_run"])
    if settings["catchup"] and not schedule_timing.uses_landing_time:
        dates = timing.plan_catchup(
            schedule_timing,
            now,
            last_execution_date=_latest_scheduled_date(connection, schedule.id),
            max_runs=int(settings["max_catchup_runs"]),
            create_initial_pipeline_run=create_initial,
        )
        return Plan(dates, next_due, schedule_timing)
    # The period's run may exist already (a pass repeated after a crash): its run_key makes
    # the insert a no-op, so no existence query is needed here.
    decision = timing.decide(
        schedule_timing,
        now,
        status=ScheduleStatus.ACTIVE.value,
        create_initial_pipeline_run=create_initial,
        runtimes=runtimes,
        current_period=period,
    )
    if decision.due and decision.execution_date is not None:
        return Plan([decision.execution_date], next_due, schedule_timing)
    return Plan([], next_due)


def create_due_runs(store: Store, now: datetime) -> list[int]:
    """Create the runs of every active time schedule due at ``now`` and advance each schedule's
    ``next_due_at`` in the same transaction. Returns the ids of the runs created."""
    created: list[int] = []
    if not _exists(store, _due_schedules(now)):
        return created
    after: tuple[datetime, int] | None = None
    facts = PassFacts(now)
    columns = (
        SCHEDULES.c.id,
        SCHEDULES.c.pipeline_uuid,
        SCHEDULES.c.schedule_type,
        SCHEDULES.c.schedule_interval,
        SCHEDULES.c.start_time,
        SCHEDULES.c.last_enabled_at,
        SCHEDULES.c.settings,
        SCHEDULES.c.next_due_at,
    )
    while True:
        with store.write_engine.begin() as connection:
            # Plain rows, not ORM objects: a burst loads thousands of schedules.
            statement = select(*columns).where(*ACTIVE_TIME, SCHEDULES.c.next_due_at <= now)
            if after is not None:
                # Keyset paging: one statement shape for every batch (an ever-growing
                # NOT IN list would prepare a new statement per batch and hold memory).
                statement = statement.where(
                    or_(
                        SCHEDULES.c.next_due_at > after[0],
                        and_(
                            SCHEDULES.c.next_due_at == after[0],
                            SCHEDULES.c.id > after[1],
                        ),
                    )
                )
            # PostgreSQL: rows locked against concurrent edits (and other schedulers) while this
            # transaction advances them; SQLite already holds the database write lock.
            schedules = connection.execute(
                statement.order_by(SCHEDULES.c.next_due_at, SCHEDULES.c.id)
                .limit(DUE_BATCH)
                .with_for_update(skip_locked=True)
            ).all()
            if not schedules:
                return created
            after = (schedules[-1].next_due_at, schedules[-1].id)
            rows: list[dict[str, Any]] = []
            advances: list[dict[str, Any]] = []
            for schedule in schedules:
                plan = plan_schedule(connection, schedule, now, facts)
                for execution_date in plan.execution_dates:
                    assert plan.timing is not None
                    rows.append(facts.run_row(schedule, plan.timing, execution_date))
                advances.append({"b_id": schedule.id, "b_next": plan.next_due_at})
            created.extend(insert_runs_ignoring_duplicates(connection, rows))
            _advance(connection, advances)


def _advance(connection: Connection, advances: list[dict[str, Any]]) -> None:
    if not advances:
        return
    # updated_at is kept: it records the user's edits, not the scheduler's bookkeeping.
    connection.execute(
        update(SCHEDULES)
        .where(SCHEDULES.c.id == bindparam("b_id"))
        .values(next_due_at=bindparam("b_next"), updated_at=SCHEDULES.c.updated_at),
        advances,
    )


def next_due_at(store: Store) -> datetime | None:
    """The earliest ``next_due_at`` of an active time schedule (an index lookup)."""
    with store.engine.connect() as connection:
        value = connection.execute(
            select(func.min(SCHEDULES.c.next_due_at)).where(*ACTIVE_TIME)
        ).scalar()
    if value is None:
        return None
    return _utc(value)


def _utc(value: datetime) -> datetime:

    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --------------------------------------------------------------------------------------------
# Starting runs within the limits
# --------------------------------------------------------------------------------------------


@dataclass
class StartPlan:
    """Runs to hand to the executor (already marked as the scheduler's) and runs skipped."""

    start: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)


def _active_counts(connection: Connection) -> tuple[dict[Any, int], dict[Any, int], dict[Any, int]]:
    """Runs executing or handed to an executor, per schedule, per pipeline, per backfill."""
    rows = connection.execute(
        select(
            RUNS.c.pipeline_schedule_id,
            RUNS.c.pipeline_uuid,
            RUNS.c.backfill_id,
            func.count(RUNS.c.id),
        )
        .where(
            or_(
                RUNS.c.status == PipelineRunStatus.RUNNING.value,
                and_(
                    RUNS.c.status == PipelineRunStatus.INITIAL.value,
                    RUNS.c.owner.is_not(None),
                ),
            )
        )
        .group_by(RUNS.c.pipeline_schedule_id, RUNS.c.pipeline_uuid, RUNS.c.backfill_id)
    )
    per_schedule: dict[Any, int] = defaultdict(int)
    per_pipeline: dict[Any, int] = defaultdict(int)
    per_backfill: dict[Any, int] = defaultdict(int)
    for schedule_id, pipeline_uuid, backfill_id, count in rows:
        # A backfill's runs count against the backfill's limit and the pipeline's, not against
        # the schedule's own periods (pipeline_run_limit, skip_if_previous_running).
        if backfill_id is None:
            per_schedule[schedule_id] += count
        per_pipeline[pipeline_uuid] += count
        per_backfill[backfill_id] += count
    return per_schedule, per_pipeline, per_backfill


def _limit_reason(
    settings: dict[str, Any],
    backfill_limit: int | None,
    run: Any,
    counts: tuple[dict[Any, int], dict[Any, int], dict[Any, int]],
) -> str | None:
    per_schedule, per_pipeline, per_backfill = counts
    if (
        run.backfill_id is not None
        and backfill_limit is not None
        and per_backfill[run.backfill_id] >= backfill_limit
    ):
        return f"backfill {run.backfill_id} has {backfill_limit} run(s) executing"
    limit = settings["pipeline_run_limit"]
    if (
        run.pipeline_schedule_id is not None
        and run.backfill_id is None
        and limit is not None
        and per_schedule[run.pipeline_schedule_id] >= limit
    ):
        return f"pipeline_run_limit of {limit} reached for schedule {run.pipeline_schedule_id}"
    limit = settings["pipeline_run_limit_all_triggers"]
    if limit is not None and per_pipeline[run.pipeline_uuid] >= limit:
        return f"pipeline_run_limit_all_triggers of {limit} reached for {run.pipeline_uuid}"
    return None


def plan_starts(store: Store, now: datetime, owner: str, capacity: int) -> StartPlan:
    """Pick up to ``capacity`` waiting runs, oldest first, within every concurrency limit, and
    mark them as ``owner``'s. Runs that must not start are recorded ``cancelled`` with the
    reason (``skip_if_previous_running``, a limit with ``skip``)."""
    plan = StartPlan()
    waiting_runs = select(RUNS.c.id).where(
        RUNS.c.status == PipelineRunStatus.INITIAL.value, RUNS.c.owner.is_(None)
    )
    if not _exists(store, waiting_runs):
        return plan
    # Planning reads a snapshot without the write lock (a backlog of thousands of waiting runs
    # is walked on every pass; runners must not wait for that). With one active scheduler the
    # snapshot can only be conservative: meanwhile runs finish (fewer executing) or new ones
    # arrive (planned next pass). The writes below are fenced on the runs still waiting.
    with store.engine.connect() as connection:
        counts = _active_counts(connection)
        per_schedule, per_pipeline, per_backfill = counts
        waiting_condition = (
            RUNS.c.status == PipelineRunStatus.INITIAL.value,
            RUNS.c.owner.is_(None),
        )
        # Settings of every schedule and backfill with a waiting run: two queries, not one
        # per run.
        settings_of: dict[int | None, dict[str, Any]] = {None: with_defaults(None)}
        for schedule_id, raw in connection.execute(
            select(SCHEDULES.c.id, SCHEDULES.c.settings).where(
                SCHEDULES.c.id.in_(select(RUNS.c.pipeline_schedule_id).where(*waiting_condition))
            )
        ):
            settings_of[schedule_id] = with_defaults(raw)
        backfill_limit_of: dict[int | None, int | None] = {None: None}
        for backfill_id, raw in connection.execute(
            select(BACKFILLS.c.id, BACKFILLS.c.settings).where(
                BACKFILLS.c.id.in_(select(RUNS.c.backfill_id).where(*waiting_condition))
            )
        ):
            value = (raw or {}).get("pipeline_run_limit")
            backfill_limit_of[backfill_id] = int(value) if value else None
        waiting = connection.execute(
            select(
                RUNS.c.id,
                RUNS.c.pipeline_schedule_id,
                RUNS.c.pipeline_uuid,
                RUNS.c.backfill_id,
            )
            .where(
                RUNS.c.status == PipelineRunStatus.INITIAL.value,
                RUNS.c.owner.is_(None),
            )
            .order_by(RUNS.c.created_at, RUNS.c.execution_date, RUNS.c.id)
        ).all()
        for run in waiting:
            schedule_id = run.pipeline_schedule_id
            settings = settings_of.get(schedule_id) or settings_of[None]
            backfill_limit = backfill_limit_of.get(run.backfill_id)
            if (
                schedule_id is not None
                and run.backfill_id is None
                and settings["skip_if_previous_running"]
                and per_schedule[schedule_id] > 0
            ):
                plan.skipped[run.id] = (
                    f"skipped: an earlier run of schedule {schedule_id} was still running "
                    "(settings.skip_if_previous_running)"
                )
                continue
            reason = _limit_reason(settings, backfill_limit, run, counts)
            if reason is not None:
                skip = settings["on_pipeline_run_limit_reached"] == "skip"
                if skip and run.backfill_id is None:
                    plan.skipped[run.id] = (
                        f"skipped: {reason} (settings.on_pipeline_run_limit_reached='skip')"
                    )
                continue
            if len(plan.start) >= capacity:
                continue  # still walk on: later runs may have to be skipped now
            plan.start.append(run.id)
            if run.backfill_id is None:
                per_schedule[schedule_id] += 1
            per_pipeline[run.pipeline_uuid] += 1
            per_backfill[run.backfill_id] += 1
    if plan.skipped or plan.start:
        _apply_start_plan(store, plan, owner, now)
    return plan


def _apply_start_plan(store: Store, plan: StartPlan, owner: str, now: datetime) -> None:
    """Record the skips and take the runs to start — only those still waiting and untaken."""
    waiting = (RUNS.c.status == PipelineRunStatus.INITIAL.value, RUNS.c.owner.is_(None))
    with store.write_engine.begin() as connection:
        skipped = list(plan.skipped)
        for chunk in _chunks(skipped):
            still = {
                int(row[0])
                for row in connection.execute(
                    select(RUNS.c.id).where(RUNS.c.id.in_(chunk), *waiting)
                )
            }
            for run_id in chunk:
                if run_id not in still:
                    del plan.skipped[run_id]  # taken or ended meanwhile: not ours to skip
                    continue
                end_run(
                    connection,
                    run_id,
                    PipelineRunStatus.CANCELLED.value,
                    plan.skipped[run_id],
                    now,
                    from_statuses=(PipelineRunStatus.INITIAL.value,),
                )
        if plan.start:
            # No status change: the runs stay initial until their executor claims them.
            connection.execute(
                update(RUNS)
                .where(RUNS.c.id.in_(plan.start), *waiting)
                .values(owner=owner, updated_at=now)
            )
            taken = {
                int(row[0])
                for row in connection.execute(
                    select(RUNS.c.id).where(RUNS.c.id.in_(plan.start), RUNS.c.owner == owner)
                )
            }
            plan.start = [run_id for run_id in plan.start if run_id in taken]


def _chunks(values: list[int], size: int = 500) -> Iterator[list[int]]:
    for offset in range(0, len(values), size):
        yield values[offset : offset + size]


# --------------------------------------------------------------------------------------------
# Timeouts and SLAs
# --------------------------------------------------------------------------------------------


@dataclass
class Deadlines:
    """Runs ended here (to stop in the executor), notifications, and the next deadline."""

    ended: list[int] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    next_deadline: datetime | None = None

    def consider(self, instant: datetime) -> None:
        if self.next_deadline is None or instant < self.next_deadline:
            self.next_deadline = instant


def enforce_timeouts(store: Store, now: datetime) -> Deadlines:
    """End running runs past ``settings.timeout`` (from ``started_at``) or with a block past
    ``settings.block_timeout``: the run gets ``timeout_status`` / ``failed`` with the reason.
    The caller stops them in the executor (the kernel is killed there)."""
    result = Deadlines()
    overdue: list[tuple[int, str, str]] = []  # (run id, status to give, reason)
    # Read first: usually nothing is overdue and no write lock is needed.
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(RUNS.c.id, RUNS.c.started_at, SCHEDULES.c.settings)
            .join(SCHEDULES, SCHEDULES.c.id == RUNS.c.pipeline_schedule_id)
            .where(
                RUNS.c.status == PipelineRunStatus.RUNNING.value,
                RUNS.c.started_at.is_not(None),
                SCHEDULES.c.settings.is_not(None),
            )
        ).all()
        for run_id, started_at, raw in rows:
            settings = with_defaults(raw)
            if settings["timeout"]:
                deadline = _utc(started_at) + timedelta(seconds=settings["timeout"])
                if deadline + TIMEOUT_SLACK <= now:
                    why = f"timed out: ran longer than settings.timeout ({settings['timeout']} s)"
                    overdue.append((run_id, str(settings["timeout_status"]), why))
                    continue
                result.consider(deadline + TIMEOUT_SLACK)
            if not settings["block_timeout"]:
                continue
            limit = timedelta(seconds=settings["block_timeout"])
            blocks = connection.execute(
                select(BLOCKS.c.block_uuid, BLOCKS.c.started_at).where(
                    BLOCKS.c.pipeline_run_id == run_id,
                    BLOCKS.c.status == BlockRunStatus.RUNNING.value,
                    BLOCKS.c.started_at.is_not(None),
                )
            ).all()
            for block_uuid, block_started in blocks:
                if block_started is None:
                    continue
                deadline = _utc(block_started) + limit
                if deadline + TIMEOUT_SLACK <= now:
                    why = (
                        f"timed out: block {block_uuid} ran longer than "
                        f"settings.block_timeout ({settings['block_timeout']} s)"
                    )
                    overdue.append((run_id, PipelineRunStatus.FAILED.value, why))
                    break
                result.consider(deadline + TIMEOUT_SLACK)
    if overdue:
        with store.write_engine.begin() as connection:
            for run_id, status, why in overdue:
                # Fenced on 'running': a run that finished meanwhile keeps its own status.
                if end_run(connection, run_id, status, why, now):
                    result.ended.append(run_id)
    return result


def _notification(
    kind: str, run: Any, schedule_name: str | None, reason: str | None
) -> Notification:
    return Notification(
        kind=kind,
        run_id=run.id,
        pipeline_uuid=run.pipeline_uuid,
        schedule_id=run.pipeline_schedule_id,
        schedule_name=schedule_name,
        execution_date=_utc(run.execution_date),
        status=status_value(run.status),
        reason=reason,
    )


def _sla_reason(sla: int, execution_date: datetime) -> str:
    due = _utc(execution_date) + timedelta(seconds=sla)
    return f"SLA of {sla} s from the execution date passed at {due.isoformat()}"


def check_slas(store: Store, now: datetime) -> Deadlines:
    """Flag runs still waiting or executing whose SLA (seconds from ``execution_date``) has
    passed; each breach is flagged — and notified — once (a fenced update)."""
    result = Deadlines()
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(
                RUNS.c.id,
                RUNS.c.pipeline_uuid,
                RUNS.c.pipeline_schedule_id,
                RUNS.c.execution_date,
                RUNS.c.status,
                SCHEDULES.c.sla,
                SCHEDULES.c.name,
            )
            .join(SCHEDULES, SCHEDULES.c.id == RUNS.c.pipeline_schedule_id)
            .where(
                RUNS.c.status.in_(UNFINISHED),
                RUNS.c.sla_breached.is_(False),
                SCHEDULES.c.sla.is_not(None),
            )
        ).all()
    breached = []
    for run in rows:
        due = _utc(run.execution_date) + timedelta(seconds=run.sla)
        if due > now:
            result.consider(due)
        else:
            breached.append(run)
    if not breached:
        return result
    with store.write_engine.begin() as connection:
        for run in breached:
            flagged = connection.execute(
                update(RUNS)
                .where(RUNS.c.id == run.id, RUNS.c.sla_breached.is_(False))
                .values(sla_breached=True)
            )
            if flagged.rowcount == 1:
                why = _sla_reason(run.sla, run.execution_date)
                result.notifications.append(_notification("sla_breach", run, run.name, why))
    return result


# --------------------------------------------------------------------------------------------
# Finished runs
# --------------------------------------------------------------------------------------------


def _failure_reason(connection: Connection, run: Any) -> str | None:
    error = (run.metrics or {}).get("error")
    if error:
        return str(error)[:500]
    row = connection.execute(
        select(BLOCKS.c.block_uuid, BLOCKS.c.error)
        .where(
            BLOCKS.c.pipeline_run_id == run.id,
            BLOCKS.c.status == BlockRunStatus.FAILED.value,
        )
        .order_by(BLOCKS.c.id)
        .limit(1)
    ).first()
    if row is None:
        return None
    last_line = (row[1] or "").strip().splitlines()[-1:] or [""]
    return f"block {row[0]} failed: {last_line[0]}"[:500]


_FINALIZE_RUNS = (
    select(
        RUNS.c.id,
        RUNS.c.pipeline_uuid,
        RUNS.c.pipeline_schedule_id,
        RUNS.c.execution_date,
        RUNS.c.status,
        RUNS.c.completed_at,
        RUNS.c.sla_breached,
        RUNS.c.metrics,
    )
    .where(RUNS.c.finalized_at.is_(None), RUNS.c.status.in_(FINISHED))
    .order_by(RUNS.c.id)
    .limit(FINALIZE_BATCH)
)


@dataclass
class _Closing:
    """A schedule as ``finalize_runs`` changes it while closing its runs (the changes are
    written once per schedule and batch, only where a value really changed)."""

    row: Any
    status: Any
    next_due_at: datetime

    def changes(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if status_value(self.status) != status_value(self.row.status):
            values["status"] = status_value(self.status)
        if self.next_due_at != self.row.next_due_at:
            values["next_due_at"] = self.next_due_at
        return values


def _landing_time_enabled(schedule: Any) -> bool:
    """Mage: landing time applies to time schedules with @hourly/@daily/@weekly/@monthly."""
    return timing_of(schedule, with_defaults(schedule.settings)).landing_time_enabled


def finalize_runs(store: Store, now: datetime) -> list[Notification]:
    """Close runs that reached a final status: SLA breaches noticed late, failure (and success)
    notifications, ``@once`` schedules deactivated, ``@always_on`` and landing-time schedules
    re-evaluated, backfills completed. Each run is closed once (``finalized_at``)."""
    notifications: list[Notification] = []
    finished = select(RUNS.c.id).where(RUNS.c.finalized_at.is_(None), RUNS.c.status.in_(FINISHED))
    while _exists(store, finished):
        with store.write_engine.begin() as connection:
            runs = connection.execute(_FINALIZE_RUNS).all()
            if not runs:
                break
            schedule_ids = {run.pipeline_schedule_id for run in runs} - {None}
            schedules = {
                row.id: _Closing(row, row.status, _utc(row.next_due_at))
                for row in connection.execute(
                    select(
                        SCHEDULES.c.id,
                        SCHEDULES.c.name,
                        SCHEDULES.c.sla,
                        SCHEDULES.c.status,
                        SCHEDULES.c.schedule_type,
                        SCHEDULES.c.schedule_interval,
                        SCHEDULES.c.start_time,
                        SCHEDULES.c.last_enabled_at,
                        SCHEDULES.c.settings,
                        SCHEDULES.c.next_due_at,
                    ).where(SCHEDULES.c.id.in_(schedule_ids))
                )
            }
            closed: list[dict[str, Any]] = []
            for run in runs:
                schedule = (
                    schedules.get(run.pipeline_schedule_id)
                    if run.pipeline_schedule_id is not None
                    else None
                )
                name = schedule.row.name if schedule is not None else None
                sla = schedule.row.sla if schedule is not None else None
                sla_breached = bool(run.sla_breached)
                if (
                    sla is not None
                    and not sla_breached
                    and run.completed_at is not None
                    and run.completed_at > run.execution_date + timedelta(seconds=sla)
                ):
                    sla_breached = True
                    why = _sla_reason(sla, run.execution_date)
                    notifications.append(_notification("sla_breach", run, name, why))
                status = status_value(run.status)
                if status == PipelineRunStatus.FAILED.value:
                    notifications.append(
                        _notification("failure", run, name, _failure_reason(connection, run))
                    )
                elif status == PipelineRunStatus.COMPLETED.value:
                    notifications.append(_notification("success", run, name, None))
                if schedule is not None and schedule.status == ScheduleStatus.ACTIVE:
                    interval = schedule.row.schedule_interval
                    if interval == ScheduleInterval.ONCE.value:
                        schedule.status = ScheduleStatus.INACTIVE
                        # A change of status is a change of timing: looked at again.
                        schedule.next_due_at = EVALUATE_NOW
                    elif interval == ScheduleInterval.ALWAYS_ON.value or _landing_time_enabled(
                        schedule.row
                    ):
                        schedule.next_due_at = EVALUATE_NOW
                closed.append({"b_id": run.id, "b_sla_breached": sla_breached})
            connection.execute(
                update(RUNS)
                .where(RUNS.c.id == bindparam("b_id"))
                .values(finalized_at=now, sla_breached=bindparam("b_sla_breached")),
                closed,
            )
            for schedule_id, schedule in schedules.items():
                changes = schedule.changes()
                if changes:
                    connection.execute(
                        update(SCHEDULES).where(SCHEDULES.c.id == schedule_id).values(**changes)
                    )
    _roll_up_backfills(store, now)
    return notifications


def _roll_up_backfills(store: Store, now: datetime) -> None:
    """A running backfill whose runs have all finished becomes completed (or failed)."""
    running_backfills = select(BACKFILLS.c.id).where(
        BACKFILLS.c.status == BackfillStatus.RUNNING.value
    )
    if not _exists(store, running_backfills):
        return
    with store.write_engine.begin() as connection:
        running = [
            row[0]
            for row in connection.execute(
                select(BACKFILLS.c.id).where(BACKFILLS.c.status == BackfillStatus.RUNNING.value)
            )
        ]
        for backfill_id in running:
            counts: dict[str, int] = {
                str(getattr(status, "value", status)): int(count)
                for status, count in connection.execute(
                    select(RUNS.c.status, func.count(RUNS.c.id))
                    .where(RUNS.c.backfill_id == backfill_id)
                    .group_by(RUNS.c.status)
                )
            }
            if any(counts.get(status, 0) for status in UNFINISHED):
                continue
            values: dict[str, Any] = {"completed_at": now, "updated_at": now}
            if counts.get(PipelineRunStatus.FAILED.value, 0):
                values.update(status=BackfillStatus.FAILED.value, failed_at=now)
            else:
                values["status"] = BackfillStatus.COMPLETED.value
            connection.execute(
                update(BACKFILLS)
                .where(
                    BACKFILLS.c.id == backfill_id,
                    BACKFILLS.c.status == BackfillStatus.RUNNING.value,
                )
                .values(**values)
            )


# --------------------------------------------------------------------------------------------
# Recovery
# --------------------------------------------------------------------------------------------


@dataclass
class Recovery:
    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    released: list[int] = field(default_factory=list)


def recover_runs(
    store: Store,
    now: datetime,
    owner: str,
    executing_here: set[int],
    max_attempts: int,
) -> Recovery:
    """Find runs whose owner is gone — a scheduler whose heartbeat expired, a process that
    exited, or this scheduler's own runs its executor no longer has — and put them right:
    taken-but-not-started runs are released, executing ones are re-queued up to
    ``max_attempts`` times, then failed with the reason. Nothing stays ``running``."""
    result = Recovery()
    owned = select(RUNS.c.id).where(RUNS.c.status.in_(UNFINISHED), RUNS.c.owner.is_not(None))
    if not _exists(store, owned):
        return result
    with store.write_engine.begin() as connection:
        live = leases.live_instances(connection, now) | {owner}
        rows = connection.execute(
            select(RUNS.c.id, RUNS.c.status, RUNS.c.owner, RUNS.c.attempts).where(
                RUNS.c.status.in_(UNFINISHED), RUNS.c.owner.is_not(None)
            )
        ).all()
        for run_id, status, run_owner, attempts in rows:
            run_owner = str(run_owner)
            if run_owner == owner:
                if run_id in executing_here:
                    continue
                why = "this scheduler lost track of the run"
            elif leases.owner_is_alive(run_owner, live):
                continue
            else:
                why = f"its owner {run_owner} stopped (no heartbeat)"
            if status_value(status) == PipelineRunStatus.INITIAL.value:
                # Released, not a status change: the run stays initial for anyone to take.
                connection.execute(
                    update(RUNS)
                    .where(
                        RUNS.c.id == run_id,
                        RUNS.c.status == PipelineRunStatus.INITIAL.value,
                        RUNS.c.owner == run_owner,
                    )
                    .values(owner=None, updated_at=now)
                )
                result.released.append(run_id)
            elif int(attempts or 0) < max_attempts:
                if requeue_run(connection, run_id, f"executed again: {why}", now):
                    result.requeued.append(run_id)
            elif end_run(
                connection,
                run_id,
                PipelineRunStatus.FAILED.value,
                f"{why}; not retried again after {attempts} earlier attempt(s)",
                now,
            ):
                result.failed.append(run_id)
    return result


def detach_interrupted(store: Store, run_ids: Iterable[int], owner: str, now: datetime) -> None:
    """At shutdown, runs still executing go back to ``initial`` — still ``owner``'s, so nobody
    takes them before their kernels are dead, and with no claim, so the old executor's last
    writes are fenced out. Their block runs are dropped (the next claim recreates them). The
    attempt is not counted against crash recovery."""
    with store.write_engine.begin() as connection:
        for run_id in run_ids:
            # running → initial (the requeue path); a run still initial has no claim and no
            # block runs yet: nothing to undo.
            if set_run_status(
                connection,
                run_id,
                PipelineRunStatus.INITIAL.value,
                now=now,
                from_statuses=(PipelineRunStatus.RUNNING.value,),
                where=(RUNS.c.owner == owner,),
                claim_token=None,
                started_at=None,
            ):
                connection.execute(delete(BLOCKS).where(BLOCKS.c.pipeline_run_id == run_id))


def release_runs(store: Store, run_ids: Iterable[int], owner: str, now: datetime) -> None:
    """Give ``owner``'s waiting runs back, for any scheduler to execute."""
    with store.write_engine.begin() as connection:
        for run_id in run_ids:
            connection.execute(
                update(RUNS)
                .where(
                    RUNS.c.id == run_id,
                    RUNS.c.status == PipelineRunStatus.INITIAL.value,
                    RUNS.c.owner == owner,
                )
                .values(owner=None, updated_at=now)
            )


def ended_elsewhere(store: Store, run_ids: Iterable[int], owner: str | None = None) -> list[int]:
    """Of runs an executor is executing, those already final in the database (cancelled via the
    API or a backfill cancel, timed out) — or, with ``owner``, no longer that owner's: the
    executor must stop them."""
    ids = list(run_ids)
    if not ids:
        return []
    condition: Any = RUNS.c.status.not_in(UNFINISHED)
    if owner is not None:
        condition = or_(condition, RUNS.c.owner.is_(None), RUNS.c.owner != owner)
    with store.engine.connect() as connection:
        rows = connection.execute(select(RUNS.c.id).where(RUNS.c.id.in_(ids), condition))
        return [int(row[0]) for row in rows]


# --------------------------------------------------------------------------------------------
# Retention
# --------------------------------------------------------------------------------------------


def delete_old_runs(store: Store, now: datetime, days: int, batch: int = 500) -> int:
    """Delete runs finished more than ``days`` days ago with their block runs, outputs, logs and
    executed notebooks. Returns how many runs were deleted."""
    if days <= 0:
        return 0
    assert store.project_dir is not None
    cutoff = now - timedelta(days=days)
    deleted = 0
    while True:
        with store.write_engine.begin() as connection:
            rows = connection.execute(
                select(
                    RUNS.c.id,
                    RUNS.c.pipeline_uuid,
                    RUNS.c.pipeline_schedule_id,
                    RUNS.c.execution_date,
                )
                .where(
                    RUNS.c.status.in_(FINISHED),
                    RUNS.c.finalized_at.is_not(None),
                    RUNS.c.completed_at < cutoff,
                )
                .limit(batch)
            ).all()
            if not rows:
                return deleted
            ids = [row.id for row in rows]
            connection.execute(delete(BLOCKS).where(BLOCKS.c.pipeline_run_id.in_(ids)))
            connection.execute(delete(RUNS).where(RUNS.c.id.in_(ids)))
        # Files after the commit: a crash in between leaves orphan files, never rows
        # pointing at deleted files. A partition is shared by every run of the same schedule
        # and execution date (a backfill re-run of an old day): kept runs keep their files.
        for row in rows:
            if _partition_still_used(store, row):
                continue
            for folder in _run_folders(store.project_dir, row):
                shutil.rmtree(folder, ignore_errors=True)
        deleted += len(rows)


def _partition_still_used(store: Store, row: Any) -> bool:
    schedule = (
        RUNS.c.pipeline_schedule_id.is_(None)
        if row.pipeline_schedule_id is None
        else RUNS.c.pipeline_schedule_id == row.pipeline_schedule_id
    )
    return _exists(
        store,
        select(RUNS.c.id).where(
            schedule,
            RUNS.c.pipeline_uuid == row.pipeline_uuid,
            RUNS.c.execution_date == row.execution_date,
        ),
    )


def _run_folders(project_dir: Path, row: Any) -> list[Path]:
    partition = execution_partition(row.pipeline_schedule_id, _utc(row.execution_date))
    outputs = data_dir(project_dir) / ".variables" / "pipelines" / row.pipeline_uuid / partition
    return [run_dir(project_dir, row.pipeline_uuid, partition), outputs]
