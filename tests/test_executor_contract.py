"""The contract every engine keeps, run on each: the in-process thread (``--workers 0``), the
process pool, a Ray started for the test, and a small engine that exists only here and is
registered through the ``seeknetic_prep.executors`` entry-point group, as an installed package
would register one.

What the driver relies on: every submitted task ends in exactly one terminal event (a decode
task's windows all come before it); an engine holds no more than a few decoded windows for a
caller that stops pulling; a worker that dies fails its task instead of hanging the run; and
``close()`` leaves no process behind. Everything decodes real fixtures.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from _contract_tasks import CrashTask

from seeknetic_prep.errors import MediaError
from seeknetic_prep.executors import (
    Event,
    Executor,
    Planned,
    PlanTask,
    TaskDone,
    TaskFailed,
    WindowReady,
    executor_names,
    make_executor,
)
from seeknetic_prep.pipeline.spec import RunSpec
from seeknetic_prep.pipeline.tasks import DecodeTask

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
GOOD = str(FIXTURES / "late_audio_25s.mkv")  # 25 s: three 10 s windows
ENGINES = ["inline", "process", "threads", pytest.param("ray", marks=pytest.mark.slow)]


@pytest.fixture
def registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Declare the test's engine the way a package does: an entry point in a dist-info folder
    on ``sys.path``."""
    info = tmp_path / "contract_engine-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: contract-engine\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[seeknetic_prep.executors]\nthreads = _contract_tasks:ENGINE\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def _make(name: str) -> Executor:
    if name == "inline":
        return make_executor("local", RunSpec(workers=0))
    if name == "process":
        return make_executor("local", RunSpec(workers=1))
    if name == "threads":
        return make_executor("threads", RunSpec(executor="threads"))
    import ray

    from seeknetic_prep.executors.ray import RayExecutor

    ray.cloudpickle.register_pickle_by_value(__import__("_contract_tasks"))
    return RayExecutor(None, max_retries=0, local_cpus=2)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, registered: None) -> Iterator[Callable[[], Executor]]:
    if request.param == "ray":
        pytest.importorskip("ray")
    made: list[Executor] = []

    def factory() -> Executor:
        made.append(_make(request.param))
        return made[-1]

    factory.name = request.param  # type: ignore[attr-defined]
    yield factory
    for ex in made:
        ex.close()


def _decode_task(path: str, windows: list[tuple[int, int, int]], *, cls: type[DecodeTask] = DecodeTask,
                 bodies: bool = True) -> DecodeTask:
    rids = tuple((i, "embedding", f"sp-contract-{i}") for i, _, _ in windows) if bodies else ()
    return cls(path, "f" * 16, tuple(windows), rids, resize="crop", decode="cpu")


def _drain(ex: Executor, timeout_s: float = 240) -> list[Event]:
    out: list[Event] = []
    deadline = time.monotonic() + timeout_s
    while ex.in_flight:
        assert time.monotonic() < deadline, f"still {ex.in_flight} in flight after {timeout_s} s"
        out.extend(ex.events(0.5))
    return out


def test_the_test_engine_is_registered_by_entry_point(registered: None) -> None:
    assert {"local", "ray", "threads"} <= set(executor_names())
    with make_executor("threads", RunSpec(executor="threads")) as ex:
        assert type(ex).__name__ == "ThreadsExecutor"


def test_every_task_ends_in_exactly_one_terminal_event(engine: Callable[[], Executor],
                                                       ground_truth: dict[str, Any]) -> None:
    ex = engine()
    truth = ground_truth["files"]["late_audio_25s.mkv"]["windows"]
    windows = [(i, start, end) for i, (start, end) in enumerate(truth)]
    good_plan, missing_plan = PlanTask(GOOD), PlanTask(str(FIXTURES / "no-such-file.mp4"))
    good = _decode_task(GOOD, windows)
    cut = _decode_task(str(FIXTURES / "bad" / "truncated.mp4"), windows[:1])
    for task in (good_plan, missing_plan, good, cut):
        ex.submit(task)
    events = _drain(ex)
    terminal = Counter(repr(e.task) for e in events if not isinstance(e, WindowReady))
    assert sorted(terminal.values()) == [1, 1, 1, 1]  # events carry copies of tasks from workers
    by_task = {id(t): [e for e in events if e.task == t] for t in (good_plan, missing_plan, good, cut)}
    (planned,) = by_task[id(good_plan)]
    assert isinstance(planned, Planned) and planned.plan.windows == tuple(windows)
    (missing,) = by_task[id(missing_plan)]
    assert isinstance(missing, TaskFailed) and isinstance(missing.error, MediaError)
    assert "missing" in str(missing.error) and not missing.crashed
    got = by_task[id(good)]
    assert isinstance(got[-1], TaskDone)
    assert [e.window.index for e in got[:-1] if isinstance(e, WindowReady)] == [0, 1, 2]
    assert all(len(e.window.bodies) == 1 for e in got[:-1] if isinstance(e, WindowReady))
    assert isinstance(by_task[id(cut)][-1], TaskFailed)
    assert "truncated" in str(by_task[id(cut)][-1].error)  # type: ignore[union-attr]


