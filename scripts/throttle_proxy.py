#!/usr/bin/env python3
"""A throttling TCP proxy on loopback: the upload link of the field, in front of the emulator.

    python scripts/throttle_proxy.py --upstream 127.0.0.1:8000 --mbps 50 --latency-ms 150
    # then: seeknetic-prep run ... --base-url http://127.0.0.1:<printed port>

Client-to-server bytes pass a token bucket (``mbps``, the uplink's cap, shared by every
connection as an uplink is); every byte in either direction waits ``latency_ms`` in a delay line
(one-way latency, so a round trip costs twice it). A connection's close (its FIN) travels with
the same delay, and a new connection's first byte waits a round trip (TCP's handshake), so a
client pays here for reusing or opening connections what it pays on a distant link.
``recv_buffer`` shrinks the proxy's receive buffer so the client's own send buffer is what holds
the unsent body, as on a real slow link.
:meth:`ThrottleProxy.stall` holds the whole link for a while (a Wi-Fi drop, a congested hop).

What it does not model: TLS (its handshake's extra round trip on a new connection), packet
loss and TCP slow start (loopback never loses), and a cap on the download side (answers are
small). The tests and ``scripts/bench.py --only link`` use this same class.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

CHUNK = 16 * 1024  # read size: small enough that the bucket paces smoothly at any cap


@dataclass
class LinkStats:
    """What crossed the link (bytes after the cap and the delay, i.e. delivered)."""

    up_bytes: int = 0
    down_bytes: int = 0
    connections: int = 0
    started: float = field(default_factory=time.monotonic)
    timeline: list[tuple[float, int]] = field(default_factory=list)
    """``(monotonic time, up_bytes so far)``, one entry per 10 ms with deliveries (bounded for
    a proxy left running: 100 entries a second at most)."""

    def delivered(self, count: int) -> None:
        """``count`` client-to-server bytes were delivered upstream."""
        self.up_bytes += count
        now = time.monotonic()
        if self.timeline and now - self.timeline[-1][0] < 0.01:
            self.timeline[-1] = (self.timeline[-1][0], self.up_bytes)
        else:
            self.timeline.append((now, self.up_bytes))

    def busy(self, slack: int = 100_000) -> tuple[float, int]:
        """``(seconds, bytes)`` of the uplink's busy span: from when the first ``slack`` bytes
        had crossed to when all but the last ``slack`` had. Between them the client had bodies
        to send, so bytes over that time against the cap is how full it kept the link; small
        calls before and after (lookups, the last polls) and the last answer's trip back, which
        no client can shorten, are left out."""
        line = self.timeline
        if not line or line[-1][1] <= 2 * slack:
            return 0.0, 0
        start = next(i for i, (_, n) in enumerate(line) if n > slack)
        end = next(i for i, (_, n) in enumerate(line) if n >= line[-1][1] - slack)
        return line[end][0] - line[start][0], line[end][1] - line[start][1]

    def busy_mbps(self) -> float:
        """Client-to-server Mbit/s over :meth:`busy`'s span."""
        seconds, count = self.busy()
        return count * 8 / 1e6 / seconds if seconds > 0 else 0.0


class _Bucket:
    """A token bucket in bytes, shared by every connection (one uplink); ``rate`` None: no cap."""

    def __init__(self, rate_bytes_s: float | None) -> None:
        self.rate = rate_bytes_s
        self._next = time.monotonic()
        self.stalled_until = 0.0

    async def take(self, n: int) -> None:
        while (now := time.monotonic()) < self.stalled_until:  # re-read: a stall may end early
            await asyncio.sleep(min(0.05, self.stalled_until - now))
        if self.rate is None:
            return
        slot = max(now, self._next)
        self._next = slot + n / self.rate
        if self._next - now > 0:
            await asyncio.sleep(self._next - now)


class ThrottleProxy:
    """Start with :meth:`start` (a thread of its own runs the event loop); ``port`` is where
    clients connect; :meth:`close` ends every connection."""

    def __init__(self, upstream: tuple[str, int], *, mbps: float | None = None, latency_ms: float = 0.0,
                 recv_buffer: int | None = None) -> None:
        self.upstream = upstream
        self.latency_s = latency_ms / 1000.0
        self.recv_buffer = recv_buffer
        self.stats = LinkStats()
        self._bucket = _Bucket(mbps * 1e6 / 8 if mbps else None)
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="throttle-proxy")
        self.port = 0

    def start(self) -> ThrottleProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        return self

    def stall(self, seconds: float) -> None:
        """Hold every client-to-server byte for ``seconds`` from now."""
        self._bucket.stalled_until = time.monotonic() + seconds

    def close(self) -> None:
        async def _stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def __enter__(self) -> ThrottleProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):  # closed: end quietly
            await self._connection(c_reader, c_writer)

    async def _connection(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        sock = c_writer.get_extra_info("socket")
        if self.recv_buffer is not None and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.recv_buffer)
        # TCP's handshake: the server accepts when the SYN arrives (one way), the client may
        # send once the SYN-ACK is back (a round trip).
        await asyncio.sleep(self.latency_s)
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            c_writer.close()
            return
        up = asyncio.ensure_future(self._pipe(c_reader, s_writer, upload=True, after=self.latency_s))
        down = asyncio.ensure_future(self._pipe(s_reader, c_writer, upload=False))
        await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        if up.done() and not down.done():  # the client half-closed: its answer still comes back
            await asyncio.wait([down], timeout=30)
        for task in (up, down):
            task.cancel()
        for writer in (c_writer, s_writer):
            writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                    upload: bool, after: float = 0.0) -> None:
        """Forward one direction through the delay line (and, uploading, the bucket), starting
        ``after`` seconds from now."""
        await asyncio.sleep(after)
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await line.get()
                wait = due - time.monotonic()
                if wait > 0:  # a FIN travels as slowly as data: a closed connection is seen late
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
                if upload:
                    self.stats.delivered(len(data))
                else:
                    self.stats.down_bytes += len(data)

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(CHUNK)
                if data and upload:
                    await self._bucket.take(len(data))
                await line.put((time.monotonic() + self.latency_s, data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()


@contextlib.contextmanager
def throttled(upstream: tuple[str, int], **kw: float | int | None) -> Iterator[ThrottleProxy]:
    """``with throttled(("127.0.0.1", port), mbps=10, latency_ms=50) as link: ... link.url``"""
    proxy = ThrottleProxy(upstream, **kw)  # type: ignore[arg-type]
    with proxy:
        yield proxy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the server (loopback only)")
    parser.add_argument("--mbps", type=float, default=None, help="client-to-server cap, Mbit/s")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="one-way latency, ms")
    parser.add_argument("--recv-buffer", type=int, default=None, help="proxy receive buffer, bytes")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("--upstream must be on loopback")
    with ThrottleProxy((host, int(port)), mbps=args.mbps, latency_ms=args.latency_ms,
                       recv_buffer=args.recv_buffer) as proxy:
        print(f"throttling {args.upstream} at {proxy.url} (Ctrl-C to stop)", flush=True)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # terminate() ends it as Ctrl-C does
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(1)
        stats = proxy.stats
        print(json.dumps({"up_bytes": stats.up_bytes, "down_bytes": stats.down_bytes,
                          "connections": stats.connections, "busy_s": stats.busy()[0],
                          "busy_mbps": stats.busy_mbps()}), flush=True)


if __name__ == "__main__":
    main()
