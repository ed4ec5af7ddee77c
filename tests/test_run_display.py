"""``run`` on a real terminal (a pty, 120 x 40): the bar's total is set once and never moves,
the files in flight are named, and a resumed run says what was already done (issue 12.2)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import sys
import termios
from pathlib import Path
from typing import Any

import pytest
from _pipeline_helpers import ROOT

BAR = re.compile(r"windows:\s+\d+%\|[^|]*\| (\d+)/(\d+) ")


def _on_a_terminal(*args: str) -> str:
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI, with the pty as its terminal
        os.chdir(ROOT)
        os.execvp(sys.executable, [sys.executable, "-m", "seeknetic_prep", *args])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    out = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1  # the fixtures hold bad files
    return out.decode(errors="replace")


def _planned(path: Path) -> tuple[tuple[int, int, int], ...]:
    """The windows a run plans for a file: none when planning refuses it (a damaged file is
    planned and fails later, at the window that needs the damage)."""
    from seeknetic_prep.errors import MediaError
    from seeknetic_prep.pipeline.worker import plan_file

    try:
        return plan_file(str(path)).windows
    except MediaError:
        return ()


@pytest.mark.slow
def test_bar_total_is_constant_and_files_in_flight_are_named(tmp_path: Path,
                                                             ground_truth: dict[str, Any]) -> None:
    good = {name: f for name, f in ground_truth["files"].items() if f["kind"] == "good"}
    windows = sum(len(_planned(ROOT / "fixtures" / name)) for name in ground_truth["files"])
    out = tmp_path / "out"
    screen = _on_a_terminal("run", "fixtures", "--local", "--out", str(out), "--workers", "1")
    frames = [(int(n), int(total)) for n, total in BAR.findall(screen)]
    totals = {total for _, total in frames if total}
    assert totals == {windows}, totals  # from the first frame on
    assert frames[-1] == (windows, windows)
    assert [n for n, _ in frames] == sorted(n for n, _ in frames)  # never goes back
    assert "working on: " in screen and "probing files: ~" in screen
    again = _on_a_terminal("run", "fixtures", "--local", "--out", str(out), "--workers", "1")
    assert f"already done: {len(good)} files" in again  # the demo's three are among them
    assert "ok      " not in again and "windows/s" not in again
