"""``seeknetic-prep results``: the merged parts as one Parquet, JSONL, CSV or ``.npy`` file.

Every format holds the same rows (:func:`seeknetic_prep.results.parts.compact`: one per path and
window, sorted), so they cannot drift apart:

- ``parquet``: the table as is (``embedding`` is ``fixed_size_list<float32, D>``);
- ``jsonl``: one object per row, the embedding a list of floats, ``path_bytes`` left out;
- ``csv``: no embedding, ``frame_times_ms`` as JSON text, ``path_bytes`` left out;
- ``npy``: the embedded rows' vectors as a float32 ``(N, D)`` matrix, and beside it
  ``<name>.index.csv`` naming row ``i`` of the matrix (path, window, times, fingerprint).

Each file is written to a temporary name and renamed, so a reader never sees half of one;
``-`` is standard output, and a FIFO or a device is written through, never replaced.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from seeknetic_prep.errors import InvalidArgumentError
from seeknetic_prep.results.part_rows import gone_rows
from seeknetic_prep.results.parts import MEDIA_COLUMNS, compact
from seeknetic_prep.state.store import reading_store
from seeknetic_prep.util.fsio import atomic_path

__all__ = ["FORMATS", "export"]

Format = Literal["parquet", "jsonl", "csv", "npy"]
FORMATS: tuple[Format, ...] = ("parquet", "jsonl", "csv", "npy")
_SUFFIX = {"parquet": ".parquet", "jsonl": ".jsonl", "csv": ".csv", "npy": ".npy"}


def export(out_dir: Path, *, fmt: Format = "parquet", to: Path | str | None = None,
           stdout: BinaryIO | None = None, include_gone: bool = False) -> tuple[Path, int]:
    """Merge the parts of ``out_dir`` and write them as ``fmt`` to ``to`` (default
    ``out_dir/results.<suffix>``). Returns the file written and its number of rows.

    Paths a run found gone are left out, unless ``include_gone`` (their last rows, rebuilt from
    the state, with ``file_status = 'gone'``). ``to`` may be ``-``: standard output (``stdout``, default
    ``sys.stdout.buffer``). A regular file (or a missing one) is replaced whole, through a
    temporary file; a symbolic link is followed and the file it names replaced, the link kept;
    a FIFO, a device or a socket is written through as it is (never replaced by a regular file).

    Raises:
        InvalidArgumentError: an unknown format, ``out_dir`` has no parts yet, ``to`` is a
            folder, or ``npy`` (two files) to standard output or a special file.
    """
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"Invalid format {fmt!r}: must be one of {', '.join(FORMATS)}.")
    target = Path(to) if to is not None else Path(out_dir) / f"results{_SUFFIX[fmt]}"
    special = _special(target) if str(to) != "-" else "standard output"
    if special == "a folder":
        raise InvalidArgumentError(f"Invalid --to {str(target)!r}: it is a folder; give a file name.")
    if special is not None and fmt == "npy":
        raise InvalidArgumentError(
            f"Invalid --to {str(target)!r} with --format npy: it is {special}, and npy writes two "
            "files (the matrix and <name>.index.csv beside it); give a regular file name.")
    table = compact(out_dir)
    if include_gone and (Path(out_dir) / "state.sqlite").exists():
        with reading_store(out_dir) as store:
            gone = gone_rows(store, Path(out_dir))
        if gone.num_rows:
            table = pa.concat_tables([table, gone], promote_options="default").select(table.column_names)
            keys = pa.table({"p": table["path_bytes"], "w": pc.fill_null(table["window_index"], -1)})
            table = table.take(pc.sort_indices(keys, sort_keys=[("p", "ascending"), ("w", "ascending")]))
    if special == "standard output":
        sink = stdout if stdout is not None else sys.stdout.buffer
        count = _write(fmt, table, sink)
        sink.flush()
        return target, count
    if special is not None:  # a FIFO, a device: written through, as a shell's `>` would
        with open(target, "wb") as f:
            return target, _write(fmt, table, f)
    real = Path(os.path.realpath(target)) if target.is_symlink() else target  # keep the link
    real.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(real) as tmp:
        if fmt == "npy":
            count = _write_npy(table, tmp, real)
        else:
            with open(tmp, "wb") as f:
                count = _write(fmt, table, f)
    return target, count


def _special(target: Path) -> str | None:
    """What ``target`` is when it is not a regular file (nor missing), in words, following links."""
    try:
        mode = target.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):  # missing, or a dangling link: made
        return None
    except OSError as exc:
        raise InvalidArgumentError(f"Invalid --to {str(target)!r}: {exc.strerror or exc}.") from exc
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    return {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
            stat.S_IFSOCK: "a socket"}.get(stat.S_IFMT(mode), "a special file")


def _write(fmt: Format, table: pa.Table, sink: BinaryIO) -> int:
    """``table`` as ``fmt`` (not npy) into the open binary file ``sink``; the rows written."""
    if fmt == "parquet":
        pq.write_table(table, sink)
        return int(table.num_rows)
    if fmt == "jsonl":
        return _write_jsonl(table.drop_columns(["path_bytes"]), sink)
    return _write_csv(table, sink)


def _write_jsonl(table: pa.Table, sink: BinaryIO) -> int:
    for batch in table.to_batches(max_chunksize=4096):
        sink.write("".join(json.dumps(row) + "\n" for row in batch.to_pylist()).encode("utf-8"))
    return int(table.num_rows)


def _flat(table: pa.Table) -> pa.Table:
    """Without the embedding and the bytes of the path; the frame times as JSON text."""
    times = [None if t is None else json.dumps(t) for t in table["frame_times_ms"].to_pylist()]
    table = table.drop_columns(["embedding", "path_bytes"])
    index = table.schema.get_field_index("frame_times_ms")
    return table.set_column(index, "frame_times_ms", pa.array(times, type=pa.string()))


def _write_csv(table: pa.Table, sink: BinaryIO) -> int:
    pcsv.write_csv(_flat(table), sink)
    return int(table.num_rows)


def _write_npy(table: pa.Table, tmp: Path, target: Path) -> int:
    embedded = table.filter(pc.is_valid(table["embedding"]))
    dim = table.schema.field("embedding").type.list_size
    flat = embedded["embedding"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    matrix = np.asarray(flat, dtype=np.float32).reshape(-1, dim)
    with open(tmp, "wb") as f:
        np.save(f, matrix)
    named = _flat(embedded)
    index = named.select(["path", "fingerprint", "window_index", "start_ms", "end_ms", "frame_times_ms",
                          *(c for c in MEDIA_COLUMNS if c in named.column_names)])  # what each file is
    index = index.add_column(0, "row", pa.array(np.arange(index.num_rows, dtype=np.int64)))
    index_path = target.with_name(target.stem + ".index.csv")
    with atomic_path(index_path) as index_tmp:
        pcsv.write_csv(index, index_tmp)
    return int(matrix.shape[0])
