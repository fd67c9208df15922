"""EventBridge event patterns and the seed's shorthand (pure: no store, no server)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mage_nb_sched.core.errors import ValidationError
from mage_nb_sched.core.event_patterns import (
    event_types,
    matches,
    path_matches,
    shorthand_matches,
    validate_pattern,
    validate_shorthand,
)

#: An EventBridge envelope of S3's "Object Created" (the shape AWS documents).
ENVELOPE: dict[str, Any] = {
    "version": "0",
    "id": "17793124-05d4-b198-2fde-7ededc63b103",
    "detail-type": "Object Created",
    "source": "aws.s3",
    "account": "111122223333",
    "time": "2024-01-15T09:30:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:s3:::my-data-bucket"],
    "detail": {
        "version": "0",
        "bucket": {"name": "my-data-bucket"},
        "object": {"key": "uploads/orders.csv", "size": 1024, "etag": None},
        "request-id": "N4N7GDK58NMKJ12R",
        "requester": "123456789012",
        "source-ip-address": "10.0.0.7",
        "reason": "PutObject",
        "tags": ["daily", "orders"],
        "versioned": False,
        "eventVersion": "",
    },
}

#: One record of S3's event notification (what S3 sends to SNS / SQS / Lambda / a webhook).
S3_RECORD: dict[str, Any] = {
    "eventVersion": "2.1",
    "eventSource": "aws:s3",
    "awsRegion": "us-east-1",
    "eventTime": "2024-01-15T09:30:00.000Z",
    "eventName": "ObjectCreated:Put",
    "s3": {
        "s3SchemaVersion": "1.0",
        "bucket": {"name": "my-data-bucket", "arn": "arn:aws:s3:::my-data-bucket"},
        "object": {"key": "uploads/orders.csv", "size": 1024, "sequencer": "0055AED6DCD90281E5"},
    },
}


def detail(**fields: Any) -> dict[str, Any]:
    """A pattern on the envelope's detail."""
    return {"detail": fields}


# --------------------------------------------------------------------------------------------
# Operators, one by one: a case that matches and one that does not
# --------------------------------------------------------------------------------------------

