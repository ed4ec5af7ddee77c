"""An approximate nearest-neighbour index over the search matrix, for runs of many millions.

Exact ranking (:func:`seeknetic_prep.results.rank.rank`) reads the whole memory-mapped matrix per
query: 0.23 s at 1M windows here, about 2.3 s at 10M. Past a few million windows this module
answers from an HNSW graph instead (`usearch <https://github.com/unum-cloud/usearch>`_, the
``ann`` extra): inner product over the same L2-normalised vectors, stored as float16. It was
chosen by measurement on clustered synthetic embeddings (``scripts/bench.py --only s``):
float16 kept recall@10 at 1.000 where int8 fell to 0.79, at 1.1 ms a query for 100k windows.

``<out>/search/ann.usearch`` holds the graph, keyed by matrix row (it covers rows
``0 .. len - 1``); ``ann.json`` names the matrix it was built over (the index's build id), so a
matrix made again from the parts gets a new graph. :func:`update_ann` adds the rows appended
since (cost in proportion to them), so it grows with the runs like the matrix. A matrix row
can be stale (its window was replaced by a newer part): such hits are skipped, which is why a
query asks the graph for more than it shows. Tag filters keep the exact path, which filters
before ranking.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from seeknetic_prep.errors import InvalidArgumentError, StateError
from seeknetic_prep.util.fsio import atomic_path, atomic_write, locked

__all__ = ["ANN_MIN_ROWS", "ann_available", "ann_search", "update_ann"]

ANN_MIN_ROWS = 2_000_000
"""Below this many windows exact ranking is fast enough (< 0.5 s) and is used by default."""
_FILE, _STATE = "ann.usearch", "ann.json"
_BATCH = 65_536


def ann_available() -> bool:
    """Whether the ``ann`` extra (usearch) is installed."""
    try:
        import usearch.index  # noqa: F401
    except ImportError:
        return False
    return True


def _require() -> Any:
    try:
        # usearch: an optional extra (exact search needs none)
        from usearch.index import Index
    except ImportError as exc:
        raise InvalidArgumentError(
            'Invalid --ann: the approximate index needs usearch: pip install "seeknetic-prep[ann]".'
        ) from exc
    return Index


def _new(index_cls: Any, dim: int) -> Any:
    return index_cls(ndim=dim, metric="ip", dtype="f16", connectivity=16, expansion_add=128,
                     expansion_search=128)


def _build_of(folder: Path) -> str | None:
    """The build id of the matrix in ``folder`` (``index.json``): the graph's keys are its rows."""
    try:
        state = json.loads((folder / "index.json").read_text())
    except (OSError, ValueError):
        return None
    build = state.get("build") if isinstance(state, dict) else None
    return build if isinstance(build, str) else None


def _saved(index_cls: Any, folder: Path, dim: int, build: str | None, total: int) -> Any | None:
    """The saved graph, memory-mapped, if it belongs to this matrix (``ann.json`` names its
    build and dimension), opens whole and covers no more rows than the matrix has, else ``None``."""
    try:
        state = json.loads((folder / _STATE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("build") != build or state.get("dim") != dim:
        return None
    index = _new(index_cls, dim)
    try:
        index.view(str(folder / _FILE))
    except (OSError, RuntimeError, ValueError):  # damaged or missing: made again
        return None
    return index if len(index) <= total else None


def update_ann(folder: Path, vectors: np.ndarray) -> int:
    """Add the matrix rows the graph does not cover yet; return how many were added.

    ``folder`` is ``<out>/search``; ``vectors`` its memory-mapped matrix. The graph covers matrix
    rows ``0 .. len(graph) - 1``, so what it covers is read from the graph itself, which is
    replaced in one rename; ``ann.json`` only names the matrix it was built over (its build id
    and dimension) and is written before a new graph is started. So no interruption can leave a
    graph and a count that disagree (they used to be replaced one after the other: 'Duplicate
    keys' for good). A graph that is damaged, of another matrix or larger than it is made again.

    Raises:
        StateError: the graph cannot be saved (a full disk); the old graph is left as it was.
    """
    index_cls = _require()
    total, dim = int(vectors.shape[0]), int(vectors.shape[1])
    build = _build_of(folder)
    with locked(folder / "ann.lock"):  # two searches may grow it at once
        index = _saved(index_cls, folder, dim, build, total)
        if index is None:
            (folder / _FILE).unlink(missing_ok=True)
            atomic_write(folder / _STATE, json.dumps({"build": build, "dim": dim}).encode())
            index = _new(index_cls, dim)
        covered = len(index)
        if covered >= total:
            return 0
        if covered:  # a view cannot grow: read the graph into memory
            index = _new(index_cls, dim)
            index.load(str(folder / _FILE))
        for start in range(covered, total, _BATCH):
            stop = min(total, start + _BATCH)
            index.add(np.arange(start, stop), np.asarray(vectors[start:stop], dtype=np.float32),
                      threads=os.cpu_count() or 1)
        try:
            with atomic_path(folder / _FILE) as tmp:
                index.save(str(tmp))
        except (OSError, RuntimeError) as exc:
            raise StateError(f"{folder / _FILE}: cannot save the approximate index ({exc}): is the "
                             "disk full? `search --exact` works without it.") from exc
    return total - covered


def ann_search(folder: Path, vectors: np.ndarray, query: np.ndarray, *, count: int) -> np.ndarray:
    """Up to ``count`` matrix rows nearest ``query`` (normalised, float32), best first."""
    update_ann(folder, vectors)
    index = _new(_require(), vectors.shape[1])
    index.view(str(folder / _FILE))  # memory-mapped: the graph is not read into memory
    found = index.search(query.astype(np.float32), count)
    keys: np.ndarray = np.asarray(found.keys, dtype=np.int64)
    return keys
