"""What every REST handler shares: the store, JSON bodies in Mage's envelopes, query arguments,
answers (201 + Location, 204) and the one place exceptions become JSON errors.

Errors are always ``{"error": {"type", "message", "field", "fix"}}`` with the status the
exception tree says (:attr:`MageNbSchedError.http_status`): a handler raises the project's
exceptions (or tornado's ``HTTPError``) and :meth:`MageApiHandler.write_error` translates them.

Nothing here imports the service or the store at module level: the server imports the handlers
while it starts, and SQLAlchemy and the service cost ~0.3 s. Handlers import the service inside
their methods (cheap after the first time).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from mage_nb_sched.core.errors import (
    ConflictError,
    ForbiddenError,
    MageNbSchedError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    StoreError,
    ValidationError,
)
from mage_nb_sched.core.run_states import InvalidTransition

if TYPE_CHECKING:
    from mage_nb_sched.store.engine import Store

#: Every route lives under ``{base_url}`` + this prefix.
API_PREFIX = "mage/api"
#: Largest request body accepted (DESIGN §7); larger → 413.
MAX_BODY_BYTES = 1024 * 1024
#: Deepest nesting of lists and objects accepted in a body (variables are data, not trees
#: thousands of levels deep; Python's own limits would turn those into 500s).
MAX_BODY_DEPTH = 64
#: Largest page a list answers with, and the default page size.
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
#: Largest id accepted in a path or a query (SQLite's and PostgreSQL's BIGINT maximum).
MAX_ID = 2**63 - 1

#: The ``auth_resource`` of every management handler starts with this (DESIGN §7).
AUTH_RESOURCE = "mage_nb_sched"

#: Error ``type`` of each exception class; the most specific class that matches wins.
_ERROR_TYPES: tuple[tuple[type[BaseException], str], ...] = (
    (ConflictError, "conflict"),
    (InvalidTransition, "invalid_transition"),
    (ValidationError, "validation_error"),
    (NotFoundError, "not_found"),
    (ForbiddenError, "forbidden"),
    (PayloadTooLargeError, "payload_too_large"),
    (RateLimitError, "rate_limited"),
    (StoreError, "store_unavailable"),
    (MageNbSchedError, "error"),
)
#: Error ``type`` for tornado's own errors (unknown method, bad host, not logged in...).
_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    429: "rate_limited",
    503: "store_unavailable",
}


def api_route(*parts: str) -> str:
    """The route pattern of ``mage/api/<parts>`` (joined by ``/``; parts may be regex groups),
    without the server's ``base_url`` (the extension adds it)."""
    return url_path_join(API_PREFIX, *parts)


def error_body(error: BaseException, status: int) -> dict[str, Any]:
    """The JSON error for ``error`` (see the module docstring). ``field`` and ``fix`` are
    ``None`` when the error has none."""
    field = getattr(error, "field", None)
    fix = getattr(error, "fix", None)
    if isinstance(error, web.HTTPError):
        kind = _HTTP_TYPES.get(error.status_code, "error")
        message = error.log_message or error.reason or f"HTTP {error.status_code}"
        if error.args and error.log_message:
            with contextlib.suppress(TypeError, ValueError):
                message = error.log_message % error.args
    elif isinstance(error, MageNbSchedError):
        kind = next(name for cls, name in _ERROR_TYPES if isinstance(error, cls))
        message = str(error)
    else:
        kind = "internal_error"
        message = "An unexpected error occurred; the server log has the details."
    if fix is None and isinstance(error, InvalidTransition):
        fix = getattr(error, "fix", None)
    return {"error": {"type": kind, "message": message, "field": field, "fix": fix}}


def status_of(error: BaseException) -> int:
    """The HTTP status an exception answers with."""
    if isinstance(error, web.HTTPError):
        return error.status_code
    if isinstance(error, MageNbSchedError):
        return error.http_status
    return 500


