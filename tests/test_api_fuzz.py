"""schemathesis against a live server: generated requests for every operation of the OpenAPI
document (valid and invalid bodies, parameters, ids) never get a 5xx and never leave a
traceback in the server log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from conftest import write_notebook
from hypothesis import HealthCheck, given, settings
from live_server import LiveServer, live_server

from mage_nb_sched.handlers.openapi import openapi_document

#: Generated cases per operation: enough to reach every validation branch the document
#: declares, small enough for CI (~40 operations).
EXAMPLES = 50


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("fuzz") / "project"
    root.mkdir()
    write_notebook(root / "my_pipeline.ipynb", ["x = 1"])
    write_notebook(root / "etl" / "daily.ipynb", ["y = 2"])
    # No scheduler: the fuzzer's runs are recorded, not executed (nothing here is about
    # execution, and hundreds of kernels would only slow it down).
    with live_server(root, "--MageNbSchedApp.scheduler_enabled=False") as running:
        yield running
    log = running.log()
    assert "Traceback" not in log, log[-5000:]


def test_no_request_gets_a_server_error(server: LiveServer) -> None:
    schema = schemathesis.openapi.from_dict(openapi_document())
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def call(case: Any) -> None:
            response = case.call(
                base_url=server.api.rstrip("/"), headers=server.headers, timeout=60
            )
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} {case.query} -> "
                    f"{response.status_code}: {response.text[:500]}"
                )

        call()
    assert operations >= 1
    assert not failures, "\n".join(failures[:20])


def test_the_fuzzed_server_is_the_one_described(server: LiveServer) -> None:
    # Guards the fixture: the document the fuzzer reads is the one this server serves.
    import requests

    served = requests.get(f"{server.api}openapi.json", timeout=30).json()
    assert served["paths"].keys() == openapi_document()["paths"].keys()
    assert Path(server.root).is_dir()
