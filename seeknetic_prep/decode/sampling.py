"""Pure timing: a duration becomes windows, a window becomes 12 target times.

No I/O and no PyAV here, so the rules that decide which instant of a file a tensor shows can
be read and tested on their own. Times are milliseconds on the file's timeline (see
:mod:`seeknetic_prep.decode.probe` for where that timeline starts).
"""

from __future__ import annotations

import math
from fractions import Fraction

from seeknetic_prep.decode.profile import FRAMES_PER_WINDOW, WINDOW_MS, Window
from seeknetic_prep.errors import InvalidArgumentError

__all__ = ["frame_targets", "frame_targets_ms", "plan_windows"]


def plan_windows(duration_ms: int, *, start_ms: int | None = None, end_ms: int | None = None) -> list[Window]:
    """The windows of a file whose content lasts ``duration_ms``.

    Without ``start_ms``/``end_ms`` the windows tile the duration in 10 s steps,
    ``ceil(duration / 10 s)`` of them, the last one shorter when the duration is not a multiple
    of 10 s (a clip under 10 s gives one window). With either bound, one custom window
    ``[start_ms, min(end_ms, duration_ms))`` is returned, as the official SDK's
    ``start_ms``/``end_ms`` select one stretch; ``end_ms`` defaults to the duration.

    Args:
        duration_ms: length of the content, > 0.
        start_ms: start of a custom window, >= 0 and < ``duration_ms``.
        end_ms: end of a custom window, > ``start_ms``; clipped to the duration.

    Returns:
        The windows in order, indices from 0.

    Raises:
        InvalidArgumentError: a bound breaks its rule; the message states the value and the rule.

    >>> plan_windows(25_000)
    [Window(index=0, start_ms=0, end_ms=10000), Window(index=1, start_ms=10000, end_ms=20000), \
Window(index=2, start_ms=20000, end_ms=25000)]
    >>> plan_windows(25_000, start_ms=5000, end_ms=15000)
    [Window(index=0, start_ms=5000, end_ms=15000)]
    """
    if duration_ms <= 0:
        raise InvalidArgumentError(f"Invalid duration {duration_ms} ms: must be > 0.")
    if start_ms is None and end_ms is None:
        count = math.ceil(duration_ms / WINDOW_MS)
        return [
            Window(i, i * WINDOW_MS, min((i + 1) * WINDOW_MS, duration_ms)) for i in range(count)
        ]
    start = 0 if start_ms is None else start_ms
    if start < 0:
        raise InvalidArgumentError(f"Invalid start_ms {start}: must be >= 0.")
    if start >= duration_ms:
        raise InvalidArgumentError(
            f"Invalid start_ms {start}: must be before the end of the content ({duration_ms} ms)."
        )
    if end_ms is not None and end_ms <= start:
        raise InvalidArgumentError(f"Invalid end_ms {end_ms}: must be greater than start_ms ({start}).")
    end = duration_ms if end_ms is None else min(end_ms, duration_ms)
    return [Window(0, start, end)]


def frame_targets(window: Window) -> list[Fraction]:
    """The 12 instants of a window whose on-screen frames are sampled, exactly, in ms: the
    centres of 12 equal slices, ``start + (2i + 1) * span / 24``.

    Exact because many of them fall exactly on a frame's start (at 24, 48, 60, 120 fps), where
    the frame that starts there is the one on screen: a float one ulp low picked the one before.
    ``window.end_ms`` is already clipped to the content, so the slices cover only what exists.

    >>> frame_targets(Window(1, 10_000, 20_000))[5]
    Fraction(43750, 3)
    """
    span = window.end_ms - window.start_ms
    return [window.start_ms + Fraction((2 * i + 1) * span, 2 * FRAMES_PER_WINDOW)
            for i in range(FRAMES_PER_WINDOW)]


def frame_targets_ms(window: Window) -> list[float]:
    """:func:`frame_targets` as floats (the nearest float to each), for display and records.

    >>> frame_targets_ms(Window(0, 0, 12_000))[:3]
    [500.0, 1500.0, 2500.0]
    """
    return [float(t) for t in frame_targets(window)]
