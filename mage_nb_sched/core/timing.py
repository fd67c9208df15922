"""Pure schedule time maths: datetimes in, datetimes out. Nothing here reads the clock.

Semantics (DESIGN §4):

* A periodic interval (``@hourly``, ``@daily``, ``@weekly`` = Monday, ``@monthly`` = the 1st, or a
  5-field cron expression) defines *ticks* in the schedule's time zone. ``execution_date`` is the
  latest tick at or before ``now`` -- an instant exactly on a tick belongs to the period that starts
  there (for cron too, unlike Mage's cron path).
* Ticks are local wall-clock times. A wall time that falls in a DST gap fires once, at the instant
  the gap ends; a wall time that occurs twice (DST fall-back) fires once, at its first occurrence.
* ``@once`` runs a single time, at ``start_time`` (or when activated); ``@always_on`` starts a new
  run as soon as the previous one has finished.
"""

from __future__ import annotations

import bisect
import calendar
import math
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
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


def _expand_field(values: Sequence[Any], full: range) -> tuple[int, ...]:
    if len(values) == 1 and values[0] == "*":
        return tuple(full)
    return tuple(sorted({int(v) for v in values}))


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
        expanded, nth = croniter.expand(text)
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
    """The UTC instant at which naive wall time ``local`` in ``zone`` happens.

    Ambiguous (fall-back) wall times resolve to their first occurrence; wall times inside a DST
    gap resolve to the instant the gap ends (the clock jumps past them, so they fire then).
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


class Cadence:
    """The ticks of one periodic interval in one time zone."""

    __slots__ = ("spec", "zone")

    def __init__(self, spec: CronSpec, zone: tzinfo) -> None:
        self.spec = spec
        self.zone = zone

    def tick_after(self, now: datetime) -> datetime | None:
        """The first tick strictly after ``now`` (UTC-aware)."""
        local = now.astimezone(self.zone).replace(tzinfo=None)
        while True:
            nxt = _next_local(self.spec, local)
            if nxt is None:
                return None
            instant = resolve_wall_time(nxt, self.zone)
            if instant > now:
                return instant
            local = nxt

    def tick_at_or_before(self, now: datetime) -> datetime | None:
        """The last tick at or before ``now`` (UTC-aware): the current period's start."""
        aware_local = now.astimezone(self.zone)
        local = aware_local.replace(tzinfo=None)
        prev = _prev_local(self.spec, local)
        best = resolve_wall_time(prev, self.zone) if prev is not None else None
        if aware_local.fold:
            # ``now`` is in the repeated hour: later wall times resolve to their first
            # occurrence, which may still be before ``now``.
            cursor = local if prev is None else prev
            while True:
                nxt = _next_local(self.spec, cursor)
                if nxt is None:
                    break
                instant = resolve_wall_time(nxt, self.zone)
                if instant > now:
                    break
                best, cursor = instant, nxt
        return best

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
    the month's last day).
    """
    assert timing.start_time is not None
    zone = load_zone(timing.timezone)
    anchor = wall_time(timing.start_time, zone)
    period = wall_time(period_start, zone)
    interval = timing.schedule_interval
    if interval == ScheduleInterval.HOURLY.value:
        local = period.replace(minute=anchor.minute, second=anchor.second)
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
