"""Guarantees of mage_nb_sched.execution.kernels, with real kernels and real processes.

* a warm kernel is handed out at once, ready, to exactly one caller, and runs as ``handle.pid``;
* ``acquire(cwd, env)`` really moves the kernel (cwd, os.environ, imports, subprocesses);
* interrupt, a kernel that kills itself, and nbclient (including a cell timeout) behave as with
  any jupyter kernel;
* no kernel process outlives ``shutdown()``/``kill_now()``/``close()``, nor ``kill -9`` of the
  process owning the pool, nor the fork server's death (then kernels are spawned normally).

Nothing here synchronises by sleeping: waits poll ``/proc`` or a client call against a deadline.
The container's PID 1 may not reap orphans, so a zombie counts as gone (it runs no code).
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import nbclient
import processes
import pytest
from nbclient.exceptions import CellExecutionError
from nbformat.v4 import new_code_cell, new_notebook

from mage_nb_sched.core.errors import ValidationError
from mage_nb_sched.execution import kernels, provisioner
from mage_nb_sched.execution.kernels import (
    ForkServer,
    KernelError,
    KernelHandle,
    KernelPool,
    KernelPoolClosedError,
    KernelStartError,
    prepare,
)

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]


# -- helpers ------------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """Whether any thread of process ``pid`` still runs (see :func:`processes.running`).

    Race-free: a process that ends between looking for its threads and listing them is not
    alive (``Path.glob`` used to raise ``FileNotFoundError`` for ``/proc/<pid>/task`` then).
    """
    return processes.running(pid)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until true or the deadline passes (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return condition()
        time.sleep(0.005)
    return True


def all_gone(pids: set[int], timeout: float = 10.0) -> set[int]:
    """Wait for every pid to end; returns the ones still alive at the deadline."""
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout)
    return {pid for pid in pids if alive(pid)}


def descendants(root: int) -> set[int]:
    """Living children, grandchildren... of ``root``."""
    return {pid for pid in processes.descendants(root) if alive(pid)}


async def run_code(
    handle: KernelHandle, code: str, timeout: float = 15.0
) -> tuple[dict[str, Any], str]:
    """Execute ``code``; the reply content and everything it printed or returned, as text."""
    chunks: list[str] = []

    def collect(message: dict[str, Any]) -> None:
        content = message["content"]
        if message["msg_type"] == "stream":
            chunks.append(content["text"])
        elif message["msg_type"] in {"execute_result", "display_data"}:
            chunks.append(content["data"].get("text/plain", ""))

    reply = await handle.kc.execute_interactive(code, output_hook=collect, timeout=timeout)
    return reply["content"], "".join(chunks)


async def evaluate(handle: KernelHandle, code: str) -> str:
    content, text = await run_code(handle, code)
    assert content["status"] == "ok", content
    return text.strip()


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for the module, so one warm pool can serve many tests."""
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.run_until_complete(event_loop.shutdown_asyncgens())
    event_loop.close()


@pytest.fixture(scope="module")
def run(loop: asyncio.AbstractEventLoop) -> Callable[..., Any]:
    def runner(coroutine: Coroutine[Any, Any, T], timeout: float = 90.0) -> T:
        return loop.run_until_complete(asyncio.wait_for(coroutine, timeout))

    return runner


@pytest.fixture(scope="module")
def pool(run: Callable[..., Any]) -> Iterator[KernelPool]:
    """A shared warm pool (size 2, forked kernels)."""
    shared = KernelPool(size=2)
    run(shared.start())
    yield shared
    run(shared.close())


# -- pure checks (no kernels) -----------------------------------------------------------------


