"""Function-style shortcuts over :class:`~seeknetic_prep.decode.decoder.VideoDecoder`.

One call each, for callers that want an answer rather than an open file: :func:`probe` (plan a
file), :func:`decode_frames_at` and :func:`decode_audio` (one pass over a file), and
:func:`probe_open` (a probe whose decoder stays open for the frame pass). They hold no state:
each is a few lines over the decoder object, which owns every container it opens.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from fractions import Fraction

import numpy as np

from seeknetic_prep.decode.audio import audio_pass
from seeknetic_prep.decode.decoder import VideoDecoder
from seeknetic_prep.decode.hw import DecodeMode
from seeknetic_prep.decode.probe import MediaInfo, probe

__all__ = ["MediaInfo", "decode_audio", "decode_frames_at", "probe", "probe_open"]


def probe_open(
    path: str | os.PathLike[str], *, decode: DecodeMode = "auto", known: MediaInfo | None = None
) -> tuple[MediaInfo, VideoDecoder]:
    """:func:`probe`, keeping the file open for the frame pass: ``VideoDecoder(path,
    device=decode, info=known)`` and its ``info``. Hand the decoder to :func:`decode_frames_at`
    (``container=``), which closes it.

    Raises:
        MediaError: as :func:`probe`.
        InvalidArgumentError: ``decode="cuda"`` with no CUDA device.
    """
    decoder = VideoDecoder(path, device=decode, info=known)
    return decoder.info, decoder


def decode_frames_at(
    info: MediaInfo,
    targets_ms: Sequence[float | Fraction],
    size: tuple[int, int],
    *,
    container: VideoDecoder | None = None,
) -> Generator[tuple[float, np.ndarray], None, None]:
    """For each target time (ascending), the frame on screen then: ``(pts_ms, rgb)``, as
    :meth:`VideoDecoder.iter_frames_at <seeknetic_prep.decode.decoder.VideoDecoder.iter_frames_at>`.

    ``container`` is the decoder :func:`probe_open` returned for this file (default: the file
    opened on the CPU); it is closed when the generator ends (also unstarted: by ``close()``).

    Raises:
        MediaError: the file fails to decode, or its frames stop before a target.
    """
    decoder = container
    try:
        if not targets_ms:
            return
        if decoder is None:
            decoder = VideoDecoder(info.path, device="cpu", info=info)
        yield from decoder.iter_frames_at(targets_ms, size=size)
    finally:
        if decoder is not None:
            decoder.close()


def decode_audio(info: MediaInfo, start_ms: float) -> Generator[tuple[int, np.ndarray], None, None]:
    """The audio of ``info.path`` from ``start_ms`` on, as mono float32 at 22050 Hz:
    ``(position, samples)`` chunks (see :mod:`~seeknetic_prep.decode.audio`).

    Raises:
        MediaError: the audio fails to decode.
    """
    return audio_pass(info.path, info, start_ms, threads=0)
