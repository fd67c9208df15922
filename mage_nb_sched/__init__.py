"""mage_nb_sched — Mage-style pipeline schedules, native to Jupyter.

A notebook is a pipeline and its code cells are blocks. The names exported here are the same as in
Mage's model API, so ``from mage_ai.orchestration.db.models.schedules import PipelineSchedule``
becomes ``from mage_nb_sched import PipelineSchedule``.
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from mage_nb_sched.core.version import __version__

if _TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from mage_nb_sched.core.enums import (
        BackfillIntervalType,
        BackfillStatus,
        BlockRunStatus,
        PipelineRunStatus,
        ScheduleInterval,
        ScheduleStatus,
        ScheduleType,
    )
    from mage_nb_sched.core.errors import (
        ConflictError,
        MageNbSchedError,
        NotFoundError,
        StoreError,
        ValidationError,
    )
    from mage_nb_sched.execution.blocks import custom, data_exporter, data_loader, transformer
    from mage_nb_sched.frames import block_runs_frame, runs_frame, schedules_frame
    from mage_nb_sched.models import Backfill, BlockRun, EventMatcher, PipelineRun, PipelineSchedule
    from mage_nb_sched.store.engine import use_store
    from mage_nb_sched.triggers import (
        Trigger,
        add_or_update_trigger_for_pipeline_and_persist,
        sync_triggers,
        trigger_pipeline,
    )

# Names are imported on first use (PEP 562): a kernel that only needs the block decorators
# (``from mage_nb_sched import data_loader``) does not pay for SQLAlchemy and the models.
_LAZY = {
    "custom": "execution.blocks",
    "data_exporter": "execution.blocks",
    "data_loader": "execution.blocks",
    "transformer": "execution.blocks",
    "BackfillIntervalType": "core.enums",
    "BackfillStatus": "core.enums",
    "BlockRunStatus": "core.enums",
    "PipelineRunStatus": "core.enums",
    "ScheduleInterval": "core.enums",
    "ScheduleStatus": "core.enums",
    "ScheduleType": "core.enums",
    "ConflictError": "core.errors",
    "MageNbSchedError": "core.errors",
    "NotFoundError": "core.errors",
    "StoreError": "core.errors",
    "ValidationError": "core.errors",
    "Backfill": "models",
    "BlockRun": "models",
    "EventMatcher": "models",
    "PipelineRun": "models",
    "PipelineSchedule": "models",
    "use_store": "store",
    "block_runs_frame": "frames",
    "runs_frame": "frames",
    "schedules_frame": "frames",
    "Trigger": "triggers",
    "add_or_update_trigger_for_pipeline_and_persist": "triggers",
    "sync_triggers": "triggers",
    "trigger_pipeline": "triggers",
}


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mage_nb_sched' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))



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
    "block_runs_frame",
    "custom",
    "data_exporter",
    "data_loader",
    "load_ipython_extension",
    "runs_frame",
    "schedules_frame",
    "sync_triggers",
    "transformer",
    "trigger_pipeline",
    "use_store",
]


def load_ipython_extension(ipython: _Any) -> None:
    """``%load_ext mage_nb_sched``: puts the Mage API names into the notebook's namespace and
    registers the ``%%schedule`` / ``%schedule`` magics."""
    from mage_nb_sched.magics import load_ipython_extension as load

    load(ipython)


def _jupyter_server_extension_points() -> list[dict[str, _Any]]:
    """How Jupyter Server finds the extension (enabled by the installed jupyter-config file)."""
    from mage_nb_sched.extension import MageNbSchedApp

    return [{"module": "mage_nb_sched", "app": MageNbSchedApp}]
