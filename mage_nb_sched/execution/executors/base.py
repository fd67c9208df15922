"""The executor interface: submit a run id, get its final status back."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from traitlets.config import LoggingConfigurable


@dataclass(frozen=True)
class RunResult:
    """What an executor reports when a run it executed has finished."""

    run_id: int
    status: str
    reason: str | None = None
    first_cell_latency: float | None = None
    blocks: list[dict[str, Any]] = field(default_factory=list)


class Executor(LoggingConfigurable):
    """Executes pipeline runs somewhere other than the caller's event loop.

    ``submit`` returns at once with a future that resolves to the run's :class:`RunResult`. An
    executor never raises for a failure of user code: the run's status says what happened.
    Executors are traitlets ``Configurable``: the server extension and the headless scheduler
    pick the class and its options from Jupyter config (``c.LocalExecutor.workers = 4``).
    """

    #: Set by the scheduler that drives this executor (its instance id): runs it fails on its
    #: own (a dead worker) are failed only while they still belong to that scheduler.
    owner: str | None = None

    async def start(self) -> None:
        """Start workers (and their warm kernels)."""
        raise NotImplementedError

    async def submit(self, run_id: int) -> asyncio.Future[RunResult]:
        """Queue a run for execution; the future resolves when it has finished."""
        raise NotImplementedError

    async def cancel(self, run_id: int) -> None:
        """Stop a queued or executing run (interrupt, then kill its kernel)."""
        raise NotImplementedError

    async def kill(self, run_id: int) -> None:
        """Stop a run that did not respond to :meth:`cancel`, by force (its worker is killed)."""
        raise NotImplementedError

    async def shutdown(self, grace: float = 10.0) -> None:
        """Give executing runs ``grace`` seconds, then kill their kernels and stop."""
        raise NotImplementedError

    @property
    def capacity(self) -> int:
        """How many runs can execute at once (the scheduler hands over no more than this)."""
        raise NotImplementedError

    @property
    def active_runs(self) -> set[int]:
        """Ids of runs queued or executing here."""
        raise NotImplementedError
