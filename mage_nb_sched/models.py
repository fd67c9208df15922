"""SQLAlchemy 2.0 models with Mage's model API on top.

The columns follow Mage's ``pipeline_schedule`` / ``pipeline_run`` / ``block_run`` / ``backfill`` /
``event_matcher`` tables, plus ``run_key`` (one run per schedule period, enforced by a unique
index) and a hashed API token. Every rule and validation lives in :mod:`mage_nb_sched.service`;
the methods here are the Mage-shaped entry points that call it.
"""

from __future__ import annotations

import enum as _enum
from collections.abc import Generator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    event,
    func,
    inspect,
    select,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Query,
    mapped_column,
    relationship,
    validates,
)

from mage_nb_sched.core import timing
from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.core.datetimes import UTC, to_utc
from mage_nb_sched.core.enums import (
    BackfillIntervalType,
    BackfillStatus,
    BlockRunStatus,
    PipelineRunStatus,
    ScheduleInterval,
    ScheduleStatus,
    ScheduleType,
)
from mage_nb_sched.core.timing import ScheduleDecision, ScheduleTiming
from mage_nb_sched.service.fields import SCHEDULE_VALUE_CHECKS
from mage_nb_sched.store.engine import current_store

# Module-level names for the enums that the model classes also expose as nested attributes
# (``PipelineRun.PipelineRunStatus`` as in Mage), so annotations inside the classes resolve.
_RunStatus = PipelineRunStatus
_BlockStatus = BlockRunStatus

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


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

    def __init__(self, enum_class: type[_enum.Enum]) -> None:
        super().__init__()
        self.enum_class = enum_class

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        if value is None:
            return None
        return str(value.value if isinstance(value, _enum.Enum) else value)

    def process_result_value(self, value: str | None, dialect: Any) -> Any:
        if value is None:
            return None
        try:
            return self.enum_class(value)
        except ValueError:
            return value


class ModelQuery(Query[Any]):
    """Mage's ``Model.query``: a legacy ``Query`` whose ``get`` always reads fresh rows."""

    def get(self, ident: Any) -> Any:
        entity: Any = self.column_descriptions[0]["entity"]
        return self.session.get(entity, ident, populate_existing=True)


def fresh_session() -> Session:
    """The current store's thread-local session, with any open transaction ended first.

    A long-lived read transaction would pin an old snapshot (SQLite WAL / PostgreSQL repeatable
    reads), so a notebook would never see the scheduler's updates. Ending it costs one COMMIT;
    values assigned directly to models (validated on assignment) are saved by it, as in Mage.
    """
    session = current_store().session()
    if session.in_transaction() and not session.info.get("writing"):
        session.commit()
    return session


class _QueryProperty:
    def __get__(self, instance: object, owner: type[Any]) -> ModelQuery:
        return ModelQuery(owner, session=fresh_session()).populate_existing()