def test_backpressure_holds_when_the_caller_stops_pulling(engine: Callable[[], Executor]) -> None:
    """60 half-second windows, ~3.6 MB of bodies each: unbounded, all 60 would be waiting after
    the pause; an engine may hold a few (its pipes, its one-window-ahead outbox)."""
    ex = engine()
    windows = [(i, i * 400, (i + 1) * 400) for i in range(60)]
    ex.submit(_decode_task(GOOD, windows))
    first = ex.events(120)  # the engine is up and decoding
    assert first, "no window within 120 s"
    time.sleep(3.0)  # the caller is busy: ~60 windows' worth of decoding time on this machine
    waiting = ex.events(0)
    held = sum(isinstance(e, WindowReady) for e in first + waiting)
    assert held <= 12, f"{held} windows were decoded ahead of a caller that stopped pulling"
    rest = _drain(ex)
    indices = [e.window.index for e in first + waiting + rest if isinstance(e, WindowReady)]
    assert indices == list(range(60))  # nothing lost to the pause, in order
    assert isinstance(rest[-1], TaskDone)


def test_a_worker_that_dies_fails_its_task(engine: Callable[[], Executor]) -> None:
    name = engine.name  # type: ignore[attr-defined]
    if name in ("inline", "threads"):
        pytest.skip(f"the {name} engine runs tasks in this process: a crash there is the caller's crash")
    ex = engine()
    crash = _decode_task(GOOD, [(0, 0, 10000)], cls=CrashTask)
    after = _decode_task(GOOD, [(0, 0, 10000)])
    ex.submit(crash)
    ex.submit(after)
    events = _drain(ex)
    (failed,) = [e for e in events if e.task == crash]
    assert isinstance(failed, TaskFailed) and failed.crashed
    assert isinstance(failed.error, MediaError) and GOOD in str(failed.error)
    assert isinstance([e for e in events if e.task == after][-1], TaskDone)  # the engine goes on


def test_a_worker_that_died_while_idle_takes_no_task_with_it() -> None:
    """A worker killed between tasks (no task of it to fail) is found when the next task is
    sent to it: the task goes to a fresh worker, uncounted as a crash. Sending it used to raise
    BrokenPipeError in the driver, and the run stopped with a traceback."""
    with make_executor("local", RunSpec(workers=1)) as ex:
        ex.submit(PlanTask(GOOD))
        assert isinstance(_drain(ex)[-1], Planned)
        (worker,) = ex._workers  # type: ignore[attr-defined]
        pids = []
        for _ in range(3):  # more deaths than a task's crash retries: none of them is spent
            pids.append(worker.process.pid)
            worker.process.kill()
            worker.process.join(10)
            ex.submit(PlanTask(GOOD))
            (event,) = _drain(ex)
            assert isinstance(event, Planned), event
        assert worker.process.is_alive() and len({*pids, worker.process.pid}) == 4


def _ours() -> set[int]:
    """Live descendants of this process, less the fork server (it outlives every pool)."""
    kids = psutil.Process().children(recursive=True)
    return {p.pid for p in kids if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
            and "forkserver" not in " ".join(_cmdline(p))}


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def test_close_leaves_no_process(engine: Callable[[], Executor]) -> None:
    before = _ours()
    ex = engine()
    ex.submit(_decode_task(GOOD, [(i, i * 400, (i + 1) * 400) for i in range(60)]))
    assert ex.events(120), "no window within 120 s"
    ex.close()
    ex.close()  # idempotent
    deadline = time.monotonic() + 60
    while (left := _ours() - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, [(" ".join(_cmdline(psutil.Process(p)))[:80]) for p in left if psutil.pid_exists(p)]
