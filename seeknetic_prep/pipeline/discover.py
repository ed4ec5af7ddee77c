"""Which files a run works on.

``discover`` walks folders recursively and keeps candidates by extension (``VIDEO_EXTENSIONS``,
configurable), skipping hidden files and folders, following symlinks without looping, and
listing each real file once. Whether a candidate is usable video is decided later by decoding
it, so a misnamed or broken file is reported failed rather than silently skipped. (What names
a file's content is :func:`seeknetic_prep.pipeline.payloads.file_fingerprint`.)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from seeknetic_prep.errors import InvalidArgumentError

__all__ = ["VIDEO_EXTENSIONS", "count_files", "discover", "no_video_files", "parse_extensions"]

VIDEO_EXTENSIONS: frozenset[str] = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
    ".m2ts", ".wmv", ".flv", ".3gp", ".ogv", ".mxf",
})
"""Lower-case suffixes ``run`` treats as video when walking a folder (``--extensions``)."""


def parse_extensions(text: str) -> frozenset[str]:
    """``"mp4,.MOV, mkv"`` -> ``{".mp4", ".mov", ".mkv"}``."""
    exts = {("." + e.strip().lstrip(".")).lower() for e in text.split(",") if e.strip()}
    if not exts:
        raise InvalidArgumentError(f"Invalid extension list {text!r}: must name at least one extension.")
    return frozenset(exts)


def discover(paths: Iterable[str | Path], *, extensions: frozenset[str] = VIDEO_EXTENSIONS) -> Iterator[Path]:
    """Yield the files to work on, each real file once, in a stable (sorted) order per folder.

    A path given explicitly as a file is taken whatever its extension or name (even a FIFO or a
    device: it is then reported failed with the reason, never silently dropped); folders are
    walked for regular files whose suffix is in ``extensions``.

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
        if not root.is_dir():  # a file, or a FIFO/device named on purpose: planning says why not
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


def count_files(paths: Iterable[str | Path]) -> int:
    """How many files (of any name) the folders among ``paths`` hold: said when none is video."""
    seen: set[tuple[int, int]] = set()
    return sum(1 for p in paths if Path(p).is_dir() for _ in _walk(Path(p), seen))


def no_video_files(paths: Sequence[str | Path], extensions: frozenset[str]) -> InvalidArgumentError:
    """The error for paths under which :func:`discover` found nothing: what was looked for,
    how many other files were skipped, and the flag that picks them up."""
    others = count_files(paths)
    looked = ", ".join(sorted(extensions)[:6]) + (", ..." if len(extensions) > 6 else "")
    return InvalidArgumentError(
        f"no video files under {', '.join(str(p) for p in paths)} (looked for {looked}); "
        f"{others} other file(s) skipped. Use --extensions to pick up other names.")


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
