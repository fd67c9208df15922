"""Triggers as code: ``<notebook stem>.triggers.yaml`` beside the notebook, synced both ways.

Real files in a temporary project dir, a real SQLite store; schedules are read back through a
fresh session."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import pytz
import yaml

from mage_nb_sched import (
    PipelineSchedule,
    ScheduleInterval,
    ScheduleStatus,
    ScheduleType,
    Trigger,
    add_or_update_trigger_for_pipeline_and_persist,
    sync_triggers,
)
from mage_nb_sched.store import Store

UTC = timezone.utc


def rows(store: Store) -> dict[tuple[str, str], PipelineSchedule]:
    """Every schedule in the database by (pipeline_uuid, name), read by a fresh session."""
    with store.new_session() as session:
        return {
            (s.pipeline_uuid, s.name): s
            for s in session.query(PipelineSchedule).order_by(PipelineSchedule.id)
        }


def entries(path: Path) -> list[dict[str, Any]]:
    content = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(content, dict) and list(content) == ["triggers"]
    assert isinstance(content["triggers"], list)
    return content["triggers"]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def nightly_trigger(**overrides: Any) -> Trigger:
    values: dict[str, Any] = {
        "name": "nightly_etl",
        "pipeline_uuid": "etl/daily",
        "schedule_type": ScheduleType.TIME,
        "schedule_interval": ScheduleInterval.DAILY,
        "start_time": datetime(2024, 1, 1, 2, 0, 0, tzinfo=pytz.UTC),
        "status": ScheduleStatus.ACTIVE,
        "variables": {"env": "production"},
        "sla": 7200,
    }
    values.update(overrides)
    return Trigger(**values)


MY_PIPELINE_FILE = """\
triggers:
- name: hourly_sync
  schedule_type: time
  schedule_interval: '@hourly'
  start_time: '2024-01-01T00:00:00+00:00'
  status: active
  variables:
    region: us-west-2
- name: on_demand
  schedule_type: api
  status: active
