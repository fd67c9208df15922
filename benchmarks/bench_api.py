"""The REST API under load: a real ``jupyter server`` with the extension on loopback.

Each server is a subprocess in a temp project dir (its own SQLite database), with only this
extension and a tiny *ticker* extension written here (``bench_ticker``: a 5 ms ``asyncio.sleep``
loop on the server's event loop recording how late each tick wakes — the loop's lag — read and
reset through ``GET {base_url}bench/lag``). Clients are threads of ``requests`` sessions, one
session per thread, in this process.

  (a) trigger burst: ``--calls`` (1,000) ``POST mage/api/pipeline_schedules/{id}/pipeline_runs/
      {token}`` from ``--clients`` (20) concurrent clients, on a server with
      ``scheduler_enabled=False`` (the runs are only recorded: executing 1,000 runs would
      measure kernels, not the API) and ``trigger_rate_limit=0`` (the per-token limit, 50/s by
      default, would answer 429 to a burst). Then the store is read: exactly ``--calls`` runs
      must be recorded, with the ids the answers gave (0 lost, 0 duplicated). Trigger p50/p99
      (client side), the server's own time per request (tornado's ``request_time``, recorded by
      the ticker extension) and CPU per call (the server process's user + system time over the
      burst), and the server's event-loop lag (the ticker) during the burst. Baseline: the same
      burst of ``GET {base_url}api/status`` (jupyter_server's own, trivial handler) from the
      same clients, in the same run; the ratios are printed. With 20 calls in flight, the mean
      latency is 20 / throughput (Little's law): the p99 target needs ~1,000 calls/s.
  (b) event → run created: ``--events`` sequential ``POST mage/api/events`` of one JSON event
      ``{"event_type": "bench:ping", "id": "bench-<n>"}`` (the ``id`` makes each a new event:
      an event seen before is not run again) that fires one event schedule (its
      ``variables.event_type`` glob is ``bench:*``); the run is created before the answer, so
      the latency is the call's round trip. Each answer must report exactly one run. Skipped,
      with a line saying so, when the server has no events route.
  (c) ``GET mage/api/pipeline_runs`` (first page, 100 runs, of the ``--calls`` + ``--events``
      recorded) while 2 runs execute: a second server on the same project with the scheduler
      on (2 workers), the recorded runs of (a)/(b) cancelled first (so it does not execute
      them); two runs of a notebook that sleeps ``--busy-seconds`` are triggered and the list is
      called ``--list-calls`` times in a row once both are running (and checked to be still
      running at the end). Baseline: ``GET api/status`` in a row, same server, same load.

Targets (PASS/FAIL lines, not asserted): trigger p99 < 50 ms; 0 runs lost or duplicated; list
p99 < 50 ms under execution load; event-loop lag p99 < 20 ms during the burst.

    python benchmarks/bench_api.py [--quick] [--calls 1000] [--clients 20] [--events 200]
        [--list-calls 300] [--busy-seconds 30] [--skip a,b,c] [--check]

``--quick`` (CI): fewer events and list calls and shorter busy runs (the burst stays 1,000 calls).
Exits 0 unless the script breaks, runs are lost or duplicated, or ``--check`` is given and a
target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # conftest

from conftest import write_notebook
from sqlalchemy import update

from mage_nb_sched.service import runs, schedules
from mage_nb_sched.store import schema
from mage_nb_sched.store.engine import Store

TOKEN = "bench-api-trigger-token-0123456789abcdef"
JUPYTER_TOKEN = "bench-jupyter-token-0123456789abcdef"
TARGET_TRIGGER_P99 = 0.050
TARGET_LIST_P99 = 0.050
TARGET_LAG_P99 = 0.020
TICK = 0.005
STARTUP = 90.0

#: The ticker extension (written into the temp dir, put on the server's PYTHONPATH).
TICKER = '''
"""bench_ticker: how late a 5 ms sleep wakes on the server's event loop, and how long the
server spends on each request (tornado's request_time: headers read -> answer finished)."""
import asyncio
import json

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web

TICK = 0.005
LAGS = []
TIMES = {}
TASK = []


async def _tick():
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(TICK)
        LAGS.append(loop.time() - started - TICK)


class LagHandler(JupyterHandler):
    @web.authenticated
    def get(self):
        # The first call starts the ticker (on this loop); every call answers and clears.
        if not TASK:
            TASK.append(asyncio.ensure_future(_tick()))
        answer = {"lags": list(LAGS), "times": {k: list(v) for k, v in TIMES.items()}}
        LAGS.clear()
        TIMES.clear()
        self.finish(json.dumps(answer))


def _jupyter_server_extension_points():
    return [{"module": "bench_ticker"}]


def _load_jupyter_server_extension(serverapp):
    settings = serverapp.web_app.settings
    route = url_path_join(settings["base_url"], "bench", "lag")
    serverapp.web_app.add_handlers(".*$", [(route, LagHandler)])
    logged = settings.get("log_function")

    def log_function(handler):
        TIMES.setdefault(type(handler).__name__, []).append(handler.request.request_time())
        if logged is not None:
            logged(handler)

    settings["log_function"] = log_function
'''


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def stats(values: list[float]) -> str:
    return f"p50 {ms(pct(values, 0.5))}  p99 {ms(pct(values, 0.99))}  max {ms(max(values))}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """A ``jupyter server`` subprocess on loopback."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def api(self) -> str:
        return f"{self.url}mage/api/"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def jupyter_server(work: Path, project: Path, name: str, *, scheduler: bool) -> Iterator[Server]:
    """Start ``jupyter server`` with the extension and the ticker; stopped on exit."""
    home = work / f"{name}-home"
    for folder in ("config", "data", "runtime"):
        (home / folder).mkdir(parents=True, exist_ok=True)
    (work / "bench_ticker.py").write_text(TICKER, encoding="utf-8")
    (home / "config" / "jupyter_server_config.py").write_text(
        "c.ServerApp.jpserver_extensions = {'mage_nb_sched': True, 'bench_ticker': True, "
        "'jupyterlab': False, 'jupyter_lsp': False, 'jupyter_server_terminals': False}\n"
        f"c.MageNbSchedApp.scheduler_enabled = {scheduler!r}\n"
        "c.MageNbSchedApp.trigger_rate_limit = 0\n"
        "c.MageNbSchedApp.workers = 2\n",
        encoding="utf-8",
    )
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "MAGE_NB_SCHED_DB_URL"}
    env.update(
        MAGE_NB_SCHED_PROJECT_DIR=str(project),
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        PYTHONPATH=os.pathsep.join([str(work), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    log = work / f"{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
                f"--ServerApp.root_dir={project}", "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={JUPYTER_TOKEN}",
            ],
            stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    server = Server(process, f"http://127.0.0.1:{port}/", log)
    try:
        deadline = time.monotonic() + STARTUP
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"jupyter server exited:\n{server.log_text()}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{server.api}openapi.json", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter server did not answer:\n{server.log_text()}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used (all its threads; /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_local = threading.local()


def session() -> requests.Session:
    """This thread's session (keep-alive connections, as a real client pool)."""
    current = getattr(_local, "session", None)
    if current is None:
        current = _local.session = requests.Session()
        current.trust_env = False  # loopback: no proxy
    return current


def burst(
    calls: int, clients: int, call: Callable[[requests.Session, int], requests.Response]
) -> tuple[list[float], list[requests.Response], float]:
    """``calls`` calls from ``clients`` threads; (latencies, answers, wall seconds)."""

    def one(index: int) -> tuple[float, requests.Response]:
        client = session()
        started = time.perf_counter()
        answer = call(client, index)
        return time.perf_counter() - started, answer

    wall = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(one, range(calls)))
    wall = time.perf_counter() - wall
    return [r[0] for r in results], [r[1] for r in results], wall


def jupyter(client: requests.Session, server: Server, path: str) -> requests.Response:
    return client.get(
        f"{server.url}{path}", headers={"Authorization": f"token {JUPYTER_TOKEN}"}, timeout=60
    )


def ticker(server: Server) -> tuple[list[float], dict[str, list[float]]]:
    """(event-loop lags, server-side seconds per handler class) since the last call."""
    answer = jupyter(session(), server, "bench/lag")
    answer.raise_for_status()
    data = answer.json()
    return [float(value) for value in data["lags"]], data["times"]


def warm_up(server: Server, trigger_url: str | None) -> None:
    """First calls import the service and open connections: not part of the measure."""
    for _ in range(20):
        jupyter(session(), server, "api/status")
        jupyter(session(), server, "mage/api/openapi.json")
    if trigger_url is not None:
        session().post(trigger_url, json={}, timeout=60).raise_for_status()


# --------------------------------------------------------------------------------------------
# The project
# --------------------------------------------------------------------------------------------


@dataclass
class Project:
    path: Path
    api_schedule: int
    busy_schedule: int
    event_schedule: int


def make_project(work: Path, busy_seconds: float) -> Project:
    project = work / "project"
    project.mkdir()
    write_notebook(project / "bench.ipynb", ["x = 1"])
    write_notebook(project / "busy.ipynb", [f"import time\ntime.sleep({busy_seconds})"])
    store = Store(f"sqlite:///{project / '.mage_nb_sched' / 'scheduler.db'}", project)
    try:
        api = schedules.create_schedule(
            store, name="bench_api", pipeline_uuid="bench", schedule_type="api",
            status="active", token=TOKEN,
        )  # fmt: skip
        busy = schedules.create_schedule(
            store, name="bench_busy", pipeline_uuid="busy", schedule_type="api",
            status="active", token=TOKEN + "-busy",
        )  # fmt: skip
        event = schedules.create_schedule(
            store, name="bench_ping", pipeline_uuid="bench", schedule_type="event",
            status="active", variables={"event_type": "bench:*"},
        )  # fmt: skip
    finally:
        store.dispose()
    return Project(project, api.id, busy.id, event.id)


def open_store(project: Project) -> Store:
    return Store(f"sqlite:///{project.path / '.mage_nb_sched' / 'scheduler.db'}", project.path)


# --------------------------------------------------------------------------------------------
# The parts
# --------------------------------------------------------------------------------------------


def bench_triggers(server: Server, project: Project, calls: int, clients: int) -> dict[str, Any]:
    url = f"{server.api}pipeline_schedules/{project.api_schedule}/pipeline_runs/{TOKEN}"
    warm_up(server, url)
    store = open_store(project)
    try:
        before = len(runs.list_runs(store, schedule_id=project.api_schedule))
    finally:
        store.dispose()

    # Baseline first: the same burst against jupyter_server's own trivial handler.
    cpu = cpu_seconds(server.process.pid)
    status_lat, status_answers, status_wall = burst(
        calls, clients, lambda client, _i: jupyter(client, server, "api/status")
    )
    status_cpu = cpu_seconds(server.process.pid) - cpu
    assert all(answer.status_code == 200 for answer in status_answers)
    _, status_times = ticker(server)  # (the first call also starts the ticker)
    time.sleep(0.5)
    idle_lags, _ = ticker(server)
    cpu = cpu_seconds(server.process.pid)
    trigger_lat, answers, wall = burst(
        calls,
        clients,
        lambda client, i: client.post(
            url, json={"pipeline_run": {"variables": {"i": i}}}, timeout=60
        ),
    )
    trigger_cpu = cpu_seconds(server.process.pid) - cpu
    busy_lags, trigger_times = ticker(server)
    codes: dict[int, int] = {}
    for answer in answers:
        codes[answer.status_code] = codes.get(answer.status_code, 0) + 1
    answered_ids = [
        answer.json()["pipeline_run"]["id"] for answer in answers if answer.status_code == 201
    ]
    store = open_store(project)
    try:
        recorded = runs.list_runs(store, schedule_id=project.api_schedule)
    finally:
        store.dispose()
    stored_ids = {run.id for run in recorded}
    # The burst's runs are the ones with the variable ``i`` (the warm-up call sent none).
    burst_runs = [run for run in recorded if (run.variables or {}).get("i") is not None]
    return {
        "calls": calls,
        "clients": clients,
        "codes": codes,
        "trigger": trigger_lat,
        "wall": wall,
        "status": status_lat,
        "status_wall": status_wall,
        "idle_lags": idle_lags,
        "busy_lags": busy_lags,
        "cpu_trigger": trigger_cpu / calls,
        "cpu_status": status_cpu / calls,
        "server_trigger": trigger_times.get("ApiTriggerHandler", []),
        "server_status": status_times.get("APIStatusHandler", []),
        "recorded": len(recorded) - before,
        "answered_unique": len(set(answered_ids)),
        "answered_all_stored": set(answered_ids) <= stored_ids,
        "distinct_i": len({(run.variables or {})["i"] for run in burst_runs}),
    }


def report_triggers(result: dict[str, Any]) -> None:
    calls, clients = result["calls"], result["clients"]
    print(f"(a) {calls:,} trigger calls from {clients} concurrent clients (scheduler off: runs "
          f"recorded only; rate limit off)")
    print(f"  answers: {dict(sorted(result['codes'].items()))}; recorded "
          f"{result['recorded']:,} runs ({result['answered_unique']:,} distinct ids answered, "
          f"{result['distinct_i']:,} distinct variables stored; every answered id stored: "
          f"{result['answered_all_stored']})")
    t, s = result["trigger"], result["status"]
    print(f"  trigger POST:        {stats(t)}  ({calls / result['wall']:,.0f} calls/s)")
    print(f"  baseline api/status: {stats(s)}  ({calls / result['status_wall']:,.0f} calls/s)")
    print(f"  ratio trigger / api/status: p50 {pct(t, 0.5) / pct(s, 0.5):.2f}x, "
          f"p99 {pct(t, 0.99) / pct(s, 0.99):.2f}x")
    print(f"  server CPU per call (all its threads): trigger {ms(result['cpu_trigger'])}, "
          f"api/status {ms(result['cpu_status'])} "
          f"({result['cpu_trigger'] / max(result['cpu_status'], 1e-9):.2f}x)")
    if result["server_trigger"] and result["server_status"]:
        print(f"  server side (tornado request_time: request read -> answer sent, no accept "
              f"queue): trigger {stats(result['server_trigger'])}; api/status "
              f"{stats(result['server_status'])}")
    busy, idle = result["busy_lags"], result["idle_lags"]
    if busy:
        print(f"  event-loop lag (5 ms ticker) during the burst: {stats(busy)} ({len(busy)} ticks)")
    if idle:
        print(f"  event-loop lag, server idle (baseline):        {stats(idle)}")


def bench_events(server: Server, project: Project, count: int) -> dict[str, Any] | None:
    headers = {"Authorization": f"token {JUPYTER_TOKEN}"}
    url = f"{server.api}events"
    probe = session().post(url, json={"event_type": "bench:ping", "id": "bench-warm"},
                           headers=headers, timeout=60)  # fmt: skip
    if probe.status_code == 404:
        return None
    probe.raise_for_status()
    latencies: list[float] = []
    created = 0
    for index in range(count):
        started = time.perf_counter()
        answer = session().post(
            url, json={"event_type": "bench:ping", "id": f"bench-{index}"}, headers=headers,
            timeout=60,
        )  # fmt: skip
        latencies.append(time.perf_counter() - started)
        answer.raise_for_status()
        created += sum(len(event["pipeline_runs"]) for event in answer.json()["events"])
    status: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        jupyter(session(), server, "api/status")
        status.append(time.perf_counter() - started)
    return {"count": count, "latency": latencies, "created": created, "status": status}


def report_events(result: dict[str, Any] | None, wanted: int) -> None:
    if result is None:
        print("(b) event -> run created: skipped: events route missing (POST mage/api/events "
              "answered 404)")
        return
    lat, base = result["latency"], result["status"]
    print(f"(b) {result['count']:,} events in a row, each firing one event schedule: "
          f"{result['created']:,} runs created (wanted {wanted:,})")
    print(f"  POST events -> run created: {stats(lat)}")
    print(f"  baseline api/status:        {stats(base)}")
    print(f"  ratio p99 {pct(lat, 0.99) / pct(base, 0.99):.2f}x")


def cancel_recorded(project: Project) -> int:
    """Cancel the runs (a)/(b) recorded, so the second server's scheduler does not execute them
    (benchmark set-up: a direct write, not an API call)."""
    store = open_store(project)
    try:
        table = schema.pipeline_run
        with store.write_engine.begin() as connection:
            written = connection.execute(
                update(table)
                .where(table.c.status == "initial")
                .values(status="cancelled", metrics={"error": "benchmark set-up"})
            )
        return int(written.rowcount or 0)
    finally:
        store.dispose()


def bench_list(server: Server, project: Project, calls: int, busy_seconds: float) -> dict[str, Any]:
    url = f"{server.api}pipeline_schedules/{project.busy_schedule}/pipeline_runs/{TOKEN}-busy"
    warm_up(server, None)
    for _ in range(10):
        jupyter(session(), server, "mage/api/pipeline_runs")
    ids = []
    for _ in range(2):
        answer = session().post(url, json={}, timeout=60)
        answer.raise_for_status()
        ids.append(answer.json()["pipeline_run"]["id"])

    def status_of(run_id: int) -> str:
        answer = jupyter(session(), server, f"mage/api/pipeline_runs/{run_id}")
        answer.raise_for_status()
        return str(answer.json()["pipeline_run"]["status"])

    deadline = time.monotonic() + 120
    while not all(status_of(run_id) == "running" for run_id in ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"runs {ids} did not both start:\n{server.log_text()[-3000:]}")
        time.sleep(0.1)
    started = time.monotonic()
    listed: list[float] = []
    count = 0
    for _ in range(calls):
        before = time.perf_counter()
        answer = jupyter(session(), server, "mage/api/pipeline_runs")
        listed.append(time.perf_counter() - before)
        answer.raise_for_status()
        count = int(answer.json()["metadata"]["count"])
    status: list[float] = []
    for _ in range(calls):
        before = time.perf_counter()
        jupyter(session(), server, "api/status")
        status.append(time.perf_counter() - before)
    still = all(status_of(run_id) == "running" for run_id in ids)
    return {
        "calls": calls,
        "list": listed,
        "status": status,
        "count": count,
        "still_running": still,
        "seconds": time.monotonic() - started,
        "busy_seconds": busy_seconds,
    }


def report_list(result: dict[str, Any]) -> None:
    lat, base = result["list"], result["status"]
    print(f"(c) GET pipeline_runs ({result['count']:,} runs stored, first page) x "
          f"{result['calls']:,} in a row while 2 runs execute (both still running at the end: "
          f"{result['still_running']})")
    print(f"  GET pipeline_runs:   {stats(lat)}")
    print(f"  baseline api/status: {stats(base)}")
    print(f"  ratio p99 {pct(lat, 0.99) / pct(base, 0.99):.2f}x")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer events and list calls, shorter busy runs (CI)")
    parser.add_argument("--calls", type=int, default=1000, help="trigger calls in (a)")
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients in (a)")
    parser.add_argument("--events", type=int, default=None, help="events in (b) (200; 50 quick)")
    parser.add_argument("--list-calls", type=int, default=None,
                        help="list calls in (c) (300; 100 quick)")
    parser.add_argument("--busy-seconds", type=float, default=None,
                        help="how long each of the 2 runs of (c) executes (30; 15 quick)")
    parser.add_argument("--skip", default="", help="parts to skip, e.g. 'c' or 'b,c'")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    events = args.events or (50 if args.quick else 200)
    list_calls = args.list_calls or (100 if args.quick else 300)
    busy_seconds = args.busy_seconds or (15.0 if args.quick else 30.0)
    skip = {part.strip() for part in args.skip.split(",") if part.strip()}

    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"API benchmark ({'quick' if args.quick else 'full'}); python "
          f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load}; clients are "
          f"threads of requests sessions in this process (their own cost is in every figure, "
          f"baselines included)")
    summary: list[tuple[str, str, str, bool | None]] = []
    broken = False
    work = Path(tempfile.mkdtemp(prefix="bench_api_"))
    try:
        project = make_project(work, busy_seconds)
        if not {"a", "b"} <= skip:
            with jupyter_server(work, project.path, "recording", scheduler=False) as server:
                if "a" not in skip:
                    result = bench_triggers(server, project, args.calls, args.clients)
                    report_triggers(result)
                    p50, p99 = pct(result["trigger"], 0.5), pct(result["trigger"], 0.99)
                    exact = (
                        result["recorded"] == args.calls
                        and result["answered_unique"] == args.calls
                        and result["answered_all_stored"]
                        and result["distinct_i"] == args.calls
                    )
                    broken |= not exact
                    summary.append(("trigger p50", ms(p50).strip(), "-", None))
                    summary.append(("trigger p99", ms(p99).strip(),
                                    f"< {TARGET_TRIGGER_P99 * 1000:.0f} ms",
                                    p99 < TARGET_TRIGGER_P99))
                    summary.append((f"runs recorded for {args.calls:,} calls",
                                    f"{result['recorded']:,} (0 lost, 0 duplicated: {exact})",
                                    f"== {args.calls:,}", exact))
                    if result["busy_lags"]:
                        lag99 = pct(result["busy_lags"], 0.99)
                        summary.append(("event-loop lag p99 during the burst", ms(lag99).strip(),
                                        f"< {TARGET_LAG_P99 * 1000:.0f} ms",
                                        lag99 < TARGET_LAG_P99))
                if "b" not in skip:
                    outcome = bench_events(server, project, events)
                    report_events(outcome, events)
                    if outcome is None:
                        summary.append(("event -> run created p99", "skipped: events route "
                                        "missing", "-", None))
                    else:
                        summary.append(("event -> run created p99",
                                        ms(pct(outcome["latency"], 0.99)).strip(), "-", None))
                        ok = outcome["created"] == events
                        broken |= not ok
                        summary.append(("runs created for the events",
                                        f"{outcome['created']:,}", f"== {events:,}", ok))
        if "c" not in skip:
            cancelled = cancel_recorded(project)
            print(f"  ({cancelled:,} recorded runs cancelled before the executing server starts)")
            with jupyter_server(work, project.path, "executing", scheduler=True) as server:
                result = bench_list(server, project, list_calls, busy_seconds)
                report_list(result)
                p99 = pct(result["list"], 0.99)
                summary.append(("list p99 while 2 runs execute", ms(p99).strip(),
                                f"< {TARGET_LIST_P99 * 1000:.0f} ms",
                                p99 < TARGET_LIST_P99 if result["still_running"] else None))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("\nsummary")
    missed = False
    for name, value, target, ok in summary:
        verdict = "" if ok is None else ("PASS" if ok else "FAIL")
        missed |= ok is False
        print(f"  {verdict:4}  {name:<40} {value:<36} {target}")
    if broken:
        print("runs were lost or duplicated", file=sys.stderr)
        return 1
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
