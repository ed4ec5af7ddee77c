"""Rank a run's current windows by similarity to a query embedding, filter them by tags.

The windows come from :func:`seeknetic_prep.results.index.load_windows` (their small columns and
the memory-mapped matrix of embeddings). Tag filters (:mod:`.filters`) are column filters; what
is left is ranked exactly, a chunked float32 matmul against the matrix and ``argpartition`` (memory beyond the
mapping: a few bytes per window), or, for a large run, through the approximate index of
:mod:`seeknetic_prep.results.ann` and rescored exactly.

The query's embedding comes from the API (``POST /video_embedding/encode_text``, see
:mod:`seeknetic_prep.commands.search`), so this module stays pure and testable with vectors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from seeknetic_prep.errors import InvalidArgumentError
from seeknetic_prep.results.ann import ANN_MIN_ROWS, ann_available, ann_search
from seeknetic_prep.results.filters import Condition, conditions, filter_mask, parse_tag_filters
from seeknetic_prep.results.index import CHUNK_ROWS, Windows
from seeknetic_prep.results.parts import TAG_TYPES
from seeknetic_prep.state.store import display_path

__all__ = ["Hit", "list_tags", "parse_tag_filters", "rank"]


@dataclass(frozen=True)
class Hit:
    """One window of one file, with its score against the query (``None`` when not ranked)."""

    path: str
    start_ms: int
    end_ms: int
    score: float | None
    tags: Mapping[str, Any] = field(default_factory=dict)


def _tags(table: pa.Table, i: int) -> dict[str, Any]:
    row = table.slice(i, 1).select([*TAG_TYPES, "tags_extra"]).to_pylist()[0]
    extra = row.pop("tags_extra")
    tags = {k: v for k, v in row.items() if v is not None}
    if extra:
        tags.update(json.loads(extra))
    return tags


def rank(
    windows: Windows,
    query: Sequence[float] | np.ndarray | None,
    *,
    tags: Mapping[str, str] | None = None,
    where: Sequence[Condition] = (),
    top: int = 10,
    method: str = "auto",
) -> tuple[list[Hit], int]:
    """The ``top`` windows most similar to ``query`` (cosine), among those whose tags match
    (``tags``: equality, ``--tag``; ``where``: comparisons, ``--where``; see
    :mod:`seeknetic_prep.results.filters`), and how many matched. With no query, the matching
    windows in path and window order. Windows without an embedding are left out when there is a query.

    ``method``: ``exact`` (chunked matmul over the matrix), ``ann`` (the approximate index of
    :mod:`seeknetic_prep.results.ann`; its hits are rescored exactly), or ``auto``: ``ann`` for an
    unfiltered query over at least :data:`~seeknetic_prep.results.ann.ANN_MIN_ROWS` windows when the
    ``ann`` extra is installed, else ``exact``. Tag filters always rank exactly.

    Raises:
        InvalidArgumentError: ``top`` < 1, an unknown tag, tag value or method, a query of another
            dimension, or ``ann`` without the ``ann`` extra.
    """
    if top < 1:
        raise InvalidArgumentError(f"Invalid top {top}: must be >= 1.")
    table = windows.table
    filters = conditions(tags, where)
    mask = filter_mask(table, filters)
    if query is None:
        idx = np.flatnonzero(mask)
        sub = table.take(pa.array(idx)).select(["path_bytes", "window_index"])
        order = pc.sort_indices(sub, sort_keys=[("path_bytes", "ascending"), ("window_index", "ascending")])
        chosen = idx[order.to_numpy()[:top]]
        return [_hit(table, int(i), None) for i in chosen], len(idx)
    rows = windows.vector_row
    mask &= rows >= 0
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return [], 0
    q = np.asarray(query, dtype=np.float32)
    dim = windows.vectors.shape[1]
    if q.shape != (dim,):
        raise InvalidArgumentError(
            f"Query embedding has {q.size} dimensions but the results have {dim}: "
            "were they made by another model?"
        )
    q = q / (np.linalg.norm(q) or 1.0)
    if _use_ann(method, windows, bool(filters)):
        return _rank_ann(windows, q, top), len(idx)
    scores = _scores(windows.vectors, rows[idx], q)
    k = min(top, len(idx))
    best = np.argpartition(-scores, k - 1)[:k] if k < len(idx) else np.arange(len(idx))
    best = best[np.lexsort((best, -scores[best]))]  # by score, ties by position: deterministic
    return [_hit(table, int(idx[b]), float(scores[b])) for b in best], len(idx)


def _use_ann(method: str, windows: Windows, filtered: bool) -> bool:
    if method not in ("auto", "exact", "ann"):
        raise InvalidArgumentError(f"Invalid method {method!r}: must be auto, exact or ann.")
    if method == "exact" or filtered or windows.folder is None:
        return False
    return method == "ann" or (len(windows.vectors) >= ANN_MIN_ROWS and ann_available())


def _rank_ann(windows: Windows, q: np.ndarray, top: int) -> list[Hit]:
    """Hits from the approximate index, stale matrix rows skipped, rescored exactly."""

    assert windows.folder is not None
    vectors, rows = windows.vectors, windows.vector_row
    current = np.full(len(vectors), -1, dtype=np.int64)  # matrix row -> current table row
    has = rows >= 0
    current[rows[has]] = np.flatnonzero(has)
    want = top * 4 + 32
    while True:
        keys = ann_search(windows.folder, vectors, q, count=min(want, len(vectors)))
        keys = keys[(keys >= 0) & (keys < len(vectors))]
        keys = keys[current[keys] >= 0]
        if len(keys) >= top or want >= len(vectors):
            break
        want *= 4
    keys = np.sort(keys)  # read the mapping in file order
    scores = np.asarray(vectors[keys] @ q, dtype=np.float32)
    order = np.lexsort((keys, -scores))[:top]  # by score, ties by row: deterministic
    return [_hit(windows.table, int(current[keys[b]]), float(scores[b])) for b in order]


def _scores(vectors: np.ndarray, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``vectors[rows] @ q``, reading the mapping in chunks (all of it when most rows count)."""
    total = vectors.shape[0]
    if len(rows) * 4 < total:  # a narrow filter: gather just those rows, in file order
        order = np.argsort(rows, kind="stable")
        out = np.empty(len(rows), dtype=np.float32)
        for a in range(0, len(rows), CHUNK_ROWS):
            sel = order[a:a + CHUNK_ROWS]
            out[sel] = vectors[rows[sel]] @ q
        return out
    every = np.empty(total, dtype=np.float32)
    for a in range(0, total, CHUNK_ROWS):
        every[a:a + CHUNK_ROWS] = vectors[a:a + CHUNK_ROWS] @ q
    scores: np.ndarray = every[rows]
    return scores


def _hit(table: pa.Table, i: int, score: float | None) -> Hit:
    return Hit(display_path(table["path_bytes"][i].as_py()), int(table["start_ms"][i].as_py()),
               int(table["end_ms"][i].as_py()), score, _tags(table, i))


def list_tags(windows: Windows) -> dict[str, Any]:
    """Each tag with the values that occur: ``{name: [(value, count), ...]}`` for categories,
    ``{name: (min, max)}`` for measurements; tags outside the typed columns by count."""
    table = windows.table
    out: dict[str, Any] = {}
    for name, kind in TAG_TYPES.items():
        column = table[name]
        if column.null_count == len(column):
            continue
        if kind == pa.string():
            counts = pc.value_counts(column.drop_null()).to_pylist()
            out[name] = sorted(((c["values"], int(c["counts"])) for c in counts), key=lambda x: (-x[1], x[0]))
        else:
            bounds = pc.min_max(column).as_py()
            out[name] = (bounds["min"], bounds["max"])
    extra: dict[str, int] = {}
    for text in table["tags_extra"].drop_null().to_pylist():
        for key in json.loads(text):
            extra[key] = extra.get(key, 0) + 1
    for key, n in sorted(extra.items()):
        out.setdefault(key, [("(other)", n)])
    return out
