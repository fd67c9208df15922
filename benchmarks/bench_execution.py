"""Execution latency and throughput, each as a ratio to plain nbclient measured in the same run.

Trivial 3-cell notebook. Three ways to run it:

  (a) plain nbclient: ``NotebookClient(nb).async_execute()`` with a fresh kernel,
  (b) our runner without a warm pool (a kernel started on demand per run),
  (c) our LocalExecutor with 2 workers and warm kernel pools.

Printed: p50/p95 of create→first cell started and create→completed, and runs/minute with 2
workers. Targets on a 2-core machine: (c) create→completed p50 ≤ 0.2 x (a); first cell started
p50 ≤ 50 ms; ≥ 300 runs/min.

    python benchmarks/bench_execution.py [--runs 20] [--throughput-runs 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CELLS = ["x = 1", "y = x + 1", "print(y)"]


def notebook_json() -> dict[str, Any]:
    return {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": f"c{i}",
                "metadata": {},
                "outputs": [],
                "source": source,
            }
            for i, source in enumerate(CELLS)
        ],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _recorder(into: list[float]) -> Any:
    def hook(**_: Any) -> None:
        into.append(time.perf_counter())

    return hook


async def bench_plain(runs: int) -> dict[str, list[float]]:
    import nbformat
    from nbclient import NotebookClient

    first, total = [], []
    for _ in range(runs):
        nb = nbformat.from_dict(notebook_json())
        started: list[float] = []
        t0 = time.perf_counter()
        client = NotebookClient(nb, kernel_name="python3")
        client.on_cell_execute = _recorder(started)
        await client.async_execute()
        total.append(time.perf_counter() - t0)
        first.append(started[0] - t0)
    return {"first": first, "total": total}


def _run_latencies(run_ids: list[int]) -> dict[str, list[float]]:
    from mage_nb_sched import PipelineRun

    first, total = [], []
    for run_id in run_ids:
        run = PipelineRun.query.get(run_id)
        assert run is not None and run.status == "completed", (run_id, run and run.metrics)
        first.append(float(run.metrics["first_cell_latency"]))
        assert run.completed_at is not None
        total.append((run.completed_at - run.created_at).total_seconds())
    return {"first": first, "total": total}


async def bench_runner_no_pool(store: Any, runs: int) -> dict[str, list[float]]:
    from mage_nb_sched import PipelineRun
    from mage_nb_sched.execution.kernels import KernelPool
    from mage_nb_sched.execution.runner import PipelineRunner

    pool = KernelPool(size=0, use_forkserver=False)
    await pool.start()
    ids = []
    try:
        runner = PipelineRunner(store, pool)
        for _ in range(runs):
            run = PipelineRun.create(pipeline_uuid="bench")
            await runner.execute(run.id)
            ids.append(run.id)
    finally:
        await pool.close()
    return _run_latencies(ids)


async def bench_executor(store: Any, runs: int, throughput_runs: int) -> dict[str, Any]:
    from mage_nb_sched import PipelineRun
    from mage_nb_sched.execution.executors import LocalExecutor

    executor = LocalExecutor(store, workers=2, kernel_pool_size=2)
    await executor.start()
    try:
        # Warm-up: let both pools fill.
        for _ in range(2):
            run = PipelineRun.create(pipeline_uuid="bench")
            await (await executor.submit(run.id))
        await asyncio.sleep(2.0)  # benchmark only: give the pools time to refill before timing
        latency_ids = []
        for _ in range(runs):
            run = PipelineRun.create(pipeline_uuid="bench")
            await (await executor.submit(run.id))
            latency_ids.append(run.id)
            await asyncio.sleep(0.6)  # benchmark only: a steady arrival rate, not a burst
        latencies = _run_latencies(latency_ids)
        t0 = time.perf_counter()
        futures = []
        for _ in range(throughput_runs):
            run = PipelineRun.create(pipeline_uuid="bench")
            futures.append(await executor.submit(run.id))
        results = await asyncio.gather(*futures)
        elapsed = time.perf_counter() - t0
        completed = sum(1 for r in results if r.status == "completed")
        return {**latencies, "runs_per_minute": completed / elapsed * 60, "completed": completed}
    finally:
        await executor.shutdown(grace=5)


def summary(name: str, data: dict[str, list[float]], base: dict[str, list[float]]) -> None:
    for key, label in (("first", "create→first cell"), ("total", "create→completed")):
        p50, p95 = pct(data[key], 0.5), pct(data[key], 0.95)
        ratio = p50 / pct(base[key], 0.5)
        print(
            f"  {name:<28} {label:<18} p50 {p50 * 1000:8.1f} ms  p95 {p95 * 1000:8.1f} ms"
            f"  ratio to (a) {ratio:5.2f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--throughput-runs", type=int, default=60)
    args = parser.parse_args()

    import os

    project = Path(tempfile.mkdtemp(prefix="bench-exec-"))
    (project / "bench.ipynb").write_text(json.dumps(notebook_json()))
    os.environ["MAGE_NB_SCHED_PROJECT_DIR"] = str(project)
    from mage_nb_sched.store import use_store

    store = use_store(project_dir=project)

    plain = asyncio.run(bench_plain(args.runs))
    no_pool = asyncio.run(bench_runner_no_pool(store, max(5, args.runs // 2)))
    pooled = asyncio.run(bench_executor(store, args.runs, args.throughput_runs))
    print(f"trivial 3-cell notebook, {args.runs} runs each (b: {max(5, args.runs // 2)})")
    summary("(a) plain nbclient", plain, plain)
    summary("(b) runner, no warm pool", no_pool, plain)
    summary("(c) executor, warm pools", pooled, plain)
    plain_rpm = 60 / statistics.mean(plain["total"])
    print(
        f"  throughput (c), 2 workers: {pooled['runs_per_minute']:.0f} runs/min "
        f"({pooled['completed']}/{args.throughput_runs} completed); one plain nbclient "
        f"loop: {plain_rpm:.0f} runs/min; ratio {pooled['runs_per_minute'] / plain_rpm:.1f}x"
    )
    c50 = pct(pooled["total"], 0.5) / pct(plain["total"], 0.5)
    f50 = pct(pooled["first"], 0.5)
    print(
        f"targets: completed p50 ratio {c50:.2f} (≤ 0.2), first cell p50 {f50 * 1000:.0f} ms "
        f"(≤ 50), {pooled['runs_per_minute']:.0f} runs/min (≥ 300)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
