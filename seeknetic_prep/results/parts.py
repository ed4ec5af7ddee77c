"""Results as Parquet: each run appends a part with the windows it finished; readers merge.

The state database is the truth about progress; ``<out>/parts/part-RRRRRR-NN.parquet`` are its
readable copy, written at the end of each run (and on interrupt) by
:func:`~seeknetic_prep.results.part_rows.append_results_part` (this module: the files, their
schema, and how they merge; :mod:`.part_rows`: what a run's part holds, read from the state),
which reads only what that run did: the units it made terminal (``units.finished_run``) and the
paths it recorded or changed (``files.run_id``). So the end of a run costs time in proportion to
the run, not to the history. Embeddings are the exception: once a part holding one is on disk,
the state forgets it (:mod:`seeknetic_prep.state.blobs`), so the parts are where they live; a
part that repeats a window the state no longer holds reads it from the other parts
(:mod:`.embeddings`), and one that no part holds any more goes back to the API (``repoll``).

One row per (path, window) -- the same content under two paths gives two rows, never more --
with both services side by side (:data:`COLUMNS`): ``embedding`` as
``fixed_size_list<float32, D>`` (null when not done), one typed column per known tag
(:data:`TAG_TYPES`; any other tag goes to ``tags_extra`` as JSON), and ``status``, ``error``
and ``request_id`` per service. A file that could not be preprocessed is one row with a null
window and ``file_status = 'failed'``.

A row carries its window's whole state at the time of the part, so parts merge by one rule
(:func:`latest_rows`): for each path, only its latest content (fingerprint and file status)
counts, and of each of its windows only the newest row. Rows are sorted by path and window and
hold no timestamps, so two runs over the same content give the same rows.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from seeknetic_prep.errors import InvalidArgumentError, StateError
from seeknetic_prep.results.embeddings import held_keys
from seeknetic_prep.util.fsio import atomic_path, locked

__all__ = [
    "MEDIA_COLUMNS", "PARTS_DIR", "SERVICES", "TAG_TYPES", "compact", "damaged_parts", "drop_paths",
    "latest_rows", "list_parts", "part_schema", "part_sequence", "read_parts", "refuse_damaged", "write_part",
]

log = logging.getLogger(__name__)

SERVICES = ("embedding", "tagging")
PARTS_DIR = "parts"
DEFAULT_DIM = 1024
ROW_GROUP_ROWS = 8192
"""Rows per Parquet row group: reading back a few windows' embeddings
(:func:`~seeknetic_prep.results.embeddings.find_embeddings`) decodes at most this many (32 MB)."""
KEY_COLUMNS = ("path_bytes", "fingerprint", "file_status", "window_index")

TAG_TYPES: dict[str, pa.DataType] = {
    "shot_size": pa.string(),
    "camera_movement": pa.string(),
    "shooting_angle": pa.string(),
    "lighting": pa.string(),
    "dominant_color": pa.string(),
    "brightness": pa.float64(),
    "contrast": pa.float64(),
    "colorfulness": pa.float64(),
    "motion_intensity": pa.float64(),
    "audio_loudness": pa.float64(),
    "scene_cuts": pa.int64(),
    "frames_analyzed": pa.int64(),
}
MEDIA_COLUMNS: dict[str, pa.DataType] = {
    "duration_ms": pa.int64(),
    "size_bytes": pa.int64(),
    "mtime_ns": pa.int64(),
    "width": pa.int32(),
    "height": pa.int32(),
    "fps": pa.float64(),
    "video_codec": pa.string(),
    "pix_fmt": pa.string(),
    "audio_codec": pa.string(),
    "audio_rate": pa.int32(),
    "audio_channels": pa.int32(),
    "rotation": pa.int32(),
    "mirrored": pa.bool_(),
    "has_audio": pa.bool_(),
    "decoder": pa.string(),
}
"""What each file is, on every row of it (:meth:`seeknetic_prep.decode.probe.MediaInfo.record`;
``decoder``: ``cpu`` or ``cuda``, what decoded its windows, recorded as the first one arrives;
``width``/``height`` as displayed, ``mtime_ns`` from the stat taken before it was fingerprinted,
for an object in a bucket its version tag): what users filter on before training. Null for a
file recorded by a version before 0.2 and unchanged since (it was never probed again)."""
_PART_RE = re.compile(r"^part-(\d{6})-(\d{2})\.parquet$")


def part_schema(dim: int = DEFAULT_DIM) -> pa.Schema:
    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("path_bytes", pa.binary(), nullable=False),
        pa.field("fingerprint", pa.string()),
        pa.field("file_status", pa.string(), nullable=False),
        pa.field("window_index", pa.int32()),
        pa.field("start_ms", pa.int64()),
        pa.field("end_ms", pa.int64()),
        pa.field("frame_times_ms", pa.list_(pa.float64())),
        pa.field("embedding", pa.list_(pa.float32(), dim)),
    ]
    for service in SERVICES:
        fields += [pa.field(f"{service}_status", pa.string()), pa.field(f"{service}_error", pa.string()),
                   pa.field(f"{service}_request_id", pa.string())]
    fields += [pa.field(name, kind) for name, kind in TAG_TYPES.items()]
    fields.append(pa.field("tags_extra", pa.string()))
    fields += [pa.field(name, kind) for name, kind in MEDIA_COLUMNS.items()]
    return pa.schema(fields)


def list_parts(out_dir: Path) -> list[Path]:
    """The parts of ``out_dir``, oldest first."""
    folder = Path(out_dir) / PARTS_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _PART_RE.match(p.name))


def damaged_parts(out_dir: Path) -> list[tuple[Path, str]]:
    """The parts whose Parquet footer cannot be read (truncated, overwritten), with why."""
    damaged = []
    for part in list_parts(out_dir):
        try:
            pq.read_metadata(part)
        except (OSError, pa.ArrowException) as exc:
            damaged.append((part, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    return damaged


def refuse_damaged(out_dir: Path) -> None:
    """Raise for the first damaged part (where there is no state to write it again from).

    Raises:
        StateError: naming the part and what to do.
    """
    for part, why in damaged_parts(out_dir):
        raise StateError(f"{part} is damaged ({why}) and there is no state.sqlite to write it "
                         "again from: restore it, or move it away (its windows are then missing).")


def part_sequence(path: Path) -> int | None:
    """The run a part belongs to (``part-RRRRRR-NN.parquet`` -> ``RRRRRR``), None for another name."""
    m = _PART_RE.match(path.name)
    return int(m.group(1)) if m else None


def write_part(table: pa.Table, path: Path) -> None:
    """``table`` as the part ``path``, whole or not at all (fsynced, then renamed into place),
    in row groups of :data:`ROW_GROUP_ROWS` rows. No dictionary for the embeddings: floats
    never repeat, and pyarrow kept its failed 1 MB attempt in every row group (2.5% of a part)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS,
                       use_dictionary=[name for name in table.column_names if name != "embedding"])


