"""The folder run in-process against real emulators: fixtures, faults, 413, quota, auth, resume."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from _pipeline_helpers import read_results

from seeknetic_prep.api.client import Client, RetryPolicy
from seeknetic_prep.pipeline.driver import RunOptions, run_folder
from seeknetic_prep.state.store import Store

FAST = RetryPolicy(max_attempts=8, base_delay_s=0.02, max_delay_s=0.5)


@pytest.fixture()
def fresh(tmp_path: Path) -> Iterator[Any]:
    """An emulator of this test's own: request ids are content-derived, so a shared server would
    already know the jobs another test submitted for the same fixture."""
    from seeknetic_prep.emulator import EmulatorConfig, running

    with running(EmulatorConfig(data_dir=tmp_path / "emu")) as server:
        yield server


def _client(server: Any, key: str | None = None) -> Client:
    return Client(key or server.api_key, base_url=server.base_url, retry=FAST)


def _good_copy(fixtures_dir: Path, dest: Path, names: tuple[str, ...]) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(fixtures_dir / name, dest / Path(name).name)
    return dest


def _assert_submitted_once(server: Any, lines: list[dict[str, Any]]) -> None:
    submissions = server.stats()["submissions"]
    rids = {x["request_id"] for x in lines if x["request_id"]}
    assert rids and {r: submissions.get(r) for r in rids} == {r: 1 for r in rids}


def test_fixtures_every_window_once_bad_files_failed(
    emulator: Any, fixtures_dir: Path, ground_truth: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with _client(emulator) as c:
        summary = run_folder([fixtures_dir], out=out, client=c, options=RunOptions(workers=2))
    lines = read_results(out)
    files = ground_truth["files"]
    good = {k: v for k, v in files.items() if v["kind"] == "good"}
    bad = {k for k, v in files.items() if v["kind"] == "bad"}
    for name, info in good.items():
        mine = [x for x in lines if x["path"] == str(fixtures_dir / name)]
        expected = sorted((s, e, svc) for s, e in info["windows"] for svc in ("embedding", "tagging"))
        assert sorted((x["start_ms"], x["end_ms"], x["service"]) for x in mine) == expected, name
        assert all(x["status"] == "completed" and x["error"] is None for x in mine), name
        for x in mine:
            assert len(x["frame_times_ms"]) == 12
            if x["service"] == "embedding":
                assert isinstance(x["embedding"], list) and len(x["embedding"]) > 0
            else:
                assert isinstance(x["tags"], dict) and x["tags"]
    for name in bad:
        mine = [x for x in lines if x["path"] == str(fixtures_dir / name)]
        assert sorted(x["service"] for x in mine) == ["embedding", "tagging"], name
        assert all(x["status"] == "failed" and name.split("/")[-1] in x["error"] for x in mine)
    assert summary.files_failed == len(bad) and summary.files_ok == len(good)
    assert summary.exit_code == 1
    _assert_submitted_once(emulator, lines)


def test_rerun_touches_nothing_and_gives_the_same_results(
    fresh: Any, fixtures_dir: Path, tmp_path: Path
) -> None:
    src = _good_copy(fixtures_dir, tmp_path / "in", ("demo/lake.mp4", "vfr.mkv"))
    out = tmp_path / "out"
    with _client(fresh) as c:
        first = run_folder([src], out=out, client=c, options=RunOptions(workers=0))
        before = json.dumps(read_results(out))
        second = run_folder([src], out=out, client=c, options=RunOptions(workers=0))
    assert first.exit_code == 0 and second.exit_code == 0
    assert second.windows_decoded == 0 and second.jobs_completed == first.jobs_completed == 6
    assert json.dumps(read_results(out)) == before
    _assert_submitted_once(fresh, read_results(out))


def test_same_content_twice_is_done_once(fresh: Any, fixtures_dir: Path, tmp_path: Path) -> None:
    src = _good_copy(fixtures_dir, tmp_path / "in", ("vp9.webm",))
    shutil.copy(src / "vp9.webm", src / "copy.webm")
    out = tmp_path / "out"
    with _client(fresh) as c:
        summary = run_folder([src], out=out, client=c, options=RunOptions(workers=0))
    lines = read_results(out)
    assert summary.exit_code == 0 and summary.files_ok == 2 and summary.windows_decoded == 1
    assert len(lines) == 4 and len({x["request_id"] for x in lines}) == 2


def test_injected_faults_everything_completes_once(fixtures_dir: Path, tmp_path: Path) -> None:
    from seeknetic_prep.emulator import EmulatorConfig, running

    src = _good_copy(fixtures_dir, tmp_path / "in",
                     ("demo/lake.mp4", "demo/desert.mp4", "vfr.mp4", "no_audio.mp4"))
    with running(EmulatorConfig(data_dir=tmp_path / "emu", fail_rate=0.2, qps=20, seed=3)) as server, \
            Client(server.api_key, base_url=server.base_url, retry=FAST, qps=15) as c:
        summary = run_folder([src], out=tmp_path / "out", client=c, options=RunOptions(workers=1))
        lines = read_results(tmp_path / "out")
        assert summary.exit_code == 0, summary.failures
        assert len(lines) == 2 * 6 and all(x["status"] == "completed" for x in lines)
        _assert_submitted_once(server, lines)


def test_413_uploads_are_split(fixtures_dir: Path, tmp_path: Path) -> None:
    from seeknetic_prep.emulator import EmulatorConfig, running

    src = _good_copy(fixtures_dir, tmp_path / "in", ("demo/desert.mp4",))
    with running(EmulatorConfig(data_dir=tmp_path / "emu", max_body_mb=3)) as server, _client(server) as c:
        summary = run_folder([src], out=tmp_path / "out", client=c, options=RunOptions(workers=0))
        lines = read_results(tmp_path / "out")
        assert summary.exit_code == 0 and all(x["status"] == "completed" for x in lines)
        emb = next(x["request_id"] for x in lines if x["service"] == "embedding")
        assert server.stats()["uploads"][emb] == 2  # video and audio, one request each


def test_quota_stops_with_3_then_resumes(fixtures_dir: Path, tmp_path: Path) -> None:
    from seeknetic_prep.emulator import EmulatorConfig, running

    src = _good_copy(fixtures_dir, tmp_path / "in", ("demo/lake.mp4", "demo/forest.webm", "vfr.mp4"))
    out = tmp_path / "out"
    key = "quota-test-key"
    config = EmulatorConfig(api_keys=(key,), data_dir=tmp_path / "emu", quota=3)
    with running(config) as server, _client(server) as c:
        first = run_folder([src], out=out, client=c, options=RunOptions(workers=0))
    assert first.exit_code == 3 and first.stopped_by == "quota"
    with Store(out / "state.sqlite") as store:
        assert store.counts().get("completed", 0) == 3
        refused = {u.request_id for u in store.units_with_status("uploaded", "planned")}
    with running(replace(config, quota=100)) as server, _client(server) as c:
        second = run_folder([src], out=out, client=c, options=RunOptions(workers=0))
        lines = read_results(out)
        assert second.exit_code == 0
        assert len(lines) == 12 and all(x["status"] == "completed" for x in lines)
        # a submission answered 402 reached the handler but made no job: it may count twice
        submissions = server.stats()["submissions"]
        for x in lines:
            allowed = (1, 2) if x["request_id"] in refused else (1,)
            assert submissions[x["request_id"]] in allowed, x["request_id"]


def test_wrong_key_stops_before_decoding(emulator: Any, fixtures_dir: Path, tmp_path: Path) -> None:
    from seeknetic_prep.errors import AuthenticationError

    with _client(emulator, key="definitely-wrong") as c, pytest.raises(AuthenticationError) as info:
        run_folder([fixtures_dir / "demo"], out=tmp_path / "out", client=c, options=RunOptions(workers=0))
    assert "401" in str(info.value) and "definitely-wrong" not in str(info.value)
    assert not (tmp_path / "out").exists()  # nothing was started


def test_retry_failed_gives_failed_jobs_a_new_id(fresh: Any, fixtures_dir: Path, tmp_path: Path) -> None:
    src = _good_copy(fixtures_dir, tmp_path / "in", ("vp9.webm",))
    out = tmp_path / "out"
    with _client(fresh) as c:
        run_folder([src], out=out, client=c, options=RunOptions(workers=0))
        with Store(out / "state.sqlite") as store:  # pretend the server failed one job
            unit = store.units_with_status("completed")[0]
            store.mark_failed(unit.request_id, "server failure")
            store._write("UPDATE units SET status='failed' WHERE request_id=?", (unit.request_id,))
        failed = run_folder([src], out=out, client=c, options=RunOptions(workers=0))
        assert failed.exit_code == 1
        again = run_folder([src], out=out, client=c, options=RunOptions(workers=0, retry_failed=True))
    lines = read_results(out)
    assert again.exit_code == 0 and all(x["status"] == "completed" for x in lines)
    assert any(x["request_id"] == unit.request_id + "-r1" for x in lines)


@pytest.mark.parametrize("services", [("embedding",), ("tagging",)])
def test_one_service(emulator: Any, fixtures_dir: Path, tmp_path: Path, services: tuple[str, ...]) -> None:
    src = _good_copy(fixtures_dir, tmp_path / "in", ("mjpeg.avi",))
    with _client(emulator) as c:
        summary = run_folder([src], out=tmp_path / "out", client=c,
                             options=RunOptions(workers=0, services=services))
    lines = read_results(tmp_path / "out")
    assert summary.exit_code == 0 and [x["service"] for x in lines] == list(services)


def test_401_mid_run_stops_at_once(fresh: Any, fixtures_dir: Path, tmp_path: Path) -> None:
    from seeknetic_prep.pipeline.driver import Progress

    class RevokeKey(Progress):
        def file_planned(self, path: str, *, windows: int, to_decode: int, jobs: int) -> None:
            fresh.faults.fail_next(10_000, 401)  # the key stops working after the first check

    src = _good_copy(fixtures_dir, tmp_path / "in", ("demo/lake.mp4", "vfr.mp4", "vp9.webm"))
    with _client(fresh) as c:
        summary = run_folder([src], out=tmp_path / "out", client=c, options=RunOptions(workers=0),
                             progress=RevokeKey())
    fresh.faults.reset()
    assert summary.exit_code == 2 and summary.stopped_by == "auth" and "401" in (summary.stop_message or "")
    assert summary.jobs_completed == 0
    assert fresh.faults.injected[401] <= 1 + 4  # one per uploader at most, no retries of a 401


def test_resume_from_every_recorded_step_submits_nothing_twice(
    fresh: Any, fixtures_dir: Path, tmp_path: Path
) -> None:
    """Rewind units in the state to each step a crash can leave them in, then rerun."""
    src = _good_copy(fixtures_dir, tmp_path / "in", ("demo/lake.mp4", "vp9.webm"))
    out = tmp_path / "out"
    with _client(fresh) as c:
        assert run_folder([src], out=out, client=c, options=RunOptions(workers=0)).exit_code == 0
        reference = json.dumps(read_results(out))
        with Store(out / "state.sqlite") as store:
            units = store.units_with_status("completed")
            assert len(units) == 6
            # submitted, answer recorded: must be polled; uploaded: the submission's ack was lost
            # in a crash, so it must be looked up; planned: even the upload ack was lost
            for unit, status in zip(units, ("submitted", "submitted", "uploaded", "uploaded",
                                            "planned", "planned"), strict=True):
                store._write("UPDATE units SET status=?, result=NULL WHERE request_id=?",
                             (status, unit.request_id))
        uploads_before = dict(fresh.stats()["uploads"])
        again = run_folder([src], out=out, client=c, options=RunOptions(workers=0))
    assert again.exit_code == 0 and again.jobs_completed == 6
    assert json.dumps(read_results(out)) == reference
    stats = fresh.stats()
    assert {stats["submissions"][u.request_id] for u in units} == {1}
    uploads = {u.request_id: stats["uploads"][u.request_id] - uploads_before[u.request_id] for u in units}
    assert [uploads[u.request_id] for u in units] == [0, 0, 0, 0, 1, 1]  # only planned re-upload


def _is_decode_worker(proc: Any) -> bool:
    """A decode worker: spawned (NVDEC), or forked by the fork server (not the server itself)."""
    import psutil

    try:
        cmd = " ".join(proc.cmdline())
        parent = proc.parent()
        parent_cmd = " ".join(parent.cmdline()) if parent is not None else ""
    except psutil.Error:
        return False
    return "spawn_main" in cmd or ("forkserver" in cmd and "forkserver" in parent_cmd)


def test_a_dead_decode_worker_does_not_lose_work(fresh: Any, fixtures_dir: Path, tmp_path: Path) -> None:
    import os
    import signal

    import psutil

    from seeknetic_prep.pipeline.driver import Progress

    killed: list[int] = []

    class KillAWorker(Progress):
        def file_planned(self, path: str, *, windows: int, to_decode: int, jobs: int) -> None:
            if killed:
                return
            for child in psutil.Process().children(recursive=True):
                if _is_decode_worker(child):
                    os.kill(child.pid, signal.SIGKILL)  # as the OOM killer would
                    killed.append(child.pid)
                    return

    src = _good_copy(fixtures_dir, tmp_path / "in",
                     ("cfr30_bframes.mp4", "late_audio_25s.mkv", "demo/lake.mp4", "vfr.mp4"))
    with _client(fresh) as c:
        summary = run_folder([src], out=tmp_path / "out", client=c, options=RunOptions(workers=2),
                             progress=KillAWorker())
    lines = read_results(tmp_path / "out")
    assert killed
    assert summary.exit_code == 0, summary.failures
    assert len(lines) == 2 * 9 and all(x["status"] == "completed" for x in lines)
    _assert_submitted_once(fresh, lines)


def test_api_outage_stops_without_failing_units_then_resumes(
    fresh: Any, fixtures_dir: Path, tmp_path: Path
) -> None:
    from seeknetic_prep.pipeline.driver import Progress

    class Outage(Progress):
        def file_planned(self, path: str, *, windows: int, to_decode: int, jobs: int) -> None:
            fresh.faults.fail_next(100_000, 503)

    src = _good_copy(fixtures_dir, tmp_path / "in", ("demo/lake.mp4", "vp9.webm"))
    out = tmp_path / "out"
    brief = RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.02)
    with Client(fresh.api_key, base_url=fresh.base_url, retry=brief) as c:
        first = run_folder([src], out=out, client=c, options=RunOptions(workers=0, unreachable_after_s=1.0),
                           progress=Outage())
    fresh.faults.reset()
    assert first.stopped_by == "unreachable" and first.exit_code == 1 and first.jobs_failed == 0
    with Store(out / "state.sqlite") as store:
        assert store.counts().get("failed", 0) == 0
    with _client(fresh) as c:
        again = run_folder([src], out=out, client=c, options=RunOptions(workers=0))
    lines = read_results(out)
    assert again.exit_code == 0 and len(lines) == 6
    _assert_submitted_once(fresh, lines)
