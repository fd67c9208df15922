"""Kernel start-up: plain jupyter_client vs. the fork server vs. a warm pool.

    python benchmarks/bench_kernels.py [--n 20] [--refill-seconds 10] [--notebooks 20]

Measures wall time from "I want a kernel" to "a client can execute on it" (channels started,
``kernel_info`` answered), N times each, sequentially:

* (a) plain:   ``AsyncKernelManager.start_kernel()`` + ``client.start_channels()`` +
               ``client.wait_for_ready()`` — what nbclient does for every notebook;
* (b) fork:    :func:`mage_nb_sched.execution.kernels.start_kernel` with a ready :class:`ForkServer`
               (the server's own start is not counted);
* (c) acquire: ``KernelPool(size=2).acquire()`` with the pool warm (refill time not counted);

then

* (d) refill:  kernels per second a ``KernelPool(size=2)`` hands out when drained continuously
               for ``--refill-seconds`` (acquire, then ``shutdown(grace=0)`` at once);
* (e) notebook: a trivial 3-cell notebook, create→completed: plain ``nbclient`` with a fresh kernel
               (``NotebookClient(nb).async_execute()``) vs. warm-pool acquire + ``prepare`` +
               ``NotebookClient(km=handle.km)`` cell by cell + ``handle.shutdown()``;
* (f) workers: ``--workers`` processes (default 2), each with its own ``KernelPool(size=2)``,
               running (e)'s pooled notebook back to back for ``--refill-seconds``: notebooks per
               minute for the machine (no database or scheduler in the loop).

Prints p50/p95 (ms) and each median's ratio to (a) — or, for (e), to plain nbclient. The kernel's
own CPU time to become ready (``/proc/<pid>/stat``) is shown for (a) and (b). Exit status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nbclient
from jupyter_client.manager import AsyncKernelManager
from nbformat.v4 import new_code_cell, new_notebook

from mage_nb_sched.execution.kernels import ForkServer, KernelPool, prepare, start_kernel

CELLS = ["x = 1", "y = x + 1", "print(y)"]
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a live process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def summary(name: str, samples: list[float], base: float | None, cpu: list[float]) -> str:
    samples = sorted(samples)
    p50 = statistics.median(samples)
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    text = f"{name:<34} p50 {p50 * 1000:8.1f} ms   p95 {p95 * 1000:8.1f} ms"
    if base:
        text += f"   ratio {p50 / base:6.3f}"
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


async def bench(n: int, refill_seconds: float, notebooks: int) -> None:
    print(f"{n} samples each; {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    plain, plain_cpu = await timed(n, plain_start)
    base = statistics.median(plain)
    print(summary("(a) plain AsyncKernelManager", plain, None, plain_cpu), flush=True)

    server = ForkServer().start()
    if not await server.wait_ready():
        raise SystemExit(f"fork server failed: {server.death_reason}")

    async def fork_start() -> tuple[float, float | None]:
        started = time.perf_counter()
        handle = await start_kernel(forkserver=server)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(handle.pid)
        assert handle.forked
        await handle.shutdown(grace=0)
        return elapsed, cpu

    try:
        forked, forked_cpu = await timed(n, fork_start)
    finally:
        await server.aclose()
    print(summary("(b) fork-server start", forked, base, forked_cpu), flush=True)

    async with KernelPool(size=2) as pool:

        async def warm_acquire() -> tuple[float, float | None]:
            await pool.wait_warm()
            started = time.perf_counter()
            handle = await pool.acquire()
            elapsed = time.perf_counter() - started
            await handle.shutdown(grace=0)
            return elapsed, None

        acquired, _ = await timed(n, warm_acquire)
        print(summary("(c) acquire from a warm pool", acquired, base, []), flush=True)

        await pool.wait_warm()
        before = pool.stats()
        count = 0
        started = time.perf_counter()
        while time.perf_counter() - started < refill_seconds:
            handle = await pool.acquire()
            await handle.shutdown(grace=0)
            count += 1
        elapsed = time.perf_counter() - started
        after = pool.stats()
        print(
            f"(d) sustained refill, size=2: {count / elapsed:.2f} kernels/s "
            f"({count} in {elapsed:.1f}s; {after.started - before.started} started, "
            f"{after.start_failures} failures, forked {after.forked}, spawned {after.spawned})",
            flush=True,
        )

        if notebooks:
            await notebook_bench(pool, notebooks)


async def notebook_bench(pool: KernelPool, count: int) -> None:
    workdir = Path.cwd()

    async def plain_notebook() -> tuple[float, float | None]:
        nb = new_notebook(cells=[new_code_cell(source) for source in CELLS])
        started = time.perf_counter()
        await nbclient.NotebookClient(nb, kernel_name="python3").async_execute()
        return time.perf_counter() - started, None

    async def pooled_notebook() -> tuple[float, float | None]:
        await pool.wait_warm()
        started = time.perf_counter()
        await run_pooled_notebook(pool, workdir)
        return time.perf_counter() - started, None

    plain, _ = await timed(max(3, count // 4), plain_notebook)
    pooled, _ = await timed(count, pooled_notebook)
    base = statistics.median(plain)
    print(summary("(e) 3-cell notebook, plain nbclient", plain, None, []))
    print(summary("(e) 3-cell notebook, warm pool", pooled, base, []), flush=True)


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


def worker(seconds: float, start_at: float, results: Any) -> None:
    """One worker process: warm up, then run notebooks back to back until the deadline."""
    logging.basicConfig(level=logging.ERROR)

    async def go() -> int:
        async with KernelPool(size=2) as pool:
            await pool.wait_warm()
            await asyncio.sleep(max(0.0, start_at - time.time()))
            done = 0
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                await run_pooled_notebook(pool, Path.cwd())
                done += 1
            return done

    results.put(asyncio.run(go()))


def workers_bench(count: int, seconds: float) -> None:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 15.0  # time for every worker to start its pool and warm up
    processes = [
        context.Process(target=worker, args=(seconds, start_at, results)) for _ in range(count)
    ]
    for process in processes:
        process.start()
    total = sum(results.get(timeout=seconds + 120) for _ in processes)
    for process in processes:
        process.join(30)
    print(
        f"(f) {count} workers, 3-cell notebooks back to back: {total / seconds * 60:.0f}/min "
        f"({total} in {seconds:.0f}s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="samples per start method")
    parser.add_argument("--refill-seconds", type=float, default=10.0)
    parser.add_argument("--notebooks", type=int, default=20, help="0 skips (e)")
    parser.add_argument("--workers", type=int, default=2, help="0 skips (f)")
    args = parser.parse_args()
    # Plain kernels log a TCP warning each; keep the report readable.
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(bench(args.n, args.refill_seconds, args.notebooks))
    if args.workers:
        workers_bench(args.workers, args.refill_seconds)


if __name__ == "__main__":
    main()
