"""What a range reader (:mod:`.reader`) expects to read and what it is fetching ahead.

:class:`ExpectedBlocks`: what the reader's user said it will read, in blocks (a decode task's
packets, from the plan's layout) and where the container's index lies, which every opening of
the container reads; the reader fetches inside these in large requests that stop at their ends.
:class:`InFlight`: its prefetches, fetched in the background while the decoder works on what
it has."""

from __future__ import annotations

import bisect
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["ExpectedBlocks", "InFlight"]


class ExpectedBlocks:
    """The expected byte ranges of an object of ``nblocks`` blocks of ``block`` bytes, as
    sorted spans of blocks ``[first, end)``."""

    def __init__(self, block: int, nblocks: int) -> None:
        self._block = block
        self._nblocks = nblocks
        self.told: list[tuple[int, int]] | None = None
        """The byte ranges the user said it reads; ``None``: it said nothing (read ahead as a
        forward reader goes), ``[]``: nothing but the index."""
        self.index: tuple[int, int] | None = None
        self.spans: list[tuple[int, int]] = []
        """Both, in blocks."""

    def tell(self, told: Iterable[tuple[int, int]] | None) -> None:
        self.told = None if told is None else list(told)
        self._respan()

    def set_index(self, span: tuple[int, int] | None) -> None:
        self.index = span
        self._respan()

    def _respan(self) -> None:
        spans = [*(self.told or ()), *([self.index] if self.index else [])]
        self.spans = sorted((a // self._block, -(-b // self._block)) for a, b in spans if b > a)

    def end_of(self, index: int) -> int | None:
        """The block after the end of the span holding block ``index``, if one does."""
        k = bisect.bisect_right(self.spans, (index, sys.maxsize)) - 1
        if k >= 0 and self.spans[k][0] <= index < self.spans[k][1]:
            return min(self.spans[k][1], self._nblocks)
        return None

    def first_wanted(self, first: int, reach: int, missing: Callable[[int], bool]) -> tuple[int, int] | None:
        """The first block from ``first`` on and before ``reach`` that a span holds and that
        ``missing`` says is not at hand, with the end of its span; ``None`` if there is none."""
        for start, end in self.spans:
            end = min(end, self._nblocks)
            if end <= first:
                continue
            if start >= reach:
                return None
            block, stop = max(start, first), min(end, reach)
            while block < stop and not missing(block):
                block += 1
            if block < stop:
                return block, end
        return None


class InFlight:
    """A reader's prefetches in flight: at most ``limit`` requests, each for blocks
    ``[first, last)`` and fetched by a thread of its own (``range-prefetch``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._pending: list[tuple[int, int, int, Future[bytes]]] = []  # first, last, ahead, data
        self._pool: ThreadPoolExecutor | None = None

    def full(self) -> bool:
        return len(self._pending) >= self.limit

    def covers(self, index: int) -> bool:
        return any(first <= index < last for first, last, _, _ in self._pending)

    def take(self, index: int) -> tuple[int, int, int, Future[bytes]] | None:
        """The prefetch fetching block ``index``, no longer in flight here; ``None`` if none is."""
        found = next((p for p in self._pending if p[0] <= index < p[1]), None)
        if found is not None:
            self._pending.remove(found)
        return found

    def stop_before(self, first: int, last: int) -> int:
        """``last``, or the first block after ``first`` where a prefetch in flight starts."""
        return min([last, *(p[0] for p in self._pending if first < p[0] < last)])

    def start(self, first: int, last: int, ahead: int, fetch: Callable[[], bytes]) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.limit, thread_name_prefix="range-prefetch")
        self._pending.append((first, last, ahead, self._pool.submit(fetch)))

    def close(self) -> None:
        """Drop what is in flight (each request finishes on its own, unread)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._pending.clear()
