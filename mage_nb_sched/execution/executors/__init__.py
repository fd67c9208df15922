"""Executors run pipeline runs off the caller's event loop; swappable by configuration."""

from mage_nb_sched.execution.executors.base import Executor, RunResult
from mage_nb_sched.execution.executors.local import LocalExecutor

__all__ = ["Executor", "LocalExecutor", "RunResult"]
