"""How hard and how fast the client calls: retry backoff, a fixed rate, a rate found from 429s.

Kept apart from :mod:`seeknetic_prep.api.retry` (which uses them) because they are pure policy:
no HTTP, testable with a clock, and shared by every thread of a run. Each rate hands out the wait
for the caller's slot (``reserve()``) rather than sleeping, so the retry engine waits in one
place it can cancel, and the Ray engine's cluster-wide pacer is the same bucket in an actor.
:func:`put_unless` is the other half of a run's pace: how a stage waits on the bounded queue of
the next one until the run stops (the upload stage, a decode worker's outbox, the in-process
engine). :func:`stage_threads` is how a stage's
threads are started so that one that dies stops the run instead of stalling it.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from seeknetic_prep.errors import InvalidArgumentError, StopReason

__all__ = ["AdaptiveRate", "ByteBucket", "ByteRate", "RateLimit", "RetryPolicy", "TokenBucket",
           "mbps_to_bytes", "put_unless", "stage_threads"]

log = logging.getLogger(__name__)


class RateLimit(Protocol):
    """Anything that paces calls: :class:`TokenBucket`, or a share of a cluster-wide budget."""

    def reserve(self) -> float:
        """Take the next slot; return the seconds until it (0: go now)."""
        ...


class ByteRate(Protocol):
    """Anything that paces bytes: :class:`ByteBucket`, or a share of a cluster-wide cap."""

    def reserve(self, count: int) -> float:
        """Take ``count`` bytes of the budget; return the seconds to wait before sending them."""
        ...


def mbps_to_bytes(mbps: float) -> float:
    """Megabits per second (as links are sold) to bytes per second."""
    return mbps * 1e6 / 8


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: ``max_attempts`` calls in all, delays ``base * 2**n`` with full jitter,
    each capped at ``max_delay_s`` (a server's ``Retry-After`` is honoured up to the same cap)."""

    max_attempts: int = 8
    base_delay_s: float = 0.25
    max_delay_s: float = 20.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidArgumentError(f"Invalid max_attempts {self.max_attempts}: must be >= 1.")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise InvalidArgumentError("Invalid retry delays: must be >= 0.")

    def delay_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to sleep before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.max_delay_s)
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return random.uniform(0.0, ceiling)


class TokenBucket:
    """At most ``rate`` acquisitions per second across every thread that shares it.

    Capacity is one token: requests are paced evenly rather than sent in bursts, so a server
    bucket of any capacity at the same rate never answers 429.
    """

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise InvalidArgumentError(f"Invalid qps {rate}: must be > 0.")
        self.rate = rate
        self._clock = clock
        self._lock = threading.Lock()
        self._next = clock()

    def reserve(self) -> float:
        """Take the next slot, ``1/rate`` after the last one; return the seconds until it."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + 1.0 / self.rate
        return slot - now

    def acquire(self) -> None:
        """Wait for the next slot."""
        delay = self.reserve()
        if delay > 0:
            time.sleep(delay)


class ByteBucket:
    """At most ``rate`` bytes per second over every thread that shares it: ``--max-upload-mbps``.

    The generic cell rate algorithm (what ATM switches police links with): a theoretical
    arrival time moves ``count / rate`` on per reservation, and a sender may be ahead of it by
    ``burst_bytes`` at most. Over any interval, the bytes let through are at most
    ``rate * interval + burst_bytes``, however many threads share it and however big their
    blocks; a small burst (default 256 KiB, about a block per uploader) keeps the link smooth,
    so the user's other traffic never meets a multi-megabyte surge. Waits are handed out, not
    slept, so the same bucket serves a transport thread and a cluster's actor.
    """

    def __init__(self, rate: float, *, burst_bytes: int = 256 * 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < rate < float("inf"):
            raise InvalidArgumentError(f"Invalid upload cap {rate!r} bytes/s: must be a number > 0.")
        self.rate = rate
        self._tolerance = burst_bytes / rate
        self._clock = clock
        self._lock = threading.Lock()
        self._tat = clock()
        self.reserved = 0
        """Bytes handed out so far (what the cap has let through, or is about to)."""

    def reserve(self, count: int) -> float:
        with self._lock:
            now = self._clock()
            self._tat = max(self._tat, now) + count / self.rate
            self.reserved += count
            return max(0.0, self._tat - self._tolerance - now)


class AdaptiveRate:
    """A client-side rate that finds the key's limit from 429s (AIMD, as TCP finds a link's).

    Unlimited until the first 429; then the rate starts at the pace of the last second's
    requests and is cut by ``decrease`` on each further 429 (at most once per ``1/rate``), and
    grows by ``increase`` requests/s for every second without one. Shared by every thread.
    """

    def __init__(self, *, decrease: float = 0.7, increase: float = 0.5, floor: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate: float | None = None
        self._decrease, self._increase, self._floor = decrease, increase, floor
        self._clock = clock
        self._lock = threading.Lock()
        self._next = 0.0
        self._sent: list[float] = []
        self._last_cut = 0.0
        self._last_grow = 0.0

    def reserve(self) -> float:
        """Count a call and take its slot; return the seconds until it (0 before any 429)."""
        with self._lock:
            now = self._clock()
            self._sent = [t for t in self._sent if now - t < 1.0]
            self._sent.append(now)
            if self.rate is None:
                return 0.0
            if now - self._last_grow >= 1.0:
                self.rate += self._increase * min(10.0, now - self._last_grow)
                self._last_grow = now
            slot = max(now, self._next)
            self._next = slot + 1.0 / self.rate
        return slot - now

    def acquire(self, cancelled: threading.Event) -> None:
        """Wait for the next slot, or until ``cancelled`` is set."""
        delay = self.reserve()
        if delay > 0:
            cancelled.wait(delay)

    def limited(self) -> None:
        """A 429 came back."""
        with self._lock:
            now = self._clock()
            if self.rate is None:
                self.rate = max(self._floor, 0.8 * len(self._sent))
            elif now - self._last_cut >= 1.0 / self.rate:
                self.rate = max(self._floor, self.rate * self._decrease)
            else:
                return
            self._last_cut = self._last_grow = now


def put_unless(box: queue.Queue[Any], item: Any, halt: threading.Event, every_s: float) -> bool:
    """Put ``item`` into the bounded ``box``, waiting while it is full (backpressure); False,
    and not put, once ``halt`` is set, which is looked at every ``every_s`` while waiting."""
    while not halt.is_set():
        try:
            box.put(item, timeout=every_s)
            return True
        except queue.Full:
            continue
    return False


def stage_threads(name: str, count: int, loop: Callable[[], None],
                  halt: Callable[[StopReason, str], None]) -> list[threading.Thread]:
    """Start ``count`` daemon threads ``name-0`` ... running ``loop``; return them.

    A stage's work is counted as busy until its threads take it, so a thread that died by an
    exception (a bug, a broken callback) used to leave the run waiting forever on work nobody
    would do. Here such a death calls ``halt(StopReason.CRASHED, message)``: the run stops (exit 1,
    state kept, the work left is done by the next run) with one line naming the thread and the
    error; the traceback goes to the debug log only.
    """

    def guarded() -> None:
        try:
            loop()
        except BaseException as exc:  # whatever it was, the run must not stall
            log.debug("%s died", threading.current_thread().name, exc_info=True)
            what = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]  # one line
            halt(StopReason.CRASHED, f"the {threading.current_thread().name} thread stopped on an "
                 f"unexpected error ({what})")

    threads = [threading.Thread(target=guarded, daemon=True, name=f"{name}-{i}") for i in range(count)]
    for t in threads:
        t.start()
    return threads
