"""REST: backfills — create, list, start, follow their progress, cancel, edit, delete —
against a real server with its scheduler and kernels. Every answer is checked against the
OpenAPI document by the client (:class:`server_fixtures.Api`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from conftest import write_notebook
from processes import until
from server_fixtures import *  # noqa: F403
from server_fixtures import Api, Reply

from mage_nb_sched.extension import MageNbSchedApp
from mage_nb_sched.service import backfills as backfill_service
from mage_nb_sched.service import runs as run_service
from mage_nb_sched.service import schedules as schedule_service

#: Bound of the waits below (not an asserted duration): a first kernel start can be slow.
RUN_TIMEOUT = 120.0
RUN_STATUSES = ("initial", "running", "completed", "failed", "cancelled")


def three_days(**values: Any) -> dict[str, Any]:
    return {
        "name": "first days of january",
        "start_datetime": "2024-01-01T00:00:00+00:00",
        "end_datetime": "2024-01-03T00:00:00+00:00",
        "interval_type": "day",
        "interval_units": 1,
        **values,
    }


async def created(api: Api, path: str, values: dict[str, Any]) -> dict[str, Any]:
    reply = await api.post(path, {"backfill": values})
    assert reply.status == 201, reply.text
    backfill = dict(reply.json["backfill"])
    assert reply.headers["Location"].endswith(f"/mage/api/backfills/{backfill['id']}")
    assert backfill["status"] == "initial"
    assert backfill["progress"]["total"] == 0 and backfill["progress"]["done"] == 0
    return backfill


async def poll_backfill(api: Api, backfill_id: int, check: Any, what: str) -> dict[str, Any]:
    """GET ``backfills/{id}`` again (one request at a time) until ``check(backfill)``."""
    pending: list[asyncio.Future[Reply]] = []

    def ready() -> dict[str, Any] | None:
        if pending and pending[0].done():
            reply = pending.pop().result()
            assert reply.status == 200, reply.text
            backfill = dict(reply.json["backfill"])
            if check(backfill):
                return backfill
        if not pending:
            pending.append(asyncio.ensure_future(api.get(f"backfills/{backfill_id}")))
        return None

    try:
        found: dict[str, Any] = await until(ready, RUN_TIMEOUT, what)
        return found
    finally:
        for task in pending:
            task.cancel()


async def put(api: Api, backfill_id: int, values: dict[str, Any]) -> Reply:
    return await api.put(f"backfills/{backfill_id}", {"backfill": values})


@pytest.mark.kernel
def test_a_backfill_runs_to_completion_and_another_is_cancelled(
    api: Api, mage_app: MageNbSchedApp, jp_root_dir: Path, on_server_loop: Any
) -> None:
    write_notebook(Path(jp_root_dir) / "jobs" / "tiny.ipynb", ["print('day', ds)"])
    write_notebook(Path(jp_root_dir) / "slow.ipynb", ["import time; time.sleep(600)"])

    async def scenario() -> None:
        # Mage's nested route; the folder in the uuid percent-encoded.
        backfill = await created(api, "pipelines/jobs%2Ftiny/backfills", three_days())
        assert backfill["pipeline_uuid"] == "jobs/tiny"
        assert backfill["interval_type"] == "day" and backfill["interval_units"] == 1

        started = await put(api, backfill["id"], {"status": "running"})
        assert started.status == 200, started.text
        assert started.json["backfill"]["status"] == "running"
        assert started.json["backfill"]["progress"]["total"] == 3

        done = await poll_backfill(
            api,
            backfill["id"],
            lambda b: b["status"] in ("completed", "failed", "cancelled"),
            "the backfill ends",
        )
        assert done["status"] == "completed", done
        progress = done["progress"]
        assert progress["total"] == progress["done"] == progress["completed"] == 3
        assert sum(progress[status] for status in RUN_STATUSES) == 3

        runs = await api.get("pipeline_runs", params={"backfill_id": backfill["id"]})
        listed = runs.json["pipeline_runs"]
        assert [run["status"] for run in listed] == ["completed"] * 3
        assert sorted(run["execution_date"][:10] for run in listed) == [
            "2024-01-01",
            "2024-01-02",
            "2024-01-03",
        ]
        # Each run got its own day (Mage's ``ds``) and printed it.
        for run in listed:
            (block,) = (await api.get(f"pipeline_runs/{run['id']}/block_runs")).json["block_runs"]
            log = await api.get(f"block_runs/{block['id']}/logs")
            assert f"day {run['execution_date'][:10]}" in log.text

        # Starting it again creates nothing: it has ended.
        again = await put(api, backfill["id"], {"status": "running"})
        assert again.status == 409, again.text
        assert (await api.get("pipeline_runs", params={"backfill_id": backfill["id"]})).json[
            "metadata"
        ]["count"] == 3

        # Another backfill, of a notebook that sleeps: started, then cancelled.
        slow = await created(api, "backfills", three_days(pipeline_uuid="slow", name="slow"))
        assert (await put(api, slow["id"], {"status": "running"})).status == 200
        await poll_backfill(
            api, slow["id"], lambda b: b["progress"]["running"] >= 1, "a slow run starts"
        )
        # A backfill whose runs are going cannot be deleted.
        busy = await api.delete(f"backfills/{slow['id']}")
        assert busy.status == 409, busy.text
        cancelled = await put(api, slow["id"], {"status": "cancelled"})
        assert cancelled.status == 200, cancelled.text
        body = cancelled.json["backfill"]
        assert body["status"] == "cancelled"
        assert body["progress"]["cancelled"] == body["progress"]["total"] == 3
        scheduler = mage_app.scheduler
        assert scheduler is not None
        ids = [
            run["id"]
            for run in (await api.get("pipeline_runs", params={"backfill_id": slow["id"]})).json[
                "pipeline_runs"
            ]
        ]
        await until(
            lambda: not scheduler.executing & set(ids), RUN_TIMEOUT, "the slow runs are stopped"
        )
        # A cancelled backfill stays cancelled: not started again.
        restart = await put(api, slow["id"], {"status": "running"})
        assert restart.status == 409
        assert "cancelled" in restart.error["message"]
        # Once nothing runs it can be deleted, with its runs.
        gone = await api.delete(f"backfills/{slow['id']}")
        assert gone.status == 204 and gone.raw == b""
        assert (await api.get(f"backfills/{slow['id']}")).status == 404
        after = await api.get("pipeline_runs", params={"backfill_id": slow["id"]})
        assert after.json["metadata"]["count"] == 0

    on_server_loop(scenario())


@pytest.mark.kernel
def test_a_backfill_created_running_is_started_in_the_same_call(
    api: Api, mage_app: MageNbSchedApp, jp_root_dir: Path, on_server_loop: Any
) -> None:
    write_notebook(Path(jp_root_dir) / "once.ipynb", ["print('day', ds)"])

    async def scenario() -> None:
        reply = await api.post(
            "backfills", {"backfill": three_days(pipeline_uuid="once", status="running")}
        )
        assert reply.status == 201, reply.text
        backfill = reply.json["backfill"]
        # Its runs exist when the answer comes: no second call, no backfill left unstarted.
        assert backfill["status"] == "running" and backfill["started_at"] is not None
        assert backfill["progress"]["total"] == 3
        assert await run_service.acount_runs(mage_app.store) == 3
        done = await poll_backfill(
            api,
            backfill["id"],
            lambda b: b["status"] in ("completed", "failed", "cancelled"),
            "the backfill ends",
        )
        assert done["status"] == "completed", done
        assert done["progress"]["completed"] == 3

    on_server_loop(scenario())


def test_backfills_are_listed_newest_first_and_edited_before_they_start(
    api: Api, mage_app: MageNbSchedApp, jp_root_dir: Path, on_server_loop: Any
) -> None:
    store = mage_app.store
    write_notebook(Path(jp_root_dir) / "one.ipynb", ["x = 1"])
    write_notebook(Path(jp_root_dir) / "etl" / "two.ipynb", ["x = 1"])
    schedule = schedule_service.create_schedule(
        store, name="two_api", pipeline_uuid="etl/two", schedule_type="api", variables={"a": 1}
    )

    async def scenario() -> None:
        first = await created(api, "backfills", three_days(pipeline_uuid="one"))
        second = await created(
            api, "backfills", three_days(pipeline_schedule_id=schedule.id, variables={"b": 2})
        )
        assert second["pipeline_uuid"] == "etl/two"
        assert second["pipeline_schedule_id"] == schedule.id
        third = await created(api, "pipelines/etl%2Ftwo/backfills", three_days(name="third"))
        ids = [first["id"], second["id"], third["id"]]

        everything = await api.get("backfills")
        assert [b["id"] for b in everything.json["backfills"]] == ids[::-1]
        assert everything.json["metadata"] == {"count": 3, "next": None}
        page = await api.get("backfills", params={"limit": 2})
        assert [b["id"] for b in page.json["backfills"]] == [ids[2], ids[1]]
        assert page.json["metadata"] == {"count": 3, "next": ids[1]}
        rest = await api.get("backfills", params={"limit": 2, "cursor": ids[1]})
        assert [b["id"] for b in rest.json["backfills"]] == [ids[0]]
        assert rest.json["metadata"] == {"count": 3, "next": None}

        nested = await api.get("pipelines/etl%2Ftwo/backfills")
        assert [b["id"] for b in nested.json["backfills"]] == [ids[2], ids[1]]
        filtered = await api.get("backfills", params={"pipeline_schedule_id": schedule.id})
        assert [b["id"] for b in filtered.json["backfills"]] == [ids[1]]
        initial = await api.get("backfills", params={"status": "initial"})
        assert initial.json["metadata"]["count"] == 3
        # A pipeline with a notebook but no backfill: an empty list, not an error.
        none = await api.get("pipelines/one/backfills", params={"status": "running"})
        assert none.status == 200 and none.json["backfills"] == []

        # Edit one that has not started.
        edited = await put(api, first["id"], {"name": "renamed", "variables": {"env": "prod"}})
        assert edited.status == 200, edited.text
        assert edited.json["backfill"]["name"] == "renamed"
        assert edited.json["backfill"]["variables"] == {"env": "prod"}
        one = await api.get(f"backfills/{first['id']}")
        assert one.json["backfill"]["name"] == "renamed"
        assert one.json["backfill"]["progress"]["total"] == 0

        # Cancelled before it started: no runs, and nothing left to edit.
        cancelled = await put(api, first["id"], {"status": "cancelled"})
        assert cancelled.status == 200 and cancelled.json["backfill"]["status"] == "cancelled"
        assert cancelled.json["backfill"]["progress"]["total"] == 0
        refused = await put(api, first["id"], {"name": "too late"})
        assert refused.status == 409 and refused.error["field"] == "name"
        deleted = await api.delete(f"backfills/{first['id']}")
        assert deleted.status == 204
        assert (await api.get("backfills")).json["metadata"]["count"] == 2

    on_server_loop(scenario())


def test_bad_backfills_are_refused_naming_the_field_and_nothing_is_written(
    api: Api, mage_app: MageNbSchedApp, jp_root_dir: Path, on_server_loop: Any
) -> None:
    store = mage_app.store
    write_notebook(Path(jp_root_dir) / "real.ipynb", ["x = 1"])
    write_notebook(Path(jp_root_dir) / "other.ipynb", ["x = 1"])
    schedule = schedule_service.create_schedule(
        store, name="real_api", pipeline_uuid="real", schedule_type="api"
    )
    existing = backfill_service.create_backfill(store, **three_days(pipeline_uuid="real"))

    posts: list[tuple[str, Any, str]] = [
        (
            "backfills",
            {
                "backfill": three_days(
                    pipeline_uuid="real",
                    start_datetime="2024-02-01T00:00:00+00:00",
                    end_datetime="2024-01-01T00:00:00+00:00",
                )
            },
            "end_datetime",
        ),
        (
            "backfills",
            {"backfill": three_days(pipeline_uuid="real", interval_type="fortnight")},
            "interval_type",
        ),
        (
            "backfills",
            {"backfill": three_days(pipeline_uuid="real", interval_units=0)},
            "interval_units",
        ),
        (
            "backfills",
            {"backfill": three_days(pipeline_uuid="real", interval_units="2")},
            "interval_units",
        ),
        ("backfills", {"backfill": three_days(pipeline_uuid="real", variables=[1])}, "variables"),
        ("backfills", {"backfill": three_days(pipeline_uuid="real", settings="x")}, "settings"),
        ("backfills", {"backfill": three_days(pipeline_uuid="no/such")}, "pipeline_uuid"),
        ("backfills", {"backfill": three_days(pipeline_uuid="../escape")}, "pipeline_uuid"),
        ("backfills", {"backfill": three_days(pipeline_uuid="é" * 200)}, "pipeline_uuid"),
        ("backfills", {"backfill": three_days()}, "pipeline_schedule_id"),
        (
            "backfills",
            {"backfill": three_days(pipeline_uuid="real", start_datetime="someday")},
            "start_datetime",
        ),
        (
            "backfills",
            {
                "backfill": {
                    k: v for k, v in three_days(pipeline_uuid="real").items() if k != "end_datetime"
                }
            },
            "end_datetime",
        ),
        ("backfills", {"backfill": three_days(pipeline_uuid="real", status="completed")}, "status"),
        # Created running: validated like any other, so a bad range starts nothing either.
        (
            "backfills",
            {"backfill": three_days(pipeline_uuid="real", status="running", interval_units=0)},
            "interval_units",
        ),
        ("backfills", {"backfill": three_days(pipeline_uuid="real", id=5)}, "id"),
        ("backfills", {"backfill": three_days(pipeline_uuid="real", store=1)}, "store"),
        (
            "backfills",
            {"backfill": three_days(pipeline_schedule_id=schedule.id, pipeline_uuid="other")},
            "pipeline_uuid",
        ),
        (
            "backfills",
            {
                "backfill": three_days(
                    pipeline_uuid="real",
                    start_datetime="1990-01-01T00:00:00+00:00",
                    end_datetime="2024-01-01T00:00:00+00:00",
                    interval_type="minute",
                )
            },
            "interval_type",
        ),
        ("backfills", {"backfill": "x"}, "backfill"),
        ("backfills", {}, "backfill"),
        (
            "pipelines/real/backfills",
            {"backfill": three_days(pipeline_uuid="other")},
            "pipeline_uuid",
        ),
        ("pipelines/..%2Fescape/backfills", {"backfill": three_days()}, "pipeline_uuid"),
        ("pipelines/nothing_here/backfills", {"backfill": three_days()}, "pipeline_uuid"),
    ]
    puts: list[tuple[Any, str]] = [
        ({"backfill": {"status": "completed"}}, "status"),
        ({"backfill": {"status": "bogus"}}, "status"),
        ({"backfill": {"variables": "x"}}, "variables"),
        ({"backfill": {"name": ""}}, "name"),
        ({"backfill": {"start_datetime": "2024-01-01"}}, "start_datetime"),
        ({"backfill": {"now": "2024-01-01"}}, "now"),
        ({"nothing": {}}, "backfill"),
    ]
    gets: list[tuple[str, dict[str, Any], str]] = [
        ("backfills", {"status": "bogus"}, "status"),
        ("backfills", {"limit": 0}, "limit"),
        ("backfills", {"cursor": "x"}, "cursor"),
        ("backfills", {"pipeline_uuid": "../x"}, "pipeline_uuid"),
        ("backfills", {"pipeline_schedule_id": "x"}, "pipeline_schedule_id"),
        ("backfills/abc", {}, "id"),
        ("pipelines/..%2Fx/backfills", {}, "pipeline_uuid"),
    ]

    async def scenario() -> None:
        runs_before = await run_service.acount_runs(store)
        for path, body, field in posts:
            reply = await api.post(path, body)
            assert reply.status == 400, (path, body, reply.text)
            assert reply.error["field"] == field, (path, body, reply.error)
            assert reply.error["fix"], reply.error
        assert [b.id for b in await backfill_service.alist_backfills(store)] == [existing.id]

        for body, field in puts:
            reply = await api.put(f"backfills/{existing.id}", body)
            assert reply.status == 400, (body, reply.text)
            assert reply.error["field"] == field, (body, reply.error)
        unchanged = await backfill_service.aget_backfill(store, existing.id)
        assert unchanged == existing

        # A name the file system cannot hold is bad input, not a missing notebook.
        gets.append((f"pipelines/{quote('é' * 200)}/backfills", None, "pipeline_uuid"))
        for path, params, field in gets:
            reply = await api.get(path, params=params)
            assert reply.status == 400, (path, params, reply.text)
            assert reply.error["field"] == field, (path, params, reply.error)

        for method, path, body in (
            ("GET", "backfills/999999", None),
            ("PUT", "backfills/999999", {"backfill": {"status": "running"}}),
            ("DELETE", "backfills/999999", None),
            ("GET", "pipelines/nothing_here/backfills", None),
            ("POST", "backfills", {"backfill": three_days(pipeline_schedule_id=999999)}),
        ):
            reply = await api.call(method, path, body)
            assert reply.status == 404, (method, path, reply.text)
            assert reply.error["type"] == "not_found"
        assert await run_service.acount_runs(store) == runs_before
        assert len(await backfill_service.alist_backfills(store)) == 1

    on_server_loop(scenario())


def test_every_backfill_route_needs_jupyter_auth(
    api: Api, mage_app: MageNbSchedApp, jp_root_dir: Path, on_server_loop: Any
) -> None:
    store = mage_app.store
    write_notebook(Path(jp_root_dir) / "guarded.ipynb", ["x = 1"])
    existing = backfill_service.create_backfill(store, **three_days(pipeline_uuid="guarded"))
    calls: list[tuple[str, str, Any]] = [
        ("GET", "backfills", None),
        ("POST", "backfills", {"backfill": three_days(pipeline_uuid="guarded")}),
        ("GET", "pipelines/guarded/backfills", None),
        ("POST", "pipelines/guarded/backfills", {"backfill": three_days()}),
        ("GET", f"backfills/{existing.id}", None),
        ("PUT", f"backfills/{existing.id}", {"backfill": {"status": "running"}}),
        ("DELETE", f"backfills/{existing.id}", None),
    ]

    async def scenario() -> None:
        for method, path, body in calls:
            reply = await api.call(method, path, body, auth=False)
            assert reply.status == 403, (method, path, reply.text)
            assert reply.error["type"] == "forbidden"
        assert await backfill_service.alist_backfills(store) == [existing]
        assert await run_service.acount_runs(store) == 0

    on_server_loop(scenario())
