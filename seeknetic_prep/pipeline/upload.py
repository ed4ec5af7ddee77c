"""The upload/submit stage: threads that send a window's bodies, then submit its jobs.

How many bodies are sent at once is found from the link (:mod:`.upload_gate`): a thread holds
an upload slot while it sends a body and gives it back before it submits, so a submission
waiting for its answer never keeps the link idle.

Items come in through a bounded queue (:meth:`UploadStage.put` blocks when it is full: that is
the backpressure that reaches the decoders). For each item a thread:

1. uploads the body (idempotent: same request_id, same tensors) and commits ``uploaded``;
2. if the ledger says the server may have the job already, looks it up (``async_status``);
3. submits the job (the client looks the id up before any resend of an ambiguous attempt) and
   commits ``submitted``, then hands the id to the poll stage.

A call that still fails after the client's own retries is never dropped: the thread waits
(backoff with jitter, up to 30 s) and tries the same item again, so an outage or a restart of
the API only pauses the run. Two things end the retrying: the API answering nothing at all for
``RunOptions.unreachable_after_s`` (the run then stops, state kept), or one unit failing
``_UNIT_ROUNDS`` rounds while other calls succeed (that unit fails, the run goes on).
"""

from __future__ import annotations

import contextlib
import queue
import random
import threading
import time
from collections.abc import Callable

from seeknetic_prep.api.client import Client
from seeknetic_prep.api.pacing import put_unless, stage_threads
from seeknetic_prep.errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    NotFoundError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    StopReason,
)
from seeknetic_prep.pipeline.ledger import Ledger, Work
from seeknetic_prep.pipeline.upload_gate import Concurrency, UploadGate

__all__ = ["UploadStage"]

_UNIT_ROUNDS = 4
_MAX_BACKOFF_S = 30.0


