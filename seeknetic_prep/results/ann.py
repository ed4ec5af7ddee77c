"""An approximate nearest-neighbour index over the search matrix, for runs of many millions.

Exact ranking (:func:`seeknetic_prep.results.index.rank`) reads the whole memory-mapped matrix per
query: 0.23 s at 1M windows here, about 2.3 s at 10M. Past a few million windows this module
answers from an HNSW graph instead (`usearch <https://github.com/unum-cloud/usearch>`_, the
``ann`` extra): inner product over the same L2-normalised vectors, stored as float16. It was
chosen by measurement on clustered synthetic embeddings (``scripts/bench.py --only s``):
float16 kept recall@10 at 1.000 where int8 fell to 0.79, at 1.1 ms a query for 100k windows.

``<out>/search/ann.usearch`` holds the graph, keyed by matrix row; ``ann.json`` how many matrix
rows it covers. :func:`update_ann` adds the rows appended since (cost in proportion to them),
so it grows with the runs like the matrix. A matrix row can be stale (its window was replaced by
a newer part): such hits are skipped, which is why a query asks the graph for more than it
shows. Tag filters keep the exact path, which filters before ranking.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from seeknetic_prep.errors import InvalidArgumentError
from seeknetic_prep.util.fsio import atomic_path, atomic_write

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
        from usearch.index import Index
    except ImportError as exc:
        raise InvalidArgumentError(
            'Invalid --ann: the approximate index needs usearch: pip install "seeknetic-prep[ann]".'
        ) from exc
    return Index


def _new(index_cls: Any, dim: int) -> Any:
    return index_cls(ndim=dim, metric="ip", dtype="f16", connectivity=16, expansion_add=128,
                     expansion_search=128)


def update_ann(folder: Path, vectors: np.ndarray) -> int:
    """Add the matrix rows the graph does not cover yet; return how many were added.

    ``folder`` is ``<out>/search``; ``vectors`` its memory-mapped matrix. The graph is written
    to a temporary file and renamed, then ``ann.json`` is replaced: a crash leaves the old pair.
    """
    index_cls = _require()
    state_path, graph = folder / _STATE, folder / _FILE
    covered = int(json.loads(state_path.read_text())["rows"]) if graph.exists() and state_path.exists() else 0
    total, dim = int(vectors.shape[0]), int(vectors.shape[1])
    if covered >= total:
        return 0
    index = _new(index_cls, dim)
    if covered:
        index.load(str(graph))
    for start in range(covered, total, _BATCH):
        stop = min(total, start + _BATCH)
        index.add(np.arange(start, stop), np.asarray(vectors[start:stop], dtype=np.float32),
                  threads=os.cpu_count() or 1)
    with atomic_path(graph) as tmp:
        index.save(str(tmp))
    atomic_write(state_path, json.dumps({"rows": total}).encode())
    return total - covered


def ann_search(folder: Path, vectors: np.ndarray, query: np.ndarray, *, count: int) -> np.ndarray:
    """Up to ``count`` matrix rows nearest ``query`` (normalised, float32), best first."""
    update_ann(folder, vectors)
    index = _new(_require(), vectors.shape[1])
    index.view(str(folder / _FILE))  # memory-mapped: the graph is not read into memory
    found = index.search(query.astype(np.float32), count)
    keys: np.ndarray = np.asarray(found.keys, dtype=np.int64)
    return keys
