"""Pure schedule time maths: datetimes in, datetimes out. Nothing here reads the clock.

Semantics (DESIGN §4):

* A periodic interval (``@hourly``, ``@daily``, ``@weekly`` = Monday, ``@monthly`` = the 1st, or a
  5-field cron expression) defines *ticks* in the schedule's time zone. ``execution_date`` is the
  latest tick at or before ``now`` -- an instant exactly on a tick belongs to the period that starts
  there (for cron too, unlike Mage's cron path).
* Across DST, as ISC (Vixie) cron: a *time-specific* job -- minute and hour fields both fixed (no
  ``*`` in either; ``@daily``/``@weekly``/``@monthly``) -- runs a wall time skipped by
  spring-forward once, at the instant the gap ends, and a wall time repeated by fall-back once, at
  its first occurrence. Every other job (``*`` in the minute or hour field, ``@hourly``) follows the
  wall clock as it is: skipped wall times do not happen, repeated ones happen twice (once in each
  offset). Why: a time-specific job means "02:30 every day" and must run once a day; an
  every-15-minutes job means a steady cadence and must get neither a burst nor a hole.
* ``@once`` runs a single time, at ``start_time`` (or when activated); ``@always_on`` starts a new
  run as soon as the previous one has finished.

How the cron engine works: the UTC time line is cut into *segments* of constant UTC offset (the
zone's transitions, see :func:`_transitions_in_year`). Inside one segment wall time and UTC move
together, so a wall-clock search (:func:`_next_local` / :func:`_prev_local`) answers directly;
only when the answer would cross a transition does the search continue in the neighbouring segment,
applying the rule above at the transition.
"""

from __future__ import annotations

import bisect
import calendar
import math
import re
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import Any

from croniter import croniter

from mage_nb_sched.core.datetimes import UTC, load_zone, to_utc
from mage_nb_sched.core.enums import (
    BackfillIntervalType,
    PipelineRunStatus,
    ScheduleInterval,
    ScheduleStatus,
)
from mage_nb_sched.core.errors import ValidationError

#: The named periodic intervals expressed as cron.
NAMED_CRON = {
    ScheduleInterval.HOURLY.value: "0 * * * *",
    ScheduleInterval.DAILY.value: "0 0 * * *",
    ScheduleInterval.WEEKLY.value: "0 0 * * 1",
    ScheduleInterval.MONTHLY.value: "0 0 1 * *",
}
NON_PERIODIC = (ScheduleInterval.ONCE.value, ScheduleInterval.ALWAYS_ON.value)
LANDING_INTERVALS = tuple(NAMED_CRON)

_ONE_MINUTE = timedelta(minutes=1)
_ONE_US = timedelta(microseconds=1)
_ONE_DAY = timedelta(days=1)
# A cron expression with no tick in this many years never fires (Feb 30, ...).
_SEARCH_YEARS = 9

_INTERVAL_EXAMPLE = (
    "Use one of @once, @hourly, @daily, @weekly, @monthly, @always_on or a 5-field cron "
    "expression such as '30 2 * * *' (02:30 every day)."
)


# --------------------------------------------------------------------------------------------
# Cron expressions compiled to field sets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CronSpec:
    """A 5-field cron expression expanded into sorted field values (cron weekday 0 = Sunday)."""

    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    last_day: bool
    months: frozenset[int]
    weekdays: frozenset[int]
    nth_weekday: dict[int, frozenset[int]] = field(hash=False)
    days_restricted: bool
    weekdays_restricted: bool
    #: Minute and hour fields both fixed (no ``*``): DST gaps run at their end, repeats once.
    #: Otherwise the job follows the wall clock (gaps skipped, repeats run twice). Vixie cron's
    #: ``MIN_STAR``/``HR_STAR`` distinction.
    time_specific: bool = True

    def day_matches(self, year: int, month: int, day: int) -> bool:
        """Whether the calendar day matches (Vixie cron: restricted day AND weekday → either)."""
        day_ok = day in self.days or (self.last_day and day == calendar.monthrange(year, month)[1])
        if not self.weekdays_restricted:
            return day_ok if self.days_restricted else True
        cron_weekday = (calendar.weekday(year, month, day) + 1) % 7
        weekday_ok = cron_weekday in self.weekdays
        if weekday_ok and cron_weekday in self.nth_weekday:
            weekday_ok = (day - 1) // 7 + 1 in self.nth_weekday[cron_weekday]
        if self.days_restricted:
            return day_ok or weekday_ok
        return weekday_ok

    def first_time_from(self, hour: int, minute: int) -> tuple[int, int] | None:
        """The first (hour, minute) of a matching day at or after ``hour:minute``."""
        hours = self.hours
        index = bisect.bisect_left(hours, hour)
        if index < len(hours) and hours[index] == hour:
            m_index = bisect.bisect_left(self.minutes, minute)
            if m_index < len(self.minutes):
                return hour, self.minutes[m_index]
            index += 1
        if index < len(hours):
            return hours[index], self.minutes[0]
        return None

    def last_time_until(self, hour: int, minute: int) -> tuple[int, int] | None:
        """The last (hour, minute) of a matching day at or before ``hour:minute``."""
        hours = self.hours
        index = bisect.bisect_right(hours, hour) - 1
        if index >= 0 and hours[index] == hour:
            m_index = bisect.bisect_right(self.minutes, minute) - 1
            if m_index >= 0:
                return hour, self.minutes[m_index]
            index -= 1
        if index >= 0:
            return hours[index], self.minutes[-1]
        return None


