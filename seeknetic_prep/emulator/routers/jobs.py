"""The async jobs: ``POST /video_embedding/encode_video/async``, ``POST /video_tagging/async`` and
``GET /async_status/{request_id}``.

A submission names its input one way (uploaded tensor keys, ``video_base64`` or ``video_url``);
each tensor key is checked here against what the caller uploaded, with an error that says which
key and why (404 missing or deleted, 403 another key's, 422 wrong kind or service). A request_id
that already names a job returns that job: never a second one (:meth:`Jobs.submit`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Literal, Protocol

from fastapi import APIRouter
from fastapi.routing import APIRoute

from seeknetic_prep.emulator import jobs, scoring
from seeknetic_prep.emulator.bodies import HeavyWork
from seeknetic_prep.emulator.config import new_request_id
from seeknetic_prep.emulator.models import (
    EmbeddingSubmit,
    EmbeddingTensorRefs,
    StatusResponse,
    SubmitBase,
    SubmitResponse,
    TaggingSubmit,
    TaggingTensorRefs,
    errors,
)
from seeknetic_prep.emulator.problems import Problem, invalid
from seeknetic_prep.emulator.routers.auth import Owner
from seeknetic_prep.emulator.storage import JobRow, Storage

__all__ = ["QuotaSetting", "Submissions", "router"]

TaskType = Literal["embedding", "tagging"]


class QuotaSetting(Protocol):
    """Read on every submission, so the quota can change while the server runs."""

    quota: int | None


def router(
    storage: Storage, heavy: HeavyWork, route: type[APIRoute], *, quota: QuotaSetting,
    notify: Callable[[], None],
) -> APIRouter:
    """The job endpoints over ``storage``; ``notify`` wakes the worker when a job is created.
    Submissions run in ``heavy``'s threads (a ``video_base64`` one decodes and writes megabytes)."""
    api = APIRouter(route_class=route)
    submissions = Submissions(storage, quota=quota, notify=notify)

    @api.post(
        "/video_embedding/encode_video/async",
        response_model=SubmitResponse,
        responses=errors(402, 403, 404, 409, 503),
    )
    async def submit_embedding(body: EmbeddingSubmit, owner: Owner) -> SubmitResponse:
        """Queue an embedding job over uploaded tensors (or video_base64 / video_url)."""
        return await heavy.run(submissions.submit, "embedding", body, owner)

    @api.post(
        "/video_tagging/async", response_model=SubmitResponse, responses=errors(402, 403, 404, 409, 503)
    )
    async def submit_tagging(body: TaggingSubmit, owner: Owner) -> SubmitResponse:
        """Queue a tagging job over uploaded tensors (or video_base64 / video_url)."""
        return await heavy.run(submissions.submit, "tagging", body, owner)

    @api.get(
        "/async_status/{request_id}",
        response_model=StatusResponse,
        response_model_exclude_none=True,
        responses=errors(404),
    )
    def async_status(request_id: str, owner: Owner) -> StatusResponse:
        """A job's status, and its embedding, tags or error_message once it has finished."""
        job = storage.jobs.get(owner, request_id)
        if job is None:
            raise Problem(404, f"No job {request_id!r} for this API key.")
        return _status_body(job)

    return api


