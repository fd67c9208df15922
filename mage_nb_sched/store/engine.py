"""The database: engine, sessions, SQLite tuning and automatic Alembic migrations.

One :class:`Store` per database URL. The model API (``PipelineSchedule.create`` ...) works on the
*current* store, which is opened lazily from the project dir and ``$MAGE_NB_SCHED_DB_URL`` the first
time it is needed, or set explicitly with :func:`use_store`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from filelock import FileLock
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from mage_nb_sched.core.errors import StoreError, ValidationError
from mage_nb_sched.core.project import data_dir, default_database_url, resolve_project_dir

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: How long a SQLite connection waits for another writer before failing (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Tries at switching a new database to WAL while other processes open it too (~5 s in all).
WAL_SWITCH_ATTEMPTS = 15


def _enable_wal(cursor: Any) -> None:
    """Switch a new database to WAL. Switching needs an exclusive lock, and SQLite answers
    "database is locked" at once (without its busy handler) while several processes open a new
    database together; the switch is retried briefly then. On a database already in WAL mode the
    pragma changes nothing and never waits."""
    for attempt in range(WAL_SWITCH_ATTEMPTS):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or attempt == WAL_SWITCH_ATTEMPTS - 1:
                raise
            time.sleep(min(0.5, 0.01 * 2**attempt))


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us emit BEGIN ourselves so write transactions can take the lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # BEGIN IMMEDIATE for writers: a deferred transaction that reads and then writes can fail
        # with SQLITE_BUSY when another process committed in between (no busy wait for that).
        immediate = connection.get_execution_options().get("mage_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


_DB_URL_EXAMPLE = (
    "Use e.g. 'sqlite:////abs/path/scheduler.db' or "
    "'postgresql+psycopg://user:pass@localhost/mage'."
)


def _redact_password(url: str) -> str:
    """``url`` with the password of ``scheme://user:password@host`` masked (unparsed URLs)."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def sqlite_file(url: str) -> str | None:
    """The file a SQLite URL points at: ``sqlite:////abs/x.db`` → ``/abs/x.db``, and a URI
    filename (``sqlite:///file:/abs/x.db?mode=ro&uri=true``) → ``/abs/x.db``; None for
    in-memory databases."""
    parsed = make_url(url)
    database = parsed.database
    if not database or database == ":memory:":
        return None
    if str(parsed.query.get("uri", "")).lower() in ("true", "1") and database.startswith("file:"):
        path = urlsplit(database).path
        return path or None
    return database


