"""Numpy in, numpy out: turn decoded pictures upright and to 224 x 224, lay audio on a window.

Kept apart from the decoder (:mod:`~seeknetic_prep.decode.decoder`) so the geometry and the
audio placement can be tested on synthetic arrays, without a file or a decoder.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from seeknetic_prep.decode.profile import FRAME_SIZE, ResizeMode
from seeknetic_prep.errors import InvalidArgumentError

__all__ = ["RESIZE_MODES", "AudioTimeline", "fit", "orientation", "scaled_size", "upright"]

RESIZE_MODES: tuple[ResizeMode, ...] = ("crop", "squash", "pad")


def check_resize(resize: object) -> ResizeMode:
    """``resize`` itself if it is a known mode; otherwise an error stating the value and the rule."""
    if resize not in RESIZE_MODES:
        raise InvalidArgumentError(f"Invalid resize {resize!r}: must be one of {', '.join(RESIZE_MODES)}.")
    return resize


def scaled_size(width: int, height: int, resize: ResizeMode, size: int = FRAME_SIZE) -> tuple[int, int]:
    """The upright picture's size after scaling, before the crop or the padding.

    crop: shorter side to ``size`` (the longer one is cropped); squash: ``size`` x ``size``;
    pad: longer side to ``size`` (the shorter one is padded).

    >>> scaled_size(320, 180, "crop"), scaled_size(320, 180, "pad")
    ((398, 224), (224, 126))
    """
    if resize == "squash":
        return size, size
    scale = size / (min(width, height) if resize == "crop" else max(width, height))
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    if resize == "crop":
        w, h = max(w, size), max(h, size)
    else:
        w, h = min(w, size), min(h, size)
    return w, h


def _turn(degrees: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The 2x2 part of a display matrix that turns the picture ``degrees`` counter-clockwise
    (row vectors, y pointing down, as in ``AV_PKT_DATA_DISPLAYMATRIX``)."""
    c, s = round(math.cos(math.radians(degrees))), round(math.sin(math.radians(degrees)))
    return (c, -s), (s, c)


def orientation(matrix: Sequence[int], rotation: float) -> tuple[int, bool]:
    """A display matrix as ``(rotation, mirrored)``: turn ``rotation`` degrees counter-clockwise,
    then, if ``mirrored``, flip left to right. FFmpeg's ``rotation`` (what it reports) is kept
    for a matrix without a mirror; a mirror (a negative determinant) is a turn plus a flip.

    FFmpeg's one-number rotation cannot say "mirror": a horizontal flip reads as 180 degrees
    (upside down if applied) and a vertical flip as 0; front cameras store a turn and a flip.
    This is what FFmpeg's autorotate (``transpose``/``hflip``/``vflip``) shows. A matrix that is
    not a multiple of 90 degrees falls back on ``rotation`` rounded to one.

    >>> orientation([-65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30], 180.0)  # horizontal flip
    (0, True)
    >>> orientation([0, 65536, 0, 65536, 0, 0, 0, 0, 1 << 30], -90.0)  # front camera
    (-90, True)
    """
    fallback = round(rotation / 90) * 90 if math.isfinite(rotation) else 0
    if len(matrix) != 9:
        return fallback, False
    a, b, c, d = matrix[0], matrix[1], matrix[3], matrix[4]
    big = max(abs(a), abs(b), abs(c), abs(d))
    if big == 0:
        return fallback, False
    sign = tuple(tuple(0 if 2 * abs(v) < big else (1 if v > 0 else -1) for v in row)
                 for row in ((a, b), (c, d)))
    for degrees in (0, 90, 180, 270):
        (p, q), (r, t) = _turn(degrees)
        if sign == ((p, q), (r, t)):
            return fallback, False  # a plain turn: FFmpeg's own number
        if sign == ((-p, q), (-r, t)):  # the turn, then x -> -x
            return (degrees - 360 if degrees > 180 else degrees), True
    return fallback, False


def upright(rgb: np.ndarray, rotation: int, mirrored: bool = False) -> np.ndarray:
    """Apply a display orientation to ``(h, w, 3)``, or to every picture of a batch
    ``(n, h, w, 3)``: turn ``rotation`` degrees counter-clockwise (as FFmpeg reports it), then
    flip left to right if ``mirrored`` (see :func:`orientation`).

    An iPhone portrait clip reports -90: its stored picture must turn 90 degrees clockwise.
    """
    k = round(rotation / 90) % 4
    out = rgb if k == 0 else np.rot90(rgb, k=k, axes=(-3, -2))
    return np.flip(out, axis=-2) if mirrored else out


def fit(rgb: np.ndarray, resize: ResizeMode, size: int = FRAME_SIZE) -> np.ndarray:
    """A ``(size, size, 3)`` picture from one already scaled by :func:`scaled_size` (or
    ``(n, size, size, 3)`` from a batch ``(n, h, w, 3)``).

    crop: the centre; squash: as is; pad: centred on black.
    """
    h, w = rgb.shape[-3:-1]
    if resize == "pad":
        out = np.zeros((*rgb.shape[:-3], size, size, 3), np.uint8)
        top, left = (size - h) // 2, (size - w) // 2
        out[..., top : top + h, left : left + w, :] = rgb
        return out
    if (h, w) != (size, size) and resize == "squash":
        raise InvalidArgumentError(f"Invalid squashed picture {w}x{h}: must be {size}x{size}.")
    top, left = (h - size) // 2, (w - size) // 2
    return rgb[..., top : top + size, left : left + size, :]


class AudioTimeline:
    """Gapless audio chunks on the timeline, cut into windows in ascending order.

    Holds only the chunks not yet consumed by a window, so memory does not grow with the file.
    """

    def __init__(self, chunks: Iterator[tuple[int, np.ndarray]]) -> None:
        self._chunks = chunks
        self._held: list[tuple[int, np.ndarray]] = []
        self._done = False

    def take(self, start: int, stop: int, length: int) -> np.ndarray:
        """Samples ``[start, stop)`` as float32 in [-1, 1], zero where there is no audio,
        zero-padded to ``length``; samples before ``start`` are released.
        """
        while not self._done and (not self._held or self._held[-1][0] + self._held[-1][1].size < stop):
            nxt = next(self._chunks, None)
            if nxt is None:
                self._done = True
            else:
                self._held.append(nxt)
        out = np.zeros(length, np.float32)
        for pos, chunk in self._held:
            lo, hi = max(pos, start), min(pos + chunk.size, stop, start + length)
            if hi > lo:
                out[lo - start : hi - start] = chunk[lo - pos : hi - pos]
        self._held = [(p, c) for p, c in self._held if p + c.size > stop]
        np.clip(out, -1.0, 1.0, out=out)
        return out
