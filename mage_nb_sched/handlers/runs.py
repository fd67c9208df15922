"""Pipeline runs and block runs under ``{base_url}mage/api/``, in Mage's shapes.

- ``GET pipeline_runs`` (filters ``pipeline_uuid``, ``pipeline_schedule_id``, ``status``,
  ``backfill_id``; pages newest first) and ``POST pipeline_runs`` (run now);
- ``GET pipeline_schedules/{id}/pipeline_runs``;
- ``GET | PUT pipeline_runs/{id}`` (PUT cancels, or runs a failed or cancelled run again);
- ``GET pipeline_runs/{id}/block_runs`` and ``GET block_runs/{id}/logs`` (text);
- ``GET pipeline_runs/{id}/notebook``: the executed notebook (``.ipynb`` JSON).

One run is answered as ``{"pipeline_run": {...}}``, a list as ``{"pipeline_runs": [...],
"metadata": {"count", "next"}}``. Every database or file access goes through the service's
async twins (off the server's event loop); the service is imported inside the methods (see
:mod:`mage_nb_sched.handlers.base`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from mage_nb_sched.handlers.base import AUTH_RESOURCE, MageApiHandler, api_route, path_id

if TYPE_CHECKING:
    from mage_nb_sched.service.records import BlockRunRecord, RunRecord

RUN = "pipeline_run"
RUNS = "pipeline_runs"


def run_json(record: RunRecord, block_runs_count: int) -> dict[str, Any]:
    """A run as Mage shows it: its columns, ``execution_partition``, ``passed_sla`` and
    ``block_runs_count``."""
    from mage_nb_sched.service.records import to_json

    return to_json(record, block_runs_count=block_runs_count)


def block_run_json(record: BlockRunRecord) -> dict[str, Any]:
    """A block run with its ``duration`` in seconds (``None`` until it has started and
    ended)."""
    from mage_nb_sched.service.records import to_json

    started, completed = record.started_at, record.completed_at
    duration = (
        None if started is None or completed is None else (completed - started).total_seconds()
    )
    return to_json(record, duration=duration)


def artifact_store(handler: MageApiHandler) -> Any:
    """The artifact store the runs' files are in: the scheduler's, else one made from the
    extension's ``artifact_store_class`` (the same configuration)."""
    artifacts = getattr(handler.scheduler, "artifacts", None)
    if artifacts is not None:
        return artifacts
    app = handler.settings.get("mage_nb_sched_app")
    store = getattr(app, "store", None)
    if app is None or store is None or store.project_dir is None:
        return None
    return app.artifact_store_class(store.project_dir, parent=app)


class _RunsBase(MageApiHandler):
    auth_resource = f"{AUTH_RESOURCE}:pipeline_runs"

    async def write_run_page(self, **filters: Any) -> None:
        from mage_nb_sched.service import runs

        limit, cursor = self.page()
        status = self.str_arg("status")
        page = await runs.apage_runs(
            await self.store(), status=status, limit=limit, cursor=cursor, **filters
        )
        self.write_list(
            RUNS,
            [run_json(run, page.block_runs_counts[run.id]) for run in page.runs],
            count=page.count,
            next_cursor=page.next_cursor,
        )

    def wake_scheduler(self) -> None:
        """A run was created or changed: let the scheduler in this server look now (it would
        notice the store's change signal anyway; this saves the round trip)."""
        scheduler = self.scheduler
        if scheduler is not None:
            scheduler.wake()


class RunsHandler(_RunsBase):
    """``GET pipeline_runs`` (filtered, paged) and ``POST pipeline_runs`` (run now)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        schedule_id = self.int_arg("pipeline_schedule_id", minimum=1)
        backfill_id = self.int_arg("backfill_id", minimum=1)
        await self.write_run_page(
            schedule_id=schedule_id,
            backfill_id=backfill_id,
            pipeline_uuid=self.str_arg("pipeline_uuid"),
        )

    @web.authenticated
    @authorized
    async def post(self) -> None:
        from mage_nb_sched.service import fields, runs

        values = self.envelope(RUN)
        # Checked here too: a key must never reach the service as one of its own arguments.
        fields.unknown_fields(values, runs.RUN_NOW_FIELDS, "run-now")
        record = await runs.arun_now(await self.store(), **values)
        self.wake_scheduler()
        self.write_created(f"{RUNS}/{record.id}", {RUN: run_json(record, 0)})


class ScheduleRunsHandler(_RunsBase):
    """``GET pipeline_schedules/{id}/pipeline_runs``: a schedule's runs, newest first."""

    @web.authenticated
    @authorized
    async def get(self, schedule_id: str) -> None:
        await self.write_run_page(
            schedule_id=path_id(schedule_id, "pipeline_schedule_id"),
            backfill_id=self.int_arg("backfill_id", minimum=1),
            require_schedule=True,
        )


