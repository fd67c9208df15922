"""Mage's block decorators: ``@data_loader``, ``@transformer``, ``@data_exporter``, ``@custom``.

A decorated function becomes the block of its cell (its name is the block uuid unless the cell
has a ``block:NAME`` tag). The decorator *calls* the function right when it is defined — that is,
when the cell runs — and returns the function unchanged, so it stays an ordinary function.

**Run mode** (the runner called :func:`activate_run` in the kernel): the function is called as
``fn(previous_output, **kwargs)``, where ``previous_output`` is the return value of the last
decorated block of this run (left out for the first one) and ``kwargs`` are the run's variables
plus ``block_uuid`` and ``block_run_id`` (set by :func:`enter_block` before each cell). The return
value becomes the next block's input and is saved under the data dir at
``.variables/pipelines/<pipeline uuid>/<partition>/<block uuid>/output_0``
(:func:`mage_nb_sched.execution.variables.save_output`). Exceptions propagate: the cell
fails and the runner records the block as failed.

**Interactive mode** (no run active, e.g. a user executing the cell in Jupyter): the function is
called with the notebook's current values — the last decorated block's return value in this
kernel session (if there is one) and interactive built-ins (``execution_date`` = now, a UTC
datetime; ``execution_partition`` = ``interactive/<%Y%m%dT%H%M%S>``; ids, ``pipeline_uuid`` and
``trigger_name`` ``None``; ``ds``, ``hr``, ``event`` = ``{}``, ``interval_*`` ``None``), overridden
by anything set with :func:`set_interactive_variables`. A non-``None`` result is shown with
IPython's ``display`` (inside IPython); nothing is saved. If the function raises, the exception
propagates, so the cell shows the error — exactly as if the function had been called by hand.

Either way the arguments adapt to the signature the way Mage does: the upstream output is passed
only if the function takes a positional parameter, and the variables only if it takes
``**kwargs`` (else just the ones it names). ``def load_data(*args, **kwargs)`` gets everything.
An ``async def`` block is awaited (on a helper thread when an event loop is already running,
as in a kernel).
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mage_nb_sched.core.errors import ValidationError

F = TypeVar("F", bound=Callable[..., Any])

#: The kinds of block a decorator can mark.
BLOCK_KINDS = ("data_loader", "transformer", "data_exporter", "custom")


@dataclass(frozen=True)
class BlockFunction:
    """A function registered by one of the decorators."""

    kind: str
    name: str
    function: Callable[..., Any]


#: Functions decorated in this interpreter, newest last (the runner reads the cell's entry).
REGISTRY: list[BlockFunction] = []


class _Nothing:
    """Marks "no previous output" (``None`` is a legitimate output)."""

    def __repr__(self) -> str:
        return "<no output>"


NOTHING = _Nothing()


@dataclass
class _RunState:
    variables: dict[str, Any]
    data_dir: Path
    pipeline_uuid: str
    partition: str
    extra: dict[str, Any] = field(default_factory=dict)
    block_uuid: str | None = None
    block_run_id: int | None = None
    block_claimed: bool = False
    previous: Any = NOTHING
    #: The upstream output each block was entered with, so a retry gets the same input.
    entered_with: dict[str, Any] = field(default_factory=dict)


@dataclass
class _InteractiveState:
    variables: dict[str, Any] = field(default_factory=dict)
    previous: Any = NOTHING


_run: _RunState | None = None
_interactive = _InteractiveState()

_REQUIRED_CONTEXT = ("variables", "data_dir", "pipeline_uuid", "partition")


# --------------------------------------------------------------------------------------------
# Run context (driven by the runner through the kernel)
# --------------------------------------------------------------------------------------------


def activate_run(context: Mapping[str, Any]) -> None:
    """Switch the decorators to run mode for one pipeline run.

    ``context`` holds ``variables`` (a dict of already typed values — datetimes are datetimes),
    ``data_dir`` (the project's data dir), ``pipeline_uuid`` and ``partition`` (the execution
    partition); optional ``block_uuid``/``block_run_id``; other keys (e.g. ``pipeline_run_id``)
    are kept and readable through :func:`current_run`. The run's chain of outputs starts empty.
    """
    global _run
    if not isinstance(context, Mapping):
        raise ValidationError(
            "context",
            context,
            f"the run context must be a dict, not {type(context).__name__}",
            "Pass e.g. {'variables': {...}, 'data_dir': ..., 'pipeline_uuid': ..., "
            "'partition': ...}.",
        )
    missing = [key for key in _REQUIRED_CONTEXT if context.get(key) is None]
    if missing:
        raise ValidationError(
            "context",
            sorted(context),
            f"the run context lacks {', '.join(missing)}",
            f"Pass all of {', '.join(_REQUIRED_CONTEXT)} to activate_run().",
        )
    variables = context["variables"]
    if not isinstance(variables, Mapping):
        raise ValidationError(
            "context.variables",
            variables,
            "the run's variables must be a dict",
            "Pass the typed variables, e.g. the injected cell's mage_nb_sched_variables.",
        )
    extra = {key: value for key, value in context.items() if key not in _REQUIRED_CONTEXT}
    block_uuid = extra.pop("block_uuid", None)
    block_run_id = extra.pop("block_run_id", None)
    _run = _RunState(
        variables=dict(variables),
        data_dir=Path(context["data_dir"]),
        pipeline_uuid=str(context["pipeline_uuid"]),
        partition=str(context["partition"]),
        extra=extra,
    )
    if block_uuid is not None:
        enter_block(str(block_uuid), block_run_id)


def deactivate_run() -> None:
    """Leave run mode: decorators go back to interactive behaviour (its state is untouched)."""
    global _run
    _run = None


def enter_block(block_uuid: str, block_run_id: int | None = None) -> None:
    """Tell the run which block the next cell is (the runner calls this before each block).

    The first decorated function the cell defines saves its output under ``block_uuid``; any
    further decorated function in the same cell saves under its own name.
    """
    if _run is None:
        raise ValidationError(
            "block_uuid",
            block_uuid,
            "no pipeline run is active in this kernel",
            "Call mage_nb_sched.execution.blocks.activate_run(context) before enter_block().",
        )
    if block_uuid in _run.entered_with:
        # A retry: the failed attempt may already have replaced the upstream output.
        _run.previous = _run.entered_with[block_uuid]
    else:
        _run.entered_with[block_uuid] = _run.previous
    _run.block_uuid = block_uuid
    _run.block_run_id = block_run_id
    _run.block_claimed = False


def current_run() -> dict[str, Any] | None:
    """The active run's context (a copy), or ``None`` in interactive mode."""
    if _run is None:
        return None
    return {
        **_run.extra,
        "variables": dict(_run.variables),
        "data_dir": _run.data_dir,
        "pipeline_uuid": _run.pipeline_uuid,
        "partition": _run.partition,
        "block_uuid": _run.block_uuid,
        "block_run_id": _run.block_run_id,
    }


