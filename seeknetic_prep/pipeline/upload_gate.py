"""How many uploads are in flight: found from the link's measured throughput (issue 20.2).

A run's upload threads each send a body, wait for its answer, and go on; on a distant link the
answer takes a round trip and the link idles meanwhile. Four uploads filled 50 Mbit/s at 150 ms
one-way but 44.5% of 200 Mbit/s (31% at 300 ms): the concurrency a link needs is about its
bandwidth-delay product in bodies, which no fixed default gets right from a home uplink to a
data centre's. So the number of uploads in flight is found as TCP finds a window, by probing:

* **grow while it grows**: every period (``period_s`` and ``min_uploads`` answered, so a rate
  can be measured), if work waited for a slot (the decoders are ahead of the link), allow half
  as many again (at least one more); the next period judges the step: if the bytes uploaded
  per second (answered uploads only) rose by more than ``gain``, the next step follows;
* **step back when growing stops helping**: a step that brought less than ``gain`` is undone
  and growth pauses for ``rest_periods``, then is probed again by an eighth (the knee is
  near; links change);
* **halve on a stall**: bodies on the link and nothing moving for
  :data:`~seeknetic_prep.api.link.STALL_S` (:mod:`seeknetic_prep.api.link`; waiting for
  answers is no stall): fewer, not more, connections on a link that has stopped;
* **a ceiling from memory**: each upload in flight holds its body (about 3 MB), so the ceiling
  is the ``--upload-memory-mb`` budget over the body size, and the floor the starting value.

:class:`Concurrency` is the pure policy (a clock and byte counts in, a limit out), tested on a
simulated link; :class:`UploadGate` applies it to the upload threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from seeknetic_prep.api.link import LinkMeter, stalled

__all__ = ["Concurrency", "UploadGate"]

log = logging.getLogger(__name__)


@dataclass
class Concurrency:
    """The limit on uploads in flight, and the rule that moves it."""

    start: int
    maximum: int
    period_s: float = 1.0
    min_uploads: int = 16
    gain: float = 0.1
    rest_periods: int = 5
    limit: int = 0
    last_t: float | None = None
    _last_sent: int = 0
    _last_done: int = 0
    _step: tuple[float, int] | None = None  # the rate and the limit before a step not yet judged
    _resting: int = 0
    _last_stall: float = float("-inf")
    _careful: bool = False  # a step has failed once: the knee is near, probe by an eighth

    def __post_init__(self) -> None:
        self.maximum = max(self.start, self.maximum)
        self.limit = self.start

    def update(self, now: float, done: int, sent: int, *, wanted_more: bool, stalled: bool) -> int:
        """Look at the link (``done``, ``sent``: uploads answered so far and their bytes;
        ``wanted_more``: work waited for a slot since the last look; ``stalled``); return the
        limit from now on. Only answered uploads count: bytes handed to a socket may sit in its
        buffer (megabytes each), and more connections would look faster by filling more buffers."""
        if stalled:
            if now - self._last_stall < self.period_s:  # one halving per period of stall
                return self.limit
            self._last_stall = now
            self.limit = max(self.start, self.limit // 2)
            self._step = None
            self._resting = self.rest_periods
            self.last_t, self._last_sent, self._last_done = now, sent, done
            return self.limit
        if self.last_t is None:
            self.last_t, self._last_sent, self._last_done = now, sent, done
            return self.limit
        if now - self.last_t < self.period_s or done - self._last_done < self.min_uploads:
            return self.limit  # a period holds enough answers to measure a rate by
        rate = (sent - self._last_sent) / (now - self.last_t)
        self.last_t, self._last_sent, self._last_done = now, sent, done
        if self._step is not None:
            (rate_before, limit_before), self._step = self._step, None
            if rate < rate_before * (1 + self.gain):  # no pay: undo it, rest, then probe in small steps
                self.limit = limit_before
                self._resting = self.rest_periods
                self._careful = True
                return self.limit
        if self._resting > 0:
            self._resting -= 1
            return self.limit
        if wanted_more and self.limit < self.maximum:  # a step that paid is followed by the next
            self._step = (rate, self.limit)
            step = self.limit // 8 if self._careful else self.limit // 2
            self.limit = min(self.maximum, self.limit + max(1, step))
        return self.limit


class UploadGate:
    """Slots for uploads in flight, as many as :class:`Concurrency` allows at the moment.

    A thread takes a slot, then an item, and gives the slot back once the item's body is sent
    (its submission waits for an answer without holding a slot). ``more_waiting()`` is said when
    work was left queued after an item was taken: the link, not the decoders, is behind.
    ``link`` is the client's :class:`~seeknetic_prep.api.link.LinkMeter` (uploads answered,
    a stall); with ``adapt`` False, or no meter, the limit stays at ``start`` (``--uploaders``
    given: the user's number is kept).
    """

    def __init__(self, policy: Concurrency, link: LinkMeter | None, *, adapt: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._link = link if adapt else None
        self._clock = clock
        self._cond = threading.Condition()
        self._in_use = 0
        self._wanted_more = False

    @property
    def limit(self) -> int:
        return self.policy.limit

    def acquire(self, timeout: float) -> bool:
        """Take a slot, waiting up to ``timeout``; False if none came free."""
        with self._cond:
            self._adjust()
            if not self._cond.wait_for(lambda: self._in_use < self.policy.limit, timeout):
                return False
            self._in_use += 1
            return True

    def release(self) -> None:
        with self._cond:
            self._in_use -= 1
            self._adjust()
            self._cond.notify_all()

    def more_waiting(self) -> None:
        with self._cond:
            self._wanted_more = True

    def _adjust(self) -> None:
        if self._link is None:
            return
        _, sending, idle_s = self._link.snapshot()
        uploads, upload_bytes = self._link.answered()
        before, looked = self.policy.limit, self.policy.last_t
        self.policy.update(self._clock(), uploads, upload_bytes, wanted_more=self._wanted_more,
                           stalled=stalled(sending, idle_s))
        if self.policy.last_t != looked:  # a period was judged: demand is counted afresh
            self._wanted_more = False
        if self.policy.limit != before:
            log.debug("uploads in flight: %d -> %d after %d uploads", before, self.policy.limit, uploads)
        if self.policy.limit > before:
            self._cond.notify_all()
