"""Everything decided before a request reaches its handler: auth, rate limit, faults, body size.

:class:`Guard` is a plain ASGI middleware placed outside the FastAPI app, so a rejected request
costs no parsing and its body is never buffered:

0. 400 at once, body unread, for a request with both ``Content-Length`` and
   ``Transfer-Encoding: chunked`` (RFC 9112 section 6.1: ambiguous framing, the shape of request
   smuggling; read as chunked, its ``Content-Length`` would let it past the size check);
1. paths in :data:`PUBLIC_PATHS` (the OpenAPI document and its viewers) pass straight through;
2. 401 unless ``X-API-Key`` or ``Authorization: Bearer`` carries a configured key;
3. unless the path is under ``/_emulator/``: 429 with ``Retry-After`` from the key's token
   bucket, then the fault plan (latency, dropped connection, injected status);
4. 413 from ``Content-Length`` at once; a chunked body is counted as it streams in and spooled
   (at most 1 MiB in memory), so it is answered 413 the moment the count passes the limit,
   having cost almost no memory, and replayed to the app when it ends within the limit;
5. a body of 1 MiB or more reserves about three times its size from the :class:`MemoryBudget`
   (``upload_memory_mb``) before any of it is read: what parsing and decoding it costs at the
   peak. Over the budget it waits its turn (first come, first served) for up to 10 s, then is
   answered 503 with ``Retry-After``, its body unread (60 MB uploads used to cost ~200-320 MB
   each, as many at once as clients sent);
6. the body must arrive within ``read_timeout_s`` of the request's admission, else 408 and the
   connection is closed (a client sending a byte a second held a server task forever; the
   request head's own deadline is kept by :mod:`.connections`).

Who may call, how fast and which faults to inject are decided by :mod:`.policies`
(:class:`~.policies.Keyring`, :class:`~.policies.RateLimiter`, :class:`~.policies.Faults`); this
module applies them, in that order, then guards the body with the parts of :mod:`.framing`
(framing, spooling, the body's deadline) and its own :class:`MemoryBudget`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from seeknetic_prep.emulator.framing import (
    AMBIGUOUS_FRAMING,
    BodyTimeout,
    BodyTooLarge,
    Message,
    Receive,
    Send,
    content_length,
    has_content_length,
    is_chunked,
    respond,
    spool_chunked,
    too_large,
    with_deadline,
)
from seeknetic_prep.emulator.policies import Faults, Keyring, RateLimiter

__all__ = ["BODY_MEMORY_FACTOR", "OWNER_SCOPE_KEY", "PUBLIC_PATHS", "BodyTimeout", "BodyTooLarge", "Guard",
           "MemoryBudget"]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OWNER_SCOPE_KEY = "seeknetic_emulator.owner"
BODY_MEMORY_FACTOR = 3
"""Peak memory of a request per byte of its body: the body, the text JSON decodes it to, the
parsed string, then the decoded tensor (measured: 161 MiB for a 56 MiB upload)."""
FREE_BODY_BYTES = 1 << 20
BUDGET_WAIT_S = 10.0
BUSY_RETRY_AFTER_S = 2
PUBLIC_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
EXEMPT_PREFIX = "/_emulator/"


class MemoryBudget:
    """Bytes that request bodies in flight may cost, handed out first come, first served.

    Used from the event loop only. A request that costs more than the whole budget is let in
    alone (its cost counted as the budget), so no body under the size limit waits forever.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[bool]]] = deque()

    def cost(self, body_bytes: int) -> int:
        """What a body of ``body_bytes`` reserves (small ones nothing)."""
        if body_bytes < FREE_BODY_BYTES:
            return 0
        return min(self.budget, body_bytes * BODY_MEMORY_FACTOR)

    async def acquire(self, cost: int, timeout_s: float) -> bool:
        """Reserve ``cost`` bytes, waiting up to ``timeout_s`` behind earlier requests; False
        if the time ran out (nothing reserved then)."""
        if not self._waiters and self.used + cost <= self.budget:
            self.used += cost
            return True
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[bool] = loop.create_future()
        entry = (cost, turn)
        self._waiters.append(entry)
        timer = loop.call_later(timeout_s, _settle, turn, False)
        try:
            return await turn
        except BaseException:  # cancelled (the client left): give back what was granted
            if turn.done() and not turn.cancelled() and turn.result():
                self.release(cost)
            raise
        finally:
            timer.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)
            self._grant()  # the head of the queue may have been this one

    def release(self, cost: int) -> None:
        self.used -= cost
        self._grant()

    def _grant(self) -> None:
        while self._waiters:
            cost, turn = self._waiters[0]
            if turn.done():  # timed out or cancelled
                self._waiters.popleft()
                continue
            if self.used + cost > self.budget:
                return
            self._waiters.popleft()
            self.used += cost
            turn.set_result(True)


