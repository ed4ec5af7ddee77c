"""Starting and stopping the emulator: in-process for tests (:func:`running`), in a child
process for ``run --local`` (:func:`spawned`), or as a CLI server.

Both bind the listening socket themselves, so port 0 gives a free port whose number is known
before the first request, and both run the same :class:`Emulator` (storage, job worker, guard).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from seeknetic_prep.emulator.config import DEFAULT_JOB_SECONDS, EmulatorConfig
from seeknetic_prep.emulator.guard import Faults, Guard, Keyring, RateLimiter
from seeknetic_prep.emulator.jobs import JobWorker
from seeknetic_prep.emulator.storage import Storage
from seeknetic_prep.errors import InvalidArgumentError

__all__ = ["Emulator", "EmulatorHandle", "EmulatorProcess", "running", "serve", "spawned"]

log = logging.getLogger("seeknetic_prep.emulator")


class _Quota:
    def __init__(self, quota: int | None) -> None:
        self.quota = quota


class Emulator:
    """One emulator's parts: storage, worker, guard and app, opened together and closed together."""

    def __init__(self, config: EmulatorConfig) -> None:
        from seeknetic_prep.emulator.app import create_app

        self.config = config
        self.storage = Storage(config.data_dir)
        self.worker = JobWorker(
            self.storage, job_seconds=config.job_seconds, keep_tensors=config.keep_tensors
        )
        self.faults = Faults(fail_rate=config.fail_rate, seed=config.seed)
        self.limiter = RateLimiter(config.qps)
        self.quota = _Quota(config.quota)
        app = create_app(self.storage, quota=self.quota, notify=self.worker.notify)
        self.app = Guard(
            app,
            keyring=Keyring(config.api_keys),
            limiter=self.limiter,
            faults=self.faults,
            max_body_bytes=config.max_body_bytes,
        )
        self.fastapi = app

    def start(self) -> None:
        if not self.config.keep_tensors:  # before the first request: finish a drop cut short
            self.storage.retention.drop_finished_tensors()
        self.worker.start()

    def close(self) -> None:
        self.worker.stop()
        self.storage.close()


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, with TCP_NODELAY for every connection it accepts.

    Without it, an answer written in two pieces (h11 sends the headers, then the body) waits
    for the client's delayed ACK of the first: ~44 ms a request instead of ~1.5 ms. Linux
    copies the option from the listener to each accepted socket; and asyncio sets it on each
    accepted socket of a listener whose protocol is TCP, so the protocol is named, not left 0.
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


