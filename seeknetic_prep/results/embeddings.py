"""Embeddings read back from the parts, for the readers that used to find them in the state.

A completed embedding stays in ``state.sqlite`` only until a results part holds it
(:mod:`seeknetic_prep.state.blobs`): each one is then on disk twice, in the Parquet parts (for
interchange) and in the search matrix (for search; L2-normalised, so not a copy to read back).
What still needs the values themselves reads them here: a part that repeats a known content's
windows under a new path (a renamed or copied file, a run killed before its part), the report's
neighbours, ``results --include-gone``.

Reading is cheap because it is narrow: the parts' key columns (no embeddings) find the rows, and
only the row groups that hold them (:data:`~seeknetic_prep.results.parts.ROW_GROUP_ROWS` rows
each) are decoded. Every row of one ``(fingerprint, window_index)`` that says ``completed`` holds
the same values (a completed unit never changes), so any one will do.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from seeknetic_prep.state.store import Store

__all__ = ["find_embeddings", "hand_over", "held_keys"]

Key = tuple[str, int]


def find_embeddings(parts: Sequence[Path], wanted: Collection[Key]) -> dict[Key, bytes]:
    """The float32 bytes of each ``(fingerprint, window_index)`` of ``wanted`` that one of
    ``parts`` (oldest first, as :func:`~seeknetic_prep.results.parts.list_parts` gives them)
    holds; what none holds is missing from the answer. A damaged part is skipped
    (:func:`~seeknetic_prep.results.part_rows.ensure_parts` deals with it).

    >>> find_embeddings(list_parts(out), {("9f2c...", 0)})  # doctest: +SKIP
    {('9f2c...', 0): b'\\x12\\x0b...'}
    """
    left = set(wanted)
    found: dict[Key, bytes] = {}
    if not left:
        return found
    fingerprints = pa.array(sorted({fp for fp, _ in left}), pa.string())
    for part in reversed(parts):  # the newest first: the likeliest to hold them
        try:
            source = pq.ParquetFile(part)
            keys = source.read(columns=["fingerprint", "window_index", "embedding_status"])
        except (OSError, pa.ArrowException):
            continue
        hit = pc.and_(pc.is_in(keys["fingerprint"], value_set=fingerprints),
                      pc.equal(keys["embedding_status"], "completed"))
        rows = np.flatnonzero(pc.fill_null(hit, False).to_numpy(zero_copy_only=False))
        fps, idxs = keys["fingerprint"].to_pylist(), keys["window_index"].to_pylist()
        mine: dict[int, Key] = {}
        for row in rows.tolist():
            key = (fps[row], idxs[row])
            if key in left and key not in mine.values():
                mine[row] = key
        found.update(_read_rows(source, mine))
        left -= set(found)
        if not left:
            break
    return found


def _read_rows(source: pq.ParquetFile, rows: dict[int, Key]) -> dict[Key, bytes]:
    """The embeddings of ``rows`` (row number -> key), decoding only their row groups."""
    out: dict[Key, bytes] = {}
    if not rows:
        return out
    sizes = [source.metadata.row_group(g).num_rows for g in range(source.metadata.num_row_groups)]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    by_group: dict[int, list[int]] = {}
    for row in sorted(rows):
        by_group.setdefault(int(np.searchsorted(starts, row, side="right")) - 1, []).append(row)
    for group, members in by_group.items():
        column = source.read_row_group(group, columns=["embedding"])["embedding"].combine_chunks()
        dim = column.type.list_size
        for row in members:
            local = row - int(starts[group])
            if column[local].is_valid:
                first = (column.offset + local) * dim  # .values ignores the array's offset
                values = column.values[first:first + dim]
                out[rows[row]] = values.to_numpy(zero_copy_only=False).astype("<f4").tobytes()
    return out


def held_keys(table: pa.Table) -> set[Key]:
    """The ``(fingerprint, window_index)`` whose embedding ``table`` (a part's rows) holds."""
    held = table.filter(pc.is_valid(table["embedding"])).select(["fingerprint", "window_index"])
    return set(zip(held["fingerprint"].to_pylist(), held["window_index"].to_pylist(), strict=True))


def hand_over(store: Store, parts: Sequence[Path]) -> int:
    """Once per state: release every embedding ``parts`` hold (a state written before schema 4
    kept them all), then let the file shrink; how many rows were read.

    Each part is fsynced first (it may come from a version that did not); the embedding column
    is read row group by row group to see which rows hold one (once: about the parts' size).
    """
    if store.handed_over():
        return 0
    read = 0
    for part in parts:
        held: set[Key] = set()
        try:
            with open(part, "rb") as f:
                os.fsync(f.fileno())
            source = pq.ParquetFile(part)
            for group in range(source.metadata.num_row_groups):
                table = source.read_row_group(group, columns=["fingerprint", "window_index", "embedding"])
                read += table.num_rows
                held |= held_keys(table)
        except (OSError, pa.ArrowException):
            continue  # damaged: what it held stays in the state
        store.release_embeddings(sorted(held))
    store.mark_handed_over()
    return read
