"""The throttling proxy the link tests and ``bench.py --only link`` drive: bytes pass intact both
ways, every byte is counted, a stall holds the uplink, and real HTTP to the emulator goes through.
Rates are measured by the bench, never asserted here."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from _tcp import tcp_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from throttle_proxy import ThrottleProxy


@pytest.fixture
def sink() -> Iterator[tuple[tuple[str, int], list[bytes]]]:
    """A TCP server that keeps what it receives and answers with its SHA of it on EOF."""
    import hashlib

    received: list[bytes] = []

    def keep(conn: socket.socket) -> None:
        chunks = []
        while data := conn.recv(65536):
            chunks.append(data)
            received.append(data)
        conn.sendall(hashlib.sha256(b"".join(chunks)).hexdigest().encode())

    srv, address = tcp_server(keep)
    yield address, received
    srv.close()


def _send(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while data := s.recv(100):
            answer += data
        return answer


def test_bytes_pass_intact_and_are_counted(sink: Any) -> None:
    import hashlib

    upstream, _ = sink
    payload = bytes(range(256)) * 8000  # 2 MB, every byte value
    with ThrottleProxy(upstream, mbps=200, latency_ms=5) as link:
        answer = _send(link.port, payload)
    assert answer == hashlib.sha256(payload).hexdigest().encode()
    assert link.stats.up_bytes == len(payload) and link.stats.down_bytes == 64
    assert link.stats.connections == 1


def test_a_stall_holds_the_uplink(sink: Any) -> None:
    upstream, received = sink
    with ThrottleProxy(upstream) as link:
        link.stall(30.0)
        with socket.create_connection(("127.0.0.1", link.port), timeout=60) as s:
            s.sendall(b"held" * 1000)
            time.sleep(0.5)
            assert received == [] and link.stats.up_bytes == 0  # nothing crossed while stalled
            link.stall(0.0)
            s.shutdown(socket.SHUT_WR)
            assert s.recv(100)  # released: the answer comes
    assert b"".join(received) == b"held" * 1000


def test_http_to_the_emulator_goes_through(emulator: Any) -> None:
    host, port = emulator.base_url.rsplit("/", 1)[-1].split(":")
    with ThrottleProxy((host, int(port)), mbps=100, latency_ms=10) as link:
        r = requests.get(f"{link.url}/async_status/nope", headers={"X-API-Key": emulator.api_key},
                         timeout=30)
    assert r.status_code == 404 and link.stats.up_bytes > 0 and link.stats.down_bytes > 0


def test_a_new_connection_waits_a_round_trip_before_its_first_byte() -> None:
    """TCP's handshake: the first answer takes two round trips (handshake, then request and
    answer), not one. Lower bounds only: a loaded machine can be late, never early."""
    srv, upstream = tcp_server(lambda conn: conn.sendall(conn.recv(10)))
    one_way = 0.25
    try:
        with ThrottleProxy(upstream, latency_ms=one_way * 1000) as link, \
                socket.create_connection(("127.0.0.1", link.port), timeout=30) as s:
            started = time.monotonic()
            s.sendall(b"ping")
            assert s.recv(10) == b"ping"
            assert time.monotonic() - started >= 4 * one_way - 0.01
    finally:
        srv.close()


def test_a_close_travels_with_the_latency() -> None:
    """A server's FIN arrives a one-way latency after it was sent, as data does: a client
    learns late that the server closed (the keep-alive race the transport avoids)."""
    pause, one_way = 0.6, 0.5

    def hello_then_close(conn: socket.socket) -> None:
        conn.sendall(b"hi")
        time.sleep(pause)

    srv, upstream = tcp_server(hello_then_close)
    try:
        with ThrottleProxy(upstream, latency_ms=one_way * 1000) as link, \
                socket.create_connection(("127.0.0.1", link.port), timeout=30) as s:
            started = time.monotonic()
            assert s.recv(10) == b"hi"
            assert s.recv(10) == b""  # the close
            # the SYN's trip (the server accepts and says hi) + its pause + the FIN's own trip
            assert time.monotonic() - started >= one_way + pause + one_way - 0.01
    finally:
        srv.close()
