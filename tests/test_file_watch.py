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


def test_the_scheduler_syncs_a_new_triggers_file_without_waiting_for_a_rescan(
    store: object, project_dir: Path
) -> None:
    import asyncio

    from processes import until
    from stub_executor import StubExecutor
    from traitlets.config import Config

    from mage_nb_sched.scheduling.loop import Scheduler
    from mage_nb_sched.service import schedules

    async def scenario() -> None:
        config = Config()
        config.Scheduler.trigger_scan_interval = 3600.0  # the rescan alone would take an hour
        scheduler = Scheduler(store, executor=StubExecutor(store), config=config)
        await scheduler.start()
        try:
            await until(lambda: scheduler.is_leader, 10, "the scheduler leads")
            # The first maintenance round (the initial full scan) has run once the file thread
            # has synced an empty project; from then on only the watcher can bring the file in.
            await until(lambda: scheduler._trigger_files is not None, 10, "the initial scan")
            path = project_dir / "my_pipeline.triggers.yaml"
            found = None
            for attempt in range(200):  # the OS watch comes up asynchronously: rewrite until seen
                path.write_text(
                    "triggers:\n- name: from_file\n  schedule_interval: '@daily'\n"
                    f"  description: attempt {attempt}\n",
                    encoding="utf-8",
                )
                try:
                    await until(
                        lambda: schedules.find_schedule(store, "my_pipeline", "from_file"),
                        0.1,
                        "synced",
                    )
                except AssertionError:
                    continue
                found = schedules.find_schedule(store, "my_pipeline", "from_file")
                break
            assert found is not None and found.in_code
        finally:
            await scheduler.stop(grace=0)
        assert scheduler._file_watcher is None  # stopped with the scheduler

    asyncio.run(scenario())
