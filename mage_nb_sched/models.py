"""Mage's model API (``PipelineSchedule``, ``PipelineRun``, ``BlockRun``, ``Backfill``) as a
front end: ORM classes mapped onto the Core tables of :mod:`mage_nb_sched.store.schema`.

Every rule and validation lives in :mod:`mage_nb_sched.service`; the methods here are the
Mage-shaped entry points that call it on the *current* store (:func:`use_store`, else the
project's default). Nothing below the front ends imports this module.

Reads never write: each read uses a short session of its own (a fresh snapshot, so a notebook
sees the scheduler's updates at once), and objects come back detached — holding one holds no
session or connection. Values assigned directly (``schedule.settings = {...}``) are validated on
assignment and saved by ``save()`` or the next ``update()`` (as in Mage's docs, where
``schedule.settings = {...}`` is followed by ``await schedule.update(settings=...)``).
"""

from __future__ import annotations

import enum as _enum
import functools
from collections.abc import Callable, Generator, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, TypeVar

from sqlalchemy import func, inspect, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Query, Session, validates
from sqlalchemy.orm.attributes import set_committed_value

from mage_nb_sched.core import timing
from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.core.datetimes import to_utc
from mage_nb_sched.core.enums import (
    BackfillIntervalType,
    BackfillStatus,
    BlockRunStatus,
    PipelineRunStatus,
    ScheduleInterval,
    ScheduleStatus,
    ScheduleType,
)
from mage_nb_sched.core.errors import ValidationError
from mage_nb_sched.core.partitions import execution_partition
from mage_nb_sched.core.settings import with_defaults
from mage_nb_sched.core.timing import ScheduleDecision, ScheduleTiming
from mage_nb_sched.service import backfills as backfill_service
from mage_nb_sched.service import runs as run_service
from mage_nb_sched.service import schedules as schedule_service
from mage_nb_sched.service.fields import SCHEDULE_VALUE_CHECKS
from mage_nb_sched.service.records import Record, RunRecord, from_row
from mage_nb_sched.store import schema
from mage_nb_sched.store.engine import Store, current_store, store_error

# Module-level names for the enums that the model classes also expose as nested attributes
# (``PipelineRun.PipelineRunStatus`` as in Mage), so annotations inside the classes resolve.
_RunStatus = PipelineRunStatus
_BlockStatus = BlockRunStatus

M = TypeVar("M", bound="Base")
F = TypeVar("F", bound=Callable[..., Any])


