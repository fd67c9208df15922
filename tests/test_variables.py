"""Variables (merge order, built-ins, papermill-style injection) and block output storage."""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import nbformat
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from mage_nb_sched.core.errors import NotFoundError, ValidationError
from mage_nb_sched.execution.variables import (
    ALL_VARIABLES_NAME,
    builtin_variables,
    injection_source,
    insert_injected_cell,
    is_strict_json,
    load_output,
    merge_variables,
    output_dir,
    pipeline_global_variables,
    save_output,
)

UTC = dt.timezone.utc


def run_source(source: str, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    namespace = {} if namespace is None else namespace
    exec(compile(source, "<injected>", "exec"), namespace)
    return namespace


def builtins(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "execution_date": dt.datetime(2024, 1, 15, 9, 30, tzinfo=UTC),
        "execution_partition": "7/20240115T093000",
        "pipeline_run_id": 12,
        "block_run_id": None,
        "pipeline_uuid": "etl/daily",
        "trigger_name": "nightly",
        "run_variables": None,
        "event": None,
    }
    values.update(overrides)
    return builtin_variables(**values)


# --------------------------------------------------------------------------------------------
# Merge order
# --------------------------------------------------------------------------------------------


def test_later_layers_win_and_env_is_kept() -> None:
    merged = merge_variables(
        {"env": "dev", "a": "global", "b": "global", "c": "global", "execution_date": "x"},
        {"b": "schedule", "c": "schedule", "env": "production"},
        None,
        {"c": "run", "env": "staging"},
        builtins(),
    )
    assert merged["a"] == "global"
    assert merged["b"] == "schedule"
    assert merged["c"] == "run"
    assert merged["env"] == "staging"  # kept (Mage would force 'prod')
    assert merged["execution_date"] == dt.datetime(2024, 1, 15, 9, 30, tzinfo=UTC)


def test_merge_does_not_mutate_layers() -> None:
    first = {"a": 1}
    merge_variables(first, {"a": 2})
    assert first == {"a": 1}


def test_merge_refuses_a_non_mapping() -> None:
    with pytest.raises(ValidationError) as caught:
        merge_variables({"a": 1}, ["env"])  # type: ignore[arg-type]
    assert caught.value.field == "variables" and "layer 1" in caught.value.problem


def test_pipeline_global_variables_from_notebook_metadata() -> None:
    notebook = nbformat.v4.new_notebook()
    assert pipeline_global_variables(notebook) == {}
    notebook.metadata["mage_nb_sched"] = {"other": 1}
    assert pipeline_global_variables(notebook) == {}
    notebook.metadata["mage_nb_sched"] = {"variables": {"env": "dev", "limits": {"rows": 5}}}
    found = pipeline_global_variables(notebook)
    assert found == {"env": "dev", "limits": {"rows": 5}}
    assert type(found["limits"]) is dict  # plain values, not nbformat nodes
    found["limits"]["rows"] = 6
    assert notebook.metadata["mage_nb_sched"]["variables"]["limits"]["rows"] == 5


@pytest.mark.parametrize("section", [{"variables": ["env"]}, {"variables": "env=dev"}, "env"])
def test_pipeline_global_variables_must_be_an_object(section: Any) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["mage_nb_sched"] = section
    with pytest.raises(ValidationError) as caught:
        pipeline_global_variables(notebook)
    assert caught.value.field == "notebook.metadata.mage_nb_sched.variables"
    assert '"variables": {"env": "dev"}' in caught.value.fix


# --------------------------------------------------------------------------------------------
# Built-ins
# --------------------------------------------------------------------------------------------


def test_builtins_basic_shape() -> None:
    values = builtins()
    assert values == {
        "execution_date": dt.datetime(2024, 1, 15, 9, 30, tzinfo=UTC),
        "execution_partition": "7/20240115T093000",
        "pipeline_run_id": 12,
        "block_run_id": None,
        "pipeline_uuid": "etl/daily",
        "trigger_name": "nightly",
        "ds": "2024-01-15",
        "hr": "09",
        "event": {},
        "interval_start_datetime": None,
        "interval_end_datetime": None,
        "interval_start_datetime_previous": None,
        "interval_seconds": None,
    }
    assert values["execution_date"].tzinfo is UTC


def test_execution_date_becomes_utc_aware() -> None:
    berlin = dt.datetime(2024, 1, 15, 10, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    values = builtins(execution_date=berlin)
    assert values["execution_date"] == dt.datetime(2024, 1, 15, 9, 30, tzinfo=UTC)
    assert values["execution_date"].tzinfo is UTC
    naive = builtins(execution_date=dt.datetime(2024, 1, 15, 9, 30))["execution_date"]
    assert naive == dt.datetime(2024, 1, 15, 9, 30, tzinfo=UTC)  # naive means UTC


@pytest.mark.parametrize(
    ("zone", "ds", "hr"),
    [
        ("UTC", "2024-01-15", "23"),
        ("America/New_York", "2024-01-15", "18"),
        ("Asia/Tokyo", "2024-01-16", "08"),
    ],
)
def test_ds_and_hr_in_the_schedule_zone(zone: str, ds: str, hr: str) -> None:
    values = builtins(execution_date=dt.datetime(2024, 1, 15, 23, 30, tzinfo=UTC), timezone=zone)
    assert (values["ds"], values["hr"]) == (ds, hr)


def test_event_and_interval_variables_from_the_run() -> None:
    values = builtins(
        event={"bucket": "b", "key": "k"},
        run_variables={
            "interval_start_datetime": "2024-01-15T00:00:00Z",
            "interval_end_datetime": "2024-01-16T01:00:00+01:00",
            "interval_start_datetime_previous": dt.datetime(2024, 1, 14, tzinfo=UTC),
            "interval_seconds": "86400",
        },
    )
    assert values["event"] == {"bucket": "b", "key": "k"}
    assert values["interval_start_datetime"] == dt.datetime(2024, 1, 15, tzinfo=UTC)
    assert values["interval_end_datetime"] == dt.datetime(2024, 1, 16, tzinfo=UTC)
    assert values["interval_end_datetime"].tzinfo is UTC
    assert values["interval_start_datetime_previous"] == dt.datetime(2024, 1, 14, tzinfo=UTC)
    assert values["interval_seconds"] == 86400 and type(values["interval_seconds"]) is int


def test_bad_interval_values_name_the_variable() -> None:
    with pytest.raises(ValidationError) as caught:
        builtins(run_variables={"interval_seconds": "a day"})
    assert caught.value.field == "variables.interval_seconds"
    with pytest.raises(ValidationError) as caught:
        builtins(run_variables={"interval_start_datetime": "yesterday"})
    assert caught.value.field == "variables.interval_start_datetime"


# --------------------------------------------------------------------------------------------
# Injection
# --------------------------------------------------------------------------------------------


class Color(str, enum.Enum):
    RED = "red"


ROUND_TRIP: dict[str, Any] = {
    "text": 'it\'s "quoted"\nnew line ünïcode',
    "empty": "",
    "count": 3,
    "big": 2**80,
    "negative": -7,
    "ratio": 0.1,
    "tiny": 5e-324,
    "minus_zero": -0.0,
    "yes": True,
    "no": False,
    "nothing": None,
    "items": [1, "a", None, [2.5, {"k": "v"}]],
    "pair": (1, "b"),
    "single": ("only",),
    "mapping": {"a": {"b": [1, 2, {"c": None}]}, 1: "int key", None: True},
    "aware": dt.datetime(2024, 1, 15, 9, 30, 5, 123456, tzinfo=UTC),
    "berlin": dt.datetime(2024, 7, 1, 12, 0, tzinfo=ZoneInfo("Europe/Berlin")),
    "naive": dt.datetime(2024, 1, 15, 9, 30, 0, 7),
    "day": dt.date(2024, 2, 29),
    "span": dt.timedelta(days=-1, seconds=5, microseconds=6),
    "nested_dates": {"when": [dt.date(2024, 1, 1), dt.datetime(2024, 1, 1, tzinfo=UTC)]},
    "color": Color.RED,
}


def test_injection_round_trips_typed_values() -> None:
    namespace = run_source(injection_source(ROUND_TRIP))
    for name, value in ROUND_TRIP.items():
        assert namespace[name] == value, name
        assert namespace[ALL_VARIABLES_NAME][name] == value, name
    assert type(namespace["count"]) is int and type(namespace["ratio"]) is float
    assert type(namespace["yes"]) is bool and type(namespace["pair"]) is tuple
    assert type(namespace["day"]) is dt.date
    assert type(namespace["color"]) is str  # plain str, equal to the enum member
    assert str(namespace["minus_zero"]) == "-0.0"
    aware = namespace["aware"]
    assert isinstance(aware, dt.datetime) and aware.tzinfo is UTC
    assert namespace["berlin"] == dt.datetime(2024, 7, 1, 10, 0, tzinfo=UTC)
    assert namespace["berlin"].tzinfo is UTC  # tz-aware values are written in UTC
    assert namespace["naive"].tzinfo is None
    assert namespace["nested_dates"]["when"][1].tzinfo is UTC


def test_injection_of_non_finite_floats() -> None:
    namespace = run_source(
        injection_source(
            {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "in_list": [math.nan]}
        )
    )
    assert math.isnan(namespace["nan"]) and math.isnan(namespace["in_list"][0])
    assert namespace["inf"] == math.inf and namespace["ninf"] == -math.inf


def test_injection_of_the_builtins_gives_a_real_datetime() -> None:
    variables = merge_variables({"env": "dev"}, builtins())
    namespace = run_source(injection_source(variables))
    assert namespace["execution_date"] == dt.datetime(2024, 1, 15, 9, 30, tzinfo=UTC)
    assert namespace["execution_date"].date() == dt.date(2024, 1, 15)
    assert namespace["ds"] == "2024-01-15" and namespace["event"] == {}
    assert namespace[ALL_VARIABLES_NAME] == variables


def test_non_identifier_names_are_only_in_the_dict() -> None:
    variables = {"my-var": 1, "class": 2, "1abc": 3, "with space": 4, "ok": 5}
    namespace = run_source(injection_source(variables))
    assert namespace[ALL_VARIABLES_NAME] == variables
    assert namespace["ok"] == 5
    assert not {"my-var", "class", "1abc", "with space"} & set(namespace)


def test_injection_does_not_clobber_user_names() -> None:
    import datetime as user_datetime_module

    namespace = run_source(
        injection_source({"x": dt.date(2024, 1, 1)}), {"datetime": user_datetime_module}
    )
    assert namespace["datetime"] is user_datetime_module
    assert not [name for name in namespace if name.startswith("__mage")]
    # a variable called `datetime` is just a variable
    namespace = run_source(injection_source({"datetime": "a string", "d": dt.date(2024, 1, 1)}))
    assert namespace["datetime"] == "a string" and namespace["d"] == dt.date(2024, 1, 1)


def test_the_reserved_name_stays_the_dict() -> None:
    namespace = run_source(injection_source({ALL_VARIABLES_NAME: "mine", "a": 1}))
    assert namespace[ALL_VARIABLES_NAME] == {ALL_VARIABLES_NAME: "mine", "a": 1}


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"ids": {1, 2}}, "variables.ids"),
        ({"thing": object()}, "variables.thing"),
        ({"ratio": Fraction(1, 3)}, "variables.ratio"),
        ({"cfg": {"a": [1, {2, 3}]}}, "variables.cfg['a'][1]"),
    ],
)
def test_values_without_a_typed_literal_are_refused(variables: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        injection_source(variables)
    assert caught.value.field == field
    assert "isoformat" in caught.value.fix


def test_recursive_values_are_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValidationError, match="contains itself"):
        injection_source({"loop": loop})


