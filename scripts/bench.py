#!/usr/bin/env python3
"""How fast seeknetic-prep preprocesses video, against the official SDK and the decode limit.

    python scripts/bench.py                  # everything, 3 interleaved repetitions, prints tables
    python scripts/bench.py --quick          # small clips only, 1 repetition: a smoke run
    python scripts/bench.py --only a,c --reps 5
    python scripts/bench.py --write-readme   # also replace the README's performance section
    python scripts/bench.py --only s --write-readme   # state at 10k and 100k windows

Sections (each one a markdown table):

a. seconds for the first 10 s window of each clip: ``seeknetic_prep.decode.preprocess`` vs a naive
   PyAV loop (decode every frame, convert every frame to RGB, then pick 12) vs the official
   SDK 0.1.0's ``_preprocess_for_upload`` (which shells out to ``ffmpeg``/``ffprobe``);
b. the whole 60 s 1080p clip: all six windows vs six SDK calls vs the decode limit,
   ``ffmpeg -threads <cores> -i FILE -f null -``, and PyAV decode-only (frame threads);
c. peak RSS of a fresh process that preprocesses the 4K HEVC 10-bit clip;
d. ``seeknetic-prep run DIR --local`` windows/s vs preprocess-only windows/s over one folder;
e. ``run --local`` against preprocess-only at 1, 2, 4, ... workers up to the core count, with
   the CPU seconds of the driver, the decode workers and the emulator (``_bench_workers.py``);
g. NVDEC (skipped without a CUDA device): frames/s, windows/s and CPU seconds of the same
   1080p H.264 clips on CPU processes, NVDEC processes and both (``gpu_check.py`` measures);
r. ``run --executor ray`` vs the local engine on the same folder (windows/s, CPU seconds of
   every process involved), Ray's start-up, and the scaling of a local two-node cluster
   (two 1-CPU nodes vs one), each Ray run against a cluster started beforehand.
   Not in the default run: ``--only r`` (needs Ray).
l. the upload link (``_bench_link.py``; not in the default run, ask with ``--only l``): how
   full a run keeps a link capped at 50/200 Mbit/s with 50/150/300 ms one-way latency, through
   the throttling proxy, default flags against a fixed ``--uploaders 4``;
s. run state at scale (``_bench_scale.py``; not in the default run, ask with ``--only s``):
   synthetic state through the public ``Store`` API at 10k and 100k windows (``--scale``,
   ``--scale-1m`` adds 1M): state size, end-of-run cost after +1k windows, no-op resume,
   ``status``, search latency and memory. ``--write-readme`` writes it to its own README section.

Contenders of a section run interleaved (A B C A B C ...) so that load from other processes
hits them alike; each cell is the median of the repetitions. Ratios come from the same run.
Inputs are generated once with PyAV into ``.bench-cache/`` (see ``_bench_inputs.py``); a
missing ``ffmpeg`` binary, SDK or library stage turns its cells into "skipped (why)", never
into a crash, so the script runs from a fresh install.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_inputs as inputs  # sibling helper module, found via the line above
import _bench_scale as scale
from _bench_workers import PRE_ONLY

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SECTIONS = ("a", "b", "c", "d", "e", "g", "l", "r", "s")
DEFAULT_SECTIONS = ("a", "b", "c", "d", "e", "g")
MEDIA_EXTS = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}
WHOLE_FILE = "h264-1080p30-60s"
RSS_FILE = "hevc10-2160p30-5s"
SLOW_FILES = {WHOLE_FILE, RSS_FILE}
WINDOW_MS = 10_000
FRAMES = 12
SIZE = 224
SR = 22_050


class Skip(Exception):
    """A contender that cannot run here (no ffmpeg, stage not built yet); the cell says why."""


@dataclass
class Cell:
    """One contender's repetitions; ``skipped`` replaces the samples when it could not run."""

    samples: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    skipped: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples and not self.skipped else None

    @property
    def cpu_median(self) -> float | None:
        """CPU seconds (this process's threads plus waited-for children such as ffmpeg).

        On a shared machine wall time swings with other people's load; CPU time much less, so
        ratios of CPU seconds are the steadier comparison of work done (not of latency).
        """
        return statistics.median(self.cpu) if self.cpu and not self.skipped else None


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------- measuring


def cpu_seconds() -> float:
    try:
        import resource
    except ImportError:  # Windows: this process only
        return time.process_time()
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def interleaved(contenders: dict[str, Callable[[], float | None]], reps: int) -> dict[str, Cell]:
    """Run A B C A B C ... ``reps`` times; a contender returning a number reports its own value
    (a subprocess's RSS, say) instead of the wall time of the call."""
    cells = {name: Cell() for name in contenders}
    for _ in range(reps):
        for name, fn in contenders.items():
            cell = cells[name]
            if cell.skipped:
                continue
            try:
                c0, t0 = cpu_seconds(), time.perf_counter()
                value = fn()
                elapsed, used = time.perf_counter() - t0, cpu_seconds() - c0
            except Skip as exc:
                cell.skipped = f"skipped ({exc})"
            except Exception as exc:  # a broken contender is a finding to print, not a crash
                cell.skipped = f"failed ({type(exc).__name__}: {str(exc)[:90]})"
            else:
                cell.samples.append(elapsed if value is None else value)
                cell.cpu.append(used)
    return cells


