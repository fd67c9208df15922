"""REST: ``pipeline_schedules``, ``pipelines/{uuid}/pipeline_schedules`` and
``pipeline_schedules/{id}`` against a real server (loopback, real SQLite), every answer checked
against the OpenAPI document by the client.

The scheduler is off in this module's server (``mage_settings`` below) unless a test turns it
on: the counts these tests assert must not move because a run was created or started meanwhile.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import write_notebook
from server_fixtures import *  # noqa: F403
from server_fixtures import Api, Reply
from sqlalchemy import event, select

from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.service import runs as run_service
from mage_nb_sched.service import schedules as schedule_service
from mage_nb_sched.store import schema

FIELDS = {
    "id",
    "name",
    "pipeline_uuid",
    "schedule_type",
    "schedule_interval",
    "start_time",
    "status",
    "last_enabled_at",
    "variables",
    "sla",
    "settings",
    "description",
    "token_hint",
    "in_code",
    "next_due_at",
    "created_at",
    "updated_at",
    "orphaned_at",
    "next_pipeline_run_date",
    "pipeline_runs_count",
    "last_pipeline_run_status",
    "pipeline_in_progress_runs_count",
    "sla_breached_runs_count",
    "event_matchers",
}


@pytest.fixture
def mage_settings() -> dict[str, Any]:
    return {"scheduler_enabled": False}


@pytest.fixture
def notebooks(jp_root_dir: Path) -> Path:
    """``daily`` and ``etl/daily`` in the server's project dir."""
    root = Path(jp_root_dir)
    write_notebook(root / "daily.ipynb", ["x = 1"])
    write_notebook(root / "etl" / "daily.ipynb", ["y = 2"])
    return root


def schedule_body(**fields: Any) -> dict[str, Any]:
    values = {"name": "nightly", "pipeline_uuid": "daily", "schedule_interval": "@daily"}
    values.update(fields)
    return {"pipeline_schedule": values}


def stored_schedules(mage_app: Any) -> list[tuple[Any, ...]]:
    """Every schedule row as stored (all columns), to show that a refused call wrote nothing."""
    with mage_app.store.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(select(schema.pipeline_schedule))]


async def create(api: Api, **fields: Any) -> dict[str, Any]:
    reply = await api.post("pipeline_schedules", schedule_body(**fields))
    assert reply.status == 201, reply.text
    return dict(reply.json["pipeline_schedule"])


# --------------------------------------------------------------------------------------------
# Create, read, change, delete
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mage_settings", [{}], ids=["scheduler-in-server"])
def test_create_answers_201_with_location_and_the_token_once(
    api: Api, mage_app: Any, notebooks: Path, on_server_loop: Any
) -> None:
    async def scenario() -> tuple[Reply, Reply, Reply]:
        created = await api.post(
            "pipeline_schedules",
            schedule_body(name="by api", schedule_type="api", schedule_interval=None),
        )
        schedule_id = created.json["pipeline_schedule"]["id"]
        again = await api.get(f"pipeline_schedules/{schedule_id}")
        listed = await api.get("pipeline_schedules")
        return created, again, listed

    created, again, listed = on_server_loop(scenario())
    assert created.status == 201, created.text
    schedule = created.json["pipeline_schedule"]
    assert created.headers["Location"].endswith(f"/mage/api/pipeline_schedules/{schedule['id']}")
    assert set(schedule) == FIELDS | {"token"}
    token = schedule["token"]
    assert schedule["token_hint"] == f"…{token[-4:]}"
    assert schedule_service.check_token(mage_app.store, schedule["id"], token)
    assert schedule["schedule_type"] == "api" and schedule["status"] == "inactive"
    assert schedule["pipeline_runs_count"] == 0
    assert schedule["last_pipeline_run_status"] is None
    assert schedule["next_pipeline_run_date"] is None  # not periodic
    # Shown once: never again, neither alone nor in a list, and the hash never.
    assert again.status == 200
    assert "token" not in again.json["pipeline_schedule"]
    assert set(again.json["pipeline_schedule"]) == FIELDS
    assert [item["id"] for item in listed.json["pipeline_schedules"]] == [schedule["id"]]
    assert "token" not in listed.json["pipeline_schedules"][0]
    with mage_app.store.engine.connect() as connection:
        token_hash = connection.execute(select(schema.pipeline_schedule.c.token_hash)).scalar()
    for reply in (created, again, listed):
        assert "token_hash" not in reply.text and token_hash not in reply.text
    assert token not in again.text + listed.text


