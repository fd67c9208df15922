"""Property tests of ``mage_nb_sched.core.timing`` against a brute-force reference.

The reference does not use timing.py's cron engine. For one cron expression, one zone and one
window it

1. enumerates local wall-clock minutes in the window (naive datetimes) and keeps those for which
   ``croniter.croniter.match(expr, wall)`` is true;
2. maps each kept wall time to a UTC instant by the documented rule: a wall time that happens twice
   (DST fall-back) -> its first occurrence; a wall time that does not exist (DST gap) -> the instant
   the gap ends, found by scanning UTC minutes for the offset change;
3. dedupes and sorts the instants.

To keep the run short, the minutes tried per day are limited to the hours x minutes the expression's
own minute and hour fields allow (written out by hand in ``EXPRESSIONS``);
``test_candidate_minutes_cover_every_match`` checks that restriction against every minute of a day
on which the expression fires.
"""

from __future__ import annotations

import bisect
import calendar
from datetime import date, datetime, timedelta, timezone, tzinfo
from functools import cache
from typing import NamedTuple
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mage_nb_sched.core import timing

UTC = timezone.utc
ONE_MINUTE = timedelta(minutes=1)
US = timedelta(microseconds=1)


class Expr(NamedTuple):
    interval: str  # what the schedule stores
    hours: tuple[int, ...]  # hours the expression's hour field allows (by hand)
    minutes: tuple[int, ...]  # minutes its minute field allows (by hand)
    half_window_days: float  # `now` is drawn within +- this of the window centre
    fires_on: date  # a day on which it fires (for the candidate-coverage check)


ALL_HOURS = tuple(range(24))
EXPRESSIONS = {
    "@hourly": Expr("@hourly", ALL_HOURS, (0,), 1.5, date(2024, 1, 1)),
    "@daily": Expr("@daily", (0,), (0,), 1.5, date(2024, 1, 1)),
    "@weekly": Expr("@weekly", (0,), (0,), 8, date(2024, 1, 1)),  # a Monday
    "@monthly": Expr("@monthly", (0,), (0,), 35, date(2024, 2, 1)),
    "30 2 * * *": Expr("30 2 * * *", (2,), (30,), 1.5, date(2024, 1, 1)),
    "*/20 1-3 * * *": Expr("*/20 1-3 * * *", (1, 2, 3), (0, 20, 40), 1.5, date(2024, 1, 1)),
    "0 0 L * *": Expr("0 0 L * *", (0,), (0,), 35, date(2024, 2, 29)),
    "15 10 * * 1#2": Expr("15 10 * * 1#2", (10,), (15,), 35, date(2024, 4, 8)),
    "0 12 1,15 * 5": Expr("0 12 1,15 * 5", (12,), (0,), 10, date(2024, 3, 1)),
}
ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe"]
# Window centres (local midnight): every DST change of the three zones in 2024, a leap day, a year
# end, a non-leap century February and a month end.
CENTRES = [
    date(2024, 3, 10),  # New York spring forward
    date(2024, 11, 3),  # New York fall back
    date(2024, 3, 31),  # Berlin spring forward
    date(2024, 10, 27),  # Berlin fall back
    date(2024, 10, 6),  # Lord Howe spring forward (30 min)
    date(2024, 4, 7),  # Lord Howe fall back (30 min)
    date(2024, 2, 29),
    date(2024, 1, 1),
    date(2100, 3, 1),
    date(2024, 5, 1),
]


def cron_text(interval: str) -> str:
    return timing.NAMED_CRON.get(interval, interval)


def zone_of(name: str) -> tzinfo:
    return UTC if name == "UTC" else ZoneInfo(name)


