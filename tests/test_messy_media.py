"""Files that players handle and a careless decoder does not (issue 21): each fixture is made by
``scripts/make_fixtures.py`` and checked here by the frame index its pixels show."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _media_truth import dominant_hz, on_screen, read_index

from seeknetic_prep.decode.decoder import VideoDecoder
from seeknetic_prep.decode.frames import frame_pass
from seeknetic_prep.decode.media import probe
from seeknetic_prep.decode.preprocess import iter_segments, preprocess
from seeknetic_prep.decode.profile import Window
from seeknetic_prep.decode.sampling import frame_targets
from seeknetic_prep.decode.transform import orientation, upright
from seeknetic_prep.errors import MediaError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TRUTH: dict[str, Any] = json.loads((FIXTURES / "ground_truth.json").read_text())["files"]


def test_a_target_exactly_on_a_frame_start_shows_that_frame() -> None:
    """24 fps: frame k starts at k / 24 s, and window 1's target 5 is 14583 1/3 ms, frame 350's
    start; in floats it came out one ulp low and the frame before (349) was taken."""
    truth = TRUTH["ties24.mp4"]
    segs = preprocess(FIXTURES / "ties24.mp4")
    assert frame_targets(Window(1, 10_000, 20_000))[5] == Fraction(43750, 3)
    ties = 0
    for seg in segs:
        for i, target in enumerate(frame_targets(seg.window)):
            want = int(target * 24 / 1000)  # floor: the last frame starting at or before it
            ties += target * 24 / 1000 == want
            assert read_index(seg.video[0, i], tuple(truth["display_size"])) == want, (seg.index, i)
            assert seg.frame_times_ms[i] == float(Fraction(want * 1000, 24)), (seg.index, i)
    assert segs[1].frame_times_ms[5] == float(Fraction(43750, 3))
    assert ties == 24  # every target of both windows is a tie at 24 fps


@pytest.mark.parametrize(
    ("name", "rotation"),
    [("hflip.mp4", 0), ("vflip.mp4", 180), ("front_camera.mp4", -90)],
)
def test_a_mirror_in_the_display_matrix_comes_out_upright_and_unmirrored(name: str, rotation: int) -> None:
    """FFmpeg reads the horizontal flip as -180 (it came out upside down), ignores the vertical
    flip (upside down), and calls the front camera's turn-and-flip -90 (it came out mirrored)."""
    info = probe(FIXTURES / name)
    assert (info.rotation, info.mirrored) == (rotation, True)
    display = tuple(TRUTH[name]["display_size"])
    assert (info.width, info.height) == display
    for seg in preprocess(FIXTURES / name):
        for i, target in enumerate(frame_targets(seg.window)):
            want = int(target * 25 / 1000)
            assert read_index(seg.video[0, i], display) == want, (seg.index, i)
        mirrored = np.ascontiguousarray(seg.video[0, 0, :, :, ::-1])
        assert read_index(mirrored, display) is None  # the check can tell


@pytest.mark.parametrize(
    ("matrix", "rotation", "expected"),
    [
        ([0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30], -90.0, (-90, False)),  # iPhone portrait
        ([-65536, 0, 0, 0, -65536, 0, 0, 0, 1 << 30], 180.0, (180, False)),
        ([-65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30], -180.0, (0, True)),  # horizontal flip
        ([65536, 0, 0, 0, -65536, 0, 0, 0, 1 << 30], 0.0, (180, True)),  # vertical flip
        ([0, 65536, 0, 65536, 0, 0, 0, 0, 1 << 30], -90.0, (-90, True)),  # transpose
        ([0, -65536, 0, -65536, 0, 0, 0, 0, 1 << 30], 90.0, (90, True)),  # anti-transpose
        ([], 0.0, (0, False)),
    ],
)
def test_orientation_splits_a_matrix_into_a_turn_and_a_flip(
    matrix: list[int], rotation: float, expected: tuple[int, bool]
) -> None:
    assert orientation(matrix, rotation) == expected


