"""Every numeric field and setting, every user datetime and every name is bounded (DESIGN §7):
each bound is accepted just inside and refused just outside, with a ValidationError naming the
field and the limit — and nothing is written.

Bounds the public API reaches are tested through it (``PipelineSchedule``, ``Backfill``,
``PipelineRun``); the rest through ``service.fields`` / ``core.settings`` / ``core.datetimes``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text

from mage_nb_sched import (
    Backfill,
    PipelineRun,
    PipelineSchedule,
    ScheduleInterval,
    ScheduleStatus,
    ScheduleType,
    ValidationError,
)
from mage_nb_sched.core import datetimes, settings
from mage_nb_sched.core.settings import (
    MAX_COUNT,
    MAX_DURATION_SECONDS,
    MAX_RETRIES,
    SETTINGS,
    settings_table_markdown,
    validate_settings,
)
from mage_nb_sched.service import fields
from mage_nb_sched.store import Store

UTC = timezone.utc
TABLES = ("pipeline_schedule", "pipeline_run", "backfill", "block_run")
YEAR = 31_536_000


def dump(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, read by a session of its own."""
    with store.new_session() as session:
        return {
            table: [
                tuple(row) for row in session.execute(text(f"SELECT * FROM {table} ORDER BY id"))
            ]
            for table in TABLES
        }


def refused(call: Callable[[], Any], field: str, *in_fix: str) -> ValidationError:
    """``call`` raises a ValidationError naming ``field`` whose fix mentions ``in_fix``."""
    with pytest.raises(ValidationError) as info:
        call()
    err = info.value
    assert err.field == field, str(err)
    for part in in_fix:
        assert part in err.fix, str(err)
    return err


def refused_nothing_written(
    store: Store, call: Callable[[], Any], field: str, *in_fix: str
) -> ValidationError:
    before = dump(store)
    err = refused(call, field, *in_fix)
    PipelineSchedule.query.all()  # the model API's own session must not keep the value either
    assert dump(store) == before
    return err


def base_values(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": "nightly",
        "pipeline_uuid": "my_pipeline",
        "schedule_type": ScheduleType.TIME,
        "schedule_interval": ScheduleInterval.DAILY,
        "start_time": datetime(2024, 1, 1, tzinfo=UTC),
        "status": ScheduleStatus.ACTIVE,
    }
    values.update(overrides)
    return values


def stored(store: Store, schedule_id: int) -> PipelineSchedule:
    with store.new_session() as session:
        row = session.get(PipelineSchedule, schedule_id)
        assert row is not None
        session.expunge(row)
        return row


# =============================================================================================
# The issue's probes: one bad value must never reach the database
# =============================================================================================


def test_sla_10_to_the_12_is_refused_and_nothing_is_written(store: Store) -> None:
    PipelineSchedule.create(**base_values(name="existing"))  # something to keep unchanged
    err = refused_nothing_written(
        store, lambda: PipelineSchedule.create(**base_values(sla=10**12)), "sla", "31,536,000"
    )
    assert "maximum" in err.problem
    assert len(PipelineSchedule.query.all()) == 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"sla": 10**12}, "sla"),
        ({"sla": 10**30}, "sla"),
        ({"sla": 1e30}, "sla"),
        ({"settings": {"timeout": 10**12}}, "settings.timeout"),
        ({"settings": {"block_timeout": 10**12}}, "settings.block_timeout"),
        ({"settings": {"retry_delay": math.nan}}, "settings.retry_delay"),
        ({"settings": {"retry_delay": math.inf}}, "settings.retry_delay"),
        ({"settings": {"retries": 10**9}}, "settings.retries"),
        ({"settings": {"max_catchup_runs": 10**12}}, "settings.max_catchup_runs"),
        ({"start_time": datetime(9999, 1, 1, tzinfo=UTC)}, "start_time"),
        ({"name": "night\x00ly"}, "name"),
    ],
    ids=lambda value: str(value)[:40],
)
def test_issue_probes_are_refused_on_create_and_update(
    store: Store, changes: dict[str, Any], field: str
) -> None:
    refused_nothing_written(store, lambda: PipelineSchedule.create(**base_values(**changes)), field)
    schedule = PipelineSchedule.create(**base_values(sla=60, settings={"timeout": 60}))
    refused_nothing_written(store, lambda: schedule.update(**changes), field)
    row = stored(store, schedule.id)
    assert (row.sla, row.settings, row.name) == (60, {"timeout": 60}, "nightly")
    assert row.start_time == datetime(2024, 1, 1, tzinfo=UTC)


