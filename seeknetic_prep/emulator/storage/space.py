"""A full disk, told apart from every other write error, in one place.

A write that fails because the data directory's filesystem is out of space (``ENOSPC``, or
``EDQUOT`` for a quota; SQLite's ``SQLITE_FULL``) is not a bug of the request: it is answered
503 with ``Retry-After`` (:class:`StorageFull`, a :class:`~seeknetic_prep.emulator.problems.Problem`),
so a client retries it once space returns, and it is logged as one line, at most once every
:data:`LOG_EVERY_S` seconds however many requests hit it (a traceback per request buried the
terminal). Nothing that failed to be written is left behind: a torn temporary file is removed by
the writer (:func:`~.files.atomic_write`), a transaction is rolled back.

:class:`Space` is the one object the writers share: it maps the error (:meth:`Space.full`),
refuses new uploads while the filesystem is nearly full (:meth:`Space.reserve`, so SQLite keeps
room to finish the jobs already accepted, whose deletion of tensors is what frees space), and
holds the fault knob that makes every write fail as a full disk does (:attr:`Space.inject`).
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from seeknetic_prep.emulator.problems import Problem

__all__ = [
    "FULL_ERRNOS", "LOG_EVERY_S", "RESERVE_BYTES", "RETRY_AFTER_S", "SQLITE_FULL", "Space", "StorageFull",
    "is_full",
]

log = logging.getLogger("seeknetic_prep.emulator")

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
SQLITE_FULL = 13  # sqlite3.SQLITE_FULL, named by the module only from Python 3.11
RETRY_AFTER_S = 5
"""What a 503 for a full disk asks the client to wait: long enough for a job to finish and free
its tensors, short enough that a run resumes soon after space returns."""
LOG_EVERY_S = 30.0
RESERVE_BYTES = 8 * 2**20
"""Free space an upload must leave: room for SQLite to record the results of the jobs already
accepted (about 20 KB each), whose finishing deletes their tensors and frees space again."""


class StorageFull(Problem):
    """503: the data directory's filesystem has no room for this write."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(
            503,
            f"The emulator's storage is full: cannot write {what} ({why}). Nothing of this request "
            f"was kept; retry after {RETRY_AFTER_S} s, once space is freed.",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
        self.what = what
        self.why = why


def is_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the filesystem (or a quota) is out of space."""
    if isinstance(exc, OSError):
        return exc.errno in FULL_ERRNOS
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
        if code is not None:
            return bool(code & 0xFF == SQLITE_FULL)
        return "database or disk is full" in str(exc)
    return False


class Space:
    """The data directory's free space, as the writers meet it; safe to share between threads.

    The log says when writes start failing (then at most once every :data:`LOG_EVERY_S` s, with
    a count of the refusals in between) and, for an episode it told of, when that kind of write
    (``"files"`` or ``"database"``) succeeds again.

    Attributes:
        inject: the fault knob: while it returns True, every file write raises ``ENOSPC`` after
            its first bytes and every SQLite write ``SQLITE_FULL``, as on a full disk.
        refused: how many writes were refused for lack of space since the start (for tests).
    """

    def __init__(self, data_dir: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.data_dir = data_dir
        self.inject: Callable[[], bool] = lambda: False
        self._clock = clock
        self._lock = threading.Lock()
        self._full_since: dict[str, float] = {}  # by kind of write, while it fails
        self._told: set[str] = set()  # kinds whose current episode was logged
        self._last_log = -float("inf")
        self._unlogged = 0  # refusals since the last line
        self._refused: dict[str, int] = {}
        self.refused = 0

    def full(self, kind: str, what: str, exc: BaseException) -> StorageFull:
        """The 503 to raise for ``exc`` (which :func:`is_full` accepted); logs it, rate-limited."""
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        self._note(kind, what, why)
        return StorageFull(what, why)

    def reserve(self, what: str, nbytes: int) -> None:
        """Refuse (503) a file write of ``nbytes`` new bytes that would leave less than
        :data:`RESERVE_BYTES` free; a filesystem that cannot tell is let through."""
        try:
            stats = os.statvfs(self.data_dir)
        except (OSError, AttributeError):  # AttributeError: no statvfs on Windows
            return
        free = stats.f_bavail * stats.f_frsize
        if free - nbytes < RESERVE_BYTES:
            why = (f"{free / 2**20:.1f} MB free, {nbytes / 2**20:.1f} MB needed and "
                   f"{RESERVE_BYTES / 2**20:.0f} MB kept for jobs in progress")
            self._note("files", what, why)
            raise StorageFull(what, why)

    def ok(self, kind: str) -> None:
        """A write of ``kind`` succeeded: it is no longer failing."""
        if kind not in self._full_since:  # unlocked fast path: the usual case
            return
        with self._lock:
            since = self._full_since.pop(kind, None)
            refused = self._refused.pop(kind, 0)
            if since is None or kind not in self._told:
                return
            self._told.discard(kind)
            seconds = self._clock() - since
        log.warning("storage: %s writes succeed again in %s after %.0f s (%d refused meanwhile)",
                    kind, self.data_dir, seconds, refused)

    def _note(self, kind: str, what: str, why: str) -> None:
        with self._lock:
            now = self._clock()
            self._full_since.setdefault(kind, now)
            self._refused[kind] = self._refused.get(kind, 0) + 1
            self.refused += 1
            if now - self._last_log < LOG_EVERY_S:
                self._unlogged += 1
                return
            repeats, self._unlogged = self._unlogged, 0
            self._last_log = now
            self._told.add(kind)
        more = f"; {repeats} more refused since the last such line" if repeats else ""
        log.warning("storage full: cannot write %s in %s (%s): answering 503 with Retry-After: %d "
                    "until space returns%s", what, self.data_dir, why, RETRY_AFTER_S, more)