def test_fork_plan_accepts_only_kernels_the_server_can_produce() -> None:
    server = ForkServer(env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": "/a"})
    env = dict(server.env)
    connection = ["-f", "/tmp/kernel-1.json"]
    launch = [sys.executable, "-m", "ipykernel_launcher", *connection]
    assert provisioner.fork_plan(launch, env, server) == (connection, "ipykernel_launcher")
    assert isinstance(provisioner.fork_plan(["R", "--slave", "-e", "x"], env, server), str)
    other_python = provisioner.fork_plan(
        ["/usr/bin/false", "-m", "ipykernel_launcher"], env, server
    )
    assert isinstance(other_python, str) and "interpreter" in other_python
    moved = provisioner.fork_plan(launch, {**env, "PYTHONPATH": "/b"}, server)
    assert isinstance(moved, str) and "PYTHONPATH" in moved


def test_sweep_removes_only_files_of_dead_owners_in_this_namespace(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    namespace, me = kernels._owner_tag().split("-")
    names = {
        "dead_json": f"kernel-mns-{namespace}-{dead.pid}-0a1b2c3d.json",
        "dead_ipc": f"mns-{namespace}-{dead.pid}-0a1b2c3d-4",
        "mine": f"kernel-mns-{namespace}-{me}-0a1b2c3d.json",
        "other_namespace": f"mns-{int(namespace, 16) + 1:x}-{dead.pid}-0a1b2c3d-1",
        "not_ours": "kernel-0a1b2c3d-0000-0000-0000-000000000000.json",
    }
    for name in names.values():
        (tmp_path / name).write_text("{}")
    assert kernels.sweep_stale_files(str(tmp_path)) == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        names[key] for key in ("mine", "other_namespace", "not_ours")
    )


@pytest.mark.parametrize(
    "arguments",
    [
        {"size": -1},
        {"size": 1.5},
        {"max_concurrent_starts": 0},
        {"preload": "pandas"},
        {"transport": "udp"},
    ],
)
def test_pool_rejects_bad_arguments(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        KernelPool(**arguments)


# -- real kernels -----------------------------------------------------------------------------


@pytest.mark.kernel
def test_warm_acquire_is_immediate_ready_and_runs_as_handle_pid(
    run: Callable[..., Any], pool: KernelPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "Immediate" without a stopwatch: acquire() hands out the oldest kernel that was already
    # warm (started, client ready) *before* it was called, and takes neither slow path: it does
    # not wait for a kernel start, nor prepare() the kernel (no cwd/env asked for).
    slow_paths: list[str] = []
    wait_for_kernel = pool._wait_for_kernel
    prepare_kernel = kernels.prepare

    async def waiting(*args: Any, **kwargs: Any) -> KernelHandle:
        slow_paths.append("_wait_for_kernel")
        return await wait_for_kernel(*args, **kwargs)

    async def preparing(*args: Any, **kwargs: Any) -> None:
        slow_paths.append("prepare")
        await prepare_kernel(*args, **kwargs)

    monkeypatch.setattr(pool, "_wait_for_kernel", waiting)
    monkeypatch.setattr(kernels, "prepare", preparing)

    async def scenario() -> tuple[list[KernelHandle], int, KernelHandle, str]:
        await pool.wait_warm()
        warm_before = list(pool._warm)
        assert all(handle.is_alive() and not handle.closed for handle in warm_before)
        handed_out_before = pool.stats().handed_out
        handle = await pool.acquire()
        handed_out = pool.stats().handed_out - handed_out_before
        try:
            pid = await evaluate(handle, "import os; os.getpid()")
        finally:
            await handle.shutdown()
        return warm_before, handed_out, handle, pid

    warm_before, handed_out, handle, pid = run(scenario())
    assert len(warm_before) >= 2, "the pool was not warm before acquire()"
    assert handle is warm_before[0], "acquire() did not hand out the oldest already-warm kernel"
    assert slow_paths == [], f"a warm acquire took a slow path: {slow_paths}"
    assert handed_out == 1
    assert handle.forked
    assert int(pid) == handle.pid


@pytest.mark.kernel
def test_acquire_with_cwd_and_env_moves_the_kernel(
    run: Callable[..., Any], pool: KernelPool, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, value in ((first, 1), (second, 2)):
        folder.mkdir()
        (folder / "mns_local_helper.py").write_text(f"VALUE = {value}\n")

    async def scenario() -> list[str]:
        handle = await pool.acquire(cwd=first, env={"MAGE_NB_SCHED_TEST_VAR": "from-acquire"})
        try:
            seen = [
                await evaluate(handle, "import os; print(os.getcwd())"),
                await evaluate(handle, "print(os.environ['MAGE_NB_SCHED_TEST_VAR'])"),
                await evaluate(
                    handle,
                    "import subprocess; print(subprocess.run(['sh', '-c', "
                    "'echo $MAGE_NB_SCHED_TEST_VAR; pwd'], capture_output=True, text=True).stdout)",
                ),
                await evaluate(handle, "import mns_local_helper; print(mns_local_helper.VALUE)"),
            ]
            await prepare(handle, second, {"MAGE_NB_SCHED_TEST_VAR": "from-prepare"})
            seen.append(await evaluate(handle, "import os; print(os.getcwd())"))
            seen.append(await evaluate(handle, "print(os.environ['MAGE_NB_SCHED_TEST_VAR'])"))
            # the silent preparations are not executions: this is the 7th
            content, _ = await run_code(handle, "1")
            seen.append(str(content["execution_count"]))
        finally:
            await handle.shutdown()
        return seen

    seen = run(scenario())
    assert seen == [
        str(first),
        "from-acquire",
        f"from-acquire\n{first}",
        "1",
        str(second),
        "from-prepare",
        "7",
    ]


@pytest.mark.kernel
def test_each_acquire_gets_a_distinct_kernel(run: Callable[..., Any], pool: KernelPool) -> None:
    async def scenario() -> tuple[list[KernelHandle], list[str], int]:
        before = pool.stats().handed_out
        handles = await asyncio.gather(*(pool.acquire() for _ in range(4)))
        try:
            pids = [await evaluate(handle, "import os; os.getpid()") for handle in handles]
        finally:
            await asyncio.gather(*(handle.shutdown() for handle in handles))
        return list(handles), pids, pool.stats().handed_out - before

    handles, pids, handed_out = run(scenario())
    assert len({handle.pid for handle in handles}) == 4
    assert [int(pid) for pid in pids] == [handle.pid for handle in handles]
    assert handed_out == 4


@pytest.mark.kernel
def test_forked_kernels_look_like_normal_kernels(run: Callable[..., Any], tmp_path: Path) -> None:
    probe = (
        "import json, os, random, sys\n"
        "print(json.dumps([random.random(), 'email.mime.text' in sys.modules, '' in sys.path,"
        " any(p.endswith('mage_nb_sched') for p in sys.path), sys.argv[0],"
        " os.environ.get('MNS_POOL_VAR'), os.getcwd(), os.getppid()]))"
    )

    async def scenario() -> tuple[list[list[Any]], int | None]:
        async with KernelPool(
            size=2, cwd=tmp_path, env={"MNS_POOL_VAR": "pool"}, preload=["email.mime.text"]
        ) as own:
            await own.wait_warm()
            handles = [await own.acquire(), await own.acquire()]
            try:
                results = [json.loads(await evaluate(handle, probe)) for handle in handles]
            finally:
                await asyncio.gather(*(handle.shutdown() for handle in handles))
            assert all(handle.forked for handle in handles)
            return results, own.stats().forkserver_pid

    results, server_pid = run(scenario())
    one, two = results
    assert one[0] != two[0], "forked kernels must not share the random state"
    for _, preloaded, has_cwd_entry, has_package_dir, argv0, pool_var, cwd, ppid in results:
        assert preloaded, "preloaded modules are already imported"
        assert has_cwd_entry and not has_package_dir, "sys.path as in a normal kernel"
        assert argv0.endswith("ipykernel_launcher.py")
        assert (pool_var, cwd, ppid) == ("pool", str(tmp_path), server_pid)


@pytest.mark.kernel
def test_shutdown_kills_the_process_group_and_removes_files(
    run: Callable[..., Any], pool: KernelPool
) -> None:
    async def scenario() -> tuple[KernelHandle, int]:
        handle = await pool.acquire()
        sleeper = await evaluate(
            handle, "import subprocess; subprocess.Popen(['sleep', '600']).pid"
        )
        assert Path(handle.connection_file).exists()
        await handle.shutdown()
        await handle.shutdown()  # idempotent
        handle.kill_now()  # and harmless afterwards
        return handle, int(sleeper)

    handle, sleeper = run(scenario())
    assert all_gone({handle.pid, sleeper}) == set()
    assert not Path(handle.connection_file).exists()
    assert handle.closed and not handle.is_alive()


@pytest.mark.kernel
def test_graceful_shutdown_runs_atexit_and_flushes_files(
    run: Callable[..., Any], pool: KernelPool, tmp_path: Path
) -> None:
    marker, unflushed = tmp_path / "atexit.txt", tmp_path / "unflushed.txt"

    async def scenario() -> None:
        handle = await pool.acquire()
        await evaluate(
            handle,
            f"import atexit; atexit.register(lambda: open({str(marker)!r}, 'w').write('bye'))\n"
            f"handle = open({str(unflushed)!r}, 'w'); handle.write('data')",
        )
        await handle.shutdown(grace=5.0)

    run(scenario())
    assert marker.read_text() == "bye"
    assert unflushed.read_text() == "data"


@pytest.mark.kernel
def test_kill_now_is_synchronous(run: Callable[..., Any], pool: KernelPool) -> None:
    handle = run(pool.acquire())
    handle.kill_now()
    assert handle.closed and not handle.is_alive()
    assert all_gone({handle.pid}) == set()
    assert not Path(handle.connection_file).exists()


@pytest.mark.kernel
def test_interrupt_stops_a_running_cell(run: Callable[..., Any], pool: KernelPool) -> None:
    async def scenario() -> tuple[dict[str, Any], str]:
        handle = await pool.acquire()
        try:
            kc = handle.kc
            # stop_on_error=False: after an error *with* it, ipykernel 7 replies before it starts
            # aborting queued requests, so a request sent right after the reply may be aborted.
            msg_id = kc.execute(
                "import time\nprint('sleeping', flush=True)\ntime.sleep(30)", stop_on_error=False
            )
            # wait until the cell itself is running (it printed), then interrupt
            while True:
                message = await kc.get_iopub_msg(timeout=10)
                if (
                    message["parent_header"].get("msg_id") == msg_id
                    and message["msg_type"] == "stream"
                ):
                    break
            await handle.km.interrupt_kernel()
            while True:
                reply = await kc.get_shell_msg(timeout=10)
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
            after = await evaluate(handle, "print(6 * 7)")
        finally:
            await handle.shutdown()
        return reply["content"], after

    content, after = run(scenario())
    # The cell was stopped, not left to finish: a 30 s sleep that ran out would reply "ok" (and
    # only after the 10 s reply deadline above); only the interrupt makes it KeyboardInterrupt.
    assert content["status"] == "error" and content["ename"] == "KeyboardInterrupt"
    assert after == "42"


@pytest.mark.kernel
def test_a_kernel_that_kills_itself_is_detected_dead(
    run: Callable[..., Any], pool: KernelPool
) -> None:
    async def scenario() -> tuple[KernelHandle, int | None]:
        handle = await pool.acquire()
        handle.kc.execute("import os; os.kill(os.getpid(), 9)")
        deadline = time.monotonic() + 10
        while await handle.km.is_alive():
            assert time.monotonic() < deadline, "kernel still reported alive"
            await asyncio.sleep(0.005)
        assert handle.km.provisioner is not None
        code = await handle.km.provisioner.poll()
        await handle.shutdown()
        return handle, code

    handle, code = run(scenario())
    assert code == -signal.SIGKILL
    assert not handle.is_alive() and all_gone({handle.pid}) == set()


@pytest.mark.kernel
def test_nbclient_runs_cells_on_a_handle_and_survives_a_cell_timeout(
    run: Callable[..., Any], pool: KernelPool
) -> None:
    nb = new_notebook(
        cells=[
            new_code_cell("a = 1"),
            new_code_cell("import time\ntime.sleep(30)"),
            new_code_cell("import os\nprint(a + 1, os.getpid())"),
        ]
    )

    async def scenario() -> tuple[KernelHandle, list[str]]:
        handle = await pool.acquire()
        errors: list[str] = []
        try:
            # allow_errors=True (stop_on_error=False): see test_interrupt_stops_a_running_cell;
            # with allow_errors=False the next cell is occasionally answered "aborted", which
            # nbclient treats as success without outputs. Errors are then read from outputs.
            client = nbclient.NotebookClient(
                nb, km=handle.km, timeout=1, interrupt_on_timeout=True, allow_errors=True
            )
            client.kc = handle.kc
            client.reset_execution_trackers()
            for index, cell in enumerate(nb.cells):
                try:
                    await client.async_execute_cell(cell, index)
                except CellExecutionError as error:  # pragma: no cover - allow_errors=True
                    errors.append(f"raised {error.ename}")
                errors.extend(
                    output["ename"] for output in cell.outputs if output["output_type"] == "error"
                )
        finally:
            await handle.shutdown()
        return handle, errors

    handle, errors = run(scenario())
    # The 1 s cell timeout interrupted the 30 s cell (a sleep that ran out raises nothing, so
    # errors would be empty), and the kernel went on to run the next cell.
    assert errors == ["KeyboardInterrupt"]
    assert nb.cells[1].outputs[0]["ename"] == "KeyboardInterrupt"
    assert nb.cells[2].outputs[0]["text"] == f"2 {handle.pid}\n"
    assert [cell.execution_count for cell in nb.cells] == [1, 2, 3]


OWNER_SCRIPT = """
import asyncio, json, sys
from mage_nb_sched.execution.kernels import KernelPool

async def main():
    pool = KernelPool(size=1)
    await pool.start()
    first, second = await pool.acquire(), await pool.acquire()
    await pool.wait_warm()
    print(json.dumps({"kernels": [first.pid, second.pid], "forkserver": pool.forkserver.pid,
                      "files": [first.connection_file, second.connection_file]}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


@pytest.mark.kernel
def test_kill_9_of_the_pool_owner_takes_every_kernel_down() -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert owner.stdout is not None
        ready, _, _ = select.select([owner.stdout], [], [], 90)
        assert ready, "the pool owner did not report its kernels"
        report = json.loads(owner.stdout.readline())
        family = descendants(owner.pid)
        expected = {*report["kernels"], report["forkserver"]}
        assert expected <= family and len(family) >= 4  # server, 2 handed out, 1+ warm
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        assert all_gone(family, timeout=10) == set()
        # what a killed owner leaves in the runtime dir, the next pool sweeps away
        assert all(Path(path).exists() for path in report["files"])
        assert kernels.sweep_stale_files() >= len(report["files"])
        assert not any(Path(path).exists() for path in report["files"])
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


@pytest.mark.kernel
def test_fork_server_death_falls_back_to_spawning_then_restarts(
    run: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with KernelPool(size=1) as own:
            await own.wait_warm()
            assert own.forkserver is not None and own.forkserver.pid is not None
            server_pid = own.forkserver.pid
            warm = {handle.pid for handle in own._warm}
            os.kill(server_pid, signal.SIGKILL)
            # its kernels die with it (PDEATHSIG) and the pool notices
            assert await asyncio.to_thread(all_gone, {server_pid, *warm}) == set()
            server = own.forkserver
            assert await asyncio.to_thread(wait_until, lambda: not server.alive)

            spawned = await own.acquire()
            try:
                assert not spawned.forked
                assert int(await evaluate(spawned, "import os; os.getpid()")) == spawned.pid
            finally:
                await spawned.shutdown()
            assert await asyncio.to_thread(all_gone, {spawned.pid}) == set()

            monkeypatch.setattr(kernels, "FORKSERVER_RESTART_INTERVAL", 0.0)
            # From now on every start restarts the server and forks. A refill begun while the
            # server was down still spawns: let it land (it used to be handed to the acquire
            # below now and then), then drop every spawned warm kernel.
            await processes.until(
                lambda: own.stats().starting == 0, what="refills begun while the server was down"
            )
            for handle in [handle for handle in own._warm if not handle.forked]:
                own._warm.remove(handle)
                await handle.shutdown(grace=0)
            forked = await own.acquire()
            try:
                assert forked.forked and own.forkserver.pid != server_pid
            finally:
                await forked.shutdown()
            assert own.stats().spawned >= 1

    run(scenario(), timeout=120)


@pytest.mark.kernel
def test_thirty_cycles_leave_no_process_or_file_behind(run: Callable[..., Any]) -> None:
    me = os.getpid()
    before = descendants(me)
    files: list[str] = []
    sockets: list[str] = []

    async def scenario() -> tuple[set[int], set[int], int | None]:
        own = KernelPool(size=2)
        await own.start()
        try:
            for _ in range(30):
                handle = await own.acquire()
                files.append(handle.connection_file)
                assert handle.km.transport == "ipc"
                sockets.extend(f"{handle.km.ip}-{port}" for port in range(1, 6))
                assert any(Path(path).exists() for path in sockets[-5:])
                assert await evaluate(handle, "print(1 + 1)") == "2"
                await handle.shutdown()
            await own.wait_warm()
            deadline = time.monotonic() + 30
            while own.stats().starting:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            warm = {handle.pid for handle in own._warm}
            server = own.forkserver.pid if own.forkserver else None
            return warm, descendants(me) - before, server
        finally:
            await own.close()

    warm, during, server = run(scenario(), timeout=180)
    assert during == {*warm, server}, "only the fork server and the warm kernels may remain"
    assert all_gone(during) == set()
    assert descendants(me) - before == set()
    assert not [path for path in files + sockets if Path(path).exists()]


@pytest.mark.kernel
def test_spawned_kernels_when_the_fork_server_is_off(run: Callable[..., Any]) -> None:
    async def scenario() -> tuple[KernelHandle, str]:
        async with KernelPool(size=0, use_forkserver=False) as own:
            handle = await own.acquire()
            try:
                pid = await evaluate(handle, "import os; os.getpid()")
            finally:
                await handle.shutdown()
            assert own.stats().spawned == 1 and own.stats().forkserver_pid is None
            return handle, pid

    handle, pid = run(scenario())
    assert not handle.forked and int(pid) == handle.pid
    assert all_gone({handle.pid}) == set()


@pytest.mark.kernel
def test_unknown_kernel_fails_fast_and_is_counted(run: Callable[..., Any]) -> None:
    async def scenario() -> kernels.PoolStats:
        own = KernelPool(size=0, kernel_name="no-such-kernel-mns", use_forkserver=False)
        async with own:
            with pytest.raises(KernelStartError, match="no-such-kernel-mns"):
                await own.acquire(timeout=30)
            return own.stats()

    stats = run(scenario())
    assert stats.start_failures == 1 and stats.started == 0 and stats.outstanding == 0


@pytest.mark.kernel
def test_close_fails_waiters_and_kills_handed_out_kernels(run: Callable[..., Any]) -> None:
    me = os.getpid()
    before = descendants(me)

    async def scenario() -> KernelHandle:
        own = KernelPool(size=0)
        await own.start()
        handed_out = await own.acquire()
        waiter = asyncio.ensure_future(own.acquire())
        waiter2 = asyncio.ensure_future(own.acquire())
        await asyncio.sleep(0)  # let both register as waiting
        await own.close()
        for task in (waiter, waiter2):
            with pytest.raises(KernelPoolClosedError):
                await task
        with pytest.raises(KernelPoolClosedError):
            await own.acquire()
        assert isinstance(KernelPoolClosedError(), KernelError)
        return handed_out

    handed_out = run(scenario())
    assert handed_out.closed
    assert all_gone({handed_out.pid}) == set()
    assert descendants(me) - before == set()