def duration_ms(path: Path) -> int:
    """Container duration, floored: the SDK rejects an ``end_ms`` past its ffprobe duration."""
    import av

    with av.open(str(path)) as c:
        if c.duration is not None:
            return int(c.duration // 1000)
        vs = c.streams.video[0]
        return int(float(vs.duration * vs.time_base) * 1000)


def _need_ours() -> None:
    if importlib.util.find_spec("seeknetic_prep.decode.preprocess") is None:
        raise Skip("seeknetic_prep.decode.preprocess not built yet")


def ours(path: Path, start_ms: int | None = None, end_ms: int | None = None) -> None:
    _need_ours()
    from seeknetic_prep.decode.preprocess import preprocess  # type: ignore[import-not-found,unused-ignore]

    segments = preprocess(path, start_ms=start_ms, end_ms=end_ms)
    if not segments:
        raise RuntimeError(f"preprocess({path.name}) returned no windows")


def sdk(path: Path, start_ms: int, end_ms: int) -> None:
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        raise Skip("no ffmpeg")
    try:
        from seeknetic.upload_from_video import _preprocess_for_upload
    except ImportError as exc:
        raise Skip("SDK seeknetic==0.1.0 not installed") from exc
    _preprocess_for_upload(video_path=path, service="embedding", start_ms=start_ms, end_ms=end_ms)


def sdk_windows(path: Path, total_ms: int) -> None:
    for start in range(0, total_ms, WINDOW_MS):
        sdk(path, start, min(start + WINDOW_MS, total_ms))


def naive(path: Path, start_ms: int, end_ms: int) -> tuple[object, object]:
    """What a first attempt looks like: decode every frame, convert every one, then pick.

    Frame i of 12 is the one on screen at the centre of the i-th twelfth of the window; it is
    resized (short side 224) and centre-cropped with OpenCV. Audio is decoded and resampled to
    mono 22050 Hz by PyAV and zero-padded to the window.
    """
    import av
    import cv2
    import numpy as np

    step = (end_ms - start_ms) / FRAMES
    targets = [start_ms + (i + 0.5) * step for i in range(FRAMES)]
    chosen: list[np.ndarray] = []
    last: np.ndarray | None = None
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            t = float(frame.time or 0.0) * 1000
            rgb = frame.to_ndarray(format="rgb24")  # every frame, used or not: the naive part
            while last is not None and len(chosen) < FRAMES and targets[len(chosen)] < t:
                chosen.append(last)  # the frame on screen at the target is the one before t
            if t >= end_ms or len(chosen) == FRAMES:
                break
            last = rgb
    if last is None:
        raise RuntimeError(f"{path.name}: no video frame decoded")
    chosen += [last] * (FRAMES - len(chosen))
    picked = []
    for img in chosen:
        h, w = img.shape[:2]
        scale = SIZE / min(h, w)
        img = cv2.resize(img, (max(SIZE, round(w * scale)), max(SIZE, round(h * scale))),
                         interpolation=cv2.INTER_AREA)
        y0, x0 = (img.shape[0] - SIZE) // 2, (img.shape[1] - SIZE) // 2
        picked.append(img[y0 : y0 + SIZE, x0 : x0 + SIZE].transpose(2, 0, 1))
    video = np.ascontiguousarray(np.stack(picked)[None])
    audio = np.zeros(SR * (end_ms - start_ms) // 1000, np.float32)
    with av.open(str(path)) as c:
        if c.streams.audio:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SR)
            chunks: list[np.ndarray] = []
            for frame in c.decode(audio=0):
                if frame.time is not None and frame.time * 1000 >= end_ms:
                    break
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            got = np.concatenate(chunks)[: audio.size] if chunks else audio[:0]
            audio[: got.size] = got
    return video, audio[None, None]


def naive_timed(path: Path, start_ms: int, end_ms: int) -> None:
    naive(path, start_ms, end_ms)


def pyav_decode_only(path: Path) -> None:
    """Every video frame through the decoder with frame + slice threads, nothing else."""
    import av

    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        vs.thread_count = cores()
        for _ in c.decode(vs):
            pass


def ffmpeg_null(path: Path) -> None:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise Skip("no ffmpeg")
    cmd = [exe, "-v", "error", "-nostdin", "-threads", str(cores()), "-i", str(path), "-f", "null", "-"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


RSS_REPORT = """
import resource, sys
try:  # VmHWM belongs to this process's own address space, made fresh by exec
    hwm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
except OSError:  # no procfs: ru_maxrss (which on Linux may include the parent's size at spawn)
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
print(hwm)
"""


def child_peak_rss_mb(code: str, *args: str) -> float:
    """Peak RSS in MB of a fresh ``python -c code``, as the child itself reports it at exit.

    Not ``wait4``/``RUSAGE_CHILDREN``: Linux carries the parent's high-water mark into a child
    spawned with vfork, so a big bench process would inflate every child it starts.
    """
    done = subprocess.run([sys.executable, "-c", code + RSS_REPORT, *args], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1:])
    return int(done.stdout.split()[-1]) / 1e6


RSS_IMPORTS = ("import seeknetic_prep.decode.preprocess, seeknetic_prep.decode.media, "
               "seeknetic_prep.decode.transform\n")
"""What preprocess() loads anyway; nothing more (cv2 alone would add ~16 MB it does not use)."""
RSS_OURS = RSS_IMPORTS + (
    "import sys\nfrom seeknetic_prep.decode.preprocess import preprocess\npreprocess(sys.argv[1])\n"
)
RSS_DECODE = """
import sys, av
with av.open(sys.argv[1]) as c:
    c.streams.video[0].thread_type = "AUTO"
    for _ in c.decode(video=0):
        pass
"""
PREPROCESS_ONLY = PRE_ONLY
"""Decode only, with as many processes as ``run`` uses by default (one per core), biggest first."""


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("seeknetic-prep")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "seeknetic_prep"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, check=False)


