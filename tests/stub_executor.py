"""An executor without kernels, to test and measure the scheduler itself.

``StubExecutor`` claims each submitted run in the database exactly like the real runner does
(``initial → running``) and then either completes it at once (``auto_complete``) or holds it
"executing" until the test calls :meth:`finish` — a worker that never answers, when a test
wants one. Everything it was asked to do is recorded for assertions.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mage_nb_sched.execution.executors.base import Executor, RunResult
from mage_nb_sched.execution.runner import _finish_run, claim_run
from mage_nb_sched.store import Store


class StubExecutor(Executor):
    def __init__(
        self,
        store: Store,
        *,
        capacity: int = 100,
        auto_complete: bool = False,
        final_status: str = "completed",
        honour_cancel: bool = True,
        clock: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.store = store
        self._capacity = capacity
        self.auto_complete = auto_complete
        self.final_status = final_status
        self.honour_cancel = honour_cancel
        self.clock = clock
        self.submitted: list[int] = []
        self.cancelled: list[int] = []
        self.killed: list[int] = []
        self.started = False
        self.shut_down = False
        self._futures: dict[int, asyncio.Future[RunResult]] = {}

    def _now(self) -> Any:
        from mage_nb_sched.core.clock import utcnow

        return self.clock() if self.clock is not None else utcnow()

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def active_runs(self) -> set[int]:
        return set(self._futures)

    async def start(self) -> None:
        self.started = True

    async def submit(self, run_id: int) -> asyncio.Future[RunResult]:
        self.submitted.append(run_id)
        future: asyncio.Future[RunResult] = asyncio.get_running_loop().create_future()
        self._futures[run_id] = future
        claim_run(self.store, run_id, self._now())
        if self.auto_complete:
            self.finish(run_id, self.final_status)
        return future

    def finish(self, run_id: int, status: str = "completed") -> None:
        """The run ends with ``status`` (written as the runner would: fenced on running)."""
        final = _finish_run(self.store, run_id, status, self._now(), {})
        future = self._futures.pop(run_id, None)
        if future is not None and not future.done():
            future.set_result(RunResult(run_id, final))

    async def cancel(self, run_id: int) -> None:
        self.cancelled.append(run_id)
        if self.honour_cancel:
            self.finish(run_id, "cancelled")

    async def kill(self, run_id: int) -> None:
        self.killed.append(run_id)
        future = self._futures.pop(run_id, None)
        if future is not None and not future.done():
            future.set_result(RunResult(run_id, "failed", "killed"))

    async def shutdown(self, grace: float = 10.0) -> None:
        self.shut_down = True
        for run_id, future in list(self._futures.items()):
            if not future.done():
                future.set_result(RunResult(run_id, "initial", "executor shut down"))
        self._futures.clear()
