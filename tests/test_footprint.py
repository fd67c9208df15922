"""Start-up, footprint and leadership of the scheduler (issue 9).

* Due runs are recorded as soon as the scheduler holds its lease, before any worker is ready
  (in process, with the executor's own events; and headless).
* SIGTERM during start-up stops the headless scheduler at once.
* A scheduler that cannot write its database exits 2 naming the file and the fix.
* A scheduler confirms it still leads before it hands runs to its executor.
* One INFO line when it starts serving and one when it stops; an executor that cannot start
  stops the scheduler visibly.

Worker start-up is held deterministically where the order matters: :class:`WorkerGate` puts a
``sitecustomize.py`` on ``PYTHONPATH`` that makes every *worker* process (and nothing else)
open a FIFO for reading at interpreter start-up, which blocks until the test opens the FIFO for
writing. While the gate is closed no worker can report ready — no timing involved.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import write_notebook
from processes import alive, descendants, until
from sqlalchemy import update
from stub_executor import StubExecutor
from traitlets import TraitError

from mage_nb_sched import PipelineRun, PipelineSchedule
from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.core.datetimes import UTC
from mage_nb_sched.execution.executors.base import ExecutorError
from mage_nb_sched.execution.executors.local import LocalExecutor
from mage_nb_sched.scheduling.loop import Scheduler, redacted_url
from mage_nb_sched.service.runs import create_run
from mage_nb_sched.store import Store, leases, reset_stores, use_store
from mage_nb_sched.store.schema import scheduler_lease

FINAL = ("completed", "failed", "cancelled")
T0 = datetime(2024, 3, 4, 10, 30, tzinfo=UTC)

_SITECUSTOMIZE = """\
import os, sys
_gate = os.environ.get("MAGE_NB_SCHED_TEST_WORKER_GATE")
if _gate and "mage_nb_sched.execution.executors.local" in " ".join(getattr(sys, "orig_argv", [])):
    with open(_gate, "rb"):  # blocks until the test opens the FIFO for writing
        pass
"""


class WorkerGate:
    """Holds every LocalExecutor worker process at interpreter start-up until :meth:`open`."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        folder = tmp_path / "worker-gate"
        folder.mkdir()
        (folder / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        self.fifo = folder / "gate"
        os.mkfifo(self.fifo)
        path = os.environ.get("PYTHONPATH")
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), path])))
        monkeypatch.setenv("MAGE_NB_SCHED_TEST_WORKER_GATE", str(self.fifo))
        self._writer: int | None = None

    def _try_open(self) -> bool:
        try:
            # Non-blocking: fails (ENXIO) while no worker waits at the gate.
            self._writer = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as err:
            if err.errno != errno.ENXIO:
                raise
            return False
        return True

    async def open(self) -> None:
        """Wait until a worker is held at the gate (proof it is still starting), then let it
        and every later worker through."""
        await until(self._try_open, 60.0, "a worker process waits at the gate")

    def close(self) -> None:
        if self._writer is not None:
            os.close(self._writer)
            self._writer = None


@pytest.fixture
def gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkerGate]:
    held = WorkerGate(tmp_path, monkeypatch)
    yield held
    held.close()


def status_of(run_id: int) -> str:
    return str(PipelineRun.query.get(run_id).status)


def once_schedule(project_dir: Path, name: str = "once") -> Any:
    write_notebook(project_dir / "hello.ipynb", ["value = 6 * 7"])
    return PipelineSchedule.create(
        name=name,
        pipeline_uuid="hello",
        schedule_interval="@once",
        start_time=utcnow(),
        status="active",
    )


# --------------------------------------------------------------------------------------------
# Runs are recorded before workers are ready
# --------------------------------------------------------------------------------------------