def test_a_token_given_on_create_is_the_one_that_verifies(
    api: Api, mage_app: Any, notebooks: Path, on_server_loop: Any
) -> None:
    chosen = "my-own-token-0123456789"
    schedule = on_server_loop(create(api, schedule_type="api", token=chosen))
    assert schedule["token"] == chosen
    assert schedule_service.check_token(mage_app.store, schedule["id"], chosen)
    assert not schedule_service.check_token(mage_app.store, schedule["id"], chosen + "x")


def test_the_nested_route_takes_the_pipeline_from_the_path(
    api: Api, mage_app: Any, notebooks: Path, on_server_loop: Any
) -> None:
    async def scenario() -> tuple[Reply, ...]:
        nested = await api.post(
            "pipelines/etl%2Fdaily/pipeline_schedules",
            {"pipeline_schedule": {"name": "nested", "schedule_interval": "@hourly"}},
        )
        same = await api.post(
            "pipelines/etl%2Fdaily/pipeline_schedules",
            {
                "pipeline_schedule": {
                    "name": "same",
                    "pipeline_uuid": "etl/daily.ipynb",
                    "schedule_type": "api",
                }
            },
        )
        await create(api, name="other pipeline")
        listed = await api.get("pipelines/etl%2Fdaily/pipeline_schedules")
        differs = await api.post(
            "pipelines/etl%2Fdaily/pipeline_schedules",
            {"pipeline_schedule": {"name": "wrong", "pipeline_uuid": "daily"}},
        )
        unknown = await api.get("pipelines/nowhere/pipeline_schedules")
        escape = await api.get("pipelines/..%2Fsecret/pipeline_schedules")
        return nested, same, listed, differs, unknown, escape

    nested, same, listed, differs, unknown, escape = on_server_loop(scenario())
    assert nested.status == 201, nested.text
    assert nested.json["pipeline_schedule"]["pipeline_uuid"] == "etl/daily"
    assert nested.headers["Location"].endswith(
        f"/mage/api/pipeline_schedules/{nested.json['pipeline_schedule']['id']}"
    )
    assert same.status == 201, same.text
    assert [s["name"] for s in listed.json["pipeline_schedules"]] == ["nested", "same"]
    assert listed.json["metadata"] == {"count": 2, "next": None}
    assert differs.status == 400 and differs.error["field"] == "pipeline_uuid"
    assert "wrong" not in {s.name for s in schedule_service.list_schedules(mage_app.store)}
    assert unknown.status == 404 and "nowhere" in unknown.error["message"]
    assert "GET mage/api/pipelines" in unknown.error["message"]
    assert escape.status == 400 and escape.error["field"] == "pipeline_uuid"


def test_the_nested_list_of_a_notebook_without_schedules_is_empty(
    api: Api, notebooks: Path, on_server_loop: Any
) -> None:
    reply = on_server_loop(api.get("pipelines/daily/pipeline_schedules"))
    assert reply.status == 200
    assert reply.json == {"pipeline_schedules": [], "metadata": {"count": 0, "next": None}}


