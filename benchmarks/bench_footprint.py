"""What the extension costs a Jupyter server: start-up, idle processes and memory, stop, and how
soon runs start — side by side with a bare ``jupyter server`` in the same run.

Each round starts real ``jupyter server`` processes (loopback, no token, a fresh temp root dir
with one notebook, the same environment and extensions except ours), interleaved so drift hits
every variant alike:

  bare      ``mage_nb_sched`` disabled (``c.ServerApp.jpserver_extensions``).
  ext       the extension with its defaults (workers on demand, ``idle_timeout`` 300 s): idle
            footprint and stop time with no run ever made.
  ext-runs  the extension with ``idle_timeout`` = ``--idle-timeout``: the first run after start
            (no worker up yet), ``--runs`` later (warm) runs one after the other, the footprint
            once the idle workers stopped, then the first run after that idle spell.
  eager     ``c.MageNbSchedApp.lazy_workers = False`` (workers start with the server and stay
            up, today's behaviour): the same runs, for today's warm figures in the same run.

Measured from outside the server, as a user would see it:
  start-up        launch → ``GET /api/status`` answers 200.
  scheduler ready launch → the scheduler's ``leader`` lease row is in the database (it can
                  record runs from then on).
  idle            after ``--settle`` seconds: the server's live descendant processes and the
                  summed VmRSS of the server and its descendants.
  stop            SIGTERM → the server process has exited.
  runs            ``created_at → started_at`` and ``created_at → completed_at`` of the run rows
                  (one host clock), runs made with ``PipelineRun.create`` from this process.

Targets (printed beside the numbers): start-up added ≤ 0.2 s; idle: no extra process, ≤ 60 MB
extra RSS; stop within ~1 s of bare; the first run after idle starts within 1.5 s of its
creation; later runs within the eager (warm) figures.

    python benchmarks/bench_footprint.py [--servers 3] [--runs 5] [--idle-timeout 2]
        [--settle 3] [--start-pairs 8] [--label NAME] [--check]

Start-up and stop, the noisiest figures on a shared machine, also get ``--start-pairs`` extra
interleaved bare/ext launches measuring only those; medians are over all launches.

Runs against whatever ``mage_nb_sched`` is importable: to compare with another checkout, put
it first on ``PYTHONPATH`` (the servers inherit the environment). Exits 0 unless the script
breaks, or ``--check`` is given and a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

DB_NAME = "scheduler.db"


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        with contextlib.suppress(OSError, ValueError):
            found.extend(
                int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
            )
    return found


def live(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def tree(pid: int) -> list[int]:
    """Live descendants of ``pid``."""
    result: list[int] = []
    pending = children(pid)
    while pending:
        child = pending.pop()
        if child in result:
            continue
        if live(child):
            result.append(child)
        pending.extend(children(child))
    return result


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024
    return 0.0


def command_name(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [word.decode(errors="replace") for word in raw if word]
    for marker in ("ipykernel", "kernel_forkserver", "executors.local", "resource_tracker"):
        if any(marker in word for word in words):
            return marker
    return Path(words[0]).name if words else "?"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and the children it has waited for (all threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what}")
        time.sleep(step)


# --------------------------------------------------------------------------------------------
# One server
# --------------------------------------------------------------------------------------------


@dataclass
class Server:
    variant: str
    root: Path
    home: Path
    port: int
    process: subprocess.Popen[bytes]
    launched: float
    log: Path
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def database(self) -> Path:
        return self.root / ".mage_nb_sched" / DB_NAME

    def status_ok(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.variant} server exited early:\n{self.log.read_text()[-3000:]}"
            )
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=0.5)
        try:
            connection.request("GET", "/api/status")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    def leader(self) -> bool:
        if not self.database.exists():
            return False
        try:
            with contextlib.closing(
                sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)
            ) as db:
                row = db.execute("SELECT owner FROM scheduler_lease WHERE name='leader'").fetchone()
        except sqlite3.Error:
            return False
        return bool(row)

    def footprint(self) -> tuple[int, float, list[str]]:
        pids = tree(self.process.pid)
        rss = rss_mb(self.process.pid) + sum(rss_mb(pid) for pid in pids)
        return len(pids), rss, sorted(command_name(pid) for pid in pids)

    def stop(self) -> float:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return time.monotonic() - started


def launch(variant: str, workdir: Path, idle_timeout: float) -> Server:
    root = Path(tempfile.mkdtemp(prefix=f"fp-{variant}-", dir=workdir))
    home = root.parent / f"{root.name}-home"
    for sub in ("config", "data", "runtime"):
        (home / sub).mkdir(parents=True)
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("x = 1")]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(notebook, root / "quick.ipynb")
    settings = [f"c.ServerApp.jpserver_extensions = {{'mage_nb_sched': {variant != 'bare'}}}"]
    if variant == "ext-runs":
        settings.append(f"c.MageNbSchedApp.idle_timeout = {idle_timeout}")
    if variant == "eager":
        settings.append("c.MageNbSchedApp.lazy_workers = False")
    config = home / "bench_config.py"
    config.write_text("\n".join(settings) + "\n")
    env = dict(
        os.environ,
        HOME=str(home),
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
    )
    for name in ("MAGE_NB_SCHED_DB_URL", "MAGE_NB_SCHED_PROJECT_DIR"):
        env.pop(name, None)
    port = free_port()
    log = home / "server.log"
    command = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.root_dir={root}",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        f"--config={config}",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    with log.open("wb") as out:
        launched = time.monotonic()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    return Server(variant, root, home, port, process, launched, log)


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def make_run(server: Server) -> dict[str, float]:
    """One run made from this process; created → started / completed (seconds)."""
    from mage_nb_sched import PipelineRun
    from mage_nb_sched.store import reset_stores, use_store

    reset_stores()
    use_store(f"sqlite:///{server.database}", server.root)
    run_id = PipelineRun.create(pipeline_uuid="quick").id

    def final() -> Any:
        run = PipelineRun.query.get(run_id)
        return run if str(run.status) in ("completed", "failed", "cancelled") else None

    run = wait_for(final, 120, f"run {run_id} finishes", step=0.005)
    if str(run.status) != "completed":
        raise RuntimeError(f"run {run_id} {run.status}: {run.metrics}")
    return {
        "started": (run.started_at - run.created_at).total_seconds(),
        "completed": (run.completed_at - run.created_at).total_seconds(),
    }


# --------------------------------------------------------------------------------------------
# A round
# --------------------------------------------------------------------------------------------


def measure(
    variant: str, workdir: Path, args: argparse.Namespace, *, start_only: bool = False
) -> dict[str, Any]:
    """One server of ``variant``: every figure, or (``start_only``) start-up and stop only."""
    server = launch(variant, workdir, args.idle_timeout)
    facts: dict[str, Any] = {}
    try:
        wait_for(server.status_ok, 120, f"{variant} answers /api/status")
        facts["startup"] = time.monotonic() - server.launched
        facts["startup_cpu"] = cpu_seconds(server.process.pid)
        if variant != "bare":
            wait_for(server.leader, 120, f"{variant} scheduler takes the lease")
            facts["ready"] = time.monotonic() - server.launched
        if start_only:
            facts["stop"] = server.stop()
            return facts
        time.sleep(args.settle)  # a benchmark: let start-up work finish before measuring
        facts["idle_procs"], facts["idle_rss"], facts["idle_names"] = server.footprint()
        if variant in ("ext-runs", "eager"):
            facts["first"] = make_run(server)
            facts["warm"] = [make_run(server) for _ in range(args.runs)]
            if variant == "ext-runs":
                try:
                    wait_for(
                        lambda: server.footprint()[0] == 0,
                        args.idle_timeout + 30,
                        "the idle workers stop",
                        step=0.05,
                    )
                except TimeoutError:  # an extension without idle stop (older code)
                    facts["workers_never_stopped"] = True
                facts["after_procs"], facts["after_rss"], _ = server.footprint()
                facts["after_idle"] = make_run(server)
        facts["stop"] = server.stop()
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
        for pid in tree(server.process.pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(server.root, ignore_errors=True)
        shutil.rmtree(server.home, ignore_errors=True)
    return facts


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def largest(values: list[float]) -> float:
    return max(values) if values else float("nan")


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) > 1 else largest(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=3, help="rounds (servers per variant)")
    parser.add_argument("--runs", type=int, default=5, help="warm runs per server")
    parser.add_argument("--idle-timeout", type=float, default=2.0)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before idle figures")
    parser.add_argument(
        "--start-pairs", type=int, default=8, help="extra bare/ext launches for start-up, stop"
    )
    parser.add_argument("--label", default="")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    import mage_nb_sched

    print(f"mage_nb_sched from {Path(mage_nb_sched.__file__).parent} {args.label}".rstrip())
    print(f"{os.cpu_count()} CPUs; {args.servers} servers per variant, interleaved")
    variants = ("bare", "ext", "ext-runs", "eager")
    results: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
    workdir = Path(tempfile.mkdtemp(prefix="bench-footprint-"))
    try:
        for round_number in range(args.servers):
            for variant in variants:
                facts = measure(variant, workdir, args)
                results[variant].append(facts)
                print(
                    f"  round {round_number + 1} {variant:8s} "
                    + ", ".join(
                        f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}"
                        for key, value in facts.items()
                        if key not in ("warm", "first", "after_idle", "idle_names")
                    ),
                    flush=True,
                )
        # Start-up and stop are the noisiest figures (a shared machine): more pairs of them.
        for _ in range(args.start_pairs):
            for variant in ("bare", "ext"):
                results[variant].append(measure(variant, workdir, args, start_only=True))
        if args.start_pairs:
            print(f"  + {args.start_pairs} interleaved bare/ext pairs for start-up and stop")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    def col(variant: str, key: str) -> list[float]:
        return [facts[key] for facts in results[variant] if key in facts]

    def runs(variant: str, key: str, phase: str) -> list[float]:
        values: list[float] = []
        for facts in results[variant]:
            found = facts.get(key)
            for item in found if isinstance(found, list) else [found] if found else []:
                values.append(item[phase])
        return values

    bare_start, ext_start = median(col("bare", "startup")), median(col("ext", "startup"))
    bare_rss, ext_rss = median(col("bare", "idle_rss")), median(col("ext", "idle_rss"))
    bare_procs, ext_procs = median(col("bare", "idle_procs")), median(col("ext", "idle_procs"))
    eager_procs, eager_rss = median(col("eager", "idle_procs")), median(col("eager", "idle_rss"))
    bare_stop, ext_stop = median(col("bare", "stop")), median(col("ext", "stop"))
    first_start = largest(
        runs("ext-runs", "first", "started") + runs("ext-runs", "after_idle", "started")
    )
    warm_lazy = median(runs("ext-runs", "warm", "started"))
    warm_eager = median(runs("eager", "warm", "started"))
    checks: list[tuple[str, bool]] = []
    # Launches alternate bare, ext, ...: pair each ext launch with the bare one just before.
    bare_starts, ext_starts = col("bare", "startup"), col("ext", "startup")
    paired = [e - b for b, e in zip(bare_starts, ext_starts, strict=False)]
    added = median(paired)
    cpu_added = median(col("ext", "startup_cpu")) - median(col("bare", "startup_cpu"))

    print("\nmedians over servers (seconds, MB)")
    print(
        f"  start-up (launch → /api/status 200): bare {bare_start:.3f} (min "
        f"{min(bare_starts, default=float('nan')):.3f}), with extension {ext_start:.3f} (min "
        f"{min(ext_starts, default=float('nan')):.3f}) → ratio {ext_start / bare_start:.2f}; "
        f"added, median of {len(paired)} interleaved pairs {added:+.3f} s, of the minima "
        f"{min(ext_starts, default=0) - min(bare_starts, default=0):+.3f} s  "
        "[target: added ≤ 0.2 s]"
    )
    print(
        f"    server CPU time until it answers: bare {median(col('bare', 'startup_cpu')):.3f},"
        f" with extension {median(col('ext', 'startup_cpu')):.3f} (+{cpu_added:.3f} s, the "
        "store opened and migrated on a thread included)"
    )
    checks.append(("start-up added ≤ 0.2 s", added <= 0.2))
    print(
        f"  scheduler ready (launch → leader lease): {median(col('ext', 'ready')):.3f} "
        f"(eager workers: {median(col('eager', 'ready')):.3f})"
    )
    print(
        f"  idle, no runs: processes bare {bare_procs:g}, extension {ext_procs:g} "
        f"(extra {ext_procs - bare_procs:+g}; eager {eager_procs:g})  [target: +0]"
    )
    checks.append(("no extra idle process", ext_procs - bare_procs <= 0))
    print(
        f"  idle, no runs: RSS bare {bare_rss:.1f}, extension {ext_rss:.1f} → extra "
        f"{ext_rss - bare_rss:+.1f} MB, ratio {ext_rss / bare_rss:.2f} (eager {eager_rss:.1f},"
        f" extra {eager_rss - bare_rss:+.1f})  [target: ≤ 60 MB]"
    )
    checks.append(("idle extra RSS ≤ 60 MB", ext_rss - bare_rss <= 60))
    names = results["eager"][0].get("idle_names", []) if results["eager"] else []
    if names:
        print(f"    eager idle processes: {', '.join(names)}")
    after_procs = median(col("ext-runs", "after_procs"))
    after_rss = median(col("ext-runs", "after_rss"))
    print(
        f"  after runs, workers idle-stopped: processes {after_procs:g}, RSS {after_rss:.1f} "
        f"(extra over bare {after_rss - bare_rss:+.1f} MB)"
    )
    print(
        f"  stop (SIGTERM → exit), no run in flight: bare {bare_stop:.3f}, extension "
        f"{ext_stop:.3f} → {ext_stop - bare_stop:+.3f} s, ratio {ext_stop / bare_stop:.2f}"
        "  [target: within ~1 s]"
    )
    checks.append(("stop within 1 s of bare", ext_stop - bare_stop <= 1.0))
    print(
        f"  stop after runs: on-demand {median(col('ext-runs', 'stop')):.3f} (workers "
        f"idle-stopped), eager {median(col('eager', 'stop')):.3f} (workers up)"
    )
    firsts = runs("ext-runs", "first", "started")
    afters = runs("ext-runs", "after_idle", "started")
    print(
        f"  on demand: created → started, first run after start {median(firsts):.3f} "
        f"(max {largest(firsts):.3f}), first after idle {median(afters):.3f} "
        f"(max {largest(afters):.3f})"
        "  [target: ≤ 1.5 s]"
    )
    checks.append(("first run after idle starts ≤ 1.5 s", first_start <= 1.5))
    print(f"  eager: first run after start {median(runs('eager', 'first', 'started')):.3f}")
    print(
        f"  warm runs: created → started on demand {warm_lazy:.3f} "
        f"(p90 {p90(runs('ext-runs', 'warm', 'started')):.3f}), "
        f"eager {warm_eager:.3f} → ratio {warm_lazy / warm_eager:.2f}; created → completed "
        f"{median(runs('ext-runs', 'warm', 'completed')):.3f} vs "
        f"{median(runs('eager', 'warm', 'completed')):.3f}  [target: within the warm figures]"
    )
    checks.append(("warm runs within the eager figures (x1.5)", warm_lazy <= 1.5 * warm_eager))
    # A figure that was not measured (nan: --servers 0) compares False: not a miss.
    measured = {
        "no extra idle process": ext_procs == ext_procs,
        "idle extra RSS ≤ 60 MB": ext_rss == ext_rss,
        "first run after idle starts ≤ 1.5 s": first_start == first_start,
        "warm runs within the eager figures (x1.5)": warm_lazy == warm_lazy,
    }
    missed = [name for name, ok in checks if not ok and measured.get(name, True)]
    print("\ntargets: " + ("all met" if not missed else "missed: " + "; ".join(missed)))
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
