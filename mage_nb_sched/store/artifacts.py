"""Where a run's files live under the data dir (outputs, logs, executed notebook)."""

from __future__ import annotations

from pathlib import Path

from mage_nb_sched.core.project import data_dir


def run_dir(project_dir: Path, pipeline_uuid: str, partition: str) -> Path:
    """``<data dir>/runs/<pipeline uuid>/<partition>/`` — one folder per run."""
    return data_dir(project_dir) / "runs" / pipeline_uuid / partition


def executed_notebook_path(project_dir: Path, pipeline_uuid: str, partition: str) -> Path:
    """The executed notebook (with outputs) of a run."""
    return run_dir(project_dir, pipeline_uuid, partition) / "notebook.ipynb"


def block_log_path(project_dir: Path, pipeline_uuid: str, partition: str, block_uuid: str) -> Path:
    """The log of one block run: its stdout, stderr and error."""
    return run_dir(project_dir, pipeline_uuid, partition) / "logs" / f"{block_uuid}.log"
