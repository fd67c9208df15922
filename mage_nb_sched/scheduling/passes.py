"""The scheduler's steps, each one short transaction with ``now`` passed in.

A loop pass is: create the runs that are due, end runs that overran their timeout, flag SLA
breaches, pick the runs to start (within the concurrency limits), recover runs of dead
owners, and close finished runs (notifications, ``@once``, backfill status). Every step is
idempotent — running it twice with the same ``now`` changes nothing the second time — so a
pass repeated after a crash, or by a second scheduler, is harmless. Nothing here touches an
event loop or a kernel: :mod:`mage_nb_sched.scheduling.loop` drives these steps and the executor.

One bad row never stops the others (DESIGN §7). Every step handles each schedule, run and
backfill inside an error boundary: a row whose handling raises — a stored ``sla`` of 10**12, a
``settings`` JSON that is not an object, an unknown time zone, a cron string croniter rejects —
is logged (with the step and its id), skipped, and flagged in ``scheduler_problem``
(:func:`row_problems`, for the status API) until it passes the step again. Statements stay
batched: a batch that fails is done again row by row, each row in a savepoint, so the fast path
costs nothing extra. Errors of the database itself (locked, gone) are not a row's fault: they
still fail the step, and the loop retries the pass.

The queries use partial indexes that hold live runs only (``ix_pipeline_run_unfinished``,
``ix_pipeline_run_unfinalized``): a pass costs the same whatever the run history.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    and_,
    bindparam,
    delete,
    exists,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    SQLAlchemyError,
    StatementError,
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
from mage_nb_sched.core.errors import StoreError
from mage_nb_sched.core.partitions import execution_partition
from mage_nb_sched.core.project import data_dir
from mage_nb_sched.core.settings import with_defaults
from mage_nb_sched.scheduling.notifications import Notification
from mage_nb_sched.service.asynchronous import twin
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

log = logging.getLogger(__name__)

RUNS = schema.pipeline_run
SCHEDULES = schema.pipeline_schedule
BLOCKS = schema.block_run
BACKFILLS = schema.backfill
PROBLEMS = schema.scheduler_problem

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
#: A schedule that could not be planned, or a run that could not be closed, is tried again this
#: long after (a flagged row costs one attempt per minute, never one per pass).
PROBLEM_RETRY = timedelta(minutes=1)
#: Runs created in one pass that get an INFO line each; the others are logged at DEBUG, after
#: one INFO line with the count (a burst of 10,000 due schedules logs 21 lines, not 10,000).
LOG_CREATED_RUNS_MAX = 20
#: Newly flagged rows logged at WARNING (with the traceback) per step and call; the others are
#: counted in one more line, and each is at DEBUG.
LOG_PROBLEMS_MAX = 20
#: Longest ``error`` text kept with a flag.
ERROR_TEXT_MAX = 500

# The steps, as named in ``scheduler_problem.step`` (and in log lines).
STEP_CREATE = "create_due_runs"
STEP_TIMEOUTS = "enforce_timeouts"
STEP_SLAS = "check_slas"
STEP_STARTS = "plan_starts"
STEP_RECOVER = "recover_runs"
STEP_FINALIZE = "finalize_runs"
STEP_BACKFILLS = "roll_up_backfills"
STEP_RETENTION = "retention"
#: Steps that only look at runs still going: a run's flags of these go when the run is closed.
LIVE_RUN_STEPS = (STEP_TIMEOUTS, STEP_SLAS, STEP_STARTS, STEP_RECOVER)


def _unfinished_run() -> ColumnElement[bool]:
    """``pipeline_run.status IN ('initial', 'running')`` with the values inline: the term of the
    partial indexes ``ix_pipeline_run_unfinished`` / ``ix_pipeline_run_schedule_unfinished``,
    which a query uses only when it repeats the term literally (see the schema)."""
    return RUNS.c.status.in_(
        bindparam("unfinished", list(UNFINISHED), expanding=True, literal_execute=True, unique=True)
    )


# --------------------------------------------------------------------------------------------
# Rows that raise: the error boundary, the flags and the status API's reader
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowProblem:
    """A row a scheduler step skipped because handling it raised; it stays flagged until it
    passes the step again (or no longer needs it: the run finished, the row was deleted)."""

    step: str  # create_due_runs, enforce_timeouts, check_slas, plan_starts, recover_runs, ...
    row_kind: str  # "schedule", "run" or "backfill"
    row_id: int
    schedule_id: int | None  # the schedule to fix, where known
    error: str  # "ExceptionType: message"
    first_seen_at: datetime
    retry_at: datetime | None  # when the scheduler tries again; None: on every pass


_KIND_TABLES = {"schedule": SCHEDULES, "run": RUNS, "backfill": BACKFILLS}


def row_problems(store: Store) -> list[RowProblem]:
    """Every row the scheduler is skipping now, oldest first (for the ``status`` API). Flags of
    rows deleted meanwhile are left out. Read-only."""
    existing = {
        kind: exists().where(table.c.id == PROBLEMS.c.row_id)
        for kind, table in _KIND_TABLES.items()
    }
    still_there = or_(
        *(and_(PROBLEMS.c.row_kind == kind, found) for kind, found in existing.items())
    )
    statement = (
        select(PROBLEMS)
        .where(still_there)
        .order_by(PROBLEMS.c.first_seen_at, PROBLEMS.c.step, PROBLEMS.c.row_kind, PROBLEMS.c.row_id)
    )
    with store.engine.connect() as connection:
        rows = connection.execute(statement).all()
    return [
        RowProblem(
            step=row.step,
            row_kind=row.row_kind,
            row_id=int(row.row_id),
            schedule_id=None if row.schedule_id is None else int(row.schedule_id),
            error=row.error,
            first_seen_at=row.first_seen_at,
            retry_at=row.retry_at,
        )
        for row in rows
    ]


@dataclass(frozen=True)
class StoreStatus:
    """Who schedules for a store and what waits, as the store tells it (the ``status`` API):
    the ``leader`` lease, the live heartbeats, the runs queued and running, the flagged rows."""

    now: datetime
    #: The instance id in the ``leader`` lease (None: no scheduler ever led this store).
    leader: str | None
    #: When that lease ends unless renewed, and when it was last renewed.
    leader_expires_at: datetime | None
    leader_renewed_at: datetime | None
    #: Instance ids whose heartbeat has not expired at ``now``.
    live_instances: tuple[str, ...]
    #: Runs waiting to start (``initial``) and executing (``running``).
    queue_depth: int
    running: int
    problems: tuple[RowProblem, ...]
    #: The leader's last pass as its heartbeat tells it (None: not told yet, or an older
    #: scheduler that does not tell): when it began and how long it took (seconds).
    leader_last_pass_at: datetime | None = None
    leader_last_pass_seconds: float | None = None

    @property
    def leader_active(self) -> bool:
        """Whether a scheduler holds an unexpired leader lease at ``now``."""
        expires = self.leader_expires_at
        return self.leader is not None and expires is not None and _utc(expires) > self.now


def store_status(store: Store, now: datetime) -> StoreStatus:
    """The :class:`StoreStatus` at ``now``, in four read-only statements."""
    table = schema.scheduler_lease
    counts = (
        select(RUNS.c.status, func.count(RUNS.c.id))
        .where(_unfinished_run())
        .group_by(RUNS.c.status)
    )
    with store.engine.connect() as connection:
        leader = connection.execute(
            select(table.c.owner, table.c.expires_at, table.c.updated_at).where(
                table.c.name == leases.LEADER
            )
        ).first()
        live = sorted(leases.live_instances(connection, now))
        by_status = {status_value(row[0]): int(row[1]) for row in connection.execute(counts)}
        heartbeat = (
            None
            if leader is None
            else connection.execute(
                select(table.c.details).where(
                    table.c.name == leases.instance_lease_name(str(leader[0]))
                )
            ).scalar()
        )
    last_pass_at, last_pass_seconds = _last_pass(heartbeat)
    return StoreStatus(
        now=now,
        leader=None if leader is None else str(leader[0]),
        leader_expires_at=None if leader is None else _utc(leader[1]),
        leader_renewed_at=None if leader is None else _utc(leader[2]),
        live_instances=tuple(live),
        queue_depth=by_status.get(PipelineRunStatus.INITIAL.value, 0),
        running=by_status.get(PipelineRunStatus.RUNNING.value, 0),
        problems=tuple(row_problems(store)),
        leader_last_pass_at=last_pass_at,
        leader_last_pass_seconds=last_pass_seconds,
    )


def _last_pass(details: Any) -> tuple[datetime | None, float | None]:
    """``(last_pass_at, last_pass_seconds)`` of a heartbeat's details; ``(None, None)`` for
    anything else (no details, another scheduler's own keys, a value that does not parse)."""
    if not isinstance(details, dict):
        return None, None
    at, seconds = details.get("last_pass_at"), details.get("last_pass_seconds")
    try:
        when = _utc(datetime.fromisoformat(at)) if isinstance(at, str) else None
    except ValueError:
        when = None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return when, None
    return when, float(seconds)


astore_status = twin(store_status)
arow_problems = twin(row_problems)


def _is_row_problem(error: Exception, *, contained: bool) -> bool:
    """Whether ``error`` is the row's fault, so the row is skipped and the step goes on.

    A Python error while handling a row (an overflow, a bad type, an unknown zone or cron, a
    value the driver could not bind) is. The database failing (locked, gone, a missing table,
    a bug in a statement) is not: the step fails as a whole and the pass is tried again. A
    statement the database refused because of the row's values (out of range, a constraint) is
    the row's fault only ``contained`` in a savepoint: otherwise it spoiled the transaction."""
    if isinstance(error, StoreError):
        return False
    if isinstance(error, DBAPIError):
        return contained and isinstance(error, (DataError, IntegrityError))
    if isinstance(error, SQLAlchemyError):
        return isinstance(error, StatementError)  # raised binding a value: nothing was sent
    return True


def _describe(error: BaseException) -> str:
    """``Type: message``, capped. A statement's error is told by the driver's message alone:
    SQLAlchemy's text repeats the SQL and its parameters (``now`` among them), and a flag's text
    must stay the same while the row fails the same way (it is compared on every pass)."""
    cause = error.orig if isinstance(error, StatementError) and error.orig is not None else error
    text = f"{type(error).__name__}: {cause}"
    return text if len(text) <= ERROR_TEXT_MAX else text[: ERROR_TEXT_MAX - 3] + "..."


@dataclass
class _Failure:
    kind: str
    row_id: int
    schedule_id: int | None
    error: Exception
    retry_at: datetime | None

    @property
    def text(self) -> str:
        return _describe(self.error)


@dataclass
class _Guard:
    failed: bool = False


#: (row kind, row id)
_Key = tuple[str, int]


@dataclass
class _Flags:
    """What a step's flags need: rows to flag (new or changed) and flags to clear."""

    write: list[_Failure] = field(default_factory=list)
    clear: list[_Key] = field(default_factory=list)
    unchanged: list[_Failure] = field(default_factory=list)
    #: Of ``write``, the rows already flagged with the same error (only the retry time moves):
    #: logged at DEBUG, not again at WARNING.
    retried: set[_Key] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.write or self.clear)


