"""What a run works on: the videos under its paths, and which of them the state has finished.

Kept out of the driver, which only wires stages: finding the files (folders walked, bucket
prefixes listed, one line when there are none) and recognising a finished one without reading
it (one indexed lookup by path and stat, or by URL and listing) are questions about the inputs,
answered before any stage starts and again as each file comes up.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from seeknetic_prep.errors import InvalidArgumentError
from seeknetic_prep.pipeline.discover import count_files
from seeknetic_prep.sources import Found, check_sources, discover_sources, is_url, redact
from seeknetic_prep.state.rows import FileRow
from seeknetic_prep.state.store import Store

__all__ = ["file_size", "find_videos", "known_row"]


def find_videos(paths: list[str], extensions: frozenset[str]) -> list[Found]:
    """The video files under ``paths`` and the objects under URL prefixes (paths, sizes and
    version tags: small), or one line saying why none."""
    check_sources(paths)
    found = discover_sources(paths, extensions=extensions)
    if not found:
        others = count_files([p for p in paths if not is_url(p)])
        looked = ", ".join(sorted(extensions)[:6]) + (", ..." if len(extensions) > 6 else "")
        raise InvalidArgumentError(
            f"no video files under {', '.join(redact(p) for p in paths)} (looked for {looked}); "
            f"{others} other file(s) skipped. Use --extensions to pick up other names.")
    return found


def known_row(store: Store, path: str, listed: dict[str, tuple[int, int]],
              services: Sequence[str]) -> FileRow | None:
    """The finished row of a file whose path, size, mtime and inode match: one indexed lookup,
    no fingerprint, no probe (a no-op resume stays cheap). An object in a bucket is known by its
    URL, the listing's size and its version tag (ETag or version id): a rerun over a bucket
    costs one listing, not a request an object."""
    if is_url(path):
        size, tag = listed.get(path, (None, 0))
        if size is None or not tag:
            return None
        return store.known_file(redact(path), size=size, mtime_ns=tag, inode=0, services=services)
    try:
        st = os.stat(path)
    except OSError:
        return None  # planning says why
    return store.known_file(path, size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino,
                            services=services)


def file_size(path: Path) -> int:
    """A local file's size, to start the biggest first; 0 when it cannot be read."""
    try:
        return path.stat().st_size
    except OSError:
        return 0  # planning reports why
