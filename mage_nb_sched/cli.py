"""``mage-nb-sched``: the command line.

``scheduler`` runs the scheduler loop headless (servers, systemd, containers) until SIGTERM or
SIGINT, which stop it cleanly: in-flight runs get ``--shutdown-grace`` seconds, then their kernels
are killed and the runs are queued to execute again on the next start. It records due runs as
soon as it holds its lease (workers start meanwhile), stops at once when signalled during
start-up, and exits 2 with the reason when it cannot write its database, 1 when no worker
process could start.

``run NOTEBOOK [--var k=v]...`` executes a notebook now as a manual pipeline run, prints each
block's status and duration, and exits non-zero when the run did not complete.

``trigger NAME|ID [--pipeline UUID] [--var k=v]... [--wait] [--json]`` creates a run of a
schedule now, with the trigger URL's rules (an inactive schedule or ``skip_if_previous_running``
with a run unfinished is refused; no token is needed — the CLI has the database) and prints its
id; ``--wait`` follows it block by block until it ends. Exit codes: 0 created / completed, 1 the
run failed or was cancelled, 2 bad usage or a store error.

Listings over the service's records, as aligned tables (datetimes in UTC, ISO to the minute;
durations as ``1m 05s``) or, with ``--json``, as a JSON list of the same records
(:func:`~mage_nb_sched.service.records.to_json`):

- ``schedules [--pipeline UUID] [--status S] [--type T]``, with Mage's computed fields;
- ``runs [NAME|ID] [--pipeline UUID] [--status S] [--last N]``;
- ``blocks RUN_ID``, a run's block runs.

``backfill NAME|ID --start D --end D --interval day [--units N] [--var k=v]... [--wait]`` creates
and starts a backfill of a schedule's pipeline (``--wait``: a progress bar on stderr until it
ends); ``pause NAME|ID`` and ``resume NAME|ID`` set a schedule inactive or active. A schedule
is named as ``trigger`` names it (an id, or a name with ``--pipeline`` when two pipelines share
it).

Exit codes every command keeps: 0 done, 1 a run or backfill ended badly (only with ``--wait``;
``run`` always waits), 2 bad usage, something not found, or a store error (one line on stderr
naming the field and the fix, no traceback). Start-up imports nothing heavy (no pandas,
SQLAlchemy or asyncio) so ``--version`` and ``--help`` answer at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from mage_nb_sched.core.enums import (
    BackfillIntervalType,
    PipelineRunStatus,
    ScheduleStatus,
    ScheduleType,
)
from mage_nb_sched.core.errors import MageNbSchedError, NotFoundError, ValidationError
from mage_nb_sched.core.version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from mage_nb_sched.service.records import ScheduleRecord
    from mage_nb_sched.store.engine import Store


def parse_var(text: str) -> tuple[str, Any]:
    """``k=v``: ``v`` is read as JSON when it parses (numbers, true, null, lists), else text."""
    if "=" not in text:
        raise ValidationError(
            "--var", text, "expected NAME=VALUE", "Use e.g. --var date=2024-01-15 --var n=10."
        )
    name, raw = text.split("=", 1)
    name = name.strip()
    if not name.isidentifier():
        raise ValidationError(
            "--var",
            text,
            f"{name!r} is not a valid variable name",
            "Use e.g. --var batch_size=100.",
        )
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name, value


def _pipeline_uuid(project_dir: Path, notebook: str) -> str:
    from mage_nb_sched.core.project import normalize_pipeline_uuid, pipeline_uuid_for

    path = Path(notebook)
    if path.suffix == ".ipynb" and path.exists():
        try:
            return pipeline_uuid_for(project_dir, path)
        except ValueError as err:
            raise ValidationError(
                "NOTEBOOK",
                notebook,
                f"the notebook is outside the project dir {project_dir}",
                "Pass --project-dir, or run from the project folder.",
            ) from err
    return normalize_pipeline_uuid(notebook, "NOTEBOOK")


def _command_run(args: argparse.Namespace) -> int:
    import asyncio

    from mage_nb_sched.execution.runner import run_with_fresh_kernel
    from mage_nb_sched.service.runs import block_runs, create_run
    from mage_nb_sched.store.engine import use_store

    store = use_store(project_dir=args.project_dir)
    assert store.project_dir is not None
    uuid = _pipeline_uuid(store.project_dir, args.notebook)
    variables = dict(parse_var(item) for item in args.var)
    run = create_run(store, pipeline_uuid=uuid, variables=variables or None)
    print(f"run {run.id}: {uuid} ({run.execution_partition})", flush=True)
    outcome = asyncio.run(run_with_fresh_kernel(store, run.id))
    blocks = block_runs(store, run.id)
    width = max([len(block.block_uuid) for block in blocks] + [5])
    for block in blocks:
        seconds = ""
        if block.started_at is not None and block.completed_at is not None:
            seconds = f"{(block.completed_at - block.started_at).total_seconds():8.3f}s"
        print(f"  {block.block_uuid:<{width}}  {block.status!s:<10} {seconds}")
    print(f"run {run.id} {outcome.status}" + (f": {outcome.reason}" if outcome.reason else ""))
    return 0 if outcome.status == "completed" else 1


#: Seconds between two looks at a run ``trigger --wait`` follows.
WAIT_POLL_SECONDS = 0.25


def _command_trigger(args: argparse.Namespace) -> int:
    from mage_nb_sched.service import api_triggers
    from mage_nb_sched.service.records import to_json
    from mage_nb_sched.store.engine import use_store

    variables = dict(parse_var(item) for item in args.var)
    store = use_store(project_dir=args.project_dir)
    schedule = _schedule_of(store, args)
    triggered = api_triggers.trigger_schedule(store, schedule.id, variables=variables)
    run = triggered.run
    if not args.json:
        print(
            f"run {run.id}: {schedule.name} ({schedule.pipeline_uuid}, schedule {schedule.id}) "
            f"{run.status!s}",
            flush=True,
        )
    if not args.wait:
        if args.json:
            print(json.dumps({"pipeline_run": to_json(run)}, default=str))
        return 0
    if not args.json and not api_triggers.scheduler_active(store):
        print(
            "  no scheduler serves this store yet: the run starts when one does (jupyter lab, "
            "or mage-nb-sched scheduler). Ctrl-C stops waiting; the run stays queued.",
            flush=True,
        )
    try:
        progress = _follow(store, run.id, quiet=args.json)
    except KeyboardInterrupt:
        print(f"\nstopped waiting; run {run.id} goes on", file=sys.stderr)
        return 130
    final = progress.run
    if args.json:
        print(
            json.dumps(
                {
                    "pipeline_run": to_json(final),
                    "block_runs": [to_json(block) for block in progress.blocks],
                },
                default=str,
            )
        )
    else:
        reason = (final.metrics or {}).get("error")
        print(f"run {final.id} {final.status!s}" + (f": {reason}" if reason else ""))
    return 0 if str(final.status) == "completed" else 1


def _follow(store: Any, run_id: int, *, quiet: bool) -> Any:
    """Poll run ``run_id`` until it ends, printing each block's status as it changes (unless
    ``quiet``); returns the last :class:`~mage_nb_sched.service.api_triggers.RunProgress`."""
    import time

    from mage_nb_sched.service import api_triggers

    seen: dict[str, str] = {}
    while True:
        progress = api_triggers.run_progress(store, run_id)
        width = max([len(block.block_uuid) for block in progress.blocks] + [5])
        for block in progress.blocks:
            status = str(block.status)
            if quiet or seen.get(block.block_uuid) == status or status == "initial":
                continue
            seen[block.block_uuid] = status
            seconds = ""
            if block.started_at is not None and block.completed_at is not None:
                elapsed = (block.completed_at - block.started_at).total_seconds()
                seconds = f"{elapsed:8.3f}s"
            print(f"  {block.block_uuid:<{width}}  {status:<10} {seconds}".rstrip(), flush=True)
        if progress.finished:
            return progress
        time.sleep(WAIT_POLL_SECONDS)


# --------------------------------------------------------------------------------------------
# Listings: plain-text tables and JSON over the service's records
# --------------------------------------------------------------------------------------------

#: What an empty cell shows (so every column of a table holds a word).
EMPTY = "-"
#: The longest error shown in a ``blocks`` table (the whole error is in ``--json``).
ERROR_WIDTH = 100


def format_datetime(value: datetime | None) -> str:
    """An instant in UTC, ISO to the minute (``2024-01-15T09:00Z``); ``-`` for none."""
    if value is None:
        return EMPTY
    if value.tzinfo is None:  # the store's datetimes are aware; naive means UTC here too
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def format_duration(value: timedelta | float | None) -> str:
    """``0.4s``, ``12s``, ``1m 05s``, ``2h 03m 04s``, ``3d 04h 05m``; ``-`` for none."""
    if value is None:
        return EMPTY
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        return EMPTY
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _elapsed(started: datetime | None, completed: datetime | None) -> timedelta | None:
    return None if started is None or completed is None else completed - started


def _cell(value: Any) -> str:
    """One table cell: a single line, runs of white space made one space, ``-`` if empty."""
    if value is None:
        return EMPTY
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = " ".join(str(getattr(value, "value", value)).split())
    return text or EMPTY


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[str] = ()
) -> str:
    """An aligned plain-text table: a header line, then one line per row (columns two spaces
    apart; ``right``: the headers of right-aligned columns). No rows: the header and
    ``(none)``."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        widths = [max(width, len(text)) for width, text in zip(widths, row, strict=True)]

    def line(values: Sequence[str]) -> str:
        parts = [
            text.rjust(width) if header in right else text.ljust(width)
            for header, width, text in zip(headers, widths, values, strict=True)
        ]
        return "  ".join(parts).rstrip()

    lines = [line(list(headers)), *(line(row) for row in cells)]
    if not cells:
        lines.append("(none)")
    return "\n".join(lines)


