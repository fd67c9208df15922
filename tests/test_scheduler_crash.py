"""The headless scheduler under crashes: real ``mage-nb-sched scheduler`` processes, real kernels.

``kill -9`` mid-run, a standby taking over from a dead leader, SIGTERM with a run in flight. Each
scheduler is a subprocess on the project's SQLite file; the test process creates runs through the
Python API and polls the database (DESIGN §6: runs of a dead scheduler are recovered, never left
``running``, and no kernel outlives its scheduler).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import write_notebook
from processes import alive, descendants, wait_until

from mage_nb_sched import PipelineRun, PipelineSchedule
from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.core.datetimes import UTC
from mage_nb_sched.store import Store, leases

LEASE = 2.0  # --lease-seconds of every scheduler started here
STARTUP = 60.0  # bound for a scheduler to start and a kernel to run a cell (slow CI machines)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def until(predicate: Callable[[], Any], timeout: float) -> bool:
    return asyncio.run(wait_until(predicate, timeout))




def living(pids: set[int]) -> set[int]:
    return {pid for pid in pids if alive(pid)}


def cmdlines(pids: set[int]) -> dict[int, str]:
    result = {}
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        result[pid] = raw.replace(b"\0", b" ").decode(errors="replace")[:160]
    return result


@dataclass
class Headless:
    """One ``mage-nb-sched scheduler`` subprocess with its output in files."""

    name: str
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        out = self.stdout.read_text(errors="replace") if self.stdout.exists() else ""
        err = self.stderr.read_text(errors="replace") if self.stderr.exists() else ""
        return f"--- {self.name} (pid {self.pid}) stdout:\n{out}--- stderr:\n{err}"

    def started(self) -> bool:
        return "mage-nb-sched scheduler " in self.stdout.read_text(errors="replace")

    def wait_started(self) -> None:
        ok = until(lambda: self.started() or self.process.poll() is not None, STARTUP)
        assert ok and self.process.poll() is None, f"{self.name} did not start\n{self.output()}"


class Schedulers:
    """Starts scheduler subprocesses and, whatever happens, kills them and their process trees."""

    def __init__(self, project_dir: Path, tmp_path: Path) -> None:
        self.project_dir = project_dir
        self.tmp_path = tmp_path
        self.started: list[Headless] = []
        self.trees: set[int] = set()  # descendants seen, killed at the end if still alive

    def start(self, name: str, *, pool: int = 0, grace: float | None = None) -> Headless:
        env = dict(os.environ, MAGE_NB_SCHED_PROJECT_DIR=str(self.project_dir))
        env.pop("MAGE_NB_SCHED_DB_URL", None)
        # Its own session/process group, so a test can signal the whole group (as a terminal's
        # Ctrl-C or `kill -- -PGID` would) without hitting pytest.
        command = [
            sys.executable, "-m", "mage_nb_sched.cli", "--project-dir", str(self.project_dir),
            "scheduler", "--lease-seconds", str(LEASE), "--workers", "1",
            "--kernel-pool-size", str(pool),
        ]  # fmt: skip
        if grace is not None:
            command += ["--shutdown-grace", str(grace)]
        stdout, stderr = self.tmp_path / f"{name}.out", self.tmp_path / f"{name}.err"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                command, stdout=out, stderr=err, env=env, start_new_session=True
            )
        headless = Headless(name, process, stdout, stderr)
        self.started.append(headless)
        return headless

    def tree(self, headless: Headless) -> set[int]:
        pids = descendants(headless.pid)
        self.trees |= pids
        return pids

    def output(self) -> str:
        return "\n".join(headless.output() for headless in self.started)

    def close(self) -> None:
        for headless in self.started:
            if headless.process.poll() is None:
                headless.process.kill()
            headless.process.wait(timeout=30)
        for pid in self.trees:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def schedulers(project_dir: Path, tmp_path: Path) -> Iterator[Schedulers]:
    # multiprocessing's resource tracker lives as long as this interpreter once started; start
    # it now, as the other process tests do, so it never shows up as a child of a test.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    manager = Schedulers(project_dir, tmp_path)
    try:
        yield manager
    finally:
        manager.close()


def slow_first_time(project_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Notebook ``slow``: each attempt appends its kernel pid to ``pids``; the first attempt
    (no ``marker`` yet) creates the marker and sleeps 60 s, later attempts finish at once."""
    pids, marker = tmp_path / "kernel.pids", tmp_path / "first-attempt"
    write_notebook(
        project_dir / "slow.ipynb",
        [
            "import os, pathlib, time\n"
            f"with open({str(pids)!r}, 'a') as f:\n"
            "    f.write(f'{os.getpid()}\\n')\n"
            f"marker = pathlib.Path({str(marker)!r})\n"
            "if not marker.exists():\n"
            "    marker.write_text('started')\n"
            "    time.sleep(60)\n"
        ],
    )
    return pids, marker


