"""The fork-server kernel provisioner and how a pool picks a provisioner.

* kernels are started through jupyter_client's public provisioner API: the fork-server provisioner
  (found through its ``jupyter_client.kernel_provisioners`` entry point from a kernelspec stanza,
  or attached to the manager when the entry point is not installed) where forking is safe, and
  jupyter_client's own ``LocalProvisioner`` elsewhere — with the reason in the log;
* the fork-safety check sees native threads (``/proc/self/task``), not only Python threads; an
  optional preload that starts one is left out (found by a probe process) instead of disabling
  forking, and optional preloads never hold up the first kernel;
* pandas/pyarrow are preloaded by default, so kernels start with them imported;
* no pydevd "frozen modules" warning reaches a kernel's (or the fork server's) stderr;
* a dead kernel's handle says how it ended ("killed by SIGKILL", "exited with code 3").

Nothing here synchronises by sleeping; waits poll against a deadline.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import logging
import os
import select
import signal
import subprocess
import sys
import textwrap
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import processes
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager, KernelManager
from jupyter_client.provisioning.local_provisioner import LocalProvisioner
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase

from mage_nb_sched.execution import kernel_forkserver, kernels, provisioner
from mage_nb_sched.execution.kernels import KernelHandle, KernelPool
from mage_nb_sched.execution.provisioner import (
    PROVISIONER_NAME,
    ForkServer,
    ForkServerProvisioner,
    describe_exit,
)

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
HAS_PANDAS = importlib.util.find_spec("pandas") is not None
HAS_PYARROW = importlib.util.find_spec("pyarrow") is not None

#: A module that starts a thread the ``threading`` module does not know about: a C thread that
#: blocks in pause(), as a C library's thread pool would.
NATIVE_THREAD_MODULE = """
import ctypes
libc = ctypes.CDLL(None)
thread = ctypes.c_ulong()
if libc.pthread_create(ctypes.byref(thread), None, ctypes.cast(libc.pause, ctypes.c_void_p), None):
    raise OSError("pthread_create failed")
"""
#: A module that starts a Python thread pool worker.
THREAD_POOL_MODULE = """
import concurrent.futures
pool = concurrent.futures.ThreadPoolExecutor(1)
pool.submit(int).result()
"""


def run(coroutine: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


async def evaluate(handle: KernelHandle, code: str) -> str:
    chunks: list[str] = []

    def collect(message: dict[str, Any]) -> None:
        if message["msg_type"] == "stream":
            chunks.append(message["content"]["text"])
        elif message["msg_type"] == "execute_result":
            chunks.append(message["content"]["data"].get("text/plain", ""))

    reply = await handle.kc.execute_interactive(code, output_hook=collect, timeout=30)
    assert reply["content"]["status"] == "ok", reply["content"]
    return "".join(chunks).strip()


def module_dir(tmp_path: Path, **modules: str) -> Path:
    folder = tmp_path / "modules"
    folder.mkdir(exist_ok=True)
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return folder


# -- pure checks ------------------------------------------------------------------------------


def test_only_public_members_are_overridden() -> None:
    # Every method the provisioner defines is one of the provisioner API's public methods or its
    # own; none replaces a private member of jupyter_client's classes.
    inherited = {
        name
        for base in (LocalProvisioner, KernelProvisionerBase)
        for name in vars(base)
        if name.startswith("_") and not name.startswith("__")
    }
    own = {
        name
        for name, value in vars(ForkServerProvisioner).items()
        if not name.startswith("__") and (inspect.isfunction(value) or isinstance(value, property))
    }
    assert {"launch_kernel", "poll", "wait", "send_signal", "kill"} <= own
    assert own & inherited == set()
    # ... and the pool uses jupyter_client's kernel manager as it is.
    subclasses = [
        value
        for value in vars(kernels).values()
        if isinstance(value, type) and issubclass(value, KernelManager)
    ]
    assert subclasses == [AsyncKernelManager]


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (-signal.SIGKILL, "killed by SIGKILL"),
        (-signal.SIGTERM, "killed by SIGTERM"),
        (3, "exited with code 3"),
        (0, "exited with code 0"),
        (-250, "killed by signal 250"),
        (None, None),
    ],
)
def test_describe_exit(code: int | None, text: str | None) -> None:
    assert describe_exit(code) == text


def test_kernelspec_stanza_names_the_entry_point_and_the_server() -> None:
    server = ForkServer()
    assert provisioner.kernelspec_stanza(server) == {
        "provisioner_name": PROVISIONER_NAME,
        "config": {"forkserver_id": server.id},
    }
    assert ForkServer.find(server.id) is server


CHECK_SCRIPT = """
import json, os, sys, threading
sys.path.insert(0, sys.argv[1])
from mage_nb_sched.execution import kernel_forkserver as fs
report = {"clean": fs.fork_safety_problem()}
for name in sys.argv[2:]:
    __import__(name)
    report[name] = [threading.active_count(), len(os.listdir("/proc/self/task")),
                    fs.fork_safety_problem()]