def _store_errors(method: F) -> F:
    """Database trouble (read-only, locked past the busy timeout, full disk) reaches the user of
    the Mage API as a :class:`~mage_nb_sched.core.errors.StoreError` that says what to do, not as
    a raw SQLAlchemy traceback."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except OperationalError as err:
            raise store_error(err, current_store()) from err

    return wrapper  # type: ignore[return-value]


def read_session() -> Session:
    """A new session on the current store for one read. Objects it loads stay usable after it is
    closed (they are detached); it never writes."""
    return current_store().new_session()


def fresh_session() -> Session:
    """Kept for callers of the old name: a new read session (see :func:`read_session`)."""
    return read_session()


class ModelQuery(Query[Any]):
    """Mage's ``Model.query``: a legacy ``Query`` on a session of its own (a fresh snapshot);
    ``get`` always reads the row anew.

    Each execution fetches its rows and closes the session at once, so a caller that polls
    ``PipelineRun.query.get(id)`` never holds a connection (or a read snapshot) in between."""

    def get(self, ident: Any) -> Any:
        entity: Any = self.column_descriptions[0]["entity"]
        try:
            return self.session.get(entity, ident, populate_existing=True)
        finally:
            self.session.close()

    def _then_close(self, method: str, *args: Any) -> Any:
        try:
            return getattr(super(), method)(*args)
        finally:
            self.session.close()

    def all(self) -> list[Any]:
        return self._then_close("all")  # type: ignore[no-any-return]

    def first(self) -> Any:
        return self._then_close("first")

    def one(self) -> Any:
        return self._then_close("one")

    def one_or_none(self) -> Any:
        return self._then_close("one_or_none")

    def scalar(self) -> Any:
        return self._then_close("scalar")

    def count(self) -> int:
        return self._then_close("count")  # type: ignore[no-any-return]

    def __iter__(self) -> Any:
        return iter(self.all())


class _QueryProperty:
    def __get__(self, instance: object, owner: type[Any]) -> ModelQuery:
        return ModelQuery(owner, session=read_session()).populate_existing()


def _now(now: Any) -> datetime:
    """``now`` for the time methods: a datetime (naive = UTC), or the clock when omitted."""
    if now is None:
        return utcnow()
    if not isinstance(now, datetime):
        raise ValidationError(
            "now",
            now,
            "expected a datetime",
            "Use e.g. now=datetime(2024, 1, 1, tzinfo=timezone.utc), or leave it out for the "
            "current time.",
        )
    return to_utc(now)


class Base(DeclarativeBase):
    """Declarative base with Mage's ``BaseModel`` conveniences."""

    metadata = schema.metadata
    # Lets plain (non-column) instance attributes such as ``PipelineSchedule.token`` exist.
    __allow_unmapped__ = True

    #: ``Model.query.get(id)``, ``Model.query.filter_by(...).all()`` as in Mage.
    query: ClassVar[ModelQuery] = _QueryProperty()  # type: ignore[assignment]

    id: Mapped[int]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    def __await__(self) -> Generator[Any, None, Any]:
        # ``await schedule.update(...)`` (as in Mage's docs) resolves to the model itself.
        return _resolved(self).__await__()

    @classmethod
    def session(cls) -> Session:
        """A new read session on the current store (the caller closes it)."""
        return read_session()

    @classmethod
    def _store(cls) -> Store:
        return current_store()

    @classmethod
    def _load(cls: type[M], row_id: int) -> M:
        with read_session() as session:
            loaded = session.get(cls, row_id)
        assert loaded is not None, f"{cls.__name__} {row_id} vanished"
        return loaded

    @classmethod
    def _get(cls: type[M], row_id: int | None) -> M | None:
        """The row with ``row_id`` read fresh (detached), or None for no id or no row."""
        if row_id is None:
            return None
        with read_session() as session:
            return session.get(cls, row_id)

    @classmethod
    def _load_all(cls: type[M], statement: Any) -> list[M]:
        with read_session() as session:
            return list(session.scalars(statement))

    def _adopt(self, record: Record) -> None:
        """Take the stored values of ``record`` as this object's (no pending change left)."""
        for column in self.__table__.columns:
            if hasattr(record, column.key):
                set_committed_value(self, column.key, getattr(record, column.key))

    def _pending(self) -> dict[str, Any]:
        """Values assigned directly to this object and not saved yet."""
        state = inspect(self)
        return {
            column.key: getattr(self, column.key)
            for column in self.__table__.columns
            if state.attrs[column.key].history.has_changes()
        }

    def refresh(self: M) -> M:
        """Reload this object's columns from the database and return it."""
        fresh = type(self)._load(self.id)
        for column in self.__table__.columns:
            set_committed_value(self, column.key, getattr(fresh, column.key))
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


pipeline_schedule_event_matcher_association = schema.pipeline_schedule_event_matcher_association
EVALUATE_NOW = schema.EVALUATE_NOW
NEVER = schema.NEVER
TIMING_ATTRIBUTES = schema.TIMING_ATTRIBUTES


