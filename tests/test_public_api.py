"""The public surface is small and deliberate: changing it must be a conscious act."""

from __future__ import annotations

import re
from pathlib import Path

import mage_nb_sched
from mage_nb_sched.core.settings import settings_table_markdown

README = Path(__file__).resolve().parents[1] / "README.md"

# DESIGN §2: names other front ends and tests depend on.
DESIGN_NAMES = {
    "PipelineSchedule",
    "PipelineRun",
    "BlockRun",
    "Backfill",
    "Trigger",
    "ScheduleType",
    "ScheduleInterval",
    "ScheduleStatus",
    "add_or_update_trigger_for_pipeline_and_persist",
    "data_loader",
    "transformer",
    "data_exporter",
    "custom",
    "trigger_pipeline",
    "schedules_frame",
    "runs_frame",
    "block_runs_frame",
}


def test_exported_members_are_exactly_all() -> None:
    public = {name for name in dir(mage_nb_sched) if not name.startswith("_")}
    modules = {
        name for name in public if type(getattr(mage_nb_sched, name)).__name__ == "module"
    }
    assert public - modules - {"annotations"} == set(mage_nb_sched.__all__) - {
        "__version__"
    }


def test_design_names_are_exported() -> None:
    assert set(mage_nb_sched.__all__) >= DESIGN_NAMES
    assert mage_nb_sched.PipelineRun.PipelineRunStatus.COMPLETED == "completed"


def test_enums_compare_equal_to_their_values() -> None:
    assert mage_nb_sched.ScheduleInterval.DAILY == "@daily"
    assert mage_nb_sched.ScheduleType.API == "api"
    assert mage_nb_sched.ScheduleStatus.ACTIVE == "active"
    assert str(mage_nb_sched.ScheduleInterval.ALWAYS_ON) == "@always_on"


def test_readme_settings_table_matches_the_code() -> None:
    text = README.read_text(encoding="utf-8")
    match = re.search(
        r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", text, re.S
    )
    assert match, "README lost its settings table markers"
    assert match.group(1).strip() == settings_table_markdown().strip(), (
        "README settings table is stale: paste "
        "mage_nb_sched.core.settings.settings_table_markdown()"
    )


def test_readme_quick_start_has_exactly_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", section, re.S)
    assert len(commands) == 2
    assert "jupyter lab" in commands[0]
    assert "pytest" in commands[1] and ".[test]" in commands[1]