Keep = Callable[[list[tuple[str, int, bytes]]], None]
"""Takes back ``(fingerprint, window_index, float32 bytes)`` whose part rows are about to go
(:meth:`~seeknetic_prep.state.blobs.BlobQueries.keep_embeddings`); ``None`` where no state is."""


def dropped_embeddings(table: pa.Table, dropped: np.ndarray,
                       held: set[tuple[str, int]]) -> list[tuple[str, int, bytes]]:
    """The embeddings of ``table``'s rows ``dropped`` (a mask) whose window no row of ``held``
    (``(fingerprint, window_index)``) keeps: what would be on disk nowhere once they go."""
    gone = table.filter(pa.array(dropped))
    gone = gone.filter(pc.is_valid(gone["embedding"]))
    if not gone.num_rows:
        return []
    dim = gone.schema.field("embedding").type.list_size
    flat = gone["embedding"].combine_chunks().flatten().to_numpy(zero_copy_only=False).astype("<f4")
    out: dict[tuple[str, int], bytes] = {}
    keys = zip(gone["fingerprint"].to_pylist(), gone["window_index"].to_pylist(), strict=True)
    for i, key in enumerate(keys):
        if key not in held and key not in out:
            out[key] = flat[i * dim:(i + 1) * dim].tobytes()
    return [(fp, idx, blob) for (fp, idx), blob in out.items()]


