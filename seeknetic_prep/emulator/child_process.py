"""An emulator serving from a child process (:func:`spawned`), as ``run --local`` uses it.

The parent binds the socket and hands it down, then writes the config on the child's stdin
(never its command line: keys must not show in a process list). The child
(:func:`seeknetic_prep.emulator.server._child`) serves until that stdin ends: when the block
ends, or when the parent dies, so a kill -9 of the parent leaves no server behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator

from seeknetic_prep.emulator.config import EmulatorConfig
from seeknetic_prep.emulator.server import bind, url, with_data_dir

__all__ = ["EmulatorProcess", "spawned"]


class EmulatorProcess:
    """An emulator serving from a child process (see :func:`spawned`).

    Attributes:
        config: what it was started with.
        base_url: ``http://127.0.0.1:<port>``, valid at once: the socket is bound before the child starts.
        api_key: the first configured key.
        job_seconds: how long after its submission a job completes.
        pid: the child's process id.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.api_key = config.api_keys[0]
        self.job_seconds = config.job_seconds
        sock = bind(config.host, config.port)
        self.base_url = url(config.host, sock.getsockname()[1])
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
        self._proc.stdin.write(json.dumps({"config": config.to_json(), "fd": fd}).encode() + b"\n")
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
        assert self._proc.stdin is not None
        with contextlib.suppress(OSError):  # it is gone already
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


@contextlib.contextmanager
def spawned(config: EmulatorConfig | None = None) -> Iterator[EmulatorProcess]:
    """Run an emulator in a child process for the ``with`` block (what ``run --local`` uses).

    Unlike :func:`~seeknetic_prep.emulator.running`, the server's work (parsing multi-MB bodies,
    scoring jobs) does not share the caller's interpreter lock, and its start-up (importing
    FastAPI) overlaps the caller's instead of preceding it: the URL is known at once and the
    first request simply waits in the socket's backlog until the child serves. The child stops
    when the block ends or when the parent dies (its stdin reaches end of file), so a kill -9
    leaves no server behind. Uploaded tensors are deleted once their jobs finish unless
    ``config.keep_tensors``; without ``config.data_dir``, a temporary one is removed afterwards.

    Raises:
        InvalidArgumentError: the port cannot be bound.
    """
    with (
        with_data_dir(config or EmulatorConfig()) as ready,
        contextlib.closing(EmulatorProcess(ready)) as proc,
    ):
        yield proc
