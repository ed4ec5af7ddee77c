"""``results --to`` and what may already stand there (issue 22.6): ``-`` is standard output (it
used to write a file named ``-``); a FIFO, a device or a link is written through, never replaced
by a regular file (as root, the old rename could replace ``/dev/stdout``'s link or a device)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from _pipeline_helpers import ROOT
from _results_helpers import add_file

from seeknetic_prep.results.part_rows import append_results_part
from seeknetic_prep.state.store import Store


def _out(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    with Store(out / "state.sqlite") as store:
        run = store.start_run()
        for f in range(3):
            add_file(store, f"/v/{f}.mp4", f"{f:032d}", 2, dim=8)
        append_results_part(store, out, run)
    return out


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SEEKNETIC_")},
           "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "seeknetic_prep", "results", *args], env=env, cwd=cwd,
                          capture_output=True, timeout=120)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_dash_is_standard_output(tmp_path: Path, fmt: str) -> None:
    out = _out(tmp_path)
    proc = _cli(tmp_path, "--out", str(out), "--format", fmt, "--to", "-")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "-").exists()
    assert b"standard output: 6 rows" in proc.stderr
    if fmt == "jsonl":
        rows = [json.loads(line) for line in proc.stdout.decode().splitlines()]
        expected = [(f"/v/{f}.mp4", w) for f in range(3) for w in (0, 1)]
        assert [(r["path"], r["window_index"]) for r in rows] == expected
    elif fmt == "csv":
        lines = proc.stdout.decode().splitlines()
        assert lines[0].startswith('"path"') and len(lines) == 7
    else:
        (tmp_path / "copy.parquet").write_bytes(proc.stdout)
        assert pq.read_table(tmp_path / "copy.parquet").num_rows == 6


def test_a_fifo_is_written_through(tmp_path: Path) -> None:
    out = _out(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    proc = _cli(tmp_path, "--out", str(out), "--format", "jsonl", "--to", str(fifo))
    reader.join(timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)  # still a FIFO, not a regular file
    assert len(got) == 1 and len(got[0].decode().splitlines()) == 6


def test_a_link_is_followed_and_kept(tmp_path: Path) -> None:
    out = _out(tmp_path)
    real = tmp_path / "real.jsonl"
    real.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    dev = tmp_path / "devnull"
    dev.symlink_to(os.devnull)
    assert _cli(tmp_path, "--out", str(out), "--format", "jsonl", "--to", str(link)).returncode == 0
    assert link.is_symlink() and len(real.read_text().splitlines()) == 6
    proc = _cli(tmp_path, "--out", str(out), "--format", "csv", "--to", str(dev))
    assert proc.returncode == 0, proc.stderr
    assert dev.is_symlink() and stat.S_ISCHR(os.stat(os.devnull).st_mode)  # the device is left a device


@pytest.mark.parametrize("to", ["-", "fifo", "folder"])
def test_what_cannot_be_written_is_one_line(tmp_path: Path, to: str) -> None:
    out = _out(tmp_path)
    target = to
    if to == "fifo":
        os.mkfifo(tmp_path / "fifo")
        target = str(tmp_path / "fifo")
    elif to == "folder":
        target = str(tmp_path)
    fmt = "csv" if to == "folder" else "npy"
    proc = _cli(tmp_path, "--out", str(out), "--format", fmt, "--to", target)
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.decode().splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Invalid --to" in errors[0], proc.stderr
    assert not (tmp_path / "-").exists()
