"""The REST API under ``{base_url}mage/api/`` (DESIGN §2, §7), in Mage's resource shapes.

One module per resource, each with a ``ROUTES`` list of ``(pattern, handler class)``; patterns
are relative to the server's ``base_url`` (the extension prefixes it). The OpenAPI document
that describes every route is assembled from ``openapi/*.yaml`` (see :mod:`.openapi`).
"""

from __future__ import annotations

import importlib
from typing import Any

#: The resource modules, in the order their routes are registered.
MODULES = (
    "schedules",
    "runs",
    "backfills",
    "pipelines",
    "status",
    "trigger",
    "events",
    "openapi",
)


def routes() -> list[tuple[str, type[Any]]]:
    """Every ``(pattern, handler)`` of the API."""
    result: list[tuple[str, type[Any]]] = []
    for name in MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        result.extend(module.ROUTES)
    return result
