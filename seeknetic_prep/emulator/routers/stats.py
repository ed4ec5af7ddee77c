"""``GET /_emulator/stats``: the emulator's own endpoint, for tests to see what reached it.

It is not part of the Seeknetic API; the Guard exempts ``/_emulator/*`` from faults and rate
limits, so a test can always read it, even while it injects faults into everything else.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.routing import APIRoute

from seeknetic_prep.emulator.models import StatsResponse, errors
from seeknetic_prep.emulator.routers.auth import Owner
from seeknetic_prep.emulator.storage import Storage

__all__ = ["router"]


def router(storage: Storage, route: type[APIRoute]) -> APIRouter:
    api = APIRouter(route_class=route)

    @api.get("/_emulator/stats", response_model=StatsResponse, responses=errors())
    def emulator_stats(owner: Owner) -> StatsResponse:
        """How many upload and submission requests reached their handlers, per request_id (this key only)."""
        return StatsResponse(**storage.stats.of(owner))

    return api
