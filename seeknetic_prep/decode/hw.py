"""Which decoder a file gets: the CPU, or NVDEC on an NVIDIA GPU through PyAV's ``cuda`` hwaccel.

``decode="auto"`` (the default everywhere) uses NVDEC when the decoder may use the GPU (its
``gpu_allowed`` argument: not in the CPU workers of a mixed pool), a CUDA device is present,
and the file's codec is one whose NVDEC output was checked to equal the CPU decoder's
(:data:`NVDEC_CODECS`); otherwise the CPU, silently. ``"cpu"`` never touches the GPU.
``"cuda"`` insists: without a device it is a usage error (exit 2) said once, up front; a codec
outside :data:`NVDEC_CODECS` still falls back to the CPU, because exactness outranks speed.

What is known (measured on an H200, PyAV 18.1 from the wheel; README, bench section g): a
window decoded on NVDEC equals the CPU's to the bit (frames, times, audio) on every H.264 and
HEVC fixture, 10-bit HEVC included; CUDA fails in a forked worker, so GPU decode workers are
``spawn``ed; opening a file on NVDEC costs ~0.3 s even on the kept primary context (0.44 s with
a context of its own), which is why ``auto`` beside 16 CPU workers gained 1.2-1.4x, not more,
on one-window 1080p files.

The choice is :func:`choose_device`, a pure function of its arguments (no process state), so
its whole table is tested without a GPU; :class:`~seeknetic_prep.decode.decoder.VideoDecoder`
asks it and opens the file accordingly.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, Literal

from seeknetic_prep.errors import InvalidArgumentError

__all__ = ["NVDEC_CODECS", "NVDEC_OPTIONS", "DecodeMode", "check_decode", "choose_device", "cuda_present",
           "nvdec"]

DecodeMode = Literal["auto", "cpu", "cuda"]
DECODE_MODES: tuple[str, ...] = ("auto", "cpu", "cuda")
NVDEC_CODECS = frozenset({"h264", "hevc"})
"""Codecs decoded on the GPU: the ones whose GPU output is to equal the CPU's (see module doc)."""
_NO_CUDA = ("Invalid --decode cuda: no CUDA device here (PyAV cannot open one); use --decode auto "
            "or cpu, or run where an NVIDIA GPU and its driver are present.")


@functools.lru_cache(maxsize=1)
def cuda_present() -> bool:
    """Whether PyAV can create a CUDA device here (once per process; ~0.3 ms when there is none)."""
    try:
        # PyAV: the driver asks choose_device without loading it
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
        raise InvalidArgumentError(_NO_CUDA)
    return mode  # type: ignore[return-value]


def choose_device(
    mode: str, codec: str, *, gpu_allowed: bool, cuda_present: Callable[[], bool]
) -> Literal["cpu", "cuda"]:
    """Where a file of ``codec`` decodes under ``mode``: a pure choice, every input an argument.

    ``gpu_allowed`` is False in the CPU workers of a mixed pool (the GPU's decoders are the GPU
    workers'); it limits ``auto`` only. ``cuda_present`` is asked only when the answer depends
    on it, so a CPU decode never touches the CUDA driver.

    >>> choose_device("auto", "h264", gpu_allowed=True, cuda_present=lambda: True)
    'cuda'
    >>> choose_device("cuda", "av1", gpu_allowed=True, cuda_present=lambda: True)
    'cpu'

    Raises:
        InvalidArgumentError: an unknown mode, or ``cuda`` for an NVDEC codec with no device.
    """
    if mode not in DECODE_MODES:
        check_decode(mode)  # raises the one-line error
    if mode == "cpu" or codec not in NVDEC_CODECS:
        return "cpu"
    if mode == "auto":
        return "cuda" if gpu_allowed and cuda_present() else "cpu"
    if not cuda_present():
        raise InvalidArgumentError(_NO_CUDA)
    return "cuda"


NVDEC_OPTIONS: dict[str, object] = {"primary_ctx": "1"}
"""``av_hwdevice_ctx_create`` options: use the device's primary CUDA context, the one context a
process shares, instead of creating one for every file (measured on the H200: ~0.45 s a file,
more than NVDEC takes to decode a 10 s 1080p window)."""


def nvdec() -> Any:
    """The ``hwaccel=`` that opens a file for NVDEC (no silent software fallback), on the
    process's primary CUDA context, which stays retained (:func:`_keep_primary_context`) so that
    the next file finds it made: one context per worker, reused across files."""
    # PyAV: the driver asks choose_device without loading it
    from av.codec.hwaccel import HWAccel
    from av.error import FFmpegError

    # A device that refuses (busy, exclusive, gone: FFmpegError) or a PyAV without CUDA's h264
    # config (NotImplementedError) refuses the file's own open just below, which says so in our
    # words (decoder.py): not a reason to fail here first, unworded.
    with contextlib.suppress(FFmpegError, NotImplementedError, ValueError):
        _keep_primary_context()
    return HWAccel("cuda", allow_software_fallback=False, options=dict(NVDEC_OPTIONS))


@functools.lru_cache(maxsize=1)
def _keep_primary_context() -> Any:
    """A device context on the primary CUDA context, held for the life of the process: the
    primary context is destroyed when its last user lets go, i.e. at the end of every file."""
    import av
    from av.codec.hwaccel import HWAccel

    accel = HWAccel("cuda", allow_software_fallback=False, options=dict(NVDEC_OPTIONS))
    return accel.create(av.Codec("h264", "r"))