# ---------------------------------------------------------------- tables


NUMBER = re.compile(r"^-?\d+(\.\d+)?(x| MB)?$")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A padded GitHub markdown table; numbers (anything starting with a digit) align right."""
    body = [list(map(str, r)) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for cell, w in zip(cells, widths, strict=True):
            numeric = NUMBER.match(cell) is not None
            out.append(cell.rjust(w) if numeric else cell.ljust(w))
        return "| " + " | ".join(out) + " |"

    rule = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(header), rule, *(line(r) for r in body)])


def fmt_s(cell: Cell) -> str:
    return cell.skipped or (f"{cell.median:.2f}" if cell.median is not None else "-")


def ratio(num: Cell | float | None, den: Cell | float | None) -> float | None:
    a = num.median if isinstance(num, Cell) else num
    b = den.median if isinstance(den, Cell) else den
    return a / b if a is not None and b else None


def cpu_ratio(num: Cell, den: Cell) -> float | None:
    return ratio(num.cpu_median, den.cpu_median)


def fmt_cpu(cell: Cell) -> str:
    return "-" if cell.cpu_median is None else f"{cell.cpu_median:.2f}"


def fmt_x(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def geomean(values: Iterable[float | None]) -> float | None:
    got = [v for v in values if v is not None and v > 0]
    return math.exp(sum(map(math.log, got)) / len(got)) if got else None


# ---------------------------------------------------------------- sections


@dataclass
class Report:
    """Everything one run measured, for the tables, the README and ``--json``."""

    reps: int
    tables: dict[str, str] = field(default_factory=dict)
    targets: list[tuple[str, str, float | None, float | None, Callable[[float], bool], str]] = field(
        default_factory=list
    )
    raw: dict[str, object] = field(default_factory=dict)

    def target(
        self,
        name: str,
        goal: str,
        value: float | None,
        ok: Callable[[float], bool],
        unit: str,
        cpu: float | None = None,
    ) -> None:
        """Record a target; the verdict is on ``value`` (wall time), ``cpu`` is shown beside it."""
        self.targets.append((name, goal, value, cpu, ok, unit))

    def targets_table(self) -> str:
        rows = []
        for name, goal, value, cpu, ok, unit in self.targets:
            shown = "-" if value is None else (
                f"{value:.0f} MB" if unit == "MB" else f"{value:.3f} s" if unit == "s" else f"{value:.2f}x")
            verdict = "-" if value is None else ("met" if ok(value) else "NOT met")
            rows.append([name, goal, shown, fmt_x(cpu) if unit != "MB" else "", verdict])
        return markdown_table(["target", "goal", "measured (wall)", "same in CPU s", ""], rows)


def section_a(files: list[Path], reps: int, report: Report) -> None:
    rows: list[list[str]] = []
    sdk_ratios: list[float | None] = []
    sdk_cpu_ratios: list[float | None] = []
    naive_ratios: list[float | None] = []
    generated: list[bool] = []
    raw: dict[str, object] = {}
    for path in files:
        end = min(WINDOW_MS, duration_ms(path))
        print(f"  a: {path.name} [0, {end}) ms", file=sys.stderr, flush=True)
        cells = interleaved(
            {
                "ours": lambda p=path, e=end: ours(p, 0, e),  # type: ignore[misc]
                "naive": lambda p=path, e=end: naive_timed(p, 0, e),  # type: ignore[misc]
                "sdk": lambda p=path, e=end: sdk(p, 0, e),  # type: ignore[misc]
            },
            reps,
        )
        sdk_ratios.append(ratio(cells["sdk"], cells["ours"]))
        sdk_cpu_ratios.append(cpu_ratio(cells["sdk"], cells["ours"]))
        naive_ratios.append(ratio(cells["naive"], cells["ours"]))
        generated.append(inputs.CACHE_NAME in path.parts)
        rows.append([_label(path), fmt_s(cells["ours"]), fmt_s(cells["naive"]), fmt_s(cells["sdk"]),
                     fmt_x(naive_ratios[-1]), fmt_x(sdk_ratios[-1]), fmt_x(sdk_cpu_ratios[-1])])
        raw[path.name] = {k: {"wall": c.samples, "cpu": c.cpu} if not c.skipped else c.skipped
                          for k, c in cells.items()}
    g, g_cpu = geomean(sdk_ratios), geomean(sdk_cpu_ratios)
    rows.append(
        ["geometric mean, all files", "", "", "", fmt_x(geomean(naive_ratios)), fmt_x(g), fmt_x(g_cpu)]
    )
    if any(generated) and not all(generated):
        def only(xs: list[float | None]) -> float | None:
            return geomean(x for x, gen in zip(xs, generated, strict=True) if gen)

        rows.append(["geometric mean, generated clips only", "", "", "", fmt_x(only(naive_ratios)),
                     fmt_x(only(sdk_ratios)), fmt_x(only(sdk_cpu_ratios))])
    report.tables["a"] = markdown_table(
        ["first 10 s window (s)", "ours", "naive PyAV", "SDK 0.1.0", "naive / ours", "SDK / ours",
         "SDK / ours (CPU s)"], rows
    )
    report.target("first window, SDK / ours (geometric mean over files)", ">= 8x", g, lambda v: v >= 8, "x",
                  g_cpu)
    report.raw["a"] = raw


def _label(path: Path) -> str:
    name = path.name
    stem = name.split("-")
    # cached clips are "<recipe>-<hash>.<ext>": show the recipe, which says what the clip is
    if inputs.CACHE_NAME in path.parts and len(stem) > 1:
        return "-".join(stem[:-1])
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return name


def section_b(path: Path, reps: int, report: Report) -> None:
    total = duration_ms(path)
    print(f"  b: {path.name} whole file ({total} ms)", file=sys.stderr, flush=True)
    cells = interleaved(
        {
            "ours": lambda: ours(path),
            "sdk": lambda: sdk_windows(path, total),
            "ffmpeg": lambda: ffmpeg_null(path),
            "pyav": lambda: pyav_decode_only(path),
        },
        reps,
    )
    n = math.ceil(total / WINDOW_MS)
    o = cells["ours"]
    labels = {
        "ours": f"ours: preprocess(path), all {n} windows",
        "sdk": f"SDK 0.1.0 called {n} times",
        "ffmpeg": f"ffmpeg -threads {cores()} -i FILE -f null - (decode limit)",
        "pyav": "PyAV decode-only, frame threads",
    }
    rows = [
        [label, fmt_s(cells[k]), fmt_cpu(cells[k]), fmt_x(ratio(cells[k], o)), fmt_x(cpu_ratio(cells[k], o))]
        for k, label in labels.items()
    ]
    report.tables["b"] = markdown_table(
        [f"whole {_label(path)}", "seconds", "CPU s", "÷ ours", "÷ ours (CPU s)"], rows
    )
    report.target("whole 60 s 1080p, ours / ffmpeg decode-only", "<= 1.0x (stretch 0.6x)",
                  ratio(o, cells["ffmpeg"]), lambda v: v <= 1.0, "x", cpu_ratio(o, cells["ffmpeg"]))
    report.target("whole 60 s 1080p, six SDK calls / ours", ">= 2.5x", ratio(cells["sdk"], o),
                  lambda v: v >= 2.5, "x", cpu_ratio(cells["sdk"], o))
    report.raw["b"] = {k: {"wall": c.samples, "cpu": c.cpu} if not c.skipped else c.skipped
                       for k, c in cells.items()}


def section_c(path: Path, long_path: Path, reps: int, report: Report) -> None:
    print(f"  c: {path.name} peak RSS", file=sys.stderr, flush=True)

    def measured(code: str, file: Path = path) -> Callable[[], float]:
        def run() -> float:
            _need_ours()
            return child_peak_rss_mb(code, str(file))

        return run

    cells = interleaved(
        {
            "imports": measured(RSS_IMPORTS),
            "decode": measured(RSS_DECODE),
            "ours": measured(RSS_OURS),
            "long": measured(RSS_OURS, long_path),
        },
        reps,
    )

    def mb(cell: Cell) -> str:
        return cell.skipped or (f"{cell.median:.0f}" if cell.median is not None else "-")

    rows = [
        ["python + the modules preprocess() loads (av, numpy, soxr, ...), nothing run", mb(cells["imports"])],
        [f"PyAV decode-only of {_label(path)}, frame threads (the decoder's own floor)", mb(cells["decode"])],
        [f"preprocess() of {_label(path)}", mb(cells["ours"])],
        [f"preprocess() of {_label(long_path)}, all windows (memory stays flat with length)",
         mb(cells["long"])],
    ]
    report.tables["c"] = markdown_table(["peak RSS of a fresh process", "MB"], rows)
    report.target("4K HEVC 10-bit, peak RSS of preprocess", "<= 300 MB", cells["ours"].median,
                  lambda v: v <= 300, "MB")
    report.raw["c"] = {k: c.samples or c.skipped for k, c in cells.items()}


def section_d(folder: Path, reps: int, report: Report) -> None:
    print(f"  d: {folder.name} run --local vs preprocess-only", file=sys.stderr, flush=True)
    windows: list[int] = []

    def pre_only() -> None:
        _need_ours()
        script = Path(tempfile.gettempdir()) / "seeknetic_bench_preprocess_only.py"
        script.write_text(PREPROCESS_ONLY)  # a file, not -c: worker processes re-import __main__
        done = subprocess.run([sys.executable, str(script), str(folder), str(cores())],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip().splitlines()[-1:])
        windows.append(int(done.stdout.split()[-1]))

    run_cpu: list[float] = []

    def e2e() -> None:
        if importlib.util.find_spec("seeknetic_prep.commands.run") is None:
            raise Skip("`seeknetic-prep run` not built yet")
        # The decode workers are the fork server's children, never waited for by the run:
        # RUSAGE_CHILDREN misses them, so the run's CPU is sampled from its process tree.
        with tempfile.TemporaryDirectory(prefix="bench-run-") as out, TreeCpu() as tree:
            done = run_cli("run", str(folder), "--local", "--out", out)
        if done.returncode != 0:
            raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
        run_cpu.append(tree.seconds)

    cells = interleaved({"pre": pre_only, "e2e": e2e}, reps)
    if len(run_cpu) == len(cells["e2e"].cpu):
        cells["e2e"].cpu = run_cpu
    n = windows[0] if windows else None
    rates = {k: (n / c.median if n and c.median else None) for k, c in cells.items()}

    def rate(k: str) -> str:
        return cells[k].skipped or (f"{rates[k]:.2f}" if rates[k] else "-")

    rows = [
        [f"preprocess-only ({cores()} processes, like run's default --workers)", fmt_s(cells["pre"]),
         fmt_cpu(cells["pre"]), rate("pre"), "1.00x"],
        ["seeknetic-prep run DIR --local --out TMP", fmt_s(cells["e2e"]), fmt_cpu(cells["e2e"]), rate("e2e"),
         fmt_x(ratio(rates["e2e"], rates["pre"]))],
    ]
    clips = ", ".join(sorted(_label(p) for p in folder.iterdir()))
    report.tables["d"] = markdown_table(
        [f"folder of {len(list(folder.iterdir()))} clips, {n or '?'} windows", "seconds", "CPU s",
         "windows/s", "÷ preprocess-only"], rows) + f"\n\nClips: {clips}."
    report.target("run --local / preprocess-only windows/s", ">= 0.85x", ratio(rates["e2e"], rates["pre"]),
                  lambda v: v >= 0.85, "x", cpu_ratio(cells["pre"], cells["e2e"]))
    report.raw["d"] = {k: c.samples or c.skipped for k, c in cells.items()} | {"windows": n}


class TreeCpu:
    """CPU seconds of this process and every process under it while inside, each process's
    own time sampled every 0.1 s by a thread (a Ray cluster's workers are its raylets'
    children, which ``RUSAGE_CHILDREN`` never sees; ``children_*`` times would count a reaped
    process twice). A process that lives under 0.1 s is missed."""

    def __init__(self) -> None:
        import threading

        self.seen: dict[tuple[int, float], float] = {}
        self.base: dict[tuple[int, float], float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self, into: dict[tuple[int, float], float]) -> None:
        import psutil

        me = psutil.Process()
        for p in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                into[(p.pid, p.create_time())] = t.user + t.system

    def _loop(self) -> None:
        while not self.stop.wait(0.1):
            self._sample(self.seen)

    def __enter__(self) -> TreeCpu:
        self._sample(self.base)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self._sample(self.seen)

    @property
    def seconds(self) -> float:
        return sum(v - self.base.get(k, 0.0) for k, v in self.seen.items())


def section_g(cache: Path, report: Report) -> None:
    """NVDEC against the CPU on the workers folder's 1080p clips; skipped without CUDA."""
    import gpu_check

    from seeknetic_prep.decode.hw import cuda_present

    if not cuda_present():
        report.tables["g"] = "Skipped: no CUDA device on this machine (PyAV cannot open one)."
        return
    import _bench_workers as workers

    folder = workers.scale_folder(cache, cores())
    big = sorted(f for f in folder.iterdir() if "1080p" in f.name)
    rows = [gpu_check.throughput(big, cpu=c, gpu=g) for c, g in ((cores(), 0), (0, 8), (cores(), 8))]
    base = rows[0]["windows_per_s"]
    report.tables["g"] = markdown_table(
        ["CPU processes", "NVDEC processes", "seconds", "CPU s", "frames/s", "windows/s", "÷ CPU only"],
        [[str(r["cpu_workers"]), str(r["gpu_workers"]), f"{r['wall_s']:.2f}", f"{r['cpu_s']:.0f}",
          f"{r['frames_per_s']:.0f}", f"{r['windows_per_s']:.2f}", f"{r['windows_per_s'] / base:.2f}x"]
         for r in rows])
    report.raw["g"] = rows


