"""The emulator's request policies: which keys may call, how fast each may call, and which
faults to inject; applied, in that order, by :class:`~seeknetic_prep.emulator.guard.Guard`.

Each is a runtime knob: thread-safe, because tests turn them from their own thread while the
server runs in another, and known to the rest of the emulator only through the owner id of a
key (:func:`~seeknetic_prep.emulator.config.owner_id`), never the key itself.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable

from seeknetic_prep.emulator.config import owner_id
from seeknetic_prep.errors import InvalidArgumentError

__all__ = ["INJECTABLE", "Faults", "Keyring", "RateLimiter"]

INJECTABLE = (500, 502, 504)


class Keyring:
    """The configured keys, known to the rest of the emulator only by :func:`owner_id`."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._owners = frozenset(owner_id(k) for k in keys)

    def authenticate(self, headers: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str]:
        """``(owner, "")`` for a good key, else ``(None, why)``; the key itself never appears."""
        presented: str | None = None
        for name, value in headers:
            lname = name.lower()
            if lname == b"x-api-key" and value.strip():
                presented = value.decode("latin-1").strip()
                break
            if lname == b"authorization" and presented is None:
                scheme, _, token = value.decode("latin-1").strip().partition(" ")
                if scheme.lower() == "bearer" and token.strip():
                    presented = token.strip()
        if presented is None:
            return None, "Missing API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'."
        owner = owner_id(presented)
        if owner not in self._owners:
            return None, "Invalid API key: it is not one this server accepts."
        return owner, ""


class RateLimiter:
    """A token bucket per key: ``qps`` tokens a second, bursts of up to ``max(1, qps)``."""

    def __init__(self, qps: float | None) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}
        self.qps = qps

    @property
    def qps(self) -> float | None:
        return self._qps

    @qps.setter
    def qps(self, value: float | None) -> None:
        if value is not None and not value > 0:
            raise InvalidArgumentError(f"Invalid qps {value}: must be > 0 (or None for no limit).")
        with self._lock:
            self._qps = value
            self._buckets.clear()

    def take(self, owner: str, now: float | None = None) -> float:
        """0.0 if the request may go ahead, else the seconds until a token is free."""
        with self._lock:
            qps = self._qps
            if qps is None:
                return 0.0
            now = time.monotonic() if now is None else now
            capacity = max(1.0, qps)
            tokens, last = self._buckets.get(owner, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * qps)
            if tokens >= 1.0:
                self._buckets[owner] = (tokens - 1.0, now)
                return 0.0
            self._buckets[owner] = (tokens, now)
            return (1.0 - tokens) / qps


class Faults:
    """Fault knobs, applied to every request except ``/_emulator/*`` and the OpenAPI document.

    * ``fail_rate`` (0..1): the share of requests answered with an injected 500, 502 or 504; the
      draws come from ``random.Random(seed)`` in arrival order, so a seed replays a run.
    * :meth:`fail_next` ``(n, status)``: the next ``n`` requests get ``status`` (429 carries
      ``Retry-After: 1``), before any ``fail_rate`` draw.
    * :meth:`drop_next` ``(n)``: the next ``n`` requests lose their connection without an answer.
    * ``latency`` (seconds): added before every request is handled.
    * ``storage_full``: while True, every write to the data directory fails as on a full disk
      (a file write raises ``ENOSPC`` after its first bytes, SQLite ``SQLITE_FULL``), so the
      emulator's real handling of a full disk answers (503 with ``Retry-After``).
    * ``injected``: a Counter of what was injected (status code or ``"drop"``), for assertions.
    """

    def __init__(self, *, fail_rate: float = 0.0, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._fail_rate = 0.0
        self.fail_rate = fail_rate
        self._latency = 0.0
        self._queue: deque[int | str] = deque()
        self.injected: Counter[int | str] = Counter()
        self.storage_full = False

    @property
    def fail_rate(self) -> float:
        return self._fail_rate

    @fail_rate.setter
    def fail_rate(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise InvalidArgumentError(f"Invalid fail_rate {value}: must be in [0, 1].")
        self._fail_rate = float(value)

    @property
    def latency(self) -> float:
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if not seconds >= 0:
            raise InvalidArgumentError(f"Invalid latency {seconds} s: must be >= 0.")
        self._latency = float(seconds)

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """Answer the next ``n`` requests with ``status`` (any 4xx or 5xx) instead of handling them."""
        if n < 0 or not 400 <= status <= 599:
            raise InvalidArgumentError(
                f"Invalid fail_next({n}, {status}): need n >= 0 and 400 <= status <= 599."
            )
        with self._lock:
            self._queue.extend([status] * n)

    def drop_next(self, n: int = 1) -> None:
        """Close the connection of the next ``n`` requests without answering them."""
        if n < 0:
            raise InvalidArgumentError(f"Invalid drop_next({n}): need n >= 0.")
        with self._lock:
            self._queue.extend(["drop"] * n)

    def reset(self) -> None:
        """Back to no faults (``injected`` keeps its counts)."""
        with self._lock:
            self._queue.clear()
            self._fail_rate = 0.0
            self._latency = 0.0
            self.storage_full = False

    def decide(self) -> int | str | None:
        """What to do with the request that just arrived: a status, ``"drop"``, or None."""
        with self._lock:
            choice: int | str | None = None
            if self._queue:
                choice = self._queue.popleft()
            elif self._fail_rate > 0 and self._rng.random() < self._fail_rate:
                choice = self._rng.choice(INJECTABLE)
            if choice is not None:
                self.injected[choice] += 1
            return choice
