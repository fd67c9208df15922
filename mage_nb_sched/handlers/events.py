"""Placeholder until this resource is built (issue 10)."""

from typing import Any

ROUTES: list[tuple[str, type[Any]]] = []