def _print_json(value: Any) -> None:
    print(json.dumps(value, default=str, indent=2))


def _open_store(args: argparse.Namespace) -> Store:
    from mage_nb_sched.store.engine import use_store

    return use_store(project_dir=args.project_dir)


def _schedule_of(store: Store, args: argparse.Namespace) -> ScheduleRecord:
    """The schedule ``args.schedule`` names (an id, or a name; ``args.pipeline`` narrows a
    name two pipelines share) — one resolution for every command that takes ``NAME|ID``."""
    from mage_nb_sched.service import api_triggers

    return api_triggers.find_schedule_by_ref(store, args.schedule, args.pipeline)


def _timezone_of(schedule: ScheduleRecord) -> str:
    from mage_nb_sched.core.settings import with_defaults

    return str(with_defaults(schedule.settings)["timezone"])


SCHEDULE_COLUMNS = (
    "NAME",
    "PIPELINE",
    "TYPE",
    "INTERVAL",
    "TIME ZONE",
    "STATUS",
    "NEXT RUN",
    "LAST STATUS",
    "RUNS",
    "ID",
)


def _command_schedules(args: argparse.Namespace) -> int:
    from mage_nb_sched.service import fields, schedules
    from mage_nb_sched.service.records import to_json

    pipeline = None
    if args.pipeline is not None:
        pipeline = fields.pipeline_uuid(args.pipeline, "--pipeline")
    store = _open_store(args)
    views: list[Any] = []
    cursor: int | None = None
    while True:  # every page (each a bounded number of statements, whatever its size)
        try:
            page = schedules.schedule_page(
                store,
                pipeline_uuid=pipeline,
                status=args.status,
                schedule_type=args.type,
                limit=500,
                cursor=cursor,
                pipeline_must_exist=True,
            )
        except NotFoundError as err:
            raise NotFoundError(
                f"--pipeline={pipeline!r}: no schedule of this pipeline and no notebook "
                f"{pipeline}.ipynb in {store.project_dir}. Leave --pipeline out to list every "
                "schedule."
            ) from err
        views.extend(page.views)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    if args.json:
        _print_json([to_json(view.schedule, **view.computed_fields()) for view in views])
        return 0
    rows = []
    for view in views:
        schedule = view.schedule
        rows.append(
            (
                schedule.name,
                schedule.pipeline_uuid,
                schedule.schedule_type,
                schedule.schedule_interval,
                _timezone_of(schedule),
                schedule.status,
                view.next_pipeline_run_date,
                view.stats.last_pipeline_run_status,
                view.stats.pipeline_runs_count,
                schedule.id,
            )
        )
    print(format_table(SCHEDULE_COLUMNS, rows, right=("RUNS", "ID")))
    return 0


