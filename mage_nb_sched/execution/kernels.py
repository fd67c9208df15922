"""Warm IPython kernels for pipeline runs: a fork server, a jupyter_client hook and a kernel pool.

Why: a run must not wait for a kernel to start (~1 s wall, ~0.6 s CPU the normal way), and on two
cores plain spawning cannot keep up with several runs a second. So:

* :class:`ForkServer` starts ``kernel_forkserver.py`` in a *fresh* interpreter that imports
  IPython/ipykernel once (plus ``preload`` modules) without creating zmq contexts or threads, and
  then ``fork()``\\ s kernels on request (~0.1 s CPU each). Every kernel and the server itself carry
  ``PR_SET_PDEATHSIG(SIGKILL)``: if the process owning the pool dies, even by ``kill -9``, the
  server dies and its kernels with it.
* :class:`ForkServerProvisioner` is a :class:`~jupyter_client.provisioning.LocalProvisioner` whose
  ``launch_kernel`` asks the fork server instead of ``Popen`` and whose ``poll``/``wait``/
  ``send_signal``/``kill``/``terminate`` act on the forked pid (via a pidfd, so a signal can never
  hit a recycled pid). :class:`PooledKernelManager` is an ``AsyncKernelManager`` that attaches that
  provisioner in ``pre_start_kernel`` — jupyter_client would otherwise look provisioners up by entry
  point name. nbclient and the rest of jupyter_client see an ordinary kernel manager:
  ``interrupt_kernel`` sends SIGINT to the kernel's process group, ``is_alive`` polls the pid,
  ``shutdown_kernel(now=True)`` kills it. Kernels the fork server cannot produce (another
  interpreter or kernel, different ``PYTHONPATH``..., server dead or absent) are spawned the normal
  way by the same provisioner, with a log line.
* :class:`KernelHandle` is one started kernel with a connected, ready ``AsyncKernelClient``.
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
import concurrent.futures
import contextlib
import itertools
import json
import logging
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from queue import Empty
from typing import Any

import zmq
import zmq.asyncio
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.connect import KernelConnectionInfo, LocalPortCache
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning.local_provisioner import LocalProvisioner
from jupyter_core.paths import jupyter_runtime_dir

from mage_nb_sched.core.errors import MageNbSchedError, ValidationError
from mage_nb_sched.execution import kernel_forkserver as protocol

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_KERNEL_ARGS",
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
    "PooledKernelManager",
    "execute_silently",
    "prepare",
    "start_kernel",
    "sweep_stale_files",
]

#: Extra ``IPKernelApp`` arguments for every kernel (forked or spawned). Scheduled runs need no
#: input history, and without it concurrent kernels do not contend for ``history.sqlite``.
DEFAULT_KERNEL_ARGS: tuple[str, ...] = ("--HistoryManager.enabled=False",)
#: Seconds a kernel gets to exit after a polite shutdown request before its group is SIGKILLed.
DEFAULT_SHUTDOWN_GRACE = 0.5
#: How long after SIGKILL we wait for the process to disappear before logging an error.
KILL_WAIT = 5.0
#: A dead fork server is restarted at most this often (seconds); in between kernels are spawned.
FORKSERVER_RESTART_INTERVAL = 10.0
#: Poll interval while waiting for a kernel process to exit (cheap: no syscall for forked ones).
_EXIT_POLL = 0.005
#: Environment variables an interpreter (or a preloaded module) reads once at start-up. A forked
#: kernel inherits the server's values, so a kernel that needs different ones is spawned instead.
STARTUP_ENV_VARS = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSAFEPATH",
    "PYTHONNOUSERSITE",
    "PYTHONUSERBASE",
    "PYTHONPLATLIBDIR",
    "PYTHONHASHSEED",
    "PYTHONOPTIMIZE",
    "PYTHONWARNINGS",
    "PYTHONDEVMODE",
    "PYTHONUTF8",
    "PYTHONIOENCODING",
    "PYTHONMALLOC",
    "PYTHONFAULTHANDLER",
    "PYTHONTRACEMALLOC",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "MPLBACKEND",
)
_FORKSERVER_SCRIPT = str(Path(protocol.__file__).resolve())
#: Longest unix socket path Linux accepts (``sun_path`` is 108 bytes including the NUL).
_MAX_IPC_PATH = 107


class KernelError(MageNbSchedError):
    """A kernel could not be started, prepared or reached."""

    http_status = 503


class KernelStartError(KernelError):
    """No kernel became ready (the message says why: died, timed out, spec missing...)."""


class KernelPoolClosedError(KernelError):
    """The kernel pool was closed; create a new :class:`KernelPool`."""


class ForkServerError(KernelError):
    """The fork server is unavailable or refused a request; kernels are then spawned normally."""


# --------------------------------------------------------------------------------------------
# The fork server's client side


class ForkedProcess:
    """A kernel forked by a :class:`ForkServer`, with the subset of :class:`subprocess.Popen` that
    jupyter_client uses.

    The process is the *server's* child, so only the server can reap it: it reports every exit
    status over its socket. Signals go through a pidfd when the platform has one, so they can
    never reach an unrelated process that recycled the pid.
    """

    stdin = None
    stdout = None
    stderr = None

    def __init__(self, pid: int, pidfd: int | None, server: ForkServer) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.returncode: int | None = None
        self._server = server
        self._exited = threading.Event()
        self._exit_futures: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Future[None]
        ] = weakref.WeakKeyDictionary()

    def _set_returncode(self, returncode: int) -> None:
        self.returncode = returncode
        self._exited.set()

    def poll(self) -> int | None:
        """The exit status once the process has ended (negative: killed by a signal), else None."""
        if self.returncode is not None:
            return self.returncode
        if self._server.alive:
            # The server reaps and reports each child within milliseconds of its exit; until then
            # the process counts as running, like an unreaped Popen child.
            return None
        if not self._running():
            # Nobody can tell us the real status any more. The server's death delivered SIGKILL to
            # its kernels (PDEATHSIG), which is the likeliest cause.
            self._set_returncode(-signal.SIGKILL)
        return self.returncode

    def _running(self) -> bool:
        if self.pidfd is not None:
            with contextlib.suppress(OSError, ValueError):
                poller = select.poll()
                poller.register(self.pidfd, select.POLLIN)
                return not poller.poll(0)
        return _pid_running(self.pid)

    def wait(self, timeout: float | None = None) -> int:
        """Block until the process has ended; ``subprocess.TimeoutExpired`` after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise subprocess.TimeoutExpired([str(self.pid)], timeout or 0.0)
            self._exited.wait(0.05 if remaining is None else min(0.05, remaining))
        return code

    async def async_wait(self, timeout: float | None = None) -> int | None:
        """Wait without blocking the loop; None if still running after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.poll() is None and self.pidfd is not None:
            # A pidfd becomes readable the moment the process exits: no polling latency.
            exited = self._exit_future()
            try:
                await asyncio.wait_for(asyncio.shield(exited), timeout)
            except asyncio.TimeoutError:
                pass
            except asyncio.CancelledError:
                if not exited.cancelled():
                    raise  # we were cancelled, not the pidfd closed under us by close()
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            # Exited (or no pidfd); the server's exit report follows within a millisecond.
            await asyncio.sleep(0.001 if self.pidfd is not None else _EXIT_POLL)
        return code

    def _exit_future(self) -> asyncio.Future[None]:
        """One future per event loop, resolved when the pidfd turns readable. Shared by all
        waiters (a second ``add_reader`` on the fd would silently replace the first); the reader
        stays registered until the process exits or :meth:`close`."""
        loop = asyncio.get_running_loop()
        future = self._exit_futures.get(loop)
        if future is not None and not future.cancelled():
            return future
        future = loop.create_future()
        self._exit_futures[loop] = future
        fd = self.pidfd
        if fd is None:
            future.set_result(None)
            return future

        def readable() -> None:
            _remove_reader(loop, fd)
            if not future.done():
                future.set_result(None)

        try:
            loop.add_reader(fd, readable)
        except (OSError, ValueError, NotImplementedError):
            future.set_result(None)  # callers fall back to polling
        return future

    def send_signal(self, signum: int) -> None:
        """Signal the process (not its group); a no-op once it has ended, like ``Popen``."""
        if self.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signum)
            else:
                os.kill(self.pid, signum)

    def terminate(self) -> None:
        """SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)

    def close(self) -> None:
        """Release the pidfd (idempotent). The process itself is not touched."""
        fd, self.pidfd = self.pidfd, None
        if fd is None:
            return
        # Unregister before closing: the fd number is reused at once (often by a zmq socket),
        # and a late remove_reader() would then unregister someone else's reader.
        for loop, future in list(self._exit_futures.items()):
            if not future.done():
                _remove_reader(loop, fd)
                future.cancel()
        with contextlib.suppress(OSError):
            os.close(fd)


