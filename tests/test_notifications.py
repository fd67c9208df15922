"""Notifications: text and payload, webhook delivery to a real HTTP server, sinks, Jupyter events.

The webhook endpoint is a real ``http.server`` on 127.0.0.1 in a thread. It records every POST
and answers from a script; a ``gate`` lets a test hold answers back, so "still in flight" is a
fact the test controls rather than a sleep it hopes is long enough. Waiting for delivery is
``Notifier.stop()``, which drains the queue.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import itertools
import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonschema
import pytest
from jupyter_events import EventLogger
from processes import wait_until
from traitlets import TraitError
from traitlets.config import Config

from mage_nb_sched.core.errors import ValidationError
from mage_nb_sched.scheduling.notifications import (
    RUN_NOTIFICATION_SCHEMA_ID,
    RUN_NOTIFICATION_SCHEMA_PATH,
    Notification,
    Notifier,
    jupyter_event_sink,
    redact_url,
)

LOGGER = "mage_nb_sched.scheduling.notifications"
JAN_15 = datetime(2024, 1, 15, tzinfo=timezone.utc)

# What a receiver answers: status, headers, body.
Reply = tuple[int, dict[str, str], str]
OK: Reply = (200, {}, "ok")


def note(kind: str = "failure", run_id: int = 12, **fields: Any) -> Notification:
    values: dict[str, Any] = {
        "kind": kind,
        "run_id": run_id,
        "pipeline_uuid": "daily_sales",
        "schedule_id": 3,
        "schedule_name": "nightly",
        "execution_date": JAN_15,
        "status": {"failure": "failed", "sla_breach": "running", "success": "completed"}[kind],
        "reason": "block load_data failed: ZeroDivisionError" if kind == "failure" else None,
    }
    values.update(fields)
    return Notification(**values)


# --------------------------------------------------------------------------------------------
# A real webhook endpoint
# --------------------------------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float


class Receiver:
    """An HTTP server on 127.0.0.1 that records POSTs and answers from a script.

    ``replies`` are used in order, then ``reply_for(body)`` if set, else 200. While ``gate`` is
    clear, every handler waits (a request has *arrived* but is not *answered*).
    """

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.replies: deque[Reply] = deque()
        self.reply_for: Callable[[dict[str, Any]], Reply] | None = None
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received = Received(
                    self.command, self.path, dict(self.headers), json.loads(raw), time.monotonic()
                )
                with receiver._lock:
                    receiver.requests.append(received)
                # Bounded, so that a broken test ends instead of hanging the suite.
                receiver.gate.wait(timeout=20)
                status, headers, text = receiver._reply(received.body)
                data = text.encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A short poll interval: shutdown() waits for one, and every test ends with it.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def _reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            if self.replies:
                return self.replies.popleft()
        return self.reply_for(body) if self.reply_for else OK

    @property
    def url(self) -> str:
        # Shaped like a Slack hook with a query token: neither secret may reach a log line.
        port = self.server.server_address[1]
        return f"http://127.0.0.1:{port}/services/T0/B0/s3cr3tpath?token=s3cr3tquery"

    def run_ids(self) -> list[int]:
        with self._lock:
            return [request.body["run_id"] for request in self.requests]

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    yield endpoint
    endpoint.close()


@pytest.fixture
def refused_url() -> str:
    """A URL nothing listens on: a port that was bound, then closed."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/hook?token=s3cr3tquery"


def assert_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "s3cr3t" not in text


# --------------------------------------------------------------------------------------------
# Notification
# --------------------------------------------------------------------------------------------


def test_text_of_each_kind() -> None:
    assert note("failure").text() == (
        ":x: daily_sales run 12 (schedule 'nightly', 2024-01-15T00:00:00+00:00) failed: "
        "block load_data failed: ZeroDivisionError"
    )
    assert note("sla_breach", reason="SLA of 600 s passed at 2024-01-15T00:10:00+00:00").text() == (
        ":warning: daily_sales run 12 (schedule 'nightly', 2024-01-15T00:00:00+00:00) missed its "
        "SLA (status: running): SLA of 600 s passed at 2024-01-15T00:10:00+00:00"
    )
    assert note("success").text() == (
        ":white_check_mark: daily_sales run 12 (schedule 'nightly', 2024-01-15T00:00:00+00:00) "
        "completed"
    )
    assert note(schedule_name=None, reason=None).text() == (
        ":x: daily_sales run 12 (schedule 3, 2024-01-15T00:00:00+00:00) failed"
    )
    assert (
        note(schedule_name=None, schedule_id=None)
        .text()
        .startswith(":x: daily_sales run 12 (2024-01-15T00:00:00+00:00) failed: ")
    )


