"""Part of section s of ``scripts/bench.py``: the approximate index against exact ranking.

Synthetic but clustered embeddings (real ones cluster by scene; uniformly random vectors would
make every neighbour a near-tie and recall meaningless): 2,000 centres in 1,024 dimensions,
each vector a centre plus noise, L2-normalised; queries are fresh noisy points near random
centres. For each size: build time of the index (``seeknetic_prep.results.ann``'s settings), query
latency (median of 200), recall@10 against exact ranking, and exact ranking's latency; then
both extrapolated to 10M windows: the graph's latency as the slowest measured one scaled by
``log(n)`` (the depth of the graph; a conservative bound, since measured latency barely moved),
exact ranking's as proportional to ``n``.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np

DIM = 1024


def _data(n: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, DIM)).astype(np.float32)
    x = centres[rng.integers(0, 2000, n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    q = centres[rng.integers(0, 2000, queries)] + 0.6 * rng.standard_normal((queries, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q


def measure(n: int, queries: int = 200) -> dict[str, Any]:
    from usearch.index import Index

    x, q = _data(n, queries)
    index = Index(ndim=DIM, metric="ip", dtype="f16", connectivity=16, expansion_add=128,
                  expansion_search=128)
    started = time.perf_counter()
    index.add(np.arange(n), x, threads=os.cpu_count() or 1)
    build = time.perf_counter() - started
    ann_s, exact_s, overlap = [], [], 0
    for v in q:
        t0 = time.perf_counter()
        found = index.search(v, 10)
        t1 = time.perf_counter()
        exact = np.argpartition(-(x @ v), 10)[:10]
        t2 = time.perf_counter()
        ann_s.append(t1 - t0)
        exact_s.append(t2 - t1)
        overlap += len(set(found.keys.tolist()) & set(exact.tolist()))
    return {"windows": n, "build_s": round(build, 1),
            "ann_ms": round(1000 * float(np.median(ann_s)), 3),
            "exact_ms": round(1000 * float(np.median(exact_s)), 2),
            "recall_at_10": round(overlap / (10 * queries), 3), "index_mb": round(index.memory_usage / 1e6)}


def extrapolate(rows: list[dict[str, Any]], n: int = 10_000_000) -> dict[str, float]:
    slowest = max(rows, key=lambda r: r["ann_ms"])
    ann = slowest["ann_ms"] * math.log(n) / math.log(slowest["windows"])
    exact = float(np.mean([r["exact_ms"] / r["windows"] for r in rows])) * n
    return {"windows": n, "ann_ms": round(ann, 2), "exact_ms": round(exact, 1)}


def table(rows: list[dict[str, Any]], fit: dict[str, float]) -> str:
    head = ("| windows | build s | ANN query ms | exact query ms | recall@10 | index MB |\n"
            "|---|---|---|---|---|---|\n")
    body = "".join(f"| {r['windows']:,} | {r['build_s']} | {r['ann_ms']} | {r['exact_ms']} "
                   f"| {r['recall_at_10']} | {r['index_mb']} |\n" for r in rows)
    return head + body + (f"| {fit['windows']:,} (extrapolated) | | {fit['ann_ms']} | {fit['exact_ms']} | "
                          "not measured | |\n")


if __name__ == "__main__":
    measured = [measure(n) for n in (25_000, 100_000, 200_000)]
    fit = extrapolate(measured)
    print(table(measured, fit))
