"""``POST {base_url}mage/api/events``: events in (one, a list, an S3 notification, an
EventBridge envelope, any JSON object), one run per matching active event schedule out.

Credentials: Jupyter's authentication (then *write* on ``mage_nb_sched:events`` must be
authorized), or the ingest token configured with ``c.MageNbSchedApp.ingest_token`` /
``$MAGE_NB_SCHED_INGEST_TOKEN``, sent as ``Authorization: Bearer <token>`` — for S3 / EventBridge
forwarders and scripts that hold no Jupyter credential. The route is therefore open to the
server's authentication layer (``@allow_unauthenticated``) and checks the credential itself;
the XSRF check is skipped only for a request that carries the valid ingest token (its token is
the credential, as with Jupyter's own token). Calls are rate limited (429 + ``Retry-After``):
the ingest token's in one bucket, Jupyter-authenticated ones in another. The token is compared
in constant time and appears in no log line or error.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import TYPE_CHECKING, Any

from jupyter_server.auth.decorator import allow_unauthenticated

from mage_nb_sched.core.errors import ForbiddenError, ValidationError
from mage_nb_sched.handlers.base import AUTH_RESOURCE, MageApiHandler, api_route
from mage_nb_sched.handlers.limits import limiter_for

if TYPE_CHECKING:
    from mage_nb_sched.service.events import EventOutcome

_BEARER = re.compile(r"\s*bearer\s+(\S+)\s*$", re.IGNORECASE)


def _answer(outcomes: list[EventOutcome]) -> dict[str, Any]:
    from mage_nb_sched.service.records import to_json

    return {
        "events": [
            {
                "matched": list(outcome.matched),
                "pipeline_runs": [to_json(run) for run in outcome.runs],
                "duplicates": outcome.duplicates,
            }
            for outcome in outcomes
        ]
    }


class EventsHandler(MageApiHandler):
    """``POST mage/api/events`` (see the module docstring)."""

    auth_resource = f"{AUTH_RESOURCE}:events"

    def _ingest_token(self) -> str | None:
        token = self.settings.get("mage_nb_sched_ingest_token")
        return token if isinstance(token, str) and token else None

    def _has_ingest_token(self) -> bool:
        """Whether the request carries the configured ingest token as its Bearer token."""
        configured = self._ingest_token()
        if configured is None:
            return False
        match = _BEARER.match(self.request.headers.get("Authorization", ""))
        if match is None:
            return False
        return hmac.compare_digest(match.group(1).encode("utf-8"), configured.encode("utf-8"))

    def check_xsrf_cookie(self) -> None:
        # The ingest token is the credential of this call, as Jupyter's token is of its calls:
        # a forwarder holds no XSRF cookie. Every other request is checked as usual.
        if self._has_ingest_token():
            return None
        if hasattr(self, "_jupyter_current_user") and not self._jupyter_current_user:
            # No user, so no cookie a forged cross-site request could borrow: the request is
            # refused by _authenticate, with a 403 that says which credential is needed.
            return None
        return super().check_xsrf_cookie()

    async def _authenticate(self) -> None:
        """A Jupyter user authorized to write events, or the ingest token (rate limited);
        else 403."""
        user = self.current_user
        if user:
            from jupyter_core.utils import ensure_async

            allowed = await ensure_async(
                self.authorizer.is_authorized(self, user, "write", self.auth_resource)
            )
            if allowed:
                # Jupyter-authenticated calls share one bucket, apart from the ingest token's:
                # a runaway script cannot flood the scheduler, nor starve the forwarders. (Not
                # per user: jupyter_server names a token-authenticated caller anew each call.)
                limiter_for(self.settings).check("jupyter-users")
                return
            raise ForbiddenError(
                f"This Jupyter user is not authorized to write {self.auth_resource}. Ask the "
                "server's administrator for that permission, or send the ingest token."
            )
        if self._has_ingest_token():
            configured = self._ingest_token()
            assert configured is not None
            key = "ingest:" + hashlib.sha256(configured.encode("utf-8")).hexdigest()
            limiter_for(self.settings).check(key)
            return
        if self._ingest_token() is None:
            how = (
                "No ingest token is configured: set c.MageNbSchedApp.ingest_token (or "
                "$MAGE_NB_SCHED_INGEST_TOKEN) to let scripts post events with "
                "'Authorization: Bearer <token>'."
            )
        else:
            how = "Or send the configured ingest token as 'Authorization: Bearer <token>'."
        raise ForbiddenError(
            "POST mage/api/events needs Jupyter authentication ('Authorization: token "
            f"<jupyter token>' or the login cookie). {how}"
        )

    @allow_unauthenticated
    async def post(self) -> None:
        """Fire the events of the body; answer what each one matched and created."""
        await self._authenticate()
        from mage_nb_sched.service.asynchronous import run_off_loop
        from mage_nb_sched.service.events import aingest_events

        if not (self.request.body or b"").strip():
            raise ValidationError(
                "body",
                "",
                "the body is empty: there is no event to fire",
                'Send an event as JSON, e.g. {"event_type": "orders_ready"}, a list of events, '
                'or an S3 notification {"Records": [...]}.',
            )
        store = await self.store()
        # Parsing up to 1 MiB of JSON, and writing the answer, stay off the server's loop too.
        body = await run_off_loop(self.json_body)
        outcomes = await aingest_events(store, body)
        self.write_json(await run_off_loop(_answer, outcomes))


ROUTES = [(api_route("events"), EventsHandler)]
