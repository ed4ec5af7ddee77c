"""``Client``: the endpoints of the Seeknetic API, over a transport and a retry engine.

The client is the top of three layers, as in encode/httpx (with :mod:`.session`, which holds the
key and adds the auth header and redaction to every call, between it and the two below):

* :mod:`.transport` sends one request and is the only place ``requests`` exceptions become ours;
* :mod:`.retry` decides, for every call, what a failure means: retries with backoff for
  connection errors, timeouts and 500/502/503/504 (never 400/401/402/413/422), 429s waited out
  and not counted, the ``--qps`` pace, cancellation, and the "every call failed for N s" clock;
* this module builds each request, turns an error status into its class of
  :mod:`seeknetic_prep.errors` (``Retry-After`` read, the key redacted from any detail), parses
  the answers, sends a 413 upload again as one request per tensor, and hands submissions to the
  engine with a lookup: POST retries are safe because our request ids are deterministic and
  uploads idempotent, and a submission whose answer was lost is first looked up with
  ``GET /async_status/<id>``, so a job the server already has is never submitted twice.

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
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from seeknetic_prep.api.answers import check_embedding, check_status
from seeknetic_prep.api.keys import resolve_api_key
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
from seeknetic_prep.api.transport import LinkMeter, Transport, short, why
from seeknetic_prep.api.wire import key_check_answer, r2_keys, split_upload, submission
from seeknetic_prep.errors import (
    APIConnectionError,
    APITimeoutError,
    ConflictError,
    InvalidArgumentError,
    MalformedAnswerError,
    NotFoundError,
    PayloadTooLargeError,
    UnreachableError,
)

__all__ = ["REGIONS", "AdaptiveRate", "AuthScheme", "Client", "ClientConfig", "RateLimit", "Region",
           "RetryPolicy", "TokenBucket"]

Region = Literal["tokyo", "us", "cn"]
ServiceName = Literal["embedding", "tagging"]

REGIONS: dict[str, str] = {
    "tokyo": "https://api.seeknetic.com",
    "us": "https://api.us.seeknetic.com",  # "coming soon" in the API docs
    "cn": "https://api.cn.seeknetic.com",  # "coming soon" in the API docs
}
TERMINAL = frozenset({"completed", "failed"})
_SUBMIT_PATHS: dict[str, str] = {
    "embedding": "/video_embedding/encode_video/async",
    "tagging": "/video_tagging/async",
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


class Client:
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

    def submit_embedding(self, *, tensor: Mapping[str, str] | None = None, video_url: str | None = None,
                         video_base64: str | None = None, filename: str | None = None,
                         request_id: str | None = None) -> dict[str, Any]:
        """Submit an embedding job (tensor, ``video_url`` or ``video_base64`` mode).

        ``tensor`` is ``{"video_input_key", "audio_input_key"}`` from :meth:`upload_tensors`.
        Returns the server's answer (``request_id``, ``status``, ...).
        """
        return self._submit("embedding", submission(tensor, video_url, video_base64, filename, request_id),
                            request_id)

    def submit_tagging(self, *, tensor: Mapping[str, str] | None = None, video_url: str | None = None,
                       video_base64: str | None = None, filename: str | None = None,
                       request_id: str | None = None) -> dict[str, Any]:
        """Submit a tagging job; ``tensor`` is ``{"video_input_key", "video_kwargs_key"}``."""
        return self._submit("tagging", submission(tensor, video_url, video_base64, filename, request_id),
                            request_id)

    def submit(self, service: ServiceName, *, tensor: Mapping[str, str], request_id: str) -> dict[str, Any]:
        """Tensor-mode submission for either service (what the pipeline uses)."""
        return self._submit(service, submission(tensor, None, None, None, request_id), request_id)

    def encode_text(self, text: str) -> list[float]:
        """The text embedding of ``text`` (synchronous)."""
        answer = self._call("POST", "/video_embedding/encode_text", body=json.dumps({"text": text}).encode())
        if not isinstance(answer, dict):
            raise MalformedAnswerError(f"malformed answer: encode_text answer is not an object: "
                                       f"{short(answer, 80)}")
        # A query with a NaN, or of another width, would rank nothing and print invalid JSON.
        return check_embedding(answer.get("embedding"))

    def get_status(self, request_id: str, service: str | None = None) -> dict[str, Any]:
        """``GET /async_status/<request_id>``, checked (:func:`~seeknetic_prep.answers.check_status`):
        a completed answer holds what a job of ``service`` must, and nothing a result cannot keep.

        Raises:
            NotFoundError: the server has no job with this id for this key.
            MalformedAnswerError: the answer breaks the API's promises (the message says how).
        """
        answer = self._call("GET", f"/async_status/{request_id}", request_id=request_id)
        try:
            return check_status(answer, service)
        except MalformedAnswerError as exc:
            exc.request_id = request_id
            raise

    def wait(self, request_ids: Iterable[str], *, deadline_s: float = 600.0, poll_s: float = 0.25,
             max_poll_s: float = 5.0, on_result: Callable[[str, dict[str, Any]], None] | None = None,
             ) -> dict[str, dict[str, Any]]:
        """Poll until every job is completed or failed; return their final status answers.

        Polls every pending id per round, with the pause between rounds growing from ``poll_s``
        to ``max_poll_s``. ``on_result`` is called as each job finishes.

        Raises:
            APITimeoutError: some jobs are still pending after ``deadline_s`` seconds (the
                message says how many); nothing loops forever.
            MalformedAnswerError: an answer breaks the API's promises (see :meth:`get_status`).
        """
        return _wait_all(self.get_status, self.retrier.wait, list(dict.fromkeys(request_ids)),
                         deadline_s, poll_s, max_poll_s, on_result)

    # ------------------------------------------------------------------ plumbing

    def _submit(self, service: ServiceName, body: bytes, request_id: str | None) -> dict[str, Any]:
        path = _SUBMIT_PATHS[service]
        if request_id is None:  # nothing to look up by: plain retries
            answer = self._call("POST", path, body=body)
            return answer if isinstance(answer, dict) else {"answer": answer}
        try:  # before any resend of an ambiguous try, the engine asks whether the job is there
            answer = self._call("POST", path, body=body, request_id=request_id,
                                lookup=lambda: self._lookup(request_id))
        except ConflictError:
            existing = self._lookup(request_id)
            if existing is not None and existing.get("task_type") in (None, service):
                return existing
            raise
        return answer if isinstance(answer, dict) else {"request_id": request_id}

    def _lookup(self, request_id: str) -> dict[str, Any] | None:
        try:
            return self.get_status(request_id)
        except NotFoundError:
            return None

    def _call(self, method: str, path: str, *, body: bytes | None = None, request_id: str | None = None,
              lookup: Callable[[], Any] | None = None) -> Any:
        return self._session.call(method, path, body=body, request_id=request_id, lookup=lookup)

    def _redact(self, text: str) -> str:
        shown: str = self._session.redact(text)
        return shown

    def _redact_obj(self, value: object) -> object:
        return self._session.redact_obj(value)


def _wait_all(get_status: Callable[[str], dict[str, Any]], sleep: Callable[[float], None],
              pending: list[str], deadline_s: float, poll_s: float, max_poll_s: float,
              on_result: Callable[[str, dict[str, Any]], None] | None) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    stop_at = time.monotonic() + deadline_s
    pause = poll_s
    while pending:
        still: list[str] = []
        for job in pending:
            answer = get_status(job)
            if answer.get("status") not in TERMINAL:
                still.append(job)
                continue
            done[job] = answer
            if on_result is not None:
                on_result(job, answer)
        pending = still
        if not pending:
            break
        if time.monotonic() + pause > stop_at:
            raise APITimeoutError(f"{len(pending)} job(s) still pending after {deadline_s:g} s "
                                  f"(first: {pending[0]}).", request_id=pending[0])
        sleep(pause)
        pause = min(max_poll_s, pause * 1.5)
    return done


def _resolve_base_url(base_url: str | None, region: str) -> str:
    if base_url is None:
        base_url = os.environ.get("SEEKNETIC_BASE_URL") or None
    if base_url is None:
        if region not in REGIONS:
            raise InvalidArgumentError(f"Invalid region {region!r}: must be one of {', '.join(REGIONS)}.")
        base_url = REGIONS[region]
    return base_url.rstrip("/")
