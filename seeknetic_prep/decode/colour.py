"""Decoded YUV pictures to RGB: the frame's own matrix and range, scaled in the same pass.

One swscale call per chosen frame does the colour conversion and the scaling together, so a
1080p frame never exists as a full-size RGB array. Kept apart from the frame pass (which frames)
because this is the only place where pixel values are made: a colour question is answered here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from av.video.reformatter import VideoReformatter

__all__ = ["Converter"]

_ONE_THREAD_SWS_PIXELS = 640 * 480
"""Up to this picture size swscale runs on one thread: starting threads costs more than it saves."""

# AVColorSpace (frame metadata) -> swscale's matrix names; unknown/unspecified falls back on size.
_SWS_COLORSPACE = {
    1: "itu709", 4: "fcc", 5: "itu601", 6: "smpte170m", 7: "smpte240m", 9: "bt2020", 10: "bt2020"
}
_AVCOL_RANGE_JPEG = 2


class Converter:
    """Frames as RGB, each converted once even when several targets land on it.

    One swscale context serves the whole pass: ``VideoFrame.reformat`` builds (and threads)
    a new one per call, which on a 320 x 180 clip costs more than the scaling itself. Small
    pictures are scaled on one thread, for the same reason; the output is the same bits.
    ``coded_size`` is ``(width, height)`` in the stored orientation; ``threads`` caps swscale's
    threads on larger pictures (0: swscale decides).
    """

    def __init__(self, coded_size: tuple[int, int], threads: int) -> None:
        self.coded_size = coded_size
        self.threads = threads
        self.last: tuple[int, np.ndarray] | None = None
        self.sws = VideoReformatter()

    def pick(self, frame: Any) -> np.ndarray:
        """``frame`` as ``uint8 (h, w, 3)``; the same array again for the same frame."""
        if self.last is None or self.last[0] != frame.pts:
            self.last = (int(frame.pts), _to_rgb(frame, self.coded_size, self.sws, self.threads))
        return self.last[1]


def _to_rgb(frame: Any, coded_size: tuple[int, int], sws: Any, threads: int) -> np.ndarray:
    """YUV -> RGB with the frame's own matrix and range, scaled in the same swscale pass."""
    width, height = coded_size
    shrink = width * height < frame.width * frame.height
    space = _SWS_COLORSPACE.get(int(frame.colorspace)) or ("itu709" if frame.height >= 720 else "itu601")
    full = int(frame.color_range) == _AVCOL_RANGE_JPEG or frame.format.name.startswith("yuvj")
    rgb = sws.reformat(
        frame,
        width=width,
        height=height,
        format="rgb24",
        src_colorspace=space,
        src_color_range="JPEG" if full else "MPEG",
        dst_color_range="JPEG",
        interpolation="AREA" if shrink else "BICUBIC",
        threads=1 if frame.width * frame.height <= _ONE_THREAD_SWS_PIXELS else threads,
    )
    arr: np.ndarray = rgb.to_ndarray()
    return arr