def test_text_is_one_slack_safe_line_and_the_payload_keeps_the_full_reason() -> None:
    reason = "KeyError: <class 'x'> & friends\n  Traceback line\n" + "y" * 2000
    notification = note(reason=reason, pipeline_uuid="etl/<daily>")
    text = notification.text()
    assert "\n" not in text
    assert "etl/&lt;daily&gt;" in text
    assert "KeyError: &lt;class 'x'&gt; &amp; friends Traceback line yyy" in text
    assert "<" not in text and ">" not in text
    assert text.endswith("…") and len(text) < 700
    assert notification.payload()["reason"] == reason


def test_payload_fields() -> None:
    notification = note("sla_breach", run_id=7, reason="late")
    assert notification.payload() == {
        "text": notification.text(),
        "kind": "sla_breach",
        "run_id": 7,
        "pipeline_uuid": "daily_sales",
        "schedule_id": 3,
        "schedule_name": "nightly",
        "execution_date": "2024-01-15T00:00:00+00:00",
        "status": "running",
        "reason": "late",
    }
    json.dumps(notification.payload())


def test_notification_checks_kind_and_normalises_the_date_to_utc() -> None:
    with pytest.raises(ValidationError, match=r"kind.*'failure', 'sla_breach', 'success'"):
        Notification(
            kind="error",
            run_id=1,
            pipeline_uuid="p",
            schedule_id=None,
            schedule_name=None,
            execution_date=JAN_15,
            status="failed",
        )
    with pytest.raises(ValidationError, match=r"execution_date.*aware"):
        note(execution_date=datetime(2024, 1, 15))
    plus_one = timezone(timedelta(hours=1))
    shifted = note(execution_date=datetime(2024, 1, 15, 1, tzinfo=plus_one))
    assert shifted.execution_date.utcoffset() == timedelta(0)
    assert shifted == note()
    assert shifted.payload()["execution_date"] == "2024-01-15T00:00:00+00:00"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T0/B0/XyZ", "https://hooks.slack.com/services/…"),
        ("https://user:pw@example.com:8443/hook?token=abc", "https://example.com:8443/…?…"),
        ("http://example.com/a/b?x=1#frag", "http://example.com/a/…?…#…"),
        ("https://example.com", "https://example.com"),
        ("http://[::1]:9000/x/y", "http://[::1]:9000/x/…"),
        ("http://example.com:99999/", "<unparseable URL>"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook?token=s3cr3t",
        "file:///etc/s3cr3t",
        "https://",
        "hooks.slack.com/services/T0/B0/s3cr3t",
        "https://exa mple.com/s3cr3t",
        "https://example.com:99999/s3cr3t",
    ],
)
def test_bad_webhook_url_is_refused_naming_the_trait_and_an_example(url: str) -> None:
    with pytest.raises(TraitError) as caught:
        Notifier(webhook_url=url)
    message = str(caught.value)
    assert "webhook_url" in message
    assert "https://hooks.slack.com/services/T000/B000/XXXX" in message
    assert "s3cr3t" not in message


def test_webhook_url_from_config_and_empty_means_none() -> None:
    config = Config({"Notifier": {"webhook_url": "https://example.com/hook", "queue_size": 5}})
    notifier = Notifier(config=config)
    assert notifier.webhook_url == "https://example.com/hook"
    assert notifier.queue_size == 5
    assert Notifier(webhook_url="").webhook_url is None
    assert Notifier().webhook_url is None
    with pytest.raises(TraitError, match="webhook_retries"):
        Notifier(webhook_retries=-1)
    with pytest.raises(TraitError, match="webhook_timeout"):
        Notifier(webhook_timeout=0)


# --------------------------------------------------------------------------------------------
# Webhook delivery
# --------------------------------------------------------------------------------------------


def test_each_notification_is_delivered_exactly_once(receiver: Receiver) -> None:
    notifications = [note(run_id=run_id) for run_id in range(1, 8)]

    async def scenario() -> Notifier:
        notifier = Notifier(webhook_url=receiver.url)
        await notifier.start()
        for notification in notifications:
            notifier.notify(notification)
        await notifier.stop(timeout=20)
        return notifier

    notifier = asyncio.run(scenario())
    assert sorted(receiver.run_ids()) == list(range(1, 8))
    by_run = {request.body["run_id"]: request for request in receiver.requests}
    for notification in notifications:
        request = by_run[notification.run_id]
        assert request.body == notification.payload()
        assert request.method == "POST"
        assert request.path == "/services/T0/B0/s3cr3tpath?token=s3cr3tquery"
        assert request.headers["Content-Type"] == "application/json"
    assert (notifier.delivered, notifier.failed, notifier.dropped) == (7, 0, 0)