RUN_COLUMNS = (
    "ID",
    "SCHEDULE",
    "PIPELINE",
    "EXECUTION DATE",
    "STATUS",
    "STARTED",
    "COMPLETED",
    "DURATION",
    "PASSED SLA",
)


def _command_runs(args: argparse.Namespace) -> int:
    from mage_nb_sched.service import fields, runs, schedules
    from mage_nb_sched.service.records import to_json

    store = _open_store(args)
    schedule = _schedule_of(store, args) if args.schedule is not None else None
    pipeline = None
    if args.pipeline is not None:
        pipeline = fields.pipeline_uuid(args.pipeline, "--pipeline")
    found = runs.list_runs(
        store,
        schedule_id=None if schedule is None else schedule.id,
        pipeline_uuid=pipeline,
        status=args.status,
        last=args.last,
    )
    if not found and schedule is None and pipeline is not None:
        # No run of a pipeline that does not exist either: say so rather than list nothing.
        try:
            runs.require_pipeline_notebook(store, pipeline)
        except MageNbSchedError as err:
            raise NotFoundError(
                f"--pipeline={pipeline!r}: no run of this pipeline and no notebook "
                f"{pipeline}.ipynb in {store.project_dir}. List schedules and their pipelines "
                "with mage-nb-sched schedules."
            ) from err
    if args.json:
        _print_json([to_json(run) for run in found])
        return 0
    names = {
        record.id: record.name
        for record in ([schedule] if schedule is not None else schedules.list_schedules(store))
    }
    rows = [
        (
            run.id,
            names.get(run.pipeline_schedule_id) if run.pipeline_schedule_id is not None else None,
            run.pipeline_uuid,
            run.execution_date,
            run.status,
            run.started_at,
            run.completed_at,
            _elapsed(run.started_at, run.completed_at),
            run.passed_sla,
        )
        for run in found
    ]
    print(format_table(RUN_COLUMNS, rows, right=("ID", "DURATION")))
    return 0


