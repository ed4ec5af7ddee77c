"""A local HTTP server that behaves like the Seeknetic API, strictly, without a model.

Modules, outside in: :mod:`.config` (:class:`EmulatorConfig`, the one object every way of
starting it takes), :mod:`.in_process` (``running``: a thread of this process, for tests),
:mod:`.child_process` (``spawned``: a child process, for ``run --local``), :mod:`.server` (the
parts, the socket, uvicorn; ``serve`` in the foreground for the CLI), :mod:`.connections` (a
deadline for every request head), :mod:`.guard` (auth, rate limit, faults, body limit, memory
budget, body deadline, before any handler; the first three decided by :mod:`.policies`, the
body's framing, spooling and deadline by :mod:`.framing`),
:mod:`.app` (assembles the endpoints of :mod:`.routers`, one router per concern, over the bodies
of :mod:`.models`, read by :mod:`.bodies`), :mod:`.uploads` (what a tensor must be),
:mod:`.storage` (SQLite + atomic files, one part per concern), :mod:`.jobs` (the worker that
finishes jobs), :mod:`.scoring` (content-derived embeddings and tags).

>>> from seeknetic_prep.emulator import EmulatorConfig, running
>>> with running(EmulatorConfig(qps=5)) as server:
...     server.base_url.startswith("http://127.0.0.1:")
True
"""

from __future__ import annotations

from seeknetic_prep.emulator.child_process import EmulatorProcess, spawned
from seeknetic_prep.emulator.config import EmulatorConfig
from seeknetic_prep.emulator.in_process import EmulatorHandle, running
from seeknetic_prep.emulator.policies import Faults
from seeknetic_prep.emulator.server import serve

__all__ = ["EmulatorConfig", "EmulatorHandle", "EmulatorProcess", "Faults", "running", "serve", "spawned"]