class UploadStage:
    """``threads`` upload/submit workers over one bounded queue.

    ``halt(reason, message)`` is how the stage stops the run (``"auth"``, ``"unreachable"``);
    ``no_submit`` is set when the quota is spent, or when ``max_jobs`` jobs were submitted and
    another is due (what is decoded is still uploaded, nothing more is submitted;
    ``quota_reason`` and ``quota_message`` say which); ``poll(request_id, service)`` hands a
    submitted job on.
    """

    def __init__(self, client: Client, ledger: Ledger, *, threads: int, stop: threading.Event,
                 no_submit: threading.Event, poll: Callable[[str, str], None],
                 halt: Callable[[StopReason, str], None], unreachable_after_s: float,
                 max_jobs: int | None = None, max_uploads: int | None = None) -> None:
        self.client = client
        self.ledger = ledger
        self.stop = stop
        self.no_submit = no_submit
        self._poll = poll
        self._halt = halt
        self._unreachable_after_s = unreachable_after_s
        self._max_jobs = max_jobs
        self._submitting: set[str] = set()  # units this run has sent a submission for
        self.quota_reason = StopReason.QUOTA
        self.quota_message: str | None = None
        self._queue: queue.Queue[Work | None] = queue.Queue(maxsize=max(2, 2 * threads))
        self._lock = threading.Lock()
        self._active = 0
        # Uploads in flight: ``threads`` to start with, found from the link up to ``max_uploads``
        # (None: fixed at ``threads``); as many threads again submit what was uploaded.
        ceiling = threads if max_uploads is None else max(threads, max_uploads)
        self.gate = UploadGate(Concurrency(threads, ceiling), client.link, adapt=max_uploads is not None)
        self._threads = stage_threads("upload", ceiling + threads, self._loop, halt)

    @property
    def busy(self) -> int:
        """Items queued or being worked on."""
        with self._lock:
            return self._queue.qsize() + self._active

    def put(self, item: Work) -> bool:
        """Queue ``item``, waiting while the queue is full; False if the run stopped first."""
        return put_unless(self._queue, item, self.stop, 0.1)

    def join(self, timeout: float) -> None:
        """Wait for the threads to end (after ``stop`` is set): each idle one is woken at once."""
        deadline = time.monotonic() + timeout
        for _ in self._threads:
            with contextlib.suppress(queue.Full):  # full: its threads are busy, and see stop soon
                self._queue.put_nowait(None)
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def _loop(self) -> None:
        while not self.stop.is_set():
            if not self.gate.acquire(timeout=0.5):
                continue
            slot = _Slot(self.gate)
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                slot.release()
                continue
            if item is None:  # woken by join
                slot.release()
                continue
            if not self._queue.empty():  # more work than slots: the link is what is behind
                self.gate.more_waiting()
            with self._lock:
                self._active += 1
            try:
                self._until_done(item, slot)
            finally:
                slot.release()
                with self._lock:
                    self._active -= 1

    def _until_done(self, item: Work, slot: _Slot) -> None:
        rounds = 0
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self._process(item, slot)
                return
            except AuthenticationError as exc:
                self._halt(StopReason.AUTH, str(exc))
                return
            except QuotaExceededError as exc:
                with self._lock:
                    self.quota_reason, self.quota_message = StopReason.QUOTA, str(exc)
                self.no_submit.set()
                return
            except (APIConnectionError, ServerError, RateLimitError) as exc:
                if self.stop.is_set():
                    return
                rounds += 1
                since = self.client.failing_since
                if since is not None and time.monotonic() - since > self._unreachable_after_s:
                    self._halt(StopReason.UNREACHABLE,
                               f"every call failed for {time.monotonic() - since:.0f} s; last: {exc}")
                    return
                if rounds >= _UNIT_ROUNDS and self.client.last_ok > started:
                    # the API answers other calls: this unit is the problem, not the API
                    self.ledger.failed(item.request_id, f"gave up after {rounds} rounds of retries: {exc}")
                    return
                self._backoff(rounds)
            except APIError as exc:  # 400, 409, 413 that cannot be split, 422, malformed: the unit fails
                self.ledger.failed(item.request_id, str(exc))
                return

    def _may_submit(self, request_id: str) -> bool:
        """Count a submission against ``max_jobs``: a unit counts once however often its
        submission is retried; the first unit past the limit stops all submitting, as a spent
        quota does (the units left are submitted by a later run)."""
        with self._lock:
            if self._max_jobs is None or request_id in self._submitting:
                return True
            if len(self._submitting) < self._max_jobs:
                self._submitting.add(request_id)
                return True
            if self.quota_message is None:  # a real 402 says more: it is kept
                self.quota_reason = StopReason.MAX_JOBS
                self.quota_message = f"--max-jobs {self._max_jobs} reached"
        self.no_submit.set()
        return False

    def _backoff(self, rounds: int) -> None:
        self.stop.wait(random.uniform(0.5, 1.0) * min(_MAX_BACKOFF_S, 2.0 ** rounds))

    def _process(self, item: Work, slot: _Slot) -> None:
        if self.ledger.is_dead(item.fingerprint):
            return
        if item.body is not None:
            item.r2_keys = self.client.upload_body(item.body, request_id=item.request_id)
            self.ledger.uploaded(item.request_id, item.r2_keys, item.frame_times_ms)
            item.body = None  # 3-6 MB: not held through the submission's retries
        slot.release()  # the body is sent: the submission waits without holding an upload slot
        if item.lookup or self.ledger.needs_lookup(item.request_id):
            try:
                self.client.get_status(item.request_id, item.service)
            except NotFoundError:
                pass
            else:  # the server has the job already: its submission was just not recorded
                self.ledger.submitted(item.request_id)
                self._poll(item.request_id, item.service)
                return
        keys = item.r2_keys  # needed only to submit (a completed unit's keys are not kept)
        if keys is None:
            raise APIError(f"unit {item.request_id} is uploaded but has no r2 keys",
                           request_id=item.request_id)
        if self.stop.is_set() or self.no_submit.is_set() or not self._may_submit(item.request_id):
            return  # stays uploaded: the next run submits it without a new upload
        tensor = {"video_input_key": keys["video_input"]}
        extra = ("audio_input", "audio_input_key") if item.service == "embedding" else (
            "video_kwargs", "video_kwargs_key")
        if extra[0] in keys:
            tensor[extra[1]] = keys[extra[0]]
        try:
            self.client.submit(item.service, tensor=tensor, request_id=item.request_id)  # type: ignore[arg-type]
        except (APIConnectionError, ServerError):
            item.lookup = True  # it may have reached the server: look up before trying again
            raise
        self.ledger.submitted(item.request_id)
        self._poll(item.request_id, item.service)


class _Slot:
    """A thread's hold on one upload slot, given back once (after the body, or at the end)."""

    def __init__(self, gate: UploadGate) -> None:
        self._gate: UploadGate | None = gate

    def release(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.release()
