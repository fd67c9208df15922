"""Next-execution-date throughput: mage_nb_sched.core.timing vs. raw croniter.

    python benchmarks/bench_timing.py [--schedules N] [--repeat R] [--check]

Builds N mixed schedules deterministically (``random.Random(0)``): random valid 5-field crons
(minute lists/steps, hour ranges, weekday ranges) and the @hourly/@daily/@weekly/@monthly intervals,
each in UTC or in a time zone. For every schedule and a few ``now`` instants it times

* ours:     ``timing.cadence_for(interval, zone).tick_after(now)`` (the cached cadence lookup is
            part of the measured cost), and
* baseline: ``croniter(cron, now_in_zone).get_next(datetime)`` with the equivalent cron
            expression (``timing.NAMED_CRON`` for the @ intervals) and a tz-aware start in the zone.

Reports computations per second, microseconds per computation and the cost ratio ours/croniter
(best of R repeats, ``time.perf_counter``). Exits 0 unless ``--check`` is given and the ratio is
above the target of 1.5.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from croniter import croniter

from mage_nb_sched.core import timing

TARGET_RATIO = 1.5
ZONES = [
    "America/New_York",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Europe/Berlin",
    "Europe/London",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Australia/Lord_Howe",
]
NAMED = ["@hourly", "@daily", "@weekly", "@monthly"]
NOWS = [
    datetime(2024, 3, 10, 6, 30, tzinfo=timezone.utc),  # New York spring-forward morning
    datetime(2024, 7, 15, 12, 34, 56, 789000, tzinfo=timezone.utc),
    datetime(2024, 12, 31, 23, 59, 30, tzinfo=timezone.utc),  # year end
]


def random_cron(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.3:
        minute = str(rng.randrange(60))
    elif kind < 0.6:
        minute = ",".join(str(m) for m in sorted(rng.sample(range(60), rng.randint(2, 4))))
    elif kind < 0.85:
        minute = f"*/{rng.choice([5, 10, 15, 20, 30])}"
    else:
        low = rng.randrange(0, 30)
        minute = f"{low}-{rng.randrange(low + 1, 60)}/{rng.choice([2, 5, 7])}"

    kind = rng.random()
    if kind < 0.3:
        hour = "*"
    elif kind < 0.55:
        hour = str(rng.randrange(24))
    elif kind < 0.85:
        low = rng.randrange(0, 20)
        hour = f"{low}-{rng.randrange(low + 1, 24)}"
    else:
        hour = ",".join(str(h) for h in sorted(rng.sample(range(24), rng.randint(2, 3))))

    kind = rng.random()
    if kind < 0.5:
        weekday = "*"
    elif kind < 0.8:
        low = rng.randrange(0, 5)
        weekday = f"{low}-{rng.randrange(low + 1, 7)}"
    else:
        weekday = rng.choice(["1-5", "mon-fri", "sat,sun", "0", "3"])

    day = "*" if rng.random() < 0.85 else str(rng.randint(1, 28))
    return f"{minute} {hour} {day} * {weekday}"


Schedule = tuple[str, str, str, tzinfo]  # interval, zone name, cron text, zone object


def build_schedules(count: int) -> list[Schedule]:
    rng = random.Random(0)
    schedules = []
    for _ in range(count):
        interval = random_cron(rng) if rng.random() < 0.5 else rng.choice(NAMED)
        zone_name = "UTC" if rng.random() < 0.5 else rng.choice(ZONES)
        timing.validate_interval(interval)  # every generated cron must be valid
        zone = timezone.utc if zone_name == "UTC" else ZoneInfo(zone_name)
        schedules.append((interval, zone_name, timing.NAMED_CRON.get(interval, interval), zone))
    return schedules


def run_ours(schedules: list[Schedule]) -> list[datetime | None]:
    cadence_for = timing.cadence_for
    return [
        cadence_for(interval, zone_name).tick_after(now)
        for now in NOWS
        for interval, zone_name, _cron, _zone in schedules
    ]


def run_croniter(schedules: list[Schedule]) -> list[datetime]:
    return [
        croniter(cron, now.astimezone(zone)).get_next(datetime)
        for now in NOWS
        for _interval, _zone_name, cron, zone in schedules
    ]


def best_of(repeat: int, fn: Callable[[], object]) -> tuple[float, float]:
    """(best, first) wall time of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), times[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 if the cost ratio ours/croniter exceeds {TARGET_RATIO}")
    args = parser.parse_args(argv)

    schedules = build_schedules(args.schedules)
    computations = len(schedules) * len(NOWS)
    crons = sum(1 for s in schedules if s[0] not in NAMED)
    zoned = sum(1 for s in schedules if s[1] != "UTC")
    print(f"{len(schedules)} schedules ({crons} cron, {len(schedules) - crons} named; "
          f"{zoned} in a time zone) x {len(NOWS)} now values = {computations} computations, "
          f"best of {args.repeat}")

    timing.cadence_for.cache_clear()
    ours, ours_cold = best_of(args.repeat, lambda: run_ours(schedules))
    theirs, _ = best_of(args.repeat, lambda: run_croniter(schedules))

    # sanity: how often the two agree (they differ by design around DST changes)
    agree = sum(
        a == b.astimezone(timezone.utc)
        for a, b in zip(run_ours(schedules), run_croniter(schedules), strict=True)
    )

    def line(name: str, seconds: float) -> str:
        return (f"{name:<28} {computations / seconds:>12,.0f} computations/s "
                f"{seconds / computations * 1e6:>9.2f} us/computation")

    print(line("ours (cadence_for+tick_after)", ours))
    print(line("  first repeat (cold cache)", ours_cold))
    print(line("croniter get_next", theirs))
    ratio = ours / theirs
    print(f"cost ratio ours/croniter: {ratio:.3f} (target <= {TARGET_RATIO}); "
          f"speed-up x{theirs / ours:.1f}")
    print(f"results identical to croniter: {agree}/{computations}")
    if args.check and ratio > TARGET_RATIO:
        print(f"FAIL: ratio {ratio:.3f} > {TARGET_RATIO}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
