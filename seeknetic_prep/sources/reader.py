"""A read-only, seekable file over range requests, with a bounded read-ahead.

PyAV reads through ``read``/``seek``: each read here is served from a small LRU of blocks, and
a miss fetches one range request. Reads that follow on from where a fetch ended (the decoder
streaming forward; the frame pass and the audio pass each count) grow the next request,
doubling up to ``max_ahead`` blocks, and the next span of such a reader is fetched in a
background thread while the decoder works on this one (one request in flight); a seek starts
again at one block. So a window in the middle of a long file fetches about what the decoder
reads, a forward pass costs few requests and seldom waits for one, and memory is at most
``max_blocks`` blocks whatever the file's length. Counters (``bytes_fetched``, ``bytes_read``,
``requests``) are what the bench prints.

A decode worker opens the same object many times: to plan it, then once per task of a few
windows, each opening reading the container's header and index again (for an MP4 whose index
is at the end, megabytes), and each task's first keyframe lying in the blocks the task before
it read last. :class:`SharedBlocks` keeps the blocks of the process's recent readers (32 MiB),
so the next reader of that object takes them without a request.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["SHARED_BLOCKS", "RangeReader", "SharedBlocks"]

_STREAMS = 4
"""Forward readers whose read-ahead is tracked (each container of a decoder is one)."""


class SharedBlocks:
    """Blocks of recently read objects, for the next reader of the same object in this
    process: an LRU of at most ``max_bytes``, keyed by the object (URL and size) and block."""

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self.max_bytes = max_bytes
        self._blocks: OrderedDict[tuple[Hashable, int], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, key: Hashable, index: int) -> bytes | None:
        with self._lock:
            data = self._blocks.get((key, index))
            if data is not None:
                self._blocks.move_to_end((key, index))
                self.hits += 1
            return data

    def has(self, key: Hashable, index: int) -> bool:
        with self._lock:
            return (key, index) in self._blocks

    def put(self, key: Hashable, index: int, data: bytes) -> None:
        with self._lock:
            old = self._blocks.pop((key, index), None)
            self._bytes += len(data) - (len(old) if old is not None else 0)
            self._blocks[(key, index)] = data
            while self._bytes > self.max_bytes and self._blocks:
                _, dropped = self._blocks.popitem(last=False)
                self._bytes -= len(dropped)


SHARED_BLOCKS = SharedBlocks()
"""This process's blocks, shared by the readers a decode worker opens one after another."""


