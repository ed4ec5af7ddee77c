"""Where a completed embedding lives: in the state until a results part holds it, then only there.

An embedding is 4 KB of float32; the rest of a window's state is about 1 KB. Keeping every
embedding in ``units.embedding`` as well as in the Parquet parts (for interchange) and the search
matrix (for search) made ``state.sqlite`` 5.6 KB a window, so the state now hands each one over:

* :meth:`BlobQueries.release_embeddings` nulls the embeddings a part holds, called by the writer
  of that part only once the part is fsynced and renamed into place
  (:func:`seeknetic_prep.results.part_rows.append_results_part`). A crash before leaves the
  embedding in the state, a crash after leaves it in the part: never in neither.
* :meth:`BlobQueries.keep_embeddings` takes one back when the last part row holding it is about
  to be dropped (a path changed its content or was found gone, ``prune``): the content may
  come back under some path, and ``results --include-gone`` shows gone rows.
* :meth:`BlobQueries.repoll` is for what cannot be found anywhere any more (a part damaged or
  deleted after its run handed its embeddings over): those units go back to ``submitted``, so
  the next run over the same inputs asks the API for the result again (a job keeps its id and
  its result), instead of a row that says ``completed`` with no embedding.

The file shrinks because the database is in ``auto_vacuum=INCREMENTAL`` mode (new states are
made so; an older one is switched by one ``VACUUM`` right after its first hand-over, when it is
smallest) and each release ends with ``PRAGMA incremental_vacuum``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from seeknetic_prep.state.connection import Connection

__all__ = ["BlobQueries"]

_HANDED_OVER = "embeddings_in_parts"
_INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL


class BlobQueries(Connection):
    """Moving completed embeddings between the state and the results parts."""

    def release_embeddings(self, keys: Iterable[tuple[str, int]]) -> None:
        """Forget the embeddings of these ``(fingerprint, window_index)``: a part on disk holds
        them (call only once it is fsynced and in place). Freed pages leave the file."""
        self._write_many(
            ("UPDATE units SET embedding=NULL WHERE fingerprint=? AND window_index=? "
             "AND service='embedding' AND embedding IS NOT NULL", (fp, int(idx)))
            for fp, idx in keys
        )
        if self._auto_vacuum() == _INCREMENTAL:
            self._maintain("PRAGMA incremental_vacuum")

    def keep_embeddings(self, rows: Iterable[tuple[str, int, bytes]]) -> None:
        """Take back ``(fingerprint, window_index, float32 bytes)`` whose last part row is about
        to be dropped; committed before it returns (the caller then rewrites the part). A unit
        that still holds its embedding, or is not completed, is left as it is."""
        self._write_many(
            ("UPDATE units SET embedding=? WHERE fingerprint=? AND window_index=? "
             "AND service='embedding' AND status='completed' AND embedding IS NULL",
             (bytes(blob), fp, int(idx)))
            for fp, idx, blob in rows
        )

    def repoll(self, request_ids: Iterable[str]) -> None:
        """Completed units whose embedding is in neither the state nor a readable part: back to
        ``submitted``, so the next run over their files polls the API for their result again."""
        now = time.time()
        self._write_many(
            ("UPDATE units SET status='submitted', embedding=NULL, result=NULL, error=NULL, "
             "finished_run=NULL, updated_at=? WHERE request_id=? AND status='completed'", (now, rid))
            for rid in request_ids
        )

    def handed_over(self) -> bool:
        """Whether every part's embeddings were released once (a state of schema 3 or older kept
        them all; :func:`seeknetic_prep.results.finalize.finalize_run` hands them over once)."""
        return bool(self._read("SELECT 1 FROM meta WHERE key=?", (_HANDED_OVER,)))

    def mark_handed_over(self) -> None:
        """Record the hand-over, then switch an older file to incremental auto-vacuum: one
        ``VACUUM`` (it writes the whole database once, now that the embeddings left it)."""
        self._write("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    (_HANDED_OVER, str(time.time())))
        if self._auto_vacuum() != _INCREMENTAL:
            self._maintain("PRAGMA auto_vacuum=INCREMENTAL")
            self._maintain("VACUUM")

    def _auto_vacuum(self) -> int:
        return int(self._read("PRAGMA auto_vacuum")[0][0])
