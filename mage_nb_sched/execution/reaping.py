"""Reaping every process a run started, however it detached itself.

A cell can start children that outlive it: ``subprocess.Popen(..., start_new_session=True)``,
``setsid``, a double fork. Killing the kernel's process group does not reach them. Two tools:

* :func:`descendants` walks ``/proc/<pid>/task/*/children`` — a ``setsid`` child is still a
  descendant while its parent lives — so a kernel's whole tree can be killed before the kernel.
* :func:`become_subreaper` (``PR_SET_CHILD_SUBREAPER``): orphans of a kernel (a double fork, a
  child whose parent already exited) are re-parented to the worker instead of to init, where
  :func:`reap_strays` kills and waits for every child the worker does not know.

Linux only; elsewhere these are no-ops (``descendants`` returns nothing).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
from collections.abc import Collection

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (all of its threads'), or ``[]`` when it is gone."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:  # gone, or not Linux
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as handle:
                found.extend(int(child) for child in handle.read().split())
        except (OSError, ValueError):  # the thread or the process ended meanwhile
            continue
    return found


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``, parents before their children."""
    result: list[int] = []
    pending = children(pid)
    seen: set[int] = set()
    while pending:
        child = pending.pop(0)
        if child in seen:
            continue
        seen.add(child)
        result.append(child)
        pending.extend(children(child))
    return result


def kill_quietly(pid: int, sig: int = signal.SIGKILL) -> bool:
    """Send ``sig`` to ``pid``; False when it is already gone."""
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def kill_tree(pid: int, *, include_root: bool = True) -> list[int]:
    """SIGKILL ``pid``'s descendants (found first, so none can re-parent away in between) and,
    with ``include_root``, ``pid`` itself. Returns the pids signalled."""
    tree = descendants(pid)
    # Stop them all first: a process that is stopped cannot fork another one meanwhile.
    for child in tree:
        kill_quietly(child, signal.SIGSTOP)
    signalled = [child for child in tree if kill_quietly(child)]
    if include_root and kill_quietly(pid):
        signalled.append(pid)
    return signalled


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux ≥ 3.4)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def reap_strays(known: Collection[int]) -> list[int]:
    """Kill (with their trees) and wait for every child of this process that is not in
    ``known`` — orphans a subreaper inherited. Returns the pids killed."""
    killed: list[int] = []
    for child in children(os.getpid()):
        if child in known:
            continue
        killed.extend(kill_tree(child))
    for pid in killed:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)
    if killed:
        log.info("killed %d process(es) left behind by finished runs: %s", len(killed), killed)
    return killed


def describe_exit(returncode: int | None) -> str:
    """How a process ended, from a ``subprocess``-style return code (negative: killed by that
    signal; use ``os.waitstatus_to_exitcode`` on a raw ``waitpid`` status first):
    ``killed by SIGKILL``, ``exited with code 3``."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        return f"killed by {_signal_name(-returncode)}"
    return f"exited with code {returncode}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
