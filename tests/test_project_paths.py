"""Project paths: pipeline uuids the file system cannot hold, and links out of the project."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import write_notebook

from mage_nb_sched.core.errors import ValidationError
from mage_nb_sched.core.project import list_pipelines, notebook_path, require_notebook


@pytest.mark.parametrize("uuid", ["é" * 200, "a" * 250, "etl/" + "b" * 251])
def test_a_name_over_255_bytes_is_a_validation_error(tmp_path: Path, uuid: str) -> None:
    with pytest.raises(ValidationError) as caught:
        require_notebook(tmp_path, uuid)
    assert caught.value.field == "pipeline_uuid"
    assert "255" in caught.value.problem


def test_a_name_of_255_bytes_with_its_suffix_is_accepted(tmp_path: Path) -> None:
    assert notebook_path(tmp_path, "a" * 249).name == "a" * 249 + ".ipynb"
    assert notebook_path(tmp_path, "f" * 255 + "/x").parent.name == "f" * 255


def test_a_link_to_a_notebook_outside_the_project_is_not_listed(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write_notebook(project / "inside.ipynb")
    outside = write_notebook(tmp_path / "elsewhere" / "outside.ipynb")
    os.symlink(outside, project / "linked.ipynb")
    assert list_pipelines(project) == ["inside"]
