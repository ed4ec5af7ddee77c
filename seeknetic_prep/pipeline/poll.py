"""The poll stage: ask ``async_status`` about submitted jobs until each is finished.

Jobs wait in a heap ordered by when they are next due; the interval of each grows from
``poll_s`` to ``max_poll_s`` (x1.5 per round), so a long job costs few requests. A poll that
fails after the client's retries is simply due again later (asking is always safe); a job
still not finished after ``job_timeout_s`` fails with that reason. A 404 for a job the server
accepted fails the unit: the server lost it.

Every answer is checked (:func:`~seeknetic_prep.answers.check_status`) before anything is
kept. A malformed one (not JSON, not an object, an embedding that is not 1024 finite numbers, a
tag out of range) is asked again ``_MALFORMED_TRIES - 1`` times, in case something in between
mangled it, then fails the job with the reason: it must neither be stored (it would break every
later ``results`` and ``search``) nor be asked about for the whole job timeout.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from seeknetic_prep.api.client import Client
from seeknetic_prep.api.pacing import stage_threads
from seeknetic_prep.errors import (
    APIError,
    AuthenticationError,
    MalformedAnswerError,
    NotFoundError,
    StopReason,
)
from seeknetic_prep.pipeline.ledger import Ledger

__all__ = ["PollStage"]

_MALFORMED_TRIES = 3


class _Due(NamedTuple):
    """One job in the heap, ordered by when it is next due."""

    due: float
    interval: float
    deadline: float
    rid: str
    service: str
    malformed: int  # malformed answers in a row


class PollStage:
    def __init__(self, client: Client, ledger: Ledger, *, threads: int, stop: threading.Event,
                 halt: Callable[[StopReason, str], None], poll_s: float, max_poll_s: float,
                 job_timeout_s: float) -> None:
        self.client = client
        self.ledger = ledger
        self.stop = stop
        self._halt = halt
        self._poll_s, self._max_poll_s, self._timeout_s = poll_s, max_poll_s, job_timeout_s
        self._heap: list[_Due] = []
        self._cv = threading.Condition()
        self._active = 0
        self._threads = stage_threads("poll", threads, self._loop, halt)

    @property
    def busy(self) -> int:
        """Jobs waiting for their next poll or being polled now."""
        with self._cv:
            return len(self._heap) + self._active

    def add(self, request_id: str, service: str) -> None:
        """Poll the job ``request_id`` of ``service`` (what its answer must hold) until it ends."""
        now = time.monotonic()
        self._push(_Due(now + self._poll_s, self._poll_s, now + self._timeout_s, request_id, service, 0))

    def _push(self, job: _Due) -> None:
        with self._cv:
            heapq.heappush(self._heap, job)
            self._cv.notify()

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def join(self, timeout: float) -> None:
        self.wake()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def _loop(self) -> None:
        while not self.stop.is_set():
            with self._cv:
                if not self._heap:
                    self._cv.wait(timeout=0.2)
                    continue
                wait_s = self._heap[0].due - time.monotonic()
                if wait_s > 0:
                    self._cv.wait(timeout=min(wait_s, 0.2))
                    continue
                job = heapq.heappop(self._heap)
                self._active += 1
            try:
                self._poll_one(job)
            except AuthenticationError as exc:
                self._halt(StopReason.AUTH, str(exc))
            finally:
                with self._cv:
                    self._active -= 1

    def _poll_one(self, job: _Due) -> None:
        rid, malformed = job.rid, 0
        try:
            answer: dict[str, Any] = self.client.get_status(rid, job.service)
        except NotFoundError:
            self.ledger.failed(rid, f"the server has no job {rid} (404) although it accepted it")
            return
        except AuthenticationError:
            raise
        except MalformedAnswerError as exc:
            malformed = job.malformed + 1
            if malformed >= _MALFORMED_TRIES:
                self.ledger.failed(rid, str(exc))
                return
            answer = {"status": "malformed"}  # ask again soon: something in between may have mangled it
        except APIError:
            if self.stop.is_set():
                return
            answer = {"status": "unknown"}  # ask again later
        status = answer["status"]
        if status == "completed":
            self.ledger.completed(rid, {k: answer[k] for k in ("embedding", "tags", "model_name")
                                        if answer.get(k) is not None})
            return
        if status == "failed":
            self.ledger.failed(rid, str(answer.get("error_message") or "the job failed without a message"))
            return
        now = time.monotonic()
        if now > job.deadline:
            self.ledger.failed(rid, f"job {rid} still {status} after {self._timeout_s:g} s")
            return
        nxt = min(self._max_poll_s, job.interval * 1.5)
        self._push(job._replace(due=now + nxt, interval=nxt, malformed=malformed))
