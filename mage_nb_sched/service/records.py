"""Plain, immutable records: what the service takes and gives back — never live ORM rows.

A record is a frozen dataclass of one row's columns (with enums as their members and every
datetime UTC-aware). Holding one holds no session and no connection, so a tornado handler, a
widget or another thread can keep it as long as it likes. :func:`to_json` (REST) and
:func:`to_row` (DataFrames for the magics, widgets and CLI) are the one place a record is turned
into something else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from mage_nb_sched.core.enums import (
    BackfillIntervalType,
    BackfillStatus,
    BlockRunStatus,
    PipelineRunStatus,
    ScheduleStatus,
    ScheduleType,
)
from mage_nb_sched.core.partitions import execution_partition


@dataclasses.dataclass(frozen=True)
class ScheduleRecord:
    """One ``pipeline_schedule`` row. ``token`` is the clear API token, set only on the record
    that created or rotated it (shown once); ``token_hash`` never leaves the service."""

    id: int
    name: str
    pipeline_uuid: str
    schedule_type: ScheduleType
    schedule_interval: str | None
    start_time: datetime | None
    status: ScheduleStatus
    last_enabled_at: datetime | None
    variables: dict[str, Any] | None
    sla: int | None
    settings: dict[str, Any] | None
    description: str | None
    token_hint: str | None
    in_code: bool
    next_due_at: datetime
    created_at: datetime
    updated_at: datetime
    #: When the ``triggers.yaml`` that defined it disappeared (kept inactive until it returns).
    orphaned_at: datetime | None = None
    token: str | None = None


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One ``pipeline_run`` row."""

    id: int
    pipeline_schedule_id: int | None
    pipeline_uuid: str
    execution_date: datetime
    status: PipelineRunStatus
    started_at: datetime | None
    completed_at: datetime | None
    variables: dict[str, Any] | None
    event_variables: dict[str, Any] | None
    metrics: dict[str, Any] | None
    backfill_id: int | None
    sla_breached: bool
    run_key: str
    owner: str | None
    finalized_at: datetime | None
    attempts: int
    created_at: datetime
    updated_at: datetime

    @property
    def execution_partition(self) -> str:
        """The folder of the run's outputs and logs (see :mod:`mage_nb_sched.core.partitions`)."""
        return execution_partition(self.pipeline_schedule_id, self.execution_date)

    @property
    def passed_sla(self) -> bool:
        """True while the run is within its schedule's SLA (the seed's meaning)."""
        return not self.sla_breached


@dataclasses.dataclass(frozen=True)
class BlockRunRecord:
    """One ``block_run`` row."""

    id: int
    pipeline_run_id: int
    block_uuid: str
    status: BlockRunStatus
    started_at: datetime | None
    completed_at: datetime | None
    error: str | None
    metrics: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


@dataclasses.dataclass(frozen=True)
class BackfillRecord:
    """One ``backfill`` row."""

    id: int
    name: str
    pipeline_uuid: str
    pipeline_schedule_id: int | None
    start_datetime: datetime
    end_datetime: datetime
    interval_type: BackfillIntervalType
    interval_units: int
    status: BackfillStatus
    started_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    variables: dict[str, Any] | None
    settings: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


Record = ScheduleRecord | RunRecord | BlockRunRecord | BackfillRecord
R = TypeVar("R", ScheduleRecord, RunRecord, BlockRunRecord, BackfillRecord)

_ENUMS: dict[type[Any], dict[str, type[enum.Enum]]] = {
    ScheduleRecord: {"schedule_type": ScheduleType, "status": ScheduleStatus},
    RunRecord: {"status": PipelineRunStatus},
    BlockRunRecord: {"status": BlockRunStatus},
    BackfillRecord: {"interval_type": BackfillIntervalType, "status": BackfillStatus},
}
_FIELDS: dict[type[Any], tuple[str, ...]] = {
    kind: tuple(f.name for f in dataclasses.fields(kind) if f.name != "token")
    for kind in _ENUMS
}


def from_row(kind: type[R], row: Mapping[str, Any] | Any, **extra: Any) -> R:
    """A record of ``kind`` from a Core row (``row._mapping``), a mapping or an object with the
    columns as attributes. Statuses stored as plain strings come back as enum members."""
    mapping: Mapping[str, Any] | None = getattr(row, "_mapping", None)
    if mapping is None and isinstance(row, Mapping):
        mapping = row
    values: dict[str, Any] = {}
    for name in _FIELDS[kind]:
        value = mapping[name] if mapping is not None else getattr(row, name)
        enum_class = _ENUMS[kind].get(name)
        if enum_class is not None and value is not None and not isinstance(value, enum_class):
            # An unknown value is shown as stored, never hidden.
            with contextlib.suppress(ValueError):
                value = enum_class(value)
        values[name] = value
    values.update(extra)
    return kind(**values)


def _json_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def to_json(record: Record, **computed: Any) -> dict[str, Any]:
    """A record as a JSON-ready dict (ISO datetimes, enum values), with ``computed`` fields
    (e.g. Mage's ``next_pipeline_run_date``) added. ``token`` appears only when set."""
    result = {
        f.name: _json_value(getattr(record, f.name))
        for f in dataclasses.fields(record)
        if f.name != "token"
    }
    if isinstance(record, RunRecord):
        result["execution_partition"] = record.execution_partition
        result["passed_sla"] = record.passed_sla
    if isinstance(record, ScheduleRecord) and record.token is not None:
        result["token"] = record.token
    result.update({key: _json_value(value) for key, value in computed.items()})
    return result


def to_row(record: Record, **computed: Any) -> dict[str, Any]:
    """A record as one DataFrame row: enum values as strings, datetimes kept tz-aware (pandas
    makes them ``datetime64[ns, UTC]`` columns), computed fields added."""
    result: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        if f.name == "token":
            continue
        value = getattr(record, f.name)
        result[f.name] = value.value if isinstance(value, enum.Enum) else value
    if isinstance(record, RunRecord):
        result["execution_partition"] = record.execution_partition
        result["passed_sla"] = record.passed_sla
        started, completed = record.started_at, record.completed_at
        result["duration"] = (
            None if started is None or completed is None else completed - started
        )
    result.update(computed)
    return result
