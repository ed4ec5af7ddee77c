"""``POST /files/upload/tensors``: validate a request's tensors and store them under its request_id.

The rules a tensor must meet live in :mod:`seeknetic_prep.emulator.uploads`; this router only
routes: count the request, decode and check each tensor once, store, answer with the keys.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from fastapi import APIRouter
from fastapi.routing import APIRoute

from seeknetic_prep.emulator.bodies import HeavyWork
from seeknetic_prep.emulator.config import new_request_id
from seeknetic_prep.emulator.models import UploadRequest, UploadResponse, VideoInputWithMetadata, errors
from seeknetic_prep.emulator.problems import invalid
from seeknetic_prep.emulator.routers.auth import Owner
from seeknetic_prep.emulator.storage import Storage
from seeknetic_prep.emulator.storage.files import Chunks
from seeknetic_prep.emulator.uploads import Decoded, check_audio, check_kwargs, check_video, tensor_json

__all__ = ["router"]


def router(storage: Storage, heavy: HeavyWork, route: type[APIRoute]) -> APIRouter:
    api = APIRouter(route_class=route)
    decoded = Decoded()  # a window's two uploads carry the same video: decoded once

    def upload(body: UploadRequest, owner: str) -> UploadResponse:
        request_id = body.request_id or new_request_id()
        storage.stats.count(owner, "uploads", request_id)
        objects, arrays = _validated(body, decoded)
        keys = storage.uploads.put(owner, request_id, body.service, objects, arrays)
        return UploadResponse(request_id=request_id, r2_keys=keys)

    @api.post(
        "/files/upload/tensors", response_model=UploadResponse, responses=errors(409, 503)
    )
    async def upload_tensors(body: UploadRequest, owner: Owner) -> UploadResponse:
        """Store tensors under a request_id; the same name again replaces, another name adds."""
        return await heavy.run(upload, body, owner)  # decoding megabytes: in the heavy threads

    return api


def _validated(body: UploadRequest, decoded: Decoded) -> tuple[dict[str, Chunks], dict[str, np.ndarray]]:
    """The objects to store and the arrays they hold (validated once here; the job scores these).

    Raises:
        Problem: 422 naming the field and the rule it broke, or when there is nothing to store.
    """
    objects: dict[str, Chunks] = {}
    arrays: dict[str, np.ndarray] = {}
    video = body.video_input
    if video is not None:
        meta: dict[str, Any] | None
        if isinstance(video, VideoInputWithMetadata):
            inner, meta, loc = video.tensor, video.metadata, "video_input.tensor"
        else:
            inner, meta, loc = video, None, "video_input"
        arrays["video_input"] = decoded(loc, inner)
        check_video(loc, arrays["video_input"])
        objects["video_input"] = tensor_json(inner, meta)
    if body.audio_input is not None:
        arrays["audio_input"] = decoded("audio_input", body.audio_input)
        check_audio("audio_input", arrays["audio_input"])
        objects["audio_input"] = tensor_json(body.audio_input)
    if body.video_kwargs is not None:
        check_kwargs(body.video_kwargs)
        objects["video_kwargs"] = json.dumps(body.video_kwargs).encode()
    if not objects:
        raise invalid([], "Nothing to upload: send at least one of video_input, audio_input, video_kwargs.")
    return objects, arrays
