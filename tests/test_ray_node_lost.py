"""The Ray node a run decodes on dies under it (issue 22.13): its ``DashboardAgent`` is killed,
and the raylet, which depends on it, goes with it. Every task in flight then fails with
``LocalRayletDiedError``; they used to be recorded as the files' failures (each file failed
for good). Now the run stops with one line, exit 1, its state kept, and the same command
completes every file.

A run of its own, with the Ray it starts itself, in a subprocess: the cluster of
``test_ray_executor.py`` must not lose its node.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from _pipeline_helpers import read_results, units_done

ROOT = Path(__file__).resolve().parent.parent
FILES = ("cfr30_bframes.mp4", "late_audio_25s.mkv", "demo/lake.mp4", "vfr.mp4", "no_audio.mp4")


def _agents(root: psutil.Process) -> list[psutil.Process]:
    found = []
    for p in root.children(recursive=True):
        try:
            if " ".join(p.cmdline()).startswith("ray::DashboardAgent"):
                found.append(p)
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
def test_the_runs_ray_node_dying_stops_the_run_and_fails_no_file(fixtures_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    import shutil

    src = tmp_path / "in"
    src.mkdir()
    for name in FILES:
        shutil.copy(fixtures_dir / name, src / Path(name).name)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEEKNETIC_", "RAY_ADDRESS"))}
    cmd = [sys.executable, "-m", "seeknetic_prep", "run", str(src), "--local", "--executor", "ray",
           "--out", str(out), "--quiet"]
    child = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    killed: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while child.poll() is None and time.monotonic() < deadline and not killed:
            if units_done(out / "state.sqlite") >= 1:  # decoding has begun on the node
                for agent in _agents(psutil.Process(child.pid)):
                    agent.send_signal(signal.SIGKILL)
                    killed.append(agent.pid)
            time.sleep(0.05)
        stdout, stderr = child.communicate(timeout=240)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    assert killed, f"the run ended before its agent could be killed: {stderr}"
    if child.returncode == 0:
        pytest.skip("the run finished before its node went down")
    assert child.returncode == 1, stdout + stderr
    assert "the Ray node of this run died" in stderr and "Run the same command again" in stderr, stderr
    assert "Traceback" not in stderr and re.search(r"files: \d+ ok, 0 failed", stdout), stdout + stderr
    con = sqlite3.connect(out / "state.sqlite")
    try:
        failed = con.execute("SELECT COUNT(*) FROM files WHERE status = 'failed'").fetchone()[0]
    finally:
        con.close()
    assert failed == 0  # no file is blamed for the node
    again = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    lines = read_results(out)
    assert {Path(x["path"]).name for x in lines} == {Path(n).name for n in FILES}
    assert all(x["status"] == "completed" for x in lines)
