"""Pipeline runs: create them (by hand, for a schedule's period, idempotently by key), read,
page and count them, change (cancel, retry) and delete them, and read their block runs and
block logs.

Every function takes its store explicitly and returns
:class:`~mage_nb_sched.service.records.RunRecord` / ``BlockRunRecord`` values. Status changes
go through the run state machine (:mod:`mage_nb_sched.core.run_states`). The connection-level
writers the runner and the scheduler use (``end_run``, ``requeue_run`` ...) live in
:mod:`mage_nb_sched.service.transitions`.
"""

from __future__ import annotations

import importlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from mage_nb_sched.core import run_states, timing
from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.core.datetimes import UTC
from mage_nb_sched.core.enums import PipelineRunStatus
from mage_nb_sched.core.errors import (
    NotFoundError,
    PayloadTooLargeError,
    StoreError,
    ValidationError,
)
from mage_nb_sched.core.partitions import execution_partition
from mage_nb_sched.core.project import require_notebook
from mage_nb_sched.service import fields
from mage_nb_sched.service.asynchronous import twin
from mage_nb_sched.service.records import BlockRunRecord, RunRecord, ScheduleRecord, from_row
from mage_nb_sched.service.schedules import get_schedule, project_dir_of, timing_of
from mage_nb_sched.service.transitions import (
    end_run,
    insert_runs_ignoring_duplicates,
    requeue_run,
    take_run,
)
from mage_nb_sched.store import schema
from mage_nb_sched.store.engine import Store

if TYPE_CHECKING:
    from mage_nb_sched.store.artifacts import ArtifactStore

RUNS = schema.pipeline_run
BLOCKS = schema.block_run

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

__all__ = [
    "RUN_FIELDS",
    "UPDATE_FIELDS",
    "BlockLog",
    "BlockRunPage",
    "ExecutedNotebook",
    "RunPage",
    "block_run_page",
    "block_runs",
    "cancel_run",
    "change_run",
    "count_runs",
    "create_run",
    "create_scheduled_run",
    "delete_run",
    "end_run",
    "get_run",
    "insert_run_once",
    "insert_runs_ignoring_duplicates",
    "list_runs",
    "manual_run_key",
    "page_runs",
    "read_block_log",
    "read_executed_notebook",
    "requeue_run",
    "require_pipeline_notebook",
    "retry_run",
    "run_detail",
    "run_now",
    "scheduled_run_key",
    "scheduled_run_values",
    "take_run",
    "update_run",
]


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
            cleaned[key] = fields.pipeline_uuid(value)
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


def _read(connection: Connection, run_id: int) -> RunRecord | None:
    row = connection.execute(select(RUNS).where(RUNS.c.id == run_id)).first()
    return None if row is None else from_row(RunRecord, row)


def require_pipeline_notebook(store: Store, pipeline_uuid: str) -> Path:
    """The notebook of ``pipeline_uuid`` in the store's project, else a
    :class:`ValidationError` naming ``pipeline_uuid`` — also for a name the file system cannot
    hold (a uuid of 255 characters can be more than the 255 *bytes* a file name may have),
    which would otherwise surface as an ``OSError``."""
    try:
        return require_notebook(project_dir_of(store), pipeline_uuid)
    except OSError as err:
        raise ValidationError(
            "pipeline_uuid",
            pipeline_uuid,
            f"no notebook can have this path ({err.strerror or err})",
            "Use a shorter notebook path relative to the project dir, e.g. 'etl/daily'.",
        ) from None


def _not_found(run_id: Any) -> NotFoundError:
    return NotFoundError(
        f"pipeline_run_id={run_id!r}: no such run. List runs with schedule.pipeline_runs or "
        "list_runs(store)."
    )


# --------------------------------------------------------------------------------------------
# Reads
# --------------------------------------------------------------------------------------------


