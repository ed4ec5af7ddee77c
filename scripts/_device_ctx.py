"""What opening a file on NVDEC costs, with a CUDA context per file (PyAV's default) and on the
process's primary context kept for its life (``hw.nvdec``): ``preprocess(decode="cuda")`` of the
same small fixtures in two processes, one a mode, seconds a file. (Exactness on the primary
context is ``gpu_check.py``'s, which opens files through ``hw.nvdec``.)

    python scripts/_device_ctx.py            # runs both arms
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

FILES = ("short_700ms.mp4", "vflip.mp4", "hflip.mp4", "two_edits.mp4", "front_camera.mp4", "no_audio.mp4",
         "rotated90.mp4", "late_audio.mp4", "editlist_cut.mp4", "audio_drop.mp4")


def arm(mode: str) -> None:
    from seeknetic_prep.decode import hw
    from seeknetic_prep.decode.preprocess import preprocess

    if mode == "per-file":
        from av.codec.hwaccel import HWAccel

        hw.nvdec = lambda: HWAccel("cuda", allow_software_fallback=False)  # type: ignore[assignment]
    times = []
    for name in FILES:
        t0 = time.perf_counter()
        preprocess(ROOT / "fixtures" / name, decode="cuda")
        times.append(round(time.perf_counter() - t0, 3))
    mean = round(sum(times[1:]) / (len(times) - 1), 3)
    print(json.dumps({"mode": mode, "seconds": times, "after_first_mean": mean}))


def main() -> int:
    if len(sys.argv) > 1:
        arm(sys.argv[1])
        return 0
    for mode in ("per-file", "primary"):
        out = subprocess.run([sys.executable, __file__, mode], capture_output=True, text=True)
        print(out.stdout.strip() or out.stderr[-1500:], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