def _uvicorn_config(app: Any, *, access_log: bool, log_level: str, own_logging: bool) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        # In-process, leave the host program's logging configuration alone.
        log_config=uvicorn.config.LOGGING_CONFIG if own_logging else None,
        lifespan="off",
        access_log=access_log,  # uvicorn logs client, method, path and status: never headers
        log_level=log_level,
        timeout_graceful_shutdown=3,
        server_header=False,
    )


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _ServerThread:
    """uvicorn serving one pre-bound socket from a background thread."""

    def __init__(self, app: Any, sock: socket.socket) -> None:
        import uvicorn

        self.server = uvicorn.Server(
            _uvicorn_config(app, access_log=False, log_level="warning", own_logging=False)
        )
        self.sock = sock
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, name="seeknetic-emulator-http", daemon=True
        )

    def start(self, timeout: float = 30.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("The emulator's HTTP server stopped during start-up.")
            if time.monotonic() > deadline:
                raise RuntimeError(f"The emulator's HTTP server did not start within {timeout} s.")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


class EmulatorHandle:
    """A running in-process emulator (see :func:`running`).

    Attributes:
        base_url: ``http://127.0.0.1:<port>``.
        api_key: the first configured key (generated when none was given).
        api_keys: every configured key.
        data_dir: where uploads, jobs and stats live.
        faults: the runtime :class:`~seeknetic_prep.emulator.guard.Faults` knobs
            (``fail_next(n, status)``, ``drop_next(n)``, ``latency``, ``fail_rate``, ``reset()``).
    """

    def __init__(self, config: EmulatorConfig, host: str, port: int) -> None:
        self.config = config
        self.host = host
        self._emulator = Emulator(config)
        self._emulator.start()
        try:
            sock = _bind(host, port)
            self.port = sock.getsockname()[1]
            self._server = _ServerThread(self._emulator.app, sock)
            self._server.start()
        except BaseException:
            self._emulator.close()
            raise
        self.faults = self._emulator.faults

    @property
    def base_url(self) -> str:
        return _url(self.host, self.port)

    @property
    def api_key(self) -> str:
        return self.config.api_keys[0]

    @property
    def api_keys(self) -> tuple[str, ...]:
        return self.config.api_keys

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    @property
    def storage(self) -> Storage:
        """Direct read access to the emulator's state, for assertions."""
        return self._emulator.storage

    @property
    def qps(self) -> float | None:
        return self._emulator.limiter.qps

    @qps.setter
    def qps(self, value: float | None) -> None:
        """Change the per-key rate limit at runtime (None: no limit); buckets start full."""
        self._emulator.limiter.qps = value

    @property
    def quota(self) -> int | None:
        return self._emulator.quota.quota

    @quota.setter
    def quota(self, value: int | None) -> None:
        """Change how many async jobs each key may submit in total (None: no limit)."""
        if value is not None and value < 0:
            raise InvalidArgumentError(f"Invalid quota {value}: must be >= 0 or None.")
        self._emulator.quota.quota = value

    def stats(self) -> dict[str, dict[str, int]]:
        """What ``GET /_emulator/stats`` returns for :attr:`api_key`."""
        from seeknetic_prep.emulator.config import owner_id

        return self._emulator.storage.stats.of(owner_id(self.api_key))

    def restart(self, *, down_seconds: float = 0.0) -> None:
        """Stop everything and start again on the same port and data directory.

        Like a crash-free redeploy: in-flight connections are closed, jobs resume from SQLite,
        fault knobs and rate-limit buckets start fresh. Between stop and start (``down_seconds``)
        connections are refused.
        """
        self.close()
        if down_seconds > 0:
            time.sleep(down_seconds)
        self._emulator = Emulator(self.config)
        self._emulator.start()
        self._server = _ServerThread(self._emulator.app, _bind(self.host, self.port))
        self._server.start()
        self.faults = self._emulator.faults

    def close(self) -> None:
        self._server.stop()
        self._emulator.close()


@contextlib.contextmanager
def running(
    *,
    api_keys: Sequence[str] | None = None,
    qps: float | None = None,
    quota: int | None = None,
    max_body_mb: float = 64,
    data_dir: Path | None = None,
    job_seconds: float = DEFAULT_JOB_SECONDS,
    fail_rate: float = 0.0,
    seed: int | None = None,
    keep_tensors: bool = False,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Iterator[EmulatorHandle]:
    """Run an emulator in this process on a free loopback port for the ``with`` block.

    Args:
        api_keys: accepted keys; None generates one (``handle.api_key``).
        qps: per-key requests per second (token bucket); None: unlimited.
        quota: async jobs each key may submit; None: unlimited.
        max_body_mb: request bodies above this are answered 413.
        data_dir: where SQLite and tensors live; None: a temporary directory removed afterwards.
        job_seconds: how long a job stays pending/processing before it completes.
        fail_rate: share of requests answered with an injected 500/502/504 (``seed`` replays).
        keep_tensors: keep uploaded tensors after their jobs finish (default: delete them).
        host, port: where to listen (port 0: any free port).

    Yields:
        An :class:`EmulatorHandle`: ``base_url``, ``api_key``, ``data_dir``, ``faults``,
        ``qps``/``quota`` setters, ``stats()``, ``restart()``.

    Raises:
        InvalidArgumentError: a setting breaks its rule, or the port cannot be bound.

    >>> import requests
    >>> with running() as server:
    ...     r = requests.post(f"{server.base_url}/video_embedding/encode_text",
    ...                       json={"text": "a cat"}, headers={"X-API-Key": server.api_key}, timeout=10)
    ...     len(r.json()["embedding"])
    1024
    """
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="seeknetic-emulator-")))
        config = EmulatorConfig.build(
            data_dir=Path(data_dir),
            api_keys=api_keys,
            qps=qps,
            quota=quota,
            max_body_mb=max_body_mb,
            job_seconds=job_seconds,
            fail_rate=fail_rate,
            seed=seed,
            keep_tensors=keep_tensors,
        )
        handle = EmulatorHandle(config, host, port)
        try:
            yield handle
        finally:
            handle.close()