@pytest.mark.kernel
def test_due_runs_are_recorded_before_any_worker_is_ready(
    store: Store, project_dir: Path, gate: WorkerGate
) -> None:
    schedule = once_schedule(project_dir)

    async def scenario() -> tuple[int, list[Any]]:
        executor = LocalExecutor(store, workers=1, kernel_pool_size=0)
        scheduler = Scheduler(store, executor=executor)
        await scheduler.start()  # returns with the lease held, the worker still starting
        try:
            assert scheduler.is_leader and scheduler.running
            runs = await until(
                lambda: PipelineSchedule.query.get(schedule.id).pipeline_runs,
                30.0,
                "the due run is recorded",
            )
            # Recorded while the only worker is held at the gate: nothing is ready, nothing
            # could take the run.
            assert not [event for event in executor.events if event.kind == "ready"]
            assert executor.capacity == 0
            assert status_of(runs[0].id) == "initial"
            await gate.open()
            await until(lambda: status_of(runs[0].id) in FINAL, 60.0, "the run finishes")
            return int(runs[0].id), list(executor.events)
        finally:
            gate.close()
            await scheduler.stop()

    run_id, events = asyncio.run(scenario())
    run = PipelineRun.query.get(run_id)
    assert str(run.status) == "completed", run.metrics
    ready = next(event for event in events if event.kind == "ready")
    assert run.started_at is not None
    # The order of events: the run was recorded, then the worker became ready, and only then
    # did the run start.
    assert run.created_at < ready.at <= run.started_at, (run.created_at, events)


# --------------------------------------------------------------------------------------------
# The headless scheduler: start-up, SIGTERM, an unwritable database
# --------------------------------------------------------------------------------------------


def scheduler_command(project_dir: Path, *options: str) -> list[str]:
    return [
        sys.executable, "-m", "mage_nb_sched.cli", "--project-dir", str(project_dir),
        "scheduler", *options,
    ]  # fmt: skip


def clean_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    env.pop("MAGE_NB_SCHED_DB_URL", None)
    return env


@pytest.mark.kernel
def test_sigterm_during_start_up_stops_at_once(
    store: Store, project_dir: Path, tmp_path: Path, gate: WorkerGate
) -> None:
    grace = 10.0
    schedule = once_schedule(project_dir)
    out, err = tmp_path / "scheduler.out", tmp_path / "scheduler.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            scheduler_command(
                project_dir, "--workers", "1", "--kernel-pool-size", "0",
                "--shutdown-grace", str(grace),
            ),
            stdout=stdout,
            stderr=stderr,
            env=clean_env(MAGE_NB_SCHED_PROJECT_DIR=str(project_dir)),
            start_new_session=True,
        )  # fmt: skip
    tree: set[int] = set()

    def output() -> str:
        return f"stdout:\n{out.read_text()}\nstderr:\n{err.read_text()}"

    try:

        async def started() -> list[Any]:
            await until(
                lambda: "serving" in out.read_text() or process.poll() is not None,
                60.0,
                "the scheduler prints its first line",
            )
            assert process.poll() is None, output()
            # Serving — and the due run recorded — while its worker is still held at the gate.
            return list(
                await until(
                    lambda: PipelineSchedule.query.get(schedule.id).pipeline_runs,
                    30.0,
                    "the due run is recorded",
                )
            )

        runs = asyncio.run(started())
        tree |= descendants(process.pid)
        assert str(runs[0].status) == "initial" and runs[0].owner is None, output()
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = process.wait(timeout=grace + 30)  # a hang guard; the bound is below
        seconds = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        for pid in tree:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    print(f"SIGTERM during start-up -> exit in {seconds:.2f} s (--shutdown-grace {grace})")
    assert code == 0, output()
    # Nothing was in flight: the stop does not even use the grace (the worker is not waited for).
    assert seconds < grace, output()
    text = out.read_text()
    assert text.index("serving") < text.index("stopped"), output()
    logs = err.read_text()
    # One INFO line each for serving (id, store, workers mode) and for the stop.
    assert logs.count(" serving ") == 1 and "kept warm" in logs and "scheduler.db" in logs, logs
    assert logs.count(" stopped") == 1, logs
    assert not {pid for pid in tree if alive(pid)}
    run = PipelineRun.query.get(runs[0].id)
    assert (str(run.status), run.owner) == ("initial", None)  # left for the next start


