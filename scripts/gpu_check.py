#!/usr/bin/env python3
"""One command for a machine with an NVIDIA GPU: is NVDEC exact here, and how fast is it?

    python scripts/gpu_check.py [--out DIR] [--clips N] [--skip-bench]

1. **Exactness.** Every H.264 and HEVC fixture (found by codec; and two of the bench's 1080p clips) through
   ``preprocess(decode="cpu")`` and ``preprocess(decode="cuda")``: the windows must be equal to
   the bit (frames, ``frame_times_ms``, audio). Any difference is printed with where it is; a
   codec that differs must be taken out of ``hwdecode.NVDEC_CODECS``.
2. **Speed** (the bench's GPU section): frames/s and windows/s of the same 1080p H.264 clips
   decoded by W CPU processes, G NVDEC processes, and both at once, with CPU seconds.

Without a CUDA device it says so in one line and exits 0 (nothing to check). Results go to
stdout and, as JSON, to ``--out`` (default ``$OUT`` when set, else ``gpu-check/``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def h26x_fixtures() -> list[Path]:
    """Every fixture whose video is H.264 or HEVC (the codecs NVDEC decodes), found, not listed."""
    import av

    from seeknetic_prep.decode.hw import NVDEC_CODECS

    found = []
    for path in sorted((ROOT / "fixtures").rglob("*")):
        if not path.is_file() or "bad" in path.parts or path.suffix in (".json", ".md", ".py", ".sqlite"):
            continue
        try:
            with av.open(str(path)) as c:
                if c.streams.video and c.streams.video[0].codec_context.name in NVDEC_CODECS:
                    found.append(path)
        except Exception:  # not media (a state, a list): not a fixture to decode
            continue
    return found


def _or_failure(work: Callable[[], dict[str, Any]], **what: Any) -> dict[str, Any]:
    """``work()``'s row, or ``what`` with where it failed: one failure does not end the check."""
    try:
        return work()
    except Exception:
        return {**what, "error": traceback.format_exc()[-1500:]}


def compare(path: Path) -> dict[str, Any]:
    """CPU against NVDEC for one file: equal or where they differ."""
    from seeknetic_prep.decode.preprocess import preprocess

    t0 = time.perf_counter()
    cpu = preprocess(path, decode="cpu")
    t1 = time.perf_counter()
    gpu = preprocess(path, decode="cuda")
    t2 = time.perf_counter()
    diffs = []
    if len(cpu) != len(gpu):
        diffs.append(f"{len(cpu)} windows on the CPU, {len(gpu)} on the GPU")
    for a, b in zip(cpu, gpu, strict=False):
        if list(a.frame_times_ms) != list(b.frame_times_ms):
            diffs.append(f"window {a.index}: frame_times_ms {a.frame_times_ms} vs {b.frame_times_ms}")
        if not np.array_equal(a.video, b.video):
            bad = np.argwhere(a.video != b.video)
            worst = int(np.abs(a.video.astype(int) - b.video.astype(int)).max())
            diffs.append(f"window {a.index}: {len(bad)} pixel values differ (max {worst}), "
                         f"first at frame {int(bad[0][1])}")
        if not np.array_equal(a.audio, b.audio):
            diffs.append(f"window {a.index}: audio differs")
    return {"file": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
            "windows": len(cpu), "exact": not diffs, "differences": diffs[:5],
            "cpu_s": round(t1 - t0, 3), "cuda_s": round(t2 - t1, 3)}


def _windows(args: tuple[str, str]) -> tuple[int, int]:
    from seeknetic_prep.decode.media import probe
    from seeknetic_prep.decode.preprocess import preprocess

    path, decode = args
    info = probe(path)
    windows = preprocess(path, decode=decode, threads=1)  # type: ignore[arg-type]  # a process a core
    return len(windows), round(info.duration_ms / 1000 * info.fps)


def throughput(files: list[Path], *, cpu: int, gpu: int) -> dict[str, Any]:
    """``cpu`` CPU and ``gpu`` NVDEC processes over ``files`` (dealt out in turn, in proportion
    to the processes): wall time, CPU seconds, windows/s and frames/s."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # CUDA does not survive a fork
    pools: list[tuple[ProcessPoolExecutor, str]] = []
    if gpu:
        pools += [(ProcessPoolExecutor(gpu, mp_context=ctx), "cuda")] * gpu
    if cpu:
        pools += [(ProcessPoolExecutor(cpu, mp_context=ctx), "cpu")] * cpu
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    futures = [pool.submit(_windows, (str(f), mode))
               for f, (pool, mode) in zip(files, (pools[i % len(pools)] for i in range(len(files))),
                                          strict=True)]
    done = [f.result() for f in futures]
    wall = time.perf_counter() - started
    for pool in {id(p): p for p, _ in pools}.values():
        pool.shutdown()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    windows, frames = sum(w for w, _ in done), sum(f for _, f in done)
    return {"cpu_workers": cpu, "gpu_workers": gpu, "wall_s": round(wall, 2), "cpu_s": round(cpu_s, 1),
            "windows_per_s": round(windows / wall, 2), "frames_per_s": round(frames / wall, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-check"))
    p.add_argument("--clips", type=int, default=16, help="1080p H.264 clips for the speed part")
    p.add_argument("--skip-bench", action="store_true")
    args = p.parse_args(argv)
    from seeknetic_prep.decode.hw import cuda_present

    if not cuda_present():
        print("gpu_check: skipped: no CUDA device here (PyAV cannot open one); nothing to check.")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"exactness": [], "throughput": []}

    def note(kind: str, row: dict[str, Any]) -> None:  # as it goes: a time limit keeps what was done
        report[kind].append(row)
        print(json.dumps(row), flush=True)
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1))

    for path in h26x_fixtures():
        note("exactness", _or_failure(partial(compare, path), file=str(path), exact=False))
    if not args.skip_bench:
        import _bench_workers

        folder = _bench_workers.scale_folder(ROOT / ".bench-cache", args.clips)
        big = sorted(f for f in folder.iterdir() if "1080p" in f.name)
        for clip in big[:2]:
            note("exactness", _or_failure(partial(compare, clip), file=str(clip), exact=False))
        cores = os.cpu_count() or 1
        for cpu, gpu in ((cores, 0), (0, 8), (cores, 8), (0, 16)):
            note("throughput", _or_failure(partial(throughput, big, cpu=cpu, gpu=gpu),
                                           cpu_workers=cpu, gpu_workers=gpu))
    exact = all(r["exact"] for r in report["exactness"])
    verdict = "every file exact" if exact else "DIFFERENCES found"
    print(f"gpu_check: {verdict}; wrote {args.out / 'gpu_check.json'}")
    return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
