"""Notebook → pipeline: read a notebook from the project dir, validate it, list its blocks.

Block rules (DESIGN §1): every non-empty code cell is a block unless it is tagged ``skip`` (or is
a generated ``injected-parameters`` cell). A block's uuid is its ``block:NAME`` cell tag, else the
name of the first Mage-decorated function the cell defines at top level (``@data_loader def
load_data`` → ``load_data``), else ``cell_<index>`` where ``index`` counts *all* cells of the
notebook (markdown included). Markdown and raw cells, and code cells holding only whitespace, are
never blocks.

Nothing here starts a kernel or imports pandas; IPython is imported only when a cell does not
parse as plain Python (magics, shell escapes).
"""

from __future__ import annotations

import ast
import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from mage_nb_sched.core.errors import NotFoundError, ValidationError
from mage_nb_sched.core.project import normalize_pipeline_uuid, require_notebook

#: The decorators that make a function a Mage block (``mage_nb_sched.execution.blocks``).
BLOCK_DECORATORS = frozenset({"data_loader", "transformer", "data_exporter", "custom"})
#: ``block:NAME`` names its cell's block.
BLOCK_TAG_PREFIX = "block:"
#: Cells with this tag are not blocks.
SKIP_TAG = "skip"
#: papermill's tag for the cell whose values the injected cell overrides.
PARAMETERS_TAG = "parameters"
#: papermill's tag for the generated cell holding a run's variables (never a block itself).
INJECTED_TAG = "injected-parameters"

_BLOCK_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_KERNELSPEC_FIX = "Open it in Jupyter and pick a kernel, or add metadata.kernelspec"


@dataclass(frozen=True)
class Block:
    """One block of a pipeline: a code cell that runs.

    ``cell_index`` is the cell's position among *all* cells of the notebook as read.
    ``function_name``/``decorator`` describe the first Mage-decorated function the cell defines
    at top level (``None`` for a plain cell).
    """

    uuid: str
    cell_index: int
    source: str
    function_name: str | None
    decorator: str | None
    tags: tuple[str, ...]


@dataclass
class Pipeline:
    """A notebook read from the project dir, with its blocks in notebook order.

    ``content_hash`` is the sha256 (hex) of the file's bytes exactly as read, so a run can record
    which version of the notebook it executed. ``parameters_cell_index`` is the index of the first
    cell tagged ``parameters`` (papermill), or ``None``.
    """

    uuid: str
    path: Path
    notebook: nbformat.NotebookNode
    blocks: list[Block]
    kernel_name: str
    content_hash: str
    parameters_cell_index: int | None

    @property
    def block_uuids(self) -> list[str]:
        """The uuids of the blocks, in notebook order."""
        return [block.uuid for block in self.blocks]

    def block(self, block_uuid: str) -> Block:
        """The block named ``block_uuid``; :class:`NotFoundError` listing the known ones if none."""
        for block in self.blocks:
            if block.uuid == block_uuid:
                return block
        raise NotFoundError(
            f"pipeline {self.uuid!r} has no block {block_uuid!r} ({self.path}). "
            f"Its blocks are: {', '.join(self.block_uuids) or '(none)'}."
        )


# --------------------------------------------------------------------------------------------
# Reading and validating
# --------------------------------------------------------------------------------------------


def load_pipeline(project_dir: Path, pipeline_uuid: str) -> Pipeline:
    """Read, validate and split into blocks the notebook of ``pipeline_uuid``.

    The file is read once: its bytes are hashed and parsed (nbformat, upgraded to v4).
    Raises :class:`ValidationError` (field ``pipeline_uuid`` or ``notebook``) when the notebook
    does not exist (close names are suggested), is not a notebook, has no code cells or blocks,
    has no ``metadata.kernelspec.name``, has a malformed ``block:`` tag or two blocks with one
    uuid.
    """
    project_dir = Path(project_dir)
    path = require_notebook(project_dir, pipeline_uuid)
    uuid = normalize_pipeline_uuid(pipeline_uuid)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValidationError(
            "notebook",
            uuid,
            f"cannot read {path} ({err.strerror or err})",
            "Check that the file exists and is readable by the user running the scheduler.",
        ) from err
    content_hash = hashlib.sha256(data).hexdigest()
    notebook = _parse(data, uuid, path)
    _check_structure(notebook, uuid, path)
    kernel_name = _kernel_name(notebook, uuid, path)
    blocks = _blocks_of(notebook, uuid, path)
    return Pipeline(
        uuid=uuid,
        path=path,
        notebook=notebook,
        blocks=blocks,
        kernel_name=kernel_name,
        content_hash=content_hash,
        parameters_cell_index=find_tagged_cell(notebook, PARAMETERS_TAG),
    )


