"""``Client``: the endpoints of the Seeknetic API, over a transport and a retry engine.

The client is the top of three layers, as in encode/httpx (with :mod:`.session`, which holds the
key and adds the auth header and redaction to every call, between it and the two below):

* :mod:`.transport` sends one request and is the only place ``requests`` exceptions become ours;
* :mod:`.retry` decides, for every call, what a failure means: retries with backoff for
  connection errors, timeouts and 500/502/503/504 (never 400/401/402/413/422), 429s waited out
  and not counted, the ``--qps`` pace, cancellation, and the "every call failed for N s" clock;
* this module and :mod:`.jobs` build each request and parse its answer (an error status became
  its class of :mod:`seeknetic_prep.errors` in the session, ``Retry-After`` read, the key
  redacted from any detail): here the connection, the key check, uploads (a 413 sent again as
  one request per tensor) and text queries; in :class:`~.jobs.JobCommands`, which the client
  inherits, submissions with a lookup before any resend (so a job the server already has is
  never submitted twice), status and waiting.

The API key is checked before any request (surrounding whitespace stripped; a control or
non-ASCII character refused with a message that does not quote it) and held by the session: it is
never part of a repr, a log line or an error message (a server that echoes it in a detail, in
clear or escaped, gets it replaced by ``[redacted]``).

>>> with Client("my-key", base_url="http://127.0.0.1:8000") as c:  # doctest: +SKIP
...     keys = c.upload_tensors("embedding", "rid-1", video_input=video, audio_input=audio)
...     c.submit_embedding(tensor={"video_input_key": keys["video_input"],
...                                "audio_input_key": keys["audio_input"]}, request_id="rid-1")
...     c.wait(["rid-1"], deadline_s=60)["rid-1"]["status"]
'completed'
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from seeknetic_prep.api.answers import check_embedding
from seeknetic_prep.api.jobs import TERMINAL, JobCommands, ServiceName
from seeknetic_prep.api.keys import resolve_api_key
from seeknetic_prep.api.link import LinkMeter
from seeknetic_prep.api.pacing import (
    AdaptiveRate,
    ByteBucket,
    ByteRate,
    RateLimit,
    RetryPolicy,
    TokenBucket,
    mbps_to_bytes,
)
from seeknetic_prep.api.retry import RetryEngine
from seeknetic_prep.api.session import AuthScheme, Session
from seeknetic_prep.api.transport import Transport, short, why
from seeknetic_prep.api.wire import key_check_answer, r2_keys, split_upload
from seeknetic_prep.errors import (
    APIConnectionError,
    InvalidArgumentError,
    MalformedAnswerError,
    PayloadTooLargeError,
    UnreachableError,
)

__all__ = ["REGIONS", "TERMINAL", "AdaptiveRate", "AuthScheme", "Client", "ClientConfig", "RateLimit",
           "Region", "RetryPolicy", "ServiceName", "TokenBucket"]

Region = Literal["tokyo", "us", "cn"]

REGIONS: dict[str, str] = {
    "tokyo": "https://api.seeknetic.com",
    "us": "https://api.us.seeknetic.com",  # "coming soon" in the API docs
    "cn": "https://api.cn.seeknetic.com",  # "coming soon" in the API docs
}
_UPLOAD = "/files/upload/tensors"


@dataclass(frozen=True)
class ClientConfig:
    """How to build the same client elsewhere (a decode worker on another machine).

    Picklable, so an engine can ship it to its workers; the key is left out of the repr, so
    the config can be logged or shown in a task's arguments without leaking it. Pacing is not
    carried: the engine hands :meth:`build` the rate its workers share.
    """

    base_url: str
    auth: AuthScheme
    timeout: tuple[float, float]
    retry: RetryPolicy
    api_key: str = field(repr=False)
    stall_timeout_s: float = 60.0

    def build(self, *, rate: RateLimit | None = None, bandwidth: ByteRate | None = None) -> Client:
        """A new client with this config, paced by ``rate`` (requests) and ``bandwidth``
        (bytes sent); none: unpaced."""
        client = Client(self.api_key, base_url=self.base_url, auth=self.auth, timeout=self.timeout,
                        retry=self.retry, stall_timeout_s=self.stall_timeout_s)
        client.retrier.rate = rate
        client.limit_upload(bandwidth)
        return client


class Client(JobCommands):
    """A thread-safe client of the Seeknetic API (or of ``seeknetic-prep emulator``).

    Args:
        api_key: the key; default ``SEEKNETIC_API_KEY``.
        base_url: default ``SEEKNETIC_BASE_URL``, else the URL of ``region``.
        region: ``tokyo`` (default), ``us`` or ``cn``.
        auth: send the key as ``X-API-Key`` (default) or as ``Authorization: Bearer``.
        qps: client-side request rate limit shared by all threads; ``None`` for none.
        max_upload_mbps: a cap on the bytes all threads send, in megabits per second
            (``None``: none); see :meth:`limit_upload`.
        timeout: ``(connect, read)`` seconds for every call.
        stall_timeout_s: a body being sent is abandoned only when the link takes nothing for
            this long (not when the whole body takes long: slow links finish).
        retry: the retry policy.
        transport: how requests are sent (default: :class:`RequestsTransport` with ``timeout``;
            tests pass a :class:`~seeknetic_prep.api.transport.MockTransport`).
        retrier: the retry engine (default: one from ``retry`` and ``qps``, which are then not
            used; tests pass one with a fake clock).

    Raises:
        InvalidArgumentError: no key, a key that cannot go in a header (see
            :func:`seeknetic_prep.api.keys.clean_api_key`), or an unknown region.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        region: Region | str = "tokyo",
        auth: AuthScheme = "x-api-key",
        qps: float | None = None,
        timeout: tuple[float, float] = (5.0, 60.0),
        retry: RetryPolicy | None = None,
        transport: Transport | None = None,
        retrier: RetryEngine | None = None,
        stall_timeout_s: float = 60.0,
        max_upload_mbps: float | None = None,
    ) -> None:
        self.retrier = retrier or RetryEngine(retry, rate=TokenBucket(qps) if qps else None)
        self.retry = self.retrier.policy
        self._session = Session(resolve_api_key(api_key), base_url=_resolve_base_url(base_url, region),
                                auth=auth, timeout=timeout, stall_timeout_s=stall_timeout_s,
                                retrier=self.retrier, transport=transport)
        self.base_url, self.auth, self.timeout = self._session.base_url, self._session.auth, timeout
        self.stall_timeout_s = stall_timeout_s
        self.link: LinkMeter | None = self._session.link
        """What the upload link is doing (bytes sent, a stall), when the transport measures it."""
        if max_upload_mbps is not None:
            if not (isinstance(max_upload_mbps, (int, float)) and 0 < max_upload_mbps < float("inf")):
                raise InvalidArgumentError(
                    f"Invalid max_upload_mbps {max_upload_mbps!r}: must be a number > 0.")
            self.limit_upload(ByteBucket(mbps_to_bytes(max_upload_mbps)))

    def limit_upload(self, bandwidth: ByteRate | None) -> ByteRate | None:
        """Pace every byte this client sends by ``bandwidth`` (None: no cap); return the cap it
        replaces. A run sets the one its engine shares (``--max-upload-mbps``) for its length.

        Raises:
            InvalidArgumentError: a cap on a transport that cannot pace (a test's mock).
        """
        previous: ByteRate | None = self._session.limit_upload(bandwidth)
        return previous

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r}, auth={self.auth!r})"

    def worker_config(self) -> ClientConfig:
        """What a worker needs to build a client like this one (key included, not in its repr)."""
        return ClientConfig(*self._session.worker_config(self.retry))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    def cancel(self) -> None:
        """Make every wait and retry, in every thread, give up now (with CancelledError)."""
        self.retrier.cancel()

    def cancelled_by(self, event: threading.Event) -> contextlib.AbstractContextManager[None]:
        """While inside, setting ``event`` cancels the client (a run passes its stop flag);
        afterwards the client is as before, so one client can serve run after run."""
        return self.retrier.cancelled_by(event)

    @property
    def last_ok(self) -> float:
        """When the server last answered a call (monotonic)."""
        return self.retrier.last_ok

    @property
    def failing_since(self) -> float | None:
        """Since when every call has failed (no answer, 5xx or 429); None while calls succeed."""
        return self.retrier.failing_since

    @property
    def on_event(self) -> Callable[[str, str], None] | None:
        """Told ``("retry", why)`` before a retry after a failure, ``("rate_limited", why)`` on a 429,
        ``("busy", why)`` on a 503 with ``Retry-After``."""
        return self.retrier.on_event

    @on_event.setter
    def on_event(self, callback: Callable[[str, str], None] | None) -> None:
        self.retrier.on_event = callback

    # ------------------------------------------------------------------ endpoints

    def check_auth(self) -> None:
        """Prove the key works with one cheap authenticated request, before any real work.

        Looks up a random request id: the API's 404 means the key was accepted; an answer in
        any other shape means ``base_url`` is not the API (:func:`.wire.key_check_answer`).
        Tries three times at most (a key check that cannot get through should say so within
        seconds, not in a minute).

        Raises:
            AuthenticationError: the key is wrong (401).
            NotTheAPIError: something answers at ``base_url``, but not the API.
            UnreachableError: no answer at all (DNS lookup failed, connection refused, ...).
        """
        request = self._session.request("GET", f"/async_status/auth-check-{uuid.uuid4().hex}")
        try:
            self._session.send(request, lambda req, response: key_check_answer(
                req, response, self._session.redact_obj), attempts=3)
        except APIConnectionError as exc:
            raise UnreachableError(
                f"cannot reach {self.base_url} ({why(exc)}): check the network, --base-url, or use --local",
                request_id=None,
            ) from exc

    def upload_tensors(
        self,
        service: ServiceName,
        request_id: str,
        video_input: Mapping[str, Any] | None = None,
        audio_input: Mapping[str, Any] | None = None,
        video_kwargs: Mapping[str, Any] | None = None,
    ) -> dict[str, str]:
        """Upload one window's tensors; return the ``r2_keys`` (``video_input``, ...).

        ``video_input`` is a tensor dict or ``{"tensor": ..., "metadata": ...}``. On 413 the
        tensors are sent again one per request under the same request_id.
        """
        body: dict[str, Any] = {"service": service, "request_id": request_id}
        for name, value in (("video_input", video_input), ("audio_input", audio_input),
                            ("video_kwargs", video_kwargs)):
            if value is not None:
                body[name] = value
        return self.upload_body(json.dumps(body).encode(), request_id=request_id)

    def upload_body(self, body: bytes, *, request_id: str) -> dict[str, str]:
        """Upload an already-serialized ``POST /files/upload/tensors`` body; return its r2_keys.

        The pipeline serializes in its decode workers, so the upload threads only send bytes.
        """
        try:
            keys = r2_keys(self._call("POST", _UPLOAD, body=body, request_id=request_id), request_id)
        except PayloadTooLargeError:
            keys = {}
            for part in split_upload(body, request_id):
                keys.update(r2_keys(self._call("POST", _UPLOAD, body=part, request_id=request_id),
                                     request_id))
        if self.link is not None:
            self.link.uploaded(len(body))  # what a body costs: the display's bytes-left estimate
        return keys

    def encode_text(self, text: str) -> list[float]:
        """The text embedding of ``text`` (synchronous)."""
        answer = self._call("POST", "/video_embedding/encode_text", body=json.dumps({"text": text}).encode())
        if not isinstance(answer, dict):
            raise MalformedAnswerError(f"malformed answer: encode_text answer is not an object: "
                                       f"{short(answer, 80)}")
        # A query with a NaN, or of another width, would rank nothing and print invalid JSON.
        return check_embedding(answer.get("embedding"))

    # ------------------------------------------------------------------ plumbing

    def _call(self, method: str, path: str, *, body: bytes | None = None, request_id: str | None = None,
              lookup: Callable[[], Any] | None = None) -> Any:
        return self._session.call(method, path, body=body, request_id=request_id, lookup=lookup)

    def _redact(self, text: str) -> str:
        shown: str = self._session.redact(text)
        return shown

    def _redact_obj(self, value: object) -> object:
        return self._session.redact_obj(value)


def _resolve_base_url(base_url: str | None, region: str) -> str:
    if base_url is None:
        base_url = os.environ.get("SEEKNETIC_BASE_URL") or None
    if base_url is None:
        if region not in REGIONS:
            raise InvalidArgumentError(f"Invalid region {region!r}: must be one of {', '.join(REGIONS)}.")
        base_url = REGIONS[region]
    return base_url.rstrip("/")
