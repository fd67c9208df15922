"""IPython integration: ``%load_ext mage_nb_sched``.

Loading the extension puts the Mage API names (``PipelineSchedule``, ``ScheduleStatus``, ...) into
the notebook's namespace, as Mage's own notebook environment does, so the documentation's snippets
run as they are written. The ``%%schedule`` / ``%schedule`` magics arrive with the notebook front
end issue.
"""

from __future__ import annotations

from typing import Any

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