def test_put_activates_pauses_and_changes_any_field(
    api: Api, mage_app: Any, notebooks: Path, on_server_loop: Any
) -> None:
    async def scenario() -> tuple[dict[str, Any], ...]:
        schedule = await create(api)
        path = f"pipeline_schedules/{schedule['id']}"
        active = await api.put(path, {"pipeline_schedule": {"status": "active"}})
        paused = await api.put(path, {"pipeline_schedule": {"status": "inactive"}})
        changed = await api.put(
            path,
            {
                "pipeline_schedule": {
                    "name": "renamed",
                    "schedule_interval": "0 9 * * 1-5",
                    "sla": 600,
                    "variables": {"env": "prod"},
                    "settings": {"timezone": "Europe/Paris", "timeout": 60},
                    "description": "weekday mornings",
                }
            },
        )
        nothing = await api.put(path, {"pipeline_schedule": {}})
        for reply in (active, paused, changed, nothing):
            assert reply.status == 200, reply.text
        return (
            schedule,
            active.json["pipeline_schedule"],
            paused.json["pipeline_schedule"],
            changed.json["pipeline_schedule"],
            nothing.json["pipeline_schedule"],
        )

    schedule, active, paused, changed, nothing = on_server_loop(scenario())
    assert schedule["status"] == "inactive" and schedule["last_enabled_at"] is None
    assert active["status"] == "active" and active["last_enabled_at"] is not None
    assert paused["status"] == "inactive"
    assert changed["name"] == "renamed"
    assert changed["schedule_interval"] == "0 9 * * 1-5"
    assert changed["sla"] == 600 and changed["variables"] == {"env": "prod"}
    assert changed["settings"]["timezone"] == "Europe/Paris"
    assert changed["description"] == "weekday mornings"
    # 09:00 Paris on a weekday.
    upcoming = datetime.fromisoformat(changed["next_pipeline_run_date"])
    assert upcoming.astimezone(timezone(timedelta(hours=1))).hour in (9, 10)
    assert upcoming.weekday() < 5
    assert nothing == changed
    record = schedule_service.get_schedule(mage_app.store, schedule["id"])
    assert record.name == "renamed" and record.sla == 600
    assert "token" not in active and "token" not in changed


def test_rotate_token_answers_a_new_token_once_and_the_old_one_stops_working(
    api: Api, mage_app: Any, notebooks: Path, on_server_loop: Any
) -> None:
    async def scenario() -> tuple[dict[str, Any], Reply, Reply, Reply]:
        schedule = await create(api, schedule_type="api")
        path = f"pipeline_schedules/{schedule['id']}"
        rotated = await api.put(path, {"pipeline_schedule": {"rotate_token": True}})
        with_change = await api.put(
            path, {"pipeline_schedule": {"rotate_token": True, "description": "rotated"}}
        )
        after = await api.get(path)
        return schedule, rotated, with_change, after

    schedule, rotated, with_change, after = on_server_loop(scenario())
    store = mage_app.store
    first = schedule["token"]
    assert rotated.status == 200, rotated.text
    second = rotated.json["pipeline_schedule"]["token"]
    assert second != first
    assert with_change.status == 200, with_change.text
    third = with_change.json["pipeline_schedule"]["token"]
    assert with_change.json["pipeline_schedule"]["description"] == "rotated"
    assert len({first, second, third}) == 3
    assert not schedule_service.check_token(store, schedule["id"], first)
    assert not schedule_service.check_token(store, schedule["id"], second)
    assert schedule_service.check_token(store, schedule["id"], third)
    assert "token" not in after.json["pipeline_schedule"]
    assert after.json["pipeline_schedule"]["token_hint"] == f"…{third[-4:]}"


def test_delete_answers_204_then_the_schedule_is_gone(
    api: Api, mage_app: Any, notebooks: Path, on_server_loop: Any
) -> None:
    async def scenario() -> tuple[Reply, Reply, Reply]:
        schedule = await create(api)
        run_service.create_run(
            mage_app.store, pipeline_schedule_id=schedule["id"], status="completed"
        )
        path = f"pipeline_schedules/{schedule['id']}"
        deleted = await api.delete(path)
        gone = await api.get(path)
        again = await api.delete(path)
        return deleted, gone, again

    deleted, gone, again = on_server_loop(scenario())
    assert deleted.status == 204 and deleted.raw == b""
    assert gone.status == 404 and gone.error["type"] == "not_found"
    assert again.status == 404
    assert stored_schedules(mage_app) == []
    assert run_service.list_runs(mage_app.store) == []


def test_an_orphaned_schedule_shows_when_its_file_went(
    api: Api, mage_app: Any, notebooks: Path, on_server_loop: Any
) -> None:
    schedule = on_server_loop(create(api))
    went = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    schedule_service.update_schedule(
        mage_app.store, schedule["id"], orphaned_at=went, sync_file=False
    )
    reply = on_server_loop(api.get(f"pipeline_schedules/{schedule['id']}"))
    assert datetime.fromisoformat(reply.json["pipeline_schedule"]["orphaned_at"]) == went
    assert schedule["orphaned_at"] is None


# --------------------------------------------------------------------------------------------
# Computed fields
# --------------------------------------------------------------------------------------------