print(json.dumps(report))
"""


def check_in_subprocess(tmp_path: Path, *modules: str) -> dict[str, Any]:
    folder = module_dir(tmp_path, mns_native=NATIVE_THREAD_MODULE, mns_pool=THREAD_POOL_MODULE)
    result = subprocess.run(
        [sys.executable, "-c", CHECK_SCRIPT, str(folder), *modules],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        timeout=120,
    )
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and pthreads")
def test_fork_safety_check_counts_native_threads(tmp_path: Path) -> None:
    report = check_in_subprocess(tmp_path, "mns_native")
    assert report["clean"] is None
    python_threads, tasks, problem = report["mns_native"]
    # invisible to the threading module, visible in /proc/self/task
    assert python_threads == 1 and tasks > 1
    assert problem is not None and "native thread" in problem


def test_fork_safety_check_counts_python_threads(tmp_path: Path) -> None:
    report = check_in_subprocess(tmp_path, "mns_pool")
    python_threads, _tasks, problem = report["mns_pool"]
    assert python_threads == 2
    assert problem is not None and "1 Python thread" in problem


@pytest.mark.skipif(not (HAS_PANDAS and HAS_PYARROW), reason="pandas/pyarrow not installed")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and pthreads")
def test_pandas_and_pyarrow_threads_are_fork_safe(tmp_path: Path) -> None:
    # numpy's OpenBLAS starts a worker (stopped by its pthread_atfork handler) and pyarrow's
    # jemalloc its purging thread (fork-aware); the check sees both and lets them pass.
    report = check_in_subprocess(tmp_path, "pandas", "pyarrow.parquet")
    _python, tasks, problem = report["pandas"]
    assert tasks > 1
    assert problem is None
    assert report["pyarrow.parquet"][2] is None


# -- real kernels -----------------------------------------------------------------------------


@pytest.mark.kernel
def test_a_pool_forks_with_the_fork_server_provisioner_by_default() -> None:
    async def scenario() -> tuple[KernelHandle, str, Any]:
        async with KernelPool(size=0) as pool:
            handle = await pool.acquire()
            try:
                pid = await evaluate(handle, "import os; os.getpid()")
            finally:
                await handle.shutdown()
            return handle, pid, handle.km.kernel_spec

    handle, pid, spec = run(scenario())
    assert type(handle.km.provisioner) is ForkServerProvisioner
    assert handle.forked and int(pid) == handle.pid
    # The README's install (pip install -e .) registers the entry point, so a kernelspec names it.
    assert provisioner.provisioner_registered(), "run `pip install -e .` to register it"
    stanza = spec.metadata["kernel_provisioner"]
    assert stanza["provisioner_name"] == PROVISIONER_NAME


@pytest.mark.kernel
def test_without_the_entry_point_the_provisioner_is_attached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provisioner.provisioner_registered.cache_clear()
    monkeypatch.setattr(provisioner, "provisioner_registered", lambda: False)

    async def scenario() -> tuple[KernelHandle, str, Any]:
        async with KernelPool(size=0) as pool:
            handle = await pool.acquire()
            try:
                return handle, await evaluate(handle, "6 * 7"), handle.km.kernel_spec
            finally:
                await handle.shutdown()

    handle, answer, spec = run(scenario())
    assert type(handle.km.provisioner) is ForkServerProvisioner and handle.forked
    assert answer == "42"
    assert "kernel_provisioner" not in spec.metadata


def test_a_fresh_interpreter_finds_the_provisioner_through_its_entry_point() -> None:
    # jupyter_client's own factory, in a new isolated interpreter, from the installed metadata.
    code = (
        "from jupyter_client.provisioning import KernelProvisionerFactory as F;"
        "import sys; f = F.instance();"
        f"sys.stdout.write(str({PROVISIONER_NAME!r} in f.get_provisioner_entries()))"
    )
    found = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert found.stdout == "True", "run `pip install -e .` to register the provisioner"


@pytest.mark.kernel
def test_a_plain_kernel_manager_uses_the_provisioner_from_a_kernelspec(tmp_path: Path) -> None:
    # jupyter_client alone: a kernelspec naming the provisioner, the standard factory, the
    # standard shutdown_kernel().
    server = ForkServer().start()
    spec_dir = tmp_path / "kernels" / "mns-forked"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "forked",
                "language": "python",
                "metadata": {"kernel_provisioner": provisioner.kernelspec_stanza(server)},
            }
        )
    )

    async def scenario() -> tuple[Any, int, str]:
        try:
            assert await server.wait_ready()
            km = AsyncKernelManager(
                kernel_name="mns-forked",
                kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]),
            )
            await km.start_kernel()
            kc = km.client()
            kc.start_channels()
            try:
                await kc.wait_for_ready(timeout=60)
                reply = await kc.execute_interactive(
                    "import os; print(os.getppid())", timeout=30, output_hook=lambda _m: None
                )
                assert reply["content"]["status"] == "ok"
                pid = km.provisioner.pid
                forked = km.provisioner.forked
            finally:
                kc.stop_channels()
                await km.shutdown_kernel(now=True)
            return km.provisioner, pid, str(forked)
        finally:
            await server.aclose()

    used, pid, forked = run(scenario())
    assert type(used) is ForkServerProvisioner and forked == "True"
    assert not processes.running(pid)


@pytest.mark.kernel
def test_a_provisioner_without_its_fork_server_spawns_the_kernel() -> None:
    async def scenario() -> tuple[bool, int, str]:
        km = AsyncKernelManager(kernel_name="python3")
        km.provisioner = ForkServerProvisioner(
            kernel_id="k", kernel_spec=km.kernel_spec, parent=km, forkserver_id="gone"
        )
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            pid = km.provisioner.pid
            forked = km.provisioner.forked
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)
        code = await km.provisioner.wait()
        return forked, pid, describe_exit(code) or ""

    forked, pid, how = run(scenario())
    assert not forked and not processes.running(pid)
    assert how.startswith(("killed by", "exited with"))


@pytest.mark.kernel
def test_off_linux_kernels_come_from_the_local_provisioner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kernels, "fork_supported", lambda: False)

    async def scenario() -> tuple[KernelHandle, kernels.PoolStats]:
        async with KernelPool(size=0) as pool:
            handle = await pool.acquire()
            try:
                assert await evaluate(handle, "1 + 1") == "2"
            finally:
                await handle.shutdown()
            return handle, pool.stats()

    handle, stats = run(scenario())
    assert type(handle.km.provisioner) is LocalProvisioner and not handle.forked
    assert stats.forkserver_pid is None and stats.spawned == 1


@pytest.mark.kernel
def test_a_preload_that_starts_a_native_thread_falls_back_to_the_local_provisioner(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = module_dir(tmp_path, mns_native=NATIVE_THREAD_MODULE)
    caplog.set_level(logging.INFO, logger="mage_nb_sched.execution")

    async def scenario() -> tuple[KernelHandle, str, kernels.PoolStats]:
        async with KernelPool(
            size=0, preload=["mns_native"], env={"PYTHONPATH": str(folder)}
        ) as pool:
            handle = await pool.acquire()
            try:
                pid = await evaluate(handle, "import os; os.getpid()")
            finally:
                await handle.shutdown()
            return handle, pid, pool.stats()

    handle, pid, stats = run(scenario())
    assert type(handle.km.provisioner) is LocalProvisioner
    assert not handle.forked and int(pid) == handle.pid
    assert stats.forkserver_problem is not None and "native thread" in stats.forkserver_problem
    messages = [record.getMessage() for record in caplog.records]
    assert any("unusable" in text and "native thread" in text for text in messages), messages
    assert any("LocalProvisioner" in text and "native thread" in text for text in messages)


@pytest.mark.kernel
def test_an_optional_preload_that_starts_threads_is_left_out(tmp_path: Path) -> None:
    folder = module_dir(tmp_path, mns_native=NATIVE_THREAD_MODULE, mns_pool=THREAD_POOL_MODULE)

    async def scenario() -> tuple[KernelHandle, list[Any], dict[str, Any], bool]:
        async with KernelPool(
            size=0,
            env={"PYTHONPATH": str(folder)},
            optional_preload=["mns_pool", "email.mime.text", "mns_native", "mns_not_installed"],
        ) as pool:
            assert pool.forkserver is not None
            assert await pool.forkserver.wait_preloaded()
            handle = await pool.acquire()
            try:
                loaded = json.loads(
                    await evaluate(
                        handle,
                        "import sys, json; print(json.dumps([name in sys.modules for name in "
                        "('mns_pool', 'email.mime.text', 'mns_native')]))",
                    )
                )
            finally:
                await handle.shutdown()
            assert pool.forkserver.hello is not None
            return handle, loaded, pool.forkserver.hello, pool.forkserver.ready

    handle, loaded, hello, still_ready = run(scenario())
    assert handle.forked and still_ready
    assert loaded == [False, True, False]
    assert hello["preloaded"] == ["email.mime.text"]
    assert set(hello["skipped"]) == {"mns_pool", "mns_native"}
    assert "Python thread" in hello["skipped"]["mns_pool"]
    assert "native thread" in hello["skipped"]["mns_native"]


#: An optional preload whose import waits until the test lets it finish (a handshake file).
GATED_MODULE = """
import os, time
while not os.path.exists(os.environ["MNS_GATE"]):
    time.sleep(0.005)