def section_ray(folder: Path, reps: int, report: Report) -> None:
    print(f"  e: {folder.name} run --executor ray vs local, one- and two-node clusters", file=sys.stderr,
          flush=True)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a one-machine Ray on loopback
    try:
        import psutil  # noqa: F401
        from ray.cluster_utils import Cluster
    except ImportError as exc:
        report.tables["e"] = f"skipped ({exc}: pip install 'seeknetic-prep[ray]' psutil)"
        return
    windows: list[int] = []

    def run(*extra: str) -> Callable[[], None]:
        def go() -> None:
            with tempfile.TemporaryDirectory(prefix="bench-ray-") as out:
                done = run_cli("run", str(folder), "--local", "--out", out, "--quiet", *extra)
            if done.returncode != 0:
                raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
            found = re.search(r"windows: (\d+)", done.stdout)
            if found:
                windows.append(int(found.group(1)))
        return go

    def cluster(*cpus: int) -> tuple[Any, float]:
        t0 = time.perf_counter()
        c = Cluster(initialize_head=True, head_node_args={
            "num_cpus": cpus[0], "include_dashboard": False, "node_ip_address": "127.0.0.1"})
        for n in cpus[1:]:
            c.add_node(num_cpus=n, node_ip_address="127.0.0.1")
        c.wait_for_nodes()
        return c, time.perf_counter() - t0

    def measured(contenders: dict[str, Callable[[], None]]) -> dict[str, Cell]:
        cells = {name: Cell() for name in contenders}
        for _ in range(reps):
            for name, fn in contenders.items():
                t0 = time.perf_counter()
                try:
                    with TreeCpu() as cpu:
                        fn()
                except Exception as exc:  # a finding to print, not a crash
                    cells[name].skipped = f"failed ({type(exc).__name__}: {str(exc)[:90]})"
                    continue
                cells[name].samples.append(time.perf_counter() - t0)
                cells[name].cpu.append(cpu.seconds)
        return cells

    two, up_two = cluster(1, 1)
    try:
        cells = measured({"local": run("--workers", "2"),
                          "ray2": run("--executor", "ray", "--ray-address", two.address)})
    finally:
        two.shutdown()
    one, up_one = cluster(1)
    try:
        cells |= measured({"ray1": run("--executor", "ray", "--ray-address", one.address)})
    finally:
        one.shutdown()
    cells |= measured({"own": run("--executor", "ray")})  # Ray started (and stopped) by the run
    n = windows[0] if windows else None
    rates = {k: (n / c.median if n and c.median else None) for k, c in cells.items()}

    def rate(k: str) -> str:
        return cells[k].skipped or (f"{rates[k]:.2f}" if rates[k] else "-")

    scaling = (rates["ray2"] / (2 * rates["ray1"])) if rates["ray2"] and rates["ray1"] else None
    rows = [
        ["local engine, 2 processes", fmt_s(cells["local"]), fmt_cpu(cells["local"]), rate("local"), "1.00x"],
        ["Ray, cluster of two 1-CPU nodes (started before)", fmt_s(cells["ray2"]), fmt_cpu(cells["ray2"]),
         rate("ray2"), fmt_x(ratio(rates["ray2"], rates["local"]))],
        ["Ray, one 1-CPU node (started before)", fmt_s(cells["ray1"]), fmt_cpu(cells["ray1"]), rate("ray1"),
         fmt_x(ratio(rates["ray1"], rates["local"]))],
        ["Ray started by the run (`--executor ray`, no address)", fmt_s(cells["own"]), fmt_cpu(cells["own"]),
         rate("own"), fmt_x(ratio(rates["own"], rates["local"]))],
    ]
    report.tables["e"] = markdown_table(
        [f"run --local on {len(list(folder.iterdir()))} clips, {n or '?'} windows", "seconds", "CPU s",
         "windows/s", "÷ local"], rows) + (
        f"\n\nRay start-up: head + second node {up_two:.1f} s, one node {up_one:.1f} s. Scaling "
        f"efficiency, two 1-CPU nodes vs one: {fmt_x(scaling)} (1.00x is linear).")
    report.target("run --executor ray / local windows/s", ">= 0.8x", ratio(rates["ray2"], rates["local"]),
                  lambda v: v >= 0.8, "x", cpu_ratio(cells["local"], cells["ray2"]))
    report.raw["e"] = {k: c.samples or c.skipped for k, c in cells.items()} | {
        "windows": n, "startup_two_nodes_s": up_two, "startup_one_node_s": up_one, "scaling": scaling}