def test_the_computed_fields_count_the_runs_and_match_the_service(
    api: Api, mage_app: Any, notebooks: Path, on_server_loop: Any
) -> None:
    store = mage_app.store
    start = datetime(2024, 1, 1, 9, 0, tzinfo=timezone.utc)
    timed = on_server_loop(create(api, name="timed", status="active"))
    landing = on_server_loop(
        create(
            api,
            name="landing",
            status="active",
            start_time=start.isoformat(),
            settings={"landing_time_enabled": True},
        )
    )
    idle = on_server_loop(create(api, name="idle", schedule_type="api"))
    # Runs as history: an old one still waiting, then two finished; the newest one failed.
    run_service.create_run(store, pipeline_schedule_id=timed["id"], status="initial")
    breached = run_service.create_run(store, pipeline_schedule_id=timed["id"], status="completed")
    # Flagged as the scheduler's SLA check does (create_run does not take the flag).
    with store.write_engine.begin() as connection:
        connection.execute(
            schema.pipeline_run.update()
            .where(schema.pipeline_run.c.id == breached.id)
            .values(sla_breached=True)
        )
    run_service.create_run(store, pipeline_schedule_id=timed["id"], status="failed")
    # Runtimes of about three days: the next landing run is created days ahead, so the next
    # execution date differs from the one without history.
    for days in (5, 20, 50):
        run_service.create_run(
            store,
            pipeline_schedule_id=landing["id"],
            status="completed",
            execution_date=start - timedelta(days=days),
            completed_at=utcnow() + timedelta(days=3, minutes=days),
        )

    async def scenario() -> tuple[Reply, ...]:
        listed = await api.get("pipeline_schedules")
        one = await api.get(f"pipeline_schedules/{timed['id']}")
        return listed, one

    listed, one = on_server_loop(scenario())
    by_id = {item["id"]: item for item in listed.json["pipeline_schedules"]}
    timed_json = by_id[timed["id"]]
    assert timed_json["pipeline_runs_count"] == 3
    assert timed_json["pipeline_in_progress_runs_count"] == 1
    assert timed_json["last_pipeline_run_status"] == "failed"
    assert timed_json["sla_breached_runs_count"] == 1
    assert by_id[idle["id"]]["sla_breached_runs_count"] == 0
    assert one.json["pipeline_schedule"] == timed_json
    assert by_id[idle["id"]]["pipeline_runs_count"] == 0
    assert by_id[idle["id"]]["last_pipeline_run_status"] is None
    assert by_id[landing["id"]]["last_pipeline_run_status"] == "completed"
    # The list computes in bulk; each schedule alone, as the model API does, must agree.
    now = utcnow()
    for schedule_id, item in by_id.items():
        stats = schedule_service.schedule_stats(store, schedule_id)
        assert item["pipeline_runs_count"] == stats.pipeline_runs_count
        assert item["pipeline_in_progress_runs_count"] == stats.pipeline_in_progress_runs_count
        assert item["sla_breached_runs_count"] == stats.sla_breaches
        last = stats.last_pipeline_run_status
        assert item["last_pipeline_run_status"] == (None if last is None else last.value)
        record = schedule_service.get_schedule(store, schedule_id)
        expected = schedule_service.next_execution_date(store, record, now)
        shown = item["next_pipeline_run_date"]
        assert (None if shown is None else datetime.fromisoformat(shown)) == expected, item["name"]
    # Landing time moves the next run by the runtimes: the bulk path must have used them.
    landing_record = schedule_service.get_schedule(store, landing["id"])
    without_runtimes = schedule_service.timing.next_execution_date(
        schedule_service.timing_of(landing_record), now, []
    )
    shown = datetime.fromisoformat(by_id[landing["id"]]["next_pipeline_run_date"])
    assert without_runtimes is not None and shown - without_runtimes > timedelta(days=1)


