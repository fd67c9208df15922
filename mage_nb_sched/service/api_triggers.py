"""API triggers: the rules behind Mage's trigger URL, ``trigger_pipeline`` and
``mage-nb-sched trigger``.

A call names a schedule and, over HTTP, presents its token. The token is checked in constant
time against the stored hash; a wrong or missing token, an unknown id and a schedule that is not
an API schedule all answer the same :class:`ForbiddenError` (:data:`FORBIDDEN_MESSAGE`), so a
caller without the token learns nothing about which ids exist. With the right token:

- an ``Idempotency-Key`` makes the call idempotent: the run key is derived from the schedule id
  and a hash of the key (never the key itself), and the database's unique ``run_key`` index
  makes two racing calls share one run; a repeat answers the first run (``created=False``);
- an inactive schedule is refused (:class:`ConflictError`, 409) — Mage silently re-activates
  it, which turns a paused schedule back on behind its owner's back (DESIGN §4);
- with ``settings.skip_if_previous_running``, a schedule with an unfinished run (initial,
  queued or running; backfill runs do not count, as for the scheduler) refuses the call with a
  :class:`ConflictError` naming that run; nothing is created. Two calls racing past this check
  both record a run; the scheduler then skips the later one when it plans starts (it applies
  the same setting to waiting runs), so two never execute together.

Local callers (the CLI, ``trigger_pipeline``) have database access and so need no token:
:func:`trigger_schedule` applies the same rules without the token check.

Every blocking function has an async twin (``atrigger_with_token`` ...) for the REST handlers.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select

from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.core.datetimes import to_utc
from mage_nb_sched.core.enums import (
    FINISHED_RUN_STATUSES,
    IN_PROGRESS_RUN_STATUSES,
    PipelineRunStatus,
    ScheduleStatus,
    ScheduleType,
)
from mage_nb_sched.core.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from mage_nb_sched.core.project import require_notebook
from mage_nb_sched.core.settings import with_defaults
from mage_nb_sched.core.tokens import hash_token, verify_token
from mage_nb_sched.service import fields
from mage_nb_sched.service.asynchronous import twin
from mage_nb_sched.service.records import BlockRunRecord, RunRecord, ScheduleRecord, from_row
from mage_nb_sched.service.runs import block_runs, get_run, insert_run_once
from mage_nb_sched.service.schedules import (
    create_schedule,
    find_schedule,
    get_schedule,
    list_schedules,
    project_dir_of,
)
from mage_nb_sched.store import leases, schema
from mage_nb_sched.store.engine import Store

SCHEDULES = schema.pipeline_schedule
RUNS = schema.pipeline_run

#: The one answer to a call that does not carry the right token of an API schedule: the same
#: for a wrong token, no token, an unknown id and a schedule of another type.
FORBIDDEN_MESSAGE = (
    "This trigger URL needs the API token of an API schedule, and the token sent is missing "
    "or not that schedule's (or there is no such API schedule). Send the token shown when the "
    "schedule was created, in the URL (.../pipeline_schedules/ID/pipeline_runs/TOKEN) or as "
    "'Authorization: Bearer TOKEN' to .../pipeline_schedules/ID/api_trigger. A lost token "
    "cannot be shown again: rotate it (PUT pipeline_schedules/ID with "
    '{"pipeline_schedule": {"rotate_token": true}}, or schedule.rotate_token()).'
)
#: Name of the API schedule ``trigger_pipeline`` finds or creates when given no
#: ``schedule_name`` (Mage's ``TRIGGER_NAME_FOR_TRIGGER_CREATED_FROM_CODE``).
DEFAULT_SCHEDULE_NAME = "API_TRIGGER_CREATED_FROM_CODE"
#: Longest ``Idempotency-Key`` accepted (characters).
MAX_IDEMPOTENCY_KEY = 255
# Built once: on this hot path, building a SQLAlchemy statement costs more than SQLite
# answering it.
_SCHEDULE_BY_ID = select(SCHEDULES).where(SCHEDULES.c.id == bindparam("schedule_id"))
_RUN_BY_KEY = select(RUNS).where(RUNS.c.run_key == bindparam("run_key"))
_UNFINISHED_RUN = (
    select(RUNS.c.id, RUNS.c.status, RUNS.c.owner)
    .where(
        RUNS.c.pipeline_schedule_id == bindparam("schedule_id"),
        RUNS.c.backfill_id.is_(None),
        RUNS.c.status.in_([status.value for status in IN_PROGRESS_RUN_STATUSES]),
    )
    .order_by(RUNS.c.id)
    .limit(1)
)
#: Trigger writes of this process take turns here before SQLite's write lock. Without it, the
#: service's threads serving a burst of calls ask SQLite at once, and the losers wait in
#: SQLite's busy handler, which sleeps in growing steps (up to 100 ms) — the burst's tail. A
#: Python lock hands the turn over as soon as it is free. (Other processes still meet at
#: SQLite's own lock.)
_SQLITE_WRITE_TURN = threading.Lock()
#: Compared against when the schedule has no hash (unknown id), so that answer takes as long
#: as a wrong token's.
_NO_HASH = hash_token("no schedule has this token")


@dataclass(frozen=True)
class Triggered:
    """The run a trigger call made, or found: ``created`` is False when an earlier call with
    the same idempotency key made it."""

    run: RunRecord
    created: bool


@dataclass(frozen=True)
class RunProgress:
    """A run and its block runs, read together (for polling until the run ends)."""

    run: RunRecord
    blocks: list[BlockRunRecord]

    @property
    def finished(self) -> bool:
        return self.run.status in FINISHED_RUN_STATUSES


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------


def idempotency_run_key(schedule_id: int, key: str) -> str:
    """The ``run_key`` of the run an ``Idempotency-Key`` names: the schedule id and a SHA-256 of
    the key, so the stored key reveals nothing a caller sent and two schedules never share."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return f"api:{schedule_id}:{digest}"


