"""``mage-nb-sched run``: a real subprocess, a real kernel, exit codes and per-block output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_notebook

from mage_nb_sched.cli import parse_var
from mage_nb_sched.core.errors import ValidationError


def run_cli(project_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MAGE_NB_SCHED_PROJECT_DIR=str(project_dir))
    env.pop("MAGE_NB_SCHED_DB_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "mage_nb_sched.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )


@pytest.mark.kernel
def test_run_prints_blocks_and_exits_zero(project_dir: Path) -> None:
    write_notebook(
        project_dir / "etl" / "daily.ipynb",
        [
            {"source": "limit = 1\nname = 'x'", "tags": ["parameters"]},
            "assert limit == 10 and name == 'sales', (limit, name)\nprint('vars ok')",
            "from mage_nb_sched import data_loader\n"
            "@data_loader\ndef load(*a, **kw):\n    return {'limit': kw['limit']}",
        ],
    )
    result = run_cli(project_dir, "run", "etl/daily", "--var", "limit=10", "--var", "name=sales")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["cell_0", "completed"] for line in lines)
    assert any(line.split()[:2] == ["load", "completed"] for line in lines)
    assert lines[-1].endswith("completed")


@pytest.mark.kernel
def test_failed_run_exits_non_zero(project_dir: Path) -> None:
    write_notebook(project_dir / "bad.ipynb", ["raise SystemError('nope')", "x = 1"])
    result = run_cli(project_dir, "run", str(project_dir / "bad.ipynb"))
    assert result.returncode == 1
    assert "failed" in result.stdout and "nope" in result.stdout
    assert any(line.split()[:2] == ["cell_1", "cancelled"] for line in result.stdout.splitlines())


def test_unknown_notebook_is_a_clear_error(project_dir: Path) -> None:
    write_notebook(project_dir / "daily_sales.ipynb")
    result = run_cli(project_dir, "run", "daily_sale")
    assert result.returncode == 2
    assert "daily_sales" in result.stderr and "Traceback" not in result.stderr


def test_parse_var() -> None:
    assert parse_var("n=10") == ("n", 10)
    assert parse_var("flag=true") == ("flag", True)
    assert parse_var("date=2024-01-15") == ("date", "2024-01-15")
    assert parse_var("items=[1, 2]") == ("items", [1, 2])
    with pytest.raises(ValidationError) as info:
        parse_var("novalue")
    assert info.value.field == "--var"
    with pytest.raises(ValidationError):
        parse_var("bad-name=1")


def test_missing_project_dir_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = run_cli(tmp_path, "--project-dir", str(missing), "run", "x")
    assert result.returncode == 2
    assert "project_dir" in result.stderr and "Traceback" not in result.stderr
    assert not missing.exists()


def test_run_on_a_read_only_database_says_which_file_and_exits_2(
    tmp_path: Path,
) -> None:
    import os
    import subprocess

    from conftest import write_notebook

    project = tmp_path / "proj"
    write_notebook(project / "nb.ipynb")
    # Create and migrate the database first, then open it read-only (chmod does not stop root).
    from mage_nb_sched.store.engine import Store

    database = project / ".mage_nb_sched" / "scheduler.db"
    Store(f"sqlite:///{database}", project).dispose()
    env = {
        **os.environ,
        "MAGE_NB_SCHED_PROJECT_DIR": str(project),
        "MAGE_NB_SCHED_DB_URL": f"sqlite:///file:{database}?mode=ro&uri=true",
    }
    result = subprocess.run(
        [sys.executable, "-m", "mage_nb_sched.cli", "run", "nb"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "read-only" in result.stderr and str(database) in result.stderr
    assert "Traceback" not in result.stderr
