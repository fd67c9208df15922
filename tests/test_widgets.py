"""``mage_nb_sched.widgets``: ScheduleManager and RunTimeline, in process on a real SQLite store
(ipywidgets objects work without a frontend), one backfill executed by a real headless
scheduler on real kernels, and one manager living in a real kernel.

Widgets are created inside a running event loop (as in ipykernel, whose loop runs the
updater's task) unless a test is about the no-loop case (the updater's own thread). Waiting is
``until(...)``: the test reads the store or the widget until it shows what is expected.
"""

from __future__ import annotations

import asyncio
import html
import re
import struct
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from processes import until

from mage_nb_sched.service import backfills, runs, schedules
from mage_nb_sched.service.records import RunRecord, ScheduleRecord
from mage_nb_sched.service.transitions import end_run, set_run_status
from mage_nb_sched.store import Store
from mage_nb_sched.widgets import (
    MAX_POLL_INTERVAL,
    RunTimeline,
    ScheduleManager,
    TimelineData,
    close_all,
    error_line,
)

UTC = timezone.utc
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Threads of the service's shared, bounded pool (they serve every widget and REST call and
#: outlive any one widget by design).
POOL_PREFIX = "mage-nb-svc"


def scenario(body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` on a fresh event loop (the kernel's stands-in)."""
    asyncio.run(body())


def make_schedule(store: Store, name: str = "nightly", **values: Any) -> ScheduleRecord:
    values.setdefault("pipeline_uuid", "my_pipeline")
    values.setdefault("schedule_interval", "@daily")
    return schedules.create_schedule(store, name=name, **values)


def start(store: Store, run_id: int, when: datetime) -> None:
    """initial → running, through the run state machine's writer."""
    with store.write_engine.begin() as connection:
        assert set_run_status(connection, run_id, "running", now=when, started_at=when)


def finish(store: Store, run_id: int, status: str, when: datetime) -> None:
    """running → completed | failed, through the run state machine's writers."""
    with store.write_engine.begin() as connection:
        if status == "completed":
            assert set_run_status(connection, run_id, "completed", now=when, completed_at=when)
        else:
            assert end_run(connection, run_id, status, "it broke", when)


def text_of(widget: Any) -> str:
    """The text an HTML widget shows (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", str(widget.value)))


def history_ids(manager: ScheduleManager) -> list[int]:
    return [int(value) for value in manager.history_frame["id"]]


def history_status(manager: ScheduleManager, run_id: int) -> str | None:
    frame = manager.history_frame
    found = frame.loc[frame["id"] == run_id, "status"]
    return None if found.empty else str(found.iloc[0])


def new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [
        thread
        for thread in threading.enumerate()
        if thread not in before and not thread.name.startswith(POOL_PREFIX)
    ]


# --------------------------------------------------------------------------------------------
# ScheduleManager
# --------------------------------------------------------------------------------------------


def test_the_manager_lists_schedules_and_its_toggle_changes_the_store(store: Store) -> None:
    nightly = make_schedule(store)
    hourly = make_schedule(store, "hourly", schedule_interval="@hourly", status="active")

    async def body() -> None:
        manager = ScheduleManager(poll_interval=0.2)
        try:
            assert manager.updater.mode == "loop"
            await until(lambda: set(manager.rows) == {nightly.id, hourly.id}, what="rows")
            row = manager.rows[nightly.id]
            assert row.name.description == "nightly"
            assert row.toggle.value is False and manager.rows[hourly.id].toggle.value is True
            assert manager.table.children[-len(row.cells) :] == tuple(manager.rows[hourly.id].cells)

            row.toggle.value = True  # what a click does
            await until(
                lambda: str(schedules.get_schedule(store, nightly.id).status) == "active",
                what="the toggle activates the schedule in the store",
            )
            await until(lambda: row.toggle.description == "active", what="the row follows")
            await until(lambda: "now active" in text_of(manager.message), what="the message")
            assert schedules.get_schedule(store, nightly.id).last_enabled_at is not None

            row.toggle.value = False
            await until(
                lambda: str(schedules.get_schedule(store, nightly.id).status) == "inactive",
                what="the toggle pauses it",
            )

            # A change made elsewhere shows without anything being re-run; it writes nothing.
            schedules.update_schedule(store, hourly.id, status="inactive")
            await until(lambda: manager.rows[hourly.id].toggle.value is False, what="follows")
            updated = schedules.get_schedule(store, hourly.id).updated_at
            reads = manager.updater.reads
            await until(lambda: manager.updater.reads >= reads + 2, what="two more reads")
            assert schedules.get_schedule(store, hourly.id).updated_at == updated
            assert "hourly" not in text_of(manager.message)

            # A schedule created meanwhile gets a row; a deleted one loses its row.
            extra = make_schedule(store, "extra", pipeline_uuid="etl/daily")
            await until(lambda: extra.id in manager.rows, what="a new row")
            schedules.delete_schedule(store, extra.id)
            await until(lambda: extra.id not in manager.rows, what="the row goes")
        finally:
            manager.close()

    scenario(body)


def test_run_now_creates_a_run_and_refusals_are_one_line(store: Store, project_dir: Path) -> None:
    paused = make_schedule(store, "paused")
    gone = make_schedule(store, "gone", pipeline_uuid="etl/daily")
    (project_dir / "etl" / "daily.ipynb").unlink()

    async def body() -> None:
        manager = ScheduleManager()
        try:
            await until(lambda: gone.id in manager.rows, what="the rows")
            # A run of a notebook that is not there: refused in one line, nothing created.
            manager.rows[gone.id].run.click()
            await until(lambda: "etl/daily" in manager.message.value, what="the refusal")
            text = text_of(manager.message)
            assert "pipeline_uuid" in text and "Traceback" not in text and "\n" not in text
            assert runs.list_runs(store) == []

            # A paused schedule runs when asked: pausing stops its own runs, not a manual one.
            assert str(schedules.get_schedule(store, paused.id).status) == "inactive"
            manager.rows[paused.id].run.click()
            created: list[RunRecord] = await until(
                lambda: runs.list_runs(store, schedule_id=paused.id), what="a run is created"
            )
            (run,) = created
            assert str(schedules.get_schedule(store, paused.id).status) == "inactive"
            await until(lambda: f"run {run.id} " in manager.message.value, what="message")
            assert "no scheduler is running" in manager.message.value
            assert manager.scheduler_note.value  # says runs wait for a scheduler
            await until(lambda: history_ids(manager) == [run.id], what="the history shows it")
        finally:
            manager.close()

    scenario(body)


@pytest.mark.parametrize(
    "options",
    [
        # The store's change signal wakes the widget: the poll interval is far longer than
        # any wait below, so only the signal can bring the update in time.
        {"poll_interval": MAX_POLL_INTERVAL},
        # Without the change signal: polling alone.
        {"poll_interval": 0.2, "watch_changes": False},
    ],
    ids=["change-signal", "polling"],
)
def test_the_history_updates_live(store: Store, options: dict[str, Any]) -> None:
    nightly = make_schedule(store)
    other = make_schedule(store, "other", pipeline_uuid="etl/daily")
    first = runs.create_run(store, pipeline_schedule_id=nightly.id)

    async def body() -> None:
        manager = ScheduleManager(**options)
        try:
            await until(lambda: history_ids(manager) == [first.id], what="the first run")
            assert manager.selected_id == nightly.id
            assert str(manager.history_frame["execution_date"].dtype) == "datetime64[ns, UTC]"

            second = runs.create_run(store, pipeline_schedule_id=nightly.id)
            runs.create_run(store, pipeline_schedule_id=other.id)  # not shown
            await until(lambda: history_ids(manager) == [first.id, second.id], what="the new run")
            now = datetime.now(UTC)
            start(store, second.id, now)
            await until(lambda: history_status(manager, second.id) == "running", what="running")
            finish(store, second.id, "completed", now + timedelta(seconds=3))
            await until(lambda: history_status(manager, second.id) == "completed", what="completed")
            assert f"data-run-id='{second.id}'" in manager.history.value
            assert manager.rows[nightly.id].values["runs"] == "2"
            assert manager.rows[nightly.id].values["last run"] == "completed"

            # Another schedule's history, picked in the selector.
            manager.selector.value = other.id
            await until(lambda: manager.selected_id == other.id, what="selected")
            await until(lambda: len(history_ids(manager)) == 1, what="the other history")
            assert history_ids(manager) != [first.id]
        finally:
            manager.close()

    scenario(body)


def test_backfill_form_errors_name_the_field_and_write_nothing(store: Store) -> None:
    nightly = make_schedule(store)

    async def body() -> None:
        manager = ScheduleManager()
        try:
            await until(lambda: manager.selected_id == nightly.id, what="selected")
            cases = [
                (None, date(2024, 1, 2), 1, "start_datetime=None: this field is required"),
                (date(2024, 1, 3), date(2024, 1, 2), 1, "end_datetime="),
                (date(2024, 1, 1), date(2024, 1, 2), 0, "interval_units=0"),
            ]
            for begin, end, units, expected in cases:
                manager.message.value = ""
                manager.backfill_start.value = begin
                manager.backfill_end.value = end
                manager.backfill_units.value = units
                manager.backfill_button.click()
                shown = await until(lambda: text_of(manager.message), what=expected)
                assert expected in shown, shown
                assert "Traceback" not in shown
            assert backfills.list_backfills(store) == []
            assert runs.list_runs(store) == []
        finally:
            manager.close()

    scenario(body)


def test_backfill_progress_follows_runs_ended_through_the_state_machine(store: Store) -> None:
    nightly = make_schedule(store, settings={"timezone": "Europe/Berlin"})

    async def body() -> None:
        manager = ScheduleManager()
        try:
            await until(lambda: manager.selected_id == nightly.id, what="selected")
            manager.backfill_start.value = date(2024, 3, 30)
            manager.backfill_end.value = date(2024, 4, 1)
            manager.backfill_interval.value = "day"
            manager.backfill_units.value = 1
            manager.backfill_button.click()
            created = await until(lambda: backfills.list_backfills(store), what="a backfill")
            (backfill,) = created
            await until(lambda: manager.backfill_bar.max == 3, what="three runs in the bar")
            assert manager.backfill_bar.value == 0 and manager.backfill_percent == 0
            backfill_runs = runs.list_runs(store, backfill_id=backfill.id)
            # Midnight in the schedule's zone (across the DST change of 2024-03-31).
            assert [run.execution_date for run in backfill_runs] == [
                datetime(2024, 3, 29, 23, tzinfo=UTC),
                datetime(2024, 3, 30, 23, tzinfo=UTC),
                datetime(2024, 3, 31, 22, tzinfo=UTC),
            ]
            now = datetime.now(UTC)
            for index, run in enumerate(backfill_runs):
                start(store, run.id, now)
                finish(store, run.id, "completed", now + timedelta(seconds=1))
                await until(
                    lambda index=index: manager.backfill_bar.value == index + 1,
                    what=f"{index + 1} finished",
                )
            await until(lambda: manager.backfill_percent == 100, what="100 %")
            assert manager.backfill_bar.description == "100%"
            assert manager.backfill_bar.bar_style == "success"
            assert "3/3 completed" in manager.backfill_label.value
            assert backfills.backfill_progress(store, backfill.id)["done"] == 3
        finally:
            manager.close()

    scenario(body)


@pytest.mark.kernel
def test_a_small_real_backfill_reaches_100_percent(
    store: Store, headless_scheduler: subprocess.Popen[bytes]
) -> None:
    nightly = make_schedule(store)

    async def body() -> None:
        manager = ScheduleManager()
        try:
            await until(lambda: manager.selected_id == nightly.id, what="selected")
            await until(lambda: not manager.scheduler_note.value, 60, "the scheduler is seen")
            manager.backfill_start.value = date(2024, 1, 1)
            manager.backfill_end.value = date(2024, 1, 2)
            manager.backfill_button.click()
            await until(lambda: manager.backfill_bar.max == 2, what="two runs")
            await until(lambda: manager.backfill_percent == 100, 240, "the backfill is done")
            assert manager.backfill_bar.value == 2
            assert manager.backfill_bar.bar_style == "success", manager.backfill_label.value
            (backfill,) = backfills.list_backfills(store)
            assert backfills.backfill_progress(store, backfill.id)["done"] == 2
            statuses = {str(run.status) for run in runs.list_runs(store, backfill_id=backfill.id)}
            assert statuses == {"completed"}
        finally:
            manager.close()

    scenario(body)


def test_closing_stops_the_task_and_leaves_no_thread(store: Store) -> None:
    nightly = make_schedule(store)

    async def body() -> None:
        before = set(threading.enumerate())
        manager = ScheduleManager(poll_interval=0.1)
        timeline = RunTimeline(nightly.id, poll_interval=0.1)
        updaters = [manager.updater, timeline.updater]
        await until(lambda: all(u.reads >= 2 for u in updaters), what="both update")
        assert all(u.alive and u.mode == "loop" for u in updaters)
        assert all(u.watcher is not None for u in updaters)  # the change signal is used
        assert len(new_threads(before)) == 2  # the two change watchers
        manager.close()
        timeline.close()
        await until(lambda: not any(u.alive for u in updaters), what="the tasks end")
        await until(lambda: not new_threads(before), what="the watcher threads end")
        assert all(u.task is not None and u.task.done() for u in updaters)
        assert asyncio.all_tasks() == {asyncio.current_task()}
        assert manager.closed and timeline.closed
        assert close_all() == 0  # nothing left to close
        reads = [u.reads for u in updaters]
        runs.create_run(store, pipeline_schedule_id=nightly.id)
        manager.updater.wake()  # harmless once stopped
        assert [u.reads for u in updaters] == reads

    scenario(body)


def test_without_a_running_loop_the_updater_has_its_own_thread(store: Store) -> None:
    nightly = make_schedule(store)
    before = set(threading.enumerate())
    manager = ScheduleManager(poll_interval=0.1)
    try:
        assert manager.updater.mode == "thread"
        assert manager.updater.thread is not None and manager.updater.thread.is_alive()
        run = runs.create_run(store, pipeline_schedule_id=nightly.id)
        asyncio.run(until(lambda: history_ids(manager) == [run.id], what="the history"))
        manager.rows[nightly.id].toggle.value = True
        asyncio.run(
            until(
                lambda: str(schedules.get_schedule(store, nightly.id).status) == "active",
                what="the toggle, from another thread than the updater's",
            )
        )
    finally:
        manager.close()
    asyncio.run(until(lambda: not new_threads(before), what="its threads end"))
    assert not manager.updater.alive


def test_a_history_shown_while_its_frame_is_being_built_is_not_lost(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In "thread" mode the updater's thread shows a new history while the user's thread
    builds ``history_frame`` from the old one (slow the first time: pandas is imported). The
    next ``history_frame`` must be the new history, not the old frame cached for good (the
    test above then timed out when it ran alone or the machine was busy)."""
    import mage_nb_sched.widgets as widgets_module

    nightly = make_schedule(store)
    manager = ScheduleManager(poll_interval=0.1)
    try:
        assert manager.updater.mode == "thread"
        asyncio.run(until(lambda: "no runs yet" in text_of(manager.history), what="no runs"))
        build = widgets_module.history_frame
        made: list[RunRecord] = []

        def build_while_a_run_is_shown(records: Any) -> Any:
            if not made:
                # The old history is in hand; the updater shows a new run before it is built.
                made.append(runs.create_run(store, pipeline_schedule_id=nightly.id))
                asyncio.run(
                    until(
                        lambda: f"data-run-id='{made[0].id}'" in manager.history.value,
                        what="the new run shown by the updater's thread",
                    )
                )
            return build(records)

        monkeypatch.setattr(widgets_module, "history_frame", build_while_a_run_is_shown)
        assert history_ids(manager) == []  # the history as it was when asked for
        assert made, "history_frame did not build the frame"
        # The updater has shown the run and reads nothing new any more: no waiting needed.
        assert history_ids(manager) == [made[0].id]
    finally:
        manager.close()


def test_bad_arguments_are_refused_at_once(store: Store) -> None:
    from mage_nb_sched.core.errors import ValidationError

    before = set(threading.enumerate())

    for kwargs in ({"poll_interval": 0}, {"poll_interval": float("nan")}, {"history_size": 0}):
        with pytest.raises(ValidationError) as caught:
            ScheduleManager(**kwargs)
        assert caught.value.field in kwargs
    with pytest.raises(ValidationError, match="schedule_or_pipeline"):
        RunTimeline(3.5)
    with pytest.raises(ValidationError, match="schedule_or_pipeline"):
        RunTimeline()
    with pytest.raises(ValidationError, match="last"):
        RunTimeline("x", last=0)
    assert new_threads(before) == []  # nothing half-started is left running


def test_close_all_closes_what_earlier_cells_left_running(store: Store) -> None:
    make_schedule(store)

    async def body() -> None:
        widgets = [ScheduleManager(), ScheduleManager(), RunTimeline("nightly")]
        assert all(widget.updater.alive for widget in widgets)
        assert close_all() == 3
        assert all(widget.closed for widget in widgets)
        await until(lambda: not any(w.updater.alive for w in widgets), what="all stopped")

    scenario(body)


def test_error_line_is_one_line() -> None:
    from mage_nb_sched.core.errors import ValidationError

    err = ValidationError("settings.timeout", -1, "must be positive", "Use e.g.\n timeout=60.")
    assert error_line(err) == "settings.timeout=-1: must be positive. Use e.g. timeout=60."
    assert error_line(KeyError("x")) == "KeyError: 'x'"


# --------------------------------------------------------------------------------------------
# RunTimeline
# --------------------------------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


@pytest.fixture
def history(store: Store) -> tuple[ScheduleRecord, dict[str, list[int]], list[int]]:
    """A schedule with completed, failed, SLA-breached, running and waiting runs."""
    nightly = make_schedule(store, sla=600)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    by_status: dict[str, list[int]] = {}
    breached: list[int] = []
    plan = [
        ("completed", 60, False),
        ("completed", 90, False),
        ("failed", 30, False),
        ("completed", 1200, True),
        ("completed", 80, False),
        ("failed", 700, True),
        ("running", None, True),
        ("initial", None, False),
    ]
    for day, (status, seconds, sla_breached) in enumerate(plan):
        when = base + timedelta(days=day)
        run = runs.create_run(store, pipeline_schedule_id=nightly.id, execution_date=when)
        if status != "initial":
            start(store, run.id, when)
        if seconds is not None:
            finish(store, run.id, status, when + timedelta(seconds=seconds))
        if sla_breached:
            runs.update_run(store, run.id, sla_breached=True)
            breached.append(run.id)
        by_status.setdefault(status, []).append(run.id)
    # A run of the pipeline outside the schedule (by hand).
    runs.create_run(store, pipeline_uuid="my_pipeline", execution_date=base)
    return nightly, by_status, breached


def test_the_timeline_renders_what_the_store_holds(
    store: Store, history: tuple[ScheduleRecord, dict[str, list[int]], list[int]]
) -> None:
    _, by_status, breached = history

    async def body() -> None:
        timeline = RunTimeline("nightly", width=8, height=4)
        try:
            data = timeline.data()
            assert isinstance(data, TimelineData)
            assert data.by_status() == by_status
            assert data.breaches() == breached
            assert len(data.trend()) == len(by_status["completed"])
            assert data.trend()[0][1] == 60.0 and data.trend()[1][1] == 75.0
            assert "nightly (my_pipeline)" in data.title and "3 SLA breached" in data.title
            frame = data.frame()
            assert str(frame["execution_date"].dtype) == "datetime64[ns, UTC]"
            assert frame["seconds"].isna().sum() == 2  # running and waiting

            figure = timeline.figure(data)
            top, bottom = figure.axes[:2]

            def offsets(axes: Any, gid: str) -> int:
                found = [c for c in axes.collections if c.get_gid() == gid]
                assert len(found) == 1, gid
                return len(found[0].get_offsets())

            for status, ids in by_status.items():
                assert offsets(top, f"status:{status}") == len(ids)
            assert offsets(bottom, "runtime:completed") == 4
            assert offsets(bottom, "runtime:failed") == 2
            assert offsets(top, "sla_breached") == len(breached)
            assert offsets(bottom, "sla_breached") == 2  # the breaches with a runtime
            (trend,) = [line for line in bottom.lines if line.get_gid() == "trend"]
            assert len(trend.get_xdata()) == 4
            assert bottom.get_ylabel() == "runtime (min)"  # 1200 s is the longest

            picture = timeline.png(data)
            assert png_size(picture) == (800, 400)
            assert len(picture) > 10_000

            # The widget shows the same picture, drawn in the background.
            shown: bytes = await until(lambda: timeline.image.value, what="the image")
            assert png_size(shown) == (800, 400)
            assert timeline.shown == data
        finally:
            timeline.close()

    scenario(body)


def test_the_timeline_follows_new_runs(store: Store) -> None:
    nightly = make_schedule(store)

    async def body() -> None:
        timeline = RunTimeline(nightly)
        try:
            await until(lambda: timeline.shown is not None, what="the first picture")
            assert timeline.shown is not None and timeline.shown.points == ()
            empty = timeline.image.value
            run = runs.create_run(store, pipeline_schedule_id=nightly.id)
            await until(
                lambda: timeline.shown is not None and len(timeline.shown.points) == 1,
                what="the new run is drawn",
            )
            assert timeline.image.value != empty
            start(store, run.id, datetime.now(UTC))
            await until(
                lambda: (
                    timeline.shown is not None
                    and timeline.shown.by_status() == {"running": [run.id]}
                ),
                what="its new status",
            )
        finally:
            timeline.close()

    scenario(body)


def test_the_timeline_accepts_each_way_to_name_its_runs(
    store: Store, history: tuple[ScheduleRecord, dict[str, list[int]], list[int]]
) -> None:
    from mage_nb_sched import PipelineSchedule

    nightly, by_status, _ = history
    scheduled = sorted(i for ids in by_status.values() for i in ids)
    every = sorted(run.id for run in runs.list_runs(store, pipeline_uuid="my_pipeline"))
    assert len(every) == len(scheduled) + 1

    async def body() -> None:
        targets: list[tuple[Any, dict[str, Any], list[int]]] = [
            ("nightly", {}, scheduled),
            (nightly.id, {}, scheduled),
            (str(nightly.id), {}, scheduled),
            (nightly, {}, scheduled),
            (PipelineSchedule.query.get(nightly.id), {}, scheduled),
            ("my_pipeline", {}, every),
            (None, {"pipeline_uuid": "my_pipeline"}, every),
        ]
        for target, kwargs, expected in targets:
            timeline = RunTimeline(target, **kwargs)
            try:
                data = timeline.data()
                assert sorted(p.run_id for p in data.points) == expected, target
            finally:
                timeline.close()

        make_schedule(store, "shared", pipeline_uuid="my_pipeline")
        twin = make_schedule(store, "shared", pipeline_uuid="etl/daily")
        ambiguous = RunTimeline("shared")
        try:
            text = await until(lambda: text_of(ambiguous.message), what="the ambiguity")
            assert text.startswith("schedule_or_pipeline='shared': 2 pipelines"), text
            assert f"{twin.id} (etl/daily)" in text and "RunTimeline(" in text
        finally:
            ambiguous.close()

        missing = RunTimeline("no_such_thing")
        try:
            text = await until(lambda: text_of(missing.message), what="the error line")
            assert "no_such_thing" in text and "RunTimeline('etl/daily')" in text
            assert "Traceback" not in text
            assert missing.image.value == b""
        finally:
            missing.close()

    scenario(body)


# --------------------------------------------------------------------------------------------
# In a real kernel
# --------------------------------------------------------------------------------------------


@pytest.fixture
def kernel_env(store: Store) -> Iterator[dict[str, str]]:
    import os

    env = dict(os.environ, MAGE_NB_SCHED_PROJECT_DIR=str(store.project_dir))
    env.pop("MAGE_NB_SCHED_DB_URL", None)
    yield env


@pytest.mark.kernel
def test_in_a_kernel_the_history_updates_between_cells(
    store: Store, kernel_env: dict[str, str]
) -> None:
    from jupyter_client.manager import AsyncKernelManager

    nightly = make_schedule(store)

    async def body() -> None:
        manager = AsyncKernelManager(kernel_name="python3")
        await manager.start_kernel(env=kernel_env, cwd=str(store.project_dir))
        client = manager.client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=60)

            async def evaluate(code: str) -> str:
                chunks: list[str] = []

                def collect(message: dict[str, Any]) -> None:
                    if message["msg_type"] == "stream":
                        chunks.append(message["content"]["text"])
                    elif message["msg_type"] == "error":
                        chunks.append("\n".join(message["content"]["traceback"]))

                reply = await client.execute_interactive(code, output_hook=collect, timeout=60)
                assert reply["content"]["status"] == "ok", "".join(chunks)
                return "".join(chunks).strip()

            await evaluate(
                "from mage_nb_sched.widgets import ScheduleManager\n"
                "manager = ScheduleManager()\n"
                "print(manager.updater.mode)"
            )

            async def eventually(code: str, expected: str, what: str) -> None:
                """Run the short cell ``code`` until it prints ``expected`` (the widget's own
                cell is never run again)."""
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                while (printed := await evaluate(code)) != expected:
                    assert loop.time() < deadline, f"{what}: {printed}"
                    await asyncio.sleep(0.05)

            assert await evaluate("print(manager.updater.mode)") == "loop"
            run = runs.create_run(store, pipeline_schedule_id=nightly.id)
            await eventually(
                "print(list(manager.history_frame['id']))", f"[{run.id}]", "the new run"
            )
            start(store, run.id, datetime.now(UTC))
            await eventually(
                "print(list(manager.history_frame['status']))", "['running']", "its status"
            )
            await evaluate("manager.close()")
            await eventually(
                "import threading\n"
                "print(manager.updater.alive, "
                "[t.name for t in threading.enumerate() if t.name.startswith('mage-nb-sched')])",
                "False []",
                "the task and the watcher end",
            )
        finally:
            client.stop_channels()
            await manager.shutdown_kernel(now=True)

    scenario(body)


def test_the_module_imports_without_matplotlib_until_a_timeline_draws() -> None:
    code = (
        "import sys\n"
        "import mage_nb_sched.widgets\n"
        "assert 'matplotlib' not in sys.modules, 'imported too early'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