"""


# =============================================================================================
# add_or_update_trigger_for_pipeline_and_persist
# =============================================================================================


def test_persist_writes_the_file_and_creates_the_schedule(
    store: Store, project_dir: Path
) -> None:
    add_or_update_trigger_for_pipeline_and_persist(nightly_trigger(), "etl/daily")

    path = project_dir / "etl" / "daily.triggers.yaml"
    assert path.is_file()
    [entry] = entries(path)
    assert entry["name"] == "nightly_etl"
    assert entry["schedule_type"] == "time"
    assert entry["schedule_interval"] == "@daily"
    assert entry["status"] == "active"
    assert entry["variables"] == {"env": "production"}
    assert entry["sla"] == 7200
    assert datetime.fromisoformat(str(entry["start_time"])) == datetime(2024, 1, 1, 2, tzinfo=UTC)
    assert "pipeline_uuid" not in entry  # the file's place says which pipeline
    assert "token" not in entry

    found = rows(store)
    assert list(found) == [("etl/daily", "nightly_etl")]
    schedule = found[("etl/daily", "nightly_etl")]
    assert schedule.schedule_interval == "@daily"
    assert schedule.status == "active"
    assert schedule.sla == 7200
    assert schedule.start_time == datetime(2024, 1, 1, 2, tzinfo=UTC)
    assert schedule.in_code is True
    assert schedule.last_enabled_at is not None


def test_persist_again_updates_the_entry_and_the_schedule(
    store: Store, project_dir: Path
) -> None:
    add_or_update_trigger_for_pipeline_and_persist(nightly_trigger(), "etl/daily")
    first_id = rows(store)[("etl/daily", "nightly_etl")].id

    add_or_update_trigger_for_pipeline_and_persist(
        nightly_trigger(schedule_interval=ScheduleInterval.HOURLY, sla=60), "etl/daily"
    )
    path = project_dir / "etl" / "daily.triggers.yaml"
    [entry] = entries(path)
    assert entry["schedule_interval"] == "@hourly"
    assert entry["sla"] == 60
    found = rows(store)
    assert len(found) == 1
    schedule = found[("etl/daily", "nightly_etl")]
    assert schedule.id == first_id
    assert schedule.schedule_interval == "@hourly"
    assert schedule.sla == 60


def test_persist_keeps_the_other_entries_of_the_file(store: Store, project_dir: Path) -> None:
    add_or_update_trigger_for_pipeline_and_persist(nightly_trigger(), "etl/daily")
    add_or_update_trigger_for_pipeline_and_persist(
        nightly_trigger(name="weekly", schedule_interval="@weekly"), "etl/daily"
    )
    path = project_dir / "etl" / "daily.triggers.yaml"
    assert [e["name"] for e in entries(path)] == ["nightly_etl", "weekly"]
    assert set(rows(store)) == {("etl/daily", "nightly_etl"), ("etl/daily", "weekly")}


def test_persist_with_a_bad_trigger_writes_nothing(store: Store, project_dir: Path) -> None:
    from mage_nb_sched import ValidationError

    with pytest.raises(ValidationError) as info:
        add_or_update_trigger_for_pipeline_and_persist(
            nightly_trigger(schedule_interval="not a cron"), "etl/daily"
        )
    assert info.value.field == "schedule_interval"
    assert not (project_dir / "etl" / "daily.triggers.yaml").exists()
    assert rows(store) == {}


# =============================================================================================
# sync_triggers: file -> store
# =============================================================================================


def test_sync_creates_updates_and_deletes_from_files(store: Store, project_dir: Path) -> None:
    path = write(project_dir / "my_pipeline.triggers.yaml", MY_PIPELINE_FILE)

    report = sync_triggers(project_dir)
    assert sorted(report.created) == ["my_pipeline:hourly_sync", "my_pipeline:on_demand"]
    assert report.errors == [] and report.deleted == [] and report.updated == []
    found = rows(store)
    hourly = found[("my_pipeline", "hourly_sync")]
    assert hourly.schedule_interval == "@hourly"
    assert hourly.status == "active"
    assert hourly.variables == {"region": "us-west-2"}
    assert hourly.in_code is True
    assert found[("my_pipeline", "on_demand")].schedule_type == "api"

    # Edit the file: the schedule follows.
    write(path, MY_PIPELINE_FILE.replace("'@hourly'", "'15 * * * *'"))
    report = sync_triggers(project_dir)
    assert report.updated == ["my_pipeline:hourly_sync"]
    assert report.created == [] and report.deleted == [] and report.errors == []
    updated = rows(store)[("my_pipeline", "hourly_sync")]
    assert updated.schedule_interval == "15 * * * *"
    assert updated.id == hourly.id

    # Remove one entry: its schedule goes.
    write(path, MY_PIPELINE_FILE.split("- name: on_demand")[0])
    report = sync_triggers(project_dir)
    assert report.deleted == ["my_pipeline:on_demand"]
    assert set(rows(store)) == {("my_pipeline", "hourly_sync")}

    # Delete the file: nothing is deleted; its schedules are kept, paused and marked orphaned.
    path.unlink()
    report = sync_triggers(project_dir)
    assert report.deleted == [] and report.orphaned == ["my_pipeline:hourly_sync"]
    orphan = rows(store)[("my_pipeline", "hourly_sync")]
    assert orphan.id == hourly.id and orphan.status == "inactive"
    assert orphan.orphaned_at is not None


def test_sync_twice_reports_nothing_the_second_time(store: Store, project_dir: Path) -> None:
    write(project_dir / "my_pipeline.triggers.yaml", MY_PIPELINE_FILE)
    add_or_update_trigger_for_pipeline_and_persist(nightly_trigger(), "etl/daily")
    first = sync_triggers(project_dir)
    assert first.created  # the hand-written file was new
    before = rows(store)

    second = sync_triggers(project_dir)
    assert second.created == []
    assert second.updated == []
    assert second.deleted == []
    assert second.errors == []
    after = rows(store)
    assert {k: (v.id, v.updated_at) for k, v in after.items()} == {
        k: (v.id, v.updated_at) for k, v in before.items()
    }


def test_one_bad_entry_is_reported_and_the_others_still_sync(
    store: Store, project_dir: Path
) -> None:
    write(
        project_dir / "my_pipeline.triggers.yaml",
        MY_PIPELINE_FILE
        + "- name: broken_cron\n  schedule_interval: '* * *'\n"
        + "- name: after_the_bad_one\n  schedule_interval: '@weekly'\n",
    )
    report = sync_triggers(project_dir)
    assert len(report.errors) == 1
    assert "broken_cron" in report.errors[0]
    assert "schedule_interval" in report.errors[0]
    assert "'* * *'" in report.errors[0]
    assert not report.ok
    assert set(rows(store)) == {
        ("my_pipeline", "hourly_sync"),
        ("my_pipeline", "on_demand"),
        ("my_pipeline", "after_the_bad_one"),
    }


def test_an_entry_that_turns_bad_keeps_its_schedule(store: Store, project_dir: Path) -> None:
    path = write(project_dir / "my_pipeline.triggers.yaml", MY_PIPELINE_FILE)
    sync_triggers(project_dir)
    write(path, MY_PIPELINE_FILE.replace("'@hourly'", "'@fortnightly'"))
    report = sync_triggers(project_dir)
    assert len(report.errors) == 1 and "hourly_sync" in report.errors[0]
    assert report.deleted == []
    kept = rows(store)[("my_pipeline", "hourly_sync")]
    assert kept.schedule_interval == "@hourly"


def test_entry_errors_name_the_entry(store: Store, project_dir: Path) -> None:
    write(
        project_dir / "my_pipeline.triggers.yaml",
        "triggers:\n"
        "- name: typo_key\n  schedul_interval: '@daily'\n"
        "- just a string\n"
        "- name: fine\n  schedule_interval: '@daily'\n",
    )
    report = sync_triggers(project_dir)
    assert len(report.errors) == 2
    assert "typo_key" in report.errors[0] and "schedul_interval" in report.errors[0]
    assert "my_pipeline.triggers.yaml[1]" in report.errors[1]
    assert set(rows(store)) == {("my_pipeline", "fine")}


def test_unreadable_file_is_reported_and_its_schedules_are_untouched(
    store: Store, project_dir: Path
) -> None:
    path = write(project_dir / "my_pipeline.triggers.yaml", MY_PIPELINE_FILE)
    add_or_update_trigger_for_pipeline_and_persist(nightly_trigger(), "etl/daily")
    sync_triggers(project_dir)
    before = rows(store)
    assert len(before) == 3

    write(path, "triggers:\n- name: hourly_sync\n  schedule_interval: [unclosed\n")
    report = sync_triggers(project_dir)
    assert len(report.errors) == 1
    assert "my_pipeline.triggers.yaml" in report.errors[0]
    assert "YAML" in report.errors[0]
    assert report.deleted == [] and report.created == [] and report.updated == []
    after = rows(store)
    assert {k: (v.id, v.schedule_interval) for k, v in after.items()} == {
        k: (v.id, v.schedule_interval) for k, v in before.items()
    }

    # Wrong shape (not a 'triggers:' list) is unreadable too.
    write(path, "- name: hourly_sync\n")
    report = sync_triggers(project_dir)
    assert len(report.errors) == 1 and "triggers" in report.errors[0]
    assert set(rows(store)) == set(before)


def test_token_in_a_file_is_applied_and_removed_from_the_file(
    store: Store, project_dir: Path
) -> None:
    token = "file-token-abcdefghijklmnop-1234"
    path = write(
        project_dir / "my_pipeline.triggers.yaml",
        "triggers:\n"
        "- name: api_trigger\n"
        "  schedule_type: api\n"
        "  status: active\n"
        f"  token: {token}\n"
        "- name: other\n"
        "  schedule_interval: '@daily'\n",
    )
    report = sync_triggers(project_dir)
    assert report.errors == []
    schedule = rows(store)[("my_pipeline", "api_trigger")]
    assert schedule.check_token(token) is True
    assert schedule.check_token(token + "x") is False
    assert schedule.token is None

    text = path.read_text(encoding="utf-8")
    assert token not in text
    assert "token" not in text
    assert [e["name"] for e in entries(path)] == ["api_trigger", "other"]

    # Later syncs keep the token (the file no longer has one) and change nothing.
    report = sync_triggers(project_dir)
    assert report.updated == [] and report.created == [] and report.errors == []
    assert rows(store)[("my_pipeline", "api_trigger")].check_token(token) is True


def test_notebook_missing_for_a_file_is_reported(store: Store, project_dir: Path) -> None:
    write(
        project_dir / "ghost.triggers.yaml",
        "triggers:\n- name: x\n  schedule_interval: '@daily'\n",
    )
    write(project_dir / "my_pipeline.triggers.yaml", MY_PIPELINE_FILE)
    report = sync_triggers(project_dir)
    assert len(report.errors) == 1
    assert "ghost" in report.errors[0]
    assert len(rows(store)) == 2


# =============================================================================================
# store -> file
# =============================================================================================


def test_update_of_an_in_code_schedule_writes_back_to_the_file(
    store: Store, project_dir: Path
) -> None:
    path = write(project_dir / "my_pipeline.triggers.yaml", MY_PIPELINE_FILE)
    sync_triggers(project_dir)
    schedule = PipelineSchedule.query.filter_by(name="hourly_sync").one()

    schedule.update(schedule_interval=ScheduleInterval.DAILY, variables={"region": "eu-west-1"})
    by_name = {e["name"]: e for e in entries(path)}
    assert by_name["hourly_sync"]["schedule_interval"] == "@daily"
    assert by_name["hourly_sync"]["variables"] == {"region": "eu-west-1"}
    assert by_name["on_demand"]["schedule_type"] == "api"  # the other entry is kept

    # The file and the store now agree: a sync changes nothing.
    report = sync_triggers(project_dir)
    assert report.updated == [] and report.deleted == [] and report.created == []
    assert rows(store)[("my_pipeline", "hourly_sync")].schedule_interval == "@daily"


def test_deactivating_an_in_code_schedule_survives_a_sync(
    store: Store, project_dir: Path
) -> None:
    path = write(project_dir / "my_pipeline.triggers.yaml", MY_PIPELINE_FILE)
    sync_triggers(project_dir)
    schedule = PipelineSchedule.query.filter_by(name="hourly_sync").one()
    schedule.update(status=ScheduleStatus.INACTIVE)
    assert {e["name"]: e for e in entries(path)}["hourly_sync"]["status"] == "inactive"
    sync_triggers(project_dir)
    assert rows(store)[("my_pipeline", "hourly_sync")].status == "inactive"


def test_pause_and_resume_write_no_activation_stamp_unless_the_file_has_one(
    store: Store, project_dir: Path
) -> None:
    path = write(project_dir / "my_pipeline.triggers.yaml", MY_PIPELINE_FILE)
    sync_triggers(project_dir)
    before = path.read_text(encoding="utf-8")
    schedule = PipelineSchedule.query.filter_by(name="hourly_sync").one()
    schedule.update(status=ScheduleStatus.INACTIVE)
    schedule.update(status=ScheduleStatus.ACTIVE, last_enabled_at=datetime.now(tz=UTC))
    # The store has the stamp; the file (under version control) is as it was.
    assert rows(store)[("my_pipeline", "hourly_sync")].last_enabled_at is not None
    assert all("last_enabled_at" not in e for e in entries(path))
    assert {e["name"]: e for e in entries(path)}["hourly_sync"]["status"] == "active"
    assert path.read_text(encoding="utf-8") == before
    # A file that does track it gets the new stamp.
    tracked = [
        {**e, "last_enabled_at": "2024-01-01T00:00:00+00:00"} if e["name"] == "hourly_sync" else e
        for e in entries(path)
    ]
    path.write_text(yaml.safe_dump({"triggers": tracked}), encoding="utf-8")
    sync_triggers(project_dir)
    stamp = datetime(2026, 12, 1, 12, tzinfo=UTC)
    schedule = PipelineSchedule.query.filter_by(name="hourly_sync").one()
    schedule.update(last_enabled_at=stamp)
    written = {e["name"]: e for e in entries(path)}["hourly_sync"]["last_enabled_at"]
    assert datetime.fromisoformat(str(written)) == stamp


def test_delete_of_an_in_code_schedule_removes_its_entry(
    store: Store, project_dir: Path
) -> None:
    path = write(project_dir / "my_pipeline.triggers.yaml", MY_PIPELINE_FILE)
    sync_triggers(project_dir)
    PipelineSchedule.query.filter_by(name="on_demand").one().delete()
    assert [e["name"] for e in entries(path)] == ["hourly_sync"]
    # A sync does not bring it back.
    report = sync_triggers(project_dir)
    assert report.created == []
    assert set(rows(store)) == {("my_pipeline", "hourly_sync")}


def test_schedules_not_in_code_are_never_deleted_by_sync(
    store: Store, project_dir: Path
) -> None:
    made_in_code = PipelineSchedule.create(
        name="made_by_hand", pipeline_uuid="my_pipeline", schedule_interval="@daily"
    )
    other = PipelineSchedule.create(
        name="elsewhere", pipeline_uuid="etl/daily", schedule_interval="@hourly"
    )
    path = write(project_dir / "my_pipeline.triggers.yaml", MY_PIPELINE_FILE)
    sync_triggers(project_dir)
    path.unlink()
    report = sync_triggers(project_dir)
    assert sorted(report.orphaned) == ["my_pipeline:hourly_sync", "my_pipeline:on_demand"]
    assert report.deleted == []
    found = rows(store)
    assert set(found) == {
        ("my_pipeline", "made_by_hand"),
        ("etl/daily", "elsewhere"),
        ("my_pipeline", "hourly_sync"),
        ("my_pipeline", "on_demand"),
    }
    assert found[("my_pipeline", "made_by_hand")].orphaned_at is None
    assert found[("my_pipeline", "made_by_hand")].id == made_in_code.id
    assert found[("etl/daily", "elsewhere")].id == other.id
    # A schedule made with the API does not create or touch any file.
    assert not (project_dir / "etl" / "daily.triggers.yaml").exists()
    made_in_code.update(sla=10)
    assert not path.exists()


def test_a_vanished_file_keeps_its_schedules_runs_and_backfills(
    store: Store, project_dir: Path
) -> None:
    from datetime import datetime, timezone

    from mage_nb_sched import Backfill, PipelineRun

    path = write(project_dir / "my_pipeline.triggers.yaml", MY_PIPELINE_FILE)
    sync_triggers(project_dir)
    hourly = rows(store)[("my_pipeline", "hourly_sync")]
    assert hourly.status == "active"
    runs = [PipelineRun.create(pipeline_schedule_id=hourly.id) for _ in range(3)]
    backfill = Backfill.create(
        pipeline_schedule_id=hourly.id,
        start_datetime=datetime(2024, 1, 1, tzinfo=timezone.utc),
        end_datetime=datetime(2024, 1, 2, tzinfo=timezone.utc),
        interval_type="day",
    )

    saved = path.read_text(encoding="utf-8")
    path.unlink()  # e.g. a branch switch
    first = sync_triggers(project_dir)
    again = sync_triggers(project_dir)
    assert sorted(first.orphaned) == ["my_pipeline:hourly_sync", "my_pipeline:on_demand"]
    assert again.orphaned == [] and again.deleted == []  # marked once
    orphan = PipelineSchedule.query.get(hourly.id)
    assert orphan.status == "inactive" and orphan.orphaned_at is not None
    assert [run.id for run in orphan.pipeline_runs] == [run.id for run in runs]
    assert Backfill.query.get(backfill.id) is not None

    # The file comes back: the schedule is restored from it, same id, same history.
    path.write_text(saved, encoding="utf-8")
    back = sync_triggers(project_dir)
    assert "my_pipeline:hourly_sync" in back.updated and back.deleted == []
    restored = PipelineSchedule.query.get(hourly.id)
    assert restored.status == "active" and restored.orphaned_at is None
    assert len(restored.pipeline_runs) == 3

    # Deleting it explicitly still deletes it (and its history).
    path.unlink()
    sync_triggers(project_dir)
    PipelineSchedule.query.get(hourly.id).delete()
    assert PipelineSchedule.query.get(hourly.id) is None
    assert PipelineRun.query.filter_by(pipeline_schedule_id=hourly.id).all() == []


def test_a_repeated_name_in_one_file_is_an_error_and_the_first_entry_wins(
    store: Store, project_dir: Path
) -> None:
    write(
        project_dir / "my_pipeline.triggers.yaml",
        "triggers:\n"
        "- name: twice\n  schedule_interval: '@hourly'\n"
        "- name: twice\n  schedule_interval: '@daily'\n",
    )
    report = sync_triggers(project_dir)
    assert report.created == ["my_pipeline:twice"]
    assert len(report.errors) == 1 and "repeats a name" in report.errors[0]
    assert rows(store)[("my_pipeline", "twice")].schedule_interval == "@hourly"


# =============================================================================================
# Event matchers in triggers.yaml
# =============================================================================================

MATCHER_FILE = """\
triggers:
  - name: big_uploads
    schedule_type: event
    status: active
    event_matchers:
      - event_type: aws_event
        pattern:
          source: [aws.s3]
          detail:
            object:
              size: [{numeric: [">", 1000]}]
