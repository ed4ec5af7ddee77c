"""``Session``: the one object that holds an API key, and the only way a call reaches the wire.

Between :class:`~seeknetic_prep.api.client.Client` (the endpoints: which path, which body, what
an answer must hold) and the two layers under it (:mod:`.transport` sends, :mod:`.retry`
decides), a session adds what every call needs and no endpoint should repeat: the auth header,
the base URL, the content type, and redaction of the key from whatever the server sends back.

Kept apart from the client so that the key lives in one small class: it is set once here
(cleaned by :func:`~seeknetic_prep.api.keys.clean_api_key` before), read back only by
:meth:`Session.worker_config` for a worker that must build its own session, and never part of a
repr, a request's repr, a log line or an error message.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal

from seeknetic_prep.api.keys import redact, redact_value, secret_forms
from seeknetic_prep.api.link import LinkMeter
from seeknetic_prep.api.pacing import ByteRate, RetryPolicy
from seeknetic_prep.api.retry import RetryEngine
from seeknetic_prep.api.transport import Request, RequestsTransport, Transport
from seeknetic_prep.api.wire import read_answer
from seeknetic_prep.errors import InvalidArgumentError

__all__ = ["AuthScheme", "Session"]

AuthScheme = Literal["x-api-key", "bearer"]


class Session:
    """Authenticated, retried calls to one API at ``base_url``.

    Args:
        key: an API key already checked by :func:`~seeknetic_prep.api.keys.clean_api_key`.
        base_url: the API's root, without a trailing slash.
        auth: send the key as ``X-API-Key`` or as ``Authorization: Bearer``.
        timeout: ``(connect, read)`` seconds, for the default transport.
        stall_timeout_s: a body being sent is abandoned only when the link takes nothing for
            this long.
        retrier: the retry engine every call goes through.
        transport: how a request is sent (default: :class:`RequestsTransport`).

    Raises:
        InvalidArgumentError: an unknown ``auth`` or a stall timeout that is not > 0.
    """

    def __init__(self, key: str, *, base_url: str, auth: AuthScheme, timeout: tuple[float, float],
                 stall_timeout_s: float, retrier: RetryEngine, transport: Transport | None = None) -> None:
        if auth not in ("x-api-key", "bearer"):
            raise InvalidArgumentError(f"Invalid auth {auth!r}: must be 'x-api-key' or 'bearer'.")
        if not stall_timeout_s > 0:
            raise InvalidArgumentError(f"Invalid stall timeout {stall_timeout_s!r}: must be > 0 seconds.")
        self.base_url = base_url
        self.auth: AuthScheme = auth
        self.timeout = timeout
        self.stall_timeout_s = stall_timeout_s
        self.retrier = retrier
        self.__key = key  # read back by worker_config only
        self.__forms = secret_forms(key)
        self._headers = {"User-Agent": "seeknetic-prep",
                         **({"Authorization": f"Bearer {key}"} if auth == "bearer" else {"X-API-Key": key})}
        self._transport = transport or RequestsTransport(
            timeout=timeout, stall_s=stall_timeout_s, redact=functools.partial(redact, forms=self.__forms))
        self.link: LinkMeter | None = getattr(self._transport, "meter", None)
        """What the upload link is doing (bytes sent, a stall), when the transport measures it."""

    def __repr__(self) -> str:
        return f"Session(base_url={self.base_url!r}, auth={self.auth!r})"

    def worker_config(self, retry: RetryPolicy) -> tuple[str, AuthScheme, tuple[float, float], RetryPolicy,
                                                         str, float]:
        """``(base_url, auth, timeout, retry, key, stall_timeout_s)``: what
        :class:`~seeknetic_prep.api.client.ClientConfig` carries to a worker (its repr hides the key)."""
        return self.base_url, self.auth, self.timeout, retry, self.__key, self.stall_timeout_s

    def request(self, method: str, path: str, *, body: bytes | None = None,
                request_id: str | None = None) -> Request:
        """The request for ``path``, with the auth header (and the JSON content type for a body)."""
        headers = {**self._headers, "Content-Type": "application/json"} if body is not None else self._headers
        return Request(method, self.base_url, path, body, headers, request_id)

    def send(self, request: Request, read: Callable[[Request, Any], Any] | None = None, *,
             attempts: int | None = None, lookup: Callable[[], Any] | None = None) -> Any:
        """Send ``request`` under the retry engine; each try's response goes through ``read``
        (default :func:`~seeknetic_prep.api.wire.read_answer`: the JSON answer, or the error
        its status means, with the key redacted from any detail)."""

        def once() -> Any:
            response = self._transport.handle(request)
            if read is None:
                return read_answer(request, response, self.redact_obj)
            return read(request, response)

        return self.retrier.call(once, attempts=attempts, lookup=lookup)

    def call(self, method: str, path: str, *, body: bytes | None = None, request_id: str | None = None,
             lookup: Callable[[], Any] | None = None) -> Any:
        """One API call: :meth:`request` then :meth:`send`."""
        return self.send(self.request(method, path, body=body, request_id=request_id), lookup=lookup)

    def limit_upload(self, bandwidth: ByteRate | None) -> ByteRate | None:
        """Pace every byte sent by ``bandwidth`` (None: no cap); return the cap it replaces.

        Raises:
            InvalidArgumentError: a cap on a transport that cannot pace (a test's mock).
        """
        if not hasattr(self._transport, "bandwidth"):
            if bandwidth is None:
                return None
            raise InvalidArgumentError(f"{type(self._transport).__name__} cannot cap the upload rate.")
        previous: ByteRate | None = self._transport.bandwidth
        self._transport.bandwidth = bandwidth
        return previous

    def redact(self, text: str) -> str:
        """``text`` with the key replaced by ``[redacted]``, in any of its escaped forms."""
        return redact(text, self.__forms)

    def redact_obj(self, value: object) -> object:
        """:meth:`redact` applied to every string inside a JSON value."""
        return redact_value(value, self.__forms)

    def close(self) -> None:
        self._transport.close()
