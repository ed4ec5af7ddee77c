"""Every window of every good fixture, checked against the pixels and samples themselves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import av
import librosa
import numpy as np
import pytest
from _media_truth import audio_checks, corner_error, on_screen, read_index

import seeknetic_prep as sp
from seeknetic_prep.decode.preprocess import iter_segments, preprocess
from seeknetic_prep.decode.profile import Segment, Window
from seeknetic_prep.decode.sampling import frame_targets_ms
from seeknetic_prep.errors import InvalidArgumentError, MediaError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

TRUTH: dict[str, Any] = json.loads((FIXTURES / "ground_truth.json").read_text())["files"]
GOOD = sorted(name for name, t in TRUTH.items() if t["kind"] == "good")
BAD = sorted(name for name, t in TRUTH.items() if t["kind"] == "bad")

_cache: dict[str, list[Segment]] = {}


def segments(name: str) -> list[Segment]:
    if name not in _cache:
        _cache[name] = preprocess(FIXTURES / name)
    return _cache[name]


def check_frames(seg: Segment, truth: dict[str, Any], resize: str = "crop") -> None:
    """12/12 frames: the index read from the pixels is the one on screen at each target."""
    display = tuple(truth["display_size"])
    targets = frame_targets_ms(seg.window)
    assert seg.target_times_ms == tuple(targets)
    for i, t in enumerate(targets):
        index, pts = on_screen(truth["frames"], t)
        assert seg.frame_times_ms[i] == pytest.approx(pts, abs=1e-6), (i, t)
        got = read_index(seg.video[0, i], display, resize)  # type: ignore[arg-type]
        assert got == index, f"frame {i} at {t:.1f} ms: read {got}, on screen {index}"


def check_audio(seg: Segment, truth: dict[str, Any]) -> int:
    checks = audio_checks(seg.audio[0, 0], seg.start_ms, seg.end_ms, truth["audio"])
    for t, expected, measured in checks:
        if expected is None:
            assert measured < 2e-3, f"{t:.2f} s should be silent, RMS {measured:.4f}"
        else:
            assert measured == pytest.approx(expected, abs=4), f"{t:.2f} s: {measured:.1f} Hz != {expected}"
    return len(checks)


@pytest.mark.parametrize("name", GOOD)
def test_every_window_frames_and_audio(name: str) -> None:
    truth = TRUTH[name]
    segs = segments(name)
    assert [[s.start_ms, s.end_ms] for s in segs] == truth["windows"]
    assert [s.index for s in segs] == list(range(len(segs)))
    checked = 0
    for seg in segs:
        assert seg.video.shape == (1, 12, 3, 224, 224) and seg.video.dtype == np.uint8
        assert seg.audio.shape == (1, 1, 220500) and seg.audio.dtype == np.float32
        assert seg.has_audio == (truth["audio"] is not None)
        assert float(np.abs(seg.audio).max()) <= 1.0
        check_frames(seg, truth)
        checked += check_audio(seg, truth)
        if truth["audio"] is None:
            assert not seg.audio.any()
    assert checked >= len(segs) * 2  # the audio was actually looked at


@pytest.mark.parametrize(
    "name", ["cfr30_bframes.mp4", "hevc10.mp4", "vp9.webm", "mjpeg.avi", "rotated90.mp4"]
)
def test_colours_survive_yuv_to_rgb(name: str) -> None:
    """Red, green, blue and white corners come back within a lossy-coding margin (8 and 10 bit)."""
    seg = segments(name)[0]
    display = tuple(TRUTH[name]["display_size"])
    worst = max(corner_error(seg.video[0, i], display) for i in range(12))  # type: ignore[arg-type]
    # Measured: 6-8 for H.264/HEVC/VP9, 15 for MJPEG; decoding the BT.709 HEVC clip with the
    # BT.601 matrix gives 27, so this bound catches a wrong matrix or range.
    assert worst < 20, worst


def test_rotated_clip_comes_out_upright() -> None:
    truth = TRUTH["rotated90.mp4"]
    assert truth["rotation"] == -90 and truth["display_size"] == [180, 320]
    seg = segments("rotated90.mp4")[0]
    # Upright reading succeeds; the stored (unrotated) orientation would fail the corner check.
    assert read_index(seg.video[0, 0], (180, 320)) is not None
    turned = np.ascontiguousarray(np.rot90(seg.video[0, 0], k=1, axes=(1, 2)))
    assert read_index(turned, (180, 320)) is None


def test_late_audio_gives_leading_silence() -> None:
    seg = segments("late_audio_25s.mkv")[0]
    lead = seg.audio[0, 0, : int(1.9 * 22050)]
    assert float(np.sqrt(np.mean(lead**2))) < 1e-3
    assert float(np.abs(seg.audio[0, 0, int(2.1 * 22050): (3 * 22050)]).max()) > 0.3


def test_short_last_window_is_zero_padded() -> None:
    last = segments("late_audio_25s.mkv")[-1]
    assert (last.start_ms, last.end_ms) == (20000, 24999)
    content = round(4.999 * 22050)
    assert float(np.abs(last.audio[0, 0, content + 100:]).max()) == 0.0
    assert float(np.abs(last.audio[0, 0, : content - 2205]).max()) > 0.3


def test_audio_equals_librosa_soxr_hq_on_the_whole_signal() -> None:
    """Streaming soxr HQ gives what librosa.resample(res_type='soxr_hq') gives on the whole track."""
    path = FIXTURES / "six_ch_48k.mp4"
    with av.open(str(path)) as c:
        chunks = [f.to_ndarray() for f in c.decode(audio=0)]
    whole = np.concatenate(chunks, axis=1).mean(axis=0, dtype=np.float32)
    ref = librosa.resample(whole, orig_sr=48000, target_sr=22050, res_type="soxr_hq")
    got = np.concatenate([s.audio[0, 0] for s in segments("six_ch_48k.mp4")])
    n = min(ref.size, 220500 + 22050)
    np.testing.assert_allclose(got[:n], np.clip(ref[:n], -1, 1), atol=1e-6)


SEEKING = sorted({*GOOD, "demo/lake.mp4", "demo/forest.webm", "demo/desert.mp4"})


def _timeline(segs: list[Segment]) -> np.ndarray:
    """The tiled windows' audio joined back into one track (22050 Hz, from timeline zero)."""
    return np.concatenate([s.audio[0, 0, : round((s.end_ms - s.start_ms) * 22.05)] for s in segs])


