"""Local file events: a real watcher (watchfiles / inotify) in a real scheduler fires an event
schedule once per file dropped in the folder it watches."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from processes import until
from stub_executor import StubExecutor
from traitlets.config import Config

from mage_nb_sched.scheduling.loop import Scheduler
from mage_nb_sched.service import events, runs, schedules
from mage_nb_sched.store import Store
from mage_nb_sched.store.file_watch import FileWatcher


def make_scheduler(store: Store) -> Scheduler:
    config = Config()
    config.Scheduler.file_event_settle = 0.05
    config.Scheduler.trigger_scan_interval = 3600.0
    return Scheduler(store, executor=StubExecutor(store, auto_complete=True), config=config)


async def watcher_is_up(scheduler: Scheduler, ping: Path) -> None:
    """watchfiles gives no signal once its OS watch is in place: touch a file until the
    scheduler has handled a batch of file changes (bounded)."""
    ping.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(300):
        ping.write_text(f"ping {attempt}\n", encoding="utf-8")
        try:
            await until(lambda: scheduler.file_event_batches > 0, 0.1, "a first batch")
            return
        except AssertionError:
            continue
    raise AssertionError("the file watcher reported nothing within 30 s")


async def handled(scheduler: Scheduler, ping: Path) -> None:
    """A barrier: every change made before this call has been handled once the scheduler has
    handled a batch holding a change made now (the OS reports changes in order)."""
    before = scheduler.file_event_batches
    ping.write_text(f"barrier {before}\n", encoding="utf-8")
    await until(lambda: scheduler.file_event_batches > before, 20, "the barrier batch")


def test_a_file_dropped_in_a_watched_folder_fires_once(store: Store, project_dir: Path) -> None:
    watched = schedules.create_schedule(
        store,
        name="incoming_csv",
        pipeline_uuid="my_pipeline",
        schedule_type="event",
        status="active",
        variables={"event_type": "file:*", "path": "incoming/*.csv"},
    )
    s3_only = schedules.create_schedule(
        store,
        name="s3_uploads",
        pipeline_uuid="etl/daily",
        schedule_type="event",
        status="active",
        variables={"event_type": "s3:ObjectCreated:*", "bucket": "my-data-bucket"},
    )
    incoming = project_dir / "incoming"
    incoming.mkdir()
    ping = project_dir / "ping" / "ping.txt"

    def watched_runs() -> list[Any]:
        return runs.list_runs(store, schedule_id=watched.id)

    async def scenario() -> None:
        scheduler = make_scheduler(store)
        standby = make_scheduler(store)
        await scheduler.start()
        await standby.start()
        try:
            await until(lambda: scheduler.is_leader, 10, "the scheduler leads")
            assert not standby.is_leader
            await watcher_is_up(scheduler, ping)

            # One file lands (created and written), next to files the glob does not take.
            (incoming / "a.csv").write_text("id,amount\n1,9.5\n", encoding="utf-8")
            (incoming / "notes.txt").write_text("not a csv\n", encoding="utf-8")
            (incoming / ".a.csv.swp").write_text("editor swap\n", encoding="utf-8")
            (project_dir / "other").mkdir()
            (project_dir / "other" / "b.csv").write_text("1\n", encoding="utf-8")
            (project_dir / ".mage_nb_sched" / "stray.csv").write_text("1\n", encoding="utf-8")
            made = await until(watched_runs, 20, "a run for incoming/a.csv")
            await handled(scheduler, ping)
            assert len(watched_runs()) == 1, [r.event_variables for r in watched_runs()]
            [run] = made
            assert run.event_variables == {"event_type": "file:created", "path": "incoming/a.csv"}
            assert run.execution_partition.startswith(f"{watched.id}/")
            # The scheduler executes it like any run.
            await until(
                lambda: str(runs.get_run(store, run.id).status) == "completed", 20, "it runs"
            )

            # New content: one file:modified event.
            (incoming / "a.csv").write_text("id,amount\n1,9.5\n2,3.0\n", encoding="utf-8")
            await until(lambda: len(watched_runs()) == 2, 20, "a run for the rewrite")
            await handled(scheduler, ping)
            assert len(watched_runs()) == 2
            assert watched_runs()[1].event_variables == {
                "event_type": "file:modified",
                "path": "incoming/a.csv",
            }
            assert runs.list_runs(store, schedule_id=s3_only.id) == []
            assert scheduler.file_events_fired == 2
            # Only the scheduler holding the lease fires file events.
            assert standby.file_event_batches == 0
        finally:
            await standby.stop(grace=0)
            await scheduler.stop(grace=0)

    asyncio.run(scenario())
    assert len(runs.list_runs(store)) == 2


def test_a_paused_schedule_or_a_file_outside_the_glob_fires_nothing(
    store: Store, project_dir: Path
) -> None:
    paused = schedules.create_schedule(
        store,
        name="paused_csv",
        pipeline_uuid="my_pipeline",
        schedule_type="event",
        status="inactive",
        variables={"event_type": "file:*", "path": "incoming/*.csv"},
    )
    deep = schedules.create_schedule(
        store,
        name="deep_parquet",
        pipeline_uuid="my_pipeline",
        schedule_type="event",
        status="active",
        variables={"event_type": "file:created", "path": "lake/**/*.parquet"},
    )
    ping = project_dir / "ping" / "ping.txt"

    async def scenario() -> None:
        scheduler = make_scheduler(store)
        await scheduler.start()
        try:
            await until(lambda: scheduler.is_leader, 10, "the scheduler leads")
            await watcher_is_up(scheduler, ping)
            (project_dir / "incoming").mkdir()
            (project_dir / "incoming" / "a.csv").write_text("1\n", encoding="utf-8")
            # Written into folders made just before: faster than the OS watch on them.
            (project_dir / "lake" / "2024" / "01").mkdir(parents=True)
            (project_dir / "lake" / "top.csv").write_text("1\n", encoding="utf-8")
            (project_dir / "lake" / "2024" / "01" / "part-0.parquet").write_bytes(b"PAR1")
            # A folder moved in whole: only the folder is reported, its files are found.
            staging = project_dir.parent / "staging" / "02"
            staging.mkdir(parents=True)
            (staging / "part-1.parquet").write_bytes(b"PAR1")
            staging.rename(project_dir / "lake" / "2024" / "02")
            await until(
                lambda: len(runs.list_runs(store, schedule_id=deep.id)) == 2, 20, "two runs"
            )
            await handled(scheduler, ping)
        finally:
            await scheduler.stop(grace=0)

    asyncio.run(scenario())
    assert runs.list_runs(store, schedule_id=paused.id) == []
    assert sorted(run.event_variables["path"] for run in runs.list_runs(store)) == [
        "lake/2024/01/part-0.parquet",
        "lake/2024/02/part-1.parquet",
    ]
    assert {run.event_variables["event_type"] for run in runs.list_runs(store)} == {"file:created"}


def test_the_watcher_reports_created_and_modified_files_but_not_hidden_ones(
    tmp_path: Path,
) -> None:
    reported: list[tuple[str, Path]] = []
    seen_trigger_files: list[set[Path]] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()

        def on_file_events(changes: list[tuple[str, Path]]) -> None:
            reported.extend(changes)
            loop.call_soon_threadsafe(arrived.set)

        watcher = FileWatcher(
            tmp_path,
            (".triggers.yaml",),
            seen_trigger_files.append,
            debounce_ms=20,
            on_file_events=on_file_events,
        )
        watcher.start()
        try:
            for attempt in range(300):
                (tmp_path / "warm.txt").write_text(str(attempt), encoding="utf-8")
                try:
                    await asyncio.wait_for(arrived.wait(), 0.1)
                    break
                except asyncio.TimeoutError:
                    continue
            assert arrived.is_set(), "no file event within 30 s"
            reported.clear()
            arrived.clear()
            (tmp_path / ".hidden.csv").write_text("x", encoding="utf-8")
            (tmp_path / "x.triggers.yaml").write_text("triggers: []\n", encoding="utf-8")
            (tmp_path / "data.csv").write_text("x", encoding="utf-8")
            await until(
                lambda: any(path.name == "data.csv" for _, path in reported), 20, "data.csv"
            )
        finally:
            watcher.stop()

    asyncio.run(scenario())
    names = {path.name for _, path in reported}
    assert "data.csv" in names and ".hidden.csv" not in names
    assert {kind for kind, path in reported if path.name == "data.csv"} <= {"created", "modified"}
    # The triggers.yaml callback still gets its file (and only the files it watches).
    assert any(path.name == "x.triggers.yaml" for batch in seen_trigger_files for path in batch)
    assert not any(path.name == "data.csv" for batch in seen_trigger_files for path in batch)
    assert events.FILE_EVENT_TYPES == ("file:created", "file:modified")