def previous_output() -> Any:
    """The last decorated block's return value (of the active run, else of this session);
    :data:`NOTHING` when no decorated block has run yet."""
    return _run.previous if _run is not None else _interactive.previous


# --------------------------------------------------------------------------------------------
# Interactive state
# --------------------------------------------------------------------------------------------


def set_interactive_variables(**variables: Any) -> None:
    """Variables for decorated cells run by hand; they override the interactive built-ins.

    ``set_interactive_variables(env='dev', execution_date=datetime(2024, 1, 15, tzinfo=UTC))``
    makes the next interactive block see those values. Calls accumulate.
    """
    _interactive.variables.update(variables)


def reset_interactive_state() -> None:
    """Forget the interactive variables and the session's last block output."""
    _interactive.variables.clear()
    _interactive.previous = NOTHING


def interactive_variables() -> dict[str, Any]:
    """The keyword arguments an interactively run block gets now (built-ins + user-set)."""
    from mage_nb_sched.core.clock import utcnow
    from mage_nb_sched.execution.variables import interactive_builtin_variables

    return {**interactive_builtin_variables(utcnow()), **_interactive.variables}


# --------------------------------------------------------------------------------------------
# Calling a block
# --------------------------------------------------------------------------------------------


def _arguments(
    function: Callable[..., Any], previous: Any, variables: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Mage's calling convention adapted to ``function``'s signature."""
    args: tuple[Any, ...] = () if previous is NOTHING else (previous,)
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):  # no signature (some builtins): pass everything
        return args, variables
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if not positional:
        args = ()
    filled = (
        {positional[0].name}
        if args and positional[0].kind != positional[0].VAR_POSITIONAL
        else set()
    )
    if any(p.kind == p.VAR_KEYWORD for p in parameters):
        kwargs = {key: value for key, value in variables.items() if key not in filled}
    else:
        named = {
            p.name
            for p in parameters
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in filled
        }
        kwargs = {key: value for key, value in variables.items() if key in named}
    return args, kwargs


def _resolve(result: Any) -> Any:
    """Await a coroutine returned by an ``async def`` block."""
    if not inspect.isawaitable(result):
        return result

    async def wait() -> Any:
        return await result

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    # A loop is running (ipykernel): run the coroutine to completion on a helper thread.
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(wait())
        except BaseException as err:  # re-raised in the calling thread
            box["error"] = err

    thread = threading.Thread(target=target, name="mage-nb-sched-async-block")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def call_block(function: Callable[..., Any], previous: Any, variables: dict[str, Any]) -> Any:
    """Call a block function the Mage way (see the module docstring) and return its result."""
    args, kwargs = _arguments(function, previous, variables)
    return _resolve(function(*args, **kwargs))


def _run_block(function: Callable[..., Any], state: _RunState) -> None:
    from mage_nb_sched.execution.variables import output_dir, save_output

    if state.block_uuid is not None and not state.block_claimed:
        block_uuid = state.block_uuid
        state.block_claimed = True
    else:
        block_uuid = function.__name__
    variables = {
        **state.variables,
        "block_uuid": block_uuid,
        "block_run_id": state.block_run_id,
    }
    directory = output_dir(state.data_dir, state.pipeline_uuid, state.partition, block_uuid)
    result = call_block(function, state.previous, variables)
    save_output(result, directory)
    state.previous = result


def _display(value: Any) -> None:
    if value is None or "IPython" not in sys.modules:
        return
    from IPython import display as ipython_display
    from IPython.core import getipython

    # Any-typed: IPython's annotations differ between major versions.
    get_ipython: Any = getipython.get_ipython
    display: Any = ipython_display.display
    if get_ipython() is not None:
        display(value)


def _run_interactively(function: Callable[..., Any]) -> None:
    variables = {
        **interactive_variables(),
        "block_uuid": function.__name__,
        "block_run_id": None,
    }
    result = call_block(function, _interactive.previous, variables)
    _interactive.previous = result
    _display(result)


def _decorator(kind: str) -> Callable[[F], F]:
    def decorate(function: F) -> F:
        REGISTRY.append(BlockFunction(kind, function.__name__, function))
        function.__mage_block_kind__ = kind  # type: ignore[attr-defined]
        if _run is not None:
            _run_block(function, _run)
        else:
            _run_interactively(function)
        return function

    decorate.__name__ = kind
    decorate.__qualname__ = kind
    decorate.__doc__ = (
        f"Mark a function as a {kind.replace('_', ' ')} block and run it now: in a pipeline run "
        "with the previous block's output and the run's variables (its result is saved), "
        "interactively with the session's last output and interactive variables (its result "
        "is displayed). Returns the function unchanged."
    )
    return decorate


data_loader = _decorator("data_loader")
transformer = _decorator("transformer")
data_exporter = _decorator("data_exporter")
custom = _decorator("custom")
