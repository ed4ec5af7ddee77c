"""``seeknetic-prep emulator`` as a subprocess: the official SDK against it, kill -9, 200 MB bodies."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from _emulator_helpers import (
    Api,
    CliEmulator,
    embedding_body,
    raw_post_streaming,
    sample_rss,
    seed_audio,
    seed_video,
    start_cli,
    tagging_body,
)

from seeknetic_prep.api.tensors import decode_tensor, encode_tensor

seeknetic = pytest.importorskip("seeknetic")

KEY = "cli-test-key-3f9a"


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliEmulator]:
    data = tmp_path_factory.mktemp("cli-emu")
    emu = start_cli(["--api-key", KEY, "--data-dir", str(data), "--qps", "20", "--job-seconds", "0.3"])
    try:
        yield emu
    finally:
        output = emu.stop()
        assert KEY not in output, "the API key must never be logged"


def _sdk(cli: CliEmulator, **kw: Any) -> Any:
    return seeknetic.Seeknetic(api_key=kw.pop("api_key", KEY), base_url=cli.base_url, **kw)


def _wait(client: Any, request_id: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status = client.async_status.retrieve(request_id)
        if status.status in ("completed", "failed"):
            return status
        assert time.monotonic() < deadline, f"{request_id} still {status.status}"
        time.sleep(0.15)


# -- acceptance 1: the official SDK workflow against the CLI emulator ------------------------------


def test_sdk_embedding_workflow_seed_and_sdk_shapes(cli: CliEmulator) -> None:
    client = _sdk(cli)
    shapes = {
        "sdk-emb-seed": (seed_video(1), seed_audio(1)),
        "sdk-emb-own": (np.full((4, 3, 112, 168), 90, np.uint8), np.zeros(32000, np.float32)),
    }
    for rid, (video, audio) in shapes.items():
        up = client.files.upload.upload_tensor(
            service="embedding",
            request_id=rid,
            video_input=encode_tensor(video),
            audio_input=encode_tensor(audio),
        )
        assert up.status == "uploaded" and up.request_id == rid
        job = client.video_embedding.encode_video.submit_async(
            tensor={
                "video_input_key": up.r2_keys["video_input"],
                "audio_input_key": up.r2_keys["audio_input"],
            },
            request_id=rid,
        )
        assert (job.request_id, job.status, job.task_type) == (rid, "pending", "embedding")
    for rid in shapes:
        done = _wait(client, rid)
        assert done.status == "completed", done.error_message
        assert done.task_type == "embedding" and "emulated" in (done.api_model_name or "")
        assert done.created_at is not None and done.updated_at >= done.created_at
        assert done.embedding is not None and len(done.embedding) == 1024
        assert abs(float(np.linalg.norm(done.embedding)) - 1) < 1e-6


def test_sdk_tagging_workflow(cli: CliEmulator) -> None:
    client = _sdk(cli)
    video = seed_video(2)[0, :6, :, :112, :112].copy()
    up = client.files.upload.upload_tensor(
        service="tagging",
        request_id="sdk-tag-1",
        video_input={
            "tensor": encode_tensor(video),
            "metadata": {"fps": 30.0, "frames_indices": [0, 5, 10, 15, 20, 25], "total_num_frames": 30},
        },
        video_kwargs={"do_sample_frames": False},
    )
    job = client.video_tagging.submit_async_job(
        tensor={"video_input_key": up.r2_keys["video_input"], "video_kwargs_key": up.r2_keys["video_kwargs"]},
        request_id="sdk-tag-1",
    )
    assert job.task_type == "tagging"
    done = _wait(client, "sdk-tag-1")
    assert done.status == "completed", done.error_message
    assert done.tags is not None
    assert {"shot_size", "camera_movement", "shooting_angle"} <= set(done.tags)
    assert done.tags["frames_analyzed"] == 6


def test_sdk_encode_text(cli: CliEmulator) -> None:
    client = _sdk(cli)
    first = client.video_embedding.encode_text(text="a red car at night")
    second = client.video_embedding.encode_text(text="a red car at night")
    assert len(first.embedding) == 1024 and first.embedding == second.embedding


def test_sdk_typed_errors(cli: CliEmulator) -> None:
    with pytest.raises(seeknetic.AuthenticationError) as auth:
        _sdk(cli, api_key="not-the-key", max_retries=0).video_embedding.encode_text(text="x")
    assert auth.value.status_code == 401
    assert auth.value.body == {"detail": "Invalid API key: it is not one this server accepts."}

    client = _sdk(cli, max_retries=0)
    with pytest.raises(seeknetic.UnprocessableEntityError) as bad:
        client.files.upload.upload_tensor(
            service="embedding", request_id="sdk-bad", video_input=encode_tensor(np.zeros((2, 2), np.uint8))
        )
    assert "video_input has shape [2, 2]" in bad.value.body["detail"][0]["msg"]
    with pytest.raises(seeknetic.UnprocessableEntityError):
        client.video_embedding.encode_text(text="  ")
    with pytest.raises(seeknetic.NotFoundError):
        client.async_status.retrieve("sdk-no-such-job")

    def burst(_: int) -> BaseException | None:
        try:
            client.video_embedding.encode_text(text="burst")
        except seeknetic.APIStatusError as exc:
            error: BaseException = exc
            return error
        return None

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(burst, range(120)))
    limited_all = [e for e in outcomes if isinstance(e, seeknetic.RateLimitError)]
    assert limited_all, "a burst far over --qps 20 must meet RateLimitError"
    assert all(e is None or isinstance(e, seeknetic.RateLimitError) for e in outcomes)
    limited = limited_all[0]
    assert limited.response.headers["retry-after"] == "1"
    assert limited.body["detail"].startswith("Rate limit: over 20 requests per second")
    time.sleep(1.1)  # let the bucket refill for whoever runs next


def test_stats_and_key_never_in_output_so_far(cli: CliEmulator) -> None:
    stats = Api(cli.base_url, KEY).get("/_emulator/stats").json()
    assert stats["uploads"]["sdk-emb-seed"] == 1 and stats["submissions"]["sdk-emb-seed"] == 1
    assert all(KEY not in line for line in cli.output)


def test_generated_key_is_printed_exactly_once(tmp_path: Path) -> None:
    emu = start_cli(["--data-dir", str(tmp_path)])
    try:
        key_lines = [line for line in emu.output if line.startswith("Generated API key: ")]
        assert len(key_lines) == 1
        key = key_lines[0].split(": ", 1)[1].strip()
        r = requests.post(
            emu.base_url + "/video_embedding/encode_text",
            json={"text": "x"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert r.status_code == 200
    finally:
        output = emu.stop()
    assert output.count(key) == 1
    assert "POST /video_embedding/encode_text" in output  # the access log is on, and keyless


# -- acceptance 3: 200 MB bodies answered 413 with flat server memory ---------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_200mb_body_is_413_with_flat_memory(tmp_path: Path, chunked: bool) -> None:
    psutil = pytest.importorskip("psutil")
    emu = start_cli(["--api-key", KEY, "--data-dir", str(tmp_path), "--no-access-log"])
    try:
        api = Api(emu.base_url, KEY)
        api.upload(embedding_body("warm-up"))  # load every code path before the baseline
        base = psutil.Process(emu.pid).memory_info().rss
        stop, samples = threading.Event(), list[int]()
        sampler = threading.Thread(target=sample_rss, args=(emu.pid, stop, samples))
        sampler.start()
        try:
            status, response, sent = raw_post_streaming(
                emu.base_url,
                "/files/upload/tensors",
                {"X-API-Key": KEY},
                total_bytes=200 * 2**20,
                chunked=chunked,
            )
        finally:
            stop.set()
            sampler.join()
        peak = max([*samples, psutil.Process(emu.pid).memory_info().rss])
        growth_mb = (peak - base) / 2**20
        print(
            f"\n200 MB {'chunked' if chunked else 'Content-Length'} body: "
            f"413 after {sent / 2**20:.1f} MB sent; "
            f"server RSS {base / 2**20:.1f} MB -> peak {peak / 2**20:.1f} MB (+{growth_mb:.1f} MB)"
        )
        assert status == 413
        detail = json.loads(response.partition(b"\r\n\r\n")[2])["detail"]
        assert detail.startswith("Request body too large:") and "67108864 bytes (64 MB)" in detail
        assert sent < (100 if chunked else 8) * 2**20  # stopped long before 200 MB
        assert growth_mb < 100
        assert api.get("/async_status/after-413").status_code == 404  # still serving
    finally:
        emu.stop()


# -- acceptance 4: kill -9 with jobs pending, restart on the same data dir ---------------------------


def _gone(path: Path, timeout: float = 30.0) -> bool:
    """Whether ``path`` is deleted within ``timeout``: the worker drops a job's tensors just
    after it commits the result, so a client can see ``completed`` first (on a busy machine,
    seen in CI): wait for the effect, not the status."""
    deadline = time.monotonic() + timeout
    while path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_kill9_with_jobs_pending_then_restart_completes_them(tmp_path: Path) -> None:
    args = ["--api-key", KEY, "--data-dir", str(tmp_path), "--job-seconds", "6"]
    emu = start_cli(args)
    api = Api(emu.base_url, KEY)
    uploaded: dict[str, dict[str, str]] = {}
    for i in range(3):
        uploaded[f"k9-emb-{i}"] = api.upload(embedding_body(f"k9-emb-{i}", seed=i))["r2_keys"]
    uploaded["k9-tag"] = api.upload(tagging_body("k9-tag", seed=9))["r2_keys"]
    uploaded["k9-later"] = api.upload(embedding_body("k9-later", seed=5))["r2_keys"]  # no job yet
    for i in range(3):
        keys = uploaded[f"k9-emb-{i}"]
        r = api.post(
            "/video_embedding/encode_video/async",
            {
                "request_id": f"k9-emb-{i}",
                "tensor": {"video_input_key": keys["video_input"], "audio_input_key": keys["audio_input"]},
            },
        )
        assert r.json()["status"] == "pending"
    tag_keys = uploaded["k9-tag"]
    api.post(
        "/video_tagging/async",
        {"request_id": "k9-tag", "tensor": {"video_input_key": tag_keys["video_input"]}},
    )
    statuses = {rid: api.get(f"/async_status/{rid}").json()["status"] for rid in ("k9-emb-0", "k9-tag")}
    assert set(statuses.values()) <= {"pending", "processing"}, statuses

    emu.kill9()
    assert emu.proc.returncode == -9
    with sqlite3.connect(tmp_path / "emulator.sqlite3") as db:
        unfinished = db.execute(
            "SELECT COUNT(*) FROM jobs WHERE status IN ('pending', 'processing')"
        ).fetchone()[0]
    assert unfinished == 4

    emu2 = start_cli(args)
    try:
        api2 = Api(emu2.base_url, KEY)
        results = {rid: api2.wait(rid, timeout=90) for rid in ("k9-emb-0", "k9-emb-1", "k9-emb-2", "k9-tag")}
        assert all(r["status"] == "completed" for r in results.values()), results
        assert len({tuple(results[f"k9-emb-{i}"]["embedding"][:4]) for i in range(3)}) == 3
        # The upload no job has used yet is still there and readable: its file decodes and a
        # new job can use it. Those the finished jobs named were deleted (no --keep-tensors).
        owner = next((tmp_path / "tensors").iterdir())
        for rid, keys in uploaded.items():
            for name in keys:
                path = owner / rid / f"{name}.json"
                if rid == "k9-later":
                    stored = json.loads(path.read_text())
                    if name == "video_input":
                        decode_tensor(stored)
                elif name != "video_kwargs":  # the tagging job above named only its video
                    assert _gone(path), path
        later = uploaded["k9-later"]
        r = api2.post(
            "/video_embedding/encode_video/async",
            {
                "request_id": "k9-later",
                "tensor": {"video_input_key": later["video_input"], "audio_input_key": later["audio_input"]},
            },
        )
        assert r.status_code == 200
        assert api2.wait("k9-later", timeout=90)["status"] == "completed"
        stats = api2.get("/_emulator/stats").json()
        assert all(stats["submissions"][rid] == 1 for rid in results)
        files = sum(len(keys) for keys in uploaded.values())
        print(
            f"\nkill -9 with {unfinished} jobs unfinished; after restart {len(results)} completed, "
            f"{len(uploaded)} uploads ({files} objects) kept until used, 1 new job on an old upload completed"
        )
    finally:
        output = emu2.stop()
    assert KEY not in output
