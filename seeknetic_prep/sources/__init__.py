"""Where videos come from: local paths, URLs read through fsspec, and lists of either.

Each source gives the three things a run needs, the same way for every kind:

- **listing**: :func:`discover_sources` walks folders (:mod:`seeknetic_prep.pipeline.discover`)
  and lists bucket prefixes recursively (one listing per prefix), keeping the same video
  extensions; a path or URL named on its own is always taken.
- **a file-like opener**: :func:`open_source` gives a path back unchanged and a URL as a
  seekable :class:`~.reader.RangeReader` over range requests with a bounded read-ahead, which
  :class:`~seeknetic_prep.decode.decoder.VideoDecoder` reads as it reads a file.
- **identity**: :func:`source_fingerprint` hashes the same byte ranges as
  :func:`~seeknetic_prep.pipeline.payloads.file_fingerprint` (range requests for a URL), so the
  same bytes give the same request ids on a disk or in a bucket; :class:`~.remote.ObjectInfo`
  carries the size and ETag/version a listing gives, so a rerun skips known objects from the
  listing alone.

fsspec and the stores' packages are imported only when a URL is met: the core install stays
local-only (``pip install "seeknetic-prep[s3]"``, ``[gcs]``, ``[azure]`` add the stores).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, cast

from seeknetic_prep.errors import InvalidArgumentError, MediaError
from seeknetic_prep.pipeline.discover import discover
from seeknetic_prep.pipeline.payloads import file_fingerprint
from seeknetic_prep.sources.manifest import read_list
from seeknetic_prep.sources.urls import is_url, redact, scheme

__all__ = ["Found", "check_sources", "client_modules", "discover_sources", "is_url", "open_source",
           "read_list", "redact", "source_fingerprint"]

Found = tuple[str, "int | None", int]
"""A file to work on: ``(path or URL, size from the listing or None, version tag number)``."""


def discover_sources(items: Iterable[str | Path], *, extensions: frozenset[str]) -> list[Found]:
    """The files under ``items`` (paths, folders, URLs, prefixes), each once, in order.

    A prefix that cannot be listed (missing bucket, access denied) is returned as one entry,
    so that planning fails it with the reason (one line naming the URL) and the rest go on.

    Raises:
        InvalidArgumentError: a local path does not exist, or a store's package is missing.
    """

    local: list[str | Path] = []
    out: list[Found] = []
    seen: set[str] = set()
    for item in items:
        if not is_url(item):
            local.append(item)
            continue
        url = str(item)
        # fsspec and its store: only for URLs
        from seeknetic_prep.sources.remote import list_objects

        try:
            objects = list_objects(url)
        except MediaError:
            objects = []
            if url not in seen:
                seen.add(url)
                out.append((url, None, 0))
        named = len(objects) == 1 and objects[0].url.rstrip("/") == url.rstrip("/")
        for obj in objects:
            if (named or Path(obj.url.split("?", 1)[0]).suffix.lower() in extensions) and obj.url not in seen:
                seen.add(obj.url)
                out.append((obj.url, obj.size, obj.tag_number))
    if local:
        out += [(str(p), None, 0) for p in discover(local, extensions=extensions)]
    return out


def open_source(path: str) -> str | IO[bytes]:
    """What the decoder opens: a local path as it is, a URL as a seekable file over range
    requests (close it when done).

    Raises:
        MediaError: the object is missing, unreadable, empty, or a web page.
    """
    if not is_url(path):
        return path
    # fsspec and its store: only for URLs
    from seeknetic_prep.sources.remote import open_object

    return cast(IO[bytes], open_object(path))


def source_fingerprint(path: str) -> tuple[str, int, int]:
    """``(fingerprint, size, version tag number)`` of a path or URL: for a URL, one metadata
    request and range requests for the ranges :func:`file_fingerprint` reads.

    Raises:
        MediaError: it cannot be read.
    """

    if not is_url(path):
        fp = file_fingerprint(path)
        return fp, Path(path).stat().st_size, 0
    # fsspec and its store: only for URLs
    from seeknetic_prep.sources.remote import _mapped, fingerprint_object, object_info, open_for_fingerprint

    info = object_info(path)
    with open_for_fingerprint(path, info) as reader, _mapped(path):
        fp = fingerprint_object(reader)
    return fp, info.size, info.tag_number


def client_modules(paths: Iterable[str]) -> list[str]:
    """The modules a worker imports to read ``paths`` (none for local paths), for a fork
    server to import once instead of every worker (s3fs with aiobotocore: ~0.6 s each).

    >>> client_modules(["a.mp4", "s3://b/x.mp4", "s3://b/y.mp4"])
    ['seeknetic_prep.sources.remote', 's3fs']
    """
    schemes = dict.fromkeys(scheme(p) for p in paths if is_url(p))
    if not schemes:
        return []
    # the store's package per scheme, as remote.filesystem() names it when it is missing
    from seeknetic_prep.sources.remote import store_package

    return ["seeknetic_prep.sources.remote", *dict.fromkeys(store_package(s) for s in schemes)]


def check_sources(items: Iterable[str]) -> None:
    """Refuse a local path that does not exist (exit 2, as before URLs were taken); URLs are
    checked by listing them."""

    for p in items:
        if not is_url(p) and not os.path.lexists(p):
            raise InvalidArgumentError(f"Invalid path {p!r}: no such file or folder.")
