"""The block decorators at run time, in this process: run mode (chained outputs saved to disk)
and interactive mode (called with the notebook's current values, result displayed)."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from mage_nb_sched import custom, data_exporter, data_loader, transformer
from mage_nb_sched.core.errors import ValidationError
from mage_nb_sched.execution import blocks
from mage_nb_sched.execution.variables import (
    ALL_VARIABLES_NAME,
    builtin_variables,
    injection_source,
    load_output,
    merge_variables,
    output_dir,
)

UTC = dt.timezone.utc
EXECUTION_DATE = dt.datetime(2024, 1, 15, 9, 30, tzinfo=UTC)
PARTITION = "7/20240115T093000"


@pytest.fixture(autouse=True)
def clean_runtime() -> Iterator[None]:
    """Each test starts and ends in interactive mode with no session state."""
    registered = len(blocks.REGISTRY)
    blocks.deactivate_run()
    blocks.reset_interactive_state()
    yield
    blocks.deactivate_run()
    blocks.reset_interactive_state()
    del blocks.REGISTRY[registered:]


def run_variables() -> dict[str, Any]:
    return merge_variables(
        {"env": "dev"},
        {"batch_size": 100},
        builtin_variables(
            execution_date=EXECUTION_DATE,
            execution_partition=PARTITION,
            pipeline_run_id=5,
            block_run_id=None,
            pipeline_uuid="etl/daily",
            trigger_name="nightly",
            run_variables=None,
            event=None,
        ),
    )


def activate(data_dir: Path, **extra: Any) -> None:
    blocks.activate_run(
        {
            "variables": run_variables(),
            "data_dir": str(data_dir),
            "pipeline_uuid": "etl/daily",
            "partition": PARTITION,
            **extra,
        }
    )


def saved(data_dir: Path, block_uuid: str) -> Path:
    return output_dir(data_dir, "etl/daily", PARTITION, block_uuid)


# --------------------------------------------------------------------------------------------
# Run mode
# --------------------------------------------------------------------------------------------


def test_a_run_chains_outputs_and_saves_them(tmp_path: Path) -> None:
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    activate(tmp_path, pipeline_run_id=5)

    blocks.enter_block("load_data", 11)

    @data_loader
    def load_data(*args: Any, **kwargs: Any) -> pd.DataFrame:
        calls.append(("load", args, kwargs))
        return pd.DataFrame({"day": [kwargs["execution_date"].date().isoformat()], "n": [1]})

    blocks.enter_block("double", 12)

    @transformer
    def double(df: pd.DataFrame, **kwargs: Any) -> pd.DataFrame:
        calls.append(("double", (df,), kwargs))
        return df.assign(n=df["n"] * 2)

    blocks.enter_block("export", 13)

    @data_exporter
    def export(df: pd.DataFrame, *args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(("export", (df, *args), kwargs))
        return {"rows": len(df), "partition": kwargs["execution_partition"]}

    # The first block is called without a positional argument (no upstream output).
    assert calls[0][1] == ()
    load_kwargs = calls[0][2]
    assert load_kwargs["execution_date"] == EXECUTION_DATE
    assert isinstance(load_kwargs["execution_date"], dt.datetime)
    assert load_kwargs["block_uuid"] == "load_data" and load_kwargs["block_run_id"] == 11
    assert load_kwargs["pipeline_run_id"] == 5 and load_kwargs["env"] == "dev"
    assert load_kwargs["batch_size"] == 100 and load_kwargs["ds"] == "2024-01-15"
    # Later blocks get the previous block's output first.
    expected_load = pd.DataFrame({"day": ["2024-01-15"], "n": [1]})
    assert_frame_equal(calls[1][1][0], expected_load)
    assert calls[1][2]["block_run_id"] == 12
    assert list(calls[2][1][0]["n"]) == [2]
    # Outputs are on disk in the documented layout.
    load_dir = (
        tmp_path / ".variables" / "pipelines" / "etl" / "daily" / "7" / "20240115T093000"
        / "load_data" / "output_0"
    )  # fmt: skip
    assert (load_dir / "data.parquet").is_file()
    assert_frame_equal(load_output(load_dir), expected_load)
    assert_frame_equal(load_output(saved(tmp_path, "double")), expected_load.assign(n=[2]))
    assert load_output(saved(tmp_path, "export")) == {"rows": 1, "partition": PARTITION}
    assert (saved(tmp_path, "export") / "data.json").is_file()
    # The decorators return the functions unchanged; calling them again saves nothing new.
    assert double(expected_load)["n"].tolist() == [2]
    assert blocks.REGISTRY[-1].name == "export" and blocks.REGISTRY[-1].kind == "data_exporter"
    assert blocks.current_run() is not None
    assert blocks.current_run()["pipeline_run_id"] == 5  # type: ignore[index]


def test_the_seed_data_loader_works_in_a_run(tmp_path: Path) -> None:
    activate(tmp_path)
    blocks.enter_block("load_data", 1)
    queries: list[str] = []

    def run_query(query: str) -> str:
        queries.append(query)
        return query

    # The seed's "Access execution date in blocks" example, verbatim in its body.
    @data_loader
    def load_data(*args, **kwargs):  # type: ignore[no-untyped-def]
        # Get execution date from kwargs
        execution_date = kwargs.get("execution_date")

        # Use it to load data for that time period
        query = f"""
        SELECT * FROM events
        WHERE event_date = '{execution_date.date()}'
    """

        return run_query(query)

    assert "WHERE event_date = '2024-01-15'" in queries[0]
    assert "2024-01-15" in load_output(saved(tmp_path, "load_data"))

    # ... and as a later block it gets the previous output positionally, still fine.
    blocks.enter_block("again", 2)
    seen: list[tuple[Any, ...]] = []

    @data_loader
    def again(*args: Any, **kwargs: Any) -> None:
        seen.append(args)

    assert seen == [(queries[0],)]
    assert load_output(saved(tmp_path, "again")) is None


def test_block_uuid_comes_from_enter_block_not_the_function_name(tmp_path: Path) -> None:
    activate(tmp_path)
    blocks.enter_block("ingest", 3)

    @custom
    def first(**kwargs: Any) -> list[int]:
        return [1]

    @custom
    def second(*args: Any, **kwargs: Any) -> list[Any]:
        return [args, kwargs["block_uuid"]]

    assert load_output(saved(tmp_path, "ingest")) == [1]
    # a second decorated function in the same cell saves under its own name
    assert load_output(saved(tmp_path, "second")) == [([1],), "second"]  # a tuple: pickled
    assert not saved(tmp_path, "first").exists()


def test_arguments_adapt_to_the_signature(tmp_path: Path) -> None:
    activate(tmp_path)
    received: dict[str, Any] = {}

    @data_loader
    def load() -> int:  # takes nothing at all
        return 1

    @transformer
    def only_kwargs(**kwargs: Any) -> int:  # no positional parameter: upstream left out
        received["only_kwargs"] = sorted(kwargs)[:3]
        return 2

    @transformer
    def named(previous: int, env: str, execution_date: dt.datetime) -> tuple[int, str, str]:
        return previous, env, execution_date.isoformat()

    @data_exporter
    def clash(env: Any, **kwargs: Any) -> Any:  # a variable named like the upstream parameter
        return env, "env" in kwargs

    assert received["only_kwargs"] == ["batch_size", "block_run_id", "block_uuid"]
    assert load_output(saved(tmp_path, "named")) == (2, "dev", "2024-01-15T09:30:00+00:00")
    assert load_output(saved(tmp_path, "clash")) == ((2, "dev", "2024-01-15T09:30:00+00:00"), False)


def test_async_blocks_are_awaited(tmp_path: Path) -> None:
    activate(tmp_path)

    @data_loader
    async def fetch(**kwargs: Any) -> str:
        return kwargs["ds"]

    assert load_output(saved(tmp_path, "fetch")) == "2024-01-15"


def test_async_blocks_are_awaited_inside_a_running_loop(tmp_path: Path) -> None:
    """As in a kernel, where cells run while the kernel's event loop is running."""
    import asyncio

    activate(tmp_path)

    async def cell() -> None:
        @data_loader
        async def fetch(**kwargs: Any) -> str:
            await asyncio.sleep(0)
            return kwargs["hr"]

    asyncio.run(cell())
    assert load_output(saved(tmp_path, "fetch")) == "09"


