"""No body is sent into a connection the server is closing (issue 20.2).

A server closes a connection idle for a few seconds, and the client learns of it a one-way
latency later, when the FIN arrives. A request sent in between is lost: on a distant link the
bench saw whole 3 MB upload bodies sent again (8 in one run). The transport retires pooled
connections idle longer than ``idle_retire_s`` instead of reusing them.

The race is played for real: a keep-alive HTTP server on loopback that closes connections
idle for ``K`` = 2 s, behind the throttling proxy with ``L`` = 0.5 s one-way (the FIN travels
with the same delay). A request sent ``t`` = 1.5 s after the previous answer reaches the server
at ``t + 2L`` = 2.5 s of its idle time, after its close at 2 s, yet before the client can see
the close (at 2 s on its own clock): the middle of the window, 0.5 s from either edge, so a
loaded machine's late wake-ups do not move it out.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from seeknetic_prep.api.transport import Request, RequestsTransport
from seeknetic_prep.errors import APIConnectionError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from throttle_proxy import ThrottleProxy

SERVER_IDLE_S = 2.0
ONE_WAY_S = 0.5
CLIENT_IDLE_S = 1.5


class _KeepAlive(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; a connection idle for ``timeout`` seconds is closed (the
    standard library's handler times out its next read and ends the connection)."""

    protocol_version = "HTTP/1.1"
    timeout = SERVER_IDLE_S
    bodies: list[int]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.bodies.append(len(body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def distant() -> Iterator[tuple[str, list[int]]]:
    """``(url, bodies the server received)``: the keep-alive server behind the proxy."""
    bodies: list[int] = []
    handler = type("Handler", (_KeepAlive,), {"bodies": bodies})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with ThrottleProxy(("127.0.0.1", server.server_address[1]), latency_ms=ONE_WAY_S * 1000) as proxy:
            yield proxy.url, bodies
    finally:
        server.shutdown()
        server.server_close()


def _post(transport: RequestsTransport, url: str, body: bytes) -> int:
    return transport.handle(Request("POST", url, "/files/upload/tensors", content=body)).status_code


def test_a_connection_idle_too_long_is_retired_and_the_body_arrives(distant: tuple[str, list[int]]) -> None:
    url, bodies = distant
    transport = RequestsTransport(idle_retire_s=CLIENT_IDLE_S / 2)  # under K - 2L = 1 s
    try:
        assert _post(transport, url, b"a" * 200_000) == 200
        time.sleep(CLIENT_IDLE_S)
        assert _post(transport, url, b"b" * 300_000) == 200
    finally:
        transport.close()
    assert bodies == [200_000, 300_000]
    assert transport.meter.connections == 2  # the idle connection was not reused


def test_without_retiring_the_body_is_lost_in_the_closing_connection(distant: tuple[str, list[int]]) -> None:
    """The race the retiring prevents, shown with it off: the second body is lost."""
    url, bodies = distant
    transport = RequestsTransport(idle_retire_s=60.0)
    try:
        assert _post(transport, url, b"a" * 200_000) == 200
        time.sleep(CLIENT_IDLE_S)
        with pytest.raises(APIConnectionError, match="connection failed"):
            _post(transport, url, b"b" * 300_000)
    finally:
        transport.close()
    assert bodies == [200_000]
    assert transport.meter.connections == 1


def test_connections_in_steady_use_are_reused(emulator: Any) -> None:
    """Retiring costs a new connection only for one left idle: back-to-back calls share one."""
    transport = RequestsTransport(idle_retire_s=30.0)
    try:
        for _ in range(5):
            answer = transport.handle(Request("GET", emulator.base_url, "/async_status/nope",
                                              headers={"X-API-Key": emulator.api_key}))
            assert answer.status_code == 404
    finally:
        transport.close()
    assert transport.meter.connections == 1
