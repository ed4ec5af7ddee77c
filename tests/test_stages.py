"""The upload and poll stages on their own (issue 17 item 8): a real ledger over a real state
store, a client over a :class:`~seeknetic_prep.api.transport.MockTransport` whose retry engine
waits on a fake clock. What is checked is what each stage asks the API, in which order, and what
it leaves in the ledger: the exactly-once rules of the stages without a server or a sleep. The
emulator's end-to-end tests stay for integration.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _mock_api import Mock, ok, status

from seeknetic_prep.api.answers import EMBEDDING_DIM
from seeknetic_prep.api.transport import Request, Response
from seeknetic_prep.errors import APIConnectionError, StopReason
from seeknetic_prep.pipeline.ledger import Ledger, Work
from seeknetic_prep.pipeline.poll import PollStage
from seeknetic_prep.pipeline.spec import POLL_THREADS, RunSpec
from seeknetic_prep.pipeline.tasks import FilePlan, unit_request_id
from seeknetic_prep.pipeline.upload import UploadStage
from seeknetic_prep.state.store import Store

FP = "ef" * 32
UPLOAD = ("POST", "/files/upload/tensors")
SUBMIT = ("POST", "/video_embedding/encode_video/async")


def rid(index: int) -> str:
    return unit_request_id(FP, (index, index * 10_000, (index + 1) * 10_000), "embedding")


def status_path(request_id: str) -> tuple[str, str]:
    return ("GET", f"/async_status/{request_id}")


def keys_of(request_id: str) -> dict[str, str]:
    return {"video_input": f"tensors/{request_id}/video_input.json",
            "audio_input": f"tensors/{request_id}/audio_input.json"}


def completed(request_id: str) -> Response:
    return ok({"request_id": request_id, "status": "completed", "task_type": "embedding",
               "embedding": [0.25] * EMBEDDING_DIM, "model_name": "m-1"})


class FakeAPI:
    """Answers as the API would, by path: an upload returns the unit's r2 keys, a submission is
    accepted, and ``GET /async_status`` answers 404 until the job was submitted, then the next
    of ``progress`` (the last repeats). ``override`` answers a path first while it has answers
    for it left (a response, or a function of the request)."""

    def __init__(self, progress: tuple[str, ...] = ("completed",)) -> None:
        self.progress = progress
        self.submitted: list[str] = []
        self.asked: dict[str, int] = {}
        self.override: dict[tuple[str, str], list[Response | Callable[[Request], Response]]] = {}

    def __call__(self, request: Request) -> Response:
        where = (request.method, request.path)
        if self.override.get(where):
            answer = self.override[where].pop(0)
            return answer if isinstance(answer, Response) else answer(request)
        rid_ = request.request_id or ""
        if where == UPLOAD:
            return ok({"r2_keys": keys_of(json.loads(request.content or b"{}")["request_id"])})
        if where == SUBMIT:
            self.submitted.append(rid_)
            return ok({"request_id": rid_, "status": "queued"})
        if rid_ not in self.submitted:
            return status(404, detail="job not found")
        n = self.asked[rid_] = self.asked.get(rid_, 0) + 1
        word = self.progress[min(n, len(self.progress)) - 1]
        return completed(rid_) if word == "completed" else ok({"request_id": rid_, "status": word})


@dataclass
class Bench:
    """One store, one ledger with a 3-window file admitted, and the events a stage's callers see."""

    db: Path
    store: Store
    ledger: Ledger
    stop: threading.Event = field(default_factory=threading.Event)
    no_submit: threading.Event = field(default_factory=threading.Event)
    halts: list[tuple[StopReason, str]] = field(default_factory=list)
    polled: list[tuple[str, str]] = field(default_factory=list)

    def halt(self, reason: StopReason, message: str) -> None:
        self.halts.append((reason, message))
        self.stop.set()

    def units(self) -> dict[str, tuple[str, Any, Any]]:
        """Each unit's (status, r2 keys, error) as another process would read them from the file."""
        self.store.flush()
        con = sqlite3.connect(self.db)
        try:
            return {r: (s, json.loads(k) if k else None, e)
                    for r, s, k, e in con.execute("SELECT request_id, status, r2_keys, error FROM units")}
        finally:
            con.close()


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    db = tmp_path / "out" / "state.sqlite"
    store = Store(db)
    ledger = Ledger(store, services=("embedding",))
    plan = FilePlan(path="/videos/a.mp4", fingerprint=FP, size=1, duration_ms=30_000,
                    windows=tuple((i, i * 10_000, (i + 1) * 10_000) for i in range(3)), mtime_ns=1, inode=2)
    ledger.admit(plan.path, plan, resize="crop", windows_per_task=4)
    b = Bench(db, store, ledger)
    yield b
    b.stop.set()
    store.close()