class _Step:
    """The error boundary of one step in one call: which rows raised, which passed, and how
    the step's flags in ``scheduler_problem`` change.

    ``complete``: the step looked at every row it applies to, so any flag of a row that did
    not raise this time is cleared. Otherwise only rows that passed are cleared, plus flags of
    rows ``still_applies`` says the step is done with."""

    def __init__(
        self,
        name: str,
        now: datetime,
        *,
        complete: bool,
        still_applies: Callable[[Connection, list[_Key]], set[_Key]] | None = None,
    ) -> None:
        self.name = name
        self.now = now
        self.complete = complete
        self.still_applies = still_applies
        self.failed: dict[_Key, _Failure] = {}
        self.passed: set[_Key] = set()
        self._watch: set[_Key] | None = None

    @contextlib.contextmanager
    def row(
        self,
        kind: str,
        row_id: int,
        schedule_id: int | None = None,
        *,
        retry_at: datetime | None = None,
        savepoint: Connection | None = None,
    ) -> Iterator[_Guard]:
        """Handle one row: an exception that is the row's fault is recorded (the row is
        skipped, ``guard.failed``); any other propagates. With ``savepoint``, the row's
        statements run in a savepoint of that connection, undone if it raises."""
        guard = _Guard()
        key = (kind, int(row_id))
        try:
            if savepoint is not None:
                with savepoint.begin_nested():
                    yield guard
            else:
                yield guard
        except Exception as error:
            if not _is_row_problem(error, contained=savepoint is not None):
                raise
            guard.failed = True
            self.passed.discard(key)
            self.failed[key] = _Failure(kind, int(row_id), schedule_id, error, retry_at)
        else:
            if key not in self.failed:
                self.passed.add(key)

    def skip(
        self,
        kind: str,
        row_id: int,
        schedule_id: int | None,
        error: Exception,
        *,
        retry_at: datetime | None = None,
    ) -> bool:
        """For loops over many rows (a ``try`` costs nothing until a row raises): record that
        the row raised ``error`` and return True — or False if the error is not the row's fault
        (the caller re-raises it)."""
        if not _is_row_problem(error, contained=False):
            return False
        key = (kind, int(row_id))
        self.passed.discard(key)
        self.failed[key] = _Failure(kind, int(row_id), schedule_id, error, retry_at)
        return True

    def watch(self, connection: Connection) -> None:
        """Read which rows the step has flags on, so :meth:`ok` records only those (a burst
        of 10,000 rows that pass allocates nothing for them)."""
        self._watch = set(self._existing(connection))

    def ok(self, kind: str, row_id: int) -> None:
        """The row passed the step (its flag, if any, is cleared)."""
        watched = self._watch
        if watched is None or (watched and (kind, row_id) in watched):
            self.passed.add((kind, int(row_id)))

    def _existing(self, connection: Connection) -> dict[_Key, Any]:
        return {
            (row.row_kind, int(row.row_id)): row
            for row in connection.execute(_FLAGS_OF_STEP, {"step": self.name})
        }

    def has_failed(self, kind: str, row_id: Any) -> bool:
        return row_id is not None and (kind, int(row_id)) in self.failed

    def changes(self, connection: Connection) -> _Flags:
        """Compare this call's outcome with the step's flags (one read of a tiny table)."""
        existing = self._existing(connection)
        flags = _Flags()
        for key, failure in self.failed.items():
            old = existing.get(key)
            if old is None or old.error != failure.text:
                flags.write.append(failure)
            elif old.retry_at != failure.retry_at:
                flags.write.append(failure)
                flags.retried.add(key)
            else:
                flags.unchanged.append(failure)
        unseen: list[_Key] = []
        for key in existing:
            if key in self.failed:
                continue
            if self.complete or key in self.passed:
                flags.clear.append(key)
            else:
                unseen.append(key)
        if unseen and self.still_applies is not None:
            applies = self.still_applies(connection, unseen)
            flags.clear.extend(key for key in unseen if key not in applies)
        return flags

    def apply(self, connection: Connection, flags: _Flags) -> None:
        """Write ``flags`` (in the caller's write transaction) and log what changed."""
        for failure in flags.unchanged:
            log.debug(
                "%s: %s %s still skipped: %s", self.name, failure.kind, failure.row_id, failure.text
            )
        if flags.clear:
            for kind in {kind for kind, _ in flags.clear}:
                ids = [row_id for row_kind, row_id in flags.clear if row_kind == kind]
                for chunk in _chunks(ids):
                    connection.execute(
                        delete(PROBLEMS).where(
                            PROBLEMS.c.step == self.name,
                            PROBLEMS.c.row_kind == kind,
                            PROBLEMS.c.row_id.in_(chunk),
                        )
                    )
            for kind, row_id in flags.clear:
                log.info(
                    "%s: %s %s no longer raises (handled, or done with the step): flag cleared",
                    self.name,
                    kind,
                    row_id,
                )
        if flags.write:
            _write_problems(
                connection,
                [
                    {
                        "step": self.name,
                        "row_kind": failure.kind,
                        "row_id": failure.row_id,
                        "schedule_id": failure.schedule_id,
                        "error": failure.text,
                        "first_seen_at": self.now,
                        "retry_at": failure.retry_at,
                    }
                    for failure in flags.write
                ],
            )
            news = [f for f in flags.write if (f.kind, f.row_id) not in flags.retried]
            for failure in flags.write:
                if (failure.kind, failure.row_id) in flags.retried:
                    log.debug(
                        "%s: %s %s raised again (%s); next try at %s",
                        self.name,
                        failure.kind,
                        failure.row_id,
                        failure.text,
                        failure.retry_at,
                    )
            for index, failure in enumerate(news):
                if index >= LOG_PROBLEMS_MAX:
                    log.debug(
                        "%s: skipped %s %s: %s",
                        self.name,
                        failure.kind,
                        failure.row_id,
                        failure.text,
                    )
                    continue
                of = (
                    f" (schedule {failure.schedule_id})"
                    if failure.schedule_id is not None and failure.kind != "schedule"
                    else ""
                )
                again = (
                    f"tried again at {failure.retry_at.isoformat()}"
                    if failure.retry_at is not None
                    else "tried again on every pass"
                )
                log.warning(
                    "%s: skipped %s %s%s, which raised %s; the other rows go on, it is flagged "
                    "(status API: scheduler row problems) and %s",
                    self.name,
                    failure.kind,
                    failure.row_id,
                    of,
                    failure.text,
                    again,
                    exc_info=failure.error,
                )
            if len(news) > LOG_PROBLEMS_MAX:
                log.warning(
                    "%s: %d more rows skipped and flagged (logged at DEBUG)",
                    self.name,
                    len(news) - LOG_PROBLEMS_MAX,
                )

    def settle(self, connection: Connection) -> None:
        """:meth:`changes` then :meth:`apply`, in the caller's write transaction."""
        flags = self.changes(connection)
        if flags or flags.unchanged:
            self.apply(connection, flags)


