"""seeknetic-prep: frame-exact, fast, resumable preprocessing of local video for the Seeknetic API.

>>> import seeknetic_prep as sp
>>> segs = sp.preprocess("clip.mp4")  # doctest: +SKIP
>>> segs[0].video.shape, segs[0].audio.shape  # doctest: +SKIP
((1, 12, 3, 224, 224), (1, 1, 220500))

Names are loaded on first use, so ``seeknetic-prep emulator`` never pays for PyAV and
``seeknetic-prep prep`` never pays for FastAPI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import Client
    from .errors import MediaError, SeekneticPrepError
    from .preprocess import preprocess
    from .profile import Segment, Window
    from .tensors import decode_tensor, encode_tensor

__all__ = [
    "Client",
    "MediaError",
    "SeekneticPrepError",
    "Segment",
    "Window",
    "decode_tensor",
    "encode_tensor",
    "preprocess",
]
__version__ = "0.1.0"

_HOME = {
    "Client": "client",
    "MediaError": "errors",
    "SeekneticPrepError": "errors",
    "Segment": "profile",
    "Window": "profile",
    "decode_tensor": "tensors",
    "encode_tensor": "tensors",
    "preprocess": "preprocess",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
