"""Triggers as code, Mage's API: ``Trigger``, ``add_or_update_trigger_for_pipeline_and_persist``
and ``sync_triggers`` on the current store (the rules live in
:mod:`mage_nb_sched.service.triggers`)."""

from __future__ import annotations

import os
from pathlib import Path

from mage_nb_sched.core.project import resolve_project_dir
from mage_nb_sched.service import triggers as _service
from mage_nb_sched.service.triggers import SyncReport, Trigger
from mage_nb_sched.store.engine import current_store

__all__ = [
    "SyncReport",
    "Trigger",
    "add_or_update_trigger_for_pipeline_and_persist",
    "sync_triggers",
]


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
