"""Executes one pipeline run: the notebook as saved now, block by block, on a fresh kernel.

The runner owns a run from ``initial`` to a final status:

1. claims the run with a conditional update (``initial → running``; a run started elsewhere is
   left alone),
2. reads the notebook once (content hash kept), creates one ``BlockRun`` per block,
3. injects the run's variables papermill-style and activates the block decorators in the kernel,
4. executes cell by cell with nbclient's async API — retries with backoff, block and run
   timeouts, cancellation (interrupt, then kill after a grace period) — recording status, times,
   errors with tracebacks and per-block logs,
5. saves the executed notebook and the final status, and always shuts the kernel down.

User code runs inside an error boundary: whatever it does, the run ends with a recorded status
and the kernel is gone.

The database is never used on the event loop: each run's reads and writes go, in order, to a
small thread pool (:class:`_RunDatabase`), so one contended write stalls only its own run, and
a write the database cannot answer (locked past its busy timeout, a dropped connection) is
retried — fenced as always on the claim token and the statuses it starts from — instead of
turning a finished run into a failed one.

Output is capped while it streams in from the kernel: each cell keeps at most
``max_cell_output_bytes`` of output and each block log at most ``max_block_log_bytes``, with a
"… output truncated at N bytes (M bytes dropped) …" marker where the rest was cut.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import nbformat
from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import make_url

from mage_nb_sched.core import run_states
from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.core.enums import BlockRunStatus, PipelineRunStatus
from mage_nb_sched.core.errors import MageNbSchedError, ValidationError
from mage_nb_sched.core.partitions import execution_partition
from mage_nb_sched.core.project import DB_URL_ENV, PROJECT_DIR_ENV
from mage_nb_sched.core.settings import with_defaults
from mage_nb_sched.execution import reaping
from mage_nb_sched.execution.kernels import KernelError, execute_silently
from mage_nb_sched.execution.output_caps import (
    DEFAULT_MAX_BLOCK_LOG_BYTES,
    DEFAULT_MAX_CELL_OUTPUT_BYTES,
    MAX_OUTPUT_CAP_BYTES,
    MIN_OUTPUT_CAP_BYTES,
)
from mage_nb_sched.execution.pipelines import Block, Pipeline, load_pipeline
from mage_nb_sched.execution.reaping import describe_exit
from mage_nb_sched.execution.variables import (
    builtin_variables,
    injection_source,
    insert_injected_cell,
    merge_variables,
    pipeline_global_variables,
)
from mage_nb_sched.service.transitions import (
    block_claimed_with,
    database_unavailable,
    end_run,
    set_block_status,
    set_run_blocks_status,
    set_run_status,
    status_value,
    take_run,
)
from mage_nb_sched.store import artifacts, schema
from mage_nb_sched.store.engine import Store
from mage_nb_sched.store.leases import direct_owner

log = logging.getLogger(__name__)

RUNS = schema.pipeline_run
SCHEDULES = schema.pipeline_schedule
BLOCKS = schema.block_run

_INITIAL = PipelineRunStatus.INITIAL.value
_RUNNING = PipelineRunStatus.RUNNING.value
_BLOCK_FINAL = tuple(sorted(set(run_states.BLOCK_TRANSITIONS) - run_states.BLOCK_UNFINISHED))

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: How often a running run checks whether someone cancelled it in the database (seconds).
CANCEL_POLL_SECONDS = 0.25
#: ``RunOutcome.reason`` when the run does not exist (its ``status`` is then None).
NO_SUCH_RUN = "no such run (it was deleted, or never created)"
#: The failure reason of a run whose driver (worker, ``await run.execute()``) stopped under it.
WORKER_STOPPED = "the worker stopped while the run executed"

#: An error output (the traceback) is always kept, trimmed to this (or the cell cap if smaller).
MAX_ERROR_BYTES = 64 * 1024

#: Threads of a runner's database pool (one run's calls use one at a time, in order).
DB_THREADS = 4
#: A database call that cannot get an answer is retried after a pause growing from the first
#: to the longest (seconds, with jitter); a WARNING is logged on the first failed attempt and
#: then once every ``RETRY_WARN_EVERY`` attempts.
RETRY_FIRST_DELAY = 0.05
RETRY_MAX_DELAY = 2.0
RETRY_WARN_EVERY = 10

_T = TypeVar("_T")


class KernelLike(Protocol):
    """What the runner needs from a started kernel (a ``kernels.KernelHandle``)."""

    km: Any
    kc: Any
    pid: int | None

    async def shutdown(self) -> None: ...


class KernelSource(Protocol):
    """Hands out fresh, ready kernels (a warm
    :class:`~mage_nb_sched.execution.kernels.KernelPool`)."""

    async def acquire(self) -> Any: ...


@dataclass
class BlockOutcome:
    """What happened to one block."""

    block_uuid: str
    status: str
    seconds: float | None = None
    attempts: int = 0
    error: str | None = None


@dataclass
class RunOutcome:
    """The final state of a run as the runner left it.

    ``status`` is the run's status in the database (a :class:`PipelineRunStatus` value), or
    None when there is no such run (deleted, or never created): ``reason`` then says so.
    """

    run_id: int
    status: str | None
    reason: str | None = None
    blocks: list[BlockOutcome] = field(default_factory=list)
    #: Seconds from the run's creation to its first cell starting (None if none started).
    first_cell_latency: float | None = None


class _RunStopped(Exception):
    """The run must stop now: cancelled or timed out (the kernel has been dealt with)."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def strip_ansi(text: str) -> str:
    """Tracebacks from IPython carry colour codes; logs and the database get plain text."""
    return _ANSI.sub("", text)


# --------------------------------------------------------------------------------------------
# Database steps (each one short transaction)
# --------------------------------------------------------------------------------------------


def new_claim_token() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class RunToExecute:
    """What the runner reads of a run and its schedule before executing it (one query)."""

    id: int
    pipeline_uuid: str
    pipeline_schedule_id: int | None
    execution_date: datetime
    created_at: datetime
    variables: dict[str, Any] | None
    event_variables: dict[str, Any] | None
    schedule_name: str | None
    schedule_variables: dict[str, Any] | None
    schedule_settings: dict[str, Any] | None

    @property
    def execution_partition(self) -> str:
        return execution_partition(self.pipeline_schedule_id, self.execution_date)


_READ_RUN = (
    select(
        RUNS.c.id,
        RUNS.c.pipeline_uuid,
        RUNS.c.pipeline_schedule_id,
        RUNS.c.execution_date,
        RUNS.c.created_at,
        RUNS.c.variables,
        RUNS.c.event_variables,
        SCHEDULES.c.name,
        SCHEDULES.c.variables,
        SCHEDULES.c.settings,
    )
    .select_from(RUNS.outerjoin(SCHEDULES, SCHEDULES.c.id == RUNS.c.pipeline_schedule_id))
    .where(RUNS.c.id == bindparam("run_id"))
)


