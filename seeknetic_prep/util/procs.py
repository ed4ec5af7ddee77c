"""Where worker processes come from, and why they never run the caller's script again.

A process started by ``forkserver`` or ``spawn`` first imports the parent's ``__main__`` (as
``__mp_main__``), so that functions pickled from it can be found. For a script without an
``if __name__ == "__main__":`` guard that means the whole script runs again in every worker: the
job starts again inside each worker, multiprocessing refuses it ("An attempt has been made to
start a new process before the current process has finished its bootstrapping phase"), and every
file of the real run fails with ~60 lines of tracebacks. Our workers need nothing from
``__main__`` (their tasks live in this package), so the processes of :func:`worker_context` are
started with the main module hidden: a script, ``python -c`` and a Jupyter kernel all work, with
or without the guard. This is what the official guidance asks of the *user*; a library that
starts processes can do it for them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.context as mpctx
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["worker_context"]

_hiding = threading.Lock()  # two threads starting workers must not restore each other's view


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """While a worker's start-up data is gathered, ``__main__`` names no file and no module:
    the worker then leaves its own ``__main__`` alone."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    with _hiding:
        saved: dict[str, Any] = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
        main.__dict__.pop("__file__", None)
        main.__dict__["__spec__"] = None
        try:
            yield
        finally:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


class _ForkServerProcess(mpctx.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        with _main_hidden():
            return mpctx.ForkServerProcess._Popen(process_obj)


class _SpawnProcess(mpctx.SpawnProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        with _main_hidden():
            return mpctx.SpawnProcess._Popen(process_obj)


class _ForkServerContext(mpctx.ForkServerContext):
    Process = _ForkServerProcess


class _SpawnContext(mpctx.SpawnContext):
    Process = _SpawnProcess


_ALSO_PRELOAD: list[str] = []


def preload_also(modules: Sequence[str]) -> None:
    """Have the fork server import ``modules`` too, when it starts (once per process: a server
    already running keeps what it has, and its workers import the rest themselves). A run over
    ``s3://`` objects asks for ``s3fs``, whose ~0.6 s import every worker would pay otherwise."""
    _ALSO_PRELOAD.extend(m for m in modules if m not in _ALSO_PRELOAD)


def worker_context(preload: Sequence[str], *, gpu: bool = False) -> Any:
    """A multiprocessing context for decode workers: ``spawn`` for a CUDA worker (CUDA does not
    survive a fork) or where there is no fork server, else the fork server with ``preload``
    (and :func:`preload_also`'s modules) imported once and shared by every worker; a module
    that cannot be imported is skipped by the server. Its processes never import ``__main__``."""
    if gpu or "forkserver" not in multiprocessing.get_all_start_methods():
        return _SpawnContext()
    ctx = _ForkServerContext()
    # read when the server starts: once per process
    ctx.set_forkserver_preload([*preload, *(m for m in _ALSO_PRELOAD if m not in preload)])
    return ctx
