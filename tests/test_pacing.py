"""The client's pacing policies, with the real clock."""

from __future__ import annotations

import threading
import time

from seeknetic_prep.api.pacing import AdaptiveRate


def test_adaptive_rate_is_free_until_a_429_then_paces_cuts_and_recovers() -> None:
    rate = AdaptiveRate(decrease=0.5, increase=2.0)
    never = threading.Event()
    started = time.monotonic()
    for _ in range(20):
        rate.acquire(never)
    assert rate.rate is None and time.monotonic() - started < 0.1  # no limit before any 429
    rate.limited()
    first = rate.rate
    assert first is not None and 10 <= first <= 20  # 0.8 x the last second's 20 requests
    time.sleep(1.0 / first)
    rate.limited()
    assert rate.rate is not None and abs(rate.rate - first * 0.5) < 1e-9
    paced = rate.rate
    started = time.monotonic()
    for _ in range(5):
        rate.acquire(never)
    assert time.monotonic() - started >= 3.5 / paced  # evenly spaced at the cut rate
    time.sleep(1.1)
    rate.acquire(never)
    assert rate.rate > paced  # a second without a 429: it creeps back up
