"""IPython integration: ``%load_ext mage_nb_sched``, ``%%schedule`` and ``%schedule``.

Loading the extension puts the Mage API names (``PipelineSchedule``, ``ScheduleStatus``, ...) into
the notebook's namespace, as Mage's own notebook environment does, so the documentation's snippets
run as they are written, and registers two magics:

``%%schedule NAME [--pipeline UUID] [--rotate-token]``
    The cell body is one trigger in YAML, with the keys of a ``triggers.yaml`` entry
    (``schedule_type``, ``schedule_interval``, ``start_time``, ``status``, ``variables``, ``sla``,
    ``settings``, ``description``). It creates or updates the schedule, writes it to the
    notebook's ``<stem>.triggers.yaml`` and shows a summary: the status, the next three run times
    in the schedule's time zone and, for an API schedule just created (or with
    ``--rotate-token``), its trigger URL with the token — shown that once. The pipeline defaults
    to the notebook the kernel runs for.

``%schedule list | show | runs | blocks | run | backfill | cancel | pause | resume | delete |
status``
    Tables come back as pandas DataFrames (``df = %schedule runs nightly``). ``%schedule`` alone
    or ``%schedule SUBCOMMAND -h`` prints the help.

Every mistake (a wrong argument, invalid YAML, a bad value, an unknown schedule) is an IPython
``UsageError``: one line naming the argument, the YAML line or the field, and nothing is saved.
"""

from __future__ import annotations

import argparse
import html
import importlib
import json
import os
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from mage_nb_sched.core.errors import MageNbSchedError, ValidationError
from mage_nb_sched.core.project import SERVER_URL_ENV

#: Names pushed into the user namespace by ``%load_ext mage_nb_sched``.
PUSHED_NAMES = (
    "Backfill",
    "BlockRun",
    "PipelineRun",
    "PipelineSchedule",
    "ScheduleInterval",
    "ScheduleStatus",
    "ScheduleType",
    "Trigger",
    "add_or_update_trigger_for_pipeline_and_persist",
    "trigger_pipeline",
    "custom",
    "data_exporter",
    "data_loader",
    "transformer",
)

#: Environment variables that may hold the Jupyter server's URL (with its base_url), first wins.
SERVER_URL_ENVS = (SERVER_URL_ENV, "JUPYTER_SERVER_URL")
#: Shown instead of the server's URL when the kernel cannot know it.
PLACEHOLDER_BASE_URL = "http://<jupyter server>/"
#: Seconds between two looks at a run or backfill ``--wait`` follows.
POLL_SECONDS = 0.25
#: Seconds between two checks, while waiting, that a scheduler still serves the store.
SCHEDULER_CHECK_SECONDS = 2.0
#: How many upcoming run times a summary lists.
NEXT_RUNS = 3

_FINISHED_BLOCK = {"completed", "failed", "cancelled", "upstream_failed"}
_FINISHED_RUN = {"completed", "failed", "cancelled"}
_NO_SCHEDULER = (
    "no scheduler serves this store, so {what} waits until one does (JupyterLab with "
    "mage_nb_sched, or `mage-nb-sched scheduler`); not waiting."
)


def load_ipython_extension(ipython: Any) -> None:
    from mage_nb_sched import models, triggers
    from mage_nb_sched.core import enums
    from mage_nb_sched.execution import blocks

    sources = (models, triggers, enums, blocks)
    ipython.push(
        {
            name: next(getattr(s, name) for s in sources if hasattr(s, name))
            for name in PUSHED_NAMES
        }
    )
    ipython.register_magics(ScheduleMagics)


# --------------------------------------------------------------------------------------------
# Argument parsing: argparse whose errors are UsageErrors (one line), never SystemExit
# --------------------------------------------------------------------------------------------


class _HelpShown(Exception):
    """``-h`` printed the help: the magic returns without a result."""


class _Parser(argparse.ArgumentParser):
    # argparse calls error() for every mistake (also those exit_on_error=False lets through
    # in some Python versions) and exit() after printing the help: both are overridden, so
    # parsing never raises SystemExit; each parser's error names its own subcommand.

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} -h)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            raise UsageError(f"{self.prog}: {message.strip()}")
        raise _HelpShown


