"""REST: pipeline runs, block runs and their logs, against a real server (loopback) with its
scheduler, real worker processes and kernels. Every answer is checked against the OpenAPI
document by the client (:class:`server_fixtures.Api`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import write_notebook
from processes import until
from server_fixtures import *  # noqa: F403
from server_fixtures import Api, Reply

from mage_nb_sched.extension import MageNbSchedApp
from mage_nb_sched.service import backfills as backfill_service
from mage_nb_sched.service import runs as run_service
from mage_nb_sched.service import schedules as schedule_service
from mage_nb_sched.store import schema

#: Bounds of the waits below (not asserted durations): a first kernel start can be slow.
RUN_TIMEOUT = 120.0
FINAL = ("completed", "failed", "cancelled")


async def poll(
    api: Api, path: str, check: Callable[[Reply], Any], what: str, timeout: float = RUN_TIMEOUT
) -> Reply:
    """GET ``path`` again (one request at a time) until ``check(reply)`` holds; the answer."""
    pending: list[asyncio.Future[Reply]] = []

    def ready() -> Reply | None:
        if pending and pending[0].done():
            reply = pending.pop().result()
            assert reply.status == 200, reply.text
            if check(reply):
                return reply
        if not pending:
            pending.append(asyncio.ensure_future(api.get(path)))
        return None

    try:
        found: Reply = await until(ready, timeout, what)
        return found
    finally:
        for task in pending:
            task.cancel()


async def run_reaches(api: Api, run_id: int, statuses: tuple[str, ...]) -> dict[str, Any]:
    reply = await poll(
        api,
        f"pipeline_runs/{run_id}",
        lambda r: r.json["pipeline_run"]["status"] in statuses,
        f"run {run_id} reaches {statuses}",
    )
    return dict(reply.json["pipeline_run"])


async def block_runs(api: Api, run_id: int) -> list[dict[str, Any]]:
    reply = await api.get(f"pipeline_runs/{run_id}/block_runs")
    assert reply.status == 200, reply.text
    assert reply.json["metadata"]["count"] == len(reply.json["block_runs"])
    return list(reply.json["block_runs"])


async def empty_log(api: Api, block_run_id: int) -> Reply:
    """GET a block's log that must be empty: 200, ``text/plain``, no bytes.

    Not checked by openapi-core, which calls every empty body "missing data" whatever the
    document says (an empty string is a valid ``text/plain`` string); the status, the type and
    the headers are checked here instead."""
    reply = await api.get(f"block_runs/{block_run_id}/logs", validate=False)
    assert reply.status == 200, reply.text
    assert reply.raw == b""
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert reply.headers["X-Log-Dropped-Bytes"] == "0"
    return reply


async def post_run(api: Api, values: dict[str, Any]) -> dict[str, Any]:
    reply = await api.post("pipeline_runs", {"pipeline_run": values})
    assert reply.status == 201, reply.text
    run = dict(reply.json["pipeline_run"])
    assert reply.headers["Location"].endswith(f"/mage/api/pipeline_runs/{run['id']}")
    assert run["status"] == "initial" and run["block_runs_count"] == 0
    return run


# --------------------------------------------------------------------------------------------
# Executing runs (real kernels)
# --------------------------------------------------------------------------------------------


@pytest.mark.kernel
def test_run_now_executes_and_its_blocks_and_logs_are_served(
    api: Api, mage_app: MageNbSchedApp, jp_root_dir: Path, on_server_loop: Any
) -> None:
    write_notebook(
        Path(jp_root_dir) / "jobs" / "hello.ipynb",
        ["print('hello from block one')", "value = 6 * 7"],
    )

    async def scenario() -> None:
        run = await post_run(api, {"pipeline_uuid": "jobs/hello"})
        done = await run_reaches(api, run["id"], FINAL)
        assert done["status"] == "completed", done["metrics"]
        assert done["block_runs_count"] == 2
        assert done["execution_partition"].startswith("manual/")
        assert done["passed_sla"] is True
        assert done["started_at"] is not None and done["completed_at"] is not None

        blocks = await block_runs(api, run["id"])
        assert [b["status"] for b in blocks] == ["completed", "completed"]
        assert [b["pipeline_run_id"] for b in blocks] == [run["id"], run["id"]]
        for block in blocks:
            assert isinstance(block["duration"], float) and block["duration"] >= 0

        printing, silent = blocks
        log = await api.get(f"block_runs/{printing['id']}/logs")
        assert log.status == 200
        assert log.headers["Content-Type"].startswith("text/plain")
        assert "hello from block one" in log.text
        assert int(log.headers["X-Log-Size"]) == len(log.raw)
        assert log.headers["X-Log-Dropped-Bytes"] == "0"
        # The last bytes only.
        tail = await api.get(f"block_runs/{printing['id']}/logs", params={"tail": 6})
        assert tail.status == 200
        assert tail.raw == log.raw[-6:]
        assert int(tail.headers["X-Log-Dropped-Bytes"]) == len(log.raw) - 6
        # A block that printed nothing has an empty log (see empty_log).
        quiet = await empty_log(api, silent["id"])
        assert quiet.headers["X-Log-Size"] == "0"

        # The run is in the lists, newest first.
        listed = await api.get("pipeline_runs", params={"pipeline_uuid": "jobs/hello"})
        assert [r["id"] for r in listed.json["pipeline_runs"]] == [run["id"]]
        assert listed.json["pipeline_runs"][0]["block_runs_count"] == 2

    on_server_loop(scenario())


@pytest.mark.kernel
def test_posted_variables_reach_the_notebook_over_the_schedules(
    api: Api, mage_app: MageNbSchedApp, jp_root_dir: Path, on_server_loop: Any
) -> None:
    write_notebook(
        Path(jp_root_dir) / "greet.ipynb",
        [
            "print('greeting is', mage_nb_sched_variables['greeting'])\n"
            "print('place is', mage_nb_sched_variables['place'])"
        ],
    )
    schedule = schedule_service.create_schedule(
        mage_app.store,
        name="greeter",
        pipeline_uuid="greet",
        schedule_type="api",
        variables={"greeting": "from the schedule", "place": "the schedule's place"},
    )

    async def scenario() -> None:
        run = await post_run(
            api,
            {"pipeline_schedule_id": schedule.id, "variables": {"greeting": "from the post"}},
        )
        assert run["pipeline_schedule_id"] == schedule.id
        assert run["pipeline_uuid"] == "greet"
        assert run["variables"] == {"greeting": "from the post"}
        done = await run_reaches(api, run["id"], FINAL)
        assert done["status"] == "completed", done["metrics"]
        (block,) = await block_runs(api, run["id"])
        log = await api.get(f"block_runs/{block['id']}/logs")
        # The run's variable wins over the schedule's; the schedule's others still apply.
        assert "greeting is from the post" in log.text
        assert "place is the schedule's place" in log.text

        listed = await api.get(f"pipeline_schedules/{schedule.id}/pipeline_runs")
        assert listed.status == 200
        assert [r["id"] for r in listed.json["pipeline_runs"]] == [run["id"]]
        assert listed.json["metadata"] == {"count": 1, "next": None}

    on_server_loop(scenario())


@pytest.mark.kernel
def test_a_long_run_is_cancelled_and_its_kernel_stopped(
    api: Api, mage_app: MageNbSchedApp, jp_root_dir: Path, on_server_loop: Any
) -> None:
    write_notebook(
        Path(jp_root_dir) / "sleepy.ipynb",
        ["print('started')", "import time; time.sleep(600)", "print('never')"],
    )
    scheduler = mage_app.scheduler
    assert scheduler is not None

    async def scenario() -> None:
        run = await post_run(api, {"pipeline_uuid": "sleepy"})
        await poll(
            api,
            f"pipeline_runs/{run['id']}/block_runs",
            lambda r: [b["status"] for b in r.json["block_runs"]][1:2] == ["running"],
            "the sleeping block runs",
        )
        # A running block has written no log yet: an empty answer, not an error.
        sleeping = (await block_runs(api, run["id"]))[1]
        await empty_log(api, sleeping["id"])

        reply = await api.put(
            f"pipeline_runs/{run['id']}", {"pipeline_run": {"status": "cancelled"}}
        )
        assert reply.status == 200, reply.text
        assert reply.json["pipeline_run"]["status"] == "cancelled"
        assert reply.json["pipeline_run"]["block_runs_count"] == 3
        # The scheduler stops it: the executor lets go of the run.
        await until(
            lambda: run["id"] not in scheduler.executing, RUN_TIMEOUT, "the executor stops the run"
        )
        got = (await api.get(f"pipeline_runs/{run['id']}")).json["pipeline_run"]
        assert got["status"] == "cancelled"
        assert [b["status"] for b in await block_runs(api, run["id"])] == [
            "completed",
            "cancelled",
            "cancelled",
        ]
        # Cancelling again changes nothing; a cancelled run cannot be completed by hand.
        again = await api.put(
            f"pipeline_runs/{run['id']}", {"pipeline_run": {"status": "cancelled"}}
        )
        assert again.status == 200 and again.json["pipeline_run"]["status"] == "cancelled"

    on_server_loop(scenario())


@pytest.mark.kernel
def test_a_failed_run_is_retried_by_status_and_by_mages_action(
    api: Api, mage_app: MageNbSchedApp, jp_root_dir: Path, on_server_loop: Any
) -> None:
    write_notebook(
        Path(jp_root_dir) / "broken.ipynb", ["x = 1", "raise ValueError('boom from the cell')"]
    )

    async def scenario() -> None:
        run = await post_run(api, {"pipeline_uuid": "broken"})
        failed = await run_reaches(api, run["id"], FINAL)
        assert failed["status"] == "failed"
        blocks = await block_runs(api, run["id"])
        assert [b["status"] for b in blocks] == ["completed", "failed"]
        log = await api.get(f"block_runs/{blocks[1]['id']}/logs")
        assert "boom from the cell" in log.text

        for attempt, body in enumerate(
            ({"status": "initial"}, {"pipeline_run_action": "retry_blocks"}), start=1
        ):
            reply = await api.put(f"pipeline_runs/{run['id']}", {"pipeline_run": body})
            assert reply.status == 200, reply.text
            retried = reply.json["pipeline_run"]
            # Runs again: not failed at first, its old block runs gone.
            assert retried["status"] == "initial"
            assert retried["completed_at"] is None and retried["block_runs_count"] == 0
            assert len(retried["metrics"]["retried"]) == attempt
            assert retried["metrics"]["retried"][-1]["was"] == "failed"
            again = await run_reaches(api, run["id"], FINAL)
            assert again["status"] == "failed"
            assert again["block_runs_count"] == 2
            assert len(again["metrics"]["retried"]) == attempt

        # A failed run cannot be cancelled: 409 naming both statuses.
        refused = await api.put(
            f"pipeline_runs/{run['id']}", {"pipeline_run": {"status": "cancelled"}}
        )
        assert refused.status == 409
        assert "'failed'" in refused.error["message"]
        assert "'cancelled'" in refused.error["message"]

    on_server_loop(scenario())


# --------------------------------------------------------------------------------------------
# Lists, filters, pagination (runs recorded through the service: nothing executes)
# --------------------------------------------------------------------------------------------


def _finished_runs(store: Any, count: int, **values: Any) -> list[int]:
    statuses = ("completed", "failed", "cancelled")
    return [
        run_service.create_run(store, status=statuses[index % 3], **values).id
        for index in range(count)
    ]


def test_pagination_walks_every_run_newest_first(
    api: Api, mage_app: MageNbSchedApp, jp_root_dir: Path, on_server_loop: Any
) -> None:
    write_notebook(Path(jp_root_dir) / "paged.ipynb", ["x = 1"])
    ids = _finished_runs(mage_app.store, 7, pipeline_uuid="paged")

    async def scenario() -> list[list[int]]:
        pages: list[list[int]] = []
        cursor: int | None = None
        while True:
            params: dict[str, Any] = {"limit": 3}
            if cursor is not None:
                params["cursor"] = cursor
            reply = await api.get("pipeline_runs", params=params)
            assert reply.status == 200, reply.text
            assert reply.json["metadata"]["count"] == 7
            pages.append([run["id"] for run in reply.json["pipeline_runs"]])
            cursor = reply.json["metadata"]["next"]
            if cursor is None:
                return pages
            assert len(pages) < 10, "the cursor never ends"

    pages = on_server_loop(scenario())
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [run_id for page in pages for run_id in page] == sorted(ids, reverse=True)


def test_filters_select_runs(
    api: Api, mage_app: MageNbSchedApp, jp_root_dir: Path, on_server_loop: Any
) -> None:
    store = mage_app.store
    write_notebook(Path(jp_root_dir) / "alpha.ipynb", ["x = 1"])
    write_notebook(Path(jp_root_dir) / "etl" / "beta.ipynb", ["x = 1"])
    schedule = schedule_service.create_schedule(
        store, name="alpha_api", pipeline_uuid="alpha", schedule_type="api"
    )
    backfill = backfill_service.create_backfill(
        store,
        pipeline_uuid="etl/beta",
        start_datetime="2024-01-01T00:00:00+00:00",
        end_datetime="2024-01-02T00:00:00+00:00",
    )
    of_schedule = _finished_runs(store, 3, pipeline_schedule_id=schedule.id)  # c, f, x
    alone = _finished_runs(store, 2, pipeline_uuid="alpha")  # c, f
    of_backfill = _finished_runs(store, 2, pipeline_uuid="etl/beta", backfill_id=backfill.id)

    async def ids(params: dict[str, Any], path: str = "pipeline_runs") -> list[int]:
        reply = await api.get(path, params=params)
        assert reply.status == 200, reply.text
        found = [run["id"] for run in reply.json["pipeline_runs"]]
        assert reply.json["metadata"] == {"count": len(found), "next": None}
        return sorted(found)

    async def scenario() -> None:
        assert await ids({"pipeline_uuid": "alpha"}) == sorted(of_schedule + alone)
        assert await ids({"pipeline_uuid": "etl/beta"}) == sorted(of_backfill)
        assert await ids({"pipeline_schedule_id": schedule.id}) == sorted(of_schedule)
        assert await ids({"backfill_id": backfill.id}) == sorted(of_backfill)
        assert await ids({"status": "failed"}) == sorted([of_schedule[1], alone[1], of_backfill[1]])
        assert await ids({"status": "completed", "pipeline_uuid": "alpha"}) == sorted(
            [of_schedule[0], alone[0]]
        )
        assert await ids({"status": "running"}) == []
        assert await ids({"pipeline_uuid": "nowhere"}) == []
        assert await ids({}, f"pipeline_schedules/{schedule.id}/pipeline_runs") == sorted(
            of_schedule
        )
        assert await ids(
            {"status": "cancelled"}, f"pipeline_schedules/{schedule.id}/pipeline_runs"
        ) == [of_schedule[2]]
        # A run's own answer.
        one = await api.get(f"pipeline_runs/{of_backfill[0]}")
        assert one.status == 200
        run = one.json["pipeline_run"]
        assert run["backfill_id"] == backfill.id and run["status"] == "completed"
        assert run["block_runs_count"] == 0
        # A finished run without blocks: its block runs are an empty list.
        empty = await api.get(f"pipeline_runs/{of_backfill[0]}/block_runs")
        assert empty.json == {"block_runs": [], "metadata": {"count": 0, "next": None}}

    on_server_loop(scenario())


@pytest.mark.kernel
def test_the_executed_notebook_is_served_with_its_outputs(
    api: Api, mage_app: MageNbSchedApp, jp_root_dir: Path, on_server_loop: Any
) -> None:
    write_notebook(
        Path(jp_root_dir) / "jobs" / "shown.ipynb",
        ["print('executed output 7x6=' + str(7 * 6))", "answer = 42"],
    )

    async def scenario() -> None:
        run = await post_run(api, {"pipeline_uuid": "jobs/shown"})
        done = await run_reaches(api, run["id"], FINAL)
        assert done["status"] == "completed", done["metrics"]
        reply = await api.get(f"pipeline_runs/{run['id']}/notebook")
        assert reply.status == 200, reply.text
        assert reply.headers["Content-Type"].startswith("application/json")
        assert reply.headers["Content-Disposition"] == (
            f'inline; filename="shown-run-{run["id"]}.ipynb"'
        )
        notebook = reply.json
        assert notebook["nbformat"] == 4
        code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
        # The injected parameters come first, then the notebook's own cells.
        assert "".join(code[0]["source"]).startswith("# Parameters injected by mage_nb_sched")
        assert "".join(code[1]["source"]).startswith("print(")
        printed = "".join(
            "".join(output.get("text", "")) for cell in code for output in cell.get("outputs", [])
        )
        # The output the kernel produced (the source only has the expression).
        assert "executed output 7x6=42" in printed

    on_server_loop(scenario())


def test_a_run_without_its_notebook_says_why_and_a_huge_one_is_refused(
    api: Api, mage_app: MageNbSchedApp, jp_root_dir: Path, on_server_loop: Any
) -> None:
    store = mage_app.store
    write_notebook(Path(jp_root_dir) / "gone.ipynb", ["x = 1"])
    (finished,) = _finished_runs(store, 1, pipeline_uuid="gone")
    run = run_service.get_run(store, finished)
    scheduler = mage_app.scheduler
    assert scheduler is not None
    location = scheduler.artifacts.executed_notebook("gone", run.execution_partition)

    async def scenario() -> None:
        missing = await api.get(f"pipeline_runs/{finished}/notebook")
        assert missing.status == 404
        assert "has no executed notebook" in missing.error["message"]
        assert "Run it again" in missing.error["message"]
        unknown = await api.get("pipeline_runs/999999/notebook")
        assert unknown.status == 404 and "no such" in unknown.error["message"]
        bad = await api.get("pipeline_runs/abc/notebook")
        assert bad.status == 400 and bad.error["field"] == "id"

    on_server_loop(scenario())
    # Written where the artifact store keeps it: served as written.
    location.parent.mkdir(parents=True, exist_ok=True)
    location.write_bytes(b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    served = run_service.read_executed_notebook(store, finished, artifacts=scheduler.artifacts)
    assert served.content == location.read_bytes() and served.run.id == finished
    with pytest.raises(run_service.PayloadTooLargeError, match=str(location)):
        run_service.read_executed_notebook(
            store, finished, artifacts=scheduler.artifacts, max_bytes=10
        )
    # A run still waiting says it is written when the run ends.
    waiting = run_service.create_run(store, status="running", pipeline_uuid="gone")
    with pytest.raises(run_service.NotFoundError, match="written when the run ends"):
        run_service.read_executed_notebook(store, waiting.id, artifacts=scheduler.artifacts)


def test_a_log_is_read_from_the_artifact_store_and_cut_at_characters(
    api: Api, mage_app: MageNbSchedApp, jp_root_dir: Path, on_server_loop: Any
) -> None:
    store = mage_app.store
    write_notebook(Path(jp_root_dir) / "logged.ipynb", ["x = 1"])
    (run_id,) = _finished_runs(store, 1, pipeline_uuid="logged")
    run = run_service.get_run(store, run_id)
    # A block run as the runner records one, and its log where the artifact store keeps it.
    with store.write_engine.begin() as connection:
        block_run_id = connection.execute(
            schema.block_run.insert().values(
                pipeline_run_id=run_id, block_uuid="cell_0", status="completed"
            )
        ).inserted_primary_key[0]
    scheduler = mage_app.scheduler
    assert scheduler is not None
    location = scheduler.artifacts.block_log("logged", run.execution_partition, "cell_0")
    text = "first line\n" + "é" * 10 + " done ✓\n"
    location.parent.mkdir(parents=True, exist_ok=True)
    location.write_text(text, encoding="utf-8")
    raw = text.encode("utf-8")

    async def scenario() -> None:
        whole = await api.get(f"block_runs/{block_run_id}/logs")
        assert whole.status == 200 and whole.raw == raw
        assert whole.headers["X-Log-Size"] == str(len(raw))
        # The last 3 bytes are two bytes of "✓" and the newline: the cut moves past the
        # broken character rather than answer invalid UTF-8.
        cut = await api.get(f"block_runs/{block_run_id}/logs", params={"tail": 3})
        assert cut.raw == b"\n"
        assert cut.headers["X-Log-Dropped-Bytes"] == str(len(raw) - 1)
        cut = await api.get(f"block_runs/{block_run_id}/logs", params={"tail": 4})
        assert cut.raw == "✓\n".encode()
        # Above the largest tail: refused, naming the bound.
        over = await api.get(
            f"block_runs/{block_run_id}/logs",
            params={"tail": run_service.MAX_LOG_READ_BYTES + 1},
        )
        assert over.status == 400 and over.error["field"] == "tail"

    on_server_loop(scenario())
    # A log longer than the cap is answered by its end, never whole.
    capped = run_service.read_block_log(store, block_run_id, max_bytes=8)
    assert capped.content == "done ✓\n".encode()[-8:] and capped.size == len(raw)
    assert capped.dropped == len(raw) - 8


def test_changes_the_state_machine_refuses_answer_409(
    api: Api, mage_app: MageNbSchedApp, jp_root_dir: Path, on_server_loop: Any
) -> None:
    write_notebook(Path(jp_root_dir) / "done.ipynb", ["x = 1"])
    (completed,) = _finished_runs(mage_app.store, 1, pipeline_uuid="done")

    async def scenario() -> None:
        for body, wanted in (
            ({"status": "cancelled"}, "'cancelled'"),
            ({"status": "initial"}, "'initial'"),
            ({"pipeline_run_action": "retry_blocks"}, "'initial'"),
        ):
            reply = await api.put(f"pipeline_runs/{completed}", {"pipeline_run": body})
            assert reply.status == 409, reply.text
            assert reply.error["type"] == "invalid_transition"
            assert "'completed'" in reply.error["message"] and wanted in reply.error["message"]
        still = await api.get(f"pipeline_runs/{completed}")
        assert still.json["pipeline_run"]["status"] == "completed"

    on_server_loop(scenario())


# --------------------------------------------------------------------------------------------
# Bad input, unknown ids, auth
# --------------------------------------------------------------------------------------------


def test_bad_input_is_refused_naming_the_field_and_nothing_is_written(
    api: Api, mage_app: MageNbSchedApp, jp_root_dir: Path, on_server_loop: Any
) -> None:
    store = mage_app.store
    write_notebook(Path(jp_root_dir) / "real.ipynb", ["x = 1"])
    write_notebook(Path(jp_root_dir) / "other.ipynb", ["x = 1"])
    schedule = schedule_service.create_schedule(
        store, name="real_api", pipeline_uuid="real", schedule_type="api"
    )
    (existing,) = _finished_runs(store, 1, pipeline_uuid="real")

    posts: list[tuple[Any, str]] = [
        ({"pipeline_run": {"pipeline_uuid": "no/such_notebook"}}, "pipeline_uuid"),
        ({"pipeline_run": {"pipeline_uuid": "../outside"}}, "pipeline_uuid"),
        # 200 characters but 400 bytes: no file system holds such a name.
        ({"pipeline_run": {"pipeline_uuid": "é" * 200}}, "pipeline_uuid"),
        ({"pipeline_run": {"pipeline_uuid": "real", "variables": ["a", "list"]}}, "variables"),
        ({"pipeline_run": {"pipeline_uuid": "real", "variables": "text"}}, "variables"),
        ({"pipeline_run": {"pipeline_uuid": "real", "status": "completed"}}, "status"),
        ({"pipeline_run": {"pipeline_uuid": "real", "now": "2024-01-01"}}, "now"),
        ({"pipeline_run": {}}, "pipeline_uuid"),
        ({"pipeline_run": {"pipeline_schedule_id": "three"}}, "pipeline_schedule_id"),
        (
            {"pipeline_run": {"pipeline_schedule_id": schedule.id, "pipeline_uuid": "other"}},
            "pipeline_uuid",
        ),
        (
            {"pipeline_run": {"pipeline_uuid": "real", "execution_date": "yesterday"}},
            "execution_date",
        ),
        ({"pipeline_run": "not an object"}, "pipeline_run"),
        ({"something": {}}, "pipeline_run"),
        ([1, 2], "body"),
    ]
    puts: list[tuple[Any, str]] = [
        ({"pipeline_run": {"status": "bogus"}}, "status"),
        ({"pipeline_run": {"status": "running"}}, "status"),
        ({"pipeline_run": {"status": "completed"}}, "status"),
        ({"pipeline_run": {"pipeline_run_action": "explode"}}, "pipeline_run_action"),
        (
            {"pipeline_run": {"pipeline_run_action": "retry_blocks", "status": "cancelled"}},
            "status",
        ),
        ({"pipeline_run": {"variables": {"a": 1}}}, "variables"),
        ({}, "pipeline_run"),
    ]
    gets: list[tuple[str, dict[str, Any], str]] = [
        ("pipeline_runs", {"status": "bogus"}, "status"),
        ("pipeline_runs", {"limit": 0}, "limit"),
        ("pipeline_runs", {"limit": 100000}, "limit"),
        ("pipeline_runs", {"cursor": "abc"}, "cursor"),
        ("pipeline_runs", {"pipeline_schedule_id": "x"}, "pipeline_schedule_id"),
        ("pipeline_runs", {"backfill_id": -1}, "backfill_id"),
        ("pipeline_runs", {"pipeline_uuid": "../up"}, "pipeline_uuid"),
        ("pipeline_runs/abc", {}, "id"),
        ("pipeline_runs/0", {}, "id"),
        ("pipeline_runs/abc/block_runs", {}, "id"),
        ("pipeline_schedules/abc/pipeline_runs", {}, "pipeline_schedule_id"),
        ("block_runs/abc/logs", {}, "id"),
        (f"block_runs/{existing}/logs", {"tail": 0}, "tail"),
        (f"block_runs/{existing}/logs", {"tail": "x"}, "tail"),
    ]

    async def scenario() -> None:
        before = await run_service.acount_runs(store)
        for body, field in posts:
            reply = await api.post("pipeline_runs", body)
            assert reply.status == 400, (body, reply.text)
            assert reply.error["field"] == field, (body, reply.error)
            assert reply.error["fix"], reply.error
        malformed = await api.post("pipeline_runs", raw_body=b'{"pipeline_run": ')
        assert malformed.status == 400 and malformed.error["field"] == "body"
        assert await run_service.acount_runs(store) == before

        for body, field in puts:
            reply = await api.put(f"pipeline_runs/{existing}", body)
            assert reply.status == 400, (body, reply.text)
            assert reply.error["field"] == field, (body, reply.error)
        assert (await run_service.aget_run(store, existing)).status == "completed"

        for path, params, field in gets:
            reply = await api.get(path, params=params)
            assert reply.status == 400, (path, params, reply.text)
            assert reply.error["field"] == field, (path, params, reply.error)

        # Unknown ids: 404.
        for path in (
            "pipeline_runs/999999",
            "pipeline_runs/999999/block_runs",
            "pipeline_schedules/999999/pipeline_runs",
            "block_runs/999999/logs",
        ):
            reply = await api.get(path)
            assert reply.status == 404, (path, reply.text)
            assert reply.error["type"] == "not_found"
        missing = await api.put("pipeline_runs/999999", {"pipeline_run": {"status": "cancelled"}})
        assert missing.status == 404
        unknown_schedule = await api.post(
            "pipeline_runs", {"pipeline_run": {"pipeline_schedule_id": 999999}}
        )
        assert unknown_schedule.status == 404
        assert await run_service.acount_runs(store) == before

        # Too large a body: 413 before anything is parsed.
        huge = await api.post(
            "pipeline_runs",
            {"pipeline_run": {"pipeline_uuid": "real", "variables": {"x": "y" * (1 << 20)}}},
        )
        assert huge.status == 413
        assert await run_service.acount_runs(store) == before

    on_server_loop(scenario())


def test_every_route_needs_jupyter_auth(
    api: Api, mage_app: MageNbSchedApp, jp_root_dir: Path, on_server_loop: Any
) -> None:
    write_notebook(Path(jp_root_dir) / "guarded.ipynb", ["x = 1"])
    (run_id,) = _finished_runs(mage_app.store, 1, pipeline_uuid="guarded")
    calls: list[tuple[str, str, Any]] = [
        ("GET", "pipeline_runs", None),
        ("POST", "pipeline_runs", {"pipeline_run": {"pipeline_uuid": "guarded"}}),
        ("GET", "pipeline_schedules/1/pipeline_runs", None),
        ("GET", f"pipeline_runs/{run_id}", None),
        ("PUT", f"pipeline_runs/{run_id}", {"pipeline_run": {"status": "initial"}}),
        ("GET", f"pipeline_runs/{run_id}/block_runs", None),
        ("GET", "block_runs/1/logs", None),
    ]

    async def scenario() -> None:
        before = await run_service.acount_runs(mage_app.store)
        for method, path, body in calls:
            reply = await api.call(method, path, body, auth=False)
            assert reply.status == 403, (method, path, reply.text)
            assert reply.error["type"] == "forbidden"
        assert await run_service.acount_runs(mage_app.store) == before
        assert (await run_service.aget_run(mage_app.store, run_id)).status == "completed"

    on_server_loop(scenario())
