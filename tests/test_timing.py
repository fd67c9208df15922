"""Table-driven tests of the pure schedule time maths in ``mage_nb_sched.core.timing``.

Every expected value in these tables was worked out by hand (calendar + the zone's offsets) and is
written as a literal UTC instant; nothing here asks the code under test for an expectation.

Offsets used below:

* America/New_York: EST -05:00, EDT -04:00. 2024-03-10 02:00 EST -> 03:00 EDT (07:00Z);
  2024-11-03 02:00 EDT -> 01:00 EST (06:00Z), 01:00-02:00 happens twice.
* Europe/Berlin: CET +01:00, CEST +02:00. 2024-03-31 02:00 CET -> 03:00 CEST (01:00Z);
  2024-10-27 03:00 CEST -> 02:00 CET (01:00Z), 02:00-03:00 happens twice.
* Australia/Lord_Howe: LHST +10:30, LHDT +11:00 (a 30-minute shift).
  2024-10-06 02:00 LHST -> 02:30 LHDT (2024-10-05 15:30Z);
  2024-04-07 02:00 LHDT -> 01:30 LHST (2024-04-06 15:00Z), 01:30-02:00 happens twice.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import pytz

from mage_nb_sched.core import timing
from mage_nb_sched.core.datetimes import to_utc
from mage_nb_sched.core.errors import ValidationError
from mage_nb_sched.core.timing import ScheduleTiming

NY = "America/New_York"
BERLIN = "Europe/Berlin"
LORD_HOWE = "Australia/Lord_Howe"
UTC = "UTC"

US = timedelta(microseconds=1)


def utc(*parts: int) -> datetime:
    """A UTC-aware datetime from year, month, day[, hour, minute, second, microsecond]."""
    return datetime(*parts, tzinfo=timezone.utc)


def naive(*parts: int) -> datetime:
    return datetime(*parts)


# =============================================================================================
# Cadence: tick_at_or_before / tick_after
# =============================================================================================

# (interval, zone, now, expected tick_at_or_before(now), expected tick_after(now))
CADENCE_CASES = [
    # ---- @hourly, UTC
    ("@hourly", UTC, utc(2024, 3, 5, 10), utc(2024, 3, 5, 10), utc(2024, 3, 5, 11)),
    ("@hourly", UTC, utc(2024, 3, 5, 11) - US, utc(2024, 3, 5, 10), utc(2024, 3, 5, 11)),
    ("@hourly", UTC, utc(2024, 3, 5, 10, 30, 15), utc(2024, 3, 5, 10), utc(2024, 3, 5, 11)),
    ("@hourly", UTC, utc(2023, 12, 31, 23, 59), utc(2023, 12, 31, 23), utc(2024, 1, 1)),
    ("@hourly", UTC, utc(2024, 2, 29, 23, 0), utc(2024, 2, 29, 23), utc(2024, 3, 1)),
    # ---- @daily, UTC
    ("@daily", UTC, utc(2024, 2, 29), utc(2024, 2, 29), utc(2024, 3, 1)),
    ("@daily", UTC, utc(2024, 2, 29) - US, utc(2024, 2, 28), utc(2024, 2, 29)),
    ("@daily", UTC, utc(2024, 2, 29, 12), utc(2024, 2, 29), utc(2024, 3, 1)),
    ("@daily", UTC, utc(2100, 2, 28, 12), utc(2100, 2, 28), utc(2100, 3, 1)),  # 2100: no Feb 29
    ("@daily", UTC, utc(2023, 12, 31, 23, 59), utc(2023, 12, 31), utc(2024, 1, 1)),
    ("@daily", UTC, utc(2024, 1, 1), utc(2024, 1, 1), utc(2024, 1, 2)),
    ("@daily", UTC, utc(2024, 4, 30, 23, 59, 59, 999999), utc(2024, 4, 30), utc(2024, 5, 1)),
    # ---- @weekly (Monday 00:00); 2024-01-01 and 2024-02-26 are Mondays
    ("@weekly", UTC, utc(2024, 1, 1), utc(2024, 1, 1), utc(2024, 1, 8)),
    ("@weekly", UTC, utc(2024, 1, 1) - US, utc(2023, 12, 25), utc(2024, 1, 1)),
    ("@weekly", UTC, utc(2023, 12, 31, 23, 59), utc(2023, 12, 25), utc(2024, 1, 1)),
    ("@weekly", UTC, utc(2024, 2, 29, 12), utc(2024, 2, 26), utc(2024, 3, 4)),
    # ---- @monthly (the 1st 00:00)
    ("@monthly", UTC, utc(2024, 3, 1) - US, utc(2024, 2, 1), utc(2024, 3, 1)),
    ("@monthly", UTC, utc(2024, 3, 1), utc(2024, 3, 1), utc(2024, 4, 1)),
    ("@monthly", UTC, utc(2023, 12, 31, 23, 59), utc(2023, 12, 1), utc(2024, 1, 1)),
    ("@monthly", UTC, utc(2024, 1, 1), utc(2024, 1, 1), utc(2024, 2, 1)),
    # ---- cron: steps, ranges
    # Fri 2024-01-05 17:45 is the last tick of the week; next is Mon 2024-01-08 09:00.
    ("*/15 9-17 * * 1-5", UTC, utc(2024, 1, 5, 17, 45), utc(2024, 1, 5, 17, 45),
     utc(2024, 1, 8, 9)),
    ("*/15 9-17 * * 1-5", UTC, utc(2024, 1, 6, 12), utc(2024, 1, 5, 17, 45), utc(2024, 1, 8, 9)),
    ("*/15 9-17 * * 1-5", UTC, utc(2024, 1, 8, 9, 15) - US, utc(2024, 1, 8, 9),
     utc(2024, 1, 8, 9, 15)),
    ("*/15 9-17 * * 1-5", UTC, utc(2024, 1, 8, 8, 59), utc(2024, 1, 5, 17, 45),
     utc(2024, 1, 8, 9)),
    # names; 2024-03-29 is a Friday, 2025-01-01 a Wednesday
    ("0 9 * jan-mar mon-fri", UTC, utc(2024, 3, 29, 10), utc(2024, 3, 29, 9),
     utc(2025, 1, 1, 9)),
    ("0 9 * jan-mar mon-fri", UTC, utc(2024, 7, 1), utc(2024, 3, 29, 9), utc(2025, 1, 1, 9)),
    ("5 4 * * sun", UTC, utc(2024, 1, 1), utc(2023, 12, 31, 4, 5), utc(2024, 1, 7, 4, 5)),
    # a cron instant exactly on a tick belongs to the period that starts there (unlike Mage)
    ("30 2 * * *", UTC, utc(2024, 1, 1, 2, 30), utc(2024, 1, 1, 2, 30), utc(2024, 1, 2, 2, 30)),
    ("30 2 * * *", UTC, utc(2024, 1, 1, 2, 30) - US, utc(2023, 12, 31, 2, 30),
     utc(2024, 1, 1, 2, 30)),
    ("0 22 * * *", UTC, utc(2023, 12, 31, 23, 59), utc(2023, 12, 31, 22), utc(2024, 1, 1, 22)),
    # L = last day of the month
    ("0 0 L * *", UTC, utc(2024, 2, 15), utc(2024, 1, 31), utc(2024, 2, 29)),
    ("0 0 L * *", UTC, utc(2100, 2, 15), utc(2100, 1, 31), utc(2100, 2, 28)),
    ("0 0 L * *", UTC, utc(2024, 4, 30), utc(2024, 4, 30), utc(2024, 5, 31)),
    ("0 0 L * *", UTC, utc(2024, 4, 30) - US, utc(2024, 3, 31), utc(2024, 4, 30)),
    ("0 0 L * *", UTC, utc(2023, 12, 31, 23, 59), utc(2023, 12, 31), utc(2024, 1, 31)),
    # 1#2 = second Monday: 2024-03-11, 2024-04-08, 2024-05-13
    ("15 10 * * 1#2", UTC, utc(2024, 4, 8, 10, 15), utc(2024, 4, 8, 10, 15),
     utc(2024, 5, 13, 10, 15)),
    ("15 10 * * 1#2", UTC, utc(2024, 4, 8, 10, 15) - US, utc(2024, 3, 11, 10, 15),
     utc(2024, 4, 8, 10, 15)),
    ("15 10 * * 1#2", UTC, utc(2024, 4, 1, 10, 15), utc(2024, 3, 11, 10, 15),
     utc(2024, 4, 8, 10, 15)),  # first Monday does not match
    # dom + dow both restricted -> OR: the 1st, the 15th, and every Friday.
    # Fridays in March 2024: 1, 8, 15, 22, 29; 2024-04-01 is a Monday, 2024-04-05 a Friday.
    ("0 12 1,15 * 5", UTC, utc(2024, 3, 29, 12) + US, utc(2024, 3, 29, 12), utc(2024, 4, 1, 12)),
    ("0 12 1,15 * 5", UTC, utc(2024, 4, 2), utc(2024, 4, 1, 12), utc(2024, 4, 5, 12)),
    ("0 12 1,15 * 5", UTC, utc(2024, 4, 13), utc(2024, 4, 12, 12), utc(2024, 4, 15, 12)),
    # Feb 29 only
    ("0 0 29 2 *", UTC, utc(2024, 3, 1), utc(2024, 2, 29), utc(2028, 2, 29)),
    ("0 0 29 2 *", UTC, utc(2100, 1, 1), utc(2096, 2, 29), utc(2104, 2, 29)),
    # ---- zones, no DST involved
    # Berlin @daily: 2024-01-03 00:00 CET = 2024-01-02 23:00Z
    ("@daily", BERLIN, utc(2024, 1, 2, 23), utc(2024, 1, 2, 23), utc(2024, 1, 3, 23)),
    ("@daily", BERLIN, utc(2024, 1, 2, 23) - US, utc(2024, 1, 1, 23), utc(2024, 1, 2, 23)),
    # New York year end: 2024-01-01 00:00 EST = 05:00Z
    ("@daily", NY, utc(2024, 1, 1, 4, 59), utc(2023, 12, 31, 5), utc(2024, 1, 1, 5)),
    ("@monthly", NY, utc(2024, 1, 1, 5), utc(2024, 1, 1, 5), utc(2024, 2, 1, 5)),
    # Lord Howe in summer (+11): 2024-01-01 00:00 LHDT = 2023-12-31 13:00Z
    ("@daily", LORD_HOWE, utc(2023, 12, 31, 13), utc(2023, 12, 31, 13), utc(2024, 1, 1, 13)),
    # ---- zones across DST: @daily
    # NY spring forward: 03-10 00:00 EST = 05:00Z, 03-11 00:00 EDT = 04:00Z (a 23 h day)
    ("@daily", NY, utc(2024, 3, 10, 12), utc(2024, 3, 10, 5), utc(2024, 3, 11, 4)),
    # NY fall back: 11-03 00:00 EDT = 04:00Z, 11-04 00:00 EST = 05:00Z (a 25 h day)
    ("@daily", NY, utc(2024, 11, 3, 6, 30), utc(2024, 11, 3, 4), utc(2024, 11, 4, 5)),
    # Berlin: @monthly across the spring change (03-01 00:00 CET = 02-29 23:00Z,
    # 04-01 00:00 CEST = 03-31 22:00Z)
    ("@monthly", BERLIN, utc(2024, 3, 31, 12), utc(2024, 2, 29, 23), utc(2024, 3, 31, 22)),
    # ---- time-specific jobs (minute and hour fixed): a wall time in a spring-forward gap fires
    # once, at the instant the gap ends
    # NY: 03-09 02:30 EST = 07:30Z; 03-10 02:30 does not exist -> 03:00 EDT = 07:00Z;
    # 03-11 02:30 EDT = 06:30Z
    ("30 2 * * *", NY, utc(2024, 3, 10, 7) - US, utc(2024, 3, 9, 7, 30), utc(2024, 3, 10, 7)),
    ("30 2 * * *", NY, utc(2024, 3, 10, 7), utc(2024, 3, 10, 7), utc(2024, 3, 11, 6, 30)),
    # Berlin: 03-30 02:30 CET = 01:30Z; 03-31 02:30 missing -> 03:00 CEST = 01:00Z;
    # 04-01 02:30 CEST = 00:30Z
    ("30 2 * * *", BERLIN, utc(2024, 3, 31, 1) - US, utc(2024, 3, 30, 1, 30),
     utc(2024, 3, 31, 1)),
    ("30 2 * * *", BERLIN, utc(2024, 3, 31, 1), utc(2024, 3, 31, 1), utc(2024, 4, 1, 0, 30)),
    # Lord Howe: 02:15 on 10-06 is missing -> 02:30 LHDT = 10-05 15:30Z;
    # 10-05 02:15 LHST = 10-04 15:45Z; 10-07 02:15 LHDT = 10-06 15:15Z
    ("15 2 * * *", LORD_HOWE, utc(2024, 10, 5, 15, 30) - US, utc(2024, 10, 4, 15, 45),
     utc(2024, 10, 5, 15, 30)),
    ("15 2 * * *", LORD_HOWE, utc(2024, 10, 5, 15, 30), utc(2024, 10, 5, 15, 30),
     utc(2024, 10, 6, 15, 15)),
    # ---- time-specific jobs: wall times that happen twice fire at their first occurrence only
    # NY 01:30 on 11-03: 05:30Z (EDT, first) and 06:30Z (EST, second)
    ("30 1 * * *", NY, utc(2024, 11, 3, 6, 30), utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)),
    ("30 1 * * *", NY, utc(2024, 11, 3, 5, 30) - US, utc(2024, 11, 2, 5, 30),
     utc(2024, 11, 3, 5, 30)),
    # Berlin 02:30 on 10-27: 00:30Z (CEST, first) and 01:30Z (CET, second)
    ("30 2 * * *", BERLIN, utc(2024, 10, 27, 1, 30), utc(2024, 10, 27, 0, 30),
     utc(2024, 10, 28, 1, 30)),
    # Lord Howe 01:45 on 04-07: 04-06 14:45Z (LHDT, first) and 15:15Z (LHST, second)
    ("45 1 * * *", LORD_HOWE, utc(2024, 4, 6, 15, 15), utc(2024, 4, 6, 14, 45),
     utc(2024, 4, 7, 15, 15)),
    # ---- wall-clock jobs (a '*' in the minute or hour field, @hourly) run a repeated hour twice:
    # NY 01:00 EDT = 05:00Z and 01:00 EST = 06:00Z are both ticks
    ("@hourly", NY, utc(2024, 11, 3, 6, 30), utc(2024, 11, 3, 6), utc(2024, 11, 3, 7)),
    ("@hourly", NY, utc(2024, 11, 3, 5, 30), utc(2024, 11, 3, 5), utc(2024, 11, 3, 6)),
    ("*/20 1-3 * * *", NY, utc(2024, 11, 3, 6, 10), utc(2024, 11, 3, 6),
     utc(2024, 11, 3, 6, 20)),
    ("*/20 1-3 * * *", NY, utc(2024, 11, 3, 5, 50), utc(2024, 11, 3, 5, 40), utc(2024, 11, 3, 6)),
    ("*/20 1-3 * * *", NY, utc(2024, 11, 3, 5, 10), utc(2024, 11, 3, 5), utc(2024, 11, 3, 5, 20)),
    # ... and skip the wall times a spring-forward jump skips: 02:20 NY does not happen
    ("20 * * * *", NY, utc(2024, 3, 10, 7, 10), utc(2024, 3, 10, 6, 20),
     utc(2024, 3, 10, 7, 20)),
]


@pytest.mark.parametrize(("interval", "zone", "now", "prev", "nxt"), CADENCE_CASES)
def test_cadence_neighbours(
    interval: str, zone: str, now: datetime, prev: datetime, nxt: datetime
) -> None:
    cadence = timing.cadence_for(interval, zone)
    assert cadence.tick_at_or_before(now) == prev
    assert cadence.tick_after(now) == nxt
    assert prev <= now < nxt


@pytest.mark.parametrize(("interval", "zone", "now", "prev", "nxt"), CADENCE_CASES)
def test_current_and_next_execution_date(
    interval: str, zone: str, now: datetime, prev: datetime, nxt: datetime
) -> None:
    sched = ScheduleTiming(interval, timezone=zone)
    assert timing.current_execution_date(sched, now) == prev
    assert timing.next_execution_date(sched, now) == nxt
    assert timing.next_due_time(sched, now) == nxt


# Every tick of a window, walked with tick_after: nothing skipped, nothing repeated.
TICK_SEQUENCES = [
    # hourly across NY spring forward: 00:00 EST, 01:00 EST, 02:00 (missing) and 03:00 EDT
    # are the same instant (07:00Z), 04:00 EDT
    ("@hourly", NY, utc(2024, 3, 10, 5) - US, utc(2024, 3, 10, 8),
     [utc(2024, 3, 10, 5), utc(2024, 3, 10, 6), utc(2024, 3, 10, 7), utc(2024, 3, 10, 8)]),
    # hourly across NY fall back (wall clock): 00:00 EDT, 01:00 EDT, 01:00 EST, 02:00, 03:00 EST
    ("@hourly", NY, utc(2024, 11, 3, 4) - US, utc(2024, 11, 3, 8),
     [utc(2024, 11, 3, 4), utc(2024, 11, 3, 5), utc(2024, 11, 3, 6), utc(2024, 11, 3, 7),
      utc(2024, 11, 3, 8)]),
    ("@hourly", BERLIN, utc(2024, 3, 30, 23) - US, utc(2024, 3, 31, 2),
     [utc(2024, 3, 30, 23), utc(2024, 3, 31, 0), utc(2024, 3, 31, 1), utc(2024, 3, 31, 2)]),
    # Berlin fall back: 00:00, 01:00, 02:00 CEST, 02:00 CET, 03:00 CET
    ("@hourly", BERLIN, utc(2024, 10, 26, 22) - US, utc(2024, 10, 27, 2),
     [utc(2024, 10, 26, 22), utc(2024, 10, 26, 23), utc(2024, 10, 27, 0), utc(2024, 10, 27, 1),
      utc(2024, 10, 27, 2)]),
    # Lord Howe spring forward: 00:00, 01:00 LHST, 02:00 does not happen, 03:00, 04:00 LHDT
    ("@hourly", LORD_HOWE, utc(2024, 10, 5, 13, 30) - US, utc(2024, 10, 5, 17),
     [utc(2024, 10, 5, 13, 30), utc(2024, 10, 5, 14, 30), utc(2024, 10, 5, 16),
      utc(2024, 10, 5, 17)]),
    # Lord Howe fall back: 00:00, 01:00 LHDT, 02:00 LHST, 03:00 LHST
    ("@hourly", LORD_HOWE, utc(2024, 4, 6, 13) - US, utc(2024, 4, 6, 16, 30),
     [utc(2024, 4, 6, 13), utc(2024, 4, 6, 14), utc(2024, 4, 6, 15, 30), utc(2024, 4, 6, 16, 30)]),
    # Lord Howe */30 on the fall-back night (wall clock): 01:30 happens twice:
    # 01:00 LHDT 14:00Z, 01:30 LHDT 14:30Z, 01:30 LHST 15:00Z, 02:00 LHST 15:30Z, 02:30 16:00Z
    ("*/30 1-2 * * *", LORD_HOWE, utc(2024, 4, 6, 13), utc(2024, 4, 6, 16),
     [utc(2024, 4, 6, 14), utc(2024, 4, 6, 14, 30), utc(2024, 4, 6, 15), utc(2024, 4, 6, 15, 30),
      utc(2024, 4, 6, 16)]),
    # daily 02:30 runs exactly once on each change day
    ("30 2 * * *", NY, utc(2024, 3, 9), utc(2024, 3, 12),
     [utc(2024, 3, 9, 7, 30), utc(2024, 3, 10, 7), utc(2024, 3, 11, 6, 30)]),
    ("30 2 * * *", NY, utc(2024, 11, 2), utc(2024, 11, 5),
     [utc(2024, 11, 2, 6, 30), utc(2024, 11, 3, 7, 30), utc(2024, 11, 4, 7, 30)]),
    ("30 2 * * *", BERLIN, utc(2024, 3, 30), utc(2024, 4, 2),
     [utc(2024, 3, 30, 1, 30), utc(2024, 3, 31, 1), utc(2024, 4, 1, 0, 30)]),
    ("30 2 * * *", BERLIN, utc(2024, 10, 26), utc(2024, 10, 29),
     [utc(2024, 10, 26, 0, 30), utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)]),
    # Lord Howe 02:30 exists on 10-06 (the gap is 02:00-02:30): 02:30 LHDT = 10-05 15:30Z
    ("30 2 * * *", LORD_HOWE, utc(2024, 10, 4), utc(2024, 10, 7),
     [utc(2024, 10, 4, 16), utc(2024, 10, 5, 15, 30), utc(2024, 10, 6, 15, 30)]),
    # NY 01:30 daily across fall back: once, at the first 01:30 (EDT)
    ("30 1 * * *", NY, utc(2024, 11, 2), utc(2024, 11, 5),
     [utc(2024, 11, 2, 5, 30), utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)]),
    # Lord Howe 01:45 daily across fall back
    ("45 1 * * *", LORD_HOWE, utc(2024, 4, 5), utc(2024, 4, 8),
     [utc(2024, 4, 5, 14, 45), utc(2024, 4, 6, 14, 45), utc(2024, 4, 7, 15, 15)]),
    # NY */20 1-3 on spring forward: 01:00 01:20 01:40 EST, 02:xx does not happen (wall clock),
    # then 03:00 03:20 03:40 EDT
    ("*/20 1-3 * * *", NY, utc(2024, 3, 10), utc(2024, 3, 10, 12),
     [utc(2024, 3, 10, 6), utc(2024, 3, 10, 6, 20), utc(2024, 3, 10, 6, 40),
      utc(2024, 3, 10, 7), utc(2024, 3, 10, 7, 20), utc(2024, 3, 10, 7, 40)]),
    # L across a year end and a leap February
    ("0 0 L * *", UTC, utc(2023, 11, 30), utc(2024, 3, 31),
     [utc(2023, 12, 31), utc(2024, 1, 31), utc(2024, 2, 29), utc(2024, 3, 31)]),
]


@pytest.mark.parametrize(("interval", "zone", "after", "until", "expected"), TICK_SEQUENCES)
def test_tick_sequences(
    interval: str, zone: str, after: datetime, until: datetime, expected: list[datetime]
) -> None:
    cadence = timing.cadence_for(interval, zone)
    assert list(cadence.ticks_between(after, until)) == expected
    # and walking backwards from the last tick gives the same ticks in reverse
    backwards = [cadence.tick_at_or_before(until)]
    while len(backwards) < len(expected):
        backwards.append(cadence.tick_at_or_before(backwards[-1] - US))
    assert backwards[::-1] == expected
    for tick in expected:
        assert cadence.tick_at_or_before(tick) == tick
        assert cadence.tick_after(tick - US) == tick


def test_hourly_in_zones_never_repeats_an_instant() -> None:
    for zone in (NY, BERLIN, LORD_HOWE):
        cadence = timing.cadence_for("@hourly", zone)
        for start in (utc(2024, 3, 9), utc(2024, 3, 30), utc(2024, 4, 5), utc(2024, 10, 4),
                      utc(2024, 10, 26), utc(2024, 11, 2)):
            ticks = list(cadence.ticks_between(start, start + timedelta(days=3)))
            assert len(ticks) == len(set(ticks))
            assert ticks == sorted(ticks)
            # one tick per wall-clock hour that happens: a skipped hour has none, a repeated
            # one two, so 72 UTC hours hold 71 to 73 ticks (Lord Howe shifts by 30 minutes)
            assert 71 <= len(ticks) <= 73
            gaps = {b - a for a, b in itertools.pairwise(ticks)}
            assert gaps <= {timedelta(minutes=30), timedelta(hours=1), timedelta(minutes=90),
                            timedelta(hours=2)}


def test_cadence_for_is_cached_and_rejects_non_periodic() -> None:
    assert timing.cadence_for("@daily", BERLIN) is timing.cadence_for("@daily", BERLIN)
    for interval in ("@once", "@always_on"):
        with pytest.raises(ValidationError) as info:
            timing.cadence_for(interval)
        assert info.value.field == "schedule_interval"


# =============================================================================================
# resolve_wall_time
# =============================================================================================

RESOLVE_CASES = [
    (naive(2024, 7, 1, 12), NY, utc(2024, 7, 1, 16)),
    (naive(2024, 1, 1, 12), NY, utc(2024, 1, 1, 17)),
    (naive(2024, 1, 1, 12), UTC, utc(2024, 1, 1, 12)),
    # gaps -> the instant the gap ends
    (naive(2024, 3, 10, 2, 30), NY, utc(2024, 3, 10, 7)),
    (naive(2024, 3, 10, 2, 0), NY, utc(2024, 3, 10, 7)),
    (naive(2024, 3, 10, 2, 59, 59), NY, utc(2024, 3, 10, 7)),
    (naive(2024, 3, 10, 3, 0), NY, utc(2024, 3, 10, 7)),
    (naive(2024, 3, 31, 2, 30), BERLIN, utc(2024, 3, 31, 1)),
    (naive(2024, 10, 6, 2, 0), LORD_HOWE, utc(2024, 10, 5, 15, 30)),
    (naive(2024, 10, 6, 2, 15), LORD_HOWE, utc(2024, 10, 5, 15, 30)),
    (naive(2024, 10, 6, 2, 30), LORD_HOWE, utc(2024, 10, 5, 15, 30)),
    (naive(2024, 10, 6, 1, 59), LORD_HOWE, utc(2024, 10, 5, 15, 29)),
    # repeated -> the first occurrence
    (naive(2024, 11, 3, 1, 30), NY, utc(2024, 11, 3, 5, 30)),
    (naive(2024, 11, 3, 1, 0), NY, utc(2024, 11, 3, 5)),
    (naive(2024, 11, 3, 2, 0), NY, utc(2024, 11, 3, 7)),
    (naive(2024, 10, 27, 2, 30), BERLIN, utc(2024, 10, 27, 0, 30)),
    (naive(2024, 4, 7, 1, 45), LORD_HOWE, utc(2024, 4, 6, 14, 45)),
    (naive(2024, 4, 7, 1, 30), LORD_HOWE, utc(2024, 4, 6, 14, 30)),
    (naive(2024, 4, 7, 2, 0), LORD_HOWE, utc(2024, 4, 6, 15, 30)),
]


@pytest.mark.parametrize(("local", "zone", "expected"), RESOLVE_CASES)
def test_resolve_wall_time(local: datetime, zone: str, expected: datetime) -> None:
    tz = timezone.utc if zone == UTC else ZoneInfo(zone)
    assert timing.resolve_wall_time(local, tz) == expected
    assert timing.resolve_wall_time(local, timing.load_zone(zone)) == expected


# =============================================================================================
# decide (Mage's should_schedule)
# =============================================================================================

DAILY = ScheduleTiming("@daily")
NOW = utc(2024, 1, 2, 10)
TODAY = utc(2024, 1, 2)


def _exists_for(*dates: datetime) -> Callable[[datetime], bool]:
    return lambda execution_date: execution_date in dates


# (name, timing, now, decide kwargs, expected due, expected execution_date or ... for "any")
DECIDE_CASES = [
    ("inactive", DAILY, NOW, {"status": "inactive"}, False, None),
    ("active", DAILY, NOW, {"status": "active"}, True, TODAY),
    ("no interval", ScheduleTiming(None), NOW, {"status": "active"}, False, None),
    ("start_time in the future", ScheduleTiming("@daily", start_time=utc(2024, 1, 3)), NOW,
     {"status": "active"}, False, None),
    ("start_time == period start", ScheduleTiming("@daily", start_time=TODAY), NOW,
     {"status": "active"}, True, TODAY),
    ("now == start_time == boundary", ScheduleTiming("@daily", start_time=TODAY), TODAY,
     {"status": "active"}, True, TODAY),
    ("period starts before start_time",
     ScheduleTiming("@daily", start_time=utc(2024, 1, 2, 9)), NOW, {"status": "active"},
     False, TODAY),
    ("activated after period start",
     ScheduleTiming("@daily", last_enabled_at=utc(2024, 1, 2, 8)), NOW,
     {"status": "active"}, False, TODAY),
    ("activated after period start, create_initial_pipeline_run",
     ScheduleTiming("@daily", last_enabled_at=utc(2024, 1, 2, 8)), NOW,
     {"status": "active", "create_initial_pipeline_run": True}, True, TODAY),
    ("activated exactly at period start",
     ScheduleTiming("@daily", last_enabled_at=TODAY), NOW, {"status": "active"}, True, TODAY),
    ("activated before period start",
     ScheduleTiming("@daily", last_enabled_at=utc(2024, 1, 1, 12)), NOW,
     {"status": "active"}, True, TODAY),
    ("last_enabled_at None", ScheduleTiming("@daily", last_enabled_at=None), NOW,
     {"status": "active"}, True, TODAY),
    ("run exists", DAILY, NOW, {"status": "active", "run_exists_for": _exists_for(TODAY)},
     False, TODAY),
    ("run exists for another period", DAILY, NOW,
     {"status": "active", "run_exists_for": _exists_for(utc(2024, 1, 1))}, True, TODAY),
    ("@once, no run yet", ScheduleTiming("@once"), NOW, {"status": "active", "run_count": 0},
     True, NOW),
    ("@once, already ran", ScheduleTiming("@once"), NOW, {"status": "active", "run_count": 1},
     False, None),
    ("@once with start_time", ScheduleTiming("@once", start_time=utc(2024, 1, 2, 9)), NOW,
     {"status": "active"}, True, utc(2024, 1, 2, 9)),
    ("@once before start_time", ScheduleTiming("@once", start_time=utc(2024, 1, 2, 11)), NOW,
     {"status": "active"}, False, None),
    ("@once inactive", ScheduleTiming("@once"), NOW, {"status": "inactive"}, False, None),
    ("@always_on, first run", ScheduleTiming("@always_on"), NOW,
     {"status": "active", "run_count": 0}, True, NOW),
    ("@always_on, previous running", ScheduleTiming("@always_on"), NOW,
     {"status": "active", "run_count": 3, "last_run_status": "running"}, False, None),
    ("@always_on, previous initial", ScheduleTiming("@always_on"), NOW,
     {"status": "active", "run_count": 3, "last_run_status": "initial"}, False, None),
    ("@always_on, previous completed", ScheduleTiming("@always_on"), NOW,
     {"status": "active", "run_count": 3, "last_run_status": "completed"}, True, NOW),
    ("@always_on, previous failed", ScheduleTiming("@always_on"), NOW,
     {"status": "active", "run_count": 3, "last_run_status": "failed"}, True, NOW),
    # cron on its boundary is the period that starts there (Mage's cron path says the previous)
    ("cron on the boundary", ScheduleTiming("30 2 * * *"), utc(2024, 1, 2, 2, 30),
     {"status": "active"}, True, utc(2024, 1, 2, 2, 30)),
    ("cron one microsecond before the boundary", ScheduleTiming("30 2 * * *"),
     utc(2024, 1, 2, 2, 30) - US, {"status": "active"}, True, utc(2024, 1, 1, 2, 30)),
    # zone: 2024-01-03 00:30 CET -> the Berlin day that began 2024-01-02 23:00Z
    ("Berlin daily", ScheduleTiming("@daily", timezone=BERLIN), utc(2024, 1, 2, 23, 30),
     {"status": "active"}, True, utc(2024, 1, 2, 23)),
    # pytz-naive-attached start_time is not the point here; a naive now means UTC
    ("naive now", DAILY, datetime(2024, 1, 2, 10), {"status": "active"}, True, TODAY),
]


@pytest.mark.parametrize(
    ("timing_", "now", "kwargs", "due", "execution_date"),
    [case[1:] for case in DECIDE_CASES],
    ids=[case[0] for case in DECIDE_CASES],
)
def test_decide(
    timing_: ScheduleTiming, now: datetime, kwargs: dict, due: bool, execution_date: datetime
) -> None:
    decision = timing.decide(timing_, now, **kwargs)
    assert decision.due is due, decision.reason
    assert bool(decision) is due
    assert decision.execution_date == execution_date
    assert decision.reason


def test_decide_asks_run_exists_for_about_the_current_period() -> None:
    asked: list[datetime] = []

    def run_exists_for(execution_date: datetime) -> bool:
        asked.append(execution_date)
        return False

    assert timing.decide(DAILY, NOW, status="active", run_exists_for=run_exists_for)
    assert asked == [TODAY]


def test_decide_accepts_enum_status() -> None:
    from mage_nb_sched.core.enums import ScheduleStatus

    assert timing.decide(DAILY, NOW, status=ScheduleStatus.ACTIVE).due
    assert not timing.decide(DAILY, NOW, status=ScheduleStatus.INACTIVE).due


# =============================================================================================
# Landing time
# =============================================================================================

# (interval, zone, start_time, period start, expected landing target)
LANDING_TARGET_CASES = [
    ("@hourly", UTC, utc(2024, 1, 1, 0, 25, 10), utc(2024, 3, 5, 10), utc(2024, 3, 5, 10, 25, 10)),
    ("@daily", UTC, utc(2024, 1, 1, 9, 30), utc(2024, 2, 29), utc(2024, 2, 29, 9, 30)),
    # weekly: start_time on a Wednesday -> Wednesday of the period's week
    ("@weekly", UTC, utc(2024, 1, 3, 18), utc(2024, 2, 26), utc(2024, 2, 28, 18)),
    ("@weekly", UTC, utc(2024, 1, 7, 23), utc(2023, 12, 25), utc(2023, 12, 31, 23)),
    # monthly: day 31 clamps to the month end
    ("@monthly", UTC, utc(2024, 1, 31, 6), utc(2024, 2, 1), utc(2024, 2, 29, 6)),
    ("@monthly", UTC, utc(2024, 1, 31, 6), utc(2023, 2, 1), utc(2023, 2, 28, 6)),
    ("@monthly", UTC, utc(2024, 1, 31, 6), utc(2024, 4, 1), utc(2024, 4, 30, 6)),
    ("@monthly", UTC, utc(2024, 1, 31, 6), utc(2024, 3, 1), utc(2024, 3, 31, 6)),
    ("@monthly", UTC, utc(2024, 1, 15, 6), utc(2024, 2, 1), utc(2024, 2, 15, 6)),
    # zone: start_time 2024-01-01 08:00Z = 09:00 CET; in July 09:00 CEST = 07:00Z
    ("@daily", BERLIN, utc(2024, 1, 1, 8), utc(2024, 6, 30, 22), utc(2024, 7, 1, 7)),
    # landing at 02:30 NY on the spring-forward day -> the gap's end (07:00Z)
    ("@daily", NY, utc(2024, 1, 1, 7, 30), utc(2024, 3, 10, 5), utc(2024, 3, 10, 7)),
]


@pytest.mark.parametrize(("interval", "zone", "start", "period", "expected"),
                         LANDING_TARGET_CASES)
def test_landing_target(
    interval: str, zone: str, start: datetime, period: datetime, expected: datetime
) -> None:
    sched = ScheduleTiming(interval, timezone=zone, start_time=start, landing_time_enabled=True)
    assert sched.uses_landing_time
    assert timing.landing_target(sched, period) == expected


@pytest.mark.parametrize(
    ("runtimes", "lead"),
    [
        ((), 0),
        ((10.0,), 10),
        ((10.2,), 11),
        ((100.0, 200.0, 300.0), 250),  # mean 200, sample stdev 100 -> 200 + 50
        ((100.0, 101.0), 102),  # mean 100.5 -> 101, stdev 0.707 / 2 -> 1
        ((1.2, 1.2), 2),  # stdev 0
        ((60.0, 60.0, 60.0, 60.0, 60.0, 60.0, 120.0), 81),  # mean 68.57 -> 69; sd 22.68/2 -> 12
    ],
)
def test_landing_lead_seconds(runtimes: tuple[float, ...], lead: int) -> None:
    assert timing.landing_lead_seconds(runtimes) == lead


def test_landing_only_for_named_periodic_intervals() -> None:
    start = utc(2024, 1, 1, 9)
    assert not ScheduleTiming("0 9 * * *", start_time=start,
                              landing_time_enabled=True).uses_landing_time
    assert not ScheduleTiming("@once", start_time=start,
                              landing_time_enabled=True).uses_landing_time
    assert not ScheduleTiming("@daily", landing_time_enabled=True).uses_landing_time
    assert not ScheduleTiming("@daily", start_time=start).uses_landing_time


LANDING_DAILY = ScheduleTiming("@daily", start_time=utc(2024, 1, 1, 9), landing_time_enabled=True)
HOUR = [3600.0, 3600.0]  # lead 3600 s

# (name, timing, now, runtimes, due, execution_date, next_due_time, next_execution_date)
LANDING_CASES = [
    # no runtimes: the run is created as soon as the period begins
    ("no history, period start", LANDING_DAILY, utc(2024, 1, 2), (), True,
     utc(2024, 1, 2, 9), utc(2024, 1, 3), utc(2024, 1, 3, 9)),
    ("no history, just before the next period", LANDING_DAILY, utc(2024, 1, 3) - US, (), True,
     utc(2024, 1, 2, 9), utc(2024, 1, 3), utc(2024, 1, 3, 9)),
    ("first period == start_time day", LANDING_DAILY, utc(2024, 1, 1), (), True,
     utc(2024, 1, 1, 9), utc(2024, 1, 2), utc(2024, 1, 2, 9)),
    # with history: created at 09:00 - 1 h = 08:00
    ("lead not reached", LANDING_DAILY, utc(2024, 1, 2, 5), HOUR, False,
     utc(2024, 1, 2, 9), utc(2024, 1, 2, 8), utc(2024, 1, 3, 9)),
    ("lead reached exactly", LANDING_DAILY, utc(2024, 1, 2, 8), HOUR, True,
     utc(2024, 1, 2, 9), utc(2024, 1, 3, 8), utc(2024, 1, 3, 9)),
    ("after the landing time", LANDING_DAILY, utc(2024, 1, 2, 20), HOUR, True,
     utc(2024, 1, 2, 9), utc(2024, 1, 3, 8), utc(2024, 1, 3, 9)),
    # landing at 00:30 with a 1 h lead: created 23:30 the day before, inside the previous period
    ("creation in the previous period",
     ScheduleTiming("@daily", start_time=utc(2024, 1, 1, 0, 30), landing_time_enabled=True),
     utc(2024, 1, 2, 23, 45), HOUR, True, utc(2024, 1, 3, 0, 30), utc(2024, 1, 3, 23, 30),
     utc(2024, 1, 4, 0, 30)),
    # monthly landing on the 31st clamps: February 2024 lands on the 29th at 06:00
    ("monthly clamps to Feb 29",
     ScheduleTiming("@monthly", start_time=utc(2024, 1, 31, 6), landing_time_enabled=True),
     utc(2024, 2, 29, 5, 30), HOUR, True, utc(2024, 2, 29, 6), utc(2024, 3, 31, 5),
     utc(2024, 3, 31, 6)),
    ("monthly clamps to Apr 30, not reached",
     ScheduleTiming("@monthly", start_time=utc(2024, 1, 31, 6), landing_time_enabled=True),
     utc(2024, 4, 30, 4), HOUR, False, utc(2024, 4, 30, 6), utc(2024, 4, 30, 5),
     utc(2024, 5, 31, 6)),
    # hourly at :20 with a 10 minute lead (created :10)
    ("hourly",
     ScheduleTiming("@hourly", start_time=utc(2024, 1, 1, 0, 20), landing_time_enabled=True),
     utc(2024, 1, 5, 7, 15), (600.0,), True, utc(2024, 1, 5, 7, 20), utc(2024, 1, 5, 8, 10),
     utc(2024, 1, 5, 8, 20)),
    # weekly on Wednesdays 18:00 (start 2024-01-03); no history -> created Monday 00:00
    ("weekly, no history",
     ScheduleTiming("@weekly", start_time=utc(2024, 1, 3, 18), landing_time_enabled=True),
     utc(2024, 1, 8), (), True, utc(2024, 1, 10, 18), utc(2024, 1, 15), utc(2024, 1, 17, 18)),
    # a lead longer than the period: hourly landing at :05, runs take 2 h. The run landing at
    # 12:05 is created at 10:05, the one landing at 13:05 at 11:05.
    ("lead longer than the period",
     ScheduleTiming("@hourly", start_time=utc(2024, 1, 1, 0, 5), landing_time_enabled=True),
     utc(2024, 1, 1, 10, 30), (7200.0, 7200.0), True, utc(2024, 1, 1, 12, 5),
     utc(2024, 1, 1, 11, 5), utc(2024, 1, 1, 13, 5)),
]


@pytest.mark.parametrize(
    ("timing_", "now", "runtimes", "due", "execution_date", "due_time", "next_date"),
    [case[1:] for case in LANDING_CASES],
    ids=[case[0] for case in LANDING_CASES],
)
def test_landing_schedule(
    timing_: ScheduleTiming,
    now: datetime,
    runtimes: tuple[float, ...],
    due: bool,
    execution_date: datetime,
    due_time: datetime,
    next_date: datetime,
) -> None:
    assert timing.current_execution_date(timing_, now, runtimes) == execution_date
    decision = timing.decide(timing_, now, status="active", runtimes=runtimes)
    assert decision.due is due, decision.reason
    assert decision.execution_date == execution_date
    assert timing.next_due_time(timing_, now, runtimes) == due_time
    assert timing.next_execution_date(timing_, now, runtimes) == next_date


def test_landing_ignores_start_time_gate_but_not_the_first_period() -> None:
    # start_time 2024-01-05 09:00: on 2024-01-04 the landing target (01-04 09:00) is before it
    sched = ScheduleTiming("@daily", start_time=utc(2024, 1, 5, 9), landing_time_enabled=True)
    early = timing.decide(sched, utc(2024, 1, 4, 1), status="active")
    assert not early.due
    assert early.execution_date == utc(2024, 1, 4, 9)
    on_day = timing.decide(sched, utc(2024, 1, 5, 1), status="active")
    assert on_day.due
    assert on_day.execution_date == utc(2024, 1, 5, 9)


# =============================================================================================
# Catch-up
# =============================================================================================

CATCHUP_NOW = utc(2024, 1, 10, 12)


def days(*numbers: int) -> list[datetime]:
    return [utc(2024, 1, n) for n in numbers]


# (name, timing, last_execution_date, kwargs, expected)
CATCHUP_CASES = [
    ("missed three", DAILY, utc(2024, 1, 7), {}, days(8, 9, 10)),
    ("up to date", DAILY, utc(2024, 1, 10), {}, []),
    ("never ran, no bounds", DAILY, None, {}, days(10)),
    ("capped to the newest", DAILY, utc(2024, 1, 1), {"max_runs": 3}, days(8, 9, 10)),
    ("cap of one", DAILY, utc(2024, 1, 1), {"max_runs": 1}, days(10)),
    ("cap larger than the gap", DAILY, utc(2024, 1, 7), {"max_runs": 100}, days(8, 9, 10)),
    ("start_time mid-period", ScheduleTiming("@daily", start_time=utc(2024, 1, 8, 12)),
     utc(2024, 1, 1), {}, days(9, 10)),
    ("start_time on a boundary", ScheduleTiming("@daily", start_time=utc(2024, 1, 8)),
     utc(2024, 1, 1), {}, days(8, 9, 10)),
    ("never ran, start_time", ScheduleTiming("@daily", start_time=utc(2024, 1, 8)), None, {},
     days(8, 9, 10)),
    ("start_time in the future", ScheduleTiming("@daily", start_time=utc(2024, 1, 11)), None, {},
     []),
    ("activation mid-period", ScheduleTiming("@daily", last_enabled_at=utc(2024, 1, 9, 6)),
     utc(2024, 1, 1), {}, days(10)),
    ("activation, create_initial_pipeline_run",
     ScheduleTiming("@daily", last_enabled_at=utc(2024, 1, 9, 6)), utc(2024, 1, 1),
     {"create_initial_pipeline_run": True}, days(2, 3, 4, 5, 6, 7, 8, 9, 10)),
    ("never ran, activation", ScheduleTiming("@daily", last_enabled_at=utc(2024, 1, 7, 12)), None,
     {}, days(8, 9, 10)),
    ("start_time and activation: the later wins",
     ScheduleTiming("@daily", start_time=utc(2024, 1, 5), last_enabled_at=utc(2024, 1, 8, 1)),
     utc(2024, 1, 1), {}, days(9, 10)),
    # hourly in NY across fall back: 04:00Z (00 EDT), 05:00Z (01 EDT), 06:00Z (01 EST),
    # 07:00Z (02 EST), 08:00Z (03 EST) -- @hourly follows the wall clock
    ("hourly across fall back", ScheduleTiming("@hourly", timezone=NY), utc(2024, 11, 3, 3),
     {"now": utc(2024, 11, 3, 8, 30)},
     [utc(2024, 11, 3, 4), utc(2024, 11, 3, 5), utc(2024, 11, 3, 6), utc(2024, 11, 3, 7),
      utc(2024, 11, 3, 8)]),
    ("monthly over a year end", ScheduleTiming("@monthly"), utc(2023, 10, 1),
     {"now": utc(2024, 2, 29, 23)},
     [utc(2023, 11, 1), utc(2023, 12, 1), utc(2024, 1, 1), utc(2024, 2, 1)]),
    ("@once", ScheduleTiming("@once", start_time=utc(2024, 1, 3)), None, {}, [utc(2024, 1, 3)]),
]


@pytest.mark.parametrize(
    ("timing_", "last", "kwargs", "expected"),
    [case[1:] for case in CATCHUP_CASES],
    ids=[case[0] for case in CATCHUP_CASES],
)
def test_plan_catchup(
    timing_: ScheduleTiming, last: datetime | None, kwargs: dict, expected: list[datetime]
) -> None:
    kwargs = dict(kwargs)
    now = kwargs.pop("now", CATCHUP_NOW)
    assert timing.plan_catchup(timing_, now, last_execution_date=last, **kwargs) == expected


# =============================================================================================
# Run variables
# =============================================================================================

# (timing, execution_date, end, seconds, previous)
INTERVAL_VARIABLE_CASES = [
    (DAILY, utc(2024, 1, 2), utc(2024, 1, 3), 86400, utc(2024, 1, 1)),
    (ScheduleTiming("@hourly"), utc(2023, 12, 31, 23), utc(2024, 1, 1), 3600,
     utc(2023, 12, 31, 22)),
    (ScheduleTiming("@monthly"), utc(2024, 2, 1), utc(2024, 3, 1), 29 * 86400, utc(2024, 1, 1)),
    (ScheduleTiming("@monthly"), utc(2100, 2, 1), utc(2100, 3, 1), 28 * 86400, utc(2100, 1, 1)),
    (ScheduleTiming("@weekly"), utc(2024, 1, 1), utc(2024, 1, 8), 7 * 86400, utc(2023, 12, 25)),
    # the 23 hour NY day
    (ScheduleTiming("@daily", timezone=NY), utc(2024, 3, 10, 5), utc(2024, 3, 11, 4), 23 * 3600,
     utc(2024, 3, 9, 5)),
    # the 25 hour Berlin day
    (ScheduleTiming("@daily", timezone=BERLIN), utc(2024, 10, 26, 22), utc(2024, 10, 27, 23),
     25 * 3600, utc(2024, 10, 25, 22)),
    # Lord Howe spring forward day is 23.5 h
    (ScheduleTiming("@daily", timezone=LORD_HOWE), utc(2024, 10, 5, 13, 30), utc(2024, 10, 6, 13),
     23 * 3600 + 1800, utc(2024, 10, 4, 13, 30)),
    (ScheduleTiming("0 0 L * *"), utc(2024, 1, 31), utc(2024, 2, 29), 29 * 86400,
     utc(2023, 12, 31)),
]


@pytest.mark.parametrize(("timing_", "execution_date", "end", "seconds", "previous"),
                         INTERVAL_VARIABLE_CASES)
def test_interval_variables(
    timing_: ScheduleTiming,
    execution_date: datetime,
    end: datetime,
    seconds: int,
    previous: datetime,
) -> None:
    assert timing.interval_variables(timing_, execution_date) == {
        "interval_start_datetime": execution_date,
        "interval_end_datetime": end,
        "interval_seconds": seconds,
        "interval_start_datetime_previous": previous,
    }


def test_interval_variables_non_periodic() -> None:
    for interval in ("@once", "@always_on"):
        assert timing.interval_variables(ScheduleTiming(interval), NOW) == {
            "interval_start_datetime": NOW,
            "interval_end_datetime": None,
            "interval_seconds": None,
            "interval_start_datetime_previous": None,
        }


@pytest.mark.parametrize(
    ("execution_date", "zone", "ds", "hr"),
    [
        (utc(2024, 1, 2, 13), UTC, "2024-01-02", "13"),
        (utc(2024, 3, 10, 5), NY, "2024-03-10", "00"),
        (utc(2023, 12, 31, 23, 30), BERLIN, "2024-01-01", "00"),
        (utc(2024, 2, 29, 23), UTC, "2024-02-29", "23"),
        (utc(2024, 10, 5, 15, 30), LORD_HOWE, "2024-10-06", "02"),
        (utc(2024, 11, 3, 6, 30), NY, "2024-11-03", "01"),
    ],
)
def test_date_variables(execution_date: datetime, zone: str, ds: str, hr: str) -> None:
    assert timing.date_variables(execution_date, zone) == {"ds": ds, "hr": hr}


# =============================================================================================
# Backfills
# =============================================================================================

# (start, end, interval_type, units, zone, expected execution dates, expected last interval end)
BACKFILL_CASES = [
    (utc(2024, 1, 1), utc(2024, 1, 3), "day", 1, UTC,
     [utc(2024, 1, 1), utc(2024, 1, 2), utc(2024, 1, 3)], utc(2024, 1, 4)),
    (utc(2024, 1, 1), utc(2024, 1, 1), "day", 1, UTC, [utc(2024, 1, 1)], utc(2024, 1, 2)),
    (utc(2024, 1, 1), utc(2024, 1, 5), "day", 2, UTC,
     [utc(2024, 1, 1), utc(2024, 1, 3), utc(2024, 1, 5)], utc(2024, 1, 7)),
    (utc(2024, 1, 1), utc(2024, 1, 6), "day", 2, UTC,
     [utc(2024, 1, 1), utc(2024, 1, 3), utc(2024, 1, 5)], utc(2024, 1, 7)),
    (utc(2024, 1, 1), utc(2024, 1, 15), "week", 1, UTC,
     [utc(2024, 1, 1), utc(2024, 1, 8), utc(2024, 1, 15)], utc(2024, 1, 22)),
    (utc(2024, 1, 1), utc(2024, 1, 1, 2, 30), "hour", 1, UTC,
     [utc(2024, 1, 1), utc(2024, 1, 1, 1), utc(2024, 1, 1, 2)], utc(2024, 1, 1, 3)),
    (utc(2023, 12, 31, 23, 58), utc(2024, 1, 1, 0, 0), "minute", 1, UTC,
     [utc(2023, 12, 31, 23, 58), utc(2023, 12, 31, 23, 59), utc(2024, 1, 1)],
     utc(2024, 1, 1, 0, 1)),
    (utc(2024, 1, 1), utc(2024, 1, 1, 0, 0, 2), "second", 1, UTC,
     [utc(2024, 1, 1), utc(2024, 1, 1, 0, 0, 1), utc(2024, 1, 1, 0, 0, 2)],
     utc(2024, 1, 1, 0, 0, 3)),
    # month steps anchor to day 31 and clamp, never drifting to the 29th/30th
    (utc(2024, 1, 31), utc(2024, 5, 31), "month", 1, UTC,
     [utc(2024, 1, 31), utc(2024, 2, 29), utc(2024, 3, 31), utc(2024, 4, 30), utc(2024, 5, 31)],
     utc(2024, 6, 30)),
    (utc(2024, 1, 31), utc(2024, 4, 30), "month", 1, UTC,
     [utc(2024, 1, 31), utc(2024, 2, 29), utc(2024, 3, 31), utc(2024, 4, 30)], utc(2024, 5, 31)),
    (utc(2023, 11, 30, 6), utc(2024, 3, 1), "month", 1, UTC,
     [utc(2023, 11, 30, 6), utc(2023, 12, 30, 6), utc(2024, 1, 30, 6), utc(2024, 2, 29, 6)],
     utc(2024, 3, 30, 6)),
    (utc(2024, 1, 31), utc(2024, 7, 31), "month", 2, UTC,
     [utc(2024, 1, 31), utc(2024, 3, 31), utc(2024, 5, 31), utc(2024, 7, 31)], utc(2024, 9, 30)),
    # year steps from Feb 29
    (utc(2024, 2, 29), utc(2028, 3, 1), "year", 1, UTC,
     [utc(2024, 2, 29), utc(2025, 2, 28), utc(2026, 2, 28), utc(2027, 2, 28), utc(2028, 2, 29)],
     utc(2029, 2, 28)),
    (utc(2096, 2, 29), utc(2104, 2, 29), "year", 4, UTC,
     [utc(2096, 2, 29), utc(2100, 2, 28), utc(2104, 2, 29)], utc(2108, 2, 29)),
    # day steps keep 09:00 wall time in Berlin across spring forward (09:00 CET = 08:00Z,
    # 09:00 CEST = 07:00Z) ...
    (utc(2024, 3, 30, 8), utc(2024, 4, 1, 7), "day", 1, BERLIN,
     [utc(2024, 3, 30, 8), utc(2024, 3, 31, 7), utc(2024, 4, 1, 7)], utc(2024, 4, 2, 7)),
    # ... and across fall back
    (utc(2024, 10, 26, 7), utc(2024, 10, 28, 8), "day", 1, BERLIN,
     [utc(2024, 10, 26, 7), utc(2024, 10, 27, 8), utc(2024, 10, 28, 8)], utc(2024, 10, 29, 8)),
    # hour steps are exact durations even across the change
    (utc(2024, 3, 31, 0), utc(2024, 3, 31, 2), "hour", 1, BERLIN,
     [utc(2024, 3, 31, 0), utc(2024, 3, 31, 1), utc(2024, 3, 31, 2)], utc(2024, 3, 31, 3)),
]


@pytest.mark.parametrize(("start", "end", "kind", "units", "zone", "dates", "last_end"),
                         BACKFILL_CASES)
def test_expand_backfill(
    start: datetime,
    end: datetime,
    kind: str,
    units: int,
    zone: str,
    dates: list[datetime],
    last_end: datetime,
) -> None:
    runs = timing.expand_backfill(start, end, kind, units, zone)
    assert [run.execution_date for run in runs] == dates
    assert [run.interval_start_datetime for run in runs] == dates
    assert [run.interval_end_datetime for run in runs] == [*dates[1:], last_end]
    assert [run.interval_seconds for run in runs] == [
        int((b - a).total_seconds()) for a, b in itertools.pairwise([*dates, last_end])
    ]


def test_expand_backfill_variables_in_zone() -> None:
    runs = timing.expand_backfill(utc(2024, 3, 30, 8), utc(2024, 4, 1, 7), "day", 1, BERLIN)
    assert [(run.ds, run.hr) for run in runs] == [
        ("2024-03-30", "09"), ("2024-03-31", "09"), ("2024-04-01", "09")
    ]
    assert [run.interval_seconds for run in runs] == [23 * 3600, 24 * 3600, 24 * 3600]
    assert runs[0].as_dict() == {
        "execution_date": utc(2024, 3, 30, 8),
        "interval_start_datetime": utc(2024, 3, 30, 8),
        "interval_end_datetime": utc(2024, 3, 31, 7),
        "interval_seconds": 23 * 3600,
        "ds": "2024-03-30",
        "hr": "09",
    }


def test_expand_backfill_accepts_naive_and_pytz() -> None:
    berlin = pytz.timezone(BERLIN)
    runs = timing.expand_backfill(
        datetime(2024, 1, 1, 9, tzinfo=berlin),  # 09:00 Berlin wall time = 08:00Z
        berlin.localize(datetime(2024, 1, 2, 9)),
        "day",
        1,
        BERLIN,
    )
    assert [run.execution_date for run in runs] == [utc(2024, 1, 1, 8), utc(2024, 1, 2, 8)]
    runs = timing.expand_backfill(datetime(2024, 1, 1), datetime(2024, 1, 2), "day", 1)
    assert [run.execution_date for run in runs] == [utc(2024, 1, 1), utc(2024, 1, 2)]


@pytest.mark.parametrize(
    ("start", "end", "kind", "units", "zone", "field"),
    [
        (utc(2024, 1, 2), utc(2024, 1, 1), "day", 1, UTC, "end_datetime"),
        (utc(2024, 1, 1), utc(2024, 1, 1) - US, "second", 1, UTC, "end_datetime"),
        (utc(2024, 1, 1), utc(2024, 1, 2), "day", 0, UTC, "interval_units"),
        (utc(2024, 1, 1), utc(2024, 1, 2), "day", -1, UTC, "interval_units"),
        (utc(2024, 1, 1), utc(2024, 1, 2), "day", True, UTC, "interval_units"),
        (utc(2024, 1, 1), utc(2024, 1, 2), "day", 1.5, UTC, "interval_units"),
        (utc(2024, 1, 1), utc(2024, 1, 2), "fortnight", 1, UTC, "interval_type"),
        (utc(2024, 1, 1), utc(2024, 1, 2), "days", 1, UTC, "interval_type"),
        (utc(2024, 1, 1), utc(2024, 1, 2), "day", 1, "Mars/Olympus_Mons", "settings.timezone"),
        # far too many runs
        (utc(2020, 1, 1), utc(2024, 1, 1), "second", 1, UTC, "interval_type"),
    ],
)
def test_expand_backfill_rejects(
    start: datetime, end: datetime, kind: str, units: object, zone: str, field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        timing.expand_backfill(start, end, kind, units, zone)  # type: ignore[arg-type]
    assert info.value.field == field
    assert info.value.fix


def test_expand_backfill_accepts_enum_interval_type() -> None:
    from mage_nb_sched.core.enums import BackfillIntervalType

    runs = timing.expand_backfill(utc(2024, 1, 1), utc(2024, 1, 2), BackfillIntervalType.DAY, 1)
    assert [run.execution_date for run in runs] == [utc(2024, 1, 1), utc(2024, 1, 2)]


@pytest.mark.parametrize(
    ("local", "months", "expected"),
    [
        (naive(2024, 1, 31), 1, naive(2024, 2, 29)),
        (naive(2024, 1, 31), 2, naive(2024, 3, 31)),
        (naive(2024, 1, 31), 3, naive(2024, 4, 30)),
        (naive(2024, 3, 31), -1, naive(2024, 2, 29)),
        (naive(2023, 1, 31), 1, naive(2023, 2, 28)),
        (naive(2100, 1, 31), 1, naive(2100, 2, 28)),
        (naive(2023, 12, 15, 10, 30), 1, naive(2024, 1, 15, 10, 30)),
        (naive(2024, 1, 15, 10, 30), -13, naive(2022, 12, 15, 10, 30)),
        (naive(2024, 2, 29), 12, naive(2025, 2, 28)),
        (naive(2024, 2, 29), 48, naive(2028, 2, 29)),
        (naive(2024, 5, 31, 23, 59, 59, 999999), 0, naive(2024, 5, 31, 23, 59, 59, 999999)),
        (naive(2024, 12, 31), 1, naive(2025, 1, 31)),
    ],
)
def test_add_months(local: datetime, months: int, expected: datetime) -> None:
    assert timing.add_months(local, months) == expected


# =============================================================================================
# Interval validation / cron compilation
# =============================================================================================


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("@once", "@once"),
        ("@hourly", "@hourly"),
        ("@daily", "@daily"),
        ("@weekly", "@weekly"),
        ("@monthly", "@monthly"),
        ("@always_on", "@always_on"),
        ("0 0 * * *", "0 0 * * *"),
        ("  30   2 * *  * ", "30 2 * * *"),
        ("*/15 9-17 * * 1-5", "*/15 9-17 * * 1-5"),
        ("0 9 * jan-mar mon-fri", "0 9 * jan-mar mon-fri"),
        ("0 0 L * *", "0 0 L * *"),
        ("15 10 * * 1#2", "15 10 * * 1#2"),
        ("0 0 29 2 *", "0 0 29 2 *"),
    ],
)
def test_validate_interval_accepts(given: str, expected: str) -> None:
    assert timing.validate_interval(given) == expected


def test_validate_interval_accepts_enum() -> None:
    from mage_nb_sched.core.enums import ScheduleInterval

    assert timing.validate_interval(ScheduleInterval.WEEKLY) == "@weekly"
    assert timing.validate_interval(ScheduleInterval.ONCE) == "@once"


BAD_INTERVALS = [
    "",
    "   ",
    "@yearly",
    "@annually",
    "@every_minute",
    "61 * * * *",
    "* 24 * * *",
    "0 0 32 * *",
    "0 0 * 13 *",
    "0 0 30 2 *",  # never fires
    "0 0 31 4,6,9,11 *",  # never fires
    "0 0 * * * *",  # 6 fields
    "0 0 0 * * * *",
    "* * * *",
    "not a cron",
    "*/0 * * * *",
]


@pytest.mark.parametrize("given", [*BAD_INTERVALS, None, 5, ["0", "0", "*", "*", "*"]])
def test_validate_interval_rejects(given: object) -> None:
    with pytest.raises(ValidationError) as info:
        timing.validate_interval(given)
    assert info.value.field == "schedule_interval"
    assert info.value.fix


def test_validate_interval_custom_field_name() -> None:
    with pytest.raises(ValidationError) as info:
        timing.validate_interval("61 * * * *", "triggers[0].schedule_interval")
    assert info.value.field == "triggers[0].schedule_interval"


@pytest.mark.parametrize("given", BAD_INTERVALS)
def test_compile_cron_rejects(given: str) -> None:
    with pytest.raises(ValidationError) as info:
        timing.compile_cron(given)
    assert info.value.field == "schedule_interval"


@pytest.mark.parametrize("given", ["", "@yearly", "61 * * * *", "0 0 30 2 *", "0 0 * * * *"])
def test_cadence_for_rejects(given: str) -> None:
    with pytest.raises(ValidationError) as info:
        timing.cadence_for(given)
    assert info.value.field == "schedule_interval"


def test_compile_cron_fields() -> None:
    spec = timing.compile_cron("*/15 9-17 * * 1-5")
    assert spec.minutes == (0, 15, 30, 45)
    assert spec.hours == tuple(range(9, 18))
    assert spec.weekdays == frozenset({1, 2, 3, 4, 5})
    assert spec.weekdays_restricted
    assert not spec.days_restricted
    assert spec.months == frozenset(range(1, 13))

    named = timing.compile_cron("@daily")
    assert named.expression == "0 0 * * *"
    assert named.minutes == (0,)
    assert named.hours == (0,)

    assert timing.compile_cron("@weekly").weekdays == frozenset({1})
    assert timing.compile_cron("0 0 * * 7").weekdays == frozenset({0})  # 7 = Sunday
    assert timing.compile_cron("0 0 * * sun").weekdays == frozenset({0})
    assert timing.compile_cron("0 9 * jan-mar *").months == frozenset({1, 2, 3})

    last = timing.compile_cron("0 0 L * *")
    assert last.last_day
    assert last.days_restricted
    assert last.days == frozenset()

    nth = timing.compile_cron("15 10 * * 1#2")
    assert nth.weekdays == frozenset({1})
    assert nth.nth_weekday == {1: frozenset({2})}


@pytest.mark.parametrize(
    ("expression", "day", "matches"),
    [
        # OR semantics: the 1st, the 15th or any Friday
        ("0 12 1,15 * 5", (2024, 4, 1), True),  # Monday the 1st
        ("0 12 1,15 * 5", (2024, 4, 5), True),  # Friday
        ("0 12 1,15 * 5", (2024, 4, 2), False),  # Tuesday the 2nd
        # only dom restricted
        ("0 0 13 * *", (2024, 9, 13), True),
        ("0 0 13 * *", (2024, 9, 20), False),
        # only dow restricted: 2024-09-13 is a Friday
        ("0 0 * * 5", (2024, 9, 13), True),
        ("0 0 * * 5", (2024, 9, 14), False),
        ("0 0 L * *", (2024, 2, 29), True),
        ("0 0 L * *", (2024, 2, 28), False),
        ("0 0 L * *", (2100, 2, 28), True),
        ("0 0 15,L * *", (2024, 6, 15), True),
        ("0 0 15,L * *", (2024, 6, 30), True),
        ("0 0 15,L * *", (2024, 6, 29), False),
        ("0 0 * * 1#2", (2024, 4, 8), True),
        ("0 0 * * 1#2", (2024, 4, 1), False),
        ("0 0 * * 1#2", (2024, 4, 15), False),
        ("0 0 * * 5#5", (2024, 3, 29), True),  # fifth Friday of March 2024
        ("0 0 * * 5#5", (2024, 3, 22), False),
        ("0 0 * * 0#1", (2024, 9, 1), True),  # first Sunday
    ],
)
def test_cron_day_matching(expression: str, day: tuple[int, int, int], matches: bool) -> None:
    assert timing.compile_cron(expression).day_matches(*day) is matches


# =============================================================================================
# Zones and pytz
# =============================================================================================


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "Europe/Nowhere", "../etc/passwd"])
def test_unknown_zone(zone: str) -> None:
    with pytest.raises(ValidationError) as info:
        timing.cadence_for("@daily", zone)
    assert info.value.field == "settings.timezone"
    with pytest.raises(ValidationError) as info:
        timing.date_variables(utc(2024, 1, 1), zone)
    assert info.value.field == "settings.timezone"
    with pytest.raises(ValidationError) as info:
        timing.current_execution_date(ScheduleTiming("@daily", timezone=zone), NOW)
    assert info.value.field == "settings.timezone"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # pytz zone attached with tzinfo= (LMT +00:53 in pytz): read as Berlin wall time
        (datetime(2024, 1, 1, 9, tzinfo=pytz.timezone(BERLIN)), utc(2024, 1, 1, 8)),
        (datetime(2024, 7, 1, 9, tzinfo=pytz.timezone(BERLIN)), utc(2024, 7, 1, 7)),
        (datetime(2024, 1, 1, 9, tzinfo=pytz.timezone(NY)), utc(2024, 1, 1, 14)),
        # properly localized pytz values keep their offset
        (pytz.timezone(BERLIN).localize(datetime(2024, 1, 1, 9)), utc(2024, 1, 1, 8)),
        (pytz.timezone(BERLIN).localize(datetime(2024, 7, 1, 9)), utc(2024, 7, 1, 7)),
        (pytz.timezone(NY).localize(datetime(2024, 11, 3, 1, 30), is_dst=False),
         utc(2024, 11, 3, 6, 30)),
        (pytz.timezone(NY).localize(datetime(2024, 11, 3, 1, 30), is_dst=True),
         utc(2024, 11, 3, 5, 30)),
        (pytz.utc.localize(datetime(2024, 1, 1, 9)), utc(2024, 1, 1, 9)),
        (datetime(2024, 1, 1, 9, tzinfo=pytz.utc), utc(2024, 1, 1, 9)),
        # naive = UTC
        (datetime(2024, 1, 1, 9), utc(2024, 1, 1, 9)),
        # zoneinfo and fixed offsets
        (datetime(2024, 1, 1, 9, tzinfo=ZoneInfo(BERLIN)), utc(2024, 1, 1, 8)),
        (datetime(2024, 1, 1, 9, tzinfo=timezone(timedelta(hours=-5))), utc(2024, 1, 1, 14)),
        (datetime(2024, 1, 1, 9, tzinfo=ZoneInfo(LORD_HOWE)), utc(2023, 12, 31, 22)),
    ],
)
def test_to_utc(value: datetime, expected: datetime) -> None:
    result = to_utc(value)
    assert result == expected
    assert result.utcoffset() == timedelta(0)
    assert result.tzinfo is timezone.utc


def test_pytz_now_is_understood_by_current_execution_date() -> None:
    # 2024-01-03 00:30 Berlin wall time (attached the pytz-wrong way) = 2024-01-02 23:30Z
    now = datetime(2024, 1, 3, 0, 30, tzinfo=pytz.timezone(BERLIN))
    sched = ScheduleTiming("@daily", timezone=BERLIN)
    assert timing.current_execution_date(sched, now) == utc(2024, 1, 2, 23)
    assert timing.current_execution_date(DAILY, now) == utc(2024, 1, 2)
