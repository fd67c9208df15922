"""Pipelines: the notebooks of the project dir, with their blocks and how many schedules each
has — ``GET pipelines`` (paged) and ``GET pipelines/{uuid}``.

Reading notebooks is file work: it runs on the service's thread pool
(:func:`~mage_nb_sched.service.asynchronous.run_off_loop`), never on the server's loop. A
notebook that cannot be read as a pipeline (not JSON, no kernelspec, two blocks with one uuid)
is listed with its ``error`` — it never breaks the list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from mage_nb_sched.core.errors import MageNbSchedError, NotFoundError
from mage_nb_sched.handlers.base import AUTH_RESOURCE, MageApiHandler, api_route

ONE = "pipeline"
MANY = "pipelines"


def _error_json(error: BaseException) -> dict[str, Any]:
    if isinstance(error, MageNbSchedError):
        return {
            "type": type(error).__name__,
            "message": str(error),
            "field": getattr(error, "field", None),
            "fix": getattr(error, "fix", None),
        }
    return {
        "type": type(error).__name__,
        "message": f"the notebook could not be read ({type(error).__name__}: {error})"[:500],
        "field": "notebook",
        "fix": "Open it in Jupyter to repair it, or restore it from version control.",
    }


def describe_pipeline(project_dir: Path, uuid: str) -> dict[str, Any]:
    """One notebook as a pipeline (blocking: reads the file). A notebook that does not load
    as a pipeline is described with its ``error`` and no blocks."""
    from mage_nb_sched.execution.pipelines import load_pipeline

    described: dict[str, Any] = {
        "uuid": uuid,
        "name": uuid.rsplit("/", 1)[-1],
        "path": f"{uuid}.ipynb",
        "kernel_name": None,
        "content_hash": None,
        "blocks": [],
        "error": None,
    }
    try:
        pipeline = load_pipeline(project_dir, uuid)
    except Exception as err:  # one bad notebook is shown with its error, never raised
        described["error"] = _error_json(err)
        return described
    described["kernel_name"] = pipeline.kernel_name
    described["content_hash"] = pipeline.content_hash
    described["blocks"] = [
        {
            "uuid": block.uuid,
            "name": block.function_name or block.uuid,
            "type": block.decorator,
            "function_name": block.function_name,
            "cell_index": block.cell_index,
            "tags": list(block.tags),
        }
        for block in pipeline.blocks
    ]
    return described


def scan_pipelines(project_dir: Path, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """The notebooks ``offset`` .. ``offset + limit`` of the project dir (sorted by uuid),
    described, and how many there are in all (blocking: walks the folder, reads the page's
    notebooks only)."""
    from mage_nb_sched.core.project import list_pipelines

    uuids = list_pipelines(project_dir)
    return [describe_pipeline(project_dir, uuid) for uuid in uuids[offset : offset + limit]], len(
        uuids
    )


def find_pipeline(project_dir: Path, uuid: str) -> dict[str, Any]:
    """One notebook described (blocking), or :class:`NotFoundError` naming the uuid."""
    from mage_nb_sched.core.project import notebook_path

    try:
        found = notebook_path(project_dir, uuid).is_file()
    except OSError:  # a name the file system refuses (too long): there is no such notebook
        found = False
    if not found:
        raise NotFoundError(
            f"pipelines/{uuid}: there is no notebook {uuid}.ipynb in the project dir "
            f"({project_dir}). List the pipelines with GET mage/api/pipelines."
        )
    return describe_pipeline(project_dir, uuid)


class _PipelinesBase(MageApiHandler):
    auth_resource = f"{AUTH_RESOURCE}:pipelines"


class PipelinesHandler(_PipelinesBase):
    """``GET pipelines``: the notebooks found in the project dir (``limit``, ``cursor``)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        from mage_nb_sched.service import schedules
        from mage_nb_sched.service.asynchronous import run_off_loop

        limit, cursor = self.page()
        offset = cursor or 0
        store = await self.store()
        project_dir = schedules.project_dir_of(store)
        items, total = await run_off_loop(scan_pipelines, project_dir, offset, limit)
        counts = await schedules.aschedule_counts(store, [item["uuid"] for item in items])
        for item in items:
            item["schedules_count"] = counts.get(item["uuid"], 0)
        following = offset + limit
        self.write_list(
            MANY, items, count=total, next_cursor=following if following < total else None
        )


class PipelineHandler(_PipelinesBase):
    """``GET pipelines/{uuid}`` (a folder in the uuid is sent as ``%2F``)."""

    @web.authenticated
    @authorized
    async def get(self, uuid: str) -> None:
        from mage_nb_sched.service import fields, schedules
        from mage_nb_sched.service.asynchronous import run_off_loop

        pipeline_uuid = fields.pipeline_uuid(uuid)
        store = await self.store()
        item = await run_off_loop(find_pipeline, schedules.project_dir_of(store), pipeline_uuid)
        counts = await schedules.aschedule_counts(store, [pipeline_uuid])
        item["schedules_count"] = counts.get(pipeline_uuid, 0)
        self.write_json({ONE: item})


ROUTES = [
    (api_route(MANY), PipelinesHandler),
    (api_route(MANY, r"([^/]+)"), PipelineHandler),
]
