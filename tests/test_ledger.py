"""The ledger's state machine, unit by unit, over a real state store (issue 17 item 8).

Every test works on a real :class:`~seeknetic_prep.state.store.Store` in ``tmp_path``. A crash is
simulated by dropping a run's ``Ledger`` without any clean-up (after :meth:`Store.flush`, which is
what the store's flusher thread would have committed by then) and starting a fresh ``Store`` and
``Ledger`` on the same file; the one kind of crash that loses buffered writes (``kill -9`` before
a flush) is done for real, in a child process killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from seeknetic_prep.decode.profile import Service
from seeknetic_prep.pipeline.ledger import Admission, Ledger, Work
from seeknetic_prep.pipeline.spec import Progress, RunSummary
from seeknetic_prep.pipeline.tally import Tally
from seeknetic_prep.pipeline.tasks import FilePlan, unit_request_id
from seeknetic_prep.state.store import Store

ROOT = Path(__file__).resolve().parent.parent
BOTH: tuple[Service, ...] = ("embedding", "tagging")
FP = "ab" * 32
FP2 = "cd" * 32
A = "/videos/a.mp4"
B = "/videos/copy-of-a.mp4"


# ---------------------------------------------------------------------------------- helpers


class Recorder(Progress):
    """The documented progress callbacks, recorded in call order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def file_planned(self, path: str, *, windows: int, to_decode: int, jobs: int) -> None:
        self.calls.append(("planned", path, windows, to_decode, jobs))

    def windows_decoded(self, count: int) -> None:
        self.calls.append(("decoded", count))

    def job_finished(self, request_id: str, status: str) -> None:
        self.calls.append(("job", request_id, status))

    def file_finished(self, path: str, *, ok: bool, windows: int, error: str | None) -> None:
        self.calls.append(("file", path, ok, windows, error))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [c[1:] for c in self.calls if c[0] == kind]


def plan(fp: str = FP, windows: int = 3, path: str = A) -> FilePlan:
    return FilePlan(path=path, fingerprint=fp, size=1_000_000, duration_ms=windows * 10_000,
                    windows=tuple((i, i * 10_000, (i + 1) * 10_000) for i in range(windows)),
                    mtime_ns=1, inode=2)


def rid(index: int, service: Service = "embedding", fp: str = FP) -> str:
    return unit_request_id(fp, (index, index * 10_000, (index + 1) * 10_000), service)


def keys(request_id: str) -> dict[str, str]:
    return {"video_input": f"tensors/{request_id}/video_input.json"}


STEPS = {
    "uploaded": ("uploaded",),
    "submitted": ("uploaded", "submitted"),
    "completed": ("uploaded", "submitted", "completed"),
    "failed": ("uploaded", "submitted", "failed"),
}


@dataclass
class Run:
    """One run's store, ledger, summary and progress, as the driver wires them (the ledger's
    outcomes go to a :class:`Tally` over the summary and the progress)."""

    store: Store
    ledger: Ledger
    summary: RunSummary
    progress: Recorder = field(default_factory=Recorder)
    tally: Tally | None = None

    def admit(self, p: FilePlan | None = None, path: str = A, windows_per_task: int = 4) -> Admission:
        p = p or plan(path=path)
        return self.ledger.admit(path, p, resize="crop", windows_per_task=windows_per_task)

    def step(self, request_id: str, to: str) -> None:
        """Move one unit through the ledger as the upload and poll stages do, up to ``to``."""
        for s in STEPS[to]:
            if s == "uploaded":
                self.ledger.uploaded(request_id, keys(request_id), [1.0, 2.0])
            elif s == "submitted":
                self.ledger.submitted(request_id)
            elif s == "completed":
                self.ledger.completed(request_id, {"embedding": [0.5, 0.25], "model_name": "m"})
            else:
                self.ledger.failed(request_id, "the job failed: bad tensor")

    def crash(self) -> None:
        """What a crash right now leaves on disk: what the flusher committed; the ledger is dropped."""
        self.store.flush()


Start = Callable[..., Run]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "out" / "state.sqlite"


