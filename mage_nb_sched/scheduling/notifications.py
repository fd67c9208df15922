"""Tell people about runs that need attention: failures, missed SLAs and (optionally) successes.

The scheduler builds a :class:`Notification` and calls :meth:`Notifier.notify` from its event loop.
``notify`` never blocks and never raises: it calls the registered sinks (e.g. the Jupyter server's
event bus, see :func:`jupyter_event_sink`) synchronously and queues the webhook POST for a few
background tasks. Those POST with ``urllib`` in a worker thread, so a slow or dead endpoint costs
the loop nothing, and retry 429, 5xx and network errors with exponential backoff.

Webhook URLs carry secrets (Slack's token is the last path segment, others put it in the query),
so URLs are only ever logged through :func:`redact_url`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import math
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from traitlets import Bool, Float, Int, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from mage_nb_sched.core.errors import ValidationError
from mage_nb_sched.core.version import __version__

__all__ = [
    "NOTIFICATION_KINDS",
    "RUN_NOTIFICATION_SCHEMA_ID",
    "RUN_NOTIFICATION_SCHEMA_PATH",
    "Notification",
    "Notifier",
    "Sink",
    "jupyter_event_sink",
    "redact_url",
]

log = logging.getLogger(__name__)

#: The kinds of notification, in the order of :attr:`Notification.kind`'s documentation.
NOTIFICATION_KINDS = ("failure", "sla_breach", "success")

#: ``$id`` of ``event_schemas/run_notification.yaml``; the schema of every emitted event.
RUN_NOTIFICATION_SCHEMA_ID = "https://events.mage-nb-sched.dev/run_notification/v1"

#: The schema file, shipped inside the package (and so inside the wheel).
RUN_NOTIFICATION_SCHEMA_PATH = Path(__file__).parent / "event_schemas" / "run_notification.yaml"

# emoji and verb of each kind, for Notification.text().
_KIND_TEXT = {
    "failure": (":x:", "failed"),
    "sla_breach": (":warning:", "missed its SLA"),
    "success": (":white_check_mark:", "completed"),
}

# Slack truncates long messages anyway, and a full traceback in a channel helps nobody: the text
# gets the start of the reason, the payload's ``reason`` field keeps all of it.
_TEXT_REASON_LIMIT = 500

# How much of a refusing endpoint's answer goes into the log.
_LOGGED_BODY_LIMIT = 200


# --------------------------------------------------------------------------------------------
# The notification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    """Something a person should hear about one pipeline run.

    ``kind`` is one of :data:`NOTIFICATION_KINDS`: ``"failure"``, ``"sla_breach"`` or
    ``"success"``. ``execution_date`` must be time zone aware; it is stored in UTC. ``status`` is
    the run's status when the notification was made and ``reason`` says why, e.g.
    ``"block load_data failed: ZeroDivisionError"`` or ``"SLA of 600 s passed at ..."``.
    """

    kind: str
    run_id: int
    pipeline_uuid: str
    schedule_id: int | None
    schedule_name: str | None
    execution_date: datetime
    status: str
    reason: str | None = None

    def __post_init__(self) -> None:
        # Checked here, where the notification is made, rather than when a webhook or the event
        # schema rejects it later on a background task where nobody sees the traceback.
        if self.kind not in NOTIFICATION_KINDS:
            raise ValidationError(
                "kind",
                self.kind,
                "is not a kind of notification",
                "Use one of " + ", ".join(repr(kind) for kind in NOTIFICATION_KINDS) + ".",
            )
        if self.execution_date.tzinfo is None or self.execution_date.utcoffset() is None:
            raise ValidationError(
                "execution_date",
                self.execution_date,
                "is naive, so the instant it names is ambiguous",
                "Pass an aware datetime, e.g. datetime(2024, 1, 15, tzinfo=timezone.utc).",
            )
        # Frozen: normalise through object.__setattr__ so equal instants compare (and print) equal.
        object.__setattr__(self, "execution_date", self.execution_date.astimezone(timezone.utc))

    def text(self) -> str:
        """One Slack-compatible line (mrkdwn, ``&``, ``<`` and ``>`` escaped), for example
        ``:x: daily_sales run 12 (schedule 'nightly', 2024-01-15T00:00:00+00:00) failed: ...``.
        """
        emoji, verb = _KIND_TEXT[self.kind]
        where: list[str] = []
        if self.schedule_name is not None:
            where.append(f"schedule '{_slack(self.schedule_name)}'")
        elif self.schedule_id is not None:
            where.append(f"schedule {self.schedule_id}")
        where.append(self.execution_date.isoformat())
        line = f"{emoji} {_slack(self.pipeline_uuid)} run {self.run_id} ({', '.join(where)}) {verb}"
        if self.kind == "sla_breach":
            # An SLA breach is about a run that is usually still going: say where it is.
            line += f" (status: {_slack(self.status)})"
        if self.reason:
            reason = " ".join(self.reason.split())
            if len(reason) > _TEXT_REASON_LIMIT:
                reason = reason[: _TEXT_REASON_LIMIT - 1] + "…"
            line += f": {_slack(reason)}"
        return line

    def payload(self) -> dict[str, Any]:
        """The JSON body POSTed to the webhook and emitted as a Jupyter event.

        Slack-like endpoints read ``text``; everything else gets the fields. The shape is
        ``event_schemas/run_notification.yaml``.
        """
        return {
            "text": self.text(),
            "kind": self.kind,
            "run_id": self.run_id,
            "pipeline_uuid": self.pipeline_uuid,
            "schedule_id": self.schedule_id,
            "schedule_name": self.schedule_name,
            "execution_date": self.execution_date.isoformat(),
            "status": self.status,
            "reason": self.reason,
        }


def _slack(value: str) -> str:
    """``value`` on one line with Slack's three control characters escaped.

    Slack reads ``<...>`` as a link or mention, so an error such as ``<class 'KeyError'>`` would
    otherwise vanish from the message (https://api.slack.com/reference/surfaces/formatting).
    """
    flat = " ".join(value.split())
    return flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


#: Called synchronously with every notification that is sent.
Sink = Callable[[Notification], None]


def redact_url(url: str) -> str:
    """``url`` as it may appear in a log line or an error message: no secrets.

    Userinfo is dropped, a query becomes ``?…`` and so does a fragment (``#…``); of the path only
    the first segment is kept, and only when more follow, because Slack, Discord and Teams put
    their token in the *last* segment: ``https://hooks.slack.com/services/T0/B0/XyZ`` is shown as
    ``https://hooks.slack.com/services/…``. Never raises.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is not None:
        host += f":{port}"
    shown = f"{parts.scheme}://{host}" if parts.scheme else host
    segments = [segment for segment in parts.path.split("/") if segment]
    if len(segments) > 1:
        shown += f"/{segments[0]}/…"
    elif segments:
        shown += "/…"
    if parts.query:
        shown += "?…"
    if parts.fragment:
        shown += "#…"
    return shown


# --------------------------------------------------------------------------------------------
# Webhook delivery (runs in a worker thread)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Attempt:
    """The outcome of one POST."""

    ok: bool
    retryable: bool
    status: int | None = None
    retry_after: float | None = None
    detail: str = ""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # urllib turns a redirected POST into a GET without the body (301-303): the notification
    # would be "delivered" nowhere. A redirect is a misconfigured URL; report it instead.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)
_HEADERS = {
    "Content-Type": "application/json",
    "User-Agent": f"mage-nb-sched/{__version__}",
}


def _post(url: str, body: bytes, timeout: float) -> _Attempt:
    """POST ``body`` to ``url`` once. Blocking: call it in a thread."""
    request = urllib.request.Request(url, data=body, headers=_HEADERS, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            # urllib raises HTTPError for anything but 2xx, so this is a delivery.
            return _Attempt(ok=True, retryable=False, status=response.status)
    except urllib.error.HTTPError as err:
        with err:
            try:
                text = err.read(4 * _LOGGED_BODY_LIMIT).decode("utf-8", "replace")
            except (OSError, http.client.HTTPException):
                text = ""
            text = " ".join(text.split())[:_LOGGED_BODY_LIMIT]
            status = err.code
            retryable = status == 429 or 500 <= status <= 599
            return _Attempt(
                ok=False,
                retryable=retryable,
                status=status,
                retry_after=_retry_after(err.headers.get("Retry-After")) if retryable else None,
                detail=f"HTTP {status}: {text!r}",
            )
    except ValueError as err:
        # A URL urllib cannot use despite the validation. Its message quotes the whole URL.
        return _Attempt(ok=False, retryable=False, detail=f"{type(err).__name__}: unusable URL")
    except (OSError, http.client.HTTPException) as err:
        # Refused, reset, DNS, timeout (TimeoutError is an OSError), a garbled answer: all may
        # pass, so all are retried. URLError wraps the socket error; show that, not the URL.
        cause = err.reason if isinstance(err, urllib.error.URLError) else err
        return _Attempt(ok=False, retryable=True, detail=f"{type(cause).__name__}: {cause}")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a numeric ``Retry-After`` header; ``None`` for absent, dates and garbage."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


# --------------------------------------------------------------------------------------------
# The notifier
# --------------------------------------------------------------------------------------------


class Notifier(LoggingConfigurable):
    """Sends :class:`Notification` objects to sinks and, if configured, to a webhook.

    ``notify`` is cheap and safe to call from the event loop: sinks run synchronously, the POST is
    queued. Between :meth:`start` and :meth:`stop`, ``webhook_concurrency`` background tasks
    deliver the queue, so one notification that is being retried delays the others by nothing.
    Notifications made before :meth:`start` wait in the queue; after :meth:`stop` they are
    dropped (with a warning).
    """

    webhook_url = Unicode(
        None,
        allow_none=True,
        help="URL to POST every notification to as JSON (Slack incoming webhooks, Mattermost, "
        "Teams workflows or any endpoint reading the 'text' field), e.g. "
        "'https://hooks.slack.com/services/T000/B000/XXXX'. http(s) only; None or '' disables "
        "webhooks. It is a secret: logs show it redacted.",
    ).tag(config=True)
    notify_on_success = Bool(
        False, help="Also notify when a run completes (failures and SLA breaches always notify)."
    ).tag(config=True)
    webhook_retries = Int(
        5,
        help="Attempts after the first when the webhook answers 429 or 5xx, or cannot be "
        "reached. Other answers (e.g. 404) are not retried.",
    ).tag(config=True)
    webhook_backoff = Float(
        1.0,
        help="Seconds before the first retry; doubled each retry, capped at "
        "webhook_backoff_max. A numeric Retry-After header replaces it (also capped).",
    ).tag(config=True)
    webhook_backoff_max = Float(
        60.0, help="Longest wait between two attempts, in seconds (also caps Retry-After)."
    ).tag(config=True)
    webhook_timeout = Float(
        10.0, help="Seconds one POST may take (connect and answer) before it counts as failed."
    ).tag(config=True)
    webhook_concurrency = Int(
        4,
        help="POSTs in flight at once. More than one, so a notification waiting for its next "
        "retry does not hold up the ones queued behind it.",
    ).tag(config=True)
    queue_size = Int(
        1000,
        help="Notifications waiting for the webhook at most. When full, the oldest is dropped "
        "with a warning: notify() never blocks its caller.",
    ).tag(config=True)

    @default("log")
    def _log_default(self) -> Any:
        # The Jupyter extension passes itself as parent: log where the server logs. Alone, log to
        # this module's logger (not traitlets' default, which does not propagate to the root).
        if isinstance(self.parent, LoggingConfigurable):
            return self.parent.log
        return log

    @validate("webhook_url")
    def _valid_webhook_url(self, proposal: Any) -> str | None:
        value = proposal["value"]
        if value is None or value == "":
            return None
        problem = ""
        if any(ch.isspace() or ord(ch) < 32 for ch in value):
            problem = "contains whitespace or control characters"
        else:
            try:
                parts = urlsplit(value)
                parts.port  # noqa: B018 - raises ValueError for a bad port
            except ValueError as err:
                problem = f"cannot be parsed ({err})"
            else:
                if parts.scheme.lower() not in ("http", "https"):
                    problem = f"has scheme {parts.scheme or 'none'!r}; only http and https POST"
                elif not parts.hostname:
                    problem = "has no host"
        if problem:
            raise TraitError(
                f"Notifier.webhook_url={redact_url(value)!r} {problem}. Set an http(s) URL, e.g. "
                "c.Notifier.webhook_url = 'https://hooks.slack.com/services/T000/B000/XXXX', "
                "or None to send no webhooks."
            )
        return str(value)

    @validate("webhook_retries")
    def _not_negative_int(self, proposal: Any) -> int:
        if proposal["value"] < 0:
            raise TraitError(
                f"Notifier.webhook_retries must be >= 0 (0: no retries), got {proposal['value']}"
            )
        return int(proposal["value"])

    @validate("webhook_concurrency", "queue_size")
    def _at_least_one(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise TraitError(
                f"Notifier.{proposal['trait'].name} must be >= 1, got {proposal['value']}"
            )
        return int(proposal["value"])

    @validate("webhook_backoff", "webhook_backoff_max")
    def _not_negative_seconds(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not (value >= 0 and math.isfinite(value)):  # also refuses NaN
            raise TraitError(
                f"Notifier.{proposal['trait'].name} must be a number of seconds >= 0, e.g. 1.0; "
                f"got {proposal['value']}"
            )
        return value

    @validate("webhook_timeout")
    def _positive_seconds(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not (value > 0 and math.isfinite(value)):
            raise TraitError(
                f"Notifier.webhook_timeout must be a number of seconds > 0, e.g. 10.0; "
                f"got {proposal['value']}"
            )
        return value

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sinks: list[Sink] = []
        self._pending: deque[Notification] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: list[asyncio.Task[None]] = []
        # Both made in start(): an asyncio.Event belongs to the loop it is first awaited on.
        self._wakeup: asyncio.Event | None = None  # set while something is pending
        self._idle: asyncio.Event | None = None  # set while nothing is pending or in flight
        self._in_flight = 0
        self._stopped = False
        self._delivered = 0
        self._failed = 0
        self._dropped = 0

    # -- counters ---------------------------------------------------------------------------

    @property
    def delivered(self) -> int:
        """Notifications the webhook accepted (answered 2xx)."""
        return self._delivered

    @property
    def failed(self) -> int:
        """Notifications the webhook refused, or that failed every attempt."""
        return self._failed

    @property
    def dropped(self) -> int:
        """Notifications never attempted to the end: pushed out of a full queue, or still queued
        or in flight when :meth:`stop` gave up."""
        return self._dropped

    # -- sending ----------------------------------------------------------------------------

    def add_sink(self, sink: Sink) -> None:
        """Call ``sink(notification)`` synchronously for every notification that is sent.

        Sinks run on the caller's thread inside :meth:`notify`, so they must be quick (e.g. a
        Jupyter event emitter). An exception in a sink is logged, never raised.
        """
        self._sinks.append(sink)

    def wants(self, kind: str) -> bool:
        """Whether notifications of ``kind`` are sent: all but ``"success"``, which needs
        :attr:`notify_on_success`."""
        return kind != "success" or bool(self.notify_on_success)

    def notify(self, notification: Notification) -> None:
        """Send ``notification`` to the sinks and queue it for the webhook.

        Non-blocking and never raises: a notification that cannot be sent is logged, because
        failing the caller (the scheduler's loop) would turn a lost message into a lost run.
        """
        try:
            if not self.wants(notification.kind):
                return
            for sink in list(self._sinks):
                try:
                    sink(notification)
                except Exception:
                    self.log.exception(
                        "Notification sink %r failed for run %s", sink, notification.run_id
                    )
            if self.webhook_url is None:
                return
            loop = self._loop
            if loop is None or _running_loop() is loop:
                self._enqueue(notification)
            else:
                # From another thread: the queue and its events belong to the loop's thread.
                loop.call_soon_threadsafe(self._enqueue, notification)
        except Exception:
            self.log.exception("Could not send the notification for run %s", notification.run_id)

    def _enqueue(self, notification: Notification) -> None:
        if self._stopped:
            self._dropped += 1
            self.log.warning(
                "Notifier is stopped: webhook notification for run %s dropped",
                notification.run_id,
            )
            return
        if len(self._pending) >= self.queue_size:
            oldest = self._pending.popleft()
            self._dropped += 1
            self.log.warning(
                "Webhook queue full (Notifier.queue_size=%d): dropped the notification for "
                "run %s; is %s reachable?",
                self.queue_size,
                oldest.run_id,
                redact_url(self.webhook_url or ""),
            )
        self._pending.append(notification)
        if self._idle is not None and self._wakeup is not None:
            self._idle.clear()
            self._wakeup.set()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start delivering the webhook queue from the running event loop. Idempotent."""
        if self._workers:
            return
        self._loop = asyncio.get_running_loop()
        self._stopped = False
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        if self._pending:
            self._wakeup.set()
        else:
            self._idle.set()
        self._workers = [
            asyncio.ensure_future(self._work()) for _ in range(self.webhook_concurrency)
        ]

    async def stop(self, timeout: float = 2.0) -> None:
        """Deliver what is queued for at most ``timeout`` seconds, then cancel the rest.

        What is neither delivered nor failed by then is counted in :attr:`dropped` and logged.
        A POST already on its way finishes in its thread (within ``webhook_timeout``), unseen.
        """
        self._stopped = True
        workers, self._workers = self._workers, []
        if workers and self._idle is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout)
        lost = len(self._pending) + self._in_flight
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._pending.clear()
        self._in_flight = 0
        self._loop = None
        if lost:
            self._dropped += lost
            self.log.warning(
                "Notifier stopped with %d webhook notification(s) undelivered after %.1f s; "
                "they were dropped",
                lost,
                timeout,
            )

    async def _work(self) -> None:
        """One delivery slot: take the oldest pending notification, deliver it, repeat."""
        assert self._wakeup is not None and self._idle is not None
        wakeup, idle = self._wakeup, self._idle
        while True:
            while not self._pending:
                wakeup.clear()
                await wakeup.wait()
            notification = self._pending.popleft()
            self._in_flight += 1
            try:
                await self._deliver(notification)
            except Exception:
                # A bug here must not silently shrink the pool of delivery slots.
                self._failed += 1
                self.log.exception("Webhook delivery for run %s crashed", notification.run_id)
            finally:
                self._in_flight -= 1
                if not self._pending and self._in_flight == 0:
                    idle.set()

    async def _deliver(self, notification: Notification) -> None:
        url = self.webhook_url
        if url is None:  # unset since it was queued
            return
        body = json.dumps(notification.payload()).encode("utf-8")
        attempts = self.webhook_retries + 1
        for attempt in range(attempts):
            # urllib blocks: in a thread, so the loop (the Jupyter server's) keeps serving.
            result = await asyncio.to_thread(_post, url, body, self.webhook_timeout)
            if result.ok:
                self._delivered += 1
                self.log.debug(
                    "Webhook %s accepted the %s notification for run %s",
                    redact_url(url),
                    notification.kind,
                    notification.run_id,
                )
                return
            if not result.retryable:
                self._failed += 1
                self.log.warning(
                    "Webhook %s refused the %s notification for run %s (%s); not retried: "
                    "check Notifier.webhook_url",
                    redact_url(url),
                    notification.kind,
                    notification.run_id,
                    result.detail,
                )
                return
            if attempt + 1 < attempts:
                delay = self._retry_delay(attempt, result.retry_after)
                self.log.info(
                    "Webhook %s: attempt %d of %d for run %s failed (%s); retrying in %.2f s",
                    redact_url(url),
                    attempt + 1,
                    attempts,
                    notification.run_id,
                    result.detail,
                    delay,
                )
                await asyncio.sleep(delay)
        self._failed += 1
        self.log.warning(
            "Webhook %s: gave up on the %s notification for run %s after %d attempt(s) (%s)",
            redact_url(url),
            notification.kind,
            notification.run_id,
            attempts,
            result.detail,
        )

    def _retry_delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0 for the first)."""
        cap = float(self.webhook_backoff_max)
        if retry_after is not None:
            return min(retry_after, cap)
        # The exponent is bounded so that a huge webhook_retries cannot overflow a float.
        return min(float(self.webhook_backoff) * 2.0 ** min(attempt, 62), cap)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# --------------------------------------------------------------------------------------------
# Jupyter events
# --------------------------------------------------------------------------------------------


def jupyter_event_sink(event_logger: Any) -> Sink:
    """A sink emitting every notification on ``event_logger`` (a ``jupyter_events.EventLogger``,
    e.g. the server's ``serverapp.event_logger``) under :data:`RUN_NOTIFICATION_SCHEMA_ID`.

    Registers ``event_schemas/run_notification.yaml`` with the logger unless it already has it,
    so calling this twice for one logger is fine. The emitted data is
    :meth:`Notification.payload`; the logger validates it against the schema.
    """
    if RUN_NOTIFICATION_SCHEMA_ID not in event_logger.schemas:
        # A Path, not a str: jupyter_events parses a str as the YAML document itself.
        event_logger.register_event_schema(RUN_NOTIFICATION_SCHEMA_PATH)

    def emit(notification: Notification) -> None:
        event_logger.emit(schema_id=RUN_NOTIFICATION_SCHEMA_ID, data=notification.payload())

    return emit
