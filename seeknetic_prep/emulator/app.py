"""The FastAPI application: the documented Seeknetic endpoints, strictly validated.

Request models mirror the official SDK's parameter types (``seeknetic==0.1.0``), with unknown
fields refused, so a client that passes here sends nothing the real service would not expect.
Every error leaves as ``{"detail": ...}``: a string for most statuses, FastAPI's list of
``{loc, msg, type}`` for 422 (our tensor and shape rules use the same list form, naming the
field). Malformed JSON is 400, not FastAPI's default 422.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Protocol

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from seeknetic_prep.emulator import jobs, scoring
from seeknetic_prep.emulator.config import REQUEST_ID_PATTERN
from seeknetic_prep.emulator.guard import OWNER_SCOPE_KEY
from seeknetic_prep.emulator.problems import Problem, invalid
from seeknetic_prep.emulator.storage import JobRow, Storage
from seeknetic_prep.emulator.uploads import Decoded, check_audio, check_kwargs, check_video, tensor_json

__all__ = ["create_app"]

RequestId = Annotated[str, StringConstraints(pattern=REQUEST_ID_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorDict(_Strict):
    """A numpy array as the API carries it: C-order little-endian bytes in standard base64."""

    data: StrictStr = Field(description="Base64 encoded numpy buffer")
    shape: list[StrictInt]
    dtype: Literal["float32", "float64", "uint8"]


class VideoInputWithMetadata(_Strict):
    tensor: TensorDict
    metadata: dict[str, Any] = Field(default_factory=dict)


class UploadRequest(_Strict):
    service: Literal["embedding", "tagging"]
    request_id: RequestId | None = None
    video_input: TensorDict | VideoInputWithMetadata | None = None
    audio_input: TensorDict | None = None
    video_kwargs: dict[str, Any] | None = None


class UploadResponse(BaseModel):
    request_id: str
    r2_keys: dict[str, str]
    status: Literal["uploaded"] = "uploaded"


class EmbeddingTensorRefs(_Strict):
    video_input_key: StrictStr | None = None
    audio_input_key: StrictStr | None = None


class TaggingTensorRefs(_Strict):
    video_input_key: StrictStr | None = None
    video_kwargs_key: StrictStr | None = None


class _SubmitBase(_Strict):
    video_url: StrictStr | None = None
    video_base64: StrictStr | None = None
    request_id: RequestId | None = None
    filename: StrictStr | None = Field(default=None, description="Defaults to video.mp4.")


class EmbeddingSubmit(_SubmitBase):
    tensor: EmbeddingTensorRefs | None = None


class TaggingSubmit(_SubmitBase):
    tensor: TaggingTensorRefs | None = None


class SubmitResponse(BaseModel):
    request_id: str
    status: Literal["pending", "processing", "completed", "failed"]
    task_type: Literal["embedding", "tagging"]
    message: str


class StatusResponse(BaseModel):
    request_id: str
    status: Literal["pending", "processing", "completed", "failed"]
    task_type: Literal["embedding", "tagging"]
    model_name: str
    created_at: str
    updated_at: str
    embedding: list[float] | None = None
    tags: dict[str, Any] | None = None
    error_message: str | None = None


class TextRequest(_Strict):
    text: StrictStr = Field(description="Text to encode")


class TextResponse(BaseModel):
    embedding: list[float]


class StatsResponse(BaseModel):
    uploads: dict[str, int]
    submissions: dict[str, int]


class ErrorBody(BaseModel):
    detail: Any


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "Malformed JSON",
        401: "Missing or wrong API key",
        413: "Body over the limit",
        429: "Over the key's requests per second (see Retry-After)",
    }.items()
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    extra = {
        402: "The key's quota of async jobs is spent",
        403: "A tensor key belongs to another API key",
        404: "No such job or tensor key for this API key",
        409: "The request_id already names something else",
    }
    out = dict(_ERRORS)
    out.update({c: {"model": ErrorBody, "description": extra[c]} for c in codes})
    return out


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _new_id() -> str:
    return "emu-" + uuid.uuid4().hex


_api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False)
_bearer_scheme = HTTPBearer(auto_error=False)


def _owner(
    request: Request,
    _key: Annotated[str | None, Depends(_api_key_scheme)],
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)],
) -> str:
    """The caller, as the Guard authenticated it (the schemes are here to document auth in OpenAPI)."""
    owner = request.scope.get(OWNER_SCOPE_KEY)
    if not isinstance(owner, str):  # only reachable if the app is mounted without its Guard
        raise Problem(401, "Missing API key.")
    return owner


Owner = Annotated[str, Depends(_owner)]


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


class QuotaSetting(Protocol):
    """Read on every submission, so the quota can change while the server runs."""

    quota: int | None


def create_app(storage: Storage, *, quota: QuotaSetting, notify: Callable[[], None]) -> FastAPI:
    """The API over ``storage``.

    Args:
        storage: where uploads and jobs live.
        quota: holds the async jobs each key may submit (None: no limit).
        notify: called after a job is created, to wake the worker.
    """
    app = FastAPI(
        title="Seeknetic API (local emulator)",
        version="0.1.0",
        description="A local, model-free emulator of the Seeknetic video API for development and tests.",
    )

    decoded = Decoded()

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        for err in errors:
            if err.get("type") == "json_invalid":
                where = err.get("loc", ("body", "?"))[-1]
                why = (err.get("ctx") or {}).get("error", "invalid JSON")
                return JSONResponse(
                    {"detail": f"Malformed JSON body at position {where}: {why}."}, status_code=400
                )
        # No "input" echo: it could be megabytes of base64.
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in errors
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.post("/files/upload/tensors", response_model=UploadResponse, responses=_errors(409))
    def upload_tensors(body: UploadRequest, owner: Owner) -> UploadResponse:
        """Store tensors under a request_id; the same name again replaces, another name adds."""
        request_id = body.request_id or _new_id()
        storage.stats.count(owner, "uploads", request_id)
        objects: dict[str, bytes] = {}
        arrays: dict[str, np.ndarray] = {}  # validated once here; the job scores these
        if body.video_input is not None:
            inner = (
                body.video_input.tensor
                if isinstance(body.video_input, VideoInputWithMetadata)
                else body.video_input
            )
            loc = "video_input" if inner is body.video_input else "video_input.tensor"
            arrays["video_input"] = decoded(loc, inner)
            check_video(loc, arrays["video_input"])
            meta = body.video_input.metadata if isinstance(body.video_input, VideoInputWithMetadata) else None
            objects["video_input"] = tensor_json(inner, meta)
        if body.audio_input is not None:
            arrays["audio_input"] = decoded("audio_input", body.audio_input)
            check_audio("audio_input", arrays["audio_input"])
            objects["audio_input"] = tensor_json(body.audio_input)
        if body.video_kwargs is not None:
            check_kwargs(body.video_kwargs)
            objects["video_kwargs"] = json.dumps(body.video_kwargs).encode()
        if not objects:
            raise invalid(
                [], "Nothing to upload: send at least one of video_input, audio_input, video_kwargs."
            )
        keys = storage.uploads.put(owner, request_id, body.service, objects, arrays)
        return UploadResponse(request_id=request_id, r2_keys=keys)

    def submit(task_type: Literal["embedding", "tagging"], body: _SubmitBase, owner: str) -> SubmitResponse:
        request_id = body.request_id or _new_id()
        storage.stats.count(owner, "submissions", request_id)
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
        source: dict[str, Any]
        if tensor is not None:
            # A repeat of an existing job needs no tensors: they may be gone with its result kept.
            repeat = body.request_id is not None and storage.jobs.get(owner, request_id) is not None
            source = {"mode": "tensor", "keys": _resolve_keys(task_type, tensor, owner, repeat=repeat)}
        elif body.video_base64 is not None:
            try:
                source = jobs.video_source(
                    storage, owner, request_id, body.video_base64, body.filename or "video.mp4"
                )
            except ValueError as exc:
                raise invalid(["video_base64"], str(exc)) from exc
        else:
            url = body.video_url or ""
            if not url.strip():
                raise invalid(["video_url"], "video_url is empty: must be a URL.")
            source = {"mode": "video_url", "url": url}
        job, created = storage.jobs.submit(
            owner=owner,
            request_id=request_id,
            task_type=task_type,
            source=source,
            fingerprint=jobs.fingerprint(source),
            quota=quota.quota,
        )
        if created:
            notify()
        message = "Job queued." if created else "A job with this request_id exists; returned unchanged."
        return SubmitResponse(
            request_id=job.request_id,
            status=job.status,  # type: ignore[arg-type]
            task_type=job.task_type,  # type: ignore[arg-type]
            message=message,
        )

    def _resolve_keys(
        task_type: str, tensor: EmbeddingTensorRefs | TaggingTensorRefs, owner: str, *, repeat: bool
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
            rows = storage.uploads.find(key)
            mine = [r for r in rows if r.owner == owner]
            if not mine and repeat:
                continue  # submit_job compares the keys with the existing job's
            if not mine and storage.retention.was_dropped(owner, key):
                raise Problem(
                    404,
                    f"tensor.{field} {key!r} was deleted when the jobs that used it finished "
                    "(the emulator keeps tensors only with --keep-tensors): upload it again.",
                )
            if not rows:
                raise Problem(
                    404,
                    f"tensor.{field} {key!r} does not exist: upload it with "
                    "POST /files/upload/tensors first.",
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
        return given

    @app.post(
        "/video_embedding/encode_video/async",
        response_model=SubmitResponse,
        responses=_errors(402, 403, 404, 409),
    )
    def submit_embedding(body: EmbeddingSubmit, owner: Owner) -> SubmitResponse:
        """Queue an embedding job over uploaded tensors (or video_base64 / video_url)."""
        return submit("embedding", body, owner)

    @app.post("/video_tagging/async", response_model=SubmitResponse, responses=_errors(402, 403, 404, 409))
    def submit_tagging(body: TaggingSubmit, owner: Owner) -> SubmitResponse:
        """Queue a tagging job over uploaded tensors (or video_base64 / video_url)."""
        return submit("tagging", body, owner)

    @app.get(
        "/async_status/{request_id}",
        response_model=StatusResponse,
        response_model_exclude_none=True,
        responses=_errors(404),
    )
    def async_status(request_id: str, owner: Owner) -> StatusResponse:
        """A job's status, and its embedding, tags or error_message once it has finished."""
        job = storage.jobs.get(owner, request_id)
        if job is None:
            raise Problem(404, f"No job {request_id!r} for this API key.")
        return _status_body(job)

    @app.post("/video_embedding/encode_text", response_model=TextResponse, responses=_errors())
    def encode_text(body: TextRequest, owner: Owner) -> TextResponse:
        """Embed a text into the same space as video embeddings."""
        if not body.text.strip():
            raise invalid(["text"], "text is empty: must hold at least one non-space character.")
        return TextResponse(embedding=scoring.embed_text(body.text))

    @app.get("/_emulator/stats", response_model=StatsResponse, responses=_errors())
    def emulator_stats(owner: Owner) -> StatsResponse:
        """How many upload and submission requests reached their handlers, per request_id (this key only)."""
        return StatsResponse(**storage.stats.of(owner))

    return app