BLOCK_COLUMNS = ("BLOCK", "STATUS", "STARTED", "COMPLETED", "DURATION", "ERROR")


def error_summary(error: str | None) -> str | None:
    """The line of a block's error worth a table cell: the exception line that ends a
    traceback (``SystemError: nope``), else the error's first line; cut at
    :data:`ERROR_WIDTH` characters."""
    if not error:
        return None
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if not lines:
        return None
    text = lines[-1] if "Traceback" in error and len(lines) > 1 else lines[0]
    text = " ".join(text.split())
    return text if len(text) <= ERROR_WIDTH else text[: ERROR_WIDTH - 1] + "…"


def _command_blocks(args: argparse.Namespace) -> int:
    from mage_nb_sched.service import runs
    from mage_nb_sched.service.records import BlockRunRecord, to_json

    store = _open_store(args)
    blocks: list[BlockRunRecord] = []
    cursor: int | None = None
    while True:
        try:
            page = runs.block_run_page(store, args.run_id, limit=500, cursor=cursor)
        except NotFoundError as err:
            raise NotFoundError(
                f"RUN_ID={args.run_id}: no such run. List runs (and their ids) with "
                "mage-nb-sched runs [NAME]."
            ) from err
        blocks.extend(page.block_runs)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    if args.json:
        _print_json([to_json(block) for block in blocks])
        return 0
    rows = [
        (
            block.block_uuid,
            block.status,
            block.started_at,
            block.completed_at,
            _elapsed(block.started_at, block.completed_at),
            error_summary(block.error),
        )
        for block in blocks
    ]
    print(format_table(BLOCK_COLUMNS, rows, right=("DURATION",)))
    return 0


def _set_status(args: argparse.Namespace, status: ScheduleStatus) -> int:
    from mage_nb_sched.service import schedules
    from mage_nb_sched.service.records import to_json

    store = _open_store(args)
    schedule = _schedule_of(store, args)
    before = schedule.status
    if before != status:
        schedule = schedules.update_schedule(store, schedule.id, status=status)
    view = schedules.describe_schedules(store, [schedule])[0]
    if args.json:
        _print_json(to_json(view.schedule, **view.computed_fields()))
        return 0
    note = " (already)" if before == status else ""
    line = f"schedule {schedule.id} {schedule.name} ({schedule.pipeline_uuid}): {status}{note}"
    if status == ScheduleStatus.ACTIVE and view.next_pipeline_run_date is not None:
        line += f", next run {format_datetime(view.next_pipeline_run_date)}"
    print(line)
    return 0


def _command_pause(args: argparse.Namespace) -> int:
    return _set_status(args, ScheduleStatus.INACTIVE)


def _command_resume(args: argparse.Namespace) -> int:
    return _set_status(args, ScheduleStatus.ACTIVE)


#: Backfill statuses ``backfill --wait`` stops at, and the exit code of each.
BACKFILL_ENDS = {"completed": 0, "failed": 1, "cancelled": 1}


