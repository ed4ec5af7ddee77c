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
    import _bench_link
    import _bench_workers

    recipes = [*_bench_workers.scale_recipes(args.scale), *map(_bench_link.link_recipe, range(args.link))]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        names = list(pool.map(_make, recipes))
    print(f"{len(names)} clips in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