def kernel_pids(pids: Path) -> list[int]:
    return [int(line) for line in pids.read_text().split()] if pids.exists() else []


def once_schedule(name: str) -> PipelineSchedule:
    return PipelineSchedule.create(
        name=name,
        pipeline_uuid="slow",
        schedule_interval="@once",
        status="active",
        start_time=utcnow(),
    )


def runs_of(schedule: PipelineSchedule) -> list[PipelineRun]:
    return list(PipelineRun.query.filter_by(pipeline_schedule_id=schedule.id).all())


def fresh(run_id: int) -> PipelineRun:
    return PipelineRun.query.get(run_id)


def leader_pid(store: Store) -> int | None:
    """The pid in the ``leader`` lease owner (``sched:<host>:<pid ns>:<pid>:<random>``), if
    unexpired."""
    held = leases.holder(store, leases.LEADER)
    if held is None:
        return None
    owner, expires_at = held
    if as_utc(expires_at) <= utcnow():
        return None
    return int(owner.split(":")[3])


def as_utc(instant: datetime) -> datetime:
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


@pytest.mark.kernel
def test_kill_9_leaves_no_kernel_and_the_run_is_recovered_on_restart(
    store: Store, project_dir: Path, tmp_path: Path, schedulers: Schedulers
) -> None:
    pids, marker = slow_first_time(project_dir, tmp_path)
    schedule = once_schedule("crash-once")
    first = schedulers.start("first", pool=1)
    first.wait_started()
    assert until(marker.exists, STARTUP), f"the cell never started\n{schedulers.output()}"
    [run] = runs_of(schedule)
    assert str(run.status) == "running"
    dead_owner = run.owner or ""
    assert f":{first.pid}:" in dead_owner, dead_owner
    [kernel] = kernel_pids(pids)
    tree = schedulers.tree(first)
    assert kernel in tree, (kernel, cmdlines(tree))

    os.kill(first.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    assert until(lambda: not living(tree), 20), cmdlines(living(tree))
    # Nobody is left to change the run: it stays running, owned by the dead scheduler.
    run = fresh(run.id)
    assert (str(run.status), run.owner, run.attempts) == ("running", dead_owner, 0)

    second = schedulers.start("second", pool=0)
    assert until(lambda: str(fresh(run.id).status) in ("completed", "failed", "cancelled"), 90), (
        schedulers.output()
    )
    run = fresh(run.id)
    assert str(run.status) == "completed", (run.metrics, schedulers.output())
    assert run.attempts == 1
    [requeued] = run.metrics["requeued"]
    assert dead_owner in requeued["why"], requeued
    assert f":{second.pid}:" in (run.owner or "")
    first_kernel, second_kernel = kernel_pids(pids)
    assert first_kernel != second_kernel
    # One run for the schedule's one period: recovery re-executed it, it did not duplicate it.
    assert [r.id for r in runs_of(schedule)] == [run.id]
    assert len(PipelineRun.query.filter_by(run_key=run.run_key).all()) == 1

    tree = schedulers.tree(second)
    second.process.send_signal(signal.SIGTERM)
    assert second.process.wait(timeout=30) == 0, schedulers.output()
    assert until(lambda: not living(tree), 20), cmdlines(living(tree))


@pytest.mark.kernel
def test_standby_takes_over_from_a_killed_leader(
    store: Store, project_dir: Path, tmp_path: Path, schedulers: Schedulers
) -> None:
    pids, marker = slow_first_time(project_dir, tmp_path)
    schedule = once_schedule("takeover-once")
    # Both start at once on the same SQLite file: exactly one takes the leader lease.
    a, b = schedulers.start("a", pool=0), schedulers.start("b", pool=0)
    a.wait_started()
    b.wait_started()
    assert until(lambda: leader_pid(store) in (a.pid, b.pid), 10), schedulers.output()
    leader, standby = (a, b) if leader_pid(store) == a.pid else (b, a)

    assert until(marker.exists, STARTUP), f"the cell never started\n{schedulers.output()}"
    [run] = runs_of(schedule)
    leader_owner = run.owner or ""
    assert f":{leader.pid}:" in leader_owner, (leader_owner, schedulers.output())
    assert leader_pid(store) == leader.pid
    [kernel] = kernel_pids(pids)
    leader_tree, standby_tree = schedulers.tree(leader), schedulers.tree(standby)
    assert kernel in leader_tree and kernel not in standby_tree
    # The standby only renews its heartbeat: it never became active, it executes nothing.
    assert " is active" in leader.stderr.read_text(), leader.output()
    assert " is active" not in standby.stderr.read_text(), standby.output()
    assert standby.process.poll() is None

    held = leases.holder(store, leases.LEADER)
    os.kill(leader.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    # Up to the kill the leader kept its lease and the standby left the leader's run alone.
    assert held is not None and f":{leader.pid}:" in held[0], (held, schedulers.output())
    assert "queued again" not in standby.stderr.read_text(), schedulers.output()
    left = (as_utc(held[1]) - utcnow()).total_seconds()
    leader.process.wait(timeout=10)
    took_over = until(lambda: leader_pid(store) == standby.pid, LEASE + 10)
    takeover = time.monotonic() - killed_at
    print(f"standby took over {takeover:.2f} s after kill -9 (lease {LEASE} s, {left:.2f} s left)")
    assert took_over, schedulers.output()
    assert takeover <= LEASE + 3, f"takeover took {takeover:.2f} s"
    assert until(lambda: not living(leader_tree), 20), cmdlines(living(leader_tree))

    assert until(lambda: str(fresh(run.id).status) in ("completed", "failed", "cancelled"), 60), (
        schedulers.output()
    )
    run = fresh(run.id)
    assert str(run.status) == "completed", (run.metrics, schedulers.output())
    assert run.attempts == 1
    [requeued] = run.metrics["requeued"]
    assert leader_owner in requeued["why"], requeued
    assert f":{standby.pid}:" in (run.owner or "")
    assert len(kernel_pids(pids)) == 2
    assert [r.id for r in runs_of(schedule)] == [run.id]
    assert len(PipelineRun.query.filter_by(run_key=run.run_key).all()) == 1


@pytest.mark.kernel
@pytest.mark.parametrize(
    "how", ["SIGTERM to the scheduler", "SIGINT to its process group (Ctrl-C)"]
)
def test_sigterm_requeues_the_run_in_flight_within_the_grace(
    store: Store, project_dir: Path, tmp_path: Path, schedulers: Schedulers, how: str
) -> None:
    grace = 1.0
    pids, marker = slow_first_time(project_dir, tmp_path)
    run = PipelineRun.create(pipeline_uuid="slow")
    first = schedulers.start("first", pool=0, grace=grace)
    assert until(marker.exists, STARTUP), f"the cell never started\n{schedulers.output()}"
    assert str(fresh(run.id).status) == "running"
    [kernel] = kernel_pids(pids)
    tree = schedulers.tree(first)
    assert kernel in tree, (kernel, cmdlines(tree))

    if how.startswith("SIGTERM"):
        first.process.send_signal(signal.SIGTERM)
    else:
        # Workers and kernels have their own group: only the scheduler gets the Ctrl-C, and it
        # stops them gracefully instead of their dying mid-cell.
        os.killpg(first.pid, signal.SIGINT)
    signalled_at = time.monotonic()
    try:
        code: int | None = first.process.wait(timeout=grace + 20)
    except subprocess.TimeoutExpired:
        code = None
    seconds = time.monotonic() - signalled_at
    print(f"{how} -> exit in {seconds:.2f} s (--shutdown-grace {grace})")
    assert code == 0, (code, schedulers.output())
    assert seconds <= grace + 4, f"stopping took {seconds:.2f} s\n{schedulers.output()}"
    assert "stopped" in first.stdout.read_text()
    assert until(lambda: not living(tree), 20), cmdlines(living(tree))
    stopped = fresh(run.id)
    assert (str(stopped.status), stopped.owner, stopped.started_at) == ("initial", None, None), (
        stopped.metrics,
        schedulers.output(),
    )
    # A clean stop is not a crash: the attempt is not counted against recovery.
    assert stopped.attempts == 0

    schedulers.start("second", pool=0)
    assert until(lambda: str(fresh(run.id).status) in ("completed", "failed", "cancelled"), 60), (
        schedulers.output()
    )
    done = fresh(run.id)
    assert str(done.status) == "completed", (done.metrics, schedulers.output())
    assert len(kernel_pids(pids)) == 2


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--workers", "0", "workers"),
        ("--lease-seconds", "0", "lease_seconds"),
    ],
)
def test_a_bad_option_exits_2_naming_it(
    project_dir: Path, option: str, value: str, named: str
) -> None:
    env = dict(os.environ, MAGE_NB_SCHED_PROJECT_DIR=str(project_dir))
    env.pop("MAGE_NB_SCHED_DB_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "mage_nb_sched.cli", "scheduler", option, value],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert named in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "mage-nb-sched scheduler " not in result.stdout


def test_project_dir_after_the_subcommand(project_dir: Path) -> None:
    env = dict(os.environ)
    env.pop("MAGE_NB_SCHED_PROJECT_DIR", None)
    env.pop("MAGE_NB_SCHED_DB_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "mage_nb_sched.cli", "scheduler", "--project-dir",
         str(project_dir), "--workers", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result
    assert "workers" in result.stderr and "unrecognized" not in result.stderr, result.stderr