# ---------------------------------------------------------------- output


TITLES = {
    "a": "a. First 10 s window, seconds (lower is better)",
    "b": "b. Whole 60 s 1080p file, seconds",
    "c": "c. Peak memory",
    "d": "d. End-to-end folder run",
    "e": "e. Workers: run --local against preprocess-only, CPU seconds by process group",
    "g": "g. NVDEC beside the CPU (`--decode auto`)",
    "r": "r. On a Ray cluster (`--executor ray`)",
}


def machine_line() -> str:
    import av

    ff = shutil.which("ffmpeg")
    ff_ver = "absent"
    if ff:
        first = subprocess.run([ff, "-version"], capture_output=True, text=True, check=False).stdout
        ff_ver = " ".join(first.split()[:3][2:]) or "present"
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"{cores()} cores, {cpu_model()}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, PyAV {av.__version__}, ffmpeg binary {ff_ver}; "
            f"load average at the end of the run {load}")


def render(report: Report, command: str) -> str:
    parts = [f"Machine: {machine_line()}.", f"Command: `{command}` ({report.reps} interleaved "
             "repetitions per cell, median shown; ratios from the same run)."]
    if report.targets:
        parts.append("**Targets**\n\n" + report.targets_table())
    for key in SECTIONS:
        if key in report.tables:
            parts.append(f"**{TITLES[key]}**\n\n{report.tables[key]}")
    return "\n\n".join(parts) + "\n"


