"""Request bodies: parsed off the event loop, a few at a time, and held to JSON's own rules.

FastAPI parses a JSON body with ``json.loads`` on the event loop, and runs a plain ``def``
handler in a pool of 40 threads shared by every endpoint. A 60 MB upload then held the loop for
~150 ms, and 45 texts of 50 KB (0.56 s of CPU each) took every thread, so a status poll waited
27 s for one. Here every route (:class:`StrictRoute`) parses a body over 64 KB in a worker
thread, and the CPU-heavy handlers run their work through :class:`HeavyWork` (a few threads of
their own), so the loop and the cheap endpoints always have a turn.

What Python's ``json`` accepts but JSON does not mean is refused, 422 naming the field:

* an integer that does not fit in 64 bits (a 4,000-digit one used to reach
  ``math.isfinite`` and raise ``OverflowError``; one past 4,300 digits hit Python's int
  parsing limit, ``ValueError``, answered 400 without a reason);
* a number too large for a double (``1e999``), and ``NaN``/``Infinity``, which JSON has not;
* a string holding a lone surrogate (``"\\ud800"``), which no UTF-8 can carry (it raised
  ``UnicodeEncodeError`` wherever the string was encoded again: a 500).

Bytes that are not JSON stay 400 (``Malformed JSON body ...``), as do invalid UTF-8 and nesting
deeper than the parser's recursion limit, now with a reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar, cast

import anyio
import anyio.to_thread
from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

__all__ = ["HEAVY_THREADS", "INLINE_BYTES", "BodyRejected", "HeavyWork", "StrictRoute", "parse_json"]

T = TypeVar("T")

HEAVY_THREADS = 4
"""Threads for CPU-heavy work (parsing, decoding, scoring text): as many as a run's default
four uploaders keep busy; more would only queue on the interpreter lock."""
INLINE_BYTES = 64 * 1024
"""Bodies up to this size are parsed on the loop: well under a millisecond, less than a hop."""
_MAX_PROBLEMS = 10
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")


class BodyRejected(HTTPException):
    """A body refused while it was parsed: 400 (not JSON) or 422 (JSON we refuse).

    An HTTPException so that FastAPI's body reader re-raises it instead of answering 400
    "There was an error parsing the body".
    """

    def __init__(self, status: int, detail: object) -> None:
        super().__init__(status_code=status)
        self.detail = detail  # type: ignore[assignment]  # a 422's is FastAPI's list of errors


class HeavyWork:
    """At most ``threads`` pieces of CPU-heavy work at once, each in a worker thread.

    anyio's default pool (40 threads) is left to the cheap endpoints, so a flood of heavy
    requests queues here instead of taking every thread a status poll needs.
    """

    def __init__(self, threads: int = HEAVY_THREADS) -> None:
        self._threads = threads
        self._limiter: anyio.CapacityLimiter | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._limiter is None:  # made on the loop: an anyio limiter belongs to the running one
            self._limiter = anyio.CapacityLimiter(self._threads)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)


def parse_json(raw: bytes) -> Any:
    """``raw`` as JSON, by JSON's rules (see the module docstring).

    Raises:
        json.JSONDecodeError: not JSON (FastAPI answers 400 with the position).
        BodyRejected: 400 for invalid UTF-8 or nesting too deep; 422 listing (up to 10) values
            JSON cannot mean, each with its ``loc``.
    """
    try:
        value = json.loads(raw, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except json.JSONDecodeError:
        raise
    except UnicodeDecodeError as exc:
        raise BodyRejected(400, f"Malformed JSON body: not UTF-8 (byte {exc.start}: {exc.reason}).") from exc
    except RecursionError as exc:
        raise BodyRejected(400, "Malformed JSON body: nested too deeply to parse.") from exc
    problems = []
    for loc, msg in _refused(value):
        problems.append({"loc": ["body", *loc], "msg": msg, "type": "value_error"})
        if len(problems) == _MAX_PROBLEMS:
            break
    if problems:
        raise BodyRejected(422, problems)
    return value


class StrictRequest(Request):
    """A request whose :meth:`json` is :func:`parse_json`, run off the loop when the body is big.

    Its body is gathered into one buffer sized from ``Content-Length`` (Starlette keeps the
    chunks, then joins them: twice the body at once) and emptied once parsed (FastAPI keeps a
    reference until the answer is sent, and only the parsed value is read after): a 60 MB upload
    holds its raw bytes only while they are parsed.
    """

    heavy: HeavyWork

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            length = _content_length(self.headers.get("content-length"))
            buffer = bytearray(length or 0)
            view, filled = memoryview(buffer), 0
            async for chunk in self.stream():
                end = filled + len(chunk)
                if end <= len(buffer):
                    view[filled:end] = chunk
                else:  # no or a wrong Content-Length (chunked): grow
                    view.release()
                    buffer[filled:] = chunk
                    view = memoryview(buffer)
                filled = end
            view.release()
            del buffer[filled:]
            # json.loads and FastAPI's emptiness check take a bytearray as they take bytes.
            self._body = cast(bytes, buffer)
        return self._body

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                if len(body) <= INLINE_BYTES:
                    self._json = parse_json(body)
                else:
                    self._json = await self.heavy.run(parse_json, body)
            finally:
                if isinstance(body, bytearray):
                    del body[:]  # read by nobody after this (see the class docstring)
        return self._json


def _content_length(value: str | None) -> int | None:
    try:
        return int(value) if value is not None and 0 <= int(value) <= 2**40 else None
    except ValueError:
        return None


class StrictRoute(APIRoute):
    """The route class of every router: its body is read through a :class:`StrictRequest`.

    Set :attr:`heavy` on a subclass (:func:`strict_route`); FastAPI builds the route itself.
    """

    heavy: HeavyWork

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        heavy = self.heavy

        async def strict(request: Request) -> Response:
            strict_request = StrictRequest(request.scope, request.receive)
            strict_request.heavy = heavy
            return await handler(strict_request)

        return strict


def strict_route(heavy: HeavyWork) -> type[StrictRoute]:
    """A :class:`StrictRoute` class whose big bodies are parsed by ``heavy``'s threads."""
    return type("StrictRoute", (StrictRoute,), {"heavy": heavy})