# --------------------------------------------------------------------------------------------
# The injected cell
# --------------------------------------------------------------------------------------------


def notebook_with(*cells: tuple[str, list[str]]) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    for source, tags in cells:
        notebook.cells.append(nbformat.v4.new_code_cell(source, metadata={"tags": tags}))
    return notebook


def test_injected_cell_goes_after_the_parameters_cell() -> None:
    notebook = notebook_with(
        ("a = 0", []), ("b = 1", ["parameters"]), ("c = b", []), ("d", ["parameters"])
    )
    before = json.dumps(notebook, sort_keys=True)
    result, index = insert_injected_cell(notebook, "b = 2\n")
    assert index == 2
    assert [cell.source for cell in result.cells] == ["a = 0", "b = 1", "b = 2\n", "c = b", "d"]
    assert result.cells[2].metadata.tags == ["injected-parameters"]
    assert result.cells[2].cell_type == "code"
    assert json.dumps(notebook, sort_keys=True) == before  # the input is untouched
    nbformat.validate(result)


def test_injected_cell_goes_first_without_a_parameters_cell() -> None:
    notebook = notebook_with(("a = 0", []), ("b = 1", ["other"]))
    result, index = insert_injected_cell(notebook, "x = 1\n")
    assert index == 0
    assert [cell.source for cell in result.cells] == ["x = 1\n", "a = 0", "b = 1"]
    assert len(notebook.cells) == 2