def wall(instant: datetime, zone: tzinfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


@cache
def cron_matches(expression: str, when: datetime) -> bool:
    return bool(croniter.match(expression, when))


class WallClock:
    """Wall time -> UTC instant for one zone over a range, from first principles."""

    def __init__(self, zone_name: str, first: datetime, last: datetime) -> None:
        self.zone = zone_of(zone_name)
        self.offsets: set[timedelta] = set()
        self.transitions: list[datetime] = []  # first UTC minute with the new offset
        cursor = (first - timedelta(days=2)).replace(tzinfo=UTC)
        stop = (last + timedelta(days=2)).replace(tzinfo=UTC)
        previous = cursor.astimezone(self.zone).utcoffset()
        while cursor < stop:
            step = cursor + timedelta(hours=1)
            offset = step.astimezone(self.zone).utcoffset()
            assert offset is not None and previous is not None
            self.offsets.update((previous, offset))
            if offset != previous:
                minute = cursor
                while minute.astimezone(self.zone).utcoffset() == previous:
                    minute += ONE_MINUTE
                self.transitions.append(minute)
            previous, cursor = offset, step

    def instant(self, local: datetime) -> datetime:
        occurrences = [
            candidate
            for candidate in ((local - offset).replace(tzinfo=UTC) for offset in self.offsets)
            if wall(candidate, self.zone) == local
        ]
        if occurrences:
            return min(occurrences)  # the first occurrence of a repeated wall time
        for change in self.transitions:
            before = wall(change - ONE_MINUTE, self.zone)
            if before < local < wall(change, self.zone):
                return change  # the wall time is in this gap: it fires when the gap ends
        raise AssertionError(f"{local} neither exists nor falls in a DST gap")


class Reference(NamedTuple):
    ticks: list[datetime]
    centre: datetime  # UTC instant of the window centre
    half: timedelta
    transitions: list[datetime]  # offset changes inside the window


@cache
def reference(key: str, zone_name: str, centre: date) -> Reference:
    expr = EXPRESSIONS[key]
    half = timedelta(days=expr.half_window_days)
    middle = datetime(centre.year, centre.month, centre.day)
    first, last = middle - 2 * half, middle + 2 * half
    clock = WallClock(zone_name, first, last)
    text = cron_text(expr.interval)
    instants = set()
    day = first.replace(hour=0, minute=0, second=0, microsecond=0)
    while day <= last:
        for hour in expr.hours:
            for minute in expr.minutes:
                local = day.replace(hour=hour, minute=minute)
                if first <= local <= last and cron_matches(text, local):
                    instants.add(clock.instant(local))
        day += timedelta(days=1)
    ticks = sorted(instants)
    changes = [t for t in clock.transitions if ticks and ticks[0] < t < ticks[-1]]
    return Reference(ticks, clock.instant(middle), half, changes)


COMBOS = [(key, zone, centre) for key in EXPRESSIONS for zone in ZONES for centre in CENTRES]
OWN_CHANGES = {
    "America/New_York": (date(2024, 3, 10), date(2024, 11, 3)),
    "Europe/Berlin": (date(2024, 3, 31), date(2024, 10, 27)),
    "Australia/Lord_Howe": (date(2024, 10, 6), date(2024, 4, 7)),
}
# windows centred on one of the zone's own DST changes
DST_COMBOS = [combo for combo in COMBOS if combo[2] in OWN_CHANGES.get(combo[1], ())]


def combo_id(combo: tuple[str, str, date]) -> str:
    key, zone, centre = combo
    return f"{key}|{zone}|{centre.isoformat()}"


# ---------------------------------------------------------------------------------------------
# The reference's own sanity
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(EXPRESSIONS))
def test_candidate_minutes_cover_every_match(key: str) -> None:
    expr = EXPRESSIONS[key]
    text = cron_text(expr.interval)
    start = datetime(expr.fires_on.year, expr.fires_on.month, expr.fires_on.day)
    matched = {
        (local.hour, local.minute)
        for local in (start + ONE_MINUTE * i for i in range(24 * 60))
        if croniter.match(text, local)
    }
    assert matched, f"{key} should fire on {expr.fires_on}"
    assert matched <= {(h, m) for h in expr.hours for m in expr.minutes}


def test_reference_wall_clock_rules() -> None:
    ny = WallClock("America/New_York", datetime(2024, 3, 1), datetime(2024, 11, 30))
    assert ny.instant(datetime(2024, 3, 10, 2, 30)) == datetime(2024, 3, 10, 7, tzinfo=UTC)
    assert ny.instant(datetime(2024, 11, 3, 1, 30)) == datetime(2024, 11, 3, 5, 30, tzinfo=UTC)
    lord_howe = WallClock("Australia/Lord_Howe", datetime(2024, 4, 1), datetime(2024, 10, 30))
    assert lord_howe.instant(datetime(2024, 10, 6, 2, 15)) == datetime(
        2024, 10, 5, 15, 30, tzinfo=UTC
    )
    assert lord_howe.instant(datetime(2024, 4, 7, 1, 45)) == datetime(
        2024, 4, 6, 14, 45, tzinfo=UTC
    )


