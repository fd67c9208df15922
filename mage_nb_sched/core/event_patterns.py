"""Which events fire which event schedules: EventBridge event patterns and the seed's shorthand.

Pure functions, no I/O. Two ways for an event schedule to say what fires it:

* **Event matchers** (Mage's ``EventMatcher`` rows) hold an *EventBridge event pattern*, matched
  with EventBridge's content-filtering semantics by :func:`matches`:

  - a pattern is a JSON object with the event's shape; every field it names must match (AND);
  - a field's value is either a nested pattern (an object) or a *list* of alternatives (OR):
    exact strings, numbers, booleans, ``null``, and operator objects ``{"prefix": "..."}``
    (also ``{"prefix": {"equals-ignore-case": "..."}}``), ``{"suffix": ...}`` (the same),
    ``{"wildcard": "a*b"}``, ``{"anything-but": value | [values] | {"prefix" | "suffix" |
    "equals-ignore-case" | "wildcard": ...}}``, ``{"numeric": [">", 0, "<=", 5]}``,
    ``{"exists": true | false}``, ``{"equals-ignore-case": "..."}`` and
    ``{"cidr": "10.0.0.0/24"}``;
  - ``"$or": [pattern, pattern, ...]`` at any level: at least one of them matches;
  - when the event's value is an array, the field matches if *any* element matches (an array of
    objects: any element matches the whole nested pattern, so fields of one element are
    matched together);
  - a field that is absent matches only ``{"exists": false}``; an object (an intermediate
    node) or an empty array counts as no leaf value there, as EventBridge flattens events.

  :func:`validate_pattern` checks a pattern's form and names the bad path and the fix.

* **The seed's shorthand** in the schedule's ``variables`` (:func:`shorthand_matches`):
  ``event_type`` is a glob (:func:`fnmatch.fnmatchcase`) on the event's type — an S3 record's
  ``eventName`` with or without its ``s3:`` prefix (S3 sends ``"ObjectCreated:Put"``; the seed
  writes ``'s3:ObjectCreated:*'``), an EventBridge envelope's ``detail-type`` (and, for an
  ``aws.s3`` envelope, the S3 notification name it stands for), a plain event's
  ``event_type``; ``bucket`` a glob on the bucket name (``s3.bucket.name`` of a record,
  ``detail.bucket.name`` of an envelope, a plain event's ``bucket``); ``path`` a glob on a plain
  event's ``path`` (local file events: ``incoming/*.csv``; ``**`` spans folders). Each
  variable given must match; a schedule with none of them has no shorthand.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any

from mage_nb_sched.core.errors import ValidationError

#: The operators a leaf's list may hold, each as a one-key object.
OPERATORS = (
    "prefix",
    "suffix",
    "wildcard",
    "anything-but",
    "numeric",
    "exists",
    "equals-ignore-case",
    "cidr",
)
#: Operators ``anything-but`` accepts inside an object.
ANYTHING_BUT_OPERATORS = ("prefix", "suffix", "equals-ignore-case", "wildcard")
#: Comparisons of ``numeric``; a range is a lower bound then an upper bound.
NUMERIC_OPERATORS = ("<", "<=", "=", ">", ">=")
_LOWER_BOUNDS = (">", ">=")
_UPPER_BOUNDS = ("<", "<=")
#: Bounds on a pattern (DESIGN §7: every value is bounded).
MAX_PATTERN_DEPTH = 20
MAX_PATTERN_CHARS = 64 * 1024
#: The seed's shorthand variables of an event schedule.
SHORTHAND_VARIABLES = ("event_type", "bucket", "path")

_MISSING: Any = object()

_EXAMPLE = (
    'e.g. {"source": ["aws.s3"], "detail": {"bucket": {"name": ["my-data-bucket"]}, '
    '"object": {"size": [{"numeric": [">", 0]}]}}}'
)


# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------


def matches(pattern: Mapping[str, Any], event: Any) -> bool:
    """Whether ``event`` (a JSON object) matches the EventBridge ``pattern`` (see the module
    docstring). The pattern is assumed valid (:func:`validate_pattern`); a malformed one may
    raise ``TypeError``/``ValueError``."""
    return _match_object(pattern, event if isinstance(event, Mapping) else {})


def _match_object(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    for key, rule in pattern.items():
        if key == "$or":
            if not any(_match_object(alternative, event) for alternative in rule):
                return False
            continue
        value = event.get(key, _MISSING)
        if isinstance(rule, Mapping):
            if not _match_nested(rule, value):
                return False
        elif not _match_leaf(rule, value):
            return False
    return True


def _objects(value: Any) -> Iterator[Mapping[str, Any]]:
    """The objects at a field: the object itself, or those in an array (nested arrays too)."""
    if isinstance(value, Mapping):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _objects(item)


def _match_nested(pattern: Mapping[str, Any], value: Any) -> bool:
    found = False
    for candidate in _objects(value):
        found = True
        if _match_object(pattern, candidate):
            return True
    # No object there: every field below is absent (only exists:false can match).
    return not found and _match_object(pattern, {})


def _leaves(value: Any) -> list[Any]:
    """The leaf values at a field: none when absent or an object, the elements of an array."""
    if value is _MISSING or isinstance(value, Mapping):
        return []
    if isinstance(value, list):
        result: list[Any] = []
        for item in value:
            result.extend(_leaves(item))
        return result
    return [value]


def _match_leaf(rules: Sequence[Any], value: Any) -> bool:
    leaves = _leaves(value)
    for rule in rules:
        if isinstance(rule, Mapping):
            ((operator, argument),) = rule.items()
            if operator == "exists":
                if bool(argument) == bool(leaves):
                    return True
            elif any(_apply(operator, argument, leaf) for leaf in leaves):
                return True
        elif any(_equal(rule, leaf) for leaf in leaves):
            return True
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    # math.isfinite() of a huge int raises OverflowError; every int is finite.
    return _is_number(value) and (isinstance(value, int) or math.isfinite(value))


def _equal(expected: Any, value: Any) -> bool:
    """EventBridge's exact match: same JSON type and value (``5`` equals ``5.0``; ``true`` is
    not ``1``; ``null`` only ``null``; strings case-sensitive)."""
    if expected is None or value is None:
        return expected is None and value is None
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(expected, bool) and isinstance(value, bool) and expected is value
    if _is_number(expected):
        return _is_number(value) and value == expected
    return isinstance(value, str) and isinstance(expected, str) and value == expected


def _fold(text: str) -> str:
    return text.casefold()


def _text_test(operator: str, argument: Any, value: Any) -> bool:
    """``prefix`` / ``suffix`` / ``equals-ignore-case`` / ``wildcard`` on a string value."""
    if not isinstance(value, str):
        return False
    ignore_case = isinstance(argument, Mapping)
    expected = str(argument["equals-ignore-case"] if ignore_case else argument)
    if operator == "equals-ignore-case":
        return _fold(value) == _fold(expected)
    if operator == "wildcard":
        return _wildcard_regex(expected).fullmatch(value) is not None
    text: str = _fold(value) if ignore_case else value
    if ignore_case:
        expected = _fold(expected)
    return text.startswith(expected) if operator == "prefix" else text.endswith(expected)


def _apply(operator: str, argument: Any, value: Any) -> bool:
    if operator in ("prefix", "suffix", "equals-ignore-case", "wildcard"):
        return _text_test(operator, argument, value)
    if operator == "anything-but":
        return _anything_but(argument, value)
    if operator == "numeric":
        return _numeric(argument, value)
    if operator == "cidr":
        return _in_network(argument, value)
    raise ValueError(f"unknown event pattern operator {operator!r}")


def _anything_but(argument: Any, value: Any) -> bool:
    if isinstance(argument, Mapping):
        ((operator, inner),) = argument.items()
        if not isinstance(value, str):
            return False
        alternatives = inner if isinstance(inner, list) else [inner]
        return not any(_text_test(operator, item, value) for item in alternatives)
    excluded = argument if isinstance(argument, list) else [argument]
    return not any(_equal(item, value) for item in excluded)


_NUMERIC_TESTS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "=": lambda a, b: a == b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _numeric(argument: Sequence[Any], value: Any) -> bool:
    if not _is_finite_number(value):
        return False
    return all(
        bool(_NUMERIC_TESTS[argument[index]](value, argument[index + 1]))
        for index in range(0, len(argument), 2)
    )


def _in_network(argument: str, value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return False
    network = _network(argument)
    return address.version == network.version and address in network


@lru_cache(maxsize=1024)
def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text, strict=False)


@lru_cache(maxsize=1024)
def _wildcard_regex(wildcard: str) -> re.Pattern[str]:
    """EventBridge's wildcard: ``*`` is any run of characters, ``\\*`` a literal star and
    ``\\\\`` a literal backslash."""
    parts: list[str] = []
    index = 0
    while index < len(wildcard):
        char = wildcard[index]
        if char == "\\" and index + 1 < len(wildcard) and wildcard[index + 1] in "*\\":
            parts.append(re.escape(wildcard[index + 1]))
            index += 2
            continue
        parts.append(".*" if char == "*" else re.escape(char))
        index += 1
    return re.compile("".join(parts), re.DOTALL)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def validate_pattern(pattern: Any, field: str = "pattern") -> dict[str, Any]:
    """``pattern`` unchanged (as a plain dict) if it is a valid EventBridge event pattern, else
    a :class:`ValidationError` naming the bad path (``field`` + the path inside, e.g.
    ``event_matchers[0].pattern.detail.size[0].numeric``) and the fix."""
    if not isinstance(pattern, Mapping):
        raise ValidationError(
            field, pattern, "an event pattern must be a JSON object", f"Use {_EXAMPLE}."
        )
    try:
        size = len(json.dumps(pattern, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ValidationError(
            field,
            pattern,
            f"the pattern is not plain JSON ({err})",
            "Use strings, finite numbers, booleans, null, lists and objects only.",
        ) from None
    if size > MAX_PATTERN_CHARS:
        raise ValidationError(
            field,
            f"<{size:,} characters>",
            f"the pattern is longer than {MAX_PATTERN_CHARS:,} characters as JSON",
            "Split it into several event matchers, or match on fewer values.",
        )
    _check_object(pattern, field, 1)
    result: dict[str, Any] = json.loads(json.dumps(pattern))
    return result


def _check_object(pattern: Mapping[str, Any], path: str, depth: int) -> None:
    if depth > MAX_PATTERN_DEPTH:
        raise ValidationError(
            path,
            "<nested too deep>",
            f"the pattern nests more than {MAX_PATTERN_DEPTH} levels",
            "Match on fewer nested levels.",
        )
    if not pattern:
        raise ValidationError(
            path,
            {},
            "an empty pattern object matches nothing in particular (EventBridge refuses it)",
            f"Name at least one field to match, {_EXAMPLE}.",
        )
    for key, rule in pattern.items():
        if not isinstance(key, str):
            raise ValidationError(path, key, "field names must be strings", "Use string keys.")
        where = f"{path}.{key}"
        if key == "$or":
            _check_or(rule, where, depth)
        elif isinstance(rule, Mapping):
            _check_object(rule, where, depth + 1)
        elif isinstance(rule, list):
            _check_leaf(rule, where)
        else:
            raise ValidationError(
                where,
                rule,
                "a field's value must be a list of alternatives (or a nested object)",
                f"Wrap the value in a list: {json.dumps({key: [rule]}, default=str)}.",
            )


def _check_or(rule: Any, path: str, depth: int) -> None:
    if not isinstance(rule, list) or len(rule) < 1:
        raise ValidationError(
            path,
            rule,
            '"$or" takes a list of patterns (objects)',
            'Use e.g. {"$or": [{"source": ["aws.s3"]}, {"detail-type": ["Object Created"]}]}.',
        )
    for index, alternative in enumerate(rule):
        where = f"{path}[{index}]"
        if not isinstance(alternative, Mapping):
            raise ValidationError(
                where,
                alternative,
                'each alternative of "$or" must be a pattern object',
                'Use e.g. {"$or": [{"source": ["aws.s3"]}, {"detail-type": ["Object Created"]}]}.',
            )
        _check_object(alternative, where, depth + 1)


def _check_leaf(rules: list[Any], path: str) -> None:
    if not rules:
        raise ValidationError(
            path,
            rules,
            "an empty list matches nothing (EventBridge refuses it)",
            'Give at least one value, e.g. ["aws.s3"], or [{"exists": true}].',
        )
    for index, rule in enumerate(rules):
        where = f"{path}[{index}]"
        if isinstance(rule, Mapping):
            _check_operator(rule, where)
        elif isinstance(rule, list):
            raise ValidationError(
                where,
                rule,
                "a list inside a list is not a pattern value",
                "Put the alternatives in one flat list, e.g. [\"a\", \"b\"].",
            )
        elif not (rule is None or isinstance(rule, str | bool) or _is_number(rule)):
            raise ValidationError(
                where, rule, "not a JSON value", "Use a string, a number, true, false or null."
            )


def _check_operator(rule: Mapping[str, Any], path: str) -> None:
    if len(rule) != 1:
        raise ValidationError(
            path,
            rule,
            "an operator object must have exactly one key",
            f"Use one object per operator, e.g. [{{\"prefix\": \"a\"}}, {{\"suffix\": \"z\"}}]; "
            f"operators: {', '.join(OPERATORS)}.",
        )
    ((operator, argument),) = rule.items()
    where = f"{path}.{operator}"
    if operator not in OPERATORS:
        close = fnmatch.filter(OPERATORS, f"*{str(operator)[:3]}*")
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValidationError(
            where,
            rule,
            f"unknown operator {operator!r}",
            f"Use one of {', '.join(OPERATORS)}.{hint}",
        )
    if operator in ("prefix", "suffix"):
        _check_text_argument(argument, where, operator, allow_ignore_case=True)
    elif operator == "equals-ignore-case":
        _check_string(argument, where, '{"equals-ignore-case": "object created"}')
    elif operator == "wildcard":
        _check_wildcard(argument, where)
    elif operator == "exists":
        if not isinstance(argument, bool):
            raise ValidationError(
                where,
                argument,
                '"exists" takes true or false',
                'Use {"exists": true} (the field is there) or {"exists": false}.',
            )
    elif operator == "numeric":
        _check_numeric(argument, where)
    elif operator == "cidr":
        _check_cidr(argument, where)
    else:
        _check_anything_but(argument, where)


def _check_string(argument: Any, path: str, example: str) -> None:
    if not isinstance(argument, str):
        raise ValidationError(path, argument, "expected a string", f"Use e.g. {example}.")


def _check_text_argument(argument: Any, path: str, operator: str, allow_ignore_case: bool) -> None:
    example = '"uploads/"' if operator == "prefix" else '".csv"'
    if isinstance(argument, Mapping) and allow_ignore_case:
        if set(argument) != {"equals-ignore-case"}:
            raise ValidationError(
                path,
                argument,
                f'inside "{operator}" only {{"equals-ignore-case": "..."}} is accepted',
                f'Use {{"{operator}": {example}}} or '
                f'{{"{operator}": {{"equals-ignore-case": {example}}}}}.',
            )
        _check_string(
            argument["equals-ignore-case"],
            f"{path}.equals-ignore-case",
            f'{{"{operator}": {{"equals-ignore-case": {example}}}}}',
        )
        return
    _check_string(argument, path, f'{{"{operator}": {example}}}')


def _check_wildcard(argument: Any, path: str) -> None:
    _check_string(argument, path, '{"wildcard": "uploads/*.csv"}')
    if re.search(r"(?<!\\)\*\*", argument):
        raise ValidationError(
            path,
            argument,
            "consecutive wildcard characters are not allowed (EventBridge refuses them)",
            'One "*" already matches any run of characters: use e.g. "uploads/*.csv".',
        )


def _check_numeric(argument: Any, path: str) -> None:
    fix = (
        'Use ["=", 100], [">", 0], ["<=", 5] or a range [">", 0, "<=", 5] (a lower bound '
        f"> or >=, then an upper bound < or <=); comparisons: {', '.join(NUMERIC_OPERATORS)}."
    )
    if not isinstance(argument, list) or len(argument) not in (2, 4):
        raise ValidationError(
            path, argument, "numeric takes a list of one or two (comparison, number) pairs", fix
        )
    for index in range(0, len(argument), 2):
        operator, number = argument[index], argument[index + 1]
        if operator not in NUMERIC_OPERATORS:
            raise ValidationError(
                f"{path}[{index}]", operator, f"{operator!r} is not a numeric comparison", fix
            )
        if not _is_finite_number(number):
            raise ValidationError(
                f"{path}[{index + 1}]", number, "a numeric bound must be a finite number", fix
            )
    if len(argument) == 4:
        lower, upper = argument[0], argument[2]
        if lower not in _LOWER_BOUNDS or upper not in _UPPER_BOUNDS:
            raise ValidationError(
                path, argument, "a numeric range is a lower bound then an upper bound", fix
            )
        if argument[1] > argument[3]:
            raise ValidationError(
                path, argument, "the lower bound is above the upper bound (nothing matches)", fix
            )


def _check_cidr(argument: Any, path: str) -> None:
    _check_string(argument, path, '{"cidr": "10.0.0.0/24"}')
    try:
        _network(argument)
    except ValueError as err:
        raise ValidationError(
            path, argument, f"not an IP network ({err})", 'Use e.g. {"cidr": "10.0.0.0/24"}.'
        ) from None


def _check_anything_but(argument: Any, path: str) -> None:
    fix = (
        'Use {"anything-but": "initializing"}, {"anything-but": [1, 2]}, or '
        '{"anything-but": {"prefix": "tmp/"}} (also "suffix", "equals-ignore-case", '
        '"wildcard").'
    )
    if isinstance(argument, Mapping):
        if len(argument) != 1 or next(iter(argument)) not in ANYTHING_BUT_OPERATORS:
            raise ValidationError(
                path,
                argument,
                'inside "anything-but" only one of '
                + ", ".join(f'"{name}"' for name in ANYTHING_BUT_OPERATORS)
                + " is accepted",
                fix,
            )
        ((operator, inner),) = argument.items()
        where = f"{path}.{operator}"
        values = inner if isinstance(inner, list) and operator != "prefix" else [inner]
        if isinstance(inner, list) and not inner:
            raise ValidationError(where, inner, "an empty list excludes nothing", fix)
        for item in values:
            if operator == "wildcard":
                _check_wildcard(item, where)
            else:
                _check_string(item, where, '{"anything-but": {"prefix": "tmp/"}}')
        return
    values = argument if isinstance(argument, list) else [argument]
    if not values:
        raise ValidationError(path, argument, "an empty list excludes nothing", fix)
    kinds = set()
    for index, item in enumerate(values):
        if isinstance(item, str):
            kinds.add("string")
        elif _is_finite_number(item):
            kinds.add("number")
        else:
            where = f"{path}[{index}]" if isinstance(argument, list) else path
            raise ValidationError(
                where, item, "anything-but excludes strings or numbers only", fix
            )
    if len(kinds) > 1:
        raise ValidationError(
            path,
            argument,
            "anything-but takes a list of only strings or only numbers",
            "Split the list into two anything-but conditions on the field.",
        )


# --------------------------------------------------------------------------------------------
# The seed's shorthand
# --------------------------------------------------------------------------------------------

#: An ``aws.s3`` EventBridge envelope's ``detail-type`` → the S3 notification event family.
_S3_DETAIL_TYPES = {"Object Created": "ObjectCreated", "Object Deleted": "ObjectRemoved"}
#: ... and its ``detail.reason`` → the notification's last part.
_S3_REASONS = {
    "PutObject": "Put",
    "POST Object": "Post",
    "CopyObject": "Copy",
    "CompleteMultipartUpload": "CompleteMultipartUpload",
    "DeleteObject": "Delete",
}


def _get(event: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(event, Mapping):
            return None
        event = event.get(key)
    return event


def is_s3_record(event: Mapping[str, Any]) -> bool:
    """Whether ``event`` is one record of an S3 event notification."""
    return event.get("eventSource") == "aws:s3" or (
        isinstance(event.get("s3"), Mapping) and isinstance(event.get("eventName"), str)
    )


def event_types(event: Mapping[str, Any]) -> list[str]:
    """The names ``variables.event_type`` is matched against (see the module docstring)."""
    names: list[str] = []
    name = event.get("eventName")
    if isinstance(name, str) and is_s3_record(event):
        bare = name.removeprefix("s3:")
        names += [bare, f"s3:{bare}"]
    detail_type = event.get("detail-type")
    if isinstance(detail_type, str):
        names.append(detail_type)
        family = _S3_DETAIL_TYPES.get(detail_type)
        if event.get("source") == "aws.s3" and family is not None:
            reason = _get(event, "detail", "reason")
            suffix = _S3_REASONS.get(reason, reason) if isinstance(reason, str) else "*"
            names += [f"{family}:{suffix}", f"s3:{family}:{suffix}"]
    plain = event.get("event_type")
    if isinstance(plain, str):
        names.append(plain)
    return names


def bucket_names(event: Mapping[str, Any]) -> list[str]:
    """The bucket names ``variables.bucket`` is matched against."""
    candidates = (
        _get(event, "s3", "bucket", "name"),
        _get(event, "detail", "bucket", "name"),
        event.get("bucket"),
    )
    return [name for name in candidates if isinstance(name, str)]


def _globs(value: Any, field: str, example: str) -> list[str]:
    globs = value if isinstance(value, list) else [value]
    if not globs or not all(isinstance(glob, str) and glob for glob in globs):
        raise ValidationError(
            field,
            value,
            "expected a glob (a non-empty string) or a list of them",
            f"Use e.g. {example}.",
        )
    return globs


_SHORTHAND_EXAMPLES = {
    "event_type": "variables={'event_type': 's3:ObjectCreated:*'} (or 'file:*' for local files)",
    "bucket": "variables={'bucket': 'my-data-bucket'}",
    "path": "variables={'event_type': 'file:*', 'path': 'incoming/*.csv'}",
}


def validate_shorthand(variables: Any, field: str = "variables") -> None:
    """Raise a :class:`ValidationError` if an event schedule's shorthand variables
    (``event_type``, ``bucket``, ``path``) are not globs."""
    if not isinstance(variables, Mapping):
        return
    for name in SHORTHAND_VARIABLES:
        if name in variables:
            _globs(variables[name], f"{field}.{name}", _SHORTHAND_EXAMPLES[name])
    if "path" in variables:
        for glob in _globs(variables["path"], f"{field}.path", _SHORTHAND_EXAMPLES["path"]):
            if glob.startswith("/") or ".." in glob.split("/"):
                raise ValidationError(
                    f"{field}.path",
                    glob,
                    "the glob must be relative to the project dir, without '..'",
                    "Use e.g. 'incoming/*.csv' or 'data/**/*.parquet'.",
                )


def has_shorthand(variables: Any) -> bool:
    """Whether a schedule's variables hold any shorthand variable."""
    return isinstance(variables, Mapping) and any(
        name in variables for name in SHORTHAND_VARIABLES
    )


