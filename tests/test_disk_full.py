"""A really full disk under ``run --local``: one line naming the file and what to do, no
traceback, no temporary file left, exit 1 or 2, and the same command completes once space
returns (issue 22.13; the emulator's own full disk is ``test_emulator_storage_full.py``).

The output folder sits on a real 64 MB tmpfs (room for an upload and the emulator's 8 MB
reserve once space returns) filled to a few levels, so each level fails at
another write: the lock file, the emulator's state at its start, ``settings.json``, the run's
``state.sqlite``. Mounting needs root: elsewhere the test skips and says why.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _disk import fill, tmpfs

ROOT = Path(__file__).resolve().parent.parent
LEVELS = (1_000, 20_000, 120_000, 400_000)  # bytes left free: each meets another write


@pytest.fixture()
def mnt(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "mnt", 64) as path:
        yield path


def _run(out: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "seeknetic_prep", "run", str(ROOT / "fixtures" / "short_700ms.mp4"),
           str(ROOT / "fixtures" / "no_audio.mp4"), "--local", "--out", str(out), "--workers", "0", "--quiet"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)


@pytest.mark.parametrize("leave", LEVELS)
def test_a_full_disk_says_which_file_in_one_line_and_the_rerun_completes(mnt: Path, leave: int) -> None:
    out = mnt / "out"
    filler = fill(mnt, leave)
    full = _run(out)
    assert full.returncode in (1, 2), full.stdout + full.stderr
    assert "Traceback" not in full.stderr, full.stderr
    errors = [line for line in full.stderr.splitlines() if ": error:" in line or "cannot start" in line]
    assert errors, full.stderr
    # Each says where: a file or folder on the full file system, or the emulator that could not start.
    assert all(str(mnt) in line or "local emulator" in line for line in errors), errors
    assert not list(mnt.rglob("*.tmp")), list(mnt.rglob("*.tmp"))
    filler.unlink()  # space returns: the same command completes, nothing lost or doubled
    again = _run(out)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "files: 2 ok, 0 failed" in again.stdout, again.stdout