def list_blocks(project_dir: Path, pipeline_uuid: str) -> list[Block]:
    """The blocks of ``pipeline_uuid``'s notebook, in notebook order (see :func:`load_pipeline`)."""
    return load_pipeline(project_dir, pipeline_uuid).blocks


def _not_a_notebook(uuid: str, path: Path, why: str) -> ValidationError:
    return ValidationError(
        "notebook",
        uuid,
        f"{path} is not a Jupyter notebook ({why})",
        "Open it in Jupyter to repair it, or restore it from version control; a notebook is "
        "a JSON file saved by Jupyter (nbformat 4).",
    )


def _parse(data: bytes, uuid: str, path: Path) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _not_a_notebook(uuid, path, f"not UTF-8 text: {err.reason}") from err
    try:
        with warnings.catch_warnings():
            # nbformat warns about e.g. missing cell ids and fills them in; that is fine here.
            warnings.simplefilter("ignore")
            return nbformat.reads(text, as_version=4)  # type: ignore[no-untyped-call]
    except nbformat.reader.NotJSONError as err:
        raise _not_a_notebook(uuid, path, "invalid JSON") from err
    except Exception as err:  # nbformat raises jsonschema, KeyError, AttributeError, ...
        first_line = (str(err).splitlines() or [type(err).__name__])[0]
        raise _not_a_notebook(uuid, path, first_line[:200]) from err


def _check_structure(notebook: Any, uuid: str, path: Path) -> None:
    """The parts of the nbformat schema this module relies on (it does not validate the rest)."""
    if not isinstance(notebook, dict) or not isinstance(notebook.get("metadata", {}), dict):
        raise _not_a_notebook(uuid, path, "its top level or metadata is not a JSON object")
    cells = notebook.get("cells")
    if not isinstance(cells, list):
        raise _not_a_notebook(uuid, path, "'cells' is not a list")
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict) or not isinstance(cell.get("cell_type"), str):
            raise _not_a_notebook(uuid, path, f"cell {index} has no cell_type")
        if not isinstance(cell.get("source", ""), str):
            raise _not_a_notebook(uuid, path, f"cell {index}'s source is not text")
        metadata = cell.get("metadata", {})
        if not isinstance(metadata, dict):
            raise _not_a_notebook(uuid, path, f"cell {index}'s metadata is not a JSON object")
        tags = metadata.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise ValidationError(
                "notebook",
                uuid,
                f"cell {index} of {path} has metadata.tags {tags!r}, not a list of strings",
                'Edit the cell\'s tags in Jupyter (or write e.g. "tags": ["block:load"]).',
            )


def _kernel_name(notebook: Any, uuid: str, path: Path) -> str:
    kernelspec = notebook.get("metadata", {}).get("kernelspec")
    name = kernelspec.get("name") if isinstance(kernelspec, dict) else None
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(
            "notebook",
            uuid,
            f"{path} has no metadata.kernelspec.name, so there is no kernel to run it with",
            f"{_KERNELSPEC_FIX}, e.g. "
            '{"kernelspec": {"name": "python3", "display_name": "Python 3", '
            '"language": "python"}}.',
        )
    return name.strip()


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------


def cell_tags(cell: Any) -> tuple[str, ...]:
    """A cell's ``metadata.tags`` as a tuple (empty when missing)."""
    tags = cell.get("metadata", {}).get("tags", [])
    return tuple(tags) if isinstance(tags, list) else ()


