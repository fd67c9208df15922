"""Shared fixtures: a throw-away project dir with real notebooks and a real SQLite store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import alive, descendants

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


# -- files outside the repo (the user's spec) ---------------------------------------------------

#: The seed, Mage's "Pipeline Schedules" page (the user's spec). It lives outside the repo, in
#: ``shared/seed/``; tests find it only through this variable, never by a path relative to the
#: clone (a fresh clone elsewhere has no such sibling). ``.ci/run`` sets it.
SEED_ENV = "MAGE_NB_SCHED_SEED"
#: Set (to anything but ``0``/``false``/``no``) by ``.ci/run``: a test skipped for want of
#: ``$MAGE_NB_SCHED_SEED`` then fails instead (CI must check every example of the spec).
REQUIRE_SEED_ENV = "MAGE_NB_SCHED_REQUIRE_SEED"
SEED_SKIP_REASON = (
    f"needs the user's spec, which lives outside the repo: set "
    f"{SEED_ENV}=/path/to/pipeline-schedules.txt (.ci/run sets it)"
)


def seed_required() -> bool:
    return os.environ.get(REQUIRE_SEED_ENV, "").strip().lower() not in {"", "0", "false", "no"}


@pytest.fixture(scope="session")
def seed_file() -> Path:
    """The seed file, from ``$MAGE_NB_SCHED_SEED``. Unset: the test is skipped (see
    :data:`SEED_SKIP_REASON`; a failure under ``$MAGE_NB_SCHED_REQUIRE_SEED``). Set to a path
    with no file there: the test fails (a wrong path is a mistake, not a reason to skip)."""
    configured = os.environ.get(SEED_ENV, "").strip()
    if not configured:
        pytest.skip(SEED_SKIP_REASON)
    path = Path(configured).expanduser()
    if not path.is_file():
        pytest.fail(
            f"${SEED_ENV} is {configured!r}, but there is no file at {path}: point it at Mage's "
            "'Pipeline Schedules' page (shared/seed/pipeline-schedules.txt).",
            pytrace=False,
        )
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Under ``$MAGE_NB_SCHED_REQUIRE_SEED``, a test skipped for want of the seed fails.

    Any skip whose reason names ``MAGE_NB_SCHED_SEED`` counts (the ``seed_file`` fixture's, a
    ``skipif`` marker's, a ``pytest.skip`` in the test), in setup, call or teardown.
    """
    outcome = yield
    report = outcome.get_result()
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and SEED_ENV in str(report.longrepr)
        and seed_required()
    ):
        skip = report.longrepr  # a skip's is (path, line, "Skipped: reason")
        where, reason = (f"{skip[0]}:{skip[1]}", skip[2]) if isinstance(skip, tuple) else ("", skip)
        report.outcome = "failed"
        report.longrepr = (
            f"{where}: skipped for want of the seed, but ${REQUIRE_SEED_ENV} is set, so that is "
            f"a failure. {reason}"
        )


# A real headless scheduler (``mage-nb-sched scheduler``) for tests whose runs must execute.
#: Bound for the headless scheduler to start (slow CI machines).
STARTUP = 60.0
#: Variables the scheduler must not inherit from the test process.
NOT_INHERITED = ("MAGE_NB_SCHED_DB_URL", "JUPYTER_SERVER_URL", "MAGE_NB_SCHED_SERVER_URL")


@pytest.fixture
def headless_scheduler(project_dir: Path, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A ``mage-nb-sched scheduler`` subprocess serving the project (killed with its tree)."""
    from multiprocessing import resource_tracker

    # Started now, as the other process tests do, so it is never mistaken for a leftover.
    resource_tracker.ensure_running()
    # The project's own store, and no server URL a test process may have exported.
    env = {key: value for key, value in os.environ.items() if key not in NOT_INHERITED}
    env["MAGE_NB_SCHED_PROJECT_DIR"] = str(project_dir)
    out = tmp_path / "scheduler.out"
    with out.open("wb") as stdout:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "mage_nb_sched.cli", "--project-dir", str(project_dir),
                "scheduler", "--workers", "1", "--lease-seconds", "2",
            ],
            stdout=stdout, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + STARTUP
        while "mage-nb-sched scheduler " not in out.read_text(errors="replace"):
            assert process.poll() is None, out.read_text(errors="replace")
            assert time.monotonic() < deadline, "the scheduler did not start\n" + out.read_text()
            time.sleep(0.05)
        yield process
    finally:
        seen |= descendants(process.pid)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        for pid in seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
