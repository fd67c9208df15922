"""Process helpers for tests that must prove no process is left behind (reads /proc)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def descendants(root: int) -> set[int]:
    """Children, grandchildren... of ``root`` (from /proc). Call it while the tree is intact:
    orphans re-parented elsewhere are not found."""
    found: set[int] = set()
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        for task in tasks(pid):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    frontier.append(child)
    return found


def tasks(pid: int) -> list[Path]:
    """The ``/proc/<pid>/task/<tid>`` dirs of ``pid``; empty once the process is gone.

    Race-free: ``Path.glob`` checks that the dir exists and *then* lists it, so a process that
    ends in between made it raise ``FileNotFoundError``. Here the listing itself is the check.
    """
    root = Path(f"/proc/{pid}/task")
    try:
        names = os.listdir(root)
    except OSError:  # FileNotFoundError/ProcessLookupError: gone (or never was)
        return []
    return [root / name for name in names]


def running(pid: int) -> bool:
    """Whether any thread of process ``pid`` still runs (not a zombie, not dead).

    The leader shows "Z" as soon as *its* thread has exited, while other threads may still be
    tearing down; a process is gone when every thread is a zombie or gone. A process (or thread)
    that vanishes at any point while it is being looked at counts as not running.
    """
    for task in tasks(pid):
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in {"Z", "X"}:
            return True
    return False


def child_pids() -> set[int]:
    """Direct and indirect children of this process."""
    return descendants(os.getpid())


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def wait_until(predicate: Any, timeout: float = 20.0) -> bool:
    """Poll a condition with a deadline (no fixed sleeps standing in for synchronisation)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(predicate())


async def until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Poll ``predicate`` (bounded, without blocking the event loop) until it returns something
    truthy, and return that; fail the test with ``what`` if it does not within ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or predicate}")
        await asyncio.sleep(0.02)
