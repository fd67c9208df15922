"""Reaping a run's processes, with real processes (Linux /proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mage_nb_sched.execution import reaping

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _spawn_parent_with_detached_child(tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    """A process that starts a ``setsid`` grandchild (as a cell can) and reports its pid."""
    script = textwrap.dedent(
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                 start_new_session=True)
        print(child.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    return parent, int(parent.stdout.readline())


def test_a_setsid_child_is_a_descendant_and_kill_tree_reaches_it(tmp_path: Path) -> None:
    parent, grandchild = _spawn_parent_with_detached_child(tmp_path)
    try:
        assert os.getsid(grandchild) != os.getsid(parent.pid)  # really detached
        assert grandchild in reaping.descendants(parent.pid)
        # Killing the process group (what stopping a kernel does) does not reach it ...
        signalled = reaping.kill_tree(parent.pid)
        assert set(signalled) == {parent.pid, grandchild}
        parent.wait(timeout=30)
    finally:
        reaping.kill_quietly(parent.pid)
    # ... kill_tree did. The grandchild was re-parented to init (or a subreaper) and reaped
    # there; it is no longer running.
    for _ in range(1000):
        if not _alive(grandchild):
            break
        os.sched_yield()
    assert not _alive(grandchild)


def test_a_subreaper_inherits_orphans_and_reaps_strays(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, subprocess, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from mage_nb_sched.execution import reaping
        assert reaping.become_subreaper()
        # A child that double-forks a sleeper and exits: the sleeper is orphaned.
        code = ("import os, subprocess, sys\\n"
                "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
                " start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\\n"
                "print(p.pid, flush=True)\\n")
        middle = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        orphan = int(middle.stdout)
        assert orphan in reaping.children(os.getpid()), "the orphan came to the subreaper"
        killed = reaping.reap_strays(known=())
        assert orphan in killed, killed
        print("ok", flush=True)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_exit_descriptions_name_the_signal_or_the_code() -> None:
    assert reaping.describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert reaping.describe_exit(3) == "exited with code 3"
    assert reaping.describe_exit(None) == "still running"
    assert reaping.describe_exit(-200) == "killed by signal 200"


@pytest.mark.kernel
def test_a_setsid_child_of_a_cell_dies_when_its_run_ends(store: object, project_dir: Path) -> None:
    """A cell starts a detached sleeper (its own session, so the kernel's process group does not
    hold it); when the run ends, the sleeper is gone too."""
    import asyncio

    from conftest import write_notebook

    from mage_nb_sched import PipelineRun
    from mage_nb_sched.execution.runner import run_with_fresh_kernel

    marker = project_dir / "sleeper.pid"
    write_notebook(
        project_dir / "detached.ipynb",
        [
            "import subprocess, sys\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
            " start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            f"open({str(marker)!r}, 'w').write(str(p.pid))",
        ],
    )
    run = PipelineRun.create(pipeline_uuid="detached")
    outcome = asyncio.run(run_with_fresh_kernel(store, run.id))  # type: ignore[arg-type]
    assert outcome.status == "completed", outcome.reason
    sleeper = int(marker.read_text())
    try:
        for _ in range(10_000):
            if not _alive(sleeper):
                break
            os.sched_yield()
        assert not _alive(sleeper), "the detached child outlived its run"
    finally:
        reaping.kill_quietly(sleeper)