def get_run(store: Store, run_id: int) -> RunRecord:
    """A run by id, or a :class:`NotFoundError`."""
    with store.engine.connect() as connection:
        record = _read(connection, run_id)
    if record is None:
        raise _not_found(run_id)
    return record


def list_runs(
    store: Store,
    *,
    schedule_id: int | None = None,
    pipeline_uuid: str | None = None,
    status: str | None = None,
    backfill_id: int | None = None,
    last: int | None = None,
    before_id: int | None = None,
) -> list[RunRecord]:
    """Runs matching every filter given, oldest first; ``last=N`` keeps the newest N (still
    oldest first); ``before_id`` pages backwards (runs with a smaller id)."""
    statement = select(RUNS)
    if schedule_id is not None:
        statement = statement.where(RUNS.c.pipeline_schedule_id == schedule_id)
    if pipeline_uuid is not None:
        statement = statement.where(RUNS.c.pipeline_uuid == pipeline_uuid)
    if status is not None:
        value = fields.enum_value(status, PipelineRunStatus, "status")
        statement = statement.where(RUNS.c.status == value.value)
    if backfill_id is not None:
        statement = statement.where(RUNS.c.backfill_id == backfill_id)
    if before_id is not None:
        statement = statement.where(RUNS.c.id < before_id)
    if last is not None:
        statement = statement.order_by(RUNS.c.id.desc()).limit(max(0, int(last)))
    else:
        statement = statement.order_by(RUNS.c.id)
    with store.engine.connect() as connection:
        records = [from_row(RunRecord, row) for row in connection.execute(statement)]
    return sorted(records, key=lambda record: record.id) if last is not None else records


def block_runs(store: Store, run_id: int) -> list[BlockRunRecord]:
    """A run's block runs in creation order."""
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(BLOCKS).where(BLOCKS.c.pipeline_run_id == run_id).order_by(BLOCKS.c.id)
        )
        return [from_row(BlockRunRecord, row) for row in rows]


@dataclass(frozen=True)
class RunPage:
    """One page of runs, newest first (highest id first).

    ``block_runs_counts[run.id]`` is each run's number of block runs, ``count`` the number of
    runs matching the filters over all pages, and ``next_cursor`` the cursor of the next page
    (``None`` on the last one)."""

    runs: list[RunRecord]
    block_runs_counts: dict[int, int]
    count: int
    next_cursor: int | None


@dataclass(frozen=True)
class BlockRunPage:
    """One page of a run's block runs in creation (execution) order; ``count`` is the run's
    number of block runs, ``next_cursor`` the cursor of the next page or ``None``."""

    block_runs: list[BlockRunRecord]
    count: int
    next_cursor: int | None


@dataclass(frozen=True)
class BlockLog:
    """The log of one block run, or its last part: ``content`` (UTF-8 bytes, possibly empty
    when the block has written no log yet), the log's whole ``size`` in bytes, and ``dropped``,
    how many bytes before ``content`` were left out (``tail``, or a log over the size cap)."""

    block_run: BlockRunRecord
    content: bytes
    size: int
    dropped: int


#: The most of a block log one read returns (its last bytes when the log is longer). Block
#: logs are capped at 10 MiB by default (``max_block_log_bytes``), so a default log is read
#: whole.
MAX_LOG_READ_BYTES = 16 * 1024 * 1024


def _block_runs_count() -> Any:
    """A column: the number of block runs of the run in the row (a correlated count on the
    block runs' ``pipeline_run_id`` index)."""
    return (
        select(func.count(BLOCKS.c.id))
        .where(BLOCKS.c.pipeline_run_id == RUNS.c.id)
        .correlate(RUNS)
        .scalar_subquery()
        .label("block_runs_count")
    )