def test_upright_applies_the_matrix_as_ffmpeg_autorotate_does() -> None:
    """transpose (front camera): x and y swap; hflip: columns reverse; vflip: rows reverse."""
    img = np.arange(6, dtype=np.uint8).reshape(2, 3, 1).repeat(3, axis=2)
    assert np.array_equal(upright(img, -90, True), img.transpose(1, 0, 2))
    assert np.array_equal(upright(img, 0, True), img[:, ::-1])
    assert np.array_equal(upright(img, 180, True), img[::-1])


def test_an_edit_list_cut_is_complete_not_truncated() -> None:
    """A stream copy cut at 2.52 s, 0.52 s past a keyframe (``ffmpeg -ss 2.52 -c copy``): the
    mp4 keeps the GOP head (13 frames) behind an edit list, so the frame count says 4.0 s while
    the edit shows 3.48 s; it was refused as truncated. It starts at the frame at 2.52 s."""
    info = probe(FIXTURES / "editlist_cut.mp4")
    assert info.duration_ms == 3480
    (seg,) = preprocess(FIXTURES / "editlist_cut.mp4")
    display = tuple(TRUTH["editlist_cut.mp4"]["display_size"])
    got = [read_index(seg.video[0, i], display) for i in range(12)]
    assert got == [63 + int(t * 25 / 1000 + Fraction(1, 1000)) for t in frame_targets(seg.window)]
    assert got[0] == 66  # target 145 ms: the source frame at 2.64 s, 3 frames after the cut


def test_a_seek_that_lands_late_is_never_accepted() -> None:
    """MPEG-TS whose PTS wraps past 2^33 8.4 s in: FFmpeg unwraps it to start at -8.4 s, so a
    seek to timestamp 0 lands 9 s in; window 0 came out as the frame at 9.0 s eleven times.
    The pass now reopens the file and decodes from its first byte; without a way to reopen it
    refuses the file rather than hand out late frames."""
    name = FIXTURES / "wrap_pts.ts"
    info = probe(name)
    assert info.origin_s < -8
    segs = preprocess(name)
    for seg in segs:
        want = [int(t * 12 / 1000) for t in frame_targets(seg.window)]
        assert [read_index(seg.video[0, i], (128, 72)) for i in range(12)] == want
    targets = [float(t) for t in frame_targets(segs[0].window)]
    with VideoDecoder(name, device="cpu") as dec:
        passed = frame_pass(dec._container, dec._video, dec.info, targets, (128, 72), threads=1)
        with pytest.raises(MediaError, match="no seek lands before 417 ms and the file cannot be reopened"):
            next(passed)


def test_audio_after_a_timestamp_jump_plays_at_its_own_time() -> None:
    """Three AAC frames (69.7 ms) lost 2.48 s in: the sound after them keeps its timestamps.
    Every jump under 0.1 s used to be closed up, so the tone's step at 3.0 s came 70 ms early
    (2.90-2.99 s measured 797 Hz, the next second's tone) and the hole was not silent."""
    truth = TRUTH["audio_drop.mp4"]["audio"]
    (seg,) = preprocess(FIXTURES / "audio_drop.mp4")
    samples, rate = seg.audio[0, 0].astype(np.float64), 22050
    hole_start, hole_end = (t / 1000 for t in truth["hole_ms"])

    def stretch(a: float, b: float) -> np.ndarray:
        return samples[round(a * rate): round(b * rate)]

    assert np.sqrt(np.mean(stretch(hole_start + 0.01, hole_end - 0.01) ** 2)) < 1e-3
    assert np.sqrt(np.mean(stretch(hole_start - 0.1, hole_start - 0.02) ** 2)) > 0.3
    assert dominant_hz(stretch(2.90, 2.99).astype(np.float32)) == pytest.approx(700, abs=10)
    assert dominant_hz(stretch(3.01, 3.10).astype(np.float32)) == pytest.approx(800, abs=10)


