"""The scheduler loop: event-driven, one pass at a time, the same in Jupyter and headless.

Each pass reads the clock once and runs the steps of :mod:`mage_nb_sched.service.scheduling`
(all database work on one background thread, never on the event loop), then hands the runs it
picked to the executor, stops runs that ended elsewhere (cancel, timeout) and sends
notifications. Between passes the loop sleeps until the earliest thing that can happen — a
schedule's next due time, an SLA or timeout deadline, the lease renewal — or until the store
changes (:class:`~mage_nb_sched.store.changes.ChangeWatcher`): a run created by the API starts
within milliseconds, and an idle scheduler does no work. There is no fixed tick.

The :class:`~mage_nb_sched.store.coordination.Coordinator` (``coordinator_class``) decides
which scheduler may create and start runs. By default one scheduler per database is active: it
holds the ``leader`` lease; others stand by and take over when the lease expires. Each
scheduler also keeps a heartbeat so that runs it owned are recovered after it dies.

Start-up does not wait for the executor: :meth:`Scheduler.start` writes the first heartbeat and
lease (a database it cannot write is reported there, at once), starts the loop, and starts the
executor in the background. Due runs are recorded by the first pass; they are handed to the
executor as its capacity allows (0 until its workers are up; an executor that starts workers on
demand reports its full capacity). Before the runs a pass took are handed over, the scheduler
confirms with its coordinator that it still leads; otherwise it gives them back.

The swappable parts are traitlets ``Type`` traits, set in config by class or dotted name:
``executor_class`` (:class:`~mage_nb_sched.execution.executors.base.Executor`),
``coordinator_class`` and ``artifact_store_class``
(:class:`~mage_nb_sched.store.artifacts.ArtifactStore`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from traitlets import Bool, Float, Instance, Int, TraitError, Type, default, observe, validate
from traitlets.config import LoggingConfigurable

from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.core.errors import MageNbSchedError, StoreError, ValidationError
from mage_nb_sched.execution.executors.base import Executor, RunResult
from mage_nb_sched.execution.executors.local import LocalExecutor
from mage_nb_sched.scheduling import passes as scheduling
from mage_nb_sched.scheduling.notifications import Notification, Notifier
from mage_nb_sched.service.transitions import database_unavailable
from mage_nb_sched.store.artifacts import ArtifactStore, LocalArtifactStore
from mage_nb_sched.store.changes import ChangeWatcher
from mage_nb_sched.store.coordination import Coordinator, LeaderLeaseCoordinator
from mage_nb_sched.store.engine import Store, store_error

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class PassReport:
    """What one pass did (tests, logs and the benchmark read this)."""

    now: datetime
    created: list[int] = field(default_factory=list)
    started: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    stopped: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    #: Runs this pass took but gave back unstarted: the lease was lost (or could not be
    #: confirmed) before they were handed to the executor.
    released: list[int] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    next_wake: datetime | None = None
    seconds: float = 0.0

    @property
    def changed_anything(self) -> bool:
        return bool(
            self.created
            or self.started
            or self.skipped
            or self.stopped
            or self.requeued
            or self.failed
            or self.released
            or self.notifications
        )


def redacted_url(url: str) -> str:
    """``url`` with its password masked, for log lines and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: show only the scheme
        return url.split(":", 1)[0] + ":…"


def unwritable_store_error(store: Store, error: BaseException) -> StoreError:
    """The scheduler could not write its first lease: the database error as a
    :class:`StoreError` naming the database and what to do (:func:`store_error`), with the
    scheduler's own hint for a URL that opens SQLite read-only (``mode=ro``)."""
    translated = store_error(error, store)
    message = f"the scheduler cannot write its database: {translated}"
    try:
        read_only_url = str(make_url(store.url).query.get("mode", "")).lower() == "ro"
    except Exception:
        read_only_url = False
    if read_only_url:
        message += " The URL itself opens it read-only (mode=ro): remove mode=ro from it."
    return StoreError(message)


