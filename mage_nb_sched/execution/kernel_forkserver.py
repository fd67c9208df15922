"""The kernel fork server ("zygote"): a warm interpreter that forks ready-to-start IPython kernels.

Starting an IPython kernel the normal way costs a fresh interpreter plus ~0.5 s of imports (IPython,
ipykernel, tornado, zmq, debugpy). This process pays that once: it imports everything a kernel needs
— **without** creating a zmq context, an event loop or a thread, so forking it is safe — and then
serves fork requests. Each forked child becomes one ``IPKernelApp`` on the connection file it was
given, so a kernel costs only the app's own initialisation (~0.03 s CPU).

It is started by :class:`mage_nb_sched.execution.provisioner.ForkServer` as a *fresh interpreter*
running this file as a script (not ``-m mage_nb_sched...``, which would import the package and
everything it pulls in into every kernel)::

    python .../kernel_forkserver.py --fd N --parent-pid P [--preload JSON] [--optional JSON]

``--preload`` modules are imported before the server says hello. ``--optional`` ones (what
notebooks import first, e.g. pandas) come after, while the server already serves forks, so they
never delay the first kernel: each installed one is first imported in a *probe* child forked for
the purpose, which runs the fork-safety check and reports; only a module that passed is imported
by the server (between two requests), so an optional module that starts threads can never make
the server unsafe. Kernels forked meanwhile simply have fewer modules preloaded.

**Fork-safety check** (:func:`fork_safety_problem`): ``fork()`` copies only the calling thread, so
a lock held by any other thread stays locked forever in the child. After the imports the server
must have no other Python thread, and — counted in ``/proc/self/task``, which also sees threads
started by C libraries (thread pools, BLAS) — no other native thread once one probe ``fork()`` has
run ``pthread_atfork`` handlers (OpenBLAS stops its workers there and restarts them lazily in the
child). The only native threads tolerated are named in :data:`FORK_SAFE_THREAD_NAMES`.

Protocol: one ``AF_UNIX``/``SOCK_SEQPACKET`` socket (fd ``N``), one JSON object per packet.

* server → client ``{"type": "hello", "version", "pid", "pdeathsig", "pidfd", "preloaded",
  "failed", "optional", "threads", "kernel_modules_missing"}`` once the ``--preload`` imports are
  done (or the same with ``"error"``, then exit, if ipykernel is missing or forking would be
  unsafe);
* server → client ``{"type": "preload", "module", "ok", "reason"}`` for each optional module, then
  ``{"type": "preloads_done", "preloaded", "skipped"}``; ``{"type": "unsafe", "reason"}`` if the
  check fails in the server itself after an optional import (it then refuses to fork);
* client → server ``{"type": "fork", "id", "argv", "cwd", "env_set", "env_unset", "module"}``;
  ``argv`` are ``IPKernelApp`` arguments (``-f <connection file>`` and the kernelspec's extra ones);
* server → client ``{"type": "forked", "id", "pid"}`` with the child's pidfd attached
  (``SCM_RIGHTS``) when the platform has ``pidfd_open``, or ``{"type": "error", "id", "error"}``;
* server → client ``{"type": "exit", "pid", "returncode"}`` whenever a child is reaped;
* client → server ``{"type": "stop"}``, or end of file: SIGKILL every child's process group, exit.

Lifetime: the server sets ``PR_SET_PDEATHSIG(SIGKILL)`` so it dies with the process that started it
(even on ``kill -9``), and so does every kernel with respect to the server, so no kernel outlives
the process that owns the pool. End of file on the socket is a second, portable signal.

A kernel uses ipykernel's application API (``IPKernelApp.instance().initialize(argv)`` and
``start()``, as ``python -m ipykernel_launcher`` does), waits for the app's control thread to
finish a shutdown reply (:func:`_finish_shutdown_reply`, the one use of an ipykernel attribute, and
why), then leaves through the interpreter's normal exit (atexit hooks run), skipping only the final
module teardown.

This module must stay importable on its own (standard library at module level only): it runs
as a script, before and without the ``mage_nb_sched`` package.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import importlib
import importlib.util
import json
import os
import random
import selectors
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

#: Bump when the messages change; the client refuses a server with another version.
PROTOCOL_VERSION = 2
#: Largest packet either side sends. Requests carry only the env *difference* to the server's.
MAX_MESSAGE = 1 << 17
#: Modules a kernel imports while it initialises (measured with ipykernel 7 / IPython 8). Importing
#: them here moves ~80 ms (mostly ``ipykernel.debugger`` → debugpy) out of every kernel start. All
#: are imported without starting threads or creating zmq contexts; a missing one is skipped.
KERNEL_MODULES = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "ipykernel.debugger",
    "IPython.core.completerlib",
    "tornado.gen",
    "tornado.locks",
    "tornado.queues",
    "tornado.platform.asyncio",
    "encodings.idna",
    "http.server",
    "xmlrpc.server",
)
#: Native threads the fork-safety check tolerates, by name (``/proc/self/task/*/comm``).
#: jemalloc (bundled by pyarrow, started when it loads) takes every allocator lock in a
#: ``pthread_atfork`` prepare handler and resets its background-thread state in the child (which
#: then purges inline), so forking beside its purging thread is safe by design.
FORK_SAFE_THREAD_NAMES = frozenset({"jemalloc_bg_thd"})
#: ``prctl`` option number (``<linux/prctl.h>``).
PR_SET_PDEATHSIG = 1
#: Exit status of this process when it is a forked kernel (None in the server itself).
_kernel_exit_status: int | None = None


def set_pdeathsig(signum: int = signal.SIGKILL) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent (thread) dies.

    Returns False where ``prctl`` is unavailable (non-Linux); callers then rely on end of file on
    the control socket and ipykernel's parent poller.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def send_message(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    """Send one JSON packet, with file descriptors attached when given."""
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"fork-server message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def receive_message(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """Receive one packet: ``(None, [])`` at end of file."""
    data, fds, _flags, _address = socket.recv_fds(sock, MAX_MESSAGE, 4)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError(f"fork-server message is not an object: {message!r}")
    return message, list(fds)


class _Server:
    """The serving loop. Lives only in the fork-server process."""

    def __init__(self, sock: socket.socket, parent_pid: int, optional: Sequence[str] = ()) -> None:
        self.sock = sock
        self.parent_pid = parent_pid
        self.pid = os.getpid()
        self.children: set[int] = set()
        self.selector: selectors.BaseSelector | None = None
        # Optional preloads still to probe, the outcome so far, and the probe child running.
        self.optional = list(optional)
        self.preloaded: list[str] = []
        self.skipped: dict[str, str] = {}
        self.probe: tuple[int, str, int] | None = None  # (pid, module, read end of its pipe)
        self.unsafe: str | None = None
        # SIGCHLD only has to wake the selector up; reaping happens in the loop, so a reply is
        # never interleaved with an exit event written from a signal handler.
        self.wakeup_r, self.wakeup_w = os.pipe()
        os.set_blocking(self.wakeup_r, False)
        os.set_blocking(self.wakeup_w, False)
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
        signal.set_wakeup_fd(self.wakeup_w, warn_on_full_buffer=False)

    def serve(self) -> None:
        selector = self.selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ)
        selector.register(self.wakeup_r, selectors.EVENT_READ)
        try:
            self._next_probe()
            while True:
                for key, _events in selector.select():
                    if key.fileobj is self.sock:
                        if not self._handle_request():
                            return
                    else:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self.wakeup_r, 4096)
                self._reap()
        finally:
            if os.getpid() == self.pid:
                selector.close()
                self._kill_children()

    def _handle_request(self) -> bool:
        """Serve one packet; False when the server should stop."""
        try:
            message, fds = receive_message(self.sock)
        except (OSError, ValueError) as error:
            _log(f"bad request, stopping: {error}")
            return False
        for fd in fds:  # clients never send descriptors; do not leak any into kernels
            os.close(fd)
        if message is None or message.get("type") == "stop":
            return False
        if message.get("type") == "fork":
            if self.unsafe is not None:
                self._send({"type": "error", "id": message.get("id"), "error": self.unsafe})
            else:
                self._fork(message)
            return True
        self._send({"type": "error", "id": message.get("id"), "error": "unknown request type"})
        return True

    def _fork(self, request: dict[str, Any]) -> None:
        try:
            pid = _fork()
        except OSError as error:
            self._send({"type": "error", "id": request.get("id"), "error": f"fork failed: {error}"})
            return
        if pid == 0:
            _become_kernel(request, self)
        # Both parent and child put the child in its own process group (the classic race-free
        # idiom), so the pid we reply with is already a valid process-group id for killpg().
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        self.children.add(pid)
        pidfd = _pidfd_open(pid)  # still unreaped: reaping only happens later in this loop
        try:
            self._send({"type": "forked", "id": request.get("id"), "pid": pid}, fds=pidfd)
        finally:
            for fd in pidfd:
                os.close(fd)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.probe is not None and pid == self.probe[0]:
                self._finish_probe(os.waitstatus_to_exitcode(status))
                continue
            self.children.discard(pid)
            returncode = os.waitstatus_to_exitcode(status)
            self._send({"type": "exit", "pid": pid, "returncode": returncode})

    # -- optional preloads ----------------------------------------------------------------

    def _next_probe(self) -> None:
        """Fork a probe child for the next optional module; report when none is left."""
        while self.optional and self.unsafe is None:
            name = self.optional.pop(0)
            if name in sys.modules:  # imported along with an earlier one
                self._preloaded(name)
                continue
            if not _installed(name):
                continue
            read_end, write_end = os.pipe()
            try:
                pid = _fork()
            except OSError as error:
                os.close(read_end)
                os.close(write_end)
                self.skipped[name] = f"probe fork failed: {error}"
                continue
            if pid == 0:
                _probe(name, write_end, self)
            os.close(write_end)
            self.probe = (pid, name, read_end)
            return
        self._send({"type": "preloads_done", "preloaded": self.preloaded, "skipped": self.skipped})

    def _finish_probe(self, returncode: int) -> None:
        assert self.probe is not None
        _pid, name, read_end = self.probe
        self.probe = None
        chunks = []
        with contextlib.suppress(OSError):
            while chunk := os.read(read_end, 65536):  # the writer has exited: ends at once
                chunks.append(chunk)
        os.close(read_end)
        report = b"".join(chunks).decode(errors="replace")
        if returncode != 0 or report:
            self._skip(name, report or f"its probe process ended with status {returncode}")
        else:
            try:
                importlib.import_module(name)
            except BaseException as error:  # an optional module may be broken
                self._skip(name, f"import failed: {type(error).__name__}: {error}")
            # The probe passed; check the server itself all the same before it forks again.
            problem = fork_safety_problem()
            if problem is not None:
                self.unsafe = f"preloading {name} {problem}; forking would be unsafe"
                self._send({"type": "unsafe", "reason": self.unsafe})
            elif name not in self.skipped:
                # Shared copy-on-write with the kernels from now on (see main()).
                gc.freeze()
                self._preloaded(name)
        self._next_probe()

    def _preloaded(self, name: str) -> None:
        self.preloaded.append(name)
        self._send({"type": "preload", "module": name, "ok": True, "reason": None})

    def _skip(self, name: str, reason: str) -> None:
        self.skipped[name] = reason
        self._send({"type": "preload", "module": name, "ok": False, "reason": reason})

    def _send(self, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
        # If the client is gone, the next read sees end of file and the loop stops.
        with contextlib.suppress(OSError):
            send_message(self.sock, message, fds)

    def _kill_children(self) -> None:
        if self.probe is not None:
            with contextlib.suppress(OSError):
                os.kill(self.probe[0], signal.SIGKILL)
            self.children.add(self.probe[0])
        for pid in list(self.children):
            for kill in (os.killpg, os.kill):
                with contextlib.suppress(OSError):
                    kill(pid, signal.SIGKILL)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.children.clear()


def _pidfd_open(pid: int) -> list[int]:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return []
    try:
        return [opener(pid)]
    except OSError:
        return []


def _probe(name: str, write_end: int, server: _Server) -> NoReturn:
    """In a probe child: import ``name``, run the fork-safety check, write the problem (empty:
    none) to ``write_end`` and exit. Never returns into the server loop."""
    status = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        set_pdeathsig(signal.SIGKILL)
        if os.getppid() != server.pid:
            os._exit(1)
        try:
            importlib.import_module(name)
        except BaseException as error:
            report = f"import failed: {type(error).__name__}: {error}"
        else:
            problem = fork_safety_problem()
            report = "" if problem is None else f"importing it {problem}; forking would be unsafe"
        os.write(write_end, report.encode()[:4096])
        status = 0
    finally:
        os._exit(status)


def _become_kernel(request: dict[str, Any], server: _Server) -> NoReturn:
    """Turn a freshly forked child into an IPython kernel. Never returns into the server loop."""
    global _kernel_exit_status
    _kernel_exit_status = 1
    try:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(signum, signal.SIG_DFL)
        # Python's own SIGINT handler, not SIG_DFL: interrupting a cell relies on KeyboardInterrupt.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        set_pdeathsig(signal.SIGKILL)
        if os.getppid() != server.pid:
            # The server died between fork() and prctl(): nobody would reap or kill us.
            os._exit(1)
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        server.sock.close()
        if server.selector is not None:
            server.selector.close()
        os.close(server.wakeup_r)
        os.close(server.wakeup_w)
        if server.probe is not None:
            os.close(server.probe[2])

        for name in request.get("env_unset") or ():
            os.environ.pop(name, None)
        os.environ.update(request.get("env_set") or {})
        # ipykernel's ParentPoller must watch the process that will reap us, not the pool's.
        os.environ["JPY_PARENT_PID"] = str(server.pid)
        # State the server derived from its own environment: the time zone, the temp dir.
        time.tzset()
        tempfile.tempdir = None
        if request.get("cwd"):
            os.chdir(request["cwd"])
        _reseed()
        argv = [str(arg) for arg in request.get("argv") or ()]
        argv.append(f"--IPKernelApp.parent_handle={server.pid}")
        sys.argv = [_module_path(str(request.get("module") or "ipykernel_launcher")), *argv]

        # What ``python -m ipykernel_launcher`` runs (IPKernelApp.launch_instance), step by step.
        from ipykernel.kernelapp import IPKernelApp

        app: Any = IPKernelApp.instance()
        app.initialize(argv)
        app.start()
        _kernel_exit_status = 0
        _finish_shutdown_reply(app)
    except SystemExit as exit_:
        code = exit_.code
        _kernel_exit_status = code if isinstance(code, int) else (0 if code is None else 1)
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc(file=sys.__stderr__)
    # Leave the way ``python -m ipykernel_launcher`` does: unwind to the interpreter's normal exit
    # (non-daemon threads joined, atexit hooks run: IPython's clears the user namespace, so user
    # objects such as open files are finalised and flushed). The server's frames this passes
    # through do nothing in a child; :func:`_leave_kernel`, the first atexit hook registered and so
    # the last to run, then skips the module teardown (~70 ms with pandas loaded).
    raise SystemExit(_kernel_exit_status)


def _finish_shutdown_reply(app: Any) -> None:
    """The one place that touches an ipykernel attribute beyond the application API.

    A ``shutdown_request`` is handled on ipykernel's control thread: it stops the main loop (so
    ``app.start()`` returns here) and then still flushes IOPub. The atexit hook ``app.close()``
    stops IOPub and joins the control thread, so if that flush is still pending each waits for
    the other until IOStream's 10 s flush timeout (measured: ~1 shutdown in 150 took 12 s and was
    SIGKILLed). Waiting for the control thread first — what ``close()`` itself does, just before
    IOPub is stopped — makes a graceful shutdown take milliseconds. ``control_thread`` is a
    public attribute of ``IPKernelApp`` (ipykernel >= 6); without it, nothing is waited for.
    """
    control = getattr(app, "control_thread", None)
    if isinstance(control, threading.Thread) and control.is_alive():
        control.join(2.0)


def _leave_kernel() -> None:
    """Last atexit hook: in a forked kernel, flush and ``_exit``; in the server, nothing."""
    if _kernel_exit_status is None:
        return
    with contextlib.suppress(BaseException):
        gc.collect()
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            if stream is not None:
                stream.flush()
    os._exit(_kernel_exit_status)


def _fork() -> int:
    """``os.fork()``; Python 3.12+ warns when other threads exist, which the fork-safety check
    has already vetted (only :data:`FORK_SAFE_THREAD_NAMES` may run)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def native_threads() -> list[str] | None:
    """Names of this process's other threads, as the kernel sees them (``/proc/self/task``):
    Python threads and threads started by C libraries alike. None without ``/proc``."""
    me = str(threading.get_native_id())
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    names = []
    for tid in tasks:
        if tid == me:
            continue
        try:
            with open(f"/proc/self/task/{tid}/comm") as comm:
                names.append(comm.read().strip())
        except OSError:
            continue  # ended meanwhile
    return names


