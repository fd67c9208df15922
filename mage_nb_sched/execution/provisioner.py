"""A jupyter_client kernel provisioner that forks kernels from a pre-warmed fork server.

Starting an IPython kernel the normal way costs a fresh interpreter and ~0.5 s of imports. A
:class:`ForkServer` runs ``kernel_forkserver.py`` in a fresh interpreter that imports IPython,
ipykernel (and ``preload`` modules) once and then ``fork()``\\ s kernels on request (~0.03 s CPU
each). :class:`ForkServerProvisioner` plugs that into jupyter_client through its public provisioner
API: it is a :class:`~jupyter_client.provisioning.LocalProvisioner` (so connection files, ports,
Curve keys and the kernelspec's ``env`` are handled exactly as for any local kernel) whose
``launch_kernel`` asks the fork server instead of ``Popen``, and whose ``poll``/``wait``/
``send_signal``/``kill``/``terminate`` act on the forked pid through a pidfd (a signal can never
reach a process that recycled the pid).

Selecting it uses only public jupyter_client API: the package registers the class under
:data:`PROVISIONER_NAME` in the ``jupyter_client.kernel_provisioners`` entry-point group, and a
kernelspec selects it with the standard ``metadata.kernel_provisioner`` stanza (see
:func:`kernelspec_stanza`)::

    {"metadata": {"kernel_provisioner": {"provisioner_name": "mage-nb-sched-forkserver",
                                         "config": {"forkserver_id": "<ForkServer.id>"}}}}

``KernelProvisionerFactory`` then instantiates it like any provisioner. Where the entry point is not
installed (a source checkout that was not ``pip install``\\ ed), the provisioner is attached
through the kernel manager's public ``provisioner`` attribute before ``start_kernel`` instead —
jupyter_client keeps a provisioner that is already set. The fork server is found by its id in this
process; a provisioner whose server is gone, not ready, or unable to produce the requested kernel
(another interpreter, a different ``PYTHONPATH``...) spawns the kernel with the inherited
``LocalProvisioner`` launch and says so in the log.

Guarantees kept for forked kernels: ``PR_SET_PDEATHSIG(SIGKILL)`` (server → pool owner, kernel →
server: no kernel outlives the process owning the pool, even after ``kill -9``), each kernel in
its own process group (``interrupt``/``kill`` reach what it started), exit statuses reported by the
server that reaps them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import functools
import itertools
import json
import logging
import os
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
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.local_provisioner import LocalProvisioner
from traitlets import Unicode

from mage_nb_sched.core.errors import MageNbSchedError
from mage_nb_sched.execution import kernel_forkserver as protocol

log = logging.getLogger(__name__)

__all__ = [
    "ENTRY_POINT_GROUP",
    "PROVISIONER_NAME",
    "STARTUP_ENV_VARS",
    "ForkServer",
    "ForkServerError",
    "ForkServerProvisioner",
    "ForkedProcess",
    "KernelError",
    "describe_exit",
    "fork_supported",
    "kernelspec_stanza",
    "provisioner_registered",
]

#: jupyter_client's entry-point group for provisioners, and the name this package registers.
ENTRY_POINT_GROUP = "jupyter_client.kernel_provisioners"
PROVISIONER_NAME = "mage-nb-sched-forkserver"
_ENTRY_POINT_VALUE = "mage_nb_sched.execution.provisioner:ForkServerProvisioner"
#: Poll interval while waiting for a kernel process to exit (cheap: no syscall for forked ones).
EXIT_POLL = 0.005
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
    "ARROW_DEFAULT_MEMORY_POOL",
)
#: Added to every kernel's and fork server's environment unless set: ipykernel imports debugpy,
#: whose pydevd otherwise prints a "frozen modules" warning to stderr on every start (3.11+).
QUIET_DEBUGGER_ENV = {"PYDEVD_DISABLE_FILE_VALIDATION": "1"}
_FORKSERVER_SCRIPT = str(Path(protocol.__file__).resolve())


class KernelError(MageNbSchedError):
    """A kernel could not be started, prepared or reached."""

    http_status = 503


class ForkServerError(KernelError):
    """The fork server is unavailable or refused a request; kernels are then spawned normally."""


def fork_supported() -> bool:
    """Whether kernels may be forked here: Linux only. macOS has ``fork()``, but system
    frameworks there are not fork-safe; Windows has none."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