def test_exceptions_propagate_and_nothing_is_saved(tmp_path: Path) -> None:
    activate(tmp_path)
    blocks.enter_block("load", 1)

    @data_loader
    def load(**kwargs: Any) -> int:
        return 41

    blocks.enter_block("boom", 2)
    with pytest.raises(ZeroDivisionError):

        @transformer
        def boom(value: int, **kwargs: Any) -> float:
            return value / 0

    assert not saved(tmp_path, "boom").exists()
    blocks.enter_block("after", 3)

    @transformer
    def after(value: int, **kwargs: Any) -> int:  # still gets the last successful output
        return value + 1

    assert load_output(saved(tmp_path, "after")) == 42


def test_an_unsavable_output_fails_the_block(tmp_path: Path) -> None:
    activate(tmp_path)
    with pytest.raises(ValidationError) as caught:

        @custom
        def returns_a_lambda(**kwargs: Any) -> Any:
            return lambda: 1

    assert caught.value.field == "output"


def test_activation_the_way_the_runner_does_it(tmp_path: Path) -> None:
    """Typed variables reach the kernel through the injected source, then activate_run."""
    namespace: dict[str, Any] = {}
    exec(injection_source(run_variables()), namespace)
    blocks.activate_run(
        {
            "variables": namespace[ALL_VARIABLES_NAME],
            "data_dir": str(tmp_path),
            "pipeline_uuid": "etl/daily",
            "partition": PARTITION,
            "pipeline_run_id": 5,
        }
    )
    blocks.enter_block("load_data", 9)

    @data_loader
    def load_data(*args: Any, **kwargs: Any) -> str:
        assert isinstance(kwargs["execution_date"], dt.datetime)
        assert kwargs["execution_date"].tzinfo is not None
        return kwargs["execution_date"].isoformat()

    assert load_output(saved(tmp_path, "load_data")) == "2024-01-15T09:30:00+00:00"