def _remove_reader(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    if not loop.is_closed():
        with contextlib.suppress(Exception):
            loop.remove_reader(fd)


def _pid_running(pid: int) -> bool:
    """Whether any thread of ``pid`` runs. A zombie leader ("Z") can still have live threads
    that are tearing down, so every task counts; without /proc, fall back to kill(pid, 0)."""
    tasks = Path(f"/proc/{pid}/task")
    try:
        names = os.listdir(tasks)
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for name in names:
        with contextlib.suppress(OSError, IndexError):
            state = (tasks / name / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state not in {"Z", "X"}:
                return True
    return False


class ForkServer:
    """Client of one fork-server process (see :mod:`mage_nb_sched.execution.kernel_forkserver`).

    ``start()`` launches the server and returns at once; the server is usable after its imports
    (``await wait_ready()``). ``env`` is the server's environment (default: ``os.environ``); kernels
    are forked with the *difference* between it and the environment they ask for. Thread-safe: a
    reader thread dispatches replies, so forks can be requested from any thread or event loop.
    """

    def __init__(
        self,
        preload: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        python: str | None = None,
    ) -> None:
        self.preload = tuple(preload)
        self.python = python or sys.executable
        self.env = dict(os.environ if env is None else env)
        # This variable names the process a kernel watches; the server must not inherit ours.
        self.env.pop("JPY_PARENT_PID", None)
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.hello: dict[str, Any] | None = None
        self.death_reason: str | None = None
        self.fallback_logged = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, concurrent.futures.Future[ForkedProcess]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._hello: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        self._reader: threading.Thread | None = None
        self._dead = False
        self._stopping = False

    @property
    def pid(self) -> int | None:
        """The server's pid once started."""
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        """Started and not known to be dead (it may still be importing)."""
        return self.process is not None and not self._dead

    @property
    def ready(self) -> bool:
        """Serving fork requests."""
        return self.alive and self.hello is not None

    def start(self) -> ForkServer:
        """Launch the server process (a fresh interpreter, in its own session)."""
        if self.process is not None:
            return self
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                [
                    self.python,
                    _FORKSERVER_SCRIPT,
                    "--fd",
                    str(theirs.fileno()),
                    "--parent-pid",
                    str(os.getpid()),
                    "--preload",
                    json.dumps(list(self.preload)),
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                # Its own session: a Ctrl-C meant for the pool's terminal must not reach kernels.
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._sock = ours
        self._reader = threading.Thread(
            target=self._read_loop, name=f"mage-nb-sched-forkserver-{self.process.pid}", daemon=True
        )
        self._reader.start()
        return self

    async def wait_ready(self, timeout: float = 60.0) -> bool:
        """Wait for the server's imports; False if it failed or died (see ``death_reason``)."""
        if self.process is None or self._dead:
            return self.ready
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self._hello)), timeout)
        except asyncio.TimeoutError:
            self.death_reason = f"not ready within {timeout:g}s"
            return False
        except ForkServerError:
            return False
        return self.ready

    def submit(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        module: str = "ipykernel_launcher",
    ) -> concurrent.futures.Future[ForkedProcess]:
        """Ask for one kernel; the future resolves to its :class:`ForkedProcess`.

        ``argv`` are ``IPKernelApp`` arguments (``["-f", connection_file, ...]``), ``env`` the
        kernel's complete environment. Cancelling the future before the reply makes the reader
        kill the kernel as soon as it is born, so an abandoned request never leaks a process.
        """
        if not self.ready or self._sock is None:
            raise ForkServerError(f"fork server not available: {self.death_reason or 'not ready'}")
        target = dict(self.env if env is None else env)
        request: dict[str, Any] = {
            "type": "fork",
            "argv": [str(arg) for arg in argv],
            "cwd": cwd,
            "env_set": {key: value for key, value in target.items() if self.env.get(key) != value},
            "env_unset": [key for key in self.env if key not in target],
            "module": module,
        }
        future: concurrent.futures.Future[ForkedProcess] = concurrent.futures.Future()
        with self._lock:
            if self._dead:
                raise ForkServerError(f"fork server died: {self.death_reason}")
            request_id = next(self._ids)
            request["id"] = request_id
            self._pending[request_id] = future
            try:
                protocol.send_message(self._sock, request)
            except (OSError, ValueError) as error:
                del self._pending[request_id]
                raise ForkServerError(f"fork request failed: {error}") from error
        return future

    async def fork(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        module: str = "ipykernel_launcher",
        timeout: float = 10.0,
    ) -> ForkedProcess:
        """:meth:`submit` and await the reply (a fork takes about a millisecond)."""
        future = self.submit(argv, cwd=cwd, env=env, module=module)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except asyncio.TimeoutError as error:
            future.cancel()
            raise ForkServerError(f"no reply to a fork request within {timeout:g}s") from error

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (it SIGKILLs its kernels first) and reap it. Idempotent, blocking."""
        self._request_stop()
        process = self.process
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._close_socket()

    async def aclose(self, timeout: float = 5.0) -> None:
        """:meth:`stop` without blocking the event loop."""
        self._request_stop()
        process = self.process
        if process is not None:
            deadline = time.monotonic() + timeout
            while process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(_EXIT_POLL)
            if process.poll() is None:
                process.kill()
                await asyncio.to_thread(process.wait)
        self._close_socket()

    def _request_stop(self) -> None:
        with self._lock:
            self._stopping = True
            sock = self._sock
            if sock is not None and not self._dead:
                with contextlib.suppress(OSError, ValueError):
                    protocol.send_message(sock, {"type": "stop"})

    def _close_socket(self) -> None:
        sock = self._sock
        if sock is not None:
            # shutdown() wakes the reader thread's blocking recv; close() alone would not.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(5.0)
        if sock is not None:
            sock.close()
        self._sock = None
        self._mark_dead("stopped")

    # -- reader thread --------------------------------------------------------------------

    def _read_loop(self) -> None:
        sock = self._sock
        reason = "connection closed"
        try:
            while sock is not None:
                message, fds = protocol.receive_message(sock)
                if message is None:
                    break
                self._dispatch(message, fds)
        except (OSError, ValueError) as error:
            reason = f"connection error: {error}"
        finally:
            process = self.process
            code = process.poll() if process is not None else None
            if not self._stopping:
                if code is None and process is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        code = process.wait(0.5)
                reason = f"{reason}; server exit status {code}"
            self._mark_dead(reason)

    def _dispatch(self, message: dict[str, Any], fds: list[int]) -> None:
        kind = message.get("type")
        if kind == "hello":
            self._on_hello(message)
        elif kind == "forked":
            self._on_forked(message, fds[0] if fds else None)
            fds = fds[1:]
        elif kind == "exit":
            child = self._children.pop(int(message["pid"]), None)
            if child is not None:
                child._set_returncode(int(message["returncode"]))
        elif kind == "error":
            with self._lock:
                future = self._pending.pop(int(message.get("id") or 0), None)
            if future is not None and not future.done():
                future.set_exception(ForkServerError(str(message.get("error"))))
        for fd in fds:
            os.close(fd)

    def _on_hello(self, message: dict[str, Any]) -> None:
        if message.get("error") or message.get("version") != protocol.PROTOCOL_VERSION:
            error = message.get("error") or f"protocol version {message.get('version')!r}"
            self.death_reason = str(error)
            log.warning("kernel fork server unusable: %s", error)
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                self._hello.set_exception(ForkServerError(str(error)))
            return
        if message.get("failed"):
            log.warning("kernel fork server could not preload %s", message["failed"])
        self.hello = message
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            self._hello.set_result(message)

    def _on_forked(self, message: dict[str, Any], pidfd: int | None) -> None:
        child = ForkedProcess(int(message["pid"]), pidfd, self)
        # Registered before anything else can happen: the exit event for this pid can only
        # arrive after this message, on this same thread.
        self._children[child.pid] = child
        with self._lock:
            future = self._pending.pop(int(message.get("id") or 0), None)
        try:
            if future is None:
                raise concurrent.futures.InvalidStateError("nobody is waiting")
            future.set_result(child)
        except concurrent.futures.InvalidStateError:
            # The request was abandoned (timeout, cancel): do not leave the kernel running.
            _kill_group(child.pid)
            child.kill()
            child.close()

    def _mark_dead(self, reason: str) -> None:
        with self._lock:
            if self._dead:
                return
            self._dead = True
            if self.death_reason is None:
                self.death_reason = reason
            pending, self._pending = self._pending, {}
        error = ForkServerError(f"fork server died: {self.death_reason}")
        for future in pending.values():
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                future.set_exception(error)
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            self._hello.set_exception(error)
        if not self._stopping:
            log.warning("kernel fork server %s died: %s", self.pid, self.death_reason)


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn`` for spawned kernels: ``PR_SET_PDEATHSIG(SIGKILL)``, and exit at once if
    the owner is already gone (it could die between fork and prctl)."""

    # Imported here, in the parent: importing in the forked child could deadlock on the import
    # lock held by another thread at fork time.
    from mage_nb_sched.execution.kernel_forkserver import set_pdeathsig

    def preexec() -> None:
        set_pdeathsig(signal.SIGKILL)
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


