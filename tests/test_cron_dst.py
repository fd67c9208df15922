"""Cron across DST as ISC (Vixie) cron does it, and cron fields that mean what they say.

DESIGN §4: a job whose minute *and* hour fields are both fixed (no ``*`` in either;
``@daily``/``@weekly``/``@monthly`` count as fixed) is *time-specific*: a wall time skipped by
spring-forward runs once, right when the gap ends; a wall time repeated by fall-back runs once, at
its first occurrence. Every other job (``*`` in the minute or hour field, ``@hourly``) runs on the
new wall clock: skipped wall times do not happen, repeated ones happen twice.

Every expected value is a literal UTC instant worked out by hand from the zone's offsets:

* America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT at 07:00Z;
  2026-11-01 02:00 EDT -> 01:00 EST at 06:00Z (01:00-01:59 happens twice).
* Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST at 01:00Z;
  2026-10-25 03:00 CEST -> 02:00 CET at 01:00Z (02:00-02:59 happens twice).
* America/Santiago (changes at midnight): 2026-09-06 00:00 -04 -> 01:00 -03 at 04:00Z
  (00:00-00:59 of 09-06 is skipped); 2026-04-05 00:00 -03 -> 2026-04-04 23:00 -04 at 03:00Z
  (23:00-23:59 of 04-04 happens twice).
* Australia/Sydney: 2026-10-04 02:00 AEST -> 03:00 AEDT at 2026-10-03 16:00Z;
  2026-04-05 03:00 AEDT -> 02:00 AEST at 2026-04-04 16:00Z (02:00-02:59 happens twice).
* Australia/Lord_Howe (30 minutes): 2026-10-04 02:00 LHST -> 02:30 LHDT at 2026-10-03 15:30Z;
  2026-04-05 02:00 LHDT -> 01:30 LHST at 2026-04-04 15:00Z (01:30-01:59 happens twice).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from cronsim import CronSim
from hypothesis import given, settings
from hypothesis import strategies as st

from mage_nb_sched.core import timing
from mage_nb_sched.core.errors import ValidationError
from mage_nb_sched.core.timing import ScheduleTiming

NY = "America/New_York"
BERLIN = "Europe/Berlin"
SANTIAGO = "America/Santiago"
SYDNEY = "Australia/Sydney"
LORD_HOWE = "Australia/Lord_Howe"
US = timedelta(microseconds=1)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


def ticks(interval: str, zone: str, after: datetime, until: datetime) -> list[datetime]:
    return list(timing.cadence_for(interval, zone).ticks_between(after, until))


# =============================================================================================
# The three measured bugs (each failed before the DST rule was implemented)
# =============================================================================================


def test_hourly_minute_cron_has_no_extra_run_on_spring_forward() -> None:
    # 01:20 EST = 06:20Z; 02:20 does not exist, so no run; 03:20 EDT = 07:20Z.
    # The old rule ran 02:20 at the gap's end (07:00Z), an extra run.
    assert ticks("20 * * * *", NY, utc(2026, 3, 8, 6), utc(2026, 3, 8, 8)) == [
        utc(2026, 3, 8, 6, 20), utc(2026, 3, 8, 7, 20)
    ]
    sched = ScheduleTiming("20 * * * *", timezone=NY)
    assert timing.current_execution_date(sched, utc(2026, 3, 8, 7, 10)) == utc(2026, 3, 8, 6, 20)
    assert timing.next_execution_date(sched, utc(2026, 3, 8, 6, 30)) == utc(2026, 3, 8, 7, 20)


def test_half_hourly_cron_runs_the_repeated_hour_twice_on_fall_back() -> None:
    # 01:00 and 01:30 happen in EDT (05:00Z, 05:30Z) and again in EST (06:00Z, 06:30Z)
    assert ticks("*/30 * * * *", NY, utc(2026, 11, 1, 4, 45), utc(2026, 11, 1, 7)) == [
        utc(2026, 11, 1, 5), utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6),
        utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 7),
    ]
    sched = ScheduleTiming("*/30 * * * *", timezone=NY)
    assert timing.current_execution_date(sched, utc(2026, 11, 1, 6, 10)) == utc(2026, 11, 1, 6)
    assert timing.next_execution_date(sched, utc(2026, 11, 1, 5, 40)) == utc(2026, 11, 1, 6)
    # the 25-hour local day 2026-11-01 (04:00Z .. 05:00Z next day) has 50 half-hour runs
    assert len(ticks("*/30 * * * *", NY, utc(2026, 11, 1, 4) - US, utc(2026, 11, 2, 5) - US)) == 50


def test_quarter_hourly_in_one_hour_runs_eight_times_on_fall_back_day() -> None:
    # Berlin 2026-10-25: 02:00-02:45 CEST = 00:00-00:45Z, 02:00-02:45 CET = 01:00-01:45Z
    expected = [utc(2026, 10, 25, h, m) for h in (0, 1) for m in (0, 15, 30, 45)]
    day = ticks("*/15 2 * * *", BERLIN, utc(2026, 10, 24, 22) - US, utc(2026, 10, 25, 23) - US)
    assert day == expected
    sched = ScheduleTiming("*/15 2 * * *", timezone=BERLIN)
    now = utc(2026, 10, 25, 1, 20)
    assert timing.current_execution_date(sched, now) == utc(2026, 10, 25, 1, 15)
    assert timing.next_execution_date(sched, utc(2026, 10, 25, 0, 50)) == utc(2026, 10, 25, 1)


# =============================================================================================
# Time-specific jobs vs. wall-clock jobs
# =============================================================================================

# (interval, zone, after, until, expected ticks in (after, until])
DST_SEQUENCES = [
    # ---- wall-clock jobs: skipped wall times do not happen
    ("*/15 2 * * *", BERLIN, utc(2026, 3, 28, 12), utc(2026, 3, 29, 12), []),
    ("0 * * * *", NY, utc(2026, 3, 8, 5, 30), utc(2026, 3, 8, 8),
     [utc(2026, 3, 8, 6), utc(2026, 3, 8, 7), utc(2026, 3, 8, 8)]),  # 01 EST, 03 EDT, 04 EDT
    ("@hourly", NY, utc(2026, 11, 1, 4, 30), utc(2026, 11, 1, 7),
     [utc(2026, 11, 1, 5), utc(2026, 11, 1, 6), utc(2026, 11, 1, 7)]),  # 01 EDT, 01 EST, 02 EST
    ("5 * * * *", SYDNEY, utc(2026, 10, 3, 14), utc(2026, 10, 3, 17),
     [utc(2026, 10, 3, 14, 5), utc(2026, 10, 3, 15, 5), utc(2026, 10, 3, 16, 5)]),  # 00:05,
    # 01:05 AEST, 02:05 missing, 03:05 AEDT
    ("5 * * * *", SYDNEY, utc(2026, 4, 4, 14), utc(2026, 4, 4, 18),
     [utc(2026, 4, 4, 14, 5), utc(2026, 4, 4, 15, 5), utc(2026, 4, 4, 16, 5),
      utc(2026, 4, 4, 17, 5)]),  # 01:05 AEDT, 02:05 AEDT, 02:05 AEST, 03:05 AEST
    # Lord Howe: 01:45 happens twice (14:45Z LHDT, 15:15Z LHST); 02:15 is skipped in spring
    ("45 * * * *", LORD_HOWE, utc(2026, 4, 4, 13), utc(2026, 4, 4, 16),
     [utc(2026, 4, 4, 13, 45), utc(2026, 4, 4, 14, 45), utc(2026, 4, 4, 15, 15)]),
    ("15 * * * *", LORD_HOWE, utc(2026, 10, 3, 14), utc(2026, 10, 3, 17),
     [utc(2026, 10, 3, 14, 45), utc(2026, 10, 3, 16, 15)]),  # 01:15 LHST, 03:15 LHDT
    # Santiago: midnight hour skipped in September, 23:xx repeated in April
    ("30 * * * *", SANTIAGO, utc(2026, 9, 6, 3), utc(2026, 9, 6, 5),
     [utc(2026, 9, 6, 3, 30), utc(2026, 9, 6, 4, 30)]),  # 23:30 -04, (00:30 missing), 01:30 -03
    ("30 * * * *", SANTIAGO, utc(2026, 4, 5, 2), utc(2026, 4, 5, 5),
     [utc(2026, 4, 5, 2, 30), utc(2026, 4, 5, 3, 30), utc(2026, 4, 5, 4, 30)]),
    # ---- time-specific jobs: gap -> once at the gap's end; repeat -> first occurrence only
    ("30 2 * * *", NY, utc(2026, 3, 7), utc(2026, 3, 10),
     [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30)]),
    ("30 1 * * *", NY, utc(2026, 10, 31), utc(2026, 11, 3),
     [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]),
    # two wall times in the same gap still run once
    ("0,30 2 * * *", BERLIN, utc(2026, 3, 28, 12), utc(2026, 3, 30, 12),
     [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0), utc(2026, 3, 30, 0, 30)]),
    # a range and a list count as fixed: 2-3 o'clock on the Berlin fall-back day, once each
    ("0 2-3 * * *", BERLIN, utc(2026, 10, 24, 22), utc(2026, 10, 25, 3),
     [utc(2026, 10, 25, 0), utc(2026, 10, 25, 2)]),
    ("0 1,3 * * *", NY, utc(2026, 3, 8, 5), utc(2026, 3, 8, 8),
     [utc(2026, 3, 8, 6), utc(2026, 3, 8, 7)]),
    # @daily at a midnight that does not exist (Santiago September): at 01:00 -03 = 04:00Z
    ("@daily", SANTIAGO, utc(2026, 9, 5), utc(2026, 9, 7, 12),
     [utc(2026, 9, 5, 4), utc(2026, 9, 6, 4), utc(2026, 9, 7, 3)]),
    # @daily across the April repeat: 00:00 of 04-05 exists once (-04 = 04:00Z)
    ("@daily", SANTIAGO, utc(2026, 4, 3, 12), utc(2026, 4, 5, 12),
     [utc(2026, 4, 4, 3), utc(2026, 4, 5, 4)]),
    # 23:30 daily in Santiago on 04-04 happens twice; it runs at the first one (-03 = 02:30Z)
    ("30 23 * * *", SANTIAGO, utc(2026, 4, 4, 12), utc(2026, 4, 6, 12),
     [utc(2026, 4, 5, 2, 30), utc(2026, 4, 6, 3, 30)]),
    ("30 2 * * *", SYDNEY, utc(2026, 10, 2, 12), utc(2026, 10, 4, 16),
     [utc(2026, 10, 2, 16, 30), utc(2026, 10, 3, 16), utc(2026, 10, 4, 15, 30)]),
    ("30 2 * * *", SYDNEY, utc(2026, 4, 3, 12), utc(2026, 4, 5, 17),
     [utc(2026, 4, 3, 15, 30), utc(2026, 4, 4, 15, 30), utc(2026, 4, 5, 16, 30)]),
    ("15 2 * * *", LORD_HOWE, utc(2026, 10, 2, 12), utc(2026, 10, 4, 16),
     [utc(2026, 10, 2, 15, 45), utc(2026, 10, 3, 15, 30), utc(2026, 10, 4, 15, 15)]),
    ("45 1 * * *", LORD_HOWE, utc(2026, 4, 3, 12), utc(2026, 4, 5, 16),
     [utc(2026, 4, 3, 14, 45), utc(2026, 4, 4, 14, 45), utc(2026, 4, 5, 15, 15)]),
]


@pytest.mark.parametrize(("interval", "zone", "after", "until", "expected"), DST_SEQUENCES)
def test_dst_sequences(
    interval: str, zone: str, after: datetime, until: datetime, expected: list[datetime]
) -> None:
    cadence = timing.cadence_for(interval, zone)
    assert list(cadence.ticks_between(after, until)) == expected
    # walking back from `until` gives the same ticks, and each tick is its own period start
    backwards: list[datetime] = []
    cursor = cadence.tick_at_or_before(until)
    while cursor is not None and cursor > after:
        backwards.append(cursor)
        cursor = cadence.tick_at_or_before(cursor - US)
    assert backwards[::-1] == expected
    for tick in expected:
        assert cadence.tick_at_or_before(tick) == tick
        assert cadence.tick_at_or_before(tick + timedelta(seconds=59)) == tick
        assert cadence.tick_after(tick - US) == tick


@pytest.mark.parametrize(
    ("interval", "time_specific"),
    [
        ("5 4 * * *", True),
        ("1,3 2 * * *", True),
        ("0 2-4 * * *", True),
        ("0-59 0-23 * * *", True),  # no '*': every minute, but time-specific (as Vixie)
        ("30 2 * * 1-5", True),
        ("@daily", True),
        ("@weekly", True),
        ("@monthly", True),
        ("@hourly", False),
        ("* 2 * * *", False),
        ("*/15 2 * * *", False),
        ("5 * * * *", False),
        ("5 */2 * * *", False),
        ("* * * * *", False),
    ],
)
def test_time_specific_classification(interval: str, time_specific: bool) -> None:
    assert timing.compile_cron(interval).time_specific is time_specific


def test_interval_variables_follow_the_repeated_hour() -> None:
    # @hourly in NY on 2026-11-01: the 01:00 EDT period is one hour long, then 01:00 EST
    sched = ScheduleTiming("@hourly", timezone=NY)
    variables = timing.interval_variables(sched, utc(2026, 11, 1, 5))
    assert variables["interval_end_datetime"] == utc(2026, 11, 1, 6)
    assert variables["interval_seconds"] == 3600
    assert variables["interval_start_datetime_previous"] == utc(2026, 11, 1, 4)
    assert timing.date_variables(utc(2026, 11, 1, 6), NY) == {"ds": "2026-11-01", "hr": "01"}


def test_catchup_over_a_fall_back_runs_every_wall_clock_period() -> None:
    sched = ScheduleTiming("@hourly", timezone=BERLIN)
    dates = timing.plan_catchup(sched, utc(2026, 10, 25, 2, 30),
                                last_execution_date=utc(2026, 10, 24, 23))
    # 02:00 CEST (00Z), 02:00 CET (01Z), 03:00 CET (02Z)
    assert dates == [utc(2026, 10, 25, 0), utc(2026, 10, 25, 1), utc(2026, 10, 25, 2)]
    daily = ScheduleTiming("30 2 * * *", timezone=BERLIN)
    last = utc(2026, 10, 23, 0, 30)
    assert timing.plan_catchup(daily, utc(2026, 10, 27), last_execution_date=last) == [
        utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)
    ]


def test_hourly_landing_time_in_the_repeated_hour_stays_in_its_period() -> None:
    # landing at :30; the 01:00 EST period (06:00Z) lands at 01:30 EST (06:30Z), not at the
    # first 01:30 (EDT, 05:30Z), which belongs to the previous period
    sched = ScheduleTiming("@hourly", timezone=NY, start_time=utc(2026, 1, 1, 0, 30),
                           landing_time_enabled=True)
    assert timing.landing_target(sched, utc(2026, 11, 1, 5)) == utc(2026, 11, 1, 5, 30)
    assert timing.landing_target(sched, utc(2026, 11, 1, 6)) == utc(2026, 11, 1, 6, 30)
    assert timing.current_execution_date(sched, utc(2026, 11, 1, 6, 10)) == utc(2026, 11, 1, 6, 30)
    assert timing.next_execution_date(sched, utc(2026, 11, 1, 5, 10)) == utc(2026, 11, 1, 6, 30)


# =============================================================================================
# croniter 7 expands a one-value range N-N to '*': ours must not
# =============================================================================================


@pytest.mark.parametrize(
    ("expression", "minutes", "hours"),
    [
        ("5-5 * * * *", (5,), tuple(range(24))),
        ("9 2-2 * 3 0", (9,), (2,)),
        ("1-1,5-5 * * * *", (1, 5), tuple(range(24))),
        ("5-5/2 * * * *", (5,), tuple(range(24))),
        ("10-10/5 3-3/4 * * *", (10,), (3,)),
        ("0-0 0-0 * * *", (0,), (0,)),
        ("59-59 23-23 * * *", (59,), (23,)),
        ("1-1,3-4,7 * * * *", (1, 3, 4, 7), tuple(range(24))),
        ("5-6 * * * *", (5, 6), tuple(range(24))),  # a real range is unchanged
    ],
)
def test_one_value_ranges_mean_that_value(
    expression: str, minutes: tuple[int, ...], hours: tuple[int, ...]
) -> None:
    spec = timing.compile_cron(expression)
    assert spec.minutes == minutes
    assert spec.hours == hours


def test_one_value_ranges_in_day_month_and_weekday_fields() -> None:
    spec = timing.compile_cron("9 2-2 * 3-3 0-0")
    assert spec.months == frozenset({3})
    assert spec.weekdays == frozenset({0})
    assert spec.weekdays_restricted
    assert timing.compile_cron("0 0 15-15 * *").days == frozenset({15})
    assert timing.compile_cron("0 0 * * 7-7").weekdays == frozenset({0})
    assert timing.compile_cron("0 0 * * mon-mon").weekdays == frozenset({1})
    assert timing.compile_cron("0 0 * jun-jun *").months == frozenset({6})
    assert timing.compile_cron("0 0 * * sun-0").weekdays == frozenset({0})
    # not one-value ranges: the whole week, and Saturday to Sunday
    assert timing.compile_cron("0 0 * * 0-7").weekdays == frozenset(range(7))
    assert timing.compile_cron("0 0 * * 6-7").weekdays == frozenset({6, 0})


def test_one_value_range_ticks() -> None:
    # fires at :05 of every hour, not every minute
    assert ticks("5-5 * * * *", "UTC", utc(2026, 1, 1), utc(2026, 1, 1, 2)) == [
        utc(2026, 1, 1, 0, 5), utc(2026, 1, 1, 1, 5)
    ]
    # 02:09 on Sundays in March, not hourly; 2026-03-01 and 2026-03-08 are Sundays
    assert ticks("9 2-2 * 3 0", "UTC", utc(2026, 2, 1), utc(2026, 3, 9)) == [
        utc(2026, 3, 1, 2, 9), utc(2026, 3, 8, 2, 9)
    ]
    assert ticks("1-1,5-5 * * * *", "UTC", utc(2026, 1, 1), utc(2026, 1, 1, 0, 59)) == [
        utc(2026, 1, 1, 0, 1), utc(2026, 1, 1, 0, 5)
    ]
    assert ticks("5-5/2 * * * *", "UTC", utc(2026, 1, 1), utc(2026, 1, 1, 1, 30)) == [
        utc(2026, 1, 1, 0, 5), utc(2026, 1, 1, 1, 5)
    ]
    # one-value hour ranges are fixed: time-specific across DST
    assert timing.compile_cron("0 2-2 * * *").time_specific


@pytest.mark.parametrize("given", ["5-5/0 * * * *", "60-60 * * * *", "0 24-24 * * *",
                                   "0 0 32-32 * *", "0 0 * 13-13 *", "0 0 * * 8-8"])
def test_bad_one_value_ranges_are_still_rejected(given: str) -> None:
    with pytest.raises(ValidationError) as info:
        timing.compile_cron(given)
    assert info.value.field == "schedule_interval"


# Field grammar for the comparison with cronsim (an independent parser): numbers, ascending
# ranges (one-value ranges included), steps on proper ranges and on '*', and lists of those.
# Not generated: a step on a one-value range (cronsim reads 'N-N/S' as 'N/S', i.e. N..max; that
# case is the table above) and day/weekday fields starting with '*' other than '*' itself
# (cronsim ANDs the two day fields then, as Vixie does; ours ORs -- see the report).
def _field(low: int, high: int) -> st.SearchStrategy[str]:
    number = st.integers(low, high)
    ranges = st.tuples(number, number).map(lambda ab: f"{min(ab)}-{max(ab)}")
    same = number.map(lambda n: f"{n}-{n}")
    proper = st.tuples(number, number).filter(lambda ab: ab[0] != ab[1]).map(
        lambda ab: f"{min(ab)}-{max(ab)}"
    )
    stepped = st.tuples(proper, st.integers(1, high - low + 1)).map(lambda rs: f"{rs[0]}/{rs[1]}")
    term = st.one_of(number.map(str), ranges, same, stepped)
    return st.one_of(st.just("*"), st.lists(term, min_size=1, max_size=4).map(",".join))


def _star_field(low: int, high: int) -> st.SearchStrategy[str]:
    return st.one_of(_field(low, high), st.integers(1, high - low + 1).map(lambda s: f"*/{s}"))


@settings(max_examples=400, deadline=None)
@given(minute=_star_field(0, 59), hour=_star_field(0, 23), day=_field(1, 28),
       month=_star_field(1, 12), weekday=_field(0, 6))
def test_field_expansion_matches_cronsim(
    minute: str, hour: str, day: str, month: str, weekday: str
) -> None:
    expression = f"{minute} {hour} {day} {month} {weekday}"
    spec = timing.compile_cron(expression)
    reference = CronSim(expression, datetime(2026, 1, 1))
    assert set(spec.minutes) == reference.minutes
    assert set(spec.hours) == reference.hours
    assert spec.months == reference.months
    if day != "*":
        assert spec.days == reference.days
    if weekday != "*":
        assert spec.weekdays == {w % 7 for w in reference.weekdays if isinstance(w, int)}
    # and the first few ticks agree (UTC: no DST involved)
    cadence = timing.cadence_for(expression)
    mine: list[datetime] = []
    cursor = utc(2026, 1, 1)
    for _ in range(3):
        tick = cadence.tick_after(cursor)
        assert tick is not None
        mine.append(tick.replace(tzinfo=None))
        cursor = tick
    assert mine == [next(reference) for _ in range(3)]