def test_5xx_is_retried_with_exponential_backoff_then_delivered(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.replies.extend([(500, {}, "oops"), (502, {}, "bad gateway"), (503, {}, "busy")])

    async def scenario() -> Notifier:
        notifier = Notifier(webhook_url=receiver.url, webhook_backoff=0.02, webhook_retries=5)
        await notifier.start()
        notifier.notify(note())
        await notifier.stop(timeout=20)
        return notifier

    with caplog.at_level(logging.INFO, logger=LOGGER):
        notifier = asyncio.run(scenario())
    assert receiver.run_ids() == [12, 12, 12, 12]
    assert (notifier.delivered, notifier.failed) == (1, 0)
    arrivals = [request.at for request in receiver.requests]
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    # Lower bounds only (a loaded machine is slower, never faster): 0.02, 0.04, 0.08 s.
    for gap, backoff in zip(gaps, [0.02, 0.04, 0.08], strict=True):
        assert gap >= backoff * 0.9
    assert "retrying" in caplog.text
    assert_no_secret(caplog)


def test_retries_run_out_and_the_notification_counts_as_failed(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.reply_for = lambda body: (500, {}, "down")

    async def scenario() -> Notifier:
        notifier = Notifier(webhook_url=receiver.url, webhook_backoff=0.01, webhook_retries=2)
        await notifier.start()
        notifier.notify(note())
        await notifier.stop(timeout=20)
        return notifier

    with caplog.at_level(logging.INFO, logger=LOGGER):
        notifier = asyncio.run(scenario())
    assert len(receiver.requests) == 3
    assert (notifier.delivered, notifier.failed, notifier.dropped) == (0, 1, 0)
    assert "gave up" in caplog.text and "HTTP 500" in caplog.text
    assert "http://127.0.0.1:" in caplog.text and "/services/…?…" in caplog.text
    assert_no_secret(caplog)


def test_numeric_retry_after_is_honoured(receiver: Receiver) -> None:
    # The backoff alone would wait 30 s; "Retry-After: 0" says retry now.
    receiver.replies.append((429, {"Retry-After": "0"}, "slow down"))

    async def scenario() -> Notifier:
        notifier = Notifier(webhook_url=receiver.url, webhook_backoff=30.0)
        await notifier.start()
        notifier.notify(note())
        await notifier.stop(timeout=10)
        return notifier

    notifier = asyncio.run(scenario())
    assert len(receiver.requests) == 2
    assert (notifier.delivered, notifier.dropped) == (1, 0)


def test_retry_after_is_capped_at_backoff_max(receiver: Receiver) -> None:
    receiver.replies.append((503, {"Retry-After": "3600"}, "maintenance"))

    async def scenario() -> Notifier:
        notifier = Notifier(
            webhook_url=receiver.url, webhook_backoff=0.01, webhook_backoff_max=0.05
        )
        await notifier.start()
        notifier.notify(note())
        await notifier.stop(timeout=10)
        return notifier

    notifier = asyncio.run(scenario())
    assert len(receiver.requests) == 2
    assert (notifier.delivered, notifier.dropped) == (1, 0)


def test_404_is_not_retried_and_the_answer_is_logged(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    body = "no such hook " * 50
    receiver.replies.append((404, {}, body))

    async def scenario() -> Notifier:
        notifier = Notifier(webhook_url=receiver.url, webhook_backoff=0.01, webhook_retries=5)
        await notifier.start()
        notifier.notify(note())
        await notifier.stop(timeout=20)
        return notifier

    with caplog.at_level(logging.INFO, logger=LOGGER):
        notifier = asyncio.run(scenario())
    assert len(receiver.requests) == 1
    assert (notifier.delivered, notifier.failed) == (0, 1)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "HTTP 404" in warning and "not retried" in warning
    shown = body.strip()
    assert shown[:200] in warning and shown[:210] not in warning
    assert_no_secret(caplog)


def test_unreachable_endpoint_is_retried_then_failed(
    refused_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> Notifier:
        notifier = Notifier(webhook_url=refused_url, webhook_backoff=0.01, webhook_retries=2)
        await notifier.start()
        notifier.notify(note())
        await notifier.stop(timeout=20)
        return notifier

    with caplog.at_level(logging.INFO, logger=LOGGER):
        notifier = asyncio.run(scenario())
    assert (notifier.delivered, notifier.failed) == (0, 1)
    assert caplog.text.count("retrying") == 2
    assert "ConnectionRefusedError" in caplog.text
    assert_no_secret(caplog)


def test_notify_returns_before_the_post_and_a_stuck_post_holds_up_nothing(
    receiver: Receiver,
) -> None:
    receiver.gate.clear()

    async def scenario() -> Notifier:
        notifier = Notifier(webhook_url=receiver.url, webhook_timeout=15)
        await notifier.start()
        try:
            notifier.notify(note(run_id=1))
            # notify() only queued: nothing can have reached the endpoint yet.
            assert receiver.requests == []
            assert await wait_until(lambda: len(receiver.requests) == 1)
            # The POST is in flight (its answer is held back) and this loop still runs, so the
            # POST is not blocking it.
            assert (notifier.delivered, notifier.failed) == (0, 0)
            # A second notification goes out while the first is stuck.
            notifier.notify(note(run_id=2))
            assert await wait_until(lambda: len(receiver.requests) == 2)
            assert (notifier.delivered, notifier.failed) == (0, 0)
        finally:
            receiver.gate.set()
        await notifier.stop(timeout=20)
        return notifier

    notifier = asyncio.run(scenario())
    assert sorted(receiver.run_ids()) == [1, 2]
    assert notifier.delivered == 2


def test_a_notification_being_retried_does_not_hold_up_the_queue(receiver: Receiver) -> None:
    # Run 1's endpoint "fails" for as long as the test lasts; runs 2-7 (more of them than there
    # are delivery slots) must get through meanwhile.
    receiver.reply_for = lambda body: (500, {}, "no") if body["run_id"] == 1 else OK

    async def scenario() -> Notifier:
        notifier = Notifier(
            webhook_url=receiver.url,
            webhook_retries=100_000,
            webhook_backoff=0.02,
            webhook_backoff_max=0.02,
        )
        await notifier.start()
        for run_id in range(1, 8):
            notifier.notify(note(run_id=run_id))
        assert await wait_until(lambda: notifier.delivered == 6)
        assert notifier.failed == 0
        # ... while run 1 is still being retried, not given up on.
        assert await wait_until(lambda: receiver.run_ids().count(1) >= 3)
        assert notifier.failed == 0
        await notifier.stop(timeout=0.1)
        return notifier

    notifier = asyncio.run(scenario())
    # Run 1, still being retried, is what stop() gave up on.
    assert (notifier.delivered, notifier.failed, notifier.dropped) == (6, 0, 1)


def test_notify_from_another_thread(receiver: Receiver) -> None:
    async def scenario() -> Notifier:
        notifier = Notifier(webhook_url=receiver.url)
        await notifier.start()
        await asyncio.to_thread(notifier.notify, note())
        await notifier.stop(timeout=20)
        return notifier

    notifier = asyncio.run(scenario())
    assert receiver.run_ids() == [12]
    assert notifier.delivered == 1


# --------------------------------------------------------------------------------------------
# Queue, start and stop
# --------------------------------------------------------------------------------------------


def test_stop_drains_the_queue(receiver: Receiver) -> None:
    async def scenario() -> Notifier:
        notifier = Notifier(webhook_url=receiver.url)
        # Queued before start() and delivered after it.
        for run_id in range(1, 21):
            notifier.notify(note(run_id=run_id))
        await notifier.start()
        await notifier.stop(timeout=20)
        return notifier

    notifier = asyncio.run(scenario())
    assert sorted(receiver.run_ids()) == list(range(1, 21))
    assert (notifier.delivered, notifier.dropped) == (20, 0)


def test_stop_gives_up_after_its_timeout_and_counts_what_it_dropped(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.gate.clear()

    async def scenario() -> Notifier:
        notifier = Notifier(webhook_url=receiver.url, webhook_concurrency=4, webhook_timeout=30)
        await notifier.start()
        try:
            for run_id in range(1, 7):
                notifier.notify(note(run_id=run_id))
            assert await wait_until(lambda: len(receiver.requests) == 4)
            # Nothing can be delivered while the gate is shut: stop() must give up, not hang.
            await notifier.stop(timeout=0.2)
            notifier.notify(note(run_id=99))
        finally:
            receiver.gate.set()
        return notifier

    with caplog.at_level(logging.INFO, logger=LOGGER):
        notifier = asyncio.run(scenario())
    assert (notifier.delivered, notifier.failed, notifier.dropped) == (0, 0, 7)
    assert "6 webhook notification(s) undelivered" in caplog.text
    assert "Notifier is stopped" in caplog.text


def test_a_full_queue_drops_the_oldest(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> Notifier:
        notifier = Notifier(webhook_url=receiver.url, queue_size=2)
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            for run_id in (1, 2, 3):
                notifier.notify(note(run_id=run_id))
        await notifier.start()
        await notifier.stop(timeout=20)
        return notifier

    notifier = asyncio.run(scenario())
    assert sorted(receiver.run_ids()) == [2, 3]
    assert (notifier.delivered, notifier.dropped) == (2, 1)
    assert "queue full" in caplog.text and "run 1" in caplog.text
    assert_no_secret(caplog)


# --------------------------------------------------------------------------------------------
# Filtering and sinks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("on_success", [False, True])
def test_success_is_sent_only_with_notify_on_success(receiver: Receiver, on_success: bool) -> None:
    seen: list[str] = []

    async def scenario() -> Notifier:
        notifier = Notifier(webhook_url=receiver.url, notify_on_success=on_success)
        notifier.add_sink(lambda notification: seen.append(notification.kind))
        await notifier.start()
        notifier.notify(note("success", run_id=1))
        notifier.notify(note("failure", run_id=2))
        notifier.notify(note("sla_breach", run_id=3))
        await notifier.stop(timeout=20)
        return notifier

    notifier = asyncio.run(scenario())
    expected = ["success", "failure", "sla_breach"] if on_success else ["failure", "sla_breach"]
    assert seen == expected
    assert sorted(request.body["kind"] for request in receiver.requests) == sorted(expected)
    assert notifier.wants("success") is on_success
    assert notifier.wants("failure") and notifier.wants("sla_breach")


def test_a_failing_sink_is_logged_and_the_others_still_run(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[int] = []

    def broken(notification: Notification) -> None:
        raise RuntimeError("sink is broken")

    async def scenario() -> Notifier:
        notifier = Notifier(webhook_url=receiver.url)
        notifier.add_sink(broken)
        notifier.add_sink(lambda notification: seen.append(notification.run_id))
        await notifier.start()
        notifier.notify(note())
        await notifier.stop(timeout=20)
        return notifier

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        notifier = asyncio.run(scenario())
    assert seen == [12]
    assert notifier.delivered == 1
    assert "sink" in caplog.text and "sink is broken" in caplog.text


def test_sinks_run_without_a_webhook() -> None:
    seen: list[Notification] = []
    notifier = Notifier()
    notifier.add_sink(seen.append)
    notifier.notify(note())
    assert seen == [note()]


# --------------------------------------------------------------------------------------------
# Jupyter events
# --------------------------------------------------------------------------------------------


def test_jupyter_event_sink_emits_the_payload_through_a_real_event_logger() -> None:
    event_logger = EventLogger()
    sink = jupyter_event_sink(event_logger)
    jupyter_event_sink(event_logger)  # registering twice for one logger is fine
    assert str(event_logger.schemas.get(RUN_NOTIFICATION_SCHEMA_ID).version) == "1"
    heard: list[tuple[str, dict[str, Any]]] = []

    async def listener(logger: EventLogger, schema_id: str, data: dict[str, Any]) -> None:
        heard.append((schema_id, data))

    event_logger.add_listener(schema_id=RUN_NOTIFICATION_SCHEMA_ID, listener=listener)
    notifications = [
        note("failure", run_id=1),
        note("sla_breach", run_id=2, reason="SLA of 600 s passed"),
        note("success", run_id=3, schedule_id=None, schedule_name=None),
    ]

    async def scenario() -> None:
        notifier = Notifier(notify_on_success=True)
        notifier.add_sink(sink)
        for notification in notifications:
            notifier.notify(notification)
        await event_logger.gather_listeners()

    asyncio.run(scenario())
    assert heard == [
        (RUN_NOTIFICATION_SCHEMA_ID, notification.payload()) for notification in notifications
    ]


def test_the_schema_is_strict_enough_to_catch_a_drifting_payload() -> None:
    event_logger = EventLogger()
    jupyter_event_sink(event_logger)
    good = note().payload()
    event_logger.schemas.validate_event(RUN_NOTIFICATION_SCHEMA_ID, good)
    for bad in (
        {**good, "kind": "error"},
        {**good, "run_id": "12"},
        {**good, "extra": 1},
        {key: value for key, value in good.items() if key != "reason"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            event_logger.schemas.validate_event(RUN_NOTIFICATION_SCHEMA_ID, bad)


def test_the_schema_file_ships_inside_the_package() -> None:
    packaged = importlib.resources.files("mage_nb_sched.scheduling").joinpath(
        "event_schemas/run_notification.yaml"
    )
    assert packaged.is_file()
    assert RUN_NOTIFICATION_SCHEMA_PATH.read_text(encoding="utf-8") == packaged.read_text(
        encoding="utf-8"
    )
