"""Bad input is refused with an error naming the field, showing the value and the fix — and
nothing is written. Every check reads the database back through a fresh session."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
import pytz
from sqlalchemy import text

from mage_nb_sched import (
    Backfill,
    ConflictError,
    PipelineRun,
    PipelineSchedule,
    ScheduleInterval,
    ScheduleStatus,
    ScheduleType,
    ValidationError,
)
from mage_nb_sched.store import Store

UTC = timezone.utc
TABLES = ("pipeline_schedule", "pipeline_run", "backfill", "block_run")


class Opaque:
    """An object that is not JSON."""

    def __repr__(self) -> str:
        return "<Opaque thing>"


def dump(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, read by a session of its own."""
    with store.new_session() as session:
        return {
            table: [
                tuple(row) for row in session.execute(text(f"SELECT * FROM {table} ORDER BY id"))
            ]
            for table in TABLES
        }


def assert_refused(
    store: Store,
    call: Callable[[], Any],
    field: str,
    shown: str,
    hint: str,
    error: type[ValidationError] = ValidationError,
) -> ValidationError:
    """``call`` raises ``error`` naming ``field``, showing ``shown`` and the ``hint``; the
    database is exactly as before."""
    before = dump(store)
    with pytest.raises(error) as info:
        call()
    err = info.value
    message = str(err)
    assert err.field == field, message
    assert shown in message, message
    assert err.fix, message
    assert err.fix in message, message
    assert hint in message, message
    # The model API's own session must not hold on to the refused value either.
    PipelineSchedule.query.all()
    assert dump(store) == before
    return err


def base_values(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": "nightly",
        "pipeline_uuid": "my_pipeline",
        "schedule_type": ScheduleType.TIME,
        "schedule_interval": ScheduleInterval.DAILY,
        "start_time": datetime(2024, 1, 1, tzinfo=pytz.UTC),
        "status": ScheduleStatus.ACTIVE,
    }
    values.update(overrides)
    return values


# (test id, overrides, field, text that shows the bad value, text of the fix)
CREATE_CASES: list[tuple[str, dict[str, Any], str, str, str]] = [
    ("cron-three-fields", {"schedule_interval": "* * *"}, "schedule_interval", "'* * *'",
     "30 2 * * *"),
    ("cron-bad-minute", {"schedule_interval": "61 * * * *"}, "schedule_interval",
     "'61 * * * *'", "30 2 * * *"),
    ("cron-garbage", {"schedule_interval": "every day"}, "schedule_interval", "'every day'",
     "@daily"),
    ("cron-empty", {"schedule_interval": ""}, "schedule_interval", "''", "@daily"),
    ("cron-blank", {"schedule_interval": "   "}, "schedule_interval", "empty", "@daily"),
    ("unknown-named-interval", {"schedule_interval": "@yearly"}, "schedule_interval",
     "'@yearly'", "@monthly"),
    ("interval-not-a-string", {"schedule_interval": 86400}, "schedule_interval", "86400",
     "@daily"),
    ("unknown-time-zone", {"settings": {"timezone": "Mars/Olympus_Mons"}}, "settings.timezone",
     "'Mars/Olympus_Mons'", "Europe/Berlin"),
    ("start-time-int", {"start_time": 12345}, "start_time", "12345", "datetime("),
    ("start-time-words", {"start_time": "yesterday"}, "start_time", "'yesterday'",
     "2024-01-01T09:00:00"),
    ("sla-negative", {"sla": -1}, "sla", "-1", "sla=3600"),
    ("sla-fraction", {"sla": 1.5}, "sla", "1.5", "sla=3600"),
    ("sla-bool", {"sla": True}, "sla", "True", "sla=3600"),
    ("sla-string", {"sla": "1h"}, "sla", "'1h'", "sla=3600"),
    ("timeout-negative", {"settings": {"timeout": -5}}, "settings.timeout", "-5", "'timeout'"),
    ("timeout-zero", {"settings": {"timeout": 0}}, "settings.timeout", "=0", "'timeout'"),
    ("timeout-float", {"settings": {"timeout": 1.5}}, "settings.timeout", "1.5", "'timeout'"),
    ("timeout-bool", {"settings": {"timeout": True}}, "settings.timeout", "True", "'timeout'"),
    ("unknown-setting", {"settings": {"skip_if_previous_runing": True}},
     "settings.skip_if_previous_runing", "True", "skip_if_previous_running"),
    ("timeout-status", {"settings": {"timeout_status": "exploded"}}, "settings.timeout_status",
     "'exploded'", "cancelled"),
    ("setting-not-bool", {"settings": {"skip_if_previous_running": "yes"}},
     "settings.skip_if_previous_running", "'yes'", "True"),
    ("settings-not-dict", {"settings": ["timeout"]}, "settings", "['timeout']", "settings="),
    ("missing-notebook", {"pipeline_uuid": "my_pipelin"}, "pipeline_uuid", "'my_pipelin'",
     "'my_pipeline'"),
    ("missing-nested-notebook", {"pipeline_uuid": "etl/dialy"}, "pipeline_uuid", "'etl/dialy'",
     "'etl/daily'"),
    ("escape-parent", {"pipeline_uuid": "../x"}, "pipeline_uuid", "'../x'", "'..'"),
    ("escape-absolute", {"pipeline_uuid": "/etc/passwd"}, "pipeline_uuid", "'/etc/passwd'",
     "relative path"),
    ("escape-middle", {"pipeline_uuid": "a/../../b"}, "pipeline_uuid", "'a/../../b'",
     "relative path"),
    ("escape-backslash", {"pipeline_uuid": "..\\x"}, "pipeline_uuid", "'..\\\\x'",
     "relative path"),
    ("variables-datetime", {"variables": {"when": datetime(2024, 1, 1)}}, "variables.when",
     "datetime.datetime(2024, 1, 1", "isoformat"),
    ("variables-set", {"variables": {"ids": {1, 2}}}, "variables.ids", "{1, 2}", "lists and dicts"),
    ("variables-object", {"variables": {"thing": Opaque()}}, "variables.thing", "<Opaque thing>",
     "lists and dicts"),
    ("variables-nan", {"variables": {"ratio": math.nan}}, "variables.ratio", "nan",
     "finite number"),
    ("variables-nested-inf", {"variables": {"a": [1, {"b": math.inf}]}}, "variables.a[1].b",
     "inf", "finite number"),
    ("variables-not-dict", {"variables": ["env"]}, "variables", "['env']", "variables="),
    ("unknown-field", {"schedul_interval": "@daily"}, "schedul_interval", "'@daily'",
     "schedule_interval"),
    ("time-without-interval", {"schedule_interval": None}, "schedule_interval", "None",
     "ScheduleInterval.DAILY"),
    ("landing-without-start", {"start_time": None, "settings": {"landing_time_enabled": True}},
     "settings.landing_time_enabled", "True", "start_time"),
    ("unknown-schedule-type", {"schedule_type": "cron"}, "schedule_type", "'cron'", "time"),
    ("unknown-status", {"status": "paused"}, "status", "'paused'", "active"),
    ("empty-name", {"name": "  "}, "name", "'  '", "name="),
]


