"""The NVDEC part of a device session: ``gpu_check.py``'s exactness on every H.264/HEVC
fixture (each file on its own, so one failure is reported with its traceback and the rest still
run), then its decode speed on the bench's 1080p clips. One JSON line a result; all of it also in
``$OUT/device_gpu.json``.

    python scripts/_device_gpu.py [--clips 16]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))


def h26x_fixtures() -> list[Path]:
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


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--clips", type=int, default=16)
    args = p.parse_args()
    out = Path(os.environ.get("OUT") or "device-gpu")
    out.mkdir(parents=True, exist_ok=True)
    import gpu_check

    from seeknetic_prep.decode.hw import cuda_present

    report: dict[str, Any] = {"cuda_present": cuda_present(), "exactness": [], "throughput": []}
    print(json.dumps({"cuda_present": report["cuda_present"]}), flush=True)

    def save() -> None:
        (out / "device_gpu.json").write_text(json.dumps(report, indent=1))

    for path in h26x_fixtures():
        try:
            row = gpu_check.compare(path)
        except Exception:
            row = {"file": str(path.relative_to(ROOT)), "error": traceback.format_exc()[-1500:]}
        report["exactness"].append(row)
        print(json.dumps(row), flush=True)
        save()
    import _bench_workers

    t0 = time.perf_counter()
    folder = _bench_workers.scale_folder(ROOT / ".bench-cache", args.clips)
    print(json.dumps({"clips_made_s": round(time.perf_counter() - t0, 1)}), flush=True)
    big = sorted(f for f in folder.iterdir() if "1080p" in f.name)
    for clip in big[:2]:
        try:
            row = gpu_check.compare(clip)
        except Exception:
            row = {"file": clip.name, "error": traceback.format_exc()[-1500:]}
        report["exactness"].append(row)
        print(json.dumps(row), flush=True)
        save()
    cores = os.cpu_count() or 1
    for cpu, gpu in ((cores, 0), (0, 8), (cores, 8), (0, 16)):
        try:
            row = gpu_check.throughput(big, cpu=cpu, gpu=gpu)
        except Exception:
            row = {"cpu_workers": cpu, "gpu_workers": gpu, "error": traceback.format_exc()[-1500:]}
        report["throughput"].append(row)
        print(json.dumps(row), flush=True)
        save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