class Base(DeclarativeBase):
    """Declarative base with Mage's ``BaseModel`` conveniences."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime}
    # Lets plain (non-column) instance attributes such as ``PipelineSchedule.token`` exist.
    __allow_unmapped__ = True

    #: ``Model.query.get(id)``, ``Model.query.filter_by(...).all()`` as in Mage.
    query: ClassVar[ModelQuery] = _QueryProperty()  # type: ignore[assignment]

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False
    )

    def __await__(self) -> Generator[Any, None, Any]:
        # ``await schedule.update(...)`` (as in Mage's docs) resolves to the model itself.
        return _resolved(self).__await__()

    @classmethod
    def session(cls) -> Session:
        """The thread-local session of the current store (fresh snapshot, see ``fresh_session``)."""
        return fresh_session()

    def refresh(self) -> Any:
        """Reload this object's columns from the database and return it."""
        self.session().refresh(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Column values as a plain dict (enums as strings)."""
        result: dict[str, Any] = {}
        for column in self.__table__.columns:
            value = getattr(self, column.key)
            result[column.key] = value.value if isinstance(value, _enum.Enum) else value
        return result


async def _resolved(value: Any) -> Any:
    return value


pipeline_schedule_event_matcher_association = Table(
    "pipeline_schedule_event_matcher_association",
    Base.metadata,
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


class PipelineSchedule(Base):
    """A trigger: when (time/cron), on what event, or by which API token a notebook runs."""

    __tablename__ = "pipeline_schedule"
    __table_args__ = (
        Index("uq_pipeline_schedule_pipeline_name", "pipeline_uuid", "name", unique=True),
        Index("ix_pipeline_schedule_status_type", "status", "schedule_type"),
        Index("ix_pipeline_schedule_due", "status", "schedule_type", "next_due_at"),
    )

    name: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    pipeline_uuid: Mapped[str] = mapped_column(String(255), index=True, nullable=False)
    schedule_type: Mapped[ScheduleType] = mapped_column(
        StrEnumColumn(ScheduleType), nullable=False, default=ScheduleType.TIME
    )
    schedule_interval: Mapped[str | None] = mapped_column(String(100))
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[ScheduleStatus] = mapped_column(
        StrEnumColumn(ScheduleStatus), nullable=False, default=ScheduleStatus.INACTIVE
    )
    last_enabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    variables: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    sla: Mapped[int | None] = mapped_column(Integer)
    settings: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    token_hash: Mapped[str | None] = mapped_column(String(128), index=True)
    token_hint: Mapped[str | None] = mapped_column(String(16))
    #: True when the schedule is defined in ``<notebook stem>.triggers.yaml`` (synced both ways).
    in_code: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    #: When the scheduler next has to look at this schedule (its next run's creation time;
    #: :data:`EVALUATE_NOW` after a change, :data:`NEVER` while waiting for a run to finish).
    next_due_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=EVALUATE_NOW
    )

    backfills: Mapped[list[Backfill]] = relationship(
        back_populates="pipeline_schedule", passive_deletes=True
    )
    event_matchers: Mapped[list[EventMatcher]] = relationship(
        secondary=pipeline_schedule_event_matcher_association,
        back_populates="pipeline_schedules",
    )

    #: The clear-text API token, only on the object that created or rotated it (shown once).
    token: str | None = None

    def __repr__(self) -> str:
        return (
            f"PipelineSchedule(id={self.id}, name={self.name!r}, "
            f"pipeline_uuid={self.pipeline_uuid!r}, schedule_type={self.schedule_type!s}, "
            f"schedule_interval={self.schedule_interval!r}, status={self.status!s})"
        )

    @validates(*SCHEDULE_VALUE_CHECKS)
    def _check_value(self, key: str, value: Any) -> Any:
        return SCHEDULE_VALUE_CHECKS[key](value)

    # ----- Mage's write API --------------------------------------------------------------

    @classmethod
    def create(cls, **kwargs: Any) -> PipelineSchedule:
        """Validate and insert a schedule (see README: every field and setting)."""
        from mage_nb_sched.service import schedules

        return schedules.create_schedule(**kwargs)

    def update(self, **kwargs: Any) -> PipelineSchedule:
        """Validate and apply changes. The result can be awaited (``await schedule.update()``)."""
        from mage_nb_sched.service import schedules

        return schedules.update_schedule(self, **kwargs)

    def delete(self) -> None:
        """Delete the schedule with its runs, block runs and backfills."""
        from mage_nb_sched.service import schedules

        schedules.delete_schedule(self)

    def rotate_token(self) -> str:
        """Replace the API token; returns the new clear-text token (shown once)."""
        from mage_nb_sched.service import schedules

        return schedules.rotate_token(self)

    def check_token(self, token: str) -> bool:
        """Whether ``token`` is this schedule's API token (constant-time comparison)."""
        from mage_nb_sched.core.tokens import verify_token

        return verify_token(token, self.token_hash)

    # ----- settings ------------------------------------------------------------------------

    def get_settings(self) -> dict[str, Any]:
        """Settings with defaults filled in."""
        from mage_nb_sched.core.settings import with_defaults

        return with_defaults(self.settings)

    @property
    def timeout(self) -> int | None:
        return self.get_settings()["timeout"]  # type: ignore[no-any-return]

    @property
    def timeout_status(self) -> str:
        return self.get_settings()["timeout_status"]  # type: ignore[no-any-return]

    @property
    def timezone(self) -> str:
        return self.get_settings()["timezone"]  # type: ignore[no-any-return]

    def landing_time_enabled(self) -> bool:
        """Mage: landing time applies to time schedules with @hourly/@daily/@weekly/@monthly."""
        return (
            self.schedule_type == ScheduleType.TIME
            and self.schedule_interval in timing.LANDING_INTERVALS
            and bool(self.get_settings()["landing_time_enabled"])
        )

    @property
    def timing(self) -> ScheduleTiming:
        """The schedule's time facts for :mod:`mage_nb_sched.core.timing`."""
        return ScheduleTiming(
            schedule_interval=self.schedule_interval,
            timezone=self.timezone,
            start_time=self.start_time,
            last_enabled_at=self.last_enabled_at,
            landing_time_enabled=self.landing_time_enabled(),
        )

    # ----- runs ----------------------------------------------------------------------------

    def _runs_query(self) -> Any:
        return select(PipelineRun).where(PipelineRun.pipeline_schedule_id == self.id)

    @property
    def pipeline_runs(self) -> list[PipelineRun]:
        """All runs of this schedule, oldest first (read fresh each time)."""
        statement = self._runs_query().order_by(PipelineRun.id)
        return list(
            self.session().scalars(statement, execution_options={"populate_existing": True})
        )

    @property
    def pipeline_runs_count(self) -> int:
        return (
            self.session().scalar(
                select(func.count(PipelineRun.id)).where(
                    PipelineRun.pipeline_schedule_id == self.id
                )
            )
            or 0
        )

    @property
    def pipeline_in_progress_runs_count(self) -> int:
        """Runs that are ``initial`` or ``running``."""
        return (
            self.session().scalar(
                select(func.count(PipelineRun.id)).where(
                    PipelineRun.pipeline_schedule_id == self.id,
                    PipelineRun.status.in_(
                        [PipelineRunStatus.INITIAL.value, PipelineRunStatus.RUNNING.value]
                    ),
                )
            )
            or 0
        )

    @property
    def last_pipeline_run_status(self) -> PipelineRunStatus | None:
        """Status of the most recently created run (None without runs)."""
        return self.session().scalar(
            select(PipelineRun.status)
            .where(PipelineRun.pipeline_schedule_id == self.id)
            .order_by(PipelineRun.created_at.desc(), PipelineRun.id.desc())
            .limit(1)
        )

    def recently_completed_pipeline_runs(
        self, pipeline_run: PipelineRun | None = None, sample_size: int | None = None
    ) -> list[PipelineRun]:
        """Completed runs, newest execution date first (at most ``sample_size``)."""
        statement = self._runs_query().where(
            PipelineRun.status == PipelineRunStatus.COMPLETED.value
        )
        if pipeline_run is not None:
            statement = statement.where(PipelineRun.id != pipeline_run.id)
        statement = statement.order_by(PipelineRun.execution_date.desc(), PipelineRun.id.desc())
        if sample_size:
            statement = statement.limit(sample_size)
        return list(
            self.session().scalars(statement, execution_options={"populate_existing": True})
        )

    def runtime_history(
        self, pipeline_run: PipelineRun | None = None, sample_size: int | None = None
    ) -> list[float]:
        """Runtimes in seconds (creation → completion) of up to ``sample_size`` (7) recent runs."""
        size = sample_size or 7
        runtimes = [
            (run.completed_at - run.created_at).total_seconds()
            for run in self.recently_completed_pipeline_runs(pipeline_run, size)
            if run.completed_at is not None
        ]
        if pipeline_run is not None and pipeline_run.completed_at is not None:
            runtimes.insert(
                0, (pipeline_run.completed_at - pipeline_run.created_at).total_seconds()
            )
        return runtimes[:size]

    def runtime_average(
        self, pipeline_run: PipelineRun | None = None, sample_size: int | None = None
    ) -> float | None:
        """Mean runtime of up to ``sample_size`` (default 7) recent runs, rounded to 2 places;
        None without samples."""
        runtimes = self.runtime_history(pipeline_run, sample_size)
        if not runtimes:
            return None
        return round(sum(runtimes) / len(runtimes), 2)

    @classmethod
    def active_schedules(
        cls, pipeline_uuids: Sequence[str] | None = None
    ) -> list[PipelineSchedule]:
        """Active schedules, optionally only of the given pipelines."""
        statement = select(cls).where(cls.status == ScheduleStatus.ACTIVE.value)
        if pipeline_uuids is not None:
            statement = statement.where(cls.pipeline_uuid.in_(list(pipeline_uuids)))
        statement = statement.order_by(cls.id)
        return list(cls.session().scalars(statement, execution_options={"populate_existing": True}))

    # ----- time ----------------------------------------------------------------------------

    def current_execution_date(self, now: datetime | None = None) -> datetime | None:
        """The execution date a run created now (or at ``now``) would get."""
        now = to_utc(now) if now is not None else utcnow()
        runtimes = self.runtime_history() if self.landing_time_enabled() else ()
        return timing.current_execution_date(self.timing, now, runtimes)

    def next_execution_date(self, now: datetime | None = None) -> datetime | None:
        """The execution date of the period after the current one (None if not periodic)."""
        now = to_utc(now) if now is not None else utcnow()
        runtimes = self.runtime_history() if self.landing_time_enabled() else ()
        return timing.next_execution_date(self.timing, now, runtimes)

    def should_schedule(self, now: datetime | None = None) -> ScheduleDecision:
        """Whether a run is due now (or at ``now``). Truthy/falsy; ``.reason`` says why."""
        now = to_utc(now) if now is not None else utcnow()
        if self.schedule_type != ScheduleType.TIME:
            return ScheduleDecision(
                False,
                None,
                f"{self.schedule_type!s} schedules fire on events or API calls, not on time",
            )
        settings = self.get_settings()

        def run_exists_for(execution_date: datetime) -> bool:
            found = self.session().scalar(
                select(PipelineRun.id)
                .where(
                    PipelineRun.pipeline_schedule_id == self.id,
                    PipelineRun.execution_date == execution_date,
                )
                .limit(1)
            )
            return found is not None

        return timing.decide(
            self.timing,
            now,
            status=str(self.status),
            create_initial_pipeline_run=bool(settings["create_initial_pipeline_run"]),
            run_count=self.pipeline_runs_count,
            last_run_status=None
            if self.last_pipeline_run_status is None
            else str(self.last_pipeline_run_status),
            run_exists_for=run_exists_for,
            runtimes=self.runtime_history() if self.landing_time_enabled() else (),
        )


@event.listens_for(PipelineSchedule, "before_update")
def _reevaluate_when_timing_changes(_mapper: Any, _connection: Any, target: Any) -> None:
    # Whatever path changed the schedule (service, direct attribute assignment, triggers.yaml
    # sync), the scheduler must look at it again: its next due time may have moved.
    state = inspect(target)
    if any(state.attrs[name].history.has_changes() for name in TIMING_ATTRIBUTES):
        target.next_due_at = EVALUATE_NOW


class PipelineRun(Base):
    """One execution of a pipeline for one ``execution_date``."""

    __tablename__ = "pipeline_run"
    __table_args__ = (
        Index("ix_pipeline_run_schedule_execution_date", "pipeline_schedule_id", "execution_date"),
        Index("ix_pipeline_run_status_created", "status", "created_at"),
        Index("ix_pipeline_run_status_owner", "status", "owner"),
        Index("ix_pipeline_run_finalized_status", "finalized_at", "status"),
    )

    PipelineRunStatus: ClassVar[type[_RunStatus]] = _RunStatus

    pipeline_schedule_id: Mapped[int | None] = mapped_column(
        ForeignKey("pipeline_schedule.id", ondelete="CASCADE"), index=True
    )
    pipeline_uuid: Mapped[str] = mapped_column(String(255), index=True, nullable=False)
    execution_date: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    status: Mapped[_RunStatus] = mapped_column(
        StrEnumColumn(_RunStatus), nullable=False, default=_RunStatus.INITIAL
    )
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    variables: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    event_variables: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    backfill_id: Mapped[int | None] = mapped_column(
        ForeignKey("backfill.id", ondelete="CASCADE"), index=True
    )
    sla_breached: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    #: One run per key: ``schedule:<id>:<execution date>`` for scheduled periods, ``backfill:...``
    #: for backfill dates, ``manual:<uuid>`` for hand-made runs (or the caller's idempotency key).
    run_key: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    #: Who executes the run: a scheduler instance (``sched:...``) or a process executing it
    #: directly (``direct:<host>:<pid>``). None while nobody has taken it.
    owner: Mapped[str | None] = mapped_column(String(128))
    #: Set anew each time an executor claims the run (``initial → running``); every later write
    #: of that executor is fenced on it, so an executor that stalled while its run was handed
    #: to another can never overwrite the new attempt.
    claim_token: Mapped[str | None] = mapped_column(String(32))
    #: When the scheduler handled the run's end (notifications, ``@once``, backfill status).
    finalized_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: How often the run was started again after whatever executed it died.
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    pipeline_schedule: Mapped[PipelineSchedule | None] = relationship()
    backfill: Mapped[Backfill | None] = relationship(back_populates="pipeline_runs")

    def __repr__(self) -> str:
        return (
            f"PipelineRun(id={self.id}, pipeline_uuid={self.pipeline_uuid!r}, "
            f"execution_date={self.execution_date}, status={self.status!s})"
        )

    @classmethod
    def create(cls, **kwargs: Any) -> PipelineRun:
        """Create a run by hand (Mage's ``PipelineRun.create``); ``execution_date`` defaults
        to now."""
        from mage_nb_sched.service import runs

        return runs.create_run(**kwargs)

    def update(self, **kwargs: Any) -> PipelineRun:
        """Change a run's status, timestamps, variables or metrics."""
        from mage_nb_sched.service import runs

        return runs.update_run(self, **kwargs)

    async def execute(self) -> Any:
        """Execute this run now, here, on a fresh kernel (``await run.execute()`` in a notebook
        cell). Returns the runner's outcome; the run's status, block runs, outputs and logs are
        stored as for scheduled runs."""
        from mage_nb_sched.execution.runner import run_with_fresh_kernel

        outcome = await run_with_fresh_kernel(current_store(), self.id)
        self.refresh()
        return outcome

    def delete(self) -> None:
        """Delete the run and its block runs."""
        from mage_nb_sched.service import runs

        runs.delete_run(self)

    @property
    def execution_partition(self) -> str:
        """``<schedule id>/<execution date %Y%m%dT%H%M%S>`` (``_%f`` appended when the date has
        microseconds, so two hand-made runs in one second never share a folder)."""
        stamp = self.execution_date.strftime("%Y%m%dT%H%M%S")
        if self.execution_date.microsecond:
            stamp += self.execution_date.strftime("_%f")
        owner = "manual" if self.pipeline_schedule_id is None else self.pipeline_schedule_id
        return f"{owner}/{stamp}"

    @property
    def passed_sla(self) -> bool:
        """True while the run is within its schedule's SLA (the seed's meaning)."""
        return not self.sla_breached

    @property
    def block_runs(self) -> list[BlockRun]:
        """The run's block runs in creation order (read fresh)."""
        statement = (
            select(BlockRun).where(BlockRun.pipeline_run_id == self.id).order_by(BlockRun.id)
        )
        return list(
            self.session().scalars(statement, execution_options={"populate_existing": True})
        )

    @property
    def block_runs_count(self) -> int:
        return (
            self.session().scalar(
                select(func.count(BlockRun.id)).where(BlockRun.pipeline_run_id == self.id)
            )
            or 0
        )

    # ----- artifacts of an executed run -------------------------------------------------

    def _project_dir(self) -> Any:
        from mage_nb_sched.core.project import resolve_project_dir

        return current_store().project_dir or resolve_project_dir()

    def get_output(self, block_uuid: str) -> Any:
        """The value block ``block_uuid`` returned in this run (DataFrames come back as
        DataFrames)."""
        from mage_nb_sched.core.project import data_dir
        from mage_nb_sched.execution.variables import load_output, output_dir

        directory = output_dir(
            data_dir(self._project_dir()), self.pipeline_uuid, self.execution_partition, block_uuid
        )
        return load_output(directory)

    def logs(self, block_uuid: str) -> str:
        """The log of one block of this run: stdout, stderr and the error with its traceback."""
        from mage_nb_sched.core.errors import NotFoundError
        from mage_nb_sched.store.artifacts import block_log_path

        path = block_log_path(
            self._project_dir(), self.pipeline_uuid, self.execution_partition, block_uuid
        )
        if not path.is_file():
            known = [block.block_uuid for block in self.block_runs]
            raise NotFoundError(
                f"block_uuid={block_uuid!r}: run {self.id} has no log for it. "
                f"Blocks of this run: {', '.join(known) or '(none yet — has the run executed?)'}."
            )
        return path.read_text(encoding="utf-8")

    @property
    def executed_notebook_path(self) -> str | None:
        """Path of the executed notebook (with outputs), once the run has executed."""
        value = (self.metrics or {}).get("executed_notebook")
        return None if value is None else str(value)

    @property
    def runtime(self) -> timedelta | None:
        """Creation → completion (Mage's runtime measure), None until completed."""
        if self.completed_at is None:
            return None
        return self.completed_at - self.created_at


class BlockRun(Base):
    """One execution of one block (code cell) in a pipeline run."""

    __tablename__ = "block_run"
    __table_args__ = (Index("ix_block_run_run_block", "pipeline_run_id", "block_uuid"),)

    BlockRunStatus: ClassVar[type[_BlockStatus]] = _BlockStatus

    pipeline_run_id: Mapped[int] = mapped_column(
        ForeignKey("pipeline_run.id", ondelete="CASCADE"), index=True, nullable=False
    )
    block_uuid: Mapped[str] = mapped_column(String(255), nullable=False)
    status: Mapped[_BlockStatus] = mapped_column(
        StrEnumColumn(_BlockStatus), nullable=False, default=_BlockStatus.INITIAL
    )
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    def __repr__(self) -> str:
        return f"BlockRun(id={self.id}, block_uuid={self.block_uuid!r}, status={self.status!s})"


class Backfill(Base):
    """Runs of a schedule's pipeline for every date in a historical range."""

    __tablename__ = "backfill"

    Status = BackfillStatus
    IntervalType = BackfillIntervalType

    name: Mapped[str] = mapped_column(String(255), nullable=False)
    pipeline_uuid: Mapped[str] = mapped_column(String(255), index=True, nullable=False)
    pipeline_schedule_id: Mapped[int | None] = mapped_column(
        ForeignKey("pipeline_schedule.id", ondelete="CASCADE"), index=True
    )
    start_datetime: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    end_datetime: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    interval_type: Mapped[BackfillIntervalType] = mapped_column(
        StrEnumColumn(BackfillIntervalType), nullable=False
    )
    interval_units: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    status: Mapped[BackfillStatus] = mapped_column(
        StrEnumColumn(BackfillStatus), nullable=False, default=BackfillStatus.INITIAL
    )
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    variables: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    settings: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    pipeline_schedule: Mapped[PipelineSchedule | None] = relationship(back_populates="backfills")
    pipeline_runs: Mapped[list[PipelineRun]] = relationship(
        back_populates="backfill", passive_deletes=True
    )

    def __repr__(self) -> str:
        return (
            f"Backfill(id={self.id}, name={self.name!r}, {self.start_datetime} → "
            f"{self.end_datetime} every {self.interval_units} {self.interval_type!s}, "
            f"status={self.status!s})"
        )

    @classmethod
    def create(cls, **kwargs: Any) -> Backfill:
        """Validate and insert a backfill (no runs yet; see :meth:`start`)."""
        from mage_nb_sched.service import backfills

        return backfills.create_backfill(**kwargs)

    def update(self, **kwargs: Any) -> Backfill:
        from mage_nb_sched.service import backfills

        return backfills.update_backfill(self, **kwargs)

    def delete(self) -> None:
        from mage_nb_sched.service import backfills

        backfills.delete_backfill(self)

    def preview_run_dates(self) -> list[dict[str, Any]]:
        """One dict per run: ``execution_date`` and its ``interval_*``, ``ds``, ``hr`` variables."""
        from mage_nb_sched.service import backfills

        return backfills.preview_run_dates(self)

    def start(self) -> list[PipelineRun]:
        """Create every run of the range (idempotently) and mark the backfill running."""
        from mage_nb_sched.service import backfills

        return backfills.start_backfill(self)

    def cancel(self) -> Backfill:
        """Cancel the runs that have not finished and mark the backfill cancelled."""
        from mage_nb_sched.service import backfills

        return backfills.cancel_backfill(self)

    def progress(self) -> dict[str, int]:
        """Counts of this backfill's runs: total, done, failed, cancelled, running, initial."""
        from mage_nb_sched.service import backfills

        return backfills.backfill_progress(self)


scheduler_lease = Table(
    "scheduler_lease",
    Base.metadata,
    Column("name", String(255), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("details", JSON),
)
"""Leases: ``leader`` (the one active scheduler) and ``instance:<id>`` (each live scheduler's
heartbeat, so runs of a dead one can be found)."""


class EventMatcher(Base):
    """Which events fire which event schedules."""

    __tablename__ = "event_matcher"

    name: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    event_type: Mapped[str] = mapped_column(String(255), nullable=False, index=True)
    pattern: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    pipeline_schedules: Mapped[list[PipelineSchedule]] = relationship(
        secondary=pipeline_schedule_event_matcher_association,
        back_populates="event_matchers",
    )


__all__ = [
    "Backfill",
    "Base",
    "BlockRun",
    "EventMatcher",
    "PipelineRun",
    "PipelineSchedule",
    "ScheduleInterval",
]