README_INTRO = """\
## Performance

`scripts/bench.py` generates realistic clips (moving multi-octave texture with per-frame grain,
so decoding costs what camera footage costs) into `.bench-cache/` and measures, interleaved
A B A B so that machine load falls on every contender alike: (a) the first 10 s window of
each clip with `preprocess()`, a naive PyAV loop (decode and RGB-convert every frame, then pick
12) and the official SDK 0.1.0 (`ffmpeg` subprocesses plus a Python loop over pixels); (b) a
whole 60 s 1080p H.264 file against the decode limit (`ffmpeg -f null` and PyAV decode-only);
(c) peak RSS for a 4K HEVC 10-bit clip; (d) the end-to-end `run --local` against
preprocessing alone; (e) `run --executor ray` against the local engine, and a two-node local
Ray cluster's scaling. Reproduce with `python scripts/bench.py` (add `--quick` for a smoke run;
rows that need the `ffmpeg` binary say "skipped" without it).

Wall seconds decide the targets; CPU seconds (this process's threads plus waited-for children
such as `ffmpeg`) are shown beside them because on a shared machine they move far less with
other people's load. Where the time goes (stage timings and py-spy on the 1080p and 4K clips):
the frame pass is 82-98% of `preprocess()`'s CPU, almost all of it inside the video decoder
(swscale of the 12 chosen frames per window is a few %); probe is 1-6%, audio decode + soxr
1-2%. Non-reference pictures no target shows are not decoded (`skip_frame` per packet, H.264
and HEVC), which is why the whole-file row beats full decoding; what is left is the reference
frames, which exact output cannot skip. On small clips our fixed cost (two opens of the file,
one swscale context per pass, batched audio resampling: 20-60 ms a clip) is most of our time
and the SDK's ~0.5 s of process start-ups is most of its; on real-size clips both are
decode-bound, hence the two geometric means. End to end (d), the remaining overhead over
preprocessing alone is the upload tail after each decode task (a task's windows are sent when
the task ends), the built-in emulator's own CPU (it shares the 2 cores: parsing, validating and
scoring every upload) and re-decoding from the keyframe before each 4-window task.
"""


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with everything between the ``<!-- section: name -->`` markers replaced by ``body``."""
    start, end = f"<!-- section: {name} -->", f"<!-- /section: {name} -->"
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise SystemExit(f"README has no '{start}' ... '{end}' markers")
    return text[: i + len(start)] + "\n" + body.rstrip("\n") + "\n" + text[j:]


def section_link(args: argparse.Namespace, command: str) -> int:
    """The upload link (``_bench_link.py``): utilization of a capped, distant link by default
    flags and by a fixed ``--uploaders 4`` (the old default), each setting a fresh process."""
    import _bench_link

    folder = _bench_link.link_clips(args.cache)
    rows = []
    for mbps, latency in _bench_link.SETTINGS:
        for flags in ([], ["--uploaders", "4"]):
            print(f"section l: {mbps:g} Mbit/s, {latency:g} ms {' '.join(flags)}", file=sys.stderr)
            cmd = [sys.executable, str(ROOT / "scripts" / "_bench_link.py"), "--one", str(mbps), str(latency),
                   *flags]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    body = (f"Machine: {machine_line()}.\nCommand: `{command}` ({folder.name}: {rows[0]['windows']} windows, "
            f"{rows[0]['uploaded_mb']:.0f} MB).\n\n"
            + _bench_link.table(rows) + "\n")
    print(body)
    if args.write_readme:
        README.write_text(replace_section(README.read_text(), "link", body))
        print(f"wrote the link section of {README}", file=sys.stderr)
    return 0


def section_scale(args: argparse.Namespace, command: str) -> int:
    """State at scale: its own table and its own README section (``scale``)."""
    if args.no_ann and args.write_readme:
        raise SystemExit("bench.py: --no-ann with --write-readme would drop the README's ANN table")
    sizes = [int(x) for x in args.scale.split(",") if x.strip()] + ([1_000_000] if args.scale_1m else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for n in sizes:
            print(f"section s: {n:,} windows", file=sys.stderr)
            rows.append(scale.measure(n, Path(tmp)))
            shutil.rmtree(Path(tmp) / f"scale-{n}", ignore_errors=True)
    body = (f"Machine: {machine_line()}.\nCommand: `{command}` (one repetition, warm page cache).\n\n"
            + scale.table(rows) + "\n")
    from seeknetic_prep.results.ann import ann_available

    if ann_available() and not args.no_ann:  # the approximate index against exact ranking, for 10M windows
        import _bench_ann

        print("section s: the approximate index", file=sys.stderr)
        sizes_ann = (25_000, 100_000, *([200_000] if args.scale_1m else []))
        measured = [_bench_ann.measure(n) for n in sizes_ann]
        fit = _bench_ann.extrapolate(measured)
        body += ("\n**The approximate index** (`--ann`; clustered synthetic embeddings, see "
                 "`scripts/_bench_ann.py`)\n\n" + _bench_ann.table(measured, fit))
        rows.append({"ann": measured})
    print(body)
    if args.json:
        args.json.write_text(json.dumps({"command": command, "machine": machine_line(), "scale": rows},
                                        indent=1, default=str))
    if args.write_readme:
        text = README.read_text()
        README.write_text(replace_section(text, "scale", SCALE_INTRO + "\n" + body))
        print(f"wrote the scale section of {README}", file=sys.stderr)
    return 0


SCALE_INTRO = """\
### State at scale

