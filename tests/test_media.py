"""The PyAV seam: what probe reports, exact frame choice, audio, and that nothing foreign escapes."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from seeknetic_prep.decode.media import decode_audio, decode_frames_at, probe
from seeknetic_prep.decode.preprocess import preprocess
from seeknetic_prep.errors import MediaError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TRUTH: dict[str, Any] = json.loads((FIXTURES / "ground_truth.json").read_text())["files"]
GOOD = sorted(name for name, t in TRUTH.items() if t["kind"] == "good")


@pytest.mark.parametrize("name", GOOD)
def test_probe_matches_ground_truth(name: str) -> None:
    truth = TRUTH[name]
    info = probe(FIXTURES / name)
    assert info.duration_ms == round(truth["duration_ms"])
    assert [info.width, info.height] == truth["display_size"]
    assert [info.coded_width, info.coded_height] == truth["coded_size"]
    assert info.rotation == truth["rotation"]
    assert info.mirrored == truth.get("mirrored", False)
    assert info.video_index == truth.get("video_index", 0)
    assert info.has_audio == (truth["audio"] is not None)
    assert info.pix_fmt == truth["pix_fmt"]
    assert info.origin_s * 1000 == pytest.approx(truth["origin_ms"], abs=1e-6)
    if truth["audio"] is not None:
        assert info.audio_rate == truth["audio"]["rate"]
        assert info.audio_channels == truth["audio"]["channels"]


def test_probe_codecs() -> None:
    assert probe(FIXTURES / "hevc10.mp4").video_codec == "hevc"
    assert probe(FIXTURES / "vp9.webm").video_codec == "vp9"
    assert probe(FIXTURES / "mjpeg.avi").video_codec == "mjpeg"
    assert probe(FIXTURES / "av1.mp4").video_codec in {"libdav1d", "av1"}
    assert probe(FIXTURES / "cfr30_bframes.mp4").fps == 30.0


def test_a_target_exactly_on_a_pts_takes_that_frame() -> None:
    info = probe(FIXTURES / "vfr.mkv")
    frames = TRUTH["vfr.mkv"]["frames"]
    exact = [frames[5][1], frames[6][1], frames[40][1]]
    just_before = [t - 0.001 for t in exact]
    got = [pts for pts, _ in decode_frames_at(info, sorted(exact + just_before), (40, 40))]
    assert got == [frames[4][1], frames[5][1], frames[5][1], frames[6][1], frames[39][1], frames[40][1]]


def test_repeated_frames_are_converted_once() -> None:
    """Targets inside the 700 ms still frame share one converted array."""
    info = probe(FIXTURES / "vfr.mkv")
    held = next(pts for (i, pts), (_, nxt) in zip(TRUTH["vfr.mkv"]["frames"], TRUTH["vfr.mkv"]["frames"][1:],
                                                      strict=False) if nxt - pts == 700)
    out = list(decode_frames_at(info, [held + 100, held + 300, held + 600], (40, 40)))
    assert {pts for pts, _ in out} == {held}
    assert out[0][1] is out[1][1] is out[2][1]


def test_decode_audio_chunks_are_gapless_mono_22050() -> None:
    info = probe(FIXTURES / "six_ch_48k.mp4")
    chunks = list(decode_audio(info, 0))
    assert chunks[0][0] == 0
    for (pos, c), (nxt, _) in itertools.pairwise(chunks):
        assert nxt == pos + c.size and c.dtype == np.float32 and c.ndim == 1
    total = chunks[-1][0] + chunks[-1][1].size
    # All 11 s came through the flushed resampler, plus at most the codec's last padded frame.
    assert 11 * 22050 <= total <= 11 * 22050 + 1024 * 22050 // 48000 + 1


def test_no_audio_stream_yields_nothing() -> None:
    info = probe(FIXTURES / "no_audio.mp4")
    assert list(decode_audio(info, 0)) == []


def _cut_points(size: int) -> list[int]:
    return [0, 1, 16, 100, 1000, size // 10, size // 3, size // 2, size * 9 // 10, size - 100]


@pytest.mark.parametrize("name", ["cfr30_bframes.mp4", "vfr.mkv", "vp9.webm", "mjpeg.avi"])
def test_nothing_foreign_escapes_from_cut_files(name: str, tmp_path: Path) -> None:
    """Any prefix of a good file either decodes to full windows or raises MediaError."""
    data = (FIXTURES / name).read_bytes()
    outcomes = []
    for cut in _cut_points(len(data)):
        path = tmp_path / f"cut{cut}{Path(name).suffix}"
        path.write_bytes(data[:cut])
        try:
            segs = preprocess(path)
        except MediaError as exc:
            assert str(path) in str(exc)
            outcomes.append("error")
        else:
            outcomes.append(f"{len(segs)} windows")
    assert outcomes[:4] == ["error"] * 4


@pytest.mark.parametrize(
    ("name", "fraction", "cause"),
    [
        ("mjpeg.avi", 0.3, "truncated: the header declares video up to 4.000 s"),  # AVI frame count
        ("vfr.mkv", 0.97, "truncated"),  # 140 ms short
        ("late_audio_25s.mkv", 0.995, "truncated: the header declares audio"),
        ("cfr30_bframes.mp4", 0.9, "truncated or incomplete mp4/mov"),  # moov at the end, cut off
    ],
)
def test_truncation_is_detected(name: str, fraction: float, cause: str, tmp_path: Path) -> None:
    data = (FIXTURES / name).read_bytes()
    path = tmp_path / f"cut{Path(name).suffix}"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(MediaError, match=cause):
        preprocess(path)


def test_a_cut_faststart_mp4_says_where_its_data_ends() -> None:
    """The quick tail scan starts anywhere and finds nothing here; the keyframe rescan tells
    how much is left, as a scan from a keyframe always did."""
    with pytest.raises(MediaError, match=r"declares video up to 10\.000 s but the data ends at 5\.360 s"):
        probe(FIXTURES / "bad" / "truncated.mp4")


def test_garbage_in_the_middle_never_raises_a_foreign_error(tmp_path: Path) -> None:
    data = bytearray((FIXTURES / "cfr30_bframes.mp4").read_bytes())
    rng = np.random.default_rng(3)
    data[len(data) // 3: len(data) // 3 + 20_000] = rng.integers(0, 256, 20_000, np.uint8).tobytes()
    path = tmp_path / "damaged.mp4"
    path.write_bytes(bytes(data))
    try:
        segs = preprocess(path)
    except MediaError as exc:
        assert str(path) in str(exc)
    else:
        assert len(segs) == 2


@pytest.mark.slow
def test_memory_stays_flat_over_a_long_file(tmp_path: Path) -> None:
    """90 s of 640x360 (2700 frames, 1.8 GB as RGB) decodes with a small, bounded footprint."""
    psutil = pytest.importorskip("psutil")
    from seeknetic_prep.decode.preprocess import iter_segments

    path = tmp_path / "long.mp4"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=30, options={"preset": "ultrafast", "g": "90"})
        vs.width, vs.height, vs.pix_fmt = 640, 360, "yuv420p"
        ramp = np.tile(np.arange(640, dtype=np.uint8), (360, 1))
        for i in range(90 * 30):
            img = np.stack([ramp + np.uint8(i % 256), ramp, np.full_like(ramp, i % 256)], axis=-1)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 30)
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
    proc = psutil.Process()
    before = proc.memory_info().rss
    peak, count = before, 0
    for seg in iter_segments(path):
        count += 1
        peak = max(peak, proc.memory_info().rss)
        del seg
    assert count == 9
    assert (peak - before) / 2**20 < 200  # holding the frames would be > 1800 MB


def test_a_hole_in_the_audio_stays_silent(tmp_path: Path) -> None:
    """Audio packets from 0-1 s and 2-4 s: the hole is silence, the tone after it is in place."""
    path = tmp_path / "hole.mkv"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
        vs.width, vs.height, vs.pix_fmt = 64, 64, "yuv420p"
        au = out.add_stream("pcm_s16le", rate=16000, layout="mono")
        for i in range(40):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        t = np.arange(16000 * 4) / 16000
        tone = (0.5 * np.sin(2 * np.pi * 500 * t) * 32767).astype(np.int16)
        for k in range(0, tone.size, 800):
            if 16000 <= k < 32000:
                continue
            af = av.AudioFrame.from_ndarray(tone[None, k:k + 800], format="s16", layout="mono")
            af.sample_rate, af.pts, af.time_base = 16000, k, Fraction(1, 16000)
            for p in au.encode(af):
                out.mux(p)
        for p in au.encode():
            out.mux(p)
    (seg,) = preprocess(path)
    audio = seg.audio[0, 0]
    assert float(np.abs(audio[int(1.1 * 22050): int(1.9 * 22050)]).max()) < 1e-3
    assert float(np.abs(audio[int(0.1 * 22050): int(0.9 * 22050)]).max()) > 0.4
    later = audio[int(2.2 * 22050): int(3.8 * 22050)]
    assert float(np.abs(later).max()) > 0.4
    # In place: a 500 Hz sine sampled from t = 2.2 s has the phase of the source at 2.2 s.
    ref = 0.5 * np.sin(2 * np.pi * 500 * (np.arange(later.size) / 22050 + 2.2))
    assert float(np.abs(later - ref).max()) < 0.02


def _count(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the pictures the decoder puts out (skipped ones never come out) and conversions."""
    import seeknetic_prep.decode.colour as colour
    import seeknetic_prep.decode.frames as frames

    counts = {"decoded": 0, "converted": 0}
    real = frames._decode_needed
    real_rgb = colour._to_rgb

    def counted(*args: Any) -> Iterator[Any]:
        for frame in real(*args):
            counts["decoded"] += 1
            yield frame

    def converted(*args: Any) -> Any:
        counts["converted"] += 1
        return real_rgb(*args)

    monkeypatch.setattr(frames, "_decode_needed", counted)
    monkeypatch.setattr(colour, "_to_rgb", converted)
    return counts


