"""What a run's part holds: its rows, read from the state (:mod:`.parts` holds the files).

:func:`append_results_part` reads only what one run did: the units it made terminal
(``units.finished_run``) and the paths it recorded or changed (``files.run_id``), so the end of
a run costs time in proportion to the run, not to the history. A row carries its window's whole
state (both services' status, results and request ids, and the file's media columns); an
embedding the state already handed to an earlier part is read back from the parts
(:mod:`.embeddings`), and one no part holds any more goes back to the API (``repoll``).
:func:`ensure_parts` writes the parts of runs that never wrote theirs, and :func:`gone_rows`
rebuilds the rows of paths found gone, for ``results --include-gone``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from seeknetic_prep.errors import StateError
from seeknetic_prep.results.embeddings import find_embeddings, held_keys
from seeknetic_prep.results.parts import (
    DEFAULT_DIM,
    PARTS_DIR,
    SERVICES,
    TAG_TYPES,
    damaged_parts,
    list_parts,
    part_schema,
    part_sequence,
    write_part,
)
from seeknetic_prep.state.store import Store, display_path
from seeknetic_prep.util.fsio import locked

__all__ = ["append_results_part", "ensure_parts", "gone_rows", "missing_parts"]

log = logging.getLogger(__name__)
_PY = {pa.string(): (str,), pa.float64(): (float, int), pa.int64(): (int,)}
"""The Python values a typed tag column takes (anything else goes to ``tags_extra``)."""


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


def missing_parts(store: Store, out_dir: Path) -> list[int]:
    """The runs whose results are in the state but in no readable part (what
    :func:`ensure_parts` would write), for a reader that cannot write them."""
    have = {part_sequence(p) for p in list_parts(out_dir)}
    damaged = {part_sequence(p) for p, _ in damaged_parts(out_dir)}
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
        have = {part_sequence(p) for p in list_parts(out_dir)}
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