class PipelineSchedule(Base):
    """A trigger: when (time/cron), on what event, or by which API token a notebook runs."""

    __table__ = schema.pipeline_schedule

    name: Mapped[str]
    description: Mapped[str | None]
    pipeline_uuid: Mapped[str]
    schedule_type: Mapped[ScheduleType]
    schedule_interval: Mapped[str | None]
    start_time: Mapped[datetime | None]
    status: Mapped[ScheduleStatus]
    last_enabled_at: Mapped[datetime | None]
    variables: Mapped[dict[str, Any] | None]
    sla: Mapped[int | None]
    settings: Mapped[dict[str, Any] | None]
    token_hash: Mapped[str | None]
    token_hint: Mapped[str | None]
    #: True when the schedule is defined in ``<notebook stem>.triggers.yaml`` (synced both ways).
    in_code: Mapped[bool]
    #: When the ``triggers.yaml`` that defined the schedule disappeared: the schedule is kept,
    #: inactive, with its runs, until the file returns (None otherwise).
    orphaned_at: Mapped[datetime | None]
    #: When the scheduler next has to look at this schedule (its next run's creation time;
    #: :data:`EVALUATE_NOW` after a change, :data:`NEVER` while waiting for a run to finish).
    next_due_at: Mapped[datetime]

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
    @_store_errors
    def create(cls, **kwargs: Any) -> PipelineSchedule:
        """Validate and insert a schedule (see README: every field and setting)."""
        record = schedule_service.create_schedule(cls._store(), **kwargs)
        schedule = cls._load(record.id)
        schedule.token = record.token
        return schedule

    @_store_errors
    def update(self, **kwargs: Any) -> PipelineSchedule:
        """Validate and apply changes (and any values assigned directly since the last save).
        The result can be awaited (``await schedule.update()``)."""
        values = {**self._pending(), **kwargs}
        values.pop("token_hash", None)
        values.pop("token_hint", None)
        values.pop("next_due_at", None)
        record = schedule_service.update_schedule(self._store(), self.id, **values)
        self._adopt(record)
        if record.token is not None:
            self.token = record.token
        return self

    def save(self) -> PipelineSchedule:
        """Save values assigned directly to the object (validated as ``update`` does)."""
        return self.update()

    @_store_errors
    def delete(self) -> None:
        """Delete the schedule with its runs, block runs and backfills."""
        schedule_service.delete_schedule(self._store(), self.id)

    @_store_errors
    def rotate_token(self) -> str:
        """Replace the API token; returns the new clear-text token (shown once)."""
        record = schedule_service.rotate_token(self._store(), self.id)
        self._adopt(record)
        assert record.token is not None
        self.token = record.token
        return record.token

    def check_token(self, token: str) -> bool:
        """Whether ``token`` is this schedule's API token (constant-time comparison)."""
        from mage_nb_sched.core.tokens import verify_token

        return verify_token(token, self.token_hash)

    # ----- settings ------------------------------------------------------------------------

    def get_settings(self) -> dict[str, Any]:
        """Settings with defaults filled in."""
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
        return self.timing.landing_time_enabled

    @property
    def timing(self) -> ScheduleTiming:
        """The schedule's time facts for :mod:`mage_nb_sched.core.timing`."""
        return schedule_service.timing_of(self)

    # ----- related rows (read fresh; never lazy loads on a closed session) -------------------

    @property
    def backfills(self) -> list[Backfill]:
        """The schedule's backfills, oldest first."""
        return Backfill._load_all(
            select(Backfill).where(Backfill.pipeline_schedule_id == self.id).order_by(Backfill.id)
        )

    @property
    def event_matchers(self) -> list[EventMatcher]:
        """The event matchers that fire this schedule."""
        link = pipeline_schedule_event_matcher_association
        return EventMatcher._load_all(
            select(EventMatcher)
            .join(link, link.c.event_matcher_id == EventMatcher.id)
            .where(link.c.pipeline_schedule_id == self.id)
            .order_by(EventMatcher.id)
        )

    # ----- runs ----------------------------------------------------------------------------

    @property
    def pipeline_runs(self) -> list[PipelineRun]:
        """All runs of this schedule, oldest first (read fresh each time)."""
        return PipelineRun._load_all(
            select(PipelineRun)
            .where(PipelineRun.pipeline_schedule_id == self.id)
            .order_by(PipelineRun.id)
        )

    @property
    def pipeline_runs_count(self) -> int:
        return schedule_service.schedule_stats(self._store(), self.id).pipeline_runs_count

    @property
    def pipeline_in_progress_runs_count(self) -> int:
        """Runs that are ``initial`` or ``running``."""
        stats = schedule_service.schedule_stats(self._store(), self.id)
        return stats.pipeline_in_progress_runs_count

    @property
    def last_pipeline_run_status(self) -> PipelineRunStatus | None:
        """Status of the most recently created run (None without runs)."""
        return schedule_service.schedule_stats(self._store(), self.id).last_pipeline_run_status

    def recently_completed_pipeline_runs(
        self, pipeline_run: PipelineRun | None = None, sample_size: int | None = None
    ) -> list[PipelineRun]:
        """Completed runs, newest execution date first (at most ``sample_size``)."""
        statement = select(PipelineRun).where(
            PipelineRun.pipeline_schedule_id == self.id,
            PipelineRun.status == PipelineRunStatus.COMPLETED.value,
        )
        if pipeline_run is not None:
            statement = statement.where(PipelineRun.id != pipeline_run.id)
        statement = statement.order_by(PipelineRun.execution_date.desc(), PipelineRun.id.desc())
        if sample_size:
            statement = statement.limit(sample_size)
        return PipelineRun._load_all(statement)

    def runtime_history(
        self, pipeline_run: PipelineRun | None = None, sample_size: int | None = None
    ) -> list[float]:
        """Runtimes in seconds (creation → completion) of up to ``sample_size`` (7) recent runs."""
        record = None if pipeline_run is None else pipeline_run.record()
        return schedule_service.runtime_history(
            self._store(), self.id, run=record, sample_size=sample_size
        )

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
        return cls._load_all(statement.order_by(cls.id))

    # ----- time ----------------------------------------------------------------------------

    def current_execution_date(self, now: datetime | None = None) -> datetime | None:
        """The execution date a run created now (or at ``now``) would get."""
        return schedule_service.current_execution_date(self._store(), self, _now(now))

    def next_execution_date(self, now: datetime | None = None) -> datetime | None:
        """The execution date of the period after the current one (None if not periodic)."""
        return schedule_service.next_execution_date(self._store(), self, _now(now))

    def should_schedule(self, now: datetime | None = None) -> ScheduleDecision:
        """Whether a run is due now (or at ``now``). Truthy/falsy; ``.reason`` says why."""
        return schedule_service.should_schedule(self._store(), self, _now(now))