def _parse(parser: argparse.ArgumentParser, line: str) -> argparse.Namespace:
    try:
        words = shlex.split(line)
    except ValueError as err:
        raise UsageError(f"{parser.prog}: cannot read the arguments ({err})") from None
    try:
        namespace, extra = parser.parse_known_args(words)
    except argparse.ArgumentError as err:
        raise UsageError(f"{parser.prog}: {err} (see {parser.prog} -h)") from None
    if extra:
        command = getattr(namespace, "command", None)
        prog = parser.prog if command is None else f"{parser.prog} {command}"
        raise UsageError(
            f"{prog}: unrecognized arguments: {' '.join(extra)} (see {prog} -h)"
        )
    return namespace


def _cell_parser() -> _Parser:
    parser = _Parser(
        prog="%%schedule",
        description=(
            "Create or update the schedule NAME from the cell body: one trigger in YAML with "
            "the keys of a triggers.yaml entry (schedule_type, schedule_interval, start_time, "
            "status, variables, sla, settings, description). It is written to the notebook's "
            "<stem>.triggers.yaml."
        ),
        epilog=(
            "Example:\n  %%schedule nightly\n  schedule_interval: '@daily'\n  status: active\n"
            "  settings: {timezone: Europe/Berlin}"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", help="the schedule's name")
    parser.add_argument(
        "--pipeline",
        metavar="UUID",
        help="the pipeline (notebook path without .ipynb); default: this notebook",
    )
    parser.add_argument(
        "--rotate-token",
        action="store_true",
        help="give an API schedule a new token and show its trigger URL once",
    )
    return parser


def _line_parser() -> _Parser:
    parser = _Parser(
        prog="%schedule",
        description="Schedules, runs and backfills of this project. Tables are DataFrames: "
        "df = %schedule runs nightly.",
    )
    commands = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", parser_class=_Parser)

    def named(name: str, text: str) -> _Parser:
        sub: _Parser = commands.add_parser(name, help=text, description=text)
        sub.add_argument("name", metavar="NAME", help="schedule name or id")
        sub.add_argument(
            "--pipeline", metavar="UUID", help="the pipeline, when two pipelines share NAME"
        )
        return sub

    commands.add_parser("list", help="every schedule (a DataFrame)", description="Every schedule.")
    named("show", "one schedule: settings, next runs, trigger URL")
    runs = named("runs", "the schedule's runs (a DataFrame)")
    runs.add_argument("--last", type=int, metavar="N", help="only the newest N runs")
    runs.add_argument("--status", metavar="S", help="e.g. failed, completed, running")
    blocks = commands.add_parser(
        "blocks", help="a run's block runs (a DataFrame)", description="A run's block runs."
    )
    blocks.add_argument("run_id", metavar="RUN_ID", type=int)
    run = named("run", "run the schedule now")
    run.add_argument(
        "--var", action="append", default=[], metavar="k=v", help="a run variable (repeatable)"
    )
    run.add_argument("--wait", action="store_true", help="follow the run until it ends")
    backfill = named("backfill", "runs for every date of a range")
    backfill.add_argument("--start", required=True, metavar="D", help="first date, e.g. 2024-01-01")
    backfill.add_argument("--end", required=True, metavar="D", help="last date (inclusive)")
    backfill.add_argument(
        "--interval",
        default="day",
        choices=["second", "minute", "hour", "day", "week", "month", "year"],
        help="step between runs (default: day)",
    )
    backfill.add_argument("--units", type=int, default=1, metavar="N", help="steps per run")
    backfill.add_argument(
        "--limit", type=int, metavar="N", help="at most N of its runs execute at once"
    )
    backfill.add_argument("--wait", action="store_true", help="follow it until every run ends")
    cancel = commands.add_parser("cancel", help="cancel a run", description="Cancel a run.")
    cancel.add_argument("run_id", metavar="RUN_ID", type=int)
    named("pause", "deactivate the schedule")
    named("resume", "activate the schedule")
    named("delete", "delete the schedule with its runs")
    commands.add_parser(
        "status",
        help="is a scheduler serving this store, its queue",
        description="Whether a scheduler serves this store, its last lease renewal, its queue.",
    )
    return parser


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
            "--var", text, f"{name!r} is not a valid variable name", "Use e.g. --var n=100."
        )
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name, value


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------------------------
# What the magics show: a titled list of facts, as plain text and as HTML
# --------------------------------------------------------------------------------------------


@dataclass
class Report:
    """A titled list of (label, value) lines and notes; plain text and HTML reprs."""

    title: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        width = max([len(label) for label, _ in self.rows] + [0])
        lines = [self.title]
        lines += [
            f"  {(label + ':') if label else '':<{width + 1}} {value}" for label, value in self.rows
        ]
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(label)}</th>"
            f"<td style='text-align:left'><code>{html.escape(value)}</code></td></tr>"
            for label, value in self.rows
        )
        notes = "".join(f"<p>{html.escape(note)}</p>" for note in self.notes)
        return f"<div><b>{html.escape(self.title)}</b><table>{body}</table>{notes}</div>"


