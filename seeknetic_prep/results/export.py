"""``seeknetic-prep results``: the merged parts as one Parquet, JSONL, CSV or ``.npy`` file.

Every format holds the same rows (:func:`seeknetic_prep.results.parts.compact`: one per path and
window, sorted), so they cannot drift apart:

- ``parquet``: the table as is (``embedding`` is ``fixed_size_list<float32, D>``);
- ``jsonl``: one object per row, the embedding a list of floats, ``path_bytes`` left out;
- ``csv``: no embedding, ``frame_times_ms`` as JSON text, ``path_bytes`` left out;
- ``npy``: the embedded rows' vectors as a float32 ``(N, D)`` matrix, and beside it
  ``<name>.index.csv`` naming row ``i`` of the matrix (path, window, times, fingerprint).

Each file is written to a temporary name and renamed, so a reader never sees half of one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from seeknetic_prep.errors import InvalidArgumentError
from seeknetic_prep.results.parts import compact
from seeknetic_prep.util.fsio import atomic_path

__all__ = ["FORMATS", "export"]

Format = Literal["parquet", "jsonl", "csv", "npy"]
FORMATS: tuple[Format, ...] = ("parquet", "jsonl", "csv", "npy")
_SUFFIX = {"parquet": ".parquet", "jsonl": ".jsonl", "csv": ".csv", "npy": ".npy"}


def export(out_dir: Path, *, fmt: Format = "parquet", to: Path | None = None) -> tuple[Path, int]:
    """Merge the parts of ``out_dir`` and write them as ``fmt`` to ``to`` (default
    ``out_dir/results.<suffix>``). Returns the file written and its number of rows.

    Raises:
        InvalidArgumentError: an unknown format, or ``out_dir`` has no parts yet.
    """
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"Invalid format {fmt!r}: must be one of {', '.join(FORMATS)}.")
    target = Path(to) if to is not None else Path(out_dir) / f"results{_SUFFIX[fmt]}"
    target.parent.mkdir(parents=True, exist_ok=True)
    table = compact(out_dir)
    with atomic_path(target) as tmp:
        if fmt == "parquet":
            pq.write_table(table, tmp)
            count = table.num_rows
        elif fmt == "jsonl":
            count = _write_jsonl(table.drop_columns(["path_bytes"]), tmp)
        elif fmt == "csv":
            count = _write_csv(table, tmp)
        else:
            count = _write_npy(table, tmp, target)
    return target, count


def _write_jsonl(table: pa.Table, tmp: Path) -> int:
    with open(tmp, "w", encoding="utf-8") as out:
        for batch in table.to_batches(max_chunksize=4096):
            for row in batch.to_pylist():
                out.write(json.dumps(row) + "\n")
    return int(table.num_rows)


def _flat(table: pa.Table) -> pa.Table:
    """Without the embedding and the bytes of the path; the frame times as JSON text."""
    times = [None if t is None else json.dumps(t) for t in table["frame_times_ms"].to_pylist()]
    table = table.drop_columns(["embedding", "path_bytes"])
    index = table.schema.get_field_index("frame_times_ms")
    return table.set_column(index, "frame_times_ms", pa.array(times, type=pa.string()))


def _write_csv(table: pa.Table, tmp: Path) -> int:
    pcsv.write_csv(_flat(table), tmp)
    return int(table.num_rows)


def _write_npy(table: pa.Table, tmp: Path, target: Path) -> int:
    embedded = table.filter(pc.is_valid(table["embedding"]))
    dim = table.schema.field("embedding").type.list_size
    flat = embedded["embedding"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    matrix = np.asarray(flat, dtype=np.float32).reshape(-1, dim)
    with open(tmp, "wb") as f:
        np.save(f, matrix)
    index = _flat(embedded).select(["path", "fingerprint", "window_index", "start_ms", "end_ms",
                                    "frame_times_ms"])
    index = index.add_column(0, "row", pa.array(np.arange(index.num_rows, dtype=np.int64)))
    index_path = target.with_name(target.stem + ".index.csv")
    with atomic_path(index_path) as index_tmp:
        pcsv.write_csv(index, index_tmp)
    return int(matrix.shape[0])
