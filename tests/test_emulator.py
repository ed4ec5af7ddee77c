"""The emulator over real HTTP on loopback: every endpoint, every status, every fault knob."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from _emulator_helpers import Api, embedding_body, raw_post_streaming, seed_audio, seed_video, tagging_body

from seeknetic_prep.api.tensors import decode_tensor, encode_tensor
from seeknetic_prep.emulator import EmulatorConfig, EmulatorHandle, running
from seeknetic_prep.errors import InvalidArgumentError

KEY, OTHER_KEY = "test-key-one", "test-key-two"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    with running(EmulatorConfig(
        api_keys=(KEY, OTHER_KEY), data_dir=tmp_path_factory.mktemp("emu"), job_seconds=0.2, max_body_mb=8
    )) as handle:
        yield handle


@pytest.fixture(autouse=True)
def _clean_knobs(server: EmulatorHandle) -> Iterator[None]:
    yield
    server.faults.reset()
    server.qps = None
    server.quota = None


@pytest.fixture()
def api(server: EmulatorHandle) -> Api:
    return Api(server.base_url, KEY)


@pytest.fixture()
def other(server: EmulatorHandle) -> Api:
    return Api(server.base_url, OTHER_KEY)


def _submit_embedding(api: Api, request_id: str, keys: dict[str, str]) -> requests.Response:
    tensor = {"video_input_key": keys["video_input"], "audio_input_key": keys["audio_input"]}
    return api.post("/video_embedding/encode_video/async", {"request_id": request_id, "tensor": tensor})


def _loc_msgs(response: requests.Response) -> list[tuple[list[Any], str]]:
    detail = response.json()["detail"]
    assert isinstance(detail, list), detail
    return [(d["loc"], d["msg"]) for d in detail]


# -- uploads ---------------------------------------------------------------------------------------


def test_upload_stores_tensors_atomically_under_data_dir(server: EmulatorHandle, api: Api) -> None:
    answer = api.upload(embedding_body("up-1"))
    assert answer == {
        "request_id": "up-1",
        "r2_keys": {
            "video_input": "tensors/up-1/video_input.json",
            "audio_input": "tensors/up-1/audio_input.json",
        },
        "status": "uploaded",
    }
    files = sorted(p for p in Path(server.data_dir).rglob("*") if "up-1" in p.parts and p.is_file())
    assert [p.name for p in files] == ["audio_input.json", "video_input.json"]
    assert all(Path(server.data_dir).resolve() in p.resolve().parents for p in files)
    stored = decode_tensor(json.loads((files[1]).read_text()))
    np.testing.assert_array_equal(stored, seed_video(0))
    assert not list(Path(server.data_dir).rglob("*.tmp")), "no temporary file may be left behind"


def test_upload_without_request_id_gets_one(api: Api) -> None:
    body = embedding_body("x")
    del body["request_id"]
    answer = api.upload(body)
    assert answer["request_id"].startswith("emu-")
    assert answer["r2_keys"]["video_input"] == f"tensors/{answer['request_id']}/video_input.json"


def test_one_tensor_per_request_adds_keys_and_same_name_replaces(server: EmulatorHandle, api: Api) -> None:
    full = embedding_body("split-1", seed=1)
    first = api.upload({"service": "embedding", "request_id": "split-1", "video_input": full["video_input"]})
    assert first["r2_keys"] == {"video_input": "tensors/split-1/video_input.json"}
    second = api.upload({"service": "embedding", "request_id": "split-1", "audio_input": full["audio_input"]})
    assert second["r2_keys"] == {
        "video_input": "tensors/split-1/video_input.json",
        "audio_input": "tensors/split-1/audio_input.json",
    }
    api.upload({"service": "embedding", "request_id": "split-1", "video_input": encode_tensor(seed_video(2))})
    stored = server.storage.uploads.read_object(
        server.storage.uploads.of_owner(_owner(KEY))[0].owner, first["r2_keys"]["video_input"]
    )
    np.testing.assert_array_equal(decode_tensor(stored), seed_video(2))
    assert api.get("/_emulator/stats").json()["uploads"]["split-1"] == 3


def _owner(key: str) -> str:
    from seeknetic_prep.emulator.config import owner_id

    return owner_id(key)


def test_sdk_shapes_and_metadata_form_are_accepted(server: EmulatorHandle, api: Api) -> None:
    video = np.zeros((4, 3, 56, 84), np.uint8)
    audio = np.zeros(16000, np.float32)
    emb = api.upload(
        {
            "service": "embedding",
            "request_id": "sdk-1",
            "video_input": encode_tensor(video),
            "audio_input": encode_tensor(audio),
        }
    )
    assert set(emb["r2_keys"]) == {"video_input", "audio_input"}
    tag = api.upload(
        {
            "service": "tagging",
            "request_id": "sdk-2",
            "video_input": {
                "tensor": encode_tensor(video),
                "metadata": {"fps": 25.0, "frames_indices": [0, 1, 2, 3]},
            },
            "video_kwargs": {"do_sample_frames": False},
        }
    )
    assert tag["r2_keys"] == {
        "video_input": "tensors/sdk-2/video_input.json",
        "video_kwargs": "tensors/sdk-2/video_kwargs.json",
    }
    stored = server.storage.uploads.read_object(_owner(KEY), tag["r2_keys"]["video_input"])
    assert stored["metadata"] == {"fps": 25.0, "frames_indices": [0, 1, 2, 3]}
    np.testing.assert_array_equal(decode_tensor(stored["tensor"]), video)
    kwargs = server.storage.uploads.read_object(_owner(KEY), tag["r2_keys"]["video_kwargs"])
    assert kwargs == {"do_sample_frames": False}


@pytest.mark.parametrize(
    ("mutate", "loc", "needle"),
    [
        (
            lambda b: b.__setitem__("video_input", encode_tensor(seed_video()[0, :, 0])),
            ["body", "video_input"],
            "has shape [12, 224, 224]: must be [1, 12, 3, 224, 224]",
        ),
        (
            lambda b: b.__setitem__("video_input", encode_tensor(np.zeros((2, 3, 8, 8), np.float32))),
            ["body", "video_input"],
            "dtype float32: must be uint8",
        ),
        (
            lambda b: b.__setitem__("audio_input", encode_tensor(np.zeros((1, 2, 220500), np.float32))),
            ["body", "audio_input"],
            "has shape [1, 2, 220500]",
        ),
        (
            lambda b: b.__setitem__("audio_input", encode_tensor(np.full(10, np.nan, np.float32))),
            ["body", "audio_input"],
            "NaN or infinite",
        ),
        (
            lambda b: b["video_input"].__setitem__("data", "@@not base64@@"),
            ["body", "video_input"],
            "not standard base64",
        ),
        (
            lambda b: b["video_input"].__setitem__("shape", [1, 12, 3, 224, 225]),
            ["body", "video_input"],
            "data holds 1806336",
        ),
        (
            lambda b: b["video_input"].__setitem__("dtype", "int64"),
            ["body", "video_input", "TensorDict", "dtype"],
            "Input should be",
        ),
        (lambda b: b.__setitem__("request_id", ".."), ["body", "request_id"], "String should match pattern"),
        (lambda b: b.__setitem__("request_id", "a/b"), ["body", "request_id"], "String should match pattern"),
        (
            lambda b: b.__setitem__("request_id", "x" * 129),
            ["body", "request_id"],
            "String should match pattern",
        ),
        (lambda b: b.__setitem__("audio", 1), ["body", "audio"], "Extra inputs are not permitted"),
        (lambda b: b.pop("service"), ["body", "service"], "Field required"),
        (
            lambda b: b.__setitem__("video_kwargs", {"fps": -1}),
            ["body", "video_kwargs", "fps"],
            "must be a number > 0",
        ),
    ],
)
def test_upload_422_names_field_and_rule(api: Api, mutate: Any, loc: list[str], needle: str) -> None:
    body = embedding_body("bad-1")
    mutate(body)
    r = api.post("/files/upload/tensors", body)
    assert r.status_code == 422, r.text
    errors = _loc_msgs(r)
    assert any(e_loc[: len(loc)] == loc and needle in msg for e_loc, msg in errors), errors


def test_upload_with_nothing_to_store_is_422(api: Api) -> None:
    r = api.post("/files/upload/tensors", {"service": "embedding", "request_id": "empty-1"})
    assert r.status_code == 422
    assert "at least one of video_input, audio_input, video_kwargs" in _loc_msgs(r)[0][1]


def test_upload_same_request_id_other_service_is_409(api: Api) -> None:
    api.upload(embedding_body("svc-1"))
    r = api.post("/files/upload/tensors", tagging_body("svc-1"))
    assert r.status_code == 409
    assert r.json() == {
        "detail": "request_id 'svc-1' was uploaded for service 'embedding'; it cannot also hold "
        "'tagging' tensors (use another request_id)."
    }


def test_malformed_json_is_400(server: EmulatorHandle) -> None:
    r = requests.post(
        server.base_url + "/files/upload/tensors",
        data=b'{"service": "embedding", ',
        headers={"X-API-Key": KEY, "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 400
    assert r.json()["detail"].startswith("Malformed JSON body at position 25:")


# -- auth ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "Missing API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'."),
        ({"X-API-Key": "wrong"}, "Invalid API key: it is not one this server accepts."),
        ({"Authorization": "Bearer wrong"}, "Invalid API key: it is not one this server accepts."),
        (
            {"Authorization": "Basic " + KEY},
            "Missing API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'.",
        ),
    ],
)
def test_401_for_missing_or_wrong_key(server: EmulatorHandle, headers: dict[str, str], detail: str) -> None:
    for method, path in [
        ("GET", "/async_status/x"),
        ("POST", "/video_embedding/encode_text"),
        ("GET", "/_emulator/stats"),
    ]:
        r = requests.request(method, server.base_url + path, json={"text": "a"}, headers=headers, timeout=30)
        assert r.status_code == 401
        assert r.json() == {"detail": detail}
        assert "wrong" not in r.text


def test_both_header_styles_authenticate(server: EmulatorHandle) -> None:
    for headers in (
        {"X-API-Key": KEY},
        {"Authorization": f"Bearer {KEY}"},
        {"authorization": f"bearer {OTHER_KEY}"},
    ):
        r = requests.post(
            server.base_url + "/video_embedding/encode_text", json={"text": "hi"}, headers=headers, timeout=30
        )
        assert r.status_code == 200, r.text


def test_openapi_is_public(server: EmulatorHandle) -> None:
    doc = requests.get(server.base_url + "/openapi.json", timeout=30).json()
    assert {
        "/files/upload/tensors",
        "/video_embedding/encode_video/async",
        "/video_tagging/async",
        "/async_status/{request_id}",
        "/video_embedding/encode_text",
        "/_emulator/stats",
    } <= set(doc["paths"])


# -- jobs ------------------------------------------------------------------------------------------


def test_embedding_job_completes_with_content_derived_vector(api: Api) -> None:
    keys_a = api.upload(embedding_body("emb-a", seed=3))["r2_keys"]
    keys_b = api.upload(embedding_body("emb-b", seed=3))["r2_keys"]
    keys_c = api.upload(embedding_body("emb-c", seed=4))["r2_keys"]
    first = _submit_embedding(api, "emb-a", keys_a)
    assert first.status_code == 200
    assert first.json() == {
        "request_id": "emb-a",
        "status": "pending",
        "task_type": "embedding",
        "message": "Job queued.",
    }
    for rid, keys in (("emb-b", keys_b), ("emb-c", keys_c)):
        assert _submit_embedding(api, rid, keys).status_code == 200
    a, b, c = (api.wait(rid) for rid in ("emb-a", "emb-b", "emb-c"))
    assert a["status"] == "completed" and a["task_type"] == "embedding"
    assert "emulated" in a["model_name"]
    assert a["created_at"].endswith("Z") and a["updated_at"] >= a["created_at"]
    assert "tags" not in a and "error_message" not in a
    va, vb, vc = (np.array(x["embedding"]) for x in (a, b, c))
    assert va.shape == (1024,)
    assert abs(np.linalg.norm(va) - 1) < 1e-9
    np.testing.assert_array_equal(va, vb)  # same tensors, same vector
    assert va @ vc < 0.99  # other content, another vector


def test_near_identical_content_gives_near_vectors(api: Api) -> None:
    video = seed_video(5)
    nudged = video.copy()
    nudged[0, 0, 0, :8, :8] ^= 1
    for rid, v in (("near-a", video), ("near-b", nudged)):
        keys = api.upload({"service": "embedding", "request_id": rid, "video_input": encode_tensor(v)})[
            "r2_keys"
        ]
        api.post(
            "/video_embedding/encode_video/async",
            {"request_id": rid, "tensor": {"video_input_key": keys["video_input"]}},
        )
    va, vb = (np.array(api.wait(rid)["embedding"]) for rid in ("near-a", "near-b"))
    assert not np.array_equal(va, vb)
    assert va @ vb > 0.999


def test_tagging_job_tags_follow_the_frames(api: Api) -> None:
    dark = np.full((1, 12, 3, 224, 224), 10, np.uint8)
    bright_blue = np.zeros((1, 12, 3, 224, 224), np.uint8)
    bright_blue[:, :, 2] = 250
    bright_blue[:, :, 1] = 120
    for rid, video in (("tag-dark", dark), ("tag-blue", bright_blue), ("tag-grad", seed_video(6))):
        body = {
            "service": "tagging",
            "request_id": rid,
            "video_input": encode_tensor(video),
            "video_kwargs": {"do_sample_frames": False, "fps": 1.2},
        }
        keys = api.upload(body)["r2_keys"]
        r = api.post(
            "/video_tagging/async",
            {
                "request_id": rid,
                "tensor": {"video_input_key": keys["video_input"], "video_kwargs_key": keys["video_kwargs"]},
            },
        )
        assert r.json()["task_type"] == "tagging"
    dark_t, blue_t, grad_t = (api.wait(rid) for rid in ("tag-dark", "tag-blue", "tag-grad"))
    for result in (dark_t, blue_t, grad_t):
        assert result["status"] == "completed" and "embedding" not in result
        assert {"shot_size", "camera_movement", "shooting_angle", "dominant_color", "brightness"} <= set(
            result["tags"]
        )
    assert dark_t["tags"]["lighting"] == "low_key" and dark_t["tags"]["dominant_color"] == "black"
    assert blue_t["tags"]["dominant_color"] == "blue"
    assert dark_t["tags"]["camera_movement"] == "static"
    assert grad_t["tags"]["camera_movement"].startswith(("pan_", "tilt_")), grad_t["tags"]
    assert grad_t["tags"]["brightness"] != dark_t["tags"]["brightness"]


def test_same_request_id_returns_the_existing_job_never_a_second(api: Api, server: EmulatorHandle) -> None:
    keys = api.upload(embedding_body("idem-1", seed=7))["r2_keys"]
    first = _submit_embedding(api, "idem-1", keys).json()
    api.wait("idem-1")
    again = _submit_embedding(api, "idem-1", keys)
    assert again.status_code == 200
    assert again.json() == {
        "request_id": "idem-1",
        "status": "completed",
        "task_type": "embedding",
        "message": "A job with this request_id exists; returned unchanged.",
    }
    assert first["request_id"] == again.json()["request_id"]
    stats = api.get("/_emulator/stats").json()
    assert stats["submissions"]["idem-1"] == 2  # two requests reached the handler ...
    owner = _owner(KEY)
    assert server.storage.jobs.get(owner, "idem-1") is not None  # ... and one job exists
    other_inputs = api.post(
        "/video_embedding/encode_video/async",
        {"request_id": "idem-1", "tensor": {"video_input_key": keys["video_input"]}},
    )
    assert other_inputs.status_code == 409
    assert "already names a embedding job with other inputs" in other_inputs.json()["detail"]
    tagging = api.post(
        "/video_tagging/async", {"request_id": "idem-1", "video_url": "http://example.invalid/v.mp4"}
    )
    assert tagging.status_code == 409
    assert tagging.json()["detail"].startswith("request_id 'idem-1' already names a embedding job")


def test_concurrent_duplicate_submissions_make_one_job(api: Api, server: EmulatorHandle) -> None:
    keys = api.upload(embedding_body("race-1"))["r2_keys"]
    results: list[int] = []

    def go() -> None:
        results.append(_submit_embedding(Api(server.base_url, KEY), "race-1", keys).status_code)

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 6
    messages = api.get("/_emulator/stats").json()["submissions"]["race-1"]
    assert messages == 6
    rows = [j for j in server.storage.jobs.unfinished() if j.request_id == "race-1"]
    assert len(rows) <= 1
    assert api.wait("race-1")["status"] == "completed"


def test_tensor_key_errors_say_which(api: Api, other: Api) -> None:
    emb = api.upload(embedding_body("keys-1"))["r2_keys"]
    tag = api.upload(tagging_body("keys-2"))["r2_keys"]
    theirs = other.upload(embedding_body("keys-3"))["r2_keys"]
    path = "/video_embedding/encode_video/async"

    r = api.post(path, {"tensor": {"video_input_key": "tensors/nope/video_input.json"}})
    assert r.status_code == 404
    assert r.json() == {
        "detail": "tensor.video_input_key 'tensors/nope/video_input.json' does not exist: "
        "upload it with POST /files/upload/tensors first."
    }
    r = api.post(path, {"tensor": {"video_input_key": theirs["video_input"]}})
    assert r.status_code == 403
    assert r.json() == {
        "detail": "tensor.video_input_key 'tensors/keys-3/video_input.json' belongs to another API key."
    }
    r = api.post(path, {"tensor": {"video_input_key": tag["video_input"]}})
    assert r.status_code == 422
    assert "was uploaded for service 'tagging'" in _loc_msgs(r)[0][1]
    r = api.post(path, {"tensor": {"video_input_key": emb["audio_input"]}})
    assert r.status_code == 422
    assert "names a audio_input upload: must name a video_input" in _loc_msgs(r)[0][1]
    r = api.post(path, {"tensor": {"video_kwargs_key": tag["video_kwargs"]}})
    assert r.status_code == 422
    assert _loc_msgs(r)[0][0] == ["body", "tensor", "video_kwargs_key"]
    r = api.post(path, {"tensor": {}})
    assert r.status_code == 422 and "tensor names no key" in _loc_msgs(r)[0][1]
    r = api.post("/video_tagging/async", {"tensor": {"video_kwargs_key": tag["video_kwargs"]}})
    assert (
        r.status_code == 422 and "tensor.video_input_key is required for tagging jobs" in _loc_msgs(r)[0][1]
    )
    r = api.post(path, {})
    assert (
        r.status_code == 422 and "send exactly one of video_url, video_base64, tensor" in _loc_msgs(r)[0][1]
    )
    r = api.post(
        path, {"video_url": "http://x.invalid/a.mp4", "tensor": {"video_input_key": emb["video_input"]}}
    )
    assert r.status_code == 422 and "['video_url', 'tensor']" in _loc_msgs(r)[0][1]


def test_status_404_for_unknown_and_for_another_keys_job(api: Api, other: Api) -> None:
    r = api.get("/async_status/never-submitted")
    assert r.status_code == 404
    assert r.json() == {"detail": "No job 'never-submitted' for this API key."}
    keys = api.upload(embedding_body("mine-1"))["r2_keys"]
    assert _submit_embedding(api, "mine-1", keys).status_code == 200
    assert other.get("/async_status/mine-1").status_code == 404
    assert api.get("/async_status/mine-1").status_code == 200


def test_video_url_job_fails_with_clear_error(api: Api) -> None:
    r = api.post("/video_tagging/async", {"request_id": "url-1", "video_url": "https://example.com/v.mp4"})
    assert r.status_code == 200
    done = api.wait("url-1")
    assert done["status"] == "failed"
    assert (
        "makes no network requests" in done["error_message"]
        and "https://example.com/v.mp4" in done["error_message"]
    )
    assert "tags" not in done


def test_video_base64_bad_encoding_is_422_and_undecodable_video_fails(api: Api) -> None:
    r = api.post("/video_embedding/encode_video/async", {"video_base64": "***"})
    assert r.status_code == 422 and "not standard base64" in _loc_msgs(r)[0][1]
    junk = base64.b64encode(b"this is not a video" * 10).decode()
    r = api.post(
        "/video_embedding/encode_video/async",
        {"request_id": "b64-junk", "video_base64": junk, "filename": "x.mp4"},
    )
    assert r.status_code == 200
    done = api.wait("b64-junk")
    assert done["status"] == "failed"
    assert "x.mp4" in done["error_message"]


def test_video_base64_job_is_decoded_with_our_preprocessing(api: Api, fixtures_dir: Path) -> None:
    pytest.importorskip("seeknetic_prep.decode.preprocess")
    clip = sorted((fixtures_dir / "demo").glob("*"))[0]
    data = base64.b64encode(clip.read_bytes()).decode()
    for path, rid in (
        ("/video_embedding/encode_video/async", "b64-emb"),
        ("/video_tagging/async", "b64-tag"),
    ):
        r = api.post(path, {"request_id": rid, "video_base64": data, "filename": clip.name})
        assert r.status_code == 200, r.text
    emb, tag = api.wait("b64-emb", timeout=120), api.wait("b64-tag", timeout=120)
    assert emb["status"] == "completed", emb.get("error_message")
    assert len(emb["embedding"]) == 1024
    assert tag["status"] == "completed", tag.get("error_message")
    assert tag["tags"]["frames_analyzed"] >= 12


# -- text ------------------------------------------------------------------------------------------


def test_encode_text(api: Api) -> None:
    a = api.post("/video_embedding/encode_text", {"text": "a dog runs on the beach"})
    b = api.post("/video_embedding/encode_text", {"text": "a dog runs on the beach"})
    c = api.post("/video_embedding/encode_text", {"text": "quarterly tax report"})
    assert a.status_code == 200
    va, vb, vc = (np.array(r.json()["embedding"]) for r in (a, b, c))
    assert va.shape == (1024,) and abs(np.linalg.norm(va) - 1) < 1e-9
    np.testing.assert_array_equal(va, vb)
    assert abs(va @ vc) < 0.5
    for text in ("", "   "):
        r = api.post("/video_embedding/encode_text", {"text": text})
        assert r.status_code == 422
        assert _loc_msgs(r) == [
            (["body", "text"], "text is empty: must hold at least one non-space character.")
        ]
    r = api.post("/video_embedding/encode_text", {"text": 5})
    assert r.status_code == 422 and _loc_msgs(r)[0][0] == ["body", "text"]


# -- quota, rate limit, body limit -------------------------------------------------------------------


def test_quota_spent_is_402_and_repeats_are_free(server: EmulatorHandle, other: Api) -> None:
    used = len([j for j in server.storage.jobs.unfinished() if j.owner == _owner(OTHER_KEY)])
    server.quota = 0
    r = other.post("/video_tagging/async", {"request_id": "q-0", "video_url": "http://a.invalid/v"})
    assert r.status_code == 402
    assert r.json()["detail"].startswith(
        "Quota spent: this API key may submit 0 async jobs and has submitted"
    )
    server.quota = 1 + used + 100
    assert (
        other.post(
            "/video_tagging/async", {"request_id": "q-1", "video_url": "http://a.invalid/v"}
        ).status_code
        == 200
    )
    server.quota = 0
    again = other.post("/video_tagging/async", {"request_id": "q-1", "video_url": "http://a.invalid/v"})
    assert again.status_code == 200, "an idempotent repeat must not need quota"
    assert other.get("/async_status/q-0").status_code == 404


def test_rate_limit_is_429_with_retry_after_and_stats_are_exempt(server: EmulatorHandle, api: Api) -> None:
    server.qps = 0.25  # one token, refilled every 4 s: the second quick request is over
    statuses = [api.get("/async_status/rl-x").status_code for _ in range(3)]
    assert statuses[0] == 404 and statuses[1:] == [429, 429]
    r = api.get("/async_status/rl-x")
    assert r.status_code == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 4
    assert 0 < int(r.headers["Retry-After-Ms"]) <= 4000
    assert r.json()["detail"].startswith("Rate limit: over 0.25 requests per second for this API key")
    assert all(api.get("/_emulator/stats").status_code == 200 for _ in range(5))
    server.qps = None
    assert api.get("/async_status/rl-x").status_code == 404


def test_413_from_content_length_and_while_streaming_chunked(server: EmulatorHandle) -> None:
    limit = 8 * 2**20
    headers = {"X-API-Key": KEY}
    status, response, sent = raw_post_streaming(
        server.base_url, "/files/upload/tensors", headers, total_bytes=20 * 2**20, chunked=False
    )
    assert status == 413
    assert sent < limit, "Content-Length over the limit is refused before the body is read"
    body = json.loads(response.partition(b"\r\n\r\n")[2])
    assert body == {
        "detail": f"Request body too large: {20 * 2**20} bytes; the limit is {limit} bytes (8 MB)."
    }
    status, response, sent = raw_post_streaming(
        server.base_url, "/files/upload/tensors", headers, total_bytes=20 * 2**20, chunked=True
    )
    assert status == 413
    assert limit < sent < 20 * 2**20
    assert json.loads(response.partition(b"\r\n\r\n")[2]) == {
        "detail": f"Request body too large: more than that; the limit is {limit} bytes (8 MB)."
    }
    # The connection-level answer did not break the server.
    assert requests.get(server.base_url + "/async_status/x", headers=headers, timeout=30).status_code == 404


def test_chunked_body_within_the_limit_is_replayed_to_the_handler(server: EmulatorHandle) -> None:
    raw = json.dumps(embedding_body("chunked-1", seed=8)).encode()
    pieces = iter([raw[i : i + 300_000] for i in range(0, len(raw), 300_000)])
    r = requests.post(
        server.base_url + "/files/upload/tensors",
        data=pieces,  # a generator: requests sends Transfer-Encoding: chunked
        headers={"X-API-Key": KEY, "Content-Type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert r.json()["r2_keys"]["audio_input"] == "tensors/chunked-1/audio_input.json"
    stored = server.storage.uploads.read_object(_owner(KEY), "tensors/chunked-1/video_input.json")
    np.testing.assert_array_equal(decode_tensor(stored), seed_video(8))


# -- fault knobs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 504])
def test_fail_next_injects_status_before_the_handler(server: EmulatorHandle, api: Api, status: int) -> None:
    server.faults.fail_next(2, status)
    body = embedding_body(f"fault-{status}")
    for _ in range(2):
        r = api.post("/files/upload/tensors", body)
        assert r.status_code == status
        assert r.json() == {"detail": f"Injected fault: {status} (emulator fault plan)."}
    assert f"fault-{status}" not in api.get("/_emulator/stats").json()["uploads"], (
        "faults never reach the handler"
    )
    assert api.post("/files/upload/tensors", body).status_code == 200
    assert api.get("/_emulator/stats").json()["uploads"][f"fault-{status}"] == 1


def test_fail_rate_is_deterministic_with_a_seed(tmp_path: Path) -> None:
    runs = []
    for i in range(2):
        with running(EmulatorConfig(data_dir=tmp_path / str(i), fail_rate=0.5, seed=42)) as handle:
            api = Api(handle.base_url, handle.api_key)
            runs.append([api.get("/async_status/x").status_code for _ in range(30)])
            assert api.get("/_emulator/stats").status_code == 200  # exempt, never faulted
            assert set(handle.faults.injected) <= {500, 502, 504}
    assert runs[0] == runs[1]
    assert set(runs[0]) <= {404, 500, 502, 504} and 404 in runs[0] and len(set(runs[0])) > 1
    assert 5 <= sum(s != 404 for s in runs[0]) <= 25


def test_drop_next_closes_the_connection_without_an_answer(server: EmulatorHandle, api: Api) -> None:
    server.faults.drop_next(1)
    with pytest.raises(requests.ConnectionError):
        requests.get(server.base_url + "/async_status/x", headers={"X-API-Key": KEY}, timeout=30)
    assert server.faults.injected["drop"] >= 1
    assert api.get("/async_status/x").status_code == 404


def test_latency_delays_answers(server: EmulatorHandle, api: Api) -> None:
    server.faults.latency = 1.0
    with pytest.raises(requests.Timeout):
        requests.get(server.base_url + "/async_status/x", headers={"X-API-Key": KEY}, timeout=0.2)
    server.faults.latency = 0
    assert api.get("/async_status/x").status_code == 404


def test_fault_knobs_refuse_bad_values(server: EmulatorHandle) -> None:
    with pytest.raises(InvalidArgumentError, match="fail_rate 2"):
        server.faults.fail_rate = 2
    with pytest.raises(InvalidArgumentError, match=r"fail_next\(1, 200\)"):
        server.faults.fail_next(1, 200)
    with pytest.raises(InvalidArgumentError, match="qps 0"):
        server.qps = 0


# -- durability --------------------------------------------------------------------------------------


def test_restart_resumes_unfinished_jobs(tmp_path: Path) -> None:
    with running(EmulatorConfig(data_dir=tmp_path, job_seconds=1.0, api_keys=(KEY,))) as handle:
        api = Api(handle.base_url, KEY)
        keys = api.upload(embedding_body("rs-1"))["r2_keys"]
        assert _submit_embedding(api, "rs-1", keys).json()["status"] == "pending"
        handle.restart()
        api = Api(handle.base_url, KEY)
        seen: list[str] = []
        while not seen or seen[-1] not in ("completed", "failed"):
            seen.append(api.get("/async_status/rs-1").json()["status"])
            time.sleep(0.03)
        order = ["pending", "processing", "completed"]
        assert [order.index(s) for s in seen] == sorted(order.index(s) for s in seen), seen
        assert "processing" in seen and seen[-1] == "completed"
        assert api.get("/_emulator/stats").json() == {"uploads": {"rs-1": 1}, "submissions": {"rs-1": 1}}


def test_stopping_leaves_no_thread_and_frees_the_port(tmp_path: Path) -> None:
    before = {t.name for t in threading.enumerate()}
    with running(EmulatorConfig(data_dir=tmp_path)) as handle:
        port = handle.port
        assert Api(handle.base_url, handle.api_key).get("/async_status/x").status_code == 404
        assert {"seeknetic-emulator-http", "seeknetic-emulator-jobs"} <= {
            t.name for t in threading.enumerate()
        }
    after = {t.name for t in threading.enumerate()}
    assert not {n for n in after - before if n.startswith("seeknetic-emulator")}
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/openapi.json", timeout=5)


def test_stats_count_per_request_id(api: Api) -> None:
    api.upload(embedding_body("st-1"))
    api.upload(embedding_body("st-1"))
    api.post("/video_tagging/async", {"request_id": "st-2", "video_url": "http://a.invalid/v"})
    stats = api.get("/_emulator/stats").json()
    assert stats["uploads"]["st-1"] == 2
    assert stats["submissions"]["st-2"] == 1
    assert "st-2" not in stats["uploads"]


def test_running_refuses_bad_settings(tmp_path: Path) -> None:
    with (
        pytest.raises(InvalidArgumentError, match=r"fail_rate 1\.5"),
        running(EmulatorConfig(data_dir=tmp_path, fail_rate=1.5)),
    ):
        pass
    with (
        pytest.raises(InvalidArgumentError, match="max_body_mb 0"),
        running(EmulatorConfig(data_dir=tmp_path, max_body_mb=0)),
    ):
        pass


def test_audio_only_and_video_only_embeddings_differ(api: Api) -> None:
    a = api.upload(
        {"service": "embedding", "request_id": "ao-1", "audio_input": encode_tensor(seed_audio(1))}
    )["r2_keys"]
    api.post(
        "/video_embedding/encode_video/async",
        {"request_id": "ao-1", "tensor": {"audio_input_key": a["audio_input"]}},
    )
    b = api.upload(
        {"service": "embedding", "request_id": "ao-2", "audio_input": encode_tensor(seed_audio(2))}
    )["r2_keys"]
    api.post(
        "/video_embedding/encode_video/async",
        {"request_id": "ao-2", "tensor": {"audio_input_key": b["audio_input"]}},
    )
    va, vb = (np.array(api.wait(r)["embedding"]) for r in ("ao-1", "ao-2"))
    assert va @ vb < 0.999


def test_spawned_serves_from_a_child_and_stops_with_the_block(tmp_path: Path) -> None:
    from seeknetic_prep.emulator import EmulatorConfig, spawned

    with spawned(EmulatorConfig(api_keys=("child-key-123",), data_dir=tmp_path / "emu")) as proc:
        assert proc.base_url.startswith("http://127.0.0.1:")
        # The URL is valid before the child has finished starting: this request waits for it.
        r = requests.post(f"{proc.base_url}/video_embedding/encode_text", json={"text": "a cat"},
                          headers={"X-API-Key": proc.api_key}, timeout=60)
        assert r.status_code == 200 and len(r.json()["embedding"]) == 1024
        assert requests.post(f"{proc.base_url}/video_embedding/encode_text", json={"text": "a"},
                             headers={"X-API-Key": "wrong-key-123"}, timeout=60).status_code == 401
        assert proc.returncode is None
    assert proc.returncode is not None  # stopped and reaped by the block
    assert (tmp_path / "emu").is_dir()


def test_spawned_child_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from seeknetic_prep.emulator import EmulatorConfig, spawned\n"
        "with spawned(EmulatorConfig(data_dir=Path(sys.argv[1]))) as p:\n"
        "    print(p.pid, flush=True)\n"
        "    time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "emu")],
                              stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail(f"the emulator child {child} outlived its killed parent by 60 s")


def test_job_scores_the_latest_upload_whether_kept_in_memory_or_read_back(tmp_path: Path) -> None:
    # A job normally scores the arrays its upload just validated (kept in memory); after a
    # restart it reads the stored files back. Both must give the same result, for the latest upload.
    with running(EmulatorConfig(api_keys=(KEY,), data_dir=tmp_path)) as first:
        api = Api(first.base_url, KEY)
        api.upload(embedding_body("kept", seed=7))
        keys = api.upload(embedding_body("kept", seed=8))["r2_keys"]  # replaces seed 7
        read_back_keys = api.upload(embedding_body("read-back", seed=8))["r2_keys"]
        assert _submit_embedding(api, "kept", keys).status_code == 200
        kept = np.array(api.wait("kept")["embedding"])
    with running(EmulatorConfig(api_keys=(KEY,), data_dir=tmp_path)) as second:
        api = Api(second.base_url, KEY)
        assert _submit_embedding(api, "read-back", read_back_keys).status_code == 200
        read_back = np.array(api.wait("read-back")["embedding"])
        seven = api.upload(embedding_body("seven", seed=7))["r2_keys"]
        assert _submit_embedding(api, "seven", seven).status_code == 200
        other = np.array(api.wait("seven")["embedding"])
    np.testing.assert_array_equal(kept, read_back)
    assert kept @ other < 0.99  # the replaced tensors were not the ones scored


def test_thumbnails_shared_by_a_windows_two_jobs_are_never_another_arrays() -> None:
    """The scorer reuses the thumbnails of a read-only array it has just seen (a window's
    embedding and tagging jobs score the same decoded upload). Arrays made and dropped one
    after another reuse addresses: each must still get thumbnails of its own pixels."""
    from seeknetic_prep.emulator import scoring

    reused = 0
    seen: set[int] = set()
    for seed in range(40):
        video = seed_video(seed)
        video.flags.writeable = False
        reused += id(video) in seen
        seen.add(id(video))
        want = scoring.video_thumbs(video)
        np.testing.assert_array_equal(scoring._thumbs_of(video), want)
        np.testing.assert_array_equal(scoring._thumbs_of(video), want)  # the shared copy
        del video
    assert reused, "no address was reused: the test did not exercise the identity check"