@pytest.mark.parametrize(
    ("overrides", "field", "shown", "hint"),
    [case[1:] for case in CREATE_CASES],
    ids=[case[0] for case in CREATE_CASES],
)
def test_create_refuses_bad_input_and_writes_nothing(
    store: Store, overrides: dict[str, Any], field: str, shown: str, hint: str
) -> None:
    PipelineSchedule.create(**base_values(name="existing"))  # something to keep unchanged
    assert_refused(
        store, lambda: PipelineSchedule.create(**base_values(**overrides)), field, shown, hint
    )


def test_unknown_setting_lists_every_valid_key(store: Store) -> None:
    err = assert_refused(
        store,
        lambda: PipelineSchedule.create(**base_values(settings={"bogus": 1})),
        "settings.bogus", "bogus", "Valid settings are",
    )
    for key in ("skip_if_previous_running", "timeout", "timeout_status", "landing_time_enabled",
                "create_initial_pipeline_run", "timezone"):
        assert key in str(err)


def test_unknown_create_field_lists_valid_fields(store: Store) -> None:
    err = assert_refused(
        store,
        lambda: PipelineSchedule.create(**base_values(schedul_interval="@daily")),
        "schedul_interval", "schedul_interval", "Valid fields are",
    )
    for key in ("schedule_interval", "start_time", "settings", "variables", "sla"):
        assert key in str(err)


def test_good_inputs_next_to_the_bad_ones_are_accepted(store: Store) -> None:
    schedule = PipelineSchedule.create(
        **base_values(
            start_time="2024-01-01T09:00:00+00:00",
            schedule_interval="30 2 * * 1-5",
            sla=0,
            settings={"timezone": "America/New_York", "timeout": 1, "timeout_status": "cancelled"},
            variables={"when": "2024-01-01", "n": [1, 2.5, None, True], "nested": {"a": "b"}},
        )
    )
    with store.new_session() as session:
        row = session.get(PipelineSchedule, schedule.id)
        assert row is not None
        assert row.start_time == datetime(2024, 1, 1, 9, tzinfo=UTC)
        assert row.schedule_interval == "30 2 * * 1-5"
        assert row.settings == {
            "timezone": "America/New_York", "timeout": 1, "timeout_status": "cancelled"
        }


