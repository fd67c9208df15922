"""The layers contract (import-linter, configured in pyproject.toml) holds, and it does fail
when a lower layer imports a higher one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if executable is None:
        pytest.fail("lint-imports is missing: pip install -e '.[test]' installs import-linter")
    return subprocess.run(
        [executable, "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(cwd), "PATH": str(Path(sys.executable).parent)},
    )


def test_the_package_keeps_its_layers() -> None:
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout


def test_a_lower_layer_importing_a_front_end_breaks_the_contract(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    shutil.copytree(
        REPO / "mage_nb_sched",
        copy / "mage_nb_sched",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    clock = copy / "mage_nb_sched" / "core" / "clock.py"
    clock.write_text(
        clock.read_text(encoding="utf-8") + "\nfrom mage_nb_sched import models  # noqa\n",
        encoding="utf-8",
    )
    result = _lint_imports(copy)
    assert result.returncode != 0
    assert "mage_nb_sched.core is not allowed to import mage_nb_sched.models" in result.stdout