@pytest.mark.parametrize("how", ["chmod on the file and its folder", "mode=ro in the URL"])
def test_a_scheduler_that_cannot_write_its_database_exits_2(
    project_dir: Path, tmp_path: Path, how: str
) -> None:
    """Before the fix it printed "serving" and idled, retrying its lease forever.

    As root, chmod does not stop writes, so that case is skipped there; the URL case opens the
    same file through SQLite's ``mode=ro`` (``sqlite:///file:PATH?mode=ro&uri=true``), which
    refuses writes whoever the user is."""
    store = use_store(project_dir=project_dir)  # created and migrated, as a real one would be
    database = Path(store.url.removeprefix("sqlite:///"))
    reset_stores()
    options: list[str] = []
    restore: list[tuple[Path, int]] = []
    if how.startswith("chmod"):
        if os.geteuid() == 0:
            pytest.skip("root writes whatever the mode bits say; the mode=ro case covers this")
        for path, mode in ((database, 0o444), (database.parent, 0o555)):
            restore.append((path, path.stat().st_mode))
            path.chmod(mode)
    else:
        options = ["--db-url", f"sqlite:///file:{database}?mode=ro&uri=true"]
    try:
        result = subprocess.run(
            scheduler_command(project_dir, "--workers", "1", *options),
            capture_output=True,
            text=True,
            env=clean_env(),
            cwd=tmp_path,
            timeout=120,
        )
    finally:
        for path, mode in reversed(restore):
            path.chmod(mode)
    assert result.returncode == 2, result
    assert "serving" not in result.stdout, result
    assert "Traceback" not in result.stderr, result.stderr
    assert str(database) in result.stderr, result.stderr
    assert "read-only" in result.stderr and "writable" in result.stderr, result.stderr
    if not how.startswith("chmod"):
        assert "remove mode=ro" in result.stderr, result.stderr


# --------------------------------------------------------------------------------------------
# Leadership is confirmed before runs are started
# --------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_a_scheduler_that_lost_its_lease_starts_nothing(store: Store) -> None:
    """The SIGSTOP case without the signal: A led, "paused" past its lease, B took over; A's
    loop still believes it leads when it runs its next pass."""
    clock = FakeClock(T0)
    a_executor, b_executor = StubExecutor(store, clock=clock), StubExecutor(store, clock=clock)
    a = Scheduler(store, executor=a_executor, clock=clock, lease_seconds=10)
    b = Scheduler(store, executor=b_executor, clock=clock, lease_seconds=10)

    async def scenario() -> tuple[int, int]:
        first = create_run(store, pipeline_uuid="my_pipeline", now=T0)
        a.is_leader = True
        report = await a.run_pass()
        assert report.started == [first.id] and a_executor.submitted == [first.id]
        assert leases.holder(store, leases.LEADER)[0] == a.instance_id  # type: ignore[index]
        # A's lease runs out while it is paused; B takes the lease over.
        clock.now = T0 + timedelta(seconds=11)
        assert b.coordinator.acquire(clock.now)
        second = create_run(store, pipeline_uuid="my_pipeline", now=clock.now)
        assert a.is_leader  # stale: A has not renewed since
        stale = await a.run_pass()
        assert stale.started == [] and stale.released == [second.id]
        assert a_executor.submitted == [first.id]  # nothing more handed over
        assert not a.is_leader  # and A now knows it stands by
        assert PipelineRun.query.get(second.id).owner is None  # given back, unstarted
        b.is_leader = True
        taken = await b.run_pass()
        # B starts it (and takes over A's first run too: A's heartbeat expired with its lease).
        assert second.id in taken.started
        return first.id, second.id

    try:
        _first, second = asyncio.run(scenario())
    finally:
        for scheduler in (a, b):
            scheduler._close_threads()
    assert PipelineRun.query.get(second).owner == b.instance_id
    assert b_executor.submitted.count(second) == 1 and second not in a_executor.submitted


def test_an_expired_lease_row_is_noticed_before_starting(store: Store) -> None:
    """The lease row changes under a scheduler between two passes (expired and taken by an
    instance that exists only in the database)."""
    clock = FakeClock(T0)
    executor = StubExecutor(store, clock=clock)
    scheduler = Scheduler(store, executor=executor, clock=clock)

    async def scenario() -> int:
        scheduler.is_leader = True
        first = create_run(store, pipeline_uuid="my_pipeline", now=T0)
        assert (await scheduler.run_pass()).started == [first.id]  # confirmed: the row is ours
        with store.write_engine.begin() as connection:
            changed = connection.execute(
                update(scheduler_lease)
                .where(scheduler_lease.c.name == leases.LEADER)
                .values(owner="sched:elsewhere:1:2:other", expires_at=T0 + timedelta(hours=1))
            )
            assert changed.rowcount == 1
        waiting = create_run(store, pipeline_uuid="my_pipeline", now=T0)
        report = await scheduler.run_pass()
        assert report.started == [] and report.released == [waiting.id]
        assert executor.submitted == [first.id]
        return waiting.id

    try:
        run_id = asyncio.run(scenario())
    finally:
        scheduler._close_threads()
    fresh = PipelineRun.query.get(run_id)
    assert (str(fresh.status), fresh.owner) == ("initial", None)
    assert not scheduler.is_leader


