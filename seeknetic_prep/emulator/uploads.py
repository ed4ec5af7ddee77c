"""What an upload's tensors must be, and how they are decoded and stored.

The upload endpoint is where the emulator spends most of its CPU (a window sends two bodies of
3-6 MB), so the rules live here apart from the routing: the shape checked before anything is
allocated (1 to 8 dimensions, each at least 1, whose product is the data's length: a dimension
of 10**20 used to reach numpy and answer 500), strict base64 decoded once per distinct tensor
(:class:`Decoded`) into a read-only array over the decoded bytes (no copy), shape, dtype and
finiteness checked on the array, and the stored JSON written as pieces of the base64 text
instead of re-encoded or joined (:func:`tensor_json`).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import threading
from collections import OrderedDict
from typing import Any, Protocol

import numpy as np

from seeknetic_prep.api.tensors import DTYPES
from seeknetic_prep.decode.profile import AUDIO_SHAPE, VIDEO_SHAPE
from seeknetic_prep.emulator.problems import invalid
from seeknetic_prep.emulator.storage.files import Chunks

__all__ = [
    "MAX_DIMS", "MAX_FRAMES", "MAX_SIDE", "Decoded", "check_audio", "check_kwargs", "check_video",
    "decode_checked", "tensor_json",
]

MAX_FRAMES = 64
MAX_SIDE = 4096
MAX_DIMS = 8
_CACHED_MAX = 8 * 2**20  # base64 characters: a window's video is 2.4 MB; a 60 MB one is not kept


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


def decode_checked(loc: str, tensor: TensorFields) -> np.ndarray:
    """The read-only array of ``tensor``, its shape checked before anything is allocated.

    Raises:
        Problem: 422 naming ``loc``: a shape that is not 1 to :data:`MAX_DIMS` dimensions of at
            least 1 each, data that is not strict base64, or a length that is not the shape's.
    """
    shape = list(tensor.shape)
    if not 1 <= len(shape) <= MAX_DIMS or min(shape) < 1:
        shown = shape if len(shape) <= MAX_DIMS else f"{shape[:MAX_DIMS]} (and {len(shape) - MAX_DIMS} more)"
        raise invalid(
            [loc], f"{loc} has shape {shown}: must have 1 to {MAX_DIMS} dimensions, each at least 1.",
            "tensor_error",
        )
    try:
        raw = base64.b64decode(tensor.data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid([loc], f"{loc}: Invalid data: not standard base64 ({exc}).", "tensor_error") from exc
    dtype = DTYPES[tensor.dtype]
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise invalid(
            [loc],
            f"{loc}: Invalid tensor: shape {shape} x {dtype.itemsize} bytes ({tensor.dtype}) "
            f"= {expected} bytes, but data holds {len(raw)}.",
            "tensor_error",
        )
    arr = np.frombuffer(raw, dtype=dtype).reshape(shape)  # a view of immutable bytes: read-only
    if not arr.dtype.isnative:
        arr = arr.astype(dtype.newbyteorder("="))
        arr.flags.writeable = False
    return arr


class Decoded:
    """The last few tensors decoded, by their exact JSON fields.

    A window's two uploads (embedding, then tagging) carry the same ``video_input``: 2.4 MB of
    base64 that takes ~5 ms to decode, against ~0.7 ms to hash the string (once; Python keeps a
    string's hash) and compare it to the one it matches. The arrays handed out are read-only,
    since two uploads may hold the same one. Only tensors of up to 8 MB of base64 are kept, so
    the cache never holds a large upload's memory after its request.
    """

    def __init__(self, size: int = 4) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, str, tuple[int, ...]], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, loc: str, tensor: TensorFields) -> np.ndarray:
        """The array of ``tensor`` (read-only).

        Raises:
            Problem: 422 naming ``loc`` (see :func:`decode_checked`).
        """
        if len(tensor.data) > _CACHED_MAX:
            return decode_checked(loc, tensor)
        key = (tensor.data, tensor.dtype, tuple(tensor.shape))
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        arr = decode_checked(loc, tensor)
        with self._lock:
            self._items[key] = arr
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return arr


def tensor_json(tensor: TensorFields, metadata: dict[str, Any] | None = None) -> Chunks:
    """The stored JSON of an uploaded tensor (wrapped as ``{"tensor", "metadata"}`` when the
    upload used that form), as pieces written one after the other: the megabytes of base64 are
    neither re-escaped nor copied into one buffer.

    Only called after :class:`Decoded` accepted ``tensor.data`` as strict base64, whose alphabet
    needs no JSON escaping, so it can be spliced in as is.
    """
    head = json.dumps({"shape": tensor.shape, "dtype": tensor.dtype})[1:-1]
    if metadata is None:
        return [b'{"data": "', tensor.data, b'", ' + head.encode() + b"}"]
    return [b'{"tensor": {"data": "', tensor.data,
            b'", ' + head.encode() + b'}, "metadata": ' + json.dumps(metadata).encode() + b"}"]


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
