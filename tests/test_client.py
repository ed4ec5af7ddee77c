"""Client against the real emulator over loopback HTTP: auth, endpoints, retries, faults."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _pipeline_helpers import audio_tensor, lossy_proxy, proxy_url, silent_server, stats, video_tensor

from seeknetic_prep.api.client import REGIONS, Client, RetryPolicy
from seeknetic_prep.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    InvalidArgumentError,
    NotFoundError,
    QuotaExceededError,
    ValidationError,
)

FAST = RetryPolicy(max_attempts=8, base_delay_s=0.02, max_delay_s=0.5)


@pytest.fixture()
def client(emulator: Any) -> Iterator[Client]:
    with Client(emulator.api_key, base_url=emulator.base_url, retry=FAST) as c:
        yield c


def _upload_and_submit(c: Client, rid: str, service: str = "embedding", seed: int = 0) -> dict[str, Any]:
    if service == "embedding":
        keys = c.upload_tensors("embedding", rid, video_input=video_tensor(seed),
                                audio_input=audio_tensor(seed))
        return c.submit_embedding(
            tensor={"video_input_key": keys["video_input"], "audio_input_key": keys["audio_input"]},
            request_id=rid,
        )
    keys = c.upload_tensors("tagging", rid, video_input=video_tensor(seed),
                            video_kwargs={"do_sample_frames": False, "fps": 1.2})
    return c.submit_tagging(
        tensor={"video_input_key": keys["video_input"], "video_kwargs_key": keys["video_kwargs"]},
        request_id=rid,
    )


def test_tensor_workflow_embedding_and_tagging(client: Client) -> None:
    _upload_and_submit(client, "cl-emb-1", "embedding")
    _upload_and_submit(client, "cl-tag-1", "tagging")
    done = client.wait(["cl-emb-1", "cl-tag-1"], deadline_s=60)
    assert done["cl-emb-1"]["status"] == "completed"
    emb = done["cl-emb-1"]["embedding"]
    assert isinstance(emb, list) and len(emb) > 0
    assert abs(sum(x * x for x in emb) - 1.0) < 1e-3
    assert done["cl-tag-1"]["status"] == "completed"
    assert isinstance(done["cl-tag-1"]["tags"], dict) and done["cl-tag-1"]["tags"]


def test_encode_text_and_unknown_status(client: Client) -> None:
    vec = client.encode_text("a red car at night")
    assert len(vec) > 0
    with pytest.raises(NotFoundError, match="404"):
        client.get_status("cl-never-submitted")


def test_bearer_auth_and_check_auth(emulator: Any) -> None:
    with Client(emulator.api_key, base_url=emulator.base_url, auth="bearer") as c:
        c.check_auth()
        assert c.encode_text("bearer") != []


def test_wrong_key_is_401_not_retried_and_never_echoed(emulator: Any) -> None:
    secret = "wrong-key-0123456789-SECRET"
    with Client(secret, base_url=emulator.base_url, retry=RetryPolicy(max_attempts=8, base_delay_s=5)) as c:
        assert secret not in repr(c)
        with pytest.raises(AuthenticationError) as info:
            c.check_auth()  # base delay 5 s: a retry would make this test slow, not wrong
    assert "401" in str(info.value)
    assert secret not in str(info.value) and secret not in repr(info.value.detail)


def test_validation_error_is_not_retried(client: Client, emulator: Any) -> None:
    bad = dict(video_tensor())
    bad["shape"] = [1, 12, 3, 224, 223]
    with pytest.raises(ValidationError) as info:
        client.upload_tensors("embedding", "cl-bad-shape", video_input=bad, audio_input=audio_tensor())
    assert info.value.status_code == 422 and "cl-bad-shape" in str(info.value)
    assert stats(emulator)["uploads"].get("cl-bad-shape", 0) <= 1


def test_injected_faults_are_retried_and_each_job_submitted_once(tmp_path: Path) -> None:
    from seeknetic_prep.emulator import EmulatorConfig, running

    with running(EmulatorConfig(data_dir=tmp_path, fail_rate=0.3, seed=7)) as server, \
            Client(server.api_key, base_url=server.base_url, retry=FAST) as c:
        rids = [f"cl-fault-{i}" for i in range(6)]
        for i, rid in enumerate(rids):
            _upload_and_submit(c, rid, "embedding" if i % 2 else "tagging", seed=i)
        done = c.wait(rids, deadline_s=120)
        assert all(done[r]["status"] == "completed" for r in rids)
        submissions = stats(server)["submissions"]
        assert {r: submissions.get(r) for r in rids} == {r: 1 for r in rids}


def test_rate_limit_429_is_retried(tmp_path: Path) -> None:
    from seeknetic_prep.emulator import EmulatorConfig, running

    told: list[str] = []
    with running(EmulatorConfig(data_dir=tmp_path, qps=4)) as server, \
            Client(server.api_key, base_url=server.base_url, retry=FAST) as c:
        c.on_event = lambda kind, detail: told.append(detail) if kind == "rate_limited" else None
        vecs = [c.encode_text(f"text {i}") for i in range(12)]  # faster than 4/s: some 429s
        assert len(vecs) == 12 and all(vecs)
    # the emulator counts no 429s of its own; the client is told each one it received
    assert told and all(": 429 Rate limit: over 4 requests per second" in d for d in told), told


def test_client_side_qps_shared_by_threads(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from seeknetic_prep.emulator import EmulatorConfig, running

    no_retry = RetryPolicy(max_attempts=1)
    with running(EmulatorConfig(data_dir=tmp_path, qps=20)) as server, \
            Client(server.api_key, base_url=server.base_url, qps=10, retry=no_retry) as c, \
            ThreadPoolExecutor(8) as pool:
        # without the bucket 8 threads would exceed 20/s at once; a 429 would raise (no retries)
        vecs = list(pool.map(lambda i: c.encode_text(f"t{i}"), range(30)))
    assert len(vecs) == 30


def test_413_upload_is_split_per_tensor(tmp_path: Path) -> None:
    from seeknetic_prep.emulator import EmulatorConfig, running

    # an embedding body is ~3.6 MB (video 2.4 MB + audio 1.2 MB of base64): over a 3 MB limit
    with running(EmulatorConfig(data_dir=tmp_path, max_body_mb=3)) as server, \
            Client(server.api_key, base_url=server.base_url, retry=FAST) as c:
        keys = c.upload_tensors("embedding", "cl-split", video_input=video_tensor(),
                                audio_input=audio_tensor())
        assert set(keys) >= {"video_input", "audio_input"}
        c.submit_embedding(tensor={"video_input_key": keys["video_input"],
                                   "audio_input_key": keys["audio_input"]}, request_id="cl-split")
        assert c.wait(["cl-split"], deadline_s=60)["cl-split"]["status"] == "completed"
        assert stats(server)["uploads"]["cl-split"] == 2


def test_lost_submission_answer_is_looked_up_not_resubmitted(emulator: Any) -> None:
    lost = {"n": 0}

    def drop(method: str, path: str) -> bool:
        if method == "POST" and path.endswith("/async") and lost["n"] == 0:
            lost["n"] += 1
            return True
        return False

    with lossy_proxy(emulator.base_url, drop) as proxy, \
            Client(emulator.api_key, base_url=proxy_url(proxy), retry=FAST) as c:
        answer = _upload_and_submit(c, "cl-lost-answer", "embedding", seed=3)
        assert proxy.dropped == ["/video_embedding/encode_video/async"]
        assert answer["request_id"] == "cl-lost-answer"
        assert c.wait(["cl-lost-answer"], deadline_s=60)["cl-lost-answer"]["status"] == "completed"
    assert stats(emulator)["submissions"]["cl-lost-answer"] == 1


def test_quota_is_402_and_not_retried(tmp_path: Path) -> None:
    from seeknetic_prep.emulator import EmulatorConfig, running

    with running(EmulatorConfig(data_dir=tmp_path, quota=1)) as server, \
            Client(server.api_key, base_url=server.base_url, retry=FAST) as c:
        _upload_and_submit(c, "cl-q-1")
        with pytest.raises(QuotaExceededError) as info:
            _upload_and_submit(c, "cl-q-2", seed=1)
        assert info.value.status_code == 402
        assert stats(server)["submissions"].get("cl-q-2", 0) <= 1


def test_connection_refused_and_timeout() -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    quick = RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.01)
    with Client("k", base_url=f"http://127.0.0.1:{port}", retry=quick) as c, \
            pytest.raises(APIConnectionError, match="connection failed"):
        c.encode_text("x")
    with silent_server() as url, \
            Client("k", base_url=url, retry=quick, timeout=(1.0, 0.3)) as c, \
            pytest.raises(APITimeoutError, match=r"no answer within 0\.3 s"):
        c.get_status("cl-timeout")


def test_base_url_and_key_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEEKNETIC_BASE_URL", raising=False)
    monkeypatch.delenv("SEEKNETIC_API_KEY", raising=False)
    with pytest.raises(InvalidArgumentError, match="SEEKNETIC_API_KEY"):
        Client()
    monkeypatch.setenv("SEEKNETIC_API_KEY", "env-key")
    assert Client().base_url == REGIONS["tokyo"]
    assert Client(region="us").base_url == "https://api.us.seeknetic.com"
    with pytest.raises(InvalidArgumentError, match="'mars'"):
        Client(region="mars")
    monkeypatch.setenv("SEEKNETIC_BASE_URL", "http://127.0.0.1:9/")
    assert Client(region="cn").base_url == "http://127.0.0.1:9"
    assert Client(base_url="http://x").base_url == "http://x"
    assert "env-key" not in repr(Client())


def test_no_foreign_exception_escapes_on_garbage(tmp_path: Path) -> None:
    """A non-JSON answer is our APIError, not a requests/json exception."""
    import http.server
    import threading

    from seeknetic_prep.errors import APIError

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"<html")

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with Client("k", base_url=f"http://127.0.0.1:{srv.server_address[1]}") as c, \
                pytest.raises(APIError, match="not JSON"):
            c.get_status("x")
    finally:
        srv.shutdown()
    assert json.dumps({"ok": True})


def test_dropped_connections_are_retried(client: Client, emulator: Any) -> None:
    emulator.faults.drop_next(3)
    try:
        assert client.encode_text("after drops") != []
    finally:
        emulator.faults.reset()
    assert emulator.faults.injected["drop"] >= 3


def test_only_retryable_server_errors_are_retried(client: Client, emulator: Any) -> None:
    from seeknetic_prep.errors import ServerError

    emulator.faults.fail_next(2, 503)
    try:
        assert client.encode_text("after two 503s") != []
        emulator.faults.fail_next(1, 501)
        with pytest.raises(ServerError, match="501"):
            client.submit_embedding(tensor={"video_input_key": "x"}, request_id="cl-501")
    finally:
        emulator.faults.reset()
    assert emulator.faults.injected[503] >= 2 and emulator.faults.injected[501] == 1
    assert "cl-501" not in stats(emulator)["submissions"]
