"""Results as Parquet: each run appends a part with the windows it finished; readers merge.

The state database is the truth about progress; ``<out>/parts/part-RRRRRR-NN.parquet`` are its
readable copy, written at the end of each run (and on interrupt) by :func:`append_results_part`,
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

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from seeknetic_prep.errors import InvalidArgumentError, StateError
from seeknetic_prep.results.embeddings import find_embeddings, held_keys
from seeknetic_prep.state.store import Store, display_path
from seeknetic_prep.util.fsio import atomic_path, locked

__all__ = [
    "MEDIA_COLUMNS", "PARTS_DIR", "SERVICES", "TAG_TYPES", "append_results_part", "compact", "damaged_parts",
    "drop_paths", "ensure_parts", "gone_rows", "latest_rows", "list_parts", "missing_parts", "part_schema",
    "read_parts", "refuse_damaged", "write_part",
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
_PY = {pa.string(): (str,), pa.float64(): (float, int), pa.int64(): (int,)}
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


def append_results_part(
    store: Store, out_dir: Path, run_id: int, *, services: Sequence[str] = SERVICES
) -> Path | None:
    """Write the part of run ``run_id``: every window it finished, every path it recorded
    (a path it found gone is one row with ``file_status = 'gone'``, which hides its older rows).

    Call it at the end of a run, also an interrupted one (after the pipeline stopped writing).
    Cost is proportional to what the run did. Returns the new part, or ``None`` when the run
    finished nothing. Calling it again for the same run writes another part, a superset; the
    readers keep the newest row.

    Args:
        store: the run's state (buffered writes are committed first).
        out_dir: the output folder; parts go to ``out_dir/parts``.
        run_id: from :meth:`Store.start_run`.
        services: the services a failed file is reported failed for.

    Raises:
        StateError: the state cannot be read, or embeddings of different sizes.
    """
    wanted = store.windows_finished_in(run_id)
    new_paths: dict[str, list[bytes]] = {}
    failed_files: list[tuple[bytes, str | None, str | None]] = []
    gone: set[bytes] = set()
    for f in store.files_recorded_in(run_id):
        if f.status == "ok" and f.fingerprint is not None:
            new_paths.setdefault(f.fingerprint, []).append(f.raw)
        elif f.status in ("failed", "gone"):
            failed_files.append((f.raw, f.fingerprint, f.error))
            if f.status == "gone":
                gone.add(f.raw)
    return _write_part(store, out_dir, run_id, wanted, new_paths, failed_files, services, gone=gone)


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


def missing_parts(store: Store, out_dir: Path) -> list[int]:
    """The runs whose results are in the state but in no readable part (what
    :func:`ensure_parts` would write), for a reader that cannot write them."""
    have = {int(m.group(1)) for p in list_parts(out_dir) if (m := _PART_RE.match(p.name))}
    damaged = {int(m.group(1)) for p, _ in damaged_parts(out_dir) if (m := _PART_RE.match(p.name))}
    return sorted(store.runs_with_results() - (have - damaged))


def ensure_parts(store: Store, out_dir: Path, *, services: Sequence[str] = SERVICES,
                 exclude: Sequence[int] = ()) -> list[Path]:
    """Write the parts of earlier runs that never wrote theirs (a ``kill -9``, a database
    upgraded from version 1, whose results are all "run 0") or whose part is damaged (moved
    aside as ``<name>.damaged``, then written again from the state); returns the new parts.
    An embedding the state handed over to the lost part is read from another part, or, where
    none holds it, its unit goes back to ``submitted`` for the next run to poll.
    ``exclude``: runs not to write (the run in progress writes its own at its end).

    Under ``parts/.lock``: two readers that find the same part missing write it once."""
    folder = Path(out_dir) / PARTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with locked(folder / ".lock"):
        for part, _why in damaged_parts(out_dir):
            os.replace(part, part.with_name(part.name + ".damaged"))
        have = {int(m.group(1)) for p in list_parts(out_dir) if (m := _PART_RE.match(p.name))}
        written = []
        for run_id in sorted(store.runs_with_results() - have - set(exclude)):
            new = append_results_part(store, out_dir, run_id, services=services)
            if new is not None:
                written.append(new)
    return written


def gone_rows(store: Store, out_dir: Path) -> pa.Table:
    """The last rows of the paths the state holds as gone, rebuilt from the state (the parts
    no longer hold them), with ``file_status = 'gone'``: for ``results --include-gone``.

    Raises:
        StateError: an embedding is in neither the state nor a part and ``store`` is read-only.
    """
    states: dict[str, dict[int, dict[str, Any]]] = {}
    gone = [f for f in store.files() if f.status == "gone" and f.fingerprint is not None]
    for f in gone:
        fp = str(f.fingerprint)
        if fp not in states:
            states[fp] = _window_state(store, fp, sorted(store.finished_windows(fp)))
    _fill_embeddings(store, out_dir, states.values())
    rows: list[tuple[bytes, int, dict[str, Any]]] = []
    for f in gone:
        state = states[str(f.fingerprint)]
        rows.extend((f.raw, idx, {**row, "file_status": "gone"}) for idx, row in sorted(state.items()))
    return _table(rows) if rows else part_schema().empty_table()


def _write_part(
    store: Store,
    out_dir: Path,
    run_id: int,
    wanted: dict[str, set[int]],
    new_paths: dict[str, list[bytes]],
    failed_files: list[tuple[bytes, str | None, str | None]],
    services: Sequence[str],
    gone: set[bytes] | None = None,
) -> Path | None:
    rows: list[tuple[bytes, int, dict[str, Any]]] = []
    states: list[dict[int, dict[str, Any]]] = []
    for fp in sorted(set(wanted) | set(new_paths)):
        all_paths = store.ok_paths(fp)
        targets: dict[bytes, set[int]] = {}
        if fp in wanted:  # windows finished now: under every path of the content
            for p in all_paths:
                targets[p] = set(wanted[fp])
        if fp in new_paths:  # paths new to this run: every finished window of the content
            done = store.finished_windows(fp)
            for p in new_paths[fp]:
                targets.setdefault(p, set()).update(done)
        windows = sorted(set().union(*targets.values()))
        if not windows:
            continue
        state = _window_state(store, fp, windows)
        states.append(state)
        for raw, ws in targets.items():
            rows.extend((raw, idx, state[idx]) for idx in sorted(ws) if idx in state)
    _fill_embeddings(store, out_dir, states)  # the rows share these dicts: filled in place
    for raw, failed_fp, error in failed_files:
        if gone and raw in gone:  # a tombstone: newer than the path's rows, so it hides them
            rows.append((raw, -1, {"fingerprint": failed_fp, "file_status": "gone", "window_index": None}))
            continue
        row: dict[str, Any] = {"fingerprint": failed_fp, "file_status": "failed", "window_index": None}
        for service in services:
            row[f"{service}_status"], row[f"{service}_error"] = "failed", error
        rows.append((raw, -1, row))
    if not rows:
        return None
    media = store.media_of(sorted({r[0] for r in rows}))
    rows = [(raw, idx, {**row, **media.get(raw, {})}) for raw, idx, row in rows]  # rows share dicts
    rows.sort(key=lambda r: (r[0], r[1]))
    table = _table(rows)
    folder = Path(out_dir) / PARTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    while (folder / f"part-{run_id:06d}-{n:02d}.parquet").exists():
        n += 1
    path = folder / f"part-{run_id:06d}-{n:02d}.parquet"
    write_part(table, path)
    if not store.readonly:  # fsynced and in place: the part holds these now, the state need not
        store.release_embeddings(sorted(held_keys(table)))
    return path


def _window_state(store: Store, fp: str, windows: list[int]) -> dict[int, dict[str, Any]]:
    """Each window's row (without path): both services' status and results."""
    state: dict[int, dict[str, Any]] = {}
    for unit in store.window_rows(fp, windows):
        row = state.setdefault(unit.window_index, {
            "fingerprint": fp, "file_status": "ok", "window_index": unit.window_index,
            "start_ms": unit.start_ms, "end_ms": unit.end_ms})
        if unit.frame_times_ms is not None and row.get("frame_times_ms") is None:
            row["frame_times_ms"] = unit.frame_times_ms
        svc = unit.service
        row[f"{svc}_status"], row[f"{svc}_error"], row[f"{svc}_request_id"] = (
            unit.status, unit.error, unit.request_id)
        if unit.embedding is not None:
            row["_blob"] = unit.embedding
        elif svc == "embedding" and unit.status == "completed":  # handed over to a part
            row["_need"] = unit.request_id
        tags = unit.result.get("tags") if unit.result else None
        if isinstance(tags, dict):
            _put_tags(row, tags)
    return state


def _fill_embeddings(store: Store, out_dir: Path, states: Iterable[dict[int, dict[str, Any]]]) -> None:
    """Give the rows whose embedding the state handed over (``_need``) their ``_blob`` from the
    parts. One that no readable part holds any more (a part damaged or deleted after its run)
    is not written as ``completed`` without its embedding: its unit goes back to ``submitted``,
    so the next run over its file polls the API for it again (a job keeps its result).

    Raises:
        StateError: some cannot be found and ``store`` is read-only (nothing can be marked).
    """
    need = {(row["fingerprint"], row["window_index"]): row
            for state in states for row in state.values() if "_need" in row}
    if not need:
        return
    found = find_embeddings(list_parts(out_dir), need.keys())
    lost = []
    for key, row in need.items():
        rid = row.pop("_need")
        if key in found:
            row["_blob"] = found[key]
        else:
            lost.append(rid)
            row["embedding_status"] = "submitted"
    if not lost:
        return
    if store.readonly:
        raise StateError(
            f"{len(lost)} embedding(s) of {out_dir} are in neither its state nor a readable part (a part "
            "damaged or deleted after its run): opened by its owner, the folder marks them to be fetched "
            "from the API again by the next `seeknetic-prep run` over their files.")
    store.repoll(lost)
    log.warning("%d embedding(s) were in no readable part of %s any more (a part damaged or deleted): "
                "marked to be fetched from the API again by the next run over their files",
                len(lost), out_dir)


def _put_tags(row: dict[str, Any], tags: dict[str, Any]) -> None:
    extra = {}
    for name, value in tags.items():
        kind = TAG_TYPES.get(name)
        if kind is not None and isinstance(value, _PY[kind]) and not isinstance(value, bool):
            row[name] = value
        else:
            extra[name] = value
    row["tags_extra"] = json.dumps(extra, sort_keys=True) if extra else None


def _table(rows: list[tuple[bytes, int, dict[str, Any]]]) -> pa.Table:
    blobs = [r[2].get("_blob") for r in rows]
    sizes = {len(b) for b in blobs if b is not None}
    if len(sizes) > 1:
        raise StateError(f"Embeddings of different sizes in one run ({sorted(s // 4 for s in sizes)}).")
    dim = sizes.pop() // 4 if sizes else DEFAULT_DIM
    schema = part_schema(dim)
    flat = np.zeros((len(rows), dim), dtype=np.float32)
    for i, blob in enumerate(blobs):
        if blob is not None:
            flat[i] = np.frombuffer(blob, dtype="<f4")
    mask = pa.array([b is None for b in blobs])
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), dim, mask=mask)
    columns: dict[str, Any] = {
        "path": [display_path(r[0]) for r in rows],
        "path_bytes": [r[0] for r in rows],
    }
    for field in schema:
        if field.name in ("path", "path_bytes"):
            continue
        if field.name == "embedding":
            columns["embedding"] = embedding
            continue
        columns[field.name] = pa.array([r[2].get(field.name) for r in rows], type=field.type)
    return pa.table(columns, schema=schema)


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