def test_a_list_of_300_schedules_costs_as_many_statements_as_one_of_30(
    api: Api, mage_app: Any, notebooks: Path, on_server_loop: Any
) -> None:
    store = mage_app.store
    start = datetime(2024, 1, 1, 6, 0, tzinfo=timezone.utc)

    def add(count: int, offset: int) -> None:
        for index in range(offset, offset + count):
            kind = index % 3
            record = schedule_service.create_schedule(
                store,
                name=f"schedule {index}",
                pipeline_uuid="daily",
                schedule_type="api" if kind == 2 else "time",
                schedule_interval=None if kind == 2 else "@daily",
                start_time=start if kind == 1 else None,
                settings={"landing_time_enabled": True} if kind == 1 else None,
            )
            if index % 5 == 0:
                run_service.create_run(store, pipeline_schedule_id=record.id, status="completed")

    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    def listed() -> tuple[int, int]:
        statements.clear()
        event.listen(store.engine, "before_cursor_execute", count)
        try:
            reply = on_server_loop(api.get("pipeline_schedules", params={"limit": 1000}))
        finally:
            event.remove(store.engine, "before_cursor_execute", count)
        assert reply.status == 200, reply.text
        return len(reply.json["pipeline_schedules"]), len(statements)

    add(30, 0)
    listed()  # a first call opens the pooled connections
    small = listed()
    add(270, 30)
    large = listed()
    assert small[0] == 30 and large[0] == 300
    assert large[1] == small[1], statements
    assert small[1] <= 6, statements


# --------------------------------------------------------------------------------------------
# Lists: filters and pages
# --------------------------------------------------------------------------------------------


def test_pages_walk_every_schedule_once(api: Api, notebooks: Path, on_server_loop: Any) -> None:
    async def scenario() -> list[Reply]:
        for index in range(7):
            await create(api, name=f"s{index}")
        pages = [await api.get("pipeline_schedules", params={"limit": 3})]
        while pages[-1].json["metadata"]["next"] is not None:
            cursor = pages[-1].json["metadata"]["next"]
            # A schedule created mid-walk comes last, and nothing repeats.
            if len(pages) == 1:
                await create(api, name="mid-walk")
            pages.append(await api.get("pipeline_schedules", params={"limit": 3, "cursor": cursor}))
        return pages

    pages = on_server_loop(scenario())
    ids = [item["id"] for page in pages for item in page.json["pipeline_schedules"]]
    assert len(ids) == len(set(ids)) == 8
    assert ids == sorted(ids)
    assert [page.json["metadata"]["count"] for page in pages] == [7, 8, 8]
    assert [len(page.json["pipeline_schedules"]) for page in pages] == [3, 3, 2]
    assert pages[-1].json["metadata"]["next"] is None


def test_filters_narrow_the_list_and_the_count(
    api: Api, notebooks: Path, on_server_loop: Any
) -> None:
    async def scenario() -> dict[str, Reply]:
        await create(api, name="a", status="active")
        await create(api, name="b", schedule_type="api", schedule_interval=None)
        await create(api, name="c", pipeline_uuid="etl/daily", status="active")
        await create(api, name="d", pipeline_uuid="etl/daily", schedule_type="event")
        queries = {
            "daily": {"pipeline_uuid": "daily"},
            "etl": {"pipeline_uuid": "etl/daily"},
            "active": {"status": "active"},
            "api": {"schedule_type": "api"},
            "etl active": {"pipeline_uuid": "etl/daily", "status": "active"},
            "event time": {"schedule_type": "event", "status": "active"},
            "limited": {"status": "active", "limit": 1},
        }
        return {name: await api.get("pipeline_schedules", params=q) for name, q in queries.items()}

    replies = on_server_loop(scenario())

    def names(reply: Reply) -> list[str]:
        return [item["name"] for item in reply.json["pipeline_schedules"]]

    assert names(replies["daily"]) == ["a", "b"]
    assert names(replies["etl"]) == ["c", "d"]
    assert names(replies["active"]) == ["a", "c"]
    assert names(replies["api"]) == ["b"]
    assert names(replies["etl active"]) == ["c"]
    assert names(replies["event time"]) == []
    assert replies["limited"].json["metadata"]["count"] == 2
    assert names(replies["limited"]) == ["a"]
    assert replies["limited"].json["metadata"]["next"] is not None


# --------------------------------------------------------------------------------------------
# Bad input: 400 naming the field and the fix, nothing written; 404; 409
# --------------------------------------------------------------------------------------------

