"""The emulator on a full disk (issue 22.8): 503 with ``Retry-After`` and a reason, one log line,
no partial files, no job failed for it, and a run that completes once space returns.

Most cases use the ``storage_full`` fault knob (every file write raises ``ENOSPC`` after its first
bytes, every SQLite write ``SQLITE_FULL``), which goes through the same handling as a real full
disk; one case fills a real 30 MB tmpfs (root only: it mounts one).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from _disk import fill, tmpfs
from _emulator_helpers import Api, embedding_body
from _pipeline_helpers import read_results

from seeknetic_prep.emulator import EmulatorConfig, EmulatorHandle, running
from seeknetic_prep.emulator.storage import space

KEY = "sk-storage-full"


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[EmulatorHandle]:
    with running(EmulatorConfig(api_keys=(KEY,), data_dir=tmp_path / "emu", job_seconds=0.2)) as handle:
        yield handle


def _files(data_dir: Path) -> list[Path]:
    """Every file the emulator wrote for uploads and videos (temporary ones included)."""
    return sorted(p for top in ("tensors", "videos") for p in (data_dir / top).rglob("*") if p.is_file())


def _full_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("storage full:")]


def _assert_no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not noisy, [r.getMessage() for r in noisy]


def _assert_503_full(r: requests.Response) -> None:
    assert r.status_code == 503, r.text
    assert int(r.headers["Retry-After"]) >= 1
    detail = r.json()["detail"]
    assert "storage is full" in detail and "retry after" in detail, detail


def test_uploads_and_submissions_get_503_while_full_and_keep_nothing(
    server: EmulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    api = Api(server.base_url, KEY)
    keys = api.upload(embedding_body("stored-before"))["r2_keys"]
    before = _files(server.data_dir)
    started = time.monotonic()
    server.faults.storage_full = True
    for i in range(6):
        _assert_503_full(api.post("/files/upload/tensors", embedding_body(f"while-full-{i}")))
    tensor = {"video_input_key": keys["video_input"], "audio_input_key": keys["audio_input"]}
    _assert_503_full(api.post("/video_embedding/encode_video/async",
                              {"request_id": "stored-before", "tensor": tensor}))
    _assert_503_full(api.post("/video_embedding/encode_video/async",
                              {"request_id": "b64-while-full", "video_base64": "AAAAGGZ0eXBpc29t"}))
    # Reads still answer: the job was not created, nothing of the uploads was kept.
    assert api.get("/async_status/stored-before").status_code == 404
    assert _files(server.data_dir) == before, "a refused write left a file behind"
    assert server.stats()["uploads"] == {"stored-before": 1}
    lines = _full_lines(caplog)
    # One line for the whole episode (one more per 30 s at most, should this machine be that slow).
    assert 1 <= len(lines) <= 1 + int((time.monotonic() - started) / space.LOG_EVERY_S)
    assert "503" in lines[0] and "Retry-After" in lines[0]
    _assert_no_tracebacks(caplog)

    server.faults.storage_full = False  # space returns: the client's retries go through
    assert api.upload(embedding_body("while-full-0"))["request_id"] == "while-full-0"
    r = api.post("/video_embedding/encode_video/async", {"request_id": "stored-before", "tensor": tensor})
    assert r.status_code == 200, r.text
    assert api.wait("stored-before")["status"] == "completed"
    assert any("writes succeed again" in r.getMessage() for r in caplog.records)
    _assert_no_tracebacks(caplog)


def test_a_job_whose_result_cannot_be_stored_waits_for_space(
    server: EmulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    api = Api(server.base_url, KEY)
    server.job_seconds = 3600  # not due until the disk is full
    keys = api.upload(embedding_body("result-later"))["r2_keys"]
    tensor = {"video_input_key": keys["video_input"], "audio_input_key": keys["audio_input"]}
    r = api.post("/video_embedding/encode_video/async", {"request_id": "result-later", "tensor": tensor})
    assert r.status_code == 200, r.text
    server.faults.storage_full = True
    server.job_seconds = 0  # due now: the worker tries to store its result on a full disk
    deadline = time.monotonic() + 60
    while not any("cannot write to the database" in line for line in _full_lines(caplog)):
        assert time.monotonic() < deadline, "the worker never tried to finish the job"
        time.sleep(0.05)
    for _ in range(3):  # the worker tries again about every second: it stays unfinished
        assert api.get("/async_status/result-later").json()["status"] in ("pending", "processing")
        time.sleep(0.5)
    _assert_no_tracebacks(caplog)
    server.faults.storage_full = False
    done = api.wait("result-later")
    assert done["status"] == "completed" and len(done["embedding"]) == 1024


def test_a_run_during_a_full_disk_completes_once_space_returns(
    fixtures_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Uploads and submissions meet 503s (never 500) while the disk is full; the client's own
    retries complete every job once it is freed, each request_id submitted once."""
    from seeknetic_prep.api.client import Client
    from seeknetic_prep.pipeline.driver import Progress, RunOptions, run_folder

    caplog.set_level(logging.INFO)
    src = tmp_path / "in"
    src.mkdir()
    for name in ("short_700ms.mp4", "no_audio.mp4"):
        shutil.copy(fixtures_dir / name, src / name)
    with running(EmulatorConfig(api_keys=(KEY,), data_dir=tmp_path / "emu", job_seconds=0.2)) as server:
        refused = server.storage.space

        class FreeSpaceLater(Progress):
            def api_event(self, kind: str) -> None:
                if refused.refused >= 4:
                    server.faults.storage_full = False  # space returns after four refusals

        server.faults.storage_full = True
        with Client(KEY, base_url=server.base_url) as client:
            summary = run_folder([src], out=tmp_path / "out", client=client,
                                 options=RunOptions(workers=1), progress=FreeSpaceLater())
        lines = read_results(tmp_path / "out")
        assert summary.exit_code == 0, (summary.stopped_by, summary.failures)
        assert lines and all(x["status"] == "completed" for x in lines)
        submissions = server.stats()["submissions"]
        assert {submissions.get(x["request_id"]) for x in lines} == {1}
        assert refused.refused >= 4
    assert _full_lines(caplog)
    _assert_no_tracebacks(caplog)  # no 500: nothing raised past a handler