_FLAGS_OF_STEP = select(
    PROBLEMS.c.row_kind, PROBLEMS.c.row_id, PROBLEMS.c.error, PROBLEMS.c.retry_at
).where(PROBLEMS.c.step == bindparam("step"))


def _write_problems(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert or update flags (``first_seen_at`` kept). Two schedulers may flag the same row
    at once: an upsert, never a duplicate-key error."""
    dialect = connection.dialect.name
    if dialect in ("sqlite", "postgresql"):
        from sqlalchemy.dialects import postgresql, sqlite

        insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        statement = insert(PROBLEMS)
        statement = statement.on_conflict_do_update(
            index_elements=[PROBLEMS.c.step, PROBLEMS.c.row_kind, PROBLEMS.c.row_id],
            set_={
                "schedule_id": statement.excluded.schedule_id,
                "error": statement.excluded.error,
                "retry_at": statement.excluded.retry_at,
            },
        )
        connection.execute(statement, rows)
        return
    for row in rows:
        key = (PROBLEMS.c.step, PROBLEMS.c.row_kind, PROBLEMS.c.row_id)
        connection.execute(
            delete(PROBLEMS).where(tuple_(*key) == (row["step"], row["row_kind"], row["row_id"]))
        )
        connection.execute(PROBLEMS.insert().values(**row))


def _clear_run_flags(connection: Connection, steps: Iterable[str], run_ids: list[int]) -> None:
    """Drop flags of ``steps`` on runs that no longer need them (closed or deleted)."""
    for chunk in _chunks(run_ids):
        connection.execute(
            delete(PROBLEMS).where(
                PROBLEMS.c.step.in_(list(steps)),
                PROBLEMS.c.row_kind == "run",
                PROBLEMS.c.row_id.in_(chunk),
            )
        )


def _held_for_retry(step: str, row_id: Any, now: Any) -> ColumnElement[bool]:
    """The run ``row_id`` raised in ``step`` and waits for its retry time (correlated)."""
    return exists().where(
        PROBLEMS.c.step == step,
        PROBLEMS.c.row_kind == "run",
        PROBLEMS.c.row_id == row_id,
        PROBLEMS.c.retry_at > now,
    )


_Parsed = TypeVar("_Parsed")


def _waiting_settings(
    connection: Connection,
    table: Any,
    runs_column: Any,
    kind: str,
    parse: Callable[[Any], _Parsed],
    step: _Step,
) -> dict[int | None, _Parsed]:
    """``{id: parse(settings)}`` of every ``table`` row (schedules, backfills) that has a
    waiting run. A row whose settings cannot be parsed is flagged in ``step`` and left out, so
    its runs wait rather than start with default limits."""
    statement = select(table.c.id, table.c.settings).where(
        table.c.id.in_(select(runs_column).where(*_WAITING))
    )
    parsed: dict[int | None, _Parsed] = {}
    for row_id, raw in _fetch(connection, statement, table.c.id, step, kind):
        try:
            parsed[row_id] = parse(raw)
        except Exception as error:
            # A schedule's problem is its own; a backfill's belongs to no schedule.
            if not step.skip(kind, row_id, row_id if kind == "schedule" else None, error):
                raise
    return parsed


def _fetch(
    connection: Connection,
    statement: Any,
    key: Any,
    step: _Step,
    kind: str,
    *,
    retry_at: datetime | None = None,
    params: dict[str, Any] | None = None,
) -> Sequence[Any]:
    """``statement``'s rows. If one cannot be read (a stored JSON or date its column type
    rejects), read them one by one by ``key`` and flag the ones that fail."""
    try:
        return connection.execute(statement, params).all()
    except Exception as error:
        if not _is_row_problem(error, contained=False):
            raise
    rows = []
    for (row_id,) in connection.execute(statement.with_only_columns(key), params).all():
        with step.row(kind, row_id, retry_at=retry_at) as guard:
            row = connection.execute(statement.where(key == row_id), params).first()
        if not guard.failed and row is not None:
            rows.append(row)
    return rows


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


def _closable(now: Any) -> tuple[ColumnElement[bool], ...]:
    """Runs ``finalize_runs`` closes: final, not closed yet, not waiting to retry after a flag
    (``ix_pipeline_run_unfinalized`` holds exactly the runs not closed yet)."""
    return (
        RUNS.c.finalized_at.is_(None),
        RUNS.c.status.in_(FINISHED),
        ~_held_for_retry(STEP_FINALIZE, RUNS.c.id, now),
    )


def _probe_statement() -> Any:
    now = bindparam("now", type_=UTCDateTime)
    return select(
        exists().where(*_closable(now)),
        exists().where(*ACTIVE_TIME, SCHEDULES.c.next_due_at <= now),
        exists().where(
            _unfinished_run(),
            RUNS.c.status == PipelineRunStatus.INITIAL.value,
            RUNS.c.owner.is_(None),
        ),
        exists().where(_unfinished_run()),
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


def _has_runs(connection: Connection, schedule_id: int) -> bool:
    statement = select(RUNS.c.id).where(RUNS.c.pipeline_schedule_id == schedule_id)
    return connection.execute(statement.limit(1)).first() is not None


def _has_unfinished_runs(connection: Connection, schedule_id: int) -> bool:
    # ix_pipeline_run_schedule_unfinished: the schedule's live runs, not its whole history
    # (an @always_on schedule gains a run each time the previous one ends).
    statement = select(RUNS.c.id).where(
        RUNS.c.pipeline_schedule_id == schedule_id, _unfinished_run()
    )
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
        if _has_runs(connection, schedule.id):
            return Plan([], NEVER)
        execution_date = timing.current_execution_date(schedule_timing, now)
        return Plan([execution_date] if execution_date else [], NEVER, schedule_timing)
    if interval == ScheduleInterval.ALWAYS_ON.value:
        if start_time is not None and now < start_time:
            return Plan([], start_time)
        # Woken again (next_due_at reset) when the run in progress finishes.
        if _has_unfinished_runs(connection, schedule.id):
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


_DUE_COLUMNS = (
    SCHEDULES.c.id,
    SCHEDULES.c.pipeline_uuid,
    SCHEDULES.c.schedule_type,
    SCHEDULES.c.schedule_interval,
    SCHEDULES.c.start_time,
    SCHEDULES.c.last_enabled_at,
    SCHEDULES.c.settings,
    SCHEDULES.c.next_due_at,
)


def _due_batch(now: datetime, after: tuple[datetime, int] | None) -> Any:
    # Plain rows, not ORM objects: a burst loads thousands of schedules.
    statement = select(*_DUE_COLUMNS).where(*ACTIVE_TIME, SCHEDULES.c.next_due_at <= now)
    if after is not None:
        # Keyset paging: one statement shape for every batch (an ever-growing NOT IN list
        # would prepare a new statement per batch and hold memory).
        statement = statement.where(
            or_(
                SCHEDULES.c.next_due_at > after[0],
                and_(SCHEDULES.c.next_due_at == after[0], SCHEDULES.c.id > after[1]),
            )
        )
    # PostgreSQL: rows locked against concurrent edits (and other schedulers) while this
    # transaction advances them; SQLite already holds the database write lock.
    return (
        statement.order_by(SCHEDULES.c.next_due_at, SCHEDULES.c.id)
        .limit(DUE_BATCH)
        .with_for_update(skip_locked=True)
    )


def _still_due_check(connection: Connection, keys: list[_Key]) -> set[_Key]:
    """Flags of create_due_runs that still apply: the schedule is still an active time one."""
    ids = [row_id for kind, row_id in keys if kind == "schedule"]
    found = {
        int(row[0])
        for row in connection.execute(
            select(SCHEDULES.c.id).where(SCHEDULES.c.id.in_(ids), *ACTIVE_TIME)
        )
    }
    return {("schedule", row_id) for row_id in found}


def create_due_runs(store: Store, now: datetime) -> list[int]:
    """Create the runs of every active time schedule due at ``now`` and advance each schedule's
    ``next_due_at`` in the same transaction. Returns the ids of the runs created.

    A schedule whose planning raises is flagged and looked at again after
    :data:`PROBLEM_RETRY`; the others are created as usual."""
    created: list[int] = []
    if not _exists(store, _due_schedules(now)):
        return created
    after: tuple[datetime, int] | None = None
    facts = PassFacts(now)
    while True:
        try:
            batch = _create_batch(store, now, after, facts, row_by_row=False)
        except Exception as error:
            if not _is_row_problem(error, contained=True):
                raise
            log.warning(
                "%s: a batch of due schedules failed (%s); creating its runs schedule by schedule",
                STEP_CREATE,
                _describe(error),
            )
            batch = _create_batch(store, now, after, facts, row_by_row=True)
        if batch is None:
            break
        after, ids = batch
        created.extend(ids)
    _log_created(store, created)
    return created


def _create_batch(
    store: Store,
    now: datetime,
    after: tuple[datetime, int] | None,
    facts: PassFacts,
    *,
    row_by_row: bool,
) -> tuple[tuple[datetime, int] | None, list[int]] | None:
    """One batch of due schedules in one transaction: planned in Python (a schedule that raises
    is skipped and flagged), inserted and advanced in two batched statements — or, with
    ``row_by_row``, each schedule in a savepoint of its own."""
    step = _Step(STEP_CREATE, now, complete=False, still_applies=_still_due_check)
    retry = now + PROBLEM_RETRY
    with store.write_engine.begin() as connection:
        schedules = _fetch(
            connection, _due_batch(now, after), SCHEDULES.c.id, step, "schedule", retry_at=retry
        )
        if not schedules and not step.failed:
            return None
        created: list[int] = []
        advances: list[dict[str, Any]] = []
        if row_by_row:
            for schedule in schedules:
                inserted: list[int] = []
                with step.row(
                    "schedule", schedule.id, schedule.id, retry_at=retry, savepoint=connection
                ) as guard:
                    rows: list[dict[str, Any]] = []
                    advance = _plan_rows(connection, schedule, now, facts, rows)
                    inserted = insert_runs_ignoring_duplicates(connection, rows)
                    _advance(connection, [advance])
                if not guard.failed:  # a savepoint undone undoes its inserts too
                    created.extend(inserted)
        else:
            rows = []
            step.watch(connection)
            for schedule in schedules:
                try:
                    advances.append(_plan_rows(connection, schedule, now, facts, rows))
                except Exception as error:
                    if not step.skip("schedule", schedule.id, schedule.id, error, retry_at=retry):
                        raise
                    continue
                step.ok("schedule", schedule.id)
            created = insert_runs_ignoring_duplicates(connection, rows)
        # A schedule that raised is looked at again later, not on every pass.
        advances.extend({"b_id": key[1], "b_next": retry} for key in step.failed)
        _advance(connection, advances)
        step.settle(connection)
    if schedules:
        last = schedules[-1]
        return (last.next_due_at, last.id), created
    # No row of the batch could be read: those were advanced, so the same keyset goes on.
    return after, created


def _plan_rows(
    connection: Connection,
    schedule: Any,
    now: datetime,
    facts: PassFacts,
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    """Append the schedule's new runs to ``rows`` and return its advance. If it raises,
    ``rows`` is left as it was (no run of a schedule that raised is inserted)."""
    mark = len(rows)
    try:
        plan = plan_schedule(connection, schedule, now, facts)
        for execution_date in plan.execution_dates:
            assert plan.timing is not None
            rows.append(facts.run_row(schedule, plan.timing, execution_date))
    except BaseException:
        del rows[mark:]
        raise
    return {"b_id": schedule.id, "b_next": plan.next_due_at}


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


def _log_created(store: Store, created: list[int]) -> None:
    """One INFO line per run created (id, schedule, execution date), up to
    :data:`LOG_CREATED_RUNS_MAX` per pass; past that one INFO line with the count and the rest
    at DEBUG. Costs one read, and only when the lines are shown."""
    if not created or not log.isEnabledFor(logging.INFO):
        return
    everything = log.isEnabledFor(logging.DEBUG)
    wanted = created if everything else created[:LOG_CREATED_RUNS_MAX]
    if len(created) > LOG_CREATED_RUNS_MAX:
        log.info(
            "created %d runs in this pass; %d are listed below, the other %d at DEBUG",
            len(created),
            LOG_CREATED_RUNS_MAX,
            len(created) - LOG_CREATED_RUNS_MAX,
        )
    with store.engine.connect() as connection:
        rows = {
            int(row.id): row
            for chunk in _chunks(wanted)
            for row in connection.execute(
                select(RUNS.c.id, RUNS.c.pipeline_schedule_id, RUNS.c.execution_date).where(
                    RUNS.c.id.in_(chunk)
                )
            )
        }
    for index, run_id in enumerate(wanted):
        row = rows.get(run_id)
        if row is None:
            continue
        log.log(
            logging.INFO if index < LOG_CREATED_RUNS_MAX else logging.DEBUG,
            "created run %d of schedule %s for execution date %s",
            run_id,
            row.pipeline_schedule_id,
            _utc(row.execution_date).isoformat(),
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
            _unfinished_run(),
            or_(
                RUNS.c.status == PipelineRunStatus.RUNNING.value,
                and_(
                    RUNS.c.status == PipelineRunStatus.INITIAL.value,
                    RUNS.c.owner.is_not(None),
                ),
            ),
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


_WAITING = (
    _unfinished_run(),
    RUNS.c.status == PipelineRunStatus.INITIAL.value,
    RUNS.c.owner.is_(None),
)


_WAITING_IDS = select(RUNS.c.id).where(*_WAITING)


def _backfill_limit(raw: Any) -> int | None:
    value = (raw or {}).get("pipeline_run_limit")
    return int(value) if value else None


def plan_starts(store: Store, now: datetime, owner: str, capacity: int) -> StartPlan:
    """Pick up to ``capacity`` waiting runs, oldest first, within every concurrency limit, and
    mark them as ``owner``'s. Runs that must not start are recorded ``cancelled`` with the
    reason (``skip_if_previous_running``, a limit with ``skip``).

    A schedule or backfill whose settings cannot be read is flagged and its runs wait (never
    started with default limits); a run whose own check raises is flagged and waits."""
    plan = StartPlan()
    if not _exists(store, _WAITING_IDS):
        return plan
    step = _Step(STEP_STARTS, now, complete=True)
    # Planning reads a snapshot without the write lock (a backlog of thousands of waiting runs
    # is walked on every pass; runners must not wait for that). With one active scheduler the
    # snapshot can only be conservative: meanwhile runs finish (fewer executing) or new ones
    # arrive (planned next pass). The writes below are fenced on the runs still waiting.
    with store.engine.connect() as connection:
        counts = _active_counts(connection)
        # Settings of every schedule and backfill with a waiting run: two queries, not one
        # per run.
        settings_of: dict[int | None, dict[str, Any]] = {None: with_defaults(None)}
        settings_of.update(
            _waiting_settings(
                connection, SCHEDULES, RUNS.c.pipeline_schedule_id, "schedule", with_defaults, step
            )
        )
        backfill_limit_of: dict[int | None, int | None] = {None: None}
        backfill_limit_of.update(
            _waiting_settings(
                connection, BACKFILLS, RUNS.c.backfill_id, "backfill", _backfill_limit, step
            )
        )
        waiting = connection.execute(
            select(
                RUNS.c.id,
                RUNS.c.pipeline_schedule_id,
                RUNS.c.pipeline_uuid,
                RUNS.c.backfill_id,
            )
            .where(*_WAITING)
            .order_by(RUNS.c.created_at, RUNS.c.execution_date, RUNS.c.id)
        ).all()
        for run in waiting:
            if step.has_failed("schedule", run.pipeline_schedule_id) or step.has_failed(
                "backfill", run.backfill_id
            ):
                continue  # its schedule or backfill is flagged: the run waits
            try:
                _plan_start(run, settings_of, backfill_limit_of, counts, capacity, plan)
            except Exception as error:
                if not step.skip("run", run.id, run.pipeline_schedule_id, error):
                    raise
        flags = step.changes(connection)
    if plan.skipped or plan.start or flags:
        _apply_start_plan(store, plan, owner, now, step)
    return plan


def _plan_start(
    run: Any,
    settings_of: dict[int | None, dict[str, Any]],
    backfill_limit_of: dict[int | None, int | None],
    counts: tuple[dict[Any, int], dict[Any, int], dict[Any, int]],
    capacity: int,
    plan: StartPlan,
) -> None:
    """Decide one waiting run: skip it, leave it waiting, or start it (counted at once, so
    the runs after it see the limits it uses). Raises before changing anything."""
    per_schedule, per_pipeline, per_backfill = counts
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
        return
    reason = _limit_reason(settings, backfill_limit, run, counts)
    if reason is not None:
        skip = settings["on_pipeline_run_limit_reached"] == "skip"
        if skip and run.backfill_id is None:
            plan.skipped[run.id] = (
                f"skipped: {reason} (settings.on_pipeline_run_limit_reached='skip')"
            )
        return
    if len(plan.start) >= capacity:
        return  # still walk on: later runs may have to be skipped now
    plan.start.append(run.id)
    if run.backfill_id is None:
        per_schedule[schedule_id] += 1
    per_pipeline[run.pipeline_uuid] += 1
    per_backfill[run.backfill_id] += 1


def _apply_start_plan(
    store: Store, plan: StartPlan, owner: str, now: datetime, step: _Step | None = None
) -> None:
    """Record the skips and take the runs to start — only those still waiting and untaken —
    and the step's flags. In one transaction; if a skip raises (a run whose stored metrics
    cannot be extended), the transaction is done again with a savepoint per skip."""
    if step is None:
        step = _Step(STEP_STARTS, now, complete=False)
    wanted = dict(plan.skipped)
    try:
        skipped, started = _write_start_plan(store, wanted, plan.start, owner, now, step, False)
    except Exception as error:
        if not _is_row_problem(error, contained=True):
            raise
        skipped, started = _write_start_plan(store, wanted, plan.start, owner, now, step, True)
    plan.skipped, plan.start = skipped, started


def _write_start_plan(
    store: Store,
    wanted: dict[int, str],
    start: list[int],
    owner: str,
    now: datetime,
    step: _Step,
    row_by_row: bool,
) -> tuple[dict[int, str], list[int]]:
    waiting = (RUNS.c.status == PipelineRunStatus.INITIAL.value, RUNS.c.owner.is_(None))
    skipped: dict[int, str] = {}
    with store.write_engine.begin() as connection:
        for chunk in _chunks(list(wanted)):
            still = {
                int(row[0])
                for row in connection.execute(
                    select(RUNS.c.id).where(RUNS.c.id.in_(chunk), *waiting)
                )
            }
            for run_id in chunk:
                if run_id not in still:
                    continue  # taken or ended meanwhile: not ours to skip
                if row_by_row:
                    with step.row("run", run_id, savepoint=connection) as guard:
                        _skip_run(connection, run_id, wanted[run_id], now)
                    if guard.failed:
                        continue
                else:  # anything raising undoes the whole transaction: done again row by row
                    _skip_run(connection, run_id, wanted[run_id], now)
                skipped[run_id] = wanted[run_id]
        taken: list[int] = []
        if start:
            # No status change: the runs stay initial until their executor claims them.
            connection.execute(
                update(RUNS)
                .where(RUNS.c.id.in_(start), *waiting)
                .values(owner=owner, updated_at=now)
            )
            ours = {
                int(row[0])
                for row in connection.execute(
                    select(RUNS.c.id).where(RUNS.c.id.in_(start), RUNS.c.owner == owner)
                )
            }
            taken = [run_id for run_id in start if run_id in ours]
        step.settle(connection)
    return skipped, taken


def _skip_run(connection: Connection, run_id: int, reason: str, now: datetime) -> None:
    end_run(
        connection,
        run_id,
        PipelineRunStatus.CANCELLED.value,
        reason,
        now,
        from_statuses=(PipelineRunStatus.INITIAL.value,),
    )


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


_RUNNING_WITH_SETTINGS = (
    select(RUNS.c.id, RUNS.c.pipeline_schedule_id, RUNS.c.started_at, SCHEDULES.c.settings)
    .join(SCHEDULES, SCHEDULES.c.id == RUNS.c.pipeline_schedule_id)
    .where(
        _unfinished_run(),
        RUNS.c.status == PipelineRunStatus.RUNNING.value,
        RUNS.c.started_at.is_not(None),
        SCHEDULES.c.settings.is_not(None),
    )
)


def enforce_timeouts(store: Store, now: datetime) -> Deadlines:
    """End running runs past ``settings.timeout`` (from ``started_at``) or with a block past
    ``settings.block_timeout``: the run gets ``timeout_status`` / ``failed`` with the reason.
    The caller stops them in the executor (the kernel is killed there).

    A run whose deadline cannot be computed (a stored timeout no date can hold, settings that
    are not an object) is flagged and left running; every other run is timed as usual."""
    result = Deadlines()
    step = _Step(STEP_TIMEOUTS, now, complete=True)
    overdue: list[tuple[int, int | None, str, str]] = []  # (run, schedule, status, reason)
    # Read first: usually nothing is overdue and no write lock is needed.
    with store.engine.connect() as connection:
        rows = _fetch(connection, _RUNNING_WITH_SETTINGS, RUNS.c.id, step, "run")
        for run_id, schedule_id, started_at, raw in rows:
            try:
                found = _overdue(connection, run_id, started_at, raw, now, result)
            except Exception as error:
                if not step.skip("run", run_id, schedule_id, error):
                    raise
                continue
            if found is not None:
                overdue.append((run_id, schedule_id, *found))
        flags = step.changes(connection)
    if overdue or flags:
        with store.write_engine.begin() as connection:
            for run_id, schedule_id, status, why in overdue:
                # Fenced on 'running': a run that finished meanwhile keeps its own status.
                with step.row("run", run_id, schedule_id, savepoint=connection):
                    if end_run(connection, run_id, status, why, now):
                        result.ended.append(run_id)
            step.settle(connection)
    return result


def _overdue(
    connection: Connection,
    run_id: int,
    started_at: datetime,
    raw: Any,
    now: datetime,
    result: Deadlines,
) -> tuple[str, str] | None:
    """(status, reason) if the run overran a timeout; else None, its deadlines considered."""
    settings = with_defaults(raw)
    deadlines: list[datetime] = []
    if settings["timeout"]:
        deadline = _utc(started_at) + timedelta(seconds=settings["timeout"])
        if deadline + TIMEOUT_SLACK <= now:
            why = f"timed out: ran longer than settings.timeout ({settings['timeout']} s)"
            return str(settings["timeout_status"]), why
        deadlines.append(deadline + TIMEOUT_SLACK)
    if settings["block_timeout"]:
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
                return PipelineRunStatus.FAILED.value, why
            deadlines.append(deadline + TIMEOUT_SLACK)
    # Only once the run's every deadline could be computed.
    for deadline in deadlines:
        result.consider(deadline)
    return None


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


_SLA_CANDIDATES = (
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
        _unfinished_run(),
        RUNS.c.sla_breached.is_(False),
        SCHEDULES.c.sla.is_not(None),
    )
)


def check_slas(store: Store, now: datetime) -> Deadlines:
    """Flag runs still waiting or executing whose SLA (seconds from ``execution_date``) has
    passed; each breach is flagged — and notified — once (a fenced update).

    A run whose SLA deadline cannot be computed is flagged in ``scheduler_problem`` instead."""
    result = Deadlines()
    step = _Step(STEP_SLAS, now, complete=True)
    breached: list[tuple[Any, str]] = []
    with store.engine.connect() as connection:
        for run in _fetch(connection, _SLA_CANDIDATES, RUNS.c.id, step, "run"):
            try:
                due = _utc(run.execution_date) + timedelta(seconds=run.sla)
                why = None if due > now else _sla_reason(run.sla, run.execution_date)
            except Exception as error:
                if not step.skip("run", run.id, run.pipeline_schedule_id, error):
                    raise
                continue
            if why is None:
                result.consider(due)
            else:
                breached.append((run, why))
        flags = step.changes(connection)
    if not breached and not flags:
        return result
    with store.write_engine.begin() as connection:
        for run, why in breached:
            flagged = connection.execute(
                update(RUNS)
                .where(RUNS.c.id == run.id, RUNS.c.sla_breached.is_(False))
                .values(sla_breached=True)
            )
            if flagged.rowcount == 1:
                result.notifications.append(_notification("sla_breach", run, run.name, why))
        step.settle(connection)
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


#: The next batch of runs to close (parameters ``now``, ``after``); built once.
_FINALIZE_BATCH = (
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
    .where(
        *_closable(bindparam("now", type_=UTCDateTime)),
        RUNS.c.id > bindparam("after", type_=Integer),
    )
    .order_by(RUNS.c.id)
    .limit(FINALIZE_BATCH)
)


_CLOSING_SCHEDULE_COLUMNS = (
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
)


@dataclass
class _Closing:
    """How one finished run is closed, worked out from a snapshot without the write lock;
    :func:`_close` writes it only if the run is still not closed (the fence)."""

    run_id: int
    sla_breached: bool
    notifications: list[Notification]
    deactivate: int | None = None  # an @once schedule to deactivate
    evaluate: int | None = None  # a schedule to look at again (@always_on, landing time)


@dataclass
class ClosingPlan:
    """A batch of finished runs as :func:`closing_plan` read it: how each is closed, and the
    id to continue after. ``step`` carries the rows that raised (flagged by :func:`close`)."""

    closings: list[_Closing]
    last_id: int | None
    step: _Step
    size: int


def _landing_time_enabled(schedule: Any) -> bool:
    """Mage: landing time applies to time schedules with @hourly/@daily/@weekly/@monthly."""
    return timing_of(schedule, with_defaults(schedule.settings)).landing_time_enabled


def _still_closable(now: datetime) -> Callable[[Connection, list[_Key]], set[_Key]]:
    def check(connection: Connection, keys: list[_Key]) -> set[_Key]:
        ids = [row_id for kind, row_id in keys if kind == "run"]
        found = {
            int(row[0])
            for row in connection.execute(
                select(RUNS.c.id).where(
                    RUNS.c.id.in_(ids), RUNS.c.finalized_at.is_(None), RUNS.c.status.in_(FINISHED)
                )
            )
        }
        return {("run", row_id) for row_id in found}

    return check


def closing_plan(connection: Connection, now: datetime, after: int = 0) -> ClosingPlan:
    """Read the next batch of finished runs (id > ``after``) not closed yet and work out how
    each is closed. Read-only: any connection, no write lock. A run whose closing raises is
    left for :data:`PROBLEM_RETRY` and flagged (by :func:`close`)."""
    step = _Step(STEP_FINALIZE, now, complete=False, still_applies=_still_closable(now))
    retry = now + PROBLEM_RETRY
    batch = _fetch(
        connection,
        _FINALIZE_BATCH,
        RUNS.c.id,
        step,
        "run",
        retry_at=retry,
        params={"now": now, "after": after},
    )
    unreadable_runs = [row_id for _, row_id in step.failed]
    last_id = max([run.id for run in batch] + unreadable_runs, default=None)
    schedule_ids = {run.pipeline_schedule_id for run in batch} - {None}
    schedules: dict[int, Any] = {}
    if schedule_ids:
        unread = _Step(STEP_FINALIZE, now, complete=False)
        statement = select(*_CLOSING_SCHEDULE_COLUMNS).where(SCHEDULES.c.id.in_(schedule_ids))
        for row in _fetch(connection, statement, SCHEDULES.c.id, unread, "schedule"):
            schedules[row.id] = row
        unreadable = {row_id for _, row_id in unread.failed}
    else:
        unreadable = set()
    closings: list[_Closing] = []
    if batch:
        step.watch(connection)
    for run in batch:
        try:
            if run.pipeline_schedule_id in unreadable:
                raise ValueError(
                    f"its schedule {run.pipeline_schedule_id} cannot be read: "
                    f"{_describe(unread.failed[('schedule', run.pipeline_schedule_id)].error)}"
                )
            closing = _closing_of(connection, run, schedules.get(run.pipeline_schedule_id))
        except Exception as error:
            if not step.skip("run", run.id, run.pipeline_schedule_id, error, retry_at=retry):
                raise
            continue
        step.ok("run", run.id)
        closings.append(closing)
    return ClosingPlan(closings, last_id, step, len(batch) + len(unreadable_runs))


def _closing_of(connection: Connection, run: Any, schedule: Any) -> _Closing:
    name = schedule.name if schedule is not None else None
    sla = schedule.sla if schedule is not None else None
    notifications: list[Notification] = []
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
        notifications.append(_notification("failure", run, name, _failure_reason(connection, run)))
    elif status == PipelineRunStatus.COMPLETED.value:
        notifications.append(_notification("success", run, name, None))
    closing = _Closing(run.id, sla_breached, notifications)
    if schedule is not None and status_value(schedule.status) == ScheduleStatus.ACTIVE.value:
        interval = schedule.schedule_interval
        if interval == ScheduleInterval.ONCE.value:
            closing.deactivate = schedule.id
        elif interval == ScheduleInterval.ALWAYS_ON.value or _landing_time_enabled(schedule):
            closing.evaluate = schedule.id
    return closing


def close(connection: Connection, plan: ClosingPlan, now: datetime) -> list[Notification]:
    """Write ``plan`` in the caller's write transaction: each run is closed only if it still
    is not (``finalized_at IS NULL`` — a second scheduler, or a pass racing this one, may have
    closed it since it was read), and only the runs closed *here* give notifications and
    schedule changes. Flags the runs that raised, clears the flags of runs closed."""
    closed = _close_runs(connection, plan.closings, now)
    notifications: list[Notification] = []
    deactivate: set[int] = set()
    evaluate: set[int] = set()
    for closing in plan.closings:
        if closing.run_id not in closed:
            continue
        notifications.extend(closing.notifications)
        if closing.deactivate is not None:
            deactivate.add(closing.deactivate)
        if closing.evaluate is not None:
            evaluate.add(closing.evaluate)
    for chunk in _chunks(sorted(deactivate)):
        # A change of status is a change of timing: looked at again.
        connection.execute(
            update(SCHEDULES)
            .where(
                SCHEDULES.c.id.in_(chunk),
                SCHEDULES.c.status == ScheduleStatus.ACTIVE.value,
                SCHEDULES.c.schedule_interval == ScheduleInterval.ONCE.value,
            )
            .values(status=ScheduleStatus.INACTIVE.value, next_due_at=EVALUATE_NOW)
        )
    for chunk in _chunks(sorted(evaluate - deactivate)):
        connection.execute(
            update(SCHEDULES)
            .where(SCHEDULES.c.id.in_(chunk), SCHEDULES.c.next_due_at != EVALUATE_NOW)
            .values(next_due_at=EVALUATE_NOW)
        )
    plan.step.passed -= {("run", run_id) for run_id in _unclosed(plan, closed)}
    plan.step.settle(connection)
    if closed:
        _clear_run_flags(connection, LIVE_RUN_STEPS, sorted(closed))
    return notifications


def _unclosed(plan: ClosingPlan, closed: set[int]) -> list[int]:
    """Runs planned but closed by someone else meanwhile: not "passed" here (their flag, if any,
    goes through ``still_applies``)."""
    return [closing.run_id for closing in plan.closings if closing.run_id not in closed]


def _close_runs(connection: Connection, closings: list[_Closing], now: datetime) -> set[int]:
    """``finalized_at = now`` on the runs still not closed (and still final); their ids."""
    closed: set[int] = set()
    fence = (RUNS.c.finalized_at.is_(None), RUNS.c.status.in_(FINISHED))
    returning = bool(getattr(connection.dialect, "update_returning", False))
    for breached in (False, True):
        ids = [closing.run_id for closing in closings if closing.sla_breached is breached]
        for chunk in _chunks(ids):
            values = {"finalized_at": now, "sla_breached": breached}
            if returning:
                statement = (
                    update(RUNS).where(RUNS.c.id.in_(chunk), *fence).values(**values)
                ).returning(RUNS.c.id)
                closed.update(int(row[0]) for row in connection.execute(statement))
                continue
            for run_id in chunk:
                result = connection.execute(
                    update(RUNS).where(RUNS.c.id == run_id, *fence).values(**values)
                )
                if result.rowcount == 1:
                    closed.add(run_id)
    return closed


def finalize_runs(store: Store, now: datetime) -> list[Notification]:
    """Close runs that reached a final status: SLA breaches noticed late, failure (and success)
    notifications, ``@once`` schedules deactivated, ``@always_on`` and landing-time schedules
    re-evaluated, backfills completed. Each run is closed once (``finalized_at``), by the one
    pass whose fenced update closes it: only that pass notifies.

    Each batch is read without the write lock; the write transaction only applies it. A run
    whose closing raises stays unclosed, flagged, and is tried again after
    :data:`PROBLEM_RETRY` (meanwhile the probe does not count it: it costs no pass)."""
    notifications: list[Notification] = []
    after = 0
    while True:
        with store.engine.connect() as connection:
            plan = closing_plan(connection, now, after)
            flags = plan.step.changes(connection) if plan.size else None
        if plan.closings or flags:
            with store.write_engine.begin() as connection:
                notifications.extend(close(connection, plan, now))
        if plan.last_id is None or plan.size < FINALIZE_BATCH:
            break
        after = plan.last_id
    _roll_up_backfills(store, now)
    return notifications


def _roll_up_backfills(store: Store, now: datetime) -> None:
    """A running backfill whose runs have all finished becomes completed (or failed)."""
    running_backfills = select(BACKFILLS.c.id).where(
        BACKFILLS.c.status == BackfillStatus.RUNNING.value
    )
    if not _exists(store, running_backfills):
        return
    step = _Step(STEP_BACKFILLS, now, complete=True)
    with store.write_engine.begin() as connection:
        running = [row[0] for row in connection.execute(running_backfills)]
        for backfill_id in running:
            with step.row("backfill", backfill_id, savepoint=connection):
                _roll_up_backfill(connection, backfill_id, now)
        step.settle(connection)


def _roll_up_backfill(connection: Connection, backfill_id: int, now: datetime) -> None:
    counts: dict[str, int] = {
        str(getattr(status, "value", status)): int(count)
        for status, count in connection.execute(
            select(RUNS.c.status, func.count(RUNS.c.id))
            .where(RUNS.c.backfill_id == backfill_id)
            .group_by(RUNS.c.status)
        )
    }
    if any(counts.get(status, 0) for status in UNFINISHED):
        return
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


_OWNED = select(RUNS.c.id, RUNS.c.status, RUNS.c.owner, RUNS.c.attempts).where(
    _unfinished_run(), RUNS.c.owner.is_not(None)
)


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
    ``max_attempts`` times, then failed with the reason. Nothing stays ``running``.

    One transaction; if a run raises (stored values its requeue or failure cannot handle), the
    transaction is done again with a savepoint per run, and that run is flagged."""
    if not _exists(store, _OWNED):
        return Recovery()
    try:
        return _recover(store, now, owner, executing_here, max_attempts, row_by_row=False)
    except Exception as error:
        if not _is_row_problem(error, contained=True):
            raise
        return _recover(store, now, owner, executing_here, max_attempts, row_by_row=True)