`python scripts/bench.py --only s` builds synthetic run state through the public `Store` API
(no decoding, no server; 20 windows a file, both services, 1024-float embeddings, 10k windows a
run, each run ending with its results part), then one more run adds 1,000 windows. Measured:
`state.sqlite` per window; that last run's end-of-run cost (commit the buffered writes, write
its Parquet part, release from the state the embeddings it holds, append its vectors to the
search matrix); a no-op resume's store side (open,
then one `known_file` lookup per file); `seeknetic-prep status` as a fresh process; and in a
fresh process, `search`'s load (first the parts' small columns, merged and cached in
`search/windows.arrow`; then from that cache, as every later search until the next run) and
one exact ranking (top 10, chunked float32 matmul over the memory-mapped matrix), with the
process's peak RSS and its anonymous part (all but the mapped files). 1M windows take about
12 minutes and 14 GB of disk here (`--scale-1m`; `--no-ann` leaves out the approximate index's
table below, which the state does not change).
"""


def write_readme(body: str) -> None:
    text = README.read_text()  # re-read right before writing: other sections change under us
    README.write_text(replace_section(text, "performance", README_INTRO + "\n" + body))


# ---------------------------------------------------------------- main


def fixture_files() -> list[Path]:
    root = ROOT / "fixtures"
    if not root.is_dir():
        return []
    return sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in MEDIA_EXTS and "bad" not in p.relative_to(root).parts and p.is_file()
    )


def warm_up(path: Path) -> None:
    """Import and first-call costs (librosa, cv2, codec tables) out of the first timed cell."""
    for fn in (lambda: ours(path, 0, min(WINDOW_MS, duration_ms(path))),
               lambda: naive(path, 0, min(WINDOW_MS, duration_ms(path)))):
        with contextlib.suppress(Exception):  # the timed run will report it
            fn()


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="1 repetition, small clips only: skips the 1080p/4K clips and sections b, c")
    p.add_argument("--only", default=",".join(DEFAULT_SECTIONS),
                   help="sections to run, e.g. a,c (default: a,b,c,d,e; s is the state-at-scale section)")
    p.add_argument("--scale", default="10000,100000",
                   help="section s: windows of history, comma-separated (default 10000,100000)")
    p.add_argument("--scale-1m", action="store_true", help="section s: also 1,000,000 windows (slow, ~5 GB)")
    p.add_argument("--no-ann", action="store_true",
                   help="section s: leave out the approximate index's table (its build takes minutes)")
    p.add_argument("--reps", type=int, default=None, help="repetitions per cell (default 3, --quick 1)")
    p.add_argument("--cache", type=Path, default=ROOT / inputs.CACHE_NAME, help="where clips are generated")
    p.add_argument("--no-fixtures", action="store_true", help="leave the repo's fixtures out of section a")
    p.add_argument("--json", type=Path, help="also write every sample to this file")
    p.add_argument("--write-readme", action="store_true", help="replace the README's performance section")
    p.add_argument("--workers-clips", type=int, default=None,
                   help="section e: clips of each kind (default 16, the pipeline issue's folder: "
                        "48 windows; --quick: 1)")
    args = p.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in args.only if s not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {bad}: choose from {','.join(SECTIONS)}")
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    if args.reps < 1:
        p.error(f"--reps {args.reps}: must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["python", "scripts/bench.py", *(sys.argv[1:] if argv is None else argv)])
    sections = [s for s in args.only if not (args.quick and s in ("b", "c"))]
    cache = args.cache
    clips = [n for n in inputs.RECIPES if not (args.quick and n in SLOW_FILES)]
    files = [inputs.ensure(inputs.RECIPES[n], cache) for n in clips] if "a" in sections else []
    if not args.no_fixtures and "a" in sections:
        files += fixture_files()
    if sections == ["s"]:
        return section_scale(args, command)
    if sections == ["l"]:
        return section_link(args, command)
    report = Report(reps=args.reps)
    smallest = inputs.ensure(inputs.RECIPES["h264-360p30-35s"], cache)
    warm_up(smallest)
    print(f"benchmark: sections {','.join(sections)}, {args.reps} reps, {cores()} cores", file=sys.stderr)
    if "a" in sections:
        section_a(files, args.reps, report)
    if "b" in sections:
        section_b(inputs.ensure(inputs.RECIPES[WHOLE_FILE], cache), args.reps, report)
    if "c" in sections:
        big, long = (inputs.ensure(inputs.RECIPES[n], cache) for n in (RSS_FILE, WHOLE_FILE))
        section_c(big, long, args.reps, report)
    if "d" in sections:
        folder = inputs.ensure_folder(inputs.E2E_QUICK if args.quick else inputs.E2E_SET, cache)
        section_d(folder, args.reps, report)
    if "e" in sections:
        import _bench_workers as workers

        exe = Path(sys.executable).with_name("seeknetic-prep")
        cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "seeknetic_prep"]
        result = workers.section_e(cache, cores(), args.reps, 1 if args.quick else args.workers_clips, cli)
        report.tables["e"] = workers.table(result)
        report.raw["e"] = result
        top = result["rows"][-1]
        run_rate = top["windows"] / top["run_s"]
        pre_rate = top["windows"] / top["pre_s"]
        goal = 0.90 if cores() <= 2 else 0.85
        report.target(f"run --local / preprocess-only at --workers {top['workers']}", f">= {goal:.2f}x",
                      run_rate / pre_rate, lambda v: v >= goal, "x", None)
        report.target("driver CPU s per window (main process)", "<= 0.15",
                      top["run_cpu"].get("main", 0.0) / top["windows"], lambda v: v <= 0.15, "s", None)
    if "g" in sections:
        section_g(cache, report)
    if "r" in sections:
        folder = inputs.ensure_folder(inputs.E2E_QUICK if args.quick else inputs.E2E_SET, cache)
        section_ray(folder, args.reps, report)
    body = render(report, command)
    print(body)
    if args.json:
        args.json.write_text(json.dumps({"command": command, "machine": machine_line(), **report.raw},
                                        indent=1, default=str))
    if args.write_readme:
        write_readme(body)
        print(f"wrote the performance section of {README}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
