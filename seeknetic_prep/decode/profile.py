"""What the Seeknetic tensor API expects of one window, and the value types that carry it.

The numbers live here once so that the sampler, the decoder, the validator in the emulator and
the tests agree by construction rather than by copy. ``Window`` and ``Segment`` check
themselves where they are made: a wrong shape fails in the decoder that produced it, not as a
422 from the server an hour into a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from seeknetic_prep.errors import InvalidArgumentError

__all__ = [
    "AUDIO_SAMPLES",
    "FRAMES_PER_WINDOW",
    "FRAME_SIZE",
    "SAMPLE_RATE",
    "WINDOW_MS",
    "ResizeMode",
    "Segment",
    "Service",
    "Window",
]

WINDOW_MS = 10_000
"""Length of one window on the source timeline."""
FRAMES_PER_WINDOW = 12
FRAME_SIZE = 224
SAMPLE_RATE = 22_050
AUDIO_SAMPLES = SAMPLE_RATE * WINDOW_MS // 1000  # 220500: always a full window, zero-padded

VIDEO_SHAPE = (1, FRAMES_PER_WINDOW, 3, FRAME_SIZE, FRAME_SIZE)
AUDIO_SHAPE = (1, 1, AUDIO_SAMPLES)

ResizeMode = Literal["crop", "squash", "pad"]
Service = Literal["embedding", "tagging"]


@dataclass(frozen=True, order=True)
class Window:
    """One stretch of a file's timeline, ``[start_ms, end_ms)``, in integer milliseconds.

    ``end_ms`` is already clipped to the content's duration: the last window of a 25 s file is
    ``Window(2, 20000, 25000)``. Plain ints keep it picklable and JSON-friendly, so a window can
    cross a process pool or be stored in SQLite without a converter.
    """

    index: int
    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if self.index < 0:
            raise InvalidArgumentError(f"Invalid window index {self.index}: must be >= 0.")
        if self.start_ms < 0:
            raise InvalidArgumentError(f"Invalid window start {self.start_ms} ms: must be >= 0.")
        if self.end_ms <= self.start_ms:
            raise InvalidArgumentError(
                f"Invalid window [{self.start_ms}, {self.end_ms}) ms: end must be after start."
            )

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


@dataclass(frozen=True, eq=False)
class Segment:
    """The tensors of one window, ready to serialize.

    ``video`` is uint8 ``(1, 12, 3, 224, 224)`` RGB, C-contiguous; ``audio`` is float32
    ``(1, 1, 220500)`` mono at 22050 Hz in [-1, 1]. ``frame_times_ms`` are the presentation
    times of the frames actually used (not the targets), so a caller can check what was shown.
    """

    index: int
    start_ms: int
    end_ms: int
    video: np.ndarray
    audio: np.ndarray
    frame_times_ms: tuple[float, ...]
    has_audio: bool
    target_times_ms: tuple[float, ...] = field(default=())
    decoder: str = "cpu"
    """What decoded its frames: ``cpu``, or ``cuda`` (NVDEC)."""

    def __post_init__(self) -> None:
        Window(self.index, self.start_ms, self.end_ms)  # same rules as a window
        _check_array("video", self.video, VIDEO_SHAPE, np.dtype(np.uint8))
        _check_array("audio", self.audio, AUDIO_SHAPE, np.dtype(np.float32))
        if len(self.frame_times_ms) != FRAMES_PER_WINDOW:
            raise InvalidArgumentError(
                f"Invalid frame_times_ms of length {len(self.frame_times_ms)}: "
                f"must hold {FRAMES_PER_WINDOW} times."
            )

    @property
    def window(self) -> Window:
        return Window(self.index, self.start_ms, self.end_ms)


def _check_array(name: str, arr: object, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
    if not isinstance(arr, np.ndarray):
        raise InvalidArgumentError(f"Invalid {name}: {type(arr).__name__}, must be a numpy array.")
    if arr.shape != shape or arr.dtype != dtype:
        raise InvalidArgumentError(
            f"Invalid {name} {arr.dtype}{list(arr.shape)}: must be {dtype}{list(shape)}."
        )
    if not arr.flags.c_contiguous:
        raise InvalidArgumentError(f"Invalid {name}: must be C-contiguous.")
