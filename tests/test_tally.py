"""The one place that counts a run: outcomes in, summary and progress out."""

from __future__ import annotations

from pathlib import Path

import pytest

from seeknetic_prep.commands.run import _print_failures
from seeknetic_prep.pipeline.spec import Progress, RunSummary
from seeknetic_prep.pipeline.tally import (
    FileFinished,
    FilePlanned,
    JobFinished,
    RunCounts,
    Tally,
    WindowDecoded,
)


def _summary() -> RunSummary:
    return RunSummary(out=Path("out"), results_path=Path("out/parts"))


def test_outcomes_count_once_each() -> None:
    s = _summary()
    t = Tally(s, Progress())
    t.apply([FilePlanned("a.mp4", 3, 3, 6, new_windows=3, done_jobs=1), WindowDecoded(), WindowDecoded(),
             JobFinished("r1", "completed"), JobFinished("r0", "completed", now=False),
             JobFinished("r2", "failed", "bad tensor"), FileFinished("a.mp4", ok=False, windows=3,
                                                                     error="1 job(s) failed"),
             FileFinished("b.mp4", ok=True, windows=1), RunCounts(jobs_pending=2, files_unfinished=1)])
    assert (s.windows, s.windows_decoded, s.jobs_completed, s.jobs_failed) == (3, 2, 3, 1)
    assert (s.files_ok, s.files_failed, s.jobs_pending, s.files_unfinished) == (1, 1, 2, 1)
    assert t.completed_now == 1 and s.failures == [("r2", "bad tensor")]  # a job's failure, once


def test_20000_failures_are_counted_though_1000_are_kept(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 22.13: with 20,000 failures the count said "(1000)": the kept list's length."""
    s = _summary()
    Tally(s, Progress()).apply([JobFinished(f"r{i}", "failed", "no") for i in range(20_000)])
    assert len(s.failures) == 1000 and s.failure_count == 20_000 and s.jobs_failed == 20_000
    _print_failures(s, Path("out"))
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "failures (20000):" and err[-1].startswith("  and 19990 more: see ")
