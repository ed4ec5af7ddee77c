"""Files under ``--data-dir``: where each one lives, and how it is written so a crash cannot tear it.

Files are written atomically (tmp + fsync + ``os.replace`` + directory fsync) before the row that
makes them visible is committed, so a kill -9 at any point leaves either the old file or the new
one, never a torn file behind a row; the temporary file such a kill leaves is removed at the next
start (:func:`remove_stale_temp_files`); one that fails (a full disk) removes its own temporary
file at once (:func:`write_file` then answers 503: see :mod:`.space`). Every path is built from
an owner digest and a request_id that already matched ``REQUEST_ID_PATTERN``, and is checked to
stay under the data directory anyway (:class:`Paths`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeAlias

from seeknetic_prep.emulator.config import REQUEST_ID_RE
from seeknetic_prep.emulator.storage.space import Space, is_full

__all__ = [
    "UPLOAD_NAMES", "Chunks", "Paths", "atomic_write", "chunks_size", "r2_key", "remove_stale_temp_files",
    "write_file",
]

UPLOAD_NAMES = ("video_input", "audio_input", "video_kwargs")
_STEM_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")

_TMP_RE = re.compile(r"\.(?P<name>[A-Za-z0-9_-][A-Za-z0-9._-]*)\.(?P<pid>[0-9]+)\.[0-9]+\.tmp")
"""What :func:`atomic_write` names its temporary files: ``.<name>.<pid>.<thread id>.tmp``."""
_TMP_MAX_AGE_S = 3600.0  # no write takes an hour: a temp file that old is stale whoever wrote it
_TMP_FOLDERS = ("tensors", "videos")


def r2_key(request_id: str, name: str) -> str:
    """The key an uploaded object is known by to clients (``tensors/<request_id>/<name>.json``)."""
    return f"tensors/{request_id}/{name}.json"


Chunks: TypeAlias = bytes | Sequence[bytes | str]
"""What :func:`atomic_write` writes: bytes, or pieces written one after the other (a ``str`` piece
must be ASCII: it is encoded a slice at a time, so a 60 MB base64 string is never copied whole)."""

_SLICE = 1 << 20


def chunks_size(data: Chunks) -> int:
    """The number of bytes :func:`atomic_write` writes for ``data``."""
    return len(data) if isinstance(data, bytes) else sum(len(piece) for piece in data)


def atomic_write(path: Path, data: Chunks, *, fail: Callable[[], bool] | None = None) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, whole.

    ``fail`` is the fault knob of :class:`~.space.Space`: when it returns True the write raises
    ``ENOSPC`` after its first bytes, as it would on a full disk, and the same clean-up runs.

    Raises:
        OSError: the write failed (``ENOSPC`` on a full disk); the temporary file is removed
            and ``path`` is as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            for piece in _pieces(data):
                view = memoryview(piece)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                    if fail is not None and fail():
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # a torn file is never left behind
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _pieces(data: Chunks) -> Iterator[bytes]:
    if isinstance(data, bytes):
        yield data
        return
    for piece in data:
        if isinstance(piece, bytes):
            yield piece
            continue
        for start in range(0, len(piece), _SLICE):
            yield piece[start:start + _SLICE].encode("ascii")


def write_file(space: Space, path: Path, data: Chunks, *, what: str) -> None:
    """:func:`atomic_write` of new data under the data directory, with the full-disk rules.

    Raises:
        StorageFull: 503, the filesystem has no room (or would keep less than the reserve).
        OSError: any other write error (a bug or a broken disk: it surfaces).
    """
    space.reserve(what, chunks_size(data))
    try:
        atomic_write(path, data, fail=space.inject)
    except OSError as exc:
        if is_full(exc):
            raise space.full("files", what, exc) from exc
        raise
    space.ok("files")


def remove_stale_temp_files(data_dir: Path, *, now: float | None = None) -> int:
    """Delete the temporary files that writers killed mid-write (``kill -9``) left behind.

    Only files named as :func:`atomic_write` names them, only under ``tensors/`` and
    ``videos/``, never through a symlink, and only when their writer is gone (its pid is not
    alive, or the file is over an hour old, in case the pid was reused): another emulator
    sharing the data directory keeps the file it is writing. Returns how many were removed.
    """
    now = time.time() if now is None else now
    removed = 0
    for folder in _TMP_FOLDERS:
        top = Path(data_dir) / folder
        if top.is_symlink() or not top.is_dir():
            continue
        for root, _dirs, files in os.walk(top):  # os.walk does not follow symlinked folders
            for name in files:
                match = _TMP_RE.fullmatch(name)
                if match is None:
                    continue
                path = Path(root, name)
                try:
                    info = path.lstat()
                    if not stat.S_ISREG(info.st_mode):
                        continue
                    if _alive(int(match["pid"])) and now - info.st_mtime < _TMP_MAX_AGE_S:
                        continue
                    path.unlink()
                    removed += 1
                except FileNotFoundError:
                    continue  # its writer finished (renamed it) meanwhile
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":
        return True  # on Windows os.kill(pid, 0) would terminate the process: go by age only
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True  # exists (another user's), or unknowable: keep the file
    return True


class Paths:
    """The only place a path under the data directory is made; each is checked to stay in it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def _safe(self, *parts: str) -> Path:
        for part in parts:
            if part in ("", ".", "..") or "/" in part or "\\" in part or "\x00" in part:
                raise ValueError(f"Unsafe path component {part!r}.")
        path = self.data_dir.joinpath(*parts)
        if not path.resolve().is_relative_to(self.data_dir):
            raise ValueError(f"Path {path} escapes the data directory {self.data_dir}.")
        return path

    def request_folder(self, owner: str, request_id: str) -> Path:
        """Where the objects uploaded under one request_id live."""
        return self._safe("tensors", owner, request_id)

    def object_path(self, owner: str, request_id: str, name: str) -> Path:
        if not REQUEST_ID_RE.fullmatch(request_id) or name not in UPLOAD_NAMES:
            raise ValueError(f"Invalid object {request_id!r}/{name!r}.")
        return self._safe("tensors", owner, request_id, f"{name}.json")

    def video_path(self, owner: str, stem: str, suffix: str) -> Path:
        if not _STEM_RE.fullmatch(stem + suffix):
            raise ValueError(f"Invalid video file name {stem + suffix!r}.")
        return self._safe("videos", owner, f"{stem}{suffix}")
