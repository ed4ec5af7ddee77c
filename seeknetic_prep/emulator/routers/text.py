"""``POST /video_embedding/encode_text``: a text's embedding, in the space of the video ones."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.routing import APIRoute

from seeknetic_prep.emulator import scoring
from seeknetic_prep.emulator.bodies import HeavyWork
from seeknetic_prep.emulator.models import TextRequest, TextResponse, errors
from seeknetic_prep.emulator.problems import invalid
from seeknetic_prep.emulator.routers.auth import Owner

__all__ = ["router"]


def router(heavy: HeavyWork, route: type[APIRoute]) -> APIRouter:
    api = APIRouter(route_class=route)

    @api.post("/video_embedding/encode_text", response_model=TextResponse, responses=errors())
    async def encode_text(body: TextRequest, owner: Owner) -> TextResponse:
        """Embed a text into the same space as video embeddings."""
        if not body.text.strip():
            raise invalid(["text"], "text is empty: must hold at least one non-space character.")
        # A long text costs ~10 us a word: in the heavy threads, never the loop or the pool.
        return TextResponse(embedding=await heavy.run(scoring.embed_text, body.text))

    return api
