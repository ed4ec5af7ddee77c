"""A read-only, seekable file over range requests, with a bounded read-ahead.

PyAV reads through ``read``/``seek``: each read here is served from a small LRU of blocks, and
a miss fetches one range request. Reads that follow on from where a fetch ended (the decoder
streaming forward; the frame pass and the audio pass each count) grow the next request,
doubling up to ``max_ahead`` blocks, and the next span of such a reader is fetched in a
background thread while the decoder works on this one (two requests in flight at most: the
frame pass and the audio pass read two places in turn); a seek starts
again at one block. So a window in the middle of a long file fetches about what the decoder
reads, a forward pass costs few requests and seldom waits for one, and memory is at most
``max_blocks`` blocks whatever the file's length. Counters (``bytes_fetched``, ``bytes_read``,
``requests``, ``waited_s``) are what the bench prints.

Growing from one block after every seek is a guess, and guesses cost requests: a decode task
knows better. Its container's index says where its packets lie, and :meth:`RangeReader.expect`
takes those byte ranges: inside one a miss fetches a third of the cache (4 MiB) at
once and prefetches the next expected block that is not here yet (past blocks an earlier
reader left), never past a span's end. The plan reads ten places of an object
for its fingerprint, all at once (:meth:`RangeReader.read_many`).

A decode worker opens the same object many times: to plan it, then once per task of a few
windows, each opening reading the container's header and index again (for an MP4 whose index
is at the end, megabytes), and each task's first keyframe lying in the blocks the task before
it read last. :class:`~seeknetic_prep.sources.blocks.SharedBlocks` keeps the blocks of the
process's recent readers (32 MiB), so the next reader of that object takes them without a
request. A task on another worker (or node) has none of them, and opening the container there
was four misses one after another (the header, the index, the first packets of each stream
FFmpeg looks at): the plan records what its own opening read (:meth:`RangeReader.recorded`)
and the task fetches all of it at once (:meth:`RangeReader.warm`) before it opens.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from seeknetic_prep.sources.blocks import SharedBlocks
from seeknetic_prep.sources.expected import ExpectedBlocks, InFlight
from seeknetic_prep.util.ranges import merged

__all__ = ["RangeReader"]

_STREAMS = 4
"""Forward readers whose read-ahead is tracked (each container of a decoder is one)."""
_PARALLEL = 10
"""Requests :meth:`RangeReader.read_many` keeps in flight: a fingerprint's ten ranges in one
round trip (eight made it two, 0.1 s a plan 50 ms from the store), as many as botocore's
connection pool holds by default."""
_IN_FLIGHT = 2
"""Prefetches in flight at once (:meth:`RangeReader._prefetch`)."""


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
        self._inflight = InFlight(_IN_FLIGHT)
        self._want = ExpectedBlocks(block, self._nblocks)  # what expect() was told, the index
        self._lock = threading.Lock()
        self._shared = shared
        self._reads: list[tuple[int, int]] | None = None
        self.bytes_fetched = 0
        self.bytes_read = 0
        self.requests = 0
        self.waited_s = 0.0
        """Seconds the reads spent waiting for requests (a prefetch's wait counted only while a
        read waits for it): what a store's latency costs the decoder."""
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
        if self._reads is not None:
            self._reads.append((self._pos, self._pos + len(out)))
        self._pos += len(out)
        self.bytes_read += len(out)
        return out

    @contextlib.contextmanager
    def recorded(self) -> Iterator[list[tuple[int, int]]]:
        """The byte ranges read within the block, merged at its end: what opening a container
        reads, seen once by a plan and handed to its tasks (:meth:`warm`)."""
        reads: list[tuple[int, int]] = []
        self._reads = reads
        try:
            yield reads
        finally:
            self._reads = None
            reads[:] = merged(reads)

    def expect(self, spans: Iterable[tuple[int, int]] | None) -> None:
        """The byte ranges ``[start, end)`` the reader's user is going to read, each forward
        (a decode task's packets, from the container's index:
        :func:`~seeknetic_prep.decode.spans.byte_spans`). A miss inside one fetches up to
        ``max_blocks // 3`` blocks of it at once and prefetches the next part of it, never past
        its end: few requests and no bytes nobody reads. A miss elsewhere grows as before, but
        nothing outside the spans is fetched ahead (an empty list: nothing at all, as while a
        container is opened to find them). ``None``: no idea, read ahead as a forward reader
        goes (the default)."""
        self._want.tell(spans)

    @property
    def index(self) -> tuple[int, int] | None:
        """Where the container's index lies (an MP4's ``moov``), ``[start, end)``: expected
        whatever :meth:`expect` is told, as every container opened on this reader reads it."""
        return self._want.index

    @index.setter
    def index(self, span: tuple[int, int] | None) -> None:
        self._want.set_index(span)

    def _next_missing(self, first: int, limit: int, coming: Collection[int] = ()) -> int:
        """The first block from ``first`` on that is neither here nor shared nor being fetched nor
        ``coming``, or ``limit``."""
        while first < limit and (self._has(first) or first in coming or self._inflight.covers(first)):
            first += 1
        return first

    def _next_expected(self, first: int, coming: Collection[int] = ()) -> tuple[int, int] | None:
        """The first block from ``first`` on that an expected span holds and that is neither
        here nor shared nor being fetched, with the end of its span; ``None`` if there is none
        within two thirds of the cache (what lies further would wait in the cache, or be
        evicted, before it is read).

        The next prefetch starts there rather than at ``first``: blocks an earlier reader left
        (the plan's, a task's opening) and the next window's span after a gap used to end the
        chain of prefetches, and the decoder then waited for a request of its own at each."""
        reach = first + self._max_blocks - self._max_blocks // 3
        found = self._want.first_wanted(
            first, reach, lambda k: not (self._has(k) or k in coming or self._inflight.covers(k)))
        if found is None:
            return None
        block, end = found
        return block, min([end, *(k for k in coming if k > block)])

    def _get(self, index: int, wanted: int) -> bytes:
        """Block ``index``, fetching it (and up to block ``wanted``, the read's last, plus the
        read-ahead) on a miss."""
        data = self._blocks.get(index)
        if data is not None:
            self._blocks.move_to_end(index)
            return data
        pending = self._inflight.take(index)
        first = index  # the first block fetched
        if pending is not None:  # prefetched meanwhile
            first, last, ahead, future = pending
            raw = self._waited(lambda: self._checked(first, last, future.result))
        elif self._shared is not None and (data := self._shared[0].get(self._shared[1], index)) is not None:
            self._keep(index, data)
            if index in self._streams:  # a forward reader goes on: its read-ahead with it
                self._streams[index + 1] = self._streams.pop(index)
            return data
        else:
            reach = min(wanted + 1, index + self._max_blocks // 3)  # a huge read still fits the cache
            span_end = self._want.end_of(index)
            if span_end is not None:  # an expected span: as much of it as a request may take
                ahead = self._max_blocks // 3
                last = max(min(span_end, index + ahead), reach)
            else:
                # A miss where an earlier fetch ended is a reader going on forward: fetch twice
                # as much. Several are tracked: the frame pass and the audio pass read two places
                # in turn.
                ahead = min(self._max_ahead, self._streams.pop(index) * 2) if index in self._streams else 1
                last = max(index + ahead, reach)
            last = self._unshared_end(index, min(last, self._nblocks))  # nor fetch one twice
            start, stop = index * self._block, min(self.size, last * self._block)
            self.requests += 1
            self.bytes_fetched += stop - start
            raw = self._waited(lambda: self._checked(index, last, lambda: self._fetch(start, stop)))
        self._store(first, raw)
        # A read past an expected span's end is not expected: it starts small again.
        self._streams[last] = 1 if self._want.end_of(index) is not None else ahead
        if self._want.told is not None:  # what comes next is known: prefetch only what is expected
            if (after := self._next_expected(last)) is not None:
                self._prefetch(after[0], self._max_blocks // 3, after[1])
        elif ahead > 1:  # a forward reader: its next span is fetched while it decodes this one
            near = min(self._nblocks, last + self._max_ahead)
            if (block := self._next_missing(last, near)) < near:
                self._prefetch(block, min(self._max_ahead, ahead * 2), self._nblocks)
        while len(self._streams) > _STREAMS:
            self._streams.popitem(last=False)
        return self._blocks[index]

    def _store(self, first: int, raw: bytes) -> None:
        """Blocks ``first`` on, fetched together as ``raw``: kept here and shared."""
        for k in range(first, first + -(-len(raw) // self._block)):
            self._keep(k, raw[(k - first) * self._block: (k - first + 1) * self._block])
            if self._shared is not None:
                self._shared[0].put(self._shared[1], k, self._blocks[k])

    def _keep(self, index: int, data: bytes) -> None:
        self._blocks[index] = data
        self._blocks.move_to_end(index)
        while len(self._blocks) > self._max_blocks:
            self._blocks.popitem(last=False)

    def read_many(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes of each ``(offset, length)``, requested all at once (up to
        :data:`_PARALLEL` in flight): a plan's fingerprint reads ten places of an object, and
        one after another they cost ten round trips. A range of a block or more is fetched as
        whole blocks and kept (the plan's probe reads the last MiB again: an MP4's index is
        there), a smaller one exactly and not kept; blocks already here cost no request. The
        position does not move. Raises the first failed request's ``OSError``."""
        big = [(offset, offset + length) for offset, length in ranges if length >= self._block]
        jobs = [(a, b, True) for a, b in self._missing(big)]  # start, stop, as blocks
        small = [(offset, min(self.size, offset + length), False) for offset, length in ranges
                 if 0 < length < self._block and offset < self.size]
        jobs += dict.fromkeys(small)  # exactly, and each once
        exact = self._fetch_all(jobs)
        out = []
        here = self._pos
        for offset, length in ranges:
            stop = min(self.size, offset + length)
            if (offset, stop) in exact:
                out.append(exact[(offset, stop)])
            else:
                self._pos = offset
                out.append(self.read(max(0, stop - offset)))
        self._pos = here
        return out

    def warm(self, spans: Iterable[tuple[int, int]]) -> None:
        """Fetch the blocks that the byte ranges ``[start, end)`` touch and that are not here
        yet, all at once (a request for each run of missing blocks), and keep them. A decode
        task opening a container reads its header, its index and the first packets FFmpeg looks
        at, each a miss after the last: four round trips one after another, where the plan
        already saw which bytes the opening reads (a decode task's ``opening``). More than half
        the cache is not warmed (it would evict itself before the opening is done).

        Meanwhile the starts of the first expected spans are prefetched (:meth:`expect`): what
        the decoder reads right after the opening (its frames' packets, and its audio's where
        they lie apart). Each was a request of its own once the container was open, one more
        round trip before a task's first frame. Raises the first failed request's ``OSError``."""
        jobs = [(a, b, True) for a, b in self._missing(spans)]
        if sum(b - a for a, b, _ in jobs) > self._max_blocks * self._block // 2:
            return
        coming = {k for a, b, _ in jobs for k in range(a // self._block, -(-b // self._block))}
        for start, end in self._want.spans if self._want.told else ():
            block = self._next_missing(start, end, coming)
            if block < end:
                self._prefetch(block, self._max_blocks // 3, min([end, *(k for k in coming if k > block)]))
        self._fetch_all(jobs)

    def _missing(self, spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
        """The byte ranges of the runs of blocks that ``spans`` touch and that are neither here
        nor shared: one request each, none asking for a block twice."""
        block = self._block
        touched = sorted({k for start, stop in spans
                          for k in range(max(0, start) // block, -(-min(self.size, stop) // block))})
        out: list[tuple[int, int]] = []
        for k in touched:
            if self._has(k):
                continue
            a, b = k * block, min(self.size, (k + 1) * block)
            if out and out[-1][1] == a:
                out[-1] = (out[-1][0], b)
            else:
                out.append((a, b))
        return out

    def _fetch_all(self, jobs: list[tuple[int, int, bool]]) -> dict[tuple[int, int], bytes]:
        """Each ``(start, stop, as_blocks)`` fetched at once; block-aligned ones kept and
        shared, the others returned by their range."""
        exact: dict[tuple[int, int], bytes] = {}
        if not jobs:
            return exact
        began = time.monotonic()
        with ThreadPoolExecutor(min(len(jobs), _PARALLEL), thread_name_prefix="range-many") as pool:
            futures = [pool.submit(self._checked_range, a, b, functools.partial(self._fetch, a, b))
                       for a, b, _ in jobs]
        self.waited_s += time.monotonic() - began
        self.requests += len(jobs)
        self.bytes_fetched += sum(b - a for a, b, _ in jobs)
        for (a, b, as_blocks), future in zip(jobs, futures, strict=True):
            raw = future.result()
            if not as_blocks:
                exact[(a, b)] = raw
                continue
            with self._lock:
                self._store(a // self._block, raw)
        return exact

    def _waited(self, fetch: Callable[[], bytes]) -> bytes:
        began = time.monotonic()
        try:
            return fetch()
        finally:
            self.waited_s += time.monotonic() - began

    def _unshared_end(self, first: int, last: int) -> int:
        """``last``, or the first block after ``first`` that an earlier reader fetched or a
        prefetch in flight is fetching: a request stops short of it."""
        last = self._inflight.stop_before(first, last)
        if self._shared is None:
            return last
        cache, key = self._shared
        return next((k for k in range(first + 1, last) if cache.has(key, k)), last)

    def _has(self, index: int) -> bool:
        shared = self._shared
        return index in self._blocks or (shared is not None and shared[0].has(shared[1], index))

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

    def _prefetch(self, first: int, ahead: int, limit: int) -> None:
        """Start fetching blocks ``first`` on (``ahead`` of them, never block ``limit`` or past
        it) in the background, at most ``max_blocks // 3`` blocks, so the cache still holds what
        is being read. Up to :data:`_IN_FLIGHT` such requests at once: a decoder reads two
        places in turn (its frame pass and its audio pass, which in a file whose audio lies
        apart from its video are megabytes apart), and with one in flight, the pass whose turn
        it was not waited for a request of its own at each of its misses."""
        if self._inflight.full() or first >= limit or self._has(first) or self._inflight.covers(first):
            return
        last = min(first + min(ahead, self._max_blocks // 3), limit, self._nblocks)
        last = self._unshared_end(first, last)
        start, stop = first * self._block, min(self.size, last * self._block)
        self.requests += 1
        self.bytes_fetched += stop - start
        self._inflight.start(first, last, ahead, functools.partial(self._fetch, start, stop))

    def close(self) -> None:
        """Release the file; a prefetch in flight is left to finish on its own and dropped."""
        self._inflight.close()
        self._blocks.clear()
        super().close()
