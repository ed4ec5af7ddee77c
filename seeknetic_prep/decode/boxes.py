"""Where an MP4's index lies, from the box headers at its start, and where the packets that
probing it reads lie, from that index: no PyAV, a few bytes.

An MP4 or MOV keeps every packet's position in its ``moov`` box, written before the media
(``faststart``) or after it, and a long file's is megabytes (a 2-hour video at 30 fps: ~5 MB).
Opening the file reads all of it, and through range requests a reader that does not know how
far it goes asks for one block, then two, then four: seven requests for 10 MB. The top-level
boxes say where it is: ``ftyp``, then ``moov`` or ``mdat``, each with its size, so the first
few bytes are enough to tell a reader the span to fetch in large requests
(:meth:`~seeknetic_prep.sources.reader.RangeReader.expect`).

Probing a file (:func:`~seeknetic_prep.decode.probe.probe`) then reads its first packets and
demuxes its last seconds: from a store far away, each a round trip of its own, one after the
other, once the index is in. The index's sample tables (``stts``, ``stsc``, ``stsz``,
``stco``) say where those packets lie, so a plan can fetch them together with nothing decoded
(:func:`probe_ranges`); a guess that misses costs bytes, never a wrong answer, since the probe
still reads what it reads.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from seeknetic_prep.util.ranges import merged

__all__ = ["TAIL_SECONDS", "index_span", "probe_ranges"]

TAIL_SECONDS = 3.0
"""How much of the end of a file the probe demuxes to find where its content really ends
(:mod:`~seeknetic_prep.decode.probe`; here for :func:`probe_ranges`, which PyAV-free code calls)."""

_TOP_LEVEL = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"uuid", b"pdin", b"meta"})


def index_span(head: bytes, size: int) -> tuple[int, int] | None:
    """The byte range ``[start, end)`` of the ``moov`` box of an MP4/MOV of ``size`` bytes
    whose first bytes are ``head``: the box itself when its header is in ``head``, else from
    where the boxes in ``head`` end (after the media data, the index and what may follow it) to
    the end of the file. None for anything else (not ISO media, a box that runs off the file,
    headers that end before a box's size is known).

    >>> ftyp = struct.pack(">I4s", 16, b"ftyp") + b"isom" * 2
    >>> index_span(ftyp + struct.pack(">I4s", 1000, b"mdat"), 2000)  # index at the end
    (1016, 2000)
    >>> index_span(ftyp + struct.pack(">I4s", 300, b"moov"), 2000)  # faststart
    (16, 316)
    >>> index_span(b"\\x1aE\\xdf\\xa3" + bytes(60), 2000) is None  # Matroska
    True
    """
    pos = 0
    while pos + 8 <= len(head):
        length, kind = struct.unpack_from(">I4s", head, pos)
        if kind not in _TOP_LEVEL:
            return None
        if length == 1:  # a 64-bit size follows the type
            if pos + 16 > len(head):
                return None
            length = struct.unpack_from(">Q", head, pos + 8)[0]
        elif length == 0:  # to the end of the file: no box after it
            return None
        if length < 8 or pos + length > size:
            return None
        if kind == b"moov":
            return (pos, pos + length)
        pos += length
    if pos < len(head) or pos >= size:
        return None  # a header cut short, or no box after the last one
    return (pos, size)


_AVIO_BUFFER = 32 << 10
"""FFmpeg reads a file in buffers of this size: up to this much past the last byte it needs."""

_MAX_SAMPLES = 5_000_000
"""More samples than this in a track: not parsed (a 10-hour video at 60 fps has 2.2 M; raw
PCM in a MOV counts one a sound sample, 10 minutes of 48 kHz are 29 M: the probe reads as
before)."""


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """``(type, payload start, box end)`` of the boxes laid end to end in ``data[start:end]``;
    stops at one that does not fit."""
    pos = start
    while pos + 8 <= end:
        length, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if length == 1:
            if pos + 16 > end:
                return
            length, header = struct.unpack_from(">Q", data, pos + 8)[0], 16
        elif length == 0:
            length = end - pos
        if length < header or pos + length > end:
            return
        yield kind, pos + header, pos + length
        pos += length


def _child(data: bytes, start: int, end: int, *path: bytes) -> tuple[int, int] | None:
    """The payload span of the first box down ``path`` inside ``data[start:end]``."""
    for kind in path:
        found = next(((a, b) for k, a, b in _boxes(data, start, end) if k == kind), None)
        if found is None:
            return None
        start, end = found
    return start, end


@dataclass(frozen=True)
class _Track:
    """One track's samples: byte offset and size, decode time in seconds, in file order of
    decode."""

    handler: bytes
    offsets: np.ndarray
    sizes: np.ndarray
    times: np.ndarray


def _table(data: bytes, span: tuple[int, int] | None, dtype: str, width: int) -> np.ndarray:
    """A full box's entries after its version/flags and entry count, ``width`` fields each."""
    if span is None:
        raise ValueError("missing sample table")
    start, end = span
    (count,) = struct.unpack_from(">I", data, start + 4)
    if count * width > _MAX_SAMPLES * 2:
        raise ValueError("sample table too large")
    size = np.dtype(dtype).itemsize * width * count
    if start + 8 + size > end:
        raise ValueError("sample table runs off its box")
    return np.frombuffer(data, dtype, count * width, start + 8).astype(np.int64).reshape(count, width)


def _track(data: bytes, start: int, end: int) -> _Track | None:
    """A ``trak``'s samples, or None when it is neither video nor audio."""
    hdlr = _child(data, start, end, b"mdia", b"hdlr")
    mdhd = _child(data, start, end, b"mdia", b"mdhd")
    stbl = _child(data, start, end, b"mdia", b"minf", b"stbl")
    if hdlr is None or mdhd is None or stbl is None:
        return None
    handler = data[hdlr[0] + 8: hdlr[0] + 12]
    if handler not in (b"vide", b"soun"):
        return None
    version = data[mdhd[0]]
    (timescale,) = struct.unpack_from(">I", data, mdhd[0] + (20 if version == 1 else 12))
    a, b = stbl
    stts = _table(data, _child(data, a, b, b"stts"), ">u4", 2)
    stsc = _table(data, _child(data, a, b, b"stsc"), ">u4", 3)
    co64 = _child(data, a, b, b"co64")
    chunks = (_table(data, co64, ">u8", 1) if co64
              else _table(data, _child(data, a, b, b"stco"), ">u4", 1))[:, 0]
    stsz = _child(data, a, b, b"stsz")
    if stsz is None or timescale == 0:
        raise ValueError("missing sample sizes")
    fixed, count = struct.unpack_from(">II", data, stsz[0] + 4)
    if count > _MAX_SAMPLES:
        raise ValueError("too many samples")
    sizes = (np.full(count, fixed, np.int64) if fixed
             else _table(data, (stsz[0] + 4, stsz[1]), ">u4", 1)[:, 0])
    # Samples per chunk: each stsc entry holds from its first chunk up to the next entry's
    # (first chunks clipped to the chunks there are: a damaged table expands to no more).
    firsts = np.clip(np.append(stsc[:, 0], len(chunks) + 1), 1, len(chunks) + 1)
    per_chunk = np.repeat(stsc[:, 1], np.clip(np.diff(firsts), 0, None))
    in_chunks, in_times = np.cumsum(per_chunk), np.cumsum(stts[:, 0])
    n = min(count, int(in_chunks[-1]) if len(in_chunks) else 0, int(in_times[-1]) if len(in_times) else 0)
    k = np.arange(n)
    chunk_of = np.searchsorted(in_chunks, k, side="right")  # each sample's chunk
    sizes = sizes[:n]
    before = np.cumsum(sizes) - sizes  # bytes of the samples before each, all chunks together
    chunk_start = (in_chunks - per_chunk)[chunk_of]  # each sample's chunk's first sample
    offsets = chunks[chunk_of] + before - before[chunk_start] if n else np.zeros(0, np.int64)
    deltas = stts[np.searchsorted(in_times, k, side="right"), 1] if n else np.zeros(0, np.int64)
    times = (np.cumsum(deltas) - deltas) / timescale
    return _Track(handler, offsets, sizes, times)


def probe_ranges(moov: bytes, tail_s: float, *, slack_s: float = 0.25,
                 first: int = 2) -> list[tuple[int, int]]:
    """The byte ranges ``[start, end)`` that probing the MP4 whose ``moov`` box is ``moov``
    reads outside its head and index: each video and audio track's first ``first`` samples (the
    frame it decodes, past the head after a large index at the start; the audio's first second,
    which FFmpeg looks at, megabytes on where a muxer wrote the audio late), and their samples
    from ``tail_s`` seconds before the video's end, less ``slack_s`` (edit lists, a seek landing
    before its time), each with the buffer FFmpeg reads past it. Merged where they touch; empty
    for what this parser cannot read.

    Raises:
        ValueError: the sample tables are missing, inconsistent or absurdly large.
        struct.error: a box is cut short.
    """
    top = _child(moov, 0, len(moov), b"moov")
    start, end = top if top is not None else (0, len(moov))
    tracks = [t for kind, a, b in _boxes(moov, start, end) if kind == b"trak" and (t := _track(moov, a, b))]
    video = [t for t in tracks if t.handler == b"vide" and len(t.times)]
    if not video:
        return []
    since = max(float(t.times[-1]) for t in video) - tail_s - slack_s
    picked: list[tuple[int, int]] = []
    for t in tracks:
        keep = t.times >= since
        keep[:first] = True
        if t.handler == b"soun":  # FFmpeg reads on into the audio to know it (~16 KB a second)
            keep |= t.times < 1.0
        ends = t.offsets[keep] + t.sizes[keep] + _AVIO_BUFFER
        picked += zip((t.offsets[keep]).tolist(), ends.tolist(), strict=True)
    return merged(picked)
