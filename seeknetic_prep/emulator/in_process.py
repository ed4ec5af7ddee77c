"""An emulator serving from a thread of this process, for tests (:func:`running`).

In-process, a test can turn the fault knobs, change limits and read the storage directly while
the server runs, and :meth:`EmulatorHandle.restart` can stop and start it on the same port.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seeknetic_prep.emulator.config import EmulatorConfig, owner_id
from seeknetic_prep.emulator.server import Emulator, bind, url, uvicorn_config, with_data_dir
from seeknetic_prep.emulator.storage import Storage
from seeknetic_prep.errors import InvalidArgumentError

__all__ = ["EmulatorHandle", "running"]


class _ServerThread:
    """uvicorn serving one pre-bound socket from a background thread."""

    def __init__(self, app: Any, sock: socket.socket, *, read_timeout_s: float) -> None:
        # uvicorn: only when a server is started, not for the config types
        import uvicorn

        self.server = uvicorn.Server(uvicorn_config(
            app, access_log=False, log_level="warning", own_logging=False, read_timeout_s=read_timeout_s
        ))
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
        config: what it was started with (``data_dir`` and ``api_keys`` filled in).
        base_url: ``http://127.0.0.1:<port>``.
        api_key: the first configured key (generated when none was given).
        api_keys: every configured key.
        data_dir: where uploads, jobs and stats live.
        faults: the runtime :class:`~seeknetic_prep.emulator.policies.Faults` knobs
            (``fail_next(n, status)``, ``drop_next(n)``, ``latency``, ``fail_rate``, ``reset()``).
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.host = config.host
        self.port = config.port
        self._start()

    def _start(self) -> None:
        """Open the parts, then serve on ``host:port`` (the port found, once 0 was asked for)."""
        self._emulator = Emulator(self.config)
        self._emulator.start()
        try:
            sock = bind(self.host, self.port)
            self.port = sock.getsockname()[1]
            self._server = _ServerThread(self._emulator.app, sock, read_timeout_s=self.config.read_timeout_s)
            self._server.start()
        except BaseException:
            self._emulator.close()
            raise
        self.faults = self._emulator.faults

    @property
    def base_url(self) -> str:
        return url(self.host, self.port)

    @property
    def api_key(self) -> str:
        return self.config.api_keys[0]

    @property
    def api_keys(self) -> tuple[str, ...]:
        return self.config.api_keys

    @property
    def data_dir(self) -> Path:
        assert self.config.data_dir is not None
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

    @property
    def job_seconds(self) -> float:
        return self._emulator.worker.job_seconds

    @job_seconds.setter
    def job_seconds(self, value: float) -> None:
        """Change how long jobs take at runtime (jobs already submitted included: a job is due
        ``value`` seconds after its submission)."""
        if not value >= 0:
            raise InvalidArgumentError(f"Invalid job_seconds {value}: must be >= 0.")
        self._emulator.worker.job_seconds = value
        self._emulator.worker.notify()

    @property
    def body_memory_in_use(self) -> int:
        """Bytes the request bodies in flight hold of ``upload_memory_mb`` (about 3x their size)."""
        return self._emulator.app.budget.used

    def stats(self) -> dict[str, dict[str, int]]:
        """What ``GET /_emulator/stats`` returns for :attr:`api_key`."""
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
        self._start()

    def close(self) -> None:
        self._server.stop()
        self._emulator.close()


@contextlib.contextmanager
def running(config: EmulatorConfig | None = None) -> Iterator[EmulatorHandle]:
    """Run an emulator in this process for the ``with`` block.

    Args:
        config: its settings (:class:`~seeknetic_prep.emulator.EmulatorConfig`); the default
            listens on a free loopback port, with a generated key, no limits, no faults and a
            temporary data directory removed afterwards.

    Yields:
        An :class:`EmulatorHandle`: ``base_url``, ``api_key``, ``data_dir``, ``faults``,
        ``qps``/``quota``/``job_seconds`` setters, ``stats()``, ``restart()``.

    Raises:
        InvalidArgumentError: the port cannot be bound (a setting that breaks its rule is
            refused when the config is made).

    >>> import requests
    >>> with running(EmulatorConfig(job_seconds=0.2)) as server:
    ...     r = requests.post(f"{server.base_url}/video_embedding/encode_text",
    ...                       json={"text": "a cat"}, headers={"X-API-Key": server.api_key}, timeout=10)
    ...     len(r.json()["embedding"])
    1024
    """
    with (
        with_data_dir(config or EmulatorConfig()) as ready,
        contextlib.closing(EmulatorHandle(ready)) as handle,
    ):
        yield handle
