"""A segment becomes the exact JSON body of ``POST /files/upload/tensors``; files get stable ids.

Request ids are deterministic (content fingerprint + window + service), which is what makes
retrying an upload safe: the same window of the same bytes always carries the same id, whatever
the file is called or where it lives, so the server can treat a repeat as the same upload.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seeknetic_prep.api.tensors import encode_tensor, tensor_json_bytes
from seeknetic_prep.decode.profile import (
    AUDIO_SHAPE,
    FRAMES_PER_WINDOW,
    VIDEO_SHAPE,
    ResizeMode,
    Segment,
    Service,
    Window,
)
from seeknetic_prep.errors import InvalidArgumentError, MediaError

__all__ = [
    "SERVICES",
    "file_fingerprint",
    "fingerprint_of",
    "fingerprint_ranges",
    "parse_services",
    "request_id_for",
    "upload_body",
    "upload_body_bytes",
    "upload_body_size",
]

SERVICES: tuple[Service, ...] = ("embedding", "tagging")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_EDGE = 1 << 20  # first and last MiB
_BLOCK = 64 << 10  # plus this much at a few evenly spaced places in between
_BLOCKS = 8


def parse_services(text: str) -> tuple[Service, ...]:
    """``"embedding,tagging"`` (any order, spaces allowed; ``"both"`` for the two) -> services,
    in :data:`SERVICES` order, each once.

    Raises:
        InvalidArgumentError: an unknown name, or none at all.

    >>> parse_services("tagging, embedding"), parse_services("both")
    (('embedding', 'tagging'), ('embedding', 'tagging'))
    """
    names = {n.strip() for n in text.split(",") if n.strip()}
    if "both" in names:
        names = (names - {"both"}) | set(SERVICES)
    if not names or not names <= set(SERVICES):
        raise InvalidArgumentError(
            f"Invalid services {text!r}: must be one or more of {', '.join(SERVICES)}, comma-separated."
        )
    return tuple(s for s in SERVICES if s in names)


def upload_body(segment: Segment, *, service: Service, request_id: str) -> dict[str, Any]:
    """The JSON body that uploads one window's tensors for one service.

    embedding: ``{"service", "request_id", "video_input", "audio_input"}``; tagging:
    ``{"service", "request_id", "video_input", "video_kwargs": {"do_sample_frames": False,
    "fps": 12 / window seconds}}`` (the frames are already sampled; ``fps`` says how densely).

    Raises:
        InvalidArgumentError: an unknown service or a request id outside ``[A-Za-z0-9._-]{1,128}``.
    """
    _check(service, request_id)
    body: dict[str, Any] = {
        "service": service,
        "request_id": request_id,
        "video_input": encode_tensor(segment.video),
    }
    if service == "embedding":
        body["audio_input"] = encode_tensor(segment.audio)
    else:
        body["video_kwargs"] = {"do_sample_frames": False, "fps": sampling_fps(segment.window)}
    return body


def upload_body_bytes(segment: Segment, wanted: Sequence[tuple[Service, str]]) -> list[bytes]:
    """``json.dumps(upload_body(segment, ...)).encode()`` for each ``(service, request_id)``,
    byte for byte, at a fraction of the cost.

    A window's bodies are 3-6 MB of base64 each. Here each array's base64 is made once, straight
    from its buffer, and shared by every body that carries it (both services send the same
    ``video_input``), and no JSON encoder ever scans it: only the small fields around it go
    through ``json.dumps``.

    Raises:
        InvalidArgumentError: as for :func:`upload_body`.
    """
    video = tensor_json_bytes(segment.video)
    audio: bytes | None = None
    out: list[bytes] = []
    for service, request_id in wanted:
        head = _head(service, request_id)
        if service == "embedding":
            if audio is None:
                audio = tensor_json_bytes(segment.audio)
            tail = _AUDIO_KEY + audio
        else:
            tail = _kwargs_tail(segment.window)
        out.append(b"".join((head, _VIDEO_KEY, video, tail, b"}")))
    return out


def upload_body_size(window: Window, service: Service, request_id: str) -> int:
    """``len()`` of the body :func:`upload_body_bytes` makes for this window, service and id,
    without decoding anything: a tensor's JSON length depends only on its shape and dtype (the
    arrays of every window have the same), so the two are measured once on zero arrays.

    Raises:
        InvalidArgumentError: as for :func:`upload_body`.

    >>> upload_body_size(Window(0, 0, 10000), "tagging", "sp-0123456789abcdef-0-10000-tagging")
    2408658
    """
    video, audio = _tensor_json_lengths()
    tail = len(_AUDIO_KEY) + audio if service == "embedding" else len(_kwargs_tail(window))
    return len(_head(service, request_id)) + len(_VIDEO_KEY) + video + tail + 1


_VIDEO_KEY = b', "video_input": '
_AUDIO_KEY = b', "audio_input": '


def _head(service: Service, request_id: str) -> bytes:
    """A body's opening: ``{"service": ..., "request_id": ...`` (checked), before its tensors."""
    _check(service, request_id)
    return json.dumps({"service": service, "request_id": request_id}).encode()[:-1]


