"""How one emulator serves: its parts (:class:`Emulator`), its listening socket, and uvicorn.

Three ways to run it share this module: in the foreground for the ``emulator`` command
(:func:`serve`), in a thread of the caller for tests (:mod:`.in_process`, ``running``), and in a
child process for ``run --local`` (:mod:`.child_process`, ``spawned``; the child runs
:func:`_child`). Each binds the listening socket itself (:func:`bind`), so port 0 gives a free
port whose number is known before the first request, and each serves the same :class:`Emulator`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from seeknetic_prep.emulator.config import EmulatorConfig
from seeknetic_prep.emulator.guard import Guard
from seeknetic_prep.emulator.jobs import JobWorker
from seeknetic_prep.emulator.policies import Faults, Keyring, RateLimiter
from seeknetic_prep.emulator.storage import Storage
from seeknetic_prep.emulator.storage.space import is_full
from seeknetic_prep.errors import InvalidArgumentError

__all__ = ["Emulator", "bind", "serve", "url", "uvicorn_config", "with_data_dir"]

log = logging.getLogger("seeknetic_prep.emulator")


class _Quota:
    def __init__(self, quota: int | None) -> None:
        self.quota = quota


class Emulator:
    """One emulator's parts: storage, worker, guard and app, opened together and closed together.

    ``config.data_dir`` must be set (see :func:`with_data_dir`).
    """

    def __init__(self, config: EmulatorConfig) -> None:
        # FastAPI: only when a server is made, not for `running`'s config types
        from seeknetic_prep.emulator.app import create_app

        assert config.data_dir is not None
        self.config = config
        self.storage = Storage(config.data_dir)
        self.worker = JobWorker(
            self.storage, job_seconds=config.job_seconds, keep_tensors=config.keep_tensors
        )
        self.faults = Faults(fail_rate=config.fail_rate, seed=config.seed)
        faults = self.faults
        self.storage.space.inject = lambda: faults.storage_full
        self.limiter = RateLimiter(config.qps)
        self.quota = _Quota(config.quota)
        app = create_app(self.storage, quota=self.quota, notify=self.worker.notify)
        self.app = Guard(
            app,
            keyring=Keyring(config.api_keys),
            limiter=self.limiter,
            faults=self.faults,
            max_body_bytes=config.max_body_bytes,
            read_timeout_s=config.read_timeout_s,
            memory_budget_bytes=int(config.upload_memory_mb * 2**20),
        )
        self.fastapi = app

    def start(self) -> None:
        if not self.config.keep_tensors:  # before the first request: finish a drop cut short
            self.storage.retention.drop_finished_tensors()
        self.worker.start()

    def close(self) -> None:
        self.worker.stop()
        self.storage.close()


@contextlib.contextmanager
def with_data_dir(config: EmulatorConfig) -> Iterator[EmulatorConfig]:
    """``config`` for the block, with a temporary data directory (removed after) if it has none."""
    if config.data_dir is not None:
        yield config
        return
    with tempfile.TemporaryDirectory(prefix="seeknetic-emulator-") as tmp:
        yield dataclasses.replace(config, data_dir=Path(tmp))


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, with TCP_NODELAY for every connection it accepts.

    Without it, an answer written in two pieces (h11 sends the headers, then the body) waits
    for the client's delayed ACK of the first: ~44 ms a request instead of ~1.5 ms. Linux
    copies the option from the listener to each accepted socket; and asyncio sets it on each
    accepted socket of a listener whose protocol is TCP, so the protocol is named, not left 0.

    Raises:
        InvalidArgumentError: the address cannot be bound (in use, not this machine's).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InvalidArgumentError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(
    app: Any, *, access_log: bool, log_level: str, own_logging: bool, read_timeout_s: float
) -> Any:
    """uvicorn's settings; its h11 protocol with a deadline for each request head
    (:mod:`.connections`; the Guard keeps the body's)."""
    # uvicorn: only when a server is started
    import uvicorn

    from seeknetic_prep.emulator.connections import timed_protocol

    return uvicorn.Config(
        app,
        http=timed_protocol(read_timeout_s),
        # In-process, leave the host program's logging configuration alone.
        log_config=uvicorn.config.LOGGING_CONFIG if own_logging else None,
        lifespan="off",
        access_log=access_log,  # uvicorn logs client, method, path and status: never headers
        log_level=log_level,
        timeout_graceful_shutdown=3,
        server_header=False,
    )


def url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    config: EmulatorConfig,
    *,
    on_ready: Callable[[str], None] | None = None,
    access_log: bool = True,
) -> None:
    """Serve on ``config.host``/``config.port`` in the foreground until interrupted
    (SIGINT/SIGTERM): the CLI's entry point.

    ``on_ready`` gets the base URL once the socket is bound (so port 0 can be reported).

    Raises:
        InvalidArgumentError: the port cannot be bound.
    """
    # uvicorn: only when a server is started
    import uvicorn

    with with_data_dir(config) as config:
        emulator = Emulator(config)
        sock = bind(config.host, config.port)
        try:
            emulator.start()
            if on_ready is not None:
                on_ready(url(config.host, sock.getsockname()[1]))
            server = uvicorn.Server(
                uvicorn_config(emulator.app, access_log=access_log, log_level="info", own_logging=True,
                               read_timeout_s=config.read_timeout_s)
            )
            server.run(sockets=[sock])
        finally:
            sock.close()
            emulator.close()


def _child() -> None:
    """The child of :class:`~seeknetic_prep.emulator.child_process.EmulatorProcess`: its
    config and socket on stdin's first line, then serve on that socket until stdin ends."""
    # the child's own start: only what serving needs
    import json
    import sys

    import uvicorn

    from seeknetic_prep.util.malloc import keep_freed_buffers

    keep_freed_buffers()  # every upload parses megabytes of JSON and base64, freed at once
    spec = json.loads(sys.stdin.buffer.readline())
    sock = socket.socket(fileno=int(spec["fd"]))
    config = EmulatorConfig.from_json(spec["config"])
    try:
        emulator = Emulator(config)
    except (OSError, sqlite3.Error) as exc:  # a full disk, a folder we cannot write: one line, no traceback
        hint = " (is the disk full?)" if is_full(exc) or "disk I/O error" in str(exc) else ""
        sys.stderr.write(f"seeknetic-prep: the local emulator cannot start: its state in "
                         f"{config.data_dir}: {exc}{hint}\n")
        sys.stderr.flush()
        os._exit(2)
    server = uvicorn.Server(uvicorn_config(emulator.app, access_log=False, log_level="warning",
                                           own_logging=False, read_timeout_s=emulator.config.read_timeout_s))

    def watch_parent() -> None:
        sys.stdin.buffer.read()  # returns at end of file: the parent closed it, or died
        # Nobody is left to answer, and every answer given was committed before it was sent
        # (the emulator is built to survive a kill -9 at any point), so end now instead of
        # through uvicorn's graceful shutdown, which sleeps 0.2 s that the parent waits out
        # at the end of every `run --local`. The job being scored is finished first.
        emulator.close()
        sys.stderr.flush()
        os._exit(0)

    threading.Thread(target=watch_parent, name="seeknetic-emulator-parent", daemon=True).start()
    emulator.start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        emulator.close()
