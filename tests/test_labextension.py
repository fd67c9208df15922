"""The JupyterLab extension ships with the package: built by the install (the jupyter-builder
hook), current with its sources, and found by JupyterLab as enabled and OK."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "labextension"
BUILT = REPO / "mage_nb_sched" / "labextension"
INSTALL = "run `pip install -e .` (it builds labextension/ with Node.js)"


def test_the_extension_and_the_package_have_one_version() -> None:
    package = json.loads((SOURCE / "package.json").read_text("utf-8"))
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
    assert package["version"] == project["version"]
    assert package["name"] == "mage-nb-sched"


def test_the_built_extension_is_current_with_its_sources() -> None:
    assert (BUILT / "package.json").is_file(), f"no built extension: {INSTALL}"
    node = shutil.which("node")
    assert node is not None, "Node.js is needed to check the extension build"
    result = subprocess.run(
        [node, "scripts/build.mjs", "--check"],
        cwd=SOURCE,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (
        f"stale or missing build ({INSTALL}):\n{result.stdout}{result.stderr}"
    )


def test_jupyterlab_lists_the_extension_enabled_and_ok() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    listing = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    assert re.search(r"mage-nb-sched v[0-9.]+ +enabled +OK", listing), f"{INSTALL}:\n{listing}"
