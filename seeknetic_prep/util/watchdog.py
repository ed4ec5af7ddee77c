"""A watchdog that ends a run's helper processes when the run dies without ending them.

``run --executor ray`` with no address starts a Ray on this machine for the run (its GCS
server, raylet, monitors, and the agents and workers the raylet starts) and stops it when the
run ends. A run killed with SIGKILL (the OOM killer, ``kill -9``) stops nothing: its Ray then
lived on for 60-65 s here (the raylet and its DashboardAgent and RuntimeEnvAgent wait for a GCS
that will not come back), holding memory, ports and a session directory, and a rerun in that
minute started a second Ray beside it. :func:`watch` starts this module as a small process of
its own session (a kill of the run's process group does not reach it) that waits for the run's
process to end and then kills the given processes and everything they started.

It is a file run by path (``python -I watchdog.py``): standard library only, so it starts in
tens of milliseconds without importing the package. Linux only (it reads ``/proc``); elsewhere
:func:`watch` starts nothing. A process is killed only if it is still the one that was named
(its start time in ``/proc/PID/stat`` unchanged), so a reused pid is never hit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["watch"]

_POLL_S = 0.25
_SCAN_S = 1.0


def watch(owner: int, pids: Iterable[int]) -> subprocess.Popen[bytes] | None:
    """Start a watchdog that kills ``pids`` and their descendants (as last seen, every second,
    and as found then) once ``owner`` has died; it ends by itself once they are all gone (the
    run stopped them). None where ``/proc`` is not there to read."""
    named = [f"{pid}:{start}" for pid in pids if (start := _started(pid)) is not None]
    owner_started = _started(owner)
    if not named or owner_started is None:
        return None
    return subprocess.Popen(
        [sys.executable, "-I", __file__, f"{owner}:{owner_started}", *named],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True)


def _stat(pid: int) -> list[str] | None:
    """``/proc/PID/stat``'s fields after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def _started(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): with the pid, its identity."""
    fields = _stat(pid)
    return fields[19] if fields is not None else None


def _alive(pid: int, started: str) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[19] == started and fields[0] not in ("Z", "X")


def _descendants(roots: set[int]) -> set[int]:
    """``roots`` and every process below them, by parent pid, from one scan of ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def _main(argv: list[str]) -> None:
    owner, owner_started = argv[0].split(":")
    known = {int(pid): started for pid, started in (a.split(":") for a in argv[1:])}
    last_scan = 0.0
    while _alive(int(owner), owner_started):
        if not any(_alive(pid, started) for pid, started in known.items()):
            return  # the run stopped them itself
        if time.monotonic() - last_scan >= _SCAN_S:
            # Learn their descendants while they are still theirs: Ray's raylet and GCS share
            # the run's fate and die with it, and their agents, reparented at once, would no
            # longer be found below them.
            last_scan = time.monotonic()
            for pid in _descendants({pid for pid, started in known.items() if _alive(pid, started)}):
                if pid not in known and (started := _started(pid)) is not None:
                    known[pid] = started
        time.sleep(_POLL_S)
    alive = {pid for pid, started in known.items() if _alive(pid, started)}
    for pid in _descendants(alive) - {os.getpid()}:
        with contextlib.suppress(OSError):  # gone meanwhile
            os.kill(pid, signal.SIGKILL)  # they were left by a SIGKILL: nothing of theirs to save


if __name__ == "__main__":
    _main(sys.argv[1:])
