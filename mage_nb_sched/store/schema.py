"""The schema: SQLAlchemy Core tables, the single description of what is stored.

The columns follow Mage's ``pipeline_schedule`` / ``pipeline_run`` / ``block_run`` /
``backfill`` / ``event_matcher`` tables, plus ``run_key`` (one run per schedule period, enforced
by a unique index), a hashed API token and the scheduler's bookkeeping (``next_due_at``,
``owner``, ``claim_token``, ``finalized_at``, ``attempts``, ``scheduler_lease``,
``scheduler_problem``).

Everything below the front ends (service, execution, scheduling) reads and writes these tables
with Core statements. The Mage model classes (:mod:`mage_nb_sched.models`) are mapped onto the
same tables, so nothing here knows about them. Alembic migrations compare against
:data:`metadata` (a test checks models == migrations).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    text,
)

from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.core.datetimes import UTC, to_utc
from mage_nb_sched.core.enums import (
    BackfillIntervalType,
    BackfillStatus,
    BlockRunStatus,
    PipelineRunStatus,
    ScheduleStatus,
    ScheduleType,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC instants; always gives back UTC-aware datetimes (SQLite drops offsets)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        value = to_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class StrEnumColumn(TypeDecorator[str]):
    """A string column that accepts enum members and returns the enum member on load."""

    impl = String(32)
    cache_ok = True

    def __init__(self, enum_class: type[enum.Enum]) -> None:
        super().__init__()
        self.enum_class = enum_class

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        if value is None:
            return None
        return str(value.value if isinstance(value, enum.Enum) else value)

    def process_result_value(self, value: str | None, dialect: Any) -> Any:
        if value is None:
            return None
        try:
            return self.enum_class(value)
        except ValueError:
            return value


#: ``next_due_at`` of a schedule the scheduler must look at on its next pass (new or changed).
EVALUATE_NOW = datetime(1970, 1, 1, tzinfo=UTC)
#: ``next_due_at`` of a schedule that waits for an event, not a time (its run to finish).
NEVER = datetime(9999, 1, 1, tzinfo=UTC)
#: Changing any of these may change when a schedule is due: the scheduler re-evaluates it.
TIMING_ATTRIBUTES = (
    "status",
    "schedule_type",
    "schedule_interval",
    "start_time",
    "last_enabled_at",
    "settings",
)

#: The WHERE terms of the scheduler's partial indexes on ``pipeline_run``, as SQL text. A query
#: uses such an index only when it repeats the term literally (SQLite matches the expression, not
#: its meaning; PostgreSQL must prove it), so the scheduler's queries add exactly this term —
#: with the values inline, not as bound parameters. The indexes hold the live runs only: their
#: size, and the cost of every scheduler query through them, does not grow with run history.
UNFINISHED_RUNS_WHERE = "status IN ('initial', 'running')"
UNFINALIZED_RUNS_WHERE = "finalized_at IS NULL"

metadata = MetaData()


def _stamps() -> list[Column[Any]]:
    """``id``, ``created_at``, ``updated_at``: every table of Mage's ``BaseModel`` has them."""
    return [
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("created_at", UTCDateTime, nullable=False, default=utcnow),
        Column("updated_at", UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow),
    ]


