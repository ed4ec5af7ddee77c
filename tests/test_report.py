"""``seeknetic-prep report``: a static report.html of a real ``run --local``, checked in a real browser."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _media_truth import on_screen, read_index
from _pipeline_helpers import read_results
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
TRUTH: dict[str, Any] = json.loads((FIXTURES / "ground_truth.json").read_text())["files"]
CLIPS = ("demo/lake.mp4", "demo/forest.webm", "demo/desert.mp4", "rotated90.mp4", "bad/empty.mp4")


def _cli(*args: str | Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEKNETIC_")}
    return subprocess.run([sys.executable, "-m", "seeknetic_prep", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def run_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run over 4 good clips (6 windows) and one empty file, via the CLI."""
    videos = tmp_path_factory.mktemp("videos")
    for name in CLIPS:
        shutil.copy(FIXTURES / name, videos / Path(name).name)
    out = tmp_path_factory.mktemp("run") / "out"
    proc = _cli("run", videos, "--local", "--out", out, "--workers", "1", "--quiet")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the empty file failed
    return out


@pytest.fixture(scope="module")
def page(run_out: Path) -> str:
    proc = _cli("report", "--out", run_out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"report: {run_out / 'report.html'}")
    return (run_out / "report.html").read_text(encoding="utf-8")


def _images(page: str) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))
            for b64 in re.findall(r"src='data:image/jpeg;base64,([A-Za-z0-9+/=]+)'", page)]


def test_report_is_self_contained(page: str) -> None:
    assert not re.search(r"(?:src|href)\s*=\s*['\"](?!data:)", page), "an external resource"
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page and "<script" not in page
    assert "<style>" in page


def test_report_shows_totals_failures_tags_and_neighbours(page: str) -> None:
    assert "<b>4 ok</b>1 failed" in page and "<b>12 completed</b>" in page
    assert "windows/s decoded" in page
    assert re.search(r"empty\.mp4</td><td class='bad'>empty: ", page), "the failed file and its reason"
    for name in ("lake.mp4", "forest.webm", "desert.mp4", "rotated90.mp4"):
        assert re.search(rf"<h3>[^<]*{re.escape(name)} ", page), name
    assert page.count("<div class='win'>") == 6 + 4 * 3  # 6 windows; 4 queries x 3 neighbours
    assert page.count("dominant_color: ") == 6
    assert "Nearest neighbours" in page and page.count("query: ") == 4
    images = _images(page)
    assert len(images) == 6 * 3 + 4 * 4
    assert all(img.shape == (96, 96, 3) for img in images)


def test_thumbnails_are_the_frames_the_run_used(run_out: Path, page: str) -> None:
    """The first strip is desert.mp4 window 0 (files by path): frames 0, 6, 11 of that window."""
    lines = read_results(run_out)
    first = sorted((x for x in lines if x["status"] == "completed"), key=lambda x: x["path"])[0]
    assert first["path"].endswith("desert.mp4") and first["start_ms"] == 0
    truth = TRUTH["demo/desert.mp4"]
    for img, i in zip(_images(page)[:3], (0, 6, 11), strict=True):
        big = np.asarray(Image.fromarray(img).resize((224, 224), Image.Resampling.BILINEAR))
        expected, _ = on_screen(truth["frames"], first["frame_times_ms"][i])
        got = read_index(np.ascontiguousarray(big.transpose(2, 0, 1)), tuple(truth["display_size"]))
        assert got == expected, (i, got, expected)


def test_caps_are_stated(run_out: Path, tmp_path: Path) -> None:
    out = shutil.copytree(run_out, tmp_path / "out")  # the other tests keep the full report
    proc = _cli("report", "--out", out, "--max-files", "1")
    assert proc.returncode == 0, proc.stderr
    capped = (out / "report.html").read_text()
    assert "the first 1 of 4 preprocessed files by path (capped at 1" in capped
    assert capped.count("<h3>") == 2  # the failed files table's heading and one file


def test_report_without_a_run_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = _cli("report", "--out", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"seeknetic-prep report: error: Invalid --out {str(tmp_path)!r}: no state.sqlite there (run first)."
    ]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _screenshot(browser: str, html: Path, png: Path, profile: Path) -> list[str]:
    """Load ``html`` headless, save a 1280x1600 screenshot; return the page's console messages."""
    proc = subprocess.run(
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", "--window-size=1280,1600", f"--screenshot={png}",
         html.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert png.exists(), f"no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line or "ERR_" in line]


def test_report_renders_in_a_real_browser(run_out: Path, page: str, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium here (.ci/run installs Debian's chromium when it can: "
                    "apt-get install chromium)")
    # The detector works: a page with a console error is caught.
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><p>x</p><script>console.error('boom')</script></body></html>")
    assert any("boom" in m for m in _screenshot(browser, bad, tmp_path / "bad.png", tmp_path / "p1"))

    png = tmp_path / "report.png"
    messages = _screenshot(browser, run_out / "report.html", png, tmp_path / "p2")
    assert messages == [], messages
    shot = np.asarray(Image.open(png).convert("RGB")).astype(np.float64)
    assert shot.shape[:2] == (1600, 1280)
    print(f"\nscreenshot {png}: pixel std {shot.std():.1f}, "
          f"{(np.abs(shot - shot[0, 0]).sum(axis=2) > 12).mean():.1%} off the background")
    assert shot.std() > 20  # not blank: text, cards and thumbnails
    assert (np.abs(shot - shot[0, 0]).sum(axis=2) > 12).mean() > 0.1  # ~27% here; a blank page: 0
    # The thumbnails are drawn: the fixtures' red, green and blue corner cells are on screen.
    for rgb in ((255, 0, 0), (0, 255, 0), (0, 0, 255)):
        assert (np.abs(shot - rgb).max(axis=2) < 40).sum() > 50, rgb
