"""The default executor: a pool of local worker processes, each with warm kernels.

Runs never execute on the caller's event loop (the Jupyter server's): each worker is a separate
interpreter (multiprocessing ``spawn``) with its own asyncio loop, a :class:`KernelPool` and a
:class:`PipelineRunner`. The parent talks to workers over pipes it watches with ``add_reader``, so
submitting, cancelling and collecting results cost the caller's loop microseconds.

If a worker dies, its in-flight runs are marked failed with the reason, and its kernels die with
it (they are tied to the worker's fork server by ``PR_SET_PDEATHSIG``); a replacement worker is
started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from sqlalchemy import select
from traitlets import Int, List, TraitError, Unicode, validate

from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.core.enums import PipelineRunStatus
from mage_nb_sched.execution.executors.base import Executor, RunResult
from mage_nb_sched.service.transitions import end_run
from mage_nb_sched.store import schema
from mage_nb_sched.store.engine import Store

log = logging.getLogger(__name__)

RUNS = schema.pipeline_run


# --------------------------------------------------------------------------------------------
# Worker process
# --------------------------------------------------------------------------------------------


def worker_main(
    conn: Connection,
    db_url: str,
    project_dir: str,
    kernel_pool_size: int,
    preload: Sequence[str],
    parent_pid: int,
) -> None:
    """Entry point of a worker process: execute the runs the parent sends, report results."""
    from mage_nb_sched.execution.kernel_forkserver import set_pdeathsig

    # Die with the scheduler, even on kill -9: its runs are then recovered from the database
    # (and this worker's kernels die with it in turn).
    set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)  # the parent died before the line above took effect
    # Our own process group: a Ctrl-C or a SIGTERM sent to the scheduler's whole group (a
    # terminal, `timeout`, `kill -- -PGID`) must not kill runs the scheduler wants to stop
    # gracefully; the scheduler stops us itself (and PDEATHSIG covers its death).
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    asyncio.run(_worker_loop(conn, db_url, project_dir, kernel_pool_size, tuple(preload)))
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
    runner = PipelineRunner(store, pool)
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


@dataclass
class _Worker:
    process: Any
    conn: Connection
    pid: int | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    runs: set[int] = field(default_factory=set)


class LocalExecutor(Executor):
    """Runs pipeline runs in ``workers`` local processes, ``runs_per_worker`` at a time each.

    ``kernel_pool_size`` warm kernels are kept per worker. ``preload`` names modules the kernel
    fork server imports once so every kernel starts with them loaded (e.g. ``["pandas"]``).
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

    def __init__(self, store: Store, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        assert store.project_dir is not None
        self.store = store
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._queue: deque[int] = deque()
        self._futures: dict[int, asyncio.Future[RunResult]] = {}
        self._closing = False
        self._start_failures = 0

    @property
    def active_runs(self) -> set[int]:
        return set(self._futures)

    @property
    def capacity(self) -> int:
        return self.workers * self.runs_per_worker

    @property
    def worker_pids(self) -> list[int]:
        return [worker.pid for worker in self._workers if worker.pid is not None]

    async def start(self) -> None:
        for _ in range(self.workers):
            self._spawn()
        await asyncio.gather(*(worker.ready.wait() for worker in self._workers))

    def _spawn(self) -> _Worker:
        parent_conn, child_conn = self._context.Pipe()
        process = self._context.Process(
            target=worker_main,
            args=(
                child_conn,
                self.store.url,
                str(self.store.project_dir),
                self.kernel_pool_size,
                tuple(self.preload),
                os.getpid(),
            ),
            name="mage-nb-sched-worker",
            daemon=True,
        )
        process.start()
        child_conn.close()
        worker = _Worker(process, parent_conn)
        self._workers.append(worker)
        loop = asyncio.get_running_loop()
        loop.add_reader(parent_conn.fileno(), self._on_message, worker)
        return worker

    def _on_message(self, worker: _Worker) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            self._on_worker_exit(worker)
            return
        kind = message[0]
        if kind == "ready":
            worker.pid = int(message[1])
            worker.ready.set()
            self._dispatch()
        elif kind == "done":
            run_id, payload = int(message[1]), message[2]
            worker.runs.discard(run_id)
            self._resolve(RunResult(run_id=run_id, **payload))
            self._dispatch()

    def _on_worker_exit(self, worker: _Worker) -> None:
        if worker not in self._workers:
            return  # already handled
        self._workers.remove(worker)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(worker.conn.fileno())
        worker.conn.close()
        worker.process.join(timeout=0)  # never block the caller's loop
        code = worker.process.exitcode
        reason = (
            f"worker process {worker.pid} died"
            + (f" (exit code {code})" if code is not None else "")
            + " while the run executed"
        )
        orphans = list(worker.runs)
        worker.runs.clear()
        worker.ready.set()
        # Futures first (cheap, cannot fail), then the database off the loop.
        for run_id in orphans:
            self._resolve(RunResult(run_id, PipelineRunStatus.FAILED.value, reason))
        if orphans:
            loop.run_in_executor(None, self._fail_orphaned_runs, orphans, reason)
        if self._closing:
            return
        if worker.pid is None:
            # It died before it was ready (bad database URL, kernel pool failure): do not spin.
            self._start_failures += 1
            if self._start_failures >= 3:
                log.error(
                    "worker processes keep dying at start (last exit code %s); not starting "
                    "more. Check the database URL and that kernels can start (the worker's "
                    "error is printed above), then restart the scheduler.",
                    code,
                )
                self._fail_unstartable(list(self._queue))
                self._queue.clear()
                return
        log.warning("%s; starting a replacement", reason)
        self._spawn()

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
                if w.ready.is_set() and w.pid is not None and len(w.runs) < self.runs_per_worker
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
                worker.ready.clear()
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
        if not self._workers and self._start_failures >= 3:
            # Nothing will ever take it: fail it now rather than leave it queued forever.
            self._fail_unstartable([run_id])
            self._queue.remove(run_id)
            return future
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
            return
        for worker in self._workers:
            if run_id in worker.runs:
                worker.conn.send(("cancel", run_id))

    async def kill(self, run_id: int) -> None:
        """Kill the worker executing ``run_id`` (and with it its kernels); its runs are failed
        with the reason and a replacement worker is started."""
        for worker in self._workers:
            if run_id in worker.runs and worker.process.is_alive():
                log.warning("killing worker %s: run %s did not stop", worker.pid, run_id)
                worker.process.kill()

    async def shutdown(self, grace: float = 10.0) -> None:
        self._closing = True
        for run_id in list(self._queue):
            self._resolve(RunResult(run_id, PipelineRunStatus.INITIAL.value, "executor shut down"))
        self._queue.clear()
        for worker in list(self._workers):
            with contextlib.suppress(BrokenPipeError, OSError):
                worker.conn.send(("stop", grace))
        loop = asyncio.get_running_loop()
        # The worker stops its runs right after ``grace``; a worker that does not exit soon
        # after is killed (its kernels die with it), so stopping never takes much over grace.
        deadline = loop.time() + grace + 1.5
        for worker in list(self._workers):
            remaining = max(0.1, deadline - loop.time())
            await asyncio.to_thread(worker.process.join, remaining)
            if worker.process.is_alive():
                worker.process.kill()
                await asyncio.to_thread(worker.process.join, 5)
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(worker.conn.fileno())
            for run_id in list(worker.runs):
                await asyncio.to_thread(
                    self._fail_orphaned_run, run_id, "executor shut down while the run executed"
                )
                self._resolve(
                    RunResult(run_id, PipelineRunStatus.FAILED.value, "executor shut down")
                )
            worker.conn.close()
        self._workers.clear()
