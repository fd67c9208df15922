"""Property tests of ``mage_nb_sched.core.timing`` against a brute-force minute walk.

The reference shares nothing with timing.py's cron engine. For one expression, one zone and one
window it walks UTC minute by minute, converts each minute to the zone's wall time, and decides
by the DST rule of DESIGN §4 (ISC / Vixie cron) which UTC minutes are ticks:

* *wall-clock* job (a ``*`` in the minute or hour field, ``@hourly``): a UTC minute is a tick iff
  its wall time matches. Skipped wall times never match (they are never seen); repeated ones match
  twice.
* *time-specific* job (minute and hour fixed): a UTC minute is a tick iff its wall time matches
  and has not been seen before in the walk (first occurrence), or the clock just jumped forward
  over wall minutes of which at least one matches (the gap's end).

Which wall times match is written out by hand per expression (minute set, hour set, a day
predicate) -- not parsed by croniter or by timing.py. Which kind each expression is, too.

Windows: every DST change of America/New_York, Europe/Berlin, Australia/Lord_Howe (a 30-minute
shift), America/Santiago (changes at midnight) and Australia/Sydney in 2024-2027, found by scanning
the zone hour by hour, plus a few windows without a change (leap day, 2100, a year end).
"""

from __future__ import annotations

import bisect
import calendar
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone, tzinfo
from functools import cache
from typing import NamedTuple
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mage_nb_sched.core import timing

UTC = timezone.utc
ONE_MINUTE = timedelta(minutes=1)
US = timedelta(microseconds=1)

DayRule = Callable[[date], bool]


def every_day(_day: date) -> bool:
    return True


def last_day(day: date) -> bool:
    return day.day == calendar.monthrange(day.year, day.month)[1]


class Expr(NamedTuple):
    interval: str  # what the schedule stores
    minutes: frozenset[int]  # minutes its minute field allows (by hand)
    hours: frozenset[int]  # hours its hour field allows (by hand)
    day: DayRule  # days its day/month/weekday fields allow (by hand)
    time_specific: bool  # minute and hour fields both fixed (by hand, from the rule)
    half_window_days: float  # the window is the DST change +- this

    def matches(self, wall: datetime) -> bool:
        return (
            wall.second == 0
            and wall.minute in self.minutes
            and wall.hour in self.hours
            and self.day(wall.date())
        )


ALL_HOURS = frozenset(range(24))
EXPRESSIONS = {
    expr.interval: expr
    for expr in [
        # wall-clock jobs
        Expr("@hourly", frozenset({0}), ALL_HOURS, every_day, False, 1.5),
        Expr("20 * * * *", frozenset({20}), ALL_HOURS, every_day, False, 1.5),
        Expr("*/30 * * * *", frozenset({0, 30}), ALL_HOURS, every_day, False, 1.5),
        Expr("*/15 2 * * *", frozenset({0, 15, 30, 45}), frozenset({2}), every_day, False, 2),
        Expr("*/20 1-3 * * *", frozenset({0, 20, 40}), frozenset({1, 2, 3}), every_day, False, 2),
        Expr("* 23 * * *", frozenset(range(60)), frozenset({23}), every_day, False, 2),
        Expr("10 */2 * * *", frozenset({10}), frozenset(range(0, 24, 2)), every_day, False, 1.5),
        # time-specific jobs
        Expr("@daily", frozenset({0}), frozenset({0}), every_day, True, 3),
        Expr("30 2 * * *", frozenset({30}), frozenset({2}), every_day, True, 3),
        Expr("15,45 1-2 * * *", frozenset({15, 45}), frozenset({1, 2}), every_day, True, 3),
        Expr("30 0 * * *", frozenset({30}), frozenset({0}), every_day, True, 3),
        Expr("45 23 * * *", frozenset({45}), frozenset({23}), every_day, True, 3),
        Expr("5-5 2-2 * * *", frozenset({5}), frozenset({2}), every_day, True, 3),
        Expr("0,30 1,2,3 * * *", frozenset({0, 30}), frozenset({1, 2, 3}), every_day, True, 3),
        Expr("@weekly", frozenset({0}), frozenset({0}), lambda d: d.weekday() == 0, True, 10),
        Expr("@monthly", frozenset({0}), frozenset({0}), lambda d: d.day == 1, True, 40),
        Expr("0 0 L * *", frozenset({0}), frozenset({0}), last_day, True, 40),
    ]
}
LONG_WINDOW_DAYS = 5  # expressions with longer windows are checked around 2026's changes only

DST_ZONES = [
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Australia/Sydney",
]


def zone_of(name: str) -> tzinfo:
    return UTC if name == "UTC" else ZoneInfo(name)


