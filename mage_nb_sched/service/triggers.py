"""Triggers as code: ``<notebook stem>.triggers.yaml`` beside each notebook, synced both ways.

The file has Mage's shape::

    triggers:
    - name: nightly_etl
      schedule_type: time
      schedule_interval: '@daily'
      start_time: 2024-01-01T02:00:00+00:00
      status: active
      variables: {env: production}
      sla: 7200

:func:`sync_triggers` applies every file to the store (creating, updating and deleting the
schedules that came from files); schedules that came from a file write their changes back to it.
API tokens are never written to a file: a ``token`` found in one is applied (hashed) and removed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from mage_nb_sched.core.clock import utcnow
from mage_nb_sched.core.datetimes import coerce_datetime, to_utc
from mage_nb_sched.core.enums import ScheduleInterval, ScheduleStatus, ScheduleType
from mage_nb_sched.core.errors import MageNbSchedError, ValidationError
from mage_nb_sched.core.project import (
    TRIGGERS_SUFFIX,
    normalize_pipeline_uuid,
    notebook_path,
    pipeline_uuid_for,
)
from mage_nb_sched.service import schedules
from mage_nb_sched.service.fields import SCHEDULE_VALUE_CHECKS
from mage_nb_sched.service.records import ScheduleRecord
from mage_nb_sched.store.engine import Store

#: Keys of a trigger entry, in the order they are written: the schedule's own value fields.
TRIGGER_KEYS = tuple(SCHEDULE_VALUE_CHECKS)


@dataclass
class Trigger:
    """Mage's trigger config: the YAML/dataclass form of a schedule."""

    name: str
    pipeline_uuid: str | None = None
    schedule_type: ScheduleType | str = ScheduleType.TIME
    schedule_interval: ScheduleInterval | str | None = None
    start_time: datetime | str | None = None
    status: ScheduleStatus | str = ScheduleStatus.INACTIVE
    last_enabled_at: datetime | str | None = None
    variables: dict[str, Any] | None = None
    sla: int | None = None
    settings: dict[str, Any] | None = None
    description: str | None = None
    token: str | None = field(default=None, repr=False)
    #: Mage's event matchers (``[{"name"?, "event_type": "aws_event", "pattern": {...}}]``) of
    #: an event schedule; None leaves the stored ones as they are.
    event_matchers: list[dict[str, Any]] | None = None

    def schedule_values(self) -> dict[str, Any]:
        """The keyword arguments for ``PipelineSchedule.create`` / ``update``."""
        values = {key: getattr(self, key) for key in TRIGGER_KEYS}
        if self.token is not None:
            values["token"] = self.token
        if self.event_matchers is not None:
            values["event_matchers"] = self.event_matchers
        return values

    def to_yaml_entry(self) -> dict[str, Any]:
        """The entry written to the file: plain strings, no token, no empty keys."""
        entry: dict[str, Any] = {}
        for key in TRIGGER_KEYS:
            value = getattr(self, key)
            if value is None or value == {}:
                continue
            if isinstance(value, datetime):
                value = to_utc(value).isoformat()
            elif hasattr(value, "value"):
                value = value.value
            entry[key] = value
        if self.event_matchers:
            entry["event_matchers"] = [_matcher_entry(m) for m in self.event_matchers]
        return entry

    @classmethod
    def from_yaml_entry(cls, entry: object, pipeline_uuid: str) -> Trigger:
        """Build a trigger from one file entry; unknown keys are a clear error."""
        if not isinstance(entry, dict):
            raise ValidationError(
                "triggers[]",
                entry,
                "each trigger must be a mapping",
                "Write entries like '- name: nightly\\n  schedule_interval: \"@daily\"'.",
            )
        known = {f.name for f in fields(cls)} - {"pipeline_uuid"}
        for key in entry:
            if key not in known:
                raise ValidationError(
                    str(key),
                    entry[key],
                    "unknown trigger key",
                    f"Valid keys are: {', '.join(sorted(known))}.",
                )
        if "name" not in entry:
            raise ValidationError("name", None, "a trigger needs a name", "Add 'name: nightly'.")
        return cls(pipeline_uuid=pipeline_uuid, **entry)

    @classmethod
    def from_schedule(cls, schedule: Any) -> Trigger:
        return cls(
            pipeline_uuid=schedule.pipeline_uuid,
            **{key: getattr(schedule, key) for key in TRIGGER_KEYS},
        )