def test_sla_10_to_the_30_is_a_validation_error_not_an_overflow(store: Store) -> None:
    with pytest.raises(ValidationError) as info:
        PipelineSchedule.create(**base_values(sla=10**30))
    assert not isinstance(info.value, OverflowError)
    assert info.value.field == "sla"


def test_direct_assignment_beyond_a_bound_is_refused_and_never_saved(store: Store) -> None:
    schedule = PipelineSchedule.create(**base_values(sla=60))

    def assign_sla() -> None:
        schedule.sla = 10**12

    def assign_settings() -> None:
        schedule.settings = {"timeout": YEAR + 1}

    refused_nothing_written(store, assign_sla, "sla", "31,536,000")
    refused_nothing_written(store, assign_settings, "settings.timeout", "31,536,000")
    schedule.update(description="later good update")
    row = stored(store, schedule.id)
    assert row.sla == 60
    assert row.settings is None


# =============================================================================================
# sla
# =============================================================================================


@pytest.mark.parametrize("value", [0, 1, 3600, YEAR, float(YEAR), 3600.0])
def test_sla_inside_the_bound_is_accepted(store: Store, value: Any) -> None:
    schedule = PipelineSchedule.create(**base_values(sla=value))
    assert stored(store, schedule.id).sla == int(value)


@pytest.mark.parametrize(
    "value", [YEAR + 1, float(YEAR + 1), -1, -0.5, 1.5, math.nan, math.inf, -math.inf, True, False]
)
def test_sla_outside_the_bound_is_refused(store: Store, value: Any) -> None:
    refused_nothing_written(
        store, lambda: PipelineSchedule.create(**base_values(sla=value)), "sla", "31,536,000"
    )


def test_seconds_validator_takes_its_own_maximum() -> None:
    assert fields.seconds(10, "x", maximum=10) == 10
    refused(lambda: fields.seconds(11, "x", maximum=10), "x", "10")
    assert fields.seconds(None, "sla") is None


# =============================================================================================
# settings
# =============================================================================================

#: Every numeric setting: (minimum, maximum, None allowed).
NUMERIC_SETTINGS: dict[str, tuple[int, int, bool]] = {
    "timeout": (1, MAX_DURATION_SECONDS, True),
    "block_timeout": (1, MAX_DURATION_SECONDS, True),
    "retry_delay": (0, MAX_DURATION_SECONDS, False),
    "retries": (0, MAX_RETRIES, True),
    "max_catchup_runs": (1, MAX_COUNT, False),
    "pipeline_run_limit": (1, MAX_COUNT, True),
    "pipeline_run_limit_all_triggers": (1, MAX_COUNT, True),
    "block_run_limit": (1, MAX_COUNT, True),
}


def test_the_documented_maxima() -> None:
    assert MAX_DURATION_SECONDS == YEAR == 365 * 24 * 3600
    assert MAX_RETRIES == 100
    assert MAX_COUNT == 10_000


def test_every_numeric_setting_is_bounded() -> None:
    numeric = {
        setting.key
        for setting in SETTINGS
        if isinstance(setting.example, (int, float)) and not isinstance(setting.example, bool)
    }
    assert numeric == set(NUMERIC_SETTINGS)


def test_the_settings_table_documents_every_maximum() -> None:
    table = settings_table_markdown()
    assert table.splitlines()[0] == "| setting | default | example | allowed | meaning |"
    rows = {line.split("|")[1].strip(" `"): line for line in table.splitlines()[2:]}
    for key, (minimum, maximum, optional) in NUMERIC_SETTINGS.items():
        assert f"{minimum:,} to {maximum:,}" in rows[key], rows[key]
        assert ("`None`" in rows[key]) is optional, rows[key]


