"""Process helpers for tests that must prove no process is left behind (reads /proc)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any


def child_pids() -> set[int]:
    """Direct and indirect children of this process (from /proc)."""
    found: set[int] = set()
    frontier = [os.getpid()]
    while frontier:
        pid = frontier.pop()
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                text = (task / "children").read_text()
            except OSError:
                continue
            for child in text.split():
                if int(child) not in found:
                    found.add(int(child))
                    frontier.append(int(child))
    return found


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