class RangeReader(io.RawIOBase):
    """``size`` bytes read by ``fetch(start, end)`` (end exclusive), as a binary file.

    Args:
        name: how messages name it (a redacted URL).
        size: the object's size in bytes.
        fetch: one range request; may raise ``OSError`` (kept in ``error`` as well, because
            FFmpeg turns a failed read into a decode error of its own).
        block: bytes per block (the unit of caching and of a request's size).
        max_ahead: the most blocks one forward request fetches.
        max_blocks: blocks kept (the memory bound: ``max_blocks * block`` bytes).
        shared: blocks of earlier readers of the same object, and this object's key there:
            a block found there costs no request, and what this reader fetches goes there.
    """

    def __init__(self, name: str, size: int, fetch: Callable[[int, int], bytes], *,
                 block: int = 256 << 10, max_ahead: int = 8, max_blocks: int = 48,
                 shared: tuple[SharedBlocks, Hashable] | None = None) -> None:
        super().__init__()
        self.name = name
        self.size = size
        self._fetch = fetch
        self._block = block
        self._max_ahead = max(1, max_ahead)
        self._max_blocks = max(self._max_ahead, max_blocks)
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._pos = 0
        self._streams: OrderedDict[int, int] = OrderedDict()  # next block -> its read-ahead
        self._nblocks = -(-size // block)
        self._pending: tuple[int, int, int, Future[bytes]] | None = None  # first, last, ahead, data
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._shared = shared
        self.bytes_fetched = 0
        self.bytes_read = 0
        self.requests = 0
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        memoryview(buffer)[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self._pos + size)
        if self._pos >= end:
            return b""
        with self._lock:
            parts = []
            pos = self._pos
            while pos < end:
                index = pos // self._block
                data = self._get(index, (end - 1) // self._block)
                start = pos - index * self._block
                piece = data[start: start + (end - pos)]
                if not piece:
                    break
                parts.append(piece)
                pos += len(piece)
            out = b"".join(parts)
        self._pos += len(out)
        self.bytes_read += len(out)
        return out

    def _get(self, index: int, wanted: int) -> bytes:
        """Block ``index``, fetching it (and up to block ``wanted``, the read's last, plus the
        read-ahead) on a miss."""
        data = self._blocks.get(index)
        if data is not None:
            self._blocks.move_to_end(index)
            return data
        pending = self._pending
        if pending is not None and pending[0] == index:  # prefetched while the decoder worked
            self._pending = None
            _, last, ahead, future = pending
            raw = self._checked(index, last, future.result)
        elif self._shared is not None and (data := self._shared[0].get(self._shared[1], index)) is not None:
            self._keep(index, data)
            if index in self._streams:  # a forward reader goes on: its read-ahead with it
                self._streams[index + 1] = self._streams.pop(index)
            return data
        else:
            # A miss where an earlier fetch ended is a reader going on forward: fetch twice as
            # much. Several are tracked: the frame pass and the audio pass read two places in turn.
            ahead = min(self._max_ahead, self._streams.pop(index) * 2) if index in self._streams else 1
            reach = min(wanted + 1, index + self._max_blocks // 3)  # a huge read still fits the cache
            last = min(max(index + ahead, reach), self._nblocks)
            if self._shared is not None:  # stop short of a block an earlier reader fetched
                cache, key = self._shared
                last = next((k for k in range(index + 1, last) if cache.has(key, k)), last)
            start, stop = index * self._block, min(self.size, last * self._block)
            self.requests += 1
            self.bytes_fetched += stop - start
            raw = self._checked(index, last, lambda: self._fetch(start, stop))
        for k in range(index, last):
            self._keep(k, raw[(k - index) * self._block: (k - index + 1) * self._block])
            if self._shared is not None:
                self._shared[0].put(self._shared[1], k, self._blocks[k])
        self._streams[last] = ahead
        while len(self._streams) > _STREAMS:
            self._streams.popitem(last=False)
        if ahead > 1:  # a forward reader: its next span is fetched while it decodes this one
            self._prefetch(last, min(self._max_ahead, ahead * 2))
        return self._blocks[index]

    def _keep(self, index: int, data: bytes) -> None:
        self._blocks[index] = data
        self._blocks.move_to_end(index)
        while len(self._blocks) > self._max_blocks:
            self._blocks.popitem(last=False)

    def pread(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` in one request of exactly that range, not cached (the
        fingerprint's small samples: a block each would fetch several times what it reads)."""
        stop = min(self.size, offset + length)
        if offset >= stop:
            return b""
        self.requests += 1
        self.bytes_fetched += stop - offset
        return self._checked_range(offset, stop, lambda: self._fetch(offset, stop))

    def _checked(self, index: int, last: int, fetch: Callable[[], bytes]) -> bytes:
        return self._checked_range(index * self._block, min(self.size, last * self._block), fetch)

    def _checked_range(self, start: int, stop: int, fetch: Callable[[], bytes]) -> bytes:
        try:
            raw = fetch()
        except OSError as exc:
            self.error = exc
            raise
        if len(raw) != stop - start:
            short = OSError(f"short read: asked bytes {start}-{stop - 1}, got {len(raw)} bytes")
            self.error = short
            raise short
        return raw

    def _prefetch(self, first: int, ahead: int) -> None:
        """Start fetching blocks ``first`` on in the background (one request in flight at most;
        at most ``max_blocks // 3`` blocks, so the cache still holds what is being read)."""
        if self._pending is not None or first >= self._nblocks or first in self._blocks:
            return
        if self._shared is not None and self._shared[0].has(self._shared[1], first):
            return  # an earlier reader has it: no request for it
        last = min(first + min(ahead, self._max_blocks // 3), self._nblocks)
        start, stop = first * self._block, min(self.size, last * self._block)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="range-prefetch")
        self.requests += 1
        self.bytes_fetched += stop - start
        self._pending = (first, last, ahead, self._pool.submit(self._fetch, start, stop))

    def close(self) -> None:
        """Release the file; a prefetch in flight is left to finish on its own and dropped."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._pending = None
        self._blocks.clear()
        super().close()
