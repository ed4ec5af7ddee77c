"""A folder run end to end through ``run``, ``status`` and ``results`` (issue 13, item 2): a
file whose name is not UTF-8 is processed like any other, kept byte-exact, shown escaped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from _pipeline_helpers import ROOT


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEKNETIC_")}
    env["PYTHONIOENCODING"] = "utf-8:strict"  # as under a strict UTF-8 locale: raw surrogates crash
    return subprocess.run([sys.executable, "-m", "seeknetic_prep", *args], env=env, capture_output=True,
                          text=True, timeout=240, cwd=ROOT)


def test_a_non_utf8_name_runs_resumes_and_exports(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    odd = os.path.join(os.fsencode(folder), b"caf\xe9.mp4")
    shutil.copyfile(ROOT / "fixtures" / "short_700ms.mp4", odd)
    out = tmp_path / "out"
    for expected in ("caf\\xe9.mp4", "already done: 1 files"):  # the rerun must not fail either
        proc = _run("run", str(folder), "--local", "--out", str(out), "--workers", "0", "--quiet")
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr and expected in proc.stdout
    status = _run("status", "--out", str(out))
    assert status.returncode == 0 and "files: 1 paths (1 preprocessed, 0 failed)" in status.stdout
    done = _run("results", "--out", str(out))
    assert done.returncode == 0, done.stderr
    (row,) = pq.read_table(out / "results.parquet").to_pylist()
    assert row["path_bytes"] == odd and row["path"] == f"{folder}/caf\\xe9.mp4"
    assert row["embedding_status"] == row["tagging_status"] == "completed" and row["embedding"] is not None
