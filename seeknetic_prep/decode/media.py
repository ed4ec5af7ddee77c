"""PyAV at one seam: probe a file, decode the frames on screen at given times, decode its audio.

The work is split along its seams, one module each: :mod:`~seeknetic_prep.decode.source`
(open a source, find its streams, FFmpeg's failures worded as ours),
:mod:`~seeknetic_prep.decode.probe` (``MediaInfo``: the timeline, the true end, truncation),
:mod:`~seeknetic_prep.decode.frames` (the one-pass frame choice),
:mod:`~seeknetic_prep.decode.colour` (YUV -> RGB) and :mod:`~seeknetic_prep.decode.audio` (mono
22050 Hz). This module keeps the calls the rest of the package makes, and the process's thread cap.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seeknetic_prep.decode.audio import audio_pass
from seeknetic_prep.decode.frames import frame_pass
from seeknetic_prep.decode.probe import MediaInfo, probe, probe_container
from seeknetic_prep.decode.source import open_container, set_video_threads, source_size, video_stream

__all__ = ["MediaInfo", "decode_audio", "decode_frames_at", "probe", "probe_open", "set_thread_cap"]

_thread_cap = 0
"""Threads a decoder (and swscale) may use in this process; 0 lets FFmpeg take every core."""


def set_thread_cap(threads: int) -> None:
    """Cap FFmpeg's threads per decoder in this process (0: no cap, one per core).

    A run with W decode processes on C cores gives each ``C // W``: FFmpeg's default of one
    thread per core in every process oversubscribes the machine W times over.
    """
    global _thread_cap
    _thread_cap = max(0, int(threads))


def probe_open(
    path: str | os.PathLike[str], *, decode: str = "auto", known: MediaInfo | None = None
) -> tuple[MediaInfo, Any]:
    """:func:`probe`, keeping the open container for the frame pass.

    On a small file opening it again costs as much as decoding a window's frames; hand the
    container to :func:`decode_frames_at` (``container=``), which closes it. Its decoder is
    already threaded the way the frame pass wants (threading cannot change once it is open).
    When ``decode`` picks NVDEC for this codec (:mod:`seeknetic_prep.decode.hw`), the probe runs
    on the CPU and the frame pass gets the file opened again with the ``cuda`` hwaccel.

    ``known`` is this file's :func:`probe` from earlier (a run probes every file when it plans
    it): while the file still has that size it is only opened, not probed again. The probe
    decodes a first frame and demuxes the tail, ~50 ms a 1080p file, as much as a run's whole
    CPU budget outside decoding for a short clip; the frame pass itself depends on nothing
    else, so its output is the same. A file whose size changed is probed afresh.

    Raises:
        MediaError: as :func:`probe`.
        InvalidArgumentError: ``decode="cuda"`` with no CUDA device.
    """
    from seeknetic_prep.decode.hw import hwaccel_for

    p = Path(path)
    container: Any = None
    if known is not None and source_size(p) == known.size_bytes:
        info = known  # opened below, for the frame pass only
    else:
        info, container = probe_container(p, threads=_thread_cap)
    hw = hwaccel_for(decode, info.video_codec)
    if hw is None:
        return info, container if container is not None else _open_for_frames(p)
    if container is not None:
        container.close()
    container = open_container(p, hwaccel=hw)
    video_stream(str(p), container).codec_context.thread_count = 1  # the GPU decodes; one feeder
    return info, container


def _open_for_frames(p: Path) -> Any:
    """The file opened for the frame pass, its decoder threaded as the probe would."""
    container = open_container(p)
    try:
        set_video_threads(video_stream(str(p), container), _thread_cap)
    except BaseException:
        container.close()
        raise
    return container


def decode_frames_at(
    info: MediaInfo,
    targets_ms: Sequence[float],
    size: tuple[int, int],
    *,
    container: Any = None,
) -> Generator[tuple[float, np.ndarray], None, None]:
    """For each target time (ascending), the frame on screen then: ``(pts_ms, rgb)``.

    The frame on screen at t is the last frame whose pts <= t (see
    :mod:`~seeknetic_prep.decode.frames`). ``rgb`` is ``uint8 (h, w, 3)`` in the *stored*
    orientation, scaled by swscale (area filter when shrinking) so that once rotated upright it
    is ``size = (width, height)``; consecutive targets on one frame share one array.

    ``container`` is one :func:`probe_open` returned for this file; it is closed when the
    generator ends (also unstarted: by the caller's ``close()``).

    Raises:
        MediaError: the file fails to decode, or its frames stop before a target.
    """
    try:
        if not targets_ms:
            return
        if container is None:
            container = _open_for_frames(Path(info.path))
        vs = video_stream(info.path, container)
        out_w, out_h = size
        coded_size = (out_h, out_w) if info.rotation % 180 else (out_w, out_h)
        yield from frame_pass(container, vs, info, targets_ms, coded_size, threads=_thread_cap)
    finally:
        if container is not None:
            container.close()


def decode_audio(info: MediaInfo, start_ms: float) -> Generator[tuple[int, np.ndarray], None, None]:
    """The audio from ``start_ms`` on, as mono float32 at 22050 Hz: ``(position, samples)``
    chunks (see :mod:`~seeknetic_prep.decode.audio`). Yields nothing for a file without audio.

    Raises:
        MediaError: the audio fails to decode.
    """
    return audio_pass(info.path, info, start_ms, threads=_thread_cap)
