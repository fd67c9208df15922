"""Mage's block decorators: ``@data_loader``, ``@transformer``, ``@data_exporter``, ``@custom``.

A decorated function becomes the block of its cell; its name is the block uuid. The decorator
records the function (kind and name) and returns it unchanged, so it stays an ordinary function in
the notebook. The pipeline runner (execution issue) calls it with the previous block's output and
the run's variables as keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class BlockFunction:
    """A function registered by one of the decorators."""

    kind: str
    name: str
    function: Callable[..., Any]


#: Functions decorated in this interpreter, newest last (the runner reads the cell's entry).
REGISTRY: list[BlockFunction] = []


def _decorator(kind: str) -> Callable[[F], F]:
    def decorate(function: F) -> F:
        REGISTRY.append(BlockFunction(kind, function.__name__, function))
        function.__mage_block_kind__ = kind  # type: ignore[attr-defined]
        return function

    decorate.__name__ = kind
    decorate.__doc__ = f"Mark a function as a {kind.replace('_', ' ')} block."
    return decorate


data_loader = _decorator("data_loader")
transformer = _decorator("transformer")
data_exporter = _decorator("data_exporter")
custom = _decorator("custom")