def test_a_stale_injected_cell_is_emptied_in_place() -> None:
    notebook = notebook_with(
        ("p = 1", ["parameters"]), ("p = 99", ["injected-parameters"]), ("q = p", [])
    )
    result, index = insert_injected_cell(notebook, "p = 2\n")
    assert index == 1
    assert len(result.cells) == 4  # every later cell moved down by exactly one
    assert result.cells[3].source == "q = p"
    stale = result.cells[2]
    assert "p = 99" not in stale.source and "injected-parameters" not in stale.metadata.tags
    namespace: dict[str, Any] = {}
    for cell in result.cells:
        exec(cell.source, namespace)
    assert namespace["q"] == 2


def test_injected_cell_in_an_old_minor_version_has_no_id() -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.nbformat_minor = 4
    notebook.cells.append(nbformat.v4.new_code_cell("a = 1"))
    del notebook.cells[0]["id"]
    result, _ = insert_injected_cell(notebook, "x = 1\n")
    assert "id" not in result.cells[0]
    nbformat.validate(result)


# --------------------------------------------------------------------------------------------
# Output storage
# --------------------------------------------------------------------------------------------


def test_output_dir_layout(tmp_path: Path) -> None:
    assert output_dir(tmp_path, "etl/daily", "7/20240115T093000", "load_data") == (
        tmp_path / ".variables" / "pipelines" / "etl" / "daily" / "7" / "20240115T093000"
        / "load_data" / "output_0"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("pipeline", "partition", "block", "field"),
    [
        ("../x", "1/2", "b", "pipeline_uuid"),
        ("p", "1/../../x", "b", "execution_partition"),
        ("p", "/abs", "b", "execution_partition"),
        ("p", "1/2", "a/b", "block_uuid"),
        ("p", "1/2", "..", "block_uuid"),
        ("p", "1/2", "", "block_uuid"),
    ],
)
def test_output_dir_refuses_escapes(
    tmp_path: Path, pipeline: str, partition: str, block: str, field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        output_dir(tmp_path, pipeline, partition, block)
    assert caught.value.field == field


def files_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def meta(directory: Path) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((directory / "meta.json").read_text())
    return found


def test_dataframe_round_trip_through_parquet(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "i": pd.Series([1, 2, 3], dtype="int64"),
            "f": [0.5, math.nan, 2.0],
            "s": ["a", None, "c"],
            "b": [True, False, True],
            "when": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"], utc=True),
            "cat": pd.Categorical(["x", "y", "x"]),
            "n": pd.array([1, None, 3], dtype="Int64"),
        },
        index=pd.Index([10, 20, 30], name="row"),
    )
    directory = tmp_path / "out"
    assert save_output(frame, directory) == directory
    assert files_in(directory) == ["data.parquet", "meta.json"]
    assert meta(directory)["type"] == "dataframe"
    assert meta(directory)["python_type"].startswith("pandas.")
    assert meta(directory)["python_type"].endswith(".DataFrame")
    assert_frame_equal(load_output(directory), frame)


