"""The emulator drops a job's tensors once it has finished (unless --keep-tensors), over HTTP."""

from __future__ import annotations

import time
from pathlib import Path

from _emulator_helpers import Api, embedding_body, start_cli

from seeknetic_prep.emulator import EmulatorConfig, EmulatorHandle, running
from seeknetic_prep.emulator.config import owner_id

KEY = "retention-key"


def _tensor_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "tensors").rglob("*.json"))


def _wait_dropped(server: EmulatorHandle, keys: dict[str, str], timeout: float = 30) -> None:
    """Wait until the objects ``keys`` name are deleted, files and rows.

    The worker deletes a job's tensors just after it commits the job's result (never before: a
    crash in between would leave a job that can no longer be scored), so a poll that has just
    seen ``completed`` can come before the deletion.
    """
    deadline = time.monotonic() + timeout
    owner = owner_id(server.api_key)
    while not all(server.storage.retention.was_dropped(owner, key) for key in keys.values()):
        assert time.monotonic() < deadline, f"{sorted(keys.values())} still not deleted"
        time.sleep(0.01)


def _submit(api: Api, request_id: str, keys: dict[str, str]) -> int:
    tensor = {"video_input_key": keys["video_input"], "audio_input_key": keys["audio_input"]}
    r = api.post("/video_embedding/encode_video/async", {"request_id": request_id, "tensor": tensor})
    return r.status_code


def test_finished_jobs_lose_their_tensors_and_keep_their_results(tmp_path: Path) -> None:
    with running(EmulatorConfig(api_keys=(KEY,), data_dir=tmp_path, job_seconds=0.1)) as server:
        api = Api(server.base_url, KEY)
        keys = api.upload(embedding_body("drop-1", seed=1))["r2_keys"]
        assert len(_tensor_files(tmp_path)) == 2  # kept until a job has used them
        assert _submit(api, "drop-1", keys) == 200
        first = api.wait("drop-1")
        assert first["status"] == "completed" and len(first["embedding"]) == 1024
        _wait_dropped(server, keys)
        assert _tensor_files(tmp_path) == []
        assert not (tmp_path / "tensors" / owner_id(KEY) / "drop-1").exists()
        # The result is still served, and a repeat of the job is still the same job.
        assert api.wait("drop-1") == first
        assert _submit(api, "drop-1", keys) == 200
        # A new job naming the deleted tensors gets a 404 that says why and what to do.
        r = api.post(
            "/video_embedding/encode_video/async",
            {"request_id": "drop-2", "tensor": {"video_input_key": keys["video_input"]}},
        )
        assert r.status_code == 404
        assert "was deleted when the jobs that used it finished" in r.json()["detail"]
        assert "upload it again" in r.json()["detail"]
        # Uploading again makes them usable again.
        keys = api.upload(embedding_body("drop-1", seed=1))["r2_keys"]
        assert _submit(api, "drop-2", keys) == 200
        assert api.wait("drop-2")["embedding"] == first["embedding"]
        _wait_dropped(server, keys)
        assert _tensor_files(tmp_path) == []
    # After a restart the results are still there (they live in SQLite, not with the tensors).
    with running(EmulatorConfig(api_keys=(KEY,), data_dir=tmp_path)) as server:
        assert Api(server.base_url, KEY).wait("drop-1") == first


def test_keep_tensors_keeps_them_and_a_later_start_without_it_sweeps(tmp_path: Path) -> None:
    config = EmulatorConfig(api_keys=(KEY,), data_dir=tmp_path, job_seconds=0.1, keep_tensors=True)
    with running(config) as server:
        api = Api(server.base_url, KEY)
        keys = api.upload(embedding_body("keep-1", seed=2))["r2_keys"]
        assert _submit(api, "keep-1", keys) == 200
        assert api.wait("keep-1")["status"] == "completed"
        assert len(_tensor_files(tmp_path)) == 2
    with running(EmulatorConfig(api_keys=(KEY,), data_dir=tmp_path)) as server:  # the start-up sweep
        assert _tensor_files(tmp_path) == []
        assert Api(server.base_url, KEY).wait("keep-1")["status"] == "completed"


def test_cli_flag_keep_tensors(tmp_path: Path) -> None:
    emu = start_cli(["--api-key", KEY, "--data-dir", str(tmp_path), "--job-seconds", "0.1",
                     "--keep-tensors", "--no-access-log"])
    try:
        api = Api(emu.base_url, KEY)
        keys = api.upload(embedding_body("cli-1", seed=3))["r2_keys"]
        assert _submit(api, "cli-1", keys) == 200
        assert api.wait("cli-1")["status"] == "completed"
        assert len(_tensor_files(tmp_path)) == 2
    finally:
        emu.stop()


def test_tensors_shared_by_two_jobs_stay_until_both_finish(tmp_path: Path) -> None:
    config = EmulatorConfig(api_keys=(KEY,), data_dir=tmp_path, job_seconds=600)  # jobs stay pending
    with running(config) as server:
        api = Api(server.base_url, KEY)
        keys = api.upload(embedding_body("shared", seed=4))["r2_keys"]
        assert _submit(api, "job-a", keys) == 200 and _submit(api, "job-b", keys) == 200
        storage, owner = server.storage, owner_id(KEY)
        a, b = storage.jobs.get(owner, "job-a"), storage.jobs.get(owner, "job-b")
        assert a is not None and b is not None
        storage.jobs.finish(a, result={"embedding": [0.0]})
        assert storage.retention.drop_job_tensors(a) == 0  # job-b still needs them
        assert len(_tensor_files(tmp_path)) == 2
        storage.jobs.finish(b, result={"embedding": [0.0]})
        assert storage.retention.drop_job_tensors(b) == 2
        assert _tensor_files(tmp_path) == []
        assert storage.retention.was_dropped(owner, keys["video_input"])
