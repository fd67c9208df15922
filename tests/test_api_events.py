"""``POST mage/api/events`` against a real server on loopback: the seed's S3 notification fires
the seed's trigger (and its event reaches a real kernel), EventBridge envelopes, exactly once,
every credential (Jupyter token, the ingest token, none, a wrong one), 400 / 413 / 429, and no
ingest token in any log line or error."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from conftest import write_notebook
from jupyter_server.auth.authorizer import Authorizer
from processes import until
from server_fixtures import *  # noqa: F403
from server_fixtures import Api
from test_events import ENVELOPE, S3_NOTIFICATION, notification

from mage_nb_sched import PipelineRun, PipelineSchedule, ScheduleStatus, ScheduleType
from mage_nb_sched.service import events, runs, schedules
from mage_nb_sched.store.engine import Store

INGEST = "ingest-token-for-the-event-tests-0123456789"
WRONG = "not-the-ingest-token-but-long-enough-9876"
#: The runs are only recorded (no scheduler): tests that need no kernel.
RECORD_ONLY: dict[str, Any] = {"scheduler_enabled": False}
WITH_INGEST = pytest.mark.parametrize("mage_settings", [{**RECORD_ONLY, "ingest_token": INGEST}])
FINAL = ("completed", "failed", "cancelled")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def seed_schedule(root: Path) -> PipelineSchedule:
    """The seed's event schedule, created exactly as the seed does (its notebook first)."""
    if not (root / "process_uploads.ipynb").exists():
        write_notebook(root / "process_uploads.ipynb", ["x = 1"])
    return PipelineSchedule.create(
        name="s3_file_upload_trigger",
        pipeline_uuid="process_uploads",
        schedule_type=ScheduleType.EVENT,
        status=ScheduleStatus.ACTIVE,
        variables={"event_type": "s3:ObjectCreated:*", "bucket": "my-data-bucket"},
    )


def other_event_schedule(store: Store, root: Path, name: str, **values: Any) -> int:
    write_notebook(root / "other.ipynb", ["x = 1"])
    matchers = values.pop("matchers", None)
    values.setdefault("status", "active")
    record = schedules.create_schedule(
        store, name=name, pipeline_uuid="other", schedule_type="event", **values
    )
    if matchers is not None:
        with store.write_engine.begin() as connection:
            events.write_event_matchers(
                connection, record.id, events.clean_event_matchers(matchers)
            )
    return record.id


def run_count(store: Store) -> int:
    return len(runs.list_runs(store))


# --------------------------------------------------------------------------------------------
# Events fire schedules
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mage_settings", [RECORD_ONLY])
def test_the_seeds_notification_fires_the_seeds_trigger_once(
    api: Api, mage_app: Any, jp_root_dir: Path, on_server_loop: Any
) -> None:
    root = Path(jp_root_dir)
    store = mage_app.store
    seed = seed_schedule(root)
    paused = other_event_schedule(
        store,
        root,
        "paused",
        status="inactive",
        variables={"event_type": "s3:ObjectCreated:*", "bucket": "my-data-bucket"},
    )
    removals = other_event_schedule(
        store,
        root,
        "removals",
        matchers=[{"pattern": {"eventName": [{"prefix": "ObjectRemoved"}]}}],
    )

    async def scenario() -> list[Any]:
        return [
            await api.post("events", S3_NOTIFICATION),
            await api.post("events", S3_NOTIFICATION),
            await api.post("events", notification("a.csv", "b.csv", "c.csv")),
            await api.post("events", {"event_type": "unrelated"}),
        ]

    first, again, three, unrelated = on_server_loop(scenario())
    assert first.status == 200, first.text
    [outcome] = first.json["events"]
    assert outcome["matched"] == [seed.id] and outcome["duplicates"] == 0
    [run] = outcome["pipeline_runs"]
    assert run["pipeline_schedule_id"] == seed.id and run["status"] == "initial"
    assert run["event_variables"] == S3_NOTIFICATION["Records"][0]
    assert run["run_key"].startswith(f"event:{seed.id}:")
    assert again.json == {"events": [{"matched": [seed.id], "pipeline_runs": [], "duplicates": 1}]}
    assert [len(entry["pipeline_runs"]) for entry in three.json["events"]] == [1, 1, 1]
    assert unrelated.json == {"events": [{"matched": [], "pipeline_runs": [], "duplicates": 0}]}
    assert len(runs.list_runs(store, schedule_id=seed.id)) == 4
    assert runs.list_runs(store, schedule_id=paused) == []
    assert runs.list_runs(store, schedule_id=removals) == []


