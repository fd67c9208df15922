"""Warm IPython kernels for pipeline runs: kernel handles and a warm kernel pool.

Why: a run must not wait for a kernel to start (~0.5 s wall, ~0.2 s CPU the normal way), and on two
cores plain spawning cannot keep up with several runs a second. So:

* Kernels are started through jupyter_client's public API only — an ``AsyncKernelManager`` and a
  kernel *provisioner* — never by overriding jupyter_client or ipykernel internals. On Linux a pool
  starts a :class:`~mage_nb_sched.execution.provisioner.ForkServer` (a fresh interpreter that has
  ipykernel, ``preload`` and — when installed and fork-safe — pandas/pyarrow imported) and, once its
  fork-safety self-check has passed, starts every kernel with the
  :class:`~mage_nb_sched.execution.provisioner.ForkServerProvisioner`, selected by the standard
  kernelspec ``metadata.kernel_provisioner`` stanza and looked up by jupyter_client's
  ``KernelProvisionerFactory`` through the ``jupyter_client.kernel_provisioners`` entry point
  (``mage-nb-sched-forkserver``). Elsewhere (macOS, Windows, ``use_forkserver=False``), or when
  the check fails (a preload that starts threads), or while the server is down, kernels are
  started by jupyter_client's own ``LocalProvisioner`` — with a log line saying why.
* Either way every kernel carries ``PR_SET_PDEATHSIG(SIGKILL)`` (Linux): if the process owning the
  pool dies, even by ``kill -9``, its kernels die with it. Each kernel leads its own process group,
  and a handle's shutdown kills that group, so processes a notebook started go too.
* :class:`KernelHandle` is one started kernel with a connected, ready ``AsyncKernelClient`` that
  has already run a first (silent) execution, so a run's first cell does not pay for warm-up.
* :class:`KernelPool` keeps ``size`` of them warm, hands each out once, and refills in the
  background with at most ``max_concurrent_starts`` kernel starts at a time.

Driving a handle with nbclient (what the runner does)::

    handle = await pool.acquire(cwd=notebook_dir, env={"MAGE_NB_SCHED_RUN_ID": "7"})
    try:
        client = nbclient.NotebookClient(nb, km=handle.km, timeout=60, interrupt_on_timeout=True)
        client.kc = handle.kc
        client.reset_execution_trackers()
        for index, cell in enumerate(nb.cells):
            await client.async_execute_cell(cell, index)
    finally:
        await handle.shutdown()

When a kernel died, ``handle.exit_description()`` says how ("killed by SIGKILL", "exited with
code 3").

Warm kernels are started in the pool's ``cwd`` with the pool's ``env``. ``acquire(cwd, env)`` (or
:func:`prepare`) then runs a silent snippet in the kernel that changes directory and updates
``os.environ`` before the handle is returned. Variables read only at interpreter start
(``PYTHONPATH``, ``PYTHONHASHSEED``...) cannot be changed that way: set them in the pool's ``env``.

A pool belongs to one event loop. Start it from a thread that lives as long as the pool (normally
the loop's thread): Linux delivers ``PDEATHSIG`` when the *thread* that started the fork server
ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import re
import subprocess
import time
import uuid
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import asdict, dataclass
from queue import Empty
from typing import Any

import zmq
import zmq.asyncio
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.channels import major_protocol_version
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning.local_provisioner import LocalProvisioner
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from jupyter_core.paths import jupyter_runtime_dir

from mage_nb_sched.core.errors import ValidationError
from mage_nb_sched.execution import provisioner as provisioning
from mage_nb_sched.execution.provisioner import (
    EXIT_POLL,
    PROVISIONER_NAME,
    QUIET_DEBUGGER_ENV,
    STARTUP_ENV_VARS,
    ForkedProcess,
    ForkServer,
    ForkServerError,
    ForkServerProvisioner,
    KernelError,
    describe_exit,
    die_with_parent,
    fork_supported,
    kernelspec_stanza,
    kill_group,
    note_fallback,
    pid_running,
)

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_KERNEL_ARGS",
    "DEFAULT_OPTIONAL_PRELOAD",
    "STARTUP_ENV_VARS",
    "ForkServer",
    "ForkServerError",
    "ForkServerProvisioner",
    "ForkedProcess",
    "KernelError",
    "KernelHandle",
    "KernelPool",
    "KernelPoolClosedError",
    "KernelStartError",
    "PoolStats",
    "execute_silently",
    "prepare",
    "start_kernel",
    "sweep_stale_files",
]

#: Extra ``IPKernelApp`` arguments for every kernel (forked or spawned). Scheduled runs need no
#: input history, and without it concurrent kernels do not contend for ``history.sqlite``.
DEFAULT_KERNEL_ARGS: tuple[str, ...] = ("--HistoryManager.enabled=False",)
#: What the first block of a run imports, preloaded by a pool's fork server when installed and
#: fork-safe, so the first block that returns (and saves, as Parquet) a DataFrame costs what a later
#: one does (measured: 1.26 s → 0.03 s; a later one takes ~0.015 s): pandas and its HTML repr,
#: pyarrow's Parquet writer and pandas bridge, and the module that saves block outputs (it imports
#: nbformat → jsonschema, ~0.75 s). pandas starts an OpenBLAS worker (numpy) and pyarrow jemalloc's
#: purging thread, both fork-safe (see ``kernel_forkserver.fork_safety_problem``); a module that is
#: not is left out, with the reason in the log. They are probed and imported while the server
#: already forks, so they never delay a pool's first kernel (kernels forked in those first
#: seconds have fewer modules preloaded).
DEFAULT_OPTIONAL_PRELOAD: tuple[str, ...] = (
    "pandas",
    "pandas.io.formats.html",
    "pyarrow",
    "pyarrow.parquet",
    "pyarrow.pandas_compat",
    "mage_nb_sched.execution.variables",
)
#: Seconds a kernel gets to exit after a polite shutdown request before its group is SIGKILLed.
DEFAULT_SHUTDOWN_GRACE = 0.5
#: How long after SIGKILL we wait for the process to disappear before logging an error.
KILL_WAIT = 5.0
#: A dead fork server is restarted at most this often (seconds); in between kernels are spawned.
FORKSERVER_RESTART_INTERVAL = 10.0
#: Longest unix socket path Linux accepts (``sun_path`` is 108 bytes including the NUL).
_MAX_IPC_PATH = 107


class KernelStartError(KernelError):
    """No kernel became ready (the message says why: died, timed out, spec missing...)."""


class KernelPoolClosedError(KernelError):
    """The kernel pool was closed; create a new :class:`KernelPool`."""


# --------------------------------------------------------------------------------------------
# jupyter_client plumbing (public API only)


class _CachingKernelSpecManager(KernelSpecManager):
    """Looks a kernelspec up once per pool instead of scanning the Jupyter paths per kernel."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        cache: dict[str, KernelSpec] = self.__dict__.setdefault("_mage_spec_cache", {})
        if kernel_name not in cache:
            cache[kernel_name] = super().get_kernel_spec(kernel_name)
        return cache[kernel_name]