def clean_idempotency_key(value: object, field: str = "Idempotency-Key") -> str | None:
    """An idempotency key as given (None for none), or a :class:`ValidationError`."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_IDEMPOTENCY_KEY:
        raise ValidationError(
            field,
            value,
            f"expected a non-empty string of at most {MAX_IDEMPOTENCY_KEY} characters",
            "Send e.g. a UUID: Idempotency-Key: 0f9c7a4e-6f1d-4d0e-9b1a-3c2e8f5a7d21.",
        )
    return value


def rate_limit_key(token: str | None) -> str:
    """The key a per-token rate limit counts calls under: a hash, never the token."""
    return "api-trigger:" + (hash_token(token) if token else "no-token")


# --------------------------------------------------------------------------------------------
# Triggering
# --------------------------------------------------------------------------------------------


def trigger_with_token(
    store: Store,
    schedule_id: int,
    token: str | None,
    *,
    variables: dict[str, Any] | None = None,
    event_variables: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> Triggered:
    """Mage's trigger URL: check ``token`` against API schedule ``schedule_id`` (constant time)
    and create its run (see the module docstring for every rule).

    :raises ForbiddenError: wrong or missing token, no such id, not an API schedule.
    :raises ConflictError: the schedule is inactive, or ``skip_if_previous_running`` and a run
        of it is unfinished.
    """
    with store.engine.connect() as connection:
        row = connection.execute(_SCHEDULE_BY_ID, {"schedule_id": schedule_id}).first()
    stored_hash = None if row is None else row._mapping["token_hash"]
    # Always one comparison, also for an unknown id: every refusal costs the same.
    token_ok = verify_token(token or "", stored_hash or _NO_HASH)
    if row is None or not token_ok or not stored_hash:
        raise ForbiddenError(FORBIDDEN_MESSAGE)
    schedule = from_row(ScheduleRecord, row)
    if schedule.schedule_type != ScheduleType.API:
        raise ForbiddenError(FORBIDDEN_MESSAGE)
    return _trigger(store, schedule, variables, event_variables, idempotency_key, now)


def trigger_schedule(
    store: Store,
    schedule_id: int,
    *,
    variables: dict[str, Any] | None = None,
    event_variables: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> Triggered:
    """Trigger a schedule from this machine (CLI, ``trigger_pipeline``): the same rules as the
    trigger URL without the token (the caller has the database). Any schedule type can be
    triggered this way, as Mage's "run now" does.

    :raises NotFoundError: no such schedule.
    :raises ConflictError: inactive, or ``skip_if_previous_running`` with a run unfinished.
    """
    schedule = get_schedule(store, schedule_id)
    return _trigger(store, schedule, variables, event_variables, idempotency_key, now)


def _trigger(
    store: Store,
    schedule: ScheduleRecord,
    variables: dict[str, Any] | None,
    event_variables: dict[str, Any] | None,
    idempotency_key: str | None,
    now: datetime | None,
) -> Triggered:
    run_variables = fields.variables(variables or {}, "variables")
    event = fields.variables(event_variables, "event_variables") or None
    key = clean_idempotency_key(idempotency_key)
    run_key = None
    if key is not None:
        run_key = idempotency_run_key(schedule.id, key)
        existing = _run_with_key(store, run_key)
        if existing is not None:
            # The same key is the same call: its run, whatever happened since.
            return Triggered(existing, created=False)
    if schedule.status != ScheduleStatus.ACTIVE:
        raise ConflictError(
            "status",
            str(schedule.status),
            f"schedule {schedule.id} ({schedule.name!r}) is inactive, so it is not triggered "
            "(Mage would silently re-activate it; here a paused schedule stays paused)",
            f"Activate it first: PUT mage/api/pipeline_schedules/{schedule.id} with "
            '{"pipeline_schedule": {"status": "active"}}, or in Python '
            f"PipelineSchedule.query.get({schedule.id}).update(status='active').",
        )
    settings = with_defaults(schedule.settings)
    if settings["skip_if_previous_running"]:
        busy = _unfinished_run(store, schedule.id)
        if busy is not None:
            busy_id, busy_status = busy
            raise ConflictError(
                "settings.skip_if_previous_running",
                True,
                f"run {busy_id} of schedule {schedule.id} is still {busy_status}, and the "
                "schedule skips a trigger while a previous run is unfinished; no run was "
                "created",
                f"Wait until run {busy_id} ends (GET mage/api/pipeline_runs/{busy_id}) and "
                "trigger again, or turn the setting off: PUT mage/api/pipeline_schedules/"
                f'{schedule.id} with {{"pipeline_schedule": {{"settings": '
                '{"skip_if_previous_running": false}}}.',
            )
    require_notebook(project_dir_of(store), schedule.pipeline_uuid)
    # API runs carry microseconds in their execution date, so their partitions never collide.
    when = to_utc(now) if now is not None else utcnow()
    values: dict[str, Any] = {
        "pipeline_schedule_id": schedule.id,
        "pipeline_uuid": schedule.pipeline_uuid,
        "execution_date": when,
        "status": PipelineRunStatus.INITIAL,
        "variables": run_variables,
        "event_variables": event,
        "run_key": run_key or f"api:{schedule.id}:call:{uuid.uuid4().hex}",
    }
    if store.is_sqlite:
        with _SQLITE_WRITE_TURN:
            run, created = insert_run_once(store, values)
    else:
        run, created = insert_run_once(store, values)
    return Triggered(run, created)


def _run_with_key(store: Store, run_key: str) -> RunRecord | None:
    with store.engine.connect() as connection:
        row = connection.execute(_RUN_BY_KEY, {"run_key": run_key}).first()
    return None if row is None else from_row(RunRecord, row)


def _unfinished_run(store: Store, schedule_id: int) -> tuple[int, str] | None:
    """The oldest initial/running run of the schedule that is not a backfill's: (id, status;
    ``queued`` for an initial run an executor has taken)."""
    with store.engine.connect() as connection:
        row = connection.execute(_UNFINISHED_RUN, {"schedule_id": schedule_id}).first()
    if row is None:
        return None
    status = str(row[1])
    if status == PipelineRunStatus.INITIAL.value and row[2] is not None:
        status = "queued"
    return int(row[0]), status


# --------------------------------------------------------------------------------------------
# Finding schedules (trigger_pipeline, CLI)
# --------------------------------------------------------------------------------------------


def api_schedule_for_pipeline(
    store: Store, pipeline_uuid: str, name: str | None = None, *, now: datetime | None = None
) -> ScheduleRecord:
    """The API schedule called ``name`` (default :data:`DEFAULT_SCHEDULE_NAME`) of
    ``pipeline_uuid``, created active when missing (Mage's ``trigger_pipeline``)."""
    wanted = DEFAULT_SCHEDULE_NAME if name is None else fields.name(name, "schedule_name")
    pipeline = fields.pipeline_uuid(pipeline_uuid)
    for _attempt in range(2):
        found = find_schedule(store, pipeline, wanted)
        if found is not None:
            if found.schedule_type != ScheduleType.API:
                raise ConflictError(
                    "schedule_name",
                    wanted,
                    f"pipeline {pipeline!r} already has a {found.schedule_type!s} schedule with "
                    "this "
                    f"name (id {found.id}); trigger_pipeline needs an API schedule",
                    "Pass another schedule_name, e.g. schedule_name='api_from_code'.",
                )
            return found
        try:
            created = create_schedule(
                store,
                now=now,
                name=wanted,
                pipeline_uuid=pipeline,
                schedule_type=ScheduleType.API,
                status=ScheduleStatus.ACTIVE,
                start_time=to_utc(now) if now is not None else utcnow(),
            )
        except ConflictError:
            continue  # another process created it meanwhile: read it back
        # The clear token is not kept: trigger_pipeline needs none, and one can be rotated.
        return get_schedule(store, created.id)
    raise ConflictError(
        "schedule_name",
        wanted,
        "the schedule was created and removed again while it was being looked up",
        "Call trigger_pipeline again.",
    )


def find_schedule_by_ref(
    store: Store, ref: str, pipeline_uuid: str | None = None
) -> ScheduleRecord:
    """A schedule by id (all digits) or by name; ``pipeline_uuid`` narrows a name (and must
    match an id's schedule). A name two pipelines share needs ``pipeline_uuid``."""
    text = ref.strip()
    pipeline = None if pipeline_uuid is None else fields.pipeline_uuid(pipeline_uuid, "--pipeline")
    candidates: list[ScheduleRecord] = []
    if text.isdigit() and len(text) < 19:
        try:
            by_id = get_schedule(store, int(text))
        except NotFoundError:
            pass
        else:
            if pipeline is None or by_id.pipeline_uuid == pipeline:
                return by_id
    candidates = [
        schedule
        for schedule in list_schedules(store, pipeline_uuid=pipeline)
        if schedule.name == text
    ]
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        pipelines = ", ".join(sorted(schedule.pipeline_uuid for schedule in candidates))
        raise ValidationError(
            "--pipeline",
            None,
            f"{len(candidates)} pipelines have a schedule called {text!r} ({pipelines})",
            f"Say which: --pipeline {candidates[0].pipeline_uuid}, or give the schedule id.",
        )
    where = "" if pipeline is None else f" of pipeline {pipeline!r}"
    known = [
        f"{schedule.id} {schedule.name} ({schedule.pipeline_uuid})"
        for schedule in list_schedules(store, pipeline_uuid=pipeline)
    ]
    raise NotFoundError(
        f"No schedule with id or name {text!r}{where}. "
        + (f"Schedules: {'; '.join(known[:10])}." if known else "There are no schedules yet.")
    )


# --------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------


def run_progress(store: Store, run_id: int) -> RunProgress:
    """A run and its block runs (one call, for polling)."""
    return RunProgress(get_run(store, run_id), block_runs(store, run_id))


def scheduler_active(store: Store, now: datetime | None = None) -> bool:
    """Whether some scheduler holds this store's leader lease (so a new run will execute)."""
    held = leases.holder(store, leases.LEADER)
    if held is None:
        return False
    current = to_utc(now) if now is not None else utcnow()
    return to_utc(held[1]) > current


# Async twins: the same calls, with the database work off the caller's event loop.
atrigger_with_token = twin(trigger_with_token)
atrigger_schedule = twin(trigger_schedule)
aapi_schedule_for_pipeline = twin(api_schedule_for_pipeline)
afind_schedule_by_ref = twin(find_schedule_by_ref)
arun_progress = twin(run_progress)
ascheduler_active = twin(scheduler_active)