def test_a_long_full_disk_fails_no_unit(
    fixtures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 503 with Retry-After is a busy server, waited out as a 429 is: however many refusals
    (here 30, with a policy of 2 attempts, so 8 refusals would have failed a unit after its four
    rounds), no unit fails for it; the unreachable clock alone may stop such a run."""
    from seeknetic_prep.api.client import Client, RetryPolicy
    from seeknetic_prep.pipeline.driver import Progress, RunOptions, run_folder

    monkeypatch.setattr(space, "RETRY_AFTER_S", 0.05)  # what the 503s ask for: keeps the test short
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(fixtures_dir / "short_700ms.mp4", src / "a.mp4")
    with running(EmulatorConfig(api_keys=(KEY,), data_dir=tmp_path / "emu", job_seconds=0.2)) as server:
        refused = server.storage.space
        kinds: list[str] = []

        class FreeSpaceLater(Progress):
            def api_event(self, kind: str) -> None:
                kinds.append(kind)
                if refused.refused >= 30:
                    server.faults.storage_full = False

        server.faults.storage_full = True
        with Client(KEY, base_url=server.base_url, retry=RetryPolicy(max_attempts=2)) as client:
            summary = run_folder([src], out=tmp_path / "out", client=client,
                                 options=RunOptions(workers=1), progress=FreeSpaceLater())
        assert summary.exit_code == 0, (summary.stopped_by, summary.failures)
        assert refused.refused >= 30 and set(kinds) == {"busy"}
        lines = read_results(tmp_path / "out")
        assert lines and all(x["status"] == "completed" for x in lines)
        assert set(server.stats()["submissions"].values()) == {1}


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_real_fulltmpfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           caplog: pytest.LogCaptureFixture) -> None:
    """A 30 MB tmpfs, really full: the write fails with a real ENOSPC (the free-space check
    before it is off for that), answered 503 with no file left; with the check on, an upload
    that would leave less than the reserve is refused before any byte is written; freed, the
    same upload goes through."""
    caplog.set_level(logging.INFO)
    with tmpfs(tmp_path / "mnt", 30) as mnt, \
            running(EmulatorConfig(api_keys=(KEY,), data_dir=mnt / "emu", job_seconds=0.2)) as server:
        api = Api(server.base_url, KEY)
        body: dict[str, Any] = embedding_body("real-full")
        api.upload(embedding_body("fits"))
        monkeypatch.setattr(space.Space, "reserve", lambda *_: None)
        fill(mnt, leave_bytes=1 << 20)  # 1 MB free: the 2.4 MB video cannot be written
        _assert_503_full(api.post("/files/upload/tensors", body))
        assert "No space left on device" in api.post("/files/upload/tensors", body).json()["detail"]
        assert not [p for p in _files(mnt / "emu") if "real-full" in str(p)]
        for _ in range(5):  # SQLite's own writes (a job, the counts) on a full disk: never a 500
            r = api.post("/video_embedding/encode_video/async", {"request_id": "real-full-b64",
                                                                 "video_base64": "AAAAGGZ0eXBpc29t"})
            assert r.status_code in (200, 503), r.text
        monkeypatch.undo()
        (mnt / "filler").unlink()
        fill(mnt, leave_bytes=9 << 20)  # room for the write, not for the reserve after it
        r = api.post("/files/upload/tensors", body)
        _assert_503_full(r)
        assert "kept for jobs in progress" in r.json()["detail"]
        (mnt / "filler").unlink()
        assert api.upload(body)["request_id"] == "real-full"
        _assert_no_tracebacks(caplog)


def test_the_log_says_it_once_per_episode_and_when_writes_succeed_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    now = [0.0]
    room = space.Space(tmp_path, clock=lambda: now[0])
    full = OSError(28, "No space left on device")
    for _ in range(50):
        room.full("files", "x", full)
    now[0] += space.LOG_EVERY_S + 1
    room.full("files", "y", full)
    room.ok("database")  # another kind of write: says nothing
    room.ok("files")
    room.ok("files")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3, messages
    assert "49 more refused" in messages[1]
    assert "files writes succeed again" in messages[2] and "51 refused" in messages[2]
    threading.Thread(target=room.ok, args=("files",)).start()  # thread-safe, and quiet now
