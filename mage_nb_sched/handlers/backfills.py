"""Backfills under ``{base_url}mage/api/``, in Mage's shapes.

- ``GET | POST backfills`` and Mage's ``GET | POST pipelines/{uuid}/backfills``;
- ``GET backfills/{id}`` (with ``progress``: run counts by status, ``total``, ``done``);
- ``PUT backfills/{id}``: ``{"backfill": {"status": "running"}}`` starts it (creates its runs),
  ``{"status": "cancelled"}`` cancels it; ``name``, ``variables`` and ``settings`` edit one that
  has not started;
- ``DELETE backfills/{id}`` (its runs with it) once none of its runs is going → 204.

One backfill is answered as ``{"backfill": {...}}``, a list as ``{"backfills": [...],
"metadata": {"count", "next"}}``. The service's async twins do every database access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from mage_nb_sched.core.errors import ValidationError
from mage_nb_sched.handlers.base import AUTH_RESOURCE, MageApiHandler, api_route, path_id

if TYPE_CHECKING:
    from mage_nb_sched.service.records import BackfillRecord

BACKFILL = "backfill"
BACKFILLS = "backfills"
#: The fields ``POST backfills`` accepts (Mage's).
CREATE_FIELDS = {
    "name",
    "pipeline_schedule_id",
    "pipeline_uuid",
    "start_datetime",
    "end_datetime",
    "interval_type",
    "interval_units",
    "variables",
    "settings",
}


def backfill_json(record: BackfillRecord, progress: dict[str, int]) -> dict[str, Any]:
    """A backfill with its ``progress``."""
    from mage_nb_sched.service.records import to_json

    return to_json(record, progress=progress)


class _BackfillsBase(MageApiHandler):
    auth_resource = f"{AUTH_RESOURCE}:backfills"

    async def write_page(self, pipeline_uuid: str | None, *, require_pipeline: bool) -> None:
        from mage_nb_sched.service import backfills

        limit, cursor = self.page()
        page = await backfills.apage_backfills(
            await self.store(),
            pipeline_uuid=pipeline_uuid,
            schedule_id=self.int_arg("pipeline_schedule_id", minimum=1),
            status=self.str_arg("status"),
            limit=limit,
            cursor=cursor,
            require_pipeline=require_pipeline,
        )
        self.write_list(
            BACKFILLS,
            [backfill_json(record, page.progress[record.id]) for record in page.backfills],
            count=page.count,
            next_cursor=page.next_cursor,
        )

    async def create(self, pipeline_uuid: str | None = None) -> None:
        from mage_nb_sched.service import backfills, fields

        values = self.envelope(BACKFILL)
        fields.unknown_fields(values, {*CREATE_FIELDS, "status"}, "backfill")
        values = dict(values)
        status = values.pop("status", "initial")
        if status not in ("initial", "running"):
            raise ValidationError(
                "status",
                status,
                "a backfill is created initial (not started) or running (started at once)",
                'Leave status out, or send "status": "running" to create and start it in one '
                "step (nothing is written when it cannot start).",
            )
        if pipeline_uuid is not None:
            path_uuid = fields.pipeline_uuid(pipeline_uuid)
            given = values.get("pipeline_uuid")
            if given is not None and fields.pipeline_uuid(given) != path_uuid:
                raise ValidationError(
                    "pipeline_uuid",
                    given,
                    f"the URL is of pipeline {path_uuid!r}",
                    "Leave pipeline_uuid out of the body (the URL gives it), or POST to backfills.",
                )
            values = {**values, "pipeline_uuid": path_uuid}
        store = await self.store()
        record = await backfills.acreate_backfill(store, start=status == "running", **values)
        if status == "running":
            record, progress = await backfills.abackfill_detail(store, record.id)
            if self.scheduler is not None:
                self.scheduler.wake()
        else:
            progress = backfills.empty_progress()
        self.write_created(f"{BACKFILLS}/{record.id}", {BACKFILL: backfill_json(record, progress)})


class BackfillsHandler(_BackfillsBase):
    """``GET backfills`` (filters ``pipeline_uuid``, ``pipeline_schedule_id``, ``status``;
    newest first, paged) and ``POST backfills``."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.write_page(self.str_arg("pipeline_uuid"), require_pipeline=False)

    @web.authenticated
    @authorized
    async def post(self) -> None:
        await self.create()


class PipelineBackfillsHandler(_BackfillsBase):
    """Mage's ``GET | POST pipelines/{uuid}/backfills`` (a folder in the uuid is sent
    percent-encoded: ``pipelines/etl%2Fdaily/backfills``)."""

    @web.authenticated
    @authorized
    async def get(self, pipeline_uuid: str) -> None:
        await self.write_page(pipeline_uuid, require_pipeline=True)

    @web.authenticated
    @authorized
    async def post(self, pipeline_uuid: str) -> None:
        await self.create(pipeline_uuid)


class BackfillHandler(_BackfillsBase):
    """``GET | PUT | DELETE backfills/{id}``."""

    @web.authenticated
    @authorized
    async def get(self, backfill_id: str) -> None:
        from mage_nb_sched.service import backfills

        record, progress = await backfills.abackfill_detail(
            await self.store(), path_id(backfill_id)
        )
        self.write_json({BACKFILL: backfill_json(record, progress)})

    @web.authenticated
    @authorized
    async def put(self, backfill_id: str) -> None:
        from mage_nb_sched.service import backfills, fields

        identifier = path_id(backfill_id)
        values = self.envelope(BACKFILL)
        fields.unknown_fields(
            values, {*backfills.CHANGEABLE_FIELDS, "status"}, "changeable backfill"
        )
        record, progress = await backfills.achange_backfill(
            await self.store(), identifier, **values
        )
        if "status" in values and self.scheduler is not None:
            # New runs to start, or runs to stop: the scheduler looks now.
            self.scheduler.wake()
        self.write_json({BACKFILL: backfill_json(record, progress)})

    @web.authenticated
    @authorized
    async def delete(self, backfill_id: str) -> None:
        from mage_nb_sched.service import backfills

        await backfills.adelete_idle_backfill(await self.store(), path_id(backfill_id))
        self.write_no_content()


_ID = r"([^/]+)"

ROUTES = [
    (api_route(BACKFILLS), BackfillsHandler),
    (api_route(BACKFILLS, _ID), BackfillHandler),
    (api_route("pipelines", _ID, BACKFILLS), PipelineBackfillsHandler),
]
