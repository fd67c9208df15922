"""mage_nb_sched — Mage-style pipeline schedules, native to Jupyter.

A notebook is a pipeline and its code cells are blocks. The names exported here are the same as in
Mage's model API, so ``from mage_ai.orchestration.db.models.schedules import PipelineSchedule``
becomes ``from mage_nb_sched import PipelineSchedule``.
"""

from __future__ import annotations

from typing import Any

from .blocks import custom, data_exporter, data_loader, transformer
from .enums import (
    BackfillIntervalType,
    BackfillStatus,
    BlockRunStatus,
    PipelineRunStatus,
    ScheduleInterval,
    ScheduleStatus,
    ScheduleType,
)
from .errors import ConflictError, MageNbSchedError, NotFoundError, StoreError, ValidationError
from .models import Backfill, BlockRun, EventMatcher, PipelineRun, PipelineSchedule
from .store import use_store
from .triggers import Trigger, add_or_update_trigger_for_pipeline_and_persist, sync_triggers

__version__ = "0.1.0"

__all__ = [
    "Backfill",
    "BackfillIntervalType",
    "BackfillStatus",
    "BlockRun",
    "BlockRunStatus",
    "ConflictError",
    "EventMatcher",
    "MageNbSchedError",
    "NotFoundError",
    "PipelineRun",
    "PipelineRunStatus",
    "PipelineSchedule",
    "ScheduleInterval",
    "ScheduleStatus",
    "ScheduleType",
    "StoreError",
    "Trigger",
    "ValidationError",
    "__version__",
    "add_or_update_trigger_for_pipeline_and_persist",
    "custom",
    "data_exporter",
    "data_loader",
    "load_ipython_extension",
    "sync_triggers",
    "transformer",
    "use_store",
]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext mage_nb_sched``: puts the Mage API names into the notebook's namespace."""
    from .magics import load_ipython_extension as load

    load(ipython)
