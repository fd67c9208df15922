"""The Jupyter server extension: the scheduler loop inside ``jupyter lab`` / ``jupyter server``.

Enabled automatically by the ``jupyter-config`` file the wheel installs. Configure it like any
Jupyter app, e.g. in ``jupyter_server_config.py``::

    c.MageNbSchedApp.workers = 4
    c.MageNbSchedApp.webhook_url = "https://hooks.slack.com/services/..."

Finer knobs live on the parts themselves (``c.Scheduler.lease_seconds``,
``c.LocalExecutor.preload``, ``c.Notifier.webhook_retries``). The swappable parts are traitlets
``Type`` traits, set to a class or its dotted import path: ``c.MageNbSchedApp.executor_class``
(an :class:`~mage_nb_sched.execution.executors.base.Executor`), ``artifact_store_class`` (an
:class:`~mage_nb_sched.store.artifacts.ArtifactStore`) and ``c.Scheduler.coordinator_class``.

The scheduler starts once the server's event loop runs and stops with the server: in-flight
runs get ``shutdown_grace`` seconds, then their kernels are killed and the runs are queued to
execute again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Float, Int, Type, Unicode
from traitlets.config import Config

from mage_nb_sched.core.project import DB_URL_ENV, PROJECT_DIR_ENV

#: Extension traits forwarded to the part that owns them: (trait, section, name there).
_FORWARDED = (
    ("workers", "LocalExecutor", "workers"),
    ("kernel_pool_size", "LocalExecutor", "kernel_pool_size"),
    ("shutdown_grace", "Scheduler", "shutdown_grace"),
    ("run_retention_days", "Scheduler", "run_retention_days"),
    ("executor_class", "Scheduler", "executor_class"),
    ("artifact_store_class", "Scheduler", "artifact_store_class"),
    ("webhook_url", "Notifier", "webhook_url"),
    ("notify_on_success", "Notifier", "notify_on_success"),
)


class MageNbSchedApp(ExtensionApp):
    """Pipeline schedules for Jupyter: the scheduler loop (and, later, the REST API)."""

    name = "mage_nb_sched"
    description = "Mage-style pipeline schedules for Jupyter notebooks."

    db_url = Unicode(
        None,
        allow_none=True,
        help="SQLAlchemy URL of the schedule store. Default: $MAGE_NB_SCHED_DB_URL, else "
        "sqlite:///<root dir>/.mage_nb_sched/scheduler.db.",
    ).tag(config=True)
    scheduler_enabled = Bool(
        True,
        help="Run the scheduler loop in this server. Turn off when a headless "
        "`mage-nb-sched scheduler` executes the runs for this store.",
    ).tag(config=True)
    # Dotted names rather than the classes: importing this module (``jupyter server extension
    # list``, server start-up) does not import the executor; the app resolves them when created.
    executor_class = Type(
        default_value="mage_nb_sched.execution.executors.local.LocalExecutor",
        klass="mage_nb_sched.execution.executors.base.Executor",
        help="Executor that runs pipeline runs: a subclass of "
        "mage_nb_sched.execution.executors.base.Executor, or its dotted import path "
        "(default LocalExecutor: local worker processes with warm kernels). Forwarded to "
        "c.Scheduler.executor_class.",
    ).tag(config=True)
    artifact_store_class = Type(
        default_value="mage_nb_sched.store.artifacts.LocalArtifactStore",
        klass="mage_nb_sched.store.artifacts.ArtifactStore",
        help="Where runs' outputs, logs and executed notebooks are kept: a subclass of "
        "mage_nb_sched.store.artifacts.ArtifactStore, or its dotted import path (default "
        "LocalArtifactStore: the project's data dir). Forwarded to "
        "c.Scheduler.artifact_store_class.",
    ).tag(config=True)
    workers = Int(2, help="Worker processes executing runs (LocalExecutor).").tag(config=True)
    kernel_pool_size = Int(
        1, help="Warm kernels each worker keeps started ahead of need (LocalExecutor)."
    ).tag(config=True)
    shutdown_grace = Float(
        10.0,
        help="Seconds in-flight runs get when the server stops; then their kernels are killed "
        "and the runs are queued to execute again on the next start.",
    ).tag(config=True)
    run_retention_days = Int(
        0,
        help="Delete runs (outputs, logs, executed notebooks) finished more than this many days "
        "ago. 0 keeps everything.",
    ).tag(config=True)
    webhook_url = Unicode(
        None,
        allow_none=True,
        help="Webhook (e.g. Slack incoming webhook) POSTed a JSON {'text': ...} on run failure "
        "and SLA breach.",
    ).tag(config=True)
    notify_on_success = Bool(
        False, help="Also notify (webhook and server event) when a run completes."
    ).tag(config=True)

    def initialize_settings(self) -> None:
        from mage_nb_sched.store.engine import use_store

        assert self.serverapp is not None
        root = Path(self.serverapp.root_dir).resolve()
        self.store = use_store(self.db_url or os.environ.get(DB_URL_ENV) or None, root)
        # Kernels this server starts (and so magics and the Python API in notebooks) use the
        # same store as the scheduler.
        os.environ[PROJECT_DIR_ENV] = str(root)
        os.environ[DB_URL_ENV] = self.store.url
        self.settings["mage_nb_sched_store"] = self.store
        self.scheduler: Any = None

    def _part_config(self) -> Config:
        """The server's config, plus this app's shorthand traits forwarded to their parts (a
        value set directly on the part, e.g. ``c.LocalExecutor.workers``, wins)."""
        config = Config(self.config)
        own = self.config.get(type(self).__name__, {})
        for trait, section, name in _FORWARDED:
            if trait in own and name not in config[section]:
                config[section][name] = getattr(self, trait)
        for trait in ("executor_class", "artifact_store_class"):
            # Always forwarded (the default too): the app's choice is the scheduler's.
            if trait not in config["Scheduler"]:
                config["Scheduler"][trait] = getattr(self, trait)
        return config

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        if not self.scheduler_enabled:
            self.log.info("mage_nb_sched: scheduler disabled in this server (scheduler_enabled)")
            return
        from mage_nb_sched.scheduling.loop import Scheduler
        from mage_nb_sched.scheduling.notifications import jupyter_event_sink

        scheduler = Scheduler(self.store, config=self._part_config())
        event_logger = getattr(serverapp, "event_logger", None)
        if event_logger is not None and scheduler.notifier is not None:
            scheduler.notifier.add_sink(jupyter_event_sink(event_logger))
        self.scheduler = scheduler
        self.settings["mage_nb_sched_scheduler"] = scheduler
        # Extension settings were merged into the web app's at initialisation; add it there too.
        serverapp.web_app.settings["mage_nb_sched_scheduler"] = scheduler
        # Workers and warm kernels take a second or two to start: do it in the background so
        # the server answers requests at once.
        self._starting = asyncio.ensure_future(self._start(scheduler))

    async def _start(self, scheduler: Any) -> None:
        try:
            await scheduler.start()
        except Exception:
            self.log.exception("mage_nb_sched: the scheduler could not start")
            raise
        self.log.info(
            "mage_nb_sched: scheduler %s started on %s",
            scheduler.instance_id,
            self.store.url if self.store.is_sqlite else "the configured database",
        )

    async def stop_extension(self) -> None:
        scheduler, self.scheduler = self.scheduler, None
        starting = getattr(self, "_starting", None)
        if starting is not None:
            with contextlib.suppress(Exception):
                await starting
        if self.serverapp is not None and self.serverapp.web_app is not None:
            self.serverapp.web_app.settings.pop("mage_nb_sched_scheduler", None)
        if scheduler is not None:
            self.log.info("mage_nb_sched: stopping the scheduler")
            await scheduler.stop()