def drop_paths(out_dir: Path, paths: Sequence[bytes], *, keep: Keep | None) -> int:
    """Remove every row of ``paths`` from the parts (each part that has one is written again
    under its name, whole or not at all); how many rows. For ``prune``: a path forgotten by
    the state leaves the results too. An embedding that goes with them and that the part keeps
    in no other row is given to ``keep`` first (the state's units stay known)."""
    if not paths:
        return 0
    drop = pa.array(list(paths), pa.binary())
    removed = 0
    folder = Path(out_dir) / PARTS_DIR
    with locked(folder / ".lock"):
        for part in list_parts(out_dir):
            hit = pc.is_in(pq.read_table(part, columns=["path_bytes"])["path_bytes"], value_set=drop)
            if not pc.any(hit).as_py():
                continue
            table = pq.read_table(part)
            stays = pc.invert(pc.is_in(table["path_bytes"], value_set=drop))
            kept = table.filter(stays)
            if keep is not None:
                keep(dropped_embeddings(table, ~stays.to_numpy(zero_copy_only=False), held_keys(kept)))
            write_part(kept, part)
            removed += table.num_rows - kept.num_rows
    return removed


def latest_rows(keys: pa.Table) -> np.ndarray:
    """Which rows of parts read in order (oldest first) are current, as sorted indices.

    ``keys`` needs ``path_bytes``, ``fingerprint``, ``file_status`` and ``window_index``. For
    each path the newest row tells its content; rows of an older content or file status are
    dropped; of the rest, the newest row per window is kept. Integer codes and numpy only:
    about 0.1 s per million rows.
    """
    n = keys.num_rows
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.arange(n, dtype=np.int64)
    path = _codes(keys["path_bytes"])
    content = _codes(pc.fill_null(keys["fingerprint"], "")) * 4 + _codes(keys["file_status"])
    newest = np.full(int(path.max()) + 1, -1, dtype=np.int64)
    np.maximum.at(newest, path, order)
    same = content == content[newest[path]]
    window = pc.fill_null(keys["window_index"], -1).to_numpy(zero_copy_only=False).astype(np.int64)
    span = int(window.max()) + 2
    key = path[same] * span + window[same] + 1
    rows = order[same]
    if (int(path.max()) + 1) * span <= 4 * n:  # dense keys: index an array, no sort
        slots = np.full((int(path.max()) + 1) * span, -1, dtype=np.int64)
        np.maximum.at(slots, key, rows)
        return np.sort(slots[slots >= 0])
    _, group = np.unique(key, return_inverse=True)
    best = np.full(int(group.max()) + 1, -1, dtype=np.int64)
    np.maximum.at(best, group, rows)
    return np.sort(best)


def _codes(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Equal values -> equal small integers."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    codes: np.ndarray = pc.dictionary_encode(column).indices.to_numpy(zero_copy_only=False)
    return codes.astype(np.int64)


def read_parts(parts: Sequence[Path], columns: Sequence[str] | None = None) -> pa.Table:
    """``parts`` (oldest first) as one table. A part written by an older version lacks the
    columns added since (the per-file :data:`MEDIA_COLUMNS`): they read as nulls.

    Raises:
        pa.ArrowInvalid, pa.ArrowTypeError: the parts disagree on a column's type.
    """
    tables = []
    for part in parts:
        have = set(pq.read_schema(part).names)
        wanted = None if columns is None else [c for c in columns if c in have]
        tables.append(pq.read_table(part, columns=wanted))
    return pa.concat_tables(tables, promote_options="default")


def compact(out_dir: Path, *, columns: Sequence[str] | None = None) -> pa.Table:
    """Every part merged into one table (current rows only), sorted by path and window; a path
    a run found gone is left out.

    Raises:
        InvalidArgumentError: there are no parts (no run wrote to that folder yet).
        StateError: a part is damaged, or the parts hold embeddings of different sizes.
    """
    parts = list_parts(out_dir)
    if not parts:
        raise InvalidArgumentError(
            f"No results in {Path(out_dir) / PARTS_DIR}: run `seeknetic-prep run` first."
        )
    refuse_damaged(out_dir)
    try:
        table = read_parts(parts, None if columns is None else sorted(set(columns) | set(KEY_COLUMNS)))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise StateError(f"The parts in {Path(out_dir) / PARTS_DIR} do not agree ({exc}).") from exc
    table = table.take(pa.array(latest_rows(table)))  # a tombstone is its path's newest row:
    table = table.filter(pc.not_equal(table["file_status"], "gone"))  # it alone is kept, then dropped
    order = pc.sort_indices(pa.table({"p": table["path_bytes"],
                                      "w": pc.fill_null(table["window_index"], -1)}),
                            sort_keys=[("p", "ascending"), ("w", "ascending")])
    return table.take(order)