pipeline_schedule = Table(
    "pipeline_schedule",
    metadata,
    *_stamps(),
    Column("name", String(255), nullable=False),
    Column("description", Text),
    Column("pipeline_uuid", String(255), nullable=False, index=True),
    Column(
        "schedule_type", StrEnumColumn(ScheduleType), nullable=False, default=ScheduleType.TIME
    ),
    Column("schedule_interval", String(100)),
    Column("start_time", UTCDateTime),
    Column(
        "status", StrEnumColumn(ScheduleStatus), nullable=False, default=ScheduleStatus.INACTIVE
    ),
    Column("last_enabled_at", UTCDateTime),
    Column("variables", JSON),
    Column("sla", Integer),
    Column("settings", JSON),
    Column("token_hash", String(128), index=True),
    Column("token_hint", String(16)),
    # True when the schedule is defined in ``<notebook stem>.triggers.yaml`` (synced both ways).
    Column("in_code", Boolean, nullable=False, default=False),
    # When the ``triggers.yaml`` that defined the schedule disappeared (a branch switch, a renamed
    # notebook): the schedule is kept, inactive, with its runs, until the file comes back or it is
    # deleted explicitly. None for every other schedule.
    Column("orphaned_at", UTCDateTime),
    # When the scheduler next has to look at this schedule (its next run's creation time;
    # EVALUATE_NOW after a change, NEVER while waiting for a run to finish).
    Column("next_due_at", UTCDateTime, nullable=False, default=EVALUATE_NOW),
    Index("uq_pipeline_schedule_pipeline_name", "pipeline_uuid", "name", unique=True),
    Index("ix_pipeline_schedule_status_type", "status", "schedule_type"),
    Index("ix_pipeline_schedule_due", "status", "schedule_type", "next_due_at"),
)

event_matcher = Table(
    "event_matcher",
    metadata,
    *_stamps(),
    Column("name", String(255), nullable=False, unique=True),
    Column("event_type", String(255), nullable=False, index=True),
    Column("pattern", JSON),
)

