"""Event triggers in the service: events in, runs out, exactly once (real SQLite)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import write_notebook
from sqlalchemy import event as sa_event
from sqlalchemy import insert, select

from mage_nb_sched import PipelineSchedule, ScheduleStatus, ScheduleType
from mage_nb_sched.core.errors import ConflictError, ValidationError
from mage_nb_sched.service import events, runs, schedules
from mage_nb_sched.store import Store, schema

#: S3's event notification for one object put into the seed's bucket (the shape S3 sends).
S3_NOTIFICATION: dict[str, Any] = {
    "Records": [
        {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-1",
            "eventTime": "2024-01-15T09:30:00.000Z",
            "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "AWS:AIDAJDPLRKLG7UEXAMPLE"},
            "requestParameters": {"sourceIPAddress": "203.0.113.7"},
            "responseElements": {
                "x-amz-request-id": "C3D13FE58DE4C810",
                "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
            },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "process-uploads",
                "bucket": {
                    "name": "my-data-bucket",
                    "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                    "arn": "arn:aws:s3:::my-data-bucket",
                },
                "object": {
                    "key": "uploads/orders-2024-01-15.csv",
                    "size": 1024,
                    "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                    "versionId": "096fKKXTRTtl3on89fVO.nfljtsv6qko",
                    "sequencer": "0055AED6DCD90281E5",
                },
            },
        }
    ]
}


def notification(*keys: str, event_name: str = "ObjectCreated:Put") -> dict[str, Any]:
    """The notification with one record per key (each its own sequencer)."""
    body: dict[str, Any] = {"Records": []}
    for index, key in enumerate(keys or ("uploads/orders-2024-01-15.csv",)):
        record = copy.deepcopy(S3_NOTIFICATION["Records"][0])
        record["eventName"] = event_name
        record["s3"]["object"]["key"] = key
        record["s3"]["object"]["sequencer"] = f"0055AED6DCD90281E{index}"
        body["Records"].append(record)
    return body


ENVELOPE: dict[str, Any] = {
    "version": "0",
    "id": "17793124-05d4-b198-2fde-7ededc63b103",
    "detail-type": "Object Created",
    "source": "aws.s3",
    "account": "111122223333",
    "time": "2024-01-15T09:30:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:s3:::warehouse"],
    "detail": {
        "bucket": {"name": "warehouse"},
        "object": {"key": "exports/orders.parquet", "size": 5_000_000},
        "reason": "PutObject",
        "requester": "123456789012",
    },
}


@pytest.fixture
def project(store: Store, project_dir: Path) -> Store:
    for name in ("process_uploads", "other_uploads", "nightly"):
        write_notebook(project_dir / f"{name}.ipynb")
    return store


def seed_schedule() -> PipelineSchedule:
    """The seed's event schedule, created exactly as the seed does."""
    return PipelineSchedule.create(
        name="s3_file_upload_trigger",
        pipeline_uuid="process_uploads",
        schedule_type=ScheduleType.EVENT,
        status=ScheduleStatus.ACTIVE,
        variables={"event_type": "s3:ObjectCreated:*", "bucket": "my-data-bucket"},
    )


def event_schedule(store: Store, name: str, *, matchers: Any = None, **values: Any) -> int:
    values.setdefault("pipeline_uuid", "other_uploads")
    values.setdefault("status", "active")
    record = schedules.create_schedule(store, name=name, schedule_type="event", **values)
    if matchers is not None:
        cleaned = events.clean_event_matchers(matchers)
        with store.write_engine.begin() as connection:
            events.write_event_matchers(connection, record.id, cleaned)
    return record.id


def run_rows(store: Store) -> list[Any]:
    return runs.list_runs(store)


# --------------------------------------------------------------------------------------------
# The seed's S3 trigger
# --------------------------------------------------------------------------------------------


