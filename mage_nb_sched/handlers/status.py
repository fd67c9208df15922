"""``GET status``: is a scheduler active for this store, which one, its last pass, the queue,
the workers and the rows the scheduler is skipping.

The store says who leads (the ``leader`` lease), what is queued and running, and what is
flagged; this server's own scheduler (when ``scheduler_enabled``) adds what only it knows: its
last pass and its workers. So the answer is right both with the scheduler in this server and
with a headless ``mage-nb-sched scheduler`` elsewhere (or none at all: the ``message`` says so).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from mage_nb_sched.handlers.base import AUTH_RESOURCE, MageApiHandler, api_route

ONE = "status"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def workers_json(executor: Any) -> dict[str, Any]:
    """What an executor exposes about its workers (in memory; any :class:`Executor` — the
    local one adds worker processes)."""
    pids = getattr(executor, "worker_pids", None)
    processes = getattr(executor, "process_pids", None)
    configured = getattr(executor, "workers", None)
    lazy = getattr(executor, "lazy_workers", None)
    return {
        "description": str(executor.description),
        "count": configured if isinstance(configured, int) else None,
        "alive": len(pids) if pids is not None else None,
        "processes": len(processes) if processes is not None else None,
        "capacity": int(executor.capacity),
        "active_runs": len(executor.active_runs),
        "lazy": lazy if isinstance(lazy, bool) else None,
    }


def _message(active: bool, leader: str | None, here: bool, enabled: bool) -> str:
    if active and here:
        return f"The scheduler in this server ({leader}) is active for this store."
    if active:
        where = (
            "This server runs a scheduler too, on standby"
            if enabled
            else "This server runs none (scheduler_enabled is False)"
        )
        return f"Scheduler {leader}, elsewhere, is active for this store. {where}."
    if enabled:
        return (
            "No scheduler holds the lease for this store yet: this server's scheduler is "
            "starting or taking over; runs are created once it leads."
        )
    return (
        "No scheduler is active for this store: this server runs none (scheduler_enabled is "
        "False) and no other holds the lease, so no run is created or started. Start one: "
        "mage-nb-sched scheduler, or set c.MageNbSchedApp.scheduler_enabled = True."
    )


class StatusHandler(MageApiHandler):
    """``GET status``."""

    auth_resource = f"{AUTH_RESOURCE}:status"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        from mage_nb_sched.core.clock import utcnow
        from mage_nb_sched.scheduling.passes import astore_status

        store = await self.store()
        state = await astore_status(store, utcnow())
        app = self.settings.get("mage_nb_sched_app")
        enabled = bool(getattr(app, "scheduler_enabled", False))
        scheduler = self.scheduler
        local = None
        here = False
        if scheduler is not None:
            report = scheduler.last_report
            here = state.leader_active and state.leader == scheduler.instance_id
            local = {
                "instance_id": scheduler.instance_id,
                "running": bool(scheduler.running),
                "is_leader": bool(scheduler.is_leader),
                "passes": int(scheduler.passes),
                "last_pass_at": None if report is None else report.now.isoformat(),
                "last_pass_seconds": None if report is None else report.seconds,
            }
        self.write_json(
            {
                ONE: {
                    "scheduler_status": "running" if state.leader_active else "stopped",
                    "active": state.leader_active,
                    "instance_id": state.leader if state.leader_active else None,
                    "in_this_server": here,
                    "lease_expires_at": _iso(state.leader_expires_at),
                    "last_heartbeat_at": _iso(state.leader_renewed_at),
                    "last_pass_at": (
                        local["last_pass_at"]
                        if here and local
                        else _iso(state.leader_last_pass_at)
                        if state.leader_active
                        else None
                    ),
                    "scheduler_enabled": enabled,
                    "this_server": local,
                    "instances": list(state.live_instances),
                    "queue_depth": state.queue_depth,
                    "running": state.running,
                    "workers": None if scheduler is None else workers_json(scheduler.executor),
                    "problems": [
                        {
                            "step": problem.step,
                            "row_kind": problem.row_kind,
                            "row_id": problem.row_id,
                            "schedule_id": problem.schedule_id,
                            "error": problem.error,
                            "first_seen_at": _iso(problem.first_seen_at),
                            "retry_at": _iso(problem.retry_at),
                        }
                        for problem in state.problems
                    ],
                    "checked_at": state.now.isoformat(),
                    "message": _message(state.leader_active, state.leader, here, enabled),
                }
            }
        )


ROUTES = [(api_route(ONE), StatusHandler)]
