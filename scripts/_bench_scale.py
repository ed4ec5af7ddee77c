"""Section e of bench.py: run state at scale, written through the public Store API.

No video is decoded and no server is called: for N windows (20 per file, both services) the
state is built run by run (10,000 windows a run, each run ending with its results part, as a
real run would), then one more run adds 1,000 windows and what follows is measured:

- state on disk per window (``state.sqlite`` after a checkpoint; parts and the search matrix
  are listed beside it);
- end-of-run cost of that last run: committing its buffered writes, writing its results part
  and appending its vectors to the search matrix;
- no-op resume start-up, store side: open the store and look every file up by path and stat
  (:meth:`Store.known_file`), as a rerun over an unchanged folder does;
- ``seeknetic-prep status`` (a fresh process);
- search in a fresh process: loading the windows (first: merging the parts' small columns and
  caching the result; then from that cache), one exact ranking (top 10) with and without a tag
  filter, and the process's peak RSS and anonymous memory (everything but the mapped files).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

WINDOWS_PER_FILE = 20
RUN_WINDOWS = 10_000
ADDED = 1_000
DIM = 1024
SHOTS = ("wide_shot", "close_up", "medium_shot", "extreme_wide_shot")


def _add_files(store: Any, first: int, count: int, rng: np.random.Generator) -> None:
    """Files ``first .. first+count``: recorded, planned, uploaded, submitted, completed."""
    for f in range(first, first + count):
        fp = f"{f:032x}"
        path = f"/data/videos/{f // 1000:04d}/clip-{f:07d}.mp4"
        store.record_file(path, status="ok", fingerprint=fp, size=1_000_000 + f, duration_ms=200_000,
                          mtime_ns=1_700_000_000_000_000_000 + f, inode=10_000 + f)
        store.plan_units([(fp, i, s, i * 10_000, (i + 1) * 10_000, f"sp-{fp[-16:]}-{i * 10_000}-{s}")
                          for i in range(WINDOWS_PER_FILE) for s in ("embedding", "tagging")])
        vecs = rng.standard_normal((WINDOWS_PER_FILE, DIM)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        for i in range(WINDOWS_PER_FILE):
            times = [i * 10_000 + (k + 0.5) * 10_000 / 12 for k in range(12)]
            for s in ("embedding", "tagging"):
                rid = f"sp-{fp[-16:]}-{i * 10_000}-{s}"
                store.mark_uploaded(rid, {"video_input": f"tensors/{rid}/video_input.json",
                                          "audio_input": f"tensors/{rid}/audio_input.json"}, times)
                store.mark_submitted(rid)
            store.mark_completed(f"sp-{fp[-16:]}-{i * 10_000}-embedding",
                                 {"embedding": vecs[i].tolist(), "model_name": "seeknetic/embedding-1024"})
            store.mark_completed(f"sp-{fp[-16:]}-{i * 10_000}-tagging", {"tags": {
                "shot_size": SHOTS[(f + i) % 4], "camera_movement": "static", "shooting_angle": "eye_level",
                "lighting": "balanced", "dominant_color": ("green", "blue", "gray")[f % 3],
                "brightness": round(float(rng.random()), 4), "contrast": 0.2, "colorfulness": 0.3,
                "motion_intensity": 0.01, "scene_cuts": int(i % 3), "frames_analyzed": 12,
            }})


def _one_run(store: Any, out: Path, first_file: int, files: int, rng: np.random.Generator) -> float:
    """One synthetic run; returns its end-of-run seconds: what a run's end does (flush, its
    part, no part keeping a superseded row, the search matrix), :func:`finalize_run`."""
    from seeknetic_prep.results.finalize import finalize_run

    run = store.start_run()
    _add_files(store, first_file, files, rng)
    started = time.perf_counter()
    store.flush()
    finalize_run(store, out, run)
    return time.perf_counter() - started


_SEARCH_CHILD = r"""
import json, sys, time, numpy as np
t0 = time.perf_counter()
from seeknetic_prep.results.index import load_windows
from seeknetic_prep.results.rank import rank
t1 = time.perf_counter()
w = load_windows(sys.argv[1])
t2 = time.perf_counter()
w = load_windows(sys.argv[1])  # again: the merged rows now come from the cache
t3 = time.perf_counter()
q = np.random.default_rng(1).standard_normal(w.vectors.shape[1])
rank(w, q, top=10)  # the first pass pages the matrix in (warm cache afterwards)
times = []
for _ in range(3):
    a = time.perf_counter(); hits, m = rank(w, q, top=10); times.append(time.perf_counter() - a)
