"""Peak memory of a ``run``'s processes does not grow with the number of files.

Writes N distinct one-window clips with PyAV, runs ``seeknetic-prep run --local`` over them in
a subprocess, and samples the resident memory of the run and its decode workers. The local
emulator it starts is left out: it stands in for the remote API, and its heap keeps what its
threads freed (glibc's per-thread arenas), so it grew 196 -> 304 MB from 10 to 100 windows
while the run's own processes grew 450 -> 480 MB; a soak on a loaded machine failed on it.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _pipeline_helpers import ROOT, read_results


def write_clips(folder: Path, count: int, *, seconds: float = 2.0, fps: int = 12) -> None:
    import av

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    for i in range(count):
        with av.open(str(folder / f"clip{i:04d}.mp4"), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
            base = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)  # distinct content per file
            for n in range(int(seconds * fps)):
                img = np.roll(base, n, axis=1)
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def peak_tree_rss_mb(cmd: list[str]) -> tuple[float, int]:
    """Run ``cmd``; return the peak summed RSS (MB) of it and its descendants but the local
    emulator, and its exit code."""
    import psutil

    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        total = 0
        try:
            for p in [parent, *parent.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    if "seeknetic_prep.emulator" not in " ".join(p.cmdline()):
                        total += p.memory_info().rss
        except psutil.Error:
            pass
        peak = max(peak, total)
        time.sleep(0.05)
    return peak / 1e6, proc.returncode


@pytest.mark.slow
def test_peak_memory_flat_for_10_and_100_files(tmp_path: Path) -> None:
    figures = {}
    for count in (10, 100):
        src = tmp_path / f"in{count}"
        write_clips(src, count)
        # Uploads in flight fixed at 4: by default their number follows the link up to what
        # --upload-memory-mb allows (256 MB of bodies), so a longer run on a loaded machine
        # holds more than a short one: bounded, but by that budget, not by the number of files.
        cmd = [sys.executable, "-m", "seeknetic_prep", "run", str(src), "--local", "--workers", "2",
               "--uploaders", "4", "--quiet", "--out", str(tmp_path / f"out{count}")]
        peak, code = peak_tree_rss_mb(cmd)
        assert code == 0
        lines = read_results(tmp_path / f"out{count}")
        assert len(lines) == 2 * count
        figures[count] = peak
    print(f"peak RSS of the run and its workers: 10 windows {figures[10]:.0f} MB, "
          f"100 windows {figures[100]:.0f} MB")
    assert figures[100] < figures[10] * 1.25 + 50
