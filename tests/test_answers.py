"""The answer check at the door (issue 22, items 2 and 4): what is refused, with which reason,
and that what a good or a newer server sends passes. End-to-end runs: test_malformed_answers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from _pipeline_helpers import lossy_proxy, proxy_url

from seeknetic_prep.api.answers import EMBEDDING_DIM, check_status
from seeknetic_prep.api.client import Client
from seeknetic_prep.errors import APIError, MalformedAnswerError


def _done(**fields: Any) -> dict[str, Any]:
    return {"request_id": "r", "status": "completed", "model_name": "m", **fields}


GOOD_EMBEDDING = _done(task_type="embedding", embedding=[0.25] * EMBEDDING_DIM)
GOOD_TAGS = _done(task_type="tagging", tags={"shot_size": "wide", "scene_cuts": 2**63 - 1,
                                             "brightness": 0.5, "objects": [{"score": -1e300}]})


@pytest.mark.parametrize(("answer", "service"), [
    (GOOD_EMBEDDING, "embedding"),
    (GOOD_TAGS, "tagging"),
    ({"status": "pending"}, "embedding"),
    ({"status": "queued"}, "tagging"),  # a word a newer API may add: still running, not malformed
    ({"status": "failed", "error_message": None}, "embedding"),
    (_done(embedding=[1] * EMBEDDING_DIM), "embedding"),  # integers are numbers; no task_type is fine
    (GOOD_TAGS, None),
])
def test_good_answers_pass(answer: dict[str, Any], service: str | None) -> None:
    assert check_status(answer, service) is answer


@pytest.mark.parametrize(("answer", "service", "reason"), [
    ([], "embedding", "async_status answer is an array, not an object"),
    ("completed", "embedding", "async_status answer is a string, not an object"),
    ({"state": "completed"}, "embedding", "status is missing"),
    ({"status": ["completed"]}, "embedding", "status is an array, not a string"),
    (_done(task_type="tagging", tags={}), "embedding", "task_type is 'tagging', expected 'embedding'"),
    (_done(task_type=1), "embedding", "task_type is a number, not a string"),
    (_done(), "embedding", "embedding is missing"),
    (_done(task_type="tagging"), None, "tags is missing"),
    (_done(embedding={"0": 1.0}), "embedding", "embedding is an object, not an array of numbers"),
    (_done(embedding=[0.0] * 100), "embedding", "embedding has 100 numbers, expected 1024"),
    (_done(embedding=[0.0] * 1025), "embedding", "embedding has 1025 numbers, expected 1024"),
    (_done(embedding=[0.0] * 1023 + [True]), "embedding", "embedding[1023] is true, not a number"),
    (_done(embedding=[0.0] * 1023 + [None]), "embedding", "embedding[1023] is null, not a number"),
    (_done(embedding=[float("-inf")] + [0.0] * 1023), "embedding", "embedding[0] is -Infinity"),
    (_done(embedding=[1e39] + [0.0] * 1023), "embedding", "embedding[0] = 1e+39 is outside float32's range"),
    (_done(embedding=[10**400] + [0.0] * 1023), "embedding",
     "embedding[0] = 100000000000... (401 digits) is outside float32's range"),
    (_done(tags=[["shot_size", "wide"]]), "tagging", "tags is an array, not an object"),
    (_done(tags={"scene_cuts": -(2**63) - 1}), "tagging",
     "tags.scene_cuts = -9223372036854775809 does not fit in 64 bits"),
    (_done(tags={"objects": [{"score": float("nan")}]}), "tagging", "tags.objects[0].score is NaN"),
    (_done(tags={}, model_name=3), "tagging", "model_name is a number, not a string"),
])
def test_bad_answers_are_refused_with_the_reason(answer: Any, service: str | None, reason: str) -> None:
    with pytest.raises(MalformedAnswerError) as caught:
        check_status(answer, service)
    assert str(caught.value) == f"malformed answer: {reason}"
    assert isinstance(caught.value, APIError) and isinstance(caught.value, ValueError)


def test_the_width_is_the_results_and_the_emulators() -> None:
    from seeknetic_prep.emulator.config import EMBEDDING_DIM as EMULATED
    from seeknetic_prep.results.parts import DEFAULT_DIM

    assert EMBEDDING_DIM == DEFAULT_DIM == EMULATED


def test_client_checks_what_it_parses(emulator: Any) -> None:
    """Through a proxy that turns the emulator's text embedding into 100 numbers: refused."""

    def rewrite(method: str, path: str, body: bytes) -> bytes:
        if path == "/video_embedding/encode_text":
            return json.dumps({"embedding": [0.5] * 100}).encode()
        return body

    with lossy_proxy(emulator.base_url, lambda m, p: False, rewrite) as proxy, \
            Client(emulator.api_key, base_url=proxy_url(proxy)) as c, \
            pytest.raises(MalformedAnswerError, match="embedding has 100 numbers, expected 1024"):
        c.encode_text("a red car")


def test_json_nested_too_deep_is_malformed_not_a_crash() -> None:
    """json gives up on deep nesting with RecursionError, which is no ValueError: it used to
    escape the client and kill the thread that polled."""
    import http.server
    import threading

    class Deep(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"[" * 100_000 + b"]" * 100_000
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Deep)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with Client("k", base_url=f"http://127.0.0.1:{srv.server_address[1]}") as c, \
                pytest.raises(MalformedAnswerError, match="not JSON") as caught:
            c.get_status("deep")
        assert caught.value.request_id == "deep"
    finally:
        srv.shutdown()
        srv.server_close()