class _SchedulerWatch:
    """Whether the scheduler serving a store went away while ``--wait`` follows its work:
    the store is asked at most every :data:`SCHEDULER_CHECK_SECONDS`."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.checked = time.monotonic()

    def gone(self) -> bool:
        from mage_nb_sched.service import api_triggers

        if time.monotonic() - self.checked <= SCHEDULER_CHECK_SECONDS:
            return False
        self.checked = time.monotonic()
        return not api_triggers.scheduler_active(self.store)


class _Progress:
    """A live progress bar (``tqdm.auto``: a widget in a notebook, text in a terminal)."""

    def __init__(self, description: str, unit: str) -> None:
        # tqdm has no type stubs: used through Any.
        auto: Any = importlib.import_module("tqdm.auto")
        self._bar: Any = auto.tqdm(total=None, desc=description, unit=unit, leave=True)

    def show(self, done: int, total: int | None, text: str) -> None:
        if self._bar.total != total:
            # reset(): tqdm.notebook updates its widget (max, width) only there, not on a
            # plain assignment of total.
            self._bar.reset(total=total)
        self._bar.n = done
        self._bar.set_description(text, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


# --------------------------------------------------------------------------------------------
# Schedule summaries
# --------------------------------------------------------------------------------------------


def base_url() -> tuple[str, str | None]:
    """The Jupyter server's URL for trigger URLs, and the variable it came from (None: the
    placeholder, the kernel cannot know it)."""
    for name in SERVER_URL_ENVS:
        value = os.environ.get(name, "").strip()
        if value:
            return (value if value.endswith("/") else value + "/"), name
    return PLACEHOLDER_BASE_URL, None


def trigger_url(schedule_id: int, token: str) -> str:
    """Mage's trigger URL of an API schedule."""
    return f"{base_url()[0]}mage/api/pipeline_schedules/{schedule_id}/pipeline_runs/{token}"


def next_run_times(
    store: Any, schedule: Any, now: datetime, count: int = NEXT_RUNS
) -> list[datetime]:
    """The execution dates of the next ``count`` runs of a time schedule after ``now``
    (``start_time`` respected); empty when it runs on events, API calls or not periodically."""
    from mage_nb_sched.core.enums import ScheduleType
    from mage_nb_sched.service import schedules

    if schedule.schedule_type != ScheduleType.TIME:
        return []
    facts = schedules.timing_of(schedule)
    if not facts.periodic:
        return []
    moment = now
    if (
        facts.start_time is not None
        and not facts.uses_landing_time
        and facts.start_time > now
    ):
        moment = facts.start_time - timedelta(microseconds=1)
    found: list[datetime] = []
    while len(found) < count:
        upcoming = schedules.next_execution_date(store, schedule, moment)
        if upcoming is None or upcoming <= moment:
            break
        found.append(upcoming)
        moment = upcoming
    return found


def _local(instant: datetime, zone_name: str) -> str:
    from mage_nb_sched.core.datetimes import load_zone

    local = instant.astimezone(load_zone(zone_name))
    return f"{local.isoformat(sep=' ')} {local.tzname()}"


