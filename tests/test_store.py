"""The store on real SQLite files: where the database lives, WAL, migrations from old schemas,
and two real OS processes racing for the same period or the same fresh database."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import traceback
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, func, inspect, select, text

from mage_nb_sched import PipelineRun, PipelineSchedule, ScheduleStatus, ValidationError
from mage_nb_sched.core.project import DATA_DIR_NAME, resolve_project_dir
from mage_nb_sched.core.tokens import hash_token
from mage_nb_sched.models import EVALUATE_NOW
from mage_nb_sched.service.runs import create_scheduled_run
from mage_nb_sched.store.engine import (
    MIGRATIONS_DIR,
    Store,
    current_revision,
    current_store,
    head_revision,
    migrate,
    reset_stores,
    use_store,
)

UTC = timezone.utc
PROCESS_TIMEOUT = 120


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def journal_mode(path: Path) -> str:
    connection = sqlite3.connect(path)
    try:
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        connection.close()


# =============================================================================================
# (a) Where the database lives
# =============================================================================================


def test_default_database_is_the_wal_sqlite_file_in_the_data_dir(project_dir: Path) -> None:
    store = current_store()
    expected = project_dir.resolve() / DATA_DIR_NAME / "scheduler.db"
    assert store.url == sqlite_url(expected)
    assert store.project_dir == project_dir.resolve()
    assert expected.is_file()
    assert journal_mode(expected) == "wal"
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        tables = set(inspect(connection).get_table_names())
    assert {"pipeline_schedule", "pipeline_run", "block_run", "backfill"} <= tables


def test_db_url_env_overrides_the_default(
    project_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import write_notebook

    write_notebook(project_dir / "my_pipeline.ipynb")
    elsewhere = tmp_path / "elsewhere" / "other.db"
    monkeypatch.setenv("MAGE_NB_SCHED_DB_URL", sqlite_url(elsewhere))
    reset_stores()

    store = current_store()
    assert store.url == sqlite_url(elsewhere)
    PipelineSchedule.create(name="n", pipeline_uuid="my_pipeline", schedule_interval="@daily")

    assert elsewhere.is_file()
    assert not (project_dir / DATA_DIR_NAME / "scheduler.db").exists()
    assert journal_mode(elsewhere) == "wal"
    connection = sqlite3.connect(elsewhere)
    try:
        names = connection.execute("SELECT name FROM pipeline_schedule").fetchall()
    finally:
        connection.close()
    assert names == [("n",)]


def test_project_dir_from_the_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marked = tmp_path / "marked"
    (marked / DATA_DIR_NAME).mkdir(parents=True)
    chosen = tmp_path / "chosen"
    chosen.mkdir()
    monkeypatch.chdir(marked)  # the env var wins over a marked cwd
    monkeypatch.setenv("MAGE_NB_SCHED_PROJECT_DIR", str(chosen))
    monkeypatch.delenv("MAGE_NB_SCHED_DB_URL", raising=False)
    reset_stores()
    try:
        assert resolve_project_dir() == chosen.resolve()
        store = current_store()
        assert store.url == sqlite_url(chosen.resolve() / DATA_DIR_NAME / "scheduler.db")
    finally:
        reset_stores()


def test_project_dir_is_the_nearest_marked_parent_of_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outer = tmp_path / "outer"
    inner = outer / "inner"
    deep = inner / "notebooks" / "etl"
    deep.mkdir(parents=True)
    (outer / DATA_DIR_NAME).mkdir()
    (inner / DATA_DIR_NAME).mkdir()
    monkeypatch.delenv("MAGE_NB_SCHED_PROJECT_DIR", raising=False)
    monkeypatch.delenv("MAGE_NB_SCHED_DB_URL", raising=False)
    monkeypatch.chdir(deep)
    reset_stores()
    try:
        assert resolve_project_dir() == inner.resolve()
        store = current_store()
        assert store.project_dir == inner.resolve()
        assert store.url == sqlite_url(inner.resolve() / DATA_DIR_NAME / "scheduler.db")
        assert (inner / DATA_DIR_NAME / "scheduler.db").is_file()
        assert not (outer / DATA_DIR_NAME / "scheduler.db").exists()
    finally:
        reset_stores()


def test_project_dir_falls_back_to_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "plain" / "sub"
    plain.mkdir(parents=True)
    if any((parent / DATA_DIR_NAME).is_dir() for parent in plain.resolve().parents):
        pytest.skip("a parent of the temporary directory is itself a marked project dir")
    monkeypatch.delenv("MAGE_NB_SCHED_PROJECT_DIR", raising=False)
    monkeypatch.delenv("MAGE_NB_SCHED_DB_URL", raising=False)
    monkeypatch.chdir(plain)
    reset_stores()
    try:
        assert resolve_project_dir() == plain.resolve()
        store = current_store()
        assert store.url == sqlite_url(plain.resolve() / DATA_DIR_NAME / "scheduler.db")
        # Opening the store marks the dir, so it is found again from a subfolder.
        (plain / "child").mkdir()
        monkeypatch.chdir(plain / "child")
        assert resolve_project_dir() == plain.resolve()
    finally:
        reset_stores()


# =============================================================================================
# (b) Upgrading a database made at the first migration
# =============================================================================================


def base_revision() -> str:
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    bases = script.get_bases()
    assert len(bases) == 1, bases
    return str(bases[0])


def test_upgrade_from_the_first_revision_keeps_the_data(
    project_dir: Path, tmp_path: Path
) -> None:
    from conftest import write_notebook

    write_notebook(project_dir / "my_pipeline.ipynb")
    path = tmp_path / "old.db"
    url = sqlite_url(path)
    first = base_revision()

    engine = create_engine(url)
    fake = SimpleNamespace(url=url, is_sqlite=True, engine=engine, sqlite_path=str(path))
    migrate(fake, first)  # type: ignore[arg-type]
    assert current_revision(engine) == first
    token = "old-database-token-0123456789"
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO pipeline_schedule (id, name, description, pipeline_uuid, "
                "schedule_type, schedule_interval, start_time, status, last_enabled_at, "
                "variables, sla, settings, token_hash, token_hint, in_code, created_at, "
                "updated_at) VALUES (41, 'legacy', 'from an old version', 'my_pipeline', "
                "'time', '@daily', '2024-01-01 09:00:00.000000', 'active', "
                "'2024-01-02 03:04:05.000000', '{\"env\": \"production\"}', 3600, "
                "'{\"timeout\": 1800}', :hash, 'old', 0, '2024-01-01 00:00:00.000000', "
                "'2024-01-01 00:00:00.000000')"
            ),
            {"hash": hash_token(token)},
        )
        connection.execute(
            text(
                "INSERT INTO pipeline_run (id, pipeline_schedule_id, pipeline_uuid, "
                "execution_date, status, sla_breached, run_key, created_at, updated_at) "
                "VALUES (7, 41, 'my_pipeline', '2024-01-15 09:30:00.000000', 'completed', 0, "
                "'schedule:41:2024-01-15T09:30:00+00:00', '2024-01-15 09:30:00.000000', "
                "'2024-01-15 09:40:00.000000')"
            )
        )
    engine.dispose()

    store = use_store(url, project_dir)  # the latest code: migrates to head on open
    assert current_revision(store.engine) == head_revision()

    schedule = PipelineSchedule.query.get(41)
    assert schedule is not None
    assert schedule.name == "legacy"
    assert schedule.description == "from an old version"
    assert schedule.pipeline_uuid == "my_pipeline"
    assert schedule.schedule_type == "time"
    assert schedule.schedule_interval == "@daily"
    assert schedule.status == ScheduleStatus.ACTIVE
    assert schedule.start_time == datetime(2024, 1, 1, 9, tzinfo=UTC)
    assert schedule.last_enabled_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert schedule.variables == {"env": "production"}
    assert schedule.sla == 3600
    assert schedule.settings == {"timeout": 1800}
    assert schedule.in_code is False
    assert schedule.check_token(token)
    run = PipelineRun.query.get(7)
    assert run.execution_partition == "41/20240115T093000"
    # 0002: finished runs count as already handled (no notification storm after an upgrade);
    # schedules are evaluated by the scheduler's first pass.
    assert run.finalized_at is not None and run.owner is None and run.attempts == 0
    assert schedule.next_due_at == EVALUATE_NOW
    assert [r.id for r in schedule.pipeline_runs] == [7]

    # The upgraded database is fully usable.
    schedule.update(sla=60)
    with store.new_session() as session:
        assert session.scalar(select(PipelineSchedule.sla).where(PipelineSchedule.id == 41)) == 60

    # Opening it again is a no-op migration.
    reset_stores()
    again = Store(url, project_dir)
    try:
        assert current_revision(again.engine) == head_revision()
        with again.new_session() as session:
            assert session.scalar(select(func.count()).select_from(PipelineSchedule)) == 1
    finally:
        again.dispose()


def test_migrations_reach_the_models_schema(tmp_path: Path) -> None:
    """Every column the models declare exists after migrating (no missing migration)."""
    from mage_nb_sched.models import Base

    store = Store(sqlite_url(tmp_path / "fresh.db"))
    try:
        with store.engine.connect() as connection:
            inspector = inspect(connection)
            for table in Base.metadata.sorted_tables:
                columns = {c["name"] for c in inspector.get_columns(table.name)}
                assert {c.name for c in table.columns} <= columns, table.name
    finally:
        store.dispose()


# =============================================================================================
# (c) Two real processes
# =============================================================================================


def _race_worker(
    url: str,
    project_dir: str,
    schedule_id: int,
    dates: list[str],
    barrier: Any,
    results: Any,
) -> None:
    """Create the scheduled run of every date; report which calls created a row."""
    try:
        os.environ["MAGE_NB_SCHED_PROJECT_DIR"] = project_dir
        os.environ.pop("MAGE_NB_SCHED_DB_URL", None)
        from mage_nb_sched.service.runs import create_scheduled_run
        from mage_nb_sched.service.schedules import get_schedule
        from mage_nb_sched.store import use_store

        store = use_store(url, project_dir)
        schedule = get_schedule(store, schedule_id)
        barrier.wait(timeout=PROCESS_TIMEOUT)
        created: list[str] = []
        for iso in dates:
            run, was_created = create_scheduled_run(
                store, schedule, datetime.fromisoformat(iso)
            )
            if run.execution_date != datetime.fromisoformat(iso):
                raise AssertionError(f"got the run of {run.execution_date} for {iso}")
            if was_created:
                created.append(iso)
        results.put((os.getpid(), created, None))
    except BaseException:
        results.put((os.getpid(), None, traceback.format_exc()))


def _migrate_worker(url: str, barrier: Any, results: Any) -> None:
    try:
        from mage_nb_sched.store import Store, current_revision

        barrier.wait(timeout=PROCESS_TIMEOUT)
        store = Store(url)
        revision = current_revision(store.engine)
        store.dispose()
        results.put((os.getpid(), revision, None))
    except BaseException:
        results.put((os.getpid(), None, traceback.format_exc()))


def _run_processes(target: Any, args_per_process: list[tuple[Any, ...]]) -> list[Any]:
    """Start one spawned process per args tuple, all behind one barrier; return their results."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(args_per_process))
    results = context.Queue()
    processes = [
        context.Process(target=target, args=(*args, barrier, results), daemon=True)
        for args in args_per_process
    ]
    for process in processes:
        process.start()
    try:
        collected = [results.get(timeout=PROCESS_TIMEOUT) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=PROCESS_TIMEOUT)
            if process.is_alive():  # pragma: no cover - only on a hang
                process.kill()
    errors = [error for _pid, _value, error in collected if error]
    assert not errors, "\n\n".join(errors)
    assert all(process.exitcode == 0 for process in processes)
    return collected


