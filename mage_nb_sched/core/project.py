"""Where things live: the project dir, its data dir, and notebook ⇄ pipeline uuid mapping."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from mage_nb_sched.core.errors import ValidationError

PROJECT_DIR_ENV = "MAGE_NB_SCHED_PROJECT_DIR"
DB_URL_ENV = "MAGE_NB_SCHED_DB_URL"
#: Bearer token POST mage/api/events accepts without Jupyter auth (c.MageNbSchedApp.ingest_token).
INGEST_TOKEN_ENV = "MAGE_NB_SCHED_INGEST_TOKEN"
#: The Jupyter server's URL with its base_url, exported to its kernels (trigger URLs in magics).
SERVER_URL_ENV = "MAGE_NB_SCHED_SERVER_URL"
DATA_DIR_NAME = ".mage_nb_sched"
NOTEBOOK_SUFFIX = ".ipynb"
TRIGGERS_SUFFIX = ".triggers.yaml"
#: Longest file or folder name (bytes) file systems accept.
MAX_NAME_BYTES = 255
_IGNORED_DIRS = {DATA_DIR_NAME, ".ipynb_checkpoints", ".git", "node_modules", "__pycache__"}


def resolve_project_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The project dir: ``explicit``, else ``$MAGE_NB_SCHED_PROJECT_DIR``, else the nearest parent
    of the cwd holding ``.mage_nb_sched/``, else the cwd."""
    if explicit is not None:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get(PROJECT_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    cwd = Path.cwd().resolve()
    for candidate in (cwd, *cwd.parents):
        if (candidate / DATA_DIR_NAME).is_dir():
            return candidate
    return cwd


def data_dir(project_dir: Path) -> Path:
    """``<project dir>/.mage_nb_sched`` (database, outputs, logs, executed notebooks)."""
    return project_dir / DATA_DIR_NAME


def default_database_url(project_dir: Path) -> str:
    """``$MAGE_NB_SCHED_DB_URL`` or the embedded SQLite file in the data dir."""
    env = os.environ.get(DB_URL_ENV)
    if env:
        return env
    return f"sqlite:///{data_dir(project_dir) / 'scheduler.db'}"


def normalize_pipeline_uuid(pipeline_uuid: object, field: str = "pipeline_uuid") -> str:
    """Validate a pipeline uuid's form: a relative notebook path without ``.ipynb``."""
    if not isinstance(pipeline_uuid, str) or not pipeline_uuid.strip():
        raise ValidationError(
            field,
            pipeline_uuid,
            "a pipeline uuid must be a non-empty string",
            "Use the notebook path relative to the project dir without .ipynb, e.g. 'etl/daily'.",
        )
    text = pipeline_uuid.strip().replace("\\", "/")
    if text.endswith(NOTEBOOK_SUFFIX):
        text = text[: -len(NOTEBOOK_SUFFIX)]
    parts = text.split("/")
    if text.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValidationError(
            field,
            pipeline_uuid,
            "the path escapes or is not inside the project dir",
            "Use a relative path without '..', e.g. 'etl/daily_sales'.",
        )
    return text


def notebook_path(project_dir: Path, pipeline_uuid: str) -> Path:
    """The notebook file of a pipeline (its form checked; existence not)."""
    uuid = normalize_pipeline_uuid(pipeline_uuid)
    # File systems refuse names over 255 bytes (ENAMETOOLONG): say so here, not as an OSError
    # from the first stat() of the path.
    names = uuid.split("/")
    names[-1] += NOTEBOOK_SUFFIX
    longest = max(len(name.encode("utf-8", "surrogatepass")) for name in names)
    if longest > MAX_NAME_BYTES:
        raise ValidationError(
            "pipeline_uuid",
            pipeline_uuid,
            f"a folder or file name of its notebook is {longest} bytes; the file system "
            f"accepts at most {MAX_NAME_BYTES}",
            "Use shorter folder and notebook names.",
        )
    path = (project_dir / f"{uuid}{NOTEBOOK_SUFFIX}").resolve()
    if project_dir.resolve() not in path.parents:
        raise ValidationError(
            "pipeline_uuid",
            pipeline_uuid,
            "the path escapes the project dir (through a link)",
            "Keep notebooks inside the project dir.",
        )
    return path


def pipeline_uuid_for(project_dir: Path, path: Path) -> str:
    """The pipeline uuid of a notebook file inside the project dir."""
    relative = path.resolve().relative_to(project_dir.resolve()).as_posix()
    return relative[: -len(NOTEBOOK_SUFFIX)] if relative.endswith(NOTEBOOK_SUFFIX) else relative


def list_pipelines(project_dir: Path) -> list[str]:
    """Every notebook in the project as a pipeline uuid, sorted."""
    found = []
    for root, dirs, files in os.walk(project_dir):
        dirs[:] = [d for d in dirs if d not in _IGNORED_DIRS and not d.startswith(".")]
        for name in files:
            if name.endswith(NOTEBOOK_SUFFIX):
                try:
                    found.append(pipeline_uuid_for(project_dir, Path(root) / name))
                except ValueError:
                    continue  # a link to a notebook outside the project: not a pipeline here
    return sorted(found)


def require_notebook(project_dir: Path, pipeline_uuid: str, field: str = "pipeline_uuid") -> Path:
    """The notebook of ``pipeline_uuid``; a clear error with close names when it does not exist."""
    path = notebook_path(project_dir, pipeline_uuid)
    if path.is_file():
        return path
    known = list_pipelines(project_dir)
    close = difflib.get_close_matches(normalize_pipeline_uuid(pipeline_uuid), known, n=3)
    hint = (
        f"Did you mean {', '.join(repr(c) for c in close)}?"
        if close
        else (
            f"Create {path.name} in {path.parent}, or use one of: "
            f"{', '.join(known[:8]) or '(none)'}."
        )
    )
    raise ValidationError(field, pipeline_uuid, f"no notebook at {path}", hint)