def test_a_frame_parquet_cannot_hold_is_pickled(tmp_path: Path) -> None:
    frame = pd.DataFrame({"mixed": [[1, 2], "x"]})  # pyarrow cannot type this column
    save_output(frame, tmp_path)
    assert meta(tmp_path)["type"] == "pickle" and "parquet_error" in meta(tmp_path)
    assert files_in(tmp_path) == ["data.pkl", "meta.json"]
    assert_frame_equal(load_output(tmp_path), frame)


@pytest.mark.parametrize(
    "value",
    [
        {"rows": 3, "names": ["a", "b"], "ok": True, "ratio": 0.5, "none": None},
        [1, 2, 3],
        "text",
        42,
        1.5,
        False,
    ],
)
def test_json_round_trip(tmp_path: Path, value: Any) -> None:
    save_output(value, tmp_path)
    assert files_in(tmp_path) == ["data.json", "meta.json"]
    assert meta(tmp_path)["type"] == "json"
    loaded = load_output(tmp_path)
    assert loaded == value and type(loaded) is type(value)


@pytest.mark.parametrize(
    "value",
    [
        Fraction(1, 3),
        {1, 2, 3},
        (1, 2),
        {1: "int key"},
        {"x": math.nan},
        dt.date(2024, 1, 1),
        b"bytes",
    ],
)
def test_other_values_are_pickled(tmp_path: Path, value: Any) -> None:
    save_output(value, tmp_path)
    assert files_in(tmp_path) == ["data.pkl", "meta.json"]
    assert meta(tmp_path)["type"] == "pickle"
    loaded = load_output(tmp_path)
    assert type(loaded) is type(value)
    if value == value and not (isinstance(value, dict) and "x" in value):
        assert loaded == value
    else:
        assert math.isnan(loaded["x"])


