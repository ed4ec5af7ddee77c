"""seeknetic-prep: frame-exact, fast, resumable preprocessing of local video for the Seeknetic API.

>>> import seeknetic_prep as sp
>>> segs = sp.preprocess("fixtures/demo/desert.mp4")
>>> segs[0].video.shape, segs[0].audio.shape
((1, 12, 3, 224, 224), (1, 1, 220500))

The imports are eager on purpose: the function ``preprocess`` shares its name with its module,
and binding it here, once, keeps ``sp.preprocess(...)`` the function whatever is imported later.
None of these modules loads PyAV or FastAPI at import time.
"""

from __future__ import annotations

from .client import Client
from .errors import MediaError, SeekneticPrepError
from .pipeline import run_folder
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
    "run_folder",
]
__version__ = "0.1.0"