a = time.perf_counter(); _, mf = rank(w, q, tags={"shot_size": "close_up"}, top=10)
tf = time.perf_counter() - a
st = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
kb = lambda k: int(st.get(k, "0 kB").split()[0])
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "cached_load_s": t3 - t2,
                  "rank_s": sorted(times)[1], "filtered_s": tf,
                  "windows": len(w), "matched_filtered": mf, "hwm_mb": kb("VmHWM") / 1024,
                  "rss_anon_mb": kb("RssAnon") / 1024, "rss_file_mb": kb("RssFile") / 1024}))
"""


def measure(windows: int, work: Path) -> dict[str, Any]:
    """Build ``windows`` windows of history under ``work``, add 1,000, measure; return the row."""
    from seeknetic_prep.state.store import Store

    out = work / f"scale-{windows}"
    shutil.rmtree(out, ignore_errors=True)
    rng = np.random.default_rng(0)
    files_total = windows // WINDOWS_PER_FILE
    per_run = RUN_WINDOWS // WINDOWS_PER_FILE
    built = time.perf_counter()
    with Store(out / "state.sqlite") as store:
        for first in range(0, files_total, per_run):
            _one_run(store, out, first, min(per_run, files_total - first), rng)
            print(f"  scale {windows}: {min(first + per_run, files_total) * WINDOWS_PER_FILE} windows built",
                  file=sys.stderr)
        build_s = time.perf_counter() - built
        end_of_run = _one_run(store, out, files_total, ADDED // WINDOWS_PER_FILE, rng)
        started = time.perf_counter()
    close_s = time.perf_counter() - started
    total_windows = windows + ADDED
    import sqlite3

    db = sqlite3.connect(out / "state.sqlite")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    state_bytes = (out / "state.sqlite").stat().st_size
    parts_bytes = sum(p.stat().st_size for p in (out / "parts").iterdir())
    matrix_bytes = (out / "search" / "vectors.f32").stat().st_size

    started = time.perf_counter()
    with Store(out / "state.sqlite") as store:
        hits = 0
        for f in range(files_total + ADDED // WINDOWS_PER_FILE):
            row = store.known_file(f"/data/videos/{f // 1000:04d}/clip-{f:07d}.mp4", size=1_000_000 + f,
                                   mtime_ns=1_700_000_000_000_000_000 + f, inode=10_000 + f)
            hits += row is not None
    resume_s = time.perf_counter() - started
    assert hits == files_total + ADDED // WINDOWS_PER_FILE, hits

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "seeknetic_prep", "status", "--out", str(out)],
                          capture_output=True, text=True, env=env, check=True)
    status_s = time.perf_counter() - started
    child = subprocess.run([sys.executable, "-c", _SEARCH_CHILD, str(out)], capture_output=True, text=True,
                           env=env, check=True)
    search = json.loads(child.stdout.strip().splitlines()[-1])
    return {
        "windows": total_windows, "build_s": build_s,
        "state_kb_per_window": state_bytes / total_windows / 1024,
        "state_mb": state_bytes / 2**20, "parts_mb": parts_bytes / 2**20, "matrix_mb": matrix_bytes / 2**20,
        "end_of_run_s": end_of_run, "close_s": close_s, "resume_s": resume_s, "status_s": status_s,
        "status_first_line": proc.stdout.splitlines()[1] if proc.stdout else "", **search,
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = ["windows", "state.sqlite (KB/window)", "parts + matrix (MB)", "end of run, +1k windows (s)",
            "no-op resume, store side (s)", "status (s)", "search: load, first / cached (s)",
            "search: rank top 10 (s)", "rank with a tag filter (s)", "search peak RSS / anon (MB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            f"{r['windows']:,}", f"{r['state_kb_per_window']:.2f} ({r['state_mb']:.0f} MB)",
            f"{r['parts_mb']:.0f} + {r['matrix_mb']:.0f}", f"{r['end_of_run_s']:.2f}",
            f"{r['resume_s']:.2f}", f"{r['status_s']:.2f}",
            f"{r['load_s']:.2f} / {r['cached_load_s']:.3f}", f"{r['rank_s']:.3f}",
            f"{r['filtered_s']:.3f}", f"{r['hwm_mb']:.0f} / {r['rss_anon_mb']:.0f}",
        ]) + " |")
    return "\n".join(lines)
