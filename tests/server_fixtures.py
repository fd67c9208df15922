"""Fixtures for tests against a real Jupyter server with the extension (pytest-jupyter, on
loopback), and :class:`Api`, a client for ``{base_url}mage/api/`` that checks every answer
against the OpenAPI document.

Use from a test module with ``from server_fixtures import *  # noqa: F403``. Tests are plain
functions that run their scenario on the server's loop (``on_server_loop``).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode

import pytest
import pytest_jupyter.jupyter_server as jupyter_server_fixtures
import requests
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest
from processes import alive, descendants
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from traitlets.config import Config
from werkzeug.datastructures import Headers

from mage_nb_sched.core.project import (
    DB_URL_ENV,
    INGEST_TOKEN_ENV,
    PROJECT_DIR_ENV,
    SERVER_URL_ENV,
)
from mage_nb_sched.extension import MageNbSchedApp
from mage_nb_sched.handlers.openapi import openapi_document
from mage_nb_sched.store import reset_stores

T = TypeVar("T")

# pytest-jupyter's fixtures (its server module re-exports the core and tornado ones), for the
# modules that import these: `pytest_plugins = ["pytest_jupyter.jupyter_server"]` would
# register the plugin for the whole session, and its autouse fixtures (an event loop closed
# after every test, a ServerApp cleanup) and its test-call hook would then apply to every
# other test file too.
_FIXTURES = (
    "jp_asyncio_loop jp_home_dir jp_data_dir jp_config_dir jp_runtime_dir jp_system_jupyter_path "
    "jp_env_jupyter_path jp_system_config_path jp_env_config_path jp_kernel_dir echo_kernel_spec "
    "jp_environ http_server http_server_port http_server_client jp_root_dir jp_argv jp_http_port "
    "jp_nbconvert_templates jp_logging_stream jp_configurable_serverapp jp_serverapp jp_web_app "
    "jp_auth_header jp_base_url jp_fetch jp_server_cleanup"
)
for _name in _FIXTURES.split():
    globals()[_name] = getattr(jupyter_server_fixtures, _name)

GRACE = 1.0


@pytest.fixture
def clean_env() -> Iterator[None]:
    """No store URL, project dir or ingest token from the outside, no cached stores; the
    variables the extension exports are removed again afterwards (monkeypatch would not undo a
    variable that did not exist when it was deleted)."""
    names = (DB_URL_ENV, PROJECT_DIR_ENV, INGEST_TOKEN_ENV, SERVER_URL_ENV)
    saved = {name: os.environ.pop(name, None) for name in names}
    reset_stores()
    yield
    reset_stores()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def mage_settings() -> dict[str, Any]:
    """Extra ``c.MageNbSchedApp`` settings; a test parametrizes this name to change them."""
    return {}


@pytest.fixture
def server_settings() -> dict[str, Any]:
    """Extra ``c.ServerApp`` settings; a test parametrizes this name to change them."""
    return {}


@pytest.fixture
def jp_server_config(
    clean_env: None, mage_settings: dict[str, Any], server_settings: dict[str, Any]
) -> Config:
    return Config(
        {
            "ServerApp": {
                "jpserver_extensions": {"mage_nb_sched": True, "jupyter_server_terminals": False},
                # A broken extension fails the test instead of only logging a warning.
                "reraise_server_extension_failures": True,
                **server_settings,
            },
            "MageNbSchedApp": {
                "workers": 1,
                "kernel_pool_size": 1,
                "shutdown_grace": GRACE,
                **mage_settings,
            },
        }
    )


@pytest.fixture
def children_before_start(jp_serverapp: Any) -> set[int]:
    """Live child processes of this process (where the test server runs) before the extension
    starts. multiprocessing's resource tracker, if another test started one, is among them."""
    return {pid for pid in descendants(os.getpid()) if alive(pid)}


@pytest.fixture
def mage_app(
    jp_serverapp: Any,
    jp_asyncio_loop: asyncio.AbstractEventLoop,
    children_before_start: set[int],
) -> Iterator[MageNbSchedApp]:
    """The extension app, started the way the server starts extensions once its loop runs
    (pytest-jupyter initialises the server but does not run that step), then waited for: the
    store opens and the scheduler starts in the background. Stopped afterwards."""
    manager = jp_serverapp.extension_manager
    assert "mage_nb_sched" in manager.extensions, "the extension was not found/linked"
    app = manager.extension_points["mage_nb_sched"].app
    assert isinstance(app, MageNbSchedApp)
    jp_asyncio_loop.run_until_complete(manager.start_all_extensions())
    jp_asyncio_loop.run_until_complete(app.wait_started())
    yield app
    jp_asyncio_loop.run_until_complete(app.stop_extension())