@pytest.mark.parametrize("mage_settings", [RECORD_ONLY])
def test_an_eventbridge_envelope_fires_its_matcher(
    api: Api, mage_app: Any, jp_root_dir: Path, on_server_loop: Any
) -> None:
    store = mage_app.store
    exports = other_event_schedule(
        store,
        Path(jp_root_dir),
        "big_exports",
        matchers=[
            {
                "name": "big warehouse exports",
                "event_type": "aws_event",
                "pattern": {
                    "source": ["aws.s3"],
                    "detail": {
                        "bucket": {"name": [{"prefix": "ware"}]},
                        "object": {
                            "key": [{"anything-but": {"prefix": "tmp/"}}],
                            "size": [{"numeric": [">", 1_000_000]}],
                        },
                    },
                },
            }
        ],
    )
    small = copy.deepcopy(ENVELOPE)
    small["id"] = "another-event"
    small["detail"]["object"]["size"] = 5

    reply = on_server_loop(api.post("events", [ENVELOPE, small]))
    assert reply.status == 200, reply.text
    big, tiny = reply.json["events"]
    assert big["matched"] == [exports] and big["pipeline_runs"][0]["event_variables"] == ENVELOPE
    assert tiny == {"matched": [], "pipeline_runs": [], "duplicates": 0}


@pytest.mark.kernel
def test_the_event_reaches_the_notebook(
    api: Api, mage_app: Any, jp_root_dir: Path, on_server_loop: Any
) -> None:
    root = Path(jp_root_dir)
    write_notebook(
        root / "process_uploads.ipynb",
        [
            "record = event['s3']\n"
            "print('new object', record['object']['key'], 'in', record['bucket']['name'])"
        ],
    )
    seed = seed_schedule(root)

    async def scenario() -> int:
        reply = await api.post("events", S3_NOTIFICATION)
        assert reply.status == 200, reply.text
        run_id = int(reply.json["events"][0]["pipeline_runs"][0]["id"])
        await until(
            lambda: str(PipelineRun.query.get(run_id).status) in FINAL, 120, "the run finishes"
        )
        return run_id

    run = PipelineRun.query.get(on_server_loop(scenario()))
    assert str(run.status) == "completed", run.metrics
    assert run.pipeline_schedule_id == seed.id
    assert "new object uploads/orders-2024-01-15.csv in my-data-bucket" in run.logs("cell_0")


# --------------------------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------------------------


@WITH_INGEST
@pytest.mark.parametrize(
    "server_settings",
    [{}, {"allow_unauthenticated_access": False}],
    ids=["default", "no unauthenticated access"],
)
def test_the_ingest_token_alone_is_enough_and_a_wrong_one_is_not(
    api: Api, mage_app: Any, jp_root_dir: Path, on_server_loop: Any
) -> None:
    seed = seed_schedule(Path(jp_root_dir))
    store = mage_app.store

    async def scenario() -> list[Any]:
        return [
            await api.post("events", S3_NOTIFICATION, auth=False),
            await api.post("events", S3_NOTIFICATION, auth=False, headers=bearer(WRONG)),
            await api.post(
                "events", S3_NOTIFICATION, auth=False, headers={"Authorization": INGEST}
            ),
            await api.post("events", S3_NOTIFICATION, auth=False, headers=bearer(INGEST)),
        ]

    none, wrong, no_scheme, ingest = on_server_loop(scenario())
    for refused in (none, wrong, no_scheme):
        assert refused.status == 403, refused.text
        assert refused.error["type"] == "forbidden"
        assert INGEST not in refused.text and WRONG not in refused.text
    assert "ingest token" in none.error["message"]
    assert ingest.status == 200, ingest.text
    assert ingest.json["events"][0]["matched"] == [seed.id]
    assert run_count(store) == 1