class Scheduler(LoggingConfigurable):
    """Creates runs when they are due and executes them with an :class:`Executor`.

    ``clock`` is injectable (tests); everything that needs the time gets it from one read per
    pass. Start with :meth:`start`, stop with :meth:`stop` (in-flight runs get
    ``shutdown_grace`` seconds, then their kernels are killed and the runs are queued again).
    """

    executor_class = Type(
        default_value=LocalExecutor,
        klass=Executor,
        help="Executor that runs pipeline runs: a subclass of "
        "mage_nb_sched.execution.executors.base.Executor, or its dotted import path "
        "(default LocalExecutor: local worker processes with warm kernels).",
    ).tag(config=True)
    coordinator_class: Type[type[Coordinator], type[Coordinator]] = Type(
        default_value=LeaderLeaseCoordinator,
        klass=Coordinator,
        help="Decides which scheduler may create and start runs and which schedulers are "
        "alive: a subclass of mage_nb_sched.store.coordination.Coordinator, or its dotted "
        "import path (default LeaderLeaseCoordinator: one active scheduler per database, "
        "holding the leader lease; the others stand by).",
    ).tag(config=True)
    artifact_store_class: Type[type[ArtifactStore], type[ArtifactStore]] = Type(
        default_value=LocalArtifactStore,
        klass=ArtifactStore,
        help="Where runs' outputs, logs and executed notebooks are kept (and deleted by "
        "run_retention_days): a subclass of mage_nb_sched.store.artifacts.ArtifactStore, or "
        "its dotted import path (default LocalArtifactStore: the project's data dir).",
    ).tag(config=True)
    lease_seconds = Float(
        10.0,
        help="Leader lease and heartbeat length (seconds). A standby scheduler takes over at "
        "most this long after the leader died; runs of a dead scheduler are recovered then.",
    ).tag(config=True)
    shutdown_grace = Float(
        10.0,
        help="Seconds in-flight runs get to finish when the scheduler stops; then their kernels "
        "are killed and the runs are queued to execute again on the next start.",
    ).tag(config=True)
    kill_grace = Float(
        10.0,
        help="Seconds a cancelled or timed-out run may stay in the executor before its worker "
        "process is killed (a hung worker cannot hold a run forever).",
    ).tag(config=True)
    max_recovery_attempts = Int(
        1,
        help="How often a run whose scheduler died while executing it is executed again "
        "before it is failed with the reason (0: fail at once).",
    ).tag(config=True)
    min_pass_interval = Float(
        0.01,
        help="Shortest time between two passes (seconds): bounds the cost of a database that "
        "changes constantly (block statuses of many running runs).",
    ).tag(config=True)
    change_poll_interval = Float(
        0.02,
        help="How often the SQLite change counter (PRAGMA data_version) is read (seconds). "
        "Runs created by the API start within about this long.",
    ).tag(config=True)
    fallback_poll_interval = Float(
        1.0,
        help="Databases without a change counter (PostgreSQL): seconds between passes when "
        "nothing is due earlier.",
    ).tag(config=True)
    trigger_scan_interval = Float(
        60.0,
        help="Seconds between full rescans of the project's *.triggers.yaml files, the safety "
        "net behind the file watcher (watch_files), which syncs a changed file within "
        "milliseconds; without the watcher, how often files are checked.",
    ).tag(config=True)
    watch_files = Bool(
        True,
        help="Re-sync *.triggers.yaml files when the OS reports a change (watchfiles: inotify, "
        "FSEvents, ReadDirectoryChangesW) instead of only walking the project every "
        "trigger_scan_interval seconds.",
    ).tag(config=True)
    file_events = Bool(
        True,
        help="Fire local file events: an active event schedule whose variables.event_type glob "
        "matches file:created / file:modified (e.g. 'file:*') and whose variables.path glob "
        "(relative to the project dir, e.g. 'incoming/*.csv') matches a file that is created or "
        "modified gets a run with event {'event_type': ..., 'path': ...}. Uses the file "
        "watcher (watch_files); only the active (leading) scheduler fires them. A pipeline "
        "that writes into the files it watches fires itself again.",
    ).tag(config=True)
    file_event_settle = Float(
        0.2,
        help="Seconds a changed file must stay quiet before its file event fires (a file "
        "written in several steps, a slow copy, fires once, with its final content); a "
        "project that changes without pause fires at least every 10 x this long.",
    ).tag(config=True)
    run_retention_days = Int(
        0,
        help="Delete runs (with outputs, logs and executed notebooks) that finished more than "
        "this many days ago. 0 keeps everything.",
    ).tag(config=True)
    notifier = Instance(Notifier, allow_none=True, help="Where failure/SLA alerts go.")

    @default("log")
    def _log_default(self) -> Any:
        # This module's logger unless a parent (or ``log=``) gives one: the Jupyter extension
        # passes the server's, so the serving/stopped lines land in the server's log.
        if isinstance(self.parent, LoggingConfigurable):
            return self.parent.log
        return log

    @validate("lease_seconds", "shutdown_grace", "trigger_scan_interval", "file_event_settle")
    def _positive(self, proposal: Any) -> float:
        if proposal["value"] <= 0:
            raise TraitError(f"{proposal['trait'].name} must be > 0, got {proposal['value']}")
        return float(proposal["value"])

    @observe("lease_seconds")
    def _lease_seconds_changed(self, change: Any) -> None:
        coordinator = getattr(self, "coordinator", None)  # None while __init__ runs
        if coordinator is not None:
            coordinator.lease_seconds = float(change["new"])

    @validate("run_retention_days", "max_recovery_attempts", "kill_grace")
    def _not_negative(self, proposal: Any) -> Any:
        if proposal["value"] < 0:
            raise TraitError(f"{proposal['trait'].name} must be >= 0, got {proposal['value']}")
        return proposal["value"]

    def __init__(
        self,
        store: Store,
        *,
        executor: Executor | None = None,
        clock: Callable[[], datetime] = utcnow,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if store.project_dir is None:
            raise ValidationError(
                "project_dir",
                None,
                "the scheduler needs a store opened for a project dir",
                "Open it with mage_nb_sched.store.open_store(url, project_dir).",
            )
        self.store = store
        self.clock = clock
        self.coordinator: Coordinator = self.coordinator_class(
            store, lease_seconds=self.lease_seconds, parent=self
        )
        self.artifacts: ArtifactStore = self.artifact_store_class(store.project_dir, parent=self)
        # Every executor is made as ``executor_class(store, **traits)`` (see Executor).
        make_executor: Callable[..., Executor] = self.executor_class
        self.executor = executor or make_executor(store, parent=self)
        if self.notifier is None:
            self.notifier = Notifier(parent=self)
        self.instance_id = self.coordinator.instance_id
        self.executor.owner = self.instance_id
        self.executor.artifacts = self.artifacts
        # More capacity (workers came up): hand waiting runs over now, not at the next pass.
        self.executor.on_capacity = self.wake
        self.is_leader = False
        #: Why the scheduler stopped on its own (the executor could not start), else None.
        self.failure: BaseException | None = None
        self._failed = asyncio.Event()
        self._executor_task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Future[None] | None = None
        self._in_flight: dict[int, asyncio.Future[RunResult]] = {}
        self._recently_done: dict[int, float] = {}
        self._stop_requested: dict[int, float] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._main_task: asyncio.Task[None] | None = None
        # One thread for the passes, one for leases (a slow pass never delays a heartbeat), one
        # for file work (triggers.yaml scans, retention), so nothing queues behind the others.
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mage-nb-sched-db")
        self._lease_thread = ThreadPoolExecutor(1, thread_name_prefix="mage-nb-sched-lease")
        self._files_thread = ThreadPoolExecutor(1, thread_name_prefix="mage-nb-sched-files")
        self._watcher: ChangeWatcher | None = None
        self._next_recovery = 0.0
        self._trigger_files: dict[Any, int] | None = None
        self._file_watcher: Any = None
        self._next_busy_warning = 0.0
        self._files_changed = asyncio.Event()
        # Local file events: changed files (absolute path -> created | modified) waiting for
        # the files to settle, and the event that wakes the task firing them.
        self._file_changes: dict[Any, str] = {}
        self._file_changes_arrived = asyncio.Event()
        #: Batches of file changes handled while leading, and events fired from them (tests).
        self.file_event_batches = 0
        self.file_events_fired = 0
        self._next_retention = 0.0
        self._last_renewed = -1e18
        #: Durations (seconds) of recent passes, newest last.
        self.pass_seconds: deque[float] = deque(maxlen=10_000)
        self.passes = 0
        #: Turns of the main loop (a standby must not spin: tests watch this).
        self.iterations = 0
        self.last_report: PassReport | None = None

    # ----- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Write the first heartbeat and take the lease (or stand by), then start the loop, the
        notifier and the change watcher — and the executor, in the background: due runs are
        recorded while its workers start, and executed once it has capacity.

        Raises :class:`StoreError` (naming the database and the fix) if the database cannot be
        written; nothing is started then."""
        loop = asyncio.get_running_loop()
        try:
            leading = await loop.run_in_executor(self._lease_thread, self._heartbeat, self.clock())
        except SQLAlchemyError as err:
            self._close_threads()
            raise unwritable_store_error(self.store, err) from err
        except BaseException:
            self._close_threads()
            raise
        self._last_renewed = loop.time()
        self._leading_changed(leading)
        assert self.notifier is not None
        await self.notifier.start()
        self._watcher = ChangeWatcher(
            self.store,
            self.wake,
            poll_interval=self.change_poll_interval,
            fallback_interval=self.fallback_poll_interval,
        )
        self._watcher.start()
        if self.watch_files and self.store.project_dir is not None:
            from mage_nb_sched.core.project import TRIGGERS_SUFFIX
            from mage_nb_sched.store.file_watch import FileWatcher

            def files_changed(_paths: set[Any]) -> None:
                if not loop.is_closed():
                    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                        loop.call_soon_threadsafe(self._files_changed.set)

            def file_events(changes: list[tuple[str, Any]]) -> None:
                if not loop.is_closed():
                    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                        loop.call_soon_threadsafe(self._queue_file_changes, changes)

            self._file_watcher = FileWatcher(
                self.store.project_dir,
                (TRIGGERS_SUFFIX,),
                files_changed,
                on_file_events=file_events if self.file_events else None,
            )
            self._file_watcher.start()
        self._main_task = self._spawn(self._main(), "loop")
        self._executor_task = self._spawn(self._start_executor(), "executor start")
        self._tasks = [
            self._main_task,
            self._spawn(self._keep_leases(), "leases"),
            self._spawn(self._maintain(), "maintenance"),
            self._spawn(self._fire_file_events(), "file events"),
            self._executor_task,
        ]
        self.log.info(
            "mage_nb_sched: scheduler %s serving %s (store %s; executor: %s; %s)",
            self.instance_id,
            self.store.project_dir,
            redacted_url(self.store.url),
            self.executor.description,
            "leading" if leading else "standing by: another scheduler leads",
        )

    async def _start_executor(self) -> None:
        try:
            await self.executor.start()
        except Exception as err:
            self.failure = err
            log.error(
                "the executor could not start, so this scheduler stops: %s",
                err,
                exc_info=not isinstance(err, MageNbSchedError),
            )
            self._failed.set()
            # Release the lease at once so a standby can take over; runs already recorded
            # stay waiting for it (or for the next start).
            if self._stop_task is None:
                self._stop_task = asyncio.ensure_future(self._stop(0.0))
            return
        log.debug("executor started: %s", self.executor.description)
        self.wake()

    async def wait_failed(self) -> BaseException:
        """Wait until the scheduler stops on its own because its executor could not start
        (:attr:`failure`); the scheduler is then stopped (or stopping). Never returns while
        the scheduler works."""
        await self._failed.wait()
        assert self.failure is not None
        return self.failure

    def _close_threads(self) -> None:
        watcher, self._file_watcher = self._file_watcher, None
        if watcher is not None:
            watcher.stop()
        for pool in (self._db, self._lease_thread, self._files_thread):
            pool.shutdown(wait=False)

    def _spawn(self, coroutine: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)

        def report(done: asyncio.Task[None]) -> None:
            if not done.cancelled() and done.exception() is not None:
                log.error(
                    "the scheduler's %s task stopped with an error; stop and restart the "
                    "scheduler (or the server) to resume",
                    name,
                    exc_info=done.exception(),
                )

        task.add_done_callback(report)
        return task

    async def stop(self, grace: float | None = None) -> None:
        """Stop: no new runs; in-flight runs get ``grace`` (default ``shutdown_grace``) seconds,
        then their kernels are killed and the runs are queued to execute again; leases are
        released so a standby takes over at once. The heartbeat goes on until then, so no
        standby takes these runs over while their kernels still run.

        An executor still starting is stopped at once (nothing runs on it yet). Calling stop
        again waits for the same stop."""
        if self._stop_task is None:
            self._stop_task = asyncio.ensure_future(self._stop(grace))
        await asyncio.shield(self._stop_task)

    async def _stop(self, grace: float | None) -> None:
        grace = self.shutdown_grace if grace is None else grace
        self._stopping = True
        self._wake.set()
        leftover: list[int] = []
        try:
            starting = self._executor_task
            if starting is not None and not starting.done():
                starting.cancel()
                with contextlib.suppress(BaseException):
                    await starting
            if self._main_task is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await self._main_task
            pending = [future for future in self._in_flight.values() if not future.done()]
            if pending:
                await asyncio.wait(pending, timeout=grace)
            leftover = [run_id for run_id, future in self._in_flight.items() if not future.done()]
            if leftover:
                log.warning(
                    "stopping with %d run(s) still executing: queued to execute again: %s",
                    len(leftover),
                    leftover,
                )
                # Back to 'initial' but still ours (nobody else takes them) and with no claim
                # (the old kernels' last writes are fenced out) ...
                await self._db_call(
                    scheduling.detach_interrupted,
                    self.store,
                    leftover,
                    self.instance_id,
                    self.clock(),
                )
            # ... then the kernels die ...
            await self.executor.shutdown(0)
            if leftover:
                # ... and only then may anyone execute them again.
                await self._db_call(
                    scheduling.release_runs, self.store, leftover, self.instance_id, self.clock()
                )
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(BaseException):
                    await task
            if self._watcher is not None:
                self._watcher.stop()
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(
                    self._lease_thread, self._release_leases
                )
            assert self.notifier is not None
            await self.notifier.stop(timeout=1.0)
            self._close_threads()
            self.log.info(
                "mage_nb_sched: scheduler %s stopped%s",
                self.instance_id,
                f" ({len(leftover)} run(s) queued to execute again)" if leftover else "",
            )

    def wake(self) -> None:
        """Make the loop run a pass now (the store changed, a run finished)."""
        self._wake.set()

    @property
    def running(self) -> bool:
        """Whether the loop is running (started, not stopped, not crashed)."""
        return self._main_task is not None and not self._main_task.done()

    @property
    def executing(self) -> set[int]:
        """Ids of runs this scheduler has handed to its executor and not seen finish."""
        return set(self._in_flight)

    # ----- leases ------------------------------------------------------------------------------

    async def _db_call(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db, function, *args)

    def _heartbeat(self, now: datetime) -> bool:
        # The last pass goes with the heartbeat: a status read from another process (the
        # REST API of a server whose scheduler is off) can say when this one last passed.
        report = self.last_report
        details = (
            None
            if report is None
            else {
                "last_pass_at": report.now.isoformat(),
                "last_pass_seconds": report.seconds,
                "passes": int(self.passes),
            }
        )
        self.coordinator.heartbeat(now, details)
        return self.coordinator.acquire(now)

    def _release_leases(self) -> None:
        self.coordinator.release()

    async def _keep_leases(self) -> None:
        """Renew the heartbeat and the leader lease every ``lease_seconds / 3`` on a thread of
        its own (until :meth:`stop` has dealt with every run); :meth:`start` took them first."""
        loop = asyncio.get_running_loop()
        pause = self.lease_seconds / 3
        while True:
            await asyncio.sleep(pause)
            try:
                leading = await loop.run_in_executor(
                    self._lease_thread, self._heartbeat, self.clock()
                )
            except Exception:
                log.exception("could not renew the scheduler lease; retrying")
                # Unknown, not lost — until the lease would have expired anyway.
                leading = self.is_leader and (
                    loop.time() - self._last_renewed < self.lease_seconds
                )
                pause = min(1.0, self.lease_seconds / 10)
            else:
                self._last_renewed = loop.time()
                pause = self.lease_seconds / 3
            self._leading_changed(leading)

    def _leading_changed(self, leading: bool) -> None:
        """Note whether this scheduler leads (after any lease check); log and wake on change."""
        if leading == self.is_leader:
            return
        if leading:
            log.info("scheduler %s is active", self.instance_id)
            self._next_recovery = 0.0  # recover a dead leader's runs at once
        else:
            log.warning("scheduler %s lost the leader lease; standing by", self.instance_id)
        self.is_leader = leading
        self.wake()

    async def _confirm_leading(self, run_ids: list[int], report: PassReport) -> list[int]:
        """The pass took ``run_ids``: confirm with the coordinator that this scheduler still
        leads before they are handed to the executor (a scheduler that was paused — SIGSTOP, a
        VM freeze — may have lost its lease while its loop still believed it led). If not,
        give them back for the leader, unstarted."""
        loop = asyncio.get_running_loop()
        try:
            leading = await loop.run_in_executor(
                self._lease_thread, self.coordinator.acquire, self.clock()
            )
        except Exception:
            log.exception("could not confirm the leader lease before starting runs")
            leading = False
        else:
            if leading:
                self._last_renewed = loop.time()
        if leading and not self._stopping:
            return run_ids
        if not leading:
            self._leading_changed(False)
        try:
            await self._db_call(
                scheduling.release_runs, self.store, run_ids, self.instance_id, self.clock()
            )
        except Exception:
            # Still ours in the database and not in flight: recovery releases them.
            log.exception("could not give runs %s back", run_ids)
        else:
            report.released = list(run_ids)
            log.warning(
                "scheduler %s gave back %d run(s) it had taken, unstarted: %s",
                self.instance_id,
                len(run_ids),
                "it no longer leads" if not leading else "it is stopping",
            )
        return []

    # ----- files: triggers.yaml and retention --------------------------------------------

    async def _maintain(self) -> None:
        """While leading: :meth:`maintain` when the file watcher reports a triggers.yaml change,
        and every ``trigger_scan_interval`` regardless (the safety net: a change made while the
        watcher was starting, a file system without events)."""
        while True:
            if self.is_leader and not self._stopping:
                try:
                    await self.maintain()
                except Exception:
                    log.exception("scheduler maintenance failed; trying again later")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._files_changed.wait(), self.trigger_scan_interval)
            self._files_changed.clear()

    def _queue_file_changes(self, changes: list[tuple[str, Any]]) -> None:
        """On the loop: note files the watcher saw created or modified. A file created and
        then modified before its event fires stays ``created``."""
        from mage_nb_sched.store.file_watch import CREATED

        for kind, path in changes:
            if self._file_changes.get(path) != CREATED:
                self._file_changes[path] = kind
        self._file_changes_arrived.set()

    async def _fire_file_events(self) -> None:
        """Fire local file events once the changed files have been quiet for
        ``file_event_settle`` seconds (bounded: a project that never stops changing still fires
        every 10 x that long), on the file thread. Only while leading: a standby drops them
        (the leader's watcher sees the same files). One event that cannot fire is logged and
        never stops the task."""
        loop = asyncio.get_running_loop()
        while True:
            await self._file_changes_arrived.wait()
            deadline = loop.time() + 10 * self.file_event_settle
            while loop.time() < deadline:
                self._file_changes_arrived.clear()
                try:
                    await asyncio.wait_for(
                        self._file_changes_arrived.wait(),
                        min(self.file_event_settle, max(0.0, deadline - loop.time())),
                    )
                except asyncio.TimeoutError:
                    break  # quiet: fire
            self._file_changes_arrived.clear()
            batch = [(kind, path) for path, kind in self._file_changes.items()]
            self._file_changes = {}
            if not batch or not self.is_leader or self._stopping:
                continue
            from mage_nb_sched.service.events import fire_file_changes

            try:
                outcomes = await loop.run_in_executor(
                    self._files_thread, fire_file_changes, self.store, batch
                )
            except Exception:
                log.exception("local file events for %d file(s) could not fire", len(batch))
                continue
            self.file_event_batches += 1
            fired = sum(len(outcome.runs) for outcome in outcomes)
            if fired:
                self.file_events_fired += fired
                self.wake()

    async def maintain(self) -> None:
        """Sync changed triggers.yaml files, and apply retention (at most hourly) — on a thread
        of their own, never delaying a pass."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._files_thread, self._sync_trigger_files)
        if self.run_retention_days and loop.time() >= self._next_retention:
            self._next_retention = loop.time() + 3600
            # The passes delete the files in the local data dir today (which is where
            # LocalArtifactStore puts them); self.artifacts is handed over once
            # delete_old_runs takes an artifact store.
            deleted = await loop.run_in_executor(
                self._files_thread,
                scheduling.delete_old_runs,
                self.store,
                self.clock(),
                self.run_retention_days,
            )
            if deleted:
                log.info(
                    "deleted %d run(s) finished over %d days ago", deleted, self.run_retention_days
                )

    # ----- the loop ----------------------------------------------------------------------------

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        last_pass = -1.0
        while not self._stopping and self.failure is None:
            self.iterations += 1
            if not self.is_leader:
                self._wake.clear()
                if self._in_flight:
                    await self._stop_runs_taken_elsewhere()
                # Woken by the lease task when this scheduler becomes the leader.
                await self._sleep(self.lease_seconds / 3)
                continue
            # Rate limit, not a race fix: changes arriving during the pass wake the next one.
            wait = last_pass + self.min_pass_interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            last_pass = loop.time()
            try:
                report = await self.run_pass()
            except Exception as err:
                if database_unavailable(err):
                    # Another process holds the database (or the server is away): a warning
                    # while it lasts — every 10 s, not every retry — and no traceback.
                    if loop.time() >= self._next_busy_warning:
                        self._next_busy_warning = loop.time() + 10
                        log.warning(
                            "the database %s is not answering (%s); the scheduler retries "
                            "every second and creates or starts nothing meanwhile",
                            redacted_url(self.store.url),
                            getattr(err, "orig", None) or err,
                        )
                else:
                    log.exception("scheduler pass failed; retrying in 1 s")
                await self._sleep(1.0)
                continue
            self._next_busy_warning = 0.0
            timeout = self.lease_seconds / 3  # a bound, in case a change signal is missed
            if report.next_wake is not None:
                timeout = min(timeout, (report.next_wake - self.clock()).total_seconds())
            for asked_at in self._stop_requested.values():
                timeout = min(timeout, asked_at + self.kill_grace - loop.time())
            if not self.store.is_sqlite:
                timeout = min(timeout, self.fallback_poll_interval)
            await self._sleep(timeout)

    async def _sleep(self, seconds: float) -> None:
        if self._stopping or self._wake.is_set():
            await asyncio.sleep(0)  # always yield: a set event must never make a busy loop
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, seconds))

    async def _stop_runs_taken_elsewhere(self) -> None:
        """After losing the lease: runs of ours that the new leader has taken over (requeued,
        because our heartbeat had expired too) are stopped here; the others finish."""
        try:
            taken = await self._db_call(
                scheduling.ended_elsewhere, self.store, set(self._in_flight), self.instance_id
            )
            for run_id in taken:
                if run_id not in self._stop_requested:
                    self._stop_requested[run_id] = asyncio.get_running_loop().time()
                    await self.executor.cancel(run_id)
        except Exception:
            log.exception("could not check this scheduler's runs after losing the lease")

    async def run_pass(self) -> PassReport:
        """One pass now: plan in the database thread, then start/stop runs and notify."""
        self._wake.clear()
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        now = self.clock()
        mono = loop.time()
        for run_id, future in list(self._in_flight.items()):
            if future.done():  # its done-callback may not have run yet
                self._in_flight.pop(run_id)
                self._mark_done(run_id, mono)
        # Kept in finish order, so expiring is popping from the front: a pass costs what
        # expired, not every run that finished lately.
        horizon = mono - 2 * self.lease_seconds
        while self._recently_done:
            oldest, done_at = next(iter(self._recently_done.items()))
            if done_at > horizon:
                break
            del self._recently_done[oldest]
        report = await self._db_call(
            self._plan,
            now,
            set(self._in_flight),
            set(self._recently_done),
            max(0, self.executor.capacity - len(self._in_flight)) if not self._stopping else 0,
            mono,
        )
        # Notifications first: the pass has committed them as sent (finalized_at, sla_breached).
        assert self.notifier is not None
        for notification in report.notifications:
            self.notifier.notify(notification)
        if report.started:
            report.started = await self._confirm_leading(report.started, report)
        for run_id in report.started:
            try:
                future = await self.executor.submit(run_id)
            except Exception:
                # The run stays ours in the database; recovery releases it (not in flight).
                log.exception("could not hand run %s to the executor", run_id)
                continue
            self._in_flight[run_id] = future
            future.add_done_callback(self._on_run_done(run_id))
        for run_id in report.stopped:
            if run_id in self._in_flight and run_id not in self._stop_requested:
                self._stop_requested[run_id] = loop.time()
                await self._guarded(self.executor.cancel, run_id, "cancel")
        for run_id, asked_at in list(self._stop_requested.items()):
            if run_id not in self._in_flight:
                del self._stop_requested[run_id]
            elif loop.time() - asked_at >= self.kill_grace:
                log.warning(
                    "run %s did not stop within %s s: killing its worker", run_id, self.kill_grace
                )
                await self._guarded(self.executor.kill, run_id, "kill")
                del self._stop_requested[run_id]
        report.seconds = time.perf_counter() - started
        self.pass_seconds.append(report.seconds)
        self.passes += 1
        self.last_report = report
        return report

    async def _guarded(self, action: Callable[[int], Any], run_id: int, what: str) -> None:
        try:
            await action(run_id)
        except Exception:
            log.exception("could not %s run %s in the executor", what, run_id)

    def _mark_done(self, run_id: int, when: float) -> None:
        self._recently_done.pop(run_id, None)  # re-inserted at the end: finish order
        self._recently_done[run_id] = when

    def _on_run_done(self, run_id: int) -> Callable[[asyncio.Future[RunResult]], None]:
        def done(_future: asyncio.Future[RunResult]) -> None:
            if self._in_flight.pop(run_id, None) is not None:
                self._mark_done(run_id, asyncio.get_running_loop().time())
            self.wake()

        return done

    def _plan(
        self,
        now: datetime,
        in_flight: set[int],
        recently_done: set[int],
        capacity: int,
        mono: float,
    ) -> PassReport:
        """The database half of a pass (runs on the database thread; it gets snapshots, never
        the loop's live collections)."""
        store = self.store
        report = PassReport(now=now)
        if mono >= self._next_recovery:
            self._next_recovery = mono + self.lease_seconds / 3
            recovery = scheduling.recover_runs(
                store, now, self.instance_id, in_flight | recently_done, self.max_recovery_attempts
            )
            report.requeued, report.failed = recovery.requeued, recovery.failed
            for run_id in recovery.requeued + recovery.failed:
                log.warning("run %s: its executor stopped; %s", run_id,
                            "queued again" if run_id in recovery.requeued else "failed")
        probe = scheduling.probe(store, now)
        # Closing finished runs first lets @always_on / @once react within the same pass.
        finished = scheduling.finalize_runs(store, now) if probe.finished else []
        # Closing runs can make schedules due (@always_on, landing time): look again then.
        due = probe.due or probe.finished
        report.created = scheduling.create_due_runs(store, now) if due else []
        unfinished = probe.unfinished or bool(report.created)
        timeouts = scheduling.enforce_timeouts(store, now) if probe.unfinished else None
        slas = scheduling.check_slas(store, now) if unfinished else None
        ended = timeouts.ended if timeouts else []
        report.stopped = ended + [
            run_id
            for run_id in scheduling.ended_elsewhere(store, in_flight)
            if run_id not in ended
        ]
        if probe.waiting or report.created:
            starts = scheduling.plan_starts(store, now, self.instance_id, capacity)
            report.started, report.skipped = starts.start, starts.skipped
        report.notifications = finished + (slas.notifications if slas else [])
        if report.skipped or ended:
            # ...and closing the runs this pass ended (skipped, timed out) leaves nothing for
            # the next pass.
            report.notifications += scheduling.finalize_runs(store, now)
        candidates = [
            instant
            for instant in (
                scheduling.next_due_at(store) if due else probe.next_due_at,
                timeouts.next_deadline if timeouts else None,
                slas.next_deadline if slas else None,
            )
            if instant is not None
        ]
        report.next_wake = min(candidates) if candidates else None
        return report

    def _sync_trigger_files(self) -> None:
        from mage_nb_sched.service.triggers import sync_triggers, trigger_files

        assert self.store.project_dir is not None
        files = trigger_files(self.store.project_dir)
        if files == self._trigger_files:
            return
        first = self._trigger_files is None
        self._trigger_files = files
        try:
            # The scheduler's own store, whichever store is "current" in this process.
            report = sync_triggers(self.store, self.store.project_dir)
        except Exception:
            log.exception("could not sync triggers.yaml files")
            return
        for error in report.errors:
            log.error("triggers.yaml: %s", error)
        if not first or report.created or report.updated or report.deleted or report.orphaned:
            log.info(
                "triggers.yaml synced: %d created, %d updated, %d deleted, %d orphaned",
                len(report.created),
                len(report.updated),
                len(report.deleted),
                len(report.orphaned),
            )