def _kill_group(pgid: int | None, signum: int = signal.SIGKILL) -> None:
    if pgid is not None and pgid > 1:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signum)


# --------------------------------------------------------------------------------------------
# jupyter_client integration


def _fork_plan(
    cmd: Sequence[str], env: Mapping[str, str], server: ForkServer
) -> tuple[list[str], str] | str:
    """``(IPKernelApp argv, module)`` if the server can produce this kernel, else the reason not."""
    if len(cmd) < 3 or cmd[1] != "-m" or cmd[2] not in {"ipykernel_launcher", "ipykernel"}:
        return f"kernel command {list(cmd[:3])} is not 'python -m ipykernel_launcher'"
    executable = cmd[0] if os.path.isabs(cmd[0]) else shutil.which(cmd[0], path=env.get("PATH"))
    if not executable or os.path.realpath(executable) != os.path.realpath(server.python):
        return f"kernel interpreter {cmd[0]!r} is not the fork server's {server.python!r}"
    for name in STARTUP_ENV_VARS:
        if env.get(name) != server.env.get(name):
            return f"{name} differs from the fork server's environment"
    return list(cmd[3:]), cmd[2]


class ForkServerProvisioner(LocalProvisioner):
    """A :class:`LocalProvisioner` that forks kernels from the manager's :class:`ForkServer`.

    Everything but the launch is inherited, so the connection file, ports, Curve keys and the
    kernelspec's ``env`` are handled exactly as for a normal local kernel. Kernels the server
    cannot produce (see :func:`_fork_plan`) or launched while it is down are spawned by the
    inherited ``Popen`` path.
    """

    forked_process: ForkedProcess | None = None
    #: Whether the current kernel came from the fork server.
    forked: bool = False

    @property
    def has_process(self) -> bool:
        return self.forked_process is not None or bool(super().has_process)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        server: ForkServer | None = getattr(self.parent, "forkserver", None)
        env: dict[str, str] = dict(kwargs.get("env") or os.environ)
        plan = _fork_plan(cmd, env, server) if server is not None else "no fork server"
        if isinstance(plan, tuple) and server is not None:
            if not server.ready:
                await server.wait_ready()
            try:
                child = await server.fork(plan[0], cwd=kwargs.get("cwd"), env=env, module=plan[1])
            except ForkServerError as error:
                plan = str(error)
                _note_fallback(server, plan)
            else:
                self.forked_process = child
                self.forked = True
                self.pid = child.pid
                # The server set the child's process group to its pid before replying.
                self.pgid = child.pid
                self.cwd = kwargs.get("cwd") or os.getcwd()
                return self.connection_info
        elif server is not None:
            log.debug("kernel not forked: %s", plan)
        self.forked = False
        # A spawned kernel dies with its owner too (a forked one inherits that from the server).
        kwargs.setdefault("preexec_fn", _die_with_parent(os.getpid()))
        return await super().launch_kernel(cmd, **kwargs)

    async def poll(self) -> int | None:
        if self.forked_process is not None:
            return self.forked_process.poll()
        return await super().poll()

    async def wait(self) -> int | None:
        if self.forked_process is not None:
            code = await self.forked_process.async_wait()
            self.forked_process.close()
            self.forked_process = None
            return code
        # The inherited wait polls every 100 ms; poll faster so shutdowns are not slowed down.
        while await self.poll() is None:
            await asyncio.sleep(_EXIT_POLL)
        return await super().wait()

    async def send_signal(self, signum: int) -> None:
        child = self.forked_process
        if child is None:
            await super().send_signal(signum)
            return
        if child.poll() is not None:
            return
        # The group first, so processes the kernel started are interrupted/killed with it.
        try:
            os.killpg(child.pid, signum)
        except OSError:
            child.send_signal(signum)

    async def kill(self, restart: bool = False) -> None:
        if self.forked_process is not None:
            await self.send_signal(signal.SIGKILL)
        else:
            await super().kill(restart=restart)

    async def terminate(self, restart: bool = False) -> None:
        if self.forked_process is not None:
            await self.send_signal(signal.SIGTERM)
        else:
            await super().terminate(restart=restart)

    async def cleanup(self, restart: bool = False) -> None:
        await super().cleanup(restart=restart)
        if not restart and self.forked_process is not None:
            self.forked_process.close()

    def kill_now(self) -> None:
        """Synchronously SIGKILL the kernel's process group and the kernel itself."""
        _kill_group(self.pgid if isinstance(self.pgid, int) else self.pid)
        if self.forked_process is not None:
            self.forked_process.kill()
        elif self.process is not None:
            with contextlib.suppress(OSError):
                self.process.kill()

    def exit_code(self) -> int | None:
        """Synchronous poll: None while the kernel process runs (0 if there is none)."""
        if self.forked_process is not None:
            return self.forked_process.poll()
        if self.process is not None:
            code: int | None = self.process.poll()
            return code
        return 0

    def return_ports(self) -> None:
        """What ``cleanup()`` does for cached ports, synchronously (emergency path)."""
        if self.ports_cached:
            cache = LocalPortCache.instance()
            for name in ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port"):
                port = self.connection_info.get(name)
                if isinstance(port, int):
                    cache.return_port(port)
            self.ports_cached = False