def wall(instant: datetime, zone: tzinfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def offset_changes(zone_name: str, first: int, last: int) -> list[datetime]:
    """UTC minutes at which the zone's offset changes, years ``first``..``last`` (hourly scan,
    refined to the minute)."""
    zone = zone_of(zone_name)
    changes = []
    cursor = datetime(first, 1, 1, tzinfo=UTC)
    stop = datetime(last + 1, 1, 1, tzinfo=UTC)
    previous = cursor.astimezone(zone).utcoffset()
    while cursor < stop:
        step = cursor + timedelta(hours=1)
        offset = step.astimezone(zone).utcoffset()
        if offset != previous:
            minute = cursor
            while minute.astimezone(zone).utcoffset() == previous:
                minute += ONE_MINUTE
            changes.append(minute)
        previous, cursor = offset, step
    return changes


# (zone, window centre as a UTC minute, is the centre a DST change)
CENTRES: list[tuple[str, datetime, bool]] = [
    (zone, change, True) for zone in DST_ZONES for change in offset_changes(zone, 2024, 2027)
] + [
    ("UTC", datetime(2024, 2, 29, tzinfo=UTC), False),
    ("UTC", datetime(2100, 3, 1, tzinfo=UTC), False),
    ("America/New_York", datetime(2025, 1, 1, 5, tzinfo=UTC), False),
    ("Australia/Lord_Howe", datetime(2026, 7, 1, tzinfo=UTC), False),
]


@cache
def minute_walk(
    zone_name: str, centre: datetime, half_days: float
) -> list[tuple[datetime, datetime]]:
    """(UTC minute, its wall time) for every UTC minute of ``centre +- half_days``."""
    zone = zone_of(zone_name)
    half = timedelta(days=half_days)
    start, stop = centre - half, centre + half
    minute = start.replace(second=0, microsecond=0)
    walk = []
    while minute <= stop:
        walk.append((minute, wall(minute, zone)))
        minute += ONE_MINUTE
    return walk


class Reference(NamedTuple):
    ticks: list[datetime]
    start: datetime  # the window: ticks are exact for instants in (start, stop]
    stop: datetime


@cache
def reference(key: str, zone_name: str, centre: datetime) -> Reference:
    expr = EXPRESSIONS[key]
    walk = minute_walk(zone_name, centre, expr.half_window_days)
    ticks: list[datetime] = []
    seen: set[datetime] = set()
    previous: datetime | None = None
    for instant, local in walk:
        if expr.time_specific:
            tick = expr.matches(local) and local not in seen
            if previous is not None and local - previous > ONE_MINUTE:
                # the clock jumped forward: the skipped wall minutes run now, once
                skipped = previous + ONE_MINUTE
                while skipped < local and not tick:
                    tick = expr.matches(skipped)
                    skipped += ONE_MINUTE
        else:
            tick = expr.matches(local)
        if tick and previous is not None:  # the first minute only gives the walk its start
            ticks.append(instant)
        seen.add(local)
        previous = local
    return Reference(ticks, walk[0][0], walk[-1][0])


def combos_for(key: str) -> list[tuple[str, str, datetime]]:
    long_window = EXPRESSIONS[key].half_window_days > LONG_WINDOW_DAYS
    return [
        (key, zone, centre)
        for zone, centre, _is_change in CENTRES
        if not long_window or centre.year in (2026, 2100)
    ]


COMBOS = [combo for key in EXPRESSIONS for combo in combos_for(key)]
DST_COMBOS = [
    combo for combo in COMBOS if (combo[1], combo[2], True) in CENTRES
]


def combo_id(combo: tuple[str, str, datetime]) -> str:
    key, zone, centre = combo
    return f"{key}|{zone}|{centre:%Y-%m-%dT%H:%M}"


# ---------------------------------------------------------------------------------------------
# The reference's own sanity
# ---------------------------------------------------------------------------------------------


def test_windows_cover_every_change() -> None:
    # two changes a year in each zone, four years
    assert len([c for c in CENTRES if c[2]]) == 5 * 2 * 4
    for zone, centre, is_change in CENTRES:
        if is_change:
            tz = zone_of(zone)
            assert (centre - ONE_MINUTE).astimezone(tz).utcoffset() != centre.astimezone(
                tz
            ).utcoffset()


def ref_ticks(
    key: str, zone: str, centre: datetime, first: datetime, last: datetime
) -> list[datetime]:
    return [t for t in reference(key, zone, centre).ticks if first <= t <= last]


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_reference_applies_the_rule() -> None:
    ny_spring = utc(2026, 3, 8, 7)
    ny_fall = utc(2026, 11, 1, 6)
    # time-specific 02:30: once, at the gap's end
    assert ref_ticks("30 2 * * *", "America/New_York", ny_spring, utc(2026, 3, 8),
                     utc(2026, 3, 9)) == [ny_spring]
    # wall clock: 02:20 does not happen
    assert ref_ticks("20 * * * *", "America/New_York", ny_spring, utc(2026, 3, 8, 6),
                     utc(2026, 3, 8, 8)) == [utc(2026, 3, 8, 6, 20), utc(2026, 3, 8, 7, 20)]
    # wall clock: 01:00 and 01:30 twice
    assert ref_ticks("*/30 * * * *", "America/New_York", ny_fall, utc(2026, 11, 1, 5),
                     utc(2026, 11, 1, 6, 30)) == [
        utc(2026, 11, 1, 5), utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6), utc(2026, 11, 1, 6, 30)
    ]
    # time-specific 01:15/01:45 on the fall-back night: first occurrence only
    assert ref_ticks("15,45 1-2 * * *", "America/New_York", ny_fall, utc(2026, 11, 1, 5),
                     utc(2026, 11, 1, 7, 59)) == [
        utc(2026, 11, 1, 5, 15), utc(2026, 11, 1, 5, 45), utc(2026, 11, 1, 7, 15),
        utc(2026, 11, 1, 7, 45),
    ]
    # Lord Howe spring: 02:00-02:30 skipped; 02:15 runs at 02:30 LHDT (2026-10-03 15:30Z)
    lh_spring = utc(2026, 10, 3, 15, 30)
    assert ref_ticks("15,45 1-2 * * *", "Australia/Lord_Howe", lh_spring, utc(2026, 10, 3, 14),
                     utc(2026, 10, 3, 16)) == [
        utc(2026, 10, 3, 14, 45), utc(2026, 10, 3, 15, 15), lh_spring, utc(2026, 10, 3, 15, 45)
    ]
    # Santiago: midnight skipped in September -> @daily at 01:00 -03
    santiago_spring = utc(2026, 9, 6, 4)
    assert ref_ticks("@daily", "America/Santiago", santiago_spring, utc(2026, 9, 6),
                     utc(2026, 9, 7)) == [santiago_spring]


