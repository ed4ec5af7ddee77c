"""The decoder object: one file opened for decoding, as torchcodec's ``VideoDecoder`` is.

A :class:`VideoDecoder` owns its open container from construction to :meth:`~VideoDecoder.close`
(it is a context manager), and takes what used to be process state as constructor arguments:
``device`` (with ``gpu_allowed``, the pool's say) and ``threads``. Constructing it probes the
file (or trusts a probe the caller already has), picks the device with the pure
:func:`~seeknetic_prep.decode.hw.choose_device`, and reopens the file for NVDEC when that is the
choice: the CPU and the GPU path go through this one door, so the choice and its fallbacks are
tested without a GPU. Frames come back as a :class:`FrameBatch`, which checks its own shape.

The work is elsewhere, one module a stage: :mod:`~seeknetic_prep.decode.source` (open, streams),
:mod:`~seeknetic_prep.decode.probe` (describe, truncation), :mod:`~seeknetic_prep.decode.frames`
(the frame pass), :mod:`~seeknetic_prep.decode.colour` (YUV -> RGB),
:mod:`~seeknetic_prep.decode.audio` (the audio pass).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from seeknetic_prep.decode import hw
from seeknetic_prep.decode.audio import audio_pass
from seeknetic_prep.decode.frames import frame_pass
from seeknetic_prep.decode.probe import MediaInfo, probe_container
from seeknetic_prep.decode.source import (
    Source,
    demux_only,
    open_container,
    set_video_threads,
    source_name,
    source_size,
)
from seeknetic_prep.decode.streams import best_video_stream
from seeknetic_prep.errors import InvalidArgumentError

__all__ = ["FrameBatch", "VideoDecoder"]


@dataclass(frozen=True, eq=False)
class FrameBatch:
    """Frames chosen at target times: ``data`` is ``uint8 (n, height, width, 3)`` RGB in the
    stored orientation (turn it with :func:`~seeknetic_prep.decode.transform.upright`),
    ``pts_ms`` the presentation time of each on the file's timeline, in milliseconds.

    Checks itself where it is made, so a wrong shape fails in the decoder, not at upload.
    """

    data: np.ndarray
    pts_ms: tuple[float, ...]

    def __post_init__(self) -> None:
        data = self.data
        if not isinstance(data, np.ndarray):
            raise InvalidArgumentError(f"Invalid frame data: {type(data).__name__}, must be a numpy array.")
        if data.ndim != 4 or data.shape[-1] != 3 or data.dtype != np.uint8:
            raise InvalidArgumentError(
                f"Invalid frame data {data.dtype}{list(data.shape)}: must be uint8[n, height, width, 3]."
            )
        if len(self.pts_ms) != data.shape[0]:
            raise InvalidArgumentError(
                f"Invalid pts_ms of length {len(self.pts_ms)}: must hold one time per frame "
                f"({data.shape[0]})."
            )

    def __len__(self) -> int:
        return int(self.data.shape[0])


class VideoDecoder:
    """A video file opened for decoding; close it (or use ``with``) to release the file.

    Args:
        source: a path, or a binary file-like object with ``read`` and ``seek``.
        device: "auto" (NVDEC for H.264/HEVC when allowed and a CUDA device is present, else
            the CPU), "cpu", or "cuda" (an error without a device); see
            :mod:`seeknetic_prep.decode.hw`.
        threads: FFmpeg threads per decoder and for swscale (0: FFmpeg's default, one per
            core; a pool of W processes on C cores gives each ``C // W``).
        gpu_allowed: whether ``auto`` may pick the GPU (False in a mixed pool's CPU workers).
        info: this file's probe from earlier: while the file still has that size it is only
            opened, not probed again (the probe decodes a frame and demuxes the tail, ~50 ms
            for 1080p); the frames depend on nothing else, so they are the same.

    Raises:
        MediaError: missing, empty, not media, no video stream, undecodable or truncated.
        InvalidArgumentError: ``threads`` < 0; an unknown ``device``, or "cuda" with no device.

    >>> with VideoDecoder("fixtures/demo/lake.mp4", device="cpu") as dec:
    ...     batch = dec.frames_at([400.0, 1200.0], size=(398, 224))
    >>> batch.data.shape, batch.pts_ms
    ((2, 224, 398, 3), (400.0, 1200.0))
    """

    def __init__(
        self,
        source: Source,
        *,
        device: hw.DecodeMode = "auto",
        threads: int = 0,
        gpu_allowed: bool = True,
        info: MediaInfo | None = None,
    ) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise InvalidArgumentError(f"Invalid threads {threads!r}: must be an int >= 0 (0: one per core).")
        self.source = source
        self.threads = threads
        self._audio: list[Generator[Any, None, None]] = []
        self._container: Any = None
        if info is not None and source_size(source) == info.size_bytes:
            self.info = info  # opened below, for the frame pass only
        else:
            self.info, self._container = probe_container(source, threads=threads)
        try:
            self.device: Literal["cpu", "cuda"] = hw.choose_device(
                device, self.info.video_codec, gpu_allowed=gpu_allowed, cuda_present=hw.cuda_present
            )
            self._open_for_frames(self._container)
        except BaseException:
            self.close()
            raise

    def _open_for_frames(self, probed: Any) -> None:
        """The container for the frame pass (``_container``, its video stream ``_video``): the
        probe's own on the CPU (a small file's first window costs about as much as opening it
        again), a fresh one for NVDEC. Its demuxer reads the video stream only."""
        if self.device == "cuda":
            if probed is not None:
                probed.close()
                self._container = None
            container = open_container(self.source, hwaccel=hw.nvdec())
            best_video_stream(self.info.path, container).codec_context.thread_count = 1  # one feeder
        elif probed is not None:
            container = probed  # threaded by the probe, before its first frame
        else:
            container = self._container = open_container(self.source)
            set_video_threads(best_video_stream(self.info.path, container), self.threads)
        self._container = container
        self._video = best_video_stream(self.info.path, container)
        demux_only(container, self._video)

    def _reopen(self) -> tuple[Any, Any]:
        """The file opened afresh for the frame pass, unread (its first byte next): for a
        container whose seeks cannot reach its start (see :mod:`~seeknetic_prep.decode.frames`)."""
        if self._container is not None:
            self._container.close()
            self._container = None
        self._open_for_frames(None)
        return self._container, self._video

    def __enter__(self) -> VideoDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the container and any audio pass still open; closing twice is harmless."""
        for chunks in self._audio:
            chunks.close()
        self._audio.clear()
        if self._container is not None:
            self._container.close()
            self._container = None

    def iter_frames_at(
        self, targets_ms: Sequence[float | Fraction], *, size: tuple[int, int] | None = None
    ) -> Generator[tuple[float, np.ndarray], None, None]:
        """For each target time (ascending, ms on the timeline), the frame on screen then, as
        ``(pts_ms, rgb)``, one at a time as decoded (see :mod:`~seeknetic_prep.decode.frames`).

        ``rgb`` is ``uint8 (h, w, 3)`` in the stored orientation, scaled so that once turned
        upright it is ``size = (width, height)`` (default: the display size); consecutive
        targets on one frame share one array.

        Raises:
            InvalidArgumentError: targets not ascending, or the decoder is closed.
            MediaError: the file fails to decode, or its frames stop before a target.
        """
        return frame_pass(self._open(), self._video, self.info, targets_ms, self._coded_size(size),
                          threads=self.threads, reopen=self._reopen)

    def batches_at(
        self, groups_ms: Sequence[Sequence[float | Fraction]], *, size: tuple[int, int] | None = None
    ) -> Generator[FrameBatch, None, None]:
        """One :class:`FrameBatch` per group of targets, each as soon as its frames are decoded,
        all in one pass (the groups' targets together must be ascending). Holds one group's
        frames at a time, so memory stays flat over a long file."""
        frames = self.iter_frames_at([t for group in groups_ms for t in group], size=size)
        width, height = self._coded_size(size)
        try:
            for group in groups_ms:
                picked = [next(frames) for _ in group]
                data = (np.stack([rgb for _, rgb in picked]) if picked
                        else np.empty((0, height, width, 3), np.uint8))
                yield FrameBatch(data, tuple(pts for pts, _ in picked))
        finally:
            frames.close()

    def frames_at(
        self, targets_ms: Sequence[float | Fraction], *, size: tuple[int, int] | None = None
    ) -> FrameBatch:
        """The frames on screen at ``targets_ms`` (ascending), as one batch."""
        batches = self.batches_at([targets_ms], size=size)
        try:
            return next(batches)
        finally:
            batches.close()

    def audio(self, start_ms: float = 0.0) -> Generator[tuple[int, np.ndarray], None, None]:
        """The audio from ``start_ms`` on, mono float32 at 22050 Hz, as ``(position, samples)``
        chunks (see :mod:`~seeknetic_prep.decode.audio`); read through a container of its own,
        alongside the frames, and closed with the decoder."""
        self._open()
        chunks = audio_pass(self.source, self.info, start_ms, threads=self.threads)
        self._audio.append(chunks)
        return chunks

    def _open(self) -> Any:
        if self._container is None:
            raise InvalidArgumentError(
                f"Invalid use of a closed VideoDecoder ({source_name(self.source)}): open it again."
            )
        return self._container

    def _coded_size(self, size: tuple[int, int] | None) -> tuple[int, int]:
        """``size`` (upright, width x height) in the stored orientation."""
        out_w, out_h = size if size is not None else (self.info.width, self.info.height)
        return (out_h, out_w) if self.info.rotation % 180 else (out_w, out_h)
