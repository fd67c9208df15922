"""Notebook → pipeline: block rules (DESIGN §1) and every validation error, on real files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import write_notebook

from mage_nb_sched.core.errors import NotFoundError, ValidationError
from mage_nb_sched.execution.pipelines import (
    Block,
    decorated_function,
    list_blocks,
    load_pipeline,
)

LOADER = "@data_loader\ndef load_data(*args, **kwargs):\n    return 1\n"


def uuids(project_dir: Path, name: str = "pipe") -> list[str]:
    return [block.uuid for block in list_blocks(project_dir, name)]


def refused(project_dir: Path, name: str = "pipe") -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        load_pipeline(project_dir, name)
    return caught.value


# --------------------------------------------------------------------------------------------
# Block rules
# --------------------------------------------------------------------------------------------


def test_block_rules_over_a_mixed_notebook(project_dir: Path) -> None:
    write_notebook(
        project_dir / "pipe.ipynb",
        [
            {"cell_type": "markdown", "source": "# Title"},  # 0: not a block
            "import os",  # 1: cell_1
            {"source": "x = 2", "tags": ["block:setup", "other"]},  # 2: tag
            LOADER,  # 3: decorated name
            "import mage_nb_sched\n\n@mage_nb_sched.transformer\ndef clean(df, **kw):\n"
            "    return df\n",  # 4: attribute decorator
            {"source": "print('skipped')", "tags": ["skip"]},  # 5: skip
            "",  # 6: empty
            "   \n\t\n",  # 7: whitespace only
            {"cell_type": "raw", "source": "raw text"},  # 8: raw
            "@custom\nasync def fetch():\n    return 3\n",  # 9: async def
            "y = 3",  # 10: cell_10
        ],
    )
    blocks = list_blocks(project_dir, "pipe")
    assert [(b.uuid, b.cell_index) for b in blocks] == [
        ("cell_1", 1),
        ("setup", 2),
        ("load_data", 3),
        ("clean", 4),
        ("fetch", 9),
        ("cell_10", 10),
    ]
    by_uuid = {b.uuid: b for b in blocks}
    assert by_uuid["setup"].tags == ("block:setup", "other")
    assert by_uuid["setup"].function_name is None and by_uuid["setup"].decorator is None
    assert (by_uuid["load_data"].function_name, by_uuid["load_data"].decorator) == (
        "load_data",
        "data_loader",
    )
    assert by_uuid["clean"].decorator == "transformer"
    assert by_uuid["fetch"].decorator == "custom"
    assert by_uuid["load_data"].source == LOADER
    assert by_uuid["cell_1"] == Block("cell_1", 1, "import os", None, None, ())


def test_tag_wins_over_the_decorated_function_name(project_dir: Path) -> None:
    write_notebook(project_dir / "pipe.ipynb", [{"source": LOADER, "tags": ["block:ingest"]}])
    (block,) = list_blocks(project_dir, "pipe")
    assert block.uuid == "ingest"
    assert (block.function_name, block.decorator) == ("load_data", "data_loader")


def test_block_tag_names_may_use_dots_and_dashes_and_are_trimmed(project_dir: Path) -> None:
    write_notebook(
        project_dir / "pipe.ipynb",
        [
            {"source": "a = 1", "tags": ["block:v1.load-raw"]},
            {"source": "b = 2", "tags": ["block: b"]},
        ],
    )
    assert uuids(project_dir) == ["v1.load-raw", "b"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (LOADER, ("load_data", "data_loader")),
        ("@data_exporter\ndef export(df):\n    pass\n", ("export", "data_exporter")),
        ("@blocks.custom\ndef c():\n    pass\n", ("c", "custom")),
        # stacked with another decorator
        (
            "import functools\n@functools.cache\n@transformer\ndef t(x):\n    return x\n",
            ("t", "transformer"),
        ),
        # the first decorated function of the cell names it
        (
            "@custom\ndef first():\n    pass\n\n@custom\ndef second():\n    pass\n",
            ("first", "custom"),
        ),
        # Mage's templates guard the import with a top-level if
        (
            "if 'data_loader' not in globals():\n    from mage_nb_sched import data_loader\n\n"
            + LOADER,
            ("load_data", "data_loader"),
        ),
        ("def plain():\n    pass\n", None),
        ("@other\ndef f():\n    pass\n", None),
        ("def outer():\n    @data_loader\n    def inner():\n        pass\n", None),
        ("class K:\n    @custom\n    def m(self):\n        pass\n", None),
        ("@custom()\ndef called():\n    pass\n", None),  # a called decorator is not Mage's
        ("this is not python (", None),
    ],
)
def test_decorated_function_detection(source: str, expected: tuple[str, str] | None) -> None:
    assert decorated_function(source) == expected


def test_cells_with_magics_and_shell_lines_are_parsed_after_ipython_transforms(
    project_dir: Path,
) -> None:
    write_notebook(
        project_dir / "pipe.ipynb",
        [
            "%matplotlib inline\n!echo hi\nfiles = !ls\n\n" + LOADER,
            "%%bash\necho not python at all",
            "%time x = 1\nx?",
            "def broken(:\n    pass",  # a syntax error: plain cell, not a crash
        ],
    )
    blocks = list_blocks(project_dir, "pipe")
    assert [(b.uuid, b.decorator) for b in blocks] == [
        ("load_data", "data_loader"),
        ("cell_1", None),
        ("cell_2", None),
        ("cell_3", None),
    ]


def test_injected_parameters_cells_are_not_blocks(project_dir: Path) -> None:
    write_notebook(
        project_dir / "pipe.ipynb",
        [
            {"source": "a = 1", "tags": ["parameters"]},
            {"source": "a = 2", "tags": ["injected-parameters"]},
            "b = a",
        ],
    )
    pipeline = load_pipeline(project_dir, "pipe")
    assert pipeline.block_uuids == ["cell_0", "cell_2"]
    assert pipeline.parameters_cell_index == 0


def test_pipeline_fields(project_dir: Path) -> None:
    path = write_notebook(
        project_dir / "etl" / "daily.ipynb",
        ["a = 1", {"source": "b = 2", "tags": ["parameters"]}],
        metadata={"kernelspec": {"name": "python3", "display_name": "P", "language": "python"}},
    )
    pipeline = load_pipeline(project_dir, "etl/daily.ipynb")
    assert pipeline.uuid == "etl/daily"
    assert pipeline.path == path.resolve()
    assert pipeline.kernel_name == "python3"
    assert pipeline.content_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert pipeline.parameters_cell_index == 1
    assert pipeline.notebook.cells[0].source == "a = 1"
    assert pipeline.block("cell_1").cell_index == 1
    with pytest.raises(NotFoundError, match=r"no block 'nope'.*cell_0, cell_1"):
        pipeline.block("nope")


def test_no_parameters_cell(project_dir: Path) -> None:
    write_notebook(project_dir / "pipe.ipynb", ["a = 1"])
    assert load_pipeline(project_dir, "pipe").parameters_cell_index is None


def test_content_hash_follows_the_file(project_dir: Path) -> None:
    write_notebook(project_dir / "pipe.ipynb", ["a = 1"])
    first = load_pipeline(project_dir, "pipe").content_hash
    write_notebook(project_dir / "pipe.ipynb", ["a = 2"])
    assert load_pipeline(project_dir, "pipe").content_hash != first


def test_list_source_lines_are_joined(project_dir: Path) -> None:
    path = project_dir / "pipe.ipynb"
    write_notebook(path, ["placeholder"])
    data = json.loads(path.read_text())
    data["cells"][0]["source"] = ["@custom\n", "def joined():\n", "    pass\n"]
    path.write_text(json.dumps(data))
    (block,) = list_blocks(project_dir, "pipe")
    assert block.uuid == "joined" and block.source.startswith("@custom\ndef joined")


# --------------------------------------------------------------------------------------------
# Validation errors
# --------------------------------------------------------------------------------------------


def test_missing_notebook_suggests_close_names(project_dir: Path) -> None:
    write_notebook(project_dir / "daily_sales.ipynb")
    err = refused(project_dir, "daily_sale")
    assert err.field == "pipeline_uuid"
    assert "daily_sale.ipynb" in err.problem
    assert "'daily_sales'" in err.fix


def test_path_escape_is_refused(project_dir: Path) -> None:
    err = refused(project_dir, "../outside")
    assert err.field == "pipeline_uuid"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "invalid JSON"),
        (b"[]", "not a Jupyter notebook"),
        (b'{"nbformat": 4, "nbformat_minor": 5, "cells": "x", "metadata": {}}', "not a Jupyter"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
    ],
)
def test_files_that_are_not_notebooks(project_dir: Path, content: bytes, why: str) -> None:
    path = project_dir / "pipe.ipynb"
    path.write_bytes(content)
    err = refused(project_dir)
    assert err.field == "notebook"
    assert err.value == "pipe"
    assert str(path) in err.problem
    assert why in err.problem
    assert "Open it in Jupyter" in err.fix


def test_no_code_cells(project_dir: Path) -> None:
    path = write_notebook(project_dir / "pipe.ipynb", [{"cell_type": "markdown", "source": "hi"}])
    err = refused(project_dir)
    assert err.field == "notebook"
    assert "no code cells" in err.problem and str(path) in err.problem
    assert "Add a code cell" in err.fix


def test_only_empty_or_skipped_code_cells(project_dir: Path) -> None:
    write_notebook(project_dir / "pipe.ipynb", ["  ", {"source": "a = 1", "tags": ["skip"]}])
    err = refused(project_dir)
    assert err.field == "notebook"
    assert "empty or tagged 'skip'" in err.problem


@pytest.mark.parametrize(
    "kernelspec",
    [None, {"display_name": "Python 3", "language": "python"}, {"name": ""}, "python3"],
)
def test_missing_kernelspec_name(project_dir: Path, kernelspec: Any) -> None:
    metadata = {"kernelspec": kernelspec} if kernelspec is not None else {"kernelspec": None}
    path = write_notebook(project_dir / "pipe.ipynb", ["a = 1"], metadata=metadata)
    err = refused(project_dir)
    assert err.field == "notebook"
    assert "metadata.kernelspec.name" in err.problem and str(path) in err.problem
    assert "Open it in Jupyter and pick a kernel, or add metadata.kernelspec" in err.fix


def test_duplicate_block_uuids_name_both_cells(project_dir: Path) -> None:
    write_notebook(project_dir / "pipe.ipynb", [LOADER, "# between", LOADER])
    err = refused(project_dir)
    assert err.field == "notebook"
    assert "cells 0 and 2" in err.problem and "'load_data'" in err.problem
    assert "block:NAME" in err.fix


def test_a_tag_colliding_with_a_generated_uuid(project_dir: Path) -> None:
    write_notebook(
        project_dir / "pipe.ipynb", [{"source": "a = 1", "tags": ["block:cell_1"]}, "b = 1"]
    )
    err = refused(project_dir)
    assert "cells 0 and 1" in err.problem and "'cell_1'" in err.problem


@pytest.mark.parametrize(
    "tag", ["block:", "block:  ", "block:has space", "block:../up", "block:..", "block:a/b"]
)
def test_bad_block_tag_names(project_dir: Path, tag: str) -> None:
    write_notebook(project_dir / "pipe.ipynb", ["a = 1", {"source": "b = 1", "tags": [tag]}])
    err = refused(project_dir)
    assert err.field == "notebook"
    assert "cell 1" in err.problem and repr(tag) in err.problem
    assert "block:load_sales" in err.fix


def test_two_block_tags_on_one_cell(project_dir: Path) -> None:
    write_notebook(
        project_dir / "pipe.ipynb", [{"source": "a = 1", "tags": ["block:a", "block:b"]}]
    )
    err = refused(project_dir)
    assert "2 block tags" in err.problem and "one block:NAME tag" in err.fix


def test_tags_that_are_not_a_list(project_dir: Path) -> None:
    write_notebook(project_dir / "pipe.ipynb", [{"source": "a = 1", "metadata": {"tags": "skip"}}])
    err = refused(project_dir)
    assert err.field == "notebook" and "not a list of strings" in err.problem


def test_skipped_and_empty_cells_are_not_checked_for_duplicates(project_dir: Path) -> None:
    write_notebook(project_dir / "pipe.ipynb", [LOADER, {"source": LOADER, "tags": ["skip"]}])
    assert uuids(project_dir) == ["load_data"]
