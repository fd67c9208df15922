"""String enums shared by models, triggers and front ends.

All members are ``str`` subclasses, so ``ScheduleInterval.DAILY == '@daily'`` holds and they
serialise to JSON/YAML as plain strings.
"""

from __future__ import annotations

import enum


class _StrEnum(str, enum.Enum):
    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def values(cls) -> list[str]:
        return [member.value for member in cls]


class ScheduleType(_StrEnum):
    """What fires a schedule."""

    TIME = "time"
    EVENT = "event"
    API = "api"


class ScheduleStatus(_StrEnum):
    """Whether the scheduler considers a schedule."""

    ACTIVE = "active"
    INACTIVE = "inactive"


class ScheduleInterval(_StrEnum):
    """The named intervals; any valid 5-field cron expression is accepted as well."""

    ONCE = "@once"
    HOURLY = "@hourly"
    DAILY = "@daily"
    WEEKLY = "@weekly"
    MONTHLY = "@monthly"
    ALWAYS_ON = "@always_on"


class PipelineRunStatus(_StrEnum):
    """Life cycle of one pipeline run."""

    INITIAL = "initial"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class BlockRunStatus(_StrEnum):
    """Life cycle of one block run."""

    INITIAL = "initial"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UPSTREAM_FAILED = "upstream_failed"


class BackfillStatus(_StrEnum):
    """Life cycle of a backfill."""

    INITIAL = "initial"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class BackfillIntervalType(_StrEnum):
    """Step unit of a backfill's date range."""

    SECOND = "second"
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


IN_PROGRESS_RUN_STATUSES = (PipelineRunStatus.INITIAL, PipelineRunStatus.RUNNING)
FINISHED_RUN_STATUSES = (
    PipelineRunStatus.COMPLETED,
    PipelineRunStatus.FAILED,
    PipelineRunStatus.CANCELLED,
)
