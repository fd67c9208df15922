"""A scheduler whose database stays locked by another process warns (without a traceback)
and goes on once the lock is gone."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest
from processes import until
from stub_executor import StubExecutor

from mage_nb_sched import PipelineRun
from mage_nb_sched.scheduling.loop import Scheduler
from mage_nb_sched.store import Store, engine


def test_a_locked_database_gives_one_warning_and_the_loop_recovers(
    store: Store,
    project_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_MS", 50)
    store.engine.dispose()
    caplog.set_level(logging.WARNING, logger="mage_nb_sched.scheduling.loop")
    database = project_dir / ".mage_nb_sched" / "scheduler.db"

    async def scenario() -> None:
        executor = StubExecutor(store)
        scheduler = Scheduler(store, executor=executor)
        await scheduler.start()
        holder = sqlite3.connect(database, isolation_level=None)
        try:
            await until(lambda: scheduler.is_leader, 10, "the scheduler leads")
            passes = scheduler.passes
            # A run appears, then another process takes the write lock and keeps it.
            run = PipelineRun.create(pipeline_uuid="my_pipeline")
            holder.execute("BEGIN IMMEDIATE")
            scheduler.wake()
            await until(
                lambda: any("not answering" in r.getMessage() for r in caplog.records),
                30,
                "a warning about the busy database",
            )
            holder.execute("ROLLBACK")
            # Once the lock is gone the pending run is handed to the executor.
            await until(lambda: run.id in executor.submitted, 30, "the run is started")
            assert scheduler.passes > passes
        finally:
            holder.close()
            await scheduler.stop(grace=0)

    asyncio.run(scenario())
    busy = [r for r in caplog.records if "not answering" in r.getMessage()]
    assert busy and all(r.levelno == logging.WARNING and r.exc_info is None for r in busy)
    assert len(busy) <= 3  # rate-limited, not one per retry
    assert not any("scheduler pass failed" in r.getMessage() for r in caplog.records)
