"""Event triggers: events in, one run per matching active event schedule out, never twice.

An *event* is a JSON object: one record of an S3 event notification, an EventBridge envelope,
a local file event (``{"event_type": "file:created", "path": "incoming/a.csv"}``) or any object
a script sends. :func:`normalize_events` turns a request body (one event, a list of them, an S3
notification's ``Records``) into :class:`Event` values; :func:`fire_events` matches each against
every active event schedule — by its event matchers (EventBridge patterns,
:mod:`mage_nb_sched.core.event_patterns`) or by the seed's shorthand in its ``variables`` — and
records one run per match, with the event as the run's ``event`` variable (``event_variables``).

Exactly once: each run carries the key ``event:<schedule id>:<sha256 of the event's identity>``
(its ``id``; an S3 record's bucket + key + sequencer; a file's path + mtime + size; else its
canonical JSON), and the store's unique index on ``run_key`` refuses a second run for the same
event — across restarts, retries of a forwarder and several servers on one database.

Event matchers (Mage's ``event_matcher`` rows linked to schedules) are stored here too:
:func:`clean_event_matchers`, :func:`write_event_matchers`, :func:`read_event_matchers`.

One schedule (or stored pattern) that cannot be matched is logged and skipped; it never stops
the other schedules. Each blocking function has an async twin (``aingest_events`` ...).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, exists, insert, select

from mage_nb_sched.core import event_patterns
from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.core.datetimes import to_utc
from mage_nb_sched.core.enums import PipelineRunStatus, ScheduleStatus, ScheduleType
from mage_nb_sched.core.errors import ConflictError, ValidationError
from mage_nb_sched.service import fields
from mage_nb_sched.service.asynchronous import twin
from mage_nb_sched.service.records import RunRecord, ScheduleRecord, from_row
from mage_nb_sched.service.runs import insert_runs_ignoring_duplicates
from mage_nb_sched.store import schema
from mage_nb_sched.store.engine import Store
from mage_nb_sched.store.file_watch import CREATED, MODIFIED, event_file_path

log = logging.getLogger(__name__)

SCHEDULES = schema.pipeline_schedule
RUNS = schema.pipeline_run
MATCHERS = schema.event_matcher
LINKS = schema.pipeline_schedule_event_matcher_association

#: Most events one call may carry (S3 records counted one by one); more is a 400.
MAX_EVENTS = 1000
#: Most event matchers one schedule may have.
MAX_MATCHERS = 100
#: Mage's only ``EventMatcher.event_type``.
AWS_EVENT = "aws_event"
#: Keys of an event matcher given to :func:`clean_event_matchers`; ``id``,
#: ``pipeline_schedule_ids``, ``created_at`` and ``updated_at`` (Mage's read-only fields, sent
#: back by clients that echo what they read) are accepted and ignored.
MATCHER_FIELDS = ("name", "event_type", "pattern")
_IGNORED_MATCHER_FIELDS = ("id", "pipeline_schedule_ids", "created_at", "updated_at")
#: ``event_type`` of local file events.
FILE_EVENT_TYPES = (f"file:{CREATED}", f"file:{MODIFIED}")

_EVENT_FIX = (
    'Send one event object, a list of them, or an S3 notification {"Records": [...]}, e.g. '
    '{"event_type": "orders_ready", "bucket": "my-data-bucket"}.'
)
_CHUNK = 500


@dataclass(frozen=True)
class Event:
    """One event: ``payload`` becomes the run's ``event`` variable; ``identity`` says when two
    events are the same one (see the module docstring)."""

    payload: dict[str, Any]
    identity: str

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of :attr:`identity`: the event's part of its runs' keys."""
        return hashlib.sha256(self.identity.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class EventOutcome:
    """What one event did: the active event schedules it matched (ids, ascending), the runs it
    created, and how many matches found their run already there (the event was seen before)."""

    event: dict[str, Any]
    matched: tuple[int, ...]
    runs: tuple[RunRecord, ...]
    duplicates: int


def run_key(schedule_id: int, event: Event) -> str:
    """The key of ``schedule_id``'s run for ``event``: at most one such run can exist."""
    return f"event:{schedule_id}:{event.digest}"


# --------------------------------------------------------------------------------------------
# Events in
# --------------------------------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """``value`` as JSON with sorted keys and no spaces: equal events give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_identity(event: Mapping[str, Any]) -> str:
    """What makes ``event`` the same event when it comes again: its ``id`` (EventBridge gives
    every event one), an S3 record's bucket + key + ``sequencer`` (S3's per-key event order),
    else its whole canonical JSON."""
    ident = event.get("id")
    if (isinstance(ident, str) and ident) or (
        isinstance(ident, int) and not isinstance(ident, bool)
    ):
        return f"id:{json.dumps(ident)}"
    if event_patterns.is_s3_record(event):
        s3 = event.get("s3")
        bucket = (s3.get("bucket") or {}).get("name") if isinstance(s3, Mapping) else None
        target = s3.get("object") if isinstance(s3, Mapping) else None
        key = target.get("key") if isinstance(target, Mapping) else None
        sequencer = target.get("sequencer") if isinstance(target, Mapping) else None
        if all(isinstance(part, str) for part in (bucket, key, sequencer)):
            return "s3:" + json.dumps([bucket, key, sequencer])
    return "json:" + canonical_json(event)


def make_event(payload: Mapping[str, Any], field: str = "event") -> Event:
    """An :class:`Event` of a JSON object (checked: string keys, finite numbers, integers below
    2**1024 — else a :class:`ValidationError` naming ``field``)."""
    if not isinstance(payload, Mapping):
        raise ValidationError(field, payload, "an event must be a JSON object", _EVENT_FIX)
    cleaned = fields.variables(payload, field)
    assert cleaned is not None
    return Event(cleaned, event_identity(cleaned))


def normalize_events(body: Any) -> list[Event]:
    """The events of a request body: one object, a list of objects, an S3 notification
    (``{"Records": [...]}``: one event per record; also inside a list). At most
    :data:`MAX_EVENTS`; anything else is a :class:`ValidationError` naming where."""
    items = body if isinstance(body, list) else [body]
    payloads: list[tuple[Any, str]] = []
    for index, item in enumerate(items):
        where = f"body[{index}]" if isinstance(body, list) else "body"
        if not isinstance(item, Mapping):
            raise ValidationError(
                where, item, f"an event must be a JSON object, not {_json_type(item)}", _EVENT_FIX
            )
        records = item.get("Records")
        if isinstance(records, list):
            payloads.extend(
                (record, f"{where}.Records[{number}]") for number, record in enumerate(records)
            )
        else:
            payloads.append((item, where))
        if len(payloads) > MAX_EVENTS:
            raise ValidationError(
                "body",
                f"<more than {MAX_EVENTS:,} events>",
                f"one call takes at most {MAX_EVENTS:,} events (S3 records counted one by one)",
                f"Split the events over several calls of at most {MAX_EVENTS:,}.",
            )
    return [make_event(payload, where) for payload, where in payloads]


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return "a number"


def file_event(project_dir: Path, path: Path | str, kind: str) -> Event | None:
    """The local file event for ``path`` (``kind``: ``created`` or ``modified``), or ``None``
    when the path fires no event (gone, not a regular file, hidden, outside the project: see
    :func:`~mage_nb_sched.store.file_watch.event_file_path`). Its identity is the path, the
    modification time (ns) and the size, so a file fires once per content it is given."""
    if kind not in (CREATED, MODIFIED):
        raise ValueError(f"kind must be {CREATED!r} or {MODIFIED!r}, not {kind!r}")
    root = Path(project_dir).resolve()
    absolute = Path(path) if Path(path).is_absolute() else root / path
    relative = event_file_path(absolute, root)
    if relative is None:
        return None
    try:
        facts = os.stat(absolute)
    except OSError:  # removed (or unreadable) since the change was reported
        return None
    if not stat.S_ISREG(facts.st_mode):
        return None
    payload = {"event_type": f"file:{kind}", "path": relative}
    return Event(payload, "file:" + json.dumps([relative, facts.st_mtime_ns, facts.st_size]))


# --------------------------------------------------------------------------------------------
# Matching and firing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    """An active event schedule and its valid patterns, read once per call."""

    schedule: ScheduleRecord
    patterns: tuple[dict[str, Any], ...]
    shorthand: bool


def _active_event_schedules(connection: Connection) -> list[_Candidate]:
    rows = connection.execute(
        select(SCHEDULES)
        .where(
            SCHEDULES.c.status == ScheduleStatus.ACTIVE.value,
            SCHEDULES.c.schedule_type == ScheduleType.EVENT.value,
        )
        .order_by(SCHEDULES.c.id)
    ).all()
    records = [from_row(ScheduleRecord, row) for row in rows]
    matchers = event_matchers_on(connection, [record.id for record in records])
    candidates = []
    for record in records:
        patterns = []
        for matcher in matchers.get(record.id, []):
            try:
                patterns.append(
                    event_patterns.validate_pattern(matcher["pattern"], "event_matcher.pattern")
                )
            except ValidationError as err:
                # Written past the service (the Mage model, SQL): skip this pattern only.
                log.warning(
                    "event schedule %s (%r): event matcher %s is skipped: %s",
                    record.id,
                    record.name,
                    matcher["id"],
                    err,
                )
        try:
            event_patterns.validate_shorthand(record.variables)
            shorthand = event_patterns.has_shorthand(record.variables)
        except ValidationError as err:
            log.warning(
                "event schedule %s (%r): its shorthand variables are skipped: %s",
                record.id,
                record.name,
                err,
            )
            shorthand = False
        if patterns or shorthand:
            candidates.append(_Candidate(record, tuple(patterns), shorthand))
    return candidates


def _matches(candidate: _Candidate, event: Event) -> bool:
    try:
        if candidate.shorthand and event_patterns.shorthand_matches(
            candidate.schedule.variables, event.payload
        ):
            return True
        return any(event_patterns.matches(pattern, event.payload) for pattern in candidate.patterns)
    except Exception:
        log.exception(
            "event schedule %s (%r) could not be matched against an event; skipped",
            candidate.schedule.id,
            candidate.schedule.name,
        )
        return False


def _execution_dates(now: datetime, count: int) -> list[datetime]:
    """``count`` distinct instants from ``now`` on, each with microseconds (its run's partition
    then ends in ``_%f``, DESIGN §1), so runs made together never share an output folder."""
    dates: list[datetime] = []
    moment = to_utc(now)
    while len(dates) < count:
        if moment.microsecond:
            dates.append(moment)
        moment += timedelta(microseconds=1)
    return dates


def _fire(
    store: Store, events: Sequence[Event], candidates: list[_Candidate], now: datetime | None
) -> list[EventOutcome]:
    matched: list[list[_Candidate]] = [
        [candidate for candidate in candidates if _matches(candidate, event)] for event in events
    ]
    wanted: dict[str, tuple[_Candidate, Event]] = {}
    for event, hits in zip(events, matched, strict=True):
        for candidate in hits:
            wanted.setdefault(run_key(candidate.schedule.id, event), (candidate, event))
    created: dict[str, RunRecord] = {}
    if wanted:
        dates = _execution_dates(now or utcnow(), len(wanted))
        rows = [
            {
                "pipeline_schedule_id": candidate.schedule.id,
                "pipeline_uuid": candidate.schedule.pipeline_uuid,
                "execution_date": date,
                "status": PipelineRunStatus.INITIAL,
                "event_variables": event.payload,
                "run_key": key,
            }
            for (key, (candidate, event)), date in zip(wanted.items(), dates, strict=True)
        ]
        with store.write_engine.begin() as connection:
            inserted = insert_runs_ignoring_duplicates(connection, rows)
            for chunk in _chunks(inserted):
                for row in connection.execute(select(RUNS).where(RUNS.c.id.in_(chunk))):
                    new = from_row(RunRecord, row)
                    created[new.run_key] = new
    outcomes = []
    for event, hits in zip(events, matched, strict=True):
        runs: list[RunRecord] = []
        duplicates = 0
        for candidate in hits:
            # pop: an event given twice in one call creates its run once (the first time).
            made = created.pop(run_key(candidate.schedule.id, event), None)
            if made is None:
                duplicates += 1
            else:
                runs.append(made)
        ids = tuple(sorted(candidate.schedule.id for candidate in hits))
        outcomes.append(EventOutcome(event.payload, ids, tuple(runs), duplicates))
    for outcome in outcomes:
        for record in outcome.runs:
            log.info(
                "event %s fired schedule %s: run %s",
                _describe(outcome.event),
                record.pipeline_schedule_id,
                record.id,
            )
    return outcomes


def _describe(event: Mapping[str, Any]) -> str:
    names = event_patterns.event_types(event)
    where = event.get("path") or next(iter(event_patterns.bucket_names(event)), None)
    text = names[0] if names else "(untyped)"
    return f"{text} {where}" if where else text


def _chunks(values: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def fire_events(
    store: Store, events: Sequence[Event], *, now: datetime | None = None
) -> list[EventOutcome]:
    """Match each event against every active event schedule and record one run per match that
    has none yet (in one transaction); an :class:`EventOutcome` per event, in order."""
    if not events:
        return []
    with store.engine.connect() as connection:
        candidates = _active_event_schedules(connection)
    return _fire(store, events, candidates, now)


def ingest_events(store: Store, body: Any, *, now: datetime | None = None) -> list[EventOutcome]:
    """:func:`normalize_events` then :func:`fire_events` (what ``POST mage/api/events`` does).
    A body that is not acceptable writes nothing."""
    return fire_events(store, normalize_events(body), now=now)


def fire_file_changes(
    store: Store,
    changes: Iterable[tuple[str, Path | str]],
    *,
    now: datetime | None = None,
) -> list[EventOutcome]:
    """Local file events: ``changes`` are ``(kind, path)`` pairs (``created`` / ``modified``,
    a path under the store's project dir). Files that fire no event are left out; nothing is
    read from the disk when no active event schedule exists."""
    with store.engine.connect() as connection:
        candidates = _active_event_schedules(connection)
    if not candidates or store.project_dir is None:
        return []
    events = [
        event
        for kind, path in changes
        if (event := file_event(store.project_dir, path, kind)) is not None
    ]
    return _fire(store, events, candidates, now) if events else []


# --------------------------------------------------------------------------------------------
# Event matchers of a schedule
# --------------------------------------------------------------------------------------------


def clean_event_matchers(value: Any, field: str = "event_matchers") -> list[dict[str, Any]]:
    """Validate Mage's ``event_matchers`` list (``[{"name"?, "event_type": "aws_event",
    "pattern": {...}}]``); returns ``[{"name": str | None, "event_type", "pattern"}]``.
    ``None`` is no matchers. Errors name the entry and key, e.g.
    ``event_matchers[0].pattern.detail.size``."""
    if value is None:
        return []
    example = (
        f'Use e.g. {field}=[{{"event_type": "aws_event", "pattern": {{"source": ["aws.s3"], '
        '"detail-type": ["Object Created"]}}]'
    )
    if not isinstance(value, list | tuple):
        raise ValidationError(field, value, "expected a list of event matchers", f"{example}.")
    if len(value) > MAX_MATCHERS:
        raise ValidationError(
            field,
            f"<{len(value)} matchers>",
            f"at most {MAX_MATCHERS} event matchers per schedule",
            "Combine patterns with lists of alternatives or $or.",
        )
    cleaned: list[dict[str, Any]] = []
    names: set[str] = set()
    for index, matcher in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(matcher, Mapping):
            raise ValidationError(where, matcher, "an event matcher must be an object", example)
        for key in matcher:
            if key not in MATCHER_FIELDS and key not in _IGNORED_MATCHER_FIELDS:
                raise ValidationError(
                    f"{where}.{key}",
                    matcher[key],
                    "unknown event matcher field",
                    f"Valid fields are: {', '.join(MATCHER_FIELDS)}.",
                )
        event_type = matcher.get("event_type", AWS_EVENT)
        if event_type != AWS_EVENT:
            raise ValidationError(
                f"{where}.event_type",
                event_type,
                f"the only event matcher type is {AWS_EVENT!r} (Mage's)",
                f'Use "event_type": "{AWS_EVENT}" (any JSON event is matched by its pattern).',
            )
        if "pattern" not in matcher:
            raise ValidationError(
                f"{where}.pattern", None, "an event matcher needs a pattern", f"{example}."
            )
        pattern = event_patterns.validate_pattern(matcher["pattern"], f"{where}.pattern")
        name = matcher.get("name")
        if name is not None:
            name = fields.name(name, f"{where}.name")
            if name in names:
                raise ValidationError(
                    f"{where}.name", name, "two event matchers have this name", "Rename one."
                )
            names.add(name)
        cleaned.append({"name": name, "event_type": AWS_EVENT, "pattern": pattern})
    return cleaned


def write_event_matchers(
    connection: Connection, schedule_id: int, cleaned: Sequence[Mapping[str, Any]]
) -> None:
    """Replace the event matchers of ``schedule_id`` by ``cleaned`` (from
    :func:`clean_event_matchers`), inside the caller's transaction. Matchers no other schedule
    uses are deleted. A name another schedule's matcher has is a :class:`ConflictError`
    (matcher names are unique in Mage's table); the caller's transaction then writes nothing."""
    old = list(
        connection.execute(
            select(LINKS.c.event_matcher_id).where(LINKS.c.pipeline_schedule_id == schedule_id)
        ).scalars()
    )
    connection.execute(delete(LINKS).where(LINKS.c.pipeline_schedule_id == schedule_id))
    for chunk in _chunks(old):
        still_used = exists().where(LINKS.c.event_matcher_id == MATCHERS.c.id)
        connection.execute(delete(MATCHERS).where(MATCHERS.c.id.in_(chunk), ~still_used))
    for index, matcher in enumerate(cleaned):
        name = matcher.get("name")
        if name is not None and _name_taken(connection, name):
            raise ConflictError(
                f"event_matchers[{index}].name",
                name,
                "another schedule has an event matcher with this name",
                "Choose another name, or leave name out to get one.",
            )
        if name is None:
            name = f"pipeline_schedule_{schedule_id}_event_matcher_{index}"
            if _name_taken(connection, name):
                name = f"{name}_{uuid.uuid4().hex[:8]}"
        result = connection.execute(
            insert(MATCHERS).values(
                name=name,
                event_type=matcher.get("event_type", AWS_EVENT),
                pattern=matcher["pattern"],
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        connection.execute(
            insert(LINKS).values(pipeline_schedule_id=schedule_id, event_matcher_id=int(key[0]))
        )


def _name_taken(connection: Connection, name: str) -> bool:
    found = connection.execute(select(MATCHERS.c.id).where(MATCHERS.c.name == name)).first()
    return found is not None


def event_matchers_on(
    connection: Connection, schedule_ids: Sequence[int]
) -> dict[int, list[dict[str, Any]]]:
    """:func:`read_event_matchers` on the caller's connection."""
    result: dict[int, list[dict[str, Any]]] = {schedule_id: [] for schedule_id in schedule_ids}
    for chunk in _chunks(list(schedule_ids)):
        rows = connection.execute(
            select(
                LINKS.c.pipeline_schedule_id,
                MATCHERS.c.id,
                MATCHERS.c.name,
                MATCHERS.c.event_type,
                MATCHERS.c.pattern,
            )
            .join(MATCHERS, MATCHERS.c.id == LINKS.c.event_matcher_id)
            .where(LINKS.c.pipeline_schedule_id.in_(chunk))
            .order_by(LINKS.c.pipeline_schedule_id, MATCHERS.c.id)
        )
        for schedule_id, matcher_id, name, event_type, pattern in rows:
            result[schedule_id].append(
                {"id": matcher_id, "name": name, "event_type": event_type, "pattern": pattern}
            )
    return result


def read_event_matchers(
    store: Store, schedule_ids: Iterable[int]
) -> dict[int, list[dict[str, Any]]]:
    """The event matchers of each schedule in ``schedule_ids`` (``{"id", "name", "event_type",
    "pattern"}``, oldest first; ``[]`` for a schedule without any), in one query."""
    ids = list(dict.fromkeys(schedule_ids))
    if not ids:
        return {}
    with store.engine.connect() as connection:
        return event_matchers_on(connection, ids)


# Async twins: the same calls, with the database work off the caller's event loop.
aingest_events = twin(ingest_events)
afire_events = twin(fire_events)
afire_file_changes = twin(fire_file_changes)
aread_event_matchers = twin(read_event_matchers)

__all__ = [
    "AWS_EVENT",
    "FILE_EVENT_TYPES",
    "MAX_EVENTS",
    "MAX_MATCHERS",
    "Event",
    "EventOutcome",
    "afire_events",
    "afire_file_changes",
    "aingest_events",
    "aread_event_matchers",
    "canonical_json",
    "clean_event_matchers",
    "event_identity",
    "file_event",
    "fire_events",
    "fire_file_changes",
    "ingest_events",
    "make_event",
    "normalize_events",
    "read_event_matchers",
    "run_key",
    "write_event_matchers",
]
