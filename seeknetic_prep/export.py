"""``seeknetic-prep results``: the merged parts as one Parquet, JSONL, CSV or ``.npy`` file.

Every format holds the same rows (:func:`seeknetic_prep.results.compact`: one per path and
window, sorted), so they cannot drift apart:

- ``parquet``: the table as is (``embedding`` is ``fixed_size_list<float32, D>``);
- ``jsonl``: one object per row, the embedding a list of floats, ``path_bytes`` left out;
- ``csv``: no embedding, ``frame_times_ms`` as JSON text, ``path_bytes`` left out;
- ``npy``: the embedded rows' vectors as a float32 ``(N, D)`` matrix, and beside it
  ``<name>.index.csv`` naming row ``i`` of the matrix (path, window, times, fingerprint).

Each file is written to a temporary name and renamed, so a reader never sees half of one.

``write_results`` keeps the version-1 ``results.jsonl`` (one line per window and service,
rebuilt from the whole state) for the pipeline until it writes parts; it costs time in
proportion to the history and is not to be called at the end of every run.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from .errors import InvalidArgumentError, StateError
from .results import compact
from .store import Store, display_path, result_dict

__all__ = ["FORMATS", "export", "result_line", "write_results"]

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
    tmp = target.with_name(target.name + ".tmp")
    if fmt == "parquet":
        pq.write_table(table, tmp)
        count = table.num_rows
    elif fmt == "jsonl":
        count = _write_jsonl(table.drop_columns(["path_bytes"]), tmp)
    elif fmt == "csv":
        count = _write_csv(table, tmp)
    else:
        count = _write_npy(table, tmp, target)
    os.replace(tmp, target)
    return target, count


def _write_jsonl(table: pa.Table, tmp: Path) -> int:
    with open(tmp, "w", encoding="utf-8") as out:
        for batch in table.to_batches(max_chunksize=4096):
            for row in batch.to_pylist():
                out.write(json.dumps(row) + "\n")
        out.flush()
        os.fsync(out.fileno())
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
    pcsv.write_csv(index, index_path.with_name(index_path.name + ".tmp"))
    os.replace(index_path.with_name(index_path.name + ".tmp"), index_path)
    return int(matrix.shape[0])


# ---------------------------------------------------------------------- version-1 results.jsonl

def write_results(store: Store, path: Path, *, services: Sequence[str]) -> int:
    """Rewrite the version-1 ``results.jsonl`` atomically from ``store``; return its lines.

    Every file that could be preprocessed contributes one line per terminal (completed or
    failed) unit; a file that could not gets one ``failed`` line per service in ``services``.
    """
    store.flush()
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with open(tmp, "w", encoding="utf-8") as out:
        for raw, fp, status, error, unit in _iter_rows(store.path):
            shown = display_path(raw)
            if status == "failed":
                for service in services:
                    out.write(json.dumps(result_line(path=shown, fingerprint=fp, service=service,
                                                     status="failed", error=error)) + "\n")
                    count += 1
                continue
            if unit is None:
                continue
            svc, start, end, rid, ustatus, uerror, ftimes, emb, rest = unit
            result = result_dict(emb, rest)
            out.write(json.dumps(result_line(
                path=shown, fingerprint=fp, service=svc, status=ustatus, error=uerror,
                start_ms=start, end_ms=end, frame_times_ms=json.loads(ftimes) if ftimes else None,
                request_id=rid, embedding=result.get("embedding"), tags=result.get("tags"),
            )) + "\n")
            count += 1
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    return count


def _iter_rows(db_path: Path) -> Iterator[tuple[bytes, str | None, str, str | None, tuple[Any, ...] | None]]:
    """Files joined to their terminal units, streamed from a connection of its own."""
    try:
        reader = sqlite3.connect(db_path, timeout=30.0)
    except sqlite3.Error as exc:
        raise StateError(f"{db_path}: cannot open for reading ({exc}).") from exc
    try:
        cursor = reader.execute(
            "SELECT f.path, f.fingerprint, f.status, f.error, u.service, u.start_ms, u.end_ms, "
            "u.request_id, u.status, u.error, u.frame_times_ms, u.embedding, u.result "
            "FROM files f LEFT JOIN units u ON u.fingerprint = f.fingerprint AND f.status = 'ok' "
            "AND u.status IN ('completed', 'failed') "
            "ORDER BY f.path, u.window_index, u.service"
        )
        for row in cursor:
            unit = tuple(row[4:]) if row[4] is not None else None
            yield bytes(row[0]), row[1], row[2], row[3], unit
    except sqlite3.Error as exc:
        raise StateError(f"{db_path}: read failed ({exc}).") from exc
    finally:
        reader.close()


def result_line(
    *,
    path: str,
    fingerprint: str | None,
    service: str,
    status: str,
    error: str | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    frame_times_ms: list[float] | None = None,
    request_id: str | None = None,
    embedding: object = None,
    tags: object = None,
) -> dict[str, Any]:
    """One version-1 results.jsonl record: ``embedding`` for embedding, ``tags`` for tagging."""
    line: dict[str, Any] = {
        "path": path, "fingerprint": fingerprint, "start_ms": start_ms, "end_ms": end_ms,
        "frame_times_ms": frame_times_ms, "service": service, "request_id": request_id,
        "status": status,
    }
    if service == "embedding":
        line["embedding"] = embedding
    else:
        line["tags"] = tags
    line["error"] = error
    return line