@pytest.mark.parametrize("mage_settings", [RECORD_ONLY])
def test_without_an_ingest_token_jupyter_auth_is_needed(
    api: Api,
    mage_app: Any,
    jp_root_dir: Path,
    jp_auth_header: Any,
    on_server_loop: Any,
) -> None:
    seed_schedule(Path(jp_root_dir))
    jupyter_token = dict(jp_auth_header)["Authorization"].split(" ", 1)[1]

    async def scenario() -> list[Any]:
        return [
            await api.post("events", S3_NOTIFICATION, auth=False),
            await api.post("events", S3_NOTIFICATION, auth=False, headers=bearer(WRONG)),
            # Jupyter's own token works as "token ..." (the default) and as "Bearer ...".
            await api.post("events", S3_NOTIFICATION, auth=False, headers=bearer(jupyter_token)),
            await api.post("events", notification("second.csv")),
        ]

    none, wrong, jupyter_bearer, jupyter = on_server_loop(scenario())
    assert none.status == 403 and wrong.status == 403
    assert "No ingest token is configured" in none.error["message"]
    assert jupyter_bearer.status == 200, jupyter_bearer.text
    assert jupyter.status == 200, jupyter.text
    assert run_count(mage_app.store) == 2


@WITH_INGEST
def test_a_wrong_jupyter_token_does_not_break_the_ingest_path(
    api: Api, mage_app: Any, jp_root_dir: Path, on_server_loop: Any
) -> None:
    seed_schedule(Path(jp_root_dir))

    async def scenario() -> list[Any]:
        # The identity provider reads every Bearer token as a Jupyter token attempt, the
        # ingest token included; a wrong "token ..." header gets no user.
        return [
            await api.post(
                "events", S3_NOTIFICATION, auth=False, headers={"Authorization": f"token {WRONG}"}
            ),
            await api.post("events", S3_NOTIFICATION, auth=False, headers=bearer(INGEST)),
        ]

    wrong, ingest = on_server_loop(scenario())
    assert wrong.status == 403
    assert ingest.status == 200, ingest.text


# --------------------------------------------------------------------------------------------
# Bad input and limits
# --------------------------------------------------------------------------------------------


@WITH_INGEST
def test_bad_bodies_are_refused_and_create_nothing(
    api: Api, mage_app: Any, jp_root_dir: Path, on_server_loop: Any
) -> None:
    seed_schedule(Path(jp_root_dir))
    too_many = [{"event_type": "x", "n": index} for index in range(events.MAX_EVENTS + 1)]
    huge = b'{"padding": "' + b"x" * (1024 * 1024) + b'"}'

    async def scenario() -> list[Any]:
        return [
            await api.post("events", raw_body=b'{"Records": [', headers=bearer(INGEST), auth=False),
            await api.post("events", raw_body=b"[1, 2]", headers=bearer(INGEST), auth=False),
            await api.post("events", raw_body=b" ", headers=bearer(INGEST), auth=False),
            await api.post("events", too_many, headers=bearer(INGEST), auth=False),
            await api.post("events", raw_body=b'{"v": NaN}', headers=bearer(INGEST), auth=False),
            await api.post("events", raw_body=huge, headers=bearer(INGEST), auth=False),
            # Over 1 MiB is refused before the credentials are even looked at.
            await api.post("events", raw_body=huge, auth=False),
        ]

    malformed, numbers, empty, many, nan, large, large_anonymous = on_server_loop(scenario())
    assert empty.status == 400 and "empty" in empty.error["message"]
    assert malformed.status == 400 and malformed.error["field"] == "body"
    assert "not valid JSON" in malformed.error["message"]
    assert numbers.status == 400 and numbers.error["field"] == "body[0]"
    assert many.status == 400 and "at most 1,000" in many.error["message"]
    assert nan.status == 400 and nan.error["field"] == "body.v"
    assert large.status == 413 and large_anonymous.status == 413
    assert run_count(mage_app.store) == 0


