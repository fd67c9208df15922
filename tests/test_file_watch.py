"""The project file watcher (watchfiles / inotify): real files, a real watcher thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from mage_nb_sched.store.file_watch import FileWatcher, wanted


def test_wanted_skips_hidden_and_dependency_folders(tmp_path: Path) -> None:
    suffixes = (".triggers.yaml",)
    assert wanted(tmp_path / "etl" / "daily.triggers.yaml", tmp_path, suffixes)
    assert not wanted(tmp_path / "etl" / "daily.ipynb", tmp_path, suffixes)
    assert not wanted(tmp_path / ".git" / "x.triggers.yaml", tmp_path, suffixes)
    assert not wanted(tmp_path / ".mage_nb_sched" / "x.triggers.yaml", tmp_path, suffixes)
    assert not wanted(tmp_path / "node_modules" / "a" / "x.triggers.yaml", tmp_path, suffixes)
    assert not wanted(Path("/elsewhere/x.triggers.yaml"), tmp_path, suffixes)


def test_changes_to_watched_files_are_reported_and_others_are_not(tmp_path: Path) -> None:
    seen: list[set[Path]] = []
    arrived = threading.Event()

    def on_change(paths: set[Path]) -> None:
        seen.append(paths)
        arrived.set()

    (tmp_path / "etl").mkdir()
    watcher = FileWatcher(tmp_path, (".triggers.yaml",), on_change, debounce_ms=20)
    watcher.start()
    target = tmp_path / "etl" / "daily.triggers.yaml"
    noise = tmp_path / "etl" / "daily.ipynb"
    try:
        # The OS watch comes up asynchronously (watchfiles has no ready signal): keep touching
        # until the first event arrives, bounded.
        deadline = time.monotonic() + 20
        while not arrived.is_set() and time.monotonic() < deadline:
            noise.write_text("{}", encoding="utf-8")
            target.write_text(f"triggers: []  # {time.monotonic()}\n", encoding="utf-8")
            arrived.wait(0.1)
        assert arrived.is_set(), "no file event within 20 s"
        reported = set().union(*seen)
        assert target.resolve() in {p.resolve() for p in reported}
        assert noise.resolve() not in {p.resolve() for p in reported}

        # A removal is a change too (the scheduler then marks the file's schedules orphaned).
        arrived.clear()
        seen.clear()
        target.unlink()
        assert arrived.wait(20)
        assert target.resolve() in {p.resolve() for p in set().union(*seen)}
    finally:
        watcher.stop()
    assert watcher._thread is None