def test_the_seeds_s3_notification_fires_the_seeds_trigger_and_nothing_else(project: Store) -> None:
    seed = seed_schedule()
    inactive = event_schedule(
        project,
        "inactive_twin",
        status="inactive",
        variables={"event_type": "s3:ObjectCreated:*", "bucket": "my-data-bucket"},
    )
    other_bucket = event_schedule(
        project,
        "other_bucket",
        variables={"event_type": "s3:ObjectCreated:*", "bucket": "another-bucket"},
    )
    removed = event_schedule(
        project,
        "on_removal",
        matchers=[{"pattern": {"eventName": [{"prefix": "ObjectRemoved:"}]}}],
    )
    no_shorthand = event_schedule(project, "plain_variables", variables={"env": "production"})
    timed = schedules.create_schedule(
        project,
        name="nightly",
        pipeline_uuid="nightly",
        schedule_interval="@daily",
        status="active",
        variables={"event_type": "s3:ObjectCreated:*", "bucket": "my-data-bucket"},
    )

    [outcome] = events.ingest_events(project, S3_NOTIFICATION)

    assert outcome.matched == (seed.id,)
    assert outcome.duplicates == 0
    [run] = outcome.runs
    assert run.pipeline_schedule_id == seed.id
    assert run.pipeline_uuid == "process_uploads"
    assert str(run.status) == "initial"
    # The run's `event` variable is the single S3 record.
    assert run.event_variables == S3_NOTIFICATION["Records"][0]
    # Runs made by events carry microseconds in their partition (DESIGN §1).
    assert run.execution_partition.startswith(f"{seed.id}/")
    assert "_" in run.execution_partition.split("/")[1]
    assert [r.id for r in run_rows(project)] == [run.id]
    for schedule_id in (inactive, other_bucket, removed, no_shorthand, timed.id):
        assert runs.list_runs(project, schedule_id=schedule_id) == []
    # The Mage model sees the run as the seed's.
    assert [r.id for r in PipelineSchedule.query.get(seed.id).pipeline_runs] == [run.id]


def test_the_same_notification_twice_makes_one_run(project: Store) -> None:
    seed = seed_schedule()
    [first] = events.ingest_events(project, S3_NOTIFICATION)
    [second] = events.ingest_events(project, copy.deepcopy(S3_NOTIFICATION))
    assert len(first.runs) == 1 and first.duplicates == 0
    assert second.matched == (seed.id,) and second.runs == () and second.duplicates == 1
    assert len(run_rows(project)) == 1
    # The key is the database's: it holds for another process or server as well.
    assert first.runs[0].run_key.startswith(f"event:{seed.id}:")


def test_a_notification_of_three_records_makes_three_runs(project: Store) -> None:
    seed = seed_schedule()
    body = notification("a.csv", "b.csv", "c.csv")
    outcomes = events.ingest_events(project, body)
    assert [len(outcome.runs) for outcome in outcomes] == [1, 1, 1]
    made = run_rows(project)
    assert len(made) == 3
    assert {r.event_variables["s3"]["object"]["key"] for r in made} == {"a.csv", "b.csv", "c.csv"}
    # Made together, still each its own output folder.
    assert len({r.execution_partition for r in made}) == 3
    assert {r.pipeline_schedule_id for r in made} == {seed.id}
    # A record S3 sends again (same bucket, key, sequencer) is not run again.
    resent = body["Records"][1]
    # The same key written again is a new event: S3 gives it a later sequencer.
    rewritten = copy.deepcopy(resent)
    rewritten["s3"]["object"]["sequencer"] = "0055AED6DCD90281F0"
    again = events.ingest_events(project, {"Records": [resent, rewritten]})
    assert [len(o.runs) for o in again] == [0, 1]
    assert [o.duplicates for o in again] == [1, 0]
    assert len(run_rows(project)) == 4


def test_a_list_of_events_and_a_repeated_event_within_it(project: Store) -> None:
    seed = seed_schedule()
    record = S3_NOTIFICATION["Records"][0]
    outcomes = events.ingest_events(project, [record, S3_NOTIFICATION, {"event_type": "noise"}])
    assert [o.matched for o in outcomes] == [(seed.id,), (seed.id,), ()]
    assert [len(o.runs) for o in outcomes] == [1, 0, 0]
    assert [o.duplicates for o in outcomes] == [0, 1, 0]
    assert len(run_rows(project)) == 1