def _run_filters(
    *,
    schedule_id: int | None,
    pipeline_uuid: str | None,
    status: Any,
    backfill_id: int | None,
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if schedule_id is not None:
        conditions.append(RUNS.c.pipeline_schedule_id == schedule_id)
    if pipeline_uuid is not None:
        conditions.append(RUNS.c.pipeline_uuid == fields.pipeline_uuid(pipeline_uuid))
    if status is not None:
        value = fields.enum_value(status, PipelineRunStatus, "status")
        conditions.append(RUNS.c.status == value.value)
    if backfill_id is not None:
        conditions.append(RUNS.c.backfill_id == backfill_id)
    return conditions


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValidationError(
            "limit", limit, "a page holds at least one item", "Use e.g. limit=100."
        )
    return limit


def count_runs(
    store: Store,
    *,
    schedule_id: int | None = None,
    pipeline_uuid: str | None = None,
    status: str | None = None,
    backfill_id: int | None = None,
) -> int:
    """How many runs match every filter given (one ``COUNT`` query)."""
    conditions = _run_filters(
        schedule_id=schedule_id,
        pipeline_uuid=pipeline_uuid,
        status=status,
        backfill_id=backfill_id,
    )
    with store.engine.connect() as connection:
        return int(
            connection.execute(select(func.count(RUNS.c.id)).where(*conditions)).scalar() or 0
        )


def page_runs(
    store: Store,
    *,
    schedule_id: int | None = None,
    pipeline_uuid: str | None = None,
    status: str | None = None,
    backfill_id: int | None = None,
    limit: int = 100,
    cursor: int | None = None,
    require_schedule: bool = False,
) -> RunPage:
    """One page of the runs matching every filter given, newest first, with each run's
    block-run count and the count of all matching runs: two queries whatever the number of
    runs. ``cursor`` is the ``next_cursor`` of the previous page.

    ``require_schedule``: an unknown ``schedule_id`` is a :class:`NotFoundError` (checked only
    when no run matches, so a schedule with runs costs no third query)."""
    limit = _check_limit(limit)
    conditions = _run_filters(
        schedule_id=schedule_id,
        pipeline_uuid=pipeline_uuid,
        status=status,
        backfill_id=backfill_id,
    )
    ids = select(RUNS.c.id).where(*conditions)
    if cursor is not None:
        ids = ids.where(RUNS.c.id < cursor)
    # One row more than the page tells whether there is a next page. The ids are picked
    # first (from an index alone, e.g. (status, created_at) for a status filter), then only
    # the page's rows are read: sorting whole rows of every matching run would cost ~10x more.
    ids = ids.order_by(RUNS.c.id.desc()).limit(limit + 1)
    page = (
        select(RUNS, _block_runs_count())
        .where(RUNS.c.id.in_(ids.scalar_subquery()))
        .order_by(RUNS.c.id.desc())
    )
    with store.engine.connect() as connection:
        count = int(
            connection.execute(select(func.count(RUNS.c.id)).where(*conditions)).scalar() or 0
        )
        rows = list(connection.execute(page))
        if require_schedule and schedule_id is not None and count == 0:
            found = connection.execute(
                select(schema.pipeline_schedule.c.id).where(
                    schema.pipeline_schedule.c.id == schedule_id
                )
            ).scalar()
            if found is None:
                raise NotFoundError(
                    f"pipeline_schedule_id={schedule_id!r}: no such schedule. List schedules "
                    "with GET pipeline_schedules or list_schedules(store)."
                )
    more = len(rows) > limit
    rows = rows[:limit]
    runs = [from_row(RunRecord, row) for row in rows]
    counts = {int(row.id): int(row.block_runs_count or 0) for row in rows}
    return RunPage(runs, counts, count, runs[-1].id if more and runs else None)


def run_detail(store: Store, run_id: int) -> tuple[RunRecord, int]:
    """A run and its number of block runs (one query), or a :class:`NotFoundError`."""
    with store.engine.connect() as connection:
        row = connection.execute(
            select(RUNS, _block_runs_count()).where(RUNS.c.id == run_id)
        ).first()
    if row is None:
        raise _not_found(run_id)
    return from_row(RunRecord, row), int(row.block_runs_count or 0)


def block_run_page(
    store: Store, run_id: int, *, limit: int = 100, cursor: int | None = None
) -> BlockRunPage:
    """One page of a run's block runs in creation order (``cursor``: the previous page's
    ``next_cursor``); a :class:`NotFoundError` when the run does not exist."""
    limit = _check_limit(limit)
    of_run = BLOCKS.c.pipeline_run_id == run_id
    page = select(BLOCKS).where(of_run)
    if cursor is not None:
        page = page.where(BLOCKS.c.id > cursor)
    page = page.order_by(BLOCKS.c.id).limit(limit + 1)
    with store.engine.connect() as connection:
        count = int(connection.execute(select(func.count(BLOCKS.c.id)).where(of_run)).scalar() or 0)
        rows = list(connection.execute(page))
        if count == 0 and _read(connection, run_id) is None:
            raise _not_found(run_id)
    more = len(rows) > limit
    blocks = [from_row(BlockRunRecord, row) for row in rows[:limit]]
    return BlockRunPage(blocks, count, blocks[-1].id if more and blocks else None)


def _block_not_found(block_run_id: Any) -> NotFoundError:
    return NotFoundError(
        f"block_run_id={block_run_id!r}: no such block run. A run's block runs are listed by "
        "GET pipeline_runs/{id}/block_runs (or block_runs(store, run_id))."
    )


def read_block_log(
    store: Store,
    block_run_id: int,
    *,
    tail: int | None = None,
    artifacts: ArtifactStore | None = None,
    max_bytes: int = MAX_LOG_READ_BYTES,
) -> BlockLog:
    """The log of one block run as the runner wrote it (stdout, stderr, the error), read
    through the artifact store (``artifacts``; the project's local one by default).

    ``tail=N`` returns only the last N bytes; at most ``max_bytes`` are ever returned (the
    last ones). A cut never splits a UTF-8 character. A block run that has written no log yet
    (it is waiting or running: the log is written when the block ends) has an empty one; an
    unknown block run is a :class:`NotFoundError`."""
    if tail is not None and (isinstance(tail, bool) or not isinstance(tail, int) or tail < 1):
        raise ValidationError(
            "tail", tail, "expected a number of bytes of at least 1", "Use e.g. tail=4096."
        )
    wanted = max_bytes if tail is None else min(tail, max_bytes)
    with store.engine.connect() as connection:
        row = connection.execute(
            select(
                BLOCKS,
                RUNS.c.pipeline_uuid,
                RUNS.c.pipeline_schedule_id,
                RUNS.c.execution_date,
            )
            .join(RUNS, RUNS.c.id == BLOCKS.c.pipeline_run_id)
            .where(BLOCKS.c.id == block_run_id)
        ).first()
    if row is None:
        raise _block_not_found(block_run_id)
    block = from_row(BlockRunRecord, row)
    if artifacts is None:
        from mage_nb_sched.store.artifacts import LocalArtifactStore

        artifacts = LocalArtifactStore(project_dir_of(store))
    location = artifacts.block_log(
        row.pipeline_uuid,
        execution_partition(row.pipeline_schedule_id, row.execution_date),
        block.block_uuid,
    )
    size, start, content = _read_end(location, wanted)
    # Never start in the middle of a UTF-8 character (continuation bytes are 0b10xxxxxx).
    skip = 0
    while start and skip < min(3, len(content)) and content[skip] & 0xC0 == 0x80:
        skip += 1
    return BlockLog(block, content[skip:], size, start + skip)


#: An executed notebook larger than this is not read into memory (a 413 on the REST API).
MAX_NOTEBOOK_READ_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ExecutedNotebook:
    """The executed notebook (with its outputs) of one run, as the runner wrote it."""

    run: RunRecord
    #: The ``.ipynb`` file's bytes (JSON).
    content: bytes


def read_executed_notebook(
    store: Store,
    run_id: int,
    *,
    artifacts: ArtifactStore | None = None,
    max_bytes: int = MAX_NOTEBOOK_READ_BYTES,
) -> ExecutedNotebook:
    """The executed notebook of run ``run_id``, read through the artifact store (``artifacts``;
    the project's local one by default).

    The runner writes it when the run ends, so a run that is waiting or running has none yet:
    that, like an unknown run, is a :class:`NotFoundError` saying so. A notebook over
    ``max_bytes`` is a :class:`PayloadTooLargeError` naming where it is."""
    run = get_run(store, run_id)
    if artifacts is None:
        from mage_nb_sched.store.artifacts import LocalArtifactStore

        artifacts = LocalArtifactStore(project_dir_of(store))
    location = artifacts.executed_notebook(
        run.pipeline_uuid, execution_partition(run.pipeline_schedule_id, run.execution_date)
    )
    size, start, content = _read_end(location, max_bytes + 1)
    if size == 0:
        state = str(run.status)
        raise NotFoundError(
            f"run {run_id} ({state}) has no executed notebook"
            + (
                ": it is written when the run ends. Wait for the run to finish."
                if state in ("initial", "running")
                else ": the run ended before its notebook was written, or its files were "
                "removed by retention. Run it again (PUT pipeline_runs/{id} with status initial)."
            )
        )
    if size > max_bytes or start > 0:
        raise PayloadTooLargeError(
            f"the executed notebook of run {run_id} is {size} bytes, over the {max_bytes} bytes "
            f"the API answers: open it from {location} instead."
        )
    return ExecutedNotebook(run, content)


def _read_end(location: Path | str, wanted: int) -> tuple[int, int, bytes]:
    """``(size, start, bytes from start)`` of the last ``wanted`` bytes of a file, local or at
    an fsspec URL; a missing file is ``(0, 0, b"")``."""
    if isinstance(location, Path):
        try:
            with location.open("rb") as handle:
                size = handle.seek(0, 2)
                start = max(0, size - wanted)
                handle.seek(start)
                return size, start, handle.read(wanted)
        except FileNotFoundError:
            return 0, 0, b""
    try:
        fsspec: Any = importlib.import_module("fsspec")
    except ImportError:
        raise StoreError(
            f"the block log is at {location}, which needs fsspec to be read: pip install fsspec "
            "(and the package of that file system, e.g. s3fs)."
        ) from None
    filesystem, path = fsspec.core.url_to_fs(location)
    if not filesystem.exists(path):
        return 0, 0, b""
    size = int(filesystem.size(path))
    start = max(0, size - wanted)
    with filesystem.open(path, "rb") as handle:
        handle.seek(start)
        return size, start, bytes(handle.read(wanted))


# --------------------------------------------------------------------------------------------
# Writes
# --------------------------------------------------------------------------------------------


def create_run(store: Store, *, now: datetime | None = None, **values: Any) -> RunRecord:
    """Create one run (Mage's ``PipelineRun.create``).

    ``execution_date`` defaults to now; ``pipeline_uuid`` defaults to the schedule's. A caller
    ``run_key`` makes the call idempotent: creating the same key twice returns the first run.
    """
    cleaned = _clean_run_fields(values)
    if cleaned.get("pipeline_schedule_id") is not None:
        schedule = get_schedule(store, cleaned["pipeline_schedule_id"])
        cleaned.setdefault("pipeline_uuid", schedule.pipeline_uuid)
    if not cleaned.get("pipeline_uuid"):
        raise ValidationError(
            "pipeline_uuid",
            None,
            "a run needs a pipeline",
            "Give pipeline_schedule_id=schedule.id or pipeline_uuid='my_pipeline'.",
        )
    require_pipeline_notebook(store, cleaned["pipeline_uuid"])
    if cleaned.get("execution_date") is None:
        cleaned["execution_date"] = now or utcnow()
    # Inserting a run in any status is allowed (Mage does, e.g. to record history made
    # elsewhere); only *changes* of status go through the state machine.
    cleaned.setdefault("status", PipelineRunStatus.INITIAL)
    cleaned.setdefault("run_key", manual_run_key())
    return insert_run_once(store, cleaned)[0]


def insert_run_once(store: Store, values: dict[str, Any]) -> tuple[RunRecord, bool]:
    """Insert a run unless its ``run_key`` exists; returns (run, created).

    Uniqueness is the database's job (a unique index on ``run_key``), so two processes racing
    for the same period get one row between them.
    """
    try:
        with store.write_engine.begin() as connection:
            result = connection.execute(insert(RUNS).values(**values))
            key = result.inserted_primary_key
            assert key is not None
            record = _read(connection, int(key[0]))
        assert record is not None
        return record, True
    except IntegrityError:
        with store.engine.connect() as connection:
            row = connection.execute(
                select(RUNS).where(RUNS.c.run_key == values["run_key"])
            ).first()
        if row is None:
            raise
        return from_row(RunRecord, row), False


def scheduled_run_values(
    schedule: ScheduleRecord | Any,
    execution_date: datetime,
    variables: dict[str, Any] | None = None,
    *,
    schedule_timing: timing.ScheduleTiming | None = None,
) -> dict[str, Any]:
    """Column values of ``schedule``'s run for the period starting at ``execution_date``
    (``schedule_timing``: the schedule's timing when the caller has it already).

    The run carries Mage's ``interval_*`` variables plus ``ds``/``hr`` as ISO strings.
    """
    facts = schedule_timing or timing_of(schedule)
    run_variables = dict(variables or {})
    for key, value in timing.interval_variables(facts, execution_date).items():
        run_variables[key] = value.isoformat() if isinstance(value, datetime) else value
    run_variables.update(timing.date_variables(execution_date, facts.timezone))
    return {
        "pipeline_schedule_id": schedule.id,
        "pipeline_uuid": schedule.pipeline_uuid,
        "execution_date": execution_date,
        "status": PipelineRunStatus.INITIAL,
        "variables": run_variables,
        "run_key": scheduled_run_key(schedule.id, execution_date),
    }


def create_scheduled_run(
    store: Store,
    schedule: ScheduleRecord | Any,
    execution_date: datetime,
    variables: dict[str, Any] | None = None,
) -> tuple[RunRecord, bool]:
    """The run of ``schedule`` for the period starting at ``execution_date`` (at most one)."""
    return insert_run_once(store, scheduled_run_values(schedule, execution_date, variables))


def update_run(store: Store, run_id: int, **values: Any) -> RunRecord:
    """Change a run's status, timestamps, variables, metrics or SLA flag.

    A status change must be one the run state machine allows from the run's current status
    (else :class:`~mage_nb_sched.core.run_states.InvalidTransition`); cancelling or failing a
    run ends it as the scheduler does (its open block runs are closed with it)."""
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
    if sla_breached is not None:
        cleaned["sla_breached"] = bool(sla_breached)
    wanted = cleaned.get("status")
    now = utcnow()
    with store.write_engine.begin() as connection:
        current = _read(connection, run_id)
        if current is None:
            raise _not_found(run_id)
        if wanted is not None and wanted != current.status:
            run_states.check_run(current.status, wanted)
            if wanted in (PipelineRunStatus.CANCELLED, PipelineRunStatus.FAILED):
                reason = (cleaned.get("metrics") or {}).get(
                    "error"
                ) or f"{wanted.value} by hand (was {current.status.value})"
                end_run(
                    connection,
                    run_id,
                    wanted.value,
                    str(reason),
                    cleaned.get("completed_at") or now,
                    from_statuses=(current.status.value,),
                )
                cleaned.pop("status")
                cleaned.pop("completed_at", None)
                if "metrics" in cleaned:
                    cleaned["metrics"] = {**cleaned["metrics"], "error": str(reason)}
            elif wanted == PipelineRunStatus.INITIAL:
                _retry(connection, current, now)
                cleaned.pop("status")
        if cleaned:
            statement = update(RUNS).where(RUNS.c.id == run_id)
            if "status" in cleaned:
                statement = statement.where(RUNS.c.status == current.status.value)
            written = connection.execute(statement.values(**cleaned))
            if written.rowcount != 1:
                raise run_states.InvalidTransition(
                    "pipeline run", "changed meanwhile", str(wanted), ()
                )
        record = _read(connection, run_id)
    assert record is not None
    return record


def _retry(connection: Connection, run: RunRecord, now: datetime) -> None:
    """The retry path (failed | cancelled → initial): the run is executed again from scratch;
    its earlier end stays in ``metrics['retried']``."""
    metrics = dict(run.metrics or {})
    metrics["retried"] = [
        *metrics.get("retried", []),
        {"at": now.isoformat(), "was": run.status.value, "error": metrics.pop("error", None)},
    ]
    written = connection.execute(
        update(RUNS)
        .where(RUNS.c.id == run.id, RUNS.c.status == run.status.value)
        .values(
            status=PipelineRunStatus.INITIAL.value,
            owner=None,
            claim_token=None,
            started_at=None,
            completed_at=None,
            finalized_at=None,
            sla_breached=False,
            metrics=metrics,
            updated_at=now,
        )
    )
    if written.rowcount != 1:
        raise run_states.InvalidTransition("pipeline run", "changed meanwhile", "initial", ())
    connection.execute(delete(BLOCKS).where(BLOCKS.c.pipeline_run_id == run.id))


#: The fields a run made by hand ("run now", ``POST pipeline_runs``) may be given.
RUN_NOW_FIELDS = {"pipeline_schedule_id", "pipeline_uuid", "variables", "execution_date"}


def run_now(store: Store, *, now: datetime | None = None, **values: Any) -> RunRecord:
    """Create a run to execute at once: of a schedule (``pipeline_schedule_id``) or of a
    notebook on its own (``pipeline_uuid``), with ``variables`` that the runner merges over the
    schedule's (pipeline globals < schedule < run). Only :data:`RUN_NOW_FIELDS` are accepted;
    a ``pipeline_uuid`` that is not the schedule's pipeline is refused. Nothing is written
    when any value is wrong."""
    fields.unknown_fields(values, RUN_NOW_FIELDS, "run-now")
    cleaned = _clean_run_fields(values)
    schedule_id = cleaned.get("pipeline_schedule_id")
    if schedule_id is not None and cleaned.get("pipeline_uuid") is not None:
        schedule = get_schedule(store, schedule_id)
        if cleaned["pipeline_uuid"] != schedule.pipeline_uuid:
            raise ValidationError(
                "pipeline_uuid",
                values["pipeline_uuid"],
                f"schedule {schedule_id} runs pipeline {schedule.pipeline_uuid!r}",
                "Leave pipeline_uuid out to run the schedule's pipeline, or leave "
                "pipeline_schedule_id out to run the notebook on its own.",
            )
    return create_run(store, now=now, **values)


def cancel_run(store: Store, run_id: int) -> RunRecord:
    """Cancel a run that has not finished (``initial | running → cancelled``; its open block
    runs are closed and the scheduler stops its kernel). Cancelling a cancelled run changes
    nothing; any other finished run is an
    :class:`~mage_nb_sched.core.run_states.InvalidTransition` naming both statuses."""
    return update_run(store, run_id, status=PipelineRunStatus.CANCELLED)


def retry_run(store: Store, run_id: int, *, now: datetime | None = None) -> RunRecord:
    """Run a failed or cancelled run again from scratch: the state machine's retry path
    (``failed | cancelled → initial``), its block runs dropped and its earlier end kept in
    ``metrics['retried']``. The scheduler executes it like a new run. Any other status is an
    :class:`~mage_nb_sched.core.run_states.InvalidTransition` naming both statuses."""
    sources, target = run_states.run_path("retry")
    with store.write_engine.begin() as connection:
        current = _read(connection, run_id)
        if current is None:
            raise _not_found(run_id)
        status = getattr(current.status, "value", str(current.status))
        if status not in sources:
            if status == PipelineRunStatus.COMPLETED.value:
                advice = "A completed run is not retried; start a new run (POST pipeline_runs)."
            else:
                advice = "It has not finished: cancel it first, or wait for it to end."
            raise run_states.InvalidTransition(
                "pipeline run",
                status,
                target,
                run_states.RUN_TRANSITIONS.get(status, ()),
                f"Only a failed or cancelled run can be retried. {advice}",
            )
        _retry(connection, current, now or utcnow())
        record = _read(connection, run_id)
    assert record is not None
    return record


#: Mage's ``pipeline_run_action`` that runs a run again (here: the whole run, from scratch).
RETRY_ACTION = "retry_blocks"
#: What ``PUT pipeline_runs/{id}`` may change.
CHANGE_FIELDS = {"status", "pipeline_run_action"}


def change_run(store: Store, run_id: int, **values: Any) -> tuple[RunRecord, int]:
    """Change a run as Mage's ``PUT pipeline_runs/{id}`` does, and return it with its number
    of block runs: ``status='cancelled'`` cancels it (:func:`cancel_run`); ``status='initial'``
    or ``pipeline_run_action='retry_blocks'`` runs a failed or cancelled run again
    (:func:`retry_run`). Other statuses are the scheduler's to set (a
    :class:`ValidationError`); a change the run's status does not allow is an
    :class:`~mage_nb_sched.core.run_states.InvalidTransition` naming both statuses."""
    fields.unknown_fields(values, CHANGE_FIELDS, "changeable pipeline run")
    retry = False
    if values.get("pipeline_run_action") is not None:
        action = values["pipeline_run_action"]
        if action != RETRY_ACTION:
            raise ValidationError(
                "pipeline_run_action",
                action,
                "unknown run action",
                f"Use pipeline_run_action='{RETRY_ACTION}' to run a failed or cancelled run again.",
            )
        retry = True
    wanted = None
    if values.get("status") is not None:
        wanted = fields.enum_value(values["status"], PipelineRunStatus, "status")
        if wanted not in (PipelineRunStatus.CANCELLED, PipelineRunStatus.INITIAL):
            raise ValidationError(
                "status",
                wanted.value,
                "a run is only cancelled or retried by hand (its executor sets the others)",
                "Use status='cancelled' to cancel it or status='initial' to run it again.",
            )
        if retry and wanted != PipelineRunStatus.INITIAL:
            raise ValidationError(
                "status",
                wanted.value,
                f"pipeline_run_action={RETRY_ACTION!r} runs the run again; it cannot also be "
                f"{wanted.value}",
                "Send either the action or the status, not both.",
            )
        retry = retry or wanted == PipelineRunStatus.INITIAL
    if retry:
        retry_run(store, run_id)
    elif wanted == PipelineRunStatus.CANCELLED:
        cancel_run(store, run_id)
    return run_detail(store, run_id)


def delete_run(store: Store, run_id: int) -> None:
    """Delete a run; its block runs go with it (foreign-key cascade)."""
    with store.write_engine.begin() as connection:
        connection.execute(delete(RUNS).where(RUNS.c.id == run_id))


# Async twins: the same calls, with the database work off the caller's event loop.
aget_run = twin(get_run)
alist_runs = twin(list_runs)
ablock_runs = twin(block_runs)
acreate_run = twin(create_run)
aupdate_run = twin(update_run)
adelete_run = twin(delete_run)
acount_runs = twin(count_runs)
apage_runs = twin(page_runs)
arun_detail = twin(run_detail)
ablock_run_page = twin(block_run_page)
aread_block_log = twin(read_block_log)
aread_executed_notebook = twin(read_executed_notebook)
arun_now = twin(run_now)
acancel_run = twin(cancel_run)
aretry_run = twin(retry_run)
achange_run = twin(change_run)
