#!/usr/bin/env python3
"""The end-of-run cost of keeping ``parts/`` one dataset, at 1M windows (README, "parts/ is one dataset").

Builds 100 parts of 10k rows (500 files x 20 windows each, the real part schema, 1024-float
embeddings, ~4.3 GB in a temporary folder), then times
:func:`seeknetic_prep.results.current.drop_superseded`: the first pass over a folder written
before the rule, a run adding +1k windows of new files, and a run whose +1k windows supersede the
rows of one older part. ``python scripts/_bench_compact.py`` (~2 minutes here).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from seeknetic_prep.results.current import drop_superseded
from seeknetic_prep.results.parts import part_schema

WINDOWS = 20
SCHEMA = part_schema(1024)
RNG = np.random.default_rng(0)


def write_part(out: Path, run: int, files: int, first: int) -> Path:
    """Run ``run``'s part: ``files`` files from number ``first``, every window completed."""
    paths = [f"/data/videos/batch-{(first + f) // 1000:04d}/clip-{first + f:07d}.mp4"
             for f in range(files) for _ in range(WINDOWS)]
    n = len(paths)
    columns = {
        "path": paths, "path_bytes": [p.encode() for p in paths],
        "fingerprint": [f"{zlib.crc32(p.encode()):064x}" for p in paths], "file_status": ["ok"] * n,
        "window_index": np.tile(np.arange(WINDOWS, dtype=np.int32), files),
        "start_ms": np.tile(np.arange(WINDOWS) * 10_000, files),
        "end_ms": np.tile(np.arange(1, WINDOWS + 1) * 10_000, files),
        "embedding_status": ["completed"] * n, "tagging_status": ["completed"] * n,
    }
    values = pa.array(RNG.standard_normal(n * 1024).astype(np.float32))
    embedding = pa.FixedSizeListArray.from_arrays(values, 1024)
    arrays = [embedding if f.name == "embedding" else pa.array(columns[f.name], type=f.type)
              if f.name in columns else pa.nulls(n, type=f.type) for f in SCHEMA]
    path = out / "parts" / f"part-{run:06d}-00.parquet"
    pq.write_table(pa.Table.from_arrays(arrays, schema=SCHEMA), path)
    return path


def timed(out: Path, new: list[Path] | None) -> tuple[float, dict[str, int]]:
    started = time.perf_counter()
    rewritten = drop_superseded(out, new, keep=None)  # no state here: nothing to keep
    return time.perf_counter() - started, {name: len(kept) for name, kept in rewritten.items()}


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-compact-"))
    out = base / "out"
    (out / "parts").mkdir(parents=True)
    try:
        started = time.perf_counter()
        for run in range(1, 101):
            write_part(out, run, 500, (run - 1) * 500)
        size = sum(p.stat().st_size for p in (out / "parts").iterdir()) / 1e9
        took = time.perf_counter() - started
        print(f"built 1,000,000 windows in {took:.0f} s, {size:.1f} GB", file=sys.stderr)
        first, _ = timed(out, None)
        new_files, rewritten_new = timed(out, [write_part(out, 101, 50, 50_000)])
        superseding, rewritten_sup = timed(out, [write_part(out, 102, 50, 56 * 500)])  # files of run 57 again
        print(json.dumps({"first_pass_s": round(first, 3), "plus_1k_new_files_s": round(new_files, 3),
                          "rewritten": rewritten_new, "plus_1k_superseding_s": round(superseding, 3),
                          "rewritten_superseding": rewritten_sup}))
    finally:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