def _note_fallback(server: ForkServer, reason: str) -> None:
    # Once per server at WARNING: at hundreds of runs a minute every fallback would flood the log.
    level = logging.DEBUG if server.fallback_logged else logging.WARNING
    server.fallback_logged = True
    log.log(level, "kernel fork server unavailable (%s); starting kernels normally", reason)


class PooledKernelManager(AsyncKernelManager):
    """An ``AsyncKernelManager`` whose kernels come from ``forkserver`` when it can produce them.

    Set ``forkserver`` before ``start_kernel``; with None it behaves like its parent class (plus
    faster exit polling).
    """

    forkserver: ForkServer | None = None

    async def _async_pre_start_kernel(
        self, *, transport_encryption: str | None = None, **kw: Any
    ) -> tuple[list[str], dict[str, Any]]:
        if self.provisioner is None:
            # jupyter_client would pick a provisioner by entry-point name from the kernelspec;
            # attaching ours here is the hook, and the parent method keeps it (restarts too).
            self.kernel_id = self.kernel_id or kw.pop("kernel_id", None) or str(uuid.uuid4())
            self.provisioner = ForkServerProvisioner(
                kernel_id=self.kernel_id, kernel_spec=self.kernel_spec, parent=self
            )
        result: tuple[list[str], dict[str, Any]] = await super()._async_pre_start_kernel(
            transport_encryption=transport_encryption, **kw
        )
        return result

    pre_start_kernel = _async_pre_start_kernel

    async def _async_wait(self, pollinterval: float = 0.1) -> None:
        # The parent polls every 100 ms, which would add up to 100 ms to every shutdown.
        provisioner = self.provisioner
        if isinstance(provisioner, ForkServerProvisioner) and provisioner.forked_process:
            await provisioner.forked_process.async_wait()
            return
        while await self._async_is_alive():
            await asyncio.sleep(min(pollinterval, _EXIT_POLL))


