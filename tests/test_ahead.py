"""A busy decode worker is handed its next remote task and does that task's first round trips
while it runs this one (``seeknetic_prep.pipeline.ahead``), against a real HTTP server on
loopback that honours ``Range``; the tasks are real (a 25 s file decoded, objects planned)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _sources_helpers import Files, Route, forget_clients, http_files

from seeknetic_prep.decode.profile import Service
from seeknetic_prep.executors import Event, Planned, PlanTask, TaskDone, TaskFailed
from seeknetic_prep.executors.local import ProcessExecutor
from seeknetic_prep.pipeline.tasks import DecodeTask

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
LONG = str(FIXTURES / "late_audio_25s.mkv")  # three windows
EMBEDDING: Service = "embedding"
WINDOWS = ((0, 0, 10000), (1, 10000, 20000), (2, 20000, 25000))

pytest.importorskip("aiohttp")  # fsspec's https store: the sources extras


def _decode(path: str) -> DecodeTask:
    rids = tuple((i, EMBEDDING, f"sp-ahead-{i}") for i, _, _ in WINDOWS)
    return DecodeTask(path, "f" * 16, WINDOWS, rids, decode="cpu")


@pytest.fixture()
def served() -> Iterator[dict[str, tuple[str, Route]]]:
    """Two demo clips on a loopback HTTP server: name -> (URL, route); a route counts its
    requests and holds its GETs while its ``hold`` is set and not yet released."""
    routes = {name: Route((FIXTURES / "demo" / f"{name}.mp4").read_bytes()) for name in ("lake", "desert")}
    forget_clients()
    with http_files(Files({f"/{n}.mp4": r for n, r in routes.items()})) as base:
        yield {n: (f"{base}/{n}.mp4", r) for n, r in routes.items()}


def _held_decode(url: str, route: Route) -> DecodeTask:
    """A decode task of ``url`` that cannot end until the test releases its route's GETs."""
    from seeknetic_prep.pipeline.worker import plan_file

    plan = plan_file(url)
    route.hold = threading.Event()
    return DecodeTask(url, plan.fingerprint, plan.windows,
                      tuple((i, EMBEDDING, f"sp-ahead-{i}") for i, _, _ in plan.windows), decode="cpu",
                      info=plan.info)


@contextlib.contextmanager
def _one_worker() -> Iterator[ProcessExecutor]:
    ex = ProcessExecutor(1)
    try:
        yield ex
    finally:
        ex.close()


def _drain(ex: ProcessExecutor, until: object = None, timeout_s: float = 240) -> list[Event]:
    """Events until ``until`` (a task) has ended, or until nothing is in flight."""
    out: list[Event] = []
    deadline = time.monotonic() + timeout_s
    while ex.in_flight:
        assert time.monotonic() < deadline, f"still {ex.in_flight} in flight after {timeout_s} s"
        out.extend(ex.events(0.2))
        if any(isinstance(e, TaskDone | TaskFailed | Planned) and e.task == until for e in out):
            return out
    return out


def test_a_busy_worker_plans_its_next_remote_object_while_it_decodes(
        served: dict[str, tuple[str, Route]]) -> None:
    from seeknetic_prep.pipeline.worker import plan_file

    (url_a, route_a), (url_b, route_b) = served["lake"], served["desert"]
    expected = plan_file(url_b)  # the same plan, made here first
    decode = _held_decode(url_a, route_a)
    route_b.gets = route_b.heads = 0
    plan = PlanTask(url_b)
    with _one_worker() as ex:
        ex.submit(decode)
        ex.submit(plan)
        (worker,) = ex._workers
        assert (worker.task, worker.next) == (decode, plan)  # handed over at once, not queued here
        # The decode cannot end (its GETs are held), yet the plan's requests arrive: the
        # worker opened its next task ahead. One task at a time, they came after it.
        deadline = time.monotonic() + 60
        while route_b.gets < 1:
            assert time.monotonic() < deadline, "the next task was not opened while this one ran"
            ex.events(0.2)
        assert worker.task == decode and route_a.gets >= 1
        assert route_a.hold is not None
        route_a.hold.set()
        events = _drain(ex)
    assert [e.task for e in events if isinstance(e, TaskDone)] == [decode]
    (planned,) = [e for e in events if isinstance(e, Planned)]
    assert planned.task == plan and planned.plan == expected


def test_a_local_task_waits_in_the_pool_for_a_free_worker() -> None:
    """A disk has no round trips to hide: handing a worker its next local task early would only
    tie it to that worker when another may be free first."""
    first, second = _decode(LONG), _decode(LONG)
    with _one_worker() as ex:
        ex.submit(first)
        ex.submit(second)
        (worker,) = ex._workers
        assert (worker.task, worker.next) == (first, None) and list(ex._queue) == [second]
        events = _drain(ex)
    assert [e.task for e in events if isinstance(e, TaskDone)] == [first, second]


def test_a_worker_that_dies_blames_its_running_task_not_its_next(
        served: dict[str, tuple[str, Route]]) -> None:
    """The next task never started: it goes back to the pool uncounted, however often the
    worker holding it dies, and is planned in the end; the running one is retried once, then
    reported as crashed."""
    (url_a, route_a), (url_b, _) = served["lake"], served["desert"]
    decode, plan = _held_decode(url_a, route_a), PlanTask(url_b)
    events: list[Event] = []
    with _one_worker() as ex:
        ex.submit(decode)
        ex.submit(plan)
        (worker,) = ex._workers
        for _ in range(2):  # the decode's first run and its retry, each waiting on its GETs
            assert (worker.task, worker.next) == (decode, plan)
            pid = worker.process.pid
            worker.process.kill()
            worker.process.join(10)
            deadline = time.monotonic() + 60
            while worker.process.pid == pid:  # until the pool has seen it and started a fresh one
                assert time.monotonic() < deadline
                events.extend(ex.events(0.2))
        events.extend(_drain(ex))
    assert route_a.hold is not None
    route_a.hold.set()
    (failed,) = [e for e in events if e.task == decode]
    assert isinstance(failed, TaskFailed) and failed.crashed
    (planned,) = [e for e in events if e.task == plan]
    assert isinstance(planned, Planned) and planned.plan.path == url_b
