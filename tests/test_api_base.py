"""What every REST handler shares: error translation, bounded arguments, the body limit, the
per-token rate limiter, and the test client's OpenAPI check itself."""

from __future__ import annotations

from typing import Any

import pytest
from server_fixtures import *  # noqa: F403
from server_fixtures import Api, Reply
from tornado import web

from mage_nb_sched.core.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    StoreError,
    ValidationError,
)
from mage_nb_sched.core.run_states import InvalidTransition
from mage_nb_sched.handlers import limits
from mage_nb_sched.handlers.base import MAX_BODY_BYTES, error_body, parse_int, status_of

# -- error translation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (
            ValidationError("sla", -1, "must not be negative", "Give e.g. sla=3600."),
            400,
            "validation_error",
        ),
        (ConflictError("name", "x", "already exists", "Pick another name."), 409, "conflict"),
        (
            InvalidTransition("pipeline run", "completed", "running", ["initial"]),
            409,
            "invalid_transition",
        ),
        (NotFoundError("no schedule 7"), 404, "not_found"),
        (ForbiddenError("wrong token"), 403, "forbidden"),
        (PayloadTooLargeError("too big"), 413, "payload_too_large"),
        (RateLimitError("slow down", retry_after=2.0), 429, "rate_limited"),
        (StoreError("database is locked"), 503, "store_unavailable"),
        (web.HTTPError(405), 405, "method_not_allowed"),
        (KeyError("boom"), 500, "internal_error"),
    ],
)
def test_each_exception_has_its_status_and_type(error: Exception, status: int, kind: str) -> None:
    assert status_of(error) == status
    body = error_body(error, status)["error"]
    assert body["type"] == kind
    assert set(body) == {"type", "message", "field", "fix"}
    assert body["message"]


def test_a_validation_error_names_the_field_and_the_fix() -> None:
    body = error_body(
        ValidationError("settings.timeout", 10**12, "too large", "At most a year."), 400
    )
    assert body["error"]["field"] == "settings.timeout"
    assert body["error"]["fix"] == "At most a year."


def test_an_unexpected_error_does_not_leak_its_text() -> None:
    body = error_body(RuntimeError("secret-token-value"), 500)
    assert "secret-token-value" not in str(body)


@pytest.mark.parametrize("value", ["-1", "abc", "1e3", "", True, 2**64, "9" * 30])
def test_bad_integers_are_a_validation_error_naming_the_field(value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_int(value, "limit", minimum=0, maximum=2**63 - 1)
    assert caught.value.field == "limit"


def test_good_integers_parse() -> None:
    assert parse_int("42", "id") == 42
    assert parse_int(7, "id") == 7


# -- rate limiter -------------------------------------------------------------------------------


def test_the_limiter_allows_a_burst_then_says_when_to_retry() -> None:
    limiter = limits.RateLimiter(rate=10, burst=3)
    for _ in range(3):
        limiter.check("k", now=100.0)
    with pytest.raises(RateLimitError) as caught:
        limiter.check("k", now=100.0)
    assert caught.value.retry_after == pytest.approx(0.1)
    limiter.check("other", now=100.0)  # another token has its own bucket
    limiter.check("k", now=100.1)  # refilled one call after 1/rate seconds
    with pytest.raises(RateLimitError):
        limiter.check("k", now=100.1)


def test_a_rate_of_zero_turns_the_limit_off() -> None:
    limiter = limits.RateLimiter(rate=0)
    for _ in range(1000):
        limiter.check("k", now=1.0)


def test_the_limiter_keeps_a_bounded_number_of_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_KEYS", 5)
    limiter = limits.RateLimiter(rate=1, burst=1)
    for index in range(20):
        limiter.check(f"k{index}", now=1.0)
    assert len(limiter._buckets) == 5


# -- on a real server ---------------------------------------------------------------------------


def test_a_body_over_one_mebibyte_is_refused_with_413(api: Api, on_server_loop: Any) -> None:
    reply = on_server_loop(
        api.post("openapi.json", raw_body=b" " * (MAX_BODY_BYTES + 1), validate=False)
    )
    assert reply.status == 413
    assert reply.error["type"] == "payload_too_large"


def test_tornado_errors_are_json_errors_too(api: Api, on_server_loop: Any) -> None:
    reply = on_server_loop(api.post("openapi.json", {"x": 1}, validate=False))
    assert reply.status == 405
    assert reply.error["type"] == "method_not_allowed"


def test_the_client_fails_an_answer_the_document_does_not_describe(
    api: Api, on_server_loop: Any
) -> None:
    reply = on_server_loop(api.get("openapi.json", auth=False))
    undescribed = Reply(418, {"Content-Type": "application/json"}, b'{"teapot": true}')
    with pytest.raises(AssertionError, match="does not match the OpenAPI document"):
        api.check("GET", api.url("openapi.json"), {}, None, undescribed)
    assert reply.status == 200


@pytest.mark.parametrize("depth", [100, 5000])
def test_a_body_nested_too_deeply_is_a_400_not_a_crash(
    api: Api, on_server_loop: Any, depth: int
) -> None:
    nested = "[" * depth + "]" * depth
    raw = ('{"pipeline_schedule": {"name": "x", "variables": {"v": ' + nested + "}}}").encode()
    reply = on_server_loop(api.post("pipeline_schedules", raw_body=raw))
    assert reply.status == 400, reply.text
    assert reply.error["field"] == "body"
    assert "nested" in reply.error["message"]
