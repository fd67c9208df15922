"""Field validators for schedules and runs. Each returns the normalised value or raises a
:class:`~mage_nb_sched.core.errors.ValidationError` naming the field, the value and a valid
example."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from mage_nb_sched.core.datetimes import coerce_datetime
from mage_nb_sched.core.enums import ScheduleStatus, ScheduleType
from mage_nb_sched.core.errors import ValidationError
from mage_nb_sched.core.timing import validate_interval


def name(value: Any, field: str = "name") -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(
            field, value, "a name must be a non-empty string", "Use e.g. name='daily_sales_report'."
        )
    if len(value) > 255:
        raise ValidationError(field, value, "longer than 255 characters", "Use a shorter name.")
    return value.strip()


def optional_text(value: Any, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValidationError(field, value, "expected a string", f"Use e.g. {field}='...'.")


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
    return None if value is None else coerce_datetime(value, field)


def seconds(value: Any, field: str) -> int | None:
    """A non-negative whole number of seconds (``sla``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        if isinstance(value, float) and value.is_integer() and value >= 0:
            return int(value)
        raise ValidationError(
            field, value, "expected a whole number of seconds >= 0", f"Use e.g. {field}=3600."
        )
    return value


def _check_json(value: Any, path: str) -> None:
    if value is None or isinstance(value, (str, bool, int)):
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
    "description": lambda value: optional_text(value, "description"),
    "schedule_type": schedule_type,
    "schedule_interval": interval,
    "start_time": lambda value: optional_datetime(value, "start_time"),
    "last_enabled_at": lambda value: optional_datetime(value, "last_enabled_at"),
    "status": status,
    "variables": variables,
    "sla": lambda value: seconds(value, "sla"),
    "settings": _settings,
}
