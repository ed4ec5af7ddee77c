"""The API's request and answer bodies, as the OpenAPI document shows them.

Request models mirror the official SDK's parameter types (``seeknetic==0.1.0``), with unknown
fields refused, so a client that passes here sends nothing the real service would not expect.
They live apart from the routers so that every router documents the same shapes and errors.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, StringConstraints

from seeknetic_prep.emulator.config import REQUEST_ID_PATTERN

__all__ = [
    "EmbeddingSubmit",
    "EmbeddingTensorRefs",
    "ErrorBody",
    "StatsResponse",
    "StatusResponse",
    "SubmitBase",
    "SubmitResponse",
    "TaggingSubmit",
    "TaggingTensorRefs",
    "TensorDict",
    "TextRequest",
    "TextResponse",
    "UploadRequest",
    "UploadResponse",
    "VideoInputWithMetadata",
    "errors",
]

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


class SubmitBase(_Strict):
    video_url: StrictStr | None = None
    video_base64: StrictStr | None = None
    request_id: RequestId | None = None
    filename: StrictStr | None = Field(default=None, description="Defaults to video.mp4.")


class EmbeddingSubmit(SubmitBase):
    tensor: EmbeddingTensorRefs | None = None


class TaggingSubmit(SubmitBase):
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


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers an endpoint documents: those every endpoint can give, and ``codes``."""
    extra = {
        402: "The key's quota of async jobs is spent",
        403: "A tensor key belongs to another API key",
        404: "No such job or tensor key for this API key",
        409: "The request_id already names something else",
        503: "The emulator's storage is full (see Retry-After)",
    }
    out = dict(_ERRORS)
    out.update({c: {"model": ErrorBody, "description": extra[c]} for c in codes})
    return out
