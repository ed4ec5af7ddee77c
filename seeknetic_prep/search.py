"""Search a run's results: rank windows by similarity to a query embedding, filter by tags.

This is the last stage, over ``<out>/results.jsonl`` only: the query's embedding comes from the
API (``POST /video_embedding/encode_text``, see :mod:`seeknetic_prep.commands.search`), so this
module stays pure and testable with plain vectors. Embeddings are L2-normalised by the API, but
they are normalised again here so a result written by another tool cannot skew the ranking.
A window's tags (from the tagging service) are joined to its embedding by (fingerprint, window),
so one hit shows both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidArgumentError

__all__ = ["Hit", "load_windows", "parse_tag_filters", "rank"]


@dataclass(frozen=True)
class Hit:
    """One window of one file, with its score against the query (``None`` when not ranked)."""

    path: str
    start_ms: int
    end_ms: int
    score: float | None
    tags: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class _Window:
    path: str
    start_ms: int
    end_ms: int
    embedding: list[float] | None = None
    tags: dict[str, Any] = field(default_factory=dict)


def load_windows(results_path: Path) -> list[_Window]:
    """Every completed window in ``results_path``, with its embedding and tags joined.

    Raises:
        InvalidArgumentError: the file is missing (no run wrote to that folder yet).
    """
    if not results_path.exists():
        raise InvalidArgumentError(
            f"No results at {results_path}: run `seeknetic-prep run PATH --out {results_path.parent}` first."
        )
    windows: dict[tuple[str, int], _Window] = {}
    with open(results_path, encoding="utf-8") as f:
        for raw in f:
            line = json.loads(raw)
            if line.get("status") != "completed" or line.get("start_ms") is None:
                continue
            key = (str(line.get("fingerprint")), int(line["start_ms"]))
            win = windows.get(key)
            if win is None:
                win = windows[key] = _Window(str(line["path"]), int(line["start_ms"]), int(line["end_ms"]))
            if line.get("service") == "embedding" and line.get("embedding"):
                win.embedding = [float(x) for x in line["embedding"]]
            elif line.get("service") == "tagging" and isinstance(line.get("tags"), dict):
                win.tags = line["tags"]
    return sorted(windows.values(), key=lambda w: (w.path, w.start_ms))


def parse_tag_filters(specs: Iterable[str]) -> dict[str, str]:
    """``["shot_size=close_up", ...]`` -> ``{"shot_size": "close_up"}``.

    Raises:
        InvalidArgumentError: a spec without ``=``.
    """
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name.strip():
            raise InvalidArgumentError(
                f"Invalid tag filter {spec!r}: must be NAME=VALUE, e.g. shot_size=wide."
            )
        out[name.strip()] = value.strip()
    return out


def _matches(tags: Mapping[str, Any], filters: Mapping[str, str]) -> bool:
    for name, want in filters.items():
        have = tags.get(name)
        values = have if isinstance(have, list) else [have]
        if not any(str(v).lower() == want.lower() for v in values):
            return False
    return True


def rank(
    windows: Sequence[_Window],
    query: Sequence[float] | None,
    *,
    tags: Mapping[str, str] | None = None,
    top: int = 10,
) -> list[Hit]:
    """The ``top`` windows most similar to ``query`` (cosine), among those whose tags match.

    With no query, the matching windows in file order. Windows without an embedding cannot be
    ranked and are left out when there is a query.

    Raises:
        InvalidArgumentError: ``top`` < 1, or the query's dimension differs from the results'.
    """
    if top < 1:
        raise InvalidArgumentError(f"Invalid top {top}: must be >= 1.")
    pool = [w for w in windows if _matches(w.tags, tags or {})]
    if query is None:
        return [Hit(w.path, w.start_ms, w.end_ms, None, w.tags) for w in pool[:top]]
    pool = [w for w in pool if w.embedding is not None]
    if not pool:
        return []
    q = np.asarray(query, dtype=np.float64)
    matrix = np.asarray([w.embedding for w in pool], dtype=np.float64)
    if matrix.shape[1] != q.shape[0]:
        raise InvalidArgumentError(
            f"Query embedding has {q.shape[0]} dimensions but the results have {matrix.shape[1]}: "
            "were they made by another model?"
        )
    q /= np.linalg.norm(q) or 1.0
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    scores = matrix @ q
    order = np.argsort(-scores, kind="stable")[:top]
    return [Hit(pool[i].path, pool[i].start_ms, pool[i].end_ms, float(scores[i]), pool[i].tags)
            for i in order]
