"""Section (e) of ``scripts/bench.py``: ``run --local`` against preprocess-only at 1, 2, 4, ...
workers up to the core count, with the CPU seconds of each process group.

The folder is the scale recipe of the pipeline issue: N x 1080p30 H.264 10 s + N x 480p25 H.264
20 s clips, each with its own seed (distinct content: identical clips would be deduplicated by
fingerprint). N defaults to 16 on any machine (16 + 16 clips, 48 windows, the issue's folder):
with fewer, the fixed costs of a run (starting the emulator and the workers, the last window's
job) weigh more on a small machine than they do in any real folder.

CPU seconds are sampled from the process tree of the ``run`` command (psutil) every 0.1 s and
grouped: ``main`` (the driver: serialization hand-off, HTTP, state), ``decode`` (the spawned
decode workers) and ``emulator`` (the ``--local`` server child). The driver's CPU per window
is the number the issue's <= 0.15 CPU-s target is about.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import _bench_inputs as inputs

PRE_ONLY = """\
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from seeknetic_prep.decode.preprocess import preprocess


def windows(path):
    return len(preprocess(path))


if __name__ == "__main__":
    files = sorted(Path(sys.argv[1]).iterdir(), key=lambda p: -p.stat().st_size)
    with ProcessPoolExecutor(int(sys.argv[2])) as pool:
        print(sum(pool.map(windows, files)))
"""


SCALE_CLIPS = 16


def scale_recipes(clips: int) -> list[inputs.Recipe]:
    """The recipes of :func:`scale_folder`'s clips (``_device_clips.py`` makes them in parallel)."""
    big = inputs.RECIPES["h264-1080p30-60s"]
    small = inputs.RECIPES["h264-480p25-20s"]
    recipes = [replace(big, name=f"h264-1080p30-10s-s{k}", seconds=10.0, seed=100 + k) for k in range(clips)]
    return recipes + [replace(small, name=f"h264-480p25-20s-s{k}", seed=200 + k) for k in range(clips)]


def scale_folder(cache: Path, clips: int) -> Path:
    """``clips`` x 1080p 10 s + ``clips`` x 480p 20 s distinct clips, generated once."""
    recipes = scale_recipes(clips)
    folder = cache / f"workers-{clips}x2"
    if not folder.exists():
        tmp = cache / f".workers-{clips}.tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        for r in recipes:
            src = inputs.ensure(r, cache)
            dest = tmp / src.name
            if not dest.exists():
                dest.hardlink_to(src)
        tmp.rename(folder)
    return folder


def _group(proc: Any, root_pid: int) -> str:
    if proc.pid == root_pid:
        return "main"
    try:
        cmd = " ".join(proc.cmdline())
    except Exception:
        return "other"
    if "emulator.server" in cmd:
        return "emulator"
    if "spawn_main" in cmd or "forkserver" in cmd:  # the fork server and the workers it forks
        return "decode"
    return "other"


def _sampled(cmd: list[str]) -> tuple[float, dict[str, float], subprocess.CompletedProcess[str]]:
    """Run ``cmd``; wall seconds and CPU seconds per process group."""
    import psutil

    started = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last: dict[int, tuple[str, float]] = {}
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(child.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for p in procs:
                try:
                    t = p.cpu_times()
                    # A child seen between its fork and its exec still shows the parent's
                    # command line: classify it again until it names what it is.
                    known = last.get(p.pid, ("other", 0.0))[0]
                    group = known if known != "other" else _group(p, child.pid)
                    last[p.pid] = (group, t.user + t.system)
                except psutil.Error:
                    continue
            done.wait(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = child.communicate()
    wall = time.perf_counter() - started
    done.set()
    thread.join()
    groups: dict[str, float] = {}
    for group, cpu in last.values():
        groups[group] = groups.get(group, 0.0) + cpu
    return wall, groups, subprocess.CompletedProcess(cmd, child.returncode, out, err)


def _pre_only(folder: Path, workers: int) -> tuple[float, float, int]:
    import resource

    script = Path(tempfile.gettempdir()) / "seeknetic_bench_pre_only_w.py"
    script.write_text(PRE_ONLY)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(script), str(folder), str(workers)],
                          capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, int(done.stdout.split()[-1])


def _run(folder: Path, workers: int, cli: list[str]) -> tuple[float, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="bench-w-") as out:
        wall, groups, done = _sampled([*cli, "run", str(folder), "--local", "--out", out, "--quiet",
                                       "--workers", str(workers), "--uploaders", str(max(4, workers))])
    if done.returncode != 0:
        raise RuntimeError(f"run exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    return wall, groups


def worker_counts(cores: int) -> list[int]:
    counts, w = [], 1
    while w < cores:
        counts.append(w)
        w *= 2
    return [*counts, cores]


def section_e(cache: Path, cores: int, reps: int, clips: int | None, cli: list[str]) -> dict[str, Any]:
    """Measure every worker count (interleaved pre-only / run, ``reps`` times, medians)."""
    folder = scale_folder(cache, clips or SCALE_CLIPS)
    rows: list[dict[str, Any]] = []
    for workers in worker_counts(cores):
        pre: list[tuple[float, float]] = []
        e2e: list[tuple[float, dict[str, float]]] = []
        windows = 0
        for _ in range(reps):
            wall, cpu, windows = _pre_only(folder, workers)
            pre.append((wall, cpu))
            e2e.append(_run(folder, workers, cli))
        pre.sort()
        e2e.sort(key=lambda x: x[0])
        pw, pc = pre[len(pre) // 2]
        ew, eg = e2e[len(e2e) // 2]
        rows.append({"workers": workers, "windows": windows, "pre_s": pw, "pre_cpu": pc,
                     "run_s": ew, "run_cpu": eg})
        print(f"  e: workers {workers}: pre {windows / pw:.2f} w/s, run {windows / ew:.2f} w/s",
              file=sys.stderr, flush=True)
    return {"folder": folder.name, "clips": len(list(folder.iterdir())), "rows": rows}


def table(result: dict[str, Any]) -> str:
    head = ["workers", "preprocess-only windows/s", "run --local windows/s", "ratio",
            "CPU s pre-only", "CPU s run: main", "decode", "emulator", "main CPU s/window",
            "emulator CPU s/window"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        n = r["windows"]
        g = r["run_cpu"]
        pre_rate, run_rate = n / r["pre_s"], n / r["run_s"]
        cells = [str(r["workers"]), f"{pre_rate:.2f}", f"{run_rate:.2f}", f"{run_rate / pre_rate:.2f}x",
                 f"{r['pre_cpu']:.0f}", f"{g.get('main', 0):.1f}", f"{g.get('decode', 0):.0f}",
                 f"{g.get('emulator', 0):.1f}", f"{g.get('main', 0) / n:.3f}",
                 f"{g.get('emulator', 0) / n:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nFolder: {result['clips']} clips ({result['folder']})."
