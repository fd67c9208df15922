"""``mage-nb-sched``: the command line.

``run NOTEBOOK [--var k=v]...`` executes a notebook now as a manual pipeline run, prints each
block's status and duration, and exits non-zero when the run did not complete. The other
subcommands (``scheduler``, ``schedules``, ``runs``, ``backfill``, ``trigger``) arrive with the
scheduler and front-end issues.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import MageNbSchedError, ValidationError


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
    from .project import normalize_pipeline_uuid, pipeline_uuid_for

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
    from .runner import run_with_fresh_kernel
    from .service.runs import create_run
    from .store import use_store

    store = use_store(project_dir=args.project_dir)
    assert store.project_dir is not None
    uuid = _pipeline_uuid(store.project_dir, args.notebook)
    variables = dict(parse_var(item) for item in args.var)
    run = create_run(pipeline_uuid=uuid, variables=variables or None)
    print(f"run {run.id}: {uuid} ({run.execution_partition})", flush=True)
    outcome = asyncio.run(run_with_fresh_kernel(store, run.id))
    blocks = run.block_runs
    width = max([len(block.block_uuid) for block in blocks] + [5])
    for block in blocks:
        seconds = ""
        if block.started_at is not None and block.completed_at is not None:
            seconds = f"{(block.completed_at - block.started_at).total_seconds():8.3f}s"
        print(f"  {block.block_uuid:<{width}}  {block.status!s:<10} {seconds}")
    print(f"run {run.id} {outcome.status}" + (f": {outcome.reason}" if outcome.reason else ""))
    return 0 if outcome.status == "completed" else 1


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
    run = commands.add_parser("run", help="execute a notebook now as a manual pipeline run")
    run.add_argument("notebook", help="notebook path or pipeline uuid (e.g. etl/daily)")
    run.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="run variable (repeatable); VALUE is parsed as JSON when possible",
    )
    run.set_defaults(handler=_command_run)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