def test_token_refused_without_echoing_it(store: Store) -> None:
    err = assert_refused(
        store,
        lambda: PipelineSchedule.create(**base_values(schedule_type="api", token="tooshort")),
        "token", "token", "token_urlsafe",
    )
    assert "tooshort" not in str(err)
    assert "tooshort" not in repr(err.to_dict())
    err = assert_refused(
        store,
        lambda: PipelineSchedule.create(
            **base_values(schedule_type="api", token="has spaces in it, sixteen+")
        ),
        "token", "token", "token_urlsafe",
    )
    assert "has spaces" not in str(err)


# =============================================================================================
# Duplicates
# =============================================================================================


def test_duplicate_name_for_the_same_pipeline_is_a_conflict(store: Store) -> None:
    PipelineSchedule.create(**base_values(name="nightly"))
    err = assert_refused(
        store,
        lambda: PipelineSchedule.create(**base_values(name="nightly", schedule_interval="@hourly")),
        "name", "'nightly'", "another name", error=ConflictError,
    )
    assert err.http_status == 409
    assert "my_pipeline" in str(err)
    # The same name on another pipeline is fine.
    other = PipelineSchedule.create(**base_values(name="nightly", pipeline_uuid="etl/daily"))
    assert other.pipeline_uuid == "etl/daily"


def test_renaming_onto_an_existing_name_is_a_conflict(store: Store) -> None:
    PipelineSchedule.create(**base_values(name="a"))
    second = PipelineSchedule.create(**base_values(name="b"))
    assert_refused(
        store, lambda: second.update(name="a"), "name", "'a'", "another name",
        error=ConflictError,
    )
    assert PipelineSchedule.query.get(second.id).name == "b"


# =============================================================================================
# Backfills
# =============================================================================================


def backfill_values(schedule: PipelineSchedule, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "pipeline_schedule_id": schedule.id,
        "name": "january_backfill",
        "start_datetime": datetime(2024, 1, 1, tzinfo=pytz.UTC),
        "end_datetime": datetime(2024, 1, 31, tzinfo=pytz.UTC),
        "interval_type": "day",
        "interval_units": 1,
    }
    values.update(overrides)
    return values


BACKFILL_CASES: list[tuple[str, dict[str, Any], str, str, str]] = [
    ("end-before-start", {"end_datetime": datetime(2023, 12, 31, tzinfo=UTC)}, "end_datetime",
     "2023, 12, 31", "at or after start_datetime"),
    ("units-zero", {"interval_units": 0}, "interval_units", "=0", "interval_units=1"),
    ("units-negative", {"interval_units": -1}, "interval_units", "-1", "interval_units=1"),
    ("units-fraction", {"interval_units": 1.5}, "interval_units", "1.5", "interval_units=1"),
    ("units-bool", {"interval_units": True}, "interval_units", "True", "interval_units=1"),
    ("unknown-interval-type", {"interval_type": "fortnight"}, "interval_type", "'fortnight'",
     "interval_type='day'"),
    ("start-not-a-date", {"start_datetime": "last january"}, "start_datetime",
     "'last january'", "2024-01-01T09:00:00"),
    ("variables-datetime", {"variables": {"d": datetime(2024, 1, 1)}}, "variables.d",
     "datetime.datetime(2024, 1, 1", "isoformat"),
    ("variables-set", {"variables": {"s": {"a"}}}, "variables.s", "{'a'}", "lists and dicts"),
    ("unknown-field", {"interval_unit": 1}, "interval_unit", "1", "interval_units"),
]


@pytest.mark.parametrize(
    ("overrides", "field", "shown", "hint"),
    [case[1:] for case in BACKFILL_CASES],
    ids=[case[0] for case in BACKFILL_CASES],
)
def test_backfill_refuses_bad_input_and_writes_nothing(
    store: Store, overrides: dict[str, Any], field: str, shown: str, hint: str
) -> None:
    schedule = PipelineSchedule.create(**base_values())
    assert_refused(
        store, lambda: Backfill.create(**backfill_values(schedule, **overrides)), field, shown, hint
    )


# =============================================================================================
# Runs
# =============================================================================================


