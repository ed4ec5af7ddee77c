"""A client over a MockTransport with a fake clock, for tests that need no server and no sleeps."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from seeknetic_prep.api.client import Client, RetryPolicy, TokenBucket
from seeknetic_prep.api.retry import RetryEngine
from seeknetic_prep.api.transport import MockTransport, Request, Response

POLICY = RetryPolicy(max_attempts=4, base_delay_s=0.5, max_delay_s=20.0)
KEY = "sk-retry-SECRET-0123"
Handler = Callable[[Request], Response]


class Fake:
    """A clock that moves only when the engine waits; every wait is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, cancelled: threading.Event, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return cancelled.is_set()


class Mock:
    """A client over a MockTransport that records every request it is given. Each request gets
    the next of ``answers`` (the last one repeats): a response, an error to raise (a lost answer),
    or a function of the request."""

    def __init__(self, *answers: Response | Exception | Handler, policy: RetryPolicy = POLICY,
                 qps: float | None = None) -> None:
        self.answers = list(answers)
        self.seen: list[Request] = []
        self.events: list[tuple[str, str]] = []
        self.fake = Fake()
        rate = TokenBucket(qps, clock=self.fake.clock) if qps else None
        self.engine = RetryEngine(policy, rate=rate, clock=self.fake.clock, sleep=self.fake.sleep)
        self.client = Client(KEY, base_url="http://mock", transport=MockTransport(self._handle),
                             retrier=self.engine)
        self.client.on_event = lambda kind, why: self.events.append((kind, why))

    def _handle(self, request: Request) -> Response:
        self.seen.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer if isinstance(answer, Response) else answer(request)

    @property
    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.seen]


def ok(body: object) -> Response:
    return Response(200, {"Content-Type": "application/json"}, json.dumps(body).encode())


def status(code: int, headers: dict[str, str] | None = None, detail: str = "no") -> Response:
    """An error answer in the API's shape: JSON ``{"detail": ...}``."""
    return Response(code, {"Content-Type": "application/json", **(headers or {})},
                    json.dumps({"detail": detail}).encode())
