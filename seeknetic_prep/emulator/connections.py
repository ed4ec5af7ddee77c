"""Connections that must send their next request head in time.

uvicorn's h11 protocol times a connection out only while it is idle after an answer
(``timeout_keep_alive``), and any byte received cancels that timer: a connection that opens and
sends nothing, or sends its head a byte every few seconds, was held forever (a few hundred of
them use up the process's file descriptors). :func:`timed_protocol` makes a subclass that gives
every request head a deadline, counted from the connection's opening or the previous answer:
when it passes, a connection that had sent part of a head gets ``408 Request Timeout`` and is
closed; an idle one is just closed (an answer nobody asked for could be read as the answer to
the client's next request). A request's *body* has its own deadline, kept by the Guard
(:mod:`.guard`), which can answer it properly.

This leans on uvicorn's h11 protocol class (its ``cycle``, ``conn`` and ``transport``); the
tests over raw sockets (``tests/test_emulator_limits.py``) fail if a uvicorn release changes them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["timed_protocol"]


def timed_protocol(head_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, with a deadline of ``head_timeout_s`` for every request head."""
    return type("TimedH11Protocol", (_TimedH11Protocol,), {"head_timeout_s": head_timeout_s})


class _TimedH11Protocol(H11Protocol):
    head_timeout_s: float = 30.0
    _head_timer: asyncio.TimerHandle | None = None
    _head_started = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        waiting = self._waiting_for_head()
        super().data_received(data)
        if not waiting:
            return
        if self._waiting_for_head():
            self._head_started = self._head_started or self.conn.their_state is h11.IDLE
        else:  # the head arrived and its request started: the Guard times its body
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self._waiting_for_head():
            self._arm()

    def _waiting_for_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._head_started = False
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _expired(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._waiting_for_head():
            return
        if self._head_started and self.conn.their_state is h11.IDLE:
            self.transport.write(_timeout_answer(self.head_timeout_s))
        self.transport.close()


def _timeout_answer(seconds: float) -> bytes:
    body = json.dumps({"detail": f"Request Timeout: the request head did not arrive within {seconds:g} s "
                                 "of the connection opening or the previous answer."}).encode()
    head: list[Any] = [b"HTTP/1.1 408 Request Timeout", b"content-type: application/json",
                       b"content-length: " + str(len(body)).encode(), b"connection: close"]
    return b"\r\n".join(head) + b"\r\n\r\n" + body