def _kwargs_tail(window: Window) -> bytes:
    """The tagging body's ``video_kwargs`` (its ``fps`` depends on the window's length)."""
    kwargs = {"do_sample_frames": False, "fps": sampling_fps(window)}
    return b', "video_kwargs": ' + json.dumps(kwargs).encode()


@functools.cache
def _tensor_json_lengths() -> tuple[int, int]:
    """The JSON lengths of a window's video and audio tensors (the same for every window)."""
    return (len(tensor_json_bytes(np.zeros(VIDEO_SHAPE, np.uint8))),
            len(tensor_json_bytes(np.zeros(AUDIO_SHAPE, np.float32))))


def _check(service: str, request_id: object) -> None:
    if service not in SERVICES:
        raise InvalidArgumentError(f"Invalid service {service!r}: must be one of {', '.join(SERVICES)}.")
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        raise InvalidArgumentError(f"Invalid request_id {request_id!r}: must match [A-Za-z0-9._-]{{1,128}}.")


def sampling_fps(window: Window) -> float:
    """Frames per second of the sampling: 12 frames over the window's span (1.2 for 10 s)."""
    return FRAMES_PER_WINDOW * 1000 / window.duration_ms


def file_fingerprint(path: str | os.PathLike[str]) -> str:
    """A sha256 hex digest of a file's content, cheap even for multi-GB files.

    Hashes the size, the first and last MiB and eight evenly spaced 64 KiB blocks: content
    rather than path or mtime (a renamed or copied file keeps its ids), and never a full read.

    Raises:
        MediaError: the file cannot be read.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        with p.open("rb") as fh:

            def read_at(offset: int, length: int) -> bytes:
                fh.seek(offset)
                return fh.read(length)

            return fingerprint_of(size, read_at)
    except OSError as exc:
        raise MediaError(p, f"unreadable: {exc.strerror or exc}") from exc


def fingerprint_ranges(size: int) -> list[tuple[int, int]]:
    """The ``(offset, length)`` byte ranges :func:`file_fingerprint` reads from a file of
    ``size`` bytes: the whole file up to 2.5 MiB, else the first MiB, eight 64 KiB blocks and
    the last MiB. An object in a bucket is fingerprinted with range requests for exactly these
    (:mod:`seeknetic_prep.sources`), so the same bytes give the same request ids wherever they are.

    >>> fingerprint_ranges(100)
    [(0, 100)]
    """
    if size <= 2 * _EDGE + _BLOCKS * _BLOCK:
        return [(0, size)]
    offsets = [size * (k + 1) // (_BLOCKS + 1) for k in range(_BLOCKS)]
    return [(0, _EDGE), *((o, _BLOCK) for o in offsets), (size - _EDGE, _EDGE)]


def fingerprint_of(size: int, read_at: Callable[[int, int], bytes]) -> str:
    """The fingerprint of ``size`` bytes that ``read_at(offset, length)`` reads (see
    :func:`file_fingerprint`); ``read_at``'s errors pass through."""
    digest = hashlib.sha256()
    digest.update(f"{size}:".encode())
    for offset, length in fingerprint_ranges(size):
        digest.update(read_at(offset, length))
    return digest.hexdigest()


def request_id_for(fingerprint: str, window: Window, service: Service, resize: ResizeMode = "crop") -> str:
    """The deterministic request id of one window of one file for one service.

    Windows are named by their bounds, so a custom window that equals a tiled one shares its
    id (same tensors) and different bounds never collide; a non-default resize is part of the id.

    >>> request_id_for("ab" * 32, Window(1, 10000, 20000), "tagging")
    'sp-abababababababab-10000-20000-tagging'
    """
    suffix = "" if resize == "crop" else f"-{resize}"
    return f"sp-{fingerprint[:16]}-{window.start_ms}-{window.end_ms}-{service}{suffix}"