class MageApiHandler(APIHandler):
    """Base of every ``mage/api`` handler. Management handlers decorate their methods with
    ``@web.authenticated`` and ``@authorized`` (``auth_resource`` below; GET is *read*, other
    methods *write*, as jupyter_server maps them)."""

    auth_resource = AUTH_RESOURCE

    # -- the store -------------------------------------------------------------------------

    async def store(self) -> Store:
        """The extension's store, waiting for it to open if the server has just started.
        A store that could not be opened is a :class:`StoreError` (503)."""
        app = self.settings.get("mage_nb_sched_app")
        if app is None:
            raise StoreError(
                "The mage_nb_sched server extension is not running in this server. Enable it: "
                "jupyter server extension enable mage_nb_sched"
            )
        await app.wait_started()
        store = app.store
        if store is None:
            raise StoreError(
                "The schedule store could not be opened; the server log says why (look for "
                "'mage_nb_sched: could not open the schedule store'). Fix it and restart."
            )
        return store  # type: ignore[no-any-return]

    @property
    def scheduler(self) -> Any:
        """The scheduler running in this server, or ``None`` (disabled, headless elsewhere)."""
        return self.settings.get("mage_nb_sched_scheduler")

    # -- requests --------------------------------------------------------------------------

    async def prepare(self) -> None:  # type: ignore[override]
        # Before auth: a body too large is refused whatever the credentials.
        if len(self.request.body or b"") > MAX_BODY_BYTES:
            raise PayloadTooLargeError(
                f"The request body is {len(self.request.body)} bytes; at most "
                f"{MAX_BODY_BYTES} bytes (1 MiB) are accepted. Send less per call (e.g. split "
                "a list of events)."
            )
        await super().prepare()

    def json_body(self) -> Any:
        """The request body parsed as JSON (``{}`` when empty); malformed JSON is a 400 that
        says where."""
        raw = self.request.body or b""
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except UnicodeDecodeError as err:
            raise ValidationError(
                "body", "<bytes>", f"the body is not UTF-8 ({err.reason})", "Send UTF-8 JSON."
            ) from None
        except json.JSONDecodeError as err:
            raise ValidationError(
                "body",
                raw[:40].decode("utf-8", "replace"),
                f"the body is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})",
                'Send a JSON object, e.g. {"pipeline_schedule": {"name": "daily"}}.',
            ) from None
        except RecursionError:
            # [[[[...]]]] thousands deep: the parser's recursion limit, not a server fault.
            raise _too_deep() from None
        if body_depth(body) > MAX_BODY_DEPTH:
            # Deep but parsable bodies would hit the limit later (JSON columns, answers).
            raise _too_deep()
        return body

    def envelope(self, key: str, *, required: bool = True) -> dict[str, Any]:
        """The object under ``key`` of a Mage-style body (``{"pipeline_schedule": {...}}``).
        Missing and not required → ``{}``."""
        body = self.json_body()
        if not isinstance(body, dict):
            raise ValidationError(
                "body",
                type(body).__name__,
                "the body must be a JSON object",
                f'Send {{"{key}": {{...}}}}.',
            )
        if key not in body:
            if required:
                raise ValidationError(
                    key,
                    None,
                    f'the body has no "{key}" object (Mage\'s request envelope)',
                    f'Send {{"{key}": {{...the fields...}}}}.',
                )
            return {}
        value = body[key]
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            raise ValidationError(
                key, value, "must be a JSON object", f'Send {{"{key}": {{...the fields...}}}}.'
            )
        return value

    def str_arg(self, name: str, *, choices: Mapping[str, Any] | None = None) -> str | None:
        """A query argument as text, or ``None`` when absent."""
        value = self.get_query_argument(name, None)
        if value is None or value == "":
            return None
        if choices is not None and value not in choices:
            raise ValidationError(
                name, value, "is not one of the accepted values", f"Use one of {sorted(choices)}."
            )
        return value

    def int_arg(
        self, name: str, default: int | None = None, *, minimum: int = 0, maximum: int = MAX_ID
    ) -> int | None:
        """A query argument as a bounded integer (a 400 naming it when it is not one)."""
        value = self.get_query_argument(name, None)
        if value is None or value == "":
            return default
        return parse_int(value, name, minimum=minimum, maximum=maximum)

    def bool_arg(self, name: str, default: bool | None = None) -> bool | None:
        """A query argument as a boolean (``true``/``false``/``1``/``0``)."""
        value = self.get_query_argument(name, None)
        if value is None or value == "":
            return default
        lowered = value.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValidationError(name, value, "is not a boolean", f"Use {name}=true or {name}=false.")

    def page(self) -> tuple[int, int | None]:
        """``(limit, cursor)`` from the ``limit`` and ``cursor`` query arguments. A cursor is
        the ``metadata.next`` of the previous page."""
        limit = self.int_arg("limit", DEFAULT_PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE)
        cursor = self.int_arg("cursor", None, minimum=1)
        assert limit is not None
        return limit, cursor

    # -- answers ---------------------------------------------------------------------------

    def write_json(self, data: Any, status: int = 200) -> None:
        """Answer ``data`` as JSON."""
        self.set_status(status)
        self.finish(json.dumps(data, default=str, allow_nan=False))

    def write_list(
        self, key: str, items: list[dict[str, Any]], *, count: int, next_cursor: int | None
    ) -> None:
        """Answer a list in Mage's envelope: ``{key: [...], "metadata": {"count", "next"}}``.
        ``count`` is the number of items matching the filters (all pages); ``next`` the
        cursor of the next page or ``None`` on the last one."""
        self.write_json({key: items, "metadata": {"count": count, "next": next_cursor}})

    def write_created(self, location: str, data: Any) -> None:
        """201 with ``Location: {base_url}mage/api/<location>``."""
        self.set_header("Location", url_path_join(self.base_url, API_PREFIX, location))
        self.write_json(data, status=201)

    def write_no_content(self) -> None:
        """204, no body."""
        self.set_status(204)
        self.finish()

    # -- errors ----------------------------------------------------------------------------

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error as ``{"error": {"type", "message", "field", "fix"}}``, the status from
        the exception (see :func:`status_of`)."""
        exc_info = kwargs.get("exc_info")
        error: BaseException = (
            exc_info[1] if exc_info and exc_info[1] is not None else web.HTTPError(status_code)
        )
        status = status_of(error) if exc_info else status_code
        self.set_status(status)
        if isinstance(error, RateLimitError):
            self.set_header("Retry-After", str(max(1, math.ceil(error.retry_after))))
        self.clear_header("Content-Type")
        self.finish(json.dumps(error_body(error, status)))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # The project's own errors are answers, not crashes: one line, no traceback (and the
        # messages never hold a token).
        if isinstance(value, MageNbSchedError):
            self.log.info(
                "mage_nb_sched API %s %s -> %s: %s",
                self.request.method,
                self.request.path,
                status_of(value),
                value,
            )
            return
        super().log_exception(typ, value, tb)


def _too_deep() -> ValidationError:
    return ValidationError(
        "body",
        "<nested JSON>",
        f"the body is nested more than {MAX_BODY_DEPTH} levels deep",
        "Send flatter values (e.g. a nested structure as a JSON string).",
    )


def body_depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (iterative: no recursion limit); stops
    counting past :data:`MAX_BODY_DEPTH`."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_BODY_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def parse_int(value: Any, field: str, *, minimum: int = 0, maximum: int = MAX_ID) -> int:
    """``value`` (text from a path or query, or JSON) as a bounded integer, else a 400 naming
    ``field``."""
    if isinstance(value, bool):
        parsed = None
    elif isinstance(value, int):
        parsed = value
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) < 25:
        parsed = int(value)
    else:
        parsed = None
    if parsed is None or not minimum <= parsed <= maximum:
        raise ValidationError(
            field,
            value,
            f"must be an integer from {minimum} to {maximum}",
            f"Give e.g. {field}={max(minimum, 1)}.",
        )
    return parsed


def path_id(value: str, field: str = "id") -> int:
    """An id from a URL path: a positive integer, else a 400 naming the field. (An id that
    is well-formed but unknown is the service's 404.)"""
    return parse_int(value, field, minimum=1)
