"""The interfaces implementations plug into — Executor, Coordinator, ArtifactStore — and the
traitlets ``Type`` traits that choose them (by class or dotted name, refusing anything else)."""

from __future__ import annotations

import asyncio
import inspect
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import write_notebook
from processes import until
from stub_executor import StubExecutor
from traitlets import TraitError
from traitlets.config import Config

from mage_nb_sched.core.project import data_dir
from mage_nb_sched.execution.executors import Executor, LocalExecutor, RunResult
from mage_nb_sched.execution.variables import output_dir
from mage_nb_sched.extension import MageNbSchedApp
from mage_nb_sched.scheduling.loop import Scheduler
from mage_nb_sched.store import Store, artifacts, leases
from mage_nb_sched.store.artifacts import ArtifactStore, LocalArtifactStore
from mage_nb_sched.store.coordination import Coordinator, LeaderLeaseCoordinator

UTC = timezone.utc
NOW = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# Implementations that leave one abstract method out, and a coordinator that records its calls
# --------------------------------------------------------------------------------------------


class ExecutorWithoutKill(Executor):
    async def start(self) -> None: ...

    async def submit(self, run_id: int) -> asyncio.Future[RunResult]:
        raise NotImplementedError

    async def cancel(self, run_id: int) -> None: ...

    async def shutdown(self, grace: float = 10.0) -> None: ...

    @property
    def capacity(self) -> int:
        return 1

    @property
    def active_runs(self) -> set[int]:
        return set()


class CoordinatorWithoutRelease(Coordinator):
    def heartbeat(self, now: datetime, details: dict[str, Any] | None = None) -> None: ...

    def acquire(self, now: datetime) -> bool:
        return True

    @property
    def is_leader(self) -> bool:
        return True

    def live_instances(self, connection: Any, now: datetime) -> set[str]:
        return set()

    def owner_is_alive(self, owner: str, live: set[str]) -> bool:
        return True


class ArtifactStoreWithoutDelete(ArtifactStore):
    def run_folder(self, pipeline_uuid: str, partition: str) -> str:
        return f"memory://{pipeline_uuid}/{partition}"

    def executed_notebook(self, pipeline_uuid: str, partition: str) -> str:
        return f"{self.run_folder(pipeline_uuid, partition)}/notebook.ipynb"

    def block_log(self, pipeline_uuid: str, partition: str, block_uuid: str) -> str:
        return f"{self.run_folder(pipeline_uuid, partition)}/logs/{block_uuid}.log"

    def output_folder(self, pipeline_uuid: str, partition: str) -> str:
        return f"memory://outputs/{pipeline_uuid}/{partition}"


class RecordingCoordinator(LeaderLeaseCoordinator):
    """The lease coordinator, noting which of its methods the scheduler called."""

    def __init__(self, store: Store, **kwargs: Any) -> None:
        super().__init__(store, **kwargs)
        self.calls: list[str] = []

    def heartbeat(self, now: datetime, details: dict[str, Any] | None = None) -> None:
        self.calls.append("heartbeat")
        super().heartbeat(now, details)

    def acquire(self, now: datetime) -> bool:
        self.calls.append("acquire")
        return super().acquire(now)

    def release(self) -> None:
        self.calls.append("release")
        super().release()


class NeverLeads(RecordingCoordinator):
    def acquire(self, now: datetime) -> bool:
        self.calls.append("acquire")
        return False


INTERFACES: list[tuple[type, set[str]]] = [
    (
        Executor,
        {"start", "submit", "cancel", "kill", "shutdown", "capacity", "active_runs"},
    ),
    (
        Coordinator,
        {"heartbeat", "acquire", "release", "is_leader", "live_instances", "owner_is_alive"},
    ),
    (
        ArtifactStore,
        {"run_folder", "executed_notebook", "block_log", "output_folder", "delete_run"},
    ),
]


# --------------------------------------------------------------------------------------------
# The interfaces
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interface", "methods"), INTERFACES, ids=lambda x: getattr(x, "__name__", "")
)
def test_interface_methods_are_abstract_and_documented(interface: type, methods: set[str]) -> None:
    assert set(interface.__abstractmethods__) == methods  # type: ignore[attr-defined]
    assert inspect.getdoc(interface)
    for name in methods:
        member = inspect.getattr_static(interface, name)
        function = member.fget if isinstance(member, property) else member
        assert inspect.getdoc(function), f"{interface.__name__}.{name} has no docstring"