def fork_safety_problem() -> str | None:
    """Why forking this process now would be unsafe, or None if it is safe.

    Any other Python thread is a problem. Native threads are counted after one probe fork, so
    libraries that stop their threads in a ``pthread_atfork`` handler (OpenBLAS) are not; what is
    still running then, except :data:`FORK_SAFE_THREAD_NAMES`, is.
    """
    others = [thread.name for thread in threading.enumerate()]
    others.remove(threading.current_thread().name)
    if others:
        return f"started {len(others)} Python thread(s) ({', '.join(sorted(others))})"
    pid = _fork()
    if pid == 0:
        os._exit(0)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    names = native_threads()
    if names is None:
        return None  # no /proc (not Linux): Python threads are all that can be seen
    unsafe = sorted(name for name in names if name not in FORK_SAFE_THREAD_NAMES)
    if unsafe:
        return f"left {len(unsafe)} native thread(s) running ({', '.join(unsafe)})"
    return None


def _module_path(name: str) -> str:
    """What ``sys.argv[0]`` is in a kernel started with ``python -m <name>``."""
    with contextlib.suppress(ImportError, ValueError, AttributeError):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations is not None:
            spec = importlib.util.find_spec(f"{name}.__main__")  # -m <package>
        if spec is not None and spec.origin:
            return spec.origin
    return name