def until(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Wait for an effect of the stage's threads (never a fixed sleep; the timeout only ends a hang)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def upload_stage(b: Bench, mock: Mock, **kw: Any) -> UploadStage:
    return UploadStage(mock.client, b.ledger, threads=1, stop=b.stop, no_submit=b.no_submit,
                       poll=lambda r, s: b.polled.append((r, s)), halt=b.halt,
                       unreachable_after_s=300.0, **kw)


def work(i: int, **kw: Any) -> Work:
    body = json.dumps({"service": "embedding", "request_id": rid(i)}).encode()
    return Work(rid(i), "embedding", FP, body=body, frame_times_ms=(417.0, 1250.0), **kw)


def finished(stage: UploadStage | PollStage) -> Callable[[], bool]:
    return lambda: stage.busy == 0


# ---------------------------------------------------------------------------------- upload stage


def test_a_window_is_uploaded_then_submitted_with_its_keys_and_handed_to_the_poller(bench: Bench) -> None:
    api = FakeAPI()
    mock = Mock(api)
    stage = upload_stage(bench, mock)
    assert stage.put(work(0))
    until(lambda: bench.polled, "the hand-over to the poller")
    assert mock.calls == [UPLOAD, SUBMIT]
    sent = json.loads(mock.seen[1].content or b"")
    assert sent["request_id"] == rid(0)
    assert sent["tensor"] == {"video_input_key": keys_of(rid(0))["video_input"],
                              "audio_input_key": keys_of(rid(0))["audio_input"]}
    assert bench.polled == [(rid(0), "embedding")]
    assert bench.units()[rid(0)] == ("submitted", keys_of(rid(0)), None)
    assert bench.units()[rid(1)][0] == "planned"  # nothing else touched
    assert bench.halts == []


def test_an_uploaded_unit_is_submitted_without_a_new_upload(bench: Bench) -> None:
    """A unit uploaded by an earlier run comes with its keys and no body: no bytes are sent again."""
    mock = Mock(FakeAPI())
    bench.ledger.uploaded(rid(1), keys_of(rid(1)), [417.0])
    stage = upload_stage(bench, mock)
    stage.put(Work(rid(1), "embedding", FP, r2_keys=keys_of(rid(1))))
    until(lambda: bench.polled, "the submission")
    assert mock.calls == [SUBMIT]
    assert bench.units()[rid(1)][0] == "submitted"


def test_a_unit_the_server_may_have_is_looked_up_and_not_submitted_again(bench: Bench) -> None:
    api = FakeAPI()
    api.submitted.append(rid(0))  # an earlier run's submission reached the server, its record did not
    mock = Mock(api)
    stage = upload_stage(bench, mock)
    stage.put(work(0, lookup=True))
    until(lambda: bench.polled, "the hand-over after the lookup")
    assert mock.calls == [UPLOAD, status_path(rid(0))]  # no SUBMIT
    assert api.submitted == [rid(0)]
    assert bench.units()[rid(0)][0] == "submitted"


def test_a_lookup_that_finds_nothing_submits(bench: Bench) -> None:
    mock = Mock(FakeAPI())
    stage = upload_stage(bench, mock)
    stage.put(work(2, lookup=True))
    until(lambda: bench.polled, "the submission after a 404 lookup")
    assert mock.calls == [UPLOAD, status_path(rid(2)), SUBMIT]


def test_a_submission_whose_answer_was_lost_is_looked_up_before_it_is_sent_again(bench: Bench) -> None:
    """The server accepted the job and the connection broke before its answer: the retry engine
    asks ``async_status`` before resending, finds the job, and the unit is submitted once."""
    api = FakeAPI()

    def accept_then_lose(request: Request) -> Response:
        api.submitted.append(request.request_id or "")
        raise APIConnectionError("connection reset while reading the answer")

    api.override[SUBMIT] = [accept_then_lose]
    mock = Mock(api)
    stage = upload_stage(bench, mock)
    stage.put(work(0))
    until(lambda: bench.polled, "the hand-over")
    assert api.submitted == [rid(0)]  # once, though its answer never came
    assert mock.calls == [UPLOAD, SUBMIT, status_path(rid(0))]
    assert bench.units()[rid(0)][0] == "submitted"


def test_429_is_waited_out_on_the_clock_and_the_unit_goes_on(bench: Bench) -> None:
    api = FakeAPI()
    api.override[UPLOAD] = [status(429, {"Retry-After": "3"}, "slow down")]
    mock = Mock(api)
    stage = upload_stage(bench, mock)
    stage.put(work(0))
    until(lambda: bench.polled, "the submission after a 429")
    assert mock.calls == [UPLOAD, UPLOAD, SUBMIT]
    assert 3.0 <= mock.fake.waits[0] <= 4.0  # the server's Retry-After + jitter, on the fake clock
    assert mock.events[0][0] == "rate_limited"  # shown as a 429, not as a failure
    assert bench.units()[rid(0)][0] == "submitted"


def test_a_rejected_submission_fails_only_its_unit_with_the_servers_reason(bench: Bench) -> None:
    api = FakeAPI()
    api.override[SUBMIT] = [status(422, detail="video_input_key: tensor shape [1,11,3,224,224]")]
    mock = Mock(api)
    stage = upload_stage(bench, mock)
    stage.put(work(0))
    stage.put(work(1))
    until(lambda: bench.polled and stage.busy == 0, "both units")
    units = bench.units()
    assert units[rid(0)][0] == "failed" and "tensor shape [1,11,3,224,224]" in units[rid(0)][2]
    assert units[rid(1)][0] == "submitted"
    assert bench.polled == [(rid(1), "embedding")] and bench.halts == []


def test_a_spent_quota_stops_submitting_and_keeps_what_was_uploaded(bench: Bench) -> None:
    api = FakeAPI()
    api.override[SUBMIT] = [status(402, detail="monthly quota exhausted")] * 3
    mock = Mock(api)
    stage = upload_stage(bench, mock)
    stage.put(work(0))
    until(bench.no_submit.is_set, "the quota stop")
    stage.put(work(1))
    until(finished(stage), "the second unit")
    assert bench.no_submit.is_set() and stage.quota_reason is StopReason.QUOTA
    assert "monthly quota exhausted" in (stage.quota_message or "")
    assert mock.calls == [UPLOAD, SUBMIT, UPLOAD]  # the second is uploaded, not submitted
    assert {r: v[0] for r, v in bench.units().items()} == {rid(0): "uploaded", rid(1): "uploaded",
                                                           rid(2): "planned"}
    assert bench.polled == [] and bench.halts == []


def test_max_jobs_submits_that_many_units_and_leaves_the_rest_uploaded(bench: Bench) -> None:
    mock = Mock(FakeAPI())
    stage = upload_stage(bench, mock, max_jobs=2)
    for i in range(3):
        stage.put(work(i))
    until(lambda: len(mock.seen) == 5 and stage.busy == 0, "three uploads and two submissions")
    assert mock.calls.count(SUBMIT) == 2 and mock.calls.count(UPLOAD) == 3
    assert stage.quota_reason is StopReason.MAX_JOBS and stage.quota_message == "--max-jobs 2 reached"
    assert sorted(v[0] for v in bench.units().values()) == ["submitted", "submitted", "uploaded"]


def test_a_rejected_key_halts_the_run(bench: Bench) -> None:
    api = FakeAPI()
    api.override[UPLOAD] = [status(401, detail="invalid API key")]
    mock = Mock(api)
    stage = upload_stage(bench, mock)
    stage.put(work(0))
    until(lambda: bench.halts, "the halt")
    assert bench.halts[0][0] is StopReason.AUTH
    assert bench.units()[rid(0)][0] == "planned"  # nothing recorded for a key the server refused


def test_the_units_of_a_content_that_died_send_nothing(bench: Bench) -> None:
    """A file found undecodable while its other windows waited in the queue: they are dropped."""
    mock = Mock(FakeAPI())
    bench.ledger.content_failed(FP, "undecodable video: damaged from 0 ms", environmental=False)
    stage = upload_stage(bench, mock)
    stage.put(work(1))
    until(finished(stage), "the item")
    assert mock.calls == [] and bench.polled == []


# ---------------------------------------------------------------------------------- poll stage


def poll_stage(b: Bench, mock: Mock, *, timeout_s: float = 60.0) -> PollStage:
    return PollStage(mock.client, b.ledger, threads=1, stop=b.stop, halt=b.halt,
                     poll_s=0.001, max_poll_s=0.002, job_timeout_s=timeout_s)


def submitted(b: Bench, api: FakeAPI, *indexes: int) -> None:
    for i in indexes:
        b.ledger.uploaded(rid(i), keys_of(rid(i)), [417.0])
        b.ledger.submitted(rid(i))
        api.submitted.append(rid(i))


def test_a_job_is_polled_until_it_completes_and_its_embedding_is_kept(bench: Bench) -> None:
    api = FakeAPI(progress=("queued", "processing", "processing", "completed"))
    submitted(bench, api, 0)
    mock = Mock(api)
    stage = poll_stage(bench, mock)
    stage.add(rid(0), "embedding")
    until(finished(stage), "the job's end")
    assert mock.calls == [status_path(rid(0))] * 4
    assert bench.units()[rid(0)][0] == "completed"
    bench.store.flush()
    con = sqlite3.connect(bench.db)
    try:
        blob, result = con.execute("SELECT embedding, result FROM units WHERE request_id = ?",
                                   (rid(0),)).fetchone()
    finally:
        con.close()
    vec = np.frombuffer(blob, dtype="<f4")
    assert vec.shape == (EMBEDDING_DIM,) and np.all(vec == np.float32(0.25))
    assert json.loads(result)["model_name"] == "m-1"


def test_a_failed_job_fails_its_unit_with_the_servers_message(bench: Bench) -> None:
    api = FakeAPI()
    submitted(bench, api, 1)
    api.override[status_path(rid(1))] = [ok({"request_id": rid(1), "status": "failed",
                                              "error_message": "decoder error in window 1"})]
    stage = poll_stage(bench, Mock(api))
    stage.add(rid(1), "embedding")
    until(finished(stage), "the job's end")
    assert bench.units()[rid(1)] == ("failed", keys_of(rid(1)), "decoder error in window 1")


def test_a_job_the_server_lost_fails(bench: Bench) -> None:
    api = FakeAPI()
    submitted(bench, api, 0)
    api.submitted.clear()  # the server forgot it: 404
    stage = poll_stage(bench, Mock(api))
    stage.add(rid(0), "embedding")
    until(finished(stage), "the job's end")
    state, _, error = bench.units()[rid(0)]
    assert state == "failed" and "404" in error and rid(0) in error


@pytest.mark.parametrize("bad_answers", [1, 2, 3])
def test_a_malformed_answer_is_asked_again_then_fails_the_job_without_storing_it(
        bench: Bench, bad_answers: int) -> None:
    api = FakeAPI()
    submitted(bench, api, 0)
    nan_embedding = Response(200, {}, json.dumps({"request_id": rid(0), "status": "completed",
                                                  "embedding": [0.1] * 1000}).encode())
    api.override[status_path(rid(0))] = [nan_embedding] * bad_answers
    mock = Mock(api)
    stage = poll_stage(bench, mock)
    stage.add(rid(0), "embedding")
    until(finished(stage), "the job's end")
    state, _, error = bench.units()[rid(0)]
    if bad_answers < 3:  # mangled on the way, then a good answer: kept
        assert state == "completed" and len(mock.seen) == bad_answers + 1
    else:
        assert state == "failed" and error.startswith("malformed answer") and len(mock.seen) == 3


def test_a_job_still_running_after_the_job_timeout_fails_with_that_reason(bench: Bench) -> None:
    api = FakeAPI(progress=("processing",))
    submitted(bench, api, 2)
    mock = Mock(api)
    stage = poll_stage(bench, mock, timeout_s=0.05)
    stage.add(rid(2), "embedding")
    until(finished(stage), "the timeout")
    state, _, error = bench.units()[rid(2)]
    assert state == "failed" and error == f"job {rid(2)} still processing after 0.05 s"
    assert len(mock.seen) >= 1


def test_a_status_call_that_keeps_failing_is_asked_again_later_not_failed(bench: Bench) -> None:
    api = FakeAPI()
    submitted(bench, api, 0)
    api.override[status_path(rid(0))] = [status(500, detail="boom")] * 8  # two rounds of 4 attempts
    mock = Mock(api)
    stage = poll_stage(bench, mock)
    stage.add(rid(0), "embedding")
    until(finished(stage), "the job's end")
    assert bench.units()[rid(0)][0] == "completed"
    assert len(mock.seen) == 9 and bench.halts == []


def test_a_rejected_key_while_polling_halts_the_run(bench: Bench) -> None:
    api = FakeAPI()
    submitted(bench, api, 0)
    api.override[status_path(rid(0))] = [status(401, detail="key revoked")]
    stage = poll_stage(bench, Mock(api))
    stage.add(rid(0), "embedding")
    until(lambda: bench.halts, "the halt")
    assert bench.halts[0][0] is StopReason.AUTH
    assert bench.units()[rid(0)][0] == "submitted"  # kept for the next run to poll


def test_a_run_that_follows_the_link_keeps_many_polls_in_flight(bench: Bench) -> None:
    """Each poll costs a round trip: on a distant API the poller must ask many jobs at once.
    With half the starting uploads (4 threads) a run at 1200 ms one way took 33-37 s more than its
    upload; a run whose uploads follow the link polls ``POLL_THREADS`` at once. The API here
    answers no poll until that many are waiting together."""
    assert RunSpec().poll_threads == POLL_THREADS >= 16
    assert RunSpec(uploaders=6).poll_threads == 3  # fixed uploaders: half of them, as before
    fp = "ab" * 32
    windows = tuple((i, i * 10_000, (i + 1) * 10_000) for i in range(POLL_THREADS))
    plan = FilePlan(path="/videos/b.mp4", fingerprint=fp, size=1, duration_ms=10_000 * len(windows),
                    windows=windows, mtime_ns=1, inode=3)
    bench.ledger.admit(plan.path, plan, resize="crop", windows_per_task=4)
    ids = [unit_request_id(fp, w, "embedding") for w in windows]
    for r in ids:
        bench.ledger.uploaded(r, keys_of(r), [417.0])
        bench.ledger.submitted(r)
    together = threading.Barrier(POLL_THREADS, timeout=20)

    def distant(request: Request) -> Response:
        together.wait()
        return completed(request.path.rsplit("/", 1)[1])

    mock = Mock(distant)
    stage = PollStage(mock.client, bench.ledger, threads=RunSpec().poll_threads, stop=bench.stop,
                      halt=bench.halt, poll_s=0.001, max_poll_s=0.002, job_timeout_s=60.0)
    for r in ids:
        stage.add(r, "embedding")
    until(finished(stage), "every job's answer", timeout=60)
    assert not together.broken
    units = bench.units()
    assert [units[r][0] for r in ids] == ["completed"] * len(ids)