def test_run_context_is_validated() -> None:
    with pytest.raises(ValidationError) as caught:
        blocks.activate_run({"variables": {}, "data_dir": "/tmp"})
    assert caught.value.field == "context" and "pipeline_uuid, partition" in caught.value.problem
    with pytest.raises(ValidationError) as caught:
        blocks.activate_run(
            {"variables": [1], "data_dir": "d", "pipeline_uuid": "p", "partition": "x"}
        )
    assert caught.value.field == "context.variables"


def test_enter_block_needs_an_active_run() -> None:
    with pytest.raises(ValidationError) as caught:
        blocks.enter_block("x", 12)
    assert "activate_run" in caught.value.fix


# --------------------------------------------------------------------------------------------
# Interactive mode
# --------------------------------------------------------------------------------------------


def test_interactive_blocks_get_the_notebooks_current_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    before = dt.datetime.now(UTC)

    @data_loader
    def load_data(*args: Any, **kwargs: Any) -> list[int]:
        calls.append((args, kwargs))
        return [1, 2]

    @transformer
    def total(values: list[int], **kwargs: Any) -> int:
        calls.append(((values,), kwargs))
        return sum(values)

    after = dt.datetime.now(UTC)
    (args, kwargs), (second_args, _) = calls
    assert args == ()
    assert second_args == ([1, 2],)
    when = kwargs["execution_date"]
    assert isinstance(when, dt.datetime) and when.tzinfo is not None
    assert before <= when <= after
    assert kwargs["execution_partition"] == f"interactive/{when:%Y%m%dT%H%M%S}"
    assert kwargs["ds"] == when.strftime("%Y-%m-%d") and kwargs["hr"] == when.strftime("%H")
    for name in ("pipeline_run_id", "block_run_id", "pipeline_uuid", "trigger_name"):
        assert kwargs[name] is None, name
    for name in ("interval_start_datetime", "interval_end_datetime", "interval_seconds"):
        assert kwargs[name] is None, name
    assert kwargs["event"] == {} and kwargs["block_uuid"] == "load_data"
    assert blocks.previous_output() == 3
    assert blocks.current_run() is None
    assert not list(tmp_path.iterdir())  # nothing saved interactively
    assert load_data() == [1, 2]  # still an ordinary function