@pytest.fixture
def start(db: Path) -> Iterator[Start]:
    """Start a run on ``db``: a fresh Store and Ledger each call (a rerun after a crash)."""
    stores: list[Store] = []

    def make(services: tuple[Service, ...] = BOTH) -> Run:
        store = Store(db)
        stores.append(store)
        summary = RunSummary(out=db.parent, results_path=db.parent / "parts")
        progress = Recorder()
        tally = Tally(summary, progress)
        return Run(store, Ledger(store, services=services, record=tally.apply), summary, progress, tally)

    yield make
    for store in stores:
        store.close()


def on_disk(db: Path) -> dict[str, tuple[str, str | None]]:
    """Each unit's (status, error) as another process would read it from the file now."""
    con = sqlite3.connect(db)
    try:
        return {r: (s, e) for r, s, e in con.execute("SELECT request_id, status, error FROM units")}
    finally:
        con.close()


def files_on_disk(db: Path) -> dict[str, tuple[str, str | None, str | None]]:
    con = sqlite3.connect(db)
    try:
        return {os.fsdecode(bytes(p)): (s, fp, e)
                for p, s, fp, e in con.execute("SELECT path, status, fingerprint, error FROM files")}
    finally:
        con.close()


def task_rids(adm: Admission) -> list[str]:
    return [r for t in adm.tasks for _, _, r in t.request_ids]


# ---------------------------------------------------------------------------------- a new file


def test_admit_new_file_plans_one_unit_per_window_and_service(start: Start, db: Path) -> None:
    run = start()
    adm = run.admit(plan(windows=3))
    want = {rid(i, s) for i in range(3) for s in BOTH}
    assert on_disk(db) == {r: ("planned", None) for r in want}  # committed at once, not batched
    assert files_on_disk(db) == {A: ("ok", FP, None)}
    assert set(task_rids(adm)) == want and len(task_rids(adm)) == 6
    assert adm.submit == [] and adm.poll == []
    assert not any(run.ledger.needs_lookup(r) for r in want)  # nothing existed: no lookup
    assert run.progress.of("planned") == [(A, 3, 3, 6)]
    assert run.progress.of("file") == []  # not finished until its jobs are
    assert run.summary.windows == 3 and run.ledger.pending_jobs == 6


def test_a_new_state_beside_an_earlier_runs_results_looks_everything_up(start: Start, db: Path) -> None:
    """Issue 22.11: a state made anew in a folder that holds an earlier run's results (its state
    lost or moved) may name jobs the server already has: each unit is looked up before it is
    submitted, never sent blind."""
    (db.parent / "parts").mkdir(parents=True)
    (db.parent / "parts" / "part-000001-00.parquet").write_bytes(b"an earlier run's part")
    run = start()
    run.admit(plan(windows=2))
    assert all(run.ledger.needs_lookup(rid(i, s)) for i in range(2) for s in BOTH)


def test_a_run_plans_and_works_only_its_services(start: Start, db: Path) -> None:
    adm = start(services=("tagging",)).admit(plan(windows=2))
    assert set(on_disk(db)) == {rid(0, "tagging"), rid(1, "tagging")}
    assert {s for t in adm.tasks for _, s, _ in t.request_ids} == {"tagging"}


def test_decode_tasks_are_chunks_of_windows_per_task_by_window_index(start: Start) -> None:
    run = start(services=("embedding",))
    p = plan(windows=10)
    adm = run.admit(p, windows_per_task=4)
    assert [t.windows for t in adm.tasks] == [p.windows[0:4], p.windows[4:8], p.windows[8:10]]
    assert [[i for i, _, _ in t.request_ids] for t in adm.tasks] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    t = adm.tasks[0]
    assert (t.path, t.fingerprint, t.resize, t.decode) == (A, FP, "crop", "auto")
    assert t.request_ids[0] == (0, "embedding", rid(0))


def test_a_resumed_run_decodes_a_window_in_the_same_chunk_but_asks_only_for_what_is_left(
        start: Start) -> None:
    """Chunks are fixed by window index, not by what is left, so a resumed run uploads the very
    tensors an uninterrupted run would have."""
    first = start(services=("embedding",))
    first.admit(plan(windows=10))
    for i in (0, 1, 2, 3, 4, 6):
        first.step(rid(i), "completed")
    first.crash()
    rerun = start(services=("embedding",))
    p = plan(windows=10)
    adm = rerun.admit(p, windows_per_task=4)
    assert [t.windows for t in adm.tasks] == [p.windows[4:8], p.windows[8:10]]  # chunk 0 is done
    assert [[i for i, _, _ in t.request_ids] for t in adm.tasks] == [[5, 7], [8, 9]]
    assert rerun.progress.of("planned") == [(A, 10, 4, 4)]
    assert rerun.summary.jobs_completed == 6