def shorthand_matches(variables: Any, event: Mapping[str, Any]) -> bool:
    """Whether ``event`` matches the seed's shorthand in a schedule's ``variables``; ``False``
    when they hold none. Invalid shorthand raises :class:`ValidationError`."""
    if not has_shorthand(variables):
        return False
    validate_shorthand(variables)
    checks = (
        ("event_type", event_types),
        ("bucket", bucket_names),
        ("path", lambda e: [e["path"]] if isinstance(e.get("path"), str) else []),
    )
    for name, candidates_of in checks:
        if name not in variables:
            continue
        candidates = candidates_of(event)
        globs = _globs(variables[name], name, _SHORTHAND_EXAMPLES[name])
        if name == "path":
            found = any(path_matches(glob, text) for glob in globs for text in candidates)
        else:
            found = any(fnmatch.fnmatchcase(text, glob) for glob in globs for text in candidates)
        if not found:
            return False
    return True


def path_matches(glob: str, path: str) -> bool:
    """Whether the POSIX relative ``path`` matches ``glob``: ``*``, ``?`` and ``[...]`` within
    one path segment, ``**`` any number of segments (``data/**/*.csv`` matches
    ``data/a.csv`` and ``data/x/y/a.csv``)."""
    return _match_segments(tuple(glob.strip("/").split("/")), tuple(path.strip("/").split("/")))


@lru_cache(maxsize=4096)
def _match_segments(globs: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    if not globs:
        return not parts
    head, rest = globs[0], globs[1:]
    if head == "**":
        return any(_match_segments(rest, parts[index:]) for index in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], head) and _match_segments(rest, parts[1:])


__all__ = [
    "ANYTHING_BUT_OPERATORS",
    "MAX_PATTERN_CHARS",
    "MAX_PATTERN_DEPTH",
    "NUMERIC_OPERATORS",
    "OPERATORS",
    "SHORTHAND_VARIABLES",
    "bucket_names",
    "event_types",
    "has_shorthand",
    "is_s3_record",
    "matches",
    "path_matches",
    "shorthand_matches",
    "validate_pattern",
    "validate_shorthand",
]
