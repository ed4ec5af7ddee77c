"""``Client``: the Seeknetic HTTP API over one ``requests.Session``.

Everything that can go wrong on the wire becomes one of the classes of
:mod:`seeknetic_prep.errors` here, and only here: ``requests`` exceptions never leave this
module. The policies that make a long run survivable live here too, so the pipeline can treat a
call as either done or failed for good:

* retries with exponential backoff and full jitter, bounded in attempts and delay, for
  connection errors, timeouts and 500/502/503/504 only (never 400, 401, 402, 413, 422:
  repeating those cannot help);
* a 429 is waited out, not counted as a failure: every thread pauses until the server's
  ``Retry-After`` (plus jitter, so they do not all come back at once), and an adaptive limit
  (:class:`AdaptiveRate`) slows the client to what the key is allowed, then creeps back up;
* POST retries are safe because our request ids are deterministic and uploads idempotent, but
  a *submission* whose answer was lost (timeout, dropped connection, gateway error) is first
  looked up with ``GET /async_status/<id>``: a job the server already has is never submitted
  twice;
* a token bucket shared by every thread using the client keeps a run under ``qps``;
* :meth:`Client.cancel` makes every wait and retry in every thread give up at once, so a run
  that is told to stop stops promptly;
* a 413 upload is sent again as one request per tensor under the same request_id.

The API key is checked before any request (surrounding whitespace stripped; a control or
non-ASCII character refused with a message that does not quote it) and held privately: it is
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
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import requests

from seeknetic_prep.api.answers import check_embedding, check_status
from seeknetic_prep.api.keys import clean_api_key, redact, secret_forms
from seeknetic_prep.api.pacing import AdaptiveRate, RetryPolicy, TokenBucket
from seeknetic_prep.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ConflictError,
    InvalidArgumentError,
    MalformedAnswerError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ServerError,
    UnreachableError,
    error_for_status,
)

__all__ = ["REGIONS", "AdaptiveRate", "AuthScheme", "Client", "ClientConfig", "Region", "RetryPolicy",
           "TokenBucket"]

log = logging.getLogger(__name__)

Region = Literal["tokyo", "us", "cn"]
AuthScheme = Literal["x-api-key", "bearer"]
ServiceName = Literal["embedding", "tagging"]

REGIONS: dict[str, str] = {
    "tokyo": "https://api.seeknetic.com",
    "us": "https://api.us.seeknetic.com",  # "coming soon" in the API docs
    "cn": "https://api.cn.seeknetic.com",  # "coming soon" in the API docs
}
TERMINAL = frozenset({"completed", "failed"})
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_SUBMIT_PATHS: dict[str, str] = {
    "embedding": "/video_embedding/encode_video/async",
    "tagging": "/video_tagging/async",
}
_T = TypeVar("_T")


class RateLimit(Protocol):
    """Anything that paces calls: :class:`TokenBucket`, or a share of a cluster-wide budget."""

    def acquire(self) -> None: ...


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

    def build(self, *, rate: RateLimit | None = None) -> Client:
        """A new client with this config, paced by ``rate`` (none: unpaced)."""
        client = Client(self.api_key, base_url=self.base_url, auth=self.auth, timeout=self.timeout,
                        retry=self.retry)
        client._bucket = rate
        return client


class Client:
    """A thread-safe client of the Seeknetic API (or of ``seeknetic-prep emulator``).

    Args:
        api_key: the key; default ``SEEKNETIC_API_KEY``.
        base_url: default ``SEEKNETIC_BASE_URL``, else the URL of ``region``.
        region: ``tokyo`` (default), ``us`` or ``cn``.
        auth: send the key as ``X-API-Key`` (default) or as ``Authorization: Bearer``.
        qps: client-side request rate limit shared by all threads; ``None`` for none.
        timeout: ``(connect, read)`` seconds for every call.
        retry: the retry policy.

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
    ) -> None:
        source = "api_key (--api-key)" if api_key is not None else "SEEKNETIC_API_KEY"
        raw = api_key if api_key is not None else os.environ.get("SEEKNETIC_API_KEY")
        if not raw or not raw.strip():
            raise InvalidArgumentError(
                "No API key: pass api_key (--api-key) or set SEEKNETIC_API_KEY (or use --local)."
            )
        # Checked before any request: requests would quote a bad header, key and all.
        key = clean_api_key(raw, source=source)
        if base_url is None:
            base_url = os.environ.get("SEEKNETIC_BASE_URL") or None
        if base_url is None:
            if region not in REGIONS:
                raise InvalidArgumentError(
                    f"Invalid region {region!r}: must be one of {', '.join(REGIONS)}."
                )
            base_url = REGIONS[region]
        if auth not in ("x-api-key", "bearer"):
            raise InvalidArgumentError(f"Invalid auth {auth!r}: must be 'x-api-key' or 'bearer'.")
        self.base_url = base_url.rstrip("/")
        self.auth: AuthScheme = auth
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._bucket: RateLimit | None = TokenBucket(qps) if qps else None
        self._adaptive = AdaptiveRate()
        self._cancelled = threading.Event()
        self._pause_until = 0.0  # a 429's Retry-After holds every thread until then
        self.last_ok = time.monotonic()
        """When the server last answered a call (monotonic)."""
        self.failing_since: float | None = None
        """Since when every call has failed (no answer, 5xx or 429); None while calls succeed."""
        self.on_event: Callable[[str, str], None] | None = None
        """Told ``("retry", why)`` before a retry after a failure, ``("rate_limited", why)`` on a 429."""
        self.__key = key  # held for worker_config only: never in a repr, log or message
        self.__secret_forms = secret_forms(key)
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "seeknetic-prep"
        if auth == "bearer":
            self._session.headers["Authorization"] = f"Bearer {key}"
        else:
            self._session.headers["X-API-Key"] = key

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r}, auth={self.auth!r})"

    def worker_config(self) -> ClientConfig:
        """What a worker needs to build a client like this one (key included, not in its repr)."""
        return ClientConfig(self.base_url, self.auth, self.timeout, self.retry, self.__key)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    def cancel(self) -> None:
        """Make every wait and retry, in every thread, give up now (with APIConnectionError)."""
        self._cancelled.set()

    @contextlib.contextmanager
    def cancelled_by(self, event: threading.Event) -> Iterator[None]:
        """While inside, setting ``event`` cancels the client (a run passes its stop flag);
        afterwards the client is as before, so one client can serve run after run."""
        old, self._cancelled = self._cancelled, event
        try:
            yield
        finally:
            self._cancelled = old

    # ------------------------------------------------------------------ endpoints

    def check_auth(self) -> None:
        """Prove the key works with one cheap authenticated request, before any real work.

        Looks up a random request id: 404 means the key was accepted.

        Tries three times at most (a key check that cannot get through should say so within
        seconds, not retry for a minute).

        Raises:
            AuthenticationError: the key is wrong (401).
            UnreachableError: no answer at all (DNS lookup failed, connection refused, ...).
        """
        try:
            self._request("GET", f"/async_status/auth-check-{uuid.uuid4().hex}", retries=3)
        except NotFoundError:
            return
        except APIConnectionError as exc:
            why = _why(exc)
            raise UnreachableError(
                f"cannot reach {self.base_url} ({why}): check the network, --base-url, or use --local",
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
        for name, value in (
            ("video_input", video_input),
            ("audio_input", audio_input),
            ("video_kwargs", video_kwargs),
        ):
            if value is not None:
                body[name] = value
        return self.upload_body(json.dumps(body).encode(), request_id=request_id)

    def upload_body(self, body: bytes, *, request_id: str) -> dict[str, str]:
        """Upload an already-serialized ``POST /files/upload/tensors`` body; return its r2_keys.

        The pipeline serializes in its decode workers, so the upload threads only send bytes.
        """
        try:
            answer = self._request("POST", "/files/upload/tensors", data=body, request_id=request_id)
        except PayloadTooLargeError:
            return self._upload_split(body, request_id)
        return _r2_keys(answer, request_id)

    def _upload_split(self, body: bytes, request_id: str) -> dict[str, str]:
        parsed = json.loads(body)
        fields = [k for k in ("video_input", "audio_input", "video_kwargs") if k in parsed]
        if len(fields) < 2:
            raise PayloadTooLargeError(
                f"413 for upload {request_id}: a single tensor of {len(body)} bytes is over the "
                "server's body limit and cannot be split further.",
                status_code=413,
                request_id=request_id,
            )
        log.info("upload %s: 413, sending %d tensors one per request", request_id, len(fields))
        keys: dict[str, str] = {}
        for name in fields:
            part = {"service": parsed["service"], "request_id": request_id, name: parsed[name]}
            answer = self._request(
                "POST", "/files/upload/tensors", data=json.dumps(part).encode(), request_id=request_id
            )
            keys.update(_r2_keys(answer, request_id))
        return keys

    def submit_embedding(
        self,
        *,
        tensor: Mapping[str, str] | None = None,
        video_url: str | None = None,
        video_base64: str | None = None,
        filename: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Submit an embedding job (tensor, ``video_url`` or ``video_base64`` mode).

        ``tensor`` is ``{"video_input_key", "audio_input_key"}`` from :meth:`upload_tensors`.
        Returns the server's answer (``request_id``, ``status``, ...).
        """
        return self._submit("embedding", tensor, video_url, video_base64, filename, request_id)

    def submit_tagging(
        self,
        *,
        tensor: Mapping[str, str] | None = None,
        video_url: str | None = None,
        video_base64: str | None = None,
        filename: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Submit a tagging job; ``tensor`` is ``{"video_input_key", "video_kwargs_key"}``."""
        return self._submit("tagging", tensor, video_url, video_base64, filename, request_id)

    def submit(self, service: ServiceName, *, tensor: Mapping[str, str], request_id: str) -> dict[str, Any]:
        """Tensor-mode submission for either service (what the pipeline uses)."""
        return self._submit(service, tensor, None, None, None, request_id)

    def encode_text(self, text: str) -> list[float]:
        """The text embedding of ``text`` (synchronous)."""
        answer = self._request("POST", "/video_embedding/encode_text", json_body={"text": text})
        if not isinstance(answer, dict):
            raise MalformedAnswerError(f"malformed answer: encode_text answer is not an object: "
                                       f"{_short(answer, 80)}")
        # A query with a NaN, or of another width, would rank nothing and print invalid JSON.
        return check_embedding(answer.get("embedding"))

    def get_status(self, request_id: str, service: str | None = None) -> dict[str, Any]:
        """``GET /async_status/<request_id>``, checked (:func:`~seeknetic_prep.answers.check_status`):
        a completed answer holds what a job of ``service`` must, and nothing a result cannot keep.

        Raises:
            NotFoundError: the server has no job with this id for this key.
            MalformedAnswerError: the answer breaks the API's promises (the message says how).
        """
        answer = self._request("GET", f"/async_status/{request_id}", request_id=request_id)
        try:
            return check_status(answer, service)
        except MalformedAnswerError as exc:
            exc.request_id = request_id
            raise

    def wait(
        self,
        request_ids: Iterable[str],
        *,
        deadline_s: float = 600.0,
        poll_s: float = 0.25,
        max_poll_s: float = 5.0,
        on_result: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Poll until every job is completed or failed; return their final status answers.

        Polls every pending id per round, with the pause between rounds growing from ``poll_s``
        to ``max_poll_s``. ``on_result`` is called as each job finishes.

        Raises:
            APITimeoutError: some jobs are still pending after ``deadline_s`` seconds (the
                message says how many); nothing loops forever.
            MalformedAnswerError: an answer breaks the API's promises (see :meth:`get_status`).
        """
        pending = list(dict.fromkeys(request_ids))
        done: dict[str, dict[str, Any]] = {}
        stop_at = time.monotonic() + deadline_s
        pause = poll_s
        while pending:
            still: list[str] = []
            for rid in pending:
                answer = self.get_status(rid)
                if answer.get("status") in TERMINAL:
                    done[rid] = answer
                    if on_result is not None:
                        on_result(rid, answer)
                else:
                    still.append(rid)
            pending = still
            if not pending:
                break
            if time.monotonic() + pause > stop_at:
                raise APITimeoutError(
                    f"{len(pending)} job(s) still pending after {deadline_s:g} s "
                    f"(first: {pending[0]}).",
                    request_id=pending[0],
                )
            time.sleep(pause)
            pause = min(max_poll_s, pause * 1.5)
        return done

    # ------------------------------------------------------------------ machinery

    def _submit(
        self,
        service: ServiceName,
        tensor: Mapping[str, str] | None,
        video_url: str | None,
        video_base64: str | None,
        filename: str | None,
        request_id: str | None,
    ) -> dict[str, Any]:
        modes = [m for m, v in (("tensor", tensor), ("video_url", video_url),
                                ("video_base64", video_base64)) if v is not None]
        if len(modes) != 1:
            raise InvalidArgumentError(
                f"Invalid submission with {modes or 'no input'}: give exactly one of tensor, "
                "video_url, video_base64."
            )
        body: dict[str, Any] = {modes[0]: {"tensor": tensor, "video_url": video_url,
                                           "video_base64": video_base64}[modes[0]]}
        if filename is not None:
            body["filename"] = filename
        if request_id is not None:
            body["request_id"] = request_id
        path = _SUBMIT_PATHS[service]
        data = json.dumps(body).encode()
        if request_id is None:  # nothing to look up by: plain retries
            answer = self._request("POST", path, data=data)
            return answer if isinstance(answer, dict) else {"answer": answer}
        return self._submit_once(service, path, data, request_id)

    def _submit_once(self, service: str, path: str, data: bytes, request_id: str) -> dict[str, Any]:
        """Submit with retries, looking the id up before any resend of an ambiguous attempt."""
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = self._request("POST", path, data=data, request_id=request_id, retries=False)
                return answer if isinstance(answer, dict) else {"request_id": request_id}
            except ConflictError:
                existing = self._lookup(request_id)
                if existing is not None and existing.get("task_type") in (None, service):
                    return existing
                raise
            except RateLimitError as exc:
                attempt -= 1  # refused before the handler: nothing to look up, nothing spent
                self._wait_out(exc)
            except (APIConnectionError, ServerError) as exc:
                if isinstance(exc, ServerError) and exc.status_code not in _RETRY_STATUSES:
                    raise
                if attempt >= self.retry.max_attempts:
                    raise
                self._sleep(attempt, None, exc)
                existing = self._lookup(request_id)
                if existing is not None:
                    log.info("submission %s: answer lost but the server has the job", request_id)
                    return existing

    def _lookup(self, request_id: str) -> dict[str, Any] | None:
        try:
            return self.get_status(request_id)
        except NotFoundError:
            return None

    def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: object = None,
        data: bytes | None = None,
        request_id: str | None = None,
        retries: bool | int = True,
    ) -> Any:
        attempts = (self.retry.max_attempts if retries is True else 1 if retries is False
                    else min(int(retries), self.retry.max_attempts))
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._send(method, path, json_body, data, request_id)
            except RateLimitError as exc:
                if not retries:
                    raise
                attempt -= 1  # waited out, never counted as a failed attempt
                self._wait_out(exc)
            except (APIConnectionError, ServerError) as exc:
                if isinstance(exc, ServerError) and exc.status_code not in _RETRY_STATUSES:
                    raise
                if attempt >= attempts:
                    raise
                self._sleep(attempt, None, exc)

    def _sleep(self, attempt: int, retry_after: float | None, exc: Exception) -> None:
        delay = self.retry.delay_s(attempt, retry_after)
        log.debug("attempt %d failed (%s); retrying in %.2f s", attempt, exc, delay)
        if self.on_event is not None:
            why = _why(exc) if isinstance(exc, APIConnectionError) else _short(str(exc), 120)
            self.on_event("retry", f"{why}; try {attempt + 1} in {delay:.1f} s")
        self._wait(delay)

    def _wait_out(self, exc: RateLimitError) -> None:
        """A 429: slow the whole client down and pause every thread until the server's
        ``Retry-After``, each with its own jitter so they do not return together."""
        self._adaptive.limited()
        if self.on_event is not None:
            self.on_event("rate_limited", str(exc))
        hint = exc.retry_after if exc.retry_after is not None else 1.0
        hint = min(max(hint, 0.0), self.retry.max_delay_s)
        self._pause_until = max(self._pause_until, time.monotonic() + hint)

    def _wait(self, seconds: float) -> None:
        if self._cancelled.wait(max(0.0, seconds)):
            raise APIConnectionError("cancelled: the run is stopping")

    def _send(
        self, method: str, path: str, json_body: object, data: bytes | None, request_id: str | None
    ) -> Any:
        if self._cancelled.is_set():
            raise APIConnectionError("cancelled: the run is stopping")
        paused = self._pause_until - time.monotonic()
        if paused > 0:  # each thread with its own jitter, so they do not return together
            self._wait(paused + random.uniform(0.0, min(1.0, 0.5 * paused)))
        if self._bucket is not None:
            self._bucket.acquire()
        self._adaptive.acquire(self._cancelled)
        url = self.base_url + path
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            resp = self._session.request(
                method, url, json=json_body, data=data, headers=headers, timeout=self.timeout
            )
        except requests.Timeout as exc:
            self._failed()
            raise APITimeoutError(
                f"{method} {path}: no answer within {self.timeout[1]:g} s{_rid(request_id)}",
                request_id=request_id,
            ) from exc
        except requests.RequestException as exc:
            self._failed()
            raise APIConnectionError(
                f"{method} {path}: connection failed ({type(exc).__name__}: "
                f"{self._redact(str(exc))[:200]}){_rid(request_id)}",
                request_id=request_id,
            ) from exc
        if resp.status_code < 500 and resp.status_code != 429:
            self.last_ok = time.monotonic()
            self.failing_since = None
        else:
            self._failed()
        if resp.status_code >= 400:
            raise self._status_error(method, path, resp, request_id)
        try:
            return resp.json()
        except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than json can parse
            raise MalformedAnswerError(
                f"malformed answer: {method} {path} answered {resp.status_code} with something "
                "that is not JSON",
                request_id=request_id,
            ) from exc

    def _failed(self) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()

    def _status_error(
        self, method: str, path: str, resp: requests.Response, request_id: str | None
    ) -> APIStatusError:
        try:
            payload = resp.json()
            detail: object = payload.get("detail", payload) if isinstance(payload, dict) else payload
        except ValueError:
            detail = resp.text[:500]
        detail = self._redact_obj(detail)
        message = f"{method} {path}: {resp.status_code} {_short(detail)}{_rid(request_id)}"
        cls = error_for_status(resp.status_code)
        if cls is RateLimitError:
            return RateLimitError(
                message, detail=detail, request_id=request_id,
                retry_after=_retry_after(resp.headers.get("Retry-After")),
            )
        return cls(message, status_code=resp.status_code, detail=detail, request_id=request_id)

    def _redact(self, text: str) -> str:
        return redact(text, self.__secret_forms)

    def _redact_obj(self, value: object) -> object:
        if isinstance(value, str):
            return self._redact(value)
        if isinstance(value, dict):
            return {k: self._redact_obj(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._redact_obj(v) for v in value]
        return value


def _r2_keys(answer: object, request_id: str) -> dict[str, str]:
    keys = answer.get("r2_keys") if isinstance(answer, dict) else None
    if not isinstance(keys, dict):
        raise MalformedAnswerError(f"malformed answer: the upload answer has no r2_keys object: "
                                   f"{_short(answer, 80)}", request_id=request_id)
    return {str(k): str(v) for k, v in keys.items()}


def _why(exc: BaseException) -> str:
    """What kind of "no answer" this was, in words a user can act on."""
    text = ""
    seen: BaseException | None = exc
    while seen is not None:
        text += repr(seen) + str(seen)
        seen = seen.__cause__ or seen.__context__
    if "NameResolution" in text or "name resolution" in text or "not known" in text:
        return "DNS lookup failed"
    if "refused" in text:
        return "connection refused"
    if isinstance(exc, APITimeoutError) or "timed out" in text:
        return "no answer in time"
    return "connection failed"


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _rid(request_id: str | None) -> str:
    return f" (request_id {request_id})" if request_id else ""


def _short(value: object, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
