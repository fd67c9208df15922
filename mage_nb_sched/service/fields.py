"""Field validators for schedules and runs. Each returns the normalised value or raises a
:class:`~mage_nb_sched.core.errors.ValidationError` naming the field, the value and a valid
example.

Bounds (DESIGN §7: every value is bounded, so no stored row can make a scheduler step raise):

* ``name``, ``pipeline_uuid``: at most :data:`MAX_NAME_LENGTH` (255, the column width)
  characters, no control characters (NUL, newline, tab, DEL, C1 ...), no lone surrogates, no
  line/paragraph separators.
* ``description``: at most :data:`MAX_DESCRIPTION_LENGTH` characters; newline, carriage return,
  tab and the Unicode line/paragraph separators are allowed, other control characters are not.
* ``sla`` (and every duration): 0 .. :data:`~mage_nb_sched.core.settings.MAX_DURATION_SECONDS`
  (one year).
* Backfill ``interval_units``: 1 .. :data:`MAX_INTERVAL_UNITS`.
* Datetimes: the years 1970-2999 (:mod:`mage_nb_sched.core.datetimes`).
* Integers inside ``variables``: magnitude below ``2 ** 1024`` (:data:`MAX_JSON_INT_BITS`).
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from mage_nb_sched.core.datetimes import coerce_bounded_datetime
from mage_nb_sched.core.enums import ScheduleStatus, ScheduleType
from mage_nb_sched.core.errors import ValidationError
from mage_nb_sched.core.project import normalize_pipeline_uuid
from mage_nb_sched.core.settings import MAX_DURATION_SECONDS
from mage_nb_sched.core.timing import validate_interval

#: Longest ``name`` / ``pipeline_uuid``: the width of their columns.
MAX_NAME_LENGTH = 255
#: Longest ``description`` (a TEXT column; the cap keeps rows, listings and logs small).
MAX_DESCRIPTION_LENGTH = 10_000
#: Largest backfill step count. With the largest step (a year) one step is at most 1,000 years,
#: so the range's end (at most 2999-12-31) plus one step stays far below ``datetime.max``.
MAX_INTERVAL_UNITS = 1_000
#: Integers in ``variables`` must be below ``2 ** MAX_JSON_INT_BITS`` in magnitude: beyond it a
#: JSON reader that uses doubles gets infinity, and Python's int/str conversion limit (4,300
#: digits) can make writing them fail with a bare ValueError.
MAX_JSON_INT_BITS = 1024

#: Line breaks and tabs a description may contain although they are control characters.
_DESCRIPTION_WHITESPACE = frozenset("\n\r\t\u2028\u2029")
#: Unicode categories refused in names: control, lone surrogate, line and paragraph separator.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def _bad_character(text: str, allowed: frozenset[str] = frozenset()) -> tuple[int, str] | None:
    """Position and character of the first control character in ``text`` not in ``allowed``."""
    for position, char in enumerate(text):
        if char not in allowed and unicodedata.category(char) in _REFUSED_CATEGORIES:
            return position, char
    return None


def check_text(
    value: str,
    field: str,
    *,
    maximum_length: int,
    allowed: frozenset[str] = frozenset(),
    fix: str,
) -> str:
    """``value`` unchanged, or a :class:`ValidationError` if it is longer than
    ``maximum_length`` or holds a control character not in ``allowed``."""
    if len(value) > maximum_length:
        raise ValidationError(
            field,
            value,
            f"{len(value):,} characters, more than the maximum of {maximum_length:,}",
            f"Use at most {maximum_length:,} characters. {fix}",
        )
    bad = _bad_character(value, allowed)
    if bad is not None:
        position, char = bad
        what = (
            "such as NUL or escape codes (newlines and tabs are fine)"
            if allowed
            else "such as NUL, newlines, tabs or escape codes"
        )
        raise ValidationError(
            field,
            value,
            f"contains the control character {char!r} at position {position}",
            f"Remove control characters {what}. {fix}",
        )
    return value


def name(value: Any, field: str = "name") -> str:
    """A non-empty name of at most 255 characters without control characters (stripped)."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(
            field, value, "a name must be a non-empty string", "Use e.g. name='daily_sales_report'."
        )
    return check_text(
        value.strip(), field, maximum_length=MAX_NAME_LENGTH, fix=f"Use e.g. {field}='daily_sales'."
    )


def pipeline_uuid(value: Any, field: str = "pipeline_uuid") -> str:
    """A pipeline uuid's form (:func:`~mage_nb_sched.core.project.normalize_pipeline_uuid`),
    at most 255 characters and without control characters. Whether the notebook exists is
    not checked here."""
    uuid = normalize_pipeline_uuid(value, field)
    return check_text(
        uuid,
        field,
        maximum_length=MAX_NAME_LENGTH,
        fix="Use the notebook path relative to the project dir without .ipynb, e.g. 'etl/daily'.",
    )