@functools.lru_cache(maxsize=1)
def provisioner_registered() -> bool:
    """Whether :data:`PROVISIONER_NAME` is installed in jupyter_client's entry-point group and
    names this class (an editable install done before the entry point existed has none)."""
    with contextlib.suppress(Exception):
        found = entry_points(group=ENTRY_POINT_GROUP, name=PROVISIONER_NAME)
        return any(point.value.replace(" ", "") == _ENTRY_POINT_VALUE for point in found)
    return False


def kernelspec_stanza(server: ForkServer) -> dict[str, Any]:
    """The kernelspec ``metadata.kernel_provisioner`` value that selects ``server``'s kernels."""
    return {"provisioner_name": PROVISIONER_NAME, "config": {"forkserver_id": server.id}}


def describe_exit(returncode: int | None) -> str | None:
    """``-9`` → ``"killed by SIGKILL"``, ``3`` → ``"exited with code 3"``, None → None."""
    if returncode is None:
        return None
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with code {returncode}"


# --------------------------------------------------------------------------------------------
# Processes


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
        #: True when the status was inferred (the server died before reporting it), not reported.
        self.returncode_inferred = False
        self._server = server
        self._exited = threading.Event()
        self._exit_futures: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Future[None]
        ] = weakref.WeakKeyDictionary()

    def set_returncode(self, returncode: int, *, inferred: bool = False) -> None:
        """Record the exit status (called by the server's reader thread)."""
        self.returncode_inferred = inferred
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
            self.set_returncode(-signal.SIGKILL, inferred=True)
        return self.returncode

    def _running(self) -> bool:
        if self.pidfd is not None:
            with contextlib.suppress(OSError, ValueError):
                poller = select.poll()
                poller.register(self.pidfd, select.POLLIN)
                return not poller.poll(0)
        return pid_running(self.pid)

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
            await asyncio.sleep(0.001 if self.pidfd is not None else EXIT_POLL)
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


def pid_running(pid: int) -> bool:
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


def kill_group(pgid: int | None, signum: int = signal.SIGKILL) -> None:
    """``killpg`` that ignores a group that is gone (and never signals group 0 or 1, nor the
    caller's own group)."""
    if pgid is not None and pgid > 1 and pgid != os.getpgrp():
        with contextlib.suppress(OSError):
            os.killpg(pgid, signum)


