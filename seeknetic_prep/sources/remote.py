"""Objects in buckets and on web servers, through fsspec: listing, identity, range reads.

The only module that imports fsspec (and, through it, ``s3fs``, ``gcsfs``, ``adlfs``,
``aiohttp``), and the one place their exceptions become ours: every call goes through
:func:`_mapped`, which raises :class:`~seeknetic_prep.errors.MediaError` naming the redacted
URL and a one-line cause. Causes that depend on the world rather than on the bytes (missing,
access denied, a 503, a reset connection) start with ``missing`` or ``unreadable``, so the
next run tries the object again; an object's bad content fails as a local file's does.

Credentials are never passed here: each store's client finds them in its standard chain
(environment, config files, instance or workload identity), as ``aws``, ``gcloud`` and ``az``
do, and fsspec's ``FSSPEC_<PROTOCOL>_<OPTION>`` variables configure the rest (an endpoint).
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from seeknetic_prep.decode.boxes import TAIL_SECONDS, index_span, probe_ranges
from seeknetic_prep.errors import InvalidArgumentError, MediaError
from seeknetic_prep.pipeline.payloads import fingerprint_of, fingerprint_ranges
from seeknetic_prep.sources.blocks import SHARED_BLOCKS
from seeknetic_prep.sources.reader import RangeReader
from seeknetic_prep.sources.urls import redact, scheme, scrub

__all__ = ["ObjectInfo", "fetch_range", "filesystem", "fingerprint_object", "list_objects", "object_info",
           "open_for_fingerprint", "open_object", "store_package", "warm_clients", "warm_probe"]

_HEAD = 4096
"""Bytes of an object's head looked at when it is opened: a web page's start, an MP4's top-level
box headers (where its index lies)."""
_EXTRA = {"s3": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure",
          "http": "http", "https": "http"}
_PACKAGE = {"s3": "s3fs", "gcs": "gcsfs", "azure": "adlfs", "http": "aiohttp"}


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing says of an object: its URL, size, and version tag (ETag, generation or
    version id; ``""`` when the store gives none)."""

    url: str
    size: int
    tag: str = ""

    @property
    def tag_number(self) -> int:
        """The tag as a 63-bit number (0 without one), for a state that keys files by numbers."""
        if not self.tag:
            return 0
        return int.from_bytes(hashlib.sha256(self.tag.encode()).digest()[:8], "big") >> 1


def store_package(proto: str) -> str:
    """The package that reads ``proto://`` objects (``s3`` -> ``s3fs``, ``https`` -> ``aiohttp``)."""
    return _PACKAGE.get(_EXTRA.get(proto, proto), "fsspec")


def filesystem(url: str) -> Any:
    """The fsspec filesystem for ``url``'s scheme (cached per process by fsspec).

    Raises:
        InvalidArgumentError: the package for that store is not installed (says which extra).
    """
    proto = scheme(url)
    try:
        # fsspec: an optional extra (the s3, gs, az and https stores)
        import fsspec

        return fsspec.filesystem(proto)
    except ImportError as exc:
        extra = _EXTRA.get(proto, proto)
        hint = (f'pip install "seeknetic-prep[{extra}]"' if extra != "http"
                else 'pip install fsspec aiohttp (or any of the extras s3, gcs, azure)')
        raise InvalidArgumentError(
            f"Invalid source {redact(url)!r}: reading {proto}:// needs {store_package(proto)}; "
            f"{hint}.") from exc


@contextlib.contextmanager
def _mapped(url: str) -> Iterator[None]:
    try:
        yield
    except (MediaError, InvalidArgumentError):
        raise
    except Exception as exc:
        _raise_mapped(url, exc)


