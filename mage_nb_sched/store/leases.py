"""Leases in the store: the one active scheduler (``leader``) and each scheduler's heartbeat.

A lease is a row ``(name, owner, expires_at)``. Taking or renewing one is a single write
transaction that succeeds only if the row is free, expired or already ours — so two
schedulers on one database can never both believe they lead. A scheduler that dies stops
renewing; its lease expires and a standby takes over. Runs record their ``owner``; a run whose
owner's heartbeat (``instance:<owner>``) has expired belongs to a dead scheduler.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from mage_nb_sched.store.engine import Store
from mage_nb_sched.store.schema import scheduler_lease

LEADER = "leader"
_INSTANCE_PREFIX = "instance:"


def local_identity() -> str:
    """``<host>:<pid namespace>``: where a pid means the same process as here. Containers can
    share a host name but not the pid space, so the namespace is part of the identity."""
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:  # not Linux: the host name alone
        namespace = "0"
    return f"{socket.gethostname()}:{namespace}"


def new_instance_id(pid: int | None = None) -> str:
    """A scheduler's identity: ``sched:<host>:<pid ns>:<pid>:<random>`` (unique across
    restarts)."""
    return f"sched:{local_identity()}:{pid or os.getpid()}:{uuid.uuid4().hex[:8]}"


def direct_owner(pid: int | None = None) -> str:
    """The ``owner`` of runs a process executes itself (CLI, ``await run.execute()``):
    ``direct:<host>:<pid ns>:<pid>``."""
    return f"direct:{local_identity()}:{pid or os.getpid()}"


def _local_pid(owner: str, parts: int) -> int | None:
    """The pid in ``owner`` if it names a process in this host's pid namespace, else None."""
    fields = owner.split(":")
    if len(fields) != parts or not fields[3].isdigit():
        return None
    if f"{fields[1]}:{fields[2]}" != local_identity():
        return None
    return int(fields[3])


def instance_lease_name(owner: str) -> str:
    return _INSTANCE_PREFIX + owner


def acquire(
    store: Store,
    name: str,
    owner: str,
    now: datetime,
    seconds: float,
    details: dict[str, Any] | None = None,
) -> bool:
    """Take or renew lease ``name`` for ``owner`` until ``now + seconds``; False if someone
    else holds it and it has not expired."""
    expires = now + timedelta(seconds=seconds)
    table = scheduler_lease
    with store.write_engine.begin() as connection:
        taken = connection.execute(
            update(table)
            .where(
                table.c.name == name,
                (table.c.owner == owner) | (table.c.expires_at <= now),
            )
            .values(owner=owner, expires_at=expires, updated_at=now, details=details)
        )
        if taken.rowcount == 1:
            return True
        exists = connection.execute(select(table.c.name).where(table.c.name == name)).first()
        if exists is not None:
            return False
        try:
            with connection.begin_nested():
                connection.execute(
                    insert(table).values(
                        name=name, owner=owner, expires_at=expires, updated_at=now, details=details
                    )
                )
        except IntegrityError:  # another process inserted it first (not possible on SQLite)
            return False
        return True


def take_over_from_dead(store: Store, name: str, owner: str, now: datetime, seconds: float) -> bool:
    """Take lease ``name`` before it expires if its holder is a scheduler process on this host
    that no longer exists (killed, crashed): no need to wait out the lease."""
    current = holder(store, name)
    if current is None or current[0] == owner:
        return False
    dead = current[0]
    if not dead.startswith("sched:") or owner_is_alive(dead, {dead}):
        return False
    table = scheduler_lease
    with store.write_engine.begin() as connection:
        taken = connection.execute(
            update(table)
            .where(table.c.name == name, table.c.owner == dead)
            .values(owner=owner, expires_at=now + timedelta(seconds=seconds), updated_at=now)
        )
        return taken.rowcount == 1


def release(store: Store, name: str, owner: str) -> None:
    """Give lease ``name`` up, if ``owner`` holds it."""
    table = scheduler_lease
    with store.write_engine.begin() as connection:
        connection.execute(delete(table).where(table.c.name == name, table.c.owner == owner))


def holder(store: Store, name: str) -> tuple[str, datetime] | None:
    """Who holds lease ``name`` and until when (None if nobody ever took it)."""
    table = scheduler_lease
    with store.engine.connect() as connection:
        row = connection.execute(
            select(table.c.owner, table.c.expires_at).where(table.c.name == name)
        ).first()
    return None if row is None else (str(row[0]), row[1])


def live_instances(connection: Any, now: datetime) -> set[str]:
    """Owners whose instance heartbeat has not expired at ``now``."""
    table = scheduler_lease
    rows = connection.execute(
        select(table.c.owner).where(
            table.c.name.like(_INSTANCE_PREFIX + "%"), table.c.expires_at > now
        )
    )
    return {str(row[0]) for row in rows}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def owner_is_alive(owner: str, live: set[str]) -> bool:
    """Whether whatever ``owner`` names can still finish its run.

    Schedulers are alive while their heartbeat lease is — and, when they run in this host's pid
    namespace, while their process exists (a crash is noticed at once). A process executing a
    run directly (``direct:...``) is alive while its pid exists; one elsewhere cannot be checked
    and is assumed alive.
    """
    if owner.startswith("sched:"):
        if owner not in live:
            return False
        pid = _local_pid(owner, 5)
        return True if pid is None else _pid_alive(pid)
    if owner.startswith("direct:"):
        if len(owner.split(":")) != 4:
            return False
        pid = _local_pid(owner, 4)
        return True if pid is None else _pid_alive(pid)
    return False
