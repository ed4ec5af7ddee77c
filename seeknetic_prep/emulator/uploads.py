"""What an upload's tensors must be, and how they are decoded and stored.

The upload endpoint is where the emulator spends most of its CPU (a window sends two bodies of
3-6 MB), so the rules live here apart from the routing: strict base64 decoded once per distinct
tensor (:class:`Decoded`), shape, dtype and finiteness checked on the array, and the stored
JSON spliced together from the base64 text instead of re-encoded (:func:`tensor_json`).
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from typing import Any, Protocol

import numpy as np

from seeknetic_prep.api.tensors import decode_tensor
from seeknetic_prep.decode.profile import AUDIO_SHAPE, VIDEO_SHAPE
from seeknetic_prep.emulator.problems import invalid
from seeknetic_prep.errors import TensorError

__all__ = ["MAX_FRAMES", "MAX_SIDE", "Decoded", "check_audio", "check_kwargs", "check_video", "tensor_json"]

MAX_FRAMES = 64
MAX_SIDE = 4096


class TensorFields(Protocol):
    """A parsed tensor object: ``{"data": base64, "shape": [...], "dtype": ...}``."""

    @property
    def data(self) -> str: ...
    @property
    def shape(self) -> list[int]: ...
    @property
    def dtype(self) -> str: ...


def check_video(loc: str, arr: np.ndarray) -> None:
    shape = list(arr.shape)
    if arr.dtype != np.uint8:
        raise invalid([loc], f"{loc} has dtype {arr.dtype}: must be uint8.")
    seed = shape == list(VIDEO_SHAPE)
    sdk = (
        len(shape) == 4
        and shape[1] == 3
        and 1 <= shape[0] <= MAX_FRAMES
        and 1 <= shape[2] <= MAX_SIDE
        and 1 <= shape[3] <= MAX_SIDE
    )
    if not (seed or sdk):
        raise invalid(
            [loc],
            f"{loc} has shape {shape}: must be {list(VIDEO_SHAPE)} (1 window of 12 RGB 224x224 frames) "
            f"or [T, 3, H, W] with 1 <= T <= {MAX_FRAMES} and 1 <= H, W <= {MAX_SIDE}.",
        )


def check_audio(loc: str, arr: np.ndarray) -> None:
    shape = list(arr.shape)
    if arr.dtype != np.float32:
        raise invalid([loc], f"{loc} has dtype {arr.dtype}: must be float32.")
    if not (shape == list(AUDIO_SHAPE) or (len(shape) == 1 and shape[0] >= 1)):
        raise invalid(
            [loc],
            f"{loc} has shape {shape}: must be {list(AUDIO_SHAPE)} (10 s at 22050 Hz) or [N] with N >= 1.",
        )
    if not np.isfinite(arr).all():
        raise invalid([loc], f"{loc} holds NaN or infinite samples: every sample must be finite.")


class Decoded:
    """The last few tensors decoded, by their exact JSON fields.

    A window's two uploads (embedding, then tagging) carry the same ``video_input``: 2.4 MB of
    base64 that takes ~5 ms to decode, against ~0.7 ms to hash the string (once; Python keeps a
    string's hash) and compare it to the one it matches. The arrays handed out are read-only,
    since two uploads may hold the same one.
    """

    def __init__(self, size: int = 4) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, str, tuple[int, ...]], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, loc: str, tensor: TensorFields) -> np.ndarray:
        """The array of ``tensor`` (read-only).

        Raises:
            Problem: 422 naming ``loc``: not strict base64, or a length that is not the shape's.
        """
        key = (tensor.data, tensor.dtype, tuple(tensor.shape))
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        try:
            arr = decode_tensor({"data": tensor.data, "shape": tensor.shape, "dtype": tensor.dtype})
        except TensorError as exc:
            raise invalid([loc], f"{loc}: {exc}", "tensor_error") from exc
        arr.flags.writeable = False
        with self._lock:
            self._items[key] = arr
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return arr


def tensor_json(tensor: TensorFields, metadata: dict[str, Any] | None = None) -> bytes:
    """The stored JSON of an uploaded tensor (wrapped as ``{"tensor", "metadata"}`` when the
    upload used that form), without re-escaping megabytes of base64.

    Only called after :class:`Decoded` accepted ``tensor.data`` as strict base64, whose alphabet
    needs no JSON escaping, so it can be spliced in as is.
    """
    head = json.dumps({"shape": tensor.shape, "dtype": tensor.dtype})[1:-1]
    inner = b'{"data": "' + tensor.data.encode("ascii") + b'", ' + head.encode() + b"}"
    if metadata is not None:
        return b'{"tensor": ' + inner + b', "metadata": ' + json.dumps(metadata).encode() + b"}"
    return inner


def check_kwargs(kwargs: dict[str, Any]) -> None:
    """``video_kwargs``: ``fps`` a number > 0, ``do_sample_frames`` a boolean, when present."""
    fps = kwargs.get("fps")
    if fps is not None and (
        isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0
    ):
        raise invalid(["video_kwargs", "fps"], f"video_kwargs.fps is {fps!r}: must be a number > 0.")
    sample = kwargs.get("do_sample_frames")
    if sample is not None and not isinstance(sample, bool):
        raise invalid(
            ["video_kwargs", "do_sample_frames"],
            f"video_kwargs.do_sample_frames is {sample!r}: must be a boolean.",
        )