def test_an_eventbridge_envelope_fires_a_matcher_with_prefix_numeric_and_anything_but(
    project: Store,
) -> None:
    pattern = {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {
            "bucket": {"name": [{"prefix": "ware"}]},
            "object": {
                "key": [{"anything-but": {"prefix": "tmp/"}}],
                "size": [{"numeric": [">", 1_000_000, "<=", 10_000_000]}],
            },
        },
    }
    big_exports = event_schedule(project, "big_exports", matchers=[{"pattern": pattern}])
    [outcome] = events.ingest_events(project, ENVELOPE)
    assert outcome.matched == (big_exports,)
    assert outcome.runs[0].event_variables == ENVELOPE

    small = copy.deepcopy(ENVELOPE)
    small["id"] = "small-one"
    small["detail"]["object"]["size"] = 10
    scratch = copy.deepcopy(ENVELOPE)
    scratch["id"] = "scratch-one"
    scratch["detail"]["object"]["key"] = "tmp/orders.parquet"
    assert [o.matched for o in events.ingest_events(project, [small, scratch])] == [(), ()]
    # The same envelope id again: the event was seen.
    [again] = events.ingest_events(project, ENVELOPE)
    assert again.runs == () and again.duplicates == 1
    assert len(run_rows(project)) == 1


def test_a_plain_event_matches_by_its_event_type_and_dedups_by_its_json(project: Store) -> None:
    ready = event_schedule(project, "orders_ready", variables={"event_type": "orders_*"})
    [first] = events.ingest_events(project, {"event_type": "orders_ready", "day": "2024-01-15"})
    assert first.matched == (ready,) and len(first.runs) == 1
    # The same JSON (keys in another order) is the same event; another day is another.
    [same] = events.ingest_events(project, {"day": "2024-01-15", "event_type": "orders_ready"})
    [other] = events.ingest_events(project, {"event_type": "orders_ready", "day": "2024-01-16"})
    assert (same.duplicates, len(other.runs)) == (1, 1)


def test_matchers_or_shorthand_either_fires(project: Store) -> None:
    both = event_schedule(
        project,
        "both",
        variables={"event_type": "never:*"},
        matchers=[{"pattern": {"event_type": ["from_matcher"]}}],
    )
    assert events.ingest_events(project, {"event_type": "from_matcher"})[0].matched == (both,)
    assert events.ingest_events(project, {"event_type": "never:x"})[0].matched == (both,)


# --------------------------------------------------------------------------------------------
# Bad input writes nothing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("just text", "body"),
        ([{"event_type": "a"}, 3], "body[1]"),
        ({"Records": [{"eventName": "ObjectCreated:Put"}, "x"]}, "body.Records[1]"),
        ({"value": float("nan")}, "body.value"),
        ({"value": 2**1100}, "body.value"),
        ([{"n": index} for index in range(events.MAX_EVENTS + 1)], "body"),
        ({"Records": [{"n": index} for index in range(events.MAX_EVENTS + 1)]}, "body"),
    ],
    ids=[
        "text",
        "a number in the list",
        "a record not an object",
        "NaN",
        "huge int",
        "1001",
        "1001 records",
    ],
)
def test_a_bad_body_names_the_field_and_writes_nothing(
    project: Store, body: Any, field: str
) -> None:
    seed_schedule()
    event_schedule(project, "everything", variables={"event_type": "*"})
    with pytest.raises(ValidationError) as caught:
        events.ingest_events(project, [S3_NOTIFICATION, body] if field == "body.value" else body)
    expected = "body[1].value" if field == "body.value" else field
    assert caught.value.field == expected
    assert run_rows(project) == []


def test_exactly_the_maximum_number_of_events_is_accepted(project: Store) -> None:
    outcomes = events.ingest_events(project, [{"n": index} for index in range(events.MAX_EVENTS)])
    assert len(outcomes) == events.MAX_EVENTS


# --------------------------------------------------------------------------------------------
# One bad schedule never stops the others
# --------------------------------------------------------------------------------------------


def test_a_broken_stored_pattern_or_shorthand_is_skipped_and_the_others_fire(
    project: Store, caplog: pytest.LogCaptureFixture
) -> None:
    seed = seed_schedule()
    broken = event_schedule(project, "broken_pattern")
    bad_shorthand = event_schedule(project, "bad_shorthand")
    with project.write_engine.begin() as connection:
        # Written past the service, as SQL or an old version could.
        matcher = connection.execute(
            insert(schema.event_matcher).values(
                name="broken", event_type="aws_event", pattern={"source": "not-a-list"}
            )
        ).inserted_primary_key
        assert matcher is not None
        connection.execute(
            insert(schema.pipeline_schedule_event_matcher_association).values(
                pipeline_schedule_id=broken, event_matcher_id=matcher[0]
            )
        )
        connection.execute(
            schema.pipeline_schedule.update()
            .where(schema.pipeline_schedule.c.id == bad_shorthand)
            .values(variables={"event_type": 42})
        )
    [outcome] = events.ingest_events(project, S3_NOTIFICATION)
    assert outcome.matched == (seed.id,)
    assert "broken_pattern" in caplog.text and "bad_shorthand" in caplog.text


