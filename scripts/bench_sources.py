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
(c) ``run --local`` windows/s over the same folder from the bucket and from local disk, and
    from the bucket with the server reading only the asked range of an object (moto reads the
    whole object for every range GET, on the run's own cores; real stores do not), and from a
    second, unpatched S3 server that reads only the range (MiniStack: ``scripts/_ministack.py``,
    installed into the bench cache on first use; ``--no-ministack`` leaves it out).
(d) the long clip's plan and tasks from the bucket behind scripts/throttle_proxy.py (a store
    50 ms of round trip away): each one's wall time, and how long its reads waited for requests.
(e) ``run --local`` windows/s over eight 10 s clips (one window each: a plan per window) from
    disk, from the bucket, and from the bucket 50 ms away: where a store's round trips cost most.

Needs the test extra (moto[server], s3fs). Inputs are generated with PyAV and cached in
``.bench-cache/`` (``scripts/_bench_inputs.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from _bench_inputs import CACHE_NAME, Recipe, _x264, ensure  # noqa: E402
from _ministack import ensure_ministack, ministack_server, upload  # noqa: E402

from seeknetic_prep.decode.profile import Window  # noqa: E402


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
        original_many = reader.read_many

        def read_many(ranges: list[tuple[int, int]]) -> list[bytes]:
            self.spans += [(offset, offset + length) for offset, length in ranges]
            got: list[bytes] = original_many(ranges)
            return got

        reader.read_many = read_many

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
    from seeknetic_prep.pipeline.worker import plan_object
    from seeknetic_prep.sources.remote import object_info, open_for_fingerprint, open_object

    info = object_info(url)
    reader = open_for_fingerprint(url, info)
    count = _Counting(reader)
    plan = plan_object(url, reader)  # as a decode worker plans it
    probed = plan.info
    assert probed is not None
    mb = 1e6
    print(f"\n(a) bytes per window, {url.rsplit('/', 1)[1]} ({reader.size / mb:.1f} MB, "
          f"{len(plan.windows)} windows; a window decoded alone, as a task of one window)")
    print(f"  {'what':<22}{'fetched MB':>11}{'consumed MB':>13}{'ratio':>7}{'requests':>10}")
    print(f"  {'plan (fp + probe)':<22}{reader.bytes_fetched / mb:>11.2f}{count.consumed() / mb:>13.2f}"
          f"{reader.bytes_fetched / max(1, count.consumed()):>7.2f}{reader.requests:>10}")
    windows = [Window(*w) for w in plan.windows]
    layout = plan.layout
    assert layout is not None
    for w in (windows[0], windows[len(windows) // 2], windows[-1]):
        # As a task opens it: what opening reads, at once, then the window's spans.
        r = open_object(url, info, expect=layout.spans_of([w.index]), warm=layout.opening)
        c = _Counting(r)
        for _ in iter_segments(r, [w], info=probed):  # type: ignore[arg-type]
            pass
        label = f"window {w.index} ({w.start_ms // 1000}-{w.end_ms // 1000} s)"
        print(f"  {label:<22}{r.bytes_fetched / mb:>11.2f}{c.consumed() / mb:>13.2f}"
              f"{r.bytes_fetched / max(1, c.consumed()):>7.2f}{r.requests:>10}")


def _rss_child(url: str) -> None:
    from seeknetic_prep.decode.preprocess import iter_segments
    from seeknetic_prep.sources import open_source

    n = sum(1 for _ in iter_segments(open_source(url)))
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


_FAR_MS = 25.0
"""One-way latency of section (d)'s link to the S3 server: a store 50 ms of round trip away."""


def _far_child(url: str) -> None:
    """Section (d) in a fresh process (the proxy and the server run in the bench's): the plan,
    then each task of the clip as a worker that did not plan it runs it."""
    from seeknetic_prep.decode.preprocess import iter_segments
    from seeknetic_prep.pipeline.worker import plan_object
    from seeknetic_prep.sources.blocks import SHARED_BLOCKS
    from seeknetic_prep.sources.remote import object_info, open_for_fingerprint, open_object

    info = object_info(url)
    began = time.monotonic()
    reader = open_for_fingerprint(url, info)
    plan = plan_object(url, reader)
    rows = [("plan (fp + probe)", time.monotonic() - began, reader.waited_s, reader.requests)]
    layout = plan.layout
    assert layout is not None and plan.info is not None
    windows = [Window(*w) for w in plan.windows]
    for k in range(0, len(windows), 4):
        SHARED_BLOCKS.clear()  # none of the plan's blocks: as on another worker
        task = windows[k:k + 4]
        began = time.monotonic()
        r = open_object(url, info, shared=True, expect=layout.spans_of(w.index for w in task),
                        warm=layout.opening)
        for _ in iter_segments(r, task, info=plan.info):  # type: ignore[arg-type]
            pass
        rows.append((f"task, windows {task[0].index}-{task[-1].index}", time.monotonic() - began,
                     r.waited_s, r.requests))
    for row in rows:
        print(*row, sep="\t")


def section_d(url: str, env: dict[str, str]) -> None:
    from throttle_proxy import throttled

    host, port = env["AWS_ENDPOINT_URL"].rsplit("/", 1)[1].split(":")
    with throttled((host, int(port)), latency_ms=_FAR_MS) as link:
        far = {**env, "AWS_ENDPOINT_URL": link.url}
        out = subprocess.run([sys.executable, __file__, "--far-child", url], env=far, capture_output=True,
                             text=True, check=True).stdout
    print(f"\n(d) {url.rsplit('/', 1)[1]} from the bucket {2 * _FAR_MS:g} ms of round trip away "
          "(scripts/throttle_proxy.py): its plan, then each task as a worker that did not plan it")
    print(f"  {'what':<24}{'wall s':>8}{'waiting s':>11}{'requests':>10}")
    for line in out.splitlines():
        what, wall, waited, requests = line.split("\t")
        print(f"  {what:<24}{float(wall):>8.2f}{float(waited):>11.2f}{requests:>10}")


_EXACT = threading.Event()
"""Set: the S3 server reads only the asked range of an object (see :func:`_exact_ranges`)."""


def _exact_ranges() -> None:
    """Let moto's server answer a range GET from the asked bytes alone while :data:`_EXACT` is
    set, as S3, GCS and MinIO do. moto 5 reads the whole object for every range GET (its
    ``FakeKey.value``): 27 ms of this process's CPU a request for the 43 MB clip, on the run's
    own two cores, a cost no real store puts on the client. The range arithmetic, headers and
    status stay moto's own: only the object's bytes are handed over lazily."""
    from moto.s3 import models, responses

    ranged = threading.local()
    key_class: Any = models.FakeKey  # patched below: typed loosely
    response_class: Any = responses.S3Response
    whole = key_class.value

    class _Lazy:  # len() and one slice: all moto's range code asks of the body
        def __init__(self, key: Any) -> None:
            self.key = key

        def __len__(self) -> int:
            return int(self.key.size)

        def __getitem__(self, part: slice) -> bytes:
            start, stop, _ = part.indices(int(self.key.size))
            with self.key.lock:
                self.key._value_buffer.seek(start)
                return bytes(self.key._value_buffer.read(max(0, stop - start)))

    def value(key: Any) -> Any:
        return _Lazy(key) if getattr(ranged, "on", False) else whole.fget(key)

    key_class.value = property(value, whole.fset)
    get_object = response_class.get_object
    handle = response_class._handle_range_header

    def get_exact(self: Any) -> Any:
        ranged.on = _EXACT.is_set() and bool(self.headers.get("range"))
        try:
            return get_object(self)
        finally:
            ranged.on = False

    def handle_exact(self: Any, request: Any, headers: Any, content: Any) -> Any:
        status, headers, body = handle(self, request, headers, content)
        return status, headers, body[:] if isinstance(body, _Lazy) else body  # a range it ignored

    response_class.get_object = get_exact
    response_class._handle_range_header = handle_exact


def _windows_per_s(proc: subprocess.CompletedProcess[str], source: str) -> float:
    """The windows/s a finished ``run`` printed; the bench stops if the run failed."""
    m = re.search(r"([\d.]+) windows/s", proc.stdout)
    if proc.returncode or not m:
        raise SystemExit(f"run {source} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    return float(m.group(1))


def _server_cpu(ministack: tuple[str, Any] | None) -> float:
    """CPU seconds so far of the S3 servers: this process runs moto's threads (and the
    sampler's), ministack runs in a process of its own."""
    return time.process_time() + (sum(ministack[1].cpu_times()[:2]) if ministack is not None else 0.0)


def section_c(folder: Path, url: str, env: dict[str, str], tmp: Path, rounds: int,
              ministack: tuple[str, Any] | None) -> None:
    from _bench_workers import _sampled

    print("\n(c) run --local windows/s, the same files from disk and from the bucket "
          f"({rounds} rounds, alternating; --workers 2); 'moto, exact' is the same server "
          "reading only the asked range, 'ministack' a second server (unpatched) that does, "
          "as real stores do")
    moto = env["AWS_ENDPOINT_URL"]
    arms = {"disk": (str(folder), moto), "bucket (moto)": (url, moto), "bucket (moto, exact)": (url, moto)}
    if ministack is not None:
        arms["bucket (ministack)"] = (url, ministack[0])
    rates: dict[str, list[float]] = {name: [] for name in arms}
    cpu: dict[str, dict[str, float]] = {name: {} for name in arms}
    os.environ.update(env)  # the run's environment: the sampler starts it from this process
    for k in range(rounds):
        for name, (source, endpoint) in arms.items():
            if name == "bucket (moto, exact)":
                _EXACT.set()
            else:
                _EXACT.clear()
            os.environ["AWS_ENDPOINT_URL"] = endpoint
            server = _server_cpu(ministack)
            out = tmp / f"run-{k}-{name.replace(' ', '_')}"
            _, groups, proc = _sampled([sys.executable, "-m", "seeknetic_prep", "run", source, "--local",
                                        "--out", str(out), "--workers", "2", "--quiet"])
            groups["S3 server + sampler"] = _server_cpu(ministack) - server
            rates[name].append(_windows_per_s(proc, source))
            for group, seconds in groups.items():
                cpu[name][group] = cpu[name].get(group, 0.0) + seconds / rounds
    _EXACT.clear()
    os.environ["AWS_ENDPOINT_URL"] = moto
    for name, values in rates.items():
        print(f"  {name:<21}" + "  ".join(f"{v:.2f}" for v in values)
              + f"   best {max(values):.2f}   median {statistics.median(values):.2f}")
    for name in list(arms)[1:]:
        best = max(rates[name]) / max(rates["disk"])
        median = statistics.median(rates[name]) / statistics.median(rates["disk"])
        print(f"  {name} / disk: {best:.2f}x best of each, {median:.2f}x median of each")
    print("  CPU seconds a run (mean), by process, and over the disk's: where the bucket's extra goes")
    print(f"    {'':<22}" + "".join(f"{name:>24}" for name in arms))
    for group in sorted({g for name in arms for g in cpu[name]}):
        d = cpu["disk"].get(group, 0.0)
        cells = [f"{d:.2f}"] + [f"{cpu[n].get(group, 0.0):.2f} ({cpu[n].get(group, 0.0) - d:+.2f})"
                                for n in list(arms)[1:]]
        print(f"    {group:<22}" + "".join(f"{c:>24}" for c in cells))


def section_e(folder: Path, url: str, env: dict[str, str], tmp: Path, rounds: int) -> None:
    from throttle_proxy import throttled

    host, port = env["AWS_ENDPOINT_URL"].rsplit("/", 1)[1].split(":")
    rates: dict[str, list[float]] = {}
    _EXACT.set()  # the server reads the asked range, as stores do: the round trips are what is measured
    with throttled((host, int(port)), latency_ms=_FAR_MS) as link:
        arms = {"disk": (str(folder), env), "bucket": (url, env),
                f"bucket, {2 * _FAR_MS:g} ms away": (url, {**env, "AWS_ENDPOINT_URL": link.url})}
        for k in range(rounds):
            for arm, (name, (source, arm_env)) in enumerate(arms.items()):
                proc = subprocess.run([sys.executable, "-m", "seeknetic_prep", "run", source, "--local",
                                       "--out", str(tmp / f"short-{k}-{arm}"),
                                       "--workers", "2", "--quiet"],
                                      env=arm_env, capture_output=True, text=True, cwd=ROOT)
                rates.setdefault(name, []).append(_windows_per_s(proc, source))
    _EXACT.clear()
    print(f"\n(e) run --local windows/s, eight 10 s clips (a plan per window), {rounds} rounds alternating; "
          "--workers 2; the server reads only the asked range")
    disk = statistics.median(rates["disk"])
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"  {name:<20}" + "  ".join(f"{v:.2f}" for v in values)
              + f"   median {median:.2f}   vs disk {median / disk:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", default="abcde", help="sections to run (default abcde)")
    ap.add_argument("--no-ministack", action="store_true",
                    help="(c) without the second S3 server (scripts/_ministack.py installs it on first use)")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    ap.add_argument("--far-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        _rss_child(args.rss_child)
        return
    if args.far_child:
        _far_child(args.far_child)
        return
    from moto.server import ThreadedMotoServer

    short_s, long_s = (20.0, 80.0) if args.quick else (30.0, 120.0)
    cache = ROOT / CACHE_NAME
    clips = [ensure(_recipe(short_s, 11), cache), ensure(_recipe(long_s, 12), cache)]
    shorts = [ensure(_recipe(10.0, 100 + k), cache) for k in range(8)] if "e" in args.only else []
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line a request otherwise
    _exact_ranges()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}",
           "PYTHONPATH": str(ROOT)}
    os.environ.update(env)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        objects = {f"clips/{c.name}": c for c in clips}
        upload(env["AWS_ENDPOINT_URL"], "bench", {**objects, **{f"shorts/{c.name}": c for c in shorts}})
        folder, short_folder = tmp / "folder", tmp / "shorts"
        for into, files in ((folder, clips), (short_folder, shorts)):
            into.mkdir()
            for clip in files:
                shutil.copyfile(clip, into / clip.name)
        urls = [f"s3://bench/{key}" for key in objects]
        if "a" in args.only:
            section_a(urls[1])
        if "b" in args.only:
            section_b(urls, env)
        if "c" in args.only:
            exe = None if args.no_ministack else ensure_ministack(cache)
            with ministack_server(exe) if exe is not None else contextlib.nullcontext() as second:
                if second is not None:
                    upload(second[0], "bench", objects)
                section_c(folder, "s3://bench/clips/", env, tmp, args.rounds, second)
        if "d" in args.only:
            section_d(urls[1], env)
        if "e" in args.only:
            section_e(short_folder, "s3://bench/shorts/", env, tmp, args.rounds)
    server.stop()


if __name__ == "__main__":
    main()
