"""The report reuses the run (issue 18.5): the decode workers keep three small JPEGs of each
window's frames (``<out>/thumbs.sqlite``), so ``report`` opens no source: it works after the
videos are moved away, and its pictures are the frames the model saw. A folder whose run kept
none (an older version) is decoded for its thumbnails as before.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import time
from pathlib import Path

import cv2
import numpy as np
from _pipeline_helpers import ROOT, cli

import seeknetic_prep as sp
from seeknetic_prep.pipeline.payloads import file_fingerprint
from seeknetic_prep.state.thumbs import THUMB_FRAMES, THUMB_PX, split_jpegs

DEMO = ROOT / "fixtures" / "demo"
IMG = re.compile(r"<img alt='frame' src='data:image/jpeg;base64,")


def test_the_report_shows_the_runs_own_frames_without_opening_a_source(tmp_path: Path) -> None:
    videos, out = tmp_path / "videos", tmp_path / "out"
    shutil.copytree(DEMO, videos)
    cli("run", str(videos), "--local", "--out", str(out), "--workers", "2")
    truth = {p.name: sp.preprocess(str(p)) for p in sorted(videos.iterdir())}
    prints = {p.name: file_fingerprint(p) for p in sorted(videos.iterdir())}

    con = sqlite3.connect(out / "thumbs.sqlite")
    kept = {(fp, i): split_jpegs(blob) for fp, i, blob in con.execute("SELECT * FROM thumbs")}
    con.close()
    assert len(kept) == sum(len(segs) for segs in truth.values())
    for name, segs in truth.items():
        for seg in segs:
            jpegs = kept[(prints[name], seg.index)]
            assert len(jpegs) == len(THUMB_FRAMES) and all(len(j) < 8000 for j in jpegs)
            for frame, jpeg in zip(THUMB_FRAMES, jpegs, strict=True):
                bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                got = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                want = cv2.resize(np.ascontiguousarray(seg.video[0, frame].transpose(1, 2, 0)),
                                  (THUMB_PX, THUMB_PX), interpolation=cv2.INTER_AREA)
                assert np.abs(got.astype(int) - want.astype(int)).mean() < 4.0, (name, seg.index, frame)

    shutil.move(videos, tmp_path / "moved-away")  # no source can be opened now
    started = time.monotonic()
    cli("report", "--out", str(out))
    took = time.monotonic() - started
    page = (out / "report.html").read_text()
    assert len(IMG.findall(page)) >= len(THUMB_FRAMES) * len(kept)  # every window's strip (+ neighbours)
    assert "no thumbnails" not in page
    print(f"report of {len(kept)} windows with the sources gone: {took:.2f} s")


def test_a_run_that_kept_no_thumbnails_is_decoded_for_them(tmp_path: Path) -> None:
    videos, out = tmp_path / "videos", tmp_path / "out"
    shutil.copytree(DEMO, videos)
    cli("run", str(videos), "--local", "--out", str(out), "--workers", "2")
    windows = sum(len(sp.preprocess(str(p))) for p in videos.iterdir())
    (out / "thumbs.sqlite").unlink()  # as a version before this one left it
    for extra in out.glob("thumbs.sqlite-*"):
        extra.unlink()
    cli("report", "--out", str(out))
    page = (out / "report.html").read_text()
    assert len(IMG.findall(page)) >= len(THUMB_FRAMES) * windows and "no thumbnails" not in page
