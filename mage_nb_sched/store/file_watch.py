"""Watching the project dir for files that matter (``*.triggers.yaml``; the files local file
events fire on) through the OS's file events (inotify, FSEvents, ReadDirectoryChangesW via
``watchfiles``) instead of walking the whole project every few seconds.

A :class:`FileWatcher` runs ``watchfiles.watch`` on a thread of its own and calls ``on_change``
with the set of changed paths that pass its filter, and — when given ``on_file_events`` — that
callback with every file added or modified anywhere in the project that
:func:`event_file_path` accepts (local file events). The callbacks run on that thread: keep
them short (the scheduler only queues the paths and wakes its loop).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

#: Folders whose files never matter: dependencies, caches, VCS and the data dir (hidden).
IGNORED_FOLDERS = frozenset({"node_modules", "__pycache__", "site-packages"})
#: What a file event reports: a file appeared, or its content changed.
CREATED = "created"
MODIFIED = "modified"
_FILE_EVENT_KINDS = {"added": CREATED, "modified": MODIFIED}
#: Files of a folder that appears at once (moved or copied in) that fire file events.
MAX_NEW_FOLDER_FILES = 10_000


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


def event_file_path(path: Path, root: Path) -> str | None:
    """The project-relative POSIX path of a file that local file events may fire on, or
    ``None`` when the file never fires one: outside ``root`` (also through a link), hidden (its
    name or a folder on its way starts with ``.``: the data dir ``.mage_nb_sched/``,
    ``.ipynb_checkpoints``, ``.git``), or in a dependency or cache folder."""
    try:
        relative = Path(path).relative_to(root)
    except ValueError:
        return None
    parts = relative.parts
    if not parts or any(
        part.startswith(".") or part in IGNORED_FOLDERS or part == ".." for part in parts
    ):
        return None
    try:
        # A link inside the project may point out of it: such a file is not the project's.
        Path(path).resolve().relative_to(root.resolve())
    except (OSError, ValueError):
        return None
    return str(PurePosixPath(*parts))


class FileWatcher:
    """Calls ``on_change(paths)`` when files ending in one of ``suffixes`` under ``root`` are
    added, changed or removed, and ``on_file_events([(kind, path), ...])`` (when given) when
    any file :func:`event_file_path` accepts is added (``"created"``) or modified
    (``"modified"``; watchfiles reports a batch as a set, so a file created and written within
    one batch is reported with both kinds). ``start()`` / ``stop()``; stopping joins the
    thread."""

    def __init__(
        self,
        root: Path,
        suffixes: Iterable[str],
        on_change: Callable[[set[Path]], None],
        *,
        debounce_ms: int = 50,
        on_file_events: Callable[[list[tuple[str, Path]]], None] | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.suffixes = tuple(suffixes)
        self.on_change = on_change
        self.on_file_events = on_file_events
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

    def _watched(self, path: str) -> bool:
        candidate = Path(path)
        # Directories are let through so that removing a folder reports the files in it.
        return wanted(candidate, self.root, self.suffixes) or not candidate.suffix

    def _filter(self, change: object, path: str) -> bool:
        if self._watched(path):
            return True
        return self.on_file_events is not None and self._file_event(change, path) is not None

    def _file_event(self, change: object, path: str) -> str | None:
        """``created`` / ``modified`` for a change a file event fires on, else None."""
        # watchfiles' Change enum by name: no import of watchfiles before the thread runs.
        kind = _FILE_EVENT_KINDS.get(str(getattr(change, "name", "")))
        if kind is None or event_file_path(Path(path), self.root) is None:
            return None
        return kind

    def _report(self, changes: Iterable[tuple[object, str]]) -> None:
        paths = {Path(path) for change, path in changes if self._watched(path)}
        if paths:
            try:
                self.on_change(paths)
            except Exception:  # the watcher outlives a failing callback
                log.exception("file watch callback failed for %s", sorted(paths)[:5])
        if self.on_file_events is None:
            return
        events: list[tuple[str, Path]] = []
        for change, path in changes:
            kind = self._file_event(change, path)
            if kind is None:
                continue
            candidate = Path(path)
            if candidate.is_dir():
                if kind == CREATED:
                    # Files written into a new folder before the OS watch on it was in place
                    # are never reported (``mkdir -p a/b && cp x a/b/``): find them here.
                    events.extend((CREATED, found) for found in self._files_below(candidate))
                continue
            events.append((kind, candidate))
        if events:
            try:
                self.on_file_events(events)
            except Exception:
                log.exception("file event callback failed for %s", [str(p) for _, p in events[:5]])

    def _files_below(self, folder: Path) -> list[Path]:
        """The files in a new folder that file events may fire on (at most
        :data:`MAX_NEW_FOLDER_FILES`)."""
        found: list[Path] = []
        for current, folders, files in os.walk(folder):
            folders[:] = [
                name
                for name in folders
                if not name.startswith(".") and name not in IGNORED_FOLDERS
            ]
            for name in files:
                path = Path(current) / name
                if event_file_path(path, self.root) is not None:
                    found.append(path)
                if len(found) >= MAX_NEW_FOLDER_FILES:
                    log.warning(
                        "a new folder %s holds over %d files: file events fire for the first %d",
                        folder,
                        MAX_NEW_FOLDER_FILES,
                        MAX_NEW_FOLDER_FILES,
                    )
                    return found
        return found

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
                self._report(changes)
        except Exception:
            log.exception("watching %s for file changes stopped", self.root)