def test_two_processes_racing_for_the_same_periods_create_one_run_each(
    store: Store, project_dir: Path
) -> None:
    schedule = PipelineSchedule.create(
        name="raced", pipeline_uuid="my_pipeline", schedule_interval="@hourly", status="active"
    )
    periods = [datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=h) for h in range(50)]
    dates = [p.isoformat() for p in periods]

    collected = _run_processes(
        _race_worker,
        [(store.url, str(project_dir), schedule.id, dates) for _ in range(2)],
    )
    created_by = [set(created) for _pid, created, _error in collected]
    assert len(created_by) == 2
    assert created_by[0].isdisjoint(created_by[1])
    assert created_by[0] | created_by[1] == set(dates)
    assert sum(len(c) for c in created_by) == len(periods)

    with store.new_session() as session:
        per_period = session.execute(
            select(PipelineRun.execution_date, func.count(PipelineRun.id))
            .where(PipelineRun.pipeline_schedule_id == schedule.id)
            .group_by(PipelineRun.execution_date)
        ).all()
    assert len(per_period) == len(periods)
    assert all(n == 1 for _date, n in per_period)
    assert sorted(date for date, _n in per_period) == periods

    # This process, too, finds the existing rows instead of adding more.
    for period in periods[:5]:
        _run, created = create_scheduled_run(store, schedule, period)
        assert created is False
    assert len(schedule.pipeline_runs) == len(periods)


