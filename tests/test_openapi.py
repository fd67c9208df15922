"""The OpenAPI 3.1 document: valid, served, and describing every route the server has."""

from __future__ import annotations

import re
from typing import Any

from openapi_spec_validator import validate
from server_fixtures import *  # noqa: F403
from server_fixtures import Api

from mage_nb_sched.handlers import routes
from mage_nb_sched.handlers.base import API_PREFIX
from mage_nb_sched.handlers.openapi import openapi_document

_PARAMETER = re.compile(r"\{[^}/]+\}")
_GROUP = re.compile(r"\([^)]*\)")


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_every_route_of_the_server_is_in_the_document() -> None:
    # A route pattern's regex groups and the document's {parameters} both become one
    # placeholder; every method a handler defines must be an operation of its path.
    described = {
        _PARAMETER.sub("{}", path): {method.upper() for method in item if method != "parameters"}
        for path, item in openapi_document()["paths"].items()
    }
    missing = []
    for pattern, handler in routes():
        assert pattern.startswith(API_PREFIX + "/"), pattern
        path = _GROUP.sub("{}", pattern[len(API_PREFIX) :])
        methods = {
            name
            for name in ("GET", "POST", "PUT", "DELETE", "PATCH")
            if getattr(handler, name.lower()) is not getattr(Api, "_missing", None)
            and name.lower() in vars_of(handler)
        }
        for method in methods:
            if method not in described.get(path, set()):
                missing.append(f"{method} {path} ({handler.__name__})")
    assert not missing, "routes missing from the OpenAPI document: " + ", ".join(missing)


def vars_of(handler: type[Any]) -> set[str]:
    """Methods a handler class (or one of our base classes) defines itself, not tornado's."""
    names: set[str] = set()
    for cls in handler.__mro__:
        if cls.__module__.startswith("mage_nb_sched"):
            names.update(vars(cls))
    return names


def test_the_document_is_served(api: Api, on_server_loop: Any) -> None:
    reply = on_server_loop(api.get("openapi.json", auth=False))
    assert reply.status == 200
    assert reply.json["paths"].keys() == openapi_document()["paths"].keys()
    assert reply.json["servers"][0]["url"].endswith("/mage/api")
