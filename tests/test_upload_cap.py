"""``--max-upload-mbps`` (issue 20.3): one cap on the bytes a run sends, all uploads together.

The bucket's bound is checked on a fake clock with several senders; the transport's pacing on a
real run, through the throttling proxy of ``scripts/throttle_proxy.py`` left uncapped, which
counts every byte the client put on the wire: all of them went through the cap, and the run
took at least ``(bytes - burst) / rate`` (a lower bound: load only makes a run slower). The
cap shared by Ray's nodes is tested in ``test_ray_executor.py``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _pipeline_helpers import ROOT

from seeknetic_prep.api.client import Client
from seeknetic_prep.api.pacing import ByteBucket, mbps_to_bytes
from seeknetic_prep.api.transport import MockTransport, Response
from seeknetic_prep.emulator import running
from seeknetic_prep.errors import InvalidArgumentError
from seeknetic_prep.pipeline.driver import run_folder
from seeknetic_prep.pipeline.spec import RunOptions

sys.path.insert(0, str(ROOT / "scripts"))
from throttle_proxy import ThrottleProxy

CLIP = ROOT / "fixtures" / "demo" / "desert.mp4"
BURST = 256 * 1024


@pytest.fixture(scope="module")
def counted() -> Iterator[tuple[Any, ThrottleProxy]]:
    """The emulator behind a proxy that caps nothing and counts every byte sent to it."""
    with running() as emulator:
        host, port = emulator.base_url.rsplit("/", 1)[-1].split(":")
        with ThrottleProxy((host, int(port))) as proxy:
            yield emulator, proxy


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_lets_through_at_most_rate_times_time_plus_burst_whatever_the_senders() -> None:
    clock = FakeClock()
    rate = 1_000_000.0
    bucket = ByteBucket(rate, burst_bytes=BURST, clock=clock)
    senders = {name: 0.0 for name in "abcd"}  # when each may send its next block
    sizes = {"a": 16384, "b": 16384, "c": 1_000_000, "d": 300}  # blocks, a body, headers
    released: list[tuple[float, int]] = []
    for _ in range(400):  # the earliest sender goes next, as threads would
        name = min(senders, key=lambda n: senders[n])
        clock.now = max(clock.now, senders[name])
        wait = bucket.reserve(sizes[name])
        released.append((clock.now + wait, sizes[name]))
        senders[name] = clock.now + wait
    released.sort()
    start, total = 100.0, 0
    for at, size in released:
        total += size
        assert total <= rate * (at - start) + BURST + 1e-6, (at, total)
    assert bucket.reserved == total
    # ... and no slower than the cap: the last byte went within a block of rate * time
    assert total >= rate * (released[-1][0] - start)


def test_an_idle_bucket_lets_a_burst_go_at_once_then_paces() -> None:
    clock = FakeClock()
    bucket = ByteBucket(100_000.0, burst_bytes=BURST, clock=clock)
    assert [bucket.reserve(16384) for _ in range(BURST // 16384)] == [0.0] * (BURST // 16384)
    assert bucket.reserve(16384) == pytest.approx(16384 / 100_000.0)
    clock.now += 60.0  # a minute idle: the burst is back, never more
    assert bucket.reserve(BURST) == 0.0
    assert bucket.reserve(50_000) == pytest.approx(0.5)


def test_a_capped_run_sends_every_byte_through_the_cap_and_no_faster(counted: tuple[Any, ThrottleProxy],
                                                                     tmp_path: Path) -> None:
    emulator, proxy = counted
    mbps = 16.0
    before = proxy.stats.up_bytes
    with Client(emulator.api_key, base_url=proxy.url, max_upload_mbps=mbps) as client:
        started = time.monotonic()
        summary = run_folder([CLIP], out=tmp_path / "out", client=client,
                             options=RunOptions(workers=1, uploaders=4, services=("embedding",)))
        took = time.monotonic() - started
        cap = client.limit_upload(None)
    assert summary.exit_code == 0 and summary.jobs_completed == summary.windows >= 1
    assert isinstance(cap, ByteBucket)
    sent = proxy.stats.up_bytes - before
    assert cap.reserved == sent  # every byte on the wire, headers and polls included, was paced
    floor = (sent - BURST) / mbps_to_bytes(mbps)
    assert floor > 1.0 and took >= floor, (took, floor)
    print(f"{sent / 1e6:.1f} MB at {mbps:g} Mbit/s in {took:.2f} s (the cap alone: {floor:.2f} s)")


def test_the_runs_cap_applies_for_the_run_and_the_clients_own_comes_back(
        counted: tuple[Any, ThrottleProxy], tmp_path: Path) -> None:
    emulator, proxy = counted
    mbps = 8.0
    before = proxy.stats.up_bytes
    with Client(emulator.api_key, base_url=proxy.url) as client:
        started = time.monotonic()
        summary = run_folder([CLIP], out=tmp_path / "out", client=client, options=RunOptions(
            workers=1, uploaders=4, services=("embedding",), max_upload_mbps=mbps))
        took = time.monotonic() - started
        assert client.limit_upload(None) is None  # the run's cap was the run's only
    assert summary.exit_code == 0 and summary.jobs_completed == summary.windows >= 1
    floor = (proxy.stats.up_bytes - before - BURST) / mbps_to_bytes(mbps)
    assert floor > 1.0 and took >= floor, (took, floor)


def test_bad_caps_are_one_line_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="max_upload_mbps"):
        RunOptions(max_upload_mbps=0)
    with pytest.raises(InvalidArgumentError, match="max_upload_mbps"):
        Client("k", base_url="http://127.0.0.1:9", max_upload_mbps=-5)
    mock = Client("k", base_url="http://mock", transport=MockTransport(lambda r: Response(200)))
    with pytest.raises(InvalidArgumentError, match="cannot cap"):
        mock.limit_upload(ByteBucket(1e6))
    proc = subprocess.run([sys.executable, "-m", "seeknetic_prep", "run", str(CLIP), "--local",
                           "--max-upload-mbps", "0", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "seeknetic-prep run: error: Invalid max_upload_mbps 0.0: must be a number > 0."]
    assert not (tmp_path / "out" / "state.sqlite").exists()