class PipelineRun(Base):
    """One execution of a pipeline for one ``execution_date``."""

    __table__ = schema.pipeline_run

    PipelineRunStatus: ClassVar[type[_RunStatus]] = _RunStatus

    pipeline_schedule_id: Mapped[int | None]
    pipeline_uuid: Mapped[str]
    execution_date: Mapped[datetime]
    status: Mapped[_RunStatus]
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    variables: Mapped[dict[str, Any] | None]
    event_variables: Mapped[dict[str, Any] | None]
    metrics: Mapped[dict[str, Any] | None]
    backfill_id: Mapped[int | None]
    sla_breached: Mapped[bool]
    #: One run per key: ``schedule:<id>:<execution date>`` for scheduled periods, ``backfill:...``
    #: for backfill dates, ``manual:<uuid>`` for hand-made runs (or the caller's idempotency key).
    run_key: Mapped[str]
    #: Who executes the run: a scheduler instance (``sched:...``) or a process executing it
    #: directly (``direct:<host>:<pid>``). None while nobody has taken it.
    owner: Mapped[str | None]
    #: Set anew each time an executor claims the run; later writes of that executor are fenced
    #: on it.
    claim_token: Mapped[str | None]
    #: When the scheduler handled the run's end (notifications, ``@once``, backfill status).
    finalized_at: Mapped[datetime | None]
    #: How often the run was started again after whatever executed it died.
    attempts: Mapped[int]

    def __repr__(self) -> str:
        return (
            f"PipelineRun(id={self.id}, pipeline_uuid={self.pipeline_uuid!r}, "
            f"execution_date={self.execution_date}, status={self.status!s})"
        )

    def record(self) -> RunRecord:
        """This run as a plain service record."""
        return from_row(RunRecord, self)

    @classmethod
    @_store_errors
    def create(cls, **kwargs: Any) -> PipelineRun:
        """Create a run by hand (Mage's ``PipelineRun.create``); ``execution_date`` defaults
        to now."""
        record = run_service.create_run(cls._store(), **kwargs)
        return cls._load(record.id)

    @_store_errors
    def update(self, **kwargs: Any) -> PipelineRun:
        """Change a run's status, timestamps, variables or metrics (status changes follow the
        run state machine)."""
        values = {**self._pending(), **kwargs}
        record = run_service.update_run(self._store(), self.id, **values)
        self._adopt(record)
        return self

    async def execute(self) -> Any:
        """Execute this run now, here, on a fresh kernel (``await run.execute()`` in a notebook
        cell). Returns the runner's outcome; the run's status, block runs, outputs and logs are
        stored as for scheduled runs."""
        from mage_nb_sched.execution.runner import run_with_fresh_kernel

        outcome = await run_with_fresh_kernel(self._store(), self.id)
        self.refresh()
        return outcome

    @_store_errors
    def delete(self) -> None:
        """Delete the run and its block runs."""
        run_service.delete_run(self._store(), self.id)

    @property
    def pipeline_schedule(self) -> PipelineSchedule | None:
        """The run's schedule (None for a run made without one)."""
        return PipelineSchedule._get(self.pipeline_schedule_id)

    @property
    def backfill(self) -> Backfill | None:
        """The backfill that made this run, if any."""
        return Backfill._get(self.backfill_id)

    @property
    def execution_partition(self) -> str:
        """``<schedule id>/<execution date %Y%m%dT%H%M%S>`` (``_%f`` appended when the date has
        microseconds, so two hand-made runs in one second never share a folder)."""
        return execution_partition(self.pipeline_schedule_id, self.execution_date)

    @property
    def passed_sla(self) -> bool:
        """True while the run is within its schedule's SLA (the seed's meaning)."""
        return not self.sla_breached

    @property
    def block_runs(self) -> list[BlockRun]:
        """The run's block runs in creation order (read fresh)."""
        return BlockRun._load_all(
            select(BlockRun).where(BlockRun.pipeline_run_id == self.id).order_by(BlockRun.id)
        )

    @property
    def block_runs_count(self) -> int:
        with read_session() as session:
            count = session.scalar(
                select(func.count(BlockRun.id)).where(BlockRun.pipeline_run_id == self.id)
            )
        return int(count or 0)

    # ----- artifacts of an executed run -------------------------------------------------

    def _project_dir(self) -> Any:
        return schedule_service.project_dir_of(self._store())

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

    __table__ = schema.block_run

    BlockRunStatus: ClassVar[type[_BlockStatus]] = _BlockStatus

    pipeline_run_id: Mapped[int]
    block_uuid: Mapped[str]
    status: Mapped[_BlockStatus]
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    error: Mapped[str | None]
    metrics: Mapped[dict[str, Any] | None]

    def __repr__(self) -> str:
        return f"BlockRun(id={self.id}, block_uuid={self.block_uuid!r}, status={self.status!s})"


