"""What each file is, in the results (issue 18.8): duration, size, mtime, display size, fps,
codecs, pixel format, audio rate and channels, rotation and audio presence on every row of a
file, in every export; checked against the fixtures' ground truth (written by the script that
made them) and the files' own ``stat``. A state and parts written before these columns existed
(schema 2) still open: the state is upgraded and the old rows read as nulls.
"""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from _pipeline_helpers import ROOT, cli

from seeknetic_prep.results.parts import MEDIA_COLUMNS
from seeknetic_prep.state.store import SCHEMA_VERSION

FIXTURES = ROOT / "fixtures"
TRUTH = json.loads((FIXTURES / "ground_truth.json").read_text())["files"]
CLIPS = ("rotated90.mp4", "six_ch_48k.mp4", "no_audio.mp4", "hevc10.mp4")
DECODER_NAME = {"libx264": "h264", "libx265": "hevc"}


def _by_path(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each path's media values, checked equal on all its rows."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        media = {k: row.get(k) for k in MEDIA_COLUMNS}
        assert out.setdefault(row["path"], media) == media, row["path"]
    return out


def test_every_row_and_export_says_what_its_file_is(tmp_path: Path) -> None:
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    for name in CLIPS:
        shutil.copy(FIXTURES / name, videos / name)
    cli("run", str(videos), "--local", "--out", str(out), "--workers", "2")
    cli("results", "--out", str(out), "--to", str(tmp_path / "r.parquet"))
    media = _by_path(pq.read_table(tmp_path / "r.parquet").to_pylist())
    assert set(media) == {str(videos / n) for n in CLIPS}
    for name in CLIPS:
        got, truth, st = media[str(videos / name)], TRUTH[name], (videos / name).stat()
        audio = truth.get("audio")
        assert (got["width"], got["height"]) == tuple(truth["display_size"]), name
        assert got["rotation"] == truth["rotation"] and got["mirrored"] is False
        assert (got["video_codec"], got["pix_fmt"]) == (DECODER_NAME[truth["codec"]], truth["pix_fmt"])
        assert abs(got["duration_ms"] - truth["duration_ms"]) <= 1
        assert (got["size_bytes"], got["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
        assert got["has_audio"] is (audio is not None)
        assert (got["audio_codec"], got["audio_rate"], got["audio_channels"]) == (
            (audio["codec"], audio["rate"], audio["channels"]) if audio else (None, None, None))
        frames = truth["frames"]
        assert abs(got["fps"] - 1000.0 * (len(frames) - 1) / (frames[-1][1] - frames[0][1])) < 0.5
        assert got["decoder"] == "cpu"  # no CUDA device here: what decoded it, not what could

    cli("results", "--out", str(out), "--format", "jsonl", "--to", str(tmp_path / "r.jsonl"))
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert _by_path(rows) == media
    cli("results", "--out", str(out), "--format", "csv", "--to", str(tmp_path / "r.csv"))
    with open(tmp_path / "r.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert {r["path"]: r["video_codec"] for r in csv_rows} == {p: m["video_codec"] for p, m in media.items()}
    cli("results", "--out", str(out), "--format", "npy", "--to", str(tmp_path / "r.npy"))
    with open(tmp_path / "r.index.csv", newline="") as f:
        index = list(csv.DictReader(f))
    assert {r["path"]: (int(r["width"]), int(r["height"])) for r in index} == {
        p: (m["width"], m["height"]) for p, m in media.items()}


def test_a_state_and_parts_from_before_the_columns_still_open(tmp_path: Path) -> None:
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    shutil.copy(FIXTURES / "no_audio.mp4", videos / "old.mp4")
    cli("run", str(videos), "--local", "--out", str(out), "--workers", "2")
    # Make it what the version before wrote: schema 2, parts without the columns.
    db = sqlite3.connect(out / "state.sqlite")
    db.execute("ALTER TABLE files DROP COLUMN media")
    db.execute("DROP TABLE meta")  # schema 4's
    db.execute("PRAGMA user_version = 2")
    db.close()
    for part in (out / "parts").glob("part-*.parquet"):
        table = pq.read_table(part)
        pq.write_table(table.drop_columns(list(MEDIA_COLUMNS)), part)
    shutil.rmtree(out / "search")

    shutil.copy(FIXTURES / "six_ch_48k.mp4", videos / "new.mp4")
    cli("run", str(videos), "--local", "--out", str(out), "--workers", "2")
    version = sqlite3.connect(out / "state.sqlite").execute("PRAGMA user_version").fetchone()[0]
    assert version == SCHEMA_VERSION
    cli("results", "--out", str(out), "--format", "jsonl", "--to", str(tmp_path / "r.jsonl"))
    media = _by_path([json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()])
    assert media[str(videos / "old.mp4")] == dict.fromkeys(MEDIA_COLUMNS)  # never probed again: unknown
    assert media[str(videos / "new.mp4")]["audio_channels"] == 6
    assert len(cli("search", "--out", str(out), "--json", "--top", "50").stdout.splitlines()) > 0
    assert "2 preprocessed" in cli("status", "--out", str(out)).stdout