# ---------------------------------------------------------------------------------------------
# Every tick of every window: nothing skipped, nothing extra, walking both ways
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("combo", COMBOS, ids=combo_id)
def test_walk_matches_reference(combo: tuple[str, str, datetime]) -> None:
    key, zone, centre = combo
    ref = reference(key, zone, centre)
    cadence = timing.cadence_for(key, zone)
    assert cadence.spec.time_specific is EXPRESSIONS[key].time_specific
    assert list(cadence.ticks_between(ref.start, ref.stop)) == ref.ticks
    backwards = []
    cursor = cadence.tick_at_or_before(ref.stop)
    while cursor is not None and cursor > ref.start:
        backwards.append(cursor)
        cursor = cadence.tick_at_or_before(cursor - US)
    assert backwards[::-1] == ref.ticks


# ---------------------------------------------------------------------------------------------
# Random instants
# ---------------------------------------------------------------------------------------------


def check_neighbours(key: str, zone: str, ref: Reference, now: datetime) -> None:
    ticks = ref.ticks
    assume(len(ticks) >= 2 and ticks[0] <= now < ticks[-1])
    index = bisect.bisect_right(ticks, now)
    expected_prev, expected_next = ticks[index - 1], ticks[index]

    cadence = timing.cadence_for(key, zone)
    prev = cadence.tick_at_or_before(now)
    nxt = cadence.tick_after(now)
    assert (prev, nxt) == (expected_prev, expected_next)
    assert prev is not None and nxt is not None
    # contiguous: the tick after the current period's start is the next tick, and back
    assert cadence.tick_after(prev) == nxt
    assert cadence.tick_at_or_before(nxt - US) == prev
    # and the execution-date API says the same
    sched = timing.ScheduleTiming(key, timezone=zone)
    assert timing.current_execution_date(sched, now) == prev
    assert timing.next_execution_date(sched, now) == nxt
    assert timing.interval_variables(sched, prev)["interval_end_datetime"] == nxt


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    combo=st.sampled_from(DST_COMBOS),
    microseconds=st.integers(min_value=-4 * 3600 * 10**6, max_value=4 * 3600 * 10**6),
)
def test_now_around_a_dst_change_matches_reference(
    combo: tuple[str, str, datetime], microseconds: int
) -> None:
    # within 4 h of the clock change: the skipped and the repeated wall times
    key, zone, centre = combo
    ref = reference(key, zone, centre)
    check_neighbours(key, zone, ref, centre + timedelta(microseconds=microseconds))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(combo=st.sampled_from(COMBOS), fraction=st.floats(min_value=0.0, max_value=1.0))