"""


@pytest.mark.kernel
def test_optional_preloads_do_not_hold_up_the_first_kernel(tmp_path: Path) -> None:
    folder = module_dir(tmp_path, mns_gated=GATED_MODULE)
    gate = tmp_path / "gate"
    probe = "import sys, json; print(json.dumps([n in sys.modules for n in ('mns_gated', 'json')]))"

    async def scenario() -> tuple[list[Any], list[Any], list[str]]:
        async with KernelPool(
            size=0,
            env={"PYTHONPATH": str(folder), "MNS_GATE": str(gate)},
            optional_preload=["mns_gated", "json"],
        ) as pool:
            server = pool.forkserver
            assert server is not None
            # The probe importing mns_gated is blocked until the gate opens; kernels are forked
            # meanwhile, without it.
            early = await pool.acquire()
            try:
                before = json.loads(await evaluate(early, probe))
            finally:
                await early.shutdown()
            assert early.forked
            gate.touch()
            assert await server.wait_preloaded()
            late = await pool.acquire()
            try:
                after = json.loads(await evaluate(late, probe))
            finally:
                await late.shutdown()
            assert late.forked and server.hello is not None
            return before, after, server.hello["preloaded"]

    before, after, preloaded = run(scenario())
    assert before == [False, True]  # json: the kernel itself imports it
    assert after == [True, True]
    assert preloaded == ["mns_gated", "json"]


@pytest.mark.kernel
@pytest.mark.skipif(not (HAS_PANDAS and HAS_PYARROW), reason="pandas/pyarrow not installed")
def test_pandas_and_pyarrow_are_preloaded_by_default() -> None:
    async def scenario() -> tuple[KernelHandle, list[bool], dict[str, Any]]:
        async with KernelPool(size=0) as pool:
            assert pool.forkserver is not None
            assert await pool.forkserver.wait_preloaded()
            handle = await pool.acquire()
            try:
                loaded = json.loads(
                    await evaluate(
                        handle,
                        "import sys, json; print(json.dumps([name in sys.modules for name in "
                        "('pandas', 'pyarrow', 'pyarrow.parquet')]))",
                    )
                )
                # numpy's BLAS and arrow still work in the forked kernel
                assert (
                    await evaluate(
                        handle,
                        "import numpy, pandas, pyarrow\n"
                        "m = numpy.ones((300, 300)); frame = pandas.DataFrame(m @ m)\n"
                        "print(pyarrow.Table.from_pandas(frame).num_rows, frame.iloc[0, 0])",
                    )
                    == "300 300.0"
                )
            finally:
                await handle.shutdown()
            assert pool.forkserver is not None and pool.forkserver.hello is not None
            return handle, loaded, pool.forkserver.hello

    handle, loaded, hello = run(scenario())
    assert handle.forked and loaded == [True, True, True]
    assert {"pandas", "pyarrow", "pyarrow.parquet"} <= set(hello["preloaded"])


STDERR_SCRIPT = """
import asyncio
from mage_nb_sched.execution.kernels import KernelPool

