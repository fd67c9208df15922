"""The scheduler loop end to end: real SQLite file, real worker processes and kernels."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import write_notebook
from processes import until

from mage_nb_sched import PipelineRun, PipelineSchedule
from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.execution.executors.local import LocalExecutor
from mage_nb_sched.execution.runner import run_with_fresh_kernel
from mage_nb_sched.scheduling.loop import Scheduler
from mage_nb_sched.store import Store

pytestmark = pytest.mark.kernel

FINAL = ("completed", "failed", "cancelled")


def status_of(run_id: int) -> str:
    return str(PipelineRun.query.get(run_id).status)


def make_scheduler(store: Store, **kwargs: Any) -> Scheduler:
    executor = LocalExecutor(store, workers=1, kernel_pool_size=1)
    return Scheduler(store, executor=executor, **kwargs)


class Receiver:
    """A webhook endpoint on loopback that records every JSON body it gets."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    yield endpoint
    endpoint.close()


def test_a_schedule_created_through_the_api_fires_and_completes(
    store: Store, project_dir: Path
) -> None:
    write_notebook(project_dir / "hello.ipynb", ["value = 6 * 7", "print('answer', value)"])

    async def scenario() -> tuple[Any, Any]:
        scheduler = make_scheduler(store)
        await scheduler.start()
        try:
            schedule = PipelineSchedule.create(
                name="once",
                pipeline_uuid="hello",
                schedule_interval="@once",
                start_time=utcnow(),
                status="active",
            )
            runs = await until(lambda: PipelineSchedule.query.get(schedule.id).pipeline_runs)
            await until(lambda: status_of(runs[0].id) in FINAL)
            # @once: the schedule is switched off once its run has finished.
            await until(lambda: PipelineSchedule.query.get(schedule.id).status == "inactive")
            return schedule, PipelineRun.query.get(runs[0].id)
        finally:
            await scheduler.stop()

    schedule, run = asyncio.run(scenario())
    assert str(run.status) == "completed"
    assert "answer 42" in run.logs("cell_1")
    assert len(PipelineSchedule.query.get(schedule.id).pipeline_runs) == 1


def test_a_manual_run_starts_without_waiting_for_a_tick(store: Store, project_dir: Path) -> None:
    write_notebook(project_dir / "quick.ipynb", ["x = 1"])

    async def scenario() -> PipelineRun:
        scheduler = make_scheduler(store)
        await scheduler.start()
        try:
            await until(lambda: scheduler.is_leader)
            passes_before = scheduler.passes
            run = PipelineRun.create(pipeline_uuid="quick")
            await until(lambda: status_of(run.id) in FINAL)
            # The change signal woke the loop: a handful of passes, not a polling storm.
            assert scheduler.passes - passes_before < 50
            return PipelineRun.query.get(run.id)
        finally:
            await scheduler.stop()

    run = asyncio.run(scenario())
    assert str(run.status) == "completed"
    assert run.owner is not None and run.owner.startswith("sched:")
    assert run.started_at is not None
    print(f"created → started: {(run.started_at - run.created_at).total_seconds() * 1000:.1f} ms")


def test_run_execute_in_a_notebook_is_not_taken_twice(store: Store, project_dir: Path) -> None:
    """``await run.execute()`` marks the run its own, so a scheduler leaves it alone."""
    write_notebook(project_dir / "quick.ipynb", ["x = 1"])

    async def scenario() -> Any:
        scheduler = make_scheduler(store)
        await scheduler.start()
        try:
            await until(lambda: scheduler.is_leader)
            run = PipelineRun.create(pipeline_uuid="quick")
            outcome = await run_with_fresh_kernel(store, run.id)
            return run, outcome, scheduler.executing
        finally:
            await scheduler.stop()

    run, outcome, _executing = asyncio.run(scenario())
    fresh = PipelineRun.query.get(run.id)
    # Whoever got it first executed it, exactly once; the other waited or left it alone.
    assert str(fresh.status) == "completed" and outcome.status == "completed"
    assert len(fresh.block_runs) == 1


def test_timeout_kills_the_kernel_and_records_the_status(store: Store, project_dir: Path) -> None:
    write_notebook(project_dir / "slow.ipynb", ["import time\ntime.sleep(120)"])
    schedule = PipelineSchedule.create(
        name="api",
        pipeline_uuid="slow",
        schedule_type="api",
        status="active",
        settings={"timeout": 1, "timeout_status": "cancelled"},
    )

    async def scenario() -> int:
        scheduler = make_scheduler(store)
        await scheduler.start()
        try:
            run = PipelineRun.create(pipeline_schedule_id=schedule.id)
            await until(lambda: status_of(run.id) in FINAL, timeout=60)
            await until(lambda: not scheduler.executing, timeout=30)
            return run.id
        finally:
            await scheduler.stop()

    run_id = asyncio.run(scenario())
    run = PipelineRun.query.get(run_id)
    assert str(run.status) == "cancelled"
    # "run timed out after 1s" (the runner) or "timed out: ran longer than settings.timeout"
    # (the scheduler's backstop), whichever came first.
    assert "timed out" in run.metrics["error"], run.metrics


def test_webhook_gets_exactly_one_sla_alert_and_one_failure_alert(
    store: Store, project_dir: Path, receiver: Receiver
) -> None:
    write_notebook(project_dir / "broken.ipynb", ["raise ValueError('bad input file')"])
    schedule = PipelineSchedule.create(
        name="nightly",
        pipeline_uuid="broken",
        schedule_interval="@once",
        # The period began 5 minutes ago and its SLA is 60 s: breached before it even starts.
        start_time=utcnow() - timedelta(minutes=5),
        sla=60,
        status="active",
        settings={"create_initial_pipeline_run": True},
    )

    async def scenario() -> None:
        scheduler = make_scheduler(store)
        assert scheduler.notifier is not None
        scheduler.notifier.webhook_url = receiver.url
        await scheduler.start()
        try:
            runs = await until(lambda: PipelineSchedule.query.get(schedule.id).pipeline_runs)
            await until(lambda: status_of(runs[0].id) in FINAL)
            await until(lambda: len(receiver.bodies) >= 2)
            # More passes happen (the run's end, the schedule switching off); none may re-alert.
            await until(lambda: PipelineSchedule.query.get(schedule.id).status == "inactive")
            await scheduler.run_pass()
        finally:
            await scheduler.stop()  # drains the notification queue

    asyncio.run(scenario())
    kinds = sorted(body["kind"] for body in receiver.bodies)
    assert kinds == ["failure", "sla_breach"]
    failure = next(body for body in receiver.bodies if body["kind"] == "failure")
    assert "ValueError" in failure["text"] and "bad input file" in failure["text"]
    assert failure["schedule_name"] == "nightly"
