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


def test_status_and_report_name_a_failed_file_once(tmp_path: Path) -> None:
    """Issue 22.13: a failure's reason names the file as it was typed (``clips/a.mp4: empty``),
    so ``status`` printed ``/abs/clips/a.mp4: clips/a.mp4: empty``."""
    from seeknetic_prep.state.store import Store

    out = tmp_path / "out"
    clips = tmp_path / "clips"
    errors = {"a.mp4": "clips/a.mp4: empty: the file has 0 bytes",
              "b.mp4": f"{clips}/b.mp4: not media",
              "c.mp4": "../x/../clips/c.mp4: truncated",
              "d.mp4": "missing",
              "e.mp4": "other/e2.mp4: a: b"}
    with Store(out / "state.sqlite") as store:
        store.start_run()
        for name, error in errors.items():
            store.record_file(clips / name, status="failed", error=error)
    proc = _run("status", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = [line.strip() for line in proc.stdout.splitlines() if line.startswith("  ")]
    assert lines == [f"{clips}/a.mp4: empty: the file has 0 bytes", f"{clips}/b.mp4: not media",
                     f"{clips}/c.mp4: truncated", f"{clips}/d.mp4: missing",
                     f"{clips}/e.mp4: other/e2.mp4: a: b"]
    assert _run("report", "--out", str(out)).returncode == 0
    page = (out / "report.html").read_text()
    assert f"<td>{clips}/a.mp4</td><td class='bad'>empty: the file has 0 bytes</td>" in page
