"""The run state machine: every allowed status change of a pipeline run and of a block run.

One table each. Every status change in the service, the runner, the scheduler's passes and
backfills is checked against it (:func:`check_run` / :func:`check_block`), and the database
writes are fenced on the current status (``UPDATE ... WHERE status IN (allowed sources)``), so
a change the table does not list can neither be asked for nor happen by a race.

Pipeline runs::

    initial ──start──▶ running ──▶ completed | failed | cancelled
       │                  │
       │                  └─requeue─▶ initial    (its executor died or the scheduler stopped)
       └──▶ cancelled | failed                  (cancelled before start; skip rules; a run that
                                                  could not be started)
    failed | cancelled ──retry──▶ initial        (a retry of a finished run, by hand or REST)

Block runs::

    initial ──▶ running | queued | cancelled | upstream_failed
    queued  ──▶ running | cancelled | failed      (waiting for a retry delay)
    running ──▶ completed | failed | cancelled | queued (retry)

A write that keeps the status (metrics, owner, ``finalized_at``, a retry attempt's new
``started_at``) is not a transition: staying in a status is not in the tables, and asking for
it is refused like any other change they do not list. The writers live in
:mod:`mage_nb_sched.service.transitions`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mage_nb_sched.core.enums import BlockRunStatus, PipelineRunStatus
from mage_nb_sched.core.errors import MageNbSchedError

_R = PipelineRunStatus
_B = BlockRunStatus

#: Allowed pipeline-run transitions: ``from → {to, ...}``. Terminal statuses have no way out
#: except the explicit retry path.
RUN_TRANSITIONS: Mapping[str, frozenset[str]] = {
    _R.INITIAL.value: frozenset({_R.RUNNING.value, _R.CANCELLED.value, _R.FAILED.value}),
    _R.RUNNING.value: frozenset(
        {_R.COMPLETED.value, _R.FAILED.value, _R.CANCELLED.value, _R.INITIAL.value}
    ),
    _R.COMPLETED.value: frozenset(),
    _R.FAILED.value: frozenset({_R.INITIAL.value}),
    _R.CANCELLED.value: frozenset({_R.INITIAL.value}),
}

#: Named paths through :data:`RUN_TRANSITIONS`, so callers say what they mean.
RUN_PATHS: Mapping[str, tuple[frozenset[str], str]] = {
    "start": (frozenset({_R.INITIAL.value}), _R.RUNNING.value),
    "complete": (frozenset({_R.RUNNING.value}), _R.COMPLETED.value),
    "fail": (frozenset({_R.RUNNING.value, _R.INITIAL.value}), _R.FAILED.value),
    "cancel": (frozenset({_R.RUNNING.value, _R.INITIAL.value}), _R.CANCELLED.value),
    "requeue": (frozenset({_R.RUNNING.value}), _R.INITIAL.value),
    "retry": (frozenset({_R.FAILED.value, _R.CANCELLED.value}), _R.INITIAL.value),
}

#: Allowed block-run transitions.
BLOCK_TRANSITIONS: Mapping[str, frozenset[str]] = {
    _B.INITIAL.value: frozenset(
        {_B.RUNNING.value, _B.QUEUED.value, _B.CANCELLED.value, _B.UPSTREAM_FAILED.value}
    ),
    _B.QUEUED.value: frozenset({_B.RUNNING.value, _B.CANCELLED.value, _B.FAILED.value}),
    _B.RUNNING.value: frozenset(
        {_B.COMPLETED.value, _B.FAILED.value, _B.CANCELLED.value, _B.QUEUED.value}
    ),
    _B.COMPLETED.value: frozenset(),
    _B.FAILED.value: frozenset(),
    _B.CANCELLED.value: frozenset(),
    _B.UPSTREAM_FAILED.value: frozenset(),
}

#: Statuses a run is still going in (not final).
RUN_UNFINISHED: frozenset[str] = frozenset({_R.INITIAL.value, _R.RUNNING.value})
#: Final statuses of a run.
RUN_FINISHED: frozenset[str] = frozenset({_R.COMPLETED.value, _R.FAILED.value, _R.CANCELLED.value})
#: Statuses a block run is still going in.
BLOCK_UNFINISHED: frozenset[str] = frozenset({_B.INITIAL.value, _B.QUEUED.value, _B.RUNNING.value})


class InvalidTransition(MageNbSchedError, ValueError):
    """A status change the run state machine does not allow."""

    http_status = 409

    def __init__(
        self,
        kind: str,
        current: str,
        wanted: str,
        allowed: Iterable[str],
        why: str | None = None,
    ) -> None:
        self.kind = kind
        self.current = current
        self.wanted = wanted
        self.allowed = sorted(allowed)
        if why is None:
            ways = ", ".join(self.allowed) or "none: it is final"
            why = f"From {current!r} it can go to: {ways}."
        super().__init__(f"a {kind} cannot go from {current!r} to {wanted!r}. {why}")


def _value(status: object) -> str:
    return str(getattr(status, "value", status))


def _unknown(kind: str, table: Mapping[str, frozenset[str]], status: str) -> str:
    return f"{status!r} is not a {kind} status; the statuses are: {', '.join(table)}."


def _check(kind: str, table: Mapping[str, frozenset[str]], current: object, wanted: object) -> None:
    now, then = _value(current), _value(wanted)
    allowed = table.get(now)
    if allowed is None:
        raise InvalidTransition(kind, now, then, (), _unknown(kind, table, now))
    if then not in table:
        raise InvalidTransition(kind, now, then, allowed, _unknown(kind, table, then))
    if then not in allowed:
        raise InvalidTransition(kind, now, then, allowed)


def _fence(
    kind: str,
    table: Mapping[str, frozenset[str]],
    wanted: object,
    from_statuses: Iterable[object] | None,
) -> tuple[str, ...]:
    then = _value(wanted)
    if from_statuses is None:
        if then not in table:
            raise InvalidTransition(kind, "any status", then, (), _unknown(kind, table, then))
        sources = tuple(sorted(now for now, nexts in table.items() if then in nexts))
        if not sources:
            raise InvalidTransition(kind, "any status", then, (), "Nothing leads there.")
        return sources
    sources = tuple(sorted({_value(status) for status in from_statuses}))
    if not sources:
        raise InvalidTransition(kind, "no status", then, (), "No status to start from given.")
    for now in sources:
        _check(kind, table, now, then)
    return sources


def check_run(current: object, wanted: object) -> None:
    """Raise :class:`InvalidTransition` unless the table lets a run go from ``current`` to
    ``wanted`` (both named in the error). Staying in a status is not a transition."""
    _check("pipeline run", RUN_TRANSITIONS, current, wanted)


def check_block(current: object, wanted: object) -> None:
    """Raise :class:`InvalidTransition` unless a block run may go from ``current`` to
    ``wanted``."""
    _check("block run", BLOCK_TRANSITIONS, current, wanted)


def run_sources(wanted: object) -> tuple[str, ...]:
    """Every run status from which ``wanted`` may be reached: the fence of an ``UPDATE``."""
    then = _value(wanted)
    return tuple(sorted(now for now, nexts in RUN_TRANSITIONS.items() if then in nexts))


def block_sources(wanted: object) -> tuple[str, ...]:
    """Every block-run status from which ``wanted`` may be reached."""
    then = _value(wanted)
    return tuple(sorted(now for now, nexts in BLOCK_TRANSITIONS.items() if then in nexts))


def run_fence(wanted: object, from_statuses: Iterable[object] | None = None) -> tuple[str, ...]:
    """The statuses an ``UPDATE`` of a run to ``wanted`` is fenced on: ``from_statuses``, each
    checked against the table, or every allowed source (:func:`run_sources`). Raises
    :class:`InvalidTransition` for a change the table does not allow (or an unknown status)."""
    return _fence("pipeline run", RUN_TRANSITIONS, wanted, from_statuses)


def block_fence(wanted: object, from_statuses: Iterable[object] | None = None) -> tuple[str, ...]:
    """:func:`run_fence` for block runs."""
    return _fence("block run", BLOCK_TRANSITIONS, wanted, from_statuses)


def run_path(name: str) -> tuple[tuple[str, ...], str]:
    """``(from statuses, to status)`` of a named path (``start``, ``complete``, ``fail``,
    ``cancel``, ``requeue``, ``retry``); each is in :data:`RUN_TRANSITIONS` (a test checks)."""
    sources, target = RUN_PATHS[name]
    return tuple(sorted(sources)), target