# --------------------------------------------------------------------------------------------
# Event matchers of a schedule
# --------------------------------------------------------------------------------------------


def test_matchers_are_written_replaced_and_read_in_one_query(project: Store) -> None:
    first = event_schedule(project, "first")
    second = event_schedule(project, "second")
    cleaned = events.clean_event_matchers(
        [
            {"name": "uploads", "event_type": "aws_event", "pattern": {"source": ["aws.s3"]}},
            {"pattern": {"detail-type": [{"prefix": "Object "}]}},
        ]
    )
    assert cleaned[1] == {
        "name": None,
        "event_type": "aws_event",
        "pattern": {"detail-type": [{"prefix": "Object "}]},
    }
    with project.write_engine.begin() as connection:
        events.write_event_matchers(connection, first, cleaned)
        events.write_event_matchers(
            connection, second, events.clean_event_matchers([{"pattern": {"a": ["b"]}}])
        )

    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    sa_event.listen(project.engine, "before_cursor_execute", count)
    try:
        found = events.read_event_matchers(project, [first, second, 999])
    finally:
        sa_event.remove(project.engine, "before_cursor_execute", count)
    assert [text for text in statements if text.startswith("SELECT")] == statements[-1:]
    assert len(statements) <= 2  # the store's own BEGIN, then one query
    assert [m["name"] for m in found[first]] == [
        "uploads",
        f"pipeline_schedule_{first}_event_matcher_1",
    ]
    assert [m["pattern"] for m in found[second]] == [{"a": ["b"]}]
    assert found[999] == []

    # Replacing drops the old ones (and their rows: nobody else uses them).
    with project.write_engine.begin() as connection:
        events.write_event_matchers(
            connection, first, events.clean_event_matchers([{"pattern": {"c": ["d"]}}])
        )
    found = events.read_event_matchers(project, [first, second])
    assert [m["pattern"] for m in found[first]] == [{"c": ["d"]}]
    assert len(found[second]) == 1
    with project.engine.connect() as connection:
        names = set(connection.execute(select(schema.event_matcher.c.name)).scalars())
    assert "uploads" not in names and len(names) == 2
    # Mage's shape with the ids a client echoes back is accepted.
    echoed = [{**found[first][0], "pipeline_schedule_ids": [first]}]
    assert events.clean_event_matchers(echoed)[0]["pattern"] == {"c": ["d"]}


