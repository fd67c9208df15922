"""Kernel start-up: plain jupyter_client vs. the fork-server provisioner vs. warm pools.

    python benchmarks/bench_kernels.py [--n 20] [--refill-seconds 10] [--notebooks 20]
                                       [--workers 2] [--dataframes 8]

Every comparison is made in the same run, so the fork server's value is measured, not assumed.
"fork" is a pool whose kernels come from :class:`ForkServerProvisioner` (the default on Linux);
"standard" is the same :class:`KernelPool` with ``use_forkserver=False``: warm kernels started by
jupyter_client's own ``LocalProvisioner``.

* (a) plain:    ``AsyncKernelManager.start_kernel()`` + ``client.start_channels()`` +
                ``client.wait_for_ready()`` — what nbclient does for every notebook;
* (b) start:    :func:`mage_nb_sched.execution.kernels.start_kernel` with a ready fork server
                (its own start not counted), and without one (LocalProvisioner), on a pool's zmq
                context; both include the warm-up execution a pooled kernel gets (also shown:
                the fork server's own time to ready, with and without the optional preloads);
* (c) acquire:  ``KernelPool(size=2).acquire()`` with the pool warm (refill time not counted);
* (d) refill:   kernels per second a ``KernelPool(size=2)`` hands out when drained continuously
                for ``--refill-seconds`` (acquire, then ``shutdown(grace=0)`` at once), fork vs
                standard, and their ratio;
* (e) notebook: a trivial 3-cell notebook, create→completed: plain ``nbclient`` with a fresh
                kernel vs. warm-pool acquire + ``prepare`` + ``NotebookClient(km=handle.km)`` cell
                by cell + ``handle.shutdown()``, for each pool;
* (f) workers:  ``--workers`` processes (default 2), each with its own ``KernelPool(size=2)``,
                running (e)'s pooled notebook back to back for ``--refill-seconds``: notebooks
                (runs) per minute for the machine, fork vs standard, and their ratio;
* (g) first DataFrame block: on a fresh kernel, the first cell that does what a block
                returning a DataFrame does (import pandas, build a frame, ``save_output`` it as
                Parquet, display it) vs. the same cell run again on that kernel: fork pool with
                the default preloads (pandas, pyarrow, the output saver), fork pool without them
                (``optional_preload=()``, the old behaviour), standard pool.

Pools are measured in steady state (optional preloads in, see ``settled``); the time the fork
server needs to fork at all, and to finish its optional preloads, is printed after (a).
Prints p50/p95 (ms) and ratios. The kernel's own CPU time to become ready (``/proc/<pid>/stat``)
is shown for (a) and (b). Exit status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nbclient
import zmq
import zmq.asyncio
from jupyter_client.manager import AsyncKernelManager
from nbformat.v4 import new_code_cell, new_notebook

from mage_nb_sched.execution.kernels import (
    DEFAULT_OPTIONAL_PRELOAD,
    ForkServer,
    KernelPool,
    prepare,
    start_kernel,
)

CELLS = ["x = 1", "y = x + 1", "print(y)"]
#: The pool the executor runs (its worker preloads the block decorators).
PRELOAD = ("mage_nb_sched.execution.blocks",)
#: What a block returning a DataFrame does in run mode, as one cell.
DATAFRAME_CELL = (
    "import pandas as pd\n"
    "from pathlib import Path\n"
    "from mage_nb_sched.execution.variables import save_output\n"
    "frame = pd.DataFrame({'a': range(1000), 'b': ['x'] * 1000})\n"
    "save_output(frame, Path({directory!r}) / str(id(frame)))\n"
    "frame"
)
POOLS: dict[str, dict[str, Any]] = {"fork": {}, "standard": {"use_forkserver": False}}
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a live process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def summary(name: str, samples: list[float], base: float | None, cpu: list[float]) -> str:
    samples = sorted(samples)
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    text = f"{name:<40} p50 {p50(samples) * 1000:8.1f} ms   p95 {p95 * 1000:8.1f} ms"
    if base:
        text += f"   ratio {p50(samples) / base:6.3f}"
    if cpu:
        text += f"   kernel CPU p50 {statistics.median(cpu) * 1000:6.0f} ms"
    return text


async def plain_start() -> tuple[float, float | None]:
    started = time.perf_counter()
    km = AsyncKernelManager(kernel_name="python3")
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=60)
    elapsed = time.perf_counter() - started
    pid = getattr(km.provisioner, "pid", None)
    cpu = cpu_seconds(pid) if isinstance(pid, int) else None
    kc.stop_channels()
    await km.shutdown_kernel(now=True)
    return elapsed, cpu


async def timed(
    n: int, once: Callable[[], Awaitable[tuple[float, float | None]]]
) -> tuple[list[float], list[float]]:
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(n):
        wall, cpu = await once()
        walls.append(wall)
        if cpu is not None:
            cpus.append(cpu)
    return walls, cpus


async def bench(n: int, refill_seconds: float, notebooks: int, dataframes: int) -> None:
    print(f"{n} samples each; {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    plain, plain_cpu = await timed(n, plain_start)
    base = p50(plain)
    print(summary("(a) plain AsyncKernelManager", plain, None, plain_cpu), flush=True)

    began = time.perf_counter()
    server = ForkServer(PRELOAD, optional_preload=DEFAULT_OPTIONAL_PRELOAD).start()
    if not await server.wait_ready():
        raise SystemExit(f"fork server failed: {server.death_reason}")
    ready = time.perf_counter() - began
    if not await server.wait_preloaded():
        raise SystemExit(f"fork server failed: {server.death_reason}")
    print(
        f"    fork server forks after {ready * 1000:.0f} ms; optional preloads (probed, then "
        f"imported, while it forks) done after {(time.perf_counter() - began) * 1000:.0f} ms",
        flush=True,
    )

    # A pool's zmq context: clients connect before a new kernel has bound its sockets, and zmq's
    # default 100 ms reconnect interval would otherwise dominate a forked start.
    context = zmq.asyncio.Context()
    context.setsockopt(zmq.RECONNECT_IVL, 10)
    context.setsockopt(zmq.LINGER, 0)

    async def started_by(forkserver: ForkServer | None) -> tuple[float, float | None]:
        started = time.perf_counter()
        handle = await start_kernel(forkserver=forkserver, context=context)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(handle.pid)
        assert handle.forked == (forkserver is not None)
        await handle.shutdown(grace=0)
        return elapsed, cpu

    try:
        forked, forked_cpu = await timed(n, lambda: started_by(server))
    finally:
        await server.aclose()
    standard, standard_cpu = await timed(n, lambda: started_by(None))
    context.destroy(linger=0)
    print(summary("(b) start_kernel, fork provisioner", forked, base, forked_cpu))
    print(summary("(b) start_kernel, LocalProvisioner", standard, base, standard_cpu), flush=True)

    refill: dict[str, float] = {}
    for name, options in POOLS.items():
        async with KernelPool(size=2, preload=PRELOAD, **options) as pool:
            await settled(pool)
            if name == "fork":
                await acquire_bench(pool, n, base)
            refill[name] = await refill_bench(pool, name, refill_seconds)
    print(f"(d) refill ratio fork/standard: {refill['fork'] / refill['standard']:.2f}x", flush=True)

    if notebooks:
        await notebook_bench(notebooks)
    if dataframes:
        await dataframe_bench(dataframes)


async def settled(pool: KernelPool) -> None:
    """Steady state: the fork server's optional preloads are in (they are probed and imported in
    the background during a pool's first seconds, see the line after (a)), and warm kernels forked
    before that are replaced."""
    await pool.start()
    server = pool.forkserver
    if server is None:
        return
    if not await server.wait_preloaded():
        raise SystemExit(f"fork server failed: {server.death_reason}")
    await pool.wait_warm()
    for _ in range(pool.size):
        handle = await pool.acquire()
        await handle.shutdown(grace=0)
    await pool.wait_warm()


async def acquire_bench(pool: KernelPool, n: int, base: float) -> None:
    async def warm_acquire() -> tuple[float, float | None]:
        await pool.wait_warm()
        started = time.perf_counter()
        handle = await pool.acquire()
        elapsed = time.perf_counter() - started
        await handle.shutdown(grace=0)
        return elapsed, None

    acquired, _ = await timed(n, warm_acquire)
    print(summary("(c) acquire from a warm pool", acquired, base, []), flush=True)


async def refill_bench(pool: KernelPool, name: str, seconds: float) -> float:
    await pool.wait_warm()
    before = pool.stats()
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        handle = await pool.acquire()
        await handle.shutdown(grace=0)
        count += 1
    elapsed = time.perf_counter() - started
    after = pool.stats()
    rate = count / elapsed
    print(
        f"(d) sustained refill, size=2, {name:<8}: {rate:6.2f} kernels/s "
        f"({count} in {elapsed:.1f}s; {after.started - before.started} started, "
        f"{after.start_failures} failures, forked {after.forked - before.forked}, "
        f"spawned {after.spawned - before.spawned})",
        flush=True,
    )
    return rate


async def notebook_bench(count: int) -> None:
    workdir = Path.cwd()

    async def plain_notebook() -> tuple[float, float | None]:
        nb = new_notebook(cells=[new_code_cell(source) for source in CELLS])
        started = time.perf_counter()
        await nbclient.NotebookClient(nb, kernel_name="python3").async_execute()
        return time.perf_counter() - started, None

    plain, _ = await timed(max(3, count // 4), plain_notebook)
    base = p50(plain)
    print(summary("(e) 3-cell notebook, plain nbclient", plain, None, []))
    for name, options in POOLS.items():
        async with KernelPool(size=2, preload=PRELOAD, **options) as pool:
            await settled(pool)

            async def pooled_notebook(pool: KernelPool = pool) -> tuple[float, float | None]:
                await pool.wait_warm()
                started = time.perf_counter()
                await run_pooled_notebook(pool, workdir)
                return time.perf_counter() - started, None

            pooled, _ = await timed(count, pooled_notebook)
        print(summary(f"(e) 3-cell notebook, warm {name} pool", pooled, base, []), flush=True)


async def run_pooled_notebook(pool: KernelPool, workdir: Path) -> None:
    nb = new_notebook(cells=[new_code_cell(source) for source in CELLS])
    handle = await pool.acquire()
    try:
        await prepare(handle, workdir, {"MAGE_NB_SCHED_BENCH": "1"})
        client = nbclient.NotebookClient(nb, km=handle.km, timeout=30)
        client.kc = handle.kc
        client.reset_execution_trackers()
        for index, cell in enumerate(nb.cells):
            await client.async_execute_cell(cell, index)
    finally:
        await handle.shutdown()
    if nb.cells[2].outputs[0]["text"] != "2\n":
        raise RuntimeError(f"unexpected output {nb.cells[2].outputs}")


async def dataframe_bench(count: int) -> None:
    directory = tempfile.mkdtemp(prefix="mns-bench-")
    code = DATAFRAME_CELL.replace("{directory!r}", repr(directory))
    variants: dict[str, dict[str, Any]] = {
        "fork, default preloads": {},
        "fork, optional_preload=()": {"optional_preload": ()},
        "standard": {"use_forkserver": False},
    }
    for name, options in variants.items():
        firsts: list[float] = []
        laters: list[float] = []
        # size=0: every kernel is started after the optional preloads are in (a warm kernel
        # forked during a worker's first second may have fewer).
        async with KernelPool(size=0, preload=PRELOAD, **options) as pool:
            await settled(pool)
            for _ in range(count):
                handle = await pool.acquire()
                try:
                    for samples in (firsts, laters):
                        started = time.perf_counter()
                        reply = await handle.kc.execute_interactive(
                            code, timeout=120, output_hook=lambda _message: None
                        )
                        samples.append(time.perf_counter() - started)
                        if reply["content"]["status"] != "ok":
                            raise RuntimeError(f"DataFrame cell failed: {reply['content']}")
                finally:
                    await handle.shutdown()
            stats = pool.stats()
            hello = pool.forkserver.hello if pool.forkserver is not None else None
        preloaded = ", ".join(hello["preloaded"]) if hello else "-"
        print(f"    {name}: forked {stats.forked}, spawned {stats.spawned}; preloaded: {preloaded}")
        print(summary(f"(g) first DataFrame block, {name}", firsts, p50(laters), []))
        print(summary(f"(g) later DataFrame block, {name}", laters, None, []), flush=True)


def worker(seconds: float, start_at: float, options: dict[str, Any], results: Any) -> None:
    """One worker process: warm up, then run notebooks back to back until the deadline."""
    logging.basicConfig(level=logging.ERROR)

    async def go() -> int:
        async with KernelPool(size=2, preload=PRELOAD, **options) as pool:
            await settled(pool)
            await pool.wait_warm()
            await asyncio.sleep(max(0.0, start_at - time.time()))
            done = 0
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                await run_pooled_notebook(pool, Path.cwd())
                done += 1
            return done

    results.put(asyncio.run(go()))


def workers_bench(count: int, seconds: float, name: str, options: dict[str, Any]) -> float:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 15.0  # time for every worker to start its pool and warm up
    processes = [
        context.Process(target=worker, args=(seconds, start_at, options, results))
        for _ in range(count)
    ]
    for process in processes:
        process.start()
    total = sum(results.get(timeout=seconds + 120) for _ in processes)
    for process in processes:
        process.join(30)
    per_minute = total / seconds * 60
    print(
        f"(f) {count} workers, {name:<8} pools, 3-cell notebooks back to back: "
        f"{per_minute:5.0f} runs/min ({total} in {seconds:.0f}s)",
        flush=True,
    )
    return per_minute


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="samples per start method")
    parser.add_argument("--refill-seconds", type=float, default=10.0)
    parser.add_argument("--notebooks", type=int, default=20, help="0 skips (e)")
    parser.add_argument("--workers", type=int, default=2, help="0 skips (f)")
    parser.add_argument("--dataframes", type=int, default=8, help="samples for (g); 0 skips")
    args = parser.parse_args()
    # Plain kernels log a TCP warning each; keep the report readable. The baselines get the same
    # quiet-debugger environment the pool gives its kernels (no pydevd warning per kernel).
    logging.basicConfig(level=logging.ERROR)
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    asyncio.run(bench(args.n, args.refill_seconds, args.notebooks, args.dataframes))
    if args.workers:
        rates = {
            name: workers_bench(args.workers, args.refill_seconds, name, options)
            for name, options in POOLS.items()
        }
        print(f"(f) runs/min ratio fork/standard: {rates['fork'] / rates['standard']:.2f}x")


if __name__ == "__main__":
    main()