CASES: list[tuple[str, dict[str, Any], bool]] = [
    # exact values
    ("exact string", {"source": ["aws.s3"]}, True),
    ("exact string is case-sensitive", {"source": ["AWS.S3"]}, False),
    ("one of several (OR)", {"source": ["aws.ec2", "aws.s3"]}, True),
    ("none of several", {"source": ["aws.ec2", "aws.sqs"]}, False),
    ("every field must match (AND)", {"source": ["aws.s3"], "region": ["eu-west-1"]}, False),
    ("nested object", detail(bucket={"name": ["my-data-bucket"]}), True),
    ("nested object, other value", detail(bucket={"name": ["other-bucket"]}), False),
    ("exact number", detail(object={"size": [1024]}), True),
    ("exact number equals its float", detail(object={"size": [1024.0]}), True),
    ("exact number, other value", detail(object={"size": [1023]}), False),
    ("a number is not its string", detail(object={"size": ["1024"]}), False),
    ("exact boolean", detail(versioned=[False]), True),
    ("false is not 0", detail(versioned=[0]), False),
    ("null", detail(object={"etag": [None]}), True),
    ("null is not the empty string", detail(object={"etag": [""]}), False),
    ("empty string", detail(eventVersion=[""]), True),
    ("the empty string is not null", detail(eventVersion=[None]), False),
    ("inside an array in the event", {"resources": ["arn:aws:s3:::my-data-bucket"]}, True),
    ("not inside the array", {"resources": ["arn:aws:s3:::other"]}, False),
    ("an array element", detail(tags=["orders"]), True),
    ("no array element", detail(tags=["weekly"]), False),
    # prefix / suffix
    ("prefix", detail(object={"key": [{"prefix": "uploads/"}]}), True),
    ("prefix, no", detail(object={"key": [{"prefix": "archive/"}]}), False),
    ("prefix is case-sensitive", detail(object={"key": [{"prefix": "Uploads/"}]}), False),
    (
        "prefix ignoring case",
        detail(object={"key": [{"prefix": {"equals-ignore-case": "UPLOADS/"}}]}),
        True,
    ),
    (
        "prefix ignoring case, no",
        detail(object={"key": [{"prefix": {"equals-ignore-case": "ARCHIVE/"}}]}),
        False,
    ),
    ("prefix on a number", detail(object={"size": [{"prefix": "10"}]}), False),
    ("suffix", detail(object={"key": [{"suffix": ".csv"}]}), True),
    ("suffix, no", detail(object={"key": [{"suffix": ".png"}]}), False),
    (
        "suffix ignoring case",
        detail(object={"key": [{"suffix": {"equals-ignore-case": ".CSV"}}]}),
        True,
    ),
    # wildcard
    ("wildcard", detail(object={"key": [{"wildcard": "uploads/*.csv"}]}), True),
    ("wildcard, no", detail(object={"key": [{"wildcard": "uploads/*.png"}]}), False),
    ("wildcard is anchored", detail(object={"key": [{"wildcard": "orders*"}]}), False),
    ("wildcard with an escaped star", detail(object={"key": [{"wildcard": "uploads\\*"}]}), False),
    # equals-ignore-case
    ("equals-ignore-case", {"detail-type": [{"equals-ignore-case": "object CREATED"}]}, True),
    ("equals-ignore-case, no", {"detail-type": [{"equals-ignore-case": "object deleted"}]}, False),
    # anything-but
    ("anything-but a string", {"source": [{"anything-but": "aws.ec2"}]}, True),
    ("anything-but that string", {"source": [{"anything-but": "aws.s3"}]}, False),
    ("anything-but a list", {"source": [{"anything-but": ["aws.ec2", "aws.sqs"]}]}, True),
    ("anything-but a list with it", {"source": [{"anything-but": ["aws.ec2", "aws.s3"]}]}, False),
    ("anything-but a number", detail(object={"size": [{"anything-but": 0}]}), True),
    ("anything-but that number", detail(object={"size": [{"anything-but": [1024, 0]}]}), False),
    ("anything-but a prefix", detail(object={"key": [{"anything-but": {"prefix": "tmp/"}}]}), True),
    (
        "anything-but that prefix",
        detail(object={"key": [{"anything-but": {"prefix": "uploads/"}}]}),
        False,
    ),
    ("anything-but a suffix", detail(object={"key": [{"anything-but": {"suffix": ".tmp"}}]}), True),
    (
        "anything-but ignoring case",
        {"detail-type": [{"anything-but": {"equals-ignore-case": ["OBJECT CREATED"]}}]},
        False,
    ),
    (
        "anything-but a wildcard",
        detail(object={"key": [{"anything-but": {"wildcard": "*/lib/*"}}]}),
        True,
    ),
    ("anything-but needs the field", detail(missing=[{"anything-but": "x"}]), False),
    ("anything-but on an array: one other element", detail(tags=[{"anything-but": "daily"}]), True),
    # numeric
    ("numeric range", detail(object={"size": [{"numeric": [">", 0, "<=", 1024]}]}), True),
    ("numeric range, out", detail(object={"size": [{"numeric": [">", 0, "<", 1024]}]}), False),
    ("numeric =", detail(object={"size": [{"numeric": ["=", 1024]}]}), True),
    ("numeric >=", detail(object={"size": [{"numeric": [">=", 1025]}]}), False),
    ("numeric on a string", detail(object={"key": [{"numeric": [">", 0]}]}), False),
    # exists
    ("exists", detail(object={"key": [{"exists": True}]}), True),
    ("exists, absent", detail(object={"md5": [{"exists": True}]}), False),
    ("does not exist", detail(object={"md5": [{"exists": False}]}), True),
    ("does not exist, present", detail(object={"key": [{"exists": False}]}), False),
    ("exists on null", detail(object={"etag": [{"exists": True}]}), True),
    ("exists is for leaves: an object is not one", detail(bucket=[{"exists": True}]), False),
    ("a missing parent: the leaf does not exist", {"nothing": {"here": [{"exists": False}]}}, True),
    # cidr
    ("cidr", detail(**{"source-ip-address": [{"cidr": "10.0.0.0/24"}]}), True),
    ("cidr, other network", detail(**{"source-ip-address": [{"cidr": "192.168.0.0/16"}]}), False),
    # $or
    ("$or: one matches", {"$or": [{"source": ["aws.ec2"]}, {"region": ["us-east-1"]}]}, True),
    ("$or: none matches", {"$or": [{"source": ["aws.ec2"]}, {"region": ["eu-west-1"]}]}, False),
    (
        "$or nested, with AND beside it",
        {
            "source": ["aws.s3"],
            "detail": {"$or": [{"reason": ["CopyObject"]}, {"tags": ["daily"]}]},
        },
        True,
    ),
    (
        "$or nested, AND fails",
        {"source": ["aws.ec2"], "detail": {"$or": [{"reason": ["PutObject"]}]}},
        False,
    ),
    # alternatives of several kinds in one list
    ("an exact value or an operator", {"source": ["aws.ec2", {"prefix": "aws."}]}, True),
]