class Store:
    """An engine plus a thread-local session factory, migrated to the latest schema on open."""

    def __init__(self, url: str, project_dir: Path | None = None) -> None:
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError) as err:  # ValueError: e.g. a non-numeric port
            raise ValidationError(
                "db_url",
                _redact_password(url),
                "not a SQLAlchemy database URL",
                _DB_URL_EXAMPLE,
            ) from err
        self.url = url
        self.project_dir = project_dir
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {}
        #: The SQLite database file (``file:`` URIs with ``?uri=true`` included), else None.
        self.sqlite_path: str | None = sqlite_file(url) if self.is_sqlite else None
        if self.is_sqlite:
            if self.sqlite_path is not None:
                Path(self.sqlite_path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        try:
            self.engine = create_engine(url, **kwargs)
        except NoSuchModuleError as err:  # a typo in the dialect or driver name
            raise ValidationError(
                "db_url",
                parsed.render_as_string(hide_password=True),
                f"unknown database dialect/driver {parsed.drivername!r}",
                _DB_URL_EXAMPLE,
            ) from err
        except (ArgumentError, ImportError) as err:
            raise StoreError(f"cannot open database {parsed!r}: {err}") from err
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        #: The same engine, but every transaction on it is a write transaction (BEGIN IMMEDIATE
        #: on SQLite): for short Core updates on hot paths, without an ORM session.
        self.write_engine = self.engine.execution_options(mage_write=True)
        self._factory = sessionmaker(bind=self.engine, expire_on_commit=False)
        self.session = scoped_session(self._factory)
        migrate(self)

    def new_session(self) -> Session:
        """A fresh session (not the thread-local one); the caller closes it."""
        return self._factory()

    @contextlib.contextmanager
    def write(self, session: Session | None = None) -> Iterator[Session]:
        """A write transaction: commits on success, rolls back on any error.

        On SQLite the transaction takes the write lock first (``BEGIN IMMEDIATE``), so a
        read-check-then-write inside it cannot be overtaken by another process.
        """
        session = session if session is not None else self.session()
        if session.in_transaction():
            # Reads earlier on this session opened a deferred transaction; end it first so the
            # write transaction starts with a fresh snapshot and the lock.
            session.commit()
        session.connection(execution_options={"mage_write": True})
        session.info["writing"] = True
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.info["writing"] = False

    def dispose(self) -> None:
        """Close every session and pooled connection."""
        self.session.remove()
        self.engine.dispose()


def store_error(err: BaseException, store: Store) -> StoreError:
    """The database error ``err`` as a :class:`StoreError` that says what to do: a read-only,
    locked (busy), full or unreachable database are told apart. Front ends (the Mage API, the
    CLI, REST) translate with this in one place; lower layers keep SQLAlchemy's errors so they
    can retry."""
    detail = str(getattr(err, "orig", None) or err)
    lowered = detail.lower()
    url = make_url(store.url)
    where = store.sqlite_path or url.render_as_string(True)
    if "readonly" in lowered or "read-only" in lowered or "read only" in lowered:
        return StoreError(
            f"the database {where} is read-only for this process ({detail}). Make the file and "
            "its folder writable by this user (SQLite also writes -wal/-shm files beside it), "
            "or point $MAGE_NB_SCHED_DB_URL at a writable database."
        )
    if "locked" in lowered or "busy" in lowered:
        return StoreError(
            f"the database {where} stayed locked by another process for longer than "
            f"{SQLITE_BUSY_TIMEOUT_MS // 1000} s ({detail}). Something holds a write transaction "
            f"open (find it with `fuser {where}`); retry when it has finished."
        )
    if "full" in lowered or "no space" in lowered:
        return StoreError(
            f"the disk holding the database {where} is full ({detail}). Free space there, "
            "then retry; nothing was written."
        )
    if "unable to open" in lowered or "could not connect" in lowered:
        return StoreError(
            f"cannot open the database {where} ({detail}). Check that the folder exists and is "
            "writable, or that the database server is reachable."
        )
    return StoreError(f"the database {where} refused the operation: {detail}")


# --------------------------------------------------------------------------------------------
# Migrations
# --------------------------------------------------------------------------------------------


def _alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration revision shipped with the package."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(MIGRATIONS_DIR))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision a database is at (None for an empty database)."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
        return None if row is None else str(row[0])


@contextlib.contextmanager
def _migration_lock(store: Store) -> Iterator[None]:
    """Serialise migrations across processes: a file lock for SQLite, an advisory lock on PG."""
    if store.is_sqlite:
        database = store.sqlite_path
        if database is None:
            yield
            return
        # filelock: an OS lock where fcntl exists, msvcrt on Windows, and released if the
        # process dies (a crashed migration never blocks the next start).
        with FileLock(f"{database}.migrate.lock"):
            yield
        return
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(730114)"))
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(730114)"))
                connection.commit()
        return
    yield


def _quiet_alembic() -> None:
    """Alembic logs several INFO lines (plugins, context, each revision) on every first open;
    they say nothing a user can act on. Unless the application configured the ``alembic``
    logger itself, only its warnings and errors are shown."""
    logger = logging.getLogger("alembic")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


def migrate(store: Store, revision: str = "head") -> None:
    """Bring the database to ``revision`` (default: the latest). Safe to call concurrently."""
    from alembic import command

    _quiet_alembic()

    try:
        if revision == "head" and current_revision(store.engine) == head_revision():
            return
        with _migration_lock(store), store.engine.connect() as connection:
            raw: Any = connection.connection.driver_connection
            if store.is_sqlite:
                # SQLite rebuilds a table to alter it (drop + rename); with foreign keys on,
                # dropping ``pipeline_schedule`` would cascade-delete every run. The pragma only
                # works outside a transaction, so it is set on the raw connection first.
                raw.execute("PRAGMA foreign_keys=OFF")
            try:
                with connection.begin():
                    command.upgrade(_alembic_config(connection), revision)
            finally:
                if store.is_sqlite:
                    raw.execute("PRAGMA foreign_keys=ON")
    except SQLAlchemyError as err:
        raise StoreError(
            f"cannot migrate the database at {make_url(store.url)!r}: {err}. "
            "Check that the URL is right and the database is reachable and writable."
        ) from err


# --------------------------------------------------------------------------------------------
# The current store
# --------------------------------------------------------------------------------------------

_lock = threading.Lock()
_stores: dict[str, Store] = {}
_explicit: Store | None = None


def use_store(url: str | None = None, project_dir: str | os.PathLike[str] | None = None) -> Store:
    """Make the store for ``url`` (default: the project's) the current one and return it."""
    global _explicit
    store = open_store(url, project_dir)
    _explicit = store
    return store


def open_store(url: str | None = None, project_dir: str | os.PathLike[str] | None = None) -> Store:
    """The (cached) store for ``url`` or for the project dir's default database."""
    root = resolve_project_dir(project_dir)
    if not root.is_dir():
        raise ValidationError(
            "project_dir",
            str(root),
            "not an existing folder",
            "Point --project-dir / $MAGE_NB_SCHED_PROJECT_DIR at the folder holding the notebooks.",
        )
    resolved = url or default_database_url(root)
    with _lock:
        store = _stores.get(resolved)
        if store is None:
            if resolved.startswith("sqlite:///") and not url:
                data_dir(root).mkdir(parents=True, exist_ok=True)
            store = Store(resolved, root)
            _stores[resolved] = store
        return store


def current_store() -> Store:
    """The store the model API uses: the one set by :func:`use_store`, else the default."""
    if _explicit is not None:
        return _explicit
    return open_store()


def reset_stores() -> None:
    """Forget every open store (closing connections). Tests and project switches use this."""
    global _explicit
    with _lock:
        for store in _stores.values():
            store.dispose()
        _stores.clear()
        _explicit = None
