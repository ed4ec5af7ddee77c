"""Slow links finish (issue 20.1): an upload is abandoned only when the link takes nothing for
the stall timeout, never because a whole body takes longer than a fixed time. Before, a body went
to the socket in one ``sendall`` under the 5 s connect timeout: through a 2 Mbit/s link with a
1 MiB send buffer, every attempt of a 3.6 MB upload was cut after exactly 5 s, forever.

The link is the throttling proxy of ``scripts/throttle_proxy.py`` in front of the emulator; the
client's send buffer is pinned to 1 MiB (loopback would otherwise grow it past the body). How
long the upload took against bytes/bandwidth is printed, not asserted (load).
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _pipeline_helpers import ROOT

from seeknetic_prep.api.client import Client, RetryPolicy
from seeknetic_prep.api.link import LinkMeter
from seeknetic_prep.api.transport import RequestsTransport
from seeknetic_prep.commands.display import RunDisplay, link_text
from seeknetic_prep.emulator import running
from seeknetic_prep.pipeline.driver import _api_event, run_folder
from seeknetic_prep.pipeline.spec import Progress, RunOptions

sys.path.insert(0, str(ROOT / "scripts"))
from throttle_proxy import ThrottleProxy

SMALL_SEND_BUFFER = [(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)]


class Events(Progress):
    def __init__(self) -> None:
        self.kinds: list[str] = []
        self.meter: LinkMeter | None = None

    def api_event(self, kind: str) -> None:
        self.kinds.append(kind)

    def upload_link(self, meter: LinkMeter) -> None:
        self.meter = meter


@pytest.fixture
def link() -> Iterator[tuple[Any, ThrottleProxy]]:
    with running() as emulator:
        host, port = emulator.base_url.rsplit("/", 1)[-1].split(":")
        with ThrottleProxy((host, int(port)), mbps=2.0, recv_buffer=64 * 1024) as proxy:
            yield emulator, proxy


def test_a_run_over_a_2_mbit_link_finishes_uploading_each_body_once(link: tuple[Any, ThrottleProxy],
                                                                     tmp_path: Path) -> None:
    emulator, proxy = link
    transport = RequestsTransport(socket_options=SMALL_SEND_BUFFER)
    client = Client(emulator.api_key, base_url=proxy.url, transport=transport)
    events = Events()
    started = time.monotonic()
    summary = run_folder([ROOT / "fixtures" / "demo" / "desert.mp4"], out=tmp_path / "out", client=client,
                         options=RunOptions(workers=1, uploaders=1, services=("embedding",)), progress=events)
    took = time.monotonic() - started
    assert summary.exit_code == 0 and summary.jobs_completed == summary.windows >= 1
    uploads = emulator.stats()["uploads"]
    assert set(uploads.values()) == {1} and len(uploads) == summary.windows  # each body once
    assert "retry" not in events.kinds  # no attempt was cut
    sent = proxy.stats.up_bytes
    assert events.meter is not None  # what the display reads: every byte the link carried, counted once
    counted, sending, _ = events.meter.snapshot()
    assert sending == 0 and abs(counted - sent) <= 0.01 * sent
    # each body uploaded was counted once with its size (what the bytes-left estimate uses)
    assert events.meter.uploads == summary.windows
    assert 0.9 * sent <= events.meter.upload_bytes <= sent
    ratio = took / (sent * 8 / 2e6)
    print(f"{sent / 1e6:.1f} MB over 2 Mbit/s in {took:.1f} s: {ratio:.2f}x bytes/bandwidth")


def test_a_real_stall_is_said_and_retried_then_the_upload_completes(link: tuple[Any, ThrottleProxy]) -> None:
    emulator, proxy = link
    transport = RequestsTransport(socket_options=SMALL_SEND_BUFFER, stall_s=1.0)
    client = Client(emulator.api_key, base_url=proxy.url, transport=transport,
                    retry=RetryPolicy(max_attempts=3, base_delay_s=0.05, max_delay_s=0.1))
    seen: list[tuple[str, str]] = []
    client.on_event = lambda kind, why: seen.append((kind, why))
    body = (b'{"service": "embedding", "request_id": "stall-1", "video_input": {"data": "'
            + b"A" * 3_000_000 + b'", "shape": [1], "dtype": "uint8"}}')
    proxy.stall(4.0)  # the whole link holds for 4 s: more than the stall timeout
    with pytest.raises(Exception) as caught:
        client.upload_body(body, request_id="stall-1")
    assert any(kind == "retry" and why.startswith("the link stalled") for kind, why in seen), seen
    assert "422" in str(caught.value) or "tensor" in str(caught.value).lower()  # the body got through


@pytest.mark.parametrize(("sent", "sending", "idle", "rate", "shown"), [
    (0, 0, 0.0, None, ""),
    (412_300_000, 1, 0.4, 2_400_000.0, "sent 412.3 MB, 2.4 MB/s"),
    (412_300_000, 0, 40.0, None, "sent 412.3 MB"),  # idle between bodies is no stall
    (412_300_000, 2, 12.2, 0.0, "sent 412.3 MB · link stalled 12 s"),
])
def test_the_status_line_says_bytes_rate_and_a_stall_as_a_stall(sent: int, sending: int, idle: float,
                                                                 rate: float | None, shown: str) -> None:
    assert link_text(sent, sending, idle, rate) == shown


@pytest.mark.parametrize(("left", "rate", "shown"), [
    (1.2e9, 2.5e6, "sent 412.3 MB, 2.5 MB/s, ~1.2 GB left, 8 min"),
    (30e6, 2.5e6, "sent 412.3 MB, 2.5 MB/s, ~30 MB left, 12 s"),
    (40e9, 2.5e6, "sent 412.3 MB, 2.5 MB/s, ~40.0 GB left, 4.4 h"),
    (0.0, 2.5e6, "sent 412.3 MB, 2.5 MB/s"),  # nothing left to send: no ETA to give
    (1.2e9, 0.0, "sent 412.3 MB, 0.0 MB/s"),  # no rate: no ETA rather than an infinite one
])
def test_the_status_line_says_what_is_left_to_send_and_how_long_at_this_rate(
        left: float, rate: float, shown: str) -> None:
    assert link_text(412_300_000, 1, 0.1, rate, left) == shown


def test_bytes_left_are_the_jobs_left_to_upload_times_the_mean_body() -> None:
    display = RunDisplay(quiet=True, services=2)
    meter = LinkMeter()
    display.upload_link(meter)
    display.totals(files=3, jobs=10, exact=False)
    meter.uploaded(3_000_000)
    assert display._left_bytes() is None  # totals still estimated
    display.totals(files=3, jobs=10, exact=True)
    meter.uploaded(4_000_000)
    assert display._left_bytes() == pytest.approx(8 * 3_500_000)


class Reasons(Progress):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def api_event(self, kind: str) -> None:
        self.seen.append(("event", kind))

    def api_retry(self, reason: str) -> None:
        self.seen.append(("why", reason))


def test_retries_are_shown_with_their_reason() -> None:
    progress = Reasons()
    for kind, detail in [("retry", "the link stalled; try 2 in 0.5 s"),
                         ("retry", 'POST /files/upload/tensors: 503 {"detail": "busy"}; try 3 in 1.0 s'),
                         ("rate_limited", "429 slow down"), ("retry", "connection refused; try 2 in 0.3 s")]:
        _api_event(progress, kind, detail)
    assert progress.seen == [("event", "retry"), ("why", "the link stalled"), ("event", "retry"),
                             ("why", "HTTP 503"), ("event", "rate_limited"), ("event", "retry"),
                             ("why", "connection refused")]
    display = RunDisplay(quiet=True, services=1)
    for reason in ("the link stalled", "HTTP 503", "the link stalled"):
        display.api_retry(reason)
    assert display._why() == " (the link stalled 2, HTTP 503 1)"
