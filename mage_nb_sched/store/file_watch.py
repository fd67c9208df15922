"""Watching the project dir for files that matter (``*.triggers.yaml`` today; event files
later) through the OS's file events (inotify, FSEvents, ReadDirectoryChangesW via
``watchfiles``) instead of walking the whole project every few seconds.

A :class:`FileWatcher` runs ``watchfiles.watch`` on a thread of its own and calls ``on_change``
with the set of changed paths that pass its filter. The callback runs on that thread: keep it
short (the scheduler only sets a flag and wakes its loop).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

#: Folders whose files never matter: dependencies, caches, VCS and the data dir (hidden).
IGNORED_FOLDERS = frozenset({"node_modules", "__pycache__", "site-packages"})


def wanted(path: Path, root: Path, suffixes: Iterable[str]) -> bool:
    """Whether a changed ``path`` is a file we watch: one of ``suffixes``, not inside a hidden
    or ignored folder below ``root``."""
    if not any(path.name.endswith(suffix) for suffix in suffixes):
        return False
    try:
        parts = path.relative_to(root).parts[:-1]
    except ValueError:
        return False
    return not any(part.startswith(".") or part in IGNORED_FOLDERS for part in parts)


class FileWatcher:
    """Calls ``on_change(paths)`` when files ending in one of ``suffixes`` under ``root`` are
    added, changed or removed. ``start()`` / ``stop()``; stopping joins the thread."""

    def __init__(
        self,
        root: Path,
        suffixes: Iterable[str],
        on_change: Callable[[set[Path]], None],
        *,
        debounce_ms: int = 50,
    ) -> None:
        self.root = Path(root).resolve()
        self.suffixes = tuple(suffixes)
        self.on_change = on_change
        self.debounce_ms = debounce_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name="mage-nb-file-watch", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)

    def _filter(self, _change: object, path: str) -> bool:
        candidate = Path(path)
        # Directories are let through so that removing a folder reports the files in it.
        return wanted(candidate, self.root, self.suffixes) or not candidate.suffix

    def _run(self) -> None:
        from watchfiles import watch

        try:
            # watchfiles gives no signal once its OS watch is in place, so a change made while
            # it starts can be missed: callers keep a slow full rescan as a safety net.
            for changes in watch(
                self.root,
                watch_filter=self._filter,
                stop_event=self._stop,
                debounce=self.debounce_ms,
                yield_on_timeout=False,
                raise_interrupt=False,
            ):
                paths = {Path(path) for _change, path in changes}
                try:
                    self.on_change(paths)
                except Exception:  # the watcher outlives a failing callback
                    log.exception("file watch callback failed for %s", sorted(paths)[:5])
        except Exception:
            log.exception("watching %s for file changes stopped", self.root)