"""


def test_event_matchers_in_a_triggers_file_are_stored_and_kept_stable(
    store: Store, project_dir: Path
) -> None:
    from mage_nb_sched.service import events, schedules

    path = write(project_dir / "my_pipeline.triggers.yaml", MATCHER_FILE)
    report = sync_triggers(project_dir)
    assert report.created == ["my_pipeline:big_uploads"] and report.errors == []
    schedule = rows(store)[("my_pipeline", "big_uploads")]
    stored = events.read_event_matchers(store, [schedule.id])[schedule.id]
    assert [m["pattern"] for m in stored] == [
        {"source": ["aws.s3"], "detail": {"object": {"size": [{"numeric": [">", 1000]}]}}}
    ]
    # The same file again changes nothing (the matcher keeps its id).
    assert sync_triggers(project_dir).updated == []
    assert events.read_event_matchers(store, [schedule.id])[schedule.id] == stored
    # A change elsewhere in the store is written back with the matchers still in the file.
    schedules.update_schedule(store, schedule.id, description="uploads over 1 kB")
    (entry,) = entries(path)
    assert entry["description"] == "uploads over 1 kB"
    assert entry["event_matchers"][0]["pattern"]["source"] == ["aws.s3"]
    # New matchers through the service replace those of the file.
    schedules.update_schedule(
        store, schedule.id, event_matchers=[{"pattern": {"source": ["aws.ec2"]}}]
    )
    (entry,) = entries(path)
    assert [m["pattern"] for m in entry["event_matchers"]] == [{"source": ["aws.ec2"]}]
    assert "id" not in entry["event_matchers"][0]


def test_a_bad_event_matcher_in_a_file_is_reported_and_stores_nothing(
    store: Store, project_dir: Path
) -> None:
    write(project_dir / "my_pipeline.triggers.yaml", MATCHER_FILE.replace("numeric", "numerc"))
    report = sync_triggers(project_dir)
    assert report.created == []
    assert report.errors and "event_matchers[0].pattern" in str(report.errors[0])
    assert rows(store) == {}