def _reseed() -> None:
    """Forked kernels must not share the server's random state."""
    random.seed()
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        with contextlib.suppress(Exception):
            numpy_random.seed()


def _log(text: str) -> None:
    with contextlib.suppress(OSError):
        sys.stderr.write(f"[mage_nb_sched.kernel_forkserver {os.getpid()}] {text}\n")
        sys.stderr.flush()


def _preload(names: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    loaded: list[str] = []
    failed: dict[str, str] = {}
    for name in names:
        try:
            importlib.import_module(name)
        except BaseException as error:  # a broken optional module must not stop the server
            failed[name] = f"{type(error).__name__}: {error}"
        else:
            loaded.append(name)
    return loaded, failed


def _parse_args(argv: Sequence[str]) -> dict[str, Any]:
    flags = {"--fd", "--parent-pid", "--preload", "--optional"}
    options: dict[str, str] = {}
    items = list(argv)
    while items:
        flag = items.pop(0)
        if flag not in flags or not items:
            raise SystemExit(
                "usage: kernel_forkserver.py --fd N --parent-pid P [--preload JSON] "
                f"[--optional JSON]; got {flag!r}"
            )
        options[flag] = items.pop(0)
    parsed: dict[str, Any] = {
        "fd": int(options["--fd"]),
        "parent_pid": int(options["--parent-pid"]),
    }
    for flag in ("--preload", "--optional"):
        names = json.loads(options.get(flag, "[]"))
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise SystemExit(f"{flag} must be a JSON list of module names")
        parsed[flag[2:]] = names
    return parsed


def _installed(name: str) -> bool:
    """Whether ``name``'s top-level package can be imported (without importing it)."""
    with contextlib.suppress(ImportError, ValueError):
        return importlib.util.find_spec(name.partition(".")[0]) is not None
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fork server until its client stops it or goes away."""
    options = _parse_args(sys.argv[1:] if argv is None else argv)
    fd, parent_pid = options["fd"], options["parent_pid"]
    pdeathsig = set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent_pid:
        return 1  # the parent died before prctl() took effect
    sock = socket.socket(fileno=fd)
    # First registered, so last to run: a forked kernel's exit runs every other hook first.
    atexit.register(_leave_kernel)
    # Terminal signals go to the pool's process group, not ours (we run in our own session), but
    # be explicit: only the client decides when the server stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    # The kernel's own modules are best effort (a missing one only costs speed), except the app.
    kernel_loaded, kernel_failed = _preload(KERNEL_MODULES)
    loaded, failed = _preload(options["preload"])
    hello: dict[str, Any] = {
        "type": "hello",
        "version": PROTOCOL_VERSION,
        "pid": os.getpid(),
        "pdeathsig": pdeathsig,
        "pidfd": hasattr(os, "pidfd_open"),
        "preloaded": loaded,
        "failed": failed,
        "optional": options["optional"],
        "kernel_modules_missing": sorted(kernel_failed),
    }
    if KERNEL_MODULES[0] not in kernel_loaded:
        hello["error"] = f"cannot import ipykernel: {kernel_failed.get(KERNEL_MODULES[0])}"
    elif (problem := fork_safety_problem()) is not None:
        # fork() only copies the calling thread; locks held by others would deadlock the kernels.
        hello["error"] = (
            f"importing ipykernel and preloading {options['preload']} {problem}; "
            "forking would be unsafe"
        )
    hello["threads"] = native_threads()
    with contextlib.suppress(OSError):
        send_message(sock, hello)
    if "error" in hello:
        return 1
    # Everything imported so far is shared copy-on-write with the kernels; keep the collector from
    # touching (and so copying) those pages in every child.
    gc.freeze()
    _Server(sock, parent_pid, options["optional"]).serve()
    return 0


if __name__ == "__main__":
    # Run as a script, sys.path[0] is this package's directory: its modules (settings, errors,
    # models, ...) would shadow top-level imports in every kernel. A kernel started the normal way
    # (``python -m ipykernel_launcher``) drops its sys.path[0] too; IPython then adds '' back.
    if sys.path and os.path.dirname(os.path.abspath(__file__)) == os.path.abspath(sys.path[0]):
        del sys.path[0]
    sys.exit(main())
