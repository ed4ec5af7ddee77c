"""The retry matrix, driven through ``MockTransport`` with a fake clock: no server, no sleeps.

Each test asserts on what the transport received (the exact sequence of requests) and on what
the engine waited. The emulator tests (``test_client.py``) cover the same ground over real HTTP.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import requests
from _mock_api import KEY, POLICY, Fake, Handler, Mock, ok, status

from seeknetic_prep.api.client import Client, RetryPolicy
from seeknetic_prep.api.retry import RetryEngine
from seeknetic_prep.api.transport import MockTransport, Request, RequestsTransport, Response
from seeknetic_prep.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    CancelledError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    QuotaExceededError,
    ServerError,
    ValidationError,
)

SUBMIT = "/video_embedding/encode_video/async"


VEC = [0.6, 0.8] + [0.0] * 1022  # what the API promises: 1024 numbers (api/answers.py checks)
EMBEDDING = ok({"embedding": VEC})
LOST = APIConnectionError("POST /x: connection failed (reset after the request was sent)")


# -- 429: waited out, never an attempt -----------------------------------------------------------


def test_429_with_retry_after_waits_that_long_and_is_not_an_attempt() -> None:
    m = Mock(status(429, {"Retry-After": "3"}), status(429, {"retry-after": "3"}),
             status(429, {"Retry-After": "3"}), EMBEDDING, policy=RetryPolicy(max_attempts=2))
    assert m.client.encode_text("x") == VEC  # three 429s, yet max_attempts=2 is not spent
    assert m.calls == [("POST", "/video_embedding/encode_text")] * 4
    assert len(m.fake.waits) == 3 and all(3.0 <= w <= 4.0 for w in m.fake.waits)  # + jitter <= 1 s
    assert [kind for kind, _ in m.events] == ["rate_limited"] * 3


def test_429_retry_after_is_capped_and_a_missing_one_is_one_second() -> None:
    m = Mock(status(429, {"Retry-After": "999"}), EMBEDDING)
    m.client.encode_text("x")
    assert len(m.fake.waits) == 1 and 20.0 <= m.fake.waits[0] <= 21.0  # max_delay_s, + jitter
    m = Mock(status(429), status(429, {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}), EMBEDDING)
    m.client.encode_text("x")
    assert len(m.fake.waits) == 2 and all(1.0 <= w <= 1.5 for w in m.fake.waits)


def test_503_with_retry_after_is_a_busy_server_waited_out_not_an_attempt() -> None:
    """A server whose disk is full, or whose upload memory is taken, says when to come back:
    waited as a 429 is (every try answered), never spending attempts, never slowing our rate."""
    busy = status(503, {"Retry-After": "2"}, detail="The emulator's storage is full")
    m = Mock(busy, busy, busy, busy, EMBEDDING, policy=RetryPolicy(max_attempts=2))
    assert m.client.encode_text("x") == VEC  # four 503s, yet max_attempts=2 is not spent
    assert m.calls == [("POST", "/video_embedding/encode_text")] * 5
    assert len(m.fake.waits) == 4 and all(2.0 <= w <= 3.0 for w in m.fake.waits)
    assert [kind for kind, _ in m.events] == ["busy"] * 4 and "storage is full" in m.events[0][1]
    assert m.engine._adaptive.rate is None  # a 429 would have set a rate to slow to
    assert m.client.failing_since is None  # cleared by the answer at the end


def test_a_busy_server_runs_the_unreachable_clock() -> None:
    """Busy forever is not waited forever: the clock a run stops by runs while every try is a 503."""
    m = Mock(status(503, {"Retry-After": "5"}), policy=RetryPolicy(max_attempts=2))
    start = m.fake.now
    seen: list[float | None] = []

    def watch(kind: str, why: str) -> None:
        seen.append(m.client.failing_since)
        if len(seen) == 3:
            m.engine.cancel()

    m.client.on_event = watch
    with pytest.raises(CancelledError):
        m.client.encode_text("x")
    assert seen == [start] * 3 and len(m.calls) == 3


# -- 5xx and no answer: retried with backoff, then given up --------------------------------------


@pytest.mark.parametrize("code", [500, 502, 503, 504])
def test_5xx_is_retried_then_given_up_after_max_attempts(code: int) -> None:
    m = Mock(status(code, detail="upstream"))
    with pytest.raises(ServerError, match=f"{code} upstream") as info:
        m.client.get_status("r1")
    assert info.value.status_code == code and info.value.request_id == "r1"
    assert m.calls == [("GET", "/async_status/r1")] * POLICY.max_attempts
    assert len(m.fake.waits) == POLICY.max_attempts - 1  # full jitter under base * 2**n
    assert all(0.0 <= w <= 0.5 * 2 ** n for n, w in enumerate(m.fake.waits))
    assert [kind for kind, _ in m.events] == ["retry"] * (POLICY.max_attempts - 1)


def test_5xx_then_an_answer_succeeds() -> None:
    m = Mock(status(502), status(503), EMBEDDING)
    assert m.client.encode_text("x") == VEC
    assert len(m.seen) == 3 and len(m.fake.waits) == 2
    assert m.events[0][0] == "retry" and "try 2 in" in m.events[0][1]


@pytest.mark.parametrize(("code", "error"), [(400, BadRequestError), (401, AuthenticationError),
                                             (402, QuotaExceededError), (413, PayloadTooLargeError),
                                             (422, ValidationError), (501, ServerError)])
def test_client_errors_and_501_are_not_retried(code: int, error: type[Exception]) -> None:
    m = Mock(status(code, detail=f"echo {KEY}"))
    with pytest.raises(error) as info:
        m.client.encode_text("x")
    assert len(m.seen) == 1 and m.fake.waits == [] and m.events == []
    assert KEY not in str(info.value) and "[redacted]" in str(info.value)


@pytest.mark.parametrize("lost", [APITimeoutError("GET /x: no answer within 60 s"),
                                  APIConnectionError("GET /x: connection failed (refused)")])
def test_no_answer_is_retried(lost: Exception) -> None:
    m = Mock(lost, lost, ok({"request_id": "r1", "status": "processing"}))
    assert m.client.get_status("r1")["status"] == "processing"
    assert m.calls == [("GET", "/async_status/r1")] * 3 and len(m.fake.waits) == 2


def test_check_auth_tries_three_times_at_most() -> None:
    m = Mock(APIConnectionError("connection failed (Connection refused)"))
    with pytest.raises(APIConnectionError, match="cannot reach http://mock \\(connection refused\\)"):
        m.client.check_auth()
    assert len(m.seen) == 3
    assert [why for _, why in m.events] == [f"connection refused; try {n} in {w:.1f} s"
                                            for n, w in zip((2, 3), m.fake.waits, strict=True)]


# -- the transport: requests' exceptions mapped once, the key never in a message -----------------


class _Session:
    def __init__(self, *answers: Exception | int) -> None:
        self.answers = list(answers)
        self.sent: list[dict[str, Any]] = []

    def request(self, method: str, url: str, **kw: Any) -> requests.Response:
        self.sent.append({"method": method, "url": url, **kw})
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        resp = requests.Response()
        resp.status_code, resp._content = answer, b'{"request_id": "r1", "status": "completed"}'
        return resp

    def close(self) -> None:
        pass


def _over(session: _Session) -> Client:
    """A client over its default transport, whose session is ``session``."""
    fake = Fake()
    client = Client(KEY, base_url="http://mock", timeout=(2.0, 7.0),
                    retrier=RetryEngine(POLICY, clock=fake.clock, sleep=fake.sleep))
    transport = client._session._transport
    assert isinstance(transport, RequestsTransport)
    transport._session = session  # type: ignore[assignment]
    return client


def test_connect_and_read_timeouts_are_mapped_and_retried() -> None:
    session = _Session(requests.ConnectTimeout("connect"), requests.ReadTimeout("read"), 200)
    assert _over(session).get_status("r1")["status"] == "completed"
    assert len(session.sent) == 3 and all(s["timeout"] == (2.0, 7.0) for s in session.sent)
    assert session.sent[0]["headers"]["X-API-Key"] == KEY and session.sent[0]["data"] is None

    session = _Session(*[requests.ReadTimeout("read")] * POLICY.max_attempts)
    with pytest.raises(APITimeoutError, match=r"GET /async_status/r1: no answer within 7 s") as info:
        _over(session).get_status("r1")
    assert isinstance(info.value.__cause__, requests.ReadTimeout)


def test_a_library_error_is_ours_with_the_key_redacted() -> None:
    leak = requests.ConnectionError(f"Invalid header value {KEY!r}")
    with pytest.raises(APIConnectionError) as info:
        _over(_Session(*[leak] * POLICY.max_attempts)).get_status("r1")
    assert type(info.value) is APIConnectionError and info.value.__cause__ is leak
    assert KEY not in str(info.value) and "'[redacted]'" in str(info.value)
    assert KEY not in repr(Request("GET", "http://mock", "/x", headers={"X-API-Key": KEY}))


# -- 413: one request per tensor -----------------------------------------------------------------


def _too_big_unless_one_tensor(request: Request) -> Response:
    body = json.loads(request.content or b"{}")
    tensors = [k for k in ("video_input", "audio_input", "video_kwargs") if k in body]
    if len(tensors) > 1:
        return status(413, detail="body too large")
    return ok({"r2_keys": {tensors[0]: f"{body['request_id']}/{tensors[0]}"}})


def test_413_upload_is_split_into_one_request_per_tensor() -> None:
    m = Mock(_too_big_unless_one_tensor)
    keys = m.client.upload_tensors("embedding", "r1", video_input={"v": 1}, audio_input={"a": 2})
    assert keys == {"video_input": "r1/video_input", "audio_input": "r1/audio_input"}
    bodies = [json.loads(r.content or b"") for r in m.seen]
    assert m.calls == [("POST", "/files/upload/tensors")] * 3 and m.fake.waits == []
    assert bodies[1:] == [{"service": "embedding", "request_id": "r1", "video_input": {"v": 1}},
                          {"service": "embedding", "request_id": "r1", "audio_input": {"a": 2}}]
    assert all(r.request_id == "r1" and r.headers["Content-Type"] == "application/json" for r in m.seen)


def test_413_for_a_single_tensor_cannot_be_split() -> None:
    m = Mock(status(413, detail="body too large"))
    with pytest.raises(PayloadTooLargeError, match="cannot be split further"):
        m.client.upload_tensors("embedding", "r1", video_input={"v": 1})
    assert len(m.seen) == 1


# -- a submission whose answer was lost: looked up before any resend -----------------------------


def _submit(m: Mock) -> dict[str, Any]:
    return m.client.submit("embedding", tensor={"video_input_key": "k"}, request_id="r1")


def _server(*, accepts: bool, lose: int, submit_status: int = 200) -> tuple[Handler, list[str]]:
    """A server that takes (or not) each submission, then loses its first ``lose`` answers."""
    jobs: list[str] = []

    def handle(request: Request) -> Response:
        if request.method == "GET":
            if jobs:
                return ok({"request_id": jobs[0], "status": "processing", "task_type": "embedding"})
            return status(404, detail="no such job")
        if accepts:
            jobs.append(json.loads(request.content or b"")["request_id"])
        if len(jobs) <= lose and accepts:
            raise LOST
        if submit_status != 200:
            return status(submit_status, detail="gateway")
        return ok({"request_id": "r1", "status": "pending"})

    return handle, jobs


@pytest.mark.parametrize("lost_as", ["reset", "502"])
def test_lost_submission_answer_is_looked_up_and_never_sent_twice(lost_as: str) -> None:
    if lost_as == "reset":
        handle, jobs = _server(accepts=True, lose=1)
    else:
        handle, jobs = _server(accepts=True, lose=0, submit_status=502)
    m = Mock(handle)
    answer = _submit(m)
    assert answer["status"] == "processing" and jobs == ["r1"]
    assert m.calls == [("POST", SUBMIT), ("GET", "/async_status/r1")]  # the lookup, no resend
    assert len(m.fake.waits) == 1  # the backoff, then the lookup


def test_a_submission_that_never_arrived_is_sent_again_after_the_lookup() -> None:
    m = Mock(LOST, status(404), ok({"request_id": "r1", "status": "pending"}))
    assert _submit(m)["status"] == "pending"
    assert m.calls == [("POST", SUBMIT), ("GET", "/async_status/r1"), ("POST", SUBMIT)]


def test_409_is_the_same_job_when_the_server_has_it_for_this_service() -> None:
    existing = ok({"request_id": "r1", "status": "completed", "task_type": "embedding", "embedding": VEC})
    m = Mock(status(409), existing)
    assert _submit(m)["status"] == "completed"
    assert m.calls == [("POST", SUBMIT), ("GET", "/async_status/r1")]
    m = Mock(status(409), ok({"request_id": "r1", "status": "completed", "task_type": "tagging", "tags": {}}))
    with pytest.raises(ConflictError):
        _submit(m)


# -- cancellation, pacing, the unreachable clock -------------------------------------------------


def test_cancel_interrupts_a_wait_with_cancelled_error() -> None:
    seen: list[Request] = []

    def handle(request: Request) -> Response:
        seen.append(request)
        return status(429, {"Retry-After": "10"})

    client = Client(KEY, base_url="http://mock", transport=MockTransport(handle), retry=POLICY)
    threading.Timer(0.05, client.cancel).start()
    started = time.monotonic()
    with pytest.raises(CancelledError, match="cancelled"):
        client.encode_text("x")  # a real 10 s wait, cut short
    assert time.monotonic() - started < 2.0 and len(seen) == 1
    assert issubclass(CancelledError, APIConnectionError)


def test_cancelled_by_an_event_sends_nothing_and_ends_with_the_block() -> None:
    m = Mock(EMBEDDING)
    stop = threading.Event()
    with m.client.cancelled_by(stop):
        stop.set()
        with pytest.raises(CancelledError):
            m.client.encode_text("x")
    assert m.seen == []
    assert m.client.encode_text("x") == VEC  # the client's own flag was never set


def test_qps_bucket_paces_every_send() -> None:
    m = Mock(EMBEDDING, qps=4.0)
    for _ in range(3):
        m.client.encode_text("x")
    assert m.fake.waits == pytest.approx([0.25, 0.25])


def test_unreachable_clock_is_set_by_failures_and_cleared_by_any_answer() -> None:
    m = Mock(status(503), LOST, status(404), status(429), EMBEDDING, policy=RetryPolicy(max_attempts=1))
    start = m.fake.now
    assert m.client.failing_since is None and m.client.last_ok == start
    with pytest.raises(ServerError):
        m.client.encode_text("x")
    assert m.client.failing_since == start
    m.fake.now += 30
    with pytest.raises(APIConnectionError):
        m.client.encode_text("x")
    assert m.client.failing_since == start  # failing since the first failure, not the last
    with pytest.raises(NotFoundError):
        m.client.get_status("r1")
    assert m.client.failing_since is None and m.client.last_ok == m.fake.now  # a 404 is an answer
    during_429: list[float | None] = []
    m.client.on_event = lambda kind, why: during_429.append(m.client.failing_since)
    assert m.client.encode_text("x") == VEC
    assert during_429 == [start + 30] and m.client.failing_since is None
