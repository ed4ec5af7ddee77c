"""What goes over the wire: the bodies the client builds and how it reads the answers.

Pure functions of bytes and :class:`~seeknetic_prep.api.transport.Response` values, kept apart
from :mod:`seeknetic_prep.api.client` so that the endpoints read as a list of calls: a submission
body with exactly one input mode, an upload body split one tensor per request after a 413, an
error status turned into its class of :mod:`seeknetic_prep.errors` (the server's detail redacted,
a 429's ``Retry-After`` read), and an answer that must be JSON.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from seeknetic_prep.api.transport import Request, Response, rid_suffix, short
from seeknetic_prep.errors import (
    APIStatusError,
    InvalidArgumentError,
    MalformedAnswerError,
    NotTheAPIError,
    PayloadTooLargeError,
    RateLimitError,
    ServerError,
    error_for_status,
)

__all__ = ["TENSOR_FIELDS", "key_check_answer", "r2_keys", "read_answer", "split_upload", "status_error",
           "submission"]

log = logging.getLogger(__name__)

TENSOR_FIELDS = ("video_input", "audio_input", "video_kwargs")
"""The tensors an upload body may hold, in the order they are sent one by one after a 413."""


def submission(tensor: Mapping[str, str] | None, video_url: str | None, video_base64: str | None,
               filename: str | None, request_id: str | None) -> bytes:
    """The body of a job submission: exactly one input mode, then the optional fields."""
    given = {m: v for m, v in (("tensor", tensor), ("video_url", video_url),
                               ("video_base64", video_base64)) if v is not None}
    if len(given) != 1:
        raise InvalidArgumentError(
            f"Invalid submission with {list(given) or 'no input'}: give exactly one of tensor, "
            "video_url, video_base64."
        )
    body: dict[str, Any] = dict(given)
    if filename is not None:
        body["filename"] = filename
    if request_id is not None:
        body["request_id"] = request_id
    return json.dumps(body).encode()


def split_upload(body: bytes, request_id: str) -> list[bytes]:
    """An upload body the server found too large (413), as one body per tensor.

    Raises:
        PayloadTooLargeError: it holds one tensor only, so it cannot be split further.
    """
    parsed = json.loads(body)
    fields = [k for k in TENSOR_FIELDS if k in parsed]
    if len(fields) < 2:
        raise PayloadTooLargeError(
            f"413 for upload {request_id}: a single tensor of {len(body)} bytes is over the "
            "server's body limit and cannot be split further.",
            status_code=413,
            request_id=request_id,
        )
    log.info("upload %s: 413, sending %d tensors one per request", request_id, len(fields))
    return [json.dumps({"service": parsed["service"], "request_id": request_id, name: parsed[name]}).encode()
            for name in fields]


def read_answer(request: Request, response: Response, redact_detail: Callable[[object], object]) -> Any:
    """The JSON answer to ``request``, or the error its status stands for.

    Raises:
        APIStatusError: an error status (the class for it, see :func:`status_error`).
        MalformedAnswerError: a success whose body is not JSON (or nests deeper than it parses).
    """
    if response.status_code >= 400:
        raise status_error(request, response, redact_detail)
    try:
        return response.json()
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than json can parse
        raise MalformedAnswerError(
            f"malformed answer: {request.method} {request.path} answered {response.status_code} with "
            f"something that is not JSON{rid_suffix(request.request_id)}", request_id=request.request_id,
        ) from exc


def key_check_answer(request: Request, response: Response, redact_detail: Callable[[object], object]) -> None:
    """Judge the answer to the key check (``GET /async_status/<an id nobody made>``).

    The API answers 404 with its JSON error shape (``{"detail": ...}``): the key was accepted.
    A 401 is a refused key, and a 429 or 5xx is an API that is there but busy (the retry engine
    waits or retries those). Anything else came from something that is not the API, and every
    later call would fail the same way: a file server's or web page's 404 or 200 page, a 404
    that is not JSON, a redirect to a login page. Taking that 404 as "key OK" made a wrong
    ``--base-url`` retry uploads for minutes or fail every job for good.

    Raises:
        APIStatusError: 401, 429, 5xx (the class for each, as for any call).
        NotTheAPIError: what answered, in one line (status, content type, server, the start of
            the body), and what to check.
    """
    code = response.status_code
    if code == 404 and _api_error_shape(response):
        return
    if code in (401, 429) or code >= 500:
        raise status_error(request, response, redact_detail)
    kind = (response.header("Content-Type") or "no content type").split(";")[0].strip()
    server = response.header("Server")
    body = " ".join(response.text[:400].split())
    what = f"{code} {kind}" + (f" from {server!r}" if server else "") + (
        f": {short(redact_detail(body), 60)}" if body else "")
    raise NotTheAPIError(
        f"{request.base_url} does not answer as the Seeknetic API (GET {request.path} got {what}); "
        "check --base-url (the API is https://api.seeknetic.com) or use --local")


def _api_error_shape(response: Response) -> bool:
    """Whether an error answer has the API's shape: a JSON object with a ``detail``."""
    if "json" not in (response.header("Content-Type") or "").lower():
        return False
    try:
        payload = response.json()
    except (ValueError, RecursionError):
        return False
    return isinstance(payload, dict) and "detail" in payload


def status_error(request: Request, response: Response, redact_detail: Callable[[object], object],
                 ) -> APIStatusError:
    """The error for an error status: its class, the server's detail (redacted) and, for a 429,
    the ``Retry-After`` hint."""
    try:
        payload = response.json()
        detail: object = payload.get("detail", payload) if isinstance(payload, dict) else payload
    except ValueError:
        detail = response.text[:500]
    detail = redact_detail(detail)
    message = (f"{request.method} {request.path}: {response.status_code} {short(detail)}"
               f"{rid_suffix(request.request_id)}")
    cls = error_for_status(response.status_code)
    if cls is RateLimitError:
        return RateLimitError(message, detail=detail, request_id=request.request_id,
                              retry_after=_retry_after(response.header("Retry-After")))
    if cls is ServerError:  # a 503 may say when to come back (a full disk, a busy upload budget)
        return ServerError(message, status_code=response.status_code, detail=detail,
                           request_id=request.request_id,
                           retry_after=_retry_after(response.header("Retry-After")))
    return cls(message, status_code=response.status_code, detail=detail, request_id=request.request_id)


def r2_keys(answer: object, request_id: str) -> dict[str, str]:
    keys = answer.get("r2_keys") if isinstance(answer, dict) else None
    if not isinstance(keys, dict):
        raise MalformedAnswerError(f"malformed answer: the upload answer has no r2_keys object: "
                                   f"{short(answer, 80)}", request_id=request_id)
    return {str(k): str(v) for k, v in keys.items()}


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