def optional_text(value: Any, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValidationError(field, value, "expected a string", f"Use e.g. {field}='...'.")


def description(value: Any, field: str = "description") -> str | None:
    """``None`` or text of at most 10,000 characters; newlines and tabs allowed, other control
    characters not."""
    text = optional_text(value, field)
    if text is None:
        return None
    return check_text(
        text,
        field,
        maximum_length=MAX_DESCRIPTION_LENGTH,
        allowed=_DESCRIPTION_WHITESPACE,
        fix=f"Use e.g. {field}='Loads the daily orders.'.",
    )


def enum_value(value: Any, enum_class: Any, field: str) -> Any:
    try:
        return enum_class(getattr(value, "value", value))
    except ValueError as err:
        options = ", ".join(enum_class.values())
        raise ValidationError(
            field,
            value,
            f"must be one of {options}",
            f"Use e.g. {field}='{enum_class.values()[0]}'.",
        ) from err


def schedule_type(value: Any) -> ScheduleType:
    result: ScheduleType = enum_value(value, ScheduleType, "schedule_type")
    return result


def status(value: Any) -> ScheduleStatus:
    result: ScheduleStatus = enum_value(value, ScheduleStatus, "status")
    return result


def interval(value: Any) -> str | None:
    if value is None:
        return None
    return validate_interval(value)


def optional_datetime(value: Any, field: str) -> Any:
    """``None``, or a UTC-aware datetime in the years 1970-2999."""
    return None if value is None else coerce_bounded_datetime(value, field)


def seconds(value: Any, field: str, maximum: int = MAX_DURATION_SECONDS) -> int | None:
    """``None`` or a whole number of seconds in 0 .. ``maximum`` (default one year; ``sla``).
    A float with no fraction (``3600.0``) is accepted as its int."""
    if value is None:
        return None
    limit = f"{maximum:,}" + (" (one year)" if maximum == MAX_DURATION_SECONDS else "")
    fix = f"Use a whole number of seconds from 0 to {limit}, e.g. {field}=3600."
    if isinstance(value, bool):
        raise ValidationError(field, value, "expected a whole number of seconds, not a bool", fix)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(field, value, "NaN and infinity are not allowed", fix)
        if not value.is_integer():
            raise ValidationError(field, value, "expected a whole number of seconds", fix)
        value = int(value)
    if not isinstance(value, int):
        raise ValidationError(field, value, "expected a whole number of seconds >= 0", fix)
    if value < 0:
        raise ValidationError(field, value, "expected a whole number of seconds >= 0", fix)
    if value > maximum:
        raise ValidationError(field, value, f"above the maximum of {maximum:,} seconds", fix)
    return int(value)


def interval_units(value: Any, field: str = "interval_units") -> int:
    """A backfill's step count: a whole number in 1 .. :data:`MAX_INTERVAL_UNITS`."""
    fix = (
        f"Use a whole number from 1 to {MAX_INTERVAL_UNITS:,}, e.g. interval_units=1 for every "
        "day; for longer steps use a larger interval_type (e.g. interval_type='week')."
    )
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(field, value, "the step must be a whole number of at least 1", fix)
    if value > MAX_INTERVAL_UNITS:
        raise ValidationError(
            field, value, f"above the maximum of {MAX_INTERVAL_UNITS:,} steps", fix
        )
    return int(value)


def _check_json(value: Any, path: str) -> None:
    if value is None or isinstance(value, (str, bool)):
        return
    if isinstance(value, int):
        if value.bit_length() > MAX_JSON_INT_BITS:
            raise ValidationError(
                path,
                # repr() of a huge int can itself fail (int/str conversion limit).
                f"<an integer of {value.bit_length():,} bits>",
                f"integers must be smaller than 2**{MAX_JSON_INT_BITS} in magnitude",
                "Use a smaller number, or pass it as a string.",
            )
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(path, value, "NaN/Infinity are not JSON", "Use a finite number.")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(
                    path, value, f"key {key!r} is not a string", "Use string keys."
                )
            _check_json(item, f"{path}.{key}")
        return
    raise ValidationError(
        path,
        value,
        f"{type(value).__name__} is not JSON-serialisable",
        "Use strings, numbers, booleans, None, lists and dicts "
        "(e.g. a date as '2024-01-15' via .isoformat()).",
    )


def variables(value: Any, field: str = "variables") -> dict[str, Any] | None:
    """A JSON-serialisable dict with string keys (or None)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError(
            field, value, "expected a dict", f"Use e.g. {field}={{'env': 'production'}}."
        )
    _check_json(value, field)
    # A JSON round trip gives plain dicts/lists (tuples become lists), as the database will.
    result: dict[str, Any] = json.loads(json.dumps(dict(value)))
    return result


def unknown_fields(given: Mapping[str, Any], allowed: set[str], what: str) -> None:
    for key in given:
        if key not in allowed:
            raise ValidationError(
                key,
                given[key],
                f"unknown {what} field",
                f"Valid fields are: {', '.join(sorted(allowed))}.",
            )


def _settings(value: Any) -> dict[str, Any]:
    from mage_nb_sched.core.settings import validate_settings

    return validate_settings(value)


#: Schedule fields whose check needs nothing but the value. The model validates these on every
#: assignment too (``schedule.settings = {...}``), so a value set directly is as safe as one
#: passed to ``update``.
SCHEDULE_VALUE_CHECKS: dict[str, Callable[[Any], Any]] = {
    "name": name,
    "description": description,
    "schedule_type": schedule_type,
    "schedule_interval": interval,
    "start_time": lambda value: optional_datetime(value, "start_time"),
    "last_enabled_at": lambda value: optional_datetime(value, "last_enabled_at"),
    "status": status,
    "variables": variables,
    "sla": lambda value: seconds(value, "sla"),
    "settings": _settings,
}
