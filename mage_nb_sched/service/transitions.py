"""Connection-level writers of pipeline-run and block-run statuses.

Every status change of a run or a block run is one ``UPDATE`` built here: the change asked for
is checked against the run state machine (:mod:`mage_nb_sched.core.run_states`; a change it
does not list raises :class:`~mage_nb_sched.core.run_states.InvalidTransition` naming both
statuses), and the statement is fenced on the statuses it may start from
(``WHERE status IN (...)``), so a row that moved on meanwhile is left alone and the writer
learns it from the row count. Writes of an executor are also fenced on its claim token.

The functions work in the caller's transaction (a :class:`~sqlalchemy.Connection`) unless they
take a :class:`~mage_nb_sched.store.engine.Store`. The runner, the executors, the scheduler's
passes and the service all use them.

Because every writer is fenced, repeating one is harmless: :func:`database_unavailable` tells a
database that could not answer (locked past its busy timeout, a dropped connection), after which
the same write may be tried again, from an error that a retry would only repeat.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, delete, exists, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from mage_nb_sched.core import run_states
from mage_nb_sched.core.enums import BlockRunStatus, PipelineRunStatus
from mage_nb_sched.store import schema
from mage_nb_sched.store.engine import Store

RUNS = schema.pipeline_run
BLOCKS = schema.block_run

_RUNNING = PipelineRunStatus.RUNNING.value
_INITIAL = PipelineRunStatus.INITIAL.value

__all__ = [
    "BLOCKS",
    "RUNS",
    "block_claimed_with",
    "database_unavailable",
    "end_run",
    "end_runs",
    "insert_runs_ignoring_duplicates",
    "requeue_run",
    "set_block_status",
    "set_run_blocks_status",
    "set_run_status",
    "status_value",
    "take_run",
]


def status_value(status: object) -> str:
    """The plain string of a status (an enum member or a string)."""
    return str(getattr(status, "value", status))


#: Driver messages (lower case) of a database that could not answer now: SQLite's lock errors
#: (``SQLITE_BUSY`` past the busy timeout, ``SQLITE_LOCKED``) and lost or refused connections.
_UNAVAILABLE_MESSAGES = (
    "database is locked",
    "database table is locked",
    "database schema is locked",
    "could not connect",
    "connection refused",
    "connection reset",
    "connection timed out",
    "server closed the connection",
    "terminating connection",
    "lost connection",
    "server has gone away",
)
#: SQLSTATEs that mean "try again": serialization failure, deadlock, lock not available,
#: administrator/crash shutdown, cannot connect now, too many connections (class 08 too).
_UNAVAILABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"})


def database_unavailable(err: BaseException) -> bool:
    """Whether ``err`` means the database could not answer *now* — locked or busy past its
    timeout, a dropped or refused connection, a serialization failure or deadlock, no pooled
    connection free — so the same (fenced) write may be tried again. False for every other error
    (a missing table, a constraint, a bug): retrying those would never end."""
    if isinstance(err, PoolTimeoutError):
        return True
    if not isinstance(err, DBAPIError):
        return False
    if err.connection_invalidated:
        return True
    code = getattr(err.orig, "pgcode", None) or getattr(err.orig, "sqlstate", None)
    if isinstance(code, str) and (code in _UNAVAILABLE_SQLSTATES or code.startswith("08")):
        return True
    if not isinstance(err, OperationalError):
        return False
    message = str(err.orig).lower()
    return any(part in message for part in _UNAVAILABLE_MESSAGES)


def block_claimed_with(token: str) -> ColumnElement[bool]:
    """For an ``UPDATE`` of block runs: their run is still claimed with ``token``. A subquery
    correlated on the block's ``pipeline_run_id`` (one primary-key lookup per block row)."""
    return (
        exists()
        .where(RUNS.c.id == BLOCKS.c.pipeline_run_id, RUNS.c.claim_token == token)
        .correlate(BLOCKS)
    )


# --------------------------------------------------------------------------------------------
# The status writers
# --------------------------------------------------------------------------------------------


