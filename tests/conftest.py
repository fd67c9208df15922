"""Shared fixtures: a throw-away project dir with real notebooks and a real SQLite store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mage_nb_sched.store import Store, reset_stores, use_store


def write_notebook(path: Path, cells: list[str] | None = None) -> Path:
    """Write a minimal valid notebook with the given code cells."""
    path.parent.mkdir(parents=True, exist_ok=True)
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": f"cell-{index}",
                "metadata": {},
                "outputs": [],
                "source": source,
            }
            for index, source in enumerate(cells or ["x = 1"])
        ],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
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
