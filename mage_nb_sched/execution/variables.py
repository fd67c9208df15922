"""Run variables (merge order, built-ins, papermill-style injection) and block output storage.

Variables, later wins (DESIGN §4): pipeline globals < schedule variables < run variables <
built-ins. A user variable named ``env`` is kept as given (Mage forces ``'prod'``).

Plain cells get the variables papermill-style: :func:`injection_source` writes typed literals
(``execution_date`` is a real tz-aware ``datetime``) and :func:`insert_injected_cell` places them
in an ``injected-parameters`` cell after the cell tagged ``parameters``.

Block outputs (DESIGN §5) live at
``<data dir>/.variables/pipelines/<pipeline uuid>/<partition>/<block uuid>/output_0``:
``data.parquet`` (pandas DataFrame), ``data.json`` (strict JSON values) or ``data.pkl`` (anything
else, pickled), beside a ``meta.json`` saying which. Every file is written to a temporary name and
renamed, so readers never see half a file.

pandas is imported only to read or write a DataFrame.
"""

from __future__ import annotations

import copy
import importlib
import json
import keyword
import math
import os
import pickle
import sys
import tempfile
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import nbformat

from mage_nb_sched.core.datetimes import coerce_datetime, to_utc
from mage_nb_sched.core.errors import NotFoundError, ValidationError
from mage_nb_sched.core.timing import date_variables

#: The name the injected cell gives the dict of *all* variables (also non-identifier keys).
ALL_VARIABLES_NAME = "mage_nb_sched_variables"
#: The tag of the generated cell (papermill's).
INJECTED_TAG = "injected-parameters"
#: The tag whose (first) cell the injected cell follows (papermill's).
PARAMETERS_TAG = "parameters"
#: Built-in variables whose values are datetimes when set.
INTERVAL_DATETIME_NAMES = (
    "interval_start_datetime",
    "interval_end_datetime",
    "interval_start_datetime_previous",
)

_DATETIME_ALIAS = "__mage_nb_sched_datetime"

# --------------------------------------------------------------------------------------------
# Merging and built-ins
# --------------------------------------------------------------------------------------------