def test_one_pass_converts_only_the_chosen_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    counts = _count(monkeypatch)
    segs = preprocess(FIXTURES / "cfr30_bframes.mp4")  # 600 frames, 2 windows
    assert len(segs) == 2
    assert counts["converted"] == 24  # 12 per window, nothing else
    # One pass, and the B-frames that no target shows and nothing references are skipped:
    # I and P frames, referenced B-frames and the 24 shown ones, 327 of 600 with x264's pyramid.
    assert counts["decoded"] <= 0.6 * 600


def test_an_intra_only_codec_decodes_every_frame_it_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """MJPEG is not skipped (every frame is a keyframe and ``skip_frame`` is not trusted there)."""
    counts = _count(monkeypatch)
    assert len(preprocess(FIXTURES / "mjpeg.avi")) == 1
    assert counts["converted"] == 12
    # Every frame from the one on screen at the first target (100 ms: every frame is a
    # keyframe, so the seek lands there) to the one after the last target that closes it.
    assert counts["decoded"] == len(TRUTH["mjpeg.avi"]["frames"]) - 1


def test_a_custom_window_does_not_decode_the_whole_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """GOP of 300 frames (keyframes at 0 and 10 s): [15 s, 20 s) decodes from 10 s on only."""
    counts = _count(monkeypatch)
    preprocess(FIXTURES / "cfr30_bframes.mp4", start_ms=15000, end_ms=20000)
    assert counts["converted"] == 12
    # From the keyframe at 10 s: references only up to 15 s, then references and shown frames.
    assert counts["decoded"] <= 0.75 * 300


