"""Which files a run works on, and what names their content.

``discover`` walks folders recursively and keeps candidates by extension (``VIDEO_EXTENSIONS``,
configurable), skipping hidden files and folders, following symlinks without looping, and
listing each real file once. Whether a candidate is usable video is decided later by decoding
it, so a misnamed or broken file is reported failed rather than silently skipped.

``fingerprint`` names a file by its content, never its path or mtime, so renaming or copying a
file does not redo its work and changing its bytes does. Files up to ``FULL_HASH_BYTES`` are
hashed whole (they are read again by the decoder straight from the page cache); larger ones
by their size and ``SAMPLES`` evenly spaced 256 KiB blocks including the first and the last,
so a multi-GB file is not read twice. ``request_id_for`` turns (fingerprint, window, service,
attempt) into the deterministic id every upload and job of that unit uses.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import InvalidArgumentError

__all__ = [
    "FULL_HASH_BYTES",
    "VIDEO_EXTENSIONS",
    "discover",
    "fingerprint",
    "parse_extensions",
    "request_id_for",
]

VIDEO_EXTENSIONS: frozenset[str] = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
    ".m2ts", ".wmv", ".flv", ".3gp", ".ogv", ".mxf",
})
"""Lower-case suffixes ``run`` treats as video when walking a folder (``--extensions``)."""

FULL_HASH_BYTES = 256 * 1024 * 1024
SAMPLES = 64
_BLOCK = 256 * 1024
_SERVICE_CODE = {"embedding": "emb", "tagging": "tag"}


def parse_extensions(text: str) -> frozenset[str]:
    """``"mp4,.MOV, mkv"`` -> ``{".mp4", ".mov", ".mkv"}``."""
    exts = {("." + e.strip().lstrip(".")).lower() for e in text.split(",") if e.strip()}
    if not exts:
        raise InvalidArgumentError(f"Invalid extension list {text!r}: must name at least one extension.")
    return frozenset(exts)


def discover(paths: Iterable[str | Path], *, extensions: frozenset[str] = VIDEO_EXTENSIONS) -> Iterator[Path]:
    """Yield the files to work on, each real file once, in a stable (sorted) order per folder.

    A path given explicitly as a file is taken whatever its extension or name; folders are
    walked for files whose suffix is in ``extensions``.

    Raises:
        InvalidArgumentError: a given path does not exist.
    """
    seen_files: set[Path] = set()
    seen_dirs: set[tuple[int, int]] = set()
    roots = [Path(p) for p in paths]
    for root in roots:
        if not root.exists():
            raise InvalidArgumentError(f"Invalid path {str(root)!r}: no such file or folder.")
    for root in roots:
        if root.is_file():
            real = root.resolve()
            if real not in seen_files:
                seen_files.add(real)
                yield root
            continue
        for file in _walk(root, seen_dirs):
            if file.suffix.lower() not in extensions:
                continue
            real = file.resolve()
            if real in seen_files or not real.is_file():
                continue
            seen_files.add(real)
            yield file


def _walk(folder: Path, seen_dirs: set[tuple[int, int]]) -> Iterator[Path]:
    try:
        st = folder.stat()
    except OSError:
        return
    ident = (st.st_dev, st.st_ino)
    if ident in seen_dirs:  # a symlink loop or a folder reached twice
        return
    seen_dirs.add(ident)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=True):
                yield from _walk(path, seen_dirs)
            elif entry.is_file(follow_symlinks=True):
                yield path
        except OSError:
            continue


def fingerprint(path: str | Path) -> str:
    """A 32-hex-digit name of the file's content (see the module docstring for the scheme).

    >>> fingerprint("clip.mp4")  # doctest: +SKIP
    '3f2a...'
    """
    h = hashlib.blake2b(digest_size=16, person=b"seeknetic-fp1")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h.update(size.to_bytes(8, "little"))
        if size <= FULL_HASH_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            step = (size - _BLOCK) // (SAMPLES - 1)
            for i in range(SAMPLES):
                f.seek(i * step)
                h.update(f.read(_BLOCK))
    return h.hexdigest()


def request_id_for(fingerprint: str, window_index: int, service: str, attempt: int = 0) -> str:
    """The deterministic request id of one unit, e.g. ``sp1-<24 hex>-w000003-emb``.

    ``attempt`` > 0 (``--retry-failed``) adds ``-r<attempt>``: a job id is the server's forever,
    so a retried unit needs a new one.
    """
    rid = f"sp1-{fingerprint[:24]}-w{window_index:06d}-{_SERVICE_CODE.get(service, service[:3])}"
    return rid if attempt == 0 else f"{rid}-r{attempt}"