def test_a_matcher_name_of_another_schedule_conflicts_and_nothing_is_written(
    project: Store,
) -> None:
    first = event_schedule(project, "first", matchers=[{"name": "shared", "pattern": {"a": ["b"]}}])
    second = event_schedule(project, "second", matchers=[{"pattern": {"x": ["y"]}}])
    with pytest.raises(ConflictError) as caught, project.write_engine.begin() as connection:
        events.write_event_matchers(
            connection,
            second,
            events.clean_event_matchers(
                [{"pattern": {"new": ["one"]}}, {"name": "shared", "pattern": {"c": ["d"]}}]
            ),
        )
    assert caught.value.field == "event_matchers[1].name"
    found = events.read_event_matchers(project, [first, second])
    assert [m["pattern"] for m in found[second]] == [{"x": ["y"]}]  # rolled back whole
    assert [m["name"] for m in found[first]] == ["shared"]


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"pattern": {}}, "event_matchers"),
        (["x"], "event_matchers[0]"),
        ([{"pattern": {"a": ["b"]}, "colour": "red"}], "event_matchers[0].colour"),
        ([{"event_type": "gcp_event", "pattern": {"a": ["b"]}}], "event_matchers[0].event_type"),
        ([{"name": "x"}], "event_matchers[0].pattern"),
        ([{"pattern": {"detail": {"size": 5}}}], "event_matchers[0].pattern.detail.size"),
        (
            [{"pattern": {"n": [{"numeric": ["~", 1]}]}}],
            "event_matchers[0].pattern.n[0].numeric[0]",
        ),
        ([{"name": "", "pattern": {"a": ["b"]}}], "event_matchers[0].name"),
        (
            [{"name": "a", "pattern": {"a": ["b"]}}, {"name": "a", "pattern": {"c": ["d"]}}],
            "event_matchers[1].name",
        ),
        ([{"pattern": {"a": ["b"]}}] * 101, "event_matchers"),
    ],
)
def test_bad_matchers_name_the_field(value: Any, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        events.clean_event_matchers(value)
    assert caught.value.field == field


def test_no_matchers() -> None:
    assert events.clean_event_matchers(None) == []
    assert events.clean_event_matchers([]) == []


# --------------------------------------------------------------------------------------------
# Local file events (the files; the watcher is tests/test_file_events.py)
# --------------------------------------------------------------------------------------------


def test_which_files_fire_and_their_identity(project_dir: Path) -> None:
    incoming = project_dir / "incoming"
    incoming.mkdir()
    target = incoming / "a.csv"
    target.write_text("x\n1\n", encoding="utf-8")
    made = events.file_event(project_dir, target, "created")
    assert made is not None
    assert made.payload == {"event_type": "file:created", "path": "incoming/a.csv"}
    # Relative paths are the project's; POSIX whatever the OS.
    relative = events.file_event(project_dir, Path("incoming") / "a.csv", "modified")
    assert relative is not None and relative.payload["path"] == "incoming/a.csv"
    # Same file, same content: the same event, whatever the kind; new content: another.
    assert relative.identity == made.identity
    target.write_text("x\n1\n2\n", encoding="utf-8")
    changed = events.file_event(project_dir, target, "modified")
    assert changed is not None and changed.identity != made.identity

    (project_dir / ".mage_nb_sched").mkdir(exist_ok=True)
    hidden = [
        project_dir / ".mage_nb_sched" / "x.csv",
        project_dir / ".ipynb_checkpoints" / "a-checkpoint.csv",
        incoming / ".a.csv.swp",
        project_dir / "node_modules" / "x.csv",
    ]
    for path in hidden:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x", encoding="utf-8")
        assert events.file_event(project_dir, path, "created") is None, path
    assert events.file_event(project_dir, incoming, "created") is None  # a folder
    assert events.file_event(project_dir, incoming / "gone.csv", "created") is None
    outside = project_dir.parent / "outside.csv"
    outside.write_text("x", encoding="utf-8")
    assert events.file_event(project_dir, outside, "created") is None
    link = incoming / "link.csv"
    os.symlink(outside, link)
    assert events.file_event(project_dir, link, "created") is None  # escapes through a link


def test_file_changes_fire_matching_schedules_once(project: Store, project_dir: Path) -> None:
    watched = event_schedule(
        project, "incoming_csv", variables={"event_type": "file:*", "path": "incoming/*.csv"}
    )
    created_only = event_schedule(
        project,
        "created_only",
        matchers=[{"pattern": {"event_type": ["file:created"], "path": [{"suffix": ".csv"}]}}],
    )
    (project_dir / "incoming").mkdir()
    target = project_dir / "incoming" / "a.csv"
    target.write_text("1", encoding="utf-8")
    (project_dir / "incoming" / "a.txt").write_text("1", encoding="utf-8")
    outcomes = events.fire_file_changes(
        project, [("created", target), ("created", project_dir / "incoming" / "a.txt")]
    )
    assert [o.matched for o in outcomes] == [(watched, created_only), ()]
    assert outcomes[0].runs[0].event_variables == {
        "event_type": "file:created",
        "path": "incoming/a.csv",
    }
    # Reported again (a later batch) with the same content: nothing new.
    again = events.fire_file_changes(project, [("modified", target)])
    assert again[0].runs == () and again[0].duplicates == 1
    # New content: a file:modified event, for the schedule that takes it.
    target.write_text("12", encoding="utf-8")
    [modified] = events.fire_file_changes(project, [("modified", target)])
    assert modified.matched == (watched,) and len(modified.runs) == 1
    assert modified.runs[0].event_variables["event_type"] == "file:modified"
    assert len(run_rows(project)) == 3
