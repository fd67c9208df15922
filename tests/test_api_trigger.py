"""Mage's trigger URL against a real server on loopback: both URL forms, a real HTTP client in
another process whose variables reach the executed notebook, every refusal (nothing created
each time), idempotency, ``skip_if_previous_running``, the rate limit, and no token in any log
line or error."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import write_notebook
from processes import until
from server_fixtures import *  # noqa: F403
from server_fixtures import Api

from mage_nb_sched import (
    ConflictError,
    PipelineRun,
    PipelineSchedule,
    ValidationError,
    trigger_pipeline,
)
from mage_nb_sched.handlers.trigger import REDACTED
from mage_nb_sched.service import api_triggers, runs, schedules
from mage_nb_sched.service.records import ScheduleRecord
from mage_nb_sched.store.artifacts import block_log_path
from mage_nb_sched.store.engine import Store
from mage_nb_sched.triggers import PipelineRunFailed, PipelineRunTimeout

TOKEN = "trigger-token-for-the-tests-0123456789"
OTHER_TOKEN = "a-token-that-is-not-the-schedules-987654"
THIRD_TOKEN = "the-token-of-a-paused-schedule-5555555"
FINAL = ("completed", "failed", "cancelled")
#: The runs are only recorded: the tests of refusals need no kernel.
RECORD_ONLY = pytest.mark.parametrize("mage_settings", [{"scheduler_enabled": False}])


def api_schedule(
    store: Store, name: str = "on_demand", token: str = TOKEN, **values: Any
) -> ScheduleRecord:
    """An active API schedule of notebook ``greet`` (token :data:`TOKEN` by default)."""
    notebook = Path(store.project_dir or ".") / "greet.ipynb"
    if not notebook.exists():
        write_notebook(notebook, ["x = 1"])
    values.setdefault("status", "active")
    return schedules.create_schedule(
        store,
        name=name,
        pipeline_uuid="greet",
        schedule_type="api",
        token=token,
        **values,
    )


def run_count(store: Store) -> int:
    return len(runs.list_runs(store))


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def trigger_path(schedule_id: int | str, token: str = TOKEN) -> str:
    return f"pipeline_schedules/{schedule_id}/pipeline_runs/{token}"


async def post_from_another_process(url: str, body: Any, headers: dict[str, str]) -> Any:
    """POST with ``requests`` from a child process (no cookie, no Jupyter token); returns
    ``{"status", "headers", "body"}``. Awaited, so the server on this loop keeps answering."""
    script = (
        "import json, sys, requests\n"
        "url, body, headers = json.loads(sys.stdin.read())\n"
        "r = requests.post(url, json=body, headers=headers, timeout=60)\n"
        "print(json.dumps({'status': r.status_code, 'headers': dict(r.headers),"
        " 'body': r.text}))\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(
        process.communicate(json.dumps([url, body, headers]).encode()), 120
    )
    assert process.returncode == 0, err.decode()
    return json.loads(out)


# --------------------------------------------------------------------------------------------
# End to end: another process, a real kernel
# --------------------------------------------------------------------------------------------


@pytest.mark.kernel
@pytest.mark.parametrize(
    "server_settings",
    [{}, {"allow_unauthenticated_access": False}],
    ids=["default", "allow_unauthenticated_access=False"],
)
def test_the_trigger_url_from_another_process_runs_the_notebook_with_its_variables(
    api: Api, mage_app: Any, jp_root_dir: Path, on_server_loop: Any, server_settings: Any
) -> None:
    store = mage_app.store
    write_notebook(
        Path(jp_root_dir) / "greet.ipynb",
        [
            {"source": "who = 'nobody'", "tags": ["parameters"]},
            "print('hello', who, 'from', event['source'], 'at', event['attempt'])",
        ],
    )
    schedule = api_schedule(store)

    async def scenario() -> tuple[Any, Any]:
        if server_settings.get("allow_unauthenticated_access") is False:
            # The setting is in force: Jupyter's own API refuses a call without credentials.
            refused = await api.client.fetch(api.base_url + "/api/contents", raise_error=False)
            assert refused.code == 403, refused.code
        answer = await post_from_another_process(
            api.url(trigger_path(schedule.id)),
            {"pipeline_run": {"variables": {"who": "world"}}, "source": "curl", "attempt": 2},
            {},
        )
        assert answer["status"] == 201, answer
        run = json.loads(answer["body"])["pipeline_run"]
        await until(
            lambda: str(runs.get_run(store, run["id"]).status) in FINAL,
            120,
            f"run {run['id']} finishes",
        )
        return answer, run

    answer, run = on_server_loop(scenario())
    assert answer["headers"]["Location"].endswith(f"/mage/api/pipeline_runs/{run['id']}")
    assert run["pipeline_schedule_id"] == schedule.id
    assert run["variables"] == {"who": "world"}
    assert run["event_variables"] == {"source": "curl", "attempt": 2}
    done = runs.get_run(store, run["id"])
    assert str(done.status) == "completed", done.metrics
    log = block_log_path(
        Path(jp_root_dir), done.pipeline_uuid, done.execution_partition, "cell_1"
    ).read_text(encoding="utf-8")
    assert "hello world from curl at 2" in log, log


@RECORD_ONLY
@pytest.mark.parametrize(
    "server_settings",
    [{}, {"allow_unauthenticated_access": False}],
    ids=["default", "allow_unauthenticated_access=False"],
)
def test_both_url_forms_need_only_the_token(
    api: Api, mage_app: Any, on_server_loop: Any, server_settings: Any
) -> None:
    store = mage_app.store
    schedule = api_schedule(store)
    body = {"pipeline_run": {"variables": {"date": "2024-01-15"}}}

    async def scenario() -> tuple[Any, Any]:
        in_path = await api.post(trigger_path(schedule.id), body, auth=False)
        bearer = await api.post(
            f"pipeline_schedules/{schedule.id}/api_trigger",
            body,
            auth=False,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        return in_path, bearer

    in_path, bearer = on_server_loop(scenario())
    assert in_path.status == 201, in_path.text
    assert bearer.status == 201, bearer.text
    first, second = in_path.json["pipeline_run"], bearer.json["pipeline_run"]
    assert first["id"] != second["id"]
    for run, reply in ((first, in_path), (second, bearer)):
        assert run["variables"] == {"date": "2024-01-15"}
        assert run["event_variables"] is None
        assert run["status"] == "initial"
        assert reply.headers["Location"].endswith(f"/mage/api/pipeline_runs/{run['id']}")
    assert [r.id for r in runs.list_runs(store, schedule_id=schedule.id)] == [
        first["id"],
        second["id"],
    ]


# --------------------------------------------------------------------------------------------
# Refusals: nothing is created
# --------------------------------------------------------------------------------------------


@RECORD_ONLY
def test_a_wrong_or_missing_token_an_unknown_id_or_another_type_is_the_same_403(
    api: Api, mage_app: Any, on_server_loop: Any
) -> None:
    store = mage_app.store
    schedule = api_schedule(store)
    timed = schedules.create_schedule(
        store,
        name="nightly",
        pipeline_uuid="greet",
        schedule_interval="@daily",
        token=TOKEN,  # the right token, but not an API schedule
    )
    before = run_count(store)
    bearer = f"pipeline_schedules/{schedule.id}/api_trigger"

    async def scenario() -> list[Any]:
        return [
            await api.post(trigger_path(schedule.id, OTHER_TOKEN), {}, auth=False),
            await api.post(trigger_path(schedule.id, TOKEN[:-1]), {}, auth=False),
            await api.post(trigger_path(987654), {}, auth=False),
            await api.post(trigger_path(timed.id), {}, auth=False),
            await api.post(bearer, {}, auth=False),
            await api.post(
                bearer, {}, auth=False, headers={"Authorization": f"Bearer {OTHER_TOKEN}"}
            ),
            await api.post(bearer, {}, auth=False, headers={"Authorization": f"token {TOKEN}"}),
            # Jupyter's own token is no API token either.
            await api.post(bearer, {}),
        ]

    replies = on_server_loop(scenario())
    assert [reply.status for reply in replies] == [403] * len(replies), [
        (reply.status, reply.text) for reply in replies
    ]
    assert {reply.error["message"] for reply in replies} == {api_triggers.FORBIDDEN_MESSAGE}
    assert {reply.error["type"] for reply in replies} == {"forbidden"}
    for reply in replies:
        assert TOKEN not in reply.text and OTHER_TOKEN not in reply.text
    assert run_count(store) == before


@RECORD_ONLY
def test_an_inactive_schedule_is_refused_with_how_to_activate_it(
    api: Api, mage_app: Any, on_server_loop: Any
) -> None:
    store = mage_app.store
    schedule = api_schedule(store, status="inactive")
    before = run_count(store)
    reply = on_server_loop(api.post(trigger_path(schedule.id), {}, auth=False))
    assert reply.status == 409, reply.text
    assert reply.error["field"] == "status"
    assert "inactive" in reply.error["message"]
    assert '"status": "active"' in reply.error["fix"]
    assert run_count(store) == before
    # Activated, the same call goes through.
    schedules.update_schedule(store, schedule.id, status="active")
    assert on_server_loop(api.post(trigger_path(schedule.id), {}, auth=False)).status == 201
    assert run_count(store) == before + 1


@RECORD_ONLY
def test_the_same_idempotency_key_gives_the_same_run(
    api: Api, mage_app: Any, on_server_loop: Any
) -> None:
    store = mage_app.store
    schedule = api_schedule(store)
    before = run_count(store)

    async def call(key: str, form: str = "path") -> Any:
        if form == "path":
            return await api.post(
                trigger_path(schedule.id), {}, auth=False, headers={"Idempotency-Key": key}
            )
        return await api.post(
            f"pipeline_schedules/{schedule.id}/api_trigger",
            {},
            auth=False,
            headers={"Idempotency-Key": key, "Authorization": f"Bearer {TOKEN}"},
        )

    async def scenario() -> list[Any]:
        first = await call("order-42")
        # Racing repeats: the database's unique run key makes them share the run.
        racing = await asyncio.gather(*(call("order-42", form) for form in ("path", "bearer")))
        other = await call("order-43")
        return [first, *racing, other]

    first, again, bearer_again, other = on_server_loop(scenario())
    assert first.status == 201, first.text
    assert again.status == 200 and bearer_again.status == 200, (again.text, bearer_again.text)
    run_id = first.json["pipeline_run"]["id"]
    assert again.json["pipeline_run"]["id"] == bearer_again.json["pipeline_run"]["id"] == run_id
    assert again.headers["Location"].endswith(f"/pipeline_runs/{run_id}")
    assert other.status == 201 and other.json["pipeline_run"]["id"] != run_id
    assert run_count(store) == before + 2
    # The stored key is a hash of the key, never the key.
    assert "order-42" not in runs.get_run(store, run_id).run_key
    # A key that is too long is a 400 naming the header, and writes nothing.
    too_long = on_server_loop(call("k" * 256))
    assert too_long.status == 400 and too_long.error["field"] == "Idempotency-Key"
    assert run_count(store) == before + 2


@RECORD_ONLY
def test_skip_if_previous_running_refuses_while_a_run_is_unfinished(
    api: Api, mage_app: Any, on_server_loop: Any
) -> None:
    store = mage_app.store
    schedule = api_schedule(store, settings={"skip_if_previous_running": True})
    first = on_server_loop(api.post(trigger_path(schedule.id), {}, auth=False))
    assert first.status == 201, first.text
    waiting = first.json["pipeline_run"]["id"]
    before = run_count(store)
    second = on_server_loop(api.post(trigger_path(schedule.id), {}, auth=False))
    assert second.status == 409, second.text
    assert second.error["field"] == "settings.skip_if_previous_running"
    assert f"run {waiting}" in second.error["message"]
    assert "skip_if_previous_running" in second.error["fix"]
    assert run_count(store) == before
    # Once that run has ended, the schedule takes triggers again.
    runs.update_run(store, waiting, status="cancelled")
    assert on_server_loop(api.post(trigger_path(schedule.id), {}, auth=False)).status == 201
    assert run_count(store) == before + 1


@RECORD_ONLY
def test_bad_bodies_are_refused_and_write_nothing(
    api: Api, mage_app: Any, on_server_loop: Any
) -> None:
    store = mage_app.store
    schedule = api_schedule(store)
    before = run_count(store)
    path = trigger_path(schedule.id)

    async def scenario() -> dict[str, Any]:
        return {
            "malformed": await api.post(path, raw_body=b'{"pipeline_run": ', auth=False),
            "not_an_object": await api.post(path, [1, 2], auth=False),
            "variables": await api.post(path, {"pipeline_run": {"variables": 3}}, auth=False),
            "run_field": await api.post(
                path, {"pipeline_run": {"status": "completed"}}, auth=False
            ),
            "too_large": await api.post(
                path, raw_body=b'{"x": "' + b"a" * (1024 * 1024) + b'"}', auth=False
            ),
            "bad_id": await api.post(trigger_path("abc"), {}, auth=False, validate=False),
            # Deeper than JSON's own decoder goes, and deeper than the limit.
            "too_deep": await api.post(
                path, raw_body=b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", auth=False
            ),
            "deep": await api.post(path, {"pipeline_run": {"variables": nested(70)}}, auth=False),
        }

    replies = on_server_loop(scenario())
    status = {name: reply.status for name, reply in replies.items()}
    assert status == {
        "malformed": 400,
        "not_an_object": 400,
        "variables": 400,
        "run_field": 400,
        "too_large": 413,
        "bad_id": 400,
        "too_deep": 400,
        "deep": 400,
    }, {name: reply.text for name, reply in replies.items()}
    assert replies["too_deep"].error["field"] == replies["deep"].error["field"] == "body"
    assert replies["malformed"].error["field"] == "body"
    assert "not valid JSON" in replies["malformed"].error["message"]
    assert replies["variables"].error["field"] == "pipeline_run.variables"
    assert replies["run_field"].error["field"] == "pipeline_run.status"
    assert replies["bad_id"].error["field"] == "id"
    assert run_count(store) == before


@RECORD_ONLY
def test_a_large_body_under_the_limit_is_accepted(
    api: Api, mage_app: Any, on_server_loop: Any
) -> None:
    store = mage_app.store
    schedule = api_schedule(store)
    blob = "a" * (300 * 1024)  # parsed on the service's threads, not on the server's loop
    reply = on_server_loop(
        api.post(trigger_path(schedule.id), {"pipeline_run": {"variables": {"blob": blob}}},
                 auth=False)
    )  # fmt: skip
    assert reply.status == 201, reply.text[:500]
    assert runs.get_run(store, reply.json["pipeline_run"]["id"]).variables == {"blob": blob}


@pytest.mark.parametrize(
    "mage_settings", [{"scheduler_enabled": False, "trigger_rate_limit": 0.01}]
)
def test_the_rate_limit_is_per_token_and_answers_retry_after(
    api: Api, mage_app: Any, on_server_loop: Any
) -> None:
    store = mage_app.store
    schedule = api_schedule(store)
    # 0.01 calls a second with a burst of 1: the second call comes long before the next is due.
    first = on_server_loop(api.post(trigger_path(schedule.id), {}, auth=False))
    assert first.status == 201, first.text
    before = run_count(store)
    limited = on_server_loop(api.post(trigger_path(schedule.id), {}, auth=False))
    assert limited.status == 429, limited.text
    assert int(limited.headers["Retry-After"]) >= 1
    assert "trigger_rate_limit" in limited.error["message"]
    assert run_count(store) == before
    # Another token has its own bucket (and is still refused for being wrong).
    wrong = on_server_loop(api.post(trigger_path(schedule.id, OTHER_TOKEN), {}, auth=False))
    assert wrong.status == 403


# --------------------------------------------------------------------------------------------
# No token in any log line
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mage_settings", [{"scheduler_enabled": False, "trigger_rate_limit": 1}])
def test_no_token_appears_in_the_server_log(
    api: Api, mage_app: Any, on_server_loop: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = mage_app.store
    schedule = api_schedule(store)
    # Its own token, so its calls do not use up the first one's rate-limit bucket.
    inactive = api_schedule(store, name="paused", token=THIRD_TOKEN, status="inactive")
    # Every logger the server writes to, down to DEBUG (successes are logged at DEBUG).
    for name in ("", "ServerApp", "tornado.access", "tornado.application", "tornado.general"):
        caplog.set_level(logging.DEBUG, logger=name)

    async def scenario() -> list[Any]:
        replies = [
            await api.post(trigger_path(schedule.id), {"pipeline_run": {}}, auth=False),
            await api.post(trigger_path(schedule.id, OTHER_TOKEN), {}, auth=False),
            await api.post(trigger_path(inactive.id, THIRD_TOKEN), {}, auth=False),
            await api.post(trigger_path(inactive.id, THIRD_TOKEN), raw_body=b"{oops", auth=False),
            await api.post(
                f"pipeline_schedules/{schedule.id}/api_trigger",
                {},
                auth=False,
                headers={"Authorization": f"Bearer {OTHER_TOKEN}"},
            ),
        ]
        # Rate 1/s, burst 2: calls in a row until one is limited (bounded).
        for _ in range(20):
            reply = await api.post(trigger_path(schedule.id), {}, auth=False)
            replies.append(reply)
            if reply.status == 429:
                break
        return replies

    replies = on_server_loop(scenario())
    statuses = {reply.status for reply in replies}
    assert {201, 403, 409, 400, 429} <= statuses, [reply.status for reply in replies]
    text = caplog.text
    # The log was captured: the access lines of the trigger URL are there, redacted.
    assert f"/pipeline_runs/{REDACTED}" in text, text[-3000:]
    assert "429 POST" in text and "403 POST" in text and "201 POST" in text, text[-3000:]
    for token in (TOKEN, OTHER_TOKEN, THIRD_TOKEN):
        assert token not in text
        for reply in replies:
            assert token not in reply.text


# --------------------------------------------------------------------------------------------
# Mage's Python helper: trigger_pipeline
# --------------------------------------------------------------------------------------------


def test_trigger_pipeline_creates_its_api_schedule_once_and_records_the_run(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    first = trigger_pipeline("my_pipeline", variables={"date": "2024-01-15"})
    second = trigger_pipeline("my_pipeline", verbose=False)
    assert isinstance(first, PipelineRun) and isinstance(second, PipelineRun)
    (schedule,) = schedules.list_schedules(store, pipeline_uuid="my_pipeline")
    assert schedule.name == api_triggers.DEFAULT_SCHEDULE_NAME == "API_TRIGGER_CREATED_FROM_CODE"
    assert str(schedule.schedule_type) == "api" and str(schedule.status) == "active"
    assert first.pipeline_schedule_id == second.pipeline_schedule_id == schedule.id
    assert first.variables == {"date": "2024-01-15"} and second.variables == {}
    assert first.id != second.id
    assert str(first.status) == "initial"
    assert capsys.readouterr().out == (
        f"Pipeline run {first.id} for pipeline my_pipeline created "
        f"(schedule 'API_TRIGGER_CREATED_FROM_CODE', id {schedule.id}).\n"
    )
    # A schedule_name of its own makes (and then reuses) another API schedule.
    named = trigger_pipeline("my_pipeline", schedule_name="from_code", verbose=False)
    assert PipelineSchedule.query.get(named.pipeline_schedule_id).name == "from_code"
    assert len(schedules.list_schedules(store, pipeline_uuid="my_pipeline")) == 2


def test_trigger_pipeline_refuses_what_the_trigger_url_refuses(store: Store) -> None:
    schedules.create_schedule(
        store, name="nightly", pipeline_uuid="my_pipeline", schedule_interval="@daily"
    )
    with pytest.raises(ConflictError) as taken:
        trigger_pipeline("my_pipeline", schedule_name="nightly", verbose=False)
    assert taken.value.field == "schedule_name"
    paused = api_triggers.api_schedule_for_pipeline(store, "etl/daily", "paused")
    schedules.update_schedule(store, paused.id, status="inactive")
    with pytest.raises(ConflictError) as inactive:
        trigger_pipeline("etl/daily", schedule_name="paused", verbose=False)
    assert inactive.value.field == "status"
    with pytest.raises(ValidationError) as missing:
        trigger_pipeline("no_such_notebook", verbose=False)
    assert missing.value.field == "pipeline_uuid"
    with pytest.raises(ValidationError):
        trigger_pipeline("my_pipeline", check_status=True, poll_interval=0, verbose=False)
    assert runs.list_runs(store) == []


def test_trigger_pipeline_check_status_times_out_naming_the_run(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    # No scheduler serves this store: the run never starts.
    with pytest.raises(PipelineRunTimeout) as info:
        trigger_pipeline("my_pipeline", check_status=True, poll_interval=0.05, poll_timeout=0.2)
    (run,) = runs.list_runs(store)
    message = str(info.value)
    assert f"Pipeline run {run.id} for pipeline my_pipeline" in message
    assert "poll_timeout=0.2" in message and "initial" in message
    assert f"Pipeline run {run.id} for pipeline my_pipeline: initial." in capsys.readouterr().out


@pytest.mark.kernel
def test_trigger_pipeline_check_status_waits_for_the_server_to_execute_it(
    mage_app: Any, jp_root_dir: Path, on_server_loop: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    root = Path(jp_root_dir)
    write_notebook(
        root / "hello.ipynb",
        [{"source": "who = 'nobody'", "tags": ["parameters"]}, "print('hello', who)"],
    )
    write_notebook(root / "broken.ipynb", ["raise ValueError('broken on purpose')"])

    async def scenario() -> tuple[Any, BaseException]:
        # A blocking helper: on a thread, so the server (and its scheduler) on this loop runs.
        run = await asyncio.to_thread(
            trigger_pipeline,
            "hello",
            variables={"who": "python"},
            check_status=True,
            poll_interval=0.1,
            poll_timeout=120,
        )
        try:
            await asyncio.to_thread(
                trigger_pipeline,
                "broken",
                check_status=True,
                error_on_failure=True,
                poll_interval=0.1,
                poll_timeout=120,
                verbose=False,
            )
        except PipelineRunFailed as err:
            return run, err
        raise AssertionError("the failed run did not raise")

    run, failure = on_server_loop(scenario())
    assert str(run.status) == "completed", run.metrics
    assert "hello python" in run.logs("cell_1")
    out = capsys.readouterr().out
    assert f"Pipeline run {run.id} for pipeline hello: completed" in out, out
    (broken,) = runs.list_runs(mage_app.store, pipeline_uuid="broken")
    assert f"Pipeline run {broken.id} for pipeline broken failed" in str(failure)
    assert "broken on purpose" in str(failure)
