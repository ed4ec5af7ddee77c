"""A request body as it streams in: its framing, its size limit, its deadline, and answers
sent before any handler runs.

The parts :class:`~.guard.Guard` applies to a body, apart from who may send it (:mod:`.policies`)
and how much memory it may take (:class:`~.guard.MemoryBudget`): a ``Content-Length`` beside
``Transfer-Encoding: chunked`` is ambiguous framing (RFC 9112 section 6.1); a chunked body is
counted and spooled (at most 1 MiB in memory) so that one over the limit is answered 413 having
cost almost nothing; and a ``receive`` with one deadline for the whole body turns a client that
trickles bytes into a 408.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

__all__ = ["AMBIGUOUS_FRAMING", "BodyTimeout", "BodyTooLarge", "Message", "Receive", "Send", "content_length",
           "has_content_length", "is_chunked", "respond", "spool_chunked", "too_large", "with_deadline"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyTimeout(HTTPException):
    """Raised from ``receive`` when a body has not arrived by its deadline (see BodyTooLarge)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            status_code=408,
            detail=f"Request Timeout: the body did not arrive within {seconds:g} s of the request's head.",
            headers={"Connection": "close"},
        )


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit.

    An HTTPException so that FastAPI's body reader re-raises it instead of turning it into 400.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=too_large(limit))


def too_large(limit: int, length: int | None = None) -> str:
    size = f"{length} bytes" if length is not None else "more than that"
    return f"Request body too large: {size}; the limit is {limit} bytes ({limit / 2**20:g} MB)."


async def respond(send: Send, status: int, detail: object, headers: Mapping[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def with_deadline(receive: Receive, seconds: float) -> Receive:
    """``receive`` that raises :class:`BodyTimeout` once the body is ``seconds`` late.

    One timer per wait (not ``asyncio.wait_for``, which makes a task per chunk): when it fires
    it cancels the waiting task, and the cancellation becomes the 408.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    complete = False

    async def timed() -> Message:
        nonlocal complete
        if complete:
            return await receive()  # the body is in: only a disconnect can come, whenever
        if loop.time() >= deadline:
            raise BodyTimeout(seconds)
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = loop.call_at(deadline, expire)
        try:
            message = await receive()
        except asyncio.CancelledError:
            if not expired:
                raise
            if hasattr(task, "uncancel"):  # Python 3.11+: the cancellation is ours, handled
                task.uncancel()
            raise BodyTimeout(seconds) from None
        finally:
            timer.cancel()
        if message["type"] != "http.request" or not message.get("more_body", False):
            complete = True
        return message

    return timed


_SPOOL_IN_MEMORY = 1 << 20
_REPLAY_CHUNK = 1 << 20


async def spool_chunked(receive: Receive, send: Send, limit: int) -> tuple[Receive, int] | None:
    """Read a chunked body to its end or to the limit, holding at most 1 MiB of it in memory.

    Without a Content-Length the size is only known at the end; spooling to a temporary file
    means a body that turns out too large is answered 413 having cost almost no memory, while
    one under the limit is replayed to the app unchanged. Returns None when it answered (413) or
    the client left; else the replaying ``receive`` and the body's size.
    """
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115 (closed in replay)
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            spool.close()
            return None
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            spool.close()
            await respond(send, 413, too_large(limit))
            return None
        spool.write(chunk)
        if not message.get("more_body", False):
            break
    spool.seek(0)
    done = False

    async def replay() -> Message:
        nonlocal done
        if done:
            return await receive()  # only a disconnect can come now
        chunk = spool.read(_REPLAY_CHUNK)
        more = len(chunk) == _REPLAY_CHUNK and spool.tell() < seen
        if not more:
            done = True
            spool.close()
        return {"type": "http.request", "body": chunk, "more_body": more}

    return replay, seen


def is_chunked(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    return any(
        name.lower() == b"transfer-encoding" and b"chunked" in value.lower() for name, value in headers
    )


AMBIGUOUS_FRAMING = (
    "Request has both Content-Length and Transfer-Encoding: chunked: send one of them "
    "(RFC 9112 section 6.1). The body was not read."
)


def has_content_length(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    return any(name.lower() == b"content-length" for name, _ in headers)


def content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