class RunHandler(_RunsBase):
    """``GET pipeline_runs/{id}``; ``PUT`` with ``{"pipeline_run": {"status": "cancelled"}}``
    cancels, ``{"status": "initial"}`` or ``{"pipeline_run_action": "retry_blocks"}`` runs a
    failed or cancelled run again."""

    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        from mage_nb_sched.service import runs

        record, count = await runs.arun_detail(await self.store(), path_id(run_id))
        self.write_json({RUN: run_json(record, count)})

    @web.authenticated
    @authorized
    async def put(self, run_id: str) -> None:
        from mage_nb_sched.service import fields, runs

        identifier = path_id(run_id)
        values = self.envelope(RUN)
        fields.unknown_fields(values, runs.CHANGE_FIELDS, "changeable pipeline run")
        record, count = await runs.achange_run(await self.store(), identifier, **values)
        if values:
            self.wake_scheduler()
        self.write_json({RUN: run_json(record, count)})


class RunBlocksHandler(MageApiHandler):
    """``GET pipeline_runs/{id}/block_runs``: the run's block runs in execution order."""

    auth_resource = f"{AUTH_RESOURCE}:block_runs"

    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        from mage_nb_sched.service import runs

        limit, cursor = self.page()
        page = await runs.ablock_run_page(
            await self.store(), path_id(run_id), limit=limit, cursor=cursor
        )
        self.write_list(
            "block_runs",
            [block_run_json(block) for block in page.block_runs],
            count=page.count,
            next_cursor=page.next_cursor,
        )


class BlockLogHandler(MageApiHandler):
    """``GET block_runs/{id}/logs``: the block's log (stdout, stderr, error) as text;
    ``tail=N`` for its last N bytes. Empty while the block has written none (the runner
    writes it when the block ends)."""

    auth_resource = f"{AUTH_RESOURCE}:block_runs"

    @web.authenticated
    @authorized
    async def get(self, block_run_id: str) -> None:
        from mage_nb_sched.service import runs

        identifier = path_id(block_run_id)
        tail = self.int_arg("tail", minimum=1, maximum=runs.MAX_LOG_READ_BYTES)
        log = await runs.aread_block_log(
            await self.store(), identifier, tail=tail, artifacts=artifact_store(self)
        )
        self.set_header("X-Log-Size", str(log.size))
        self.set_header("X-Log-Dropped-Bytes", str(log.dropped))
        self.finish(log.content, set_content_type="text/plain; charset=utf-8")


class RunNotebookHandler(MageApiHandler):
    """``GET pipeline_runs/{id}/notebook``: the run's executed notebook, with its outputs, as
    the ``.ipynb`` JSON the runner wrote (a 404 saying why while the run has none yet)."""

    auth_resource = f"{AUTH_RESOURCE}:pipeline_runs"

    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        from mage_nb_sched.service import runs

        notebook = await runs.aread_executed_notebook(
            await self.store(), path_id(run_id), artifacts=artifact_store(self)
        )
        run = notebook.run
        name = f"{run.pipeline_uuid.rsplit('/', 1)[-1]}-run-{run.id}.ipynb"
        # The file name is ours (uuid characters are checked on the way in) but still quoted the
        # RFC 6266 way, so a quote in it cannot break the header.
        self.set_header("Content-Disposition", 'inline; filename="' + name.replace('"', "_") + '"')
        self.finish(notebook.content, set_content_type="application/json; charset=utf-8")


_ID = r"([^/]+)"

ROUTES = [
    (api_route(RUNS), RunsHandler),
    (api_route(RUNS, _ID), RunHandler),
    (api_route(RUNS, _ID, "block_runs"), RunBlocksHandler),
    (api_route(RUNS, _ID, "notebook"), RunNotebookHandler),
    (api_route("block_runs", _ID, "logs"), BlockLogHandler),
    (api_route("pipeline_schedules", _ID, RUNS), ScheduleRunsHandler),
]
