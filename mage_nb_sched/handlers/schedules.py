"""Pipeline schedules in Mage's shapes: ``pipeline_schedules`` (GET with filters and pages,
POST), Mage's ``pipelines/{uuid}/pipeline_schedules`` (GET, POST) and
``pipeline_schedules/{id}`` (GET, PUT, DELETE).

One schedule is answered as ``{"pipeline_schedule": {...}}`` with Mage's computed fields
(``next_pipeline_run_date``, ``pipeline_runs_count``, ``last_pipeline_run_status``,
``pipeline_in_progress_runs_count``); a list as ``{"pipeline_schedules": [...], "metadata":
{"count", "next"}}``. The clear API ``token`` appears only in the answer that created or rotated
it; its hash never leaves the service.

Thin handlers: the rules and the validation are the service's
(:mod:`mage_nb_sched.service.schedules`), called through its async twins. What is checked here
is the shape of the request: the envelope, and that a field is one a client may write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from mage_nb_sched.core.errors import ValidationError
from mage_nb_sched.handlers.base import AUTH_RESOURCE, MageApiHandler, api_route, path_id

if TYPE_CHECKING:
    from mage_nb_sched.service.schedules import ScheduleView

#: The request envelope's key, and the answer's.
ONE = "pipeline_schedule"
MANY = "pipeline_schedules"

#: Fields a client may send on create and update (the service validates each value).
WRITABLE_FIELDS = frozenset(
    {
        "name",
        "pipeline_uuid",
        "description",
        "schedule_type",
        "schedule_interval",
        "start_time",
        "status",
        "variables",
        "sla",
        "settings",
        "token",
        "last_enabled_at",
        "event_matchers",
    }
)
#: Fields of an answer a client cannot set (stored by the server or computed).
READ_ONLY_FIELDS = frozenset(
    {
        "id",
        "created_at",
        "updated_at",
        "token_hint",
        "in_code",
        "orphaned_at",
        "next_due_at",
        "next_pipeline_run_date",
        "pipeline_runs_count",
        "last_pipeline_run_status",
        "pipeline_in_progress_runs_count",
        "sla_breached_runs_count",
    }
)
#: Top-level body keys accepted beside the envelope: Mage's clients send ``api_key`` (Mage's
#: own credential); it means nothing here (Jupyter's authentication applies) and is ignored.
IGNORED_BODY_KEYS = frozenset({"api_key"})
#: Only on update: ``"rotate_token": true`` gives the schedule a new random token.
ROTATE = "rotate_token"


def schedule_json(view: ScheduleView) -> dict[str, Any]:
    """One schedule as answered: the record and Mage's computed fields."""
    from mage_nb_sched.service.records import to_json

    return to_json(view.schedule, **view.computed_fields())


def _writable_fix(extra: str = "") -> str:
    return f"Send only {', '.join(sorted(WRITABLE_FIELDS))}{extra}."


def check_fields(values: dict[str, Any], *, update: bool) -> dict[str, Any]:
    """``values`` unchanged when every key is a field a client may write (``rotate_token``
    too on update); else a 400 naming the first one that is not."""
    allowed = WRITABLE_FIELDS | ({ROTATE} if update else set())
    extra = f" (and {ROTATE}: true)" if update else ""
    for key, value in values.items():
        if key in allowed:
            continue
        if key in READ_ONLY_FIELDS:
            raise ValidationError(
                key,
                value,
                "is read-only (stored or computed by the server)",
                f"Leave {key} out. {_writable_fix(extra)}",
            )
        raise ValidationError(key, value, f"unknown {ONE} field", _writable_fix(extra))
    if update and ROTATE in values and not isinstance(values[ROTATE], bool):
        raise ValidationError(
            ROTATE, values[ROTATE], "must be a boolean", f'Send "{ROTATE}": true.'
        )
    return values


