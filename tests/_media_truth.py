"""Read back what a fixture frame or a stretch of audio shows, from the pixels and samples alone.

The layout mirrors ``scripts/make_fixtures.py``: a 6x6 grid of cells centred in the upright
picture, the four corners red/green/blue/white, 16 index bits then their complement.
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np

GRID = 6
BITS = 16
SIZE = 224
CORNERS = {(0, 0): (255, 0, 0), (0, GRID - 1): (0, 255, 0), (GRID - 1, 0): (0, 0, 255),
           (GRID - 1, GRID - 1): (255, 255, 255)}
DATA_CELLS = [(r, c) for r in range(GRID) for c in range(GRID) if (r, c) not in CORNERS]


def _mapping(display: tuple[int, int], resize: str) -> tuple[float, float, float, float]:
    """(scale_x, scale_y, offset_x, offset_y) from upright source pixels to the 224 output."""
    w, h = display
    if resize == "squash":
        return SIZE / w, SIZE / h, 0.0, 0.0
    s = SIZE / (min(w, h) if resize == "crop" else max(w, h))
    sw, sh = max(1, round(w * s)), max(1, round(h * s))
    if resize == "crop":
        sw, sh = max(sw, SIZE), max(sh, SIZE)
        return sw / w, sh / h, -((sw - SIZE) // 2), -((sh - SIZE) // 2)
    sw, sh = min(sw, SIZE), min(sh, SIZE)
    return sw / w, sh / h, (SIZE - sw) // 2, (SIZE - sh) // 2


def cell_means(
    chw: np.ndarray, display: tuple[int, int], resize: str = "crop"
) -> dict[tuple[int, int], np.ndarray]:
    """Mean RGB of the middle of each grid cell of one output frame ``(3, 224, 224)``."""
    w, h = display
    side = (min(w, h) * 2 // 3) // GRID * GRID
    cell = side // GRID
    top, left = (h - side) // 2, (w - side) // 2
    sx, sy, ox, oy = _mapping(display, resize)
    out = {}
    for r in range(GRID):
        for c in range(GRID):
            x0, x1 = (left + (c + 0.3) * cell) * sx + ox, (left + (c + 0.7) * cell) * sx + ox
            y0, y1 = (top + (r + 0.3) * cell) * sy + oy, (top + (r + 0.7) * cell) * sy + oy
            patch = chw[:, round(y0): round(y1), round(x0): round(x1)]
            out[(r, c)] = patch.reshape(3, -1).mean(axis=1)
    return out


def read_index(chw: np.ndarray, display: tuple[int, int], resize: str = "crop") -> int | None:
    """The frame index a picture shows, or None if its check bits do not match or it is not upright."""
    means = cell_means(chw, display, resize)
    if not upright(means):
        return None
    bits = [int(means[rc].mean() > 128) for rc in DATA_CELLS]
    value, check = bits[:BITS], bits[BITS:]
    if any(a + b != 1 for a, b in zip(value, check, strict=True)):
        return None
    return int("".join(map(str, value)), 2)


def upright(means: dict[tuple[int, int], np.ndarray]) -> bool:
    """The corner colours are where the fixture drew them (within lossy-coding slack)."""
    return all(np.abs(means[rc] - np.array(rgb)).max() < 60 for rc, rgb in CORNERS.items())


def corner_error(chw: np.ndarray, display: tuple[int, int]) -> float:
    """Largest difference of any corner colour channel from what was drawn (colour accuracy)."""
    means = cell_means(chw, display)
    return float(max(np.abs(means[rc] - np.array(rgb)).max() for rc, rgb in CORNERS.items()))


TIE_MS = 1e-6
"""A target this close to a frame's start is exactly on it: the fixtures' clocks are far coarser
than a nanosecond, and the floats here (targets, pts in ms) are only the nearest to exact values."""


def on_screen(frames: list[list[float]], t_ms: float) -> tuple[int, float]:
    """(index, pts_ms) of the last frame whose pts <= t (the first one if t precedes all); a
    target exactly on a frame's start (within :data:`TIE_MS`) shows that frame."""
    times = [pts for _, pts in frames]
    k = max(0, bisect.bisect_right(times, t_ms + TIE_MS) - 1)
    return int(frames[k][0]), float(frames[k][1])


def dominant_hz(samples: np.ndarray, rate: int = 22050) -> float:
    """The strongest frequency of a stretch of audio (Hann window, parabolic peak refinement)."""
    x = samples.astype(np.float64) * np.hanning(samples.size)
    spec = np.abs(np.fft.rfft(x, n=8 * samples.size))
    k = int(np.argmax(spec[1:]) + 1)
    if 0 < k < spec.size - 1:
        a, b, c = np.log(spec[k - 1] + 1e-12), np.log(spec[k] + 1e-12), np.log(spec[k + 1] + 1e-12)
        k = k + 0.5 * (a - c) / (a - 2 * b + c)
    return float(k * rate / (8 * samples.size))


def expected_tone(audio: dict[str, Any] | None, t_s: float) -> float | None:
    """The tone's frequency at timeline second ``t_s``, or None for silence."""
    if audio is None:
        return None
    start, end = audio["start_ms"] / 1000, audio["end_ms"] / 1000
    if not start <= t_s < end:
        return None
    return float(audio["base_hz"] + audio["step_hz"] * np.floor(t_s - start))


def audio_checks(
    samples: np.ndarray, window_start_ms: int, window_end_ms: int, audio: dict[str, Any] | None,
    rate: int = 22050,
) -> list[tuple[float, float | None, float]]:
    """For each half second of a window whose expectation is unambiguous: (t, expected, measured).

    ``expected`` None means silence and ``measured`` is then the RMS; otherwise ``measured``
    is the dominant frequency. Stretches that straddle a tone step or the edge of the content
    are skipped (a step is not a frequency).
    """
    out = []
    for k in range(20):
        a, b = window_start_ms / 1000 + k * 0.5 + 0.1, window_start_ms / 1000 + k * 0.5 + 0.4
        in_window = b <= window_end_ms / 1000
        ea = expected_tone(audio, a) if in_window else None
        eb = expected_tone(audio, b) if in_window else None
        beyond = a >= window_end_ms / 1000
        if (ea != eb) or (not beyond and not in_window):
            continue
        if audio is not None and ea is None and (
            abs(a - audio["start_ms"] / 1000) < 0.1 or abs(b - audio["end_ms"] / 1000) < 0.1
        ):
            continue
        i0 = round((k * 0.5 + 0.1) * rate)
        chunk = samples[i0: i0 + round(0.3 * rate)]
        if ea is None:
            measured = float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2)))
        else:
            measured = dominant_hz(chunk, rate)
        out.append((a, ea, measured))
    return out