def set_run_status(
    connection: Connection,
    run_id: int,
    wanted: object,
    *,
    now: datetime,
    from_statuses: Iterable[object] | None = None,
    claimed_with: str | None = None,
    where: Sequence[ColumnElement[bool]] = (),
    **values: Any,
) -> bool:
    """Move run ``run_id`` to ``wanted`` (and write ``values``, ``updated_at=now``) if it is in
    one of ``from_statuses`` (default: every status the table allows ``wanted`` from), still
    claimed with ``claimed_with`` and matches ``where``. Returns whether the row changed.

    Raises :class:`~mage_nb_sched.core.run_states.InvalidTransition` when the table does not
    allow ``from → wanted`` for one of ``from_statuses`` (or ``wanted`` is no run status)."""
    sources = run_states.run_fence(wanted, from_statuses)
    statement = update(RUNS).where(RUNS.c.id == run_id, RUNS.c.status.in_(sources), *where)
    if claimed_with is not None:
        # A plain condition on the row being updated (a primary-key search), never a subquery.
        statement = statement.where(RUNS.c.claim_token == claimed_with)
    result = connection.execute(
        statement.values(status=status_value(wanted), updated_at=now, **values)
    )
    return bool(result.rowcount == 1)


def set_block_status(
    connection: Connection,
    block_run_id: int,
    wanted: object,
    *,
    now: datetime,
    from_statuses: Iterable[object] | None = None,
    claimed_with: str | None = None,
    **values: Any,
) -> bool:
    """:func:`set_run_status` for one block run; ``claimed_with`` fences on its run's claim."""
    sources = run_states.block_fence(wanted, from_statuses)
    statement = update(BLOCKS).where(BLOCKS.c.id == block_run_id, BLOCKS.c.status.in_(sources))
    if claimed_with is not None:
        statement = statement.where(block_claimed_with(claimed_with))
    result = connection.execute(
        statement.values(status=status_value(wanted), updated_at=now, **values)
    )
    return bool(result.rowcount == 1)


def set_run_blocks_status(
    connection: Connection,
    run_id: int,
    wanted: object,
    *,
    now: datetime,
    from_statuses: Iterable[object] | None = None,
    claimed_with: str | None = None,
    **values: Any,
) -> int:
    """Move every block run of run ``run_id`` that is in one of ``from_statuses`` to
    ``wanted`` (checked like :func:`set_block_status`). Returns how many changed."""
    sources = run_states.block_fence(wanted, from_statuses)
    statement = update(BLOCKS).where(
        BLOCKS.c.pipeline_run_id == run_id, BLOCKS.c.status.in_(sources)
    )
    if claimed_with is not None:
        statement = statement.where(block_claimed_with(claimed_with))
    result = connection.execute(
        statement.values(status=status_value(wanted), updated_at=now, **values)
    )
    return int(result.rowcount or 0)


# --------------------------------------------------------------------------------------------
# Ending, re-queuing, taking and inserting runs
# --------------------------------------------------------------------------------------------


def end_run(
    connection: Connection,
    run_id: int,
    status: str,
    reason: str,
    now: datetime,
    *,
    from_statuses: tuple[str, ...] = (_RUNNING,),
) -> bool:
    """Give a run that is still in one of ``from_statuses`` its final ``status`` with ``reason``
    (in ``metrics['error']``), in the caller's transaction: the running block gets the same
    status and reason, blocks that never ran are cancelled. Fenced on the status: a run that
    finished meanwhile is left alone. Returns whether the run was ended here.

    The one way a run is ended from outside its executor: a cancel (one run or a whole
    backfill, run by run), a timeout, a skip, recovery of a dead owner's run."""
    target = status_value(status)
    if target not in run_states.RUN_FINISHED:
        raise run_states.InvalidTransition(
            "pipeline run",
            ", ".join(status_value(s) for s in from_statuses) or "no status",
            target,
            run_states.RUN_FINISHED,
            "end_run gives a run a final status: completed, failed or cancelled.",
        )
    sources = run_states.run_fence(target, from_statuses)
    row = connection.execute(
        select(RUNS.c.metrics).where(RUNS.c.id == run_id, RUNS.c.status.in_(sources))
    ).first()
    if row is None:
        return False
    metrics = {**(row[0] or {}), "error": reason}
    if not set_run_status(
        connection,
        run_id,
        target,
        now=now,
        from_statuses=sources,
        completed_at=now,
        metrics=metrics,
    ):
        return False
    block_status = (
        BlockRunStatus.FAILED.value
        if target == PipelineRunStatus.FAILED.value
        else BlockRunStatus.CANCELLED.value
    )
    for current, final, error in (
        (BlockRunStatus.RUNNING.value, block_status, reason),
        (BlockRunStatus.INITIAL.value, BlockRunStatus.CANCELLED.value, None),
        (BlockRunStatus.QUEUED.value, BlockRunStatus.CANCELLED.value, None),
    ):
        set_run_blocks_status(
            connection,
            run_id,
            final,
            now=now,
            from_statuses=(current,),
            completed_at=now,
            error=error,
        )
    return True


