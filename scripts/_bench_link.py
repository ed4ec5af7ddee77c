"""Bench section ``link``: how much of a capped, distant uplink ``run`` keeps busy (issue 20).

Against the real API the upload link, not the decoder, bounds a run, so the figure that
matters is utilization: bytes the link carried while the run uploaded, over what the cap
allows in that time. Each setting runs in a fresh process (peak RSS is per run): the emulator
in a child process (as ``run --local``), the throttling proxy of ``throttle_proxy.py`` in
another (a token bucket on client-to-server bytes and a one-way delay line), and the run in
between, with default flags unless told otherwise. Utilization is measured from the first
byte sent to the last upload's answer, from the bytes of answered uploads sampled every 0.1 s
(bytes merely handed to sockets would count what sits in their buffers, megabytes each), so the
decoders' start-up and the last polls do not count against the link.

    python scripts/_bench_link.py                      # the table, default flags
    python scripts/_bench_link.py --one 50 150         # one setting: Mbit/s, one-way ms

What the proxy does not model: TLS (the client reuses connections, so handshakes are rare),
packet loss and TCP slow start (loopback never loses a packet).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _bench_inputs import CACHE_NAME, Recipe, _x264, ensure  # noqa: E402

CLIPS = 20  # 60 s each: 120 windows, 719 MB, distinct content (each its own seed); long enough that
# the first handshake and the last answer (4 one-way latencies no client can shorten) are ~4% of
# an upload at 200 Mbit/s and 300 ms, or the scaled 50 Mbit/s and 1200 ms (48 windows: ~10%)
SETTINGS = ((50.0, 50.0), (50.0, 150.0), (50.0, 300.0), (200.0, 50.0), (200.0, 150.0), (200.0, 300.0))


def link_recipe(i: int) -> Recipe:
    """The ``i``-th link clip: 640x360 60 s, its own seed."""
    return Recipe(f"link-h264-360p30-60s-{i}", "mp4", "libx264", 640, 360, 30, 60.0,
                  gop=250, bframes=3, options=_x264(250, 3), audio_rate=44_100, seed=100 + i)


def link_clips(cache: Path, count: int = CLIPS) -> Path:
    """A folder of ``count`` distinct 640x360 60 s clips (symlinks into the cache)."""
    folder = cache / f"link-{count}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        clip = ensure(link_recipe(i), cache)
        link = folder / clip.name
        if not link.exists():
            link.symlink_to(clip)
    return folder


def one(folder: Path, mbps: float, latency_ms: float, extra: dict[str, Any],
        trace: Path | None = None) -> dict[str, Any]:
    """One run through the proxy; what the link carried and how full it was. ``trace``: write
    the samples there (seconds, MB handed to sockets, MB of answered uploads), one per line."""
    from seeknetic_prep.api.client import Client
    from seeknetic_prep.emulator import EmulatorConfig, spawned
    from seeknetic_prep.pipeline.driver import run_folder
    from seeknetic_prep.pipeline.spec import RunOptions

    failures = _Failures()
    logging.getLogger("seeknetic_prep.api.retry").addHandler(failures)
    logging.getLogger("seeknetic_prep.api.retry").setLevel(logging.DEBUG)
    with tempfile.TemporaryDirectory() as tmp, spawned(EmulatorConfig(job_seconds=0.2)) as emulator:
        upstream = emulator.base_url.rsplit("/", 1)[-1]
        proxy = subprocess.Popen([sys.executable, str(HERE / "throttle_proxy.py"), "--upstream", upstream,
                                  "--mbps", str(mbps), "--latency-ms", str(latency_ms)],
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert proxy.stdout is not None
            url = proxy.stdout.readline().split(" at ")[1].split(" ")[0]
            with Client(emulator.api_key, base_url=url) as client:
                samples: list[tuple[float, int, int]] = []
                done = threading.Event()

                def sample() -> None:
                    while not done.wait(0.1):
                        assert client.link is not None
                        link = client.link
                        samples.append((time.monotonic(), link.snapshot()[0], link.upload_bytes))

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                started = time.monotonic()
                summary = run_folder([folder], out=Path(tmp) / "out", client=client,
                                     options=RunOptions(**extra))
                done.set()
                sampler.join()
                assert client.link is not None
                # getattr: a tree from before the meter counted connections runs this same bench
                uploads_done, connections = client.link.uploads, getattr(client.link, "connections", -1)
        finally:
            proxy.terminate()
            tail = proxy.communicate(timeout=30)[0].strip().splitlines()
    link = json.loads(tail[-1]) if tail and tail[-1].startswith("{") else {}
    if trace is not None:
        t0 = samples[0][0]
        trace.write_text("".join(f"{t - t0:.1f} {n / 1e6:.1f} {u / 1e6:.1f}\n" for t, n, u in samples))
    sent, uploaded = samples[-1][1], samples[-1][2]
    first = next(t for t, n, _ in samples if n > 0)
    last = next(t for t, _, u in samples if u >= uploaded)  # the last upload answered
    rate = uploaded / max(1e-9, last - first)  # bytes the server got, not bytes in socket buffers
    return {"mbps": mbps, "latency_ms": latency_ms, "flags": extra, "windows": summary.windows,
            "exit_code": summary.exit_code, "uploads": uploads_done, "sent_mb": round(sent / 1e6, 1),
            "uploaded_mb": round(uploaded / 1e6, 1), "connections": connections,
            "failed_calls": dict(failures.kinds),
            "upload_s": round(last - first, 1), "run_s": round(time.monotonic() - started, 1),
            "utilization": round(rate * 8 / (mbps * 1e6), 3),
            "link_busy": round(link.get("busy_mbps", 0.0) / mbps, 3),
            "proxy_connections": link.get("connections"),
            "windows_per_s": round(summary.windows / max(1e-9, last - first), 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


class _Failures(logging.Handler):
    """Counts the retry engine's failed calls by what failed (``RemoteDisconnected``: a request
    sent on a connection the server had closed; its body is sent again)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.kinds: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("attempt "):
            text = str(record.args[1]) if isinstance(record.args, tuple) and len(record.args) > 1 else ""
            kind = next((k for k in ("RemoteDisconnected", "ConnectionReset", "BrokenPipe", "timed out",
                                     "stalled") if k in text), "other")
            self.kinds[kind] += 1


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| cap | one-way latency | flags | utilization | link busy | windows/s | upload s | peak RSS |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in r["flags"].items()) or "default"
        lines.append(f"| {r['mbps']:g} Mbit/s | {r['latency_ms']:g} ms | {flags} "
                     f"| {100 * r['utilization']:.1f}% | {100 * r.get('link_busy', 0):.1f}% "
                     f"| {r['windows_per_s']} | {r['upload_s']} "
                     f"| {r['peak_rss_mb']} MB |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--one", nargs=2, type=float, metavar=("MBPS", "LATENCY_MS"))
    parser.add_argument("--uploaders", type=int, default=None)
    parser.add_argument("--clips", type=int, default=CLIPS)
    parser.add_argument("--verbose", action="store_true", help="with --one: say each change of concurrency")
    parser.add_argument("--trace", type=Path, help="with --one: write the link's samples to this file")
    parser.add_argument("--settings", default=None, help="MBPS/MS,MBPS/MS,... (default: the table's)")
    args = parser.parse_args()
    extra = {} if args.uploaders is None else {"uploaders": args.uploaders}
    folder = link_clips(HERE.parent / CACHE_NAME, args.clips)
    if args.one:
        if args.verbose:
            logging.basicConfig(format="%(relativeCreated)6.0f ms %(message)s")
            logging.getLogger("seeknetic_prep.pipeline.upload_gate").setLevel(logging.DEBUG)
        print(json.dumps(one(folder, args.one[0], args.one[1], extra, args.trace)))
        return
    settings = SETTINGS if args.settings is None else tuple(
        (float(a), float(b)) for a, b in (s.split("/") for s in args.settings.split(",")))
    rows = []
    for mbps, latency in settings:
        cmd = [sys.executable, __file__, "--one", str(mbps), str(latency), "--clips", str(args.clips)]
        if args.uploaders is not None:
            cmd += ["--uploaders", str(args.uploaders)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