BAD_BODIES = [
    ("unknown field", schedule_body(colour="blue"), "colour"),
    ("read-only field", schedule_body(pipeline_runs_count=3), "pipeline_runs_count"),
    ("bad cron", schedule_body(schedule_interval="61 * * * *"), "schedule_interval"),
    ("bad time zone", schedule_body(settings={"timezone": "Mars/Olympus"}), "settings.timezone"),
    ("negative sla", schedule_body(sla=-5), "sla"),
    ("sla of the wrong type", schedule_body(sla="an hour"), "sla"),
    ("name of the wrong type", schedule_body(name=5), "name"),
    ("variables not an object", schedule_body(variables=["a"]), "variables"),
    ("unknown status", schedule_body(status="paused"), "status"),
    ("unknown setting", schedule_body(settings={"colour": 3}), "settings.colour"),
    ("short token", schedule_body(token="short"), "token"),
    ("no such notebook", schedule_body(pipeline_uuid="missing"), "pipeline_uuid"),
    ("path escape", schedule_body(pipeline_uuid="../outside"), "pipeline_uuid"),
    ("no name", {"pipeline_schedule": {"pipeline_uuid": "daily"}}, "name"),
    ("not an envelope", {"name": "x", "pipeline_uuid": "daily"}, "pipeline_schedule"),
    ("envelope not an object", {"pipeline_schedule": ["x"]}, "pipeline_schedule"),
    ("body a list", [schedule_body()], "body"),
    ("extra top-level key", {**schedule_body(), "extra": 1}, "extra"),
]


@pytest.mark.parametrize(
    ("body", "field"), [case[1:] for case in BAD_BODIES], ids=[c[0] for c in BAD_BODIES]
)
def test_a_bad_create_is_a_400_naming_the_field_and_writes_nothing(
    api: Api, mage_app: Any, notebooks: Path, on_server_loop: Any, body: Any, field: str
) -> None:
    before = stored_schedules(mage_app)
    reply = on_server_loop(api.post("pipeline_schedules", body))
    assert reply.status == 400, reply.text
    assert reply.error["field"] == field
    assert reply.error["fix"]
    assert stored_schedules(mage_app) == before


@pytest.mark.parametrize(
    ("raw", "field"),
    [(b'{"pipeline_schedule": {"name": ', "body"), (b"\xff\xfe", "body"), (b"[1, 2", "body")],
    ids=["truncated", "not utf-8", "unclosed list"],
)
def test_malformed_json_is_a_400(
    api: Api, mage_app: Any, notebooks: Path, on_server_loop: Any, raw: bytes, field: str
) -> None:
    async def scenario() -> list[Reply]:
        schedule = await create(api)
        return [
            await api.post("pipeline_schedules", raw_body=raw),
            await api.post("pipelines/daily/pipeline_schedules", raw_body=raw),
            await api.put(f"pipeline_schedules/{schedule['id']}", raw_body=raw),
        ]

    replies = on_server_loop(scenario())
    for reply in replies:
        assert reply.status == 400, reply.text
        assert reply.error["field"] == field and reply.error["fix"]
    assert len(stored_schedules(mage_app)) == 1


BAD_CHANGES = [
    ("unknown field", {"colour": "blue"}, "colour"),
    ("read-only id", {"id": 99}, "id"),
    ("bad cron", {"schedule_interval": "* * *"}, "schedule_interval"),
    ("bad time zone", {"settings": {"timezone": "Not/AZone"}}, "settings.timezone"),
    ("negative sla", {"sla": -1}, "sla"),
    ("wrong type", {"status": 1}, "status"),
    ("rotate not a boolean", {"rotate_token": "yes"}, "rotate_token"),
    ("rotate and a token", {"rotate_token": True, "token": "x" * 20}, "rotate_token"),
    ("a valid change beside a bad one", {"description": "new", "sla": -1}, "sla"),
    ("no notebook", {"pipeline_uuid": "missing"}, "pipeline_uuid"),
]


@pytest.mark.parametrize(
    ("changes", "field"), [case[1:] for case in BAD_CHANGES], ids=[c[0] for c in BAD_CHANGES]
)
def test_a_bad_change_is_a_400_and_changes_nothing(
    api: Api, mage_app: Any, notebooks: Path, on_server_loop: Any, changes: Any, field: str
) -> None:
    schedule = on_server_loop(create(api, schedule_type="api", schedule_interval=None))
    before = stored_schedules(mage_app)
    reply = on_server_loop(
        api.put(f"pipeline_schedules/{schedule['id']}", {"pipeline_schedule": changes})
    )
    assert reply.status == 400, reply.text
    assert reply.error["field"] == field and reply.error["fix"]
    assert stored_schedules(mage_app) == before
    assert schedule_service.check_token(mage_app.store, schedule["id"], schedule["token"])


