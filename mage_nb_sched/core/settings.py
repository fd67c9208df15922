"""The ``settings`` dict of a schedule: every key, its type, default and meaning — in one table.

The README's settings table and the validation errors are generated from :data:`SETTINGS`, so
documentation and behaviour cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from mage_nb_sched.core.datetimes import load_zone
from mage_nb_sched.core.enums import PipelineRunStatus
from mage_nb_sched.core.errors import ValidationError

TIMEOUT_STATUSES = (PipelineRunStatus.FAILED.value, PipelineRunStatus.CANCELLED.value)
LIMIT_REACHED_ACTIONS = ("wait", "skip")


#: Longest duration any field or setting may give, in seconds: one (365-day) year. Any bigger
#: ``sla``/``timeout``/``block_timeout``/``retry_delay`` is surely a mistake, and with every
#: instant capped at year 2999 (see :mod:`mage_nb_sched.core.datetimes`) ``instant + duration``
#: can never overflow.
MAX_DURATION_SECONDS = 31_536_000
#: Most retries of a block. More is never useful, and with exponential backoff the delay factor
#: ``2 ** retries`` stays a finite float.
MAX_RETRIES = 100
#: Most missed periods created by one catch-up, and the most runs/blocks a limit can allow at
#: once: far above any real need, small enough to keep one scheduler pass bounded.
MAX_COUNT = 10_000


class Check(Protocol):
    """Validates one setting's value; ``allowed`` describes the valid values for the docs."""

    @property
    def allowed(self) -> str: ...

    def __call__(self, key: str, value: Any) -> Any: ...


@dataclass(frozen=True)
class Setting:
    """One allowed key of ``settings``."""

    key: str
    default: Any
    example: Any
    help: str
    check: Check

    @property
    def allowed(self) -> str:
        return self.check.allowed


def _refuse(key: str, value: Any, problem: str, fix: str) -> ValidationError:
    return ValidationError(f"settings.{key}", value, problem, fix)