def _matcher_entry(matcher: dict[str, Any]) -> dict[str, Any]:
    """An event matcher as written to a file: no database id, no empty name."""
    return {
        key: matcher[key]
        for key in ("name", "event_type", "pattern")
        if matcher.get(key) is not None
    }


def triggers_path(project_dir: Path, pipeline_uuid: str) -> Path:
    """``<notebook stem>.triggers.yaml`` beside the pipeline's notebook."""
    notebook = notebook_path(project_dir, pipeline_uuid)
    return notebook.with_name(notebook.name[: -len(".ipynb")] + TRIGGERS_SUFFIX)


def read_triggers_file(path: Path) -> list[Any]:
    """The raw ``triggers:`` list of a file (empty for an empty file)."""
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValidationError(
            str(path), None, f"not valid YAML ({err})", "Fix the syntax; see the README example."
        ) from err
    if content is None:
        return []
    if not isinstance(content, dict) or not isinstance(content.get("triggers", []), list):
        raise ValidationError(
            str(path),
            None,
            "expected a mapping with a 'triggers:' list",
            "Write 'triggers:' followed by '- name: ...' entries.",
        )
    return list(content.get("triggers") or [])


def write_triggers_file(path: Path, entries: list[dict[str, Any]]) -> None:
    """Write the file atomically (a reader never sees half a file)."""
    text = yaml.safe_dump({"triggers": entries}, sort_keys=False, allow_unicode=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def persist_trigger(store: Store, root: Path, trigger: Trigger, pipeline_uuid: str) -> Trigger:
    """Write ``trigger`` into the pipeline's ``triggers.yaml`` (replacing an entry of the same
    name) and apply it to the store right away. Returns the trigger as written."""
    uuid = normalize_pipeline_uuid(pipeline_uuid)
    trigger.pipeline_uuid = uuid
    schedule = apply_trigger(store, trigger)
    path = triggers_path(root, uuid)
    entries = read_triggers_file(path) if path.exists() else []
    written = _put_entry(entries, Trigger.from_schedule(schedule).to_yaml_entry())
    write_triggers_file(path, entries)
    return Trigger.from_yaml_entry(written, uuid)


def _put_entry(
    entries: list[Any], written: dict[str, Any], keep_matchers: bool = False
) -> dict[str, Any]:
    """Replace the entry of ``written``'s name in ``entries`` (else append it); what was put.

    ``last_enabled_at`` is written only where the file already tracks it: the store stamps it
    at every activation, and a stamp in a file under version control would make every pause
    and resume a diff. ``keep_matchers`` keeps the file's own ``event_matchers``."""
    for index, entry in enumerate(entries):
        if isinstance(entry, dict) and entry.get("name") == written.get("name"):
            if "last_enabled_at" not in entry:
                written.pop("last_enabled_at", None)
            if keep_matchers and "event_matchers" in entry:
                written["event_matchers"] = entry["event_matchers"]
            entries[index] = written
            return written
    written.pop("last_enabled_at", None)
    entries.append(written)
    return written


def apply_trigger(store: Store, trigger: Trigger) -> ScheduleRecord:
    """Create or update the schedule of a trigger; returns the schedule."""
    assert trigger.pipeline_uuid is not None
    existing = schedules.find_schedule(store, trigger.pipeline_uuid, trigger.name)
    values = trigger.schedule_values()
    if existing is None:
        return schedules.create_schedule(
            store,
            pipeline_uuid=trigger.pipeline_uuid,
            in_code=True,
            **{k: v for k, v in values.items() if v is not None},
        )
    changes = {
        key: value
        for key, value in values.items()
        if key != "name" and _differs(getattr(existing, key, None), value, key)
    }
    if "event_matchers" in changes and not _matchers_differ(store, existing.id, values):
        del changes["event_matchers"]
    if "last_enabled_at" in changes and values.get("last_enabled_at") is None:
        del changes["last_enabled_at"]  # the file does not track activation stamps
    if existing.orphaned_at is not None:
        # Its file is back: the schedule is restored from it (status included).
        changes["orphaned_at"] = None
        changes["status"] = values.get("status") or ScheduleStatus.INACTIVE
    if changes or not existing.in_code:
        return schedules.update_schedule(
            store, existing.id, sync_file=False, in_code=True, **changes
        )
    return existing


def _matchers_differ(store: Store, schedule_id: int, values: dict[str, Any]) -> bool:
    """Whether the file's event matchers are not the stored ones (patterns and types; a name
    the file leaves out is generated when stored, so names count only when the file has
    them)."""
    from mage_nb_sched.service.events import clean_event_matchers, read_event_matchers

    wanted = clean_event_matchers(values["event_matchers"])
    stored = read_event_matchers(store, [schedule_id]).get(schedule_id, [])
    if len(wanted) != len(stored):
        return True
    for want, have in zip(wanted, stored, strict=True):
        if (want["event_type"], want["pattern"]) != (have["event_type"], have["pattern"]):
            return True
        if want.get("name") is not None and want["name"] != have["name"]:
            return True
    return False


def _differs(current: Any, wanted: Any, key: str) -> bool:
    if key == "token":
        return wanted is not None
    if (
        isinstance(current, datetime)
        or (isinstance(wanted, (datetime, str))
        and key in ("start_time", "last_enabled_at"))
    ):
        try:
            wanted_dt = None if wanted is None else coerce_datetime(wanted, key)
        except ValidationError:
            return True
        return bool(current != wanted_dt)
    current_value = getattr(current, "value", current)
    wanted_value = getattr(wanted, "value", wanted)
    if key in ("variables", "settings"):
        return bool((current_value or {}) != (wanted_value or {}))
    return bool(current_value != wanted_value)


@dataclass
class SyncReport:
    """What :func:`sync_triggers` did, and which entries it could not apply (and why)."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    #: Schedules whose file disappeared: kept, deactivated, with their runs (see README).
    orphaned: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


#: Folders that hold dependencies or caches, never notebooks' triggers: not walked.
_NOT_SCANNED = frozenset({"node_modules", "__pycache__", "site-packages"})


def trigger_files(root: Path) -> dict[Path, int]:
    """Every ``*.triggers.yaml`` under ``root`` with its modification time (ns). Hidden folders
    (the data dir, ``.git``, checkpoints) are not entered, so runs piling up there cost nothing."""
    found: dict[Path, int] = {}
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [
            name
            for name in subfolders
            if not name.startswith(".") and name not in _NOT_SCANNED
        ]
        for name in files:
            if name.endswith(TRIGGERS_SUFFIX):
                path = Path(folder, name)
                try:
                    found[path] = path.stat().st_mtime_ns
                except OSError:  # deleted while walking
                    continue
    return found


def sync_triggers(store: Store, root: Path) -> SyncReport:
    """Reconcile every ``*.triggers.yaml`` under ``root`` (the project dir) with the store.

    Entries create or update schedules. An entry removed from a file that still exists deletes
    its schedule. A file that disappeared (a branch switch, a renamed notebook) deletes nothing:
    its schedules are deactivated and marked orphaned (``orphaned_at``), runs and backfills kept,
    until the file comes back (they are restored from it) or they are deleted explicitly. A bad
    entry — or a second entry with a name already used in the file — is reported in ``errors``
    and the others still sync; a file that cannot be read at all leaves its pipeline's schedules
    untouched.
    """
    report = SyncReport()
    seen: set[tuple[str, str]] = set()
    unreadable: set[str] = set()
    present: set[str] = set()
    for path in sorted(trigger_files(root)):
        notebook = path.with_name(path.name[: -len(TRIGGERS_SUFFIX)] + ".ipynb")
        uuid = pipeline_uuid_for(root, notebook)
        present.add(uuid)
        names_in_file: set[str] = set()
        try:
            entries = read_triggers_file(path)
        except MageNbSchedError as err:
            report.errors.append(f"{path}: {err}")
            unreadable.add(uuid)
            continue
        cleaned_entries: list[Any] = []
        rewrite = False
        for position, entry in enumerate(entries):
            label = f"{path.name}[{position}]"
            if isinstance(entry, dict) and entry.get("name") is not None:
                label = f"{uuid}:{entry['name']}"  # name the entry even when it is malformed
            try:
                trigger = Trigger.from_yaml_entry(entry, uuid)
                label = f"{uuid}:{trigger.name}"
                if trigger.name in names_in_file:
                    raise ValidationError(
                        "name",
                        trigger.name,
                        f"entry {position} repeats a name used earlier in {path.name}",
                        "Give each trigger in a file its own name; the first entry is kept.",
                    )
                names_in_file.add(trigger.name)
                seen.add((uuid, trigger.name))
                before = _snapshot(store, uuid, trigger.name)
                apply_trigger(store, trigger)
                after = _snapshot(store, uuid, trigger.name)
                if before is None:
                    report.created.append(label)
                elif before != after:
                    report.updated.append(label)
                if trigger.token is not None:
                    rewrite = True
                    entry = {k: v for k, v in entry.items() if k != "token"}
            except MageNbSchedError as err:
                report.errors.append(f"{label}: {err}")
                if isinstance(entry, dict) and "name" in entry:
                    seen.add((uuid, str(entry["name"])))  # keep its schedule; the entry is bad
            cleaned_entries.append(entry)
        if rewrite:
            write_triggers_file(path, cleaned_entries)
    for schedule in schedules.list_schedules(store, in_code=True):
        key = (schedule.pipeline_uuid, schedule.name)
        label = f"{schedule.pipeline_uuid}:{schedule.name}"
        if key in seen or schedule.pipeline_uuid in unreadable:
            continue
        try:
            if schedule.pipeline_uuid in present:
                # The file is there and no longer has the entry: the user removed it.
                report.deleted.append(label)
                schedules.delete_schedule(store, schedule.id, sync_file=False)
            elif schedule.orphaned_at is None:
                report.orphaned.append(label)
                schedules.update_schedule(
                    store,
                    schedule.id,
                    sync_file=False,
                    status=ScheduleStatus.INACTIVE,
                    orphaned_at=utcnow(),
                )
        except MageNbSchedError as err:
            report.errors.append(f"{label}: {err}")
    return report


def _snapshot(store: Store, pipeline_uuid: str, name: str) -> tuple[Any, ...] | None:
    record = schedules.find_schedule(store, pipeline_uuid, name)
    if record is None:
        return None
    return (
        record.schedule_type,
        record.schedule_interval,
        record.start_time,
        record.status,
        record.variables,
        record.sla,
        record.settings,
        record.description,
        record.token_hint,
    )


def write_back(
    root: Path,
    schedule: ScheduleRecord | Any,
    event_matchers: list[dict[str, Any]] | None = None,
) -> None:
    """Write an in-code schedule's current values into its file (store → YAML). The entry's
    ``event_matchers`` are replaced when given, else kept as the file has them."""
    path = triggers_path(root, schedule.pipeline_uuid)
    entries = read_triggers_file(path) if path.exists() else []
    trigger = Trigger.from_schedule(schedule)
    trigger.event_matchers = event_matchers
    _put_entry(entries, trigger.to_yaml_entry(), keep_matchers=event_matchers is None)
    write_triggers_file(path, entries)


def remove_from_file(root: Path, pipeline_uuid: str, name: str) -> None:
    """Remove a deleted schedule's entry from its file (deletions sync to code)."""
    path = triggers_path(root, pipeline_uuid)
    if not path.exists():
        return
    entries = read_triggers_file(path)
    kept = [e for e in entries if not (isinstance(e, dict) and e.get("name") == name)]
    if len(kept) != len(entries):
        write_triggers_file(path, kept)