def test_a_time_schedule_cannot_lose_its_interval(
    api: Api, mage_app: Any, notebooks: Path, on_server_loop: Any
) -> None:
    schedule = on_server_loop(create(api))
    before = stored_schedules(mage_app)
    reply = on_server_loop(
        api.put(
            f"pipeline_schedules/{schedule['id']}",
            {"pipeline_schedule": {"schedule_interval": None}},
        )
    )
    assert reply.status == 400 and reply.error["field"] == "schedule_interval"
    assert stored_schedules(mage_app) == before


def test_unknown_and_malformed_ids_and_bad_query_arguments(
    api: Api, notebooks: Path, on_server_loop: Any
) -> None:
    async def scenario() -> dict[str, Reply]:
        body = {"pipeline_schedule": {"name": "x"}}
        return {
            "get unknown": await api.get("pipeline_schedules/987654"),
            "put unknown": await api.put("pipeline_schedules/987654", body),
            "delete unknown": await api.delete("pipeline_schedules/987654"),
            "get word": await api.get("pipeline_schedules/abc"),
            "put zero": await api.put("pipeline_schedules/0", body),
            "delete huge": await api.delete(f"pipeline_schedules/{2**64}"),
            "status": await api.get("pipeline_schedules", params={"status": "paused"}),
            "type": await api.get("pipeline_schedules", params={"schedule_type": "cron"}),
            "limit": await api.get("pipeline_schedules", params={"limit": 0}),
            "big limit": await api.get("pipeline_schedules", params={"limit": 5000}),
            "cursor": await api.get("pipeline_schedules", params={"cursor": "next"}),
            "pipeline": await api.get("pipeline_schedules", params={"pipeline_uuid": "../x"}),
        }

    replies = on_server_loop(scenario())
    for name in ("get unknown", "put unknown", "delete unknown"):
        assert replies[name].status == 404, name
        assert "987654" in replies[name].error["message"]
    expected = {
        "get word": "id",
        "put zero": "id",
        "delete huge": "id",
        "status": "status",
        "type": "schedule_type",
        "limit": "limit",
        "big limit": "limit",
        "cursor": "cursor",
        "pipeline": "pipeline_uuid",
    }
    for name, field in expected.items():
        assert replies[name].status == 400, (name, replies[name].text)
        assert replies[name].error["field"] == field, name
        assert replies[name].error["fix"], name


def test_a_duplicate_name_for_a_pipeline_is_a_409(
    api: Api, mage_app: Any, notebooks: Path, on_server_loop: Any
) -> None:
    async def scenario() -> tuple[Reply, Reply, Reply, Reply]:
        first = await create(api, name="nightly")
        await create(api, name="nightly", pipeline_uuid="etl/daily")  # another pipeline: fine
        other = await create(api, name="other")
        twice = await api.post("pipeline_schedules", schedule_body(name="nightly"))
        nested = await api.post(
            "pipelines/daily/pipeline_schedules",
            {"pipeline_schedule": {"name": "nightly", "schedule_type": "api"}},
        )
        renamed = await api.put(
            f"pipeline_schedules/{other['id']}", {"pipeline_schedule": {"name": "nightly"}}
        )
        own = await api.put(
            f"pipeline_schedules/{first['id']}", {"pipeline_schedule": {"name": "nightly"}}
        )
        return twice, nested, renamed, own

    twice, nested, renamed, own = on_server_loop(scenario())
    for reply in (twice, nested, renamed):
        assert reply.status == 409, reply.text
        assert reply.error["type"] == "conflict" and reply.error["field"] == "name"
    assert own.status == 200  # keeping its own name is no conflict
    assert len(stored_schedules(mage_app)) == 3


ROUTES = [
    ("GET", "pipeline_schedules", None),
    ("POST", "pipeline_schedules", schedule_body()),
    ("GET", "pipelines/daily/pipeline_schedules", None),
    ("POST", "pipelines/daily/pipeline_schedules", schedule_body()),
    ("GET", "pipeline_schedules/{id}", None),
    ("PUT", "pipeline_schedules/{id}", {"pipeline_schedule": {"status": "active"}}),
    ("DELETE", "pipeline_schedules/{id}", None),
]


