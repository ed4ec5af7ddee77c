"""The FastAPI application: the documented Seeknetic endpoints, strictly validated.

:func:`create_app` only assembles: the routers (one per concern, :mod:`.routers`) in the order
the OpenAPI document lists them, and the error handlers that give every error one shape. Every
error leaves as ``{"detail": ...}``: a string for most statuses, FastAPI's list of
``{loc, msg, type}`` for 422 (our tensor and shape rules use the same list form, naming the
field). Malformed JSON is 400, not FastAPI's default 422. Every route reads its body through
:mod:`.bodies` (strict JSON, parsed off the loop when big), and the CPU-heavy handlers share one
:class:`~seeknetic_prep.emulator.bodies.HeavyWork`.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from seeknetic_prep.emulator.bodies import HeavyWork, strict_route
from seeknetic_prep.emulator.problems import Problem
from seeknetic_prep.emulator.routers import jobs, stats, text, uploads
from seeknetic_prep.emulator.routers.jobs import QuotaSetting
from seeknetic_prep.emulator.storage import Storage

__all__ = ["QuotaSetting", "create_app"]


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
        exception_handlers={
            Problem: _problem,
            RequestValidationError: _validation,
            StarletteHTTPException: _http,
        },
    )
    heavy = HeavyWork()
    route = strict_route(heavy)
    app.include_router(uploads.router(storage, heavy, route))
    app.include_router(jobs.router(storage, heavy, route, quota=quota, notify=notify))
    app.include_router(text.router(heavy, route))
    app.include_router(stats.router(storage, route))
    return app


async def _problem(_: Request, exc: Problem) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)


async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    for err in errors:
        if err.get("type") == "json_invalid":
            where = err.get("loc", ("body", "?"))[-1]
            why = (err.get("ctx") or {}).get("error", "invalid JSON")
            detail = f"Malformed JSON body at position {where}: {why}."
            return JSONResponse({"detail": detail}, status_code=400)
    # No "input" echo: it could be megabytes of base64.
    listed = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors
    ]
    return JSONResponse({"detail": listed}, status_code=422)


async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