def _command_backfill(args: argparse.Namespace) -> int:
    from mage_nb_sched.core.datetimes import coerce_bounded_datetime
    from mage_nb_sched.service import api_triggers, backfills, runs
    from mage_nb_sched.service.records import to_json

    variables = dict(parse_var(item) for item in args.var)
    start = coerce_bounded_datetime(args.start, "--start")
    end = coerce_bounded_datetime(args.end, "--end")
    if end < start:
        raise ValidationError(
            "--end",
            args.end,
            f"before --start ({format_datetime(start)})",
            "Give an --end at or after --start; both ends are included.",
        )
    store = _open_store(args)
    schedule = _schedule_of(store, args)
    backfill = backfills.create_backfill(
        store,
        pipeline_schedule_id=schedule.id,
        start_datetime=start,
        end_datetime=end,
        interval_type=args.interval,
        interval_units=args.units,
        variables=variables or None,
    )
    created = backfills.start_backfill(store, backfill.id)
    if not args.json:
        step = f"{args.units} {args.interval}" + ("s" if args.units != 1 else "")
        print(
            f"backfill {backfill.id}: {schedule.name} ({schedule.pipeline_uuid}, schedule "
            f"{schedule.id}) {format_datetime(start)} .. {format_datetime(end)} every {step}: "
            f"{len(created)} runs",
            flush=True,
        )
    if not args.wait:
        if args.json:
            _print_json(
                {
                    "backfill": to_json(
                        backfills.get_backfill(store, backfill.id),
                        progress=backfills.backfill_progress(store, backfill.id),
                    ),
                    "pipeline_runs": [to_json(run) for run in created],
                }
            )
        return 0
    if not api_triggers.scheduler_active(store):
        print(
            "  no scheduler serves this store yet: the runs start when one does (jupyter lab, "
            "or mage-nb-sched scheduler). Ctrl-C stops waiting; the backfill stays queued.",
            file=sys.stderr,
            flush=True,
        )
    try:
        final, progress = _follow_backfill(store, backfill.id)
    except KeyboardInterrupt:
        print(f"\nstopped waiting; backfill {backfill.id} goes on", file=sys.stderr)
        return 130
    status = str(final.status)
    if args.json:
        _print_json(
            {
                "backfill": to_json(final, progress=progress),
                "pipeline_runs": [
                    to_json(run) for run in runs.list_runs(store, backfill_id=backfill.id)
                ],
            }
        )
    else:
        counts = ", ".join(
            f"{progress[key]} {key}"
            for key in ("completed", "failed", "cancelled")
            if progress.get(key)
        )
        print(f"backfill {final.id} {status}" + (f": {counts}" if counts else ""))
    return BACKFILL_ENDS.get(status, 1)


def _follow_backfill(store: Store, backfill_id: int) -> tuple[Any, dict[str, int]]:
    """Poll backfill ``backfill_id`` until it ends, with a progress bar of its finished runs
    on stderr; returns the last record and its run counts."""
    import importlib
    import time

    from mage_nb_sched.service import backfills

    # tqdm.auto: a text bar in a terminal, a widget in a notebook. (Imported by name: tqdm
    # ships no type information, and the bar needs none.)
    tqdm: Any = importlib.import_module("tqdm.auto").tqdm

    unfinished = (PipelineRunStatus.INITIAL.value, PipelineRunStatus.RUNNING.value)
    progress = backfills.backfill_progress(store, backfill_id)
    with tqdm(
        total=progress["total"], unit="run", desc=f"backfill {backfill_id}", file=sys.stderr
    ) as bar:
        while True:
            record = backfills.get_backfill(store, backfill_id)
            progress = backfills.backfill_progress(store, backfill_id)
            finished = progress["total"] - sum(progress.get(key, 0) for key in unfinished)
            if bar.total != progress["total"]:
                bar.total = progress["total"]
            bad = {key: progress[key] for key in ("failed", "cancelled") if progress.get(key)}
            if bad:
                bar.set_postfix(bad, refresh=False)
            bar.update(finished - bar.n)
            if str(record.status) in BACKFILL_ENDS:
                return record, progress
            time.sleep(WAIT_POLL_SECONDS)