def read_run(store: Store, run_id: int) -> RunToExecute | None:
    """The run with its schedule's name, variables and settings; None if there is no such run."""
    with store.engine.connect() as connection:
        row = connection.execute(_READ_RUN, {"run_id": run_id}).first()
    if row is None:
        return None
    return RunToExecute(
        id=int(row[0]),
        pipeline_uuid=str(row[1]),
        pipeline_schedule_id=row[2],
        execution_date=row[3],
        created_at=row[4],
        variables=row[5],
        event_variables=row[6],
        schedule_name=row[7],
        schedule_variables=row[8],
        schedule_settings=row[9],
    )


def claim_run(
    store: Store,
    run_id: int,
    now: datetime,
    blocks: list[Block] | None = None,
    token: str | None = None,
    *,
    resume: bool = False,
) -> dict[str, int] | None:
    """``initial → running`` only if still initial, and (re)create the run's block runs, in one
    transaction. ``token`` (default: a new one) fences every later write of this execution.
    Returns ``{block_uuid: block_run_id}``, or None when the run was not initial (someone else
    owns it; it is left alone).

    With ``resume`` (and ``token``), a run already ``running`` under ``token`` counts as
    claimed and its block runs are returned: a retried claim whose first attempt committed but
    whose answer was lost (a dropped connection) finds its own claim."""
    with store.write_engine.begin() as connection:
        if not set_run_status(
            connection,
            run_id,
            _RUNNING,
            now=now,
            from_statuses=(_INITIAL,),
            started_at=now,
            claim_token=token or new_claim_token(),
        ):
            if not (resume and token):
                return None
            mine = connection.execute(
                select(RUNS.c.id).where(
                    RUNS.c.id == run_id, RUNS.c.status == _RUNNING, RUNS.c.claim_token == token
                )
            ).first()
            if mine is None:
                return None
            rows = connection.execute(
                select(BLOCKS.c.id, BLOCKS.c.block_uuid).where(BLOCKS.c.pipeline_run_id == run_id)
            )
            return {str(uuid): int(block_run_id) for block_run_id, uuid in rows}
        # A run that is executed again (after a crash) starts its blocks afresh.
        connection.execute(delete(BLOCKS).where(BLOCKS.c.pipeline_run_id == run_id))
        if blocks:
            connection.execute(
                insert(BLOCKS),
                [
                    {
                        "pipeline_run_id": run_id,
                        "block_uuid": block.uuid,
                        "status": BlockRunStatus.INITIAL.value,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for block in blocks
                ],
            )
        rows = connection.execute(
            select(BLOCKS.c.id, BLOCKS.c.block_uuid).where(BLOCKS.c.pipeline_run_id == run_id)
        )
        return {str(uuid): int(block_run_id) for block_run_id, uuid in rows}


def _finish_run(
    store: Store,
    run_id: int,
    status: str,
    now: datetime,
    metrics: dict[str, Any],
    token: str | None = None,
) -> str | None:
    """``running → status`` unless someone already finished/cancelled the run (or, with
    ``token``, claimed it again since); the metrics are merged in either way (a run ended
    elsewhere keeps its status). Returns the status the run ends with, None if it is gone."""
    with store.write_engine.begin() as connection:
        row = connection.execute(
            select(RUNS.c.status, RUNS.c.metrics, RUNS.c.claim_token).where(RUNS.c.id == run_id)
        ).first()
        if row is None:
            return None
        current = status_value(row[0])
        if token is not None and row[2] != token:
            return current  # another execution owns it now
        existing = dict(row[1] or {})
        existing.update(metrics)
        # Fenced on the status read in this (write-locked) transaction: a cancel that landed
        # meanwhile is never overwritten.
        if current == _RUNNING:
            if set_run_status(
                connection,
                run_id,
                status,
                now=now,
                from_statuses=(_RUNNING,),
                claimed_with=token,
                completed_at=now,
                metrics=existing,
            ):
                return status_value(status)
            return current
        # Ended elsewhere (cancelled, timed out): no status change, the record is kept.
        statement = update(RUNS).where(RUNS.c.id == run_id, RUNS.c.status == current)
        if token is not None:
            statement = statement.where(RUNS.c.claim_token == token)
        connection.execute(statement.values(metrics=existing, updated_at=now))
        return current


def fail_run(
    store: Store,
    run_id: int,
    reason: str,
    now: datetime,
    *,
    token: str | None = None,
    owner: str | None = None,
) -> bool:
    """Fail a run that is still ``running`` because whatever drove it stopped (a dead worker, a
    stopping worker, an internal error): the run and its running block get ``failed`` with the
    reason, blocks that never ran are cancelled. A run already finished — or, with ``token`` /
    ``owner``, claimed or owned by someone else since — is left as it is. Returns whether the
    run was failed here."""
    with store.write_engine.begin() as connection:
        fence = select(RUNS.c.claim_token, RUNS.c.owner).where(RUNS.c.id == run_id)
        row = connection.execute(fence).first()
        if row is None:
            return False
        if (token is not None and row[0] != token) or (owner is not None and row[1] != owner):
            return False
        return end_run(connection, run_id, PipelineRunStatus.FAILED.value, reason, now)


def _set_block(store: Store, block_run_id: int, token: str | None, **values: Any) -> bool:
    """Write a block run of the execution holding ``token``: with ``status``, a transition
    checked against the run state machine and fenced on its sources (a block a cancel or a
    timeout closed meanwhile keeps its status and error; only a missing record — metrics — is
    filled in); without, plain values. Returns whether the block changed."""
    now = utcnow()
    wanted = values.pop("status", None)
    with store.write_engine.begin() as connection:
        if wanted is not None:
            if set_block_status(
                connection, block_run_id, wanted, now=now, claimed_with=token, **values
            ):
                return True
            if "metrics" not in values:
                return False
            statement = update(BLOCKS).where(
                BLOCKS.c.id == block_run_id,
                BLOCKS.c.metrics.is_(None),
                BLOCKS.c.status.in_(_BLOCK_FINAL),
            )
            values = {"metrics": values["metrics"]}
        else:
            statement = update(BLOCKS).where(BLOCKS.c.id == block_run_id)
        if token is not None:
            statement = statement.where(block_claimed_with(token))
        written = connection.execute(statement.values(updated_at=now, **values))
        return bool(written.rowcount == 1)


def _cancel_remaining(store: Store, run_id: int, now: datetime, token: str | None) -> None:
    """Cancel the blocks that never ran."""
    with store.write_engine.begin() as connection:
        set_run_blocks_status(
            connection,
            run_id,
            BlockRunStatus.CANCELLED.value,
            now=now,
            from_statuses=(BlockRunStatus.INITIAL.value, BlockRunStatus.QUEUED.value),
            claimed_with=token,
            completed_at=now,
        )


def _read_claim(store: Store, run_id: int) -> tuple[str, str | None] | None:
    """(status, claim token) of a run, None if it is gone."""
    with store.engine.connect() as connection:
        row = connection.execute(
            select(RUNS.c.status, RUNS.c.claim_token).where(RUNS.c.id == run_id)
        ).first()
    if row is None:
        return None
    return status_value(row[0]), row[1]


def _read_status(store: Store, run_id: int) -> str | None:
    """A run's status, None if it is gone."""
    with store.engine.connect() as connection:
        value = connection.execute(select(RUNS.c.status).where(RUNS.c.id == run_id)).scalar()
    return None if value is None else status_value(value)


def database_name(store: Store) -> str:
    """The database as log lines name it: a SQLite file's path, else the URL without password."""
    url = make_url(store.url)
    if store.is_sqlite and url.database:
        return url.database
    return url.render_as_string(hide_password=True)


def _retry_delay(attempt: int) -> float:
    """Pause after failed attempt ``attempt`` (1, 2, ...): doubling, capped, with jitter so
    workers waiting for the same lock do not retry in step."""
    base = min(RETRY_MAX_DELAY, RETRY_FIRST_DELAY * 2.0 ** min(attempt - 1, 16))
    return base * random.uniform(0.5, 1.0)


def _error_text(err: BaseException) -> str:
    """The driver's message (``database is locked``), without SQL or parameters."""
    return str(getattr(err, "orig", None) or err).strip().splitlines()[0][:300]


class _RunDatabase:
    """One run's database work, never on the event loop.

    Calls go to the runner's thread pool one after the other, in the order they were made —
    also when a caller was cancelled mid-call: the next call waits for the one still running
    in its thread (a write of a stopping run lands before the failure recorded for it).

    A call the database cannot answer (:func:`database_unavailable`: locked past the busy
    timeout, a lost connection) is retried until it answers, a WARNING naming the run and the
    database once every :data:`RETRY_WARN_EVERY` attempts. Every writer is fenced on the claim
    token and the statuses it starts from, so a repeat is harmless and a run taken over
    elsewhere is never overwritten. Only a cancel of the caller ends the retrying.
    """

    def __init__(self, store: Store, pool: ThreadPoolExecutor, run_id: int) -> None:
        self.store = store
        self.pool = pool
        self.run_id = run_id
        self._last: asyncio.Future[Any] | None = None

    async def __call__(
        self, what: str, function: Callable[..., _T], *args: Any, **kwargs: Any
    ) -> _T:
        """``function(*args, **kwargs)`` in the pool; ``what`` ("claiming the run") is for logs."""
        attempt = 0
        began = time.monotonic()
        while True:
            attempt += 1
            try:
                result: _T = await self._once(functools.partial(function, *args, **kwargs))
            except Exception as err:
                if not database_unavailable(err):
                    raise
                if (attempt - 1) % RETRY_WARN_EVERY == 0:
                    log.warning(
                        "run %s: the database %s did not answer while %s (%s); attempt %d, "
                        "%.1f s so far; retrying",
                        self.run_id,
                        database_name(self.store),
                        what,
                        _error_text(err),
                        attempt,
                        time.monotonic() - began,
                    )
                await asyncio.sleep(_retry_delay(attempt))
                continue
            if attempt > 1:
                log.warning(
                    "run %s: the database %s answered after %d attempts (%.1f s) while %s",
                    self.run_id,
                    database_name(self.store),
                    attempt,
                    time.monotonic() - began,
                    what,
                )
            return result

    async def _once(self, call: Callable[[], _T]) -> _T:
        previous = self._last
        if previous is not None and not previous.done():
            await asyncio.wait({previous})
        future = asyncio.get_running_loop().run_in_executor(self.pool, call)
        future.add_done_callback(_consume)  # its error is ours to raise, or nobody's to log
        self._last = future
        # Shielded: cancelling the caller must not detach the call from the order (the thread
        # runs on either way); the next call waits for it above.
        return await asyncio.shield(future)


# --------------------------------------------------------------------------------------------
# Kernel steps
# --------------------------------------------------------------------------------------------


async def _silent(kc: Any, code: str, timeout: float = 60.0) -> None:
    """Run setup code in the kernel without notebook output; raise if it fails. Waits for the
    shell reply only (not the IOPub idle message): one round trip."""
    await execute_silently(kc, code, timeout)


def _activation_code(
    variables_source: str, context: dict[str, Any], cwd: Path, env: dict[str, str]
) -> str:
    """Code that moves the kernel to the notebook's folder, sets the environment and turns the
    block decorators into run mode with the run's typed variables."""
    return (
        "import os as __mnb_os\n"
        f"__mnb_os.chdir({str(cwd)!r})\n"
        f"__mnb_os.environ.update({env!r})\n"
        "import mage_nb_sched.execution.blocks as __mnb_blocks\n"
        "__mnb_ns = {}\n"
        f"exec({variables_source!r}, __mnb_ns)\n"
        f"__mnb_ctx = {context!r}\n"
        "__mnb_ctx['variables'] = __mnb_ns['mage_nb_sched_variables']\n"
        "__mnb_blocks.activate_run(__mnb_ctx)\n"
        "del __mnb_ns, __mnb_ctx, __mnb_os\n"
    )


def _cell_error(cell: Any) -> str | None:
    """The error a cell raised (its traceback as plain text), or None."""
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            traceback = strip_ansi("\n".join(output.get("traceback", [])))
            summary = f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"
            return traceback if summary in traceback else f"{traceback}\n{summary}".strip()
    return None


def _write_cell_log(cell: Any, log_text: _BoundedText) -> None:
    """A cell's outputs as block log lines, into ``log_text`` (which keeps what fits)."""
    for output in cell.get("outputs", []):
        kind = output.get("output_type")
        if kind == "stream":
            log_text.write(f"[{output.get('name', 'stdout')}] ")
            log_text.write(str(output.get("text", "")))
        elif kind == "error":
            log_text.write("[error] " + strip_ansi("\n".join(output.get("traceback", []))) + "\n")
        elif kind in ("execute_result", "display_data"):
            text = output.get("data", {}).get("text/plain")
            if text:
                log_text.write(f"[{kind}] ")
                log_text.write(str(text))
                log_text.write("\n")


async def _stop_kernel(handle: Any) -> None:
    """Stop a run's kernel and everything it started. Stopping the kernel kills its process
    group; a child a cell detached into a session of its own (``start_new_session=True``,
    ``setsid``) is not in it, so the kernel's descendants are killed first, while they are
    still its descendants (afterwards they would be re-parented away)."""
    pid = getattr(handle, "pid", None)
    if isinstance(pid, int) and pid > 0:
        await asyncio.to_thread(reaping.kill_tree, pid, include_root=False)
    await handle.shutdown()


async def _kernel_exit(handle: Any) -> str | None:
    """How the kernel of ``handle`` ended (``killed by SIGKILL``, ``exited with code 3``: see
    :func:`~mage_nb_sched.execution.reaping.describe_exit`); None while it runs or when
    nobody can tell any more. Read through jupyter_client's provisioner API (``poll``), before
    the handle is shut down (a cleaned-up provisioner has no process to ask)."""
    provisioner = getattr(getattr(handle, "km", None), "provisioner", None)
    if provisioner is None or not getattr(provisioner, "has_process", False):
        return None
    try:
        code = await provisioner.poll()
    except Exception:
        log.debug("could not read the exit status of kernel %s", handle, exc_info=True)
        return None
    if not isinstance(code, int):
        return None
    return describe_exit(code)


def _dead_kernel_error(exit_status: str | None) -> str:
    if exit_status is None:
        return "kernel died while the block was running (exit status unknown)"
    if exit_status.startswith("killed"):
        return f"kernel died while the block was running: {exit_status}"
    return f"kernel {exit_status} while the block was running"


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _write_notebook(path: Path, notebook: Any) -> None:
    _write_text_atomic(path, nbformat.writes(notebook))  # type: ignore[no-untyped-call]


# --------------------------------------------------------------------------------------------
# Output caps
# --------------------------------------------------------------------------------------------

_CHUNK = 1 << 20


def truncation_marker(limit: int, dropped: int) -> str:
    """What stands where output was cut."""
    return f"… output truncated at {limit} bytes ({dropped} bytes dropped) …"


def _nbytes(text: str) -> int:
    """The UTF-8 size of ``text``, without copying it (ASCII) or in bounded pieces."""
    if text.isascii():
        return len(text)
    return sum(
        len(text[start : start + _CHUNK].encode("utf-8", "surrogatepass"))
        for start in range(0, len(text), _CHUNK)
    )


def _head(text: str, size: int) -> str:
    """The longest start of ``text`` that fits in ``size`` UTF-8 bytes."""
    if size <= 0:
        return ""
    start = text[:size]  # a character is at least one byte: the answer is a start of this
    if start.isascii():
        return start
    return start.encode("utf-8", "surrogatepass")[:size].decode("utf-8", "ignore")


def _clip(text: str, size: int) -> str:
    """``text`` cut to ``size`` bytes, an ellipsis showing the cut."""
    if _nbytes(text) <= size:
        return text
    return _head(text, size - 3) + "…"


def _bundle_size(data: Any) -> int:
    """Bytes of a display's MIME bundle (``{mime: str | list[str] | JSON}``)."""
    if not isinstance(data, dict):
        return 0
    total = 0
    for value in data.values():
        if isinstance(value, str):
            total += _nbytes(value)
        elif isinstance(value, list) and all(isinstance(line, str) for line in value):
            total += sum(_nbytes(line) for line in value)
        else:
            total += len(json.dumps(value, default=str))
    return total


def _trim_error(msg: dict[str, Any], limit: int) -> dict[str, Any]:
    """An ``error`` message whose ``evalue`` and traceback fit in ``limit`` bytes: lines are
    kept from the end (where the exception is), each line cut to a quarter of the limit."""
    content = msg.get("content") or {}
    evalue = str(content.get("evalue", ""))
    lines = [str(line) for line in content.get("traceback") or []]
    total = _nbytes(evalue) + sum(_nbytes(line) for line in lines)
    if total <= limit:
        return msg
    line_limit = max(limit // 4, 16)
    evalue = _clip(evalue, line_limit)
    room = limit - _nbytes(evalue)
    kept: list[str] = []
    for line in reversed(lines):
        line = _clip(line, line_limit)
        size = _nbytes(line)
        if size > room:
            break
        kept.append(line)
        room -= size
    kept.reverse()
    marker = truncation_marker(limit, total - (limit - room))
    return {**msg, "content": {**content, "evalue": evalue, "traceback": [marker, *kept]}}


class _OutputCap:
    """What one execution of one cell keeps of its outputs: at most ``limit`` bytes of stream
    text and display data, counted as the outputs arrive. Past the limit the rest is dropped
    (and counted); one marker output says so. A cleared output frees its share."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.dropped = 0
        #: The marker output in the cell, once something was cut.
        self.marker: Any = None

    def reset(self) -> None:
        self.used = 0
        self.dropped = 0
        self.marker = None

    def drop(self, size: int) -> None:
        self.dropped += size
        if self.marker is not None:
            self.marker["text"] = truncation_marker(self.limit, self.dropped) + "\n"


#: IOPub messages carrying a MIME bundle (``update_display_data`` replaces earlier outputs'
#: data in place, so its bundle is capped before nbclient sees it).
_DISPLAY_MESSAGES = frozenset({"display_data", "execute_result", "update_display_data"})


@functools.cache
def _capped_client_class() -> type[Any]:
    """nbclient's ``NotebookClient`` with ``output_cap``: outputs are capped in ``output()``,
    which nbclient calls for each IOPub message as it arrives, so a cell printing gigabytes
    never makes this process hold more than the cap of it (plus the one message in flight)."""
    from nbclient import NotebookClient
    from nbformat.v4 import new_output

    class CappedNotebookClient(NotebookClient):
        output_cap: _OutputCap | None = None

        def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
            cap = self.output_cap
            if cap is not None and msg.get("msg_type") in _DISPLAY_MESSAGES:
                content = msg.get("content") or {}
                size = _bundle_size(content.get("data"))
                if size > cap.limit:
                    marker = truncation_marker(cap.limit, size)
                    capped = {**content, "data": {"text/plain": marker}, "metadata": {}}
                    msg = {**msg, "content": capped}
            return super().process_message(msg, cell, cell_index)

        def output(
            self, outs: list[Any], msg: dict[str, Any], display_id: str | None, cell_index: int
        ) -> Any:
            cap = self.output_cap
            parent = msg["parent_header"].get("msg_id")
            if cap is None or self.output_hook_stack[parent]:
                return super().output(outs, msg, display_id, cell_index)
            if getattr(self, "clear_before_next_output", False):
                # nbclient's delayed clear (``clear_output(wait=True)``), done here first so
                # the cap starts afresh with the outputs.
                outs[:] = []
                self.clear_display_id_mapping(cell_index)
                self.clear_before_next_output = False
                cap.reset()
            kind = msg["msg_type"]
            content = msg["content"]
            if kind == "error":  # always kept: it is what the block failed with
                trimmed = _trim_error(msg, min(cap.limit, MAX_ERROR_BYTES))
                return super().output(outs, trimmed, display_id, cell_index)
            if kind == "stream":
                size = _nbytes(str(content.get("text", "")))
            elif kind in ("display_data", "execute_result"):
                size = _bundle_size(content.get("data"))
            else:
                return super().output(outs, msg, display_id, cell_index)
            if cap.marker is not None:
                cap.drop(size)
                return None
            room = cap.limit - cap.used
            if size <= room:
                cap.used += size
                return super().output(outs, msg, display_id, cell_index)
            kept = None
            if kind == "stream" and room > 0:
                head = _head(str(content.get("text", "")), room)
                if head:
                    cut = {**msg, "content": {**content, "text": head}}
                    kept = super().output(outs, cut, display_id, cell_index)
                    cap.used += _nbytes(head)
                    size -= _nbytes(head)
            cap.marker = new_output("stream", name="stderr", text="")  # type: ignore[no-untyped-call]
            outs.append(cap.marker)
            cap.drop(size)
            return kept

        def clear_output(self, outs: list[Any], msg: dict[str, Any], cell_index: int) -> None:
            super().clear_output(outs, msg, cell_index)
            if self.output_cap is not None and not outs:
                self.output_cap.reset()

    return CappedNotebookClient


class _BoundedText:
    """Text kept to ``limit`` UTF-8 bytes while it is written; the rest is only counted."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.dropped = 0
        self._parts: list[str] = []
        self._size = 0

    def write(self, text: str) -> None:
        if not text:
            return
        size = _nbytes(text)
        room = self.limit - self._size
        if not self.dropped and size <= room:
            self._parts.append(text)
            self._size += size
            return
        if not self.dropped and room > 0:
            head = _head(text, room)
            self._parts.append(head)
            self._size += _nbytes(head)
            size -= _nbytes(head)
        self.dropped += size

    def getvalue(self, trailer: str = "") -> str:
        """What was kept, then ``trailer`` (the block's error: kept whole, within the limit),
        then a marker line if anything was cut: at most ``limit`` bytes plus the marker."""
        trailer_size = _nbytes(trailer)
        dropped = self.dropped
        if trailer_size > self.limit:
            trailer = _head(trailer, self.limit)
            dropped += trailer_size - _nbytes(trailer)
            trailer_size = _nbytes(trailer)
        text = "".join(self._parts)
        if self._size + trailer_size > self.limit:
            head = _head(text, self.limit - trailer_size)
            dropped += self._size - _nbytes(head)
            text = head
        if dropped:
            separator = "" if not text or text.endswith("\n") else "\n"
            return f"{text}{separator}{truncation_marker(self.limit, dropped)}\n{trailer}"
        return text + trailer


def _output_cap_setting(name: str, value: object) -> int:
    """A cap given to the runner, checked against its range."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not MIN_OUTPUT_CAP_BYTES <= value <= MAX_OUTPUT_CAP_BYTES
    ):
        raise ValidationError(
            name,
            value,
            f"must be a whole number of bytes from {MIN_OUTPUT_CAP_BYTES} to "
            f"{MAX_OUTPUT_CAP_BYTES}",
            f"e.g. {name}={DEFAULT_MAX_CELL_OUTPUT_BYTES} (10 MiB, the default)",
        )
    return value


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass
class _Limits:
    retries: int
    retry_delay: float
    backoff: bool
    allow_blocks_to_fail: bool
    run_timeout: float | None
    block_timeout: float | None
    timeout_status: str

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> _Limits:
        return cls(
            retries=int(settings["retries"] or 0),
            retry_delay=float(settings["retry_delay"] or 0),
            backoff=bool(settings["retry_exponential_backoff"]),
            allow_blocks_to_fail=bool(settings["allow_blocks_to_fail"]),
            run_timeout=settings["timeout"],
            block_timeout=settings["block_timeout"],
            timeout_status=str(settings["timeout_status"]),
        )


class PipelineRunner:
    """Executes pipeline runs from one store with kernels from one source.

    ``cancel_grace`` is how long a cancelled cell gets after the interrupt before its kernel is
    killed. ``max_cell_output_bytes`` caps what each cell keeps of its outputs (in the executed
    notebook) and ``max_block_log_bytes`` each block's log; both default to 10 MiB and accept
    1 KiB to 1 GiB. ``clock`` is injectable for tests.

    Database work runs in a pool of :data:`DB_THREADS` threads, never on the event loop.
    """

    def __init__(
        self,
        store: Store,
        kernels: KernelSource,
        *,
        cancel_grace: float = 5.0,
        max_cell_output_bytes: int = DEFAULT_MAX_CELL_OUTPUT_BYTES,
        max_block_log_bytes: int = DEFAULT_MAX_BLOCK_LOG_BYTES,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.kernels = kernels
        self.cancel_grace = cancel_grace
        self.max_cell_output_bytes = _output_cap_setting(
            "max_cell_output_bytes", max_cell_output_bytes
        )
        self.max_block_log_bytes = _output_cap_setting("max_block_log_bytes", max_block_log_bytes)
        self.clock = clock
        self._cancel_events: dict[int, asyncio.Event] = {}
        self._tokens: dict[int, str] = {}
        self._databases: dict[int, _RunDatabase] = {}
        # Threads start on first use and end with the runner (or the process).
        self._db_pool = ThreadPoolExecutor(DB_THREADS, thread_name_prefix="mage-nb-sched-db")

    def cancel(self, run_id: int) -> None:
        """Ask a run executing here to stop (interrupt, then kill after ``cancel_grace``)."""
        event = self._cancel_events.get(run_id)
        if event is not None:
            event.set()

    def _db(self, run_id: int) -> _RunDatabase:
        return self._databases[run_id]

    async def execute(self, run_id: int) -> RunOutcome:
        """Execute one run to a final status. Never raises for failures of user code."""
        store = self.store
        project_dir = store.project_dir
        assert project_dir is not None, "the runner needs a store with a project dir"
        db = _RunDatabase(store, self._db_pool, run_id)
        run = await db("reading the run", read_run, store, run_id)
        if run is None:
            return RunOutcome(run_id, None, NO_SUCH_RUN)
        # The notebook is read before the claim, so claiming and creating the block runs is one
        # short transaction.
        pipeline: Pipeline | None = None
        load_error: str | None = None
        try:
            pipeline = await asyncio.to_thread(load_pipeline, project_dir, run.pipeline_uuid)
        except MageNbSchedError as err:
            load_error = str(err)
        token = new_claim_token()
        blocks = pipeline.blocks if pipeline else None
        try:
            block_run_ids = await db(
                "claiming the run",
                claim_run,
                store,
                run_id,
                self.clock(),
                blocks,
                token,
                resume=True,
            )
        except asyncio.CancelledError:
            # A claim that went through in its thread is ended like any run of a stopping
            # worker (fenced on our token: nothing happens if it did not).
            await self._record_stopped(db, run_id, token)
            raise
        if block_run_ids is None:
            status = await db("reading the run's status", _read_status, store, run_id)
            if status is None:
                return RunOutcome(run_id, None, NO_SUCH_RUN)
            return RunOutcome(run_id, status, "not in 'initial' state; left alone")
        began = time.monotonic()
        log.info(
            "run %s started: schedule %s, pipeline %s",
            run_id,
            run.pipeline_schedule_id,
            run.pipeline_uuid,
            extra=_log_fields(run),
        )
        outcome = RunOutcome(run_id, _RUNNING)
        self._tokens[run_id] = token
        self._databases[run_id] = db
        cancel_event = self._cancel_events.setdefault(run_id, asyncio.Event())
        watcher = asyncio.ensure_future(self._watch_for_cancel(run_id, cancel_event))
        try:
            if pipeline is None:
                final = await db(
                    "recording the run's final status",
                    _finish_run,
                    store,
                    run_id,
                    PipelineRunStatus.FAILED.value,
                    self.clock(),
                    {"error": load_error},
                    token,
                )
                outcome = RunOutcome(
                    run_id, final, load_error if final is not None else NO_SUCH_RUN
                )
                return outcome
            outcome = await self._execute_claimed(run, pipeline, block_run_ids, cancel_event)
            return outcome
        except asyncio.CancelledError:
            # The process driving the run is stopping: record it rather than leave it running.
            outcome.reason = WORKER_STOPPED
            failed = await self._record_stopped(db, run_id, token)
            outcome.status = PipelineRunStatus.FAILED.value if failed else None
            raise
        except Exception as err:  # an error of ours, not of user code: record it, never hang
            log.exception("run %s failed inside the runner", run_id)
            reason = f"internal error: {err!r}"
            await db(
                "recording the run failed",
                fail_run,
                store,
                run_id,
                reason,
                self.clock(),
                token=token,
            )
            status = await db("reading the run's status", _read_status, store, run_id)
            outcome = RunOutcome(run_id, status, reason if status is not None else NO_SUCH_RUN)
            return outcome
        finally:
            watcher.cancel()
            self._cancel_events.pop(run_id, None)
            self._tokens.pop(run_id, None)
            self._databases.pop(run_id, None)
            seconds = time.monotonic() - began
            log.info(
                "run %s finished: %s in %.3f s (schedule %s, pipeline %s)%s",
                run_id,
                outcome.status or "gone",
                seconds,
                run.pipeline_schedule_id,
                run.pipeline_uuid,
                f": {_clip(outcome.reason, 300)}" if outcome.reason else "",
                extra={**_log_fields(run), "status": outcome.status, "duration": seconds},
            )

    async def _record_stopped(self, db: _RunDatabase, run_id: int, token: str) -> bool:
        """Fail a run whose driver is stopping (fenced on ``token``: a run not claimed by this
        execution, or ended meanwhile, is left alone)."""
        return await db(
            "recording that the worker stopped",
            fail_run,
            self.store,
            run_id,
            WORKER_STOPPED,
            self.clock(),
            token=token,
        )

    async def _acquire_kernel(self, kernel_name: str) -> tuple[Any, Any]:
        """A fresh kernel for the notebook's kernelspec: from the warm pool when the pool runs
        that kernel, else from a one-off pool (returned too, to be closed after the run)."""
        pool_kernel = getattr(self.kernels, "kernel_name", kernel_name)
        if kernel_name == pool_kernel:
            return await self.kernels.acquire(), None
        from mage_nb_sched.execution.kernels import KernelPool

        one_off = KernelPool(size=0, kernel_name=kernel_name, use_forkserver=False)
        await one_off.start()
        try:
            return await one_off.acquire(), one_off
        except BaseException:
            await one_off.close()
            raise

    async def _watch_for_cancel(self, run_id: int, event: asyncio.Event) -> None:
        # A cancel made through the database (API, backfill cancel), a timeout the scheduler
        # enforced, or the run handed to another executor (requeued after this one stalled)
        # reaches the run here: whenever it is no longer running under our claim, stop.
        token = self._tokens.get(run_id)
        while not event.is_set():
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            try:
                state = await asyncio.to_thread(_read_claim, self.store, run_id)
            except Exception:  # a busy database must not end cancellation for this run
                log.warning("could not read the status of run %s", run_id, exc_info=True)
                continue
            if (
                state is None
                or state[0] != PipelineRunStatus.RUNNING.value
                or (token is not None and state[1] != token)
            ):
                event.set()

    async def _execute_claimed(
        self,
        run: RunToExecute,
        pipeline: Pipeline,
        block_run_ids: dict[str, int],
        cancel_event: asyncio.Event,
    ) -> RunOutcome:
        store = self.store
        assert store.project_dir is not None
        run_id = run.id
        db = self._db(run_id)
        token = self._tokens.get(run_id)
        settings = with_defaults(run.schedule_settings)
        limits = _Limits.from_settings(settings)
        partition = run.execution_partition
        variables = merge_variables(
            pipeline_global_variables(pipeline.notebook),
            run.schedule_variables,
            run.variables,
            builtin_variables(
                execution_date=run.execution_date,
                execution_partition=partition,
                pipeline_run_id=run.id,
                block_run_id=None,
                pipeline_uuid=run.pipeline_uuid,
                trigger_name=run.schedule_name,
                run_variables=run.variables,
                event=run.event_variables,
                timezone=str(settings["timezone"]),
            ),
        )
        source = injection_source(variables)
        notebook, injected_index = insert_injected_cell(pipeline.notebook, source)
        env = {PROJECT_DIR_ENV: str(store.project_dir), DB_URL_ENV: store.url}
        context = {
            "data_dir": str(store.project_dir / ".mage_nb_sched"),
            "pipeline_uuid": run.pipeline_uuid,
            "partition": partition,
            "pipeline_run_id": run.id,
        }
        started = time.monotonic()
        deadline = started + limits.run_timeout if limits.run_timeout else None
        outcome = RunOutcome(run_id, _RUNNING)
        try:
            handle, one_off_pool = await self._acquire_kernel(pipeline.kernel_name)
        except KernelError as err:
            message = (
                f"cannot start kernel {pipeline.kernel_name!r} for {pipeline.uuid}: {err}. "
                "Install that kernel, or pick another one for the notebook in Jupyter."
            )
            await db("cancelling the blocks", _cancel_remaining, store, run_id, self.clock(), token)
            final = await db(
                "recording the run's final status",
                _finish_run,
                store,
                run_id,
                PipelineRunStatus.FAILED.value,
                self.clock(),
                {"error": message},
                token,
            )
            return RunOutcome(run_id, final, message if final is not None else NO_SUCH_RUN)
        # Setup code waits here and goes to the kernel in one request with the first block's
        # enter_block call: every round trip before the first cell is latency.
        pending = [_activation_code(source, context, pipeline.path.parent, env)]
        try:
            final_status, reason = await self._execute_cells(
                pending,
                run,
                pipeline,
                notebook,
                injected_index,
                handle,
                block_run_ids,
                limits,
                deadline,
                cancel_event,
                outcome,
            )
        finally:
            await _stop_kernel(handle)
            if one_off_pool is not None:
                await one_off_pool.close()
        executed_path = artifacts.executed_notebook_path(
            store.project_dir, run.pipeline_uuid, partition
        )
        await asyncio.to_thread(_write_notebook, executed_path, notebook)
        metrics: dict[str, Any] = {
            "notebook_sha256": pipeline.content_hash,
            "executed_notebook": str(executed_path),
            "blocks": {
                block.block_uuid: {
                    "status": block.status,
                    "seconds": block.seconds,
                    "attempts": block.attempts,
                }
                for block in outcome.blocks
            },
        }
        if reason:
            metrics["error"] = reason
        if outcome.first_cell_latency is not None:
            metrics["first_cell_latency"] = outcome.first_cell_latency
        # The run's code is done: this write is retried until the database answers (a locked
        # database must never turn a finished run into a failed one).
        outcome.status = await db(
            f"recording the run's final status {final_status!r}",
            _finish_run,
            store,
            run_id,
            final_status,
            self.clock(),
            metrics,
            token,
        )
        outcome.reason = reason if outcome.status is not None else NO_SUCH_RUN
        return outcome

    async def _execute_cells(
        self,
        pending: list[str],
        run: RunToExecute,
        pipeline: Pipeline,
        notebook: Any,
        injected_index: int,
        handle: Any,
        block_run_ids: dict[str, int],
        limits: _Limits,
        deadline: float | None,
        cancel_event: asyncio.Event,
        outcome: RunOutcome,
    ) -> tuple[str, str | None]:
        from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

        client = _capped_client_class()(
            notebook,
            km=handle.km,
            timeout=limits.block_timeout,
            interrupt_on_timeout=False,
            # Errors are read from the cell's outputs instead of nbclient raising: with
            # stop_on_error the kernel may answer the *next* request "aborted", which nbclient
            # would count as a success with no outputs.
            allow_errors=True,
            record_timing=True,
        )
        client.kc = handle.kc
        client.reset_execution_trackers()
        blocks_by_index = {block.cell_index: block for block in pipeline.blocks}
        # The injected cell shifts later cells by one.
        shifted = {
            (index + 1 if index >= injected_index else index): block
            for index, block in blocks_by_index.items()
        }
        for index, cell in enumerate(notebook.cells):
            block = shifted.get(index)
            if index != injected_index and block is None:
                continue  # skipped, empty or non-code cells
            if block is None:
                # The injected parameters run silently with the next block's setup (one round
                # trip instead of two); the cell stays in the executed notebook as the record.
                pending.append(cell.source)
                cell.metadata.setdefault("mage_nb_sched", {})["executed_silently"] = True
                continue
            block_run_id = block_run_ids[block.uuid]
            result = await self._run_block(
                pending,
                client,
                handle,
                cell,
                index,
                block,
                block_run_id,
                run,
                limits,
                deadline,
                cancel_event,
                outcome,
                CellExecutionError,
                CellTimeoutError,
                DeadKernelError,
            )
            if result is None:
                continue
            status, reason, must_stop = result
            if (
                status == PipelineRunStatus.FAILED.value
                and limits.allow_blocks_to_fail
                and not must_stop
            ):
                continue  # a plain block failure is recorded on the block; the run goes on
            await self._db(run.id)(
                "cancelling the remaining blocks",
                _cancel_remaining,
                self.store,
                run.id,
                self.clock(),
                self._tokens.get(run.id),
            )
            return status, reason
        if pending:  # setup with no block after it (e.g. parameters in the last cell)
            await _silent(handle.kc, "\n".join(pending))
            pending.clear()
        return PipelineRunStatus.COMPLETED.value, None

    async def _run_block(
        self,
        pending: list[str],
        client: Any,
        handle: Any,
        cell: Any,
        index: int,
        block: Block,
        block_run_id: int,
        run: RunToExecute,
        limits: _Limits,
        deadline: float | None,
        cancel_event: asyncio.Event,
        outcome: RunOutcome,
        cell_error: type[Exception],
        cell_timeout: type[Exception],
        dead_kernel: type[Exception],
    ) -> tuple[str, str | None, bool] | None:
        """Execute one block with retries. None = completed; else (run status, reason, stop):
        ``stop`` is True when the run cannot go on (cancel, timeout, kernel gone) even with
        ``allow_blocks_to_fail``."""
        started_at = self.clock()
        token = self._tokens.get(run.id)
        db = self._db(run.id)

        async def set_block(what: str, **values: Any) -> None:
            await db(
                f"recording block {block.uuid!r} {what}",
                _set_block,
                self.store,
                block_run_id,
                token,
                **values,
            )

        await set_block("running", status=BlockRunStatus.RUNNING.value, started_at=started_at)
        log_path = artifacts.block_log_path(
            self.store.project_dir or Path("."),
            run.pipeline_uuid,
            run.execution_partition,
            block.uuid,
        )
        began = time.monotonic()
        queued, running = BlockRunStatus.QUEUED.value, BlockRunStatus.RUNNING.value
        attempt = 0
        logs = _BoundedText(self.max_block_log_bytes)
        kernel_gone = False
        while True:
            attempt += 1
            error: str | None = None
            stop: _RunStopped | None = None
            try:
                pending.append(
                    f"__import__('mage_nb_sched.execution.blocks').execution.blocks.enter_block("
                    f"{block.uuid!r}, {block_run_id!r})"
                )
                setup = "\n".join(pending)
                pending.clear()
                await _silent(handle.kc, setup)
                if outcome.first_cell_latency is None:
                    # Measured when the first block's code is sent to the kernel.
                    outcome.first_cell_latency = (self.clock() - run.created_at).total_seconds()
                await self._run_cell(client, handle, cell, index, deadline, cancel_event, limits)
            except _RunStopped as stopped:
                stop = stopped
            except cell_timeout:
                await _stop_kernel(handle)
                stop = _RunStopped(
                    limits.timeout_status,
                    f"block {block.uuid!r} timed out after {limits.block_timeout}s; kernel killed",
                )
            except dead_kernel:
                error = _dead_kernel_error(await _kernel_exit(handle))
                kernel_gone = True
            except KernelError as err:  # setup code failed or the kernel stopped answering
                error = f"the kernel could not run the block's setup: {err}"
                exit_status = await _kernel_exit(handle)
                if exit_status is not None:
                    error += f" (the kernel {exit_status})"
                kernel_gone = True
                await _stop_kernel(handle)
            except cell_error as err:
                error = _clip(strip_ansi(str(err)), MAX_ERROR_BYTES)
            else:
                error = _cell_error(cell)
            _write_cell_log(cell, logs)
            if error is not None and not kernel_gone and attempt <= limits.retries:
                logs.write(f"[retry] attempt {attempt} failed; retrying\n")
                delay = limits.retry_delay * (2 ** (attempt - 1) if limits.backoff else 1)
                try:
                    if delay:
                        # Waiting to retry is not running: block_timeout (checked by the
                        # scheduler on running blocks) measures each attempt, not the pause.
                        await set_block("queued", status=queued)
                        await self._pause(delay, deadline, cancel_event)
                except _RunStopped as stopped:
                    stop = stopped
                    break
                # Each attempt's own start, so the scheduler's block_timeout backstop agrees
                # with the per-attempt timeout the kernel client applies (queued → running
                # after a delay; without one the block stays running: no status change).
                if delay:
                    await set_block("running", status=running, started_at=self.clock())
                else:
                    await set_block("started again", started_at=self.clock())
                continue
            break
        seconds = round(time.monotonic() - began, 6)
        await asyncio.to_thread(
            _write_text_atomic, log_path, logs.getvalue(f"[error] {error}\n" if error else "")
        )
        del logs
        metrics = {"attempts": attempt, "seconds": seconds, "log": str(log_path)}
        if stop is not None:
            status = (
                BlockRunStatus.CANCELLED.value
                if stop.status == PipelineRunStatus.CANCELLED.value
                else BlockRunStatus.FAILED.value
            )
            await set_block(
                status,
                status=status,
                completed_at=self.clock(),
                error=stop.reason,
                metrics=metrics,
            )
            outcome.blocks.append(BlockOutcome(block.uuid, status, seconds, attempt, stop.reason))
            return stop.status, stop.reason, True
        if error is not None:
            await set_block(
                "failed",
                status=BlockRunStatus.FAILED.value,
                completed_at=self.clock(),
                error=error,
                metrics=metrics,
            )
            outcome.blocks.append(BlockOutcome(block.uuid, "failed", seconds, attempt, error))
            first_line = error.strip().splitlines()[-1] if error.strip() else error
            return (
                PipelineRunStatus.FAILED.value,
                f"block {block.uuid!r} failed: {first_line}",
                kernel_gone,
            )
        await set_block(
            "completed",
            status=BlockRunStatus.COMPLETED.value,
            completed_at=self.clock(),
            metrics=metrics,
        )
        outcome.blocks.append(BlockOutcome(block.uuid, "completed", seconds, attempt))
        return None

    async def _pause(
        self, seconds: float, deadline: float | None, cancel_event: asyncio.Event
    ) -> None:
        """Wait between retries, but stop at once for a cancel or the run's deadline."""
        if deadline is not None:
            seconds = min(seconds, max(0.0, deadline - time.monotonic()))
        try:
            await asyncio.wait_for(cancel_event.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            return
        raise _RunStopped(PipelineRunStatus.CANCELLED.value, "cancelled")

    async def _run_cell(
        self,
        client: Any,
        handle: Any,
        cell: Any,
        index: int,
        deadline: float | None,
        cancel_event: asyncio.Event,
        limits: _Limits,
    ) -> None:
        """Execute one cell, racing it against cancellation and the run's deadline."""
        if cancel_event.is_set():
            raise _RunStopped(PipelineRunStatus.CANCELLED.value, "cancelled")
        client.output_cap = _OutputCap(self.max_cell_output_bytes)
        task = asyncio.ensure_future(client.async_execute_cell(cell, index))
        cancel_wait = asyncio.ensure_future(cancel_event.wait())
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            done, _ = await asyncio.wait(
                {task, cancel_wait}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:
            # The run's own task is being cancelled (worker stopping): take the cell down with
            # it, and collect its error so nothing is logged as "never retrieved".
            task.cancel()
            task.add_done_callback(_consume)
            raise
        finally:
            cancel_wait.cancel()
        if task in done:
            task.result()
            return
        if cancel_event.is_set():
            await _stop_cell(handle, task, self.cancel_grace, interrupt=True)
            raise _RunStopped(PipelineRunStatus.CANCELLED.value, "cancelled while running")
        await _stop_cell(handle, task, 0.0, interrupt=False)
        raise _RunStopped(
            limits.timeout_status, f"run timed out after {limits.run_timeout}s; kernel killed"
        )


def _log_fields(run: RunToExecute) -> dict[str, Any]:
    """Structured fields of the runner's start/finish log lines (``extra=``)."""
    return {
        "run_id": run.id,
        "schedule_id": run.pipeline_schedule_id,
        "pipeline_uuid": run.pipeline_uuid,
    }


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _stop_cell(handle: Any, task: asyncio.Future[Any], grace: float, interrupt: bool) -> None:
    """Interrupt (optionally) and wait ``grace`` seconds for the cell, then kill the kernel."""
    if interrupt:
        try:
            await handle.km.interrupt_kernel()
            await asyncio.wait({task}, timeout=grace)
        except Exception:  # the kernel may already be gone
            log.debug("interrupt failed", exc_info=True)
    await _stop_kernel(handle)
    if not task.done():
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def warm_up(store: Store) -> None:
    """Pay first-use costs before the first run does: compiling nbformat's JSON schema
    validators (~150 ms) and the runner's first statement, with a first connection. Workers
    call this at start."""
    import nbformat.validator

    # Looked up dynamically: nbformat is typed in some versions and not in others.
    get_validator: Any = getattr(nbformat.validator, "get_validator")  # noqa: B009
    for minor in (4, 5):
        get_validator(version=4, version_minor=minor)
    read_run(store, 0)
    _read_claim(store, 0)


async def run_with_fresh_kernel(
    store: Store, run_id: int, kernels: KernelSource | None = None
) -> RunOutcome:
    """Execute one run now, in this process (CLI, ``await run.execute()``, tests): with
    ``kernels`` or a one-off kernel.

    The run is first marked as this process's (``owner``), so a scheduler running meanwhile
    leaves it alone. If a scheduler took it first, this waits for that execution to finish and
    reports its outcome instead of executing the run twice.
    """
    from mage_nb_sched.execution.kernels import KernelPool

    if not await asyncio.to_thread(take_run, store, run_id, direct_owner()):
        status = await _wait_until_finished(store, run_id)
        if status is None:
            return RunOutcome(run_id, None, NO_SUCH_RUN)
        return RunOutcome(run_id, status, "executed by the scheduler, which took it first")
    pool = kernels
    owned: Any = None
    if pool is None:
        # One kernel, started on demand without a fork server (nothing to amortise it over).
        owned = KernelPool(size=0, use_forkserver=False)
        await owned.start()
        pool = owned
    try:
        return await PipelineRunner(store, pool).execute(run_id)
    finally:
        if owned is not None:
            await owned.close()


async def _wait_until_finished(store: Store, run_id: int) -> str | None:
    """The run's final status once it has one; None if the run is gone."""
    while True:
        status = await asyncio.to_thread(_read_status, store, run_id)
        if status is None or status not in run_states.RUN_UNFINISHED:
            return status
        await asyncio.sleep(CANCEL_POLL_SECONDS)


__all__ = [
    "NO_SUCH_RUN",
    "KernelLike",
    "PipelineRunner",
    "RunOutcome",
    "RunToExecute",
    "claim_run",
    "fail_run",
    "read_run",
    "run_with_fresh_kernel",
]