def test_non_default_resize_names_the_units_apart(start: Start, db: Path) -> None:
    run = start(services=("embedding",))
    run.ledger.admit(A, plan(windows=1), resize="pad", windows_per_task=4)
    assert list(on_disk(db)) == [unit_request_id(FP, (0, 0, 10_000), "embedding", resize="pad")]


# ---------------------------------------------------------------------------------- one content, two paths


def test_same_content_under_a_second_path_is_worked_once_and_both_paths_finish(
        start: Start, db: Path) -> None:
    run = start(services=("embedding",))
    first = run.admit(plan(windows=2))
    second = run.admit(plan(windows=2, path=B), path=B)
    assert second == Admission([], [], []) and len(first.tasks) == 1
    assert files_on_disk(db) == {A: ("ok", FP, None), B: ("ok", FP, None)}
    assert run.summary.windows == 2 and run.ledger.pending_jobs == 2  # counted once
    run.step(rid(0), "completed")
    assert run.progress.of("file") == []
    run.step(rid(1), "completed")
    assert run.progress.of("file") == [(A, True, 2, None), (B, True, 2, None)]
    assert run.summary.files_ok == 2 and run.summary.jobs_completed == 2


def test_a_second_path_of_content_finished_in_this_run_is_finished_at_once(start: Start) -> None:
    run = start(services=("embedding",))
    run.admit(plan(windows=1))
    run.step(rid(0), "completed")
    assert run.admit(plan(windows=1, path=B), path=B) == Admission([], [], [])
    assert run.progress.of("file") == [(A, True, 1, None), (B, True, 1, None)]
    assert run.summary.jobs_completed == 1  # the job is not counted again for the copy


# ---------------------------------------------------------------------------------- crash points


@pytest.mark.parametrize("status", ["planned", "uploaded", "submitted", "completed", "failed"])
def test_a_crash_right_after_each_step_leaves_a_state_a_rerun_finishes_without_resubmitting(
        start: Start, db: Path, status: str) -> None:
    first = start(services=("embedding",))
    first.admit(plan(windows=1))
    r = rid(0)
    assert first.ledger.claim(r)
    if status != "planned":
        first.step(r, status)
    first.crash()
    assert on_disk(db)[r][0] == status  # each acknowledged step is committed by the flush

    rerun = start(services=("embedding",))
    adm = rerun.admit(plan(windows=1))
    submits = [w.request_id for w in adm.submit]
    if status == "planned":  # decoded again, and looked up first: it may have reached the server
        assert task_rids(adm) == [r] and submits == [] and adm.poll == []
        assert rerun.ledger.needs_lookup(r)
    elif status == "uploaded":  # straight to submit with its keys, after a lookup, and claimed
        assert adm.tasks == [] and adm.poll == []
        assert adm.submit == [Work(r, "embedding", FP, r2_keys=keys(r), lookup=True)]
        assert not rerun.ledger.claim(r)
    elif status == "submitted":  # polled, never submitted again
        assert adm.tasks == [] and submits == [] and [p[0] for p in adm.poll] == [r]
    else:  # terminal: counted, nothing to do, the file is finished at once
        assert adm == Admission([], [], [])
        assert (rerun.summary.jobs_completed, rerun.summary.jobs_failed) == (
            (1, 0) if status == "completed" else (0, 1))
        assert rerun.progress.of("file") == [
            (A, status == "completed", 1, None if status == "completed" else "1 job(s) failed")]
        assert rerun.ledger.pending_jobs == 0
    assert rerun.progress.of("planned") == [
        (A, 1, int(status == "planned"), int(status not in ("completed", "failed")))]


