"""Executors run pipeline runs off the caller's event loop; swappable by configuration.

:class:`Executor` (``base.py``) is the interface, with its contract documented per method;
:class:`LocalExecutor` (``local.py``, local worker processes with warm kernels) is the default
implementation. Choose one with ``c.Scheduler.executor_class`` or
``c.MageNbSchedApp.executor_class``.
"""

from mage_nb_sched.execution.executors.base import Executor, RunResult
from mage_nb_sched.execution.executors.local import LocalExecutor

__all__ = ["Executor", "LocalExecutor", "RunResult"]
