"""The default executor: a pool of local worker processes, each with warm kernels.

Runs never execute on the caller's event loop (the Jupyter server's): each worker is a separate
interpreter (``python -c``, started with :mod:`subprocess`) with its own asyncio loop, a
:class:`KernelPool` and a :class:`PipelineRunner`. The parent talks to workers over a socket
pair it watches with ``add_reader``, so submitting, cancelling and collecting results cost the
caller's loop microseconds. (Not :mod:`multiprocessing`: its ``spawn`` start method re-imports
the caller's ``__main__`` in every worker and leaves a resource-tracker process behind for the
rest of the caller's life — an idle Jupyter server would keep paying for it.)

Workers are kept warm (started by :meth:`LocalExecutor.start`) or, with ``lazy_workers``,
started when the first run needs one and stopped again after ``idle_timeout`` seconds with
nothing to run — what the Jupyter server extension does, so an idle server pays no extra
process.

If a worker dies, its in-flight runs are marked failed with the reason, and its kernels die with
it (they are tied to the worker's fork server by ``PR_SET_PDEATHSIG``); a replacement worker is
started when there is work for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

from sqlalchemy import select
from traitlets import Bool, Float, Int, List, TraitError, Unicode, validate

from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.core.enums import PipelineRunStatus
from mage_nb_sched.execution import reaping
from mage_nb_sched.execution.executors.base import Executor, ExecutorError, RunResult
from mage_nb_sched.execution.output_caps import (
    DEFAULT_MAX_BLOCK_LOG_BYTES,
    DEFAULT_MAX_CELL_OUTPUT_BYTES,
    MAX_OUTPUT_CAP_BYTES,
    MIN_OUTPUT_CAP_BYTES,
)
from mage_nb_sched.service.transitions import end_run
from mage_nb_sched.store import schema
from mage_nb_sched.store.engine import Store

log = logging.getLogger(__name__)

RUNS = schema.pipeline_run
#: Workers that die before they are ready this many times in a row are not started again.
MAX_START_FAILURES = 3
#: Longest ``idle_timeout`` (one year, like every other duration setting).
MAX_IDLE_TIMEOUT = 31_536_000.0


# --------------------------------------------------------------------------------------------
# Worker process
# --------------------------------------------------------------------------------------------

#: What a worker process runs (``python -c``): read its settings from the socket the parent
#: passed (never from the command line, which every user can read: the database URL may hold
#: a password), take the parent's ``sys.path``, then :func:`worker_main`.
_BOOTSTRAP = (
    "import sys\n"
    "from multiprocessing.connection import Connection\n"
    "conn = Connection(int(sys.argv[1]))\n"
    "settings = conn.recv()\n"
    "sys.path[:] = settings['sys_path']\n"
    "from mage_nb_sched.execution.executors.local import worker_main\n"
    "worker_main(conn, settings)\n"
)


def worker_main(conn: Connection, settings: dict[str, Any]) -> None:
    """Entry point of a worker process: execute the runs the parent sends, report results.

    ``settings``: ``db_url``, ``project_dir``, ``kernel_pool_size``, ``preload`` and
    ``parent_pid`` (see :meth:`LocalExecutor._spawn`)."""
    from mage_nb_sched.execution.kernel_forkserver import set_pdeathsig

    # Die with the scheduler, even on kill -9: its runs are then recovered from the database
    # (and this worker's kernels die with it in turn).
    set_pdeathsig(signal.SIGKILL)
    if os.getppid() != int(settings["parent_pid"]):
        os._exit(1)  # the parent died before the line above took effect
    # Our own process group: a Ctrl-C or a SIGTERM sent to the scheduler's whole group (a
    # terminal, `timeout`, `kill -- -PGID`) must not kill runs the scheduler wants to stop
    # gracefully; the scheduler stops us itself (and PDEATHSIG covers its death).
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    # Orphans of a run's processes (a cell's double fork whose parent exited) come to this
    # worker instead of init, so they can be killed below instead of outliving everything.
    reaping.become_subreaper()
    # jsonschema (imported by nbformat, which the runner reads notebooks with) compiles a Lark
    # grammar for the optional rfc3987-syntax package at import: ~0.7 s, most of a worker's
    # start-up, for the "iri" string format that no notebook schema uses. Without the package
    # jsonschema simply does not check that format. Worker processes only; kernels are separate.
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    asyncio.run(
        _worker_loop(
            conn,
            str(settings["db_url"]),
            str(settings["project_dir"]),
            int(settings["kernel_pool_size"]),
            tuple(settings["preload"]),
            int(settings.get("max_cell_output_bytes", DEFAULT_MAX_CELL_OUTPUT_BYTES)),
            int(settings.get("max_block_log_bytes", DEFAULT_MAX_BLOCK_LOG_BYTES)),
        )
    )
    # Whatever runs left behind and was handed to this subreaper dies with the worker.
    reaping.reap_strays(known=())
    # Everything is in the database and the kernels are gone; a normal interpreter exit would
    # wait ~1 s more for ZeroMQ to linger on closed kernel sockets.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


async def _worker_loop(
    conn: Connection,
    db_url: str,
    project_dir: str,
    kernel_pool_size: int,
    preload: tuple[str, ...],
    max_cell_output_bytes: int = DEFAULT_MAX_CELL_OUTPUT_BYTES,
    max_block_log_bytes: int = DEFAULT_MAX_BLOCK_LOG_BYTES,
) -> None:
    from pathlib import Path

    from mage_nb_sched.execution.kernels import KernelPool
    from mage_nb_sched.execution.runner import PipelineRunner, warm_up

    store = Store(db_url, Path(project_dir))
    # Kernels forked with the block decorators already imported start their first block sooner.
    pool = KernelPool(
        size=kernel_pool_size, cwd=project_dir, preload=("mage_nb_sched.execution.blocks", *preload)
    )
    await pool.start()
    runner = PipelineRunner(
        store,
        pool,
        max_cell_output_bytes=max_cell_output_bytes,
        max_block_log_bytes=max_block_log_bytes,
    )
    warm_up(store)
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    tasks: dict[int, asyncio.Task[None]] = {}

    def readable() -> None:
        try:
            inbox.put_nowait(conn.recv())
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            inbox.put_nowait(("stop", 0.0))

    loop.add_reader(conn.fileno(), readable)
    conn.send(("ready", os.getpid()))

    async def execute(run_id: int) -> None:
        # Whatever happens, the parent hears back: otherwise its future never resolves and this
        # worker's slot stays taken.
        payload: dict[str, Any]
        try:
            outcome = await runner.execute(run_id)
            payload = {
                "status": outcome.status,
                "reason": outcome.reason,
                "first_cell_latency": outcome.first_cell_latency,
                "blocks": [block.__dict__ for block in outcome.blocks],
            }
        except BaseException as err:
            payload = {"status": PipelineRunStatus.FAILED.value, "reason": f"worker error: {err!r}"}
            if not isinstance(err, Exception):
                with contextlib.suppress(OSError):
                    conn.send(("done", run_id, payload))
                raise
        conn.send(("done", run_id, payload))

    try:
        while True:
            message = await inbox.get()
            kind = message[0]
            if kind == "run":
                run_id = int(message[1])
                task = asyncio.ensure_future(execute(run_id))
                tasks[run_id] = task
                task.add_done_callback(_forget(tasks, run_id))
            elif kind == "cancel":
                runner.cancel(int(message[1]))
            elif kind == "stop":
                grace = float(message[1])
                if tasks:
                    await asyncio.wait(set(tasks.values()), timeout=grace)
                # Past the grace: stop the runs' tasks now (their kernels are shut down on the
                # way out) rather than interrupting politely; the parent kills us soon anyway.
                for task in list(tasks.values()):
                    task.cancel()
                if tasks:
                    await asyncio.wait(set(tasks.values()), timeout=1.0)
                break
    finally:
        await pool.close()
        store.dispose()


def _forget(tasks: dict[int, asyncio.Task[None]], run_id: int) -> Any:
    def callback(_task: asyncio.Task[None]) -> None:
        tasks.pop(run_id, None)

    return callback


# --------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecutorEvent:
    """Something that happened to the worker pool (:attr:`LocalExecutor.events`): ``kind`` is
    ``spawned``, ``ready``, ``retired`` (stopped for being idle) or ``exited``; ``at`` is the
    UTC time, comparable with the times the store records."""

    kind: str
    at: datetime
    pid: int


@dataclass(eq=False)
class _Worker:
    process: subprocess.Popen[bytes]
    conn: Connection
    #: The worker's own report that it is ready (None while it starts).
    pid: int | None = None
    runs: set[int] = field(default_factory=set)
    #: Asked to stop for being idle: takes no runs, is not replaced.
    retiring: bool = False
    exited: bool = False

    @property
    def starting(self) -> bool:
        return self.pid is None and not self.exited


class LocalExecutor(Executor):
    """Runs pipeline runs in ``workers`` local processes, ``runs_per_worker`` at a time each.

    ``kernel_pool_size`` warm kernels are kept per worker. ``preload`` names modules the kernel
    fork server imports once so every kernel starts with them loaded (e.g. ``["pandas"]``).
    With ``lazy_workers`` no worker runs until a run needs one, and workers stop again after
    ``idle_timeout`` seconds with nothing to run.
    """

    workers = Int(2, help="Worker processes executing runs.").tag(config=True)
    runs_per_worker = Int(1, help="Runs one worker executes at the same time.").tag(config=True)
    kernel_pool_size = Int(
        1, help="Warm kernels each worker keeps started ahead of need (0: start on demand)."
    ).tag(config=True)
    preload = List(
        Unicode(),
        help="Modules the kernel fork server imports once so every kernel starts with them "
        "loaded (e.g. ['pandas']). If one starts threads at import, the fork server is not "
        "used and kernels are started normally.",
    ).tag(config=True)
    lazy_workers = Bool(
        False,
        help="Start worker processes (and their warm kernels) only when a run needs one, and "
        "stop them after idle_timeout seconds with nothing to run, so an idle process pays "
        "for none. The first run after an idle spell waits for a worker to start (about half "
        "a second). Off: the workers start with the scheduler and stay up. The Jupyter server "
        "extension turns it on (c.MageNbSchedApp.lazy_workers).",
    ).tag(config=True)
    idle_timeout = Float(
        300.0,
        help="With lazy_workers: seconds without any run queued or executing after which the "
        "workers and their kernels are stopped; the next run starts them again. 0 stops them "
        "as soon as they are idle. At most one year.",
    ).tag(config=True)

    max_cell_output_bytes = Int(
        DEFAULT_MAX_CELL_OUTPUT_BYTES,
        help="Most bytes of output one cell keeps in the executed notebook; the rest is dropped "
        "as it streams in and a 'output truncated' marker says how much (1 KiB to 1 GiB).",
    ).tag(config=True)
    max_block_log_bytes = Int(
        DEFAULT_MAX_BLOCK_LOG_BYTES,
        help="Most bytes one block's log keeps (stdout, stderr, the error), with a marker at "
        "the cut (1 KiB to 1 GiB).",
    ).tag(config=True)

    @validate("max_cell_output_bytes", "max_block_log_bytes")
    def _cap_in_range(self, proposal: Any) -> int:
        value = proposal["value"]
        if isinstance(value, bool) or not MIN_OUTPUT_CAP_BYTES <= value <= MAX_OUTPUT_CAP_BYTES:
            raise TraitError(
                f"{proposal['trait'].name} must be between {MIN_OUTPUT_CAP_BYTES} and "
                f"{MAX_OUTPUT_CAP_BYTES} bytes, got {value!r}"
            )
        return int(value)

    @validate("workers", "runs_per_worker")
    def _at_least_one(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise TraitError(f"{proposal['trait'].name} must be >= 1, got {proposal['value']}")
        return int(proposal["value"])

    @validate("kernel_pool_size")
    def _not_negative(self, proposal: Any) -> int:
        if proposal["value"] < 0:
            raise TraitError(f"kernel_pool_size must be >= 0, got {proposal['value']}")
        return int(proposal["value"])

    @validate("idle_timeout")
    def _idle_timeout_in_range(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not 0 <= value <= MAX_IDLE_TIMEOUT:  # also refuses NaN
            raise TraitError(
                f"idle_timeout must be between 0 and {MAX_IDLE_TIMEOUT:.0f} seconds (one year), "
                f"got {proposal['value']}"
            )
        return value

    def __init__(self, store: Store, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        assert store.project_dir is not None
        self.store = store
        self._workers: list[_Worker] = []
        self._queue: deque[int] = deque()
        self._futures: dict[int, asyncio.Future[RunResult]] = {}
        self._closing = False
        self._start_failures = 0
        self._last_start_exit: int | None = None
        self._changed: asyncio.Event | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._reapers: set[asyncio.Future[None]] = set()
        #: Workers that died before they were ready, whose exit status is still awaited.
        self._judging = 0
        #: What happened to the workers, oldest first (the last 1,000 events).
        self.events: deque[ExecutorEvent] = deque(maxlen=1000)

    # ----- what the scheduler reads ----------------------------------------------------------

    @property
    def active_runs(self) -> set[int]:
        return set(self._futures)

    @property
    def capacity(self) -> int:
        if self._closing:
            return 0
        if self.lazy_workers or self._gave_up:
            # On demand: submitting is what starts workers. Given up: runs submitted now fail
            # at once with the reason instead of waiting forever.
            return self.workers * self.runs_per_worker
        return self.runs_per_worker * len(
            [w for w in self._workers if w.pid is not None and not w.retiring]
        )

    @property
    def description(self) -> str:
        workers = f"{self.workers} local worker{'s' if self.workers != 1 else ''}"
        if self.lazy_workers:
            return f"{workers}, started on demand, stopped after {self.idle_timeout:g} s idle"
        return f"{workers}, kept warm"

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the workers that are up and take runs."""
        return [w.pid for w in self._workers if w.pid is not None and not w.retiring]

    @property
    def process_pids(self) -> list[int]:
        """Process ids of every worker process not yet seen exiting (starting and retiring
        ones included)."""
        return [w.process.pid for w in self._workers if not w.exited]

    @property
    def _gave_up(self) -> bool:
        return self._start_failures >= MAX_START_FAILURES

    # ----- start -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Warm workers: start them and return once none is still starting; raise
        :class:`ExecutorError` if none came up. ``lazy_workers``: start nothing now."""
        self._changed = asyncio.Event()
        if self.lazy_workers:
            return
        self._ensure_workers()
        while True:
            if not any(w.starting for w in self._workers) and not self._judging:
                if any(w.pid is not None for w in self._workers):
                    return
                if self._gave_up or not self._workers:
                    raise ExecutorError(self._unstartable_reason())
            self._changed.clear()
            await self._changed.wait()

    def _unstartable_reason(self) -> str:
        code = self._last_start_exit
        return (
            f"no worker process could start: {self._start_failures} in a row exited before "
            f"they were ready (last exit code {code}; the worker's error is printed above). "
            "Check that the database URL can be opened from a new process and that kernels "
            "can start (python -m ipykernel_launcher --help), then restart the scheduler."
        )

    def _ensure_workers(self) -> None:
        """Start the workers the current work needs: all ``workers`` when kept warm; with
        ``lazy_workers`` enough for the queued and executing runs."""
        if self._closing or self._gave_up:
            return
        live = [w for w in self._workers if not w.retiring and not w.exited]
        if self.lazy_workers:
            demand = len(self._queue) + sum(len(w.runs) for w in live)
            needed = min(self.workers, -(-demand // self.runs_per_worker))
        else:
            needed = self.workers
        for _ in range(needed - len(live)):
            self._spawn()

    def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair()
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        conn.send(
            {
                "sys_path": list(sys.path),
                "db_url": self.store.url,
                "project_dir": str(self.store.project_dir),
                "kernel_pool_size": self.kernel_pool_size,
                "preload": list(self.preload),
                "max_cell_output_bytes": self.max_cell_output_bytes,
                "max_block_log_bytes": self.max_block_log_bytes,
                "parent_pid": os.getpid(),
            }
        )
        worker = _Worker(process, conn)
        self._workers.append(worker)
        self._record("spawned", process.pid)
        asyncio.get_running_loop().add_reader(conn.fileno(), self._on_message, worker)
        return worker

    def _record(self, kind: str, pid: int) -> None:
        self.events.append(ExecutorEvent(kind, utcnow(), pid))

    def _changed_now(self) -> None:
        if self._changed is not None:
            self._changed.set()

    # ----- messages from workers -----------------------------------------------------------

    def _on_message(self, worker: _Worker) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            self._on_worker_exit(worker)
            return
        kind = message[0]
        if kind == "ready":
            worker.pid = int(message[1])
            self._start_failures = 0
            self._record("ready", worker.pid)
            self._changed_now()
            self._dispatch()
            self._maybe_idle()
            if not worker.retiring:
                self.capacity_changed()
        elif kind == "done":
            run_id, payload = int(message[1]), message[2]
            worker.runs.discard(run_id)
            self._resolve(RunResult(run_id=run_id, **payload))
            self._dispatch()
            self._maybe_idle()

    def _on_worker_exit(self, worker: _Worker) -> None:
        if worker.exited:
            return  # already handled
        worker.exited = True
        if worker in self._workers:
            self._workers.remove(worker)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(worker.conn.fileno())
        worker.conn.close()
        self._record("exited", worker.process.pid)
        self._changed_now()
        reaped = self._reap(worker)
        if worker.retiring and not worker.runs:
            return  # stopped for being idle, as asked
        code = worker.process.poll()  # never block the caller's loop
        reason = (
            f"worker process {worker.pid or worker.process.pid} died"
            + (f" (exit code {code})" if code is not None else "")
            + " while the run executed"
        )
        orphans = list(worker.runs)
        worker.runs.clear()
        # Futures first (cheap, cannot fail), then the database off the loop.
        for run_id in orphans:
            self._resolve(RunResult(run_id, PipelineRunStatus.FAILED.value, reason))
        if orphans:
            loop.run_in_executor(None, self._fail_orphaned_runs, orphans, reason)
        if self._closing:
            return
        if worker.pid is None:
            # It died before it was ready (bad database URL, kernel pool failure): count it
            # once its exit status is known, and do not spin.
            self._judging += 1
            reaped.add_done_callback(lambda _done: self._failed_start(worker))
            return
        self._replace(reason)

    def _replace(self, reason: str) -> None:
        before = len(self._workers)
        self._ensure_workers()
        if len(self._workers) > before:
            log.warning("%s; starting a replacement", reason)
        else:
            log.warning("%s", reason)
        self._maybe_idle()

    def _failed_start(self, worker: _Worker) -> None:
        self._judging -= 1
        if self._closing:
            self._changed_now()
            return
        code = worker.process.poll()
        self._start_failures += 1
        self._last_start_exit = code
        self._changed_now()
        if self._gave_up:
            log.error(
                "worker processes keep dying at start (last exit code %s); not starting "
                "more. Check the database URL and that kernels can start (the worker's "
                "error is printed above), then restart the scheduler.",
                code,
            )
            self._fail_unstartable(list(self._queue))
            self._queue.clear()
            self.capacity_changed()  # runs waiting for capacity now fail with the reason
            return
        self._replace(
            f"worker process {worker.process.pid} exited before it was ready (exit code {code})"
        )

    def _reap(self, worker: _Worker) -> asyncio.Future[None]:
        """Collect the exit status of a worker whose connection closed (no zombie is left), in
        the background; one that does not exit soon is killed."""

        async def reap() -> None:
            if worker.process.poll() is not None:
                return
            try:
                await asyncio.to_thread(worker.process.wait, 10)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                await asyncio.to_thread(worker.process.wait)

        task = asyncio.ensure_future(reap())
        self._reapers.add(task)
        task.add_done_callback(self._reapers.discard)
        return task

    # ----- idle workers ----------------------------------------------------------------------

    def _busy(self) -> bool:
        return bool(self._queue) or any(w.runs for w in self._workers)

    def _cancel_idle_timer(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None

    def _maybe_idle(self) -> None:
        """With ``lazy_workers``: nothing queued or executing → stop the workers after
        ``idle_timeout`` (unless work arrives first)."""
        if not self.lazy_workers or self._closing:
            return
        if self._busy():
            self._cancel_idle_timer()
            return
        if self._idle_handle is None and any(not w.retiring for w in self._workers):
            self._idle_handle = asyncio.get_running_loop().call_later(
                self.idle_timeout, self._retire_idle
            )

    def _retire_idle(self) -> None:
        self._idle_handle = None
        if self._busy() or self._closing:
            return
        retiring = [w for w in self._workers if not w.retiring]
        for worker in retiring:
            worker.retiring = True
            self._record("retired", worker.process.pid)
            try:
                worker.conn.send(("stop", 0.0))
            except OSError:
                worker.process.kill()  # its exit is noticed (EOF) and reaped as usual
        if retiring:
            log.info(
                "stopped %d idle worker process(es): nothing to run for %g s; the next run "
                "starts them again",
                len(retiring),
                self.idle_timeout,
            )

    # ----- runs ------------------------------------------------------------------------------

    def _cancel_queued(self, run_id: int) -> None:
        """A run cancelled before any worker took it: ``initial → cancelled`` in the database."""
        with self.store.write_engine.begin() as connection:
            if self.owner is not None:
                owner = connection.execute(select(RUNS.c.owner).where(RUNS.c.id == run_id)).scalar()
                if owner != self.owner:
                    return  # no longer ours (taken over): not ours to cancel
            end_run(
                connection,
                run_id,
                PipelineRunStatus.CANCELLED.value,
                "cancelled before it started",
                utcnow(),
                from_statuses=(PipelineRunStatus.INITIAL.value,),
            )

    def _fail_orphaned_runs(self, run_ids: list[int], reason: str) -> None:
        """Runs a dead worker left ``running`` are failed with the reason, their blocks closed."""
        for run_id in run_ids:
            try:
                self._fail_orphaned_run(run_id, reason)
            except Exception:
                log.exception("could not mark run %s failed", run_id)

    def _fail_orphaned_run(self, run_id: int, reason: str) -> None:
        from mage_nb_sched.execution.runner import fail_run

        fail_run(self.store, run_id, reason, utcnow(), owner=self.owner)

    def _resolve(self, result: RunResult) -> None:
        future = self._futures.pop(result.run_id, None)
        if future is not None and not future.done():
            future.set_result(result)

    def _dispatch(self) -> None:
        while self._queue:
            candidates = [
                w
                for w in self._workers
                if w.pid is not None
                and not w.retiring
                and not w.exited
                and len(w.runs) < self.runs_per_worker
            ]
            if not candidates:
                return
            worker = min(candidates, key=lambda w: len(w.runs))
            run_id = self._queue.popleft()
            try:
                worker.conn.send(("run", run_id))
            except OSError:
                # The worker just died; its exit handler replaces it. Keep the run queued.
                self._queue.appendleft(run_id)
                self._on_worker_exit(worker)
                return
            worker.runs.add(run_id)

    async def submit(self, run_id: int) -> asyncio.Future[RunResult]:
        if self._closing:
            raise RuntimeError("the executor is shutting down")
        existing = self._futures.get(run_id)
        if existing is not None:
            return existing
        future: asyncio.Future[RunResult] = asyncio.get_running_loop().create_future()
        self._futures[run_id] = future
        self._queue.append(run_id)
        self._cancel_idle_timer()
        if self._gave_up and not any(not w.exited for w in self._workers):
            # Nothing will ever take it: fail it now rather than leave it queued forever.
            self._fail_unstartable([run_id])
            self._queue.remove(run_id)
            return future
        self._ensure_workers()
        self._dispatch()
        return future

    def _fail_unstartable(self, run_ids: list[int]) -> None:
        reason = "no worker process could start (see the scheduler's log)"
        for run_id in run_ids:
            self._resolve(RunResult(run_id, PipelineRunStatus.FAILED.value, reason))
        if run_ids:
            asyncio.get_running_loop().run_in_executor(
                None, self._fail_waiting_runs, run_ids, reason
            )

    def _fail_waiting_runs(self, run_ids: list[int], reason: str) -> None:
        """Runs no worker will take: ``initial → failed`` with the reason."""
        for run_id in run_ids:
            try:
                with self.store.write_engine.begin() as connection:
                    if self.owner is not None:
                        owner = connection.execute(
                            select(RUNS.c.owner).where(RUNS.c.id == run_id)
                        ).scalar()
                        if owner != self.owner:
                            continue
                    end_run(
                        connection,
                        run_id,
                        PipelineRunStatus.FAILED.value,
                        reason,
                        utcnow(),
                        from_statuses=(PipelineRunStatus.INITIAL.value,),
                    )
            except Exception:
                log.exception("could not mark run %s failed", run_id)

    async def cancel(self, run_id: int) -> None:
        if run_id in self._queue:
            self._queue.remove(run_id)
            await asyncio.get_running_loop().run_in_executor(None, self._cancel_queued, run_id)
            self._resolve(RunResult(run_id, PipelineRunStatus.CANCELLED.value, "cancelled"))
            self._maybe_idle()
            return
        for worker in self._workers:
            if run_id in worker.runs:
                worker.conn.send(("cancel", run_id))

    async def kill(self, run_id: int) -> None:
        """Kill the worker executing ``run_id`` (and with it its kernels); its runs are failed
        with the reason and a replacement worker is started."""
        for worker in self._workers:
            if run_id in worker.runs and worker.process.poll() is None:
                log.warning("killing worker %s: run %s did not stop", worker.pid, run_id)
                worker.process.kill()

    async def shutdown(self, grace: float = 10.0) -> None:
        self._closing = True
        self._cancel_idle_timer()
        for run_id in list(self._queue):
            self._resolve(RunResult(run_id, PipelineRunStatus.INITIAL.value, "executor shut down"))
        self._queue.clear()
        loop = asyncio.get_running_loop()
        # The worker stops its runs right after ``grace``; a worker that does not exit soon
        # after is killed (its kernels die with it), so stopping never takes much over grace.
        deadline = loop.time() + grace + 1.5
        workers = list(self._workers)
        for worker in workers:
            if worker.pid is None and not worker.runs:
                # Still starting (importing, or waiting for its database): it has nothing to
                # finish, and would only read the request once it is up.
                worker.process.kill()
                continue
            with contextlib.suppress(BrokenPipeError, OSError):
                worker.conn.send(("stop", grace))
        await asyncio.gather(*(self._stop(worker, deadline) for worker in workers))
        if self._reapers:
            await asyncio.gather(*list(self._reapers), return_exceptions=True)
        self._workers.clear()

    async def _stop(self, worker: _Worker, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(worker.process.wait, max(0.1, deadline - loop.time()))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(worker.process.wait, 5)
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(worker.conn.fileno())
        for run_id in list(worker.runs):
            await asyncio.to_thread(
                self._fail_orphaned_run, run_id, "executor shut down while the run executed"
            )
            self._resolve(RunResult(run_id, PipelineRunStatus.FAILED.value, "executor shut down"))
        worker.runs.clear()
        if not worker.exited:
            worker.exited = True
            worker.conn.close()
            self._record("exited", worker.process.pid)