RUN_CASES: list[tuple[str, dict[str, Any], str, str, str]] = [
    ("variables-datetime", {"variables": {"d": datetime(2024, 1, 1)}}, "variables.d",
     "datetime.datetime(2024, 1, 1", "isoformat"),
    ("variables-nan", {"variables": {"x": math.nan}}, "variables.x", "nan", "finite number"),
    ("execution-date-words", {"execution_date": "tomorrow"}, "execution_date", "'tomorrow'",
     "2024-01-01T09:00:00"),
    ("status-unknown", {"status": "exploded"}, "status", "'exploded'", "initial"),
    ("escape", {"pipeline_uuid": "../etc"}, "pipeline_uuid", "'../etc'", "relative path"),
    ("unknown-field", {"varibles": {}}, "varibles", "{}", "variables"),
]


@pytest.mark.parametrize(
    ("overrides", "field", "shown", "hint"),
    [case[1:] for case in RUN_CASES],
    ids=[case[0] for case in RUN_CASES],
)
def test_run_create_refuses_bad_input_and_writes_nothing(
    store: Store, overrides: dict[str, Any], field: str, shown: str, hint: str
) -> None:
    schedule = PipelineSchedule.create(**base_values())
    assert_refused(
        store,
        lambda: PipelineRun.create(pipeline_schedule_id=schedule.id, **overrides),
        field, shown, hint,
    )


# =============================================================================================
# update() with a bad value leaves the row unchanged
# =============================================================================================


UPDATE_CASES: list[tuple[str, dict[str, Any], str, str, str]] = [
    ("cron", {"schedule_interval": "99 * * * *"}, "schedule_interval", "'99 * * * *'",
     "30 2 * * *"),
    ("time-zone", {"settings": {"timezone": "Europe/Berlinn"}}, "settings.timezone",
     "'Europe/Berlinn'", "Europe/Berlin"),
    ("start-time", {"start_time": "yesterday"}, "start_time", "'yesterday'", "2024-01-01"),
    ("sla", {"sla": -60}, "sla", "-60", "sla=3600"),
    ("timeout", {"settings": {"timeout": 0}}, "settings.timeout", "=0", "'timeout'"),
    ("unknown-setting", {"settings": {"timeout": 60, "retires": 2}}, "settings.retires", "2",
     "retries"),
    ("timeout-status", {"settings": {"timeout_status": "exploded"}}, "settings.timeout_status",
     "'exploded'", "cancelled"),
    ("pipeline", {"pipeline_uuid": "my_pipelin"}, "pipeline_uuid", "'my_pipelin'",
     "'my_pipeline'"),
    ("escape", {"pipeline_uuid": "../x"}, "pipeline_uuid", "'../x'", "relative path"),
    ("variables", {"variables": {"s": {1}}}, "variables.s", "{1}", "lists and dicts"),
    ("unknown-field", {"schedul_interval": "@hourly"}, "schedul_interval", "'@hourly'",
     "schedule_interval"),
    ("drop-interval", {"schedule_interval": None}, "schedule_interval", "None",
     "ScheduleInterval.DAILY"),
    ("landing-without-start", {"start_time": None, "settings": {"landing_time_enabled": True}},
     "settings.landing_time_enabled", "True", "start_time"),
    ("bad-and-good-together", {"sla": 10, "schedule_interval": "@yearly"}, "schedule_interval",
     "'@yearly'", "@monthly"),
    ("id", {"id": 99}, "id", "99", "Leave id out"),
]


@pytest.mark.parametrize(
    ("changes", "field", "shown", "hint"),
    [case[1:] for case in UPDATE_CASES],
    ids=[case[0] for case in UPDATE_CASES],
)
def test_update_with_a_bad_value_leaves_the_row_unchanged(
    store: Store, changes: dict[str, Any], field: str, shown: str, hint: str
) -> None:
    schedule = PipelineSchedule.create(
        **base_values(sla=3600, variables={"env": "production"}, settings={"timeout": 1800})
    )
    assert_refused(store, lambda: schedule.update(**changes), field, shown, hint)
    with store.new_session() as session:
        row = session.get(PipelineSchedule, schedule.id)
        assert row is not None
        assert row.schedule_interval == "@daily"
        assert row.sla == 3600
        assert row.settings == {"timeout": 1800}
        assert row.pipeline_uuid == "my_pipeline"
    # The object in hand still shows the stored values too.
    assert schedule.schedule_interval == "@daily"
    assert schedule.sla == 3600


def test_direct_assignment_of_a_bad_value_is_refused_and_never_saved(store: Store) -> None:
    schedule = PipelineSchedule.create(**base_values(settings={"timeout": 1800}))

    def assign() -> None:
        schedule.settings = {"timeout": -1}

    assert_refused(store, assign, "settings.timeout", "-1", "'timeout'")
    schedule.update(sla=5)  # a later good update does not carry the refused value along
    with store.new_session() as session:
        row = session.get(PipelineSchedule, schedule.id)
        assert row is not None
        assert row.settings == {"timeout": 1800}
        assert row.sla == 5