def merge_variables(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge variable layers, later wins; ``None`` layers are skipped.

    Call as ``merge_variables(pipeline_globals, schedule_variables, run_variables, builtins)``.
    Nothing is dropped or forced: a user variable named ``env`` keeps its value.
    """
    merged: dict[str, Any] = {}
    for position, layer in enumerate(layers):
        if layer is None:
            continue
        if not isinstance(layer, Mapping):
            raise ValidationError(
                "variables",
                layer,
                f"variable layer {position} is a {type(layer).__name__}, not a mapping",
                "Give variables as a dict of name → value, e.g. {'env': 'staging'}.",
            )
        merged.update(layer)
    return merged


def pipeline_global_variables(notebook: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline's global variables: notebook metadata ``mage_nb_sched.variables`` (or ``{}``).

    Returned as plain (deep-copied) Python values, never nbformat nodes.
    """
    metadata = notebook.get("metadata") or {}
    section = metadata.get("mage_nb_sched")
    found = section.get("variables") if isinstance(section, Mapping) else section
    if section is None or found is None:
        return {}
    if not isinstance(found, Mapping):
        raise ValidationError(
            "notebook.metadata.mage_nb_sched.variables",
            found,
            "the notebook's global variables must be a JSON object",
            'Edit the notebook metadata to e.g. {"mage_nb_sched": {"variables": {"env": "dev"}}}.',
        )
    plain: dict[str, Any] = json.loads(json.dumps(found))
    return plain


def _optional_datetime(value: object, field: str) -> datetime | None:
    if value is None or value == "":
        return None
    return coerce_datetime(value, field)


def _optional_seconds(value: object) -> int | None:
    if value is None or value == "":
        return None
    number: object = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if (
        isinstance(number, bool)
        or not isinstance(number, int | float)
        or not float(number).is_integer()
    ):
        raise ValidationError(
            "variables.interval_seconds",
            value,
            "not a whole number of seconds",
            "Give interval_seconds as an int, e.g. 86400 for a daily interval.",
        )
    return int(number)


def builtin_variables(
    *,
    execution_date: datetime,
    execution_partition: str,
    pipeline_run_id: int | None,
    block_run_id: int | None,
    pipeline_uuid: str | None,
    trigger_name: str | None,
    run_variables: Mapping[str, Any] | None,
    event: Mapping[str, Any] | None,
    timezone: str = "UTC",
) -> dict[str, Any]:
    """The built-in variables of a run (they win over every user layer).

    ``execution_date`` becomes a UTC-aware datetime (naive means UTC); ``ds``/``hr`` are its date
    and hour in ``timezone``; ``event`` is a dict (``{}`` by default); the ``interval_*`` values
    come from ``run_variables`` (a backfill's runs carry them, possibly as ISO strings) as
    UTC-aware datetimes and an int, or ``None`` when absent.
    """
    when = coerce_datetime(execution_date, "execution_date")
    carried = run_variables or {}
    variables: dict[str, Any] = {
        "execution_date": when,
        "execution_partition": execution_partition,
        "pipeline_run_id": pipeline_run_id,
        "block_run_id": block_run_id,
        "pipeline_uuid": pipeline_uuid,
        "trigger_name": trigger_name,
        **date_variables(when, timezone),
        "event": dict(event) if event else {},
    }
    for name in INTERVAL_DATETIME_NAMES:
        variables[name] = _optional_datetime(carried.get(name), f"variables.{name}")
    variables["interval_seconds"] = _optional_seconds(carried.get("interval_seconds"))
    return variables


def interactive_builtin_variables(now: datetime) -> dict[str, Any]:
    """Built-ins for a cell run by hand (no run): ``execution_date`` = ``now`` (UTC), partition
    ``interactive/<%Y%m%dT%H%M%S>``, ids/uuid/trigger ``None``, ``event`` ``{}``."""
    when = to_utc(now)
    return builtin_variables(
        execution_date=when,
        execution_partition=f"interactive/{when:%Y%m%dT%H%M%S}",
        pipeline_run_id=None,
        block_run_id=None,
        pipeline_uuid=None,
        trigger_name=None,
        run_variables=None,
        event=None,
    )


# --------------------------------------------------------------------------------------------
# papermill-style injection
# --------------------------------------------------------------------------------------------

_LITERAL_FIX = (
    "Use str, int, float, bool, None, list, tuple, dict, datetime, date or timedelta values "
    "(e.g. pass str(value) or value.isoformat()); other objects cannot be written into a cell."
)


def _literal(value: Any, where: str, active: set[int]) -> str:
    """Python source that evaluates to a value equal to ``value`` (typed, not a string)."""
    if value is None or isinstance(value, bool):
        return repr(value) if value is None else ("True" if value else "False")
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "float('nan')"
        if math.isinf(value):
            return "float('inf')" if value > 0 else "float('-inf')"
        return float.__repr__(value)
    if isinstance(value, str):
        return str.__repr__(value)
    if isinstance(value, datetime):
        aware = value.tzinfo is not None and value.utcoffset() is not None
        moment = to_utc(value) if aware else value.replace(tzinfo=None)
        fields = (
            f"{moment.year}, {moment.month}, {moment.day}, {moment.hour}, {moment.minute}, "
            f"{moment.second}, {moment.microsecond}"
        )
        zone = f", tzinfo={_DATETIME_ALIAS}.timezone.utc" if aware else ""
        return f"{_DATETIME_ALIAS}.datetime({fields}{zone})"
    if isinstance(value, date):
        return f"{_DATETIME_ALIAS}.date({value.year}, {value.month}, {value.day})"
    if isinstance(value, timedelta):
        return (
            f"{_DATETIME_ALIAS}.timedelta(days={value.days}, seconds={value.seconds}, "
            f"microseconds={value.microseconds})"
        )
    if isinstance(value, list | tuple | dict):
        if id(value) in active:
            raise ValidationError(
                where, "<recursive>", "the value contains itself", "Pass a value without cycles."
            )
        active.add(id(value))
        try:
            if isinstance(value, dict):
                items = ", ".join(
                    f"{_literal(key, f'{where} (a key)', active)}: "
                    f"{_literal(item, f'{where}[{key!r}]', active)}"
                    for key, item in value.items()
                )
                return "{" + items + "}"
            elements = [_literal(item, f"{where}[{i}]", active) for i, item in enumerate(value)]
            if isinstance(value, tuple):
                return "(" + ", ".join(elements) + ("," if len(elements) == 1 else "") + ")"
            return "[" + ", ".join(elements) + "]"
        finally:
            active.discard(id(value))
    raise ValidationError(
        where,
        value,
        f"a {type(value).__module__}.{type(value).__qualname__} cannot be injected into the "
        "notebook as a typed literal",
        _LITERAL_FIX,
    )


def is_injectable_name(name: object) -> bool:
    """Whether ``name`` can be assigned as a notebook variable: an identifier, not a keyword,
    not a dunder and not a name IPython relies on (those stay reachable through
    ``mage_nb_sched_variables`` only, so a variable can never break the kernel)."""
    return (
        isinstance(name, str)
        and name.isidentifier()
        and not keyword.iskeyword(name)
        and not (name.startswith("__") and name.endswith("__"))
        and name not in (ALL_VARIABLES_NAME, _DATETIME_ALIAS, *_RESERVED_NAMES)
    )


#: Names of the IPython user namespace that a run variable must not shadow.
_RESERVED_NAMES = ("get_ipython", "exit", "quit", "In", "Out", "display")


def injection_source(variables: Mapping[str, Any]) -> str:
    """Python source assigning the variables as typed literals (papermill style).

    Each variable whose name is an identifier (not a keyword) becomes ``name = <literal>``; all
    of them, including names that are not identifiers, are in the dict ``mage_nb_sched_variables``.
    Values may be str, int, float (``nan``/``inf`` too), bool, None, list, tuple, dict (nested),
    ``datetime`` (tz-aware ones are written in UTC; naive ones stay naive), ``date`` and
    ``timedelta``; anything else raises :class:`ValidationError` naming the variable.
    ``exec`` of the source reproduces values equal to the given ones.
    """
    for name in variables:
        if not isinstance(name, str):
            raise ValidationError(
                "variables",
                name,
                f"variable names must be strings, not {type(name).__name__}",
                "Use string keys, e.g. {'batch_size': 1000}.",
            )
    assignments = [
        f"{name} = {_literal(value, f'variables.{name}', set())}"
        for name, value in variables.items()
        if is_injectable_name(name)
    ]
    everything = _literal(dict(variables), "variables", set())
    lines = [
        "# Parameters injected by mage_nb_sched",
        f"import datetime as {_DATETIME_ALIAS}",
        f"{ALL_VARIABLES_NAME} = {everything}",
        *assignments,
        f"del {_DATETIME_ALIAS}",
    ]
    return "\n".join(lines) + "\n"


def insert_injected_cell(
    notebook: nbformat.NotebookNode, source: str
) -> tuple[nbformat.NotebookNode, int]:
    """A copy of ``notebook`` with a code cell tagged ``injected-parameters`` holding ``source``,
    and that cell's index.

    papermill's placement: right after the first cell tagged ``parameters``, else at index 0.
    The input notebook is not changed. Every cell at or after the returned index moves down by
    exactly one; earlier cells keep their index. An ``injected-parameters`` cell already in the
    notebook (saved from an earlier run) is kept in place but emptied, so stale values never run
    and indices stay predictable.
    """
    result = copy.deepcopy(notebook)
    cells = result["cells"]
    for cell in cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if isinstance(tags, list) and INJECTED_TAG in tags:
            cell["source"] = "# (stale injected parameters, superseded by this run's)"
            cell["metadata"]["tags"] = [t for t in tags if t != INJECTED_TAG] + [
                f"{INJECTED_TAG}-superseded"
            ]
            if cell.get("cell_type") == "code":
                cell["outputs"] = []
                cell["execution_count"] = None
    index = 0
    for position, cell in enumerate(cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if isinstance(tags, list) and PARAMETERS_TAG in tags:
            index = position + 1
            break
    new_cell = nbformat.v4.new_code_cell(  # type: ignore[no-untyped-call]
        source, metadata={"tags": [INJECTED_TAG]}
    )
    if (result.get("nbformat"), result.get("nbformat_minor", 0)) < (4, 5):
        new_cell.pop("id", None)  # cell ids arrived in nbformat 4.5
    cells.insert(index, new_cell)
    return result, index


# --------------------------------------------------------------------------------------------
# Output storage
# --------------------------------------------------------------------------------------------

OUTPUT_NAME = "output_0"
META_FILE = "meta.json"
DATA_FILES = {"dataframe": "data.parquet", "json": "data.json", "pickle": "data.pkl"}


def _check_path_part(field: str, value: str, allow_slash: bool) -> list[str]:
    parts = value.split("/") if isinstance(value, str) else []
    if (
        not isinstance(value, str)
        or not value
        or "\\" in value
        or "\x00" in value
        or (not allow_slash and len(parts) > 1)
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise ValidationError(
            field,
            value,
            "not usable as a folder name inside the data dir",
            "Use a non-empty name without '..', empty parts or backslashes"
            + (" (parts separated by '/')" if allow_slash else " and without '/'")
            + ".",
        )
    return parts


def output_dir(data_dir: Path, pipeline_uuid: str, partition: str, block_uuid: str) -> Path:
    """``<data_dir>/.variables/pipelines/<pipeline_uuid>/<partition>/<block_uuid>/output_0``.

    ``pipeline_uuid`` and ``partition`` may contain ``/``; none of the parts may escape.
    """
    pipeline_parts = _check_path_part("pipeline_uuid", pipeline_uuid, allow_slash=True)
    partition_parts = _check_path_part("execution_partition", partition, allow_slash=True)
    _check_path_part("block_uuid", block_uuid, allow_slash=False)
    return Path(
        Path(data_dir), ".variables", "pipelines", *pipeline_parts, *partition_parts, block_uuid,
        OUTPUT_NAME,
    )  # fmt: skip


def is_strict_json(value: Any) -> bool:
    """Whether ``value`` is made only of dict (str keys), list, str, int, finite float, bool and
    None — exactly those types, so it comes back from JSON equal and of the same type."""
    stack = [value]
    containers: set[int] = set()
    while stack:
        item = stack.pop()
        kind = type(item)
        if item is None or kind in (str, int, bool):
            continue
        if kind is float:
            if not math.isfinite(item):
                return False
            continue
        if kind in (list, dict):
            if id(item) in containers:  # shared or cyclic: let pickle keep the structure
                return False
            containers.add(id(item))
        if kind is list:
            stack.extend(item)
            continue
        if kind is dict:
            if not all(type(key) is str for key in item):
                return False
            stack.extend(item.values())
            continue
        return False
    return True


def _is_dataframe(value: Any) -> bool:
    pandas = sys.modules.get("pandas")  # a DataFrame cannot exist unless pandas is imported
    return pandas is not None and isinstance(value, pandas.DataFrame)


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temp)`` on a temporary file beside ``path``, then rename it over ``path``."""
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temp = Path(temp_name)
    try:
        write(temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _write_bytes(data: bytes) -> Callable[[Path], None]:
    def write(temp: Path) -> None:
        with open(temp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())

    return write


def _type_name(value: Any) -> str:
    kind = type(value)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def save_output(value: Any, directory: Path) -> Path:
    """Save a block's return value in ``directory`` (created); return ``directory``.

    pandas DataFrame → ``data.parquet`` (``df.to_parquet``; a frame Parquet cannot hold, e.g.
    non-string column names, is pickled instead); strict JSON values (see :func:`is_strict_json`)
    → ``data.json``; ``None`` → no data file; anything else → ``data.pkl``. ``meta.json`` records
    ``type`` (``dataframe`` | ``json`` | ``pickle`` | ``none``) and ``python_type``. Files are
    written to temporary names and renamed; the data file lands before ``meta.json``, and data
    files of an earlier save of another type are removed afterwards.
    Raises :class:`ValidationError` (field ``output``) when the value cannot be saved at all.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"python_type": _type_name(value)}
    if value is None:
        meta["type"] = "none"
    elif _is_dataframe(value):
        try:
            _write_atomic(directory / DATA_FILES["dataframe"], value.to_parquet)
            meta["type"] = "dataframe"
        except (ValueError, TypeError, ImportError) as err:  # pyarrow's errors subclass these
            meta["type"] = "pickle"
            meta["parquet_error"] = str(err).splitlines()[0][:300] if str(err) else repr(err)
    elif is_strict_json(value):
        data = json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
        _write_atomic(directory / DATA_FILES["json"], _write_bytes(data))
        meta["type"] = "json"
    else:
        meta["type"] = "pickle"
    if meta["type"] == "pickle":
        try:
            data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:  # PicklingError, TypeError, AttributeError, ...
            raise ValidationError(
                "output",
                value,
                f"the block's return value ({meta['python_type']}) cannot be saved: "
                f"it is not a DataFrame, not JSON and cannot be pickled ({err})",
                "Return a pandas DataFrame, JSON-like data (dict/list/str/number) or a "
                "picklable object; return None to save nothing.",
            ) from err
        _write_atomic(directory / DATA_FILES["pickle"], _write_bytes(data))
    meta_bytes = json.dumps(meta, indent=1, sort_keys=True).encode("utf-8")
    _write_atomic(directory / META_FILE, _write_bytes(meta_bytes))
    for kind, name in DATA_FILES.items():
        if kind != meta["type"]:
            (directory / name).unlink(missing_ok=True)
    return directory


def load_output(directory: Path) -> Any:
    """Read back what :func:`save_output` saved in ``directory``.

    Raises :class:`NotFoundError` when nothing (or nothing readable) was saved there.
    """
    directory = Path(directory)
    meta_path = directory / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        kind = meta["type"]
    except FileNotFoundError as err:
        raise NotFoundError(
            f"no block output at {directory}: the block has not run in this partition, failed, "
            "or ran before outputs were saved. Check the block run's status and logs."
        ) from err
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise NotFoundError(
            f"the block output at {directory} is unreadable ({meta_path.name}: {err}). "
            "Re-run the block to write it again."
        ) from err
    if kind == "none":
        return None
    if kind not in DATA_FILES:
        raise NotFoundError(
            f"the block output at {directory} has unknown type {kind!r} in {META_FILE}. "
            "It was written by a newer version of mage_nb_sched; upgrade, or re-run the block."
        )
    data_path = directory / DATA_FILES[kind]
    if not data_path.is_file():
        raise NotFoundError(
            f"the block output at {directory} lost its data file {data_path.name}. "
            "Re-run the block to write it again."
        )
    if kind == "dataframe":
        pandas = importlib.import_module("pandas")  # lazy; no stubs needed
        return pandas.read_parquet(data_path)
    if kind == "json":
        return json.loads(data_path.read_text(encoding="utf-8"))
    with open(data_path, "rb") as file:
        return pickle.load(file)
