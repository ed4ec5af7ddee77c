"""The retry engine: how every API call is paced, retried, waited out, cancelled and timed.

One :class:`RetryEngine` per client serves every call of every thread: the driver's uploads,
submissions and polls, and a decode node's uploads (:mod:`seeknetic_prep.api.uploader`). A call
is a function that sends one request and returns the answer or raises one of our errors; the
engine decides what happens next:

* connection errors, timeouts and 500/502/503/504 are tried again, up to the policy's
  ``max_attempts`` calls in all, after a backoff with full jitter
  (:meth:`~seeknetic_prep.api.pacing.RetryPolicy.delay_s`); anything else (400, 401, 402, 404,
  409, 413, 422, 501) goes straight back to the caller: repeating it cannot help;
* a 429 is waited out and not counted as an attempt: every thread pauses until the server's
  ``Retry-After`` (1 s without one; capped at the policy's ``max_delay_s``), each with its own
  jitter so they do not all come back at once, and an :class:`~seeknetic_prep.api.pacing.AdaptiveRate`
  slows the engine to what the key is allowed, then lets it creep back up; a 503 with a
  ``Retry-After`` (a server whose disk is full, or whose upload memory is taken) is waited out
  the same way, without the slowdown: the server is busy, not our rate too high;
* a call given a ``lookup`` (a submission, whose request id names the job) may have reached the
  server when its answer was lost: after the backoff the engine asks ``lookup()`` before any
  resend, and returns what the server already has instead of sending it again;
* the ``--qps`` rate (a token bucket, or the cluster's share of one) paces every send;
* :meth:`RetryEngine.cancel` (or the event given to :meth:`RetryEngine.cancelled_by`) makes every
  wait in every thread give up at once with :class:`~seeknetic_prep.errors.CancelledError`;
* the unreachable clock: :attr:`RetryEngine.failing_since` is when calls began to fail with no
  useful answer (no answer, 5xx or 429) and is cleared by any answer; a run stops when it is
  older than its ``unreachable_after_s``.

Time comes from ``clock`` and waits go through ``sleep(event, seconds)`` (True when cancelled),
so tests run the whole matrix in milliseconds with a fake clock.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from seeknetic_prep.api.pacing import AdaptiveRate, RateLimit, RetryPolicy
from seeknetic_prep.api.transport import short, why
from seeknetic_prep.errors import APIConnectionError, APIError, CancelledError, RateLimitError, ServerError

__all__ = ["RETRY_STATUSES", "RetryEngine"]

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
"""The statuses worth sending again (a 429 after a wait, the others after a backoff)."""
_T = TypeVar("_T")


def _event_wait(event: threading.Event, seconds: float) -> bool:
    return event.wait(seconds)


class RetryEngine:
    """Paces, retries and times the calls of one client (thread-safe; see the module docstring).

    Args:
        policy: attempts and backoff.
        rate: the ``--qps`` pace every send waits for (``None``: unpaced).
        clock: monotonic seconds.
        sleep: ``sleep(event, seconds)`` waits up to ``seconds`` and returns True if ``event``
            (the cancellation flag) was set meanwhile.
    """

    def __init__(self, policy: RetryPolicy | None = None, *, rate: RateLimit | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[threading.Event, float], bool] = _event_wait) -> None:
        self.policy = policy or RetryPolicy()
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._adaptive = AdaptiveRate(clock=clock)
        self._cancelled = threading.Event()
        self._pause_until = 0.0  # a 429's Retry-After holds every thread until then
        self.last_ok = clock()
        """When the server last answered a call (monotonic)."""
        self.failing_since: float | None = None
        """Since when every call has failed (no answer, 5xx or 429); None while calls succeed."""
        self.on_event: Callable[[str, str], None] | None = None
        """Told ``("retry", why)`` before a retry after a failure, ``("rate_limited", why)`` on a 429."""

    # ------------------------------------------------------------------ cancellation

    def cancel(self) -> None:
        """Make every wait, in every thread, give up now (with CancelledError)."""
        self._cancelled.set()

    @contextlib.contextmanager
    def cancelled_by(self, event: threading.Event) -> Iterator[None]:
        """While inside, setting ``event`` cancels the engine; afterwards it is as before."""
        old, self._cancelled = self._cancelled, event
        try:
            yield
        finally:
            self._cancelled = old

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``; raise :class:`CancelledError` if cancelled before or meanwhile."""
        if self._sleep(self._cancelled, max(0.0, seconds)):
            raise CancelledError("cancelled: the run is stopping")

    # ------------------------------------------------------------------ calls

    def call(self, send: Callable[[], _T], *, attempts: int | None = None,
             lookup: Callable[[], _T | None] | None = None) -> _T:
        """``send()`` until it answers, under the policy; see the module docstring.

        Args:
            send: one try: returns the answer, or raises one of our :class:`APIError` kinds.
            attempts: at most this many tries (never more than the policy's).
            lookup: for a call whose effect can be asked about (a submission): returns what the
                server already has, or None; asked after a failed try and before the next.

        Raises:
            APIError: the last try's error, once it is not worth trying again.
            CancelledError: the engine was cancelled.
        """
        limit = self.policy.max_attempts if attempts is None else min(attempts, self.policy.max_attempts)
        attempt = 0
        while True:
            attempt += 1
            self._before_send()
            try:
                answer = send()
            except CancelledError:
                raise
            except (RateLimitError, ServerError) as exc:
                if isinstance(exc, ServerError) and not exc.busy:
                    self._failed()
                    if exc.status_code not in RETRY_STATUSES or attempt >= limit:
                        raise
                    found = self._after_failure(attempt, exc, lookup)
                    if found is not None:
                        return found
                    continue
                self._failed()
                attempt -= 1  # waited out, never counted as a failed attempt
                self._wait_out(exc)
                continue
            except APIConnectionError as exc:
                self._failed()
                if attempt >= limit:
                    raise
                found = self._after_failure(attempt, exc, lookup)
                if found is not None:
                    return found
                continue
            except APIError:  # an answer, if not the one hoped for: the server is there
                self._answered()
                raise
            self._answered()
            return answer

    def _after_failure(self, attempt: int, exc: APIError, lookup: Callable[[], _T | None] | None,
                       ) -> _T | None:
        """Back off, then ask whether the failed try took effect after all (a submission whose
        answer was lost): what the server has, or None to send again."""
        self._backoff(attempt, exc)
        found = lookup() if lookup is not None else None
        if found is not None:
            log.info("%s: the answer was lost but the server has it", exc.request_id or "a call")
        return found

    def _before_send(self) -> None:
        if self._cancelled.is_set():
            raise CancelledError("cancelled: the run is stopping")
        paused = self._pause_until - self._clock()
        if paused > 0:  # each thread with its own jitter, so they do not return together
            self.wait(paused + random.uniform(0.0, min(1.0, 0.5 * paused)))
        if self.rate is not None:
            self._pace(self.rate)
        self._pace(self._adaptive)

    def _pace(self, rate: RateLimit) -> None:
        delay = rate.reserve()
        if delay > 0:
            self.wait(delay)

    def _backoff(self, attempt: int, exc: APIError) -> None:
        delay = self.policy.delay_s(attempt)
        log.debug("attempt %d failed (%s); retrying in %.2f s", attempt, exc, delay)
        if self.on_event is not None:
            what = why(exc) if isinstance(exc, APIConnectionError) else short(str(exc), 120)
            self.on_event("retry", f"{what}; try {attempt + 1} in {delay:.1f} s")
        self.wait(delay)

    def _wait_out(self, exc: RateLimitError | ServerError) -> None:
        """A 429, or a 503 with ``Retry-After``: pause every thread until the server's
        ``Retry-After`` (the next send of each thread waits, with its own jitter). A 429 also
        slows the whole engine down; a busy 503 is about the server, not our rate."""
        if isinstance(exc, RateLimitError):
            self._adaptive.limited()
        if self.on_event is not None:
            self.on_event("rate_limited" if isinstance(exc, RateLimitError) else "busy", str(exc))
        hint = exc.retry_after if exc.retry_after is not None else 1.0
        hint = min(max(hint, 0.0), self.policy.max_delay_s)
        self._pause_until = max(self._pause_until, self._clock() + hint)

    def _answered(self) -> None:
        self.last_ok = self._clock()
        self.failing_since = None

    def _failed(self) -> None:
        if self.failing_since is None:
            self.failing_since = self._clock()