def _status(exc: BaseException) -> int:
    """The HTTP status in ``exc`` or its causes (fsspec's HTTP raises ``FileNotFoundError`` from
    aiohttp's error, whatever the status was), 0 without one."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        status = getattr(seen, "status", None) or getattr(seen, "code", None)
        if isinstance(status, int) and 100 <= status < 600:
            return status
        seen = seen.__cause__ or seen.__context__
    return 0


def _raise_mapped(url: str, exc: BaseException) -> NoReturn:
    name = redact(url)
    status = _status(exc)
    if status in (401, 403):
        exc = PermissionError(f"HTTP {status}")
    elif status >= 500 or status in (408, 429):
        exc = ConnectionError(f"HTTP {status} from the server")
    text = " ".join(str(exc).split())
    low = f"{type(exc).__name__} {text}".lower()
    if isinstance(exc, FileNotFoundError) or "nosuchbucket" in low or "nosuchkey" in low or " 404" in low:
        what = "bucket" if "bucket" in low else "object"
        raise MediaError(name, f"missing: no such {what}") from exc
    if isinstance(exc, PermissionError) or any(w in low for w in (
            "accessdenied", "access denied", "forbidden", " 403", "invalidaccesskeyid",
            "signaturedoesnotmatch", "expiredtoken", "unauthorized", " 401", "nocredentials",
            "unable to locate credentials")):
        raise MediaError(name, "unreadable: access denied (check the store's credentials: environment, "
                         "config files or instance role)") from exc
    # The exception's text can hold the full URL with its signature: never shown.
    short = scrub(text, url)[:200] if text else type(exc).__name__
    raise MediaError(name, f"unreadable: {type(exc).__name__}: {short}") from exc


def object_info(url: str) -> ObjectInfo:
    """The object's size and version tag, from one metadata request.

    Raises:
        MediaError: missing, access denied, or unreachable (all retried by the next run).
    """
    fs = filesystem(url)
    with _mapped(url):
        info = fs.info(url)
    if info.get("type") == "directory":
        raise MediaError(redact(url), "missing: no such object (a prefix holding no video)")
    return _object(fs, url, info)


def _object(fs: Any, url: str, info: dict[str, Any]) -> ObjectInfo:
    tag = ""
    for key in ("VersionId", "version_id", "generation", "ETag", "etag", "md5Hash", "content_md5"):
        value = info.get(key)
        if value:
            tag = f"{key}={str(value).strip(chr(34))}"
            break
    size = info.get("size")
    if size is None:
        raise MediaError(redact(url), "unreadable: the server does not say the object's size")
    return ObjectInfo(url, int(size), tag)


def list_objects(url: str) -> list[ObjectInfo]:
    """Every object under the prefix ``url`` (recursively, sorted; names starting with a dot
    left out), with one listing; a URL that names one object gives that object.

    http(s) URLs are not listed: each names one object.

    Raises:
        MediaError: the bucket or prefix is missing, or access is denied.
    """
    fs = filesystem(url)
    if scheme(url) in ("http", "https"):
        return [object_info(url)]
    with _mapped(url):
        fs.invalidate_cache()  # a listing is the start of a run: never an earlier run's, in this process
        found = fs.find(url, detail=True)
    if not found:
        return [object_info(url)]  # one object, or why there is none
    out = []
    root = fs._strip_protocol(url).rstrip("/")
    for path, info in sorted(found.items()):
        rel = path[len(root):] if path.startswith(root) else path
        if info.get("type") == "directory" or any(p.startswith(".") for p in rel.split("/") if p):
            continue
        out.append(_object(fs, _unstrip(url, path), info))
    return out


def _unstrip(url: str, path: str) -> str:
    return f"{url.split('://', 1)[0]}://{path}"


def fetch_range(url: str, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of the object, one range request.

    Raises:
        OSError: the request failed (its message names the redacted URL, never a signature).
    """
    try:
        data: bytes = filesystem(url).cat_file(url, start=start, end=end)
        return data
    except OSError:
        raise
    except Exception as exc:  # botocore/aiohttp errors: an OSError for the reader
        raise OSError(scrub(f"{type(exc).__name__}: {' '.join(str(exc).split())}", url)[:200]) from exc


def open_object(url: str, info: ObjectInfo | None = None, *, shared: bool = False,
                expect: Sequence[tuple[int, int]] | None = None,
                warm: Sequence[tuple[int, int]] = ()) -> RangeReader:
    """``url`` as a seekable binary file over range requests (see :class:`RangeReader`);
    ``shared``: with the blocks this process's earlier readers of it fetched (a decode worker's
    plan and tasks: :data:`~.blocks.SHARED_BLOCKS`); ``expect``: byte ranges about to be read
    (:meth:`RangeReader.expect`), the first look at the object's head included. An MP4's index,
    found from the box headers in that head, is expected as well (``RangeReader.index``).
    ``warm``: byte ranges fetched all at once before that look (:meth:`RangeReader.warm`: what
    opening the container reads, as the object's plan saw it).

    Raises:
        MediaError: its size cannot be found (missing, access denied, unreachable), or it is
            empty, or the server answers a web page instead of the object.
    """
    reader = open_for_fingerprint(url, info or object_info(url), shared=shared)
    if expect is not None:
        reader.expect(expect)
    with _mapped(url):
        reader.warm(warm)
        _look_at_head(reader)  # from the first block: one request (none when warmed)
    return reader


