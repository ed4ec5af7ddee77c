"""How long the emulator takes to answer one request on a kept-alive connection.

Starts the emulator as the tests do (in this process, `running()`), or as `run --local` does
(a child process, `--spawned`), then times N requests of each kind over one `requests.Session`:
a cheap authenticated GET (`/_emulator/stats`) and a larger POST (a 96 KB tensor upload),
and prints the median and the 99th percentile. An answer written in two pieces (headers, then
body) waited ~44 ms for the client's delayed ACK while the server's sockets lacked TCP_NODELAY
(issue 20 item 5); with it, the GET is answered in ~1-2 ms.

    python scripts/emulator_latency.py [--requests 300] [--spawned]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Callable, Iterator

import numpy as np
import requests

from seeknetic_prep.api.tensors import encode_tensor
from seeknetic_prep.emulator import running, spawned


@contextlib.contextmanager
def _emulator(*, child: bool) -> Iterator[tuple[str, str]]:
    """``(base_url, api_key)`` of an emulator on a free loopback port, for the block."""
    if not child:
        with running() as server:
            yield server.base_url, server.api_key
        return
    with spawned() as proc:
        yield proc.base_url, proc.api_key


def _times_ms(send: Callable[[], requests.Response], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        answer = send()
        out.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
    return out


def _report(what: str, times: list[float]) -> None:
    p99 = statistics.quantiles(times, n=100)[98]
    print(f"{what:<44} median {statistics.median(times):6.2f} ms   p99 {p99:6.2f} ms   (n={len(times)})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=300, help="requests of each kind (default: 300)")
    p.add_argument("--spawned", action="store_true", help="serve from a child process, as run --local does")
    args = p.parse_args()
    video = np.random.default_rng(0).integers(0, 256, size=(4, 3, 64, 96), dtype=np.uint8)
    upload = {"service": "embedding", "request_id": "latency", "video_input": encode_tensor(video)}
    with _emulator(child=args.spawned) as (base_url, key), requests.Session() as http:
        http.headers["X-API-Key"] = key
        for _ in range(300):  # a child is still importing FastAPI: wait until it answers
            with contextlib.suppress(requests.ConnectionError):
                http.get(f"{base_url}/_emulator/stats", timeout=10).raise_for_status()
                break
            time.sleep(0.05)
        get = _times_ms(lambda: http.get(f"{base_url}/_emulator/stats", timeout=10), args.requests)
        post = _times_ms(lambda: http.post(f"{base_url}/files/upload/tensors", json=upload, timeout=10),
                         args.requests)
    where = "child process" if args.spawned else "in-process"
    print(f"emulator {where}, one kept-alive connection:")
    _report("GET /_emulator/stats", get)
    _report(f"POST /files/upload/tensors ({len(json.dumps(upload)) // 1024} KB body)", post)


if __name__ == "__main__":
    main()
