"""The API's job endpoints: submit (with a lookup before any resend), status, and wait.

A command group over one ``_call``, as redis-py splits its commands into mixins over
``execute_command``: :class:`~seeknetic_prep.api.client.Client` inherits it, and the rules that
make a submission exactly-once live here, beside the endpoints they guard, not among the
connection plumbing. POST retries are safe because our request ids are deterministic and uploads
idempotent; a submission whose answer was lost is first looked up with ``GET
/async_status/<id>`` (the retry engine asks before any resend), and a 409 for a job the server
already has, of the same service, is that job's answer, so nothing is submitted twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from seeknetic_prep.api.answers import check_status
from seeknetic_prep.api.retry import RetryEngine
from seeknetic_prep.api.wire import submission
from seeknetic_prep.errors import APITimeoutError, ConflictError, MalformedAnswerError, NotFoundError

__all__ = ["TERMINAL", "JobCommands", "ServiceName"]

ServiceName = Literal["embedding", "tagging"]

TERMINAL = frozenset({"completed", "failed"})
_SUBMIT_PATHS: dict[str, str] = {
    "embedding": "/video_embedding/encode_video/async",
    "tagging": "/video_tagging/async",
}


class JobCommands:
    """Submitting jobs and following them; needs ``retrier`` and ``_call`` from the class that
    holds the connection (:class:`~seeknetic_prep.api.client.Client`)."""

    retrier: RetryEngine

    def _call(self, method: str, path: str, *, body: bytes | None = None, request_id: str | None = None,
              lookup: Callable[[], Any] | None = None) -> Any:
        raise NotImplementedError  # the connection's

    def submit_embedding(self, *, tensor: Mapping[str, str] | None = None, video_url: str | None = None,
                         video_base64: str | None = None, filename: str | None = None,
                         request_id: str | None = None) -> dict[str, Any]:
        """Submit an embedding job (tensor, ``video_url`` or ``video_base64`` mode).

        ``tensor`` is ``{"video_input_key", "audio_input_key"}`` from
        :meth:`~seeknetic_prep.api.client.Client.upload_tensors`.
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
