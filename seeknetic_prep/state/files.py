"""File queries: every path a run saw, and the lookup that lets a rerun skip a finished one.

The ``files`` table maps each absolute path (its bytes, so any name round-trips) to its content
fingerprint, its ``stat`` identity (size, mtime, inode) and whether it could be preprocessed.
The identity is what makes a no-op resume cheap: :meth:`FileQueries.known_file` is one
primary-key lookup per file, instead of fingerprinting and probing it again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

from seeknetic_prep.state.connection import Connection
from seeknetic_prep.state.rows import FileRow, FileStatus, path_bytes, safe_text

__all__ = ["FileQueries"]


_FAILED_BY_CONTENT = ("EXISTS (SELECT 1 FROM units u WHERE u.fingerprint = f.fingerprint "
                      "AND u.status = 'failed' AND u.error = f.error)")
"""A files row ``f`` whose error its content's failed units carry: its content failed for good."""


def _inherit_decoder(path: str | os.PathLike[str], fingerprint: str) -> tuple[str, tuple[Any, ...]]:
    """The statement that copies a content's recorded decoder to ``path`` when it has none."""
    return (
        "UPDATE files SET media = json_set(coalesce(media, '{}'), '$.decoder', "
        "(SELECT json_extract(o.media, '$.decoder') FROM files o WHERE o.fingerprint = ?1 "
        "AND json_extract(o.media, '$.decoder') IS NOT NULL LIMIT 1)) "
        "WHERE path = ?2 AND json_extract(coalesce(media, '{}'), '$.decoder') IS NULL "
        "AND EXISTS (SELECT 1 FROM files o WHERE o.fingerprint = ?1 "
        "AND json_extract(o.media, '$.decoder') IS NOT NULL)",
        (fingerprint, path_bytes(path)))


