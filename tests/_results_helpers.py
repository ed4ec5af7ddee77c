"""Synthetic run state written through the public Store API (no decoding, no server)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seeknetic_prep.state.store import Store

SERVICES = ("embedding", "tagging")


def vector(fp: str, index: int, dim: int = 1024) -> np.ndarray:
    """A deterministic unit vector per (content, window)."""
    seed = zlib.crc32(fp.encode()) * 10_000 + index
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def tags_for(index: int) -> dict[str, object]:
    return {"shot_size": ("wide_shot", "close_up")[index % 2], "brightness": 0.25 + index / 100,
            "scene_cuts": index, "dominant_color": "green", "mood": "calm"}


def add_file(store: Store, path: Path | str, fp: str, windows: int, *, finish: Sequence[int] | None = None,
             services: Sequence[str] = SERVICES, fail: dict[tuple[int, str], str] | None = None,
             dim: int = 1024) -> None:
    """Record ``path`` as content ``fp`` with ``windows`` windows; finish the windows in
    ``finish`` (all by default): completed, or failed where ``fail`` says so."""
    store.record_file(path, status="ok", fingerprint=fp, size=windows, duration_ms=windows * 10_000)
    store.plan_units([(fp, i, s, i * 10_000, (i + 1) * 10_000, f"{fp}-{i}-{s}")
                      for i in range(windows) for s in services])
    for i in range(windows) if finish is None else finish:
        for s in services:
            rid = f"{fp}-{i}-{s}"
            store.mark_uploaded(rid, {"video_input": f"k/{rid}"}, [i * 10_000 + 400.0 + k for k in range(12)])
            store.mark_submitted(rid)
            if fail and (i, s) in fail:
                store.mark_failed(rid, fail[(i, s)])
            elif s == "embedding":
                store.mark_completed(rid, {"embedding": vector(fp, i, dim).tolist(), "model_name": "m"})
            else:
                store.mark_completed(rid, {"tags": tags_for(i)})