pipeline_schedule_event_matcher_association = Table(
    "pipeline_schedule_event_matcher_association",
    metadata,
    Column(
        "pipeline_schedule_id",
        Integer,
        ForeignKey("pipeline_schedule.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "event_matcher_id",
        Integer,
        ForeignKey("event_matcher.id", ondelete="CASCADE"),
        primary_key=True,
    ),
)

backfill = Table(
    "backfill",
    metadata,
    *_stamps(),
    Column("name", String(255), nullable=False),
    Column("pipeline_uuid", String(255), nullable=False, index=True),
    Column(
        "pipeline_schedule_id",
        Integer,
        ForeignKey("pipeline_schedule.id", ondelete="CASCADE"),
        index=True,
    ),
    Column("start_datetime", UTCDateTime, nullable=False),
    Column("end_datetime", UTCDateTime, nullable=False),
    Column("interval_type", StrEnumColumn(BackfillIntervalType), nullable=False),
    Column("interval_units", Integer, nullable=False, default=1),
    Column(
        "status", StrEnumColumn(BackfillStatus), nullable=False, default=BackfillStatus.INITIAL
    ),
    Column("started_at", UTCDateTime),
    Column("completed_at", UTCDateTime),
    Column("failed_at", UTCDateTime),
    Column("variables", JSON),
    Column("settings", JSON),
)

pipeline_run = Table(
    "pipeline_run",
    metadata,
    *_stamps(),
    Column(
        "pipeline_schedule_id",
        Integer,
        ForeignKey("pipeline_schedule.id", ondelete="CASCADE"),
        index=True,
    ),
    Column("pipeline_uuid", String(255), nullable=False, index=True),
    Column("execution_date", UTCDateTime, nullable=False, index=True),
    Column(
        "status",
        StrEnumColumn(PipelineRunStatus),
        nullable=False,
        default=PipelineRunStatus.INITIAL,
    ),
    Column("started_at", UTCDateTime),
    Column("completed_at", UTCDateTime),
    Column("variables", JSON),
    Column("event_variables", JSON),
    Column("metrics", JSON),
    Column("backfill_id", Integer, ForeignKey("backfill.id", ondelete="CASCADE"), index=True),
    Column("sla_breached", Boolean, nullable=False, default=False),
    # One run per key: ``schedule:<id>:<execution date>`` for scheduled periods, ``backfill:...``
    # for backfill dates, ``manual:<uuid>`` for hand-made runs (or the caller's idempotency key).
    Column("run_key", String(255), nullable=False, unique=True),
    # Who executes the run: a scheduler instance (``sched:...``) or a process executing it
    # directly (``direct:<host>:<pid>``). None while nobody has taken it.
    Column("owner", String(128)),
    # Set anew each time an executor claims the run (initial → running); every later write of
    # that executor is fenced on it, so an executor that stalled while its run was handed to
    # another can never overwrite the new attempt.
    Column("claim_token", String(32)),
    # When the scheduler handled the run's end (notifications, @once, backfill status).
    Column("finalized_at", UTCDateTime),
    # How often the run was started again after whatever executed it died.
    Column("attempts", Integer, nullable=False, default=0),
    Index("ix_pipeline_run_schedule_execution_date", "pipeline_schedule_id", "execution_date"),
    Index("ix_pipeline_run_status_created", "status", "created_at"),
    Index("ix_pipeline_run_status_owner", "status", "owner"),
    Index("ix_pipeline_run_finalized_status", "finalized_at", "status"),
    # The scheduler's partial indexes (see UNFINISHED_RUNS_WHERE): live runs only, so a pass
    # costs the same with a million finished runs in the store as with none — whatever the
    # planner's statistics say (with ``ANALYZE`` statistics and every row finished, SQLite
    # otherwise scans the table for ``status = 'initial'``).
    Index(
        "ix_pipeline_run_unfinished",
        "status",
        "owner",
        sqlite_where=text(UNFINISHED_RUNS_WHERE),
        postgresql_where=text(UNFINISHED_RUNS_WHERE),
    ),
    Index(
        "ix_pipeline_run_schedule_unfinished",
        "pipeline_schedule_id",
        "status",
        sqlite_where=text(UNFINISHED_RUNS_WHERE),
        postgresql_where=text(UNFINISHED_RUNS_WHERE),
    ),
    Index(
        "ix_pipeline_run_unfinalized",
        "status",
        sqlite_where=text(UNFINALIZED_RUNS_WHERE),
        postgresql_where=text(UNFINALIZED_RUNS_WHERE),
    ),
)

block_run = Table(
    "block_run",
    metadata,
    *_stamps(),
    Column(
        "pipeline_run_id",
        Integer,
        ForeignKey("pipeline_run.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("block_uuid", String(255), nullable=False),
    Column(
        "status", StrEnumColumn(BlockRunStatus), nullable=False, default=BlockRunStatus.INITIAL
    ),
    Column("started_at", UTCDateTime),
    Column("completed_at", UTCDateTime),
    Column("error", Text),
    Column("metrics", JSON),
    Index("ix_block_run_run_block", "pipeline_run_id", "block_uuid"),
)

scheduler_lease = Table(
    "scheduler_lease",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("details", JSON),
)
"""Leases: ``leader`` (the one active scheduler) and ``instance:<id>`` (each live scheduler's
heartbeat, so runs of a dead one can be found)."""

scheduler_problem = Table(
    "scheduler_problem",
    metadata,
    # The scheduler step that raised on the row: create_due_runs, enforce_timeouts, ...
    Column("step", String(32), primary_key=True),
    # What the row is: ``schedule``, ``run`` or ``backfill`` (no foreign key: a flag outlives
    # nothing, it is cleared when the row passes the step again or stops needing it).
    Column("row_kind", String(16), primary_key=True),
    Column("row_id", Integer, primary_key=True),
    # The schedule the row belongs to (the row itself for a schedule), where known: what the
    # user has to fix.
    Column("schedule_id", Integer),
    # ``ExceptionType: message`` (capped).
    Column("error", Text, nullable=False),
    Column("first_seen_at", UTCDateTime, nullable=False),
    # When the scheduler tries the row again; None: on every pass that runs the step.
    Column("retry_at", UTCDateTime),
)
"""Rows a scheduler step skipped because handling them raised (a stored value out of range, a
settings JSON that is not an object, an unknown time zone, ...): one row that raises never
stops the other schedules (DESIGN §7); this table is how the status API shows it."""

__all__ = [
    "EVALUATE_NOW",
    "NEVER",
    "TIMING_ATTRIBUTES",
    "UNFINALIZED_RUNS_WHERE",
    "UNFINISHED_RUNS_WHERE",
    "StrEnumColumn",
    "UTCDateTime",
    "backfill",
    "block_run",
    "event_matcher",
    "metadata",
    "pipeline_run",
    "pipeline_schedule",
    "pipeline_schedule_event_matcher_association",
    "scheduler_lease",
    "scheduler_problem",
]
