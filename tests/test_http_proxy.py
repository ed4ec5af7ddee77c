"""Behind a company's HTTP proxy (``HTTP_PROXY``/``HTTPS_PROXY``) the transport keeps its own
connections: requests builds a proxy's pools from urllib3's defaults, so such a user had lost the
stall-tolerant sends, the ``--max-upload-mbps`` cap, the bytes on the progress line and the
retiring of idle connections, all silently.

The proxy here is a real forward proxy on loopback (absolute-form requests, keep-alive,
``Content-Length`` bodies streamed through), in front of the emulator.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from seeknetic_prep.api.pacing import ByteBucket
from seeknetic_prep.api.transport import Request, RequestsTransport


class _Forward(socketserver.StreamRequestHandler):
    """Forwards each absolute-form request on a client connection to its origin, rewritten to
    origin form, over one upstream connection, and relays the answer."""

    server: _ForwardProxy

    def handle(self) -> None:
        upstream: socket.socket | None = None
        try:
            while line := self.rfile.readline():
                method, target, version = line.decode("latin-1").split()
                url = urllib.parse.urlsplit(target)
                head, length = _head(self.rfile)
                if upstream is None:
                    upstream = socket.create_connection((url.hostname, url.port or 80), timeout=30)
                    answers = upstream.makefile("rb")
                path = url.path + (f"?{url.query}" if url.query else "")
                upstream.sendall(f"{method} {path} {version}\r\n".encode() + head)
                left = length
                while left:
                    chunk = self.rfile.read(min(65536, left))
                    if not chunk:
                        return
                    upstream.sendall(chunk)
                    left -= len(chunk)
                self.server.forwarded.append((method, path, length))
                status = answers.readline()
                answer_head, answer_length = _head(answers)
                self.wfile.write(status + answer_head + answers.read(answer_length))
                self.wfile.flush()
        finally:
            if upstream is not None:
                upstream.close()


def _head(stream: Any) -> tuple[bytes, int]:
    """The header lines up to and including the blank one (``Proxy-*`` left out), and the
    body's ``Content-Length``."""
    lines, length = [], 0
    while (header := stream.readline()) not in (b"\r\n", b"\n", b""):
        name = header.split(b":", 1)[0].strip().lower()
        if name.startswith(b"proxy-"):
            continue
        if name == b"content-length":
            length = int(header.split(b":", 1)[1])
        lines.append(header)
    return b"".join(lines) + b"\r\n", length


class _ForwardProxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.forwarded: list[tuple[str, str, int]] = []


@pytest.fixture
def company_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[_ForwardProxy]:
    proxy = _ForwardProxy()
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_behind_an_http_proxy_the_upload_cap_and_the_link_meter_apply(
        company_proxy: _ForwardProxy, emulator: Any) -> None:
    rate = 1_000_000.0  # bytes a second
    transport = RequestsTransport(bandwidth=ByteBucket(rate))
    body = b'{"service": "embedding", "request_id": "via-proxy", "pad": "' + b"a" * 1_500_000 + b'"}'
    try:
        started = time.monotonic()
        answer = transport.handle(Request("POST", emulator.base_url, "/files/upload/tensors", content=body,
                                          headers={"X-API-Key": emulator.api_key,
                                                   "Content-Type": "application/json"}))
        took = time.monotonic() - started
        assert answer.status_code == 422  # the emulator read the whole body, and found no tensors
        status = transport.handle(Request("GET", emulator.base_url, "/async_status/nope",
                                          headers={"X-API-Key": emulator.api_key}))
        assert status.status_code == 404
    finally:
        transport.close()
    assert company_proxy.forwarded == [("POST", "/files/upload/tensors", len(body)),
                                       ("GET", "/async_status/nope", 0)]
    assert transport.meter.sent >= len(body)  # the transport's own connections sent it
    assert transport.meter.connections == 1  # one connection to the proxy, kept alive
    # paced by the cap (a lower bound: a loaded machine is late, never early); 256 KiB of burst
    assert took >= (len(body) - 256 * 1024) / rate - 0.05