def test_random_now_matches_reference(combo: tuple[str, str, datetime], fraction: float) -> None:
    key, zone, centre = combo
    ref = reference(key, zone, centre)
    now = ref.start + (ref.stop - ref.start) * fraction
    check_neighbours(key, zone, ref, now)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    combo=st.sampled_from(DST_COMBOS),
    position=st.floats(min_value=0.0, max_value=1.0),
    nudge=st.sampled_from(
        [timedelta(0), -US, US, -timedelta(seconds=1), timedelta(seconds=59), -ONE_MINUTE,
         timedelta(minutes=30), -timedelta(minutes=30), timedelta(hours=1), -timedelta(hours=1)]
    ),
)
def test_now_near_a_tick_matches_reference(
    combo: tuple[str, str, datetime], position: float, nudge: timedelta
) -> None:
    key, zone, centre = combo
    ref = reference(key, zone, centre)
    assume(ref.ticks)
    tick = ref.ticks[round(position * (len(ref.ticks) - 1))]
    check_neighbours(key, zone, ref, tick + nudge)


BACKFILL_ZONES = ["UTC", *DST_ZONES]


# ---------------------------------------------------------------------------------------------
# Backfill month/year steps never drift
# ---------------------------------------------------------------------------------------------


def clamped(year: int, month: int, day: int) -> date:
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


def month_plus(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + month - 1 + months
    return index // 12, index % 12 + 1


@settings(max_examples=300, deadline=None)
@given(
    year=st.integers(min_value=1990, max_value=2120),
    month=st.integers(min_value=1, max_value=12),
    day=st.integers(min_value=1, max_value=31),
    minute=st.integers(min_value=0, max_value=59),
    kind=st.sampled_from(["month", "year"]),
    units=st.integers(min_value=1, max_value=3),
    count=st.integers(min_value=1, max_value=30),
    zone=st.sampled_from(BACKFILL_ZONES),
)
def test_backfill_month_steps_anchor_to_the_start_day(
    year: int, month: int, day: int, minute: int, kind: str, units: int, count: int, zone: str
) -> None:
    assume(day <= calendar.monthrange(year, month)[1])
    tz = zone_of(zone)
    # 12:xx local never falls in a DST change in these zones
    start = datetime(year, month, day, 12, minute, tzinfo=tz)
    step = units * (12 if kind == "year" else 1)

    def expected(i: int) -> datetime:
        y, m = month_plus(year, month, step * i)
        d = clamped(y, m, day)
        return datetime(d.year, d.month, d.day, 12, minute, tzinfo=tz).astimezone(UTC)

    runs = timing.expand_backfill(start, expected(count - 1), kind, units, zone)
    assert [run.execution_date for run in runs] == [expected(i) for i in range(count)]
    assert runs[-1].interval_end_datetime == expected(count)
    for i, run in enumerate(runs):
        local = run.execution_date.astimezone(tz)
        y, m = month_plus(year, month, step * i)
        assert local.date() == clamped(y, m, day)  # date i == start's day clamped in month i
        assert (local.hour, local.minute) == (12, minute)
        assert run.ds == local.strftime("%Y-%m-%d")


@settings(max_examples=100, deadline=None)
@given(
    start_day=st.dates(min_value=date(2023, 1, 1), max_value=date(2025, 12, 1)),
    hour=st.integers(min_value=4, max_value=22),
    count=st.integers(min_value=1, max_value=60),
    zone=st.sampled_from(BACKFILL_ZONES),
)
def test_backfill_day_steps_keep_wall_time(
    start_day: date, hour: int, count: int, zone: str
) -> None:
    # hours 04-22 are never skipped or repeated in these zones (Santiago repeats 23:xx)
    tz = zone_of(zone)
    start = datetime(start_day.year, start_day.month, start_day.day, hour, tzinfo=tz)
    last_day = start_day + timedelta(days=count - 1)
    end = datetime(last_day.year, last_day.month, last_day.day, hour, tzinfo=tz)
    runs = timing.expand_backfill(start, end, "day", 1, zone)
    assert len(runs) == count
    for i, run in enumerate(runs):
        local = run.execution_date.astimezone(tz)
        assert local.date() == start_day + timedelta(days=i)
        assert local.hour == hour
        assert run.hr == f"{hour:02d}"
    assert runs[-1].interval_end_datetime.astimezone(tz).date() == last_day + timedelta(days=1)