def open_for_fingerprint(url: str, info: ObjectInfo, *, shared: bool = False) -> RangeReader:
    """:func:`open_object` for :func:`fingerprint_object`, which takes the look at its head from
    the first of the ranges it requests at once: no request before those.

    Raises:
        MediaError: it is empty.
    """
    if info.size == 0:
        raise MediaError(redact(url), "empty: the object has 0 bytes")

    def fetch(start: int, end: int) -> bytes:
        return fetch_range(url, start, end)

    return RangeReader(redact(url), info.size, fetch,
                       shared=(SHARED_BLOCKS, (url, info.size)) if shared else None)


def _look_at_head(reader: RangeReader) -> None:
    """Refuse a web page; keep an MP4's index expected (``RangeReader.index``)."""
    reader.seek(0)
    first = reader.read(_HEAD)
    if first[:64].lstrip().lower().startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        raise MediaError(reader.name, "unreadable: the URL answered a web page (HTML), not the video "
                         "(an error or sign-in page?)")
    reader.index = index_span(first, reader.size)  # an MP4's index: fetched in large requests
    reader.seek(0)


def fingerprint_object(reader: RangeReader) -> str:
    """The fingerprint of the object ``reader`` reads: the byte ranges a local file's is made
    of (:func:`~seeknetic_prep.pipeline.payloads.fingerprint_ranges`), so the same bytes give the
    same request ids anywhere, requested all at once: one after another, its ten ranges were ten
    round trips before a plan could start, and its first MiB holds the look at the object's
    head (a web page is refused here). The first and last MiB are kept in the reader, for the
    probe that reads them next.

    Raises:
        OSError: a request failed.
        MediaError: the server answered a web page.
    """
    ranges = fingerprint_ranges(reader.size)
    parts = dict(zip(ranges, reader.read_many(ranges), strict=True))
    _look_at_head(reader)
    return fingerprint_of(reader.size, lambda offset, length: parts[(offset, length)])


_INDEX_PARSED_MAX = 16 << 20
"""A larger index is not parsed for :func:`warm_probe` (the probe reads it anyway)."""


def warm_probe(reader: RangeReader) -> None:
    """Fetch at once what probing the object reads beyond its head and index: an MP4's first
    packets and last seconds, where its index says they lie
    (:func:`~seeknetic_prep.decode.boxes.probe_ranges`). The probe found them one miss after
    another, each a round trip with the worker's core idle (50 ms from the store: ~0.3 s a
    plan). Reads the index, which the probe reads next anyway. A file that is not an MP4, an
    index this cannot parse, or more than half the reader's cache: nothing more is fetched, and
    the probe reads as it always did.

    Raises:
        OSError: a request failed (the probe would have met it too).
    """
    span = reader.index
    if span is None or span[1] - span[0] > _INDEX_PARSED_MAX:
        return
    start, end = span
    here = reader.tell()
    reader.seek(start)
    moov = reader.read(end - start)  # from the blocks here: the fingerprint's tail or head
    reader.seek(here)
    try:
        ranges = probe_ranges(moov, TAIL_SECONDS)
    except (ValueError, IndexError, struct.error):
        return
    reader.warm(ranges)


def warm_clients() -> None:
    """Make the S3 client of this process now, if its package is loaded (the fork server loads
    it for a run over ``s3://``: :func:`~seeknetic_prep.sources.client_modules`).

    A decode worker starts while the driver still checks the key; its first range request then
    built the client (botocore's service model, endpoints, the credential chain: ~0.15 s of CPU)
    on the run's critical path, as the first file's plan waited. Never fails: a client that
    cannot be made now fails the first request, which says why."""
    if "s3fs" not in sys.modules:
        return
    with contextlib.suppress(Exception):
        filesystem("s3://").connect()