# ---------------------------------------------------------------------------------------------
# Every tick of every window: nothing skipped, nothing repeated, walking both ways
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("combo", COMBOS, ids=combo_id)
def test_walk_matches_reference(combo: tuple[str, str, date]) -> None:
    key, zone, centre = combo
    ref = reference(key, zone, centre)
    assert len(ref.ticks) >= 2
    cadence = timing.cadence_for(EXPRESSIONS[key].interval, zone)
    forwards = list(cadence.ticks_between(ref.ticks[0] - US, ref.ticks[-1]))
    assert forwards == ref.ticks
    backwards = [ref.ticks[-1]]
    while len(backwards) < len(ref.ticks):
        backwards.append(cadence.tick_at_or_before(backwards[-1] - US))
    assert backwards[::-1] == ref.ticks


# ---------------------------------------------------------------------------------------------
# Random instants
# ---------------------------------------------------------------------------------------------

combos = st.sampled_from(COMBOS)


def check_neighbours(key: str, zone: str, ref: Reference, now: datetime) -> None:
    ticks = ref.ticks
    assume(ticks[0] <= now < ticks[-1])
    index = bisect.bisect_right(ticks, now)
    expected_prev, expected_next = ticks[index - 1], ticks[index]

    cadence = timing.cadence_for(EXPRESSIONS[key].interval, zone)
    prev = cadence.tick_at_or_before(now)
    nxt = cadence.tick_after(now)
    assert prev is not None and nxt is not None
    assert prev <= now < nxt
    assert (prev, nxt) == (expected_prev, expected_next)
    # contiguous: the tick after the current period's start is the next tick
    if now != prev:
        assert cadence.tick_after(prev) == nxt
    else:
        assert cadence.tick_after(now - US) == now
    assert cadence.tick_at_or_before(nxt - US) == prev
    # and the execution-date API says the same
    sched = timing.ScheduleTiming(EXPRESSIONS[key].interval, timezone=zone)
    assert timing.current_execution_date(sched, now) == prev
    assert timing.next_execution_date(sched, now) == nxt


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(combo=combos, fraction=st.floats(min_value=-1.0, max_value=1.0))
def test_random_now_matches_reference(combo: tuple[str, str, date], fraction: float) -> None:
    key, zone, centre = combo
    ref = reference(key, zone, centre)
    microseconds = int(ref.half / US * fraction)
    check_neighbours(key, zone, ref, ref.centre + timedelta(microseconds=microseconds))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    combo=combos,
    position=st.floats(min_value=0.0, max_value=1.0),
    nudge=st.sampled_from(
        [timedelta(0), -US, US, -timedelta(seconds=1), timedelta(seconds=59), -ONE_MINUTE,
         timedelta(minutes=30), -timedelta(minutes=30), timedelta(hours=1), -timedelta(hours=1)]
    ),
)
def test_now_near_a_tick_matches_reference(
    combo: tuple[str, str, date], position: float, nudge: timedelta
) -> None:
    key, zone, centre = combo
    ref = reference(key, zone, centre)
    tick = ref.ticks[round(position * (len(ref.ticks) - 1))]
    check_neighbours(key, zone, ref, tick + nudge)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    combo=st.sampled_from(DST_COMBOS),
    microseconds=st.integers(min_value=-3 * 3600 * 10**6, max_value=3 * 3600 * 10**6),
)
def test_now_around_a_dst_change_matches_reference(
    combo: tuple[str, str, date], microseconds: int
) -> None:
    # within 3 h of the clock change: the skipped and the repeated wall hours
    key, zone, centre = combo
    ref = reference(key, zone, centre)
    assert ref.transitions, "the window should contain the zone's clock change"
    change = min(ref.transitions, key=lambda t: abs(t - ref.centre))
    check_neighbours(key, zone, ref, change + timedelta(microseconds=microseconds))


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
    zone=st.sampled_from(ZONES),
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
    hour=st.integers(min_value=4, max_value=23),
    count=st.integers(min_value=1, max_value=60),
    zone=st.sampled_from(ZONES),
)
def test_backfill_day_steps_keep_wall_time(
    start_day: date, hour: int, count: int, zone: str
) -> None:
    # hours 04-23 are never skipped or repeated in these zones
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