class _ProvisionedSpecManager(KernelSpecManager):
    """Serves one kernel manager ``source``'s kernelspecs with a ``kernel_provisioner`` stanza
    added — the kernelspec field jupyter_client reads to pick a provisioner. A kernelspec that
    names a provisioner of its own keeps it."""

    def __init__(self, source: KernelSpecManager, stanza: dict[str, Any]) -> None:
        super().__init__()
        self.source = source
        self.stanza = stanza

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        spec: KernelSpec = self.source.get_kernel_spec(kernel_name)
        if _own_provisioner(spec):
            return spec
        data = spec.to_dict()
        data["metadata"] = {**(data.get("metadata") or {}), "kernel_provisioner": self.stanza}
        return KernelSpec(resource_dir=spec.resource_dir, **copy.deepcopy(data))


def _own_provisioner(spec: KernelSpec) -> str | None:
    """The provisioner a kernelspec asks for itself, if not the local (default) one."""
    stanza = (spec.metadata or {}).get("kernel_provisioner") or {}
    name = stanza.get("provisioner_name") if isinstance(stanza, dict) else None
    if name in (None, "local-provisioner", PROVISIONER_NAME):
        return None
    return str(name)


def _kernel_process(
    provisioner: KernelProvisionerBase | None,
) -> ForkedProcess | subprocess.Popen[bytes] | None:
    """The kernel's process object, for synchronous checks: forked or ``Popen``."""
    if isinstance(provisioner, ForkServerProvisioner):
        return provisioner.kernel_process
    if isinstance(provisioner, LocalProvisioner):
        process: subprocess.Popen[bytes] | None = provisioner.process
        return process
    return None


def _complete_now(awaitable: Awaitable[Any]) -> None:
    """Run a coroutine that never suspends to completion, without an event loop.

    ``km.cleanup_resources()`` is a coroutine only because a provisioner's ``cleanup`` may be; for
    local kernels it never awaits anything. Emergency paths (``kill_now``, a finalizer at
    interpreter exit) are synchronous and use this; RuntimeError if it would have to wait.
    """
    if not isinstance(awaitable, Coroutine):
        raise TypeError(f"not a coroutine: {awaitable!r}")
    coroutine = awaitable
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise RuntimeError(f"{coroutine!r} suspended")


def _cleanup_now(km: AsyncKernelManager) -> None:
    """``km.cleanup_resources()`` synchronously: connection file, ipc sockets, control socket,
    cached ports. Falls back to removing the files."""
    try:
        _complete_now(km.cleanup_resources())
    except Exception:
        log.debug("synchronous kernel cleanup failed", exc_info=True)
        with contextlib.suppress(Exception):
            km.cleanup_connection_file()
        with contextlib.suppress(Exception):
            km.cleanup_ipc_files()


