"""The store layer: the schema, the engine and its sessions, migrations, the change signal,
leases and the artifact store. Nothing here knows about schedules' rules (``service``)."""

from mage_nb_sched.store.engine import (
    Store,
    current_revision,
    current_store,
    head_revision,
    migrate,
    open_store,
    reset_stores,
    use_store,
)

__all__ = [
    "Store",
    "current_revision",
    "current_store",
    "head_revision",
    "migrate",
    "open_store",
    "reset_stores",
    "use_store",
]
