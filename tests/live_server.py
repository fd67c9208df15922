"""A real ``jupyter server`` with the extension, in its own process on loopback.

For clients that block (``requests``, schemathesis, another process): the pytest-jupyter
server lives on the test's own event loop and cannot answer a blocking call made from it.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

START_TIMEOUT = 120.0


@dataclass
class LiveServer:
    """A running server: ``url`` ends with ``/`` (the base URL), ``token`` is Jupyter's."""

    url: str
    token: str
    root: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    #: ``jupyter lab``'s user settings folder, when the caller chose one.
    settings_dir: Path | None = None

    @property
    def api(self) -> str:
        """``{url}mage/api/``."""
        return f"{self.url}mage/api/"

    @property
    def headers(self) -> dict[str, str]:
        """Jupyter's token header."""
        return {"Authorization": f"token {self.token}"}

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def live_server(
    root: Path,
    *extra_args: str,
    base_url: str = "/",
    env: dict[str, str] | None = None,
    app: str = "jupyter_server",
) -> Iterator[LiveServer]:
    """Start ``jupyter server`` (``app="jupyterlab"``: ``jupyter lab``) in ``root`` (the
    project dir) and stop it afterwards. Waits
    until the extension's store is open (``GET mage/api/openapi.json`` answers and the first
    authenticated call does not answer 503)."""
    token = secrets.token_urlsafe(24)
    port = _free_port()
    log_path = root.parent / f"jupyter-server-{port}.log"
    args: Sequence[str] = [
        sys.executable,
        "-m",
        app,
        f"--ServerApp.port={port}",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        f"--ServerApp.base_url={base_url}",
        f"--IdentityProvider.token={token}",
        "--ServerApp.open_browser=False",
        "--ServerApp.allow_root=True",
        "--ServerApp.jpserver_extensions=mage_nb_sched=True",
        *extra_args,
    ]
    process_env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("MAGE_NB_SCHED_DB_URL", "MAGE_NB_SCHED_PROJECT_DIR")
    }
    process_env.update(env or {})
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            args, cwd=root, stdout=log_file, stderr=subprocess.STDOUT, env=process_env
        )
    server = LiveServer(f"http://127.0.0.1:{port}{base_url}", token, root, process, log_path)
    try:
        _wait_ready(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(server: LiveServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"jupyter server exited ({server.process.returncode}):\n{server.log()}"
            )
        try:
            reply = requests.get(
                f"{server.api}pipeline_schedules", headers=server.headers, timeout=5
            )
            if reply.status_code != 503:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"jupyter server did not answer in time:\n{server.log()}")
        # Polling a starting server: nothing to wait on but the socket.
        time.sleep(0.1)
