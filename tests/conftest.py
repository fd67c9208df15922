"""Shared fixtures: a throw-away project dir with real notebooks and a real SQLite store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mage_nb_sched.store import Store, reset_stores, use_store


def write_notebook(
    path: Path,
    cells: list[str | dict[str, Any]] | None = None,
    *,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write a minimal valid notebook with the given cells.

    A string is a code cell's source. A dict describes a cell: ``source``, optional
    ``cell_type`` (default ``code``), ``tags`` and ``metadata``. ``metadata`` is merged over the
    notebook's default metadata; a key set to ``None`` is removed (e.g. ``{"kernelspec": None}``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    notebook_cells = []
    for index, spec in enumerate(cells or ["x = 1"]):
        if isinstance(spec, str):
            spec = {"source": spec}
        cell_type = spec.get("cell_type", "code")
        cell_metadata = dict(spec.get("metadata", {}))
        if "tags" in spec:
            cell_metadata["tags"] = list(spec["tags"])
        cell: dict[str, Any] = {
            "cell_type": cell_type,
            "id": f"cell-{index}",
            "metadata": cell_metadata,
            "source": spec.get("source", ""),
        }
        if cell_type == "code":
            cell.update(execution_count=None, outputs=[])
        notebook_cells.append(cell)
    notebook_metadata: dict[str, Any] = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for key, value in (metadata or {}).items():
        if value is None:
            notebook_metadata.pop(key, None)
        else:
            notebook_metadata[key] = value
    notebook = {
        "cells": notebook_cells,
        "metadata": notebook_metadata,
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(notebook), encoding="utf-8")
    return path


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty project dir made current (env var set, no cached stores, DB URL unset)."""
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.setenv("MAGE_NB_SCHED_PROJECT_DIR", str(root))
    monkeypatch.delenv("MAGE_NB_SCHED_DB_URL", raising=False)
    reset_stores()
    yield root
    reset_stores()


@pytest.fixture
def store(project_dir: Path) -> Store:
    """The project's default SQLite store, with notebooks ``my_pipeline`` and ``etl/daily``."""
    write_notebook(project_dir / "my_pipeline.ipynb")
    write_notebook(project_dir / "etl" / "daily.ipynb")
    return use_store(project_dir=project_dir)
