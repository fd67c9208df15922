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

The scheduler starts once the server's event loop runs, in the background — the store is
opened (and migrated) on a thread, so the server answers at once — and stops with the server:
in-flight runs get ``shutdown_grace`` seconds, then their kernels are killed and the runs are
queued to execute again. Worker processes and their kernels start when the first run needs one
and stop after ``idle_timeout`` seconds with nothing to run (``lazy_workers``), so an idle server
pays no extra process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import os
from pathlib import Path
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Float, Int, Type, Unicode
from traitlets.config import Config

from mage_nb_sched.core.project import (
    DB_URL_ENV,
    INGEST_TOKEN_ENV,
    PROJECT_DIR_ENV,
    SERVER_URL_ENV,
    default_database_url,
)

#: Whether :meth:`MageNbSchedApp._freeze_gc` ran in this process.
_GC_FROZEN = False

#: Extension traits forwarded to the part that owns them: (trait, section, name there).
_FORWARDED = (
    ("workers", "LocalExecutor", "workers"),
    ("kernel_pool_size", "LocalExecutor", "kernel_pool_size"),
    ("idle_timeout", "LocalExecutor", "idle_timeout"),
    ("shutdown_grace", "Scheduler", "shutdown_grace"),
    ("run_retention_days", "Scheduler", "run_retention_days"),
    ("executor_class", "Scheduler", "executor_class"),
    ("artifact_store_class", "Scheduler", "artifact_store_class"),
    ("webhook_url", "Notifier", "webhook_url"),
    ("notify_on_success", "Notifier", "notify_on_success"),
)


class _LazyType(Type[Any, Any]):
    """A ``Type`` trait given as dotted names that imports them when first needed — the trait
    read or a configured value checked — rather than whenever the app is created: Jupyter
    Server creates this app (twice) while it starts, and importing the executor and the store
    (SQLAlchemy) there cost the server's start-up ~0.3 s."""

    def instance_init(self, obj: Any) -> None:
        pass  # Type resolves its names here

    def validate(self, obj: Any, value: Any) -> Any:
        self._resolve_classes()
        return super().validate(obj, value)

    def get(self, obj: Any, cls: Any = None) -> Any:
        self._resolve_classes()
        return super().get(obj, cls)


