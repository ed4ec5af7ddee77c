"""A stall is a link that stopped, not one that waits (issue 20.2, 20.4).

Before session 12 the link meter counted a body as "sending" until its answer came, so on a
distant link every round trip with all bodies handed over looked like a stall: at 1200 ms one
way the upload gate halved its limit and rested five periods, the whole of a 60 s upload at 8
uploads. These tests use real sockets on loopback: a server that takes the whole body and
answers late (waiting, no stall), and one that stops reading with the body already in the
client's kernel (a stall, seen through the socket's send queue on Linux).
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from _tcp import tcp_server

from seeknetic_prep.api import link
from seeknetic_prep.api.link import LinkMeter, stalled, unacknowledged
from seeknetic_prep.api.transport import Request, RequestsTransport

STALL = 1.0  # the stall threshold for these tests (3 s in a run)


@pytest.fixture
def short_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(link, "STALL_S", STALL)


@contextlib.contextmanager
def _server(talk: Callable[[socket.socket], object], *, recv_buffer: int | None = None) -> Iterator[int]:
    """A threaded TCP server on loopback running ``talk``; yields its port."""
    srv, (_, port) = tcp_server(talk, threaded=True, recv_buffer=recv_buffer)
    with srv:
        yield port


def _answer_late(conn: socket.socket) -> None:
    """Read one request whole, wait 4 stall thresholds, answer 200."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += conn.recv(65536)
    time.sleep(4 * STALL)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}")


def _sample(meter: LinkMeter, until: threading.Event) -> list[tuple[int, float]]:
    """``(bodies on the link, seconds since it moved)`` every 20 ms until ``until`` is set."""
    seen = []
    while not until.wait(0.02):
        _, sending, idle = meter.snapshot()
        seen.append((sending, idle))
    return seen


def _send(transport: RequestsTransport, port: int, size: int, done: threading.Event,
          result: list[object]) -> None:
    try:
        result.append(transport.handle(Request("POST", f"http://127.0.0.1:{port}", "/files/upload/tensors",
                                               content=b"x" * size)).status_code)
    except Exception as exc:  # the test reads it
        result.append(exc)
    finally:
        done.set()


def test_a_body_handed_over_and_waiting_for_its_answer_is_no_stall(short_stall: None) -> None:
    with _server(_answer_late) as port:
        transport = RequestsTransport()
        done, result = threading.Event(), []
        sender = threading.Thread(target=_send, args=(transport, port, 1_000_000, done, result))
        sender.start()
        seen = _sample(transport.meter, done)
        sender.join()
        assert result == [200]
        waited = [idle for sending, idle in seen if sending == 0 and idle >= STALL]
        assert waited, seen  # the answer took 4 thresholds, the body was off the link meanwhile
        assert not any(stalled(sending, idle) for sending, idle in seen), seen


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the send queue with SIOCOUTQ")
def test_a_link_that_stops_with_the_body_in_the_kernel_is_a_stall(short_stall: None) -> None:
    """The body (300 kB) fits in the client's send buffer, so it is all handed over at once;
    the server never reads and its receive buffer is tiny, so none of it is acknowledged."""
    def never_read(conn: socket.socket) -> None:
        time.sleep(30)

    with _server(never_read, recv_buffer=4096) as port:
        transport = RequestsTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)],
                                      timeout=(5.0, 4 * STALL))
        done, result = threading.Event(), []
        sender = threading.Thread(target=_send, args=(transport, port, 300_000, done, result), daemon=True)
        sender.start()
        seen = _sample(transport.meter, done)
        sender.join()
        assert transport.meter.sent >= 300_000  # every byte handed to the socket
        assert any(stalled(sending, idle) for sending, idle in seen), seen


def test_the_send_queue_reads_what_the_peer_has_not_acknowledged() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    with listener, socket.create_connection(listener.getsockname()) as sock, listener.accept()[0]:
        if not sys.platform.startswith("linux"):
            assert unacknowledged(sock) is None
            return
        assert unacknowledged(sock) == 0
        sock.sendall(b"y" * 1000)
        deadline = time.monotonic() + 5
        while (queued := unacknowledged(sock)) and time.monotonic() < deadline:
            assert queued is not None and 0 < queued <= 1000
            time.sleep(0.01)
        assert queued == 0  # the peer's kernel acknowledged it (nobody read it)
    assert unacknowledged(sock) is None  # closed


def test_a_meter_nobody_reads_forgets_closed_sockets() -> None:
    meter = LinkMeter()
    for _ in range(2 * link._TRACKED):
        sock = socket.socket()
        meter.add(10, sock)
        sock.close()
    assert len(meter._queues) <= link._TRACKED
    assert meter.snapshot()[:2] == (20 * link._TRACKED, 0)


def test_a_body_after_idle_time_starts_with_a_clean_clock() -> None:
    """A socket written to long ago (a poll, say) and not looked at since must not make the next
    body's first look a stall: its queue emptied long ago."""
    meter = LinkMeter()
    listener = socket.create_server(("127.0.0.1", 0))
    with listener, socket.create_connection(listener.getsockname()) as sock, listener.accept()[0]:
        sock.sendall(b"GET")
        meter.add(3, sock)
        deadline = time.monotonic() + 5
        while unacknowledged(sock) and time.monotonic() < deadline:
            time.sleep(0.01)
        meter.last_progress -= 10 * link.STALL_S  # the link idled since
        meter.begin()
        _, sending, idle = meter.snapshot()
        assert sending == 1 and not stalled(sending, idle), (sending, idle)
