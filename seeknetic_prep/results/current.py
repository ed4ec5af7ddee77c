"""Parts that never hold a superseded row: ``parts/`` read as one dataset is the current results.

The README invites reading ``parts/`` directly with pandas, polars, DuckDB or LanceDB. Each
part used to be append-only, so after an interrupted run and its resume, a file changed or a
job retried, a plain reader saw the old row beside the new one (33 rows for 31 windows, the
stale ones ``submitted`` with no embedding), and only our own readers knew the merge rule
(:func:`~seeknetic_prep.results.parts.latest_rows`). Now the end of every run applies that rule
to the parts themselves: each older part that holds a row no longer current (a newer row of
its window, a newer content or status of its path, a path found gone) is written again, whole
or not at all, without it, and a gone path's tombstone goes with the rows it hid. What is left
is exactly one row per (path, window), and one row per failed file.

The cost: once, for a folder written before this rule, one read of every part's key columns
(no embeddings); after that, the path column of each older part, to find the few that share a
path with the run's new part, then those parts' key columns, and rewriting only the parts that
changed; a run that adds new files rewrites nothing. A part is never deleted, even when
emptied: a part's absence means "never written" (:func:`~seeknetic_prep.results.part_rows.ensure_parts`
would write it again from the state). A row's embedding may be on disk nowhere else (the state
hands each over to the parts): before a part loses a row whose window no row kept among the parts
read still holds, its embedding goes back to the state (``keep``). So it can be in the state and
in a part not read (the same content under another path): at worst three copies, never none.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from seeknetic_prep.results.parts import (
    KEY_COLUMNS,
    PARTS_DIR,
    Keep,
    dropped_embeddings,
    latest_rows,
    list_parts,
    write_part,
)
from seeknetic_prep.util.fsio import atomic_write, locked

__all__ = ["drop_superseded"]


def drop_superseded(out_dir: Path, new: Sequence[Path] | None = None, *,
                    keep: Keep | None) -> dict[str, np.ndarray]:
    """Write again every part of ``out_dir`` that holds a row no longer current, without it.

    Args:
        new: the parts just written, when every older part was already made current: only
            the parts that share a path with them are read (their path column first). None,
            or a folder never made current before (no ``parts/.current``), checks every part.
        keep: takes back the embeddings of dropped rows that no kept row holds, committed
            before their part is rewritten (``Store.keep_embeddings``); ``None`` only where
            there is no state (they are then lost with their rows).

    Returns:
        For each part written again, by name: the indices of its old rows that it kept (so
        the search index can follow without being made again).
    """
    folder = Path(out_dir) / PARTS_DIR
    if not folder.is_dir():
        return {}
    with locked(folder / ".lock"):
        parts = list_parts(out_dir)
        marker = folder / _MARKER
        if new is None or not marker.exists():
            candidates = parts
        else:
            names = {p.name for p in new}
            fresh = [p for p in parts if p.name in names]
            if not fresh:
                return {}
            touched = pc.unique(pa.concat_arrays(
                [pq.read_table(p, columns=["path_bytes"])["path_bytes"].combine_chunks() for p in fresh]))
            candidates = [p for p in parts if p.name in names or pc.any(pc.is_in(
                pq.read_table(p, columns=["path_bytes"])["path_bytes"], value_set=touched)).as_py()]
        rewritten = _rewrite(candidates, keep)
        if not marker.exists():
            atomic_write(marker, b"every part holds only current rows\n")
    return rewritten


_MARKER = ".current"


def _rewrite(parts: Sequence[Path], keep: Keep | None) -> dict[str, np.ndarray]:
    """Among ``parts`` (oldest first), drop the rows that are not current (and tombstones)."""
    if not parts:
        return {}
    tables = [pq.read_table(p, columns=[*KEY_COLUMNS, "embedding_status"]) for p in parts]
    keys = pa.concat_tables(tables, promote_options="default")
    current = np.zeros(keys.num_rows, dtype=bool)
    current[latest_rows(keys)] = True
    current &= pc.not_equal(keys["file_status"], "gone").to_numpy(zero_copy_only=False)
    held = _held(keys, current) if keep is not None and not current.all() else set()
    rewritten: dict[str, np.ndarray] = {}
    start = 0
    for part, table in zip(parts, tables, strict=True):
        mine = current[start:start + table.num_rows]
        start += table.num_rows
        if mine.all():
            continue
        kept = np.flatnonzero(mine)
        whole = pq.read_table(part)
        if keep is not None:  # committed before the part loses them
            keep(dropped_embeddings(whole, ~mine, held))
        write_part(whole.take(pa.array(kept)), part)
        rewritten[part.name] = kept
    return rewritten


def _held(keys: pa.Table, current: np.ndarray) -> set[tuple[str, int]]:
    """The ``(fingerprint, window_index)`` of the kept rows that hold an embedding, among the
    contents of the rows to drop (so a first pass over a big folder builds no big set)."""
    embedded = pc.fill_null(pc.equal(keys["embedding_status"], "completed"), False).to_numpy(
        zero_copy_only=False)
    contents = pc.unique(keys.filter(pa.array(~current & embedded))["fingerprint"])
    if not len(contents):
        return set()
    mine = pc.fill_null(pc.is_in(keys["fingerprint"], value_set=contents), False).to_numpy(
        zero_copy_only=False)
    rows = keys.filter(pa.array(current & embedded & mine))
    return set(zip(rows["fingerprint"].to_pylist(), rows["window_index"].to_pylist(), strict=True))