async def main():
    for use_forkserver in (True, False):
        async with KernelPool(size=0, use_forkserver=use_forkserver) as pool:
            handle = await pool.acquire()
            reply = await handle.kc.execute_interactive(
                "import sys; print('err', file=sys.stderr)", timeout=30)
            assert reply["content"]["status"] == "ok"
            print(use_forkserver, handle.forked, flush=True)
            await handle.shutdown()

asyncio.run(main())
"""


@pytest.mark.kernel
def test_no_debugger_warnings_on_kernel_or_fork_server_stderr() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYDEVD")}
    result = subprocess.run(
        [sys.executable, "-c", STDERR_SCRIPT],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "False", "False"]
    # the kernels' and the fork server's stderr is this process's stderr
    assert "frozen modules" not in result.stderr
    assert "Debugger warning" not in result.stderr


@pytest.mark.kernel
@pytest.mark.parametrize("use_forkserver", [True, False], ids=["forked", "spawned"])
def test_a_dead_kernel_says_how_it_ended(use_forkserver: bool) -> None:
    async def scenario() -> list[str | None]:
        seen: list[str | None] = []
        async with KernelPool(size=0, use_forkserver=use_forkserver) as pool:
            for code in ("import os; os.kill(os.getpid(), 9)", "import os; os._exit(3)"):
                handle = await pool.acquire()
                assert handle.forked == use_forkserver
                seen.append(handle.exit_description())
                handle.kc.execute(code)
                await processes.until(lambda h=handle: not h.is_alive(), what="kernel death")
                seen.append(handle.exit_description())
                await handle.shutdown()
                seen.append(handle.exit_description())  # shutdown does not overwrite it
        return seen

    assert run(scenario()) == [
        None,
        "killed by SIGKILL",
        "killed by SIGKILL",
        None,
        "exited with code 3",
        "exited with code 3",
    ]


OWNER_SCRIPT = """
import asyncio, json, sys
from mage_nb_sched.execution.kernels import KernelPool