def _adopt_protocol_version(kc: AsyncKernelClient, reply: dict[str, Any]) -> None:
    """What ``wait_for_ready`` does with a ``kernel_info`` reply: talk to a kernel of another
    major protocol version in its dialect (a no-op for ipykernel, which speaks ours)."""
    with contextlib.suppress(KeyError, ValueError, AttributeError, TypeError):
        major = int(str(reply["content"]["protocol_version"]).split(".")[0])
        if major != major_protocol_version:
            kc.session.adapt_version = major


# --------------------------------------------------------------------------------------------
# Handles


class KernelHandle:
    """A started kernel with a connected, ready client.

    ``km`` is an ``AsyncKernelManager``, ``kc`` its ``AsyncKernelClient`` with channels started
    and ``kernel_info`` answered, so the first ``execute`` runs immediately. ``pid`` is the kernel
    process (also its process group); ``forked`` whether the fork server produced it (else
    jupyter_client's ``LocalProvisioner`` spawned it).
    """

    def __init__(
        self,
        km: AsyncKernelManager,
        kc: AsyncKernelClient,
        *,
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
        startup_seconds: float | None = None,
    ) -> None:
        self.km = km
        self.kc = kc
        provisioner = km.provisioner
        self.pid: int = int(getattr(provisioner, "pid", 0) or 0)
        pgid = getattr(provisioner, "pgid", None)
        self.pgid: int = pgid if isinstance(pgid, int) and pgid > 1 else self.pid
        self.forked: bool = bool(getattr(provisioner, "forked", False))
        self.connection_file: str = str(km.connection_file)
        self.shutdown_grace = shutdown_grace
        self.startup_seconds = startup_seconds
        self.closed = False
        # Kept past the provisioner's wait() (which drops it): the exit status stays readable.
        self._process = _kernel_process(provisioner)
        self._shutdown_task: asyncio.Future[None] | None = None
        self._on_closed: list[Callable[[KernelHandle], None]] = []

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("alive" if self.is_alive() else "dead")
        return f"<KernelHandle pid={self.pid} forked={self.forked} {state}>"

    def is_alive(self) -> bool:
        """Whether the kernel process is still running (synchronous, no messages)."""
        if self.closed:
            return False
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The kernel process's exit status (negative: killed by that signal); None while it
        runs."""
        return self._process.poll() if self._process is not None else None

    def exit_description(self) -> str | None:
        """How the kernel process ended — ``"killed by SIGKILL"``, ``"exited with code 3"`` — or
        None while it runs. For messages such as "kernel died while the block was running
        (killed by SIGKILL)"."""
        if self._process is None:
            return "exit status unknown"
        text = describe_exit(self._process.poll())
        inferred = isinstance(self._process, ForkedProcess) and self._process.returncode_inferred
        if text is not None and inferred:
            text += " (presumably: its fork server died)"
        return text

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop the kernel; afterwards its process group is gone and its connection file removed.

        Asks the kernel to shut down (so atexit hooks run) and waits up to ``grace`` seconds
        (default ``shutdown_grace``; 0 skips the request), then SIGKILLs the process group
        regardless — that also takes out processes the kernel started. Idempotent; concurrent
        callers share one shutdown, which completes even if a caller is cancelled.
        """
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.ensure_future(
                self._shutdown(self.shutdown_grace if grace is None else grace)
            )
        await asyncio.shield(self._shutdown_task)

    async def _shutdown(self, grace: float) -> None:
        km = self.km
        try:
            if grace > 0 and self.is_alive():
                try:
                    await km.request_shutdown()
                except Exception:
                    log.debug("shutdown request to kernel %s failed", self.pid, exc_info=True)
                else:
                    await self._wait_gone(grace)
            # Always, even after a clean exit: processes the kernel started share its group.
            self._kill_now_signals()
            if not await self._wait_gone(KILL_WAIT):
                log.error("kernel %s survived SIGKILL for %gs", self.pid, KILL_WAIT)
            provisioner = km.provisioner
            if provisioner is not None and provisioner.has_process and not self.is_alive():
                await provisioner.wait()  # releases the process (reaps a spawned one)
            # Not km.shutdown_kernel(): the kernel is already dead, and its wrapper adds a
            # fixed 10 ms sleep. cleanup_resources removes the connection file and ipc sockets,
            # closes the control socket and returns cached ports.
            await km.cleanup_resources()
        except Exception:
            log.warning("cleanup after kernel %s failed", self.pid, exc_info=True)
            self._release()
        except BaseException:
            # Cancelled (e.g. a stopping event loop) before or while killing: kill now,
            # synchronously, so the handle is never marked closed with its kernel alive.
            self._kill_now_signals()
            self._release()
            raise
        finally:
            self._finish()

    async def _wait_gone(self, timeout: float) -> bool:
        process = self._process
        if isinstance(process, ForkedProcess) and process.pidfd is not None:
            return await process.async_wait(timeout) is not None
        deadline = time.monotonic() + timeout
        while self.is_alive():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(EXIT_POLL)
        return True

    def _kill_now_signals(self) -> None:
        """SIGKILL the kernel's process group, then the kernel itself (a pidfd for a forked one,
        in case it left its group)."""
        kill_group(self.pgid)
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(OSError):
                process.kill()

    def kill_now(self) -> None:
        """SIGKILL the kernel's process group now and clean up, synchronously (emergencies,
        interpreter exit). Waits up to a couple of seconds for the process to go."""
        if self.closed:
            return
        self._kill_now_signals()
        deadline = time.monotonic() + 2.0
        while self.is_alive() and time.monotonic() < deadline:
            time.sleep(0.002)
        self._release()
        self._finish()

    def _release(self) -> None:
        _cleanup_now(self.km)
        if isinstance(self._process, ForkedProcess):
            self._process.close()

    def _finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.kc.stop_channels()
        callbacks, self._on_closed = self._on_closed, []
        for callback in callbacks:
            with contextlib.suppress(Exception):
                callback(self)


async def start_kernel(
    kernel_name: str = "python3",
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    forkserver: ForkServer | None = None,
    context: zmq.asyncio.Context | None = None,
    kernel_spec_manager: KernelSpecManager | None = None,
    extra_arguments: Sequence[str] = DEFAULT_KERNEL_ARGS,
    startup_timeout: float = 60.0,
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
    transport: str = "ipc",
) -> KernelHandle:
    """Start one kernel and wait until it is ready (and has run a first, silent execution).

    With a ``forkserver`` that is (or becomes, within ``startup_timeout``) ready, the kernel is
    started by :class:`ForkServerProvisioner`; otherwise by jupyter_client's ``LocalProvisioner``.
    ``env`` is added to ``os.environ``. ``transport`` "ipc" (default) connects over unix sockets
    in the Jupyter runtime dir: no TCP ports to race for between workers, reachable only through
    file permissions, and no "running over TCP without encryption" warning per kernel; it falls
    back to "tcp" when the socket path would be too long. Raises :class:`KernelStartError`;
    nothing is left running when it does (or when the call is cancelled).
    """
    started = time.monotonic()
    options: dict[str, Any] = {"kernel_name": kernel_name, "transport": transport}
    if context is not None:
        options["context"] = context
    # File names carry the owner (see sweep_stale_files), so a later pool can remove what a
    # killed one left behind.
    kernel_id = str(uuid.uuid4())
    runtime_dir = jupyter_runtime_dir()
    os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
    owned = f"mns-{_owner_tag()}-{kernel_id[:8]}"
    options["kernel_id"] = kernel_id
    options["connection_file"] = os.path.join(runtime_dir, f"kernel-{owned}.json")
    if transport == "ipc":
        # jupyter_client's default ipc endpoint is the *relative* path "kernel-ipc" when no
        # connection file is set yet, shared by every kernel; give each its own absolute one.
        endpoint = os.path.join(runtime_dir, owned)
        if len(endpoint.encode()) + 2 <= _MAX_IPC_PATH:
            options["ip"] = endpoint
        else:
            options["transport"] = "tcp"  # a unix socket path this long cannot be bound
    server = await _ready_forkserver(forkserver, startup_timeout)
    specs = kernel_spec_manager or _CachingKernelSpecManager()
    attach = server is not None and not provisioning.provisioner_registered()
    if server is not None and not attach:
        # The public route: the kernelspec names the provisioner, jupyter_client's
        # KernelProvisionerFactory finds it through its entry point and instantiates it.
        specs = _ProvisionedSpecManager(specs, kernelspec_stanza(server))
    km = AsyncKernelManager(kernel_spec_manager=specs, **options)
    launch: dict[str, Any] = {
        "cwd": cwd or os.getcwd(),
        # Unless the caller says otherwise: no pydevd "frozen modules" warning in every log.
        "env": {**QUIET_DEBUGGER_ENV, **os.environ, **(env or {})},
        "extra_arguments": list(extra_arguments),
    }
    preexec = die_with_parent(os.getpid())
    if preexec is not None:
        # Passed through to Popen by LocalProvisioner: a spawned kernel dies with its owner too
        # (a forked one inherits that from the fork server).
        launch["preexec_fn"] = preexec
    kc: AsyncKernelClient | None = None
    handle: KernelHandle | None = None
    try:
        spec = km.kernel_spec
        if attach and server is not None and spec is not None and not _own_provisioner(spec):
            # No entry point installed (a source checkout): hand jupyter_client the provisioner
            # directly; a kernel manager keeps a provisioner that is already set.
            km.provisioner = ForkServerProvisioner(
                kernel_id=kernel_id, kernel_spec=spec, parent=km, forkserver_id=server.id
            )
        try:
            await asyncio.wait_for(
                km.start_kernel(**launch), max(0.0, startup_timeout - (time.monotonic() - started))
            )
        except asyncio.TimeoutError as error:
            raise KernelStartError(f"kernel did not start within {startup_timeout:g}s") from error
        kc = km.client()
        # No heartbeat thread: a manager-owned client asks the manager (the pid) whether the
        # kernel lives, and one thread per kernel would only cost CPU.
        kc.start_channels(hb=False)
        handle = KernelHandle(km, kc, shutdown_grace=shutdown_grace)
        remaining = startup_timeout - (time.monotonic() - started)
        await _wait_until_ready(km, kc, remaining)
        # A kernel's first execution is several times slower than later ones (first compile,
        # lazy imports inside IPython); pay for it while warming, not in a run's first cell.
        await execute_silently(kc, "pass", max(1.0, startup_timeout - (time.monotonic() - started)))
    except BaseException as error:
        if handle is not None:
            handle.kill_now()
        else:
            _abandon(km, kc)
        if isinstance(error, KernelError):
            raise
        if isinstance(error, Exception):
            raise KernelStartError(f"kernel {kernel_name!r} failed to start: {error}") from error
        raise
    handle.startup_seconds = time.monotonic() - started
    return handle


async def _ready_forkserver(server: ForkServer | None, timeout: float) -> ForkServer | None:
    """``server`` if it can fork kernels (waiting for its imports first), else None — then the
    kernel is started by the standard LocalProvisioner, and the log says why (once per server)."""
    if server is None:
        return None
    if server.alive and not server.ready:
        await server.wait_ready(timeout)
    if server.ready:
        return server
    note_fallback(server, server.death_reason or f"not ready within {timeout:g}s")
    return None


def _abandon(km: AsyncKernelManager, kc: AsyncKernelClient | None) -> None:
    """Synchronous cleanup of a kernel that failed before it had a handle."""
    provisioner = km.provisioner
    process = _kernel_process(provisioner)
    if process is not None:
        kill_group(process.pid)
        with contextlib.suppress(OSError):
            process.kill()
        deadline = time.monotonic() + 2.0
        # poll() reaps a spawned kernel, so it does not linger as a zombie.
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
    if kc is not None:
        with contextlib.suppress(Exception):
            kc.stop_channels()
    _cleanup_now(km)
    if isinstance(process, ForkedProcess):
        process.close()


async def _wait_until_ready(km: AsyncKernelManager, kc: AsyncKernelClient, timeout: float) -> None:
    """``kc.wait_for_ready`` without its fixed 0.2 s tail.

    A ``kernel_info`` reply proves the shell channel works. IOPub is a PUB/SUB pair, which drops
    messages until the subscription has reached the kernel; any IOPub message received proves it
    has, and the busy/idle status around our ``kernel_info`` request is such a message. Stale
    IOPub messages left behind are harmless: nbclient and :func:`execute_silently` filter by
    parent message id.
    """
    deadline = time.monotonic() + max(timeout, 0.0)
    sent: set[str] = set()
    while True:
        if not await km.is_alive():
            provisioner = km.provisioner
            code = await provisioner.poll() if provisioner is not None else None
            raise KernelStartError(
                f"kernel died during start-up ({describe_exit(code) or 'exit status unknown'})"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise KernelStartError(f"kernel did not answer kernel_info within {timeout:g}s")
        sent.add(kc.kernel_info())
        reply = await _receive(kc.shell_channel, sent, min(remaining, 1.0))
        if reply is None or reply.get("msg_type") != "kernel_info_reply":
            continue
        try:
            await kc.iopub_channel.get_msg(timeout=0.25)
        except Empty:
            continue  # IOPub not subscribed yet: ask again, the next status will get through
        _adopt_protocol_version(kc, reply)
        return


_OWNED_FILE = re.compile(r"^(?:kernel-)?mns-([0-9a-f]+)-(\d+)-[0-9a-f]+(?:-\d+|\.json)$")


def _owner_tag() -> str:
    """``<pid namespace>-<pid>`` of this process: a pid means nothing in another namespace."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{namespace:x}-{os.getpid()}"


