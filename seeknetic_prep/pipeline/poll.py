"""The poll stage: ask ``async_status`` about submitted jobs until each is finished.

Jobs wait in a heap ordered by when they are next due; the interval of each grows from
``poll_s`` to ``max_poll_s`` (x1.5 per round), so a long job costs few requests. A poll that
fails after the client's retries is simply due again later (asking is always safe); a job
still not finished after ``job_timeout_s`` fails with that reason. A 404 for a job the server
accepted fails the unit: the server lost it.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import Any

from seeknetic_prep.api.client import Client
from seeknetic_prep.errors import APIError, AuthenticationError, NotFoundError, StopReason
from seeknetic_prep.pipeline.ledger import Ledger

__all__ = ["PollStage"]


class PollStage:
    def __init__(self, client: Client, ledger: Ledger, *, threads: int, stop: threading.Event,
                 halt: Callable[[StopReason, str], None], poll_s: float, max_poll_s: float,
                 job_timeout_s: float) -> None:
        self.client = client
        self.ledger = ledger
        self.stop = stop
        self._halt = halt
        self._poll_s, self._max_poll_s, self._timeout_s = poll_s, max_poll_s, job_timeout_s
        self._heap: list[tuple[float, float, float, str]] = []  # (due, interval, deadline, rid)
        self._cv = threading.Condition()
        self._active = 0
        self._threads = [threading.Thread(target=self._loop, daemon=True, name=f"poll-{i}")
                         for i in range(threads)]
        for t in self._threads:
            t.start()

    @property
    def busy(self) -> int:
        """Jobs waiting for their next poll or being polled now."""
        with self._cv:
            return len(self._heap) + self._active

    def add(self, request_id: str) -> None:
        now = time.monotonic()
        self._push(now + self._poll_s, self._poll_s, now + self._timeout_s, request_id)

    def _push(self, due: float, interval: float, deadline: float, rid: str) -> None:
        with self._cv:
            heapq.heappush(self._heap, (due, interval, deadline, rid))
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
                due, interval, deadline, rid = self._heap[0]
                wait_s = due - time.monotonic()
                if wait_s > 0:
                    self._cv.wait(timeout=min(wait_s, 0.2))
                    continue
                heapq.heappop(self._heap)
                self._active += 1
            try:
                self._poll_one(rid, interval, deadline)
            except AuthenticationError as exc:
                self._halt(StopReason.AUTH, str(exc))
            finally:
                with self._cv:
                    self._active -= 1

    def _poll_one(self, rid: str, interval: float, deadline: float) -> None:
        try:
            answer: dict[str, Any] = self.client.get_status(rid)
        except NotFoundError:
            self.ledger.failed(rid, f"the server has no job {rid} (404) although it accepted it")
            return
        except AuthenticationError:
            raise
        except APIError:
            if self.stop.is_set():
                return
            answer = {"status": "unknown"}  # ask again later
        status = answer.get("status")
        if status == "completed":
            self.ledger.completed(rid, {k: answer[k] for k in ("embedding", "tags", "model_name")
                                        if k in answer})
            return
        if status == "failed":
            self.ledger.failed(rid, str(answer.get("error_message") or "the job failed without a message"))
            return
        now = time.monotonic()
        if now > deadline:
            self.ledger.failed(rid, f"job {rid} still {status} after {self._timeout_s:g} s")
            return
        nxt = min(self._max_poll_s, interval * 1.5)
        self._push(now + nxt, nxt, deadline, rid)