class FileQueries(Connection):
    """The ``files`` table: what became of each path."""

    def record_file(
        self,
        path: str | os.PathLike[str],
        *,
        status: FileStatus,
        fingerprint: str | None = None,
        size: int | None = None,
        duration_ms: int | None = None,
        error: str | None = None,
        mtime_ns: int | None = None,
        inode: int | None = None,
        media: dict[str, Any] | None = None,
        inherit_decoder: bool = False,
    ) -> None:
        """Record a path (made absolute; its bytes kept exactly) and what became of it.

        ``inherit_decoder``: give the path the decoder recorded for its content under another
        path, in the same commit (a copy found after its content was decoded is never decoded
        again, so :meth:`record_decoder` would not reach it).

        Give ``size``, ``mtime_ns`` and ``inode`` from the ``os.stat`` taken *before* the file
        was fingerprinted, so :meth:`known_file` can skip it next time; a file changed since
        then no longer matches and is redone. The path is tagged with the run in progress only
        when something about it changed, so the end of a run rewrites only what it touched.
        """
        self._write_many([(
            "INSERT INTO files (path, fingerprint, size, mtime_ns, inode, duration_ms, status, error, "
            "run_id, updated_at, media) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(path) DO UPDATE SET "
            "media = CASE WHEN excluded.fingerprint IS files.fingerprint "  # a new probe keeps the decoder
            "THEN coalesce(json_patch(files.media, excluded.media), excluded.media, files.media) "
            "ELSE excluded.media END, "
            "run_id = CASE WHEN files.fingerprint IS excluded.fingerprint AND files.status = excluded.status "
            "AND files.error IS excluded.error THEN files.run_id ELSE excluded.run_id END, "
            "fingerprint=excluded.fingerprint, size=excluded.size, mtime_ns=excluded.mtime_ns, "
            "inode=excluded.inode, duration_ms=excluded.duration_ms, status=excluded.status, "
            "error=excluded.error, updated_at=excluded.updated_at",
            (path_bytes(path), fingerprint, size, mtime_ns, inode, duration_ms, status, safe_text(error),
             self._run_id, time.time(), None if media is None else json.dumps(media, sort_keys=True)),
        ), *([_inherit_decoder(path, fingerprint)] if inherit_decoder and fingerprint else [])])

    def known_file(
        self,
        path: str | os.PathLike[str],
        *,
        size: int,
        mtime_ns: int,
        inode: int,
        services: Sequence[str] = ("embedding", "tagging"),
    ) -> FileRow | None:
        """The finished row of this path if the file is unchanged, else ``None``.

        One lookup by primary key: the path's row must have the same size, mtime and inode,
        status ``ok`` (or ``failed`` by its content, for good: see :meth:`content_failure`),
        every service in ``services`` planned, and no unit left unfinished. A rerun can then
        skip the file without fingerprinting or probing it.
        """
        has_services = " ".join(
            "AND EXISTS (SELECT 1 FROM units u WHERE u.fingerprint = f.fingerprint AND u.service = ?)"
            for _ in services
        )
        rows = self._read(
            f"SELECT {FileRow.COLUMNS} FROM files f WHERE path=? AND size=? AND mtime_ns=? AND inode=? "
            f"AND (status='ok' OR (status='failed' AND {_FAILED_BY_CONTENT})) "
            "AND NOT EXISTS (SELECT 1 FROM units u WHERE u.fingerprint = f.fingerprint "
            f"AND u.status NOT IN ('completed', 'failed')) {has_services}",
            (path_bytes(path), size, mtime_ns, inode, *services),
        )
        return FileRow.of(rows[0]) if rows else None

    def files(self) -> list[FileRow]:
        """Every path seen, once each, ordered by its bytes."""
        return [FileRow.of(r) for r in self._read(f"SELECT {FileRow.COLUMNS} FROM files ORDER BY path")]

    def content_failure(self, fingerprint: str) -> str | None:
        """Why the content ``fingerprint`` failed for good, or None: a path of it recorded
        failed (or failed, then found gone: renamed away) whose error its failed units carry:
        what a content failure leaves. An environmental one leaves the units unfailed, and
        ``--retry-failed`` puts them back, so neither counts; nor does a path ``prune`` forgot."""
        rows = self._read(
            "SELECT f.error FROM files f WHERE f.fingerprint=? AND f.status IN ('failed', 'gone') "
            f"AND f.error IS NOT NULL AND {_FAILED_BY_CONTENT} LIMIT 1", (fingerprint,))
        return str(rows[0][0]) if rows else None

    def ok_paths(self, fingerprint: str) -> list[bytes]:
        """The paths (as bytes) whose content is ``fingerprint`` and that were preprocessed."""
        return [bytes(p) for (p,) in self._read(
            "SELECT path FROM files WHERE fingerprint=? AND status='ok'", (fingerprint,))]

    def record_decoder(self, fingerprint: str, decoder: str) -> None:
        """What decoded this content (``cpu`` or ``cuda``), in the media of every path that
        holds it: the results' ``decoder`` column."""
        self._write_many([(
            "UPDATE files SET media = json_set(coalesce(media, '{}'), '$.decoder', ?) WHERE fingerprint = ?",
            (decoder, fingerprint))])

    def media_of(self, paths: Sequence[bytes]) -> dict[bytes, dict[str, Any]]:
        """What each of ``paths`` is (its probe, as recorded), where it is known."""
        out: dict[bytes, dict[str, Any]] = {}
        for start in range(0, len(paths), 500):
            chunk = list(paths[start:start + 500])
            marks = ",".join("?" * len(chunk))
            for raw, text in self._read(
                    f"SELECT path, media FROM files WHERE media IS NOT NULL AND path IN ({marks})", chunk):
                out[bytes(raw)] = json.loads(text)
        return out

    def live_paths_under(self, root: bytes) -> list[bytes]:
        """The recorded paths that are ``root`` or lie under it (``root/...``), not gone:
        one range scan of the primary key."""
        prefix = root.rstrip(b"/") + b"/"
        return [bytes(p) for (p,) in self._read(
            "SELECT path FROM files WHERE status != 'gone' AND (path = ? OR (path >= ? AND path < ?))",
            (root, prefix, prefix[:-1] + b"0"))]  # "0" follows "/": every path under the folder

    def mark_gone(self, paths: Sequence[bytes]) -> None:
        """These paths no longer exist where the run looked: ``gone``, tagged with the run in
        progress (its part says so), their fingerprint kept (a file that comes back is not
        submitted again)."""
        now = time.time()
        # a failed path keeps its error: a content that failed for good stays failed when renamed
        self._write_many([("UPDATE files SET error = CASE WHEN status='failed' THEN error END, "
                           "status='gone', run_id=?, updated_at=? "
                           "WHERE path=? AND status != 'gone'", (self._run_id, now, raw)) for raw in paths])

    def gone_paths(self) -> list[bytes]:
        """The paths a run found gone (deleted or renamed away), for ``prune``."""
        return [bytes(p) for (p,) in self._read("SELECT path FROM files WHERE status='gone'")]

    def forget_gone(self, paths: Sequence[bytes]) -> None:
        """Forget these gone paths for good. Their contents' units stay: a file of the same
        bytes that appears later is still not submitted again."""
        self._write_many([("DELETE FROM files WHERE path=? AND status='gone'", (raw,)) for raw in paths])

    def files_recorded_in(self, run_id: int) -> list[FileRow]:
        """The paths run ``run_id`` recorded or changed (``files.run_id``), for its results part."""
        return [FileRow.of(r) for r in self._read(
            f"SELECT {FileRow.COLUMNS} FROM files WHERE run_id=?", (run_id,))]