# --------------------------------------------------------------------------------------------
# Log lines; an executor that cannot start
# --------------------------------------------------------------------------------------------


def test_serving_and_stopped_are_logged_once_with_the_url_redacted(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    assert "s3cret" not in redacted_url("postgresql+psycopg://mage:s3cret@db.internal/mage")
    assert "db.internal" in redacted_url("postgresql+psycopg://mage:s3cret@db.internal/mage")

    async def scenario() -> Scheduler:
        scheduler = Scheduler(store, executor=StubExecutor(store))
        await scheduler.start()
        await scheduler.stop(grace=0)
        await scheduler.stop(grace=0)  # a second stop waits for the same one, logs nothing
        return scheduler

    with caplog.at_level(logging.INFO, logger="mage_nb_sched"):
        scheduler = asyncio.run(scenario())
    serving = [r for r in caplog.records if " serving " in r.getMessage()]
    stopped = [r for r in caplog.records if r.getMessage().endswith(" stopped")]
    assert len(serving) == 1 and len(stopped) == 1, caplog.text
    message = serving[0].getMessage()
    assert scheduler.instance_id in message and store.url in message
    assert "StubExecutor" in message and "leading" in message
    assert serving[0].levelno == logging.INFO


class UnstartableExecutor(StubExecutor):
    async def start(self) -> None:
        raise ExecutorError("no worker process could start: test")


def test_an_executor_that_cannot_start_stops_the_scheduler(store: Store) -> None:
    async def scenario() -> tuple[BaseException, Scheduler]:
        scheduler = Scheduler(store, executor=UnstartableExecutor(store))
        await scheduler.start()
        failure = await asyncio.wait_for(scheduler.wait_failed(), 30)
        await scheduler.stop()
        return failure, scheduler

    failure, scheduler = asyncio.run(scenario())
    assert isinstance(failure, ExecutorError) and "no worker process" in str(failure)
    assert not scheduler.running
    assert leases.holder(store, leases.LEADER) is None  # released: a standby takes over


# --------------------------------------------------------------------------------------------
# The Jupyter server's start-up
# --------------------------------------------------------------------------------------------

_INITIALIZE = """
import json, os, sys
from jupyter_server.serverapp import ServerApp

app = ServerApp()
app.initialize([
    "--no-browser", "--port=0", "--ServerApp.root_dir=" + sys.argv[1], "--allow-root",
    "--ServerApp.jpserver_extensions={'mage_nb_sched': True}",
])
print(json.dumps({
    # Exported by the extension's initialize_settings: it was loaded.
    "loaded": os.environ.get("MAGE_NB_SCHED_PROJECT_DIR") == sys.argv[1],
    "imported": [m for m in ("sqlalchemy", "alembic", "mage_nb_sched.store",
                             "mage_nb_sched.scheduling.loop") if m in sys.modules],
}))
"""


def test_the_server_loads_the_extension_without_touching_the_store(
    project_dir: Path, tmp_path: Path
) -> None:
    """What runs before the server answers: linking and loading the extension. The store is
    opened (and migrated) later, on a thread; neither SQLAlchemy nor the scheduler is imported
    before, and no database file is made."""
    import json

    env = clean_env(HOME=str(tmp_path), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    env.pop("MAGE_NB_SCHED_PROJECT_DIR", None)
    result = subprocess.run(
        [sys.executable, "-c", _INITIALIZE, str(project_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"loaded": True, "imported": []}, (report, result.stderr)
    assert not (project_dir / ".mage_nb_sched").exists()


def test_the_headless_scheduler_keeps_workers_warm_unless_asked(store: Store) -> None:
    from mage_nb_sched.cli import build_parser, scheduler_config

    def executor_for(*options: str) -> LocalExecutor:
        args = build_parser().parse_args(["scheduler", *options])
        return LocalExecutor(store, config=scheduler_config(args))

    warm = executor_for()
    assert not warm.lazy_workers and "kept warm" in warm.description
    lazy = executor_for("--lazy-workers", "--idle-timeout", "30")
    assert lazy.lazy_workers and lazy.idle_timeout == 30
    assert "started on demand, stopped after 30 s idle" in lazy.description
    assert not executor_for("--no-lazy-workers").lazy_workers
    with pytest.raises(TraitError, match="idle_timeout"):
        executor_for("--lazy-workers", "--idle-timeout", "-1")
