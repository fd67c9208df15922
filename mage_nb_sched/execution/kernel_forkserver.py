"""The kernel fork server ("zygote"): a warm interpreter that forks ready-to-start IPython kernels.

Starting an IPython kernel the normal way costs a fresh interpreter plus ~0.5 s of imports (IPython,
ipykernel, tornado, zmq, debugpy). This process pays that once: it imports everything a kernel needs
— **without** creating a zmq context, an event loop or a thread, so forking it is safe — and then
serves fork requests. Each forked child becomes one ``IPKernelApp`` on the connection file it was
given, so a kernel costs only the app's own initialisation (~0.1 s CPU).

It is started by :class:`mage_nb_sched.execution.kernels.ForkServer` as a *fresh interpreter*
running this file as a script (not ``-m mage_nb_sched...``, which would import the package and
everything it pulls in into every kernel)::

    python .../kernel_forkserver.py --fd N --parent-pid P [--preload '["pandas"]']

Protocol: one ``AF_UNIX``/``SOCK_SEQPACKET`` socket (fd ``N``), one JSON object per packet.

* server → client ``{"type": "hello", "version", "pid", "pdeathsig", "pidfd", "preloaded",
  "failed", "kernel_modules_missing"}`` once the imports are done (or the same with ``"error"``,
  then exit, if ipykernel is missing or forking would be unsafe);
* client → server ``{"type": "fork", "id", "argv", "cwd", "env_set", "env_unset", "module"}``;
  ``argv`` are ``IPKernelApp`` arguments (``-f <connection file>`` and the kernelspec's extra ones);
* server → client ``{"type": "forked", "id", "pid"}`` with the child's pidfd attached
  (``SCM_RIGHTS``) when the platform has ``pidfd_open``, or ``{"type": "error", "id", "error"}``;
* server → client ``{"type": "exit", "pid", "returncode"}`` whenever a child is reaped;
* client → server ``{"type": "stop"}``, or end of file: SIGKILL every child's process group, exit.

Lifetime: the server sets ``PR_SET_PDEATHSIG(SIGKILL)`` so it dies with the process that started it
(even on ``kill -9``), and so does every kernel with respect to the server, so no kernel outlives
the process that owns the pool. End of file on the socket is a second, portable signal.

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
from collections.abc import Sequence
from typing import Any, NoReturn

#: Bump when the messages change; the client refuses a server with another version.
PROTOCOL_VERSION = 1
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
_PR_SET_PDEATHSIG = 1


def set_pdeathsig(signum: int = signal.SIGKILL) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent (thread) dies.

    Returns False where ``prctl`` is unavailable (non-Linux); callers then rely on end of file on
    the control socket and ipykernel's parent poller.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def send_message(
    sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()
) -> None:
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

    def __init__(self, sock: socket.socket, parent_pid: int) -> None:
        self.sock = sock
        self.parent_pid = parent_pid
        self.pid = os.getpid()
        self.children: set[int] = set()
        self.selector: selectors.BaseSelector | None = None
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
            self._fork(message)
            return True
        self._send({"type": "error", "id": message.get("id"), "error": "unknown request type"})
        return True

    def _fork(self, request: dict[str, Any]) -> None:
        try:
            pid = os.fork()
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
            self.children.discard(pid)
            returncode = os.waitstatus_to_exitcode(status)
            self._send({"type": "exit", "pid": pid, "returncode": returncode})

    def _send(self, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
        # If the client is gone, the next read sees end of file and the loop stops.
        with contextlib.suppress(OSError):
            send_message(self.sock, message, fds)

    def _kill_children(self) -> None:
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


def _become_kernel(request: dict[str, Any], server: _Server) -> NoReturn:
    """Turn a freshly forked child into an IPython kernel. Never returns into the server loop."""
    code = 1
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

        from ipykernel.kernelapp import IPKernelApp

        app: Any = IPKernelApp.instance()
        app.initialize(argv)
        app.start()
        code = 0
        # A shutdown_request stops this loop from the control thread, which then still flushes
        # IOPub. atexit's app.close() stops IOPub and joins the control thread: if that flush is
        # still pending, both wait for each other until IOStream's 10 s flush timeout.
        control = getattr(app, "control_thread", None)
        if control is not None and control.is_alive():
            control.join(2.0)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc(file=sys.__stderr__)
    finally:
        # A normal interpreter exit would run atexit hooks (IPython's clears the user namespace, so
        # user objects such as open files are finalised and flushed) and flush stdio; do that much,
        # then leave without unwinding into the server's frames.
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
            gc.collect()
            for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
                if stream is not None:
                    stream.flush()
        os._exit(code)


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


def _parse_args(argv: Sequence[str]) -> tuple[int, int, list[str]]:
    options: dict[str, str] = {}
    items = list(argv)
    while items:
        flag = items.pop(0)
        if flag not in {"--fd", "--parent-pid", "--preload"} or not items:
            raise SystemExit(
                f"usage: kernel_forkserver.py --fd N --parent-pid P [--preload JSON]; got {flag!r}"
            )
        options[flag] = items.pop(0)
    preload = json.loads(options.get("--preload", "[]"))
    if not isinstance(preload, list) or not all(isinstance(name, str) for name in preload):
        raise SystemExit("--preload must be a JSON list of module names")
    return int(options["--fd"]), int(options["--parent-pid"]), preload


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fork server until its client stops it or goes away."""
    fd, parent_pid, extra_preload = _parse_args(sys.argv[1:] if argv is None else argv)
    pdeathsig = set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent_pid:
        return 1  # the parent died before prctl() took effect
    sock = socket.socket(fileno=fd)
    # Terminal signals go to the pool's process group, not ours (we run in our own session), but
    # be explicit: only the client decides when the server stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    # The kernel's own modules are best effort (a missing one only costs speed), except the app.
    kernel_loaded, kernel_failed = _preload(KERNEL_MODULES)
    loaded, failed = _preload(extra_preload)
    hello: dict[str, Any] = {
        "type": "hello",
        "version": PROTOCOL_VERSION,
        "pid": os.getpid(),
        "pdeathsig": pdeathsig,
        "pidfd": hasattr(os, "pidfd_open"),
        "preloaded": loaded,
        "failed": failed,
        "kernel_modules_missing": sorted(kernel_failed),
    }
    if KERNEL_MODULES[0] not in kernel_loaded:
        hello["error"] = f"cannot import ipykernel: {kernel_failed.get(KERNEL_MODULES[0])}"
    elif threading.active_count() != 1:
        # fork() only copies the calling thread; locks held by others would deadlock the kernels.
        hello["error"] = (
            f"preloading {extra_preload} started {threading.active_count() - 1} Python thread(s); "
            "forking would be unsafe"
        )
    with contextlib.suppress(OSError):
        send_message(sock, hello)
    if "error" in hello:
        return 1
    # Everything imported so far is shared copy-on-write with the kernels; keep the collector from
    # touching (and so copying) those pages in every child.
    gc.freeze()
    _Server(sock, parent_pid).serve()
    return 0


if __name__ == "__main__":
    # Run as a script, sys.path[0] is this package's directory: its modules (settings, errors,
    # models, ...) would shadow top-level imports in every kernel. A kernel started the normal way
    # (``python -m ipykernel_launcher``) drops its sys.path[0] too; IPython then adds '' back.
    if sys.path and os.path.dirname(os.path.abspath(__file__)) == os.path.abspath(sys.path[0]):
        del sys.path[0]
    sys.exit(main())