def schedule_report(
    store: Any,
    schedule: Any,
    *,
    title: str,
    now: datetime,
    token: str | None = None,
    details: bool = False,
) -> Report:
    """A schedule's summary: status, timing, next runs in its time zone, and its trigger URL
    (with ``token`` when it was just created or rotated)."""
    from mage_nb_sched.core.enums import ScheduleInterval, ScheduleStatus, ScheduleType
    from mage_nb_sched.core.settings import with_defaults
    from mage_nb_sched.service import schedules, triggers

    report = Report(title)
    status = str(schedule.status)
    kind = str(schedule.schedule_type)
    zone = str(with_defaults(schedule.settings)["timezone"])
    inactive = schedule.status != ScheduleStatus.ACTIVE
    report.rows.append(
        ("status", status + (" (no runs are created until it is active)" if inactive else ""))
    )
    report.rows.append(("type", kind))
    if schedule.schedule_interval:
        report.rows.append(("interval", str(schedule.schedule_interval)))
    report.rows.append(("time zone", zone))
    if schedule.start_time is not None:
        report.rows.append(("start_time", _local(schedule.start_time, zone)))
    if schedule.schedule_type == ScheduleType.TIME:
        interval = schedule.schedule_interval
        if interval == ScheduleInterval.ONCE:
            first = schedule.start_time or schedule.last_enabled_at
            report.rows.append(
                ("next run", "once, " + (_local(first, zone) if first else "when activated"))
            )
        elif interval == ScheduleInterval.ALWAYS_ON:
            report.rows.append(("next runs", "continuously: each as soon as the last one ends"))
        else:
            try:
                upcoming = next_run_times(store, schedule, now)
            except MageNbSchedError as err:
                report.rows.append(("next runs", f"cannot be computed: {_one_line(str(err))}"))
            else:
                label = "next runs" + (" (once active)" if inactive else "")
                for index, instant in enumerate(upcoming):
                    report.rows.append((label if index == 0 else "", _local(instant, zone)))
    elif schedule.schedule_type == ScheduleType.EVENT:
        report.rows.append(("next runs", "when a matching event arrives"))
    if schedule.sla:
        report.rows.append(("sla", f"{schedule.sla} s"))
    if details:
        if schedule.description:
            report.rows.append(("description", str(schedule.description)))
        if schedule.variables:
            report.rows.append(("variables", json.dumps(schedule.variables, default=str)))
        if schedule.settings:
            report.rows.append(("settings", json.dumps(schedule.settings, default=str)))
        stats = schedules.schedule_stats(store, schedule.id)
        last = stats.last_pipeline_run_status
        report.rows.append(
            (
                "runs",
                f"{stats.pipeline_runs_count} ({stats.pipeline_in_progress_runs_count} in "
                f"progress; last {'none' if last is None else str(last)})",
            )
        )
    if schedule.in_code:
        root = schedules.project_dir_of(store)
        path = triggers.triggers_path(root, schedule.pipeline_uuid)
        try:
            shown = path.relative_to(root.resolve()).as_posix()
        except ValueError:
            shown = str(path)
        report.rows.append(("defined in", shown))
    report.rows.append(("id", str(schedule.id)))
    if schedule.schedule_type == ScheduleType.API:
        base, source = base_url()
        if token is not None:
            report.rows.append(("trigger URL", trigger_url(schedule.id, token)))
            report.rows.append(("token", token))
            report.notes.append(
                "The token is shown this once (it is stored hashed): copy it now. A new one: "
                f"%%schedule {schedule.name} --rotate-token."
            )
        else:
            hint = f" (token {schedule.token_hint})" if schedule.token_hint else ""
            report.rows.append(
                (
                    "trigger URL",
                    f"{base}mage/api/pipeline_schedules/{schedule.id}/pipeline_runs/<token>"
                    + hint,
                )
            )
            report.notes.append(
                "The token was shown when the schedule was created; for a new one run "
                f"%%schedule {schedule.name} --rotate-token."
            )
        if source is None:
            report.notes.append(
                f"{PLACEHOLDER_BASE_URL} is a placeholder: this kernel does not know the Jupyter "
                "server's URL. Put your server's address (with its base_url) there, or set "
                f"${SERVER_URL_ENVS[-1]}."
            )
        else:
            report.notes.append(f"Server URL from ${source}.")
    return report


# --------------------------------------------------------------------------------------------
# YAML bodies
# --------------------------------------------------------------------------------------------