def test_processes_migrating_a_new_database_at_once_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "brand" / "new.db"
    url = sqlite_url(path)
    assert not path.exists()

    collected = _run_processes(_migrate_worker, [(url,) for _ in range(3)])
    assert [revision for _pid, revision, _error in collected] == [head_revision()] * 3

    store = Store(url)
    try:
        assert current_revision(store.engine) == head_revision()
        with store.engine.connect() as connection:
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        assert versions == [(head_revision(),)]
    finally:
        store.dispose()
    assert journal_mode(path) == "wal"


# =============================================================================================
# (d) Bad URLs
# =============================================================================================


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "",
        "postgress://user@localhost/mage",  # unknown dialect
        "sqlite+nodriver:///x.db",  # unknown driver
        "postgresql://user@localhost:fivefourthreetwo/mage",  # bad port
    ],
)
def test_bad_db_url_is_a_validation_error_naming_db_url(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        Store(url)
    assert info.value.field == "db_url"
    assert "sqlite:///" in str(info.value)  # an example of a good URL


def test_bad_db_url_from_the_env_is_reported_when_the_store_opens(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAGE_NB_SCHED_DB_URL", "definitely not a database url")
    reset_stores()
    with pytest.raises(ValidationError) as info:
        current_store()
    assert info.value.field == "db_url"
    assert "definitely not a database url" in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgress://alice:s3cr3t-pw@localhost/mage",
        "postgresql://alice:s3cr3t-pw@localhost:port/mage",
    ],
)
def test_bad_db_url_does_not_echo_a_password(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        Store(url)
    assert info.value.field == "db_url"
    assert "alice" in str(info.value)
    assert "s3cr3t-pw" not in str(info.value)
    assert "s3cr3t-pw" not in repr(info.value.to_dict())


def test_the_models_match_the_migrations(store: Store) -> None:
    """Every column and index the models declare exists after migrating (and nothing else)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from mage_nb_sched.models import Base

    with store.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_opening_a_new_database_logs_no_alembic_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from mage_nb_sched.store.engine import Store

    caplog.set_level(logging.INFO)
    store = Store(f"sqlite:///{tmp_path / 'fresh.db'}", tmp_path)
    try:
        noise = [r.getMessage() for r in caplog.records if r.name.startswith("alembic")]
        assert noise == []
        assert current_revision(store.engine) is not None  # it did migrate
    finally:
        store.dispose()


def test_a_read_only_database_gives_a_store_error_that_names_the_file(
    store: Store, project_dir: Path
) -> None:
    from mage_nb_sched import PipelineSchedule, StoreError
    from mage_nb_sched.store.engine import use_store as use

    PipelineSchedule.create(
        name="before", pipeline_uuid="my_pipeline", schedule_interval="@daily"
    )
    database = project_dir / ".mage_nb_sched" / "scheduler.db"
    # SQLite's read-only mode: the same refusal a read-only file or folder gives a writer (chmod
    # does not stop root, who runs these tests in CI).
    use(f"sqlite:///file:{database}?mode=ro&uri=true", project_dir)
    with pytest.raises(StoreError) as caught:
        PipelineSchedule.create(
            name="after", pipeline_uuid="my_pipeline", schedule_interval="@daily"
        )
    message = str(caught.value)
    assert "read-only" in message and str(database) in message and "writable" in message
    assert [s.name for s in PipelineSchedule.query.all()] == ["before"]
    # The URI names the same file; nothing is created for its literal "file:..." spelling.
    assert not any(p.name.startswith("file:") for p in Path.cwd().iterdir())


def test_sqlite_file_understands_uri_filenames() -> None:
    from mage_nb_sched.store.engine import sqlite_file

    assert sqlite_file("sqlite:////abs/x.db") == "/abs/x.db"
    assert sqlite_file("sqlite:///file:/abs/x.db?mode=ro&uri=true") == "/abs/x.db"
    assert sqlite_file("sqlite://") is None
    assert sqlite_file("sqlite:///:memory:") is None


def test_a_database_locked_past_the_busy_timeout_gives_a_store_error(
    store: Store, project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from mage_nb_sched import PipelineSchedule, StoreError
    from mage_nb_sched.store import engine

    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_MS", 100)
    store.engine.dispose()  # new connections read the shortened timeout
    database = project_dir / ".mage_nb_sched" / "scheduler.db"
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError) as caught:
            PipelineSchedule.create(
                name="x", pipeline_uuid="my_pipeline", schedule_interval="@daily"
            )
        assert "locked" in str(caught.value) and "fuser" in str(caught.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # Once the lock is gone the same call works.
    assert PipelineSchedule.create(
        name="x", pipeline_uuid="my_pipeline", schedule_interval="@daily"
    )


def test_store_errors_are_told_apart() -> None:
    from sqlalchemy.exc import OperationalError

    from mage_nb_sched.store.engine import Store as StoreClass
    from mage_nb_sched.store.engine import store_error

    fake = StoreClass.__new__(StoreClass)
    fake.url, fake.is_sqlite, fake.sqlite_path = "sqlite:////srv/x.db", True, "/srv/x.db"
    full = store_error(OperationalError("INSERT", {}, Exception("database or disk is full")), fake)
    assert "disk holding the database /srv/x.db is full" in str(full)
    opened = store_error(OperationalError("x", {}, Exception("unable to open database file")), fake)
    assert "cannot open the database /srv/x.db" in str(opened)
