"""The approximate index (issue 11, 10M windows): recall against exact ranking on real parts,
stale rows never returned, growth with the runs, and the one-line error without the extra."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _results_helpers import add_file, vector

from seeknetic_prep.results.ann import ann_available
from seeknetic_prep.results.index import load_windows
from seeknetic_prep.results.part_rows import append_results_part
from seeknetic_prep.results.rank import rank
from seeknetic_prep.state.store import Store

pytestmark = pytest.mark.skipif(not ann_available(), reason="the ann extra (usearch) is not installed")
DIM = 64


def _run(out: Path, files: range, windows: int = 20) -> None:
    with Store(out / "state.sqlite") as store:
        run = store.start_run()
        for f in files:
            add_file(store, f"/v/{f:04d}.mp4", f"{f:032d}", windows, dim=DIM)
        append_results_part(store, out, run)


def test_recall_at_10_against_exact_and_growth_with_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(out, range(0, 100))  # 2,000 windows
    _run(out, range(100, 150))  # a second run: 1,000 more, added to the graph, not rebuilt
    windows = load_windows(out)
    assert len(windows) == 3000
    rng = np.random.default_rng(3)
    overlaps = []
    for _ in range(30):
        query = vector(f"{int(rng.integers(150)):032d}", int(rng.integers(20)), DIM)
        query = query + 0.3 * rng.standard_normal(DIM).astype(np.float32)
        exact, _ = rank(windows, query, top=10, method="exact")
        approx, matched = rank(windows, query, top=10, method="ann")
        assert matched == 3000 and len(approx) == 10
        overlaps.append(len({(h.path, h.start_ms) for h in exact} & {(h.path, h.start_ms) for h in approx}))
        assert [h.score for h in approx] == sorted((h.score for h in approx), reverse=True)
    recall = sum(overlaps) / (10 * len(overlaps))
    print(f"recall@10 of the approximate index over 3,000 windows: {recall:.3f}")
    assert recall >= 0.95
    assert (out / "search" / "ann.usearch").exists()


def test_a_replaced_window_is_never_returned(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(out, range(0, 10))
    target = vector(f"{3:032d}", 5, DIM)
    # (Exact here: on 200 unstructured random vectors the graph's top 1 is not guaranteed.)
    first, _ = rank(load_windows(out), target, top=1, method="exact")
    assert first[0].path == "/v/0003.mp4" and first[0].start_ms == 50_000
    # A later run replaces that content's windows with other vectors (a new content id).
    with Store(out / "state.sqlite") as store:
        run = store.start_run()
        add_file(store, "/v/0003.mp4", f"{999:032d}", 20, dim=DIM)
        append_results_part(store, out, run)
    hits, _ = rank(load_windows(out), target, top=5, method="ann")
    assert all(not (h.path == "/v/0003.mp4" and h.score == pytest.approx(1.0)) for h in hits)
    assert len(hits) == 5