def test_every_route_refuses_a_call_without_credentials(
    api: Api, mage_app: Any, notebooks: Path, on_server_loop: Any
) -> None:
    schedule = on_server_loop(create(api))
    before = stored_schedules(mage_app)

    async def scenario() -> list[tuple[str, Reply]]:
        replies = []
        for method, path, body in ROUTES:
            url = path.format(id=schedule["id"])
            replies.append((f"{method} {url}", await api.call(method, url, body, auth=False)))
            wrong = {"Authorization": "token not-the-server-token"}
            replies.append(
                (
                    f"{method} {url} (wrong)",
                    await api.call(method, url, body, headers=wrong, auth=False),
                )
            )
        return replies

    for name, reply in on_server_loop(scenario()):
        assert reply.status == 403, (name, reply.text)
        assert reply.error["type"] == "forbidden", name
        assert reply.text and json.loads(reply.text)
    assert stored_schedules(mage_app) == before


# --------------------------------------------------------------------------------------------
# Event matchers: written with the schedule, shown with it, and they fire
# --------------------------------------------------------------------------------------------

EXPORTS_PATTERN = {"source": ["aws.s3"], "detail": {"object": {"size": [{"numeric": [">", 10]}]}}}


def test_event_matchers_are_created_shown_replaced_and_fire(
    api: Api, mage_app: Any, notebooks: Path, on_server_loop: Any
) -> None:
    async def scenario() -> tuple[dict[str, Any], Reply, Reply, Reply, Reply]:
        created = await create(
            api,
            name="exports",
            schedule_type="event",
            schedule_interval=None,
            status="active",
            event_matchers=[{"name": "big", "event_type": "aws_event", "pattern": EXPORTS_PATTERN}],
        )
        event = {
            "id": "e-1",
            "source": "aws.s3",
            "detail-type": "Object Created",
            "detail": {"object": {"size": 50}},
        }
        fired = await api.post("events", event)
        shown = await api.get(f"pipeline_schedules/{created['id']}")
        replaced = await api.put(
            f"pipeline_schedules/{created['id']}",
            {"pipeline_schedule": {"event_matchers": [{"pattern": {"source": ["aws.ec2"]}}]}},
        )
        again = await api.post("events", {**event, "id": "e-2"})
        return created, fired, shown, replaced, again

    created, fired, shown, replaced, again = on_server_loop(scenario())
    assert [m["name"] for m in created["event_matchers"]] == ["big"]
    assert created["event_matchers"][0]["pattern"] == EXPORTS_PATTERN
    assert fired.json["events"][0]["matched"] == [created["id"]]
    assert shown.json["pipeline_schedule"]["event_matchers"] == created["event_matchers"]
    assert replaced.status == 200, replaced.text
    assert [m["pattern"] for m in replaced.json["pipeline_schedule"]["event_matchers"]] == [
        {"source": ["aws.ec2"]}
    ]
    assert again.json["events"][0]["matched"] == []  # the old matcher is gone


def test_a_bad_event_matcher_is_a_400_naming_its_path_and_writes_nothing(
    api: Api, mage_app: Any, notebooks: Path, on_server_loop: Any
) -> None:
    before = stored_schedules(mage_app)
    bad = [{"pattern": {"detail": {"size": [{"numerc": [">", 1]}]}}}]
    reply = on_server_loop(
        api.post(
            "pipeline_schedules",
            schedule_body(
                name="bad", schedule_type="event", schedule_interval=None, event_matchers=bad
            ),
        )
    )
    assert reply.status == 400, reply.text
    assert reply.error["field"].startswith("event_matchers[0].pattern.detail.size")
    assert stored_schedules(mage_app) == before


def test_a_bad_shorthand_glob_of_an_event_schedule_is_a_400(
    api: Api, mage_app: Any, notebooks: Path, on_server_loop: Any
) -> None:
    before = stored_schedules(mage_app)
    reply = on_server_loop(
        api.post(
            "pipeline_schedules",
            schedule_body(
                name="bad",
                schedule_type="event",
                schedule_interval=None,
                variables={"event_type": 5},
            ),
        )
    )
    assert reply.status == 400, reply.text
    assert reply.error["field"].startswith("variables.event_type")
    assert stored_schedules(mage_app) == before
