"""Where an MP4's index lies, from the box headers at its start: no PyAV, a few bytes.

An MP4 or MOV keeps every packet's position in its ``moov`` box, written before the media
(``faststart``) or after it, and a long file's is megabytes (a 2-hour video at 30 fps: ~5 MB).
Opening the file reads all of it, and through range requests a reader that does not know how
far it goes asks for one block, then two, then four: seven requests for 10 MB. The top-level
boxes say where it is: ``ftyp``, then ``moov`` or ``mdat``, each with its size, so the first
few bytes are enough to tell a reader the span to fetch in large requests
(:meth:`~seeknetic_prep.sources.reader.RangeReader.expect`).
"""

from __future__ import annotations

import struct

__all__ = ["index_span"]

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