class _Bool:
    allowed = "`True` or `False`"

    def __call__(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise _refuse(key, value, "expected true or false", f"Use e.g. {{'{key}': True}}.")
        return value


def _limit_text(number: int) -> str:
    text = f"{number:,}"
    return f"{text} (one year)" if number == MAX_DURATION_SECONDS else text


@dataclass(frozen=True)
class _Whole:
    """A whole number in ``minimum`` .. ``maximum`` (``None`` too when ``optional``)."""

    minimum: int
    maximum: int
    example: int
    optional: bool = True

    @property
    def allowed(self) -> str:
        text = f"whole number {self.minimum:,} to {_limit_text(self.maximum)}"
        return f"{text}, or `None`" if self.optional else text

    def __call__(self, key: str, value: Any) -> int | None:
        if value is None and self.optional:
            return None
        fix = (
            f"Use a whole number from {self.minimum:,} to {_limit_text(self.maximum)}, "
            f"e.g. {{'{key}': {self.example}}}."
        )
        if isinstance(value, bool):
            raise _refuse(key, value, "expected a whole number, not true/false", fix)
        if not isinstance(value, int):
            raise _refuse(key, value, f"expected a whole number >= {self.minimum}", fix)
        if value < self.minimum:
            raise _refuse(key, value, f"below the minimum of {self.minimum:,}", fix)
        if value > self.maximum:
            raise _refuse(key, value, f"above the maximum of {self.maximum:,}", fix)
        return int(value)


@dataclass(frozen=True)
class _Seconds:
    """A finite number of seconds (int or float) in ``minimum`` .. ``maximum``."""

    minimum: int
    maximum: int
    example: int

    @property
    def allowed(self) -> str:
        return f"number {self.minimum:,} to {_limit_text(self.maximum)}"

    def __call__(self, key: str, value: Any) -> float | int:
        fix = (
            f"Use a number of seconds from {self.minimum:,} to {_limit_text(self.maximum)}, "
            f"e.g. {{'{key}': {self.example}}}."
        )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _refuse(key, value, f"expected a number >= {self.minimum}", fix)
        if isinstance(value, float) and not math.isfinite(value):
            raise _refuse(key, value, "NaN and infinity are not allowed", fix)
        if value < self.minimum:
            raise _refuse(key, value, f"below the minimum of {self.minimum:,}", fix)
        if value > self.maximum:
            raise _refuse(key, value, f"above the maximum of {self.maximum:,}", fix)
        return int(value) if isinstance(value, int) else float(value)


@dataclass(frozen=True)
class _Choice:
    options: tuple[str, ...]

    @property
    def allowed(self) -> str:
        return " or ".join(f"`{option}`" for option in self.options)

    def __call__(self, key: str, value: Any) -> str:
        text = str(getattr(value, "value", value))
        if text not in self.options:
            raise _refuse(
                key,
                value,
                f"must be one of {', '.join(self.options)}",
                f"Use e.g. {{'{key}': '{self.options[0]}'}}.",
            )
        return text


class _Timezone:
    allowed = "IANA zone name"

    def __call__(self, key: str, value: Any) -> str:
        load_zone(value, f"settings.{key}")
        return str(value)


_bool = _Bool()


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "skip_if_previous_running",
        False,
        True,
        "Record the period's run as cancelled "
        "instead of starting it while an earlier run of the schedule is still running.",
        _bool,
    ),
    Setting(
        "timeout",
        None,
        1800,
        "Seconds a run may take from its start; then its kernel is "
        "killed and the run gets `timeout_status`.",
        _Whole(1, MAX_DURATION_SECONDS, 1800),
    ),
    Setting(
        "timeout_status",
        "failed",
        "cancelled",
        "Status given to a run that timed out: `failed` or `cancelled`.",
        _Choice(TIMEOUT_STATUSES),
    ),
    Setting(
        "landing_time_enabled",
        False,
        True,
        "@hourly/@daily/@weekly/@monthly only: "
        "`start_time` is the time the run should *finish* by; it is started early by the "
        "recent mean runtime plus half its standard deviation.",
        _bool,
    ),
    Setting(
        "create_initial_pipeline_run",
        False,
        True,
        "Also run the period that was already under way when the schedule was activated.",
        _bool,
    ),
    Setting(
        "allow_blocks_to_fail",
        False,
        True,
        "A failed block does not fail the run; later blocks still run.",
        _bool,
    ),
    Setting(
        "timezone",
        "UTC",
        "Europe/Berlin",
        "IANA zone in which periods and cron expressions are evaluated (DST-correct).",
        _Timezone(),
    ),
    Setting(
        "catchup",
        False,
        True,
        "After downtime, create every missed period (oldest first). Off (the default, as "
        "in Mage): only the current period is created.",
        _bool,
    ),
    Setting(
        "max_catchup_runs",
        100,
        24,
        "With `catchup`, at most this many (the newest) missed periods are created.",
        # Not None: the scheduler pass does int(max_catchup_runs) for every catch-up.
        _Whole(1, MAX_COUNT, 24, optional=False),
    ),
    Setting(
        "pipeline_run_limit",
        None,
        1,
        "Most runs of this schedule executing at once.",
        _Whole(1, MAX_COUNT, 1),
    ),
    Setting(
        "pipeline_run_limit_all_triggers",
        None,
        2,
        "Most runs of this pipeline executing at once, across all its schedules.",
        _Whole(1, MAX_COUNT, 2),
    ),
    Setting(
        "block_run_limit",
        None,
        2,
        "Most blocks of one run executing at once.",
        _Whole(1, MAX_COUNT, 2),
    ),
    Setting(
        "on_pipeline_run_limit_reached",
        "wait",
        "skip",
        "When a limit is reached: `wait` "
        "(queue the run, oldest first) or `skip` (record it cancelled).",
        _Choice(LIMIT_REACHED_ACTIONS),
    ),
    Setting(
        "retries",
        0,
        2,
        "How often a failed block is retried.",
        _Whole(0, MAX_RETRIES, 2),
    ),
    Setting(
        "retry_delay",
        0,
        30,
        "Seconds before the first retry.",
        _Seconds(0, MAX_DURATION_SECONDS, 30),
    ),
    Setting("retry_exponential_backoff", False, True, "Double the delay after each retry.", _bool),
    Setting(
        "block_timeout",
        None,
        600,
        "Seconds one block may take.",
        _Whole(1, MAX_DURATION_SECONDS, 600),
    ),
)

_BY_KEY = {setting.key: setting for setting in SETTINGS}


def validate_settings(settings: object) -> dict[str, Any]:
    """Check every key and value; return a normalised copy (only the keys given)."""
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        raise ValidationError(
            "settings",
            settings,
            "expected a dict",
            "Use e.g. settings={'timeout': 1800, 'skip_if_previous_running': True}.",
        )
    cleaned: dict[str, Any] = {}
    for key, value in settings.items():
        setting = _BY_KEY.get(key)
        if setting is None:
            raise ValidationError(
                f"settings.{key}",
                value,
                "unknown setting",
                f"Valid settings are: {', '.join(sorted(_BY_KEY))}.",
            )
        cleaned[key] = setting.check(key, value)
    return cleaned


def with_defaults(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every setting, defaults filled in for the ones not given."""
    merged = {setting.key: setting.default for setting in SETTINGS}
    merged.update(settings or {})
    return merged


def settings_table_markdown() -> str:
    """The settings table for the README."""
    lines = ["| setting | default | example | allowed | meaning |", "|---|---|---|---|---|"]
    for setting in SETTINGS:
        lines.append(
            f"| `{setting.key}` | `{setting.default!r}` | `{setting.example!r}` "
            f"| {setting.allowed} | {setting.help} |"
        )
    return "\n".join(lines)