class _Refused:
    """A value the parser met and JSON cannot mean: left in place, reported with its path."""

    def __init__(self, why: str) -> None:
        self.why = why


def _int(text: str) -> int | _Refused:
    digits = len(text.lstrip("-"))
    if digits > 20:  # never int(): past 4,300 digits Python refuses, and it is slow before that
        return _Refused(f"an integer of {digits} digits: integers must fit in 64 bits")
    value = int(text)
    if not _INT_MIN <= value <= _INT_MAX:
        return _Refused(f"the integer {value}, which does not fit in 64 bits")
    return value


def _float(text: str) -> float | _Refused:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        return _Refused(f"the number {text[:40]}, too large for a 64-bit float")
    return value


def _constant(name: str) -> _Refused:
    return _Refused(f"{name}, which is not a JSON number")


def _refused(value: Any) -> Iterator[tuple[list[str | int], str]]:
    """Every ``(loc, message)`` of a refused value or string in ``value``, depth first."""
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        item, loc = stack.pop()
        if isinstance(item, dict):
            for key, child in reversed(item.items()):
                if not key.isascii() and _SURROGATE.search(key):
                    yield [*loc, _printable(key)], f"{_where(loc)} has a key with {_surrogate(key)}"
                stack.append((child, [*loc, _printable(key)]))
        elif isinstance(item, list):
            stack.extend((child, [*loc, i]) for i, child in reversed(list(enumerate(item))))
        elif isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                yield loc, f"{_where(loc)} holds {_surrogate(item)}"
        elif isinstance(item, _Refused):
            yield loc, f"{_where(loc)} is {item.why}."


def _surrogate(text: str) -> str:
    found = _SURROGATE.search(text)
    assert found is not None
    return (f"a lone surrogate (U+{ord(found.group()):04X}) at character {found.start()}: strings "
            "must be Unicode text (the two halves of a surrogate pair together, never one alone).")


def _where(loc: list[str | int]) -> str:
    if not loc:
        return "The body"
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _printable(key: str) -> str:
    """A key as a ``loc`` can hold it: surrogates escaped (they cannot be sent), long keys cut."""
    shown = key if key.isascii() else key.encode("utf-8", "backslashreplace").decode("utf-8")
    return shown if len(shown) <= 60 else shown[:57] + "..."