def test_a_rerun_after_a_crash_mid_file_sorts_every_unit_by_its_status(start: Start) -> None:
    """Nothing is submitted twice: a unit submitted or completed is never handed out for submit."""
    first = start()
    first.admit(plan(windows=3))
    first.step(rid(0, "embedding"), "completed")
    first.step(rid(0, "tagging"), "failed")
    first.step(rid(1, "embedding"), "submitted")
    first.step(rid(1, "tagging"), "uploaded")
    first.crash()
    rerun = start()
    adm = rerun.admit(plan(windows=3))
    assert adm.poll == [(rid(1, "embedding"), "embedding")]
    assert [w.request_id for w in adm.submit] == [rid(1, "tagging")]
    assert sorted(task_rids(adm)) == sorted([rid(2, "embedding"), rid(2, "tagging")])
    assert [t.windows for t in adm.tasks] == [plan(windows=3).windows]  # window 2 keeps its chunk
    handed_out = set(task_rids(adm)) | {w.request_id for w in adm.submit}
    assert not handed_out & {rid(0, "embedding"), rid(0, "tagging"), rid(1, "embedding")}
    assert (rerun.summary.jobs_completed, rerun.summary.jobs_failed) == (1, 1)
    assert rerun.progress.of("planned") == [(A, 3, 1, 4)]
    assert rerun.ledger.pending_jobs == 4


def test_a_kill_9_before_the_flush_loses_only_transitions_and_the_rerun_looks_up_first(
        start: Start, db: Path) -> None:
    """A real SIGKILL with the uploaded and submitted marks still buffered: the unit is found
    planned again, so it is decoded again and looked up (async_status) before any submit."""
    _killed_child(db, flush=False)
    assert on_disk(db) == {rid(0): ("planned", None)}  # plan_units was committed at once
    rerun = start(services=("embedding",))
    adm = rerun.admit(plan(windows=1))
    assert task_rids(adm) == [rid(0)] and adm.submit == [] and adm.poll == []
    assert rerun.ledger.needs_lookup(rid(0))


def test_a_kill_9_after_the_flush_keeps_the_submission_and_the_rerun_only_polls(
        start: Start, db: Path) -> None:
    _killed_child(db, flush=True)
    assert on_disk(db) == {rid(0): ("submitted", None)}
    adm = start(services=("embedding",)).admit(plan(windows=1))
    assert adm == Admission([], [], [(rid(0), "embedding")])