class MageNbSchedApp(ExtensionApp):
    """Pipeline schedules for Jupyter: the scheduler loop and the REST API."""

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
    freeze_gc = Bool(
        True,
        help="Once started, move the objects the server has made so far (its imports, "
        "handlers, the store) into the garbage collector's permanent generation (gc.freeze()): "
        "a full collection then no longer walks them, so a burst of API calls does not stall "
        "the server's event loop for ~100 ms at a time. Done once per process; False leaves "
        "the garbage collector as it is.",
    ).tag(config=True)
    # Dotted names rather than the classes, resolved on first use: importing this module or
    # creating the app (``jupyter server extension list``, server start-up) imports neither
    # the executor nor the store.
    executor_class = _LazyType(
        default_value="mage_nb_sched.execution.executors.local.LocalExecutor",
        klass="mage_nb_sched.execution.executors.base.Executor",
        help="Executor that runs pipeline runs: a subclass of "
        "mage_nb_sched.execution.executors.base.Executor, or its dotted import path "
        "(default LocalExecutor: local worker processes with warm kernels). Forwarded to "
        "c.Scheduler.executor_class.",
    ).tag(config=True)
    artifact_store_class = _LazyType(
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
    lazy_workers = Bool(
        True,
        help="Start worker processes (and their warm kernels) when the first run needs one, "
        "and stop them after idle_timeout seconds with nothing to run: an idle server pays no "
        "extra process. Off: the workers start with the server and stay up (the first run "
        "starts sooner). Forwarded to c.LocalExecutor.lazy_workers.",
    ).tag(config=True)
    idle_timeout = Float(
        300.0,
        help="With lazy_workers: seconds without any run queued or executing after which the "
        "workers and their kernels stop; the next run starts them again. Forwarded to "
        "c.LocalExecutor.idle_timeout.",
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
    ingest_token = Unicode(
        None,
        allow_none=True,
        help="Bearer token that POST {base_url}mage/api/events accepts without Jupyter "
        "authentication (for S3 / EventBridge forwarders and scripts): `Authorization: Bearer "
        "<token>`. Default: $MAGE_NB_SCHED_INGEST_TOKEN; unset, events need Jupyter auth. At "
        "least 16 URL-safe characters, e.g. python -c 'import secrets; "
        "print(secrets.token_urlsafe(32))'.",
    ).tag(config=True)
    trigger_rate_limit = Float(
        50.0,
        help="API-trigger and ingest calls accepted per second and per token (a burst of "
        "twice as many is allowed); more answer 429 with Retry-After. 0 turns the limit off.",
    ).tag(config=True)

    def _prepare_config(self) -> None:
        """As ExtensionApp's (this app's traits as ``settings["mage_nb_sched_config"]``), with
        the ``_LazyType`` traits as their dotted names: reading one imports it."""
        values = {}
        for name, trait in self.class_own_traits().items():
            if isinstance(trait, _LazyType) and name not in self._trait_values:
                values[name] = trait.default_value  # the dotted name while unresolved
            else:
                values[name] = getattr(self, name)
        self.extension_config = Config(values)
        self.settings[f"{self.name}_config"] = self.extension_config

    def initialize_settings(self) -> None:
        assert self.serverapp is not None
        root = Path(self.serverapp.root_dir).resolve()
        self._root = root
        self._db_url = self.db_url or os.environ.get(DB_URL_ENV) or None
        # Kernels this server starts (and so magics and the Python API in notebooks) use the
        # same store as the scheduler. Only the URL is needed for that: the store itself is
        # opened (and migrated) in the background once the server runs.
        os.environ[PROJECT_DIR_ENV] = str(root)
        os.environ[DB_URL_ENV] = self._db_url or default_database_url(root)
        # ... and know this server's URL (with its base_url), for the trigger URLs they show.
        with contextlib.suppress(Exception):  # a server without a URL yet: magics say so
            os.environ[SERVER_URL_ENV] = str(self.serverapp.connection_url)
        self.store: Any = None
        self.scheduler: Any = None
        self._starting: asyncio.Future[None] | None = None
        # The REST handlers find the store (and wait for it to open) through the app.
        self.settings["mage_nb_sched_app"] = self
        ingest = self.ingest_token or os.environ.get(INGEST_TOKEN_ENV) or None
        if ingest is not None:
            from mage_nb_sched.core.tokens import validate_token

            validate_token(ingest, field="ingest_token")
        self.settings["mage_nb_sched_ingest_token"] = ingest
        self.settings["mage_nb_sched_trigger_rate_limit"] = self.trigger_rate_limit

    def initialize_handlers(self) -> None:
        """The REST API under {base_url}mage/api/ (see mage_nb_sched.handlers)."""
        from mage_nb_sched.handlers import routes

        self.handlers.extend(routes())

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
        # Always forwarded too: in a server, workers start on demand unless asked otherwise.
        if "lazy_workers" not in config["LocalExecutor"]:
            config["LocalExecutor"]["lazy_workers"] = self.lazy_workers
        return config

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        # Nothing slow here: the server starts listening right after this returns.
        self._starting = asyncio.ensure_future(self._start(serverapp))

    def _open(self) -> tuple[Any, Any]:
        """On a thread: open (and migrate) the store, import the scheduler."""
        from mage_nb_sched.store.engine import use_store

        store = use_store(self._db_url, self._root)
        loop_module = importlib.import_module("mage_nb_sched.scheduling.loop")
        importlib.import_module("mage_nb_sched.scheduling.notifications")
        return store, loop_module.Scheduler

    async def _start(self, serverapp: Any) -> None:
        try:
            store, scheduler_class = await asyncio.to_thread(self._open)
        except Exception:
            self.log.exception("mage_nb_sched: could not open the schedule store")
            return
        self.store = store
        self.settings["mage_nb_sched_store"] = store
        # Extension settings were merged into the web app's at initialisation; add it there too.
        serverapp.web_app.settings["mage_nb_sched_store"] = store
        if not self.scheduler_enabled:
            self.log.info("mage_nb_sched: scheduler disabled in this server (scheduler_enabled)")
            self._freeze_gc()
            return
        from mage_nb_sched.scheduling.notifications import jupyter_event_sink

        scheduler = scheduler_class(store, config=self._part_config(), log=self.log)
        event_logger = getattr(serverapp, "event_logger", None)
        if event_logger is not None and scheduler.notifier is not None:
            scheduler.notifier.add_sink(jupyter_event_sink(event_logger))
        self.scheduler = scheduler
        self.settings["mage_nb_sched_scheduler"] = scheduler
        serverapp.web_app.settings["mage_nb_sched_scheduler"] = scheduler
        try:
            # Takes the lease and returns: workers start when the first run needs one. The
            # scheduler logs a line when it serves.
            await scheduler.start()
        except Exception:
            self.log.exception("mage_nb_sched: the scheduler could not start")
            self.scheduler = None
            self.settings.pop("mage_nb_sched_scheduler", None)
            serverapp.web_app.settings.pop("mage_nb_sched_scheduler", None)
        self._freeze_gc()

    def _freeze_gc(self) -> None:
        global _GC_FROZEN
        # Once: a second server in the same process (tests) would freeze the first one's
        # garbage for good. No gc.collect() first: that full collection is the very stall
        # this avoids (what is garbage now stays, once, in the permanent generation).
        if not self.freeze_gc or _GC_FROZEN:
            return
        _GC_FROZEN = True
        gc.freeze()
        self.log.debug(
            "mage_nb_sched: %d objects moved out of the collector's way", gc.get_freeze_count()
        )

    async def wait_started(self) -> None:
        """Wait until the store is open and the scheduler started (or failed to: logged)."""
        if self._starting is not None:
            await asyncio.shield(self._starting)

    async def stop_extension(self) -> None:
        starting = self._starting
        if starting is not None:
            # Opening the store runs on a thread that cannot be interrupted; the scheduler's
            # own start is one lease write. Then stop whatever started.
            with contextlib.suppress(Exception):
                await starting
        scheduler, self.scheduler = self.scheduler, None
        if self.serverapp is not None and self.serverapp.web_app is not None:
            self.serverapp.web_app.settings.pop("mage_nb_sched_scheduler", None)
        if scheduler is not None:
            self.log.info("mage_nb_sched: stopping the scheduler")
            await scheduler.stop()