@pytest.mark.parametrize("name", SEEKING)
def test_a_window_decoded_alone_has_the_audio_of_the_whole_pass(name: str) -> None:
    """A window decoded after a seek gives the samples a pass from the top gives, on the same grid.

    Every tiled window, and one custom window at an odd offset, alone against the whole pass.
    A shifted grid or a ms-rounded Matroska pts would put tones out of phase (errors ~0.1-1);
    what remains is AAC noise substitution (PNS), whose random generator depends on where
    decoding began: ~1e-3, more in the last frames (a cut-off tone is coded as noise there).
    """
    whole = segments(name) if name in GOOD else preprocess(FIXTURES / name)
    track = _timeline(whole)
    duration = whole[-1].end_ms
    odd = round(duration * 0.37) + 3
    windows = [w.window for w in whole] + [Window(0, odd, min(odd + 10_000, duration))]
    for window in windows:
        (alone,) = iter_segments(FIXTURES / name, [window])
        lo, hi = round(window.start_ms * 22.05), round(window.end_ms * 22.05)
        got, want = alone.audio[0, 0, : hi - lo], track[lo:hi]
        diff = np.abs(got - want)
        content_end = int(np.flatnonzero(track)[-1]) + 1 if track.any() else 0
        tail = max(0, content_end - 2205 - lo)  # the last 100 ms of sound
        assert float(diff[:tail].max(initial=0)) <= 2e-3, (window, float(diff[:tail].max(initial=0)))
        assert float(diff.max(initial=0)) <= 1.5e-2, (window, float(diff.max(initial=0)))
        if window.start_ms % 10_000 == 0:
            assert alone.frame_times_ms == whole[window.start_ms // 10_000].frame_times_ms
            np.testing.assert_array_equal(alone.video, whole[window.start_ms // 10_000].video)


CUSTOM = [
    ("cfr30_bframes.mp4", 5000, 15000),
    ("cfr30_bframes.mp4", 12345, 19000),
    ("cfr30_bframes.mp4", 19000, 60000),  # end clipped to the content
    ("vfr.mp4", 3000, 11000),
    ("vfr.mkv", 1500, 4000),
    ("late_audio_25s.mkv", 1000, 7000),
    ("short_700ms.mp4", 100, 600),
    ("mpegts_offset.ts", 2000, 4500),  # no index: the seek lands past the only keyframe
    ("vp9.webm", 2500, 3999),
    ("mjpeg.avi", 1000, 3000),
]


@pytest.mark.parametrize(("name", "start", "end"), CUSTOM)
def test_custom_window(name: str, start: int, end: int) -> None:
    truth = TRUTH[name]
    (seg,) = preprocess(FIXTURES / name, start_ms=start, end_ms=end)
    assert (seg.index, seg.start_ms) == (0, start)
    assert seg.end_ms == min(end, round(truth["duration_ms"]))
    check_frames(seg, truth)
    check_audio(seg, truth)
    # Past the window's end the audio is zero, even when the file goes on.
    stop = round((seg.end_ms - seg.start_ms) * 22.05)
    assert not seg.audio[0, 0, stop + 1:].any()


def test_custom_window_matches_the_tiled_window() -> None:
    (one,) = preprocess(FIXTURES / "cfr30_bframes.mp4", start_ms=10000, end_ms=20000)
    tiled = segments("cfr30_bframes.mp4")[1]
    assert one.frame_times_ms == tiled.frame_times_ms
    np.testing.assert_array_equal(one.video, tiled.video)
    # Not bit-exact: the AAC decoder's noise substitution (PNS) draws from a generator whose
    # state depends on where decoding began, so the two passes differ by codec noise.
    np.testing.assert_allclose(one.audio, tiled.audio, atol=2e-3)


@pytest.mark.parametrize(
    ("start", "end", "fragment"),
    [(-1, 5000, "start_ms -1"), (5000, 5000, "end_ms 5000"), (6000, 2000, "end_ms 2000"),
     (20000, None, "start_ms 20000"), (99999, 100000, "start_ms 99999")],
)
def test_invalid_custom_windows(start: int, end: int | None, fragment: str) -> None:
    with pytest.raises(InvalidArgumentError, match=fragment) as info:
        preprocess(FIXTURES / "cfr30_bframes.mp4", start_ms=start, end_ms=end)
    assert "must" in str(info.value)


@pytest.mark.parametrize("resize", ["squash", "pad"])
def test_other_resize_modes(resize: str) -> None:
    truth = TRUTH["cfr30_bframes.mp4"]
    path = FIXTURES / "cfr30_bframes.mp4"
    (seg,) = preprocess(path, start_ms=0, end_ms=10000, resize=resize)  # type: ignore[arg-type]
    check_frames(seg, truth, resize)
    if resize == "pad":  # 320x180 -> 224x126, black bars above and below
        assert not seg.video[0, :, :, :40, :].any() and not seg.video[0, :, :, -40:, :].any()


def test_unknown_resize_mode() -> None:
    with pytest.raises(InvalidArgumentError, match="'stretch'"):
        preprocess(FIXTURES / "cfr30_bframes.mp4", resize="stretch")  # type: ignore[arg-type]


def test_iter_segments_equals_preprocess() -> None:
    path = FIXTURES / "late_audio_25s.mkv"
    streamed = list(iter_segments(path))
    for a, b in zip(streamed, segments("late_audio_25s.mkv"), strict=True):
        assert a.frame_times_ms == b.frame_times_ms
        np.testing.assert_array_equal(a.video, b.video)
        np.testing.assert_array_equal(a.audio, b.audio)


def test_iter_segments_with_chosen_windows() -> None:
    truth = TRUTH["late_audio_25s.mkv"]
    wanted = [Window(0, 1000, 4000), Window(7, 15000, 18000), Window(9, 23000, 90000)]
    got = list(iter_segments(FIXTURES / "late_audio_25s.mkv", wanted))
    bounds = [(s.index, s.start_ms, s.end_ms) for s in got]
    assert bounds == [(0, 1000, 4000), (7, 15000, 18000), (9, 23000, 24999)]
    for seg in got:
        check_frames(seg, truth)
        check_audio(seg, truth)


def test_iter_segments_refuses_overlapping_windows() -> None:
    with pytest.raises(InvalidArgumentError, match="must be ascending"):
        list(iter_segments(FIXTURES / "cfr30_bframes.mp4", [Window(0, 0, 5000), Window(1, 4000, 8000)]))


@pytest.mark.parametrize("name", BAD)
def test_bad_fixture_raises_media_error_naming_the_file(name: str) -> None:
    with pytest.raises(MediaError) as info:
        preprocess(FIXTURES / name)
    message = str(info.value)
    assert str(FIXTURES / name) in message
    assert TRUTH[name]["error"] in message
    assert "\n" not in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, sp.SeekneticPrepError)


def test_a_title_that_is_not_utf8_decodes_exactly() -> None:
    """Issue 22.1: a good clip whose mp4 title is Latin-1 (``Caf\\xe9``) raised PyAV's
    UnicodeDecodeError out of preprocess(); its metadata is now read leniently."""
    name = "latin1_title.mp4"
    with pytest.raises(UnicodeDecodeError):
        av.open(str(FIXTURES / name))  # PyAV's default (strict UTF-8): what the file is for
    truth = TRUTH[name]
    segs = segments(name)
    assert [[s.start_ms, s.end_ms] for s in segs] == truth["windows"]
    for seg in segs:
        check_frames(seg, truth)
        assert check_audio(seg, truth) >= 8


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="missing"):
        preprocess(tmp_path / "nope.mp4")
    with pytest.raises(MediaError, match="not a file"):
        preprocess(tmp_path)


def test_truncated_file_is_never_padded_with_the_last_frame(tmp_path: Path) -> None:
    """Cut a good mkv (no index needed) at 60%: refused as truncated, not padded."""
    data = (FIXTURES / "late_audio_25s.mkv").read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(MediaError, match="truncated"):
        preprocess(cut)


def test_public_names() -> None:
    """``sp.preprocess`` is callable even after the submodule of the same name was imported."""
    import seeknetic_prep.decode.preprocess  # noqa: F401 - the import that would shadow the function

    segs = sp.preprocess(FIXTURES / "demo" / "desert.mp4")
    assert isinstance(segs[0], sp.Segment)
    assert [(s.start_ms, s.end_ms) for s in segs] == [(0, 7000)]


@pytest.mark.parametrize("name", GOOD)
def test_a_known_probe_skips_the_second_probe_and_changes_nothing(name: str) -> None:
    """A run plans with one probe and decodes with that probe (``info=``): every good fixture,
    whole and from a window in the middle, comes out the same to the bit as when probed again."""
    from seeknetic_prep.decode.media import probe

    path = FIXTURES / name
    info = probe(path)
    whole = segments(name)
    reused = list(iter_segments(path, info=info))
    assert len(reused) == len(whole)
    for a, b in zip(reused, whole, strict=True):
        assert (a.index, a.start_ms, a.end_ms) == (b.index, b.start_ms, b.end_ms)
        assert a.frame_times_ms == b.frame_times_ms
        np.testing.assert_array_equal(a.video, b.video)
        np.testing.assert_array_equal(a.audio, b.audio)
    middle = Window(0, info.duration_ms // 3, min(info.duration_ms // 3 + 10_000, info.duration_ms))
    (fresh,) = iter_segments(path, [middle])
    (known,) = iter_segments(path, [middle], info=info)
    assert known.frame_times_ms == fresh.frame_times_ms
    np.testing.assert_array_equal(known.video, fresh.video)
    np.testing.assert_array_equal(known.audio, fresh.audio)


def test_a_known_probe_of_a_file_that_changed_size_is_not_trusted(tmp_path: Path) -> None:
    """The plan's probe is only reused while the file has the size it was probed at: a file
    replaced since (here by a longer clip) is probed again and decoded on its own timeline."""
    from seeknetic_prep.decode.media import probe

    path = tmp_path / "clip.mp4"
    path.write_bytes((FIXTURES / "short_700ms.mp4").read_bytes())
    stale = probe(path)
    path.write_bytes((FIXTURES / "cfr30_bframes.mp4").read_bytes())
    got = list(iter_segments(path, info=stale))
    want = segments("cfr30_bframes.mp4")
    assert [(s.start_ms, s.end_ms) for s in got] == [(s.start_ms, s.end_ms) for s in want]
    assert len(want) > 1
    np.testing.assert_array_equal(got[-1].video, want[-1].video)
