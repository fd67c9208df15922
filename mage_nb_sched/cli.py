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
run failed or was cancelled, 2 bad usage or a store error. The other subcommands (``schedules``,
``runs``, ``backfill``) arrive with the front-end issue.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from traitlets import TraitError

from mage_nb_sched.core.errors import MageNbSchedError, ValidationError


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
    schedule = api_triggers.find_schedule_by_ref(store, args.schedule, args.pipeline)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mage-nb-sched", description="Mage-style pipeline schedules for Jupyter notebooks."
    )
    parser.add_argument(
        "--project-dir",
        default=None,
        help="folder holding the notebooks (default: $MAGE_NB_SCHED_PROJECT_DIR, else the nearest "
        "parent holding .mage_nb_sched/, else the current folder)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    project_dir_help = parser._option_string_actions["--project-dir"].help
    run = commands.add_parser("run", help="execute a notebook now as a manual pipeline run")
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
        "its id. Exit 0 when created (with --wait: completed), 1 failed or cancelled, 2 bad "
        "usage or a store error.",
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except MageNbSchedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TraitError as err:  # a bad option value (e.g. --workers 0)
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        # A database that is read-only, locked past the busy timeout or full: say which file and
        # what to do instead of a SQLAlchemy traceback. (Imported here: --version stays fast.)
        from sqlalchemy.exc import OperationalError

        if not isinstance(err, OperationalError):
            raise
        from mage_nb_sched.store.engine import current_store, store_error

        print(f"error: {store_error(err, current_store())}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