@pytest.fixture
def on_server_loop(
    jp_asyncio_loop: asyncio.AbstractEventLoop,
) -> Callable[[Coroutine[Any, Any, T]], T]:
    """Run a test's scenario on the loop the server and its scheduler live on."""
    return jp_asyncio_loop.run_until_complete


# --------------------------------------------------------------------------------------------
# The API client
# --------------------------------------------------------------------------------------------


class _Answer:
    """An HTTP answer in the shape openapi-core reads."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status_code = status
        self.headers = Headers(headers)
        self.data = body
        self.content_type = headers.get("Content-Type", "application/json").lower()


@dataclass
class Reply:
    """One answer of the API: status, headers and the body (parsed JSON, else text)."""

    status: int
    headers: dict[str, str]
    raw: bytes
    json: Any = field(init=False)

    def __post_init__(self) -> None:
        try:
            self.json = json.loads(self.raw) if self.raw else None
        except ValueError:
            self.json = None

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8", "replace")

    @property
    def error(self) -> dict[str, Any]:
        """The ``error`` object of an error answer."""
        assert isinstance(self.json, dict) and "error" in self.json, self.text
        return dict(self.json["error"])


class Api:
    """Calls ``{base_url}mage/api/<path>`` on the test server; by default with the server's
    token (``auth=False`` sends none, ``headers`` adds or replaces headers). Every answer is
    validated against the OpenAPI document (:func:`openapi_document`) unless
    ``validate=False``; an answer the document does not describe fails the test."""

    def __init__(self, base_url: str, auth_header: dict[str, str]) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth_header = auth_header
        document = openapi_document()
        document["servers"] = [{"url": f"{self.base_url}/mage/api"}]
        self.openapi = OpenAPI.from_dict(document)
        self.client = AsyncHTTPClient()

    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        url = f"{self.base_url}/mage/api/{path.lstrip('/')}"
        if params:
            url += "?" + urlencode(params, doseq=True)
        return url

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw_body: bytes | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
        validate: bool = True,
    ) -> Reply:
        url = self.url(path, params)
        sent_headers = dict(self.auth_header) if auth else {}
        if body is not None or raw_body is not None:
            sent_headers.setdefault("Content-Type", "application/json")
        sent_headers.update(headers or {})
        data = (
            raw_body
            if raw_body is not None
            else (None if body is None else json.dumps(body).encode())
        )
        if data is None and method in ("POST", "PUT", "PATCH"):
            data = b""
        response = await self.client.fetch(
            HTTPRequest(url, method=method, headers=sent_headers, body=data, request_timeout=120),
            raise_error=False,
        )
        reply = Reply(response.code, dict(response.headers.get_all()), response.body or b"")
        if validate:
            self.check(method, url, sent_headers, data, reply)
        return reply

    def check(
        self, method: str, url: str, headers: dict[str, str], data: bytes | None, reply: Reply
    ) -> None:
        """Fail when the answer is not what the OpenAPI document says this route answers."""
        request = RequestsOpenAPIRequest(
            requests.Request(method, url, headers=headers, data=data or None)
        )
        answer = _Answer(reply.status, reply.headers, reply.raw)
        try:
            self.openapi.validate_response(request, answer)
        except Exception as err:
            cause = getattr(err, "__cause__", None)
            details = getattr(cause, "schema_errors", None) or getattr(err, "schema_errors", None)
            raise AssertionError(
                f"{method} {url} -> {reply.status} does not match the OpenAPI document: "
                f"{err!r} {details!r}\n{reply.text[:2000]}"
            ) from err

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return await self.call("POST", path, body, **kwargs)

    async def put(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return await self.call("PUT", path, body, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Reply:
        return await self.call("DELETE", path, **kwargs)


@pytest.fixture
def api(
    mage_app: MageNbSchedApp,
    http_server: Any,
    jp_base_url: str,
    http_server_port: Any,
    jp_auth_header: Any,
) -> Api:
    """A client of the running server's ``mage/api`` (the extension started), over loopback."""
    port = http_server_port[-1]
    return Api(f"http://127.0.0.1:{port}{jp_base_url}", dict(jp_auth_header))