def serve(
    config: EmulatorConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    on_ready: Callable[[str], None] | None = None,
    access_log: bool = True,
) -> None:
    """Serve in the foreground until interrupted (SIGINT/SIGTERM): the CLI's entry point.

    ``on_ready`` gets the base URL once the socket is bound (so ``--port 0`` can be reported).
    """
    import uvicorn

    emulator = Emulator(config)
    sock = _bind(host, port)
    try:
        emulator.start()
        if on_ready is not None:
            on_ready(_url(host, sock.getsockname()[1]))
        server = uvicorn.Server(
            _uvicorn_config(emulator.app, access_log=access_log, log_level="info", own_logging=True)
        )
        server.run(sockets=[sock])
    finally:
        sock.close()
        emulator.close()


class EmulatorProcess:
    """An emulator serving from a child process (see :func:`spawned`).

    Attributes:
        base_url: ``http://127.0.0.1:<port>``, valid at once: the socket is bound before the child starts.
        api_key: the first configured key.
        job_seconds: how long after its submission a job completes.
        pid: the child's process id.
    """

    def __init__(self, config: EmulatorConfig, host: str, port: int) -> None:
        import json
        import subprocess
        import sys

        self.api_key = config.api_keys[0]
        self.job_seconds = config.job_seconds
        sock = _bind(host, port)
        self.base_url = _url(host, sock.getsockname()[1])
        fd = sock.fileno()
        try:
            # One BLAS thread: scoring multiplies small matrices, and OpenBLAS's spinning
            # threads cost 20x the work itself on a machine whose cores decode video.
            blas = {k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
            self._proc = subprocess.Popen(
                [sys.executable, "-c", "from seeknetic_prep.emulator.server import _child; _child()"],
                stdin=subprocess.PIPE, pass_fds=(fd,), env={**blas, **os.environ},
                start_new_session=True,  # Ctrl-C is the parent's to handle; it stops the child
            )
        finally:
            sock.close()  # the child holds it now; connections wait in its backlog meanwhile
        assert self._proc.stdin is not None
        # Every config field, so one added later reaches the child too; on stdin, not argv,
        # because keys must not show in a process list.
        spec = {**dataclasses.asdict(config), "fd": fd, "data_dir": str(config.data_dir)}
        self._proc.stdin.write(json.dumps(spec).encode() + b"\n")
        self._proc.stdin.flush()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """None while the child runs."""
        return self._proc.poll()

    def close(self, timeout: float = 30.0) -> None:
        """Ask the child to stop (end of its stdin) and wait for it; kill it if it hangs."""
        import subprocess

        assert self._proc.stdin is not None
        with contextlib.suppress(OSError):  # it is gone already
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


@contextlib.contextmanager
def spawned(
    *,
    api_keys: Sequence[str] | None = None,
    data_dir: Path,
    job_seconds: float = DEFAULT_JOB_SECONDS,
    keep_tensors: bool = False,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Iterator[EmulatorProcess]:
    """Run an emulator in a child process for the ``with`` block (what ``run --local`` uses).

    Unlike :func:`running`, the server's work (parsing multi-MB bodies, scoring jobs) does not
    share the caller's interpreter lock, and its start-up (importing FastAPI) overlaps the
    caller's instead of preceding it: the URL is known at once and the first request simply
    waits in the socket's backlog until the child serves. The child stops when the block ends
    or when the parent dies (its stdin reaches end of file), so a kill -9 leaves no server behind.
    Uploaded tensors are deleted once their jobs finish unless ``keep_tensors``.

    Raises:
        InvalidArgumentError: a setting breaks its rule, or the port cannot be bound.
    """
    config = EmulatorConfig.build(
        data_dir=Path(data_dir), api_keys=api_keys, job_seconds=job_seconds, keep_tensors=keep_tensors
    )
    proc = EmulatorProcess(config, host, port)
    try:
        yield proc
    finally:
        proc.close()


def _child() -> None:
    """The child of :class:`EmulatorProcess`: settings on stdin's first line, then serve on the
    inherited socket until stdin ends."""
    import json
    import sys

    import uvicorn

    from seeknetic_prep.util.malloc import keep_freed_buffers

    keep_freed_buffers()  # every upload parses megabytes of JSON and base64, freed at once
    spec = json.loads(sys.stdin.buffer.readline())
    sock = socket.socket(fileno=int(spec.pop("fd")))
    config = EmulatorConfig.build(data_dir=Path(spec.pop("data_dir")), **spec)
    emulator = Emulator(config)
    server = uvicorn.Server(_uvicorn_config(emulator.app, access_log=False, log_level="warning",
                                            own_logging=False))

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