@pytest.mark.parametrize(
    ("incomplete", "missing", "args"),
    [
        (ExecutorWithoutKill, "kill", ("store",)),
        (CoordinatorWithoutRelease, "release", ("store",)),
        (ArtifactStoreWithoutDelete, "delete_run", ("project_dir",)),
    ],
    ids=["Executor", "Coordinator", "ArtifactStore"],
)
def test_an_implementation_missing_a_method_cannot_be_created(
    incomplete: type, missing: str, args: tuple[str, ...], request: pytest.FixtureRequest
) -> None:
    values = [request.getfixturevalue(name) for name in args]
    with pytest.raises(TypeError, match=f"abstract.*{missing}"):
        incomplete(*values)


@pytest.mark.parametrize(
    "interface", [Executor, Coordinator, ArtifactStore], ids=lambda c: c.__name__
)
def test_an_interface_itself_cannot_be_created(interface: type, store: Store) -> None:
    with pytest.raises(TypeError, match="abstract"):
        interface(store)


def test_the_implementations_are_instances_of_their_interfaces(
    store: Store, project_dir: Path
) -> None:
    executor = LocalExecutor(store)  # creating starts nothing
    assert isinstance(executor, Executor)
    assert isinstance(StubExecutor(store), Executor)
    coordinator = LeaderLeaseCoordinator(store)
    assert isinstance(coordinator, Coordinator)
    assert coordinator.instance_id.startswith("sched:")
    assert isinstance(LocalArtifactStore(project_dir), ArtifactStore)


# --------------------------------------------------------------------------------------------
# Type traits: default, dotted names, refusals
# --------------------------------------------------------------------------------------------


def test_the_scheduler_defaults_to_the_local_parts(store: Store) -> None:
    scheduler = Scheduler(store)
    assert type(scheduler.executor) is LocalExecutor
    assert type(scheduler.coordinator) is LeaderLeaseCoordinator
    assert type(scheduler.artifacts) is LocalArtifactStore
    assert scheduler.artifacts.project_dir == store.project_dir
    # The scheduler hands its identity and its artifact store to the executor.
    assert scheduler.instance_id == scheduler.coordinator.instance_id == scheduler.executor.owner
    assert scheduler.executor.artifacts is scheduler.artifacts
    for name in ("executor_class", "coordinator_class", "artifact_store_class"):
        assert Scheduler.class_traits()[name].help


def test_the_app_defaults_are_the_documented_dotted_names() -> None:
    app = MageNbSchedApp()
    assert app.executor_class is LocalExecutor
    assert app.artifact_store_class is LocalArtifactStore
    # The README's default, given as a string in config, is valid.
    config = Config()
    config.MageNbSchedApp.executor_class = "mage_nb_sched.execution.executors.local.LocalExecutor"
    config.MageNbSchedApp.artifact_store_class = "mage_nb_sched.store.artifacts.LocalArtifactStore"
    app = MageNbSchedApp(config=config)
    assert (app.executor_class, app.artifact_store_class) == (LocalExecutor, LocalArtifactStore)
    for name in ("executor_class", "artifact_store_class"):
        assert MageNbSchedApp.class_traits()[name].help


def test_a_custom_executor_named_in_scheduler_config_is_the_one_created(store: Store) -> None:
    config = Config()
    config.Scheduler.executor_class = "stub_executor.StubExecutor"
    config.Scheduler.coordinator_class = f"{__name__}.RecordingCoordinator"
    scheduler = Scheduler(store, config=config)
    assert type(scheduler.executor) is StubExecutor
    assert type(scheduler.coordinator) is RecordingCoordinator
    assert scheduler.executor.owner == scheduler.instance_id
    assert scheduler.executor.parent is scheduler


def test_a_custom_executor_named_in_app_config_reaches_the_scheduler(store: Store) -> None:
    config = Config()
    config.MageNbSchedApp.executor_class = "stub_executor.StubExecutor"
    app = MageNbSchedApp(config=config)
    assert app.executor_class is StubExecutor
    scheduler = Scheduler(store, config=app._part_config())
    assert type(scheduler.executor) is StubExecutor
    assert type(scheduler.artifacts) is LocalArtifactStore