def end_runs(
    connection: Connection,
    run_ids: Iterable[int],
    status: str,
    reason: str,
    now: datetime,
    *,
    from_statuses: tuple[str, ...] = (_RUNNING,),
) -> list[int]:
    """:func:`end_run` for each of ``run_ids`` (a backfill cancel): the ids ended here."""
    return [
        run_id
        for run_id in run_ids
        if end_run(connection, run_id, status, reason, now, from_statuses=from_statuses)
    ]


def requeue_run(connection: Connection, run_id: int, reason: str, now: datetime) -> bool:
    """Put a run whose executor stopped (scheduler shutdown or crash) back to ``initial`` so it
    is executed again (``running → initial``); counts the attempt and keeps the reason in
    ``metrics['requeued']``. A run still ``initial`` is only released (owner and claim
    cleared, the attempt counted): that is no status change. Its block runs are dropped."""
    row = connection.execute(
        select(RUNS.c.status, RUNS.c.metrics, RUNS.c.attempts).where(
            RUNS.c.id == run_id, RUNS.c.status.in_([_RUNNING, _INITIAL])
        )
    ).first()
    if row is None:
        return False
    current = status_value(row[0])
    metrics = dict(row[1] or {})
    metrics["requeued"] = [*metrics.get("requeued", []), {"at": now.isoformat(), "why": reason}]
    values: dict[str, Any] = {
        "owner": None,
        "claim_token": None,
        "started_at": None,
        "attempts": int(row[2] or 0) + 1,
        "metrics": metrics,
    }
    if current == _RUNNING:
        written = set_run_status(
            connection, run_id, _INITIAL, now=now, from_statuses=(_RUNNING,), **values
        )
    else:
        written = (
            connection.execute(
                update(RUNS)
                .where(RUNS.c.id == run_id, RUNS.c.status == _INITIAL)
                .values(updated_at=now, **values)
            ).rowcount
            == 1
        )
    if not written:
        return False
    # The next claim creates them afresh; none may stay "running" meanwhile.
    connection.execute(delete(BLOCKS).where(BLOCKS.c.pipeline_run_id == run_id))
    return True


def take_run(store: Store, run_id: int, owner: str) -> bool:
    """Mark an ``initial`` run nobody has taken as ``owner``'s, so the scheduler leaves it alone.
    False when it is taken already (by the scheduler, or it is no longer initial). No status
    change: the run stays ``initial`` until its executor claims it."""
    with store.write_engine.begin() as connection:
        taken = connection.execute(
            update(RUNS)
            .where(RUNS.c.id == run_id, RUNS.c.status == _INITIAL, RUNS.c.owner.is_(None))
            .values(owner=owner)
        )
        return bool(taken.rowcount == 1)


def insert_runs_ignoring_duplicates(
    connection: Connection, rows: list[dict[str, Any]]
) -> list[int]:
    """Insert many runs in the caller's transaction; rows whose ``run_key`` exists are skipped.

    Returns the ids of the rows inserted. The unique index on ``run_key`` decides, so two
    schedulers (or a pass repeated after a crash) can never create a period's run twice.
    """
    if not rows:
        return []
    dialect = connection.dialect.name
    if dialect in ("sqlite", "postgresql"):
        from sqlalchemy.dialects import postgresql, sqlite

        insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        statement = (
            insert(RUNS).on_conflict_do_nothing(index_elements=["run_key"]).returning(RUNS.c.id)
        )
        return [int(row[0]) for row in connection.execute(statement, rows)]
    inserted: list[int] = []
    for row in rows:  # other databases: one savepoint per row
        try:
            with connection.begin_nested():
                result = connection.execute(RUNS.insert().values(**row))
                key = result.inserted_primary_key
                assert key is not None
                inserted.append(int(key[0]))
        except IntegrityError:
            continue
    return inserted
