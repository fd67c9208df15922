"""Notebook widgets over the store: :class:`ScheduleManager` and :class:`RunTimeline`.

Both read the store directly (``current_store()``, the same one the Jupyter server's scheduler
uses; no server is needed) and never block the kernel:

- every read and write of the store runs on the service's bounded thread pool
  (:func:`~mage_nb_sched.service.asynchronous.run_off_loop`), never on the kernel's thread;
- live updates come from one background :class:`Updater` per widget: an asyncio task on the
  running event loop (ipykernel runs one: the task runs between and alongside cells), or, with
  no running loop (a plain script), a thread with an event loop of its own. It reads the store
  every ``poll_interval`` seconds and, on SQLite, soon after any commit to the database (the
  store's change signal, :class:`~mage_nb_sched.store.changes.ChangeWatcher`), and redraws only
  what changed;
- ``close()`` stops the updater (its task or thread, and the change watcher's thread).

Errors of the service (:class:`~mage_nb_sched.core.errors.ValidationError` ...) are shown in
the widget as one line naming the field and the fix (:func:`error_line`), never a traceback.

Records become DataFrame rows only through :func:`~mage_nb_sched.service.records.to_row`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import html
import io
import logging
import math
import threading
from collections.abc import Callable, Coroutine, Sequence
from datetime import date, datetime, time, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import ipywidgets as widgets

from mage_nb_sched import frames
from mage_nb_sched.core.datetimes import UTC, load_zone
from mage_nb_sched.core.enums import (
    BackfillIntervalType,
    BackfillStatus,
    PipelineRunStatus,
    ScheduleStatus,
)
from mage_nb_sched.core.errors import MageNbSchedError, NotFoundError, ValidationError
from mage_nb_sched.core.settings import with_defaults
from mage_nb_sched.service import api_triggers, backfills, fields, runs, schedules
from mage_nb_sched.service.asynchronous import run_off_loop
from mage_nb_sched.service.records import BackfillRecord, RunRecord, ScheduleRecord
from mage_nb_sched.service.schedules import ScheduleView
from mage_nb_sched.store.changes import ChangeWatcher
from mage_nb_sched.store.engine import Store, current_store

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "MAX_POLL_INTERVAL",
    "MIN_POLL_INTERVAL",
    "RunTimeline",
    "ScheduleManager",
    "TimelineData",
    "TimelinePoint",
    "Updater",
    "close_all",
    "error_line",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Bounds and default of a widget's ``poll_interval`` (seconds between two reads of the store
#: when nothing signals a change).
MIN_POLL_INTERVAL = 0.05
MAX_POLL_INTERVAL = 3600.0
DEFAULT_POLL_INTERVAL = 2.0
#: How often the change watcher looks at SQLite's ``data_version`` (microseconds each, no lock).
CHANGE_CHECK_INTERVAL = 0.1
#: Least time between the starts of two reads, however often the store changes (a busy
#: scheduler commits many times a second): the manager's, and the timeline's (each of its
#: reads after a change draws a new picture, ~0.1 s of CPU).
MIN_READ_GAP = 0.1
TIMELINE_READ_GAP = 1.0
#: How many schedules the manager lists by default, and at most (each row is ten widgets; the
#: rest are counted, not shown).
DEFAULT_SCHEDULE_ROWS = 50
MAX_SCHEDULE_ROWS = 500
#: Bounds of ``history_size`` and of the timeline's ``last``.
MAX_HISTORY_SIZE = 1000
MAX_TIMELINE_RUNS = 10_000

STATUS_COLORS = {
    PipelineRunStatus.INITIAL.value: "#ff7f0e",
    PipelineRunStatus.RUNNING.value: "#1f77b4",
    PipelineRunStatus.COMPLETED.value: "#2ca02c",
    PipelineRunStatus.FAILED.value: "#d62728",
    PipelineRunStatus.CANCELLED.value: "#7f7f7f",
}
#: Status rows of the timeline, bottom to top.
TIMELINE_STATUSES = (
    PipelineRunStatus.CANCELLED.value,
    PipelineRunStatus.FAILED.value,
    PipelineRunStatus.COMPLETED.value,
    PipelineRunStatus.RUNNING.value,
    PipelineRunStatus.INITIAL.value,
)
SLA_COLOR = "#9467bd"
#: Completed runs averaged by the timeline's runtime trend.
TREND_WINDOW = 5
#: ``RunTimeline.data().frame()``: column → dtype.
TIMELINE_COLUMNS = {
    "run_id": "int64",
    "execution_date": frames.DATETIME,
    "status": "object",
    "seconds": "float64",
    "sla_breached": "bool",
}


#: The widgets of this module whose updates run (a cell run again makes new ones; the old ones
#: go on until closed: :func:`close_all`).
_live: set[Any] = set()
_live_lock = threading.Lock()


def _register(widget: Any) -> None:
    with _live_lock:
        _live.add(widget)


def _unregister(widget: Any) -> None:
    with _live_lock:
        _live.discard(widget)


def close_all() -> int:
    """Close every :class:`ScheduleManager` and :class:`RunTimeline` that still updates (for
    example the ones made by earlier runs of a cell); returns how many were closed."""
    with _live_lock:
        found = list(_live)
    for widget in found:
        widget.close()
    return len(found)


# --------------------------------------------------------------------------------------------
# Errors as one line
# --------------------------------------------------------------------------------------------


def error_line(err: BaseException) -> str:
    """One line for a widget: the package's errors as they are worded (field, problem, fix),
    anything else with its type. Never a traceback."""
    text = str(err) if isinstance(err, MageNbSchedError) else f"{type(err).__name__}: {err}"
    return " ".join(text.split())


def _check_interval(value: Any, field: str = "poll_interval") -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not MIN_POLL_INTERVAL <= value <= MAX_POLL_INTERVAL
    ):
        raise ValidationError(
            field,
            value,
            f"expected seconds between {MIN_POLL_INTERVAL} and {MAX_POLL_INTERVAL:g}",
            f"Use e.g. {field}={DEFAULT_POLL_INTERVAL} (changes show sooner anyway: the widget "
            "wakes when the database changes).",
        )
    return float(value)


def _check_count(value: Any, field: str, maximum: int, example: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ValidationError(
            field,
            value,
            f"expected a whole number from 1 to {maximum}",
            f"Use e.g. {field}={example}.",
        )
    return value


# --------------------------------------------------------------------------------------------
# The background updater
# --------------------------------------------------------------------------------------------


class Updater(Generic[T]):
    """Keeps a widget up to date without blocking the kernel.

    ``read`` (blocking; it reads the store) runs on the service's thread pool; ``apply`` gets
    its result on the updater's event loop — the running loop of the thread that started it
    (the kernel's), or the loop of a thread of its own when that thread had none. Reads happen
    every ``interval`` seconds and soon after the store's change signal (SQLite's
    ``data_version``) or :meth:`wake`; never more often than every ``min_gap`` seconds.
    ``on_error`` gets a read's exception (the updater goes on). :meth:`stop` ends it all.
    """

    def __init__(
        self,
        store: Store,
        read: Callable[[], T],
        apply: Callable[[T], None],
        *,
        interval: float = DEFAULT_POLL_INTERVAL,
        on_error: Callable[[BaseException], None] | None = None,
        watch_changes: bool = True,
        min_gap: float = MIN_READ_GAP,
        name: str = "widget",
    ) -> None:
        self.store = store
        self.interval = _check_interval(interval)
        self.min_gap = min_gap
        self.watch_changes = watch_changes
        self.name = name
        self._read = read
        self._apply = apply
        self._on_error = on_error
        self._stopped = False
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        #: The asyncio task doing the reads (on the kernel's loop or the updater's thread).
        self.task: asyncio.Task[None] | None = None
        #: The updater's own thread, when it was started without a running loop.
        self.thread: threading.Thread | None = None
        #: The change watcher (SQLite), while it runs.
        self.watcher: ChangeWatcher | None = None
        #: How many reads were applied (for tests and curiosity).
        self.reads = 0
        self._actions: set[asyncio.Future[Any]] = set()
        self._started = threading.Event()

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """``"loop"`` (a task on the caller's running loop) or ``"thread"`` (its own thread)."""
        return "thread" if self.thread is not None else "loop"

    @property
    def alive(self) -> bool:
        """Whether the task (and its thread, if any) still runs."""
        if self.thread is not None and self.thread.is_alive():
            return True
        return self.task is not None and not self.task.done()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def start(self) -> None:
        """Start updating: a task on the running loop, else a thread of its own."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self._loop = loop
            self._loop_thread = threading.get_ident()
            self.task = loop.create_task(self._run(), name=f"mage-nb-sched-{self.name}")
            self._started.set()
            return
        self._loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self._thread_main, name=f"mage-nb-sched-{self.name}", daemon=True
        )
        self.thread.start()
        self._started.wait()

    def _thread_main(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        self._loop_thread = threading.get_ident()
        try:
            self.task = loop.create_task(self._run(), name=f"mage-nb-sched-{self.name}")
            self._started.set()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self.task)
            # Actions already under way finish (their writes are the user's intent).
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            self._started.set()
            asyncio.set_event_loop(None)
            loop.close()

    def stop(self) -> None:
        """Stop updating (returns at once; the task ends at its next step, the threads within
        one change-check interval). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._call_soon(self._cancel)

    def _cancel(self) -> None:
        self._wake.set()
        if self.task is not None:
            self.task.cancel()

    def _call_soon(self, callback: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            callback()
            return
        # RuntimeError: the loop closed between the check and the call.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(callback)

    def wake(self) -> None:
        """Read the store again soon (thread-safe)."""
        self._call_soon(self._wake.set)

    # -- actions ------------------------------------------------------------------------------

    def submit(
        self,
        work: Callable[[], T | Any],
        then: Callable[[Any, BaseException | None], None],
    ) -> concurrent.futures.Future[None] | asyncio.Future[None] | None:
        """Run ``work`` (blocking: a store write) on the service's pool, then ``then(result,
        error)`` on the updater's loop, then read the store again. Returns the future of it
        all (None once stopped)."""

        async def act() -> None:
            try:
                result = await run_off_loop(work)
            except Exception as err:
                then(None, err)
            else:
                then(result, None)
            self._wake.set()

        loop = self._loop
        if self._stopped or loop is None or loop.is_closed():
            return None
        if threading.get_ident() == self._loop_thread:
            task = loop.create_task(act())
            self._actions.add(task)
            task.add_done_callback(self._actions.discard)
            return task
        try:
            future = asyncio.run_coroutine_threadsafe(self._tracked(act()), loop)
        except RuntimeError:  # the loop closed meanwhile
            return None
        return future

    async def _tracked(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._actions.add(task)
        task.add_done_callback(self._actions.discard)
        await task

    # -- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        if self.watch_changes and self.store.is_sqlite and self.store.sqlite_path:
            self.watcher = ChangeWatcher(
                self.store, self._wake.set, poll_interval=CHANGE_CHECK_INTERVAL
            )
            self.watcher.start()
        try:
            while not self._stopped:
                self._wake.clear()
                began = loop.time()
                try:
                    result = await run_off_loop(self._read)
                except asyncio.CancelledError:
                    raise
                except Exception as err:
                    log.debug("%s: reading the store failed", self.name, exc_info=True)
                    if self._on_error is not None and not self._stopped:
                        self._on_error(err)
                else:
                    if not self._stopped:
                        self.reads += 1
                        try:
                            self._apply(result)
                        except Exception as err:  # a bug in drawing must not end updates
                            log.debug("%s: showing a read failed", self.name, exc_info=True)
                            if self._on_error is not None:
                                self._on_error(err)
                if self._stopped:
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                rest = self.min_gap - (loop.time() - began)
                if rest > 0 and not self._stopped:
                    await asyncio.sleep(rest)
        finally:
            if self.watcher is not None:
                self.watcher.stop()

    def threads(self) -> list[threading.Thread]:
        """The threads this updater started that are still alive (its own, the watcher's)."""
        found = []
        if self.thread is not None and self.thread.is_alive():
            found.append(self.thread)
        watcher_thread = None if self.watcher is None else self.watcher._thread
        if watcher_thread is not None and watcher_thread.is_alive():
            found.append(watcher_thread)
        return found


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def _zone_of(schedule: ScheduleRecord | None) -> tzinfo:
    if schedule is None:
        return UTC
    try:
        return load_zone(str(with_defaults(schedule.settings)["timezone"]))
    except ValidationError:
        return UTC


def _when(value: datetime | None, zone: tzinfo) -> str:
    if value is None:
        return ""
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _duration(value: timedelta | None) -> str:
    if value is None:
        return ""
    seconds = value.total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _status_html(status: object) -> str:
    text = str(getattr(status, "value", status)) if status is not None else ""
    color = STATUS_COLORS.get(text, "inherit")
    return f'<span style="color:{color};font-weight:600">{html.escape(text)}</span>'


def _message_html(text: str, kind: str = "info") -> str:
    color = {"error": "#d62728", "ok": "#2ca02c"}.get(kind, "inherit")
    return f'<span style="color:{color}">{html.escape(text)}</span>' if text else ""


def history_frame(records: Sequence[RunRecord]) -> Any:
    """Runs as a DataFrame with ``runs_frame``'s columns and dtypes (oldest first)."""
    return frames.frame(frames.run_rows(records), frames.RUN_COLUMNS)


# --------------------------------------------------------------------------------------------
# ScheduleManager
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _ManagerState:
    """One read of everything the manager shows."""

    views: tuple[ScheduleView, ...]
    count: int
    selected_id: int | None
    history: tuple[RunRecord, ...]
    backfill: BackfillRecord | None
    progress: tuple[tuple[str, int], ...]
    scheduler_active: bool


class _ScheduleRow:
    """The widgets of one schedule's row in the manager's table."""

    def __init__(self, manager: ScheduleManager, schedule_id: int) -> None:
        self.schedule_id = schedule_id
        self.known_status: str | None = None
        self.pending = False
        self.name = widgets.Button(
            description="",
            tooltip="Show this schedule's runs",
            layout=widgets.Layout(width="auto"),
        )
        #: pipeline, type, interval, status, next run, last run status, run count: one widget
        #: (fixed-width columns) so a row costs four widgets, not ten.
        self.info = widgets.HTML()
        #: The values shown in ``info``, by column name.
        self.values: dict[str, str] = {}
        self.toggle = widgets.ToggleButton(
            value=False,
            description="paused",
            tooltip="Activate or pause this schedule",
            layout=widgets.Layout(width="8em"),
        )
        self.run = widgets.Button(
            description="Run now",
            icon="play",
            tooltip="Create a run of this schedule now",
            layout=widgets.Layout(width="8em"),
        )
        self.name.on_click(lambda _button: manager.select(schedule_id))
        self.toggle.observe(
            lambda change: manager._toggled(self, bool(change["new"])), names="value"
        )
        self.run.on_click(lambda _button: manager.run_now(schedule_id))

    @property
    def cells(self) -> list[Any]:
        return [self.name, self.info, self.toggle, self.run]

    def show(self, view: ScheduleView, selected: bool) -> None:
        schedule = view.schedule
        zone = _zone_of(schedule)
        status = str(schedule.status)
        self.name.description = schedule.name
        self.name.button_style = "info" if selected else ""
        last = view.stats.last_pipeline_run_status
        self.values = {
            "pipeline": schedule.pipeline_uuid,
            "type": str(schedule.schedule_type),
            "interval": schedule.schedule_interval or "",
            "status": status,
            "next run": _when(view.next_pipeline_run_date, zone),
            "last run": "" if last is None else str(getattr(last, "value", last)),
            "runs": str(view.stats.pipeline_runs_count),
        }
        self.info.value = _columns_html(
            {
                name: _status_html(value) if name in _STATUS_COLUMNS else html.escape(value)
                for name, value in self.values.items()
            }
        )
        if not self.pending:
            # known_status first: the toggle's observer then sees no change to write.
            self.known_status = status
            active = status == ScheduleStatus.ACTIVE.value
            self.toggle.value = active
            self.toggle.description = "active" if active else "paused"
            self.toggle.icon = "pause" if active else "play"
            self.toggle.button_style = "success" if active else ""

    def close(self) -> None:
        for cell in self.cells:
            cell.close()


#: The info columns of a schedule row and their widths.
_COLUMNS = {
    "pipeline": "12em",
    "type": "4em",
    "interval": "8em",
    "status": "5.5em",
    "next run": "13em",
    "last run": "6.5em",
    "runs": "3em",
}
_STATUS_COLUMNS = {"status", "last run"}


def _columns_html(cells: dict[str, str]) -> str:
    """Cells (HTML) as fixed-width inline columns, so rows line up under the header."""
    return "".join(
        f"<span style='display:inline-block;width:{_COLUMNS[name]};overflow:hidden;"
        f"text-overflow:ellipsis;white-space:nowrap;vertical-align:middle;padding-right:6px' "
        f"title='{html.escape(name)}'>{cell}</span>"
        for name, cell in cells.items()
    )


class _LiveBox(widgets.VBox):  # type: ignore[misc]
    """A box whose contents a background :class:`Updater` keeps current; closing it stops the
    updater, forgets it for :func:`close_all` and closes its parts."""

    updater: Updater[Any]

    @property
    def closed(self) -> bool:
        return bool(getattr(self, "_closed", True))

    def close(self) -> None:
        """Stop the live updates and close the widget with its parts."""
        if getattr(self, "_closed", True):
            super().close()
            return
        self._closed = True
        self.updater.stop()
        _unregister(self)
        self._close_parts()
        super().close()

    def _close_parts(self) -> None:
        """Close the widgets this one made (subclasses)."""


class ScheduleManager(_LiveBox):
    """The store's schedules as a table with activate / pause toggles and "run now" buttons;
    the selected schedule's run history, updating live; a backfill form with a live progress
    bar.

    ``ScheduleManager()`` uses the project's store (``current_store()``); pass ``store=`` for
    another. ``poll_interval`` (seconds, bounded) is how often the store is read when no change
    is signalled; ``history_size`` how many of the newest runs the history shows; ``max_rows``
    how many schedules the table lists (the rest are counted). ``close()`` stops the updates
    (:func:`close_all` closes every widget of this module still updating).

    Run now makes a manual run, as the JupyterLab panel, ``%schedule run`` and ``POST
    pipeline_runs`` do (:func:`~mage_nb_sched.service.runs.run_now`): also of a paused schedule
    (pausing stops the schedule's own runs, not yours), whatever ``skip_if_previous_running``
    says — that rule is for the schedule's triggers (``mage-nb-sched trigger``, the trigger URL).
    A run executes when a scheduler serves the store (the Jupyter server extension, or
    ``mage-nb-sched scheduler``); the widget says when none does.
    """

    def __init__(
        self,
        *,
        store: Store | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        history_size: int = 20,
        max_rows: int = DEFAULT_SCHEDULE_ROWS,
        watch_changes: bool = True,
        **kwargs: Any,
    ) -> None:
        interval = _check_interval(poll_interval)
        self.history_size = _check_count(history_size, "history_size", MAX_HISTORY_SIZE, 20)
        self.max_rows = _check_count(max_rows, "max_rows", MAX_SCHEDULE_ROWS, 50)
        self.store = store if store is not None else current_store()
        self.rows: dict[int, _ScheduleRow] = {}
        self.selected_id: int | None = None
        self.backfill_id: int | None = None
        self.state: _ManagerState | None = None
        #: The history shown (set by the updater, on its loop's thread).
        self._history: tuple[RunRecord, ...] = ()
        #: ``history_frame``'s cache: the records it was built from and the DataFrame, in one
        #: attribute. In "thread" mode the updater shows a new history while the user's thread
        #: may be building the frame of the old one; a separate "frame or None" attribute was
        #: then overwritten with the old frame after the updater had reset it, and stayed stale
        #: for good (nothing resets it until the history changes again).
        self._history_cache: tuple[tuple[RunRecord, ...], Any] | None = None
        self._updating_selector = False
        self._closed = False

        self.title = widgets.HTML("<b>Schedules</b>")
        self.message = widgets.HTML("")
        self.problem = widgets.HTML("")
        self.scheduler_note = widgets.HTML("")
        self.table = widgets.GridBox(
            layout=widgets.Layout(
                grid_template_columns="auto auto auto auto",
                grid_gap="2px 12px",
                align_items="center",
            )
        )
        self._headers = [
            widgets.HTML("<b>schedule</b>"),
            widgets.HTML(_columns_html({name: f"<b>{html.escape(name)}</b>" for name in _COLUMNS})),
            widgets.HTML(""),
            widgets.HTML(""),
        ]
        self.table.children = list(self._headers)
        self.more = widgets.HTML("")
        self.selector = widgets.Dropdown(description="Schedule", options=[])
        self.selector.observe(self._selected, names="value")
        self.history_title = widgets.HTML("<b>Runs</b>")
        self.history = widgets.HTML("")

        self.backfill_start = widgets.DatePicker(description="Start")
        self.backfill_end = widgets.DatePicker(description="End")
        self.backfill_interval = widgets.Dropdown(
            description="Interval",
            options=BackfillIntervalType.values(),
            value=BackfillIntervalType.DAY.value,
        )
        self.backfill_units = widgets.IntText(value=1, description="Units")
        self.backfill_button = widgets.Button(
            description="Start backfill", icon="history", button_style="primary"
        )
        self.backfill_button.on_click(lambda _button: self.start_backfill())
        self.backfill_bar = widgets.IntProgress(value=0, min=0, max=1, description="Backfill")
        self.backfill_label = widgets.HTML("")
        form = widgets.VBox(
            [
                widgets.HTML("<b>Backfill the selected schedule</b> (dates in its time zone)"),
                widgets.HBox([self.backfill_start, self.backfill_end]),
                widgets.HBox([self.backfill_interval, self.backfill_units]),
                widgets.HBox([self.backfill_button]),
                widgets.HBox([self.backfill_bar, self.backfill_label]),
            ]
        )
        self._parts = [
            self.title,
            self.message,
            self.problem,
            self.scheduler_note,
            self.table,
            self.more,
            self.selector,
            self.history_title,
            self.history,
            form,
        ]
        super().__init__(children=self._parts, **kwargs)
        self.updater: Updater[_ManagerState] = Updater(
            self.store,
            self._read,
            self._apply,
            interval=interval,
            on_error=self._read_failed,
            watch_changes=watch_changes,
            name="schedule-manager",
        )
        self.updater.start()
        _register(self)

    # -- reading ------------------------------------------------------------------------------

    def _read(self) -> _ManagerState:
        page = schedules.schedule_page(self.store, limit=self.max_rows)
        views = tuple(page.views)
        selected = self.selected_id
        if selected is None or all(view.schedule.id != selected for view in views):
            selected = views[0].schedule.id if views else None
        history: tuple[RunRecord, ...] = ()
        if selected is not None:
            history = tuple(
                runs.list_runs(self.store, schedule_id=selected, last=self.history_size)
            )
        backfill: BackfillRecord | None = None
        progress: tuple[tuple[str, int], ...] = ()
        if self.backfill_id is not None:
            try:
                record, counts = backfills.backfill_detail(self.store, self.backfill_id)
            except NotFoundError:
                pass
            else:
                backfill, progress = record, tuple(sorted(counts.items()))
        return _ManagerState(
            views,
            page.count,
            selected,
            history,
            backfill,
            progress,
            api_triggers.scheduler_active(self.store),
        )

    def _read_failed(self, err: BaseException) -> None:
        text = f"Could not update from the store: {error_line(err)}"
        self.problem.value = _message_html(text, "error")

    def _apply(self, state: _ManagerState) -> None:
        if self._closed:
            return
        self.problem.value = ""
        previous, self.state = self.state, state
        if previous == state:
            return
        if self.selected_id != state.selected_id and (
            self.selected_id is None or self.selected_id not in {v.schedule.id for v in state.views}
        ):
            self.selected_id = state.selected_id
        self._show_rows(state)
        self._show_selector(state)
        if previous is None or (previous.history, previous.selected_id) != (
            state.history,
            state.selected_id,
        ):
            self._show_history(state)
        self._show_backfill(state)
        self.scheduler_note.value = (
            ""
            if state.scheduler_active
            else _message_html(
                "No scheduler is running for this store: runs wait until one starts (open "
                "JupyterLab with the mage_nb_sched server extension, or run "
                "`mage-nb-sched scheduler`)."
            )
        )
        if state.count > len(state.views):
            self.more.value = f"<i>showing {len(state.views)} of {state.count} schedules</i>"
        else:
            self.more.value = ""

    def _show_rows(self, state: _ManagerState) -> None:
        ids = [view.schedule.id for view in state.views]
        for gone in set(self.rows) - set(ids):
            self.rows.pop(gone).close()
        for view in state.views:
            row = self.rows.get(view.schedule.id)
            if row is None:
                row = self.rows[view.schedule.id] = _ScheduleRow(self, view.schedule.id)
            row.show(view, view.schedule.id == self.selected_id)
        children = list(self._headers)
        for schedule_id in ids:
            children.extend(self.rows[schedule_id].cells)
        if tuple(children) != tuple(self.table.children):
            self.table.children = children

    def _show_selector(self, state: _ManagerState) -> None:
        ids = {view.schedule.id for view in state.views}
        options = [
            (
                f"{view.schedule.name} ({view.schedule.pipeline_uuid}) #{view.schedule.id}",
                view.schedule.id,
            )
            for view in state.views
        ]
        self._updating_selector = True
        try:
            if list(self.selector.options) != options:
                self.selector.options = options
            # The user's latest pick, which a read under way may not know yet.
            wanted = self.selected_id if self.selected_id in ids else state.selected_id
            if self.selector.value != wanted:
                self.selector.value = wanted
        finally:
            self._updating_selector = False

    def _show_history(self, state: _ManagerState) -> None:
        self._history = state.history
        view = next((v for v in state.views if v.schedule.id == state.selected_id), None)
        if view is None:
            self.history_title.value = "<b>Runs</b>"
            self.history.value = "<i>no schedule yet</i>"
            return
        zone = _zone_of(view.schedule)
        self.history_title.value = (
            f"<b>Runs of {html.escape(view.schedule.name)}</b> "
            f"(newest {self.history_size}; times in {html.escape(str(zone))})"
        )
        if not state.history:
            self.history.value = "<i>no runs yet</i>"
            return
        head = "".join(
            f"<th style='text-align:left;padding:0 8px'>{html.escape(c)}</th>"
            for c in ("run", "execution date", "status", "started", "completed", "duration",
                      "SLA", "backfill")
        )  # fmt: skip
        body = []
        for record in reversed(state.history):
            duration = (
                None
                if record.started_at is None or record.completed_at is None
                else record.completed_at - record.started_at
            )
            cells = [
                html.escape(str(record.id)),
                html.escape(_when(record.execution_date, zone)),
                _status_html(record.status),
                html.escape(_when(record.started_at, zone)),
                html.escape(_when(record.completed_at, zone)),
                html.escape(_duration(duration)),
                "ok" if record.passed_sla else f"<b style='color:{SLA_COLOR}'>breached</b>",
                "" if record.backfill_id is None else html.escape(str(record.backfill_id)),
            ]
            row = "".join(f"<td style='padding:0 8px'>{cell}</td>" for cell in cells)
            body.append(f"<tr data-run-id='{record.id}'>{row}</tr>")
        self.history.value = f"<table><tr>{head}</tr>{''.join(body)}</table>"

    def _show_backfill(self, state: _ManagerState) -> None:
        if state.backfill is None:
            return
        counts = dict(state.progress)
        total = counts.get("total", 0)
        completed = counts.get(PipelineRunStatus.COMPLETED.value, 0)
        failed = counts.get(PipelineRunStatus.FAILED.value, 0)
        cancelled = counts.get(PipelineRunStatus.CANCELLED.value, 0)
        running = counts.get(PipelineRunStatus.RUNNING.value, 0)
        finished = completed + failed + cancelled
        self.backfill_bar.max = max(total, 1)
        self.backfill_bar.value = finished
        percent = 100 if total == 0 else int(100 * finished / total)
        self.backfill_bar.description = f"{percent}%"
        if failed or cancelled or state.backfill.status == BackfillStatus.FAILED:
            self.backfill_bar.bar_style = "danger"
        elif total and completed == total:
            self.backfill_bar.bar_style = "success"
        else:
            self.backfill_bar.bar_style = "info"
        self.backfill_label.value = html.escape(
            f"backfill {state.backfill.id} ({state.backfill.status}): {completed}/{total} "
            f"completed, {failed} failed, {cancelled} cancelled, {running} running"
        )

    @property
    def history_frame(self) -> Any:
        """The history shown, as a DataFrame with ``runs_frame``'s columns and dtypes (oldest
        first). Built when asked for, so updates never pay for pandas."""
        records = self._history  # read once: the updater's thread may replace it meanwhile
        cached = self._history_cache
        if cached is not None and cached[0] is records:
            return cached[1]
        frame = history_frame(records)
        # Tagged with the records it shows: a newer history shown meanwhile misses the cache.
        self._history_cache = (records, frame)
        return frame

    @property
    def backfill_percent(self) -> int:
        """How much of the last backfill started here has finished (0-100)."""
        state = self.state
        if state is None or state.backfill is None:
            return 0
        counts = dict(state.progress)
        total = counts.get("total", 0)
        finished = sum(
            counts.get(status.value, 0)
            for status in (
                PipelineRunStatus.COMPLETED,
                PipelineRunStatus.FAILED,
                PipelineRunStatus.CANCELLED,
            )
        )
        return 100 if total == 0 else int(100 * finished / total)

    # -- actions ------------------------------------------------------------------------------

    def _say(self, text: str, kind: str = "info") -> None:
        if not self._closed:
            self.message.value = _message_html(text, kind)

    def _selected(self, change: dict[str, Any]) -> None:
        if self._updating_selector or change["new"] is None:
            return
        self.select(int(change["new"]))

    def select(self, schedule_id: int) -> None:
        """Show the runs of schedule ``schedule_id`` (and backfill it with the form)."""
        self.selected_id = schedule_id
        self.updater.wake()

    def _schedule_name(self, schedule_id: int) -> str:
        state = self.state
        if state is not None:
            for view in state.views:
                if view.schedule.id == schedule_id:
                    return repr(view.schedule.name)
        return f"#{schedule_id}"

    def _toggled(self, row: _ScheduleRow, active: bool) -> None:
        wanted = ScheduleStatus.ACTIVE.value if active else ScheduleStatus.INACTIVE.value
        if wanted == row.known_status or self._closed:
            return
        self.set_status(row.schedule_id, wanted)

    def set_status(self, schedule_id: int, status: str) -> None:
        """Activate (``"active"``) or pause (``"inactive"``) a schedule, off the kernel's
        thread; the table follows the store."""
        row = self.rows.get(schedule_id)
        if row is not None:
            row.pending = True
        name = self._schedule_name(schedule_id)

        def done(record: ScheduleRecord | None, err: BaseException | None) -> None:
            if row is not None:
                row.pending = False
            if err is not None:
                self._say(error_line(err), "error")
                if row is not None and row.known_status is not None:
                    row.toggle.value = row.known_status == ScheduleStatus.ACTIVE.value
                return
            assert record is not None
            word = "active" if record.status == ScheduleStatus.ACTIVE else "paused"
            self._say(f"schedule {name} is now {word}", "ok")

        self.updater.submit(
            lambda: schedules.update_schedule(self.store, schedule_id, status=status), done
        )

    def run_now(self, schedule_id: int | None = None) -> None:
        """Create a run of the schedule (default: the selected one) now, off the kernel's
        thread."""
        target = schedule_id if schedule_id is not None else self.selected_id
        if target is None:
            self._say("There is no schedule to run: create one first.", "error")
            return
        name = self._schedule_name(target)

        def done(run: RunRecord | None, err: BaseException | None) -> None:
            if err is not None:
                self._say(error_line(err), "error")
                return
            assert run is not None
            waiting = (
                ""
                if self.state is None or self.state.scheduler_active
                else " (it waits: no scheduler is running for this store)"
            )
            self._say(f"run {run.id} of schedule {name} created{waiting}", "ok")

        self.updater.submit(lambda: runs.run_now(self.store, pipeline_schedule_id=target), done)

    def start_backfill(self) -> None:
        """Create and start a backfill of the selected schedule from the form's values; its
        progress shows in the bar."""
        schedule_id = self.selected_id
        if schedule_id is None:
            self._say("There is no schedule to backfill: create one first.", "error")
            return
        start = self.backfill_start.value
        end = self.backfill_end.value
        interval = self.backfill_interval.value
        units = self.backfill_units.value

        def work() -> BackfillRecord:
            schedule = schedules.get_schedule(self.store, schedule_id)
            zone = _zone_of(schedule)
            record = backfills.create_backfill(
                self.store,
                pipeline_schedule_id=schedule_id,
                start_datetime=_local_midnight(start, zone, "start_datetime"),
                end_datetime=_local_midnight(end, zone, "end_datetime"),
                interval_type=interval,
                interval_units=units,
            )
            backfills.start_backfill(self.store, record.id)
            return record

        def done(record: BackfillRecord | None, err: BaseException | None) -> None:
            if err is not None:
                self._say(error_line(err), "error")
                return
            assert record is not None
            self.backfill_id = record.id
            name = self._schedule_name(schedule_id)
            self._say(f"backfill {record.id} of schedule {name} started", "ok")

        self.updater.submit(work, done)

    # -- closing ------------------------------------------------------------------------------

    def _close_parts(self) -> None:
        """Close every widget of the manager."""
        for row in self.rows.values():
            row.close()
        self.rows.clear()
        for part in self._headers:
            part.close()
        for part in self._parts:
            _close_tree(part)


def _close_tree(widget: Any) -> None:
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()


def _local_midnight(value: Any, zone: tzinfo, field: str) -> datetime | None:
    """A form's date as midnight in the schedule's zone (None stays None: the service says the
    field is required)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=zone)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=zone)
    raise ValidationError(field, value, "expected a date", "Pick a date in the form.")


# --------------------------------------------------------------------------------------------
# RunTimeline
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TimelinePoint:
    """One run on the timeline."""

    run_id: int
    execution_date: datetime
    status: str
    #: Runtime in seconds (``started_at`` → ``completed_at``); None until both are known.
    seconds: float | None
    sla_breached: bool


@dataclasses.dataclass(frozen=True)
class TimelineData:
    """What a timeline plots: its runs (oldest execution date first) and how to label them."""

    title: str
    timezone: str
    points: tuple[TimelinePoint, ...]

    def by_status(self) -> dict[str, list[int]]:
        """Run ids per status (only statuses that have runs)."""
        found: dict[str, list[int]] = {}
        for point in self.points:
            found.setdefault(point.status, []).append(point.run_id)
        return found

    def breaches(self) -> list[int]:
        """Ids of the runs that breached their SLA."""
        return [point.run_id for point in self.points if point.sla_breached]

    def trend(self, window: int = TREND_WINDOW) -> list[tuple[datetime, float]]:
        """The runtime trend: for each completed run, the mean runtime of it and up to
        ``window - 1`` completed runs before it."""
        completed = [
            point
            for point in self.points
            if point.status == PipelineRunStatus.COMPLETED.value and point.seconds is not None
        ]
        result = []
        for index, point in enumerate(completed):
            sample = [p.seconds for p in completed[max(0, index - window + 1) : index + 1]]
            values = [value for value in sample if value is not None]
            result.append((point.execution_date, sum(values) / len(values)))
        return result

    def frame(self) -> Any:
        """The points as a DataFrame (``execution_date`` tz-aware, ``seconds`` NaN while a
        run has no runtime)."""
        return frames.frame([dataclasses.asdict(point) for point in self.points], TIMELINE_COLUMNS)


@dataclasses.dataclass(frozen=True)
class _Target:
    schedule: ScheduleRecord | None
    pipeline_uuid: str


def _resolve_target(store: Store, target: Any, pipeline_uuid: str | None) -> _Target:
    """The schedule (or pipeline) a timeline is of; reads the store."""
    if pipeline_uuid is not None:
        return _Target(None, fields.pipeline_uuid(pipeline_uuid))
    if isinstance(target, ScheduleRecord):
        record = schedules.get_schedule(store, target.id)
        return _Target(record, record.pipeline_uuid)
    if isinstance(target, int) and not isinstance(target, bool):
        record = schedules.get_schedule(store, target)
        return _Target(record, record.pipeline_uuid)
    if isinstance(target, str):
        return _resolve_text(store, target)
    schedule_id = getattr(target, "id", None)
    if hasattr(target, "schedule_type") and isinstance(schedule_id, int):
        # A Mage PipelineSchedule (or anything shaped like one).
        record = schedules.get_schedule(store, schedule_id)
        return _Target(record, record.pipeline_uuid)
    raise _bad_target(target)


def _resolve_text(store: Store, target: str) -> _Target:
    """A schedule id (digits), else a schedule name, else a pipeline uuid."""
    text = target.strip()
    if text.isdigit() and len(text) < 19:
        with contextlib.suppress(NotFoundError):
            record = schedules.get_schedule(store, int(text))
            return _Target(record, record.pipeline_uuid)
    named = [record for record in schedules.list_schedules(store) if record.name == text]
    if len(named) == 1:
        return _Target(named[0], named[0].pipeline_uuid)
    if len(named) > 1:
        listed = ", ".join(f"{record.id} ({record.pipeline_uuid})" for record in named)
        raise ValidationError(
            "schedule_or_pipeline",
            target,
            f"{len(named)} pipelines have a schedule called {text!r}: ids {listed}",
            f"Give the schedule's id, e.g. RunTimeline({named[0].id}).",
        )
    uuid = fields.pipeline_uuid(text, "schedule_or_pipeline")
    if runs.count_runs(store, pipeline_uuid=uuid) or _notebook_exists(store, uuid):
        return _Target(None, uuid)
    raise NotFoundError(
        f"schedule_or_pipeline={target!r}: no schedule has this name or id and no pipeline "
        "this uuid. Give a schedule's name or id (schedules_frame() lists them) or a "
        "notebook path without .ipynb, e.g. RunTimeline('etl/daily')."
    )


def _bad_target(target: Any) -> ValidationError:
    return ValidationError(
        "schedule_or_pipeline",
        target,
        "expected a schedule's name or id, a saved PipelineSchedule or a pipeline uuid",
        "Use e.g. RunTimeline('nightly'), RunTimeline(schedule.id) or "
        "RunTimeline(pipeline_uuid='etl/daily').",
    )


def _notebook_exists(store: Store, uuid: str) -> bool:
    try:
        runs.require_pipeline_notebook(store, uuid)
    except (ValidationError, NotFoundError):
        return False
    return True


def _check_target(target: Any, pipeline_uuid: str | None) -> None:
    """Refuse what can never name a schedule or pipeline (before anything is read)."""
    if pipeline_uuid is not None:
        if target is not None:
            raise ValidationError(
                "pipeline_uuid",
                pipeline_uuid,
                "both a schedule and pipeline_uuid were given",
                "Give one: RunTimeline('nightly') or RunTimeline(pipeline_uuid='etl/daily').",
            )
        fields.pipeline_uuid(pipeline_uuid)
        return
    if target is None:
        raise ValidationError(
            "schedule_or_pipeline",
            None,
            "a timeline needs a schedule or a pipeline",
            "Use e.g. RunTimeline('nightly') or RunTimeline(pipeline_uuid='etl/daily').",
        )
    if isinstance(target, (ScheduleRecord, str)) or (
        isinstance(target, int) and not isinstance(target, bool)
    ):
        return
    if hasattr(target, "schedule_type"):
        if not isinstance(getattr(target, "id", None), int):
            raise ValidationError(
                "schedule_or_pipeline",
                target,
                "this PipelineSchedule has not been saved (it has no id)",
                "Save it first (PipelineSchedule.create(...) or schedule.save()).",
            )
        return
    raise _bad_target(target)


def _unit_of(seconds: Sequence[float]) -> tuple[str, float]:
    top = max(seconds, default=0.0)
    if top >= 2 * 3600:
        return "h", 3600.0
    if top >= 120:
        return "min", 60.0
    return "s", 1.0


def render_figure(data: TimelineData, *, width: float = 9.0, height: float = 4.8) -> Figure:
    """The timeline of ``data`` as a matplotlib figure (Agg canvas; no pyplot, no global
    state, safe off the main thread).

    Top: every run at its execution date on its status' row, SLA breaches ringed. Bottom: the
    runtimes, coloured by status, with the trend (mean of :data:`TREND_WINDOW` completed runs).
    Artists carry gids: ``status:<status>``, ``runtime:<status>``, ``sla_breached`` (one per
    axes) and ``trend``.
    """
    import matplotlib.dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    status_axes, runtime_axes = figure.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 2]}
    )
    figure.suptitle(data.title, fontsize=11)
    zone = load_zone(data.timezone) if data.timezone else UTC
    rows = {status: index for index, status in enumerate(TIMELINE_STATUSES)}
    status_axes.set_yticks(range(len(TIMELINE_STATUSES)), labels=list(TIMELINE_STATUSES))
    status_axes.set_ylim(-0.6, len(TIMELINE_STATUSES) - 0.4)
    status_axes.grid(axis="x", alpha=0.3)
    runtime_points = [point for point in data.points if point.seconds is not None]
    unit, scale = _unit_of([point.seconds or 0.0 for point in runtime_points])
    runtime_axes.set_ylabel(f"runtime ({unit})")
    runtime_axes.grid(alpha=0.3)
    runtime_axes.set_xlabel(f"execution date ({data.timezone})")
    if not data.points:
        runtime_axes.text(
            0.5, 0.5, "no runs yet", transform=runtime_axes.transAxes, ha="center", va="center"
        )
    grouped: dict[str, list[TimelinePoint]] = {}
    for point in data.points:
        grouped.setdefault(point.status, []).append(point)
    for status, points in grouped.items():
        color = STATUS_COLORS.get(status, "#000000")
        row = rows.get(status, len(TIMELINE_STATUSES) - 1)
        dots = status_axes.scatter(
            [p.execution_date for p in points], [row] * len(points), color=color, s=28,
            label=f"{status} ({len(points)})", zorder=3,
        )  # fmt: skip
        dots.set_gid(f"status:{status}")
        timed = [p for p in points if p.seconds is not None]
        if timed:
            marks = runtime_axes.scatter(
                [p.execution_date for p in timed], [(p.seconds or 0.0) / scale for p in timed],
                color=color, s=24, zorder=3,
            )  # fmt: skip
            marks.set_gid(f"runtime:{status}")
    breached = [point for point in data.points if point.sla_breached]
    if breached:
        rings = status_axes.scatter(
            [p.execution_date for p in breached],
            [rows.get(p.status, len(TIMELINE_STATUSES) - 1) for p in breached],
            s=130, facecolors="none", edgecolors=SLA_COLOR, linewidths=1.8,
            label=f"SLA breached ({len(breached)})", zorder=4,
        )  # fmt: skip
        rings.set_gid("sla_breached")
        timed_breaches = [p for p in breached if p.seconds is not None]
        if timed_breaches:
            runtime_rings = runtime_axes.scatter(
                [p.execution_date for p in timed_breaches],
                [(p.seconds or 0.0) / scale for p in timed_breaches],
                s=110, facecolors="none", edgecolors=SLA_COLOR, linewidths=1.8, zorder=4,
            )  # fmt: skip
            runtime_rings.set_gid("sla_breached")
    trend = data.trend()
    if trend:
        (line,) = runtime_axes.plot(
            [when for when, _ in trend], [value / scale for _, value in trend],
            color="#333333", linewidth=1.5, label=f"trend (mean of {TREND_WINDOW} completed)",
        )  # fmt: skip
        line.set_gid("trend")
        runtime_axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    if runtime_points or data.points:
        locator = mdates.AutoDateLocator(tz=zone)  # type: ignore[no-untyped-call]
        formatter = mdates.ConciseDateFormatter(locator, tz=zone)  # type: ignore[no-untyped-call]
        runtime_axes.xaxis.set_major_locator(locator)
        runtime_axes.xaxis.set_major_formatter(formatter)
    if runtime_points:
        runtime_axes.set_ylim(bottom=0)
    if data.points:
        status_axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return figure


def render_png(data: TimelineData, *, width: float = 9.0, height: float = 4.8) -> bytes:
    """:func:`render_figure` as PNG bytes."""
    figure = render_figure(data, width=width, height=height)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


class RunTimeline(_LiveBox):
    """Runs of a schedule (or of a pipeline, all its schedules and manual runs) over time:
    coloured by status, SLA breaches ringed, and the runtime trend (matplotlib). Updates live;
    ``close()`` stops the updates.

    ``RunTimeline("nightly")`` (a schedule's name; a name two pipelines share is an error
    that lists their ids), ``RunTimeline(3)`` (an id), ``RunTimeline(schedule)`` (a Mage
    ``PipelineSchedule`` or a ``ScheduleRecord``), ``RunTimeline("etl/daily")`` or
    ``RunTimeline(pipeline_uuid="etl/daily")`` (a pipeline; a string is looked up as a
    schedule's name or id first). ``last`` bounds how many of the newest runs are drawn.
    :meth:`data`, :meth:`figure` and :meth:`png` read the store now, in the caller's thread
    (for scripts and tests).
    """

    def __init__(
        self,
        schedule_or_pipeline: Any = None,
        *,
        pipeline_uuid: str | None = None,
        store: Store | None = None,
        last: int = 500,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        watch_changes: bool = True,
        width: float = 9.0,
        height: float = 4.8,
        **kwargs: Any,
    ) -> None:
        _check_target(schedule_or_pipeline, pipeline_uuid)
        interval = _check_interval(poll_interval)
        self.last = _check_count(last, "last", MAX_TIMELINE_RUNS, 500)
        for name, value in (("width", width), ("height", height)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 1 <= value <= 40
            ):
                raise ValidationError(
                    name, value, "expected inches from 1 to 40", f"Use e.g. {name}=9."
                )
        self.width, self.height = float(width), float(height)
        self.store = store if store is not None else current_store()
        self.target = schedule_or_pipeline
        self.pipeline_uuid = pipeline_uuid
        self._resolved: _Target | None = None
        self._rendered: TimelineData | None = None
        self._closed = False
        #: The data last drawn (None before the first read).
        self.shown: TimelineData | None = None
        self.message = widgets.HTML("")
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        super().__init__(children=[self.message, self.image], **kwargs)
        self.updater: Updater[tuple[TimelineData, bytes | None]] = Updater(
            self.store,
            self._read,
            self._apply,
            interval=interval,
            on_error=self._read_failed,
            watch_changes=watch_changes,
            min_gap=TIMELINE_READ_GAP,
            name="run-timeline",
        )
        self.updater.start()
        _register(self)

    # -- data ---------------------------------------------------------------------------------

    def _target(self) -> _Target:
        if self._resolved is None:
            self._resolved = _resolve_target(self.store, self.target, self.pipeline_uuid)
        return self._resolved

    def data(self) -> TimelineData:
        """The runs to plot, read from the store now (blocking; in the caller's thread)."""
        target = self._target()
        schedule = target.schedule
        if schedule is not None:
            with contextlib.suppress(NotFoundError):  # renamed, or its zone changed meanwhile
                schedule = schedules.get_schedule(self.store, schedule.id)
            records = runs.list_runs(self.store, schedule_id=schedule.id, last=self.last)
            title = f"{schedule.name} ({schedule.pipeline_uuid})"
            zone_name = str(with_defaults(schedule.settings)["timezone"])
            try:
                load_zone(zone_name)
            except ValidationError:
                zone_name = "UTC"
        else:
            records = runs.list_runs(self.store, pipeline_uuid=target.pipeline_uuid, last=self.last)
            title = f"pipeline {target.pipeline_uuid}"
            zone_name = "UTC"
        points = tuple(
            sorted(
                (
                    TimelinePoint(
                        run_id=record.id,
                        execution_date=record.execution_date,
                        status=str(getattr(record.status, "value", record.status)),
                        seconds=(
                            None
                            if record.started_at is None or record.completed_at is None
                            else (record.completed_at - record.started_at).total_seconds()
                        ),
                        sla_breached=bool(record.sla_breached),
                    )
                    for record in records
                ),
                key=lambda point: (point.execution_date, point.run_id),
            )
        )
        breaches = sum(point.sla_breached for point in points)
        title += f" — {len(points)} runs" + (f", {breaches} SLA breached" if breaches else "")
        return TimelineData(title, zone_name, points)

    def figure(self, data: TimelineData | None = None) -> Figure:
        """The timeline as a matplotlib figure (reads the store now unless ``data`` is given)."""
        return render_figure(data or self.data(), width=self.width, height=self.height)

    def png(self, data: TimelineData | None = None) -> bytes:
        """The timeline as PNG bytes (reads the store now unless ``data`` is given)."""
        return render_png(data or self.data(), width=self.width, height=self.height)

    # -- live ---------------------------------------------------------------------------------

    def _read(self) -> tuple[TimelineData, bytes | None]:
        data = self.data()
        if data == self._rendered:
            return data, None
        picture = self.png(data)
        self._rendered = data
        return data, picture

    def _read_failed(self, err: BaseException) -> None:
        self.message.value = _message_html(error_line(err), "error")

    def _apply(self, result: tuple[TimelineData, bytes | None]) -> None:
        if self._closed:
            return
        data, picture = result
        self.message.value = ""
        if picture is not None:
            self.image.value = picture
            self.shown = data

    def _close_parts(self) -> None:
        self.message.close()
        self.image.close()