@pytest.mark.parametrize(("pattern", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_operator_matches_and_does_not(pattern: dict[str, Any], expected: bool) -> None:
    validate_pattern(pattern)  # every case is a valid pattern
    assert matches(pattern, ENVELOPE) is expected


def test_an_array_of_objects_matches_element_by_element() -> None:
    event = {"items": [{"kind": "a", "size": 1}, {"kind": "b", "size": 5}]}
    assert matches({"items": {"kind": ["b"], "size": [5]}}, event)
    # Fields of one element are matched together: no element is kind a with size 5.
    assert not matches({"items": {"kind": ["a"], "size": [5]}}, event)


def test_the_s3_record_matches_a_pattern_on_its_own_shape() -> None:
    pattern = {
        "eventSource": ["aws:s3"],
        "eventName": [{"prefix": "ObjectCreated:"}],
        "s3": {"bucket": {"name": ["my-data-bucket"]}, "object": {"size": [{"numeric": [">", 0]}]}},
    }
    assert matches(pattern, S3_RECORD)
    assert not matches({**pattern, "eventName": [{"prefix": "ObjectRemoved:"}]}, S3_RECORD)


# --------------------------------------------------------------------------------------------
# Invalid patterns: the path and the fix
# --------------------------------------------------------------------------------------------

INVALID: list[tuple[str, Any, str, str]] = [
    ("not an object", ["aws.s3"], "pattern", "JSON object"),
    ("empty", {}, "pattern", "at least one field"),
    ("a bare leaf", {"source": "aws.s3"}, "pattern.source", '{"source": ["aws.s3"]}'),
    ("an empty list", {"source": []}, "pattern.source", "at least one value"),
    (
        "an unknown operator",
        {"detail": {"size": [{"numerc": [">", 0]}]}},
        "pattern.detail.size[0].numerc",
        "numeric",
    ),
    (
        "two operators in one object",
        {"detail": {"key": [{"prefix": "a", "suffix": "b"}]}},
        "pattern.detail.key[0]",
        "one object per operator",
    ),
    (
        "numeric with a bad comparison",
        {"detail": {"size": [{"numeric": ["!=", 0]}]}},
        "pattern.detail.size[0].numeric[0]",
        "comparisons",
    ),
    (
        "numeric with a string bound",
        {"detail": {"size": [{"numeric": [">", "0"]}]}},
        "pattern.detail.size[0].numeric[1]",
        "finite number",
    ),
    (
        "numeric range upside down",
        {"detail": {"size": [{"numeric": ["<", 5, ">", 0]}]}},
        "pattern.detail.size[0].numeric",
        "lower bound",
    ),
    (
        "numeric range that matches nothing",
        {"detail": {"size": [{"numeric": [">", 9, "<", 1]}]}},
        "pattern.detail.size[0].numeric",
        "lower bound",
    ),
    ("exists not a boolean", {"x": [{"exists": "yes"}]}, "pattern.x[0].exists", "true"),
    ("prefix not a string", {"x": [{"prefix": 3}]}, "pattern.x[0].prefix", "prefix"),
    (
        "prefix with another option",
        {"x": [{"prefix": {"ignore-case": "a"}}]},
        "pattern.x[0].prefix",
        "equals-ignore-case",
    ),
    ("consecutive wildcards", {"x": [{"wildcard": "a**b"}]}, "pattern.x[0].wildcard", '"*"'),
    (
        "anything-but mixing strings and numbers",
        {"x": [{"anything-but": ["a", 1]}]},
        "pattern.x[0].anything-but",
        "Split",
    ),
    (
        "anything-but with an unknown option",
        {"x": [{"anything-but": {"numeric": [">", 1]}}]},
        "pattern.x[0].anything-but",
        "prefix",
    ),
    ("a bad network", {"ip": [{"cidr": "10.0.0.0/40"}]}, "pattern.ip[0].cidr", "10.0.0.0/24"),
    ("$or not a list", {"$or": {"a": ["b"]}}, "pattern.$or", "$or"),
    ("$or of a non-object", {"$or": [["a"]]}, "pattern.$or[0]", "$or"),
    ("a list in a list", {"x": [["a"]]}, "pattern.x[0]", "flat list"),
    ("an object as a value", {"x": [{"nested": {"a": 1}}]}, "pattern.x[0].nested", "Use one of"),
    ("NaN", {"x": [float("nan")]}, "pattern", "finite"),
]


@pytest.mark.parametrize(
    ("pattern", "field", "fix"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_an_invalid_pattern_names_the_path_and_the_fix(pattern: Any, field: str, fix: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_pattern(pattern, "pattern")
    assert caught.value.field == field
    assert fix in str(caught.value)  # the problem and the fix


def test_the_field_prefix_is_kept_in_the_error() -> None:
    with pytest.raises(ValidationError) as caught:
        validate_pattern({"detail": {"size": 5}}, "event_matchers[0].pattern")
    assert caught.value.field == "event_matchers[0].pattern.detail.size"


def test_a_pattern_too_deep_or_too_large_is_refused() -> None:
    deep: dict[str, Any] = {"leaf": ["x"]}
    for _ in range(30):
        deep = {"level": deep}
    with pytest.raises(ValidationError, match="nests more than"):
        validate_pattern(deep)
    with pytest.raises(ValidationError, match="longer than"):
        validate_pattern({"x": ["a" * 70_000]})


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=8),
)
keys = st.text(alphabet="abcdef-", min_size=1, max_size=4).filter(lambda key: key != "$or")
events = st.recursive(
    st.dictionaries(keys, scalars, max_size=4),
    lambda children: st.dictionaries(
        keys, st.one_of(scalars, children, st.lists(scalars)), max_size=4
    ),
    max_leaves=12,
)


def exact_pattern(event: dict[str, Any]) -> dict[str, Any]:
    """A pattern naming every leaf of ``event`` by its own value."""
    pattern: dict[str, Any] = {}
    for key, value in event.items():
        if isinstance(value, dict):
            nested = exact_pattern(value)
            if nested:
                pattern[key] = nested
        elif isinstance(value, list):
            if value:
                pattern[key] = [value[0]]
        else:
            pattern[key] = [value]
    return pattern


@given(events)
def test_an_event_matches_the_pattern_of_its_own_values(event: dict[str, Any]) -> None:
    pattern = exact_pattern(event)
    if pattern:
        validate_pattern(pattern)
        assert matches(pattern, event)


@given(events, st.text(max_size=6))
def test_anything_but_a_value_never_matches_that_value(event: dict[str, Any], text: str) -> None:
    assert not matches({"field": [{"anything-but": text}]}, {**event, "field": text})
    assert matches({"field": [{"anything-but": text}]}, {**event, "field": text + "!"})


@given(st.text(max_size=10), st.integers(min_value=0, max_value=10))
def test_a_strings_prefix_and_suffix_match_it(text: str, cut: int) -> None:
    event = {"key": text}
    assert matches({"key": [{"prefix": text[:cut]}]}, event)
    assert matches({"key": [{"suffix": text[len(text) - min(cut, len(text)) :]}]}, event)
    assert matches({"key": [{"wildcard": "*"}]}, event)


@given(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=False, allow_infinity=False),
)
def test_numeric_agrees_with_python_comparisons(value: float, low: float, high: float) -> None:
    if low > high:
        low, high = high, low
    pattern = {"n": [{"numeric": [">=", low, "<", high]}]}
    validate_pattern(pattern)
    assert matches(pattern, {"n": value}) is (low <= value < high)


@given(events, events, events)
def test_or_is_either_alternative(
    first: dict[str, Any], second: dict[str, Any], event: dict[str, Any]
) -> None:
    left, right = exact_pattern(first), exact_pattern(second)
    if left and right:
        expected = matches(left, event) or matches(right, event)
        assert matches({"$or": [left, right]}, event) is expected


@given(events)
def test_a_pattern_survives_a_json_round_trip(event: dict[str, Any]) -> None:
    pattern = exact_pattern(event)
    if pattern:
        assert validate_pattern(pattern) == json.loads(json.dumps(pattern))


# --------------------------------------------------------------------------------------------
# The seed's shorthand
# --------------------------------------------------------------------------------------------

SEED_VARIABLES = {"event_type": "s3:ObjectCreated:*", "bucket": "my-data-bucket"}


def test_the_seeds_shorthand_matches_the_s3_record_without_its_prefix() -> None:
    assert S3_RECORD["eventName"] == "ObjectCreated:Put"  # S3 sends no "s3:" prefix
    assert shorthand_matches(SEED_VARIABLES, S3_RECORD)
    assert shorthand_matches({"event_type": "ObjectCreated:*"}, S3_RECORD)
    assert not shorthand_matches({**SEED_VARIABLES, "bucket": "other-bucket"}, S3_RECORD)
    removed = {**S3_RECORD, "eventName": "ObjectRemoved:Delete"}
    assert not shorthand_matches(SEED_VARIABLES, removed)


def test_the_shorthand_on_eventbridge_and_plain_events() -> None:
    # The envelope's detail-type, and the S3 notification name an aws.s3 envelope stands for.
    assert shorthand_matches({"event_type": "Object Created", "bucket": "my-data-bucket"}, ENVELOPE)
    assert shorthand_matches(SEED_VARIABLES, ENVELOPE)
    assert "s3:ObjectCreated:Put" in event_types(ENVELOPE)
    assert not shorthand_matches({"event_type": "Object Deleted"}, ENVELOPE)
    plain = {"event_type": "orders_ready", "bucket": "warehouse"}
    assert shorthand_matches({"event_type": "orders_*"}, plain)
    assert shorthand_matches({"bucket": "warehouse"}, plain)
    assert not shorthand_matches({"event_type": "invoices_*"}, plain)


def test_variables_without_shorthand_match_nothing() -> None:
    assert not shorthand_matches({}, S3_RECORD)
    assert not shorthand_matches({"env": "production"}, S3_RECORD)
    assert not shorthand_matches(None, S3_RECORD)


def test_the_file_shorthand_matches_its_path_glob() -> None:
    variables = {"event_type": "file:*", "path": "incoming/*.csv"}
    assert shorthand_matches(variables, {"event_type": "file:created", "path": "incoming/a.csv"})
    assert shorthand_matches(variables, {"event_type": "file:modified", "path": "incoming/a.csv"})
    assert not shorthand_matches(
        variables, {"event_type": "file:created", "path": "incoming/a.txt"}
    )
    # One segment only: a file in a subfolder is not incoming/*.csv.
    assert not shorthand_matches(
        variables, {"event_type": "file:created", "path": "incoming/x/a.csv"}
    )
    assert not shorthand_matches(
        variables, {"event_type": "s3:ObjectCreated:Put", "path": "incoming/a.csv"}
    )


@pytest.mark.parametrize(
    ("glob", "path", "expected"),
    [
        ("incoming/*.csv", "incoming/a.csv", True),
        ("incoming/*.csv", "incoming/a/b.csv", False),
        ("incoming/**/*.csv", "incoming/a.csv", True),
        ("incoming/**/*.csv", "incoming/a/b/c.csv", True),
        ("**", "anything/at/all", True),
        ("*.csv", "a.csv", True),
        ("*.csv", "sub/a.csv", False),
        ("data/?.parquet", "data/1.parquet", True),
        ("data/[ab].csv", "data/c.csv", False),
    ],
)
def test_path_globs(glob: str, path: str, expected: bool) -> None:
    assert path_matches(glob, path) is expected


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"event_type": 3}, "variables.event_type"),
        ({"bucket": ""}, "variables.bucket"),
        ({"path": "../outside/*.csv"}, "variables.path"),
        ({"path": "/etc/*"}, "variables.path"),
    ],
)
def test_bad_shorthand_is_refused(variables: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_shorthand(variables)
    assert caught.value.field == field
    with pytest.raises(ValidationError):
        shorthand_matches(variables, S3_RECORD)