def _settle(turn: asyncio.Future[bool], value: bool) -> None:
    if not turn.done():
        turn.set_result(value)


class Guard:
    """The ASGI middleware described in the module docstring."""

    def __init__(
        self, app: ASGIApp, *, keyring: Keyring, limiter: RateLimiter, faults: Faults, max_body_bytes: int,
        read_timeout_s: float = 30.0, memory_budget_bytes: int = 1 << 30,
    ) -> None:
        self.app = app
        self.keyring = keyring
        self.limiter = limiter
        self.faults = faults
        self.max_body_bytes = max_body_bytes
        self.read_timeout_s = read_timeout_s
        self.budget = MemoryBudget(memory_budget_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if has_content_length(scope["headers"]) and is_chunked(scope["headers"]):
            # Ambiguous framing (the request smuggling shape): refuse before reading any body,
            # and close, since where this request's body ends is exactly what is in doubt.
            await respond(send, 400, AMBIGUOUS_FRAMING, {"Connection": "close"})
            return
        if path not in PUBLIC_PATHS:
            owner, why = self.keyring.authenticate(scope["headers"])
            if owner is None:
                await respond(send, 401, why, {"WWW-Authenticate": "Bearer"})
                return
            scope[OWNER_SCOPE_KEY] = owner
            if not path.startswith(EXEMPT_PREFIX) and not await self._admit(owner, send):
                return
        limit = self.max_body_bytes
        length = content_length(scope["headers"])
        if length is not None and length > limit:
            await respond(send, 413, too_large(limit, length))
            return
        chunked = length is None and is_chunked(scope["headers"])
        size = length or 0
        if chunked:  # its size is known once it is in: spooled to disk first, then charged
            try:
                spooled = await spool_chunked(with_deadline(receive, self.read_timeout_s), send, limit)
            except BodyTimeout as exc:
                await respond(send, exc.status_code, exc.detail, exc.headers)
                return
            if spooled is None:
                return
            receive, size = spooled
        cost = self.budget.cost(size)
        if cost and not await self.budget.acquire(cost, BUDGET_WAIT_S):
            await respond(send, 503, self._busy(size), {"Retry-After": str(BUSY_RETRY_AFTER_S)})
            return
        try:
            if length:
                receive = with_deadline(receive, self.read_timeout_s)
            await self._call(scope, receive, send, limit)
        finally:
            if cost:
                self.budget.release(cost)

    async def _call(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        started = False
        seen = 0

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except (BodyTooLarge, BodyTimeout) as exc:  # the app's handlers answer them; in case not
            if started:
                raise
            await respond(send, exc.status_code, exc.detail, exc.headers)

    def _busy(self, size: int) -> str:
        mb = 2**20
        return (f"The emulator is busy: request bodies in flight already hold {self.budget.used / mb:.0f} MB "
                f"of its {self.budget.budget / mb:.0f} MB for them (upload_memory_mb), and this "
                f"{size / mb:.1f} MB body needs about {self.budget.cost(size) / mb:.0f} MB; its body "
                f"was not read. Retry after {BUSY_RETRY_AFTER_S} s.")

    async def _admit(self, owner: str, send: Send) -> bool:
        wait = self.limiter.take(owner)
        if wait > 0:
            await respond(
                send,
                429,
                f"Rate limit: over {self.limiter.qps:g} requests per second for this API key; "
                f"retry in {wait:.3f} s.",
                {"Retry-After": str(max(1, math.ceil(wait))), "Retry-After-Ms": str(math.ceil(wait * 1000))},
            )
            return False
        decision = self.faults.decide()
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        if decision is None:
            return True
        if decision == "drop":
            await _drop(send)
            return False
        status = int(decision)
        headers = {"Retry-After": "1"} if status in (429, 503) else {}
        await respond(send, status, f"Injected fault: {status} (emulator fault plan).", headers)
        return False


async def _drop(send: Send) -> None:
    """Abort the TCP connection with no answer, as a crashed proxy would."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise ConnectionAbortedError("Injected fault: connection dropped.")
    transport.abort()
    # Let the server see the disconnect before this request ends, so it does not answer 500.
    for _ in range(3):
        await asyncio.sleep(0)


