"""``seeknetic-prep run`` and ``status`` as a user runs them: subprocesses, signals, kill -9."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _pipeline_helpers import ROOT, read_results

GOOD = ("cfr30_bframes.mp4", "vfr.mp4", "late_audio_25s.mkv", "six_ch_48k.mp4", "demo/lake.mp4",
        "demo/forest.webm", "no_audio.mp4", "rotated90.mp4")


def _cli(*args: str, key: str | None = None) -> list[str]:
    return [sys.executable, "-m", "seeknetic_prep", *args]


def _env(key: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEKNETIC_")}
    if key is not None:
        env["SEEKNETIC_API_KEY"] = key
    return env


def _run(*args: str, key: str | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cli(*args), env=_env(key), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture()
def good_dir(fixtures_dir: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "videos"
    dest.mkdir()
    for name in GOOD:
        shutil.copy(fixtures_dir / name, dest / Path(name).name)
    return dest


@pytest.fixture()
def fresh(tmp_path: Path) -> Iterator[Any]:
    from seeknetic_prep.emulator import EmulatorConfig, running

    with running(EmulatorConfig(data_dir=tmp_path / "emu")) as server:
        yield server


def _units_done(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            row = con.execute("SELECT COUNT(*) FROM units WHERE status != 'planned'").fetchone()
            return int(row[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _strip(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(lines, key=lambda x: (x["path"], x["start_ms"] or 0, x["service"]))


def test_demo_local_exits_0_and_shows_results(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run("run", "fixtures/demo", "--local", "--out", str(out), "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert f"results: {out / 'parts'}" in proc.stdout
    assert "seeknetic-prep search QUERY" in proc.stdout and "Traceback" not in proc.stderr
    lines = read_results(out)
    assert len(lines) == 10 and all(x["status"] == "completed" for x in lines)
    status = _run("status", "--out", str(out))
    assert status.returncode == 0 and "10 completed" in status.stdout


def test_bad_fixtures_fail_with_reasons_exit_1(fixtures_dir: Path, tmp_path: Path,
                                               ground_truth: dict[str, Any]) -> None:
    bad = {Path(n).name: f["error"] for n, f in ground_truth["files"].items() if f["kind"] == "bad"}
    proc = _run("run", str(fixtures_dir / "bad"), str(fixtures_dir / "vp9.webm"), "--local",
                "--out", str(tmp_path / "out"), "--workers", "1", "--quiet")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout
    for name, why in bad.items():
        assert any(line.startswith("failed") and name in line and why in line
                   for line in proc.stdout.splitlines()), (name, why)
    lines = read_results(tmp_path / "out")
    assert sum(x["status"] == "failed" for x in lines) == 2 * len(bad)  # both services of each
    assert sum(x["status"] == "completed" for x in lines) == 2
    status = _run("status", "--out", str(tmp_path / "out"))
    assert status.returncode == 0 and "2 completed" in status.stdout and "failed files:" in status.stdout
    assert "empty.mp4: " in status.stdout and "throughput:" in status.stdout


def test_wrong_key_one_line_exit_2(fresh: Any, tmp_path: Path) -> None:
    started = time.monotonic()
    proc = _run("run", "fixtures/demo", "--base-url", fresh.base_url, "--out", str(tmp_path / "o"),
                key="not-the-key-XYZ", timeout=60)
    elapsed = time.monotonic() - started
    print(f"wrong key: exit {proc.returncode} after {elapsed:.1f} s")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "401" in errors[0], proc.stderr
    assert proc.stdout == "" and "not-the-key-XYZ" not in proc.stderr


def test_the_key_is_never_written(fresh: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run("run", "fixtures/demo", "--base-url", fresh.base_url, "--out", str(out), "--workers", "0",
                key=fresh.api_key)
    assert proc.returncode == 0, proc.stderr
    assert fresh.api_key not in proc.stdout + proc.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and not any(fresh.api_key.encode() in p.read_bytes() for p in files)


def test_missing_path_is_usage_error(tmp_path: Path) -> None:
    proc = _run("run", str(tmp_path / "nothing"), "--local", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "nothing" in proc.stderr


@pytest.mark.slow
def test_kill_9_then_rerun_completes_once_with_identical_results(good_dir: Path, tmp_path: Path) -> None:
    from seeknetic_prep.emulator import EmulatorConfig, running

    seed = random.randrange(1_000_000)
    threshold = random.Random(seed).randint(1, 30)
    print(f"kill -9 after {threshold} units moved past planned (seed {seed})")
    # reference: an uninterrupted run against its own emulator
    with running(EmulatorConfig(data_dir=tmp_path / "emu-ref")) as ref:
        proc = _run("run", str(good_dir), "--base-url", ref.base_url, "--out", str(tmp_path / "ref"),
                    "--workers", "1", "--quiet", key=ref.api_key)
        assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    with running(EmulatorConfig(data_dir=tmp_path / "emu")) as server:
        child = subprocess.Popen(
            _cli("run", str(good_dir), "--base-url", server.base_url, "--out", str(out),
                 "--workers", "1", "--quiet"),
            env=_env(server.api_key), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            while child.poll() is None and _units_done(out / "state.sqlite") < threshold:
                time.sleep(0.05)
            killed = child.poll() is None
            if killed:
                os.killpg(child.pid, signal.SIGKILL)  # the run and its decode workers
        finally:
            child.wait(timeout=30)
        print(f"killed mid-run: {killed}")
        again = _run("run", str(good_dir), "--base-url", server.base_url, "--out", str(out),
                     "--workers", "1", "--quiet", key=server.api_key)
        assert again.returncode == 0, again.stderr
        lines = read_results(out)
        submissions = server.stats()["submissions"]
        assert {x["request_id"]: submissions.get(x["request_id"]) for x in lines} == {
            x["request_id"]: 1 for x in lines
        }
    assert _strip(lines) == _strip(read_results(tmp_path / "ref"))


@pytest.mark.slow
def test_ctrl_c_keeps_state_and_rerun_completes(good_dir: Path, fresh: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    child = subprocess.Popen(
        _cli("run", str(good_dir), "--base-url", fresh.base_url, "--out", str(out), "--workers", "1",
             "--quiet"),
        env=_env(fresh.api_key), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    while child.poll() is None and _units_done(out / "state.sqlite") < 4:
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr
    assert "seeknetic-prep run: files:" in stdout and "interrupted; state saved" in stderr
    assert "Traceback" not in stderr
    assert _units_done(out / "state.sqlite") >= 4
    again = _run("run", str(good_dir), "--base-url", fresh.base_url, "--out", str(out),
                 "--workers", "1", "--quiet", key=fresh.api_key)
    assert again.returncode == 0, again.stderr
    lines = read_results(out)
    submissions = fresh.stats()["submissions"]
    assert all(x["status"] == "completed" for x in lines)
    assert {submissions.get(x["request_id"]) for x in lines} == {1}


def test_resize_is_part_of_the_ids_and_fixed_per_out_and_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run("run", "fixtures/demo/desert.mp4", "--local", "--out", str(out), "--workers", "0",
                "--resize", "pad", "--report")
    assert proc.returncode == 0, proc.stderr
    lines = read_results(out)
    assert lines and all(x["request_id"].endswith(f"-{x['service']}-pad") for x in lines)
    assert (out / "report.html").stat().st_size > 1000 and f"report: {out / 'report.html'}" in proc.stdout
    other = _run("run", "fixtures/demo/desert.mp4", "--local", "--out", str(out), "--workers", "0")
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert "was made with --resize pad" in other.stderr