def _parse_body(prog: str, body: str) -> dict[str, Any]:
    import yaml

    try:
        content = yaml.safe_load(body)
    except yaml.YAMLError as err:
        lines = body.splitlines()
        mark = getattr(err, "problem_mark", None)
        context = getattr(err, "context_mark", None)
        if context is not None and (
            mark is None or mark.line >= len(lines) or not lines[mark.line].strip()
        ):
            mark = context  # the problem is at the end of the body: point at where it began
        problem = getattr(err, "problem", None) or str(err)
        context_text = getattr(err, "context", None)
        if context_text:
            problem = f"{problem} ({context_text})"
        if mark is not None:
            index, column = mark.line, mark.column
            filled = [number for number, text in enumerate(lines) if text.strip()]
            if filled and (index >= len(lines) or not lines[index].strip()):
                # At the end of the body (an unclosed bracket, a missing value): the last line
                # with text is where it went wrong.
                index = max(number for number in filled if number <= index)
                column = len(lines[index])
            raise UsageError(
                f"{prog}: invalid YAML at line {index + 2} of the cell, column {column + 1} "
                f"({lines[index].strip() if index < len(lines) else ''!r}): "
                f"{_one_line(problem)}. Nothing was saved."
            ) from None
        raise UsageError(
            f"{prog}: invalid YAML: {_one_line(problem)}. Nothing was saved."
        ) from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise UsageError(
            f"{prog}: the cell body must be one trigger as a YAML mapping (key: value lines, "
            f"e.g. schedule_interval: '@daily'), not a {type(content).__name__}. Nothing was saved."
        )
    return {str(key): value for key, value in content.items()}


