"""The ``settings`` dict of a schedule: every key, its type, default and meaning — in one table.

The README's settings table and the validation errors are generated from :data:`SETTINGS`, so
documentation and behaviour cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mage_nb_sched.core.datetimes import load_zone
from mage_nb_sched.core.enums import PipelineRunStatus
from mage_nb_sched.core.errors import ValidationError

TIMEOUT_STATUSES = (PipelineRunStatus.FAILED.value, PipelineRunStatus.CANCELLED.value)
LIMIT_REACHED_ACTIONS = ("wait", "skip")


@dataclass(frozen=True)
class Setting:
    """One allowed key of ``settings``."""

    key: str
    default: Any
    example: Any
    help: str
    check: Callable[[str, Any], Any]


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(
            f"settings.{key}", value, "expected true or false", f"Use e.g. {{'{key}': True}}."
        )
    return value


def _int(minimum: int) -> Callable[[str, Any], Any]:
    def check(key: str, value: Any) -> int | None:
        example = max(minimum, 1) * 60 if "timeout" in key else max(minimum, 1)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValidationError(
                f"settings.{key}",
                value,
                f"expected a whole number >= {minimum}",
                f"Use e.g. {{'{key}': {example}}}.",
            )
        return value

    return check


def _number(minimum: float) -> Callable[[str, Any], Any]:
    def check(key: str, value: Any) -> float | int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
            raise ValidationError(
                f"settings.{key}",
                value,
                f"expected a number >= {minimum}",
                f"Use e.g. {{'{key}': 30}}.",
            )
        return value

    return check


def _choice(options: tuple[str, ...]) -> Callable[[str, Any], Any]:
    def check(key: str, value: Any) -> str:
        text = str(getattr(value, "value", value))
        if text not in options:
            raise ValidationError(
                f"settings.{key}",
                value,
                f"must be one of {', '.join(options)}",
                f"Use e.g. {{'{key}': '{options[0]}'}}.",
            )
        return text

    return check


def _timezone(key: str, value: Any) -> str:
    load_zone(value, f"settings.{key}")
    return str(value)


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
        _int(1),
    ),
    Setting(
        "timeout_status",
        "failed",
        "cancelled",
        "Status given to a run that timed out: `failed` or `cancelled`.",
        _choice(TIMEOUT_STATUSES),
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
        _timezone,
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
        _int(1),
    ),
    Setting(
        "pipeline_run_limit", None, 1, "Most runs of this schedule executing at once.", _int(1)
    ),
    Setting(
        "pipeline_run_limit_all_triggers",
        None,
        2,
        "Most runs of this pipeline executing at once, across all its schedules.",
        _int(1),
    ),
    Setting("block_run_limit", None, 2, "Most blocks of one run executing at once.", _int(1)),
    Setting(
        "on_pipeline_run_limit_reached",
        "wait",
        "skip",
        "When a limit is reached: `wait` "
        "(queue the run, oldest first) or `skip` (record it cancelled).",
        _choice(LIMIT_REACHED_ACTIONS),
    ),
    Setting("retries", 0, 2, "How often a failed block is retried.", _int(0)),
    Setting("retry_delay", 0, 30, "Seconds before the first retry.", _number(0)),
    Setting("retry_exponential_backoff", False, True, "Double the delay after each retry.", _bool),
    Setting("block_timeout", None, 600, "Seconds one block may take.", _int(1)),
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
    lines = ["| setting | default | example | meaning |", "|---|---|---|---|"]
    for setting in SETTINGS:
        lines.append(
            f"| `{setting.key}` | `{setting.default!r}` | `{setting.example!r}` | {setting.help} |"
        )
    return "\n".join(lines)