class _CachingKernelSpecManager(KernelSpecManager):
    """Looks a kernelspec up once per pool instead of scanning the Jupyter paths per kernel."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        cache: dict[str, KernelSpec] = self.__dict__.setdefault("_mage_spec_cache", {})
        if kernel_name not in cache:
            cache[kernel_name] = super().get_kernel_spec(kernel_name)
        return cache[kernel_name]


# --------------------------------------------------------------------------------------------
# Handles


class KernelHandle:
    """A started kernel with a connected, ready client.

    ``km`` is a :class:`PooledKernelManager` (an ``AsyncKernelManager``), ``kc`` its
    ``AsyncKernelClient`` with channels started and ``kernel_info`` answered, so the first
    ``execute`` runs immediately. ``pid`` is the kernel process (also its process group).
    """

    def __init__(
        self,
        km: PooledKernelManager,
        kc: AsyncKernelClient,
        *,
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
        startup_seconds: float | None = None,
    ) -> None:
        self.km = km
        self.kc = kc
        provisioner = km.provisioner
        self.pid: int = int(getattr(provisioner, "pid", 0) or 0)
        self.forked: bool = bool(getattr(provisioner, "forked", False))
        self.connection_file: str = str(km.connection_file)
        self.shutdown_grace = shutdown_grace
        self.startup_seconds = startup_seconds
        self.closed = False
        self._shutdown_task: asyncio.Future[None] | None = None
        self._on_closed: list[Callable[[KernelHandle], None]] = []

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("alive" if self.is_alive() else "dead")
        return f"<KernelHandle pid={self.pid} forked={self.forked} {state}>"

    def is_alive(self) -> bool:
        """Whether the kernel process is still running (synchronous, no messages)."""
        if self.closed:
            return False
        provisioner = self.km.provisioner
        if isinstance(provisioner, ForkServerProvisioner):
            return provisioner.exit_code() is None
        return provisioner is not None and provisioner.has_process

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
            self._cleanup_files()
        except BaseException:
            # Cancelled (e.g. a stopping event loop) before or while killing: kill now,
            # synchronously, so the handle is never marked closed with its kernel alive.
            self._kill_now_signals()
            self._cleanup_files()
            raise
        finally:
            self._finish()

    async def _wait_gone(self, timeout: float) -> bool:
        provisioner = self.km.provisioner
        if isinstance(provisioner, ForkServerProvisioner) and provisioner.forked_process:
            return await provisioner.forked_process.async_wait(timeout) is not None
        deadline = time.monotonic() + timeout
        while self.is_alive():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_EXIT_POLL)
        return True

    def _kill_now_signals(self) -> None:
        provisioner = self.km.provisioner
        if isinstance(provisioner, ForkServerProvisioner):
            provisioner.kill_now()
        else:
            _kill_group(self.pid)

    def kill_now(self) -> None:
        """SIGKILL the kernel's process group now and clean up, synchronously (emergencies,
        interpreter exit). Waits up to a couple of seconds for the process to go."""
        if self.closed:
            return
        self._kill_now_signals()
        deadline = time.monotonic() + 2.0
        while self.is_alive() and time.monotonic() < deadline:
            time.sleep(0.002)
        self._cleanup_files()
        self._finish()

    def _cleanup_files(self) -> None:
        km = self.km
        with contextlib.suppress(Exception):
            km.cleanup_connection_file()
        with contextlib.suppress(Exception):
            km.cleanup_ipc_files()
        with contextlib.suppress(Exception):
            km._close_control_socket()
        provisioner = km.provisioner
        if isinstance(provisioner, ForkServerProvisioner):
            with contextlib.suppress(Exception):
                provisioner.return_ports()
            if provisioner.forked_process is not None:
                provisioner.forked_process.close()

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
    """Start one kernel (forked when ``forkserver`` can, else spawned) and wait until it is ready.

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
    if kernel_spec_manager is not None:
        options["kernel_spec_manager"] = kernel_spec_manager
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
    km = PooledKernelManager(**options)
    km.forkserver = forkserver
    kc: AsyncKernelClient | None = None
    handle: KernelHandle | None = None
    try:
        try:
            await asyncio.wait_for(
                km.start_kernel(
                    cwd=cwd or os.getcwd(),
                    env={**os.environ, **(env or {})},
                    extra_arguments=list(extra_arguments),
                ),
                startup_timeout,
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
            owners[owner] = owner == os.getpid() or _pid_running(owner)
        if not owners[owner]:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
                removed += 1
    return removed


def _abandon(km: PooledKernelManager, kc: AsyncKernelClient | None) -> None:
    """Synchronous cleanup of a kernel that failed before it had a handle."""
    provisioner = km.provisioner
    if isinstance(provisioner, ForkServerProvisioner):
        provisioner.kill_now()
        deadline = time.monotonic() + 2.0
        # exit_code() reaps a spawned kernel, so it does not linger as a zombie.
        while provisioner.exit_code() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        if provisioner.forked_process is not None:
            provisioner.forked_process.close()
    if kc is not None:
        with contextlib.suppress(Exception):
            kc.stop_channels()
    with contextlib.suppress(Exception):
        km.cleanup_connection_file()
    with contextlib.suppress(Exception):
        km._close_control_socket()
    if isinstance(provisioner, ForkServerProvisioner):
        with contextlib.suppress(Exception):
            provisioner.return_ports()


async def _wait_until_ready(km: PooledKernelManager, kc: AsyncKernelClient, timeout: float) -> None:
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
            raise KernelStartError(f"kernel died during start-up (exit status {code})")
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
        kc._handle_kernel_info_reply(reply)
        return


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
    :func:`prepare`). With ``use_forkserver`` kernels are forked from a :class:`ForkServer` that
    has ``preload`` imported (e.g. ``["pandas"]``) — a kernel then starts with those modules
    already imported. At most ``max_concurrent_starts`` kernels start at once, so refills leave
    CPU for running notebooks.

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
        if isinstance(preload, str):
            raise ValidationError(
                "preload", preload, "must be a list of module names", "Use e.g. ['pandas']."
            )
        if transport not in {"tcp", "ipc"}:
            raise ValidationError("transport", transport, "must be 'ipc' or 'tcp'", "Use 'ipc'.")
        self.size = size
        self.kernel_name = kernel_name
        self.cwd = os.fspath(cwd) if cwd is not None else None
        self.env = {str(key): str(value) for key, value in (env or {}).items()}
        self.use_forkserver = use_forkserver
        self.preload = tuple(preload)
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
        )

    # -- internals ------------------------------------------------------------------------

    def _spawn_forkserver(self) -> None:
        if not hasattr(os, "fork") or sys.platform == "win32":
            log.info("no fork() on this platform; kernels are started normally")
            return
        server_env = {**os.environ, **self.env}
        try:
            self.forkserver = ForkServer(self.preload, env=server_env, cwd=self.cwd).start()
        except OSError as error:
            log.warning(
                "could not start the kernel fork server (%s); starting kernels normally", error
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
