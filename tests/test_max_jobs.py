"""``run --max-jobs N``: at most N submissions a run, then a clean stop like a spent quota (exit 3),
and later runs continue without submitting anything twice (checked on what the emulator received)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _pipeline_helpers import ROOT, read_results

from seeknetic_prep.api.client import Client, RetryPolicy
from seeknetic_prep.errors import InvalidArgumentError
from seeknetic_prep.pipeline.driver import RunOptions, run_folder
from seeknetic_prep.pipeline.spec import RunSpec
from seeknetic_prep.state.store import Store

FAST = RetryPolicy(max_attempts=8, base_delay_s=0.02, max_delay_s=0.5)


@pytest.fixture()
def fresh(tmp_path: Path) -> Iterator[Any]:
    """An emulator of this test's own: its stats count only this test's submissions."""
    from seeknetic_prep.emulator import EmulatorConfig, running

    with running(EmulatorConfig(data_dir=tmp_path / "emu")) as server:
        yield server


@pytest.fixture()
def videos(fixtures_dir: Path, tmp_path: Path) -> Path:
    """lake (2 windows) and desert (1 window): 6 jobs."""
    dest = tmp_path / "in"
    dest.mkdir()
    for name in ("demo/lake.mp4", "demo/desert.mp4"):
        shutil.copy(fixtures_dir / name, dest / Path(name).name)
    return dest


def _submissions(server: Any) -> dict[str, int]:
    return dict(server.stats()["submissions"])


def test_max_jobs_stops_before_job_n_plus_1_and_later_runs_continue(
    fresh: Any, videos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with Client(fresh.api_key, base_url=fresh.base_url, retry=FAST) as c:
        first = run_folder([videos], out=out, client=c, options=RunOptions(workers=0, max_jobs=4))
        after_first = _submissions(fresh)
        with Store(out / "state.sqlite") as store:
            counts = store.counts()
        second = run_folder([videos], out=out, client=c, options=RunOptions(workers=0, max_jobs=1))
        after_second = _submissions(fresh)
        third = run_folder([videos], out=out, client=c, options=RunOptions(workers=0))
        after_third = _submissions(fresh)
    assert (first.stopped_by, first.exit_code) == ("max_jobs", 3)
    assert first.stop_message == "--max-jobs 4 reached"
    assert sum(after_first.values()) == 4 and set(after_first.values()) == {1}
    # the jobs in flight were polled to their end before the run stopped; the rest wait
    assert counts.get("completed") == 4 and counts.get("submitted", 0) == 0
    assert first.jobs_completed == 4 and first.jobs_pending == 2
    assert (second.stopped_by, second.exit_code) == ("max_jobs", 3)
    assert sum(after_second.values()) == 5
    assert third.exit_code == 0 and third.stopped_by is None and third.jobs_completed == 6
    lines = read_results(out)
    rids = {x["request_id"] for x in lines}
    assert len(lines) == 6 and all(x["status"] == "completed" for x in lines)
    assert after_third == {rid: 1 for rid in rids}  # each job submitted once over three runs


def test_a_limit_the_run_does_not_reach_is_a_normal_end(fresh: Any, videos: Path, tmp_path: Path) -> None:
    with Client(fresh.api_key, base_url=fresh.base_url, retry=FAST) as c:
        summary = run_folder([videos], out=tmp_path / "out", client=c,
                             options=RunOptions(workers=0, max_jobs=6))
    assert summary.exit_code == 0 and summary.stopped_by is None and summary.jobs_completed == 6


def test_already_submitted_units_do_not_count(fresh: Any, videos: Path, tmp_path: Path) -> None:
    """A unit the state left ``uploaded`` whose job the server already has (its submission's
    answer was lost) is found by the lookup, not submitted, and so not counted."""
    out = tmp_path / "out"
    with Client(fresh.api_key, base_url=fresh.base_url, retry=FAST) as c:
        first = run_folder([videos], out=out, client=c, options=RunOptions(workers=0, max_jobs=2))
        assert first.exit_code == 3
        with Store(out / "state.sqlite") as store:
            done = [u.request_id for u in store.units_with_status("completed")]
        # pretend the first run's record of its two submissions was lost
        con = sqlite3.connect(out / "state.sqlite")
        with con:
            con.executemany("UPDATE units SET status='uploaded', r2_keys='{\"video_input\": \"x\"}' "
                            "WHERE request_id=?", [(r,) for r in done])
        con.close()
        second = run_folder([videos], out=out, client=c, options=RunOptions(workers=0, max_jobs=2))
    subs = _submissions(fresh)
    assert second.exit_code == 3 and sum(subs.values()) == 4 and set(subs.values()) == {1}


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3"])
def test_max_jobs_is_validated(bad: object) -> None:
    with pytest.raises(InvalidArgumentError, match="max_jobs"):
        RunSpec(max_jobs=bad)  # type: ignore[arg-type]


def _cli(*args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEKNETIC_")}
    if key is not None:
        env["SEEKNETIC_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "seeknetic_prep", *args], env=env, capture_output=True,
                          text=True, timeout=240, cwd=ROOT)


def test_cli_max_jobs_one_line_exit_3_then_continues(fresh: Any, videos: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    proc = _cli("run", str(videos), "--base-url", fresh.base_url, "--out", out, "--workers", "0",
                "--max-jobs", "3", key=fresh.api_key)
    assert proc.returncode == 3, proc.stderr
    stops = [line for line in proc.stderr.splitlines() if "--max-jobs 3 reached" in line]
    assert len(stops) == 1 and "continue" in stops[0] and "Traceback" not in proc.stderr
    assert sum(_submissions(fresh).values()) == 3
    again = _cli("run", str(videos), "--base-url", fresh.base_url, "--out", out, "--workers", "0",
                 key=fresh.api_key)
    assert again.returncode == 0, again.stderr
    assert set(_submissions(fresh).values()) == {1} and len(_submissions(fresh)) == 6


def test_cli_bad_max_jobs_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = _cli("run", "fixtures/demo", "--local", "--out", str(tmp_path / "o"), "--max-jobs", "0")
    assert proc.returncode == 2 and "max_jobs" in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr
