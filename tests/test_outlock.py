"""One run per ``--out``: real ``seeknetic-prep run`` processes contending for the same folder."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from _emulator_helpers import ROOT

from seeknetic_prep.errors import OutputInUseError
from seeknetic_prep.util.outlock import LOCK_NAME, OutLock, holder_pid

CLIP = "fixtures/short_700ms.mp4"


def test_second_lock_in_the_same_process_is_refused_then_free(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with OutLock(out):
        assert holder_pid(out) == os.getpid()
        with pytest.raises(OutputInUseError, match=rf"another run \(pid {os.getpid()}\) is using {out}"):
            OutLock(out).acquire()
    with OutLock(out) as again:  # released: free at once, and the file stays (never deleted)
        assert again.held and (out / LOCK_NAME).exists()
    assert not again.held


@pytest.fixture()
def slow_server(tmp_path: Path) -> Iterator[Any]:
    from seeknetic_prep.emulator import EmulatorConfig, running

    with running(EmulatorConfig(data_dir=tmp_path / "emu")) as server:
        yield server


def _env(key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEKNETIC_")}
    return {**env, "SEEKNETIC_API_KEY": key, "PYTHONUNBUFFERED": "1"}


def _args(server: Any, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "seeknetic_prep", "run", CLIP, "--base-url", server.base_url,
            "--out", str(out), "--workers", "0", "--quiet", *extra]


def _start(server: Any, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(_args(server, out, *extra), env=_env(server.api_key), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_holding(proc: subprocess.Popen[Any], out: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while holder_pid(out) != proc.pid:
        assert proc.poll() is None, f"holder exited {proc.returncode}: {proc.communicate()}"
        assert time.monotonic() < deadline, "the run never took the lock"
        time.sleep(0.05)


def _readline(stream: IO[str], timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else ""


def test_second_run_exits_2_status_reads_and_wait_proceeds(slow_server: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = subprocess.run(_args(slow_server, out), env=_env(slow_server.api_key), cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    slow_server.faults.latency = 30.0  # the holder's first request hangs: it keeps the lock
    holder = _start(slow_server, out)
    waiter: subprocess.Popen[str] | None = None
    try:
        _wait_holding(holder, out)
        started = time.monotonic()
        second = subprocess.Popen(_args(slow_server, out), env=_env(slow_server.api_key), cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        status = subprocess.Popen([sys.executable, "-m", "seeknetic_prep", "status", "--out", str(out)],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        waiter = _start(slow_server, out, "--wait")
        s_out, s_err = second.communicate(timeout=60)
        second_s = time.monotonic() - started
        st_out, st_err = status.communicate(timeout=60)
        assert waiter.stderr is not None
        line = _readline(waiter.stderr, 30)
        assert holder.poll() is None, "the holder ended too early for the test to mean anything"
        print(f"\nsecond run: exit {second.returncode} after {second_s:.1f} s: {s_err.strip()}\n"
              f"waiter: {line.strip()}")
        assert second.returncode == 2 and s_out == ""
        assert s_err.splitlines() == [
            f"seeknetic-prep run: error: another run (pid {holder.pid}) is using {out}; wait for it "
            "to end, or add --wait to start when it does."
        ]
        assert status.returncode == 0 and "2 completed" in st_out, st_err
        assert f"another run (pid {holder.pid}) is using {out}; waiting" in line
        time.sleep(0.5)
        assert waiter.poll() is None  # still waiting: the holder has the folder
        slow_server.faults.latency = 0.0
        slow_server.restart()  # cut the hanging request short; the holder retries and finishes
        assert holder.wait(timeout=60) == 0
        w_out, w_err = waiter.communicate(timeout=120)
        assert waiter.returncode == 0, w_err
        assert "results:" in w_out and holder_pid(out) == waiter.pid
    finally:
        for proc in (holder, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    # Neither run submitted anything a second time.
    stats = slow_server.stats()
    assert stats["submissions"] and set(stats["submissions"].values()) == {1}


def test_kill_9_of_the_holder_frees_the_folder_at_once(slow_server: Any, tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "out"
    slow_server.faults.latency = 30.0  # the holder hangs in its first request, lock held
    holder = subprocess.Popen(_args(slow_server, out, "--workers", "1"), env=_env(slow_server.api_key),
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[Any] = []
    try:
        _wait_holding(holder, out)
        deadline = time.monotonic() + 60
        while len(children) < 2:  # the resource tracker and the decode worker (spawned, not forked)
            assert time.monotonic() < deadline, "the run never started its decode worker"
            time.sleep(0.05)
            children = psutil.Process(holder.pid).children(recursive=True)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        slow_server.faults.latency = 0.0
        # At once, even while the orphaned decode worker may still be alive: it never had the lock.
        with OutLock(out):
            pass
        again = subprocess.run(_args(slow_server, out), env=_env(slow_server.api_key), cwd=ROOT,
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        assert "another run" not in again.stderr
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        for child in children:
            if child.is_running():
                child.kill()
