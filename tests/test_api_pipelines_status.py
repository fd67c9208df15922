"""REST: ``pipelines``, ``pipelines/{uuid}`` and ``status`` against a real server (loopback,
real SQLite), every answer checked against the OpenAPI document by the client."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import write_notebook
from processes import until
from server_fixtures import *  # noqa: F403
from server_fixtures import Api, Reply
from sqlalchemy import update

from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.service import runs as run_service
from mage_nb_sched.service import schedules as schedule_service
from mage_nb_sched.store import leases, schema

NO_SCHEDULER = {"scheduler_enabled": False}
LOADER = "from mage_nb_sched import data_loader\n\n@data_loader\ndef load_data():\n    return 1\n"
TRANSFORMER = (
    "import mage_nb_sched\n\n@mage_nb_sched.transformer\ndef transform(data):\n    return data\n"
)


@pytest.fixture
def project(jp_root_dir: Path) -> Path:
    """A project with a notebook at the top, one in a subfolder with every kind of cell, one
    that is not JSON, one without a kernelspec, and notebooks in folders that are not
    searched."""
    root = Path(jp_root_dir)
    write_notebook(root / "daily.ipynb", ["x = 1"])
    write_notebook(
        root / "etl" / "daily.ipynb",
        [
            {"cell_type": "markdown", "source": "# Loads the orders"},
            LOADER,
            {"source": "df = load_data()", "tags": ["block:clean"]},
            "print('plain')",
            {"source": "print('not a block')", "tags": ["skip"]},
            TRANSFORMER,
        ],
    )
    (root / "broken.ipynb").write_text("{ this is not json", encoding="utf-8")
    write_notebook(root / "nokernel.ipynb", ["x = 1"], metadata={"kernelspec": None})
    write_notebook(root / ".hidden" / "secret.ipynb", ["x = 1"])
    write_notebook(root / ".mage_nb_sched" / "runs" / "executed.ipynb", ["x = 1"])
    return root


# --------------------------------------------------------------------------------------------
# pipelines
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mage_settings", [NO_SCHEDULER])
def test_pipelines_lists_the_notebooks_with_their_blocks_and_schedule_counts(
    api: Api, mage_app: Any, project: Path, on_server_loop: Any
) -> None:
    for name in ("nightly", "hourly"):
        schedule_service.create_schedule(
            mage_app.store, name=name, pipeline_uuid="etl/daily", schedule_type="api"
        )
    schedule_service.create_schedule(
        mage_app.store, name="one", pipeline_uuid="daily", schedule_type="api"
    )
    reply = on_server_loop(api.get("pipelines"))
    assert reply.status == 200, reply.text
    pipelines = {item["uuid"]: item for item in reply.json["pipelines"]}
    assert list(pipelines) == ["broken", "daily", "etl/daily", "nokernel"]
    assert reply.json["metadata"] == {"count": 4, "next": None}
    etl = pipelines["etl/daily"]
    assert etl["name"] == "daily" and etl["path"] == "etl/daily.ipynb"
    assert etl["kernel_name"] == "python3" and len(etl["content_hash"]) == 64
    assert etl["error"] is None and etl["schedules_count"] == 2
    assert [(b["uuid"], b["type"], b["cell_index"]) for b in etl["blocks"]] == [
        ("load_data", "data_loader", 1),
        ("clean", None, 2),
        ("cell_3", None, 3),
        ("transform", "transformer", 5),
    ]
    assert etl["blocks"][1]["tags"] == ["block:clean"]
    assert etl["blocks"][0]["function_name"] == "load_data"
    assert pipelines["daily"]["schedules_count"] == 1
    assert [b["uuid"] for b in pipelines["daily"]["blocks"]] == ["cell_0"]
    # Notebooks that cannot run are listed with the reason, and break nothing.
    broken = pipelines["broken"]
    assert broken["blocks"] == [] and broken["schedules_count"] == 0
    assert broken["error"]["field"] == "notebook"
    assert "not a Jupyter notebook" in broken["error"]["message"] and broken["error"]["fix"]
    nokernel = pipelines["nokernel"]["error"]
    assert "kernelspec" in nokernel["message"] and nokernel["fix"]


@pytest.mark.parametrize("mage_settings", [NO_SCHEDULER])
def test_pipelines_come_a_page_at_a_time(api: Api, project: Path, on_server_loop: Any) -> None:
    async def scenario() -> list[Reply]:
        pages = [await api.get("pipelines", params={"limit": 3})]
        while pages[-1].json["metadata"]["next"] is not None:
            cursor = pages[-1].json["metadata"]["next"]
            pages.append(await api.get("pipelines", params={"limit": 3, "cursor": cursor}))
        return pages

    pages = on_server_loop(scenario())
    uuids = [item["uuid"] for page in pages for item in page.json["pipelines"]]
    assert uuids == ["broken", "daily", "etl/daily", "nokernel"]
    assert [page.json["metadata"]["count"] for page in pages] == [4, 4]
    assert pages[0].json["metadata"]["next"] == 3 and pages[1].json["metadata"]["next"] is None


@pytest.mark.parametrize("mage_settings", [NO_SCHEDULER])
def test_one_pipeline_by_its_uuid(
    api: Api, mage_app: Any, project: Path, on_server_loop: Any
) -> None:
    schedule_service.create_schedule(
        mage_app.store, name="n", pipeline_uuid="etl/daily", schedule_type="api"
    )

    async def scenario() -> dict[str, Reply]:
        return {
            "folder": await api.get("pipelines/etl%2Fdaily"),
            "suffix": await api.get("pipelines/daily.ipynb"),
            "broken": await api.get("pipelines/broken"),
            "missing": await api.get("pipelines/nope"),
            "escape": await api.get("pipelines/..%2F..%2Fetc%2Fpasswd"),
            "absolute": await api.get("pipelines/%2Fetc%2Fpasswd"),
            "hidden": await api.get("pipelines/.mage_nb_sched%2Fmissing"),
        }

    replies = on_server_loop(scenario())
    folder = replies["folder"]
    assert folder.status == 200, folder.text
    assert folder.json["pipeline"]["uuid"] == "etl/daily"
    assert folder.json["pipeline"]["schedules_count"] == 1
    assert [b["uuid"] for b in folder.json["pipeline"]["blocks"]] == [
        "load_data",
        "clean",
        "cell_3",
        "transform",
    ]
    assert replies["suffix"].json["pipeline"]["uuid"] == "daily"
    assert replies["broken"].status == 200
    assert replies["broken"].json["pipeline"]["error"]["field"] == "notebook"
    missing = replies["missing"]
    assert missing.status == 404 and missing.error["type"] == "not_found"
    assert "nope" in missing.error["message"]
    assert "GET mage/api/pipelines" in missing.error["message"]
    for name in ("escape", "absolute"):
        assert replies[name].status == 400, (name, replies[name].text)
        assert replies[name].error["field"] == "pipeline_uuid" and replies[name].error["fix"]
    assert replies["hidden"].status == 404


@pytest.mark.parametrize("mage_settings", [NO_SCHEDULER])
def test_a_project_without_notebooks_has_no_pipelines(
    api: Api, jp_root_dir: Path, on_server_loop: Any
) -> None:
    reply = on_server_loop(api.get("pipelines"))
    assert reply.json == {"pipelines": [], "metadata": {"count": 0, "next": None}}


# --------------------------------------------------------------------------------------------
# status
# --------------------------------------------------------------------------------------------


def test_status_with_the_scheduler_in_this_server(
    api: Api, mage_app: Any, project: Path, on_server_loop: Any
) -> None:
    scheduler = mage_app.scheduler
    store = mage_app.store
    # A schedule whose stored settings are not an object: the scheduler's step raises on it,
    # skips it and flags it; the status API shows the flag.
    bad = schedule_service.create_schedule(
        store, name="bad", pipeline_uuid="daily", schedule_interval="@hourly", status="active"
    )
    with store.write_engine.begin() as connection:
        connection.execute(
            update(schema.pipeline_schedule)
            .where(schema.pipeline_schedule.c.id == bad.id)
            .values(settings="not an object", next_due_at=schema.EVALUATE_NOW)
        )

    async def flagged() -> Reply:
        await until(lambda: scheduler.is_leader, 15.0, "the scheduler leads")
        scheduler.wake()
        # Polled through the API itself (bounded): the flag appears after the next pass.
        loop = asyncio.get_running_loop()
        end = loop.time() + 30.0
        while True:
            reply = await api.get("status")
            if reply.json["status"]["problems"]:
                return reply
            assert loop.time() < end, f"no flagged row within 30 s: {reply.text}"
            await asyncio.sleep(0.05)

    reply = on_server_loop(flagged())
    assert reply.status == 200, reply.text
    status = reply.json["status"]
    assert status["active"] is True and status["scheduler_status"] == "running"
    assert status["instance_id"] == scheduler.instance_id
    assert status["in_this_server"] is True and status["scheduler_enabled"] is True
    assert scheduler.instance_id in status["instances"]
    assert status["this_server"]["is_leader"] is True
    assert status["this_server"]["passes"] >= 1
    assert status["last_pass_at"] is not None
    assert datetime.fromisoformat(status["last_heartbeat_at"]) <= datetime.fromisoformat(
        status["lease_expires_at"]
    )
    workers = status["workers"]
    assert workers["count"] == 1 and workers["lazy"] is True
    assert workers["alive"] == len(scheduler.executor.worker_pids)
    assert workers["capacity"] == scheduler.executor.capacity
    assert status["queue_depth"] == 0 and status["running"] == 0
    [problem] = status["problems"]
    assert problem["row_kind"] == "schedule" and problem["row_id"] == bad.id
    assert problem["schedule_id"] == bad.id and problem["error"]
    assert "this server" in status["message"]


@pytest.mark.parametrize("mage_settings", [NO_SCHEDULER])
def test_status_without_a_scheduler_here_then_with_one_elsewhere(
    api: Api, mage_app: Any, project: Path, on_server_loop: Any
) -> None:
    store = mage_app.store
    schedule = schedule_service.create_schedule(
        store, name="api", pipeline_uuid="daily", schedule_type="api"
    )
    for status in ("initial", "initial", "running", "completed"):
        run_service.create_run(store, pipeline_schedule_id=schedule.id, status=status)

    nobody = on_server_loop(api.get("status"))
    assert nobody.status == 200, nobody.text
    status = nobody.json["status"]
    assert status["active"] is False and status["scheduler_status"] == "stopped"
    assert status["instance_id"] is None and status["in_this_server"] is False
    assert status["scheduler_enabled"] is False
    assert status["this_server"] is None and status["workers"] is None
    assert status["last_pass_at"] is None
    assert status["queue_depth"] == 2 and status["running"] == 1
    assert (
        "scheduler_enabled" in status["message"] and "mage-nb-sched scheduler" in status["message"]
    )
    assert mage_app.scheduler is None

    # A headless scheduler on another host takes the lease (as its coordinator does).
    elsewhere = "sched:otherhost:4026531836:4242:abcd1234"
    now = utcnow()
    assert leases.acquire(store, leases.LEADER, elsewhere, now, 60.0)
    assert leases.acquire(store, leases.instance_lease_name(elsewhere), elsewhere, now, 60.0)
    headless = on_server_loop(api.get("status")).json["status"]
    assert headless["active"] is True and headless["scheduler_status"] == "running"
    assert headless["instance_id"] == elsewhere and headless["in_this_server"] is False
    assert headless["instances"] == [elsewhere]
    assert headless["last_pass_at"] is None  # it has not told one yet
    assert datetime.fromisoformat(headless["last_heartbeat_at"]) == now
    assert "elsewhere" in headless["message"]
    # Its heartbeat carries its last pass (as Scheduler._heartbeat writes it): told here.
    passed = now - timedelta(seconds=3)
    details = {"last_pass_at": passed.isoformat(), "last_pass_seconds": 0.012, "passes": 7}
    assert leases.acquire(
        store, leases.instance_lease_name(elsewhere), elsewhere, now, 60.0, details
    )
    told = on_server_loop(api.get("status")).json["status"]
    assert datetime.fromisoformat(told["last_pass_at"]) == passed

    # Its lease runs out: nobody is active any more.
    leases.release(store, leases.LEADER, elsewhere)
    assert leases.acquire(store, leases.LEADER, elsewhere, now, -1.0)
    expired = on_server_loop(api.get("status")).json["status"]
    assert expired["active"] is False and expired["instance_id"] is None


# --------------------------------------------------------------------------------------------
# auth
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mage_settings", [NO_SCHEDULER])
def test_every_route_refuses_a_call_without_credentials(
    api: Api, project: Path, on_server_loop: Any
) -> None:
    async def scenario() -> list[tuple[str, Reply]]:
        replies = []
        for path in ("pipelines", "pipelines/daily", "pipelines/etl%2Fdaily", "status"):
            replies.append((path, await api.get(path, auth=False)))
            wrong = {"Authorization": "token wrong"}
            replies.append((path, await api.get(path, auth=False, headers=wrong)))
        return replies

    for path, reply in on_server_loop(scenario()):
        assert reply.status == 403, (path, reply.text)
        assert reply.error["type"] == "forbidden"
        assert "blocks" not in reply.text and "queue_depth" not in reply.text


def test_a_headless_scheduler_tells_its_last_pass_through_its_heartbeat(
    store: Any, headless_scheduler: Any
) -> None:
    """A real ``mage-nb-sched scheduler`` process: the store's status (what the REST API of a
    server without a scheduler answers) has its last pass, from its heartbeat."""
    from mage_nb_sched.scheduling.passes import store_status

    def told() -> Any:
        status = store_status(store, utcnow())
        return status if status.leader_active and status.leader_last_pass_at else None

    status = asyncio.run(until(told, 60.0, "the scheduler's heartbeat tells a pass"))
    assert status.leader_last_pass_at <= utcnow()
    assert status.leader_last_pass_seconds is not None and status.leader_last_pass_seconds >= 0
