"""Where a run's files live: outputs, logs and the executed notebook.

:class:`ArtifactStore` is the interface; :class:`LocalArtifactStore` (folders under the project's
data dir) is the implementation beside it, and the default of ``c.Scheduler.artifact_store_class``
and ``c.MageNbSchedApp.artifact_store_class``. The module-level functions (:func:`run_dir`,
:func:`executed_notebook_path`, :func:`block_log_path`) are the local store's locations, kept for
the code that calls them directly.

A store shared by workers on other machines (Dask) plugs in here: an ``FsspecArtifactStore``
subclass with a ``url`` trait (``s3://bucket/prefix``, ``gcs://...``, a shared file system) that
returns URLs under it and deletes with ``fsspec``'s ``rm(..., recursive=True)``.
"""

from __future__ import annotations

import shutil
from abc import ABCMeta, abstractmethod
from pathlib import Path
from typing import Any, TypeAlias

from traitlets import MetaHasTraits
from traitlets.config import LoggingConfigurable

from mage_nb_sched.core.project import data_dir

#: Where an artifact is: a local :class:`~pathlib.Path`, or a URL string (``s3://...``) for a
#: remote store. Either one is something ``fsspec.open()`` accepts.
ArtifactLocation: TypeAlias = "Path | str"


class _ArtifactStoreMeta(MetaHasTraits, ABCMeta):
    """Traitlets' metaclass and ``abc``'s together (a ``Configurable`` with abstract methods)."""


class ArtifactStore(LoggingConfigurable, metaclass=_ArtifactStoreMeta):
    """Where the files of pipeline runs go: one folder per run (its executed notebook and block
    logs) and one folder of block outputs per run.

    A run is identified by its pipeline uuid and its execution partition
    (:func:`mage_nb_sched.core.partitions.execution_partition`, e.g. ``"3/20240115T000000"``);
    both may contain ``/``. Runs of the same schedule and execution date share a partition and
    so their files (a re-run replaces them).

    Created as ``artifact_store_class(project_dir, parent=...)``; other options are traitlets
    (config). Methods only compute locations and delete: they never create anything, and may
    be called from any thread. Writers create parent folders as they write.
    """

    def __init__(self, project_dir: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: The project the runs belong to (notebooks, ``.mage_nb_sched/`` data dir).
        self.project_dir = Path(project_dir)

    @abstractmethod
    def run_folder(self, pipeline_uuid: str, partition: str) -> ArtifactLocation:
        """The folder of one run: its executed notebook and its ``logs/``."""

    @abstractmethod
    def executed_notebook(self, pipeline_uuid: str, partition: str) -> ArtifactLocation:
        """The executed notebook (with outputs) of a run, written when the run has ended."""

    @abstractmethod
    def block_log(self, pipeline_uuid: str, partition: str, block_uuid: str) -> ArtifactLocation:
        """The log of one block run: its stdout, stderr and error with traceback."""

    @abstractmethod
    def output_folder(self, pipeline_uuid: str, partition: str) -> ArtifactLocation:
        """The folder of a run's block outputs: block ``b``'s output is in
        ``<output folder>/<b>/output_0`` (:func:`mage_nb_sched.execution.variables.output_dir`,
        which also reads it back in downstream blocks)."""

    @abstractmethod
    def delete_run(self, pipeline_uuid: str, partition: str) -> None:
        """Delete every file of a run (its run folder and its output folder). Missing files are
        not an error; nothing is raised for files that cannot be removed. The caller deletes
        the run's rows first and only when no kept run shares the partition."""


class LocalArtifactStore(ArtifactStore):
    """Folders under the project's data dir (``<project dir>/.mage_nb_sched/``)::

        runs/<pipeline uuid>/<partition>/notebook.ipynb          executed notebook
        runs/<pipeline uuid>/<partition>/logs/<block uuid>.log   block logs
        .variables/pipelines/<pipeline uuid>/<partition>/        block outputs

    Only processes that see the same file system (local worker processes, kernels) can share
    it.
    """

    @property
    def root(self) -> Path:
        """The data dir everything lives under."""
        return data_dir(self.project_dir)

    def run_folder(self, pipeline_uuid: str, partition: str) -> Path:
        return self.root / "runs" / pipeline_uuid / partition

    def executed_notebook(self, pipeline_uuid: str, partition: str) -> Path:
        return self.run_folder(pipeline_uuid, partition) / "notebook.ipynb"

    def block_log(self, pipeline_uuid: str, partition: str, block_uuid: str) -> Path:
        return self.run_folder(pipeline_uuid, partition) / "logs" / f"{block_uuid}.log"

    def output_folder(self, pipeline_uuid: str, partition: str) -> Path:
        return self.root / ".variables" / "pipelines" / pipeline_uuid / partition

    def delete_run(self, pipeline_uuid: str, partition: str) -> None:
        for folder in (
            self.run_folder(pipeline_uuid, partition),
            self.output_folder(pipeline_uuid, partition),
        ):
            shutil.rmtree(folder, ignore_errors=True)


# ----- the local store's locations as functions (callers that take a project dir) ---------


def run_dir(project_dir: Path, pipeline_uuid: str, partition: str) -> Path:
    """``<data dir>/runs/<pipeline uuid>/<partition>/`` — one folder per run."""
    return LocalArtifactStore(project_dir).run_folder(pipeline_uuid, partition)


def executed_notebook_path(project_dir: Path, pipeline_uuid: str, partition: str) -> Path:
    """The executed notebook (with outputs) of a run."""
    return LocalArtifactStore(project_dir).executed_notebook(pipeline_uuid, partition)


def block_log_path(project_dir: Path, pipeline_uuid: str, partition: str, block_uuid: str) -> Path:
    """The log of one block run: its stdout, stderr and error."""
    return LocalArtifactStore(project_dir).block_log(pipeline_uuid, partition, block_uuid)