def scheduler_config(args: argparse.Namespace) -> Any:
    """Traitlets config for the headless scheduler: an optional config file, then the flags."""
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    config = Config()
    if args.config:
        path = Path(args.config).resolve()
        if not path.is_file():
            raise ValidationError(
                "--config", args.config, "no such file", "Give a traitlets .py config file."
            )
        config.merge(PyFileConfigLoader(path.name, str(path.parent)).load_config())
    flags = {
        ("LocalExecutor", "workers"): args.workers,
        ("LocalExecutor", "kernel_pool_size"): args.kernel_pool_size,
        ("LocalExecutor", "lazy_workers"): args.lazy_workers,
        ("LocalExecutor", "idle_timeout"): args.idle_timeout,
        ("Scheduler", "shutdown_grace"): args.shutdown_grace,
        ("Scheduler", "lease_seconds"): args.lease_seconds,
        ("Scheduler", "run_retention_days"): args.run_retention_days,
        ("Notifier", "webhook_url"): args.webhook_url,
    }
    for (section, name), value in flags.items():
        if value is not None:
            config[section][name] = value
    return config


async def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from mage_nb_sched.core.project import DB_URL_ENV, PROJECT_DIR_ENV
    from mage_nb_sched.scheduling.loop import Scheduler
    from mage_nb_sched.store.engine import use_store

    # Before anything slow: a stop signal during start-up is honoured as soon as it can be.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # Opening may migrate the schema: on a thread, so the loop keeps taking signals.
    store = await asyncio.to_thread(use_store, args.db_url, args.project_dir)
    if stop.is_set():
        print("stopped", flush=True)
        return 0
    assert store.project_dir is not None
    os.environ[PROJECT_DIR_ENV] = str(store.project_dir)
    os.environ[DB_URL_ENV] = store.url
    scheduler = Scheduler(store, config=scheduler_config(args))
    # Takes the lease (or stands by) and returns: workers start in the background, and due
    # runs are recorded meanwhile. A database it cannot write raises StoreError (exit 2).
    await scheduler.start()
    print(
        f"mage-nb-sched scheduler {scheduler.instance_id} serving {store.project_dir}", flush=True
    )
    stopping = asyncio.ensure_future(stop.wait())
    failing = asyncio.ensure_future(scheduler.wait_failed())
    await asyncio.wait({stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
    for waiter in (stopping, failing):
        waiter.cancel()
    if scheduler.failure is None:
        print("stopping: waiting for in-flight runs", flush=True)
    await scheduler.stop()
    if scheduler.failure is not None:
        print(f"error: {scheduler.failure}", file=sys.stderr, flush=True)
        return 1
    print("stopped", flush=True)
    return 0


def _command_scheduler(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic logs INFO lines about its plugins as soon as it is imported (opening the store):
    # nothing a user can act on.
    alembic = logging.getLogger("alembic")
    if alembic.level == logging.NOTSET:
        alembic.setLevel(logging.WARNING)
    return asyncio.run(_serve(args))


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr, naming the argument and
    where the usage is (exit 2), instead of the whole usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}. See '{self.prog} --help'.\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _run_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a run id (a whole number, as mage-nb-sched runs lists), got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a run id >= 1, got {text!r}")
    return value


EXIT_CODES = "Exit codes: 0 done; 2 bad usage, not found or a store error (one line on stderr)."
WAIT_EXIT_CODES = (
    "Exit codes: 0 created (with --wait: completed); 1 with --wait, it failed or was "
    "cancelled; 2 bad usage, not found or a store error (one line on stderr)."
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mage-nb-sched",
        description="Mage-style pipeline schedules for Jupyter notebooks.",
        epilog="Exit codes: 0 ok; 1 a run or backfill ended badly (run, and --wait); 2 bad "
        "usage, not found or a store error. Each command's --help says more.",
    )
    parser.add_argument("--version", action="version", version=f"mage-nb-sched {__version__}")
    parser.add_argument(
        "--project-dir",
        default=None,
        help="folder holding the notebooks (default: $MAGE_NB_SCHED_PROJECT_DIR, else the nearest "
        "parent holding .mage_nb_sched/, else the current folder)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    project_dir_help = parser._option_string_actions["--project-dir"].help
    run = commands.add_parser(
        "run",
        help="execute a notebook now as a manual pipeline run",
        epilog="Exit codes: 0 the run completed; 1 it failed or was cancelled; 2 bad usage, "
        "not found or a store error (one line on stderr).",
    )
    # Accepted after the subcommand too (`mage-nb-sched scheduler --project-dir DIR`).
    run.add_argument("--project-dir", default=argparse.SUPPRESS, help=project_dir_help)
    run.add_argument("notebook", help="notebook path or pipeline uuid (e.g. etl/daily)")
    run.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="run variable (repeatable); VALUE is parsed as JSON when possible",
    )
    run.set_defaults(handler=_command_run)

    trigger = commands.add_parser(
        "trigger",
        help="create a run of a schedule now (the trigger URL's rules, no token needed)",
        description="Create a run of a schedule now, as its trigger URL would (an inactive "
        "schedule, or skip_if_previous_running with a run unfinished, is refused) and print "
        "its id.",
        epilog=WAIT_EXIT_CODES,
    )
    trigger.add_argument("--project-dir", default=argparse.SUPPRESS, help=project_dir_help)
    trigger.add_argument("schedule", metavar="NAME|ID", help="the schedule's name or id")
    trigger.add_argument(
        "--pipeline",
        default=None,
        metavar="UUID",
        help="the schedule's pipeline, when several pipelines have a schedule of that name",
    )
    trigger.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="run variable (repeatable); VALUE is parsed as JSON when possible",
    )
    trigger.add_argument(
        "--wait",
        action="store_true",
        help="follow the run block by block until it ends (a scheduler must serve the store)",
    )
    trigger.add_argument(
        "--json", action="store_true", help="print the run as JSON (with --wait: once it ended)"
    )
    trigger.set_defaults(handler=_command_trigger)

    serve = commands.add_parser(
        "scheduler",
        help="run the scheduler loop headless until SIGTERM/SIGINT",
        description="Create runs when schedules are due and execute them, without Jupyter. "
        "Only one scheduler per SQLite database is active; others stand by and take over.",
        epilog="Exit codes: 0 stopped cleanly (SIGTERM/SIGINT); 1 no worker process could "
        "start; 2 bad usage or a database it cannot write (one line on stderr).",
    )
    serve.add_argument("--project-dir", default=argparse.SUPPRESS, help=project_dir_help)
    serve.add_argument("--db-url", default=None, help="SQLAlchemy URL (default: the project's)")
    serve.add_argument("--workers", type=int, default=None, help="worker processes (default 2)")
    serve.add_argument(
        "--kernel-pool-size", type=int, default=None, help="warm kernels per worker (default 1)"
    )
    serve.add_argument(
        "--lazy-workers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start worker processes only when a run needs one and stop them after "
        "--idle-timeout seconds with nothing to run (default: kept warm)",
    )
    serve.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --lazy-workers: idle seconds before the workers stop (default 300)",
    )
    serve.add_argument(
        "--shutdown-grace",
        type=float,
        default=None,
        help="seconds in-flight runs get on stop before their kernels are killed (default 10)",
    )
    serve.add_argument(
        "--lease-seconds",
        type=float,
        default=None,
        help="leader lease length: a standby takes over this long after the leader died "
        "(default 10)",
    )
    serve.add_argument(
        "--run-retention-days",
        type=int,
        default=None,
        help="delete runs finished more than this many days ago (default 0: keep)",
    )
    serve.add_argument("--webhook-url", default=None, help="POST failure/SLA alerts here")
    serve.add_argument(
        "--config", default=None, help="traitlets config file (c.Scheduler..., c.LocalExecutor...)"
    )
    serve.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    serve.set_defaults(handler=_command_scheduler)
    _add_listings(commands, project_dir_help)
    return parser


