"""Normalising user-supplied instants and time zones (pure; no clock reads).

All instants are kept as UTC-aware datetimes. Naive input means UTC. ``pytz``, ``zoneinfo`` and
``datetime.timezone`` tzinfos are all converted correctly, including the classic pytz pitfall of
``datetime(..., tzinfo=pytz.timezone('Europe/Berlin'))`` (pytz gives that a local-mean-time
offset):
such a value is read as wall time in that zone.

Instants a user gives (``start_time``, backfill ``start_datetime``/``end_datetime``, run
``execution_date`` ...) must lie in :data:`MIN_DATETIME` .. :data:`MAX_DATETIME`, i.e. the years
1970-2999 (UTC); see :func:`coerce_bounded_datetime`. With every duration capped at one year and
a backfill step at 1,000 years, ``instant ± duration`` then always stays far inside
``datetime.min`` .. ``datetime.max`` (years 1-9999), so scheduler arithmetic cannot overflow.
The lower end is the Unix epoch: nothing is scheduled before it, and POSIX timestamps (which
cron maths and some platforms' ``datetime.timestamp()`` rely on) stay non-negative. Datetimes
the package derives itself (such as the last interval end of a backfill ending in 2999) may lie
past the range; :func:`coerce_datetime` accepts those.
"""

from __future__ import annotations

from datetime import date, datetime, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mage_nb_sched.core.errors import ValidationError

UTC = timezone.utc

#: Earliest instant accepted from a user (the Unix epoch).
MIN_DATETIME = datetime(1970, 1, 1, tzinfo=UTC)
#: Latest instant accepted from a user (the last microsecond of 2999, UTC).
MAX_DATETIME = datetime(2999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
#: How the range reads in messages and docs.
DATETIME_RANGE_TEXT = "1970-01-01T00:00:00+00:00 to 2999-12-31T23:59:59.999999+00:00 (UTC)"


@lru_cache(maxsize=512)
def load_zone(name: str, field: str = "settings.timezone") -> tzinfo:
    """Return the tzinfo for an IANA zone name; ``UTC`` gives :data:`datetime.timezone.utc`."""
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(
            field, name, "a time zone must be a non-empty IANA name", "Use e.g. 'Europe/Berlin'."
        )
    if name.upper() in ("UTC", "Z", "ETC/UTC", "GMT"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as err:
        raise ValidationError(
            field,
            name,
            "unknown time zone",
            "Use an IANA name such as 'UTC', 'America/New_York' or 'Europe/Berlin'.",
        ) from err


def _pytz_zone_name(tz: tzinfo) -> str | None:
    """The zone name of a pytz zone attached with ``tzinfo=`` instead of ``localize``."""
    zone = getattr(tz, "zone", None)
    if zone is None or not hasattr(tz, "localize"):
        return None
    try:
        import pytz
    except ImportError:  # pragma: no cover - pytz objects cannot exist without pytz
        return None
    # pytz caches one object per zone; the un-localized default is that exact object.
    if zone != "UTC" and pytz.timezone(zone) is tz:
        return str(zone)
    return None


def to_utc(value: datetime) -> datetime:
    """Convert any datetime to a UTC-aware datetime (naive means UTC)."""
    tz = value.tzinfo
    if tz is None:
        return value.replace(tzinfo=UTC)
    if tz is UTC:
        return value
    name = _pytz_zone_name(tz)
    if name is not None:
        value = value.replace(tzinfo=ZoneInfo(name))
    return value.astimezone(UTC)


def _out_of_range(field: str, value: object) -> ValidationError:
    return ValidationError(
        field,
        value,
        f"outside the supported range {DATETIME_RANGE_TEXT}",
        "Give a date-time in the years 1970-2999, e.g. '2024-01-01T09:00:00+00:00'.",
    )


def coerce_datetime(value: object, field: str) -> datetime:
    """Accept a datetime, a date (midnight UTC) or an ISO-8601 string; return UTC-aware.

    Any instant Python can represent in UTC is accepted (no range check; see
    :func:`coerce_bounded_datetime` for user input)."""
    try:
        return _coerce(value, field)
    except OverflowError as err:  # e.g. 9999-12-31T23:00-05:00 has no UTC datetime
        raise _out_of_range(field, value) from err


def coerce_bounded_datetime(value: object, field: str) -> datetime:
    """:func:`coerce_datetime`, refusing instants outside :data:`MIN_DATETIME` ..
    :data:`MAX_DATETIME` with a :class:`ValidationError` naming ``field``."""
    result = coerce_datetime(value, field)
    if not MIN_DATETIME <= result <= MAX_DATETIME:
        raise _out_of_range(field, value)
    return result


def check_datetime_range(value: datetime, field: str) -> datetime:
    """``value`` (UTC-aware) unchanged, or a :class:`ValidationError` if it is outside the
    supported range."""
    if not MIN_DATETIME <= value <= MAX_DATETIME:
        raise _out_of_range(field, value)
    return value


def _coerce(value: object, field: str) -> datetime:
    if isinstance(value, datetime):
        return to_utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            return to_utc(datetime.fromisoformat(text))
        except ValueError as err:
            raise ValidationError(
                field,
                value,
                "not an ISO-8601 date-time",
                "Give a datetime or a string like '2024-01-01T09:00:00+00:00'.",
            ) from err
    raise ValidationError(
        field,
        value,
        f"expected a datetime, got {type(value).__name__}",
        "Give a datetime (e.g. datetime(2024, 1, 1, 9, tzinfo=timezone.utc)) or an ISO string.",
    )
