"""The OpenAPI 3.1 document of the REST API, served at ``{base_url}mage/api/openapi.json``.

It is kept as YAML fragments beside this module (``openapi/base.yaml`` with the info, the
shared components and the error shape; one ``openapi/<resource>.yaml`` per handler module
with its ``paths`` and ``components``) and merged here, so each resource's routes and their
description live side by side. ``tests/test_openapi.py`` fails when a route of the server is
missing from the document, and every REST test validates the answers it gets against it.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any

import yaml
from jupyter_server.auth.decorator import allow_unauthenticated

from mage_nb_sched.handlers.base import MageApiHandler, api_route

#: Fragments merged into the document; ``base`` first.
FRAGMENT_DIR = "openapi"


@functools.lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    folder = resources.files(__package__ or "mage_nb_sched.handlers").joinpath(FRAGMENT_DIR)
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".yaml"))
    names.remove("base.yaml")
    document: dict[str, Any] = yaml.safe_load(folder.joinpath("base.yaml").read_text("utf-8"))
    document.setdefault("paths", {})
    document.setdefault("components", {})
    for name in names:
        fragment = yaml.safe_load(folder.joinpath(name).read_text("utf-8")) or {}
        for path, item in (fragment.get("paths") or {}).items():
            if path in document["paths"]:
                raise ValueError(f"openapi/{name}: path {path} is already described elsewhere")
            document["paths"][path] = item
        for section, entries in (fragment.get("components") or {}).items():
            target = document["components"].setdefault(section, {})
            for key, value in entries.items():
                if key in target:
                    raise ValueError(f"openapi/{name}: components.{section}.{key} is defined twice")
                target[key] = value
    return document


def openapi_document() -> dict[str, Any]:
    """The merged document (a copy: callers may change it)."""
    return copy.deepcopy(_document())


class OpenApiHandler(MageApiHandler):
    """``GET mage/api/openapi.json``: the API's contract. Public (it holds no data), so tools
    such as schemathesis can read it without credentials."""

    @allow_unauthenticated
    def get(self) -> None:
        document = openapi_document()
        document["servers"] = [{"url": f"{self.base_url.rstrip('/')}/{api_route()}"}]
        self.write_json(document)


ROUTES = [(api_route("openapi.json"), OpenApiHandler)]
