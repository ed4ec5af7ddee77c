"""seeknetic-prep: frame-exact, fast, resumable preprocessing of local video for the Seeknetic API.

>>> import seeknetic_prep as sp
>>> segs = sp.preprocess("fixtures/demo/desert.mp4")
>>> segs[0].video.shape, segs[0].audio.shape
((1, 12, 3, 224, 224), (1, 1, 220500))

``preprocess`` and the small modules are imported at once: the function shares its name with
its module, and binding it here, once, keeps ``sp.preprocess(...)`` the function whatever is
imported later. ``Client``, ``run`` and ``run_folder`` are loaded when first asked for: they bring
requests, SQLite and pyarrow, which a decode worker or the emulator's process never uses
(~0.15 s of start-up each, paid once per process: 16 times on 16 cores).
None of these modules loads PyAV or FastAPI at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from seeknetic_prep.api.tensors import decode_tensor, encode_tensor
from seeknetic_prep.decode.preprocess import preprocess
from seeknetic_prep.decode.profile import Segment, Window
from seeknetic_prep.errors import MediaError, SeekneticPrepError

if TYPE_CHECKING:
    from seeknetic_prep.api.client import Client
    from seeknetic_prep.job import run
    from seeknetic_prep.pipeline.driver import run_folder

__all__ = [
    "Client",
    "MediaError",
    "SeekneticPrepError",
    "Segment",
    "Window",
    "decode_tensor",
    "encode_tensor",
    "preprocess",
    "run",
    "run_folder",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Client":
        from seeknetic_prep.api.client import Client  # requests: on first use (see the docstring)

        return Client
    if name == "run_folder":
        from seeknetic_prep.pipeline.driver import run_folder  # SQLite, pyarrow: on first use

        return run_folder
    if name == "run":
        from seeknetic_prep.job import run  # the whole job: the run command's modules, on first use

        return run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
