"""Triggers as code, Mage's API: ``Trigger``, ``add_or_update_trigger_for_pipeline_and_persist``
and ``sync_triggers`` on the current store (the rules live in
:mod:`mage_nb_sched.service.triggers`), and Mage's ``trigger_pipeline`` (its rules live in
:mod:`mage_nb_sched.service.api_triggers`)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mage_nb_sched.core.enums import PipelineRunStatus
from mage_nb_sched.core.errors import ValidationError
from mage_nb_sched.core.project import resolve_project_dir
from mage_nb_sched.service import api_triggers as _api_triggers
from mage_nb_sched.service import triggers as _service
from mage_nb_sched.service.triggers import SyncReport, Trigger
from mage_nb_sched.store.engine import current_store

if TYPE_CHECKING:
    from mage_nb_sched.models import PipelineRun

__all__ = [
    "PipelineRunFailed",
    "PipelineRunTimeout",
    "SyncReport",
    "Trigger",
    "add_or_update_trigger_for_pipeline_and_persist",
    "sync_triggers",
    "trigger_pipeline",
]

#: Mage's default seconds between two status checks of ``trigger_pipeline(check_status=True)``.
DEFAULT_POLL_INTERVAL = 60


def _root(project_dir: str | os.PathLike[str] | None) -> Path:
    if project_dir:
        return Path(project_dir).resolve()
    return current_store().project_dir or resolve_project_dir()


def add_or_update_trigger_for_pipeline_and_persist(
    trigger: Trigger, pipeline_uuid: str, project_dir: str | os.PathLike[str] | None = None
) -> Trigger:
    """Write ``trigger`` into the pipeline's ``triggers.yaml`` (replacing an entry of the same
    name) and apply it to the store right away. Returns the trigger as written."""
    return _service.persist_trigger(current_store(), _root(project_dir), trigger, pipeline_uuid)


def sync_triggers(project_dir: str | os.PathLike[str] | None = None) -> SyncReport:
    """Reconcile every ``*.triggers.yaml`` in the project with the store.

    Entries create or update schedules; schedules that came from a file but are no longer in it
    (or whose file is gone) are deleted. A bad entry is reported in ``errors`` and the others still
    sync; a file that cannot be read at all leaves its pipeline's schedules untouched.
    """
    return _service.sync_triggers(current_store(), _root(project_dir))


class PipelineRunFailed(RuntimeError):
    """``trigger_pipeline(..., error_on_failure=True)``: the triggered run failed."""


class PipelineRunTimeout(TimeoutError):
    """``trigger_pipeline(..., poll_timeout=N)``: the run had not ended after N seconds (it
    goes on; only the waiting stopped)."""


def trigger_pipeline(
    pipeline_uuid: str,
    variables: dict[str, Any] | None = None,
    check_status: bool = False,
    error_on_failure: bool = False,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    poll_timeout: float | None = None,
    schedule_name: str | None = None,
    verbose: bool = True,
) -> PipelineRun:
    """Mage's ``trigger_pipeline``: run ``pipeline_uuid`` now with ``variables``, through its
    API schedule, and return the :class:`~mage_nb_sched.PipelineRun`.

    The API schedule called ``schedule_name`` (default ``API_TRIGGER_CREATED_FROM_CODE``, as in
    Mage) is found or created, active. The run is written straight into the current store (no
    server or token needed); whatever scheduler serves the store (the Jupyter server's, or
    ``mage-nb-sched scheduler``) executes it. The schedule's rules apply: an inactive schedule
    and ``skip_if_previous_running`` with a run unfinished raise
    :class:`~mage_nb_sched.ConflictError` and create nothing.

    With ``check_status`` the call waits, checking every ``poll_interval`` seconds, until the run
    ends, printing its status when ``verbose``; it raises :class:`PipelineRunTimeout` after
    ``poll_timeout`` seconds (None: no limit — with no scheduler serving the store the run never
    starts), and :class:`PipelineRunFailed` if the run failed and ``error_on_failure``. A
    cancelled run is returned like a completed one (as in Mage).
    """
    if isinstance(poll_interval, bool) or not isinstance(poll_interval, int | float) or not (
        0 < poll_interval <= 86_400
    ):
        raise ValidationError(
            "poll_interval",
            poll_interval,
            "must be a number of seconds above 0 and at most 86400",
            "Use e.g. poll_interval=10.",
        )
    if poll_timeout is not None and (
        isinstance(poll_timeout, bool)
        or not isinstance(poll_timeout, int | float)
        or not 0 <= poll_timeout < float("inf")
    ):
        raise ValidationError(
            "poll_timeout",
            poll_timeout,
            "must be a finite number of seconds (or None for no limit)",
            "Use e.g. poll_timeout=3600.",
        )
    store = current_store()
    schedule = _api_triggers.api_schedule_for_pipeline(store, pipeline_uuid, schedule_name)
    triggered = _api_triggers.trigger_schedule(store, schedule.id, variables=variables or {})
    run = triggered.run
    if verbose:
        print(
            f"Pipeline run {run.id} for pipeline {run.pipeline_uuid} created "
            f"(schedule {schedule.name!r}, id {schedule.id}).",
            flush=True,
        )
    if check_status:
        run = _wait(store, run.id, error_on_failure, float(poll_interval), poll_timeout, verbose)
    # The Mage model for the answer (imported here: the models import SQLAlchemy's ORM,
    # which `import mage_nb_sched.triggers` alone does not need).
    from mage_nb_sched.models import PipelineRun as Model

    model: PipelineRun | None = Model.query.get(run.id)
    assert model is not None, f"pipeline run {run.id} vanished"
    return model


def _wait(
    store: Any,
    run_id: int,
    error_on_failure: bool,
    poll_interval: float,
    poll_timeout: float | None,
    verbose: bool,
) -> Any:
    """Poll run ``run_id`` until it ends (see :func:`trigger_pipeline`)."""
    started = time.monotonic()
    last_line = ""
    while True:
        progress = _api_triggers.run_progress(store, run_id)
        run = progress.run
        done = sum(1 for block in progress.blocks if str(block.status) == "completed")
        blocks = f" ({done}/{len(progress.blocks)} blocks completed)" if progress.blocks else ""
        line = f"Pipeline run {run.id} for pipeline {run.pipeline_uuid}: {run.status!s}{blocks}."
        if verbose and line != last_line:
            print(line, flush=True)
            last_line = line
        if run.status == PipelineRunStatus.FAILED:
            if error_on_failure:
                error = (run.metrics or {}).get("error")
                raise PipelineRunFailed(
                    f"Pipeline run {run.id} for pipeline {run.pipeline_uuid} failed"
                    + (f": {error}" if error else ".")
                    + f" Its block logs: PipelineRun.query.get({run.id}).logs('<block uuid>')."
                )
            return run
        if run.status in (PipelineRunStatus.COMPLETED, PipelineRunStatus.CANCELLED):
            return run
        elapsed = time.monotonic() - started
        if poll_timeout is not None and elapsed >= poll_timeout:
            raise PipelineRunTimeout(
                f"Pipeline run {run.id} for pipeline {run.pipeline_uuid}: not finished after "
                f"{elapsed:.1f} s (poll_timeout={poll_timeout:g}); its last status was "
                f"{run.status!s}. The run goes on; check it with "
                f"PipelineRun.query.get({run.id}).status. If it stays 'initial', no scheduler "
                "serves this store: start jupyter lab or mage-nb-sched scheduler."
            )
        wait = poll_interval
        if poll_timeout is not None:
            wait = min(wait, max(0.0, poll_timeout - elapsed))
        time.sleep(wait)