def test_a_part_set_on_the_scheduler_wins_over_the_app(store: Store) -> None:
    config = Config()
    config.MageNbSchedApp.executor_class = "mage_nb_sched.execution.executors.local.LocalExecutor"
    config.Scheduler.executor_class = "stub_executor.StubExecutor"
    scheduler = Scheduler(store, config=MageNbSchedApp(config=config)._part_config())
    assert type(scheduler.executor) is StubExecutor


@pytest.mark.parametrize(
    ("trait", "interface"),
    [
        ("executor_class", "Executor"),
        ("coordinator_class", "Coordinator"),
        ("artifact_store_class", "ArtifactStore"),
    ],
)
def test_a_class_that_is_not_the_interface_is_refused_by_the_scheduler(
    store: Store, trait: str, interface: str
) -> None:
    config = Config()
    config.Scheduler[trait] = "traitlets.config.Configurable"
    with pytest.raises(TraitError, match=rf"'{trait}'.*subclass of '[\w.]+\.{interface}'"):
        Scheduler(store, config=config)


@pytest.mark.parametrize("trait", ["executor_class", "artifact_store_class"])
def test_a_class_that_is_not_the_interface_is_refused_by_the_app(trait: str) -> None:
    config = Config()
    config.MageNbSchedApp[trait] = "mage_nb_sched.store.coordination.LeaderLeaseCoordinator"
    with pytest.raises(TraitError, match=rf"'{trait}'.*MageNbSchedApp.*expected a subclass"):
        MageNbSchedApp(config=config)


def test_a_name_that_cannot_be_imported_is_refused(store: Store) -> None:
    config = Config()
    config.Scheduler.executor_class = "stub_executor.NoSuchExecutor"
    with pytest.raises(
        TraitError, match=r"'executor_class'.*'stub_executor\.NoSuchExecutor' could not"
    ):
        Scheduler(store, config=config)


# --------------------------------------------------------------------------------------------
# Coordination
# --------------------------------------------------------------------------------------------


def test_the_lease_coordinator_lets_one_instance_lead(store: Store) -> None:
    first = LeaderLeaseCoordinator(store, lease_seconds=10)
    second = LeaderLeaseCoordinator(store, lease_seconds=10)
    assert first.instance_id != second.instance_id
    assert not first.is_leader
    first.heartbeat(NOW)
    second.heartbeat(NOW)
    assert first.acquire(NOW) and first.is_leader
    assert not second.acquire(NOW) and not second.is_leader
    assert first.acquire(NOW + timedelta(seconds=5))  # renewed
    held = leases.holder(store, leases.LEADER)
    assert held is not None and held[0] == first.instance_id
    with store.engine.connect() as connection:
        live = first.live_instances(connection, NOW + timedelta(seconds=1))
    assert {first.instance_id, second.instance_id} <= live
    assert first.owner_is_alive(first.instance_id, live)
    assert not first.owner_is_alive("sched:elsewhere:1:2:dead", live)
    first.release()
    assert not first.is_leader
    assert leases.holder(store, leases.LEADER) is None
    with store.engine.connect() as connection:
        assert first.instance_id not in first.live_instances(connection, NOW)
    assert second.acquire(NOW + timedelta(seconds=6))


def test_a_standby_takes_over_when_the_lease_expires(store: Store) -> None:
    first = LeaderLeaseCoordinator(store, lease_seconds=3)
    second = LeaderLeaseCoordinator(store, lease_seconds=3)
    assert first.acquire(NOW)
    assert not second.acquire(NOW + timedelta(seconds=2))
    assert second.acquire(NOW + timedelta(seconds=3))


def test_the_scheduler_leads_releases_and_stands_by_through_its_coordinator(
    store: Store,
) -> None:
    async def scenario(coordinator_class: type[Coordinator]) -> Scheduler:
        config = Config()
        config.Scheduler.coordinator_class = coordinator_class
        config.Scheduler.lease_seconds = 0.3
        scheduler = Scheduler(store, executor=StubExecutor(store), config=config)
        await scheduler.start()
        try:
            coordinator = scheduler.coordinator
            assert isinstance(coordinator, RecordingCoordinator)
            await until(lambda: coordinator.calls.count("acquire") >= 2, 10, "two lease rounds")
            if coordinator_class is RecordingCoordinator:
                await until(lambda: scheduler.is_leader, 10, "the scheduler leads")
        finally:
            await scheduler.stop(grace=0)
        return scheduler

    leader = asyncio.run(scenario(RecordingCoordinator))
    calls = leader.coordinator.calls  # type: ignore[attr-defined]
    assert calls[:2] == ["heartbeat", "acquire"]
    assert calls[-1] == "release"
    assert leader.passes >= 1
    assert leases.holder(store, leases.LEADER) is None  # released on stop

    standby = asyncio.run(scenario(NeverLeads))
    assert not standby.is_leader
    assert standby.passes == 0  # a scheduler that may not lead creates and starts nothing


