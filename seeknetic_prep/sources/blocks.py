"""Blocks of objects read through range requests, kept for the next reader of the same object
in this process (see :mod:`seeknetic_prep.sources.reader`): a decode worker opens an object to
plan it, then once per task, and each opening reads the container's header and index again."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["SHARED_BLOCKS", "SharedBlocks"]


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

    def clear(self) -> None:
        """Forget every block (what a process that never read these objects has)."""
        with self._lock:
            self._blocks.clear()
            self._bytes = 0

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