_MONTH_NAMES = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_WEEKDAY_NAMES = {
    name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
}
#: Names allowed per field (minute, hour, day of month, month, weekday).
_FIELD_NAMES: tuple[dict[str, int], ...] = ({}, {}, {}, _MONTH_NAMES, _WEEKDAY_NAMES)
_RANGE_TERM = re.compile(r"^([0-9a-z]+)-([0-9a-z]+)(?:/([0-9]+))?$", re.IGNORECASE)


def _field_value(token: str, names: dict[str, int]) -> int | None:
    """A field token's number (month/weekday names resolved), or None if it is not plain.

    Weekday 7 stays 7 (not Sunday = 0) here: ``0-7`` is the whole week, not a one-value range.
    """
    if token.isdigit():
        return int(token)
    return names.get(token.lower())


def guard_one_value_ranges(text: str) -> str:
    """Rewrite each one-value range ``N-N`` / ``N-N/S`` of a 5-field cron expression to ``N``.

    croniter 7 expands a range whose two ends are equal to the whole field (``5-5 * * * *`` fires
    every minute, ``9 2-2 * 3 0`` hourly, ``5-5/2`` every even minute), which is not what the
    user wrote: in cron a range is its values, and ``N-N`` is just ``N`` (a step on it keeps ``N``).
    Terms of lists are rewritten one by one (``1-1,5-5`` -> ``1,5``). A step of 0 is left alone so
    croniter still rejects it; out-of-range values stay and are rejected the same way.
    """
    fields = text.split()
    if len(fields) != 5:
        return text
    guarded = []
    for index, value in enumerate(fields):
        terms = []
        for term in value.split(","):
            match = _RANGE_TERM.match(term)
            if match is not None:
                low, high, step = match.groups()
                start = _field_value(low, _FIELD_NAMES[index])
                if (
                    start is not None
                    and start == _field_value(high, _FIELD_NAMES[index])
                    and (step is None or int(step) > 0)
                ):
                    term = low
            terms.append(term)
        guarded.append(",".join(terms))
    return " ".join(guarded)


def _expand_field(values: Sequence[Any], full: range) -> tuple[int, ...]:
    if len(values) == 1 and values[0] == "*":
        return tuple(full)
    return tuple(sorted({int(v) for v in values}))


def is_time_specific(expression: str) -> bool:
    """Whether a cron job runs at specific wall times: no ``*`` in its minute or hour field.

    This is Vixie cron's test (``MIN_STAR``/``HR_STAR``) for the DST rule: ``30 2 * * *``,
    ``0 1,3 * * *``, ``0 2-4 * * *`` and ``@daily`` are time-specific; ``*/15 2 * * *``,
    ``20 * * * *`` and ``@hourly`` follow the wall clock.
    """
    fields = NAMED_CRON.get(expression, expression).split()
    return len(fields) >= 2 and "*" not in fields[0] and "*" not in fields[1]


@lru_cache(maxsize=4096)
def compile_cron(expression: str, field_name: str = "schedule_interval") -> CronSpec:
    """Validate a 5-field cron expression (or a named interval) and expand it."""
    text = NAMED_CRON.get(expression, expression)
    if not isinstance(text, str) or not text.strip():
        raise ValidationError(field_name, expression, "empty schedule interval", _INTERVAL_EXAMPLE)
    if text.strip().startswith("@"):
        raise ValidationError(field_name, expression, "unknown interval", _INTERVAL_EXAMPLE)
    if len(text.split()) != 5:
        raise ValidationError(
            field_name,
            expression,
            f"cron expressions need exactly 5 fields (minute hour day month weekday), "
            f"got {len(text.split())}",
            _INTERVAL_EXAMPLE,
        )
    try:
        expanded, nth = croniter.expand(guard_one_value_ranges(text))
    except Exception as err:  # croniter raises several unrelated types
        raise ValidationError(
            field_name, expression, f"invalid cron expression ({err})", _INTERVAL_EXAMPLE
        ) from err
    minutes, hours, days, months, weekdays = expanded
    try:
        nth_weekday = {int(k): frozenset(int(n) for n in v) for k, v in (nth or {}).items()}
    except (TypeError, ValueError) as err:
        raise ValidationError(
            field_name,
            expression,
            "this '#' weekday form is not supported",
            "Use 'DOW#N' with N from 1 to 5, e.g. '0 9 * * 1#1' (first Monday).",
        ) from err
    spec = CronSpec(
        expression=text,
        minutes=_expand_field(minutes, range(60)),
        hours=_expand_field(hours, range(24)),
        days=frozenset(int(d) for d in days if d not in ("*", "l", "L"))
        if days != ["*"]
        else frozenset(range(1, 32)),
        last_day=any(d in ("l", "L") for d in days),
        months=frozenset(_expand_field(months, range(1, 13))),
        weekdays=frozenset(int(w) % 7 for w in weekdays)
        if weekdays != ["*"]
        else frozenset(range(7)),
        nth_weekday=nth_weekday,
        days_restricted=days != ["*"],
        weekdays_restricted=weekdays != ["*"],
        time_specific=is_time_specific(text),
    )
    if _next_local(spec, datetime(2000, 1, 1)) is None:
        raise ValidationError(
            field_name, expression, "this cron expression never fires", _INTERVAL_EXAMPLE
        )
    return spec


