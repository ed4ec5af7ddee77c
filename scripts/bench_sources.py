#!/usr/bin/env python3
"""Videos in object storage, measured against moto's S3 server on loopback (issue 19).

    python scripts/bench_sources.py            # the README's table (a few minutes on 2 cores)
    python scripts/bench_sources.py --quick    # shorter clips

(a) bytes fetched per window against the bytes the decoder consumed (the union of the byte
    ranges its reads covered: the frame pass and the audio pass read the same bytes once),
    for the first, a middle and the last window of a long clip, each decoded alone after the
    plan (fingerprint + probe, shown on its own line).
(b) peak RSS (VmHWM, read by a fresh child) decoding every window of a short and a 4x longer
    clip through range requests: flat with the file's length.
(c) ``run --local`` windows/s over the same folder from the bucket and from local disk.

Needs the test extra (moto[server], s3fs). Inputs are generated with PyAV and cached in
``.bench-cache/`` (``scripts/_bench_inputs.py``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from _bench_inputs import CACHE_NAME, Recipe, _x264, ensure  # noqa: E402


def _recipe(seconds: float, seed: int) -> Recipe:
    # 720p30 at ~5 Mbit/s with 8 s GOPs: a seek lands up to 8 s before a window's first frame.
    return Recipe(f"h264-720p30-{seconds:g}s", "mp4", "libx264", 1280, 720, 30, seconds,
                  gop=240, bframes=3, options=_x264(240, 3), audio_rate=48_000, seed=seed)


class _Counting:
    """A RangeReader whose reads are recorded, for the union of what the decoder consumed."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.spans: list[tuple[int, int]] = []
        original = reader.read

        def read(size: int | None = -1) -> bytes:
            start = reader.tell()
            data: bytes = original(size)
            if data:
                self.spans.append((start, start + len(data)))
            return data

        reader.read = read
        original_pread = reader.pread

        def pread(offset: int, length: int) -> bytes:
            data: bytes = original_pread(offset, length)
            self.spans.append((offset, offset + len(data)))
            return data

        reader.pread = pread

    def consumed(self) -> int:
        total, end = 0, -1
        for a, b in sorted(self.spans):
            if b <= end:
                continue
            total += b - max(a, end)
            end = b
        return total