@pytest.mark.parametrize(
    "mage_settings", [{**RECORD_ONLY, "ingest_token": INGEST, "trigger_rate_limit": 0.01}]
)
def test_the_ingest_token_is_rate_limited(
    api: Api, mage_app: Any, jp_root_dir: Path, on_server_loop: Any
) -> None:
    seed_schedule(Path(jp_root_dir))

    async def scenario() -> list[Any]:
        return [
            await api.post("events", S3_NOTIFICATION, auth=False, headers=bearer(INGEST)),
            await api.post("events", notification("b.csv"), auth=False, headers=bearer(INGEST)),
            # Jupyter-authenticated calls are not the ingest token's: a bucket of their own…
            await api.post("events", notification("c.csv")),
            # …limited too.
            await api.post("events", notification("d.csv")),
        ]

    first, limited, jupyter, jupyter_limited = on_server_loop(scenario())
    assert first.status == 200
    # 0.01 calls a second, a burst of 1: the second call waits ~100 s.
    assert limited.status == 429, limited.text
    assert int(limited.headers["Retry-After"]) >= 1
    assert jupyter.status == 200
    assert jupyter_limited.status == 429, jupyter_limited.text
    assert run_count(mage_app.store) == 2


@WITH_INGEST
def test_no_ingest_token_appears_in_the_server_log(
    api: Api,
    mage_app: Any,
    jp_root_dir: Path,
    on_server_loop: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seed_schedule(Path(jp_root_dir))
    for name in ("", "ServerApp", "tornado.access", "tornado.application", "tornado.general"):
        caplog.set_level(logging.DEBUG, logger=name)

    async def scenario() -> list[Any]:
        return [
            await api.post("events", S3_NOTIFICATION, auth=False, headers=bearer(INGEST)),
            await api.post("events", S3_NOTIFICATION, auth=False, headers=bearer(WRONG)),
            await api.post("events", raw_body=b"{", auth=False, headers=bearer(INGEST)),
        ]

    replies = on_server_loop(scenario())
    assert [reply.status for reply in replies] == [200, 403, 400]
    text = caplog.text
    assert "events" in text  # the access lines were captured
    for token in (INGEST, WRONG):
        assert token not in text
        assert all(token not in reply.text for reply in replies)
    assert json.dumps(INGEST) not in json.dumps([reply.json for reply in replies])


@pytest.mark.parametrize("mage_settings", [RECORD_ONLY])
def test_a_login_cookie_without_the_xsrf_token_is_refused(
    api: Api, mage_app: Any, jp_root_dir: Path, on_server_loop: Any
) -> None:
    seed_schedule(Path(jp_root_dir))

    async def scenario() -> Any:
        # A token-authenticated call hands out the login cookie (what a browser would hold).
        logged_in = await api.get("openapi.json", validate=False)
        cookies = [
            value.split(";", 1)[0]
            for name, value in logged_in.headers.items()
            if name.lower() == "set-cookie"
        ]
        assert cookies, logged_in.headers
        # A cross-site page could make the browser send the cookie, but not the _xsrf token.
        return await api.post(
            "events", S3_NOTIFICATION, auth=False, headers={"Cookie": "; ".join(cookies)}
        )

    forged = on_server_loop(scenario())
    assert forged.status == 403, forged.text
    assert "_xsrf" in forged.error["message"]  # the cookie was a user: the XSRF check held
    assert run_count(mage_app.store) == 0


class NoEventsAuthorizer(Authorizer):
    """Lets the user do anything but write events (a read-only role, say)."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return not (resource == "mage_nb_sched:events" and action == "write")


@pytest.mark.parametrize("mage_settings", [{**RECORD_ONLY, "ingest_token": INGEST}])
@pytest.mark.parametrize(
    "server_settings", [{"authorizer_class": "test_api_events.NoEventsAuthorizer"}]
)
def test_a_jupyter_user_must_be_authorized_to_write_events(
    api: Api, mage_app: Any, jp_root_dir: Path, on_server_loop: Any
) -> None:
    seed_schedule(Path(jp_root_dir))

    async def scenario() -> list[Any]:
        return [
            await api.post("events", S3_NOTIFICATION),
            await api.post("events", S3_NOTIFICATION, auth=False, headers=bearer(INGEST)),
        ]

    refused, ingest = on_server_loop(scenario())
    assert refused.status == 403, refused.text
    assert "mage_nb_sched:events" in refused.error["message"]
    assert ingest.status == 200  # the ingest token is its own credential
    assert run_count(mage_app.store) == 1