@pytest.mark.parametrize("name", ["frag_bframes.mp4", "audio_drop.mp4"])
def test_each_tone_step_is_where_its_timestamps_put_it(name: str) -> None:
    """Within 5 ms of every step the tone is the right one on both sides. The fragmented mp4
    (A/V sync written as a 78.7 ms jump) used to play 58.7 ms early: the step at 1.0 s came at
    0.941 s."""
    truth = TRUTH[name]["audio"]
    (seg,) = preprocess(FIXTURES / name)
    samples, rate = seg.audio[0, 0], 22050
    for step in (1, 2, 3):
        at = truth["start_ms"] / 1000 + step
        before = samples[round((at - 0.05) * rate): round((at - 0.005) * rate)]
        after = samples[round((at + 0.005) * rate): round((at + 0.05) * rate)]
        low = truth["base_hz"] + truth["step_hz"] * (step - 1)
        assert dominant_hz(before) == pytest.approx(low, abs=12), (step, "before")
        assert dominant_hz(after) == pytest.approx(low + truth["step_hz"], abs=12), (step, "after")


def test_of_two_video_tracks_the_default_one_is_decoded() -> None:
    """A 5 fps 64x36 track muxed first, not default (mp4: not enabled), and the default 10 fps
    128x72 track second: the first stream was decoded (indices 0, 1, 3, 4 ...: 5 fps)."""
    info = probe(FIXTURES / "two_video.mp4")
    assert (info.video_index, info.width, info.height, info.fps) == (1, 128, 72, 10.0)
    (seg,) = preprocess(FIXTURES / "two_video.mp4")
    want = [int(t * 10 / 1000) for t in frame_targets(seg.window)]
    assert [read_index(seg.video[0, i], (128, 72)) for i in range(12)] == want
    assert want[-1] == 28  # past the 5 fps track's last index (14)


def test_damage_fails_the_window_it_touches_naming_the_time_range() -> None:
    """4 KiB of noise 4.4 s in: the whole file failed as ``undecodable video`` with no time.
    Windows before the damage come out exact; the one that needs a damaged picture fails with
    the stretch named (to the next keyframe FFmpeg finds), never with a concealed picture."""
    name = FIXTURES / "bad" / "damaged.mp4"
    segments = iter_segments(name, [Window(0, 0, 3000), Window(1, 3000, 6000)])
    first = next(segments)
    want = [int(t * 25 / 1000) for t in frame_targets(first.window)]
    assert [read_index(first.video[0, i], (160, 90)) for i in range(12)] == want
    with pytest.raises(MediaError, match=r"undecodable video: damaged from 4360 ms to 5840 ms \("):
        next(segments)
    with pytest.raises(MediaError, match="damaged from 4360 ms to 5840 ms"):
        preprocess(name)


def test_a_seek_by_cues_that_point_into_a_cluster_is_a_bad_landing_not_damage() -> None:
    """Cues 4 bytes past each cluster's start: the seek lands mid-cluster, where VP9 refuses
    the packets; that was the whole file failing (`undecodable video`). A landing that decodes
    nothing is tried again further back and at last from the first byte, where it is exact."""
    (seg,) = preprocess(FIXTURES / "bad_cues.webm")
    frames = TRUTH["bad_cues.webm"]["frames"]  # a ms clock: frame k at round(k * 1000 / 24) ms
    want = [on_screen(frames, t)[0] for t in seg.target_times_ms]
    assert [read_index(seg.video[0, i], (128, 72)) for i in range(12)] == want


def test_a_two_segment_edit_shows_both_segments_and_is_complete() -> None:
    """Edits (0-2 s) and (3.4-6 s) of a 6 s track, as a phone trim writes: 150 frames stored,
    4.6 s shown. It was refused: `the header declares video up to 6.000 s but the data ends
    at 4.600 s`. Frames before 2 s are the source's own; after, the source's from 3.4 s on."""
    info = probe(FIXTURES / "two_edits.mp4")
    assert info.duration_ms == 4600
    (seg,) = preprocess(FIXTURES / "two_edits.mp4")
    want = [int(t * 25 / 1000) if t < 2000 else 85 + int((t - 2000) * 25 / 1000)
            for t in frame_targets(seg.window)]
    assert [read_index(seg.video[0, i], (128, 72)) for i in range(12)] == want
    assert want[4:6] == [43, 87]  # either side of the edit