@pytest.mark.parametrize("key", sorted(NUMERIC_SETTINGS))
def test_numeric_setting_just_inside_is_accepted(key: str) -> None:
    minimum, maximum, optional = NUMERIC_SETTINGS[key]
    assert validate_settings({key: minimum}) == {key: minimum}
    assert validate_settings({key: maximum}) == {key: maximum}
    if optional:
        assert validate_settings({key: None}) == {key: None}


@pytest.mark.parametrize("key", sorted(NUMERIC_SETTINGS))
def test_numeric_setting_just_outside_is_refused_naming_the_maximum(key: str) -> None:
    minimum, maximum, optional = NUMERIC_SETTINGS[key]
    bad: list[Any] = [
        maximum + 1,
        minimum - 1,
        10**12,
        10**30,
        True,
        False,
        math.nan,
        math.inf,
        -math.inf,
        "10",
        [1],
    ]
    if not optional:
        bad.append(None)
    for value in bad:
        err = refused(
            lambda v=value: validate_settings({key: v}), f"settings.{key}", f"{maximum:,}"
        )
        assert f"'{key}'" in err.fix  # an example of the key in use


def test_retry_delay_takes_fractions_but_not_past_the_maximum() -> None:
    assert validate_settings({"retry_delay": 0.5}) == {"retry_delay": 0.5}
    assert validate_settings({"retry_delay": float(YEAR)}) == {"retry_delay": float(YEAR)}
    refused(lambda: validate_settings({"retry_delay": YEAR + 0.001}), "settings.retry_delay")
    refused(lambda: validate_settings({"retry_delay": -0.001}), "settings.retry_delay")


@pytest.mark.parametrize("key", ["timeout", "block_timeout", "retries", "pipeline_run_limit"])
def test_whole_number_settings_refuse_floats(key: str) -> None:
    refused(lambda: validate_settings({key: 2.0}), f"settings.{key}")


@pytest.mark.parametrize(
    ("key", "inside", "outside"),
    [
        ("timeout", YEAR, YEAR + 1),
        ("block_timeout", YEAR, YEAR + 1),
        ("retry_delay", YEAR, YEAR + 1),
        ("retries", MAX_RETRIES, MAX_RETRIES + 1),
        ("max_catchup_runs", MAX_COUNT, MAX_COUNT + 1),
        ("pipeline_run_limit", MAX_COUNT, MAX_COUNT + 1),
        ("pipeline_run_limit_all_triggers", MAX_COUNT, MAX_COUNT + 1),
        ("block_run_limit", MAX_COUNT, MAX_COUNT + 1),
    ],
)
def test_settings_bounds_through_the_public_api(
    store: Store, key: str, inside: int, outside: int
) -> None:
    schedule = PipelineSchedule.create(**base_values(settings={key: inside}))
    assert stored(store, schedule.id).settings == {key: inside}
    refused_nothing_written(
        store,
        lambda: PipelineSchedule.create(**base_values(name="other", settings={key: outside})),
        f"settings.{key}",
        f"{outside - 1:,}",
    )
    refused_nothing_written(
        store, lambda: schedule.update(settings={key: outside}), f"settings.{key}"
    )
    for value in (True, math.nan, math.inf):
        refused_nothing_written(
            store, lambda v=value: schedule.update(settings={key: v}), f"settings.{key}"
        )
    assert stored(store, schedule.id).settings == {key: inside}


def test_max_catchup_runs_none_is_refused(store: Store) -> None:
    # The scheduler pass does int(max_catchup_runs); None would make it raise.
    refused_nothing_written(
        store,
        lambda: PipelineSchedule.create(**base_values(settings={"max_catchup_runs": None})),
        "settings.max_catchup_runs",
        "10,000",
    )


def test_settings_module_exports_the_limits() -> None:
    assert settings.MAX_DURATION_SECONDS == fields.MAX_DURATION_SECONDS


# =============================================================================================
# Datetimes
# =============================================================================================

