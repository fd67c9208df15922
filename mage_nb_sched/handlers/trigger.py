"""Mage's trigger URL: ``POST {base_url}mage/api/pipeline_schedules/{id}/pipeline_runs/{token}``
and the same with ``Authorization: Bearer {token}`` at ``.../pipeline_schedules/{id}/api_trigger``.

The schedule's API token is the only credential (DESIGN §7): no Jupyter token or cookie is
needed, also when the server sets ``allow_unauthenticated_access=False``
(``@allow_unauthenticated``), and there is no XSRF check (an XSRF cookie protects a browser
session; this route has none to protect). The rules (token, inactive schedule,
``skip_if_previous_running``, idempotency) live in :mod:`mage_nb_sched.service.api_triggers`.

The body is Mage's: ``{"pipeline_run": {"variables": {...}}}``; its other top-level keys become
the run's ``event`` variables, as Mage does (an S3 or webhook payload posted as is reaches the
blocks as ``event``). ``Idempotency-Key: K`` makes a repeat of the call answer the run the first
call made (200 instead of 201).

The token never reaches a log line: tornado's access log and every error line print the
request's URI, so :meth:`ApiTriggerHandler.initialize` — which runs before authentication,
logging and the method, and after the router has captured the path arguments — replaces the
token in ``request.uri`` and ``request.path`` by ``[secret]``.
"""

from __future__ import annotations

import re
from typing import Any

from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.utils import url_path_join

from mage_nb_sched.core.errors import ValidationError
from mage_nb_sched.handlers.base import API_PREFIX, MageApiHandler, api_route, path_id
from mage_nb_sched.handlers.limits import limiter_for

#: What a token in a path is replaced with in the request's URI (jupyter_server's own word
#: for scrubbed query arguments).
REDACTED = "[secret]"
_TOKEN_IN_PATH = re.compile(r"(/pipeline_runs/)[^/?#]+")
#: Keys of ``pipeline_run`` in the body this route reads.
RUN_KEYS = ("variables",)
#: Bodies up to this size are parsed on the server's loop (well under a millisecond); larger
#: ones, up to the 1 MiB limit, on the service's threads.
PARSE_ON_LOOP_BYTES = 64 * 1024


class _TriggerHandler(MageApiHandler):
    """What both trigger routes share: no XSRF check, the body, the answer."""

    def check_xsrf_cookie(self) -> None:
        # The token in the URL or the Authorization header is the credential; there is no
        # cookie session a cross-site form could ride on.
        return None

    def _body(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """``(variables, event_variables)`` from Mage's body."""
        body = self.json_body()  # bounded in size and depth (base)
        if not isinstance(body, dict):
            raise ValidationError(
                "body",
                type(body).__name__,
                "the body must be a JSON object",
                'Send {"pipeline_run": {"variables": {"date": "2024-01-15"}}}; other top-level '
                "keys reach the run as its event variables.",
            )
        run = body.get("pipeline_run")
        if run is None:
            run = {}
        if not isinstance(run, dict):
            raise ValidationError(
                "pipeline_run",
                run,
                "must be a JSON object",
                'Send {"pipeline_run": {"variables": {...}}}.',
            )
        for key in run:
            if key not in RUN_KEYS:
                raise ValidationError(
                    f"pipeline_run.{key}",
                    run[key],
                    "this field cannot be set through the trigger URL",
                    'Send only {"pipeline_run": {"variables": {...}}}; the run\'s date, '
                    "status and schedule are set by the server.",
                )
        variables = run.get("variables")
        if variables is None:
            variables = {}
        if not isinstance(variables, dict):
            raise ValidationError(
                "pipeline_run.variables",
                variables,
                "must be a JSON object",
                'Send e.g. {"pipeline_run": {"variables": {"date": "2024-01-15"}}}.',
            )
        event = {key: value for key, value in body.items() if key != "pipeline_run"}
        return variables, event or None

    async def _trigger(self, schedule_id_text: str, token: str | None) -> None:
        from mage_nb_sched.service import api_triggers
        from mage_nb_sched.service.records import to_json

        schedule_id = path_id(schedule_id_text)
        # Before any database work: a runaway client costs this server a dict lookup.
        limiter_for(self.settings).check(api_triggers.rate_limit_key(token))
        if len(self.request.body or b"") <= PARSE_ON_LOOP_BYTES:
            variables, event = self._body()
        else:
            from mage_nb_sched.service.asynchronous import run_off_loop

            variables, event = await run_off_loop(self._body)
        key = self.request.headers.get("Idempotency-Key")
        store = await self.store()
        triggered = await api_triggers.atrigger_with_token(
            store,
            schedule_id,
            token,
            variables=variables,
            event_variables=event,
            idempotency_key=key,
        )
        data = {"pipeline_run": to_json(triggered.run)}
        location = f"pipeline_runs/{triggered.run.id}"
        if triggered.created:
            self.write_created(location, data)
        else:
            # A repeat with the same Idempotency-Key: the first call's run.
            self.set_header("Location", url_path_join(self.base_url, API_PREFIX, location))
            self.write_json(data, status=200)


class ApiTriggerHandler(_TriggerHandler):
    """``POST pipeline_schedules/{id}/pipeline_runs/{token}``: Mage's trigger URL."""

    def initialize(self, **kwargs: Any) -> None:
        # Runs when the handler is made: before prepare() (authentication), before any error
        # and before the access log line, all of which print request.uri / request.path. The
        # router has already matched the path, and its groups are what post() receives.
        self.request.uri = _TOKEN_IN_PATH.sub(rf"\g<1>{REDACTED}", self.request.uri or "")
        self.request.path = _TOKEN_IN_PATH.sub(rf"\g<1>{REDACTED}", self.request.path or "")
        super().initialize(**kwargs)

    @allow_unauthenticated
    async def post(self, schedule_id: str, token: str) -> None:
        await self._trigger(schedule_id, token)


class BearerTriggerHandler(_TriggerHandler):
    """``POST pipeline_schedules/{id}/api_trigger`` with ``Authorization: Bearer {token}``."""

    @allow_unauthenticated
    async def post(self, schedule_id: str) -> None:
        header = self.request.headers.get("Authorization", "")
        scheme, _, credential = header.strip().partition(" ")
        token = credential.strip() if scheme.lower() == "bearer" and credential.strip() else None
        await self._trigger(schedule_id, token)


ROUTES = [
    (api_route("pipeline_schedules", r"([^/]+)", "pipeline_runs", r"([^/]+)"), ApiTriggerHandler),
    (api_route("pipeline_schedules", r"([^/]+)", "api_trigger"), BearerTriggerHandler),
]
