"""Generate the clips a device session uses, in parallel (one process a core), so the steps
after it find them in ``.bench-cache``: the bench's 1080p/480p scale clips (``gpu_check.py``,
``_device_runs.py``) and the link clips (``_bench_link.py``).

    python scripts/_device_clips.py [--scale 16] [--link 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _bench_inputs as inputs  # noqa: E402


def _make(recipe: inputs.Recipe) -> str:
    return inputs.ensure(recipe, HERE.parent / inputs.CACHE_NAME, log=False).name


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--scale", type=int, default=16)
    p.add_argument("--link", type=int, default=16)
    args = p.parse_args()
    big, small = inputs.RECIPES["h264-1080p30-60s"], inputs.RECIPES["h264-480p25-20s"]
    # the same recipes as _bench_workers.scale_folder and _bench_link.link_clips
    recipes = [replace(big, name=f"h264-1080p30-10s-s{k}", seconds=10.0, seed=100 + k)
               for k in range(args.scale)]
    recipes += [replace(small, name=f"h264-480p25-20s-s{k}", seed=200 + k) for k in range(args.scale)]
    recipes += [inputs.Recipe(f"link-h264-360p30-60s-{i}", "mp4", "libx264", 640, 360, 30, 60.0, gop=250,
                              bframes=3, options=inputs._x264(250, 3), audio_rate=44_100, seed=100 + i)
                for i in range(args.link)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        names = list(pool.map(_make, recipes))
    print(f"{len(names)} clips in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
