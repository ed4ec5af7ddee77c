"""How many uploads are in flight (issue 20.2): the policy on a simulated link, the gate's slots.

The simulated link carries ``min(cap, uploads in flight * per_upload)`` bytes a second, as a
distant link does (each upload waits a round trip for its answer, so one alone cannot fill it).
The policy must find the knee (``cap / per_upload``), not run far past it, step back on a
stall, stay put when the decoders are the bottleneck, and keep to its ceiling.
"""

from __future__ import annotations

import threading

import pytest

from seeknetic_prep.api.link import LinkMeter
from seeknetic_prep.pipeline.upload_gate import Concurrency, UploadGate

BODY = 3_000_000


def simulate(policy: Concurrency, *, cap: float, per_upload: float, seconds: int,
             wanted_more: bool = True) -> list[tuple[int, float]]:
    """(limit, bytes/s) each simulated second."""
    now, done, sent, seen = 0.0, 0, 0, []
    policy.update(now, done, sent, wanted_more=wanted_more, stalled=False)
    for _ in range(seconds):
        rate = min(cap, policy.limit * per_upload)
        now += 1.0
        sent += int(rate)
        done = sent // BODY
        seen.append((policy.limit, rate))
        policy.update(now, done, done * BODY, wanted_more=wanted_more, stalled=False)
    return seen


@pytest.mark.parametrize(("cap", "per_upload"), [(25e6, 1e6), (6.25e6, 1.5e6), (125e6, 2e6)])
def test_it_finds_the_links_knee_and_keeps_the_link_full(cap: float, per_upload: float) -> None:
    policy = Concurrency(4, 200)
    seen = simulate(policy, cap=cap, per_upload=per_upload, seconds=120)
    knee = cap / per_upload
    limits = [limit for limit, _ in seen[-30:]]
    # at the knee or above it, and past it by no more than the first step and a probe
    assert min(limits) >= min(4, knee) and max(limits) <= max(4, 1.5 * 1.125 * knee + 2), limits
    full = sum(rate for _, rate in seen[-30:]) / (30 * cap)
    assert full >= 0.9, full


def test_it_does_not_grow_when_the_decoders_are_the_bottleneck() -> None:
    policy = Concurrency(4, 64)
    seen = simulate(policy, cap=125e6, per_upload=2e6, seconds=60, wanted_more=False)
    assert {limit for limit, _ in seen} == {4}


def test_it_keeps_to_its_ceiling_and_halves_on_a_stall_once_a_period() -> None:
    policy = Concurrency(4, 12)
    simulate(policy, cap=1e9, per_upload=1e6, seconds=60)
    assert policy.limit == 12
    policy.update(100.0, 10_000, 10_000 * BODY, wanted_more=True, stalled=True)
    assert policy.limit == 6
    policy.update(100.5, 10_000, 10_000 * BODY, wanted_more=True, stalled=True)
    assert policy.limit == 6  # the same stall, half a second later: not halved again
    policy.update(102.0, 10_000, 10_000 * BODY, wanted_more=True, stalled=True)
    assert policy.limit == 4  # never under the start
    policy.update(104.0, 10_000, 10_000 * BODY, wanted_more=True, stalled=True)
    assert policy.limit == 4


def test_the_gate_gives_at_most_limit_slots_and_more_when_the_link_takes_them() -> None:
    meter = LinkMeter()
    clock = [0.0]
    gate = UploadGate(Concurrency(2, 8, min_uploads=1), meter, clock=lambda: clock[0])
    assert gate.acquire(0.0) and gate.acquire(0.0)
    assert not gate.acquire(0.05)  # two in flight: the third waits
    gate.more_waiting()
    for second in range(1, 4):  # the link takes more with each step
        clock[0] = float(second)
        meter.uploaded(BODY * second * 2)
        gate.release()
        assert gate.acquire(0.0)
    assert gate.limit > 2
    got = threading.Event()

    def third() -> None:
        if gate.acquire(5.0):
            got.set()

    t = threading.Thread(target=third)
    t.start()
    t.join(timeout=10)
    assert got.is_set()  # a slot the larger limit made


def test_a_fixed_gate_never_moves() -> None:
    meter = LinkMeter()
    gate = UploadGate(Concurrency(3, 30), meter, adapt=False)
    for _ in range(3):
        assert gate.acquire(0.0)
    for _ in range(50):
        meter.uploaded(BODY)
        gate.more_waiting()
        gate.release()
        assert gate.acquire(0.0)
    assert gate.limit == 3 and not gate.acquire(0.01)