def section_a(url: str) -> None:
    from seeknetic_prep.decode.preprocess import iter_segments
    from seeknetic_prep.decode.probe import probe
    from seeknetic_prep.decode.sampling import plan_windows
    from seeknetic_prep.pipeline.payloads import fingerprint_of
    from seeknetic_prep.sources.remote import open_object

    reader = open_object(url)
    count = _Counting(reader)

    def read_at(offset: int, length: int) -> bytes:  # as the worker's plan reads them
        if length < 1 << 20:
            return bytes(reader.pread(offset, length))
        reader.seek(offset)
        return bytes(reader.read(length))

    fingerprint_of(reader.size, read_at)
    reader.seek(0)
    info = probe(reader)  # type: ignore[arg-type]
    windows = plan_windows(int(info.duration_ms))
    mb = 1e6
    print(f"\n(a) bytes per window, {url.rsplit('/', 1)[1]} ({reader.size / mb:.1f} MB, "
          f"{len(windows)} windows)")
    print(f"  {'what':<22}{'fetched MB':>11}{'consumed MB':>13}{'ratio':>7}{'requests':>10}")
    print(f"  {'plan (fp + probe)':<22}{reader.bytes_fetched / mb:>11.2f}{count.consumed() / mb:>13.2f}"
          f"{reader.bytes_fetched / max(1, count.consumed()):>7.2f}{reader.requests:>10}")
    for w in (windows[0], windows[len(windows) // 2], windows[-1]):
        r = open_object(url)
        c = _Counting(r)
        for _ in iter_segments(r, [w], info=info):  # type: ignore[arg-type]
            pass
        label = f"window {w.index} ({w.start_ms // 1000}-{w.end_ms // 1000} s)"
        print(f"  {label:<22}{r.bytes_fetched / mb:>11.2f}{c.consumed() / mb:>13.2f}"
              f"{r.bytes_fetched / max(1, c.consumed()):>7.2f}{r.requests:>10}")


def _rss_child(url: str) -> None:
    from seeknetic_prep.decode.preprocess import iter_segments
    from seeknetic_prep.sources import open_source

    n = sum(1 for _ in iter_segments(open_source(url)))  # type: ignore[arg-type]
    status = Path("/proc/self/status").read_text().splitlines()
    hwm = next(line for line in status if line.startswith("VmHWM"))
    print(n, int(hwm.split()[1]) // 1024)


def section_b(urls: list[str], env: dict[str, str]) -> None:
    print("\n(b) peak RSS decoding every window through range requests (fresh process each)")
    print(f"  {'clip':<28}{'windows':>8}{'peak RSS MB':>13}")
    for url in urls:
        out = subprocess.run([sys.executable, __file__, "--rss-child", url], env=env, capture_output=True,
                             text=True, check=True).stdout.split()
        print(f"  {url.rsplit('/', 1)[1]:<28}{out[0]:>8}{out[1]:>13}")


def section_c(folder: Path, url: str, env: dict[str, str], tmp: Path, rounds: int) -> None:
    from _bench_workers import _sampled

    print("\n(c) run --local windows/s, the same files from disk and from the bucket "
          f"({rounds} rounds, alternating; --workers 2)")
    rates: dict[str, list[float]] = {"disk": [], "bucket": []}
    cpu: dict[str, dict[str, float]] = {"disk": {}, "bucket": {}}
    os.environ.update(env)  # the run's environment: the sampler starts it from this process
    for k in range(rounds):
        for name, source in (("disk", str(folder)), ("bucket", url)):
            server = time.process_time()  # this process runs the S3 server's threads (and the sampler)
            out = tmp / f"run-{name}-{k}"
            _, groups, proc = _sampled([sys.executable, "-m", "seeknetic_prep", "run", source, "--local",
                                        "--out", str(out), "--workers", "2", "--quiet"])
            groups["S3 server + sampler"] = time.process_time() - server
            m = re.search(r"([\d.]+) windows/s", proc.stdout)
            if proc.returncode or not m:
                raise SystemExit(f"run {source} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
            rates[name].append(float(m.group(1)))
            for group, seconds in groups.items():
                cpu[name][group] = cpu[name].get(group, 0.0) + seconds / rounds
    for name, values in rates.items():
        print(f"  {name:<8}" + "  ".join(f"{v:.2f}" for v in values) + f"   best {max(values):.2f}")
    print(f"  bucket / disk (best of each): {max(rates['bucket']) / max(rates['disk']):.2f}x")
    print("  CPU seconds a run (mean), by process: where the bucket's extra goes")
    for group in sorted(set(cpu["disk"]) | set(cpu["bucket"])):
        d, b = cpu["disk"].get(group, 0.0), cpu["bucket"].get(group, 0.0)
        print(f"    {group:<22}disk {d:6.2f}   bucket {b:6.2f}   {b - d:+6.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", default="abc", help="sections to run (default abc)")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        _rss_child(args.rss_child)
        return
    import boto3
    from moto.server import ThreadedMotoServer

    short_s, long_s = (20.0, 80.0) if args.quick else (30.0, 120.0)
    cache = ROOT / CACHE_NAME
    clips = [ensure(_recipe(short_s, 11), cache), ensure(_recipe(long_s, 12), cache)]
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line a request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}",
           "PYTHONPATH": str(ROOT)}
    os.environ.update(env)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bench")
        folder = tmp / "folder"
        folder.mkdir()
        for clip in clips:
            s3.upload_file(str(clip), "bench", f"clips/{clip.name}")
            shutil.copyfile(clip, folder / clip.name)
        urls = [f"s3://bench/clips/{c.name}" for c in clips]
        if "a" in args.only:
            section_a(urls[1])
        if "b" in args.only:
            section_b(urls, env)
        if "c" in args.only:
            section_c(folder, "s3://bench/clips/", env, tmp, args.rounds)
    server.stop()


if __name__ == "__main__":
    main()