class Backfill(Base):
    """Runs of a schedule's pipeline for every date in a historical range."""

    __table__ = schema.backfill

    Status = BackfillStatus
    IntervalType = BackfillIntervalType

    name: Mapped[str]
    pipeline_uuid: Mapped[str]
    pipeline_schedule_id: Mapped[int | None]
    start_datetime: Mapped[datetime]
    end_datetime: Mapped[datetime]
    interval_type: Mapped[BackfillIntervalType]
    interval_units: Mapped[int]
    status: Mapped[BackfillStatus]
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    variables: Mapped[dict[str, Any] | None]
    settings: Mapped[dict[str, Any] | None]

    def __repr__(self) -> str:
        return (
            f"Backfill(id={self.id}, name={self.name!r}, {self.start_datetime} → "
            f"{self.end_datetime} every {self.interval_units} {self.interval_type!s}, "
            f"status={self.status!s})"
        )

    @classmethod
    @_store_errors
    def create(cls, **kwargs: Any) -> Backfill:
        """Validate and insert a backfill (no runs yet; see :meth:`start`)."""
        record = backfill_service.create_backfill(cls._store(), **kwargs)
        return cls._load(record.id)

    @_store_errors
    def update(self, **kwargs: Any) -> Backfill:
        """Change the backfill's name, variables or settings."""
        values = {**self._pending(), **kwargs}
        self._adopt(backfill_service.update_backfill(self._store(), self.id, **values))
        return self

    @_store_errors
    def delete(self) -> None:
        """Delete the backfill and its runs."""
        backfill_service.delete_backfill(self._store(), self.id)

    @property
    def pipeline_schedule(self) -> PipelineSchedule | None:
        """The backfill's schedule, if it has one."""
        return PipelineSchedule._get(self.pipeline_schedule_id)

    @property
    def pipeline_runs(self) -> list[PipelineRun]:
        """The backfill's runs, by execution date."""
        return PipelineRun._load_all(
            select(PipelineRun)
            .where(PipelineRun.backfill_id == self.id)
            .order_by(PipelineRun.execution_date)
        )

    def preview_run_dates(self) -> list[dict[str, Any]]:
        """One dict per run: ``execution_date`` and its ``interval_*``, ``ds``, ``hr`` variables."""
        return backfill_service.preview_run_dates(self._store(), self.id)

    @_store_errors
    def start(self) -> list[PipelineRun]:
        """Create every run of the range (idempotently) and mark the backfill running."""
        backfill_service.start_backfill(self._store(), self.id)
        self.refresh()
        return self.pipeline_runs

    @_store_errors
    def cancel(self) -> Backfill:
        """Cancel the runs that have not finished and mark the backfill cancelled."""
        self._adopt(backfill_service.cancel_backfill(self._store(), self.id))
        return self

    def progress(self) -> dict[str, int]:
        """Counts of this backfill's runs: total, done, failed, cancelled, running, initial."""
        return backfill_service.backfill_progress(self._store(), self.id)


class EventMatcher(Base):
    """Which events fire which event schedules."""

    __table__ = schema.event_matcher

    name: Mapped[str]
    event_type: Mapped[str]
    pattern: Mapped[dict[str, Any] | None]

    @property
    def pipeline_schedules(self) -> list[PipelineSchedule]:
        """The schedules this matcher fires."""
        link = pipeline_schedule_event_matcher_association
        return PipelineSchedule._load_all(
            select(PipelineSchedule)
            .join(link, link.c.pipeline_schedule_id == PipelineSchedule.id)
            .where(link.c.event_matcher_id == self.id)
            .order_by(PipelineSchedule.id)
        )


scheduler_lease = schema.scheduler_lease

__all__ = [
    "Backfill",
    "Base",
    "BlockRun",
    "EventMatcher",
    "PipelineRun",
    "PipelineSchedule",
    "ScheduleInterval",
]

_ = timing  # re-exported for callers that read ``models.timing`` (kept module attribute)
