"""Executor options are traitlets: configurable from Jupyter config, validated with clear errors."""

from __future__ import annotations

import pytest
from traitlets import TraitError
from traitlets.config import Config

from mage_nb_sched.execution.executors import LocalExecutor
from mage_nb_sched.store import Store


def test_options_come_from_config(store: Store) -> None:
    config = Config()
    config.LocalExecutor.workers = 3
    config.LocalExecutor.kernel_pool_size = 0
    config.LocalExecutor.preload = ["json"]
    executor = LocalExecutor(store, config=config)
    assert (executor.workers, executor.kernel_pool_size, executor.preload) == (3, 0, ["json"])


def test_every_option_is_documented() -> None:
    for name in ("workers", "runs_per_worker", "kernel_pool_size", "preload"):
        assert LocalExecutor.class_traits()[name].help


@pytest.mark.parametrize(
    ("option", "value"), [("workers", 0), ("runs_per_worker", -1), ("kernel_pool_size", -1)]
)
def test_bad_values_are_refused(store: Store, option: str, value: int) -> None:
    with pytest.raises(TraitError, match=option):
        LocalExecutor(store, **{option: value})