def test_interactive_variables_override_the_defaults() -> None:
    blocks.set_interactive_variables(env="dev", execution_date=EXECUTION_DATE)
    blocks.set_interactive_variables(batch_size=5)
    seen: dict[str, Any] = {}

    @data_loader
    def load(**kwargs: Any) -> None:
        seen.update(kwargs)

    assert seen["env"] == "dev" and seen["batch_size"] == 5
    assert seen["execution_date"] == EXECUTION_DATE
    blocks.reset_interactive_state()
    assert "env" not in blocks.interactive_variables()


def test_interactive_exceptions_propagate() -> None:
    with pytest.raises(KeyError, match="missing"):

        @data_loader
        def load(**kwargs: Any) -> Any:
            return kwargs["missing"]

    assert blocks.previous_output() is blocks.NOTHING


def test_deactivate_restores_interactive_mode(tmp_path: Path) -> None:
    @data_loader
    def before_run(**kwargs: Any) -> str:
        return "interactive value"

    activate(tmp_path)

    @data_loader
    def in_run(*args: Any, **kwargs: Any) -> Any:
        return args  # the run's chain starts empty: no interactive output leaks in

    assert load_output(saved(tmp_path, "in_run")) == ()
    blocks.deactivate_run()
    seen: list[Any] = []

    @transformer
    def after_run(value: str, **kwargs: Any) -> None:
        seen.append((value, kwargs["pipeline_run_id"], kwargs["execution_partition"]))

    assert seen[0][0] == "interactive value" and seen[0][1] is None
    assert seen[0][2].startswith("interactive/")
    assert not saved(tmp_path, "after_run").exists()


@pytest.fixture
def shell() -> Iterator[Any]:
    from IPython.core.interactiveshell import InteractiveShell

    instance = InteractiveShell.instance()
    yield instance
    InteractiveShell.clear_instance()


def test_interactive_results_are_displayed_inside_ipython(shell: Any) -> None:
    from IPython.utils.capture import capture_output

    code = (
        "from mage_nb_sched import data_loader, data_exporter\n"
        "@data_loader\n"
        "def load(*args, **kwargs):\n"
        "    when = kwargs['execution_date']\n"
        "    return {'year': when.year, 'tz': str(when.tzinfo)}\n"
        "@data_exporter\n"
        "def export(data, **kwargs):\n"
        "    assert data['tz'] == 'UTC'\n"
        "    return None\n"
    )
    with capture_output() as captured:
        result = shell.run_cell(code)
    assert result.success, result.error_in_exec
    shown = [output.data["text/plain"] for output in captured.outputs]
    year = dt.datetime.now(UTC).year
    assert len(shown) == 1  # the exporter returned None: nothing displayed for it
    assert f"'year': {year}" in shown[0] and "'tz': 'UTC'" in shown[0]


def test_nothing_is_displayed_outside_ipython(capsys: pytest.CaptureFixture[str]) -> None:
    assert "IPython" not in sys.modules or _no_shell()

    @data_loader
    def load(**kwargs: Any) -> str:
        return "not shown"

    assert capsys.readouterr().out == ""


def _no_shell() -> bool:
    from IPython.core.getipython import get_ipython

    return get_ipython() is None  # type: ignore[no-untyped-call]


@pytest.mark.kernel
def test_a_decorated_cell_works_as_a_notebook_cell_in_a_real_kernel(tmp_path: Path) -> None:
    """Run by hand (no run active), the cell calls the function and shows its result."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    notebook.cells = [
        nbformat.v4.new_code_cell(
            "from mage_nb_sched import data_loader, transformer\n"
            "@data_loader\n"
            "def load_data(*args, **kwargs):\n"
            "    aware = kwargs['execution_date'].tzinfo is not None\n"
            "    return {'ds': kwargs['ds'], 'aware': aware}\n"
        ),
        nbformat.v4.new_code_cell(
            "@transformer\ndef count(data, **kwargs):\n    return len(data)\n"
        ),
    ]
    NotebookClient(notebook, timeout=60, resources={"metadata": {"path": str(tmp_path)}}).execute()
    first, second = (
        [o for o in cell.outputs if o.output_type == "display_data"] for cell in notebook.cells
    )
    today = dt.datetime.now(UTC).strftime("%Y-%m-%d")
    assert len(first) == 1 and f"'ds': '{today}'" in first[0].data["text/plain"]
    assert "'aware': True" in first[0].data["text/plain"]
    assert [o.data["text/plain"] for o in second] == ["2"]