def test_lease_seconds_set_later_reaches_the_coordinator(store: Store) -> None:
    scheduler = Scheduler(store, executor=StubExecutor(store), lease_seconds=4)
    assert scheduler.coordinator.lease_seconds == 4
    scheduler.lease_seconds = 7
    assert scheduler.coordinator.lease_seconds == 7


# --------------------------------------------------------------------------------------------
# Artifacts
# --------------------------------------------------------------------------------------------


def test_local_artifact_paths_are_the_data_dir_layout(project_dir: Path) -> None:
    local = LocalArtifactStore(project_dir)
    uuid, partition, block = "etl/daily", "3/20240115T000000", "load_data"
    data = data_dir(project_dir)
    assert local.root == data
    assert local.run_folder(uuid, partition) == data / "runs" / "etl" / "daily" / "3" / (
        "20240115T000000"
    )
    # The module-level functions the runner, the passes and the models call are the same.
    assert local.run_folder(uuid, partition) == artifacts.run_dir(project_dir, uuid, partition)
    assert local.executed_notebook(uuid, partition) == artifacts.executed_notebook_path(
        project_dir, uuid, partition
    )
    assert local.executed_notebook(uuid, partition) == local.run_folder(uuid, partition) / (
        "notebook.ipynb"
    )
    assert local.block_log(uuid, partition, block) == artifacts.block_log_path(
        project_dir, uuid, partition, block
    )
    assert local.block_log(uuid, partition, block) == (
        local.run_folder(uuid, partition) / "logs" / "load_data.log"
    )
    # Block outputs (execution.variables) live in the output folder.
    assert output_dir(data, uuid, partition, block).parent.parent == local.output_folder(
        uuid, partition
    )


def test_delete_run_removes_the_run_folder_and_outputs_only(project_dir: Path) -> None:
    local = LocalArtifactStore(project_dir)
    uuid = "my_pipeline"
    for partition in ("manual/20240101T000000", "manual/20240102T000000"):
        log = local.block_log(uuid, partition, "a")
        log.parent.mkdir(parents=True)
        log.write_text("out")
        local.executed_notebook(uuid, partition).write_text("{}")
        output = output_dir(local.root, uuid, partition, "a")
        output.mkdir(parents=True)
        (output / "data.json").write_text("1")
    local.delete_run(uuid, "manual/20240101T000000")
    assert not local.run_folder(uuid, "manual/20240101T000000").exists()
    assert not local.output_folder(uuid, "manual/20240101T000000").exists()
    assert local.block_log(uuid, "manual/20240102T000000", "a").read_text() == "out"
    assert local.output_folder(uuid, "manual/20240102T000000").is_dir()
    local.delete_run(uuid, "manual/20240101T000000")  # already gone: no error
    local.delete_run("never_ran", "manual/20240101T000000")


@pytest.mark.kernel
def test_the_runner_writes_where_the_local_artifact_store_says(
    store: Store, project_dir: Path
) -> None:
    from mage_nb_sched.execution.runner import run_with_fresh_kernel
    from mage_nb_sched.service.runs import block_runs, create_run, get_run

    write_notebook(
        project_dir / "arts.ipynb",
        ["from mage_nb_sched import data_loader", "@data_loader\ndef load(*a, **k):\n    return 1"],
    )
    run = create_run(store, pipeline_uuid="arts")
    outcome = asyncio.run(run_with_fresh_kernel(store, run.id))
    assert outcome.status == "completed", outcome
    local = LocalArtifactStore(project_dir)
    partition = run.execution_partition
    notebook = local.executed_notebook("arts", partition)
    assert notebook.is_file()
    metrics = get_run(store, run.id).metrics or {}
    assert metrics["executed_notebook"] == str(notebook)
    blocks = block_runs(store, run.id)
    assert blocks
    for block in blocks:
        assert local.block_log("arts", partition, block.block_uuid).is_file()
    assert (local.output_folder("arts", partition) / "load").is_dir()