def _add_listings(commands: Any, project_dir_help: str | None) -> None:
    """``schedules``, ``runs``, ``blocks``, ``backfill``, ``pause`` and ``resume``."""

    def command(
        name: str, help_text: str, description: str, handler: Callable[..., int], epilog: str
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(
            name, help=help_text, description=description, epilog=epilog
        )
        sub.add_argument("--project-dir", default=argparse.SUPPRESS, help=project_dir_help)
        sub.set_defaults(handler=handler)
        return sub

    def schedule_ref(sub: argparse.ArgumentParser, *, optional: bool = False) -> None:
        sub.add_argument(
            "schedule",
            metavar="NAME|ID",
            nargs="?" if optional else None,
            default=None,
            help="the schedule's name or id" + (" (default: every run)" if optional else ""),
        )

    def pipeline(sub: argparse.ArgumentParser, help_text: str) -> None:
        sub.add_argument("--pipeline", default=None, metavar="UUID", help=help_text)

    def as_json(sub: argparse.ArgumentParser, help_text: str) -> None:
        sub.add_argument("--json", action="store_true", help=help_text)

    shared_name = "the schedule's pipeline, when several pipelines have a schedule of that name"
    table_note = "Datetimes are UTC, ISO to the minute; durations like 1m 05s; '-' is empty. "

    schedules = command(
        "schedules",
        "list schedules (a table, or --json)",
        "List schedules with Mage's computed fields: name, pipeline, type, interval, time "
        "zone, status, next run, the last run's status, the number of runs and the id.",
        _command_schedules,
        table_note + EXIT_CODES,
    )
    pipeline(schedules, "only the schedules of this pipeline (e.g. etl/daily)")
    schedules.add_argument(
        "--status", choices=ScheduleStatus.values(), default=None, help="only this status"
    )
    schedules.add_argument(
        "--type", choices=ScheduleType.values(), default=None, help="only this schedule type"
    )
    as_json(schedules, "print a JSON list of the schedules (Mage's fields) instead")

    run_list = command(
        "runs",
        "list pipeline runs, oldest first (a table, or --json)",
        "List pipeline runs, oldest first: id, schedule, pipeline, execution date, status, "
        "started, completed, duration and whether the run passed its SLA.",
        _command_runs,
        table_note + EXIT_CODES,
    )
    schedule_ref(run_list, optional=True)
    pipeline(run_list, "only runs of this pipeline; with NAME: " + shared_name)
    run_list.add_argument(
        "--status", choices=PipelineRunStatus.values(), default=None, help="only this status"
    )
    run_list.add_argument(
        "--last", type=_positive_int, default=None, metavar="N", help="only the newest N runs"
    )
    as_json(run_list, "print a JSON list of the runs instead")

    blocks = command(
        "blocks",
        "list a run's block runs (a table, or --json)",
        "List the block runs of one pipeline run in execution order: block, status, started, "
        "completed, duration and the error's exception line (the whole error is in --json).",
        _command_blocks,
        table_note + EXIT_CODES,
    )
    blocks.add_argument("run_id", type=_run_id, metavar="RUN_ID", help="the pipeline run's id")
    as_json(blocks, "print a JSON list of the block runs instead")

    backfill = command(
        "backfill",
        "create and start a backfill of a schedule's pipeline",
        "Create a backfill of the schedule's pipeline over [--start, --end] (both included; a "
        "date without a time is midnight UTC) and start it: one run per step, executed oldest "
        "first by the scheduler serving the store.",
        _command_backfill,
        WAIT_EXIT_CODES,
    )
    schedule_ref(backfill)
    pipeline(backfill, shared_name)
    backfill.add_argument(
        "--start", required=True, metavar="DATE", help="first execution date, e.g. 2024-01-01"
    )
    backfill.add_argument(
        "--end", required=True, metavar="DATE", help="last execution date, e.g. 2024-01-31"
    )
    backfill.add_argument(
        "--interval",
        required=True,
        choices=BackfillIntervalType.values(),
        help="the step between two runs",
    )
    backfill.add_argument(
        "--units", type=_positive_int, default=1, metavar="N", help="steps of N intervals (1)"
    )
    backfill.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="variable of every run (repeatable); VALUE is parsed as JSON when possible",
    )
    backfill.add_argument(
        "--wait",
        action="store_true",
        help="show a progress bar (on stderr) until the backfill ends (a scheduler must serve "
        "the store)",
    )
    as_json(backfill, "print the backfill and its runs as JSON (with --wait: once it ended)")

    for name, handler, verb, status in (
        ("pause", _command_pause, "pause", "inactive"),
        ("resume", _command_resume, "resume", "active"),
    ):
        sub = command(
            name,
            f"{verb} a schedule (status {status})",
            f"Set a schedule's status to {status}"
            + (
                "; the scheduler creates no run for it until it is resumed."
                if status == "inactive"
                else " (activating it now: a period that started before now is not run "
                "unless create_initial_pipeline_run is set)."
            )
            + " A schedule defined in a triggers.yaml is written back to its file.",
            handler,
            EXIT_CODES,
        )
        schedule_ref(sub)
        pipeline(sub, shared_name)
        as_json(sub, "print the schedule as JSON")


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a usage error (already printed)
        return stop.code if isinstance(stop.code, int) else 2 if stop.code else 0
    try:
        return int(args.handler(args))
    except MageNbSchedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        # (Imported here: --version stays fast.)
        from traitlets import TraitError

        if isinstance(err, TraitError):  # a bad option value (e.g. --workers 0)
            print(f"error: {err}", file=sys.stderr)
            return 2
        # A database that is read-only, locked past the busy timeout or full: say which file and
        # what to do instead of a SQLAlchemy traceback.
        from sqlalchemy.exc import OperationalError

        if not isinstance(err, OperationalError):
            raise
        from mage_nb_sched.store.engine import current_store, store_error

        print(f"error: {store_error(err, current_store())}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