def die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` for spawned kernels: ``PR_SET_PDEATHSIG(SIGKILL)``, and exit at once if
    the owner is already gone (it could die between fork and prctl). None off Linux.

    ``prctl`` is looked up here, in the parent: the child of a multi-threaded parent must not
    ``dlopen`` or import (another thread may have held the loader or import lock at fork time).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    request, signum = protocol.PR_SET_PDEATHSIG, int(signal.SIGKILL)

    def preexec() -> None:
        prctl(request, signum, 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


# --------------------------------------------------------------------------------------------
# The fork server's client side

_SERVERS: weakref.WeakValueDictionary[str, ForkServer] = weakref.WeakValueDictionary()


class ForkServer:
    """Client of one fork-server process (see :mod:`mage_nb_sched.execution.kernel_forkserver`).

    ``start()`` launches the server and returns at once; the server is usable after its imports
    (``await wait_ready()``). ``preload`` modules must import without starting threads (else the
    server reports itself unusable). ``optional_preload`` modules are imported afterwards, while
    the server already forks kernels, each only if installed and if a probe process found forking
    still safe after importing it (``await wait_preloaded()``; outcome in ``hello["preloaded"]``
    and ``hello["skipped"]``). ``env`` is the server's environment (default: ``os.environ``);
    kernels are forked with the *difference* between it and the environment they ask for.
    Thread-safe: a reader thread dispatches replies, so forks can be requested from any thread or
    event loop.

    ``id`` names the server in this process (:meth:`find`), for a provisioner's configuration.
    """

    def __init__(
        self,
        preload: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        python: str | None = None,
        optional_preload: Sequence[str] = (),
    ) -> None:
        self.id = uuid.uuid4().hex
        self.preload = tuple(preload)
        self.optional_preload = tuple(optional_preload)
        self.python = python or sys.executable
        self.env = {**QUIET_DEBUGGER_ENV, **(os.environ if env is None else env)}
        # This variable names the process a kernel watches; the server must not inherit ours.
        self.env.pop("JPY_PARENT_PID", None)
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.hello: dict[str, Any] | None = None
        #: Why the server cannot (or can no longer) fork kernels; None while it can.
        self.death_reason: str | None = None
        self.fallback_logged = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, concurrent.futures.Future[ForkedProcess]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._hello: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        self._preloads: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._unsafe = False
        self._reader: threading.Thread | None = None
        self._dead = False
        self._stopping = False
        _SERVERS[self.id] = self

    @staticmethod
    def find(server_id: str) -> ForkServer | None:
        """The server with this ``id`` in this process, if it still exists."""
        return _SERVERS.get(server_id)

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
        return self.alive and self.hello is not None and not self._unsafe

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
                    "--optional",
                    json.dumps(list(self.optional_preload)),
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
            return False
        except ForkServerError:
            return False
        return self.ready

    async def wait_preloaded(self, timeout: float = 120.0) -> bool:
        """Wait until every optional preload was imported or skipped; False if the server
        failed, died or refuses to fork (see ``death_reason``)."""
        if not await self.wait_ready(timeout):
            return False
        with contextlib.suppress(asyncio.TimeoutError, ForkServerError):
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self._preloads)), timeout)
        return self.ready and self._preloads.done() and self._preloads.exception() is None

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
                await asyncio.sleep(EXIT_POLL)
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
                reason = f"{reason}; server {describe_exit(code) or 'still running'}"
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
                child.set_returncode(int(message["returncode"]))
        elif kind in {"preload", "preloads_done", "unsafe"}:
            self._on_preload(message)
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
        message.setdefault("skipped", {})
        self.hello = message
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            self._hello.set_result(message)

    def _on_preload(self, message: dict[str, Any]) -> None:
        hello = self.hello
        kind = message.get("type")
        if hello is None:
            return
        if kind == "preload":
            name = str(message.get("module"))
            if message.get("ok"):
                hello["preloaded"] = [*hello["preloaded"], name]
            else:
                hello["skipped"] = {**hello["skipped"], name: str(message.get("reason"))}
                log.info("kernel fork server does not preload %s: %s", name, message.get("reason"))
        elif kind == "unsafe":
            self.death_reason = str(message.get("reason"))
            self._unsafe = True
            log.warning("kernel fork server refuses to fork: %s", self.death_reason)
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                self._preloads.set_exception(ForkServerError(self.death_reason))
        else:
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                self._preloads.set_result(None)

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
            kill_group(child.pid)
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
        for waiter in (self._hello, self._preloads):
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                waiter.set_exception(error)
        if not self._stopping:
            log.warning("kernel fork server %s died: %s", self.pid, self.death_reason)


def fork_plan(
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


def note_fallback(server: ForkServer, reason: str) -> None:
    """Log that ``server`` cannot fork a kernel: once per server at WARNING (at hundreds of runs a
    minute every fallback would flood the log), then at DEBUG."""
    level = logging.DEBUG if server.fallback_logged else logging.WARNING
    server.fallback_logged = True
    log.log(
        level,
        "kernel fork server unavailable (%s); starting kernels with jupyter_client's "
        "LocalProvisioner",
        reason,
    )


# --------------------------------------------------------------------------------------------
# The provisioner


class ForkServerProvisioner(LocalProvisioner):
    """A :class:`LocalProvisioner` that forks kernels from the :class:`ForkServer` named by
    ``forkserver_id`` (its ``config`` in the kernelspec's ``kernel_provisioner`` stanza).

    Only public provisioner methods are overridden. Kernels the server cannot produce (see
    :func:`fork_plan`), or launched while it is down, are spawned by the inherited ``Popen``
    launch with the caller's arguments (a pool adds a ``preexec_fn`` that sets
    ``PR_SET_PDEATHSIG``, so they too die with the pool's owner).
    """

    forkserver_id = Unicode(
        "", config=True, help="ForkServer.id of the fork server (in this process) to fork from."
    )
    forked_process: ForkedProcess | None = None
    #: Whether the current kernel came from the fork server.
    forked: bool = False
    #: The kernel's exit status once :meth:`wait` has released its process.
    returncode: int | None = None

    @property
    def forkserver(self) -> ForkServer | None:
        """The configured fork server, if it still exists."""
        return ForkServer.find(self.forkserver_id) if self.forkserver_id else None

    @property
    def has_process(self) -> bool:
        return self.forked_process is not None or bool(super().has_process)

    @property
    def kernel_process(self) -> ForkedProcess | subprocess.Popen[bytes] | None:
        """The current kernel process (forked or spawned), for synchronous checks."""
        if self.forked_process is not None:
            return self.forked_process
        process: subprocess.Popen[bytes] | None = self.process
        return process

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        server = self.forkserver
        env: dict[str, str] = dict(kwargs.get("env") or os.environ)
        plan = fork_plan(cmd, env, server) if server is not None else "no fork server"
        self.returncode = None
        if isinstance(plan, tuple) and server is not None:
            if not server.ready:
                await server.wait_ready()
            try:
                child = await server.fork(plan[0], cwd=kwargs.get("cwd"), env=env, module=plan[1])
            except ForkServerError as error:
                note_fallback(server, str(error))
            else:
                self.forked_process = child
                self.forked = True
                self.pid = child.pid
                # The server set the child's process group to its pid before replying.
                self.pgid = child.pid
                self.cwd = kwargs.get("cwd") or os.getcwd()
                return self.connection_info
        else:
            log.debug("kernel not forked: %s", plan)
        self.forked = False
        # Spawned with the caller's Popen arguments: a pool passes ``preexec_fn`` (see
        # die_with_parent), so its spawned kernels die with their owner as forked ones do.
        connection_info: KernelConnectionInfo = await super().launch_kernel(cmd, **kwargs)
        return connection_info

    async def poll(self) -> int | None:
        if self.forked_process is not None:
            return self.forked_process.poll()
        code: int | None = await super().poll()
        return code

    async def wait(self) -> int | None:
        child = self.forked_process
        if child is not None:
            code = await child.async_wait()
            child.close()
            self.forked_process = None
            self.returncode = code
            return code
        if self.process is None:
            return self.returncode if self.returncode is not None else 0
        # The inherited wait polls every 100 ms; poll faster so shutdowns are not slowed down.
        while await self.poll() is None:
            await asyncio.sleep(EXIT_POLL)
        code = await super().wait()
        self.returncode = code
        return code

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
        if not restart:
            # The inherited cleanup returns cached ports but keeps the flag; a second cleanup
            # (emergency path after a normal one) must not return them again.
            self.ports_cached = False
            if self.forked_process is not None:
                self.forked_process.close()

    async def get_provisioner_info(self) -> dict[str, Any]:
        info: dict[str, Any] = await super().get_provisioner_info()
        info.update({"forkserver_id": self.forkserver_id, "forked": self.forked})
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        await super().load_provisioner_info(provisioner_info)
        self.forkserver_id = str(provisioner_info.get("forkserver_id") or "")
