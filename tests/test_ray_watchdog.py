"""A run killed with SIGKILL leaves no Ray behind (issue 22: Ray's agents lived 60-65 s on).

The watchdog of :mod:`seeknetic_prep.util.watchdog` is checked on its own with a tree of
plain processes, then on a real ``run --executor ray`` that started its own Ray: the driver is
killed with SIGKILL mid-run and every process it had started (GCS, raylet, monitors, agents,
workers) must be gone well before Ray's own 60 s. A deadline to wait for, not a timing claim:
without the watchdog they were all still there after it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from _pipeline_helpers import ROOT, units_done

from seeknetic_prep.util.watchdog import watch

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="the watchdog reads /proc")

SLEEPER = "import time; time.sleep(600)"
# A parent holding a child that holds a grandchild (the raylet, its agents and workers).
TREE = ("import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', \"import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {SLEEPER!r}]); time.sleep(600)\"])\n"
        "time.sleep(600)")


def _gone(pids: set[int], deadline_s: float) -> set[int]:
    """Those of ``pids`` still running (zombies count as gone) after waiting up to ``deadline_s``."""
    end = time.monotonic() + deadline_s
    while True:
        left = set()
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    left.add(pid)
            except psutil.NoSuchProcess:
                pass
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.1)


def _tree(pid: int, size: int) -> set[int]:
    """``pid`` and its descendants, once there are ``size`` of them."""
    end = time.monotonic() + 60
    while len(found := {pid} | {c.pid for c in psutil.Process(pid).children(recursive=True)}) < size:
        assert time.monotonic() < end, "the process tree did not start"
        time.sleep(0.05)
    return found


def test_the_watchdog_kills_the_tree_when_its_owner_dies_and_nothing_before() -> None:
    owner = subprocess.Popen([sys.executable, "-c", SLEEPER])
    tree = subprocess.Popen([sys.executable, "-c", TREE], start_new_session=True)
    try:
        pids = _tree(tree.pid, 3)
        dog = watch(owner.pid, [tree.pid])
        assert dog is not None
        time.sleep(1.0)  # the owner lives: nothing is touched
        assert _gone(pids, 0) == pids and dog.poll() is None
        owner.kill()
        owner.wait()
        assert _gone(pids, 30) == set()
        assert dog.wait(timeout=30) == 0
    finally:
        for p in (owner, tree):
            p.kill()
            p.wait()


def test_the_watchdog_ends_by_itself_when_the_run_stopped_what_it_watched() -> None:
    tree = subprocess.Popen([sys.executable, "-c", SLEEPER])
    dog = watch(os.getpid(), [tree.pid])
    assert dog is not None
    tree.kill()
    tree.wait()
    assert dog.wait(timeout=30) == 0  # and this process, its owner, was left alone


@pytest.mark.slow
def test_a_run_killed_with_sigkill_leaves_no_ray_behind(videos_for_ray: Path, tmp_path: Path) -> None:
    from seeknetic_prep.emulator import EmulatorConfig, running

    out = tmp_path / "out"
    with running(EmulatorConfig(data_dir=tmp_path / "emu")) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SEEKNETIC_", "RAY_ADDRESS"))}
        env["SEEKNETIC_API_KEY"] = server.api_key
        child = subprocess.Popen(
            [sys.executable, "-m", "seeknetic_prep", "run", str(videos_for_ray), "--executor", "ray",
             "--base-url", server.base_url, "--out", str(out), "--quiet"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            while child.poll() is None and units_done(out / "state.sqlite") < 1:
                time.sleep(0.05)
            assert child.poll() is None, "the run ended before it could be killed"
            below = psutil.Process(child.pid).children(recursive=True)
            started = {p.pid: " ".join(p.cmdline()) for p in below}
            started = {pid: cmd for pid, cmd in started.items() if "watchdog.py" not in cmd}
            assert any("raylet" in cmd for cmd in started.values()), started  # its own Ray
            child.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            child.wait()
            left = _gone(set(started), 30)
            print(f"{len(started)} processes of the run's Ray; gone {time.monotonic() - killed:.1f} s "
                  "after the SIGKILL")
            assert left == set(), {pid: started[pid].strip()[:80] for pid in left}
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()


@pytest.fixture
def videos_for_ray(fixtures_dir: Path, tmp_path: Path) -> Path:
    """Enough to decode that the run is still working when it is killed."""
    import shutil

    dest = tmp_path / "videos"
    dest.mkdir()
    for name in ("cfr30_bframes.mp4", "late_audio_25s.mkv", "demo/lake.mp4", "vfr.mp4"):
        shutil.copy(fixtures_dir / name, dest / Path(name).name)
    return dest
