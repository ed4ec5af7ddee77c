"""``seeknetic-prep inspect``: contact sheets whose tiles are the uploaded frames, pixel for pixel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _media_truth import expected_tone, on_screen, read_index
from PIL import Image

from seeknetic_prep.decode.media import probe
from seeknetic_prep.decode.preprocess import preprocess
from seeknetic_prep.decode.profile import FRAME_SIZE
from seeknetic_prep.results.sheet import (
    describe_geometry,
    sheet_size,
    spectrogram_box,
    spectrogram_rows_hz,
    tile_origin,
    write_sheets,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
TRUTH: dict[str, Any] = json.loads((FIXTURES / "ground_truth.json").read_text())["files"]
BG = (24, 24, 27)


def _inspect(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "seeknetic_prep", "inspect", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("name", "window", "resize"), [
    ("late_audio_25s.mkv", 2, "crop"),   # the short last window: 5 s, padded audio
    ("rotated90.mp4", 0, "crop"),        # a phone clip: rotation -90
    ("demo/lake.mp4", 1, "pad"),
])
def test_sheet_tiles_are_the_uploaded_frames(tmp_path: Path, name: str, window: int, resize: str) -> None:
    out = tmp_path / "sheet.png"
    proc = _inspect(FIXTURES / name, "--window", window, "--out", out, "--resize", resize)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    sheet = np.asarray(Image.open(out).convert("RGB"))
    assert (sheet.shape[1], sheet.shape[0]) == sheet_size()
    seg = preprocess(FIXTURES / name, resize=resize)[window]  # type: ignore[arg-type]
    truth = TRUTH[name]
    for i in range(12):
        x, y = tile_origin(i)
        tile = sheet[y: y + FRAME_SIZE, x: x + FRAME_SIZE]
        np.testing.assert_array_equal(tile, seg.video[0, i].transpose(1, 2, 0))
        # ... and the frame each tile shows is the one on screen at its target (the fixture
        # encodes its index in its pixels).
        expected, _ = on_screen(truth["frames"], seg.target_times_ms[i])
        assert read_index(np.ascontiguousarray(tile.transpose(2, 0, 1)),
                          tuple(truth["display_size"]), resize) == expected  # type: ignore[arg-type]
        # A label is drawn under every tile (text pixels in its band), none over it.
        band = sheet[y + FRAME_SIZE + 2: y + FRAME_SIZE + 20, x: x + FRAME_SIZE]
        assert (np.abs(band.astype(int) - BG).sum(axis=2) > 100).sum() > 50, f"no label under tile {i}"
    header = sheet[: tile_origin(0)[1] - 4]
    assert (np.abs(header.astype(int) - BG).sum(axis=2) > 100).sum() > 500
    wave = sheet[-130:-20]  # the audio strip: a waveform is drawn (and, for a short window, padding)
    assert len(np.unique(wave.reshape(-1, 3), axis=0)) > 5


def test_spectrogram_shows_the_fixture_tones_and_silence(tmp_path: Path) -> None:
    """late_audio_25s.mkv: silence for 2 s, then a tone that steps up 100 Hz each second."""
    (path,) = write_sheets(FIXTURES / "late_audio_25s.mkv", tmp_path / "s.png", window=0)
    sheet = np.asarray(Image.open(path).convert("RGB")).astype(int)
    x0, y0, width, height = spectrogram_box()
    spec = sheet[y0: y0 + height, x0: x0 + width].sum(axis=2)
    rows_hz = spectrogram_rows_hz()
    audio = TRUTH["late_audio_25s.mkv"]["audio"]
    for t in (0.5, 1.5):  # before the audio starts: dark
        assert spec[:, round(t / 10 * width)].max() < 60, t
    for t in np.arange(2.5, 10, 1.0):
        hz = expected_tone(audio, t)
        assert hz is not None
        measured = rows_hz[int(np.argmax(spec[:, round(t / 10 * width)]))]
        assert abs(measured / hz - 1) < 0.1, (t, hz, measured)


def test_geometry_line_names_rotation_sar_and_crop() -> None:
    line = describe_geometry(probe(FIXTURES / "rotated90.mp4"), "crop")
    assert line == ("stored 320x180, rotation -90, SAR 1:1 -> upright 180x320 -> crop: scaled to "
                    "224x398, rows 87-310 kept")
    assert describe_geometry(probe(FIXTURES / "demo/lake.mp4"), "pad").endswith(
        "pad: scaled to 224x126, black bars to 224x224")


def test_every_window_gets_its_own_sheet(tmp_path: Path) -> None:
    written = write_sheets(FIXTURES / "late_audio_25s.mkv", tmp_path / "s.png")
    assert [p.name for p in written] == ["s-w0.png", "s-w1.png", "s-w2.png"]
    assert [p.name for p in write_sheets(FIXTURES / "short_700ms.mp4", tmp_path)] == ["short_700ms-w0.png"]


@pytest.mark.parametrize("window", ["3", "-1"])
def test_window_out_of_range_is_one_line_exit_2(tmp_path: Path, window: str) -> None:
    proc = _inspect(FIXTURES / "late_audio_25s.mkv", "--window", window, "--out", tmp_path / "s.png")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"seeknetic-prep inspect: error: Invalid --window {window}: late_audio_25s.mkv has 3 windows "
        "(0-2, 10 s each)."
    ]
    assert not list(tmp_path.iterdir())


def test_unusable_file_is_one_line(tmp_path: Path) -> None:
    proc = _inspect(FIXTURES / "bad" / "empty.mp4", "--out", tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "empty" in proc.stderr


def test_unwritable_out_is_one_line_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = _inspect(FIXTURES / "short_700ms.mp4", "--out", blocker / "sheet.png")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"seeknetic-prep inspect: error: Invalid --out {str(blocker / 'sheet.png')!r}: cannot write "
        f"{blocker / 'sheet.png'} ({blocker}: "), lines


def test_a_255_byte_name_gets_its_sheets(tmp_path: Path) -> None:
    """Issue 22.13: ``<name>-w0.png`` of a 255-byte name is too long for one file name; inspect
    said ``Invalid --out 'None'``. Now the name is cut (at a character) to fit."""
    import shutil

    name = "é" * 125 + ".mp4"  # 254 bytes of UTF-8
    video = tmp_path / "in" / name
    video.parent.mkdir()
    shutil.copyfile(FIXTURES / "short_700ms.mp4", video)
    (tmp_path / "sheets").mkdir()
    proc = subprocess.run([sys.executable, "-m", "seeknetic_prep", "inspect", str(video)],
                          cwd=tmp_path / "sheets", capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    (sheet,) = (tmp_path / "sheets").iterdir()
    assert sheet.name.endswith("-w0.png") and len(os.fsencode(sheet.name)) <= 255
    assert sheet.name.startswith("é" * 120) and Image.open(sheet).size == (952, 1072)
    assert [p.name for p in write_sheets(video, tmp_path / "sheets")] == [sheet.name]


@pytest.mark.parametrize(("source", "stem"), [
    ("s3://vids/clips/clip#1.mp4", "clip#1"),  # a bucket key may hold '#' and '?'
    ("gs://vids/a/b.mp4", "b"),
    ("https://host/x/lake.mp4?X-Amz-Signature=s", "lake"),
    ("https://host/", "video"),
    ("clips/lake.mp4", "lake"),
])
def test_sheets_are_named_after_the_objects_key(source: str, stem: str) -> None:
    from seeknetic_prep.results.sheet import _named

    assert _named(source).stem == stem