def _key_lines(body: str) -> dict[str, int]:
    """The cell line (1-based, the magic's line being 1) of each key of the body, nested keys
    dotted (``settings.timeout``)."""
    import yaml

    found: dict[str, int] = {}
    try:
        root = yaml.compose(body, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return found

    def walk(node: Any, prefix: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key, value in node.value:
            name = f"{prefix}{key.value}"
            found.setdefault(name, key.start_mark.line + 2)
            walk(value, name + ".")

    walk(root, "")
    return found


def _located(prog: str, err: MageNbSchedError, body: str) -> str:
    """The error as one line, naming the cell line of the field when the body has it."""
    message = _one_line(str(err))
    field_name = getattr(err, "field", None)
    if isinstance(field_name, str):
        lines = _key_lines(body)
        parts = field_name.split(".")
        while parts:
            line = lines.get(".".join(parts))
            if line is not None:
                return f"{prog}: line {line} ({field_name}): {message} Nothing was saved."
            parts.pop()
    return f"{prog}: {message} Nothing was saved."


# --------------------------------------------------------------------------------------------
# The magics
# --------------------------------------------------------------------------------------------


def _display(value: Any, **options: Any) -> Any:
    # IPython's display() has no annotations; called through Any.
    display: Any = importlib.import_module("IPython.display").display
    return display(value, **options)


def _store() -> Any:
    from mage_nb_sched.store.engine import current_store

    return current_store()


def _now() -> datetime:
    from mage_nb_sched.core.clock import utcnow

    return utcnow()


@magics_class
class ScheduleMagics(Magics):
    """``%%schedule`` / ``%schedule`` (see the module docstring)."""

    @line_cell_magic
    def schedule(self, line: str, cell: str | None = None) -> Any:
        """Define a schedule (``%%schedule NAME``) or manage schedules and runs
        (``%schedule SUBCOMMAND``); ``%schedule -h`` lists the subcommands."""
        try:
            if cell is None:
                return self._line(line)
            self._cell(line, cell)
        except _HelpShown:
            return None
        return None

    # -- %%schedule --------------------------------------------------------------------------

    def notebook_pipeline(self, store: Any) -> str:
        """The pipeline of the notebook this kernel runs for: VS Code's ``__vsc_ipynb_file__``,
        else jupyter_server's ``$JPY_SESSION_NAME`` (relative to the server root, which is the
        project dir, or absolute); a ``UsageError`` saying to pass ``--pipeline`` otherwise."""
        from mage_nb_sched.core.project import normalize_pipeline_uuid, pipeline_uuid_for
        from mage_nb_sched.service.schedules import project_dir_of

        root = project_dir_of(store)
        namespace = self.shell.user_ns if self.shell is not None else {}
        sources = (
            ("__vsc_ipynb_file__", namespace.get("__vsc_ipynb_file__")),
            ("$JPY_SESSION_NAME", os.environ.get("JPY_SESSION_NAME")),
        )
        for source, value in sources:
            if not isinstance(value, str) or not value.strip():
                continue
            if not value.endswith(".ipynb"):
                raise UsageError(
                    f"%%schedule: {source} is {value!r}, not a notebook, so the pipeline is not "
                    "known: pass --pipeline UUID (the notebook path without .ipynb)."
                )
            path = Path(value).expanduser()
            if path.is_absolute():
                try:
                    return pipeline_uuid_for(root, path)
                except ValueError:
                    raise UsageError(
                        f"%%schedule: this notebook ({path}) is not inside the project dir "
                        f"{root}: pass --pipeline UUID, or set $MAGE_NB_SCHED_PROJECT_DIR."
                    ) from None
            try:
                return normalize_pipeline_uuid(value, source)
            except ValidationError as err:
                raise UsageError(f"%%schedule: {_one_line(str(err))}") from None
        raise UsageError(
            "%%schedule: the notebook this kernel runs for is not known (no $JPY_SESSION_NAME "
            "or __vsc_ipynb_file__): pass --pipeline UUID (the notebook path without .ipynb)."
        )

    def _cell(self, line: str, body: str) -> None:
        from mage_nb_sched.core.enums import ScheduleType
        from mage_nb_sched.core.project import normalize_pipeline_uuid
        from mage_nb_sched.service import schedules, triggers

        args = _parse(_cell_parser(), line)
        prog = f"%%schedule {args.name}"
        entry = _parse_body(prog, body)
        for key in ("name", "pipeline_uuid"):
            if key in entry and not (key == "name" and entry[key] == args.name):
                where = "the magic's line (%%schedule NAME)" if key == "name" else "--pipeline"
                raise UsageError(
                    f"{prog}: line {_key_lines(body).get(key, 2)} ({key}): the {key} is given "
                    f"on {where}, not in the body. Nothing was saved."
                )
        entry["name"] = args.name
        try:
            store = _store()
            uuid = (
                normalize_pipeline_uuid(args.pipeline, "--pipeline")
                if args.pipeline is not None
                else self.notebook_pipeline(store)
            )
            trigger = triggers.Trigger.from_yaml_entry(entry, uuid)
            if args.rotate_token and str(trigger.schedule_type) != ScheduleType.API.value:
                raise ValidationError(
                    "--rotate-token",
                    True,
                    f"a {trigger.schedule_type!s} schedule has no trigger URL or token",
                    "Use --rotate-token with schedule_type: api.",
                )
            root = schedules.project_dir_of(store)
            path = triggers.triggers_path(root, uuid)
            if path.exists():
                # A file that cannot be read is refused before anything is written.
                triggers.read_triggers_file(path)
            before = schedules.find_schedule(store, uuid, args.name)
            applied = triggers.apply_trigger(store, trigger)
            triggers.persist_trigger(store, root, trigger, uuid)
            token = applied.token
            if args.rotate_token:
                token = schedules.rotate_token(store, applied.id).token
            record = schedules.get_schedule(store, applied.id)
        except MageNbSchedError as err:
            raise UsageError(_located(prog, err, body)) from None
        if before is None:
            what = "created"
        elif before.updated_at != record.updated_at:
            what = "updated"
        else:
            what = "unchanged"
        title = f"schedule {record.name!r} of {record.pipeline_uuid}: {what}"
        _display(schedule_report(store, record, title=title, now=_now(), token=token))

    # -- %schedule ---------------------------------------------------------------------------

    def _line(self, line: str) -> Any:
        parser = _line_parser()
        if not line.strip() or line.strip() in ("help", "-h", "--help"):
            parser.print_help()
            return None
        args = _parse(parser, line)
        if args.command is None:
            parser.print_help()
            return None
        handler: Callable[[Any, argparse.Namespace], Any] = getattr(
            self, f"_do_{args.command}"
        )
        try:
            return handler(_store(), args)
        except MageNbSchedError as err:
            raise UsageError(f"%schedule {args.command}: {_one_line(str(err))}") from None

    def _schedule_of(self, store: Any, args: argparse.Namespace) -> Any:
        from mage_nb_sched.frames import resolve_schedule

        return resolve_schedule(store, args.name, args.pipeline)

    def _do_list(self, store: Any, args: argparse.Namespace) -> Any:
        from mage_nb_sched.frames import schedules_frame

        return schedules_frame()

    def _do_show(self, store: Any, args: argparse.Namespace) -> Any:
        record = self._schedule_of(store, args)
        title = f"schedule {record.name!r} of {record.pipeline_uuid}"
        return schedule_report(store, record, title=title, now=_now(), details=True)

    def _do_runs(self, store: Any, args: argparse.Namespace) -> Any:
        from mage_nb_sched.frames import runs_frame

        record = self._schedule_of(store, args)
        if args.last is not None and args.last < 0:
            raise ValidationError("--last", args.last, "must be 0 or more", "Use e.g. --last 10.")
        return runs_frame(record, status=args.status, last=args.last)

    def _do_blocks(self, store: Any, args: argparse.Namespace) -> Any:
        from mage_nb_sched.frames import block_runs_frame

        return block_runs_frame(args.run_id)

    def _do_run(self, store: Any, args: argparse.Namespace) -> Any:
        from mage_nb_sched.frames import block_runs_frame
        from mage_nb_sched.service import api_triggers, runs

        variables = dict(parse_var(item) for item in args.var)
        record = self._schedule_of(store, args)
        run = runs.run_now(store, pipeline_schedule_id=record.id, variables=variables or None)
        print(f"run {run.id}: {record.name} ({record.pipeline_uuid}) {run.status!s}", flush=True)
        if not args.wait:
            print(f"Follow it with %schedule blocks {run.id} (or pass --wait).")
            return None
        if not api_triggers.scheduler_active(store):
            print(_NO_SCHEDULER.format(what=f"run {run.id}"))
            return None
        final = self._follow_run(store, run.id)
        if final is None:
            return None
        return block_runs_frame(run.id)

    def _follow_run(self, store: Any, run_id: int) -> Any:
        """Poll a run until it ends, with a live per-block progress bar; the last run record
        (None when waiting stopped first)."""
        from mage_nb_sched.service import api_triggers

        bar = _Progress(f"run {run_id}", unit="block")
        watch = _SchedulerWatch(store)
        try:
            while True:
                progress = api_triggers.run_progress(store, run_id)
                blocks = progress.blocks
                done = sum(1 for block in blocks if str(block.status) in _FINISHED_BLOCK)
                current = [block.block_uuid for block in blocks if str(block.status) == "running"]
                text = f"run {run_id} {progress.run.status!s}"
                if current:
                    text += f": {', '.join(current)}"
                bar.show(done, len(blocks) or None, text)
                if progress.finished:
                    break
                if watch.gone():
                    bar.close()
                    print(
                        f"The scheduler serving this store stopped; run {run_id} is "
                        f"{progress.run.status!s} and goes on when one serves it again. "
                        "Not waiting any longer."
                    )
                    return None
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            bar.close()
            print(f"Stopped waiting; run {run_id} goes on.")
            return None
        bar.close()
        final = progress.run
        reason = (final.metrics or {}).get("error")
        seconds = ""
        if final.started_at is not None and final.completed_at is not None:
            seconds = f" in {(final.completed_at - final.started_at).total_seconds():.1f} s"
        print(
            f"run {final.id} {final.status!s}{seconds}"
            + (f": {_one_line(str(reason))}" if reason else "")
        )
        return final

    def _do_backfill(self, store: Any, args: argparse.Namespace) -> Any:
        from mage_nb_sched.frames import RUN_COLUMNS, frame, run_rows
        from mage_nb_sched.service import api_triggers, backfills, runs

        record = self._schedule_of(store, args)
        if args.limit is not None and args.limit < 1:
            raise ValidationError(
                "--limit", args.limit, "must be at least 1", "Use e.g. --limit 2."
            )
        backfill = backfills.create_backfill(
            store,
            pipeline_schedule_id=record.id,
            start_datetime=args.start,
            end_datetime=args.end,
            interval_type=args.interval,
            interval_units=args.units,
            settings=None if args.limit is None else {"pipeline_run_limit": args.limit},
        )
        created = backfills.start_backfill(store, backfill.id)
        print(
            f"backfill {backfill.id}: {len(created)} run(s) of {record.name} "
            f"({record.pipeline_uuid}) from {args.start} to {args.end}, every "
            f"{args.units} {args.interval}(s)",
            flush=True,
        )
        if not args.wait:
            print(f"Follow it with %schedule runs {record.id} (or pass --wait).")
            return None
        if not api_triggers.scheduler_active(store):
            print(_NO_SCHEDULER.format(what=f"backfill {backfill.id}"))
            return None
        if not self._follow_backfill(store, backfill.id):
            return None
        return frame(run_rows(runs.list_runs(store, backfill_id=backfill.id)), RUN_COLUMNS)

    def _follow_backfill(self, store: Any, backfill_id: int) -> bool:
        """Poll a backfill until every run has ended, with a live progress bar; False when
        waiting stopped first."""
        from mage_nb_sched.service import backfills

        bar = _Progress(f"backfill {backfill_id}", unit="run")
        watch = _SchedulerWatch(store)
        try:
            while True:
                record, progress = backfills.backfill_detail(store, backfill_id)
                total = progress["total"]
                ended = sum(progress.get(status, 0) for status in _FINISHED_RUN)
                counts = ", ".join(
                    f"{progress[status]} {status}"
                    for status in ("completed", "failed", "cancelled", "running")
                    if progress.get(status)
                )
                bar.show(ended, total or None, f"backfill {backfill_id} {counts}".rstrip())
                if ended >= total or str(record.status) in _FINISHED_RUN:
                    break
                if watch.gone():
                    bar.close()
                    print(
                        f"The scheduler serving this store stopped; backfill {backfill_id} "
                        "goes on when one serves it again. Not waiting any longer."
                    )
                    return False
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            bar.close()
            print(f"Stopped waiting; backfill {backfill_id} goes on.")
            return False
        bar.close()
        print(f"backfill {backfill_id}: {ended} of {total} run(s) ended ({counts or 'none'})")
        return True

    def _do_cancel(self, store: Any, args: argparse.Namespace) -> Any:
        from mage_nb_sched.service import runs

        before = runs.get_run(store, args.run_id)
        after = runs.cancel_run(store, args.run_id)
        print(f"run {after.id} {after.status!s} (was {before.status!s})")
        return None

    def _set_status(self, store: Any, args: argparse.Namespace, status: str) -> None:
        from mage_nb_sched.service import schedules

        record = self._schedule_of(store, args)
        updated = schedules.update_schedule(store, record.id, status=status)
        written = " (written to its triggers.yaml)" if updated.in_code else ""
        print(
            f"schedule {updated.name!r} of {updated.pipeline_uuid} is {updated.status!s}{written}"
        )

    def _do_pause(self, store: Any, args: argparse.Namespace) -> Any:
        self._set_status(store, args, "inactive")

    def _do_resume(self, store: Any, args: argparse.Namespace) -> Any:
        self._set_status(store, args, "active")

    def _do_delete(self, store: Any, args: argparse.Namespace) -> Any:
        from mage_nb_sched.service import schedules

        record = self._schedule_of(store, args)
        schedules.delete_schedule(store, record.id)
        removed = " and its triggers.yaml entry" if record.in_code else ""
        print(
            f"deleted schedule {record.name!r} of {record.pipeline_uuid} (id {record.id}) with "
            f"its runs{removed}"
        )

    def _do_status(self, store: Any, args: argparse.Namespace) -> Any:
        return status_report(store, _now())


def status_report(store: Any, now: datetime) -> Report:
    """Whether a scheduler serves ``store``, when it last renewed its lease, its queue and the
    rows it flagged."""
    from mage_nb_sched.scheduling.passes import store_status

    state = store_status(store, now)
    report = Report("mage_nb_sched scheduler status")
    if state.leader_active:
        renewed = state.leader_renewed_at
        ago = (
            ""
            if renewed is None
            else f", lease renewed {(now - renewed).total_seconds():.1f} s ago"
        )
        report.rows.append(("scheduler", f"running (leader {state.leader}{ago})"))
    else:
        report.rows.append(
            (
                "scheduler",
                "not running: runs wait until one serves this store (JupyterLab with "
                "mage_nb_sched, or `mage-nb-sched scheduler`)",
            )
        )
        if state.leader_renewed_at is not None:
            report.rows.append(("last seen", state.leader_renewed_at.isoformat()))
    report.rows.append(("live instances", str(len(state.live_instances))))
    report.rows.append(("queued runs", str(state.queue_depth)))
    report.rows.append(("running runs", str(state.running)))
    report.rows.append(("flagged rows", str(len(state.problems))))
    for problem in state.problems[:5]:
        report.notes.append(
            f"{problem.row_kind} {problem.row_id} ({problem.step}): {_one_line(problem.error)}"
        )
    report.rows.append(("store", _redacted(str(store.url))))
    return report


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


__all__: Sequence[str] = (
    "PUSHED_NAMES",
    "Report",
    "ScheduleMagics",
    "load_ipython_extension",
    "next_run_times",
    "parse_var",
    "schedule_report",
    "status_report",
    "trigger_url",
)