def sweep_stale_files(runtime_dir: str | None = None) -> int:
    """Delete connection files and ipc sockets of pool kernels whose owning process is gone.

    ``kill -9`` of a process that owns a pool takes its kernels down (see :class:`ForkServer`)
    but leaves their files in the Jupyter runtime dir. Only files named by this module, from this
    pid namespace, whose owner pid no longer runs are removed; returns how many.
    """
    directory = runtime_dir or jupyter_runtime_dir()
    namespace = _owner_tag().split("-", 1)[0]
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    owners: dict[int, bool] = {}
    for name in names:
        match = _OWNED_FILE.match(name)
        if match is None or match.group(1) != namespace:
            continue
        owner = int(match.group(2))
        if owner not in owners:
            owners[owner] = owner == os.getpid() or pid_running(owner)
        if not owners[owner]:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
                removed += 1
    return removed


async def _receive(channel: Any, parents: set[str], timeout: float) -> dict[str, Any] | None:
    """The next message on ``channel`` answering one of ``parents``; None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            message: dict[str, Any] = await channel.get_msg(timeout=remaining)
        except Empty:
            return None
        if message.get("parent_header", {}).get("msg_id") in parents:
            return message
    return None


async def execute_silently(
    kc: AsyncKernelClient, code: str, timeout: float = 30.0
) -> dict[str, Any]:
    """Run ``code`` in the kernel without output, history or an execution count; return the reply
    content. Raises :class:`KernelError` if the code raised or no reply came within ``timeout``."""
    msg_id = kc.execute(
        code, silent=True, store_history=False, allow_stdin=False, stop_on_error=False
    )
    reply = await _receive(kc.shell_channel, {msg_id}, timeout)
    if reply is None:
        raise KernelError(f"no reply from the kernel within {timeout:g}s")
    content: dict[str, Any] = reply.get("content", {})
    if content.get("status") != "ok":
        raise KernelError(
            f"kernel setup code failed: {content.get('ename')}: {content.get('evalue')}"
        )
    return content


def _prepare_code(cwd: str | os.PathLike[str] | None, env: Mapping[str, str] | None) -> str:
    lines = ["import os as __mage_os, importlib as __mage_importlib"]
    if cwd is not None:
        path = os.fspath(cwd)
        lines.append(f"__mage_os.chdir({path!r})")
        lines.append(f"__mage_os.environ['PWD'] = {path!r}")
    if env:
        lines.append(f"__mage_os.environ.update({ {str(k): str(v) for k, v in env.items()}!r})")
    # Imports relative to the new working directory must not hit the old directory's caches.
    lines.append("__mage_importlib.invalidate_caches()")
    lines.append("del __mage_os, __mage_importlib")
    return "\n".join(lines)


async def prepare(
    handle: KernelHandle,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> None:
    """Make a warm kernel look as if started in ``cwd`` with ``env`` added to its environment.

    Changes the kernel's working directory (and ``$PWD``) and updates ``os.environ`` (inherited by
    processes the notebook starts) with a silent execution: no output, no history, execution
    count unchanged. Interpreter start-up variables such as ``PYTHONPATH`` have no effect here.
    """
    if cwd is None and not env:
        return
    await execute_silently(handle.kc, _prepare_code(cwd, env), timeout)


# --------------------------------------------------------------------------------------------
# The pool


@dataclass(frozen=True)
class PoolStats:
    """Counters of a :class:`KernelPool` (``stats()``)."""

    size: int
    warm: int
    starting: int
    waiting: int
    handed_out: int
    outstanding: int
    started: int
    start_failures: int
    forked: int
    spawned: int
    forkserver_pid: int | None
    forkserver_ready: bool
    #: Why kernels are not forked (fork server unusable or down), if they are not.
    forkserver_problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)


class _Registry:
    """Everything a pool must kill at interpreter exit; held by the finalizer, not the pool."""

    def __init__(self) -> None:
        self.handles: set[KernelHandle] = set()
        self.forkservers: list[ForkServer] = []

    def kill_all(self) -> None:
        for handle in list(self.handles):
            with contextlib.suppress(Exception):
                handle.kill_now()
        for server in self.forkservers:
            with contextlib.suppress(Exception):
                server.stop(timeout=2.0)


class KernelPool:
    """Warm kernels, each handed out once; refilled in the background.

    ``size`` kernels are kept started and ready (0: none — each ``acquire`` starts one). Warm
    kernels run in ``cwd`` (default: the current directory) with ``env`` added to ``os.environ``;
    ``acquire(cwd=..., env=...)`` moves a kernel to the run's directory/environment first (see
    :func:`prepare`). With ``use_forkserver`` (on Linux) kernels are forked from a
    :class:`ForkServer` that has ``preload`` imported (e.g. ``["mage_nb_sched.execution.blocks"]``)
    plus each ``optional_preload`` module that is installed and keeps forking safe (default
    :data:`DEFAULT_OPTIONAL_PRELOAD`: pandas, pyarrow, the output saver) — a kernel then starts
    with those modules already imported. A ``preload`` that starts threads makes the server
    unusable: kernels are then started by jupyter_client's ``LocalProvisioner`` (see
    ``stats().forkserver_problem``). At most ``max_concurrent_starts`` kernels start at once, so
    refills leave CPU for running notebooks.

    Use from one event loop. ``close()`` kills every kernel the pool started that is still
    running — warm or handed out — and the fork server.
    """

    def __init__(
        self,
        size: int = 2,
        kernel_name: str = "python3",
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        use_forkserver: bool = True,
        preload: Sequence[str] = (),
        *,
        optional_preload: Sequence[str] = DEFAULT_OPTIONAL_PRELOAD,
        max_concurrent_starts: int = 2,
        startup_timeout: float = 60.0,
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
        kernel_args: Sequence[str] = DEFAULT_KERNEL_ARGS,
        transport: str = "ipc",
    ) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValidationError(
                "size",
                size,
                "must be a whole number ≥ 0",
                "Use e.g. 2 (0: no warm kernels, each run starts one).",
            )
        if not isinstance(max_concurrent_starts, int) or max_concurrent_starts < 1:
            raise ValidationError(
                "max_concurrent_starts", max_concurrent_starts, "must be ≥ 1", "Use 1 or 2."
            )
        for field, names in (("preload", preload), ("optional_preload", optional_preload)):
            if isinstance(names, str):
                raise ValidationError(
                    field, names, "must be a list of module names", "Use e.g. ['pandas']."
                )
        if transport not in {"tcp", "ipc"}:
            raise ValidationError("transport", transport, "must be 'ipc' or 'tcp'", "Use 'ipc'.")
        self.size = size
        self.kernel_name = kernel_name
        self.cwd = os.fspath(cwd) if cwd is not None else None
        self.env = {str(key): str(value) for key, value in (env or {}).items()}
        self.use_forkserver = use_forkserver
        self.preload = tuple(preload)
        self.optional_preload = tuple(optional_preload)
        self.max_concurrent_starts = max_concurrent_starts
        self.startup_timeout = startup_timeout
        self.shutdown_grace = shutdown_grace
        self.kernel_args = tuple(kernel_args)
        self.transport = transport
        self.forkserver: ForkServer | None = None
        self._forkserver_started_at = 0.0
        self._context: zmq.asyncio.Context | None = None
        self._spec_manager: KernelSpecManager | None = None
        self._warm: deque[KernelHandle] = deque()
        self._waiters: deque[asyncio.Future[KernelHandle]] = deque()
        self._starting: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Future[Any]] = set()
        self._registry = _Registry()
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._started = False
        self._closed = False
        self._retry_handle: asyncio.TimerHandle | None = None
        self._retry_at = 0.0
        self._consecutive_failures = 0
        self._counts = dict.fromkeys(
            ("handed_out", "started", "start_failures", "forked", "spawned"), 0
        )

    async def __aenter__(self) -> KernelPool:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    async def start(self) -> None:
        """Start the fork server and begin filling the pool in the background. Idempotent."""
        if self._closed:
            raise KernelPoolClosedError("this kernel pool is closed; create a new KernelPool")
        if self._started:
            return
        self._started = True
        context = zmq.asyncio.Context()
        # Clients connect before a new kernel has bound its sockets; zmq's default 100 ms retry
        # interval would then add up to 100 ms to every start.
        context.setsockopt(zmq.RECONNECT_IVL, 10)
        context.setsockopt(zmq.LINGER, 0)
        self._context = context
        self._spec_manager = _CachingKernelSpecManager()
        self._finalizer = weakref.finalize(self, self._registry.kill_all)
        removed = sweep_stale_files()
        if removed:
            log.info("removed %d files left behind by dead kernel pools", removed)
        if self.use_forkserver:
            self._spawn_forkserver()
        self._kick()

    async def wait_warm(self, count: int | None = None, timeout: float = 60.0) -> None:
        """Wait until ``count`` (default ``size``) kernels are warm: for benchmarks and tests."""
        await self.start()
        target = self.size if count is None else count
        deadline = time.monotonic() + timeout
        while len(self._warm) < target:
            if time.monotonic() >= deadline:
                raise KernelStartError(
                    f"only {len(self._warm)} of {target} kernels warm after {timeout:g}s"
                )
            await asyncio.sleep(0.01)

    async def acquire(
        self,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> KernelHandle:
        """A fresh, ready kernel that nobody else gets; the caller must ``shutdown()`` it.

        Returns a warm kernel at once if there is one, else waits for the next start (a start is
        triggered for every waiting caller). With ``cwd``/``env`` the kernel is :func:`prepare`\\ d
        first. Raises :class:`KernelStartError` if no kernel could be started (within
        ``timeout``, default ``startup_timeout``), :class:`KernelPoolClosedError` after close.
        """
        await self.start()
        if self._closed:
            raise KernelPoolClosedError("this kernel pool is closed; create a new KernelPool")
        handle = self._pop_warm()
        if handle is None:
            limit = self.startup_timeout if timeout is None else timeout
            handle = await self._wait_for_kernel(limit)
        self._kick()
        self._counts["handed_out"] += 1
        if cwd is not None or env:
            try:
                await prepare(handle, cwd, env)
            except BaseException:
                await asyncio.shield(handle.shutdown(grace=0))
                raise
        return handle

    async def close(self) -> None:
        """Kill all kernels this pool started (warm or handed out) and stop the fork server."""
        if self._closed:
            return
        self._closed = True
        if self._retry_handle is not None:
            self._retry_handle.cancel()
        error = KernelPoolClosedError("the kernel pool was closed while waiting for a kernel")
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
        starting = list(self._starting)
        for task in starting:
            task.cancel()
        await asyncio.gather(*starting, return_exceptions=True)
        handles = list(self._registry.handles)
        self._warm.clear()
        await asyncio.gather(
            *(handle.shutdown(grace=0) for handle in handles), return_exceptions=True
        )
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.forkserver is not None:
            await self.forkserver.aclose()
        if self._context is not None:
            self._context.destroy(linger=0)
        if self._finalizer is not None:
            self._finalizer.detach()

    def stats(self) -> PoolStats:
        """Current counters (``warm``, ``handed_out``, ``started``, ``start_failures``, ...)."""
        server = self.forkserver
        return PoolStats(
            size=self.size,
            warm=len(self._warm),
            starting=len(self._starting),
            waiting=sum(1 for waiter in self._waiters if not waiter.done()),
            handed_out=self._counts["handed_out"],
            outstanding=len(self._registry.handles) - len(self._warm),
            started=self._counts["started"],
            start_failures=self._counts["start_failures"],
            forked=self._counts["forked"],
            spawned=self._counts["spawned"],
            forkserver_pid=server.pid if server is not None else None,
            forkserver_ready=bool(server is not None and server.ready),
            forkserver_problem=server.death_reason if server is not None else None,
        )

    # -- internals ------------------------------------------------------------------------

    def _spawn_forkserver(self) -> None:
        if not fork_supported():
            log.info("kernels are forked on Linux only; using jupyter_client's LocalProvisioner")
            return
        server_env = {**os.environ, **self.env}
        try:
            self.forkserver = ForkServer(
                self.preload, env=server_env, cwd=self.cwd, optional_preload=self.optional_preload
            ).start()
        except OSError as error:
            log.warning(
                "could not start the kernel fork server (%s); starting kernels with "
                "jupyter_client's LocalProvisioner",
                error,
            )
            self.forkserver = None
            return
        self._forkserver_started_at = time.monotonic()
        self._registry.forkservers.append(self.forkserver)

    def _current_forkserver(self) -> ForkServer | None:
        server = self.forkserver
        if (
            server is not None
            and not server.alive
            # one that never got ready (ipykernel missing, preload started threads) would fail
            # the same way again: keep spawning instead
            and server.hello is not None
            and not self._closed
            and time.monotonic() - self._forkserver_started_at >= FORKSERVER_RESTART_INTERVAL
        ):
            log.warning("restarting the kernel fork server (%s)", server.death_reason)
            old = server
            self._spawn_forkserver()
            self._spawn_background(old.aclose())
        return self.forkserver

    def _pop_warm(self) -> KernelHandle | None:
        while self._warm:
            handle = self._warm.popleft()
            if handle.is_alive():
                return handle
            log.warning("warm kernel %s died while idle; discarding it", handle.pid)
            self._spawn_background(handle.shutdown(grace=0))
        return None

    async def _wait_for_kernel(self, timeout: float) -> KernelHandle:
        waiter: asyncio.Future[KernelHandle] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._kick()
        try:
            done, _ = await asyncio.wait({waiter}, timeout=timeout)
        except BaseException:
            self._withdraw(waiter)
            raise
        if not done:
            self._withdraw(waiter)
            raise KernelStartError(f"no kernel became ready within {timeout:g}s")
        return waiter.result()

    def _withdraw(self, waiter: asyncio.Future[KernelHandle]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            # Handed to us just as we gave up: keep it for the next caller, do not leak it.
            self._warm.appendleft(waiter.result())
        else:
            waiter.cancel()

    def _kick(self) -> None:
        """Start kernels until warm + starting covers ``size`` plus every waiting caller."""
        if self._closed or not self._started:
            return
        loop = asyncio.get_running_loop()
        waiting = sum(1 for waiter in self._waiters if not waiter.done())
        if not waiting and self._consecutive_failures and loop.time() < self._retry_at:
            # Starts keep failing and nobody is waiting: retry with backoff, not in a hot loop.
            if self._retry_handle is None:
                self._retry_handle = loop.call_at(self._retry_at, self._retry)
            return
        wanted = self.size + waiting - len(self._warm) - len(self._starting)
        while wanted > 0 and len(self._starting) < self.max_concurrent_starts:
            task = loop.create_task(self._start_one())
            self._starting.add(task)
            task.add_done_callback(self._start_done)
            wanted -= 1

    def _retry(self) -> None:
        self._retry_handle = None
        self._kick()

    def _start_done(self, task: asyncio.Task[None]) -> None:
        self._starting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("kernel pool refill crashed", exc_info=task.exception())
        self._kick()

    async def _start_one(self) -> None:
        try:
            handle = await start_kernel(
                self.kernel_name,
                cwd=self.cwd,
                env=self.env,
                forkserver=self._current_forkserver(),
                context=self._context,
                kernel_spec_manager=self._spec_manager,
                extra_arguments=self.kernel_args,
                startup_timeout=self.startup_timeout,
                shutdown_grace=self.shutdown_grace,
                transport=self.transport,
            )
        except KernelError as error:
            self._counts["start_failures"] += 1
            self._consecutive_failures += 1
            backoff = min(0.5 * 2 ** min(self._consecutive_failures - 1, 6), 30.0)
            self._retry_at = asyncio.get_running_loop().time() + backoff
            log.warning("kernel start failed: %s", error)
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_exception(error)
                    break
            return
        self._consecutive_failures = 0
        self._counts["started"] += 1
        self._counts["forked" if handle.forked else "spawned"] += 1
        self._registry.handles.add(handle)
        handle._on_closed.append(self._registry.handles.discard)
        if self._closed:
            await handle.shutdown(grace=0)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(handle)
                return
        self._warm.append(handle)

    def _spawn_background(self, awaitable: Awaitable[Any]) -> None:
        future = asyncio.ensure_future(awaitable)
        self._background.add(future)
        future.add_done_callback(self._background.discard)