def _days_in_month(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def _next_local(spec: CronSpec, after: datetime) -> datetime | None:
    """The first naive wall-clock tick strictly after ``after``."""
    start = after.replace(second=0, microsecond=0) + _ONE_MINUTE
    year, month, day, hour, minute = start.year, start.month, start.day, start.hour, start.minute
    limit_year = year + _SEARCH_YEARS
    while year <= limit_year:
        if month not in spec.months:
            month, day, hour, minute = month + 1, 1, 0, 0
            if month > 12:
                year, month = year + 1, 1
            continue
        if spec.day_matches(year, month, day):
            found = spec.first_time_from(hour, minute)
            if found is not None:
                return datetime(year, month, day, found[0], found[1])
        day, hour, minute = day + 1, 0, 0
        if day > _days_in_month(year, month):
            day, month = 1, month + 1
            if month > 12:
                year, month = year + 1, 1
    return None


def _prev_local(spec: CronSpec, at: datetime) -> datetime | None:
    """The last naive wall-clock tick at or before ``at``."""
    year, month, day, hour, minute = at.year, at.month, at.day, at.hour, at.minute
    limit_year = year - _SEARCH_YEARS
    while year >= limit_year:
        if month not in spec.months:
            month = month - 1
            if month < 1:
                year, month = year - 1, 12
            day, hour, minute = _days_in_month(year, month), 23, 59
            continue
        if spec.day_matches(year, month, day):
            found = spec.last_time_until(hour, minute)
            if found is not None:
                return datetime(year, month, day, found[0], found[1])
        day, hour, minute = day - 1, 23, 59
        if day < 1:
            month -= 1
            if month < 1:
                year, month = year - 1, 12
            day = _days_in_month(year, month)
    return None


# --------------------------------------------------------------------------------------------
# Wall time ⇄ instants
# --------------------------------------------------------------------------------------------


def resolve_wall_time(local: datetime, zone: tzinfo) -> datetime:
    """The UTC instant at which naive wall time ``local`` in ``zone`` happens, time-specific style.

    Ambiguous (fall-back) wall times resolve to their first occurrence; wall times inside a DST
    gap resolve to the instant the gap ends (the clock jumps past them, so they fire then). This
    is the rule for a wall time a user named (landing times, backfill day steps, time-specific
    cron); wall-clock cron jobs do not go through here (see :class:`Cadence`).
    """
    if zone is UTC:
        return local.replace(tzinfo=UTC)
    instant = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == local:
        return instant
    # In a gap: fold=0 used the offset before the jump (the later instant), fold=1 the offset
    # after it (the earlier instant). The transition lies between; find it to the second.
    early = local.replace(tzinfo=zone, fold=1).astimezone(UTC)
    late = instant
    target_offset = late.astimezone(zone).utcoffset()
    while (late - early) > timedelta(seconds=1):
        middle = early + (late - early) / 2
        middle = middle.replace(microsecond=0)
        if middle <= early:
            break
        if middle.astimezone(zone).utcoffset() == target_offset:
            late = middle
        else:
            early = middle
    return late


def wall_time(instant: datetime, zone: tzinfo) -> datetime:
    """The naive wall-clock time of an aware instant in ``zone``."""
    return instant.astimezone(zone).replace(tzinfo=None)


_Transition = tuple[datetime, timedelta, timedelta]  # (UTC instant, offset before, offset after)
_ONE_SECOND = timedelta(seconds=1)
#: How far back a repeated (fall-back) wall hour can start; tzdata's largest jump is one day.
_REPEAT_HORIZON = timedelta(days=2)


def _as_utc(instant: datetime) -> datetime:
    return instant if instant.tzinfo is UTC else to_utc(instant)


def _utc_offset(zone: tzinfo, instant: datetime) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None  # an aware result always has an offset
    return offset


def _wall(instant: datetime, offset: timedelta) -> datetime:
    """The naive wall time of UTC ``instant`` under ``offset``."""
    return (instant + offset).replace(tzinfo=None)


@lru_cache(maxsize=2048)
def _transitions_in_year(
    zone: tzinfo, year: int
) -> tuple[tuple[datetime, ...], tuple[_Transition, ...]]:
    """The zone's UTC-offset changes whose instant falls in UTC year ``year``, oldest first.

    Returns (instants, (instant, offset before, offset after) triples); ``instant`` is the first
    second of the new offset. ``zoneinfo`` has no public transition list, so the offsets are probed
    once a day and each change is bisected to the second. A daily probe misses nothing: tzdata
    never changes a zone's offset twice within four days (checked for every zone since 1900; the
    closest pair is Africa/Freetown 1939, 4 days apart). Cached: one year of one zone costs ~370
    offset look-ups once.
    """
    if year <= datetime.min.year or year >= datetime.max.year:
        return (), ()
    begin = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    found: list[_Transition] = []
    probe = begin - _ONE_DAY
    offset = _utc_offset(zone, probe)
    while probe < end:
        following = probe + _ONE_DAY
        new_offset = _utc_offset(zone, following)
        if new_offset != offset:
            low, high = probe, following  # offset(low) is the old one, offset(high) the new one
            while high - low > _ONE_SECOND:
                middle = low + timedelta(seconds=int((high - low).total_seconds()) // 2)
                if _utc_offset(zone, middle) == offset:
                    low = middle
                else:
                    high = middle
            if begin <= high < end:
                found.append((high, offset, new_offset))
        probe, offset = following, new_offset
    return tuple(change[0] for change in found), tuple(found)


def _next_transition(zone: tzinfo, after: datetime, until: datetime) -> _Transition | None:
    """The zone's first offset change at an instant T with ``after < T <= until``."""
    for year in range(after.year, until.year + 1):
        instants, changes = _transitions_in_year(zone, year)
        index = bisect.bisect_right(instants, after)
        if index < len(instants):
            return changes[index] if instants[index] <= until else None
    return None


def _last_transition(zone: tzinfo, at: datetime, since: datetime) -> _Transition | None:
    """The zone's last offset change at an instant T with ``since < T <= at``."""
    for year in range(at.year, since.year - 1, -1):
        instants, changes = _transitions_in_year(zone, year)
        index = bisect.bisect_right(instants, at) - 1
        if index >= 0:
            return changes[index] if instants[index] > since else None
    return None


class Cadence:
    """The ticks of one periodic interval in one time zone (UTC-aware instants).

    Between two offset changes the wall clock runs in step with UTC, so the tick after (before)
    an instant is the wall-clock search's answer shifted by the offset -- unless that answer lies
    past the segment's end (start). Then the search resumes in the neighbouring segment, and the
    DST rule (module docstring) is applied at the change:

    * spring forward (offset grows): a time-specific job with a wall time inside the skipped
      range ticks once at the change instant (the gap's end); a wall-clock job does not;
    * fall back (offset shrinks): the repeated wall range is searched again by a wall-clock job
      (a second tick per repeated wall time) and skipped by a time-specific one.
    """

    __slots__ = ("_offset", "spec", "zone")

    def __init__(self, spec: CronSpec, zone: tzinfo) -> None:
        self.spec = spec
        self.zone = zone
        # UTC and other fixed offsets have no transitions: wall time is a plain shift.
        self._offset = zone.utcoffset(None) if isinstance(zone, timezone) else None

    def tick_after(self, now: datetime) -> datetime | None:
        """The first tick strictly after ``now`` (UTC-aware)."""
        now = _as_utc(now)
        spec = self.spec
        if self._offset is not None:
            found = _next_local(spec, _wall(now, self._offset))
            return None if found is None else (found - self._offset).replace(tzinfo=UTC)
        zone = self.zone
        here = now.astimezone(zone)
        offset = here.utcoffset()
        assert offset is not None
        floor = here.replace(tzinfo=None)  # the search is for wall times after this
        specific = spec.time_specific
        if specific and here.fold:
            # ``now`` is in the second pass of a repeated wall range; a time-specific job ran
            # all of that range in the first pass, so its next tick comes after the range.
            change = _last_transition(zone, now, now - _REPEAT_HORIZON)
            if change is not None:
                floor = max(floor, _wall(change[0], change[1]) - _ONE_US)
        cursor, searched = now, floor
        local = _next_local(spec, floor)
        while local is not None:
            candidate = (local - offset).replace(tzinfo=UTC)
            change = _next_transition(zone, cursor, candidate)
            if change is None:
                return candidate  # same segment: wall order is UTC order
            moment, before, after = change
            # ``local`` is the first match at or after the wall time where the segment ends
            if specific and after > before and local < _wall(moment, after):
                return moment  # a skipped wall time of a time-specific job: at the gap's end
            # Resume in the next segment: from its first wall time, or -- time-specific after a
            # fall back -- from the end of the repeated range.
            cursor, offset = moment, after
            floor = _wall(moment, max(before, after) if specific else after) - _ONE_US
            if not searched <= floor < local:  # else ``local`` is still the first match
                searched, local = floor, _next_local(spec, floor)
        return None

    def tick_at_or_before(self, now: datetime) -> datetime | None:
        """The last tick at or before ``now`` (UTC-aware): the current period's start."""
        now = _as_utc(now)
        spec = self.spec
        if self._offset is not None:
            found = _prev_local(spec, _wall(now, self._offset))
            return None if found is None else (found - self._offset).replace(tzinfo=UTC)
        zone = self.zone
        here = now.astimezone(zone)
        offset = here.utcoffset()
        assert offset is not None
        specific = spec.time_specific
        cursor = now
        searched = here.replace(tzinfo=None)  # the search is for wall times at or before this
        local = _prev_local(spec, searched)
        while local is not None:
            candidate = (local - offset).replace(tzinfo=UTC)
            change = _last_transition(zone, cursor, candidate - _REPEAT_HORIZON)
            if change is None:
                return candidate  # same segment, far from any change
            moment, before, after = change
            if moment <= candidate:
                # Same segment (it starts at ``moment``). A time-specific job does not tick
                # again in the second pass of a repeated wall range.
                if not (specific and after < before and local < _wall(moment, before)):
                    return candidate
            elif specific and after > before and local >= _wall(moment, before):
                return moment  # the last match is in the gap before this segment: its end
            # Resume in the previous segment, from its last wall time.
            cursor, offset = moment - _ONE_US, before
            ceiling = _wall(moment, before) - _ONE_US
            if not local <= ceiling <= searched:  # else ``local`` is still the last match
                searched, local = ceiling, _prev_local(spec, ceiling)
        return None

    def ticks_between(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Ticks ``t`` with ``after < t <= until``, oldest first."""
        cursor = after
        while True:
            tick = self.tick_after(cursor)
            if tick is None or tick > until:
                return
            yield tick
            cursor = tick


@lru_cache(maxsize=8192)
def cadence_for(schedule_interval: str, timezone_name: str = "UTC") -> Cadence:
    """The :class:`Cadence` of a periodic interval (named or cron) in an IANA zone."""
    interval = str(schedule_interval)
    if interval in NON_PERIODIC:
        raise ValidationError(
            "schedule_interval", interval, "this interval has no periodic ticks", _INTERVAL_EXAMPLE
        )
    return Cadence(compile_cron(interval), load_zone(timezone_name))


def validate_interval(schedule_interval: object, field_name: str = "schedule_interval") -> str:
    """Return the interval as a string if it is a named interval or a valid cron expression."""
    if isinstance(schedule_interval, ScheduleInterval):
        return schedule_interval.value
    if not isinstance(schedule_interval, str):
        raise ValidationError(field_name, schedule_interval, "expected a string", _INTERVAL_EXAMPLE)
    text = " ".join(schedule_interval.split())
    if text in ScheduleInterval.values():
        return text
    compile_cron(text, field_name)
    return text


# --------------------------------------------------------------------------------------------
# Execution dates
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleTiming:
    """Everything time maths needs to know about a schedule (no database objects)."""

    schedule_interval: str | None
    timezone: str = "UTC"
    start_time: datetime | None = None
    last_enabled_at: datetime | None = None
    landing_time_enabled: bool = False

    @property
    def periodic(self) -> bool:
        return self.schedule_interval is not None and self.schedule_interval not in NON_PERIODIC

    @property
    def uses_landing_time(self) -> bool:
        return (
            self.landing_time_enabled
            and self.start_time is not None
            and self.schedule_interval in LANDING_INTERVALS
        )

    def cadence(self) -> Cadence:
        assert self.schedule_interval is not None
        return cadence_for(self.schedule_interval, self.timezone)


def landing_target(timing: ScheduleTiming, period_start: datetime) -> datetime:
    """The target completion instant for the period starting at ``period_start``.

    ``start_time``'s wall-clock parts in the schedule zone pick the time within the period:
    minute/second (hourly), hour (daily), weekday (weekly) or day of month (monthly, clamped to
    the month's last day). Daily and longer targets are wall times the user named, resolved with
    :func:`resolve_wall_time`; hourly targets stay in their period's offset.
    """
    assert timing.start_time is not None
    zone = load_zone(timing.timezone)
    anchor = wall_time(timing.start_time, zone)
    period = wall_time(period_start, zone)
    interval = timing.schedule_interval
    if interval == ScheduleInterval.HOURLY.value:
        # @hourly follows the wall clock: a repeated hour is two periods. Keep the period's own
        # offset (fold) so the second one lands in itself, not at the first pass's minute.
        aware = period_start.astimezone(zone).replace(minute=anchor.minute, second=anchor.second)
        instant = aware.astimezone(UTC)
        if wall_time(instant, zone) == aware.replace(tzinfo=None):
            return instant
        local = aware.replace(tzinfo=None)  # in a gap (a half-hour shift): at the gap's end
    elif interval == ScheduleInterval.DAILY.value:
        local = period.replace(hour=anchor.hour, minute=anchor.minute, second=anchor.second)
    elif interval == ScheduleInterval.WEEKLY.value:
        local = period.replace(
            hour=anchor.hour, minute=anchor.minute, second=anchor.second
        ) + timedelta(days=anchor.weekday())
    else:
        day = min(anchor.day, _days_in_month(period.year, period.month))
        local = period.replace(
            day=day, hour=anchor.hour, minute=anchor.minute, second=anchor.second
        )
    return resolve_wall_time(local, zone)


def landing_lead_seconds(runtimes: Sequence[float]) -> int:
    """How long before the landing time a run is created: ``ceil(mean) + ceil(stdev / 2)``."""
    if not runtimes:
        return 0
    lead = math.ceil(sum(runtimes) / len(runtimes))
    if len(runtimes) >= 2:
        lead += math.ceil(statistics.stdev(runtimes) / 2)
    return lead


def _landing_creation_time(
    timing: ScheduleTiming, period_start: datetime, runtimes: Sequence[float]
) -> tuple[datetime, datetime]:
    target = landing_target(timing, period_start)
    if not runtimes:
        # Mage: with no history the run is created as soon as its period begins.
        return target, period_start
    return target, target - timedelta(seconds=landing_lead_seconds(runtimes))


def current_execution_date(
    timing: ScheduleTiming, now: datetime, runtimes: Sequence[float] = ()
) -> datetime | None:
    """The execution date a run created at ``now`` would get.

    Periodic intervals: the start of the period containing ``now``. With landing time: the
    landing target of the latest period whose creation time has come. ``@once``: ``start_time``
    (else ``last_enabled_at``, else ``now``). ``@always_on``: ``now``.
    """
    now = to_utc(now)
    interval = timing.schedule_interval
    if interval is None:
        return None
    if interval == ScheduleInterval.ONCE.value:
        return timing.start_time or timing.last_enabled_at or now
    if interval == ScheduleInterval.ALWAYS_ON.value:
        return now
    cadence = timing.cadence()
    period = cadence.tick_at_or_before(now)
    if period is None:
        return None
    if not timing.uses_landing_time:
        return period
    return _landing_choice(timing, cadence, period, now, runtimes)[0]


def _landing_choice(
    timing: ScheduleTiming,
    cadence: Cadence,
    period: datetime,
    now: datetime,
    runtimes: Sequence[float],
) -> tuple[datetime, datetime]:
    """(target, creation time) of the latest landing period whose creation time has come,
    else of the current period (whose creation time is still ahead)."""
    choice: tuple[datetime, datetime] | None = None
    start = cadence.tick_after(now)
    # A lead longer than one period reaches past the following period, so keep walking while
    # the creation time has come (creation times only grow with the period).
    while start is not None:
        target, create_at = _landing_creation_time(timing, start, runtimes)
        if create_at > now:
            break
        choice = (target, create_at)
        start = cadence.tick_after(start)
    return choice if choice is not None else _landing_creation_time(timing, period, runtimes)


def next_execution_date(
    timing: ScheduleTiming, now: datetime, runtimes: Sequence[float] = ()
) -> datetime | None:
    """The execution date of the next period after the current one (None if non-periodic)."""
    now = to_utc(now)
    if not timing.periodic:
        return None
    cadence = timing.cadence()
    if not timing.uses_landing_time:
        return cadence.tick_after(now)
    current = current_execution_date(timing, now, runtimes)
    period = cadence.tick_after(now)
    while period is not None:
        target = landing_target(timing, period)
        if current is None or target > current:
            return target
        period = cadence.tick_after(period)
    return None  # pragma: no cover - a cadence always has a next tick


def next_due_time(
    timing: ScheduleTiming, now: datetime, runtimes: Sequence[float] = ()
) -> datetime | None:
    """When the scheduler should next wake for this schedule (run creation time)."""
    now = to_utc(now)
    if not timing.periodic:
        return None
    cadence = timing.cadence()
    if not timing.uses_landing_time:
        return cadence.tick_after(now)
    # Earlier periods land before the current one starts, so their creation time has passed;
    # creation times grow with the period: the first one still ahead is the next wake-up.
    start = cadence.tick_at_or_before(now) or cadence.tick_after(now)
    while start is not None:
        create_at = _landing_creation_time(timing, start, runtimes)[1]
        if create_at > now:
            return create_at
        start = cadence.tick_after(start)
    return None


def previous_tick(timing: ScheduleTiming, execution_date: datetime) -> datetime | None:
    """The tick just before ``execution_date`` (Mage's ``interval_start_datetime_previous``)."""
    if not timing.periodic:
        return None
    return timing.cadence().tick_at_or_before(to_utc(execution_date) - timedelta(microseconds=1))


# --------------------------------------------------------------------------------------------
# The should-schedule decision
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleDecision:
    """Whether a time schedule is due at ``now``, for which execution date, and why (not)."""

    due: bool
    execution_date: datetime | None
    reason: str

    def __bool__(self) -> bool:
        return self.due


def decide(
    timing: ScheduleTiming,
    now: datetime,
    *,
    status: str,
    create_initial_pipeline_run: bool = False,
    run_count: int = 0,
    last_run_status: str | None = None,
    run_exists_for: Any = None,
    runtimes: Sequence[float] = (),
    current_period: datetime | None = None,
) -> ScheduleDecision:
    """Mage's ``should_schedule`` as a pure function.

    ``run_exists_for(execution_date) -> bool`` answers whether the schedule already has a run for
    that period; everything else is plain data. ``current_period``: the current execution date
    when the caller computed it already (the scheduler does, once per interval and pass).
    """
    now = to_utc(now)
    if status != ScheduleStatus.ACTIVE.value:
        return ScheduleDecision(False, None, "schedule is not active")
    interval = timing.schedule_interval
    if not interval:
        return ScheduleDecision(False, None, "schedule has no interval")
    if not timing.uses_landing_time and timing.start_time is not None and now < timing.start_time:
        return ScheduleDecision(False, None, "start_time is in the future")
    execution_date = (
        current_period
        if current_period is not None
        else current_execution_date(timing, now, runtimes)
    )
    if interval == ScheduleInterval.ONCE.value:
        if run_count == 0:
            return ScheduleDecision(True, execution_date, "@once schedule has not run yet")
        return ScheduleDecision(False, None, "@once schedule already has its run")
    if interval == ScheduleInterval.ALWAYS_ON.value:
        if run_count == 0 or last_run_status not in (
            PipelineRunStatus.INITIAL.value,
            PipelineRunStatus.RUNNING.value,
        ):
            return ScheduleDecision(True, execution_date, "@always_on: previous run finished")
        return ScheduleDecision(False, None, "@always_on: previous run still in progress")
    if execution_date is None:
        return ScheduleDecision(False, None, "no period has started yet")
    if timing.start_time is not None and execution_date < timing.start_time:
        return ScheduleDecision(False, execution_date, "period starts before start_time")
    if (
        timing.last_enabled_at is not None
        and not create_initial_pipeline_run
        and execution_date < timing.last_enabled_at
    ):
        return ScheduleDecision(
            False,
            execution_date,
            "period started before the schedule was activated "
            "(set settings.create_initial_pipeline_run to run it)",
        )
    if timing.uses_landing_time:
        cadence = timing.cadence()
        period = cadence.tick_at_or_before(now)
        assert period is not None
        if _landing_choice(timing, cadence, period, now, runtimes)[1] > now:
            return ScheduleDecision(False, execution_date, "landing time not reached")
    if run_exists_for is not None and run_exists_for(execution_date):
        return ScheduleDecision(False, execution_date, "a run exists for this period")
    return ScheduleDecision(True, execution_date, "period is due")


def plan_catchup(
    timing: ScheduleTiming,
    now: datetime,
    *,
    last_execution_date: datetime | None,
    max_runs: int = 100,
    create_initial_pipeline_run: bool = False,
) -> list[datetime]:
    """Execution dates missed since ``last_execution_date`` up to the current period, oldest first.

    Periods before ``start_time`` or (without ``create_initial_pipeline_run``) before the
    activation are never planned. At most the newest ``max_runs`` periods are returned.
    """
    now = to_utc(now)
    if not timing.periodic or timing.uses_landing_time:
        current = current_execution_date(timing, now)
        return [current] if current is not None else []
    cadence = timing.cadence()
    current = cadence.tick_at_or_before(now)
    if current is None:
        return []
    floor = last_execution_date
    bounds = [b for b in (timing.start_time,) if b is not None]
    if timing.last_enabled_at is not None and not create_initial_pipeline_run:
        bounds.append(timing.last_enabled_at)
    lower = max(bounds) if bounds else None
    if floor is None:
        if lower is None:
            return [current]
        floor = lower - timedelta(microseconds=1)
    elif lower is not None and floor < lower:
        floor = lower - timedelta(microseconds=1)
    dates: list[datetime] = []
    # Walk backwards from the current period so only max_runs ticks are ever computed.
    cursor: datetime | None = current
    while cursor is not None and cursor > floor and len(dates) < max_runs:
        dates.append(cursor)
        cursor = cadence.tick_at_or_before(cursor - timedelta(microseconds=1))
    dates.reverse()
    return dates


# --------------------------------------------------------------------------------------------
# Run variables
# --------------------------------------------------------------------------------------------


def date_variables(execution_date: datetime, timezone_name: str = "UTC") -> dict[str, str]:
    """``ds`` and ``hr`` of an execution date, in the schedule's zone."""
    local = execution_date.astimezone(load_zone(timezone_name))
    return {"ds": local.strftime("%Y-%m-%d"), "hr": local.strftime("%H")}


def interval_variables(timing: ScheduleTiming, execution_date: datetime) -> dict[str, Any]:
    """The ``interval_*`` variables Mage gives a scheduled run (datetimes, UTC-aware)."""
    execution_date = to_utc(execution_date)
    end = previous = None
    if timing.periodic:
        cadence = timing.cadence()
        end = cadence.tick_after(execution_date)
        previous = cadence.tick_at_or_before(execution_date - timedelta(microseconds=1))
    return {
        "interval_start_datetime": execution_date,
        "interval_end_datetime": end,
        "interval_seconds": int((end - execution_date).total_seconds()) if end else None,
        "interval_start_datetime_previous": previous,
    }


# --------------------------------------------------------------------------------------------
# Backfills
# --------------------------------------------------------------------------------------------

_FIXED_STEPS = {
    BackfillIntervalType.SECOND.value: timedelta(seconds=1),
    BackfillIntervalType.MINUTE.value: timedelta(minutes=1),
    BackfillIntervalType.HOUR.value: timedelta(hours=1),
}
_WALL_DAY_STEPS = {BackfillIntervalType.DAY.value: 1, BackfillIntervalType.WEEK.value: 7}
_MONTH_STEPS = {BackfillIntervalType.MONTH.value: 1, BackfillIntervalType.YEAR.value: 12}

#: Refuse backfills larger than this; a typo like interval_type='second' over a year is not a plan.
MAX_BACKFILL_RUNS = 100_000


def add_months(local: datetime, months: int) -> datetime:
    """``local`` moved by whole months, the day clamped to the target month's length."""
    index = local.year * 12 + (local.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    return local.replace(year=year, month=month, day=min(local.day, _days_in_month(year, month)))


def backfill_step(
    start: datetime, index: int, interval_type: str, units: int, zone: tzinfo
) -> datetime:
    """The ``index``-th date of a backfill, anchored to ``start`` (never drifting)."""
    if interval_type in _FIXED_STEPS:
        return start + _FIXED_STEPS[interval_type] * (units * index)
    local = wall_time(start, zone)
    if interval_type in _WALL_DAY_STEPS:
        local = local + timedelta(days=_WALL_DAY_STEPS[interval_type] * units * index)
    else:
        local = add_months(local, _MONTH_STEPS[interval_type] * units * index)
    return resolve_wall_time(local, zone)


def validate_backfill_range(
    start: datetime, end: datetime, interval_type: object, units: object
) -> tuple[str, int]:
    """Validate a backfill's range and step; return the normalised (interval_type, units)."""
    kind = str(
        interval_type.value if isinstance(interval_type, BackfillIntervalType) else interval_type
    )
    if kind not in BackfillIntervalType.values():
        raise ValidationError(
            "interval_type",
            interval_type,
            "unknown backfill interval type",
            f"Use one of {', '.join(BackfillIntervalType.values())}, e.g. interval_type='day'.",
        )
    if isinstance(units, bool) or not isinstance(units, int) or units < 1:
        raise ValidationError(
            "interval_units",
            units,
            "the step must be a whole number of at least 1",
            "Use e.g. interval_units=1 for every day.",
        )
    if end < start:
        raise ValidationError(
            "end_datetime",
            end,
            f"end is before start_datetime ({start.isoformat()})",
            "Give an end_datetime at or after start_datetime; the range is inclusive.",
        )
    return kind, units


@dataclass(frozen=True)
class BackfillRunDate:
    """One run of a backfill: its execution date and the variables it carries."""

    execution_date: datetime
    interval_start_datetime: datetime
    interval_end_datetime: datetime
    interval_seconds: int
    ds: str
    hr: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "execution_date": self.execution_date,
            "interval_start_datetime": self.interval_start_datetime,
            "interval_end_datetime": self.interval_end_datetime,
            "interval_seconds": self.interval_seconds,
            "ds": self.ds,
            "hr": self.hr,
        }


def expand_backfill(
    start: datetime,
    end: datetime,
    interval_type: str,
    interval_units: int,
    timezone_name: str = "UTC",
) -> list[BackfillRunDate]:
    """Every run date of a backfill: ``[start, end]`` inclusive, stepped without drift.

    Second/minute/hour steps are exact durations; day/week steps keep the wall-clock time in the
    schedule zone across DST; month/year steps anchor to the start day and clamp (Jan 31 → Feb 29
    → Mar 31). Each run's interval ends where the next step begins (the last one too).
    """
    start, end = to_utc(start), to_utc(end)
    kind, units = validate_backfill_range(start, end, interval_type, interval_units)
    zone = load_zone(timezone_name)
    dates: list[datetime] = []
    index = 0
    current = start
    while current <= end:
        dates.append(current)
        if len(dates) > MAX_BACKFILL_RUNS:
            raise ValidationError(
                "interval_type",
                interval_type,
                f"the range would create more than {MAX_BACKFILL_RUNS} runs",
                "Use a larger interval_type/interval_units or a shorter range.",
            )
        index += 1
        current = backfill_step(start, index, kind, units, zone)
    runs = []
    for position, execution_date in enumerate(dates):
        following = (
            dates[position + 1]
            if position + 1 < len(dates)
            else backfill_step(start, position + 1, kind, units, zone)
        )
        local = execution_date.astimezone(zone)
        runs.append(
            BackfillRunDate(
                execution_date=execution_date,
                interval_start_datetime=execution_date,
                interval_end_datetime=following,
                interval_seconds=int((following - execution_date).total_seconds()),
                ds=local.strftime("%Y-%m-%d"),
                hr=local.strftime("%H"),
            )
        )
    return runs
