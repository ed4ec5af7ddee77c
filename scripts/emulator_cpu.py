"""The built-in emulator's CPU per window, alone: what `run --local` pays on the server side.

Starts the emulator as `run --local` does (a child process), then sends N windows the way a
run does (both uploads with real bodies from one decoded 1080p window, both submissions, polls
until done) from 4 threads, and prints the child's CPU seconds (user, system) and minor page
faults per window. Session 3 cut this from 81 to 49 ms on 2 cores (NOTES.md, "Facts").

    python scripts/emulator_cpu.py [--windows 48] [--clip PATH]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _bench_inputs as inputs
import psutil
import requests

from seeknetic_prep.decode.preprocess import preprocess
from seeknetic_prep.emulator import spawned
from seeknetic_prep.pipeline.payloads import upload_body_bytes

ROOT = Path(__file__).resolve().parent.parent


def _faults(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--windows", type=int, default=48)
    p.add_argument("--clip", type=Path, default=None, help="default: the bench's 1080p clip")
    args = p.parse_args()
    clip = args.clip or inputs.ensure(inputs.RECIPES["h264-1080p30-60s"], ROOT / inputs.CACHE_NAME)
    segment = preprocess(clip, start_ms=0, end_ms=10_000)[0]
    with spawned() as emu:  # a temporary data directory
        headers = {"X-API-Key": emu.api_key}
        probe = requests.Session()
        for _ in range(300):  # the child is importing FastAPI: wait until it answers
            try:
                probe.get(f"{emu.base_url}/async_status/none", headers=headers, timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        child = psutil.Process(emu.pid)
        before, faults0, started = child.cpu_times(), _faults(emu.pid), time.perf_counter()

        def window(i: int) -> None:
            http = requests.Session()
            ids = [("embedding", f"e{i}"), ("tagging", f"t{i}")]
            for (service, rid), body in zip(ids, upload_body_bytes(segment, ids), strict=True):
                up = http.post(f"{emu.base_url}/files/upload/tensors", data=body,
                               headers={**headers, "Content-Type": "application/json"})
                up.raise_for_status()
                keys = up.json()["r2_keys"]
                if service == "embedding":
                    path, tensor = "/video_embedding/encode_video/async", {
                        "video_input_key": keys["video_input"], "audio_input_key": keys["audio_input"]}
                else:
                    path, tensor = "/video_tagging/async", {
                        "video_input_key": keys["video_input"], "video_kwargs_key": keys["video_kwargs"]}
                http.post(emu.base_url + path, json={"request_id": rid, "tensor": tensor},
                          headers=headers).raise_for_status()
            for _, rid in ids:
                while http.get(f"{emu.base_url}/async_status/{rid}", headers=headers).json()["status"] \
                        not in ("completed", "failed"):
                    time.sleep(0.3)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(window, range(args.windows)))
        after, n = child.cpu_times(), args.windows
        user, system = (after.user - before.user) / n, (after.system - before.system) / n
        print(f"emulator, {n} windows in {time.perf_counter() - started:.1f} s: "
              f"{(user + system) * 1000:.1f} ms CPU a window (user {user * 1000:.1f}, "
              f"system {system * 1000:.1f}), {(_faults(emu.pid) - faults0) / n:.0f} minor faults a window")


if __name__ == "__main__":
    main()