def test_far_apart_windows_get_a_seek_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyframes at 0 and 20 s: [0, 1 s) and [23 s, 24 s) decode about 75 frames, not 360."""
    from seeknetic_prep.decode.preprocess import iter_segments
    from seeknetic_prep.decode.profile import Window

    counts = _count(monkeypatch)
    wanted = [Window(0, 0, 1000), Window(1, 23_000, 24_000)]
    got = list(iter_segments(FIXTURES / "late_audio_25s.mkv", wanted))
    assert [s.start_ms for s in got] == [0, 23_000]
    assert counts["converted"] == 24
    assert counts["decoded"] < 120


def test_targets_far_apart_at_a_high_frame_rate_still_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """120 fps with B-frames, targets 100 frames apart (more than the packet look-ahead): an
    unshown picture is let go as soon as a later one before the next target is demuxed, so
    skipping goes on; the frames picked are still exactly the ones on screen."""
    path = tmp_path / "fast.mp4"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=120, options={"preset": "veryfast", "bf": "3"})
        vs.width, vs.height, vs.pix_fmt = 64, 64, "yuv420p"
        for i in range(1200):
            grey = np.full((64, 64, 3), (i * 7) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(grey, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 120)
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
    counts = _count(monkeypatch)
    (seg,) = preprocess(path)
    # Target i at (i + 0.5) * 10000 / 12 ms: the frame on screen is floor(target * 0.12).
    assert seg.frame_times_ms == tuple((int((i + 0.5) * 100) * 1000 / 120) for i in range(12))
    assert counts["decoded"] <= 0.55 * 1200  # 584; waiting on the look-ahead alone gave 782


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_single_frame_clip_is_one_short_window(suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"one{suffix}"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        vs.width, vs.height, vs.pix_fmt = 322, 182, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.full((182, 322, 3), 100, np.uint8), format="rgb24")
        frame.pts, frame.time_base = 0, Fraction(1, 25)
        for p in [*vs.encode(frame), *vs.encode()]:
            out.mux(p)
    (seg,) = preprocess(path)
    assert (seg.start_ms, seg.end_ms) == (0, 40)
    assert seg.frame_times_ms == (0.0,) * 12
    assert abs(float(seg.video.mean()) - 100) < 4 and not seg.has_audio


def test_cover_art_is_not_a_video_stream(tmp_path: Path) -> None:
    """Music with cover art: its only "video" stream is an attached picture."""
    path = tmp_path / "song.mp4"
    with av.open(str(path), "w") as c:
        audio = c.add_stream("aac", rate=44100, layout="mono")
        pic = c.add_stream("mjpeg", rate=1)
        pic.width, pic.height, pic.pix_fmt = 64, 64, "yuvj420p"
        pic.disposition = av.stream.Disposition.attached_pic
        art = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 200, np.uint8), format="rgb24")
        art = art.reformat(format="yuvj420p")
        art.pts = 0
        art_packets = [*pic.encode(art), *pic.encode()]
        for k in range(0, 44100, 1024):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts, f.time_base = 44100, k, Fraction(1, 44100)
            for p in audio.encode(f):
                c.mux(p)
        for p in [*audio.encode(), *art_packets]:
            c.mux(p)
    with pytest.raises(MediaError, match=r"no video stream \(the file holds audio and cover art\)"):
        preprocess(path)
