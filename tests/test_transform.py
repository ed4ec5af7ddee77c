"""Geometry and audio placement on synthetic arrays (no decoder involved)."""

from __future__ import annotations

import numpy as np
import pytest

from seeknetic_prep.decode.transform import AudioTimeline, check_resize, fit, scaled_size, upright
from seeknetic_prep.errors import InvalidArgumentError


def marked(h: int, w: int) -> np.ndarray:
    """A picture with a red top-left and a green top-right corner."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:2, :2] = (255, 0, 0)
    img[:2, -2:] = (0, 255, 0)
    return img


def test_upright_turns_an_iphone_portrait_clockwise() -> None:
    # Stored picture: the upright one turned counter-clockwise (red top-left -> bottom-left).
    stored = np.ascontiguousarray(np.rot90(marked(8, 4), k=1))
    out = upright(stored, -90)
    assert out.shape == (8, 4, 3)
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[0, -1]) == (0, 255, 0)


@pytest.mark.parametrize("rotation", [0, 90, 180, -90, 270, -180])
def test_upright_undoes_each_rotation(rotation: int) -> None:
    img = marked(6, 10)
    stored = np.rot90(img, k=-round(rotation / 90))  # what a display matrix of `rotation` asks to undo
    np.testing.assert_array_equal(upright(stored, rotation), img)


@pytest.mark.parametrize(
    ("size", "mode", "expected"),
    [
        ((320, 180), "crop", (398, 224)),
        ((180, 320), "crop", (224, 398)),
        ((100, 50), "crop", (448, 224)),  # enlarging
        ((1920, 1080), "squash", (224, 224)),
        ((320, 180), "pad", (224, 126)),
        ((224, 224), "crop", (224, 224)),
    ],
)
def test_scaled_size(size: tuple[int, int], mode: str, expected: tuple[int, int]) -> None:
    assert scaled_size(*size, mode) == expected  # type: ignore[arg-type]


def test_fit_crops_the_centre_and_pads_with_black() -> None:
    img = np.zeros((224, 398, 3), np.uint8)
    img[:, 87:311] = 200
    out = fit(img, "crop")
    assert out.shape == (224, 224, 3) and (out == 200).all()
    padded = fit(np.full((126, 224, 3), 50, np.uint8), "pad")
    assert padded.shape == (224, 224, 3)
    assert not padded[:49].any() and not padded[-49:].any() and (padded[49:175] == 50).all()


def test_unknown_resize() -> None:
    with pytest.raises(InvalidArgumentError, match="'zoom': must be one of crop, squash, pad"):
        check_resize("zoom")


def test_audio_timeline_places_pads_and_releases() -> None:
    chunks = iter([(100, np.ones(50, np.float32)), (150, np.full(50, 2.0, np.float32))])
    tl = AudioTimeline(chunks)
    first = tl.take(0, 120, 200)
    assert first.shape == (200,) and first.dtype == np.float32
    assert not first[:100].any() and (first[100:120] == 1).all() and not first[120:].any()
    second = tl.take(120, 400, 300)
    assert (second[:30] == 1).all() and (second[30:80] == 1.0).all()  # 2.0 clipped to 1.0
    assert not second[80:].any()
