"""Files that players handle and a careless decoder does not (issue 21): each fixture is made by
``scripts/make_fixtures.py`` and checked here by the frame index its pixels show."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

from _media_truth import read_index

from seeknetic_prep.decode.preprocess import preprocess
from seeknetic_prep.decode.profile import Window
from seeknetic_prep.decode.sampling import frame_targets

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
