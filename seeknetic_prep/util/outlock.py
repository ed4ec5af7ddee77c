"""One run per ``--out`` folder: an exclusive lock that the operating system releases for us.

Two runs on the same state would both plan, upload and submit every unit (only the server's
idempotency kept the jobs single), so ``run`` holds an exclusive lock on ``<out>/.lock`` for its
whole life. The lock is an ``flock`` (POSIX) or a ``msvcrt`` byte-range lock (Windows) on an open
file (:mod:`seeknetic_prep.util.fsio`), not the file's existence, so it vanishes with the
process, however that process ends (``kill -9`` included): there is never a stale lock to
delete by hand. The file itself is never
removed (deleting a lock file lets two processes lock two different files); it holds the
holder's pid only so the second run can say who is in the way.

Readers (``status``) never take the lock: SQLite already lets them read while a run writes.

>>> with OutLock(Path("seeknetic-out")):  # doctest: +SKIP
...     ...  # the only run on seeknetic-out
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from seeknetic_prep.errors import InvalidArgumentError, OutputInUseError
from seeknetic_prep.util.fsio import lock, try_lock, unlock

__all__ = ["LOCK_NAME", "OutLock"]

LOCK_NAME = ".lock"
# The pid is written padded to this width, so it is replaced without truncating; it stays below
# fsio.LOCK_OFFSET, the byte Windows locks (mandatorily), so it can be read while locked.
_PID_WIDTH = 32


class OutLock:
    """An exclusive lock on an output folder, held from :meth:`acquire` to :meth:`release`.

    Args:
        out: the output folder (created if missing).
        wait: when another process holds the lock, wait for it instead of failing.
        on_wait: called once with the holder's pid (None when unreadable) before waiting.

    Raises (from :meth:`acquire` / ``with``):
        OutputInUseError: another process holds the lock and ``wait`` is False; the message is
            ``another run (pid N) is using OUT`` and a hint.
        InvalidArgumentError: ``out`` is not a folder that can be created or written.
    """

    def __init__(
        self, out: Path, *, wait: bool = False, on_wait: Callable[[int | None], None] | None = None
    ) -> None:
        self.out = Path(out)
        self.path = self.out / LOCK_NAME
        self.wait = wait
        self.on_wait = on_wait
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (waiting if asked); see the class for what is raised."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            # Not inheritable (PEP 446): a child started with exec does not keep the lock alive.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InvalidArgumentError(
                f"Invalid --out {str(self.out)!r}: cannot use it as the output folder "
                f"({exc.strerror or type(exc).__name__}); give a folder you can write to."
            ) from None
        try:
            if not try_lock(fd):
                holder = holder_pid(self.out)
                if not self.wait:
                    who = f"another run (pid {holder})" if holder is not None else "another run"
                    raise OutputInUseError(
                        f"{who} is using {self.out}; wait for it to end, or add --wait to start "
                        "when it does."
                    )
                if self.on_wait is not None:
                    self.on_wait(holder)
                lock(fd)
            os.lseek(fd, 0, os.SEEK_SET)
            try:
                os.write(fd, f"{os.getpid()}\n".ljust(_PID_WIDTH).encode("ascii"))
            except OSError as exc:  # a full disk: say where
                raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
        except BaseException:
            os.close(fd)  # closing also releases a lock taken just before the failure
            raise
        self._fd = fd

    def release(self) -> None:
        """Release the lock (the pid is left in the file: it is only read while the lock is held)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                unlock(fd)
            finally:
                os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> OutLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def holder_pid(out: Path) -> int | None:
    """The pid last written to ``out``'s lock file (the holder's, while the lock is held)."""
    try:
        text = (Path(out) / LOCK_NAME).read_bytes()[:_PID_WIDTH].decode("ascii").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