def _killed_child(db: Path, *, flush: bool) -> None:
    code = textwrap.dedent(f"""
        import os, signal, sys
        import seeknetic_prep.state.store as store_module
        store_module.FLUSH_S = 3600.0  # the flusher thread never gets to run before the kill
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from test_ledger import A, plan, rid, keys
        from seeknetic_prep.pipeline.ledger import Ledger
        store = store_module.Store({str(db)!r})
        ledger = Ledger(store, services=("embedding",))
        ledger.admit(A, plan(windows=1), resize="crop", windows_per_task=4)
        assert ledger.claim(rid(0))
        ledger.uploaded(rid(0), keys(rid(0)), [1.0])
        ledger.submitted(rid(0))
        if {flush!r}:
            store.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()


def test_a_clean_close_commits_every_buffered_transition(start: Start, db: Path) -> None:
    run = start(services=("embedding",))
    run.admit(plan(windows=3))
    run.step(rid(0), "uploaded")
    run.step(rid(1), "submitted")
    run.step(rid(2), "completed")
    run.store.close()
    assert {r: s for r, (s, _) in on_disk(db).items()} == {
        rid(0): "uploaded", rid(1): "submitted", rid(2): "completed"}
    with Store(db) as again:
        assert again.unit(rid(0)).r2_keys == keys(rid(0))  # type: ignore[union-attr]
        assert again.result(rid(2)) == {"embedding": [0.5, 0.25], "model_name": "m"}


# ---------------------------------------------------------------------------------- claim, lookup


def test_claim_gives_a_unit_to_one_item_per_run_so_a_window_decoded_twice_is_submitted_once(
        start: Start) -> None:
    run = start(services=("embedding",))
    run.admit(plan(windows=1))
    assert run.ledger.claim(rid(0))
    assert not run.ledger.claim(rid(0))  # the task retried after its worker died
    run.step(rid(0), "submitted")
    assert not run.ledger.claim(rid(0))  # still in flight
    run.step(rid(0), "completed")
    assert not run.ledger.claim(rid(0))  # finished


def test_claim_refuses_an_unknown_unit_and_a_unit_of_a_failed_content(start: Start) -> None:
    run = start(services=("embedding",))
    run.admit(plan(windows=2))
    assert not run.ledger.claim("sp-not-planned-by-this-run")
    run.ledger.content_failed(FP, "moov atom not found", environmental=True)
    assert not run.ledger.claim(rid(0)) and not run.ledger.claim(rid(1))


def test_claims_do_not_survive_a_crash_the_rerun_claims_afresh(start: Start) -> None:
    first = start(services=("embedding",))
    first.admit(plan(windows=1))
    assert first.ledger.claim(rid(0))  # its upload was in flight when the run died
    first.crash()
    rerun = start(services=("embedding",))
    rerun.admit(plan(windows=1))
    assert rerun.ledger.claim(rid(0)) and rerun.ledger.needs_lookup(rid(0))


def test_an_ambiguous_submission_makes_the_unit_need_a_lookup_until_it_finishes(start: Start) -> None:
    run = start(services=("embedding",))
    run.admit(plan(windows=1))
    assert not run.ledger.needs_lookup(rid(0))  # new content: nothing to look up
    run.ledger.ambiguous(rid(0))
    assert run.ledger.needs_lookup(rid(0))
    run.step(rid(0), "completed")
    assert not run.ledger.needs_lookup(rid(0))


# ---------------------------------------------------------------------------------- late and repeated answers


def test_a_late_step_never_moves_a_unit_back(start: Start, db: Path) -> None:
    """The store only moves a unit forward: a late ``uploaded`` (a second upload of a window
    decoded twice) after ``submitted`` leaves it submitted; a late ``failed`` after
    ``completed`` leaves it completed, and the job is counted and reported once."""
    run = start(services=("embedding",))
    run.admit(plan(windows=2))
    run.step(rid(0), "submitted")
    run.ledger.uploaded(rid(0), {"video_input": "other"}, [9.0])
    run.step(rid(1), "completed")
    run.ledger.failed(rid(1), "late timeout")
    run.crash()
    assert on_disk(db) == {rid(0): ("submitted", None), rid(1): ("completed", None)}
    assert run.store.unit(rid(0)).r2_keys == keys(rid(0))  # type: ignore[union-attr]
    assert (run.summary.jobs_completed, run.summary.jobs_failed) == (1, 0)
    assert run.progress.of("job") == [(rid(1), "completed")]


# ---------------------------------------------------------------------------------- failures


def test_an_environmental_failure_leaves_the_units_for_a_later_run(start: Start, db: Path) -> None:
    """The file went missing mid-run: its paths are failed, its units stay as they were, and
    the next run decodes (and first looks up) them again."""
    run = start(services=("embedding",))
    run.admit(plan(windows=2))
    run.admit(plan(windows=2, path=B), path=B)
    run.step(rid(1), "uploaded")
    run.ledger.content_failed(FP, "missing: no such file", environmental=True)
    assert run.ledger.is_dead(FP) and run.ledger.pending_jobs == 0
    run.crash()
    assert on_disk(db) == {rid(0): ("planned", None), rid(1): ("uploaded", None)}
    assert {p: s for p, (s, _, _) in files_on_disk(db).items()} == {A: "failed", B: "failed"}
    assert files_on_disk(db)[A][2] == "missing: no such file"
    assert run.progress.of("file") == [(A, False, 2, "missing: no such file"),
                                       (B, False, 2, "missing: no such file")]
    assert run.summary.files_failed == 2 and run.summary.jobs_failed == 0
    assert run.progress.of("job") == []

    rerun = start(services=("embedding",))
    adm = rerun.admit(plan(windows=2))
    assert task_rids(adm) == [rid(0)] and rerun.ledger.needs_lookup(rid(0))
    assert [w.request_id for w in adm.submit] == [rid(1)]


def test_a_content_failure_fails_its_unsent_units_for_good(start: Start, db: Path) -> None:
    """The content itself is unusable: planned and uploaded units fail in the store; a unit
    already submitted is left to its poll; the rerun has nothing to do for it."""
    run = start(services=("embedding",))
    run.admit(plan(windows=3))
    run.step(rid(1), "uploaded")
    run.step(rid(2), "submitted")
    run.ledger.content_failed(FP, "invalid data found when decoding", environmental=False)
    assert {r: s for r, (s, _) in on_disk(db).items()} == {
        rid(0): "failed", rid(1): "failed", rid(2): "submitted"}
    assert on_disk(db)[rid(0)][1] == "invalid data found when decoding"
    assert files_on_disk(db)[A][0] == "failed"
    assert run.progress.of("job") == [(rid(0), "failed"), (rid(1), "failed")]
    assert run.progress.of("file") == [] and run.ledger.pending_jobs == 1
    assert not run.ledger.claim(rid(2))
    run.step(rid(2), "completed")  # the poll still ends it
    assert run.progress.of("file") == [(A, False, 3, "invalid data found when decoding")]
    assert (run.summary.jobs_completed, run.summary.jobs_failed, run.summary.files_failed) == (1, 2, 1)
    run.crash()

    rerun = start(services=("embedding",))
    assert rerun.admit(plan(windows=3)) == Admission([], [], [])  # not retried
    assert (rerun.summary.jobs_completed, rerun.summary.jobs_failed) == (1, 2)
    # the rerun names the cause, as the first run did (it said "2 job(s) failed" before session 8)
    assert rerun.progress.of("file") == [(A, False, 3, "invalid data found when decoding")]


def test_a_content_is_failed_once_the_first_error_wins(start: Start, db: Path) -> None:
    run = start(services=("embedding",))
    run.admit(plan(windows=1))
    run.ledger.content_failed(FP, "first", environmental=False)
    run.ledger.content_failed(FP, "second", environmental=True)
    assert on_disk(db)[rid(0)] == ("failed", "first")
    assert run.progress.of("file") == [(A, False, 1, "first")]
    assert run.summary.files_failed == 1


def test_a_rerun_keeps_a_content_failed_file_recorded_as_failed(start: Start, db: Path) -> None:
    run = start(services=("embedding",))
    run.admit(plan(windows=1))
    run.ledger.content_failed(FP, "invalid data found when decoding", environmental=False)
    run.admit(plan(windows=1, path=B), path=B)  # a copy met after the failure, in the same run
    run.crash()
    rerun = start(services=("embedding",))
    rerun.admit(plan(windows=1))
    rerun.admit(plan(windows=1, path=B), path=B)
    why = "invalid data found when decoding"
    assert {p: files_on_disk(db)[p] for p in (A, B)} == {A: ("failed", FP, why), B: ("failed", FP, why)}
    assert rerun.summary.files_failed == 2 and rerun.summary.files_ok == 0  # both paths
    retried = start(services=("embedding",))  # --retry-failed: the content is tried again
    retried.store.retry_failed(lambda unit, attempt: f"{unit.request_id}-retry{attempt}")
    retried.admit(plan(windows=1))
    assert files_on_disk(db)[A] == ("ok", FP, None)


def test_a_content_failed_for_good_stays_failed_renamed_or_with_a_service_added(
        start: Start, db: Path) -> None:
    why = "invalid data found when decoding"
    run = start(services=("embedding",))
    run.admit(plan(windows=2))
    run.ledger.content_failed(FP, why, environmental=False)
    run.store.mark_gone([os.fsencode(A)])  # the next run's sweep: a.mp4 renamed to b.mp4
    run.crash()
    rerun = start(services=BOTH)  # and --services both: tagging is new
    admission = rerun.admit(plan(windows=2, path=B), path=B)
    assert admission.tasks == [] and admission.submit == []  # nothing decoded or billed again
    assert files_on_disk(db)[B] == ("failed", FP, why)
    assert {s for s, _ in on_disk(db).values()} == {"failed"} and len(on_disk(db)) == 4
    assert not rerun.ledger.claim(rid(0, "tagging")) and rerun.ledger.is_dead(FP)
    rerun.crash()
    # unchanged since, it is known from one lookup: a rerun does not read it again
    row = rerun.store.known_file(B, size=1_000_000, mtime_ns=1, inode=2, services=BOTH)
    assert row is not None
    third = start(services=BOTH)
    assert third.ledger.known(B, row) == 2
    assert third.progress.of("file") == [(B, False, 2, why)] and third.summary.files_failed == 1


def test_an_environmental_failure_is_not_kept_by_the_next_run(start: Start, db: Path) -> None:
    run = start(services=("embedding",))
    run.admit(plan(windows=1))
    run.ledger.content_failed(FP, "unreadable: connection reset", environmental=True)
    assert files_on_disk(db)[A][0] == "failed"
    run.crash()
    assert run.store.known_file(A, size=1_000_000, mtime_ns=1, inode=2, services=("embedding",)) is None
    start(services=("embedding",)).admit(plan(windows=1))
    assert files_on_disk(db)[A] == ("ok", FP, None)


def test_a_file_that_cannot_be_planned_is_recorded_failed_and_reported(start: Start, db: Path) -> None:
    run = start()
    run.ledger.file_failed("/videos/notes.txt", "not a media file")
    assert files_on_disk(db) == {"/videos/notes.txt": ("failed", None, "not a media file")}
    assert run.summary.files_failed == 1
    assert run.summary.failures == [("/videos/notes.txt", "not a media file")]
    assert run.progress.of("file") == [("/videos/notes.txt", False, 0, "not a media file")]


# ---------------------------------------------------------------------------------- counts


def test_summary_and_progress_count_each_job_and_file_once(start: Start) -> None:
    run = start()
    run.admit(plan(windows=2))
    run.admit(plan(FP2, windows=1, path=B), path=B)
    for r in (rid(0, "embedding"), rid(0, "tagging"), rid(1, "embedding")):
        run.step(r, "completed")
    run.step(rid(1, "tagging"), "failed")
    for s in BOTH:
        run.step(rid(0, s, FP2), "completed")
    s = run.summary
    assert (s.windows, s.jobs_completed, s.jobs_failed, s.files_ok, s.files_failed) == (3, 5, 1, 1, 1)
    assert run.tally is not None and run.tally.completed_now == 5
    assert s.failures == [(rid(1, "tagging"), "the job failed: bad tensor")]
    assert len(run.progress.of("job")) == 6
    assert ("job", rid(1, "tagging"), "failed") in run.progress.calls
    assert run.progress.of("file") == [(A, False, 2, "1 job(s) failed"), (B, True, 1, None)]


def test_close_counts_fills_pending_jobs_unfinished_files_and_windows_decoded(start: Start) -> None:
    run = start(services=("embedding",))
    run.admit(plan(windows=3))
    run.admit(plan(windows=3, path=B), path=B)
    run.admit(plan(FP2, windows=1, path="/videos/c.mp4"), path="/videos/c.mp4")
    for _ in range(2):
        run.ledger.window_decoded(FP, "cpu")
    run.step(rid(0), "completed")
    run.step(rid(0, fp=FP2), "completed")
    assert run.ledger.pending_jobs == 2
    run.ledger.close_counts()
    s = run.summary
    assert (s.jobs_pending, s.files_unfinished, s.windows_decoded) == (2, 2, 2)  # a and its copy
    assert (s.files_ok, s.exit_code) == (1, 1)
    assert run.progress.of("decoded") == [(1,), (1,)]
    # what decoded the content is on every path that holds it, and only there
    paths = [os.fsencode(A), os.fsencode(B), b"/videos/c.mp4"]
    media = run.store.media_of(paths)
    assert [media.get(path, {}).get("decoder") for path in paths] == ["cpu", "cpu", None]


def test_a_copy_found_after_its_content_was_decoded_gets_the_contents_decoder(start: Start, db: Path) -> None:
    run = start(services=("embedding",))
    run.admit(plan(windows=1))
    run.ledger.window_decoded(FP, "cuda")
    run.step(rid(0), "completed")
    run.crash()
    rerun = start(services=("embedding",))  # a later run meets a copy: nothing to decode
    admission = rerun.admit(plan(windows=1, path=B), path=B)
    rerun.admit(plan(FP2, windows=1, path="/videos/c.mp4"), path="/videos/c.mp4")
    rerun.crash()
    assert admission.tasks == []
    paths = [os.fsencode(A), os.fsencode(B), b"/videos/c.mp4"]
    media = rerun.store.media_of(paths)
    assert [media.get(path, {}).get("decoder") for path in paths] == ["cuda", "cuda", None]


def test_a_known_file_is_counted_from_the_store_without_any_work(start: Start) -> None:
    first = start(services=("embedding",))
    first.admit(plan(windows=2))
    first.step(rid(0), "completed")
    first.step(rid(1), "failed")
    first.store.close()
    rerun = start(services=("embedding",))
    row = rerun.store.known_file(A, size=1_000_000, mtime_ns=1, inode=2, services=("embedding",))
    assert row is not None and rerun.ledger.known(A, row) == 2
    s = rerun.summary
    assert (s.windows, s.jobs_completed, s.jobs_failed, s.files_failed) == (2, 1, 1, 1)
    assert s.failures == [(rid(1), "the job failed: bad tensor")]
    assert rerun.progress.of("planned") == [(A, 2, 0, 0)]
    assert rerun.progress.of("file") == [(A, False, 2, "1 job(s) failed")]
