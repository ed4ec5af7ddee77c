"""Which decoder a file gets: the CPU, or NVDEC on an NVIDIA GPU through PyAV's ``cuda`` hwaccel.

``decode="auto"`` (the default everywhere) uses NVDEC when this process may use the GPU, a CUDA
device is present, and the file's codec is one whose NVDEC output was checked to equal the CPU
decoder's (:data:`NVDEC_CODECS`); otherwise the CPU, silently. ``"cpu"`` never touches the GPU.
``"cuda"`` insists: without a device it is a usage error (exit 2) said once, up front; a codec
outside :data:`NVDEC_CODECS` still falls back to the CPU, because exactness outranks speed.

What is known (measured on an H200 by the issue's author, PyAV 18.1 from the wheel): NVDEC's
``nv12`` frames and their ``rgb24`` conversion were bit-identical to software decoding for
H.264; CUDA fails in a forked worker, so GPU decode workers are ``spawn``ed. What is not yet
measured in this project: exactness of the whole window (``scripts/gpu_check.py`` checks it on
the H.264 and HEVC fixtures) and the speed of the pipeline with GPU workers.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from seeknetic_prep.errors import InvalidArgumentError

__all__ = ["NVDEC_CODECS", "DecodeMode", "allow_gpu", "check_decode", "cuda_present", "hwaccel_for"]

DecodeMode = Literal["auto", "cpu", "cuda"]
DECODE_MODES: tuple[str, ...] = ("auto", "cpu", "cuda")
NVDEC_CODECS = frozenset({"h264", "hevc"})
"""Codecs decoded on the GPU: the ones whose GPU output is to equal the CPU's (see module doc)."""

_gpu_allowed = True


def allow_gpu(allowed: bool) -> None:
    """Whether ``auto`` may use the GPU in this process (a CPU worker of a mixed pool may not:
    the GPU's decoders are shared by the GPU workers only)."""
    global _gpu_allowed
    _gpu_allowed = allowed


@functools.lru_cache(maxsize=1)
def cuda_present() -> bool:
    """Whether PyAV can create a CUDA device here (once per process; ~0.3 ms when there is none)."""
    try:
        import av
        from av.codec.hwaccel import HWAccel, hwdevices_available
    except ImportError:  # an older PyAV without hwaccel
        return False
    if "cuda" not in hwdevices_available():
        return False
    try:
        HWAccel("cuda", allow_software_fallback=False).create(av.Codec("h264", "r"))
    except Exception:  # PyAV raises its own errors (EPERM, ENODEV, ...) when there is no device
        return False
    return True


def check_decode(mode: str) -> DecodeMode:
    """Validate a ``--decode`` value up front.

    Raises:
        InvalidArgumentError: an unknown mode, or ``cuda`` with no CUDA device.
    """
    if mode not in DECODE_MODES:
        raise InvalidArgumentError(f"Invalid decode {mode!r}: must be one of auto, cpu, cuda.")
    if mode == "cuda" and not cuda_present():
        raise InvalidArgumentError(
            "Invalid --decode cuda: no CUDA device here (PyAV cannot open one); use --decode auto "
            "or cpu, or run where an NVIDIA GPU and its driver are present.")
    return mode  # type: ignore[return-value]


def hwaccel_for(mode: str, codec: str) -> Any:
    """The ``hwaccel=`` to open a file of ``codec`` with under ``mode``: an ``HWAccel`` for
    NVDEC, or ``None`` for the CPU decoder."""
    if mode == "cpu" or codec not in NVDEC_CODECS:
        return None
    if mode == "auto" and not (_gpu_allowed and cuda_present()):
        return None
    if mode == "cuda" and not cuda_present():
        check_decode(mode)  # raises the one-line error
    from av.codec.hwaccel import HWAccel

    return HWAccel("cuda", allow_software_fallback=False)