FIRST = datetime(1970, 1, 1, tzinfo=UTC)
LAST = datetime(2999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
TINY = timedelta(microseconds=1)

DATETIMES_INSIDE: list[Any] = [
    FIRST,
    LAST,
    "1970-01-01T00:00:00Z",
    "2999-12-31T23:59:59.999999+00:00",
    "1970-01-01T01:00:00+01:00",  # the epoch, written in another zone
    datetime(2999, 12, 31, 23, 59),  # naive means UTC
]
DATETIMES_OUTSIDE: list[Any] = [
    FIRST - TINY,
    LAST + TINY,
    datetime(9999, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999),
    datetime(1, 1, 1, tzinfo=UTC),
    "1969-12-31T23:59:59.999999Z",
    "3000-01-01",
    "1970-01-01T00:30:00+01:00",  # before the epoch in UTC
    "9999-12-31T23:00:00-05:00",  # not even representable in UTC
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),  # ditto, before year 1
]


def test_the_datetime_range() -> None:
    assert datetimes.MIN_DATETIME == FIRST
    assert datetimes.MAX_DATETIME == LAST
    # The largest bounded duration never overflows from either end.
    assert LAST + timedelta(seconds=MAX_DURATION_SECONDS) < datetime.max.replace(tzinfo=UTC)
    assert FIRST - timedelta(seconds=MAX_DURATION_SECONDS) > datetime.min.replace(tzinfo=UTC)


@pytest.mark.parametrize("value", DATETIMES_INSIDE, ids=str)
def test_datetime_inside_the_range_is_accepted(value: Any) -> None:
    result = datetimes.coerce_bounded_datetime(value, "start_time")
    assert result.tzinfo is UTC
    assert FIRST <= result <= LAST
    assert datetimes.check_datetime_range(result, "start_time") is result


@pytest.mark.parametrize("value", DATETIMES_OUTSIDE, ids=str)
def test_datetime_outside_the_range_is_refused(value: Any) -> None:
    err = refused(
        lambda: datetimes.coerce_bounded_datetime(value, "start_time"), "start_time", "1970-2999"
    )
    assert err.value is value  # the value as given, not as converted
    assert "2999-12-31" in err.problem


def test_unbounded_coercion_still_accepts_derived_dates_but_never_overflows() -> None:
    # The package's own derived instants (a year-2999 backfill's last interval end) may lie
    # past the range; only user input is bounded.
    assert datetimes.coerce_datetime("3000-01-01", "x") == datetime(3000, 1, 1, tzinfo=UTC)
    refused(lambda: datetimes.coerce_datetime("9999-12-31T23:00:00-05:00", "x"), "x")
    with pytest.raises(ValidationError):
        datetimes.check_datetime_range(LAST + TINY, "end_datetime")


@pytest.mark.parametrize("field", ["start_time", "last_enabled_at"])
def test_schedule_datetimes_bounded_through_the_public_api(store: Store, field: str) -> None:
    first = PipelineSchedule.create(**base_values(name="first", **{field: FIRST}))
    last = PipelineSchedule.create(**base_values(name="last", **{field: LAST}))
    assert getattr(stored(store, first.id), field) == FIRST
    assert getattr(stored(store, last.id), field) == LAST
    for value in (FIRST - TINY, LAST + TINY, "3000-01-01", "9999-12-31T23:00:00-05:00"):
        refused_nothing_written(
            store,
            lambda v=value: PipelineSchedule.create(**base_values(name="x", **{field: v})),
            field,
            "1970-2999",
        )
        refused_nothing_written(store, lambda v=value: first.update(**{field: v}), field)


def backfill_values(schedule: PipelineSchedule, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "pipeline_schedule_id": schedule.id,
        "name": "january",
        "start_datetime": datetime(2024, 1, 1, tzinfo=UTC),
        "end_datetime": datetime(2024, 1, 3, tzinfo=UTC),
        "interval_type": "day",
        "interval_units": 1,
    }
    values.update(overrides)
    return values


