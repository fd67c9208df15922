"""The store's change signal: wakes the scheduler when another connection commits.

SQLite: ``PRAGMA data_version`` on one dedicated connection changes whenever *another*
connection (any process) commits to the database. Reading it costs microseconds and takes no
lock, so a thread polls it every ``poll_interval`` seconds and calls back into the event loop
only when it moved. Other databases have no such counter: the watcher then calls back every
``fallback_interval`` seconds (PostgreSQL LISTEN/NOTIFY is the multi-scheduler issue's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable

from mage_nb_sched.store.engine import Store

log = logging.getLogger(__name__)


class ChangeWatcher:
    """Calls ``on_change`` (on the event loop) soon after any commit to the store's database."""

    def __init__(
        self,
        store: Store,
        on_change: Callable[[], None],
        *,
        poll_interval: float = 0.02,
        fallback_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.on_change = on_change
        self.poll_interval = poll_interval
        self.fallback_interval = fallback_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: How many changes were signalled (for tests and metrics).
        self.signals = 0

    def _sqlite_path(self) -> str | None:
        if not self.store.is_sqlite:
            return None
        return self.store.sqlite_path

    def start(self) -> None:
        """Start watching; must be called from the event loop ``on_change`` should run on."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._watch, name="mage-nb-sched-change-watcher", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the watching thread (returns at once; the thread ends within one interval)."""
        self._stop.set()

    def _signal(self) -> None:
        self.signals += 1
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # RuntimeError: the loop closed between the check and the call.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.on_change)

    def _watch(self) -> None:
        path = self._sqlite_path()
        if path is None:
            while not self._stop.wait(self.fallback_interval):
                self._signal()
            return
        connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            last = connection.execute("PRAGMA data_version").fetchone()[0]
            while not self._stop.wait(self.poll_interval):
                try:
                    version = connection.execute("PRAGMA data_version").fetchone()[0]
                except sqlite3.Error:
                    log.warning("could not read the database's data_version", exc_info=True)
                    continue
                if version != last:
                    last = version
                    self._signal()
        finally:
            connection.close()