class Submissions:
    """What a submission must name, and the job it makes."""

    def __init__(self, storage: Storage, *, quota: QuotaSetting, notify: Callable[[], None]) -> None:
        self._storage = storage
        self._quota = quota
        self._notify = notify

    def submit(self, task_type: TaskType, body: SubmitBase, owner: str) -> SubmitResponse:
        request_id = body.request_id or new_request_id()
        self._storage.stats.count(owner, "submissions", request_id)
        source = self._source(task_type, body, owner, request_id)
        job, created = self._storage.jobs.submit(
            owner=owner,
            request_id=request_id,
            task_type=task_type,
            source=source,
            fingerprint=jobs.fingerprint(source),
            quota=self._quota.quota,
        )
        if created:
            self._notify()
        message = "Job queued." if created else "A job with this request_id exists; returned unchanged."
        return SubmitResponse(
            request_id=job.request_id,
            status=job.status,  # type: ignore[arg-type]
            task_type=job.task_type,  # type: ignore[arg-type]
            message=message,
        )

    def _source(self, task_type: TaskType, body: SubmitBase, owner: str, request_id: str) -> dict[str, Any]:
        """The job's input, as stored with it: tensor keys, a stored video file, or a URL."""
        tensor = getattr(body, "tensor", None)
        modes = [
            m
            for m, v in (
                ("video_url", body.video_url),
                ("video_base64", body.video_base64),
                ("tensor", tensor),
            )
            if v is not None
        ]
        if len(modes) != 1:
            raise invalid(
                [], f"Got {modes or 'no input'}: send exactly one of video_url, video_base64, tensor."
            )
        if tensor is not None:
            # A repeat of an existing job needs no tensors: they may be gone with its result kept.
            repeat = body.request_id is not None and self._storage.jobs.get(owner, request_id) is not None
            return {"mode": "tensor", "keys": self._resolve_keys(task_type, tensor, owner, repeat=repeat)}
        if body.video_base64 is not None:
            try:
                return jobs.video_source(
                    self._storage, owner, request_id, body.video_base64, body.filename or "video.mp4"
                )
            except ValueError as exc:
                raise invalid(["video_base64"], str(exc)) from exc
        url = body.video_url or ""
        if not url.strip():
            raise invalid(["video_url"], "video_url is empty: must be a URL.")
        return {"mode": "video_url", "url": url}

    def _resolve_keys(
        self, task_type: str, tensor: EmbeddingTensorRefs | TaggingTensorRefs, owner: str, *, repeat: bool
    ) -> dict[str, str]:
        given = {k: v for k, v in tensor.model_dump().items() if v is not None}
        required = "video_input_key" if task_type == "tagging" else None
        if not given:
            raise invalid(
                ["tensor"],
                "tensor names no key: give at least one of " + ", ".join(type(tensor).model_fields) + ".",
            )
        if required and required not in given:
            raise invalid(["tensor", required], f"tensor.{required} is required for {task_type} jobs.")
        for field, key in given.items():
            self._check_key(task_type, field, key, owner, repeat=repeat)
        return given

    def _check_key(self, task_type: str, field: str, key: str, owner: str, *, repeat: bool) -> None:
        """``tensor.<field>`` names an upload of the caller's, of the right kind and service."""
        rows = self._storage.uploads.find(key)
        mine = [r for r in rows if r.owner == owner]
        if not mine and repeat:
            return  # Jobs.submit compares the keys with the existing job's
        if not mine and self._storage.retention.was_dropped(owner, key):
            raise Problem(
                404,
                f"tensor.{field} {key!r} was deleted when the jobs that used it finished "
                "(the emulator keeps tensors only with --keep-tensors): upload it again.",
            )
        if not rows:
            raise Problem(
                404,
                f"tensor.{field} {key!r} does not exist: upload it with POST /files/upload/tensors first.",
            )
        if not mine:
            raise Problem(403, f"tensor.{field} {key!r} belongs to another API key.")
        row = mine[0]
        expected = field.removesuffix("_key")
        if row.name != expected:
            raise invalid(
                ["tensor", field],
                f"tensor.{field} {key!r} names a {row.name} upload: must name a {expected}.",
            )
        if row.service != task_type:
            raise invalid(
                ["tensor", field],
                f"tensor.{field} {key!r} was uploaded for service {row.service!r}: "
                f"a {task_type} job needs tensors uploaded with service {task_type!r}.",
            )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _status_body(job: JobRow) -> StatusResponse:
    result = job.result if isinstance(job.result, dict) else {}
    return StatusResponse(
        request_id=job.request_id,
        status=job.status,  # type: ignore[arg-type]
        task_type=job.task_type,  # type: ignore[arg-type]
        model_name=scoring.MODEL_NAMES[job.task_type],
        created_at=_iso(job.created_at),
        updated_at=_iso(job.updated_at),
        embedding=result.get("embedding") if job.status == "completed" else None,
        tags=result.get("tags") if job.status == "completed" else None,
        error_message=job.error_message if job.status == "failed" else None,
    )
