"""The executor interface: submit a run id, get its final status back.

:class:`Executor` is the interface the scheduler loop (:class:`~mage_nb_sched.scheduling.loop.
Scheduler`) drives; :class:`~mage_nb_sched.execution.executors.local.LocalExecutor` (a pool of
local worker processes with warm kernels) is the implementation beside it. A Dask executor
plugs in the same way: subclass :class:`Executor`, implement every abstract method, and name the
class in config — ``c.Scheduler.executor_class`` or ``c.MageNbSchedApp.executor_class`` (a class
or its dotted import path; anything that is not an :class:`Executor` subclass is refused).
"""

from __future__ import annotations

import asyncio
from abc import ABCMeta, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from traitlets import MetaHasTraits
from traitlets.config import LoggingConfigurable

from mage_nb_sched.core.errors import MageNbSchedError

if TYPE_CHECKING:  # pragma: no cover
    from mage_nb_sched.store.artifacts import ArtifactStore


class ExecutorError(MageNbSchedError):
    """An executor cannot execute runs at all (e.g. no worker process could start). The
    message says what failed and what to check."""

    http_status = 503


@dataclass(frozen=True)
class RunResult:
    """What an executor reports when a run it executed has finished."""

    run_id: int
    status: str
    reason: str | None = None
    first_cell_latency: float | None = None
    blocks: list[dict[str, Any]] = field(default_factory=list)


class _ExecutorMeta(MetaHasTraits, ABCMeta):
    """Traitlets' metaclass and ``abc``'s together, so a traitlets ``Configurable`` can have
    abstract methods (as jupyter_client's ``KernelProvisionerMeta`` does)."""


class Executor(LoggingConfigurable, metaclass=_ExecutorMeta):
    """Executes pipeline runs somewhere other than the caller's event loop.

    **Construction.** The scheduler creates its executor as ``executor_class(store,
    parent=scheduler)``: the first argument is the :class:`~mage_nb_sched.store.engine.Store`
    the runs live in; keyword arguments are traitlets (options come from Jupyter config, e.g.
    ``c.LocalExecutor.workers = 4``). A subclass that defines ``__init__`` takes ``store`` first
    and passes the keyword arguments on to ``super().__init__``. Creating an executor starts
    nothing: :meth:`start` does.

    **Calls.** Every method is called on the caller's event loop (the Jupyter server's, in the
    extension) and must return quickly: workers, kernels and database writes belong elsewhere
    (processes, threads). The scheduler calls :meth:`start` once — in the background: it
    already records due runs while the executor starts, and hands them over as
    :attr:`capacity` allows — then :meth:`submit` for at most :attr:`capacity` runs at a time,
    :meth:`cancel` / :meth:`kill` for runs that must stop, and :meth:`shutdown` once at the end
    (possibly while :meth:`start` is still under way: the scheduler cancels it first).

    **Runs.** The scheduler has already taken a run (its ``owner`` is the scheduler) when it
    submits it; the executor executes it — claims it ``initial → running`` and writes its block
    runs and final status through the runner (:mod:`mage_nb_sched.execution.runner`) — and
    resolves the run's future with a :class:`RunResult`. An executor never raises for a failure
    of user code: the run's status says what happened.
    """

    #: Set by the scheduler that drives this executor (its instance id) before :meth:`start`:
    #: runs it fails on its own (a dead worker, an unstartable pool) are failed only while
    #: they still belong to that owner in the database (another scheduler may have taken them
    #: over). None: no such check (an executor used without a scheduler).
    owner: str | None = None

    #: Set by the scheduler before :meth:`start`: where runs executed here put their outputs,
    #: logs and executed notebooks. None means the local data dir
    #: (:class:`~mage_nb_sched.store.artifacts.LocalArtifactStore`), which is also what
    #: :class:`~mage_nb_sched.execution.executors.local.LocalExecutor`'s workers use today. An
    #: executor whose workers run on other machines (Dask) needs a store they share (an
    #: fsspec URL) and hands it to them.
    artifacts: ArtifactStore | None = None

    #: Set by the scheduler before :meth:`start`: call it (on the event loop) whenever
    #: :attr:`capacity` may have grown — workers became ready, a lost worker was replaced — so
    #: that runs waiting for capacity are handed over at once rather than at the next pass.
    #: None: nobody listens.
    on_capacity: Callable[[], None] | None = None

    def capacity_changed(self) -> None:
        """Tell the scheduler (:attr:`on_capacity`) that :attr:`capacity` may have grown."""
        if self.on_capacity is not None:
            self.on_capacity()

    @property
    def description(self) -> str:
        """What executes the runs, in a few words, for the scheduler's start-up log line (e.g.
        ``2 local workers, started on demand``). Default: the class name."""
        return type(self).__name__

    @abstractmethod
    async def start(self) -> None:
        """Start workers (and their warm kernels), or get ready to start them on demand;
        return once runs can be submitted.

        Called once, before any other method, on the event loop the executor then uses for
        its lifetime. The scheduler does not wait for it before recording runs: it runs it in
        the background and submits runs only up to :attr:`capacity`, so an executor whose
        workers are still starting reports the capacity it has now (0 until the first worker
        is up) and calls :meth:`capacity_changed` when that grows. An executor that starts its
        workers on demand reports its full capacity at once and starts them in
        :meth:`submit`. Raise :class:`ExecutorError` (saying why) if nothing could start:
        the scheduler then logs it and stops handing out runs.
        """

    @abstractmethod
    async def submit(self, run_id: int) -> asyncio.Future[RunResult]:
        """Queue run ``run_id`` for execution and return at once with a future.

        The future resolves (never raises) with the run's :class:`RunResult` when it has
        finished — ``completed``, ``failed`` or ``cancelled``, or ``initial`` when
        :meth:`shutdown` stopped it before it ended (the scheduler queues it again). Submitting
        a run that is already queued or executing here returns the same future. Raises only if
        the executor cannot take runs at all (e.g. it is shutting down); the scheduler then
        leaves the run to recovery.
        """

    @abstractmethod
    async def cancel(self, run_id: int) -> None:
        """Ask run ``run_id`` to stop: a queued run is cancelled at once (``initial →
        cancelled``, its future resolves); an executing one is interrupted and its kernel shut
        down, and its future resolves when it has ended. A run not here is ignored. Returns
        without waiting for the run to end; if it has not ended ``kill_grace`` seconds later
        the scheduler calls :meth:`kill`.
        """

    @abstractmethod
    async def kill(self, run_id: int) -> None:
        """Stop run ``run_id`` by force, because it did not respond to :meth:`cancel` (a hung
        worker): kill what executes it (the local worker process and its kernels), fail the
        runs that were executing there with the reason, resolve their futures and replace the
        worker. A run not here is ignored.
        """

    @abstractmethod
    async def shutdown(self, grace: float = 10.0) -> None:
        """Stop: give executing runs ``grace`` seconds to finish, then kill their kernels and
        workers. Queued runs' futures resolve with status ``initial`` (not started); runs
        killed while executing are failed with the reason. Returns when nothing is left
        running; :meth:`submit` raises afterwards. Called once, last.
        """

    @property
    @abstractmethod
    def capacity(self) -> int:
        """How many runs can execute at once; the scheduler never has more than this many
        submitted and unfinished. Read on every pass: it may change (workers still starting,
        lost or added). Executors that start workers on demand count the workers they may
        start, not only those running."""

    @property
    @abstractmethod
    def active_runs(self) -> set[int]:
        """Ids of runs queued or executing here (submitted, future not yet resolved)."""