class _SchedulesBase(MageApiHandler):
    auth_resource = f"{AUTH_RESOURCE}:pipeline_schedules"

    def schedule_values(self, *, update: bool) -> dict[str, Any]:
        """The fields under ``pipeline_schedule`` of the body, their names checked."""
        body = self.json_body()
        values = self.envelope(ONE)
        for key in body:
            if key != ONE and key not in IGNORED_BODY_KEYS:
                raise ValidationError(
                    key,
                    body[key],
                    "unknown top-level key of the body",
                    f'Put the fields inside the envelope: {{"{ONE}": {{...}}}}.',
                )
        return check_fields(dict(values), update=update)

    async def write_page(self, pipeline_uuid: str | None, *, nested: bool) -> None:
        from mage_nb_sched.service import schedules

        limit, cursor = self.page()
        store = await self.store()
        page = await schedules.aschedule_page(
            store,
            pipeline_uuid=pipeline_uuid,
            status=self.str_arg("status"),
            schedule_type=self.str_arg("schedule_type"),
            limit=limit,
            cursor=cursor,
            pipeline_must_exist=nested,
        )
        self.write_list(
            MANY,
            [schedule_json(view) for view in page.views],
            count=page.count,
            next_cursor=page.next_cursor,
        )

    async def create(self, values: dict[str, Any]) -> None:
        from mage_nb_sched.service import schedules

        store = await self.store()
        view = await schedules.acreate_schedule_view(store, **values)
        self.write_created(f"{MANY}/{view.schedule.id}", {ONE: schedule_json(view)})


class SchedulesHandler(_SchedulesBase):
    """``GET pipeline_schedules`` (filters ``pipeline_uuid``, ``schedule_type``, ``status``;
    ``limit`` and ``cursor``) and ``POST pipeline_schedules`` (201 + ``Location``)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.write_page(self.str_arg("pipeline_uuid"), nested=False)

    @web.authenticated
    @authorized
    async def post(self) -> None:
        await self.create(self.schedule_values(update=False))


class PipelineSchedulesHandler(_SchedulesBase):
    """Mage's ``pipelines/{uuid}/pipeline_schedules``: the same with the pipeline from the path
    (a body ``pipeline_uuid`` that names another pipeline is a 400)."""

    @staticmethod
    def pipeline(uuid: str) -> str:
        from mage_nb_sched.service import fields

        return fields.pipeline_uuid(uuid)

    @web.authenticated
    @authorized
    async def get(self, uuid: str) -> None:
        await self.write_page(self.pipeline(uuid), nested=True)

    @web.authenticated
    @authorized
    async def post(self, uuid: str) -> None:
        from mage_nb_sched.service import fields

        pipeline = self.pipeline(uuid)
        values = self.schedule_values(update=False)
        given = values.get("pipeline_uuid")
        if given is not None and fields.pipeline_uuid(given) != pipeline:
            raise ValidationError(
                "pipeline_uuid",
                given,
                f"differs from the pipeline in the path ({pipeline!r})",
                f"Leave pipeline_uuid out, or POST to {MANY} to name the pipeline in the body.",
            )
        values["pipeline_uuid"] = pipeline
        await self.create(values)


class ScheduleHandler(_SchedulesBase):
    """``pipeline_schedules/{id}``: GET; PUT any writable field (status changes activate or
    pause; ``"rotate_token": true`` answers the new token once); DELETE → 204."""

    @web.authenticated
    @authorized
    async def get(self, schedule_id: str) -> None:
        from mage_nb_sched.service import schedules

        key = path_id(schedule_id)
        store = await self.store()
        view = await schedules.aview_schedule(store, key)
        self.write_json({ONE: schedule_json(view)})

    @web.authenticated
    @authorized
    async def put(self, schedule_id: str) -> None:
        from mage_nb_sched.service import schedules

        key = path_id(schedule_id)
        values = self.schedule_values(update=True)
        rotate = bool(values.pop(ROTATE, False))
        store = await self.store()
        view = await schedules.aupdate_schedule_view(store, key, rotate=rotate, **values)
        self.write_json({ONE: schedule_json(view)})

    @web.authenticated
    @authorized
    async def delete(self, schedule_id: str) -> None:
        from mage_nb_sched.service import schedules

        key = path_id(schedule_id)
        store = await self.store()
        await schedules.adelete_schedule(store, key)
        self.write_no_content()


ROUTES = [
    (api_route(MANY), SchedulesHandler),
    (api_route("pipelines", r"([^/]+)", MANY), PipelineSchedulesHandler),
    (api_route(MANY, r"([^/]+)"), ScheduleHandler),
]