async def main():
    pool = KernelPool(size=1, use_forkserver=False)
    await pool.start()
    handed_out = await pool.acquire()
    await pool.wait_warm()
    print(json.dumps([handed_out.pid, *(handle.pid for handle in pool._warm)]), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


@pytest.mark.kernel
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_kill_9_of_the_owner_takes_local_provisioner_kernels_down() -> None:
    # jupyter_client's LocalProvisioner, given a preexec_fn through start_kernel's public
    # keyword arguments, starts kernels that die with their owner too.
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
        pids = set(json.loads(owner.stdout.readline()))
        assert len(pids) == 2 and all(processes.running(pid) for pid in pids)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        deadline_loop = asyncio.new_event_loop()
        try:
            deadline_loop.run_until_complete(
                processes.until(
                    lambda: not any(processes.running(pid) for pid in pids),
                    what="kernels to die with their owner",
                )
            )
        finally:
            deadline_loop.close()
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


def test_the_fork_server_script_stays_standalone() -> None:
    # It runs as a script before the package is importable: standard library only at top level.
    source = Path(kernel_forkserver.__file__).read_text()
    top_level = [
        line.split()[1]
        for line in source.splitlines()
        if line.startswith(("import ", "from ")) and not line.startswith("from __future__")
    ]
    assert all(name.split(".")[0] in sys.stdlib_module_names for name in top_level), top_level