def test_backfill_range_inside_the_bounds_is_accepted(store: Store) -> None:
    schedule = PipelineSchedule.create(**base_values())
    early = Backfill.create(
        **backfill_values(schedule, start_datetime=FIRST, end_datetime=FIRST + timedelta(days=2))
    )
    late = Backfill.create(
        **backfill_values(
            schedule,
            name="late",
            start_datetime=datetime(2999, 12, 29, tzinfo=UTC),
            end_datetime=LAST,
        )
    )
    assert early.start_datetime == FIRST
    assert late.end_datetime == LAST


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"start_datetime": FIRST - TINY}, "start_datetime"),
        ({"start_datetime": "1969-12-31"}, "start_datetime"),
        ({"end_datetime": LAST + TINY}, "end_datetime"),
        ({"end_datetime": datetime(9999, 12, 31, tzinfo=UTC)}, "end_datetime"),
        ({"end_datetime": "9999-12-31T23:00:00-05:00"}, "end_datetime"),
        ({"name": "jan\x00uary"}, "name"),
        ({"name": "x" * 256}, "name"),
    ],
    ids=str,
)
def test_backfill_outside_the_bounds_is_refused(
    store: Store, overrides: dict[str, Any], field: str
) -> None:
    schedule = PipelineSchedule.create(**base_values())
    refused_nothing_written(
        store, lambda: Backfill.create(**backfill_values(schedule, **overrides)), field
    )


@pytest.mark.parametrize("field", ["execution_date"])
def test_run_dates_bounded_through_the_public_api(store: Store, field: str) -> None:
    schedule = PipelineSchedule.create(**base_values())
    run = PipelineRun.create(pipeline_schedule_id=schedule.id, **{field: LAST})
    assert getattr(run, field) == LAST
    for value in (FIRST - TINY, LAST + TINY, datetime(9999, 1, 1)):
        refused_nothing_written(
            store,
            lambda v=value: PipelineRun.create(pipeline_schedule_id=schedule.id, **{field: v}),
            field,
            "1970-2999",
        )


# =============================================================================================
# Backfill interval_units (checked by service.fields.interval_units)
# =============================================================================================


@pytest.mark.parametrize("value", [1, 2, fields.MAX_INTERVAL_UNITS])
def test_interval_units_inside_is_accepted(value: int) -> None:
    assert fields.interval_units(value) == value


@pytest.mark.parametrize(
    "value", [0, -1, fields.MAX_INTERVAL_UNITS + 1, 10**12, 1.0, 1.5, math.nan, True, "1", None]
)
def test_interval_units_outside_is_refused(value: Any) -> None:
    refused(lambda: fields.interval_units(value), "interval_units", "1,000", "interval_units=1")


def test_the_largest_backfill_step_cannot_overflow() -> None:
    assert fields.MAX_INTERVAL_UNITS == 1_000
    # A year step of 1,000 units after the last allowed end is still a valid datetime.
    assert LAST.year + fields.MAX_INTERVAL_UNITS + 1 < datetime.max.year


# =============================================================================================
# Strings
# =============================================================================================

CONTROL_CHARACTERS = ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\ud800"]


@pytest.mark.parametrize("value", ["n", "x" * 255, "  padded  ", "Nächtlich ✓ 夜間", "a b-c_d.e"])
def test_names_inside_the_bounds_are_accepted(store: Store, value: str) -> None:
    schedule = PipelineSchedule.create(**base_values(name=value))
    assert stored(store, schedule.id).name == value.strip()


@pytest.mark.parametrize(
    "value",
    ["x" * 256, "night\nly", "night\tly", "night\rly"]
    + [f"night{char}ly" for char in CONTROL_CHARACTERS],
    ids=repr,
)
def test_names_outside_the_bounds_are_refused(store: Store, value: str) -> None:
    refused_nothing_written(
        store, lambda: PipelineSchedule.create(**base_values(name=value)), "name"
    )
    schedule = PipelineSchedule.create(**base_values(name="kept"))
    refused_nothing_written(store, lambda: schedule.update(name=value), "name")
    assert stored(store, schedule.id).name == "kept"


def test_name_too_long_names_the_maximum() -> None:
    err = refused(lambda: fields.name("x" * 256), "name", "255")
    assert "256" in err.problem
    err = refused(lambda: fields.name("a\x00b"), "name", "NUL")
    assert "'\\x00'" in err.problem


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "one line",
        "line one\nline two\r\n\ttabbed\u2028separated\u2029paragraph",
        "x" * fields.MAX_DESCRIPTION_LENGTH,
    ],
    ids=lambda value: repr(value)[:30],
)
def test_descriptions_inside_the_bounds_are_accepted(store: Store, value: str | None) -> None:
    schedule = PipelineSchedule.create(**base_values(description=value))
    assert stored(store, schedule.id).description == value


