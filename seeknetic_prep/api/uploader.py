"""Uploads from the node that decoded them: a picklable uploader any engine can ship to its workers.

An engine whose workers run on other machines (Ray) keeps tensor bytes where they were made: the
worker uploads each window's bodies itself and hands the driver only the r2 keys. What a worker
needs for that is a :class:`NodeUploader`: the client's :class:`~seeknetic_prep.api.client.ClientConfig`
(key out of its repr), and the request rate and byte cap the engine's workers share. The client
it builds is the same :class:`~seeknetic_prep.api.client.Client` as the driver's, with the same
retry engine, and one is kept per worker process and config, so its connection pool serves task
after task.

The one rule of its own: a body whose upload still fails after the client's retries is handed
back, and so is every later body given to the same uploader, untried. The driver's upload stage
then applies the run's rules to them (try again later, stop the run when the API is unreachable,
fail the unit): a node never waits on an API that is failing, and never decides a unit's fate.
An engine ships a fresh uploader with each task, so each task tries the API anew.

>>> uploader = NodeUploader(client.worker_config())  # doctest: +SKIP
>>> done, left = uploader.upload(window.bodies)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from seeknetic_prep.api.client import Client, ClientConfig
from seeknetic_prep.api.pacing import ByteRate, RateLimit
from seeknetic_prep.errors import APIError

__all__ = ["Body", "NodeUploader", "Uploaded"]

Body = tuple[str, str, bytes]
"""(service, request_id, JSON body) of one upload."""
Uploaded = tuple[str, str, dict[str, str]]
"""(service, request_id, r2 keys) of one upload done."""


class NodeUploader:
    """Uploads bodies with a client built from ``config``, paced by ``rate`` (requests) and
    ``bandwidth`` (bytes; None: unpaced).

    Picklable when those are (the Ray engine's hold actor handles, which Ray ships).
    """

    def __init__(self, config: ClientConfig, rate: RateLimit | None = None,
                 bandwidth: ByteRate | None = None) -> None:
        self.config = config
        self.rate = rate
        self.bandwidth = bandwidth
        self.gave_up = False
        """True once a body failed: later ones are handed back untried."""

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "rate": self.rate, "bandwidth": self.bandwidth, "gave_up": False}

    def upload(self, bodies: Iterable[Body]) -> tuple[tuple[Uploaded, ...], tuple[Body, ...]]:
        """Upload ``bodies`` in order; return (those done, with their keys; those handed back)."""
        done: list[Uploaded] = []
        left: list[Body] = []
        for service, request_id, body in bodies:
            if self.gave_up:
                left.append((service, request_id, body))
                continue
            try:
                done.append((service, request_id, self.client().upload_body(body, request_id=request_id)))
            except APIError:  # the driver's upload stage decides: retry later, halt, or fail the unit
                self.gave_up = True
                left.append((service, request_id, body))
        return tuple(done), tuple(left)

    def client(self) -> Client:
        """This process's client for the config, paced by this uploader's rate and cap."""
        if self.config not in _clients:
            latest = _Latest()
            _clients[self.config] = (self.config.build(rate=latest, bandwidth=latest.bytes), latest)
        client, latest = _clients[self.config]
        latest.rate = self.rate
        latest.bytes.bandwidth = self.bandwidth
        return client


class _Latest:
    """A cached client's pace: that of the uploader that used it last (each task brings its own
    handles to the engine's shared budgets)."""

    def __init__(self) -> None:
        self.rate: RateLimit | None = None
        self.bytes = _LatestBytes()

    def reserve(self) -> float:
        return self.rate.reserve() if self.rate is not None else 0.0


class _LatestBytes:
    """A cached client's byte cap, as :class:`_Latest` is its rate."""

    def __init__(self) -> None:
        self.bandwidth: ByteRate | None = None

    def reserve(self, count: int) -> float:
        return self.bandwidth.reserve(count) if self.bandwidth is not None else 0.0


_clients: dict[ClientConfig, tuple[Client, _Latest]] = {}
