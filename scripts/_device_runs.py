"""``run --local`` with ``--decode cpu`` against ``--decode auto`` on 1080p H.264 (issue 10's target).

    python scripts/_device_runs.py [--copies 8] [--rounds 1] [--out DIR]

Takes the bench's 1080p 10 s clips (``scripts/_bench_workers.scale_folder``, made by
``gpu_check.py``) and writes ``--copies`` distinct copies of each: the same video with a
``free`` box of a different size appended (players and FFmpeg skip it), so each copy is its own
content with its own request ids and is decoded, not recognised. Then runs the CLI on that folder,
``--decode cpu`` and ``--decode auto`` (or ``--configs``) in turn, each into a fresh ``--out``, and prints one
JSON line a run: windows, the run's own seconds, windows/s, wall and CPU seconds of the process
tree. Needs a CUDA device for ``auto`` to mean NVDEC (without one both rows are the CPU's).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


def copies_folder(clips: list[Path], copies: int, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for clip in clips:
        data = clip.read_bytes()
        for k in range(copies):
            target = dest / f"{clip.stem}-c{k}{clip.suffix}"
            if not target.exists():
                pad = f"seeknetic-prep copy {k}".encode() + b"\0" * k
                target.write_bytes(data + struct.pack(">I4s", 8 + len(pad), b"free") + pad)
    return dest


def one_run(folder: Path, out: Path, flags: list[str]) -> dict[str, object]:
    shutil.rmtree(out, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "seeknetic_prep", "run", str(folder), "--local", "--out", str(out),
           "--quiet", *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("seeknetic-prep run:")), "")
    windows = re.search(r"windows: (\d+)", line)
    secs = re.search(r"; ([\d.]+) s\b", line)
    n = int(windows.group(1)) if windows else 0
    run_s = float(secs.group(1)) if secs else wall
    return {"flags": " ".join(flags), "rc": proc.returncode, "windows": n, "run_s": run_s,
            "windows_per_s": round(n / run_s, 2) if run_s else None, "wall_s": round(wall, 1),
            "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
            "summary": line[:300], "stderr_tail": proc.stderr[-400:] if proc.returncode else ""}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--copies", type=int, default=8)
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--configs", default="--decode cpu;--decode auto",
                   help="the runs' flags, ';' between runs (default: cpu, then auto)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "device-runs"))
    args = p.parse_args()
    import _bench_workers

    cache = ROOT / ".bench-cache"
    folder = _bench_workers.scale_folder(cache, args.clips)
    big = sorted(f for f in folder.iterdir() if "1080p" in f.name)
    runs = copies_folder(big, args.copies, cache / f"device-runs-{args.clips}x{args.copies}")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in range(args.rounds):
        for k, flags in enumerate(args.configs.split(";")):
            row = one_run(runs, Path("/tmp") / f"device-run-{k}-{r}", flags.split())
            rows.append(row)
            print(json.dumps(row), flush=True)
    (args.out / "device_runs.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