def _recover(
    store: Store,
    now: datetime,
    owner: str,
    executing_here: set[int],
    max_attempts: int,
    *,
    row_by_row: bool,
) -> Recovery:
    result = Recovery()
    step = _Step(STEP_RECOVER, now, complete=True)
    with store.write_engine.begin() as connection:
        live = leases.live_instances(connection, now) | {owner}
        rows = _fetch(connection, _OWNED, RUNS.c.id, step, "run")
        for run_id, status, run_owner, attempts in rows:
            if row_by_row:
                with step.row("run", run_id, savepoint=connection):
                    _recover_run(
                        connection, run_id, status, str(run_owner), attempts, now, owner,
                        executing_here, live, max_attempts, result,
                    )  # fmt: skip
            else:  # anything raising undoes the whole transaction: done again row by row
                _recover_run(
                    connection, run_id, status, str(run_owner), attempts, now, owner,
                    executing_here, live, max_attempts, result,
                )  # fmt: skip
        step.settle(connection)
    return result


def _recover_run(
    connection: Connection,
    run_id: int,
    status: Any,
    run_owner: str,
    attempts: Any,
    now: datetime,
    owner: str,
    executing_here: set[int],
    live: set[str],
    max_attempts: int,
    result: Recovery,
) -> None:
    if run_owner == owner:
        if run_id in executing_here:
            return
        why = "this scheduler lost track of the run"
    elif leases.owner_is_alive(run_owner, live):
        return
    else:
        why = f"its owner {run_owner} stopped (no heartbeat)"
    earlier = int(attempts or 0)
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
    elif earlier < max_attempts:
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
    executed notebooks. Returns how many runs were deleted.

    A run whose files cannot be located (a stored date no partition can name) is kept and
    flagged; the others are deleted."""
    if days <= 0:
        return 0
    assert store.project_dir is not None
    cutoff = now - timedelta(days=days)
    deleted = 0
    after = 0
    step = _Step(STEP_RETENTION, now, complete=True)
    while True:
        statement = (
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
                RUNS.c.id > after,
            )
            .order_by(RUNS.c.id)
            .limit(batch)
        )
        with store.write_engine.begin() as connection:
            rows = _fetch(connection, statement, RUNS.c.id, step, "run")
            if not rows and not step.failed:
                break
            folders: dict[int, list[Path]] = {}
            for row in rows:
                try:
                    folders[row.id] = _run_folders(store.project_dir, row)
                except Exception as error:
                    if not step.skip("run", row.id, row.pipeline_schedule_id, error):
                        raise
            ids = sorted(folders)
            for chunk in _chunks(ids):
                connection.execute(delete(BLOCKS).where(BLOCKS.c.pipeline_run_id.in_(chunk)))
                connection.execute(delete(RUNS).where(RUNS.c.id.in_(chunk)))
            # Deleted rows need no flag of any step any more.
            _clear_run_flags(connection, (*LIVE_RUN_STEPS, STEP_FINALIZE), ids)
        last = max([row.id for row in rows] + [row_id for _, row_id in step.failed], default=0)
        if last <= after:
            break
        after = last
        # Files after the commit: a crash in between leaves orphan files, never rows
        # pointing at deleted files. A partition is shared by every run of the same schedule
        # and execution date (a backfill re-run of an old day): kept runs keep their files.
        for row in rows:
            if row.id not in folders or _partition_still_used(store, row):
                continue
            for folder in folders[row.id]:
                shutil.rmtree(folder, ignore_errors=True)
        deleted += len(ids)
    with store.engine.connect() as connection:
        flags = step.changes(connection)
    if flags or flags.unchanged:
        with store.write_engine.begin() as connection:
            step.settle(connection)
    return deleted


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
    """The run's folders, each checked to be inside the data dir: a stored ``pipeline_uuid``
    such as ``../..`` (written by hand) must never make retention delete anything else."""
    partition = execution_partition(row.pipeline_schedule_id, _utc(row.execution_date))
    root = data_dir(project_dir)
    folders = [
        (root / "runs", run_dir(project_dir, row.pipeline_uuid, partition)),
        (
            root / ".variables" / "pipelines",
            root / ".variables" / "pipelines" / row.pipeline_uuid / partition,
        ),
    ]
    for base, folder in folders:
        inside = folder.resolve().is_relative_to(base.resolve())
        if not inside or folder.resolve() == base.resolve():
            raise ValueError(
                f"pipeline_uuid {row.pipeline_uuid!r} names a folder outside {base}: its files "
                "are not deleted (fix the run's pipeline_uuid)"
            )
    return [folder for _, folder in folders]
