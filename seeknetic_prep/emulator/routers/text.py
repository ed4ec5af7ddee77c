"""``POST /video_embedding/encode_text``: a text's embedding, in the space of the video ones."""

from __future__ import annotations

from fastapi import APIRouter

from seeknetic_prep.emulator import scoring
from seeknetic_prep.emulator.models import TextRequest, TextResponse, errors
from seeknetic_prep.emulator.problems import invalid
from seeknetic_prep.emulator.routers.auth import Owner

__all__ = ["router"]


def router() -> APIRouter:
    api = APIRouter()

    @api.post("/video_embedding/encode_text", response_model=TextResponse, responses=errors())
    def encode_text(body: TextRequest, owner: Owner) -> TextResponse:
        """Embed a text into the same space as video embeddings."""
        if not body.text.strip():
            raise invalid(["text"], "text is empty: must hold at least one non-space character.")
        return TextResponse(embedding=scoring.embed_text(body.text))

    return api
