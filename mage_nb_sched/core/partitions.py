"""Execution partitions: the folder name a run's outputs and logs live under."""

from __future__ import annotations

from datetime import datetime


def execution_partition(schedule_id: int | None, execution_date: datetime) -> str:
    """``<schedule id>/<execution date %Y%m%dT%H%M%S>`` (``manual/...`` without a schedule).

    ``_%f`` is appended when the date has microseconds (runs made by hand, by API or by an
    event), so two such runs in one second never share a folder.
    """
    stamp = execution_date.strftime("%Y%m%dT%H%M%S")
    if execution_date.microsecond:
        stamp += execution_date.strftime("_%f")
    owner = "manual" if schedule_id is None else str(schedule_id)
    return f"{owner}/{stamp}"
