"""Files written whole or not at all, and an exclusive lock that works on every platform.

Why one module: results parts, exports, the search index, the report and ``prep``'s bodies each
wrote "to ``x.tmp``, then ``os.replace``" by hand, and the copies differed in what matters: a
failed write left its temporary file behind, two writers of one file (two searches caching the
same table) shared one temporary name, some fsynced and some did not. And the search index
locked with ``fcntl``, so importing it (and so the run's driver) failed where there is none.

* :func:`atomic_path` / :func:`atomic_write`: the data goes to a temporary file in the target's
  own folder (a rename never crosses file systems), named ``.<name>.<pid>.<thread>.tmp`` so two
  writers never share one (the emulator's storage uses the same pattern and sweeps the ones a
  ``kill -9`` leaves), is fsynced, then renamed over the target with ``os.replace`` and the
  folder fsynced. A reader sees the old file or the new one, never half of one; on any failure
  the temporary file is removed and the target is untouched.
* :func:`locked`, :func:`try_lock`, :func:`lock`, :func:`unlock`: an exclusive advisory lock on
  an open file, which the OS drops with the process however it ends. ``flock`` where there is
  ``fcntl`` (POSIX), a ``msvcrt`` byte-range lock on Windows (mandatory there, so it locks a
  byte past what a lock file holds, see :data:`LOCK_OFFSET`), and nothing where neither exists
  (WASI, Emscripten: one process, so there is no one to exclude; :data:`LOCKING` says which).

>>> atomic_write(Path("out/index.json"), b"{}")  # doctest: +SKIP
>>> with locked(Path("out/search/lock")):  # doctest: +SKIP
...     ...  # no other process holds it here
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

__all__ = ["LOCKING", "LOCK_OFFSET", "atomic_path", "atomic_write", "lock", "locked", "try_lock",
           "unlock"]

LOCK_OFFSET = 64
"""Windows locks are mandatory: the byte locked lies past what a lock file holds (a pid), so the
file stays readable while it is locked."""
_WIN_POLL_S = 0.2

LOCKING: Literal["flock", "msvcrt", "none"]

if sys.platform == "win32":
    import msvcrt

    LOCKING = "msvcrt"

    def try_lock(fd: int) -> bool:
        """Take the exclusive lock of the open file ``fd`` if it is free; whether it was."""
        os.lseek(fd, LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def lock(fd: int) -> None:
        """Take the lock, waiting as long as another process holds it (Ctrl-C ends the wait)."""
        while not try_lock(fd):  # LK_LOCK gives up after 10 s: poll instead
            time.sleep(_WIN_POLL_S)

    def unlock(fd: int) -> None:
        os.lseek(fd, LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    try:
        import fcntl as _fcntl
    except ImportError:  # WASI, Emscripten: no fcntl, and no second process to exclude
        _fcntl = None  # type: ignore[assignment]

    LOCKING = "flock" if _fcntl is not None else "none"

    def try_lock(fd: int) -> bool:
        """Take the exclusive lock of the open file ``fd`` if it is free; whether it was."""
        if _fcntl is None:
            return True
        try:
            _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def lock(fd: int) -> None:
        """Take the lock, waiting as long as another process holds it (Ctrl-C ends the wait)."""
        if _fcntl is not None:
            _fcntl.flock(fd, _fcntl.LOCK_EX)

    def unlock(fd: int) -> None:
        if _fcntl is not None:
            _fcntl.flock(fd, _fcntl.LOCK_UN)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of the file ``path`` (created if missing, never deleted) for the
    block, waiting while another process holds it. The file is not inheritable (PEP 446), so a
    child started with exec does not keep the lock alive."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        lock(fd)
        try:
            yield
        finally:
            unlock(fd)
    finally:
        os.close(fd)


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


@contextlib.contextmanager
def atomic_path(path: Path, *, fsync: bool = True) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; when the block ends normally it replaces
    ``path`` in one rename, and when the block raises it is removed (``path`` untouched).

    Args:
        path: the file to replace; its folder must exist.
        fsync: flush the new file and the folder to disk before and after the rename, so a
            power cut leaves the old file or the new one. ``False`` where only an interrupted
            process must not leave half a file (many files a second, each cheap to redo).

    >>> with atomic_path(Path("out/part.parquet")) as tmp:  # doctest: +SKIP
    ...     pq.write_table(table, tmp)
    """
    target = Path(path)
    tmp = _temp_name(target)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and not exc.filename and exc.errno:
            # a write() that failed (a full disk) names no file: say which one it was
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
        raise
    if fsync:
        _fsync_folder(target.parent)


def atomic_write(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` all at once (see :func:`atomic_path`)."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; Windows cannot open a folder, and its
    ``MoveFileEx`` already writes the rename through)."""
    if sys.platform == "win32":
        return
    with contextlib.suppress(OSError):  # some file systems refuse a folder fsync: nothing to add
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