def test_pickled_custom_type_name_is_recorded(tmp_path: Path) -> None:
    save_output(Fraction(2, 3), tmp_path)
    assert meta(tmp_path)["python_type"] == "fractions.Fraction"


def test_none_output_has_no_data_file(tmp_path: Path) -> None:
    save_output(None, tmp_path)
    assert files_in(tmp_path) == ["meta.json"]
    assert meta(tmp_path) == {"type": "none", "python_type": "NoneType"}
    assert load_output(tmp_path) is None


def test_saving_again_replaces_the_old_data_file(tmp_path: Path) -> None:
    save_output(pd.DataFrame({"a": [1]}), tmp_path)
    save_output({"a": 1}, tmp_path)
    assert files_in(tmp_path) == ["data.json", "meta.json"]
    save_output(None, tmp_path)
    assert files_in(tmp_path) == ["meta.json"]
    assert load_output(tmp_path) is None


def test_an_unpicklable_value_fails_clearly_and_leaves_no_temp_files(tmp_path: Path) -> None:
    save_output({"kept": True}, tmp_path)
    with pytest.raises(ValidationError) as caught:
        save_output(lambda: 1, tmp_path)
    assert caught.value.field == "output"
    assert "cannot be pickled" in caught.value.problem and "DataFrame" in caught.value.fix
    assert files_in(tmp_path) == ["data.json", "meta.json"]  # the earlier output survives
    assert load_output(tmp_path) == {"kept": True}


def test_writes_leave_no_temp_files(tmp_path: Path) -> None:
    for value in (pd.DataFrame({"a": [1]}), {"a": 1}, Fraction(1, 2), None):
        directory = tmp_path / type(value).__name__
        save_output(value, directory)
        assert not [
            name for name in files_in(directory) if name.startswith(".") or name.endswith(".tmp")
        ]


def test_load_missing_output(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no block output at"):
        load_output(tmp_path / "never")


def test_load_unreadable_output(tmp_path: Path) -> None:
    tmp_path.joinpath("meta.json").write_text("{broken")
    with pytest.raises(NotFoundError, match="unreadable"):
        load_output(tmp_path)
    tmp_path.joinpath("meta.json").write_text('{"type": "json"}')
    with pytest.raises(NotFoundError, match=r"lost its data file data\.json"):
        load_output(tmp_path)


def test_a_cyclic_value_is_pickled(tmp_path: Path) -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    assert not is_strict_json(loop)
    save_output(loop, tmp_path)
    loaded = load_output(tmp_path)
    assert loaded[0] == 1 and loaded[1] is loaded


def test_strict_json_check() -> None:
    assert is_strict_json({"a": [1, 2.5, "x", None, True, {"b": []}]})
    for value in ({1: "a"}, (1,), {"a": (1,)}, math.inf, [math.nan], {"s": {1}}, Color.RED):
        assert not is_strict_json(value), value
