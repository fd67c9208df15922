"""One exception hierarchy for the whole package.

Every message says *what* went wrong, *why*, and *how to fix it*. Foreign errors (SQLAlchemy,
croniter, zoneinfo, YAML) are translated into these at the boundary where they occur, so callers —
magics, REST handlers, the CLI — only ever need to catch :class:`MageNbSchedError`.
"""

from __future__ import annotations

from typing import Any


class MageNbSchedError(Exception):
    """Base class of every error this package raises on purpose."""

    #: HTTP status a REST handler should answer with.
    http_status: int = 500


class ValidationError(MageNbSchedError, ValueError):
    """A value given by the user is not acceptable. Nothing was written.

    ``field`` names the offending field (dotted for nested settings, e.g. ``settings.timeout``),
    ``value`` is what was given and ``fix`` says what would be accepted, with an example.
    """

    http_status = 400

    def __init__(self, field: str, value: Any, problem: str, fix: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        self.fix = fix
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"{field}={shown}: {problem}. {fix}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description, used by REST error bodies."""
        return {
            "field": self.field,
            "value": repr(self.value),
            "problem": self.problem,
            "fix": self.fix,
            "message": str(self),
        }


class NotFoundError(MageNbSchedError, LookupError):
    """A schedule, run, backfill or notebook that was asked for does not exist."""

    http_status = 404


class ConflictError(ValidationError):
    """A well-formed value that clashes with what is stored (duplicate name, inactive schedule)."""

    http_status = 409


class StoreError(MageNbSchedError):
    """The database could not be opened, migrated or written."""

    http_status = 503


class ForbiddenError(MageNbSchedError):
    """A credential (an API-trigger token, an ingest token) is missing or wrong. The message
    never repeats the credential that was given."""

    http_status = 403


class PayloadTooLargeError(MageNbSchedError):
    """A request body is larger than the API accepts."""

    http_status = 413


class RateLimitError(MageNbSchedError):
    """Too many calls with one credential in a short time; ``retry_after`` says when (seconds)
    another call will be accepted."""

    http_status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(message)
