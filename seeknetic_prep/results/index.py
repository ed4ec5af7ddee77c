"""Search a run's results: rank windows by similarity to a query embedding, filter by tags.

The results are the Parquet parts (:mod:`seeknetic_prep.results.parts`); beside them this module
keeps ``<out>/search/``: ``vectors.f32``, every embedding of every part, L2-normalised, as one
float32 matrix that is memory-mapped and never parsed; ``vectors.ids``, for each matrix row a
64-bit hash of the window it holds (path bytes, content, window); for each part a ``.rows.npy``
that maps the part's rows to matrix rows (-1: no embedding); and ``index.json``, the parts
indexed (name, size, mtime, inode) and a build id. :func:`update_index` appends the parts it has
not seen (cost in proportion to them), so the matrix grows with the runs. Everything here is a
cache of the parts: a part that changed under its name (written again from the state), a
damaged or missing file, or a matrix row that does not hold the window pointing at it
(checked whenever the current rows are merged) makes it all again from the parts.

:func:`load_windows` reads the parts' small columns (no embeddings) and keeps the current rows
(:func:`seeknetic_prep.results.parts.latest_rows`; cached in ``windows.arrow``, memory-mapped,
until a new part appears); :mod:`seeknetic_prep.results.rank` filters and ranks them.

A reader that cannot write the out folder (another account's, a read-only mount) reads its
index in place when it covers every part, and otherwise keeps its own in the user's cache
(:func:`index_folder`): a shared folder is searched without being changed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from seeknetic_prep.errors import InvalidArgumentError, StateError
from seeknetic_prep.results.parts import PARTS_DIR, TAG_TYPES, latest_rows, list_parts, refuse_damaged
from seeknetic_prep.util.fsio import atomic_path, atomic_write, locked
from seeknetic_prep.util.readers import cache_for, writable

__all__ = ["CHUNK_ROWS", "INDEX_DIR", "Windows", "follow_rewrites", "index_folder", "load_windows",
           "update_index"]

INDEX_DIR = "search"
CHUNK_ROWS = 65_536
_META = ["path_bytes", "fingerprint", "file_status", "window_index", "start_ms", "end_ms",
         *TAG_TYPES, "tags_extra"]


@dataclass
class Windows:
    """The current windows of a run: their columns (no embeddings) and the matrix.

    ``table`` holds only current rows with a window; ``vector_row[i]`` is row ``i``'s row in
    ``vectors`` (-1: no embedding).
    """

    table: pa.Table
    vector_row: np.ndarray
    vectors: np.ndarray
    folder: Path | None = None  # <out>/search: where an approximate index lives

    def __len__(self) -> int:
        return int(self.table.num_rows)


_STATE_VERSION = 2
_K = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))


class _Stale(Exception):
    """The matrix does not hold what the parts say (a part rebuilt, a cache damaged)."""


def _part_id(part: Path) -> list[Any]:
    """What tells one file of a part from another written under the same name later."""
    st = part.stat()
    return [part.name, st.st_size, st.st_mtime_ns, st.st_ino]


def _index_state(folder: Path) -> dict[str, Any] | None:
    """``index.json``, or ``None`` when it is missing, damaged or of an older layout."""
    try:
        state = json.loads((folder / "index.json").read_text())
        ok = (isinstance(state, dict) and state.get("version") == _STATE_VERSION
              and isinstance(state.get("build"), str) and isinstance(state.get("vectors"), int)
              and state["vectors"] >= 0 and (state.get("dim") is None or isinstance(state["dim"], int))
              and isinstance(state.get("parts"), list)
              and all(isinstance(p, list) and len(p) == 4 for p in state["parts"]))
    except (OSError, ValueError):
        return None
    return state if ok else None


def _fresh_state(folder: Path) -> dict[str, Any]:
    """Start the index over: every derived file goes, and a new build id tells the approximate
    index (keyed by matrix row) that its rows mean something else now."""
    for name in ("index.json", "vectors.f32", "vectors.ids", "windows.arrow", "ann.usearch", "ann.json"):
        (folder / name).unlink(missing_ok=True)
    for rows in folder.glob("*.rows.npy"):
        rows.unlink(missing_ok=True)
    return {"version": _STATE_VERSION, "build": os.urandom(8).hex(), "dim": None, "vectors": 0, "parts": []}


def _usable(folder: Path, state: dict[str, Any] | None, on_disk: dict[str, list[Any]]) -> bool:
    """Whether ``state`` still describes the parts and files of ``folder``: every part it
    indexed unchanged (same name, size, mtime, inode) and the matrix and ids long enough."""
    if state is None:
        return False
    if any(on_disk.get(p[0]) != p for p in state["parts"]):
        return False
    dim, count = state["dim"] or 0, state["vectors"]
    for name, width in (("vectors.f32", 4 * dim), ("vectors.ids", 8)):
        path = folder / name
        if count and (not path.exists() or path.stat().st_size < count * width):
            return False
    return all((folder / f"{p[0]}.rows.npy").exists() for p in state["parts"])


def index_folder(out_dir: Path) -> Path:
    """Where this process keeps the index of ``out_dir``: ``<out>/search``, or, when that
    cannot be written (another account's folder, a read-only mount), the user's cache
    (:func:`~seeknetic_prep.util.readers.cache_for`)."""
    own = Path(out_dir) / INDEX_DIR
    return own if writable(own if own.exists() else Path(out_dir)) else cache_for(Path(out_dir), INDEX_DIR)


def follow_rewrites(out_dir: Path, rewritten: dict[str, np.ndarray]) -> None:
    """Parts written again with only some of their rows (``rewritten``: each one's kept old
    row indices, :func:`~seeknetic_prep.results.current.drop_superseded`): their row maps
    are cut to match and their identities updated, so the index is not made again from every
    part. The matrix rows of the dropped rows stay, unreferenced, until a rebuild."""
    folder = Path(out_dir) / INDEX_DIR
    if not rewritten or not folder.is_dir():
        return
    with locked(folder / "lock"):
        state = _index_state(folder)
        if state is None:
            return
        entries = []
        for entry in state["parts"]:
            name = entry[0]
            if name in rewritten:
                try:
                    rows = np.load(folder / f"{name}.rows.npy")
                    atomic_write(folder / f"{name}.rows.npy", _npy_bytes(rows[rewritten[name]]), fsync=False)
                    entry = _part_id(Path(out_dir) / PARTS_DIR / name)
                except (OSError, ValueError, IndexError):  # damaged or stale: the next search makes it again
                    pass
            entries.append(entry)
        atomic_write(folder / "index.json", json.dumps({**state, "parts": entries}).encode())


def update_index(out_dir: Path, *, rebuild: bool = False, folder: Path | None = None) -> int:
    """Append the embeddings of parts not indexed yet to ``<out>/search``; return how many.

    Crash-safe: the matrix is cut back to the length ``index.json`` records before anything is
    appended, and ``index.json`` is replaced last. The index is a cache of the parts: when a
    part it indexed changed or vanished (deleted and written again from the state), or one of
    its files is damaged or missing, or ``rebuild`` is set, it is made again from the parts.

    Raises:
        StateError: a part's embeddings have another size than the matrix's.
    """
    folder = Path(out_dir) / INDEX_DIR if folder is None else folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgumentError(
            f"The search index of {out_dir} is missing or out of date, and it can be made neither there "
            f"(read-only) nor in {folder} ({exc.strerror or exc}): set XDG_CACHE_HOME to a folder you "
            f"can write, or ask the folder's owner to run `seeknetic-prep search --out {out_dir}` once."
        ) from exc
    with locked(folder / "lock"):  # a search and a run's end may index at once
        return _update(Path(out_dir), folder, rebuild)


def _update(out_dir: Path, folder: Path, rebuild: bool) -> int:
    parts = list_parts(out_dir)
    on_disk = {p.name: _part_id(p) for p in parts}
    state = _index_state(folder)
    if rebuild or state is None or not _usable(folder, state, on_disk):
        state = _fresh_state(folder)
    seen = {p[0] for p in state["parts"]}
    added = 0
    for part in parts:
        if part.name in seen:
            continue
        table = pq.read_table(part, columns=["embedding", "path_bytes", "fingerprint", "window_index"])
        column = table["embedding"].combine_chunks()
        dim = int(column.type.list_size)
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        if valid.any() and state["dim"] not in (None, dim):  # a part without one says no size
            raise StateError(f"{part}: embeddings of {dim} values, the index has {state['dim']}.")
        vecs = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
        vecs = vecs.reshape(-1, dim)
        if len(vecs) != int(valid.sum()):  # flatten kept the null slots' values: drop them
            vecs = vecs[valid]
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        rows = np.full(len(valid), -1, dtype=np.int64)
        rows[valid] = state["vectors"] + np.arange(int(valid.sum()))
        if len(vecs):
            _append(folder / "vectors.f32", state["vectors"] * dim * 4, vecs.astype("<f4").tobytes())
            _append(folder / "vectors.ids", state["vectors"] * 8,
                    _identity(table)[valid].astype("<u8").tobytes())
            state = {**state, "dim": dim}
        atomic_write(folder / f"{part.name}.rows.npy", _npy_bytes(rows))
        state = {**state, "vectors": state["vectors"] + len(vecs),
                 "parts": [*state["parts"], on_disk[part.name]]}
        atomic_write(folder / "index.json", json.dumps(state).encode())
        added += len(vecs)
    return added


def _append(path: Path, at: int, data: bytes) -> None:
    """Write ``data`` at byte ``at`` of ``path``, cutting off whatever an interrupted append
    left past it."""
    with open(path, "ab") as f:
        f.truncate(at)
        f.seek(at)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _hash_values(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A 64-bit hash per row of a string or binary column (each distinct value hashed once)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = pc.dictionary_encode(pc.fill_null(column, pa.scalar(b"" if pa.types.is_binary(column.type)
                                                                  else "", column.type)))
    hashes = np.array([int.from_bytes(hashlib.blake2b(v if isinstance(v, bytes) else v.encode(),
                                                      digest_size=8).digest(), "little")
                       for v in encoded.dictionary.to_pylist()], dtype=np.uint64)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    found: np.ndarray = hashes[codes] if len(hashes) else np.zeros(len(codes), dtype=np.uint64)
    return found


def _identity(table: pa.Table) -> np.ndarray:
    """Each row's window identity (path bytes, content fingerprint, window) as a 64-bit hash:
    what a matrix row must hold for a table row that points at it."""
    window = pc.fill_null(table["window_index"], -1).to_numpy(zero_copy_only=False).astype(np.int64)
    mixed: np.ndarray = ((_hash_values(table["path_bytes"]) * _K[0])
                         ^ (_hash_values(table["fingerprint"]) * _K[1])
                         ^ ((window.astype(np.uint64) + np.uint64(1)) * _K[2]))
    return mixed


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def load_windows(out_dir: Path) -> Windows:
    """The current windows of ``out_dir`` (indexing new parts first).

    Every current row's matrix row is checked against the window it was made from (a 64-bit
    hash of path, content and window kept beside the matrix, ``vectors.ids``); when they differ
    -- a part written again from the state under the same name, a damaged cache -- the index is
    made again from the parts, so a search never ranks one window with another's embedding.

    Raises:
        InvalidArgumentError: no parts (no run wrote to that folder yet).
        StateError: the index still disagrees with the parts after being made again.
    """
    parts = list_parts(out_dir)
    if not parts:
        raise InvalidArgumentError(
            f"No results in {Path(out_dir) / PARTS_DIR}: run `seeknetic-prep run PATH --out {out_dir}` first."
        )
    refuse_damaged(out_dir)  # with a state, the commands wrote damaged parts again first
    shared = _read_only_index(Path(out_dir), parts)
    if shared is not None:
        return shared
    folder = index_folder(out_dir)
    for rebuild in (False, True):
        update_index(out_dir, rebuild=rebuild, folder=folder)
        state = _index_state(folder)
        if state is None:
            continue
        try:
            table, rowmap = _current(folder, state, parts)
        except _Stale:
            continue
        dim = state["dim"] or 1
        count = int(state["vectors"])
        vectors = (np.memmap(folder / "vectors.f32", dtype="<f4", mode="r", shape=(count, dim))
                   if count else np.zeros((0, dim), dtype=np.float32))
        return Windows(table, rowmap, vectors, folder)
    raise StateError(f"{folder}: the search index disagrees with the parts even after it was made "
                     "again; delete that folder and search again.")


def _read_only_index(out_dir: Path, parts: list[Path]) -> Windows | None:
    """The index an out folder we cannot write holds, when it covers every part as they are:
    read in place (no copy in the cache, no approximate index: ranking is exact). None when
    the folder can be written, or its index is missing, stale or damaged."""
    folder = out_dir / INDEX_DIR
    if not folder.is_dir() or writable(folder):
        return None
    state = _index_state(folder)
    on_disk = {p.name: _part_id(p) for p in parts}
    if state is None or not _usable(folder, state, on_disk) or len(state["parts"]) != len(on_disk):
        return None
    try:
        table, rowmap = _current(folder, state, parts)
    except (_Stale, OSError):
        return None
    dim, count = state["dim"] or 1, int(state["vectors"])
    vectors = (np.memmap(folder / "vectors.f32", dtype="<f4", mode="r", shape=(count, dim))
               if count else np.zeros((0, dim), dtype=np.float32))
    return Windows(table, rowmap, vectors, None)


def _current(folder: Path, state: dict[str, Any], parts: list[Path]) -> tuple[pa.Table, np.ndarray]:
    """The current rows of ``parts`` and their matrix rows, from ``windows.arrow`` when it was
    made from the same parts and matrix (memory-mapped: no parsing), else merged, checked
    against the matrix's window identities, and cached there.

    Raises:
        _Stale: a matrix row does not hold the window that points at it.
    """
    cache = folder / "windows.arrow"
    names = json.dumps({"build": state["build"], "parts": [_part_id(p) for p in parts]})
    if cache.exists():
        try:
            # Left open: the table's buffers point into the mapping (closed when they are freed).
            cached = pa.ipc.open_file(pa.memory_map(str(cache))).read_all()
            if (cached.schema.metadata or {}).get(b"parts") == names.encode():
                return cached.drop_columns(["_vector_row"]), cached["_vector_row"].to_numpy()
        except (OSError, pa.ArrowException, KeyError):  # damaged: made again below
            pass
    table = pa.concat_tables([pq.read_table(p, columns=_META) for p in parts])
    try:
        maps = [np.load(folder / f"{p.name}.rows.npy") for p in parts]
    except (OSError, ValueError, EOFError) as exc:  # a damaged map: the index is made again
        raise _Stale from exc
    if sum(len(m) for m in maps) != table.num_rows:
        raise _Stale
    rowmap = np.concatenate(maps)
    keep = latest_rows(table)
    keep = keep[table["window_index"].is_valid().to_numpy(zero_copy_only=False)[keep]]
    table, rowmap = table.take(pa.array(keep)), rowmap[keep]
    _verify(folder, state, table, rowmap)
    out = table.append_column("_vector_row", pa.array(rowmap)).replace_schema_metadata({"parts": names})
    if not writable(folder):  # another account's index, read in place: nothing is cached
        return table, rowmap
    # A cache, remade whenever the parts change: not fsynced (~100 MB at 1M windows), as before.
    with (atomic_path(cache, fsync=False) as tmp, pa.OSFile(str(tmp), "wb") as sink,
          pa.ipc.new_file(sink, out.schema) as writer):
        writer.write_table(out)
    return table, rowmap


def _verify(folder: Path, state: dict[str, Any], table: pa.Table, rowmap: np.ndarray) -> None:
    """Raise :class:`_Stale` unless every row with a matrix row names one that holds its window."""
    count = int(state["vectors"])
    has = rowmap >= 0
    if not has.any():
        return
    if int(rowmap[has].max()) >= count:
        raise _Stale
    ids = np.memmap(folder / "vectors.ids", dtype="<u8", mode="r", shape=(count,))
    if not np.array_equal(np.asarray(ids[rowmap[has]]), _identity(table.filter(pa.array(has)))):
        raise _Stale
