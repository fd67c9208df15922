"""Coordination: which scheduler may create and start runs, and which schedulers are alive.

:class:`Coordinator` is the interface the scheduler loop uses
(``c.Scheduler.coordinator_class``); :class:`LeaderLeaseCoordinator` — one active scheduler per
database holding the ``leader`` lease of :mod:`mage_nb_sched.store.leases`, the others standing
by — is the implementation beside it and the default. It works on any database (SQLite
included).

Several schedulers active at once on PostgreSQL plug in here: a ``SkipLockedCoordinator``
whose :meth:`~Coordinator.acquire` always lets its instance work (keeping only the heartbeat),
because the passes then claim the schedules and runs they handle row by row with ``SELECT ...
FOR UPDATE SKIP LOCKED`` (as APScheduler's ``SQLAlchemyDataStore.acquire_schedules`` does) —
that claim lives in the passes, not here. Recovery of a dead instance's runs keeps using
:meth:`~Coordinator.live_instances` and :meth:`~Coordinator.owner_is_alive`.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from datetime import datetime
from typing import Any

from traitlets import MetaHasTraits
from traitlets.config import LoggingConfigurable

from mage_nb_sched.store import leases
from mage_nb_sched.store.engine import Store


class _CoordinatorMeta(MetaHasTraits, ABCMeta):
    """Traitlets' metaclass and ``abc``'s together (a ``Configurable`` with abstract methods)."""


class Coordinator(LoggingConfigurable, metaclass=_CoordinatorMeta):
    """Decides whether this scheduler instance may create and start runs, and tells the live
    instances apart from dead ones (whose runs are recovered).

    Created by the scheduler as ``coordinator_class(store, lease_seconds=..., parent=scheduler)``
    (one per scheduler instance); other options are traitlets (config). The instance id
    (:attr:`instance_id`) is made here, because liveness checks read it: runs record it as their
    ``owner``.

    Every method does blocking database work: the scheduler calls :meth:`heartbeat`,
    :meth:`acquire` and :meth:`release` on a thread of their own (a slow pass never delays a
    heartbeat), every ``lease_seconds / 3``; :meth:`live_instances` and :meth:`owner_is_alive`
    are called by the passes on the database thread. A method that raises (the database is
    unreachable) leaves the state unknown; the scheduler retries, and keeps treating itself as
    active only until ``lease_seconds`` after its last successful :meth:`acquire`.
    """

    def __init__(
        self,
        store: Store,
        *,
        lease_seconds: float = 10.0,
        instance_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.store = store
        #: How long a heartbeat or the right to lead lasts without renewal (seconds).
        self.lease_seconds = float(lease_seconds)
        #: This scheduler instance's identity (the ``owner`` of the runs it takes).
        self.instance_id = instance_id or self.new_instance_id()

    def new_instance_id(self) -> str:
        """A new identity, unique across restarts (``sched:<host>:<pid ns>:<pid>:<random>``;
        :meth:`owner_is_alive` relies on its form)."""
        return leases.new_instance_id()

    @abstractmethod
    def heartbeat(self, now: datetime, details: dict[str, Any] | None = None) -> None:
        """Record that this instance is alive until ``now + lease_seconds``: while it is, other
        instances leave the runs it owns alone. ``details`` (JSON) go with it, for anyone
        reading the store's status (the scheduler's last pass)."""

    @abstractmethod
    def acquire(self, now: datetime) -> bool:
        """Take, or keep, the right to create and start runs, until ``now + lease_seconds``.

        True: this instance may run passes until then (it must call again before). False:
        another live instance has it; stand by and call again later. Idempotent: calling it
        again while holding the right renews it.
        """

    @abstractmethod
    def release(self) -> None:
        """Give up the right to run passes and the heartbeat, so that a standby takes over at
        once (called when the scheduler stops, after its runs were dealt with). Releasing what
        is not held does nothing."""

    @property
    @abstractmethod
    def is_leader(self) -> bool:
        """Whether this instance held the right to run passes at its last :meth:`acquire` (and
        has not released it since)."""

    @abstractmethod
    def live_instances(self, connection: Any, now: datetime) -> set[str]:
        """Instance ids whose heartbeat has not expired at ``now``, read on ``connection`` (a
        SQLAlchemy connection in the caller's transaction)."""

    @abstractmethod
    def owner_is_alive(self, owner: str, live: set[str]) -> bool:
        """Whether the ``owner`` recorded on a run (a scheduler instance id, or a process
        executing a run directly) can still finish it; ``live`` is :meth:`live_instances`."""


class LeaderLeaseCoordinator(Coordinator):
    """One active scheduler per database: the holder of the ``leader`` lease
    (:mod:`mage_nb_sched.store.leases`); others stand by and take over when it expires — or at
    once, when its holder is a scheduler process on this host that no longer exists. The
    heartbeat is the ``instance:<instance id>`` lease.
    """

    def __init__(self, store: Store, **kwargs: Any) -> None:
        super().__init__(store, **kwargs)
        self._leading = False

    def heartbeat(self, now: datetime, details: dict[str, Any] | None = None) -> None:
        leases.acquire(
            self.store,
            leases.instance_lease_name(self.instance_id),
            self.instance_id,
            now,
            self.lease_seconds,
            details,
        )

    def acquire(self, now: datetime) -> bool:
        store, me, seconds = self.store, self.instance_id, self.lease_seconds
        self._leading = leases.acquire(
            store, leases.LEADER, me, now, seconds
        ) or leases.take_over_from_dead(store, leases.LEADER, me, now, seconds)
        return self._leading

    def release(self) -> None:
        self._leading = False
        leases.release(self.store, leases.LEADER, self.instance_id)
        leases.release(self.store, leases.instance_lease_name(self.instance_id), self.instance_id)

    @property
    def is_leader(self) -> bool:
        return self._leading

    def live_instances(self, connection: Any, now: datetime) -> set[str]:
        return leases.live_instances(connection, now)

    def owner_is_alive(self, owner: str, live: set[str]) -> bool:
        return leases.owner_is_alive(owner, live)
