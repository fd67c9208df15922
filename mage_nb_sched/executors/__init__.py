"""Executors run pipeline runs off the caller's event loop; swappable by configuration."""

from .base import Executor, RunResult
from .local import LocalExecutor

__all__ = ["Executor", "LocalExecutor", "RunResult"]
