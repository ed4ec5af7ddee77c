"""Smoke test of scripts/bench.py: its inputs are what they claim, its tables and README edit are right.

Timings are never asserted (the machine is shared); what is checked is that the generator makes
the GOP, B-frames, bit depth and audio layout the recipe names, with texture that is not flat,
and that cells, ratios and the README section come out as documented.
"""

from __future__ import annotations

import importlib.util
import sys
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import av
import numpy as np
import pytest
from av.video.frame import PictureType

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bench = _load("bench")
inputs = bench.inputs


def _tiny(**kw: object) -> Any:
    base: dict[str, object] = dict(
        name="tiny", ext="mp4", codec="libx264", width=160, height=96, fps=30, seconds=2.0,
        gop=30, bframes=2, options=inputs._x264(30, 2, "ultrafast"), audio_rate=16_000, seed=7,
    )
    base.update(kw)
    return inputs.Recipe(**base)


def test_h264_recipe_has_its_gop_b_frames_texture_and_audio(tmp_path: Path) -> None:
    recipe = _tiny()
    path = inputs.ensure(recipe, tmp_path, log=False)
    assert path.name == f"tiny-{recipe.key()}.mp4"
    with av.open(str(path)) as c:
        assert c.streams.audio[0].codec_context.sample_rate == 16_000
        kinds, keys, lumas, times = [], 0, [], []
        for frame in c.decode(video=0):
            kinds.append(PictureType(frame.pict_type).name)
            keys += frame.key_frame
            times.append(frame.time)
            lumas.append(frame.to_ndarray(format="gray").astype(np.int16))
    assert len(lumas) == 60
    assert keys == 2  # GOP 30 over 60 frames, no scene-cut keyframes
    assert "B" in kinds
    assert times == sorted(times) and times[1] == pytest.approx(float(Fraction(1, 30)))
    assert lumas[0].std() > 20  # texture, not flat colour
    assert np.abs(lumas[1] - lumas[0]).mean() > 1  # it moves: every frame carries residual


def test_cached_clip_is_reused_and_a_changed_recipe_is_a_new_file(tmp_path: Path) -> None:
    first = inputs.ensure(_tiny(seconds=1.0), tmp_path, log=False)
    stamp = first.stat().st_mtime_ns
    assert inputs.ensure(_tiny(seconds=1.0), tmp_path, log=False).stat().st_mtime_ns == stamp
    other = inputs.ensure(_tiny(seconds=1.0, seed=8), tmp_path, log=False)
    assert other != first and other.exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_hevc_10_bit_recipe_with_six_channel_96k_audio(tmp_path: Path) -> None:
    recipe = _tiny(codec="libx265", pix_fmt="yuv420p10le", seconds=0.5, options=inputs._x265(30, 2),
                   audio_rate=96_000, audio_layout="5.1", width=128, height=64)
    path = inputs.ensure(recipe, tmp_path, log=False)
    with av.open(str(path)) as c:
        vs, aus = c.streams.video[0], c.streams.audio[0]
        assert vs.codec_context.name == "hevc"
        assert vs.codec_context.pix_fmt == "yuv420p10le"
        assert aus.codec_context.sample_rate == 96_000
        assert aus.codec_context.layout.nb_channels == 6
        assert sum(1 for _ in c.decode(video=0)) == 15


def test_naive_baseline_returns_the_window_shapes(tmp_path: Path) -> None:
    path = inputs.ensure(_tiny(), tmp_path, log=False)
    video, audio = bench.naive(path, 0, 2000)
    assert video.shape == (1, 12, 3, 224, 224) and video.dtype == np.uint8
    assert audio.shape == (1, 1, 44_100) and audio.dtype == np.float32
    assert np.abs(audio).max() > 0.1  # the tones made it through the resampler
    bench.pyav_decode_only(path)  # decode-only contender runs on the same clip


def test_interleaved_runs_a_b_a_b_and_reports_skips_and_failures() -> None:
    calls: list[str] = []

    def a() -> None:
        calls.append("a")

    def b() -> float:
        calls.append("b")
        return 42.0

    def missing() -> None:
        raise bench.Skip("no ffmpeg")

    def broken() -> None:
        raise ValueError("bad file")

    cells = bench.interleaved({"a": a, "b": b, "m": missing, "x": broken}, reps=3)
    assert calls == ["a", "b"] * 3
    assert len(cells["a"].samples) == 3 and cells["b"].median == 42.0
    assert cells["m"].skipped == "skipped (no ffmpeg)" and cells["m"].median is None
    assert cells["x"].skipped is not None and "ValueError: bad file" in cells["x"].skipped
    assert bench.fmt_s(cells["m"]) == "skipped (no ffmpeg)"
    assert bench.fmt_x(bench.ratio(cells["b"], 21.0)) == "2.00x"
    assert bench.ratio(cells["m"], cells["b"]) is None


def test_geomean_ignores_missing_ratios() -> None:
    assert bench.geomean([2.0, 8.0, None]) == pytest.approx(4.0)
    assert bench.geomean([None]) is None


def test_markdown_table_pads_and_right_aligns_numbers() -> None:
    table = bench.markdown_table(["file", "s"], [["clip.mp4", "1.25"], ["x", "skipped (no ffmpeg)"]])
    lines = table.splitlines()
    assert lines[0].startswith("| file") and lines[1].startswith("| ---")
    assert len({len(line) for line in lines}) == 1  # every row the same width
    assert "|                1.25 |" in lines[2]
    assert "| skipped (no ffmpeg) |" in lines[3]


def test_replace_section_touches_only_its_markers() -> None:
    text = (
        "# T\n<!-- section: cli -->\nkeep me\n<!-- /section: cli -->\n"
        "<!-- section: performance -->\nold\n<!-- /section: performance -->\ntail\n"
    )
    out = bench.replace_section(text, "performance", "## Performance\n\nnew table\n")
    assert "old" not in out and "new table" in out
    assert "keep me" in out and out.endswith("<!-- /section: performance -->\ntail\n")
    assert bench.replace_section(out, "performance", "x") == bench.replace_section(text, "performance", "x")
    with pytest.raises(SystemExit):
        bench.replace_section("no markers", "performance", "x")


def test_arguments() -> None:
    quick = bench.parse_args(["--quick", "--only", "a,d"])
    assert quick.reps == 1 and quick.only == ["a", "d"]
    assert bench.parse_args([]).reps == 3
    with pytest.raises(SystemExit):
        bench.parse_args(["--only", "z"])
