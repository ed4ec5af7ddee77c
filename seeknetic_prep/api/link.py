"""What the upload link is doing, for the status line (issue 20.4) and the upload gate's stall
rule: bytes handed to sockets, bodies on the link, and when anything last moved.

A stall is a link that stopped, not one that waits. A body is on the link from its first byte
until its last is handed to a socket (the transport says so when urllib3 reads the body's
end) and, after that, while the kernel still holds bytes of it: on Linux the meter reads each
socket it wrote to for its send queue (``SIOCOUTQ``: bytes not yet acknowledged by the peer)
and counts a queue that shrank as progress, so a link that stops with every body already in
the kernel (a 3 MB body fits in a socket's buffers) is still seen to stop. Elsewhere a handed
body counts as delivered. A request whose bytes are all acknowledged waits for its answer, a
round trip on a distant link: no stall.

Before session 12 a body counted until its answer came, so at 1200 ms one way every round
trip looked like a 3 s stall: the gate halved its limit (already at the floor) and rested five
periods, which was the whole of a 60 s upload at the starting 8 uploads.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time

__all__ = ["STALL_S", "LinkMeter", "stalled"]

STALL_S = 3.0
"""Seconds in which nothing moved (no block handed to a socket, no socket's queue shrank) while
bodies were on the link, that make a stall: shown as one, and a reason to send fewer bodies at
once."""

try:  # Linux: SIOCOUTQ (the same number as TIOCOUTQ) reads a TCP socket's unacknowledged bytes
    import fcntl
    import termios
    _OUTQ: int | None = termios.TIOCOUTQ if sys.platform.startswith("linux") else None
except ImportError:  # Windows
    _OUTQ = None


_TRACKED = 256  # sockets remembered before closed ones are dropped without a snapshot


def stalled(sending: int, idle_s: float) -> bool:
    """Whether a :meth:`LinkMeter.snapshot`'s ``sending`` and ``idle_s`` say the link stalled
    (idle time with no body on the link is no stall)."""
    return sending > 0 and idle_s >= STALL_S


def unacknowledged(sock: socket.socket) -> int | None:
    """Bytes ``sock``'s kernel still holds to send or to see acknowledged; None when that is not
    known (closed, not Linux)."""
    if _OUTQ is None:
        return None
    with contextlib.suppress(OSError, ValueError):
        fd = sock.fileno()  # -1 once closed
        if fd >= 0:
            return int.from_bytes(fcntl.ioctl(fd, _OUTQ, bytes(4)), sys.byteorder, signed=True)
    return None


class LinkMeter:
    """Bytes handed to the sockets, bodies on the link, and when the link last moved.
    Thread-safe; fed by :class:`~seeknetic_prep.api.transport.RequestsTransport` (``begin``,
    ``add`` for each block, ``end`` when a body's last byte is handed over or its request
    ended) and the client (``uploaded`` when an upload is answered)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent = 0
        self.sending = 0
        """Bodies with bytes not yet handed to a socket."""
        self.last_progress = time.monotonic()
        self.connections = 0
        """Connections opened (sockets connected): with a pool, a handful a run; many more
        say connections are being lost or retired (see
        :data:`~seeknetic_prep.api.transport.IDLE_RETIRE_S`)."""
        self.uploads = 0
        """Upload bodies that got their answer (fed by the client): with their bytes, what a
        window costs on the wire, hence how much is left to send."""
        self.upload_bytes = 0
        self._queues: dict[socket.socket, int] = {}  # sockets written to: their last queue read

    def begin(self) -> None:
        with self._lock:
            now = time.monotonic()
            if self.sending == 0 and self._on_link(now) == 0:
                self.last_progress = now  # idle time before a body is not a stall
            self.sending += 1

    def add(self, count: int, sock: socket.socket | None = None) -> None:
        """``count`` bytes were handed to ``sock``."""
        with self._lock:
            self.sent += count
            self.last_progress = time.monotonic()
            if sock is not None:
                if sock not in self._queues and len(self._queues) >= _TRACKED:
                    # nobody reads snapshots (a library user's client): forget closed sockets
                    self._queues = {s: q for s, q in self._queues.items() if s.fileno() >= 0}
                self._queues[sock] = sys.maxsize  # read afresh at the next snapshot

    def end(self) -> None:
        with self._lock:
            self.sending -= 1

    def connected(self) -> None:
        with self._lock:
            self.connections += 1

    def uploaded(self, size: int) -> None:
        """A body of ``size`` bytes was uploaded."""
        with self._lock:
            self.uploads += 1
            self.upload_bytes += size

    def answered(self) -> tuple[int, int]:
        """``(uploads answered, their bytes)``, read together."""
        with self._lock:
            return self.uploads, self.upload_bytes

    def snapshot(self) -> tuple[int, int, float]:
        """``(bytes sent, how much is on the link, seconds since the link last moved)``; the
        middle figure counts bodies not all handed over plus sockets still holding bytes (a body
        being handed over may count twice: what matters is whether it is zero)."""
        with self._lock:
            now = time.monotonic()
            return self.sent, self.sending + self._on_link(now), now - self.last_progress

    def _on_link(self, now: float) -> int:
        """Read the tracked sockets' queues: one that shrank is progress, one that emptied (or
        closed) a socket with nothing of ours left on the link; how many still hold bytes."""
        for sock, before in list(self._queues.items()):
            queued = unacknowledged(sock)
            if (queued is None or queued < before) and before != sys.maxsize:
                self.last_progress = now
            if not queued:
                del self._queues[sock]
            else:
                self._queues[sock] = queued
        return len(self._queues)
