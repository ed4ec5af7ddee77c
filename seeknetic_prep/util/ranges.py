"""Byte ranges ``[start, end)``, as the readers of objects in a bucket pass them around."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["merged"]


def merged(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` sorted, overlapping or touching ones joined.

    >>> merged([(50, 60), (0, 10), (5, 20), (20, 30)])
    [(0, 30), (50, 60)]
    """
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