@pytest.mark.parametrize(
    "value",
    ["x" * (fields.MAX_DESCRIPTION_LENGTH + 1), "\x1b[31mred\x1b[0m"]
    + [f"bad{char}text" for char in CONTROL_CHARACTERS if char not in "\u2028\u2029"],
    ids=lambda value: repr(value)[:30],
)
def test_descriptions_outside_the_bounds_are_refused(store: Store, value: str) -> None:
    refused_nothing_written(
        store, lambda: PipelineSchedule.create(**base_values(description=value)), "description"
    )


def test_description_maximum_is_named() -> None:
    refused(lambda: fields.description("x" * 10_001), "description", "10,000")
    refused(lambda: fields.description(5), "description")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("my_pipeline", "my_pipeline"),
        ("etl/daily.ipynb", "etl/daily"),
        ("x" * 255, "x" * 255),
        ("x" * 255 + ".ipynb", "x" * 255),  # the stored uuid is what the column holds
        ("Ünïcode/日次", "Ünïcode/日次"),
    ],
)
def test_pipeline_uuids_inside_the_bounds_are_accepted(value: str, expected: str) -> None:
    assert fields.pipeline_uuid(value) == expected


@pytest.mark.parametrize(
    "value",
    ["x" * 256, "etl/" + "x" * 252, "my\npipeline", "my\tpipeline"]
    + [f"my{char}pipeline" for char in CONTROL_CHARACTERS],
    ids=lambda value: repr(value)[:30],
)
def test_pipeline_uuids_outside_the_bounds_are_refused(value: str) -> None:
    refused(lambda: fields.pipeline_uuid(value), "pipeline_uuid")
    refused(lambda: fields.pipeline_uuid(value, "uuid"), "uuid")


def test_pipeline_uuid_keeps_the_path_checks() -> None:
    refused(lambda: fields.pipeline_uuid("../x"), "pipeline_uuid", "'..'")
    refused(lambda: fields.pipeline_uuid(""), "pipeline_uuid")


def test_nul_in_pipeline_uuid_is_refused_through_the_public_api(store: Store) -> None:
    # Without the check a NUL reaches the file system (``ValueError: embedded null byte``).
    refused_nothing_written(
        store,
        lambda: PipelineSchedule.create(**base_values(pipeline_uuid="my\x00pipeline")),
        "pipeline_uuid",
    )
    schedule = PipelineSchedule.create(**base_values())
    refused_nothing_written(
        store, lambda: schedule.update(pipeline_uuid="my\x00pipeline"), "pipeline_uuid"
    )
    refused_nothing_written(
        store,
        lambda: PipelineRun.create(pipeline_uuid="my_pipeline\x1b", variables={}),
        "pipeline_uuid",
    )
    refused_nothing_written(
        store,
        lambda: Backfill.create(**backfill_values(schedule, pipeline_uuid="my\x00pipeline")),
        "pipeline_uuid",
    )


def test_interval_units_bounded_through_the_public_api(store: Store) -> None:
    schedule = PipelineSchedule.create(**base_values())
    Backfill.create(**backfill_values(schedule, interval_units=fields.MAX_INTERVAL_UNITS))
    refused_nothing_written(
        store,
        lambda: Backfill.create(
            **backfill_values(schedule, interval_units=fields.MAX_INTERVAL_UNITS + 1)
        ),
        "interval_units",
        "1,000",
    )


# =============================================================================================
# Integers inside variables
# =============================================================================================


def test_huge_integers_in_variables_are_refused_without_a_raw_error(store: Store) -> None:
    assert fields.variables({"n": 2**1024 - 1, "m": -(2**1024) + 1}) == {
        "n": 2**1024 - 1,
        "m": -(2**1024) + 1,
    }
    err = refused(lambda: fields.variables({"a": [1, {"n": 2**1024}]}), "variables.a[1].n")
    assert "2**1024" in err.problem
    refused(lambda: fields.variables({"n": -(10**5000)}), "variables.n")
    refused_nothing_written(
        store,
        lambda: PipelineSchedule.create(**base_values(variables={"n": 10**5000})),
        "variables.n",
    )