def find_tagged_cell(notebook: Any, tag: str) -> int | None:
    """The index of the first cell (any type, as papermill) carrying ``tag``, or ``None``."""
    for index, cell in enumerate(notebook.get("cells", [])):
        if tag in cell_tags(cell):
            return index
    return None


def _block_tag_name(tags: tuple[str, ...], index: int, uuid: str, path: Path) -> str | None:
    named = [tag for tag in tags if tag.startswith(BLOCK_TAG_PREFIX)]
    if not named:
        return None
    if len(named) > 1:
        raise ValidationError(
            "notebook",
            uuid,
            f"cell {index} of {path} has {len(named)} block tags ({', '.join(named)})",
            "Keep one block:NAME tag per cell.",
        )
    name = named[0][len(BLOCK_TAG_PREFIX) :].strip()
    if not _BLOCK_NAME.match(name) or set(name) == {"."}:
        raise ValidationError(
            "notebook",
            uuid,
            f"cell {index} of {path} has the tag {named[0]!r}, whose block name is empty or "
            "has characters other than letters, digits, '_', '-' and '.'",
            "Rename the tag to e.g. 'block:load_sales' (the name is also a folder name for the "
            "block's outputs).",
        )
    return name


def _decorator_name(node: ast.expr) -> str | None:
    """``data_loader`` for ``@data_loader`` and ``@mage_nb_sched.data_loader``; else ``None``."""
    if isinstance(node, ast.Name) and node.id in BLOCK_DECORATORS:
        return node.id
    if isinstance(node, ast.Attribute) and node.attr in BLOCK_DECORATORS:
        return node.attr
    return None


def _parse_cell(source: str) -> ast.Module | None:
    """The cell's syntax tree; IPython syntax (magics, ``!``) is transformed first when needed."""
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError):
        pass
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        manager = TransformerManager()  # type: ignore[no-untyped-call]
        transformed = manager.transform_cell(source)
        return ast.parse(transformed)
    except Exception:  # IPython missing, or code that is not Python even after transforming
        return None


def decorated_function(source: str) -> tuple[str, str] | None:
    """``(function_name, decorator)`` of the first top-level Mage-decorated function in a cell.

    Cells that do not parse (even after IPython's transforms) are plain cells: ``None``.
    """
    tree = _parse_cell(source)
    if tree is None:
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                name = _decorator_name(decorator)
                if name is not None:
                    return node.name, name
    return None


def _blocks_of(notebook: Any, uuid: str, path: Path) -> list[Block]:
    cells = notebook["cells"]
    if not any(cell["cell_type"] == "code" for cell in cells):
        raise ValidationError(
            "notebook",
            uuid,
            f"{path} has no code cells, so the pipeline has nothing to run",
            "Add a code cell (a block) to the notebook.",
        )
    blocks: list[Block] = []
    seen: dict[str, int] = {}
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        source = cell.get("source", "")
        tags = cell_tags(cell)
        if SKIP_TAG in tags or INJECTED_TAG in tags or not source.strip():
            continue
        tagged = _block_tag_name(tags, index, uuid, path)
        found = decorated_function(source)
        function_name, decorator = found if found else (None, None)
        block_uuid = tagged or function_name or f"cell_{index}"
        if block_uuid in seen:
            raise ValidationError(
                "notebook",
                uuid,
                f"cells {seen[block_uuid]} and {index} of {path} are both block {block_uuid!r}",
                f"Give one of them a distinct 'block:NAME' tag (e.g. 'block:{block_uuid}_2'), "
                "or rename the decorated function.",
            )
        seen[block_uuid] = index
        blocks.append(Block(block_uuid, index, source, function_name, decorator, tags))
    if not blocks:
        raise ValidationError(
            "notebook",
            uuid,
            f"every code cell of {path} is empty or tagged '{SKIP_TAG}', so the pipeline has "
            "nothing to run",
            f"Add code to a cell, or remove the '{SKIP_TAG}' tag from one.",
        )
    return blocks
