"""Durable state of the emulator: SQLite (WAL) rows plus tensor files under ``--data-dir``.

Layout::

    <data_dir>/emulator.sqlite3                       uploads, jobs, stats
    <data_dir>/tensors/<owner>/<request_id>/<name>.json   one uploaded object (tensor JSON)
    <data_dir>/videos/<owner>/<request_id>.<ext>           a video_base64 job's file

Unless started with ``keep_tensors``, the tensors a job read are deleted once the job has
finished (:meth:`Storage.drop_job_tensors`) and no unfinished job names them: its result is
in SQLite, and a window's tensors are megabytes. The files go first, then the rows (with a
``dropped_uploads`` marker, so a later job naming them gets a 404 that says why); a crash in
between leaves rows whose files are gone, which the sweep at start-up
(:meth:`Storage.drop_finished_tensors`) completes before the first request is served.

Files are written first, atomically (tmp + fsync + ``os.replace`` + directory fsync), and the row
that makes them visible is committed after, so a kill -9 at any point leaves either the old
upload or the new one, never a torn file behind a row; the temporary file such a kill leaves is
removed at the next start (:func:`remove_stale_temp_files`). Every path is built from an owner
digest and a request_id that already matched ``REQUEST_ID_PATTERN``, and is checked to stay under the
data directory anyway.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import stat
import threading
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seeknetic_prep.emulator.config import REQUEST_ID_RE
from seeknetic_prep.emulator.problems import Problem
from seeknetic_prep.errors import StateError

__all__ = ["JobRow", "Storage", "UploadRow", "atomic_write", "remove_stale_temp_files"]

log = logging.getLogger("seeknetic_prep.emulator")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    owner TEXT NOT NULL,
    request_id TEXT NOT NULL,
    name TEXT NOT NULL,
    service TEXT NOT NULL,
    r2_key TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (owner, request_id, name)
);
CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads (r2_key);
CREATE TABLE IF NOT EXISTS jobs (
    owner TEXT NOT NULL,
    request_id TEXT NOT NULL,
    task_type TEXT NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    result TEXT,
    error_message TEXT,
    PRIMARY KEY (owner, request_id)
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status);
CREATE TABLE IF NOT EXISTS dropped_uploads (
    owner TEXT NOT NULL,
    r2_key TEXT NOT NULL,
    dropped_at REAL NOT NULL,
    PRIMARY KEY (owner, r2_key)
);
CREATE TABLE IF NOT EXISTS stats (
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    request_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (owner, kind, request_id)
);
"""

UPLOAD_NAMES = ("video_input", "audio_input", "video_kwargs")
_STEM_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")
_STRIPES = 64
_FRESH = 32  # decoded tensors kept for their job: at most ~60 MB


_TMP_RE = re.compile(r"\.(?P<name>[A-Za-z0-9_-][A-Za-z0-9._-]*)\.(?P<pid>[0-9]+)\.[0-9]+\.tmp")
"""What :func:`atomic_write` names its temporary files: ``.<name>.<pid>.<thread id>.tmp``."""
_TMP_MAX_AGE_S = 3600.0  # no write takes an hour: a temp file that old is stale whoever wrote it
_TMP_FOLDERS = ("tensors", "videos")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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


def r2_key(request_id: str, name: str) -> str:
    return f"tensors/{request_id}/{name}.json"


@dataclass(frozen=True)
class UploadRow:
    owner: str
    request_id: str
    name: str
    service: str
    r2_key: str


@dataclass(frozen=True)
class JobRow:
    owner: str
    request_id: str
    task_type: str
    status: str
    source: dict[str, Any]
    fingerprint: str
    created_at: float
    updated_at: float
    result: Any
    error_message: str | None


class Storage:
    """All reads and writes of emulator state; safe to share between threads.

    One SQLite connection behind a lock keeps transactions simple (the emulator's rows are tiny;
    the heavy work, decoding and fsyncing tensors, happens outside the lock).
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        removed = remove_stale_temp_files(self.data_dir)
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted write", removed)
        self._lock = threading.RLock()
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]
        # Arrays the upload handler just validated, for the job that scores them moments later
        # (so a job does not read back and base64-decode what was decoded at upload). Bounded;
        # a miss (evicted, restarted emulator) reads the file as before.
        self._fresh: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._db = sqlite3.connect(
            self.data_dir / "emulator.sqlite3", check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateError(
                f"Emulator database {self.data_dir / 'emulator.sqlite3'} has schema {version}: "
                f"this emulator reads schema <= {SCHEMA_VERSION}."
            )
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- paths ---------------------------------------------------------------------------------

    def _safe(self, *parts: str) -> Path:
        for part in parts:
            if part in ("", ".", "..") or "/" in part or "\\" in part or "\x00" in part:
                raise ValueError(f"Unsafe path component {part!r}.")
        path = self.data_dir.joinpath(*parts)
        if not path.resolve().is_relative_to(self.data_dir):
            raise ValueError(f"Path {path} escapes the data directory {self.data_dir}.")
        return path

    def object_path(self, owner: str, request_id: str, name: str) -> Path:
        if not REQUEST_ID_RE.fullmatch(request_id) or name not in UPLOAD_NAMES:
            raise ValueError(f"Invalid object {request_id!r}/{name!r}.")
        return self._safe("tensors", owner, request_id, f"{name}.json")

    def video_path(self, owner: str, stem: str, suffix: str) -> Path:
        if not _STEM_RE.fullmatch(stem + suffix):
            raise ValueError(f"Invalid video file name {stem + suffix!r}.")
        return self._safe("videos", owner, f"{stem}{suffix}")

    # -- stats ---------------------------------------------------------------------------------

    def count(self, owner: str, kind: str, request_id: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO stats (owner, kind, request_id, n) VALUES (?, ?, ?, 1) "
                "ON CONFLICT (owner, kind, request_id) DO UPDATE SET n = n + 1",
                (owner, kind, request_id),
            )

    def stats(self, owner: str) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {"uploads": {}, "submissions": {}}
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, request_id, n FROM stats WHERE owner = ? ORDER BY request_id", (owner,)
            ).fetchall()
        for row in rows:
            out.setdefault(row["kind"], {})[row["request_id"]] = int(row["n"])
        return out

    # -- uploads -------------------------------------------------------------------------------

    def put_uploads(
        self, owner: str, request_id: str, service: str, objects: dict[str, bytes],
        arrays: dict[str, Any] | None = None,
    ) -> dict[str, str]:
        """Store (add or replace) objects of one request_id; return every key it now has.

        ``arrays`` are the decoded tensors of (some of) ``objects``, kept briefly in memory for
        :meth:`take_array`.

        Raises:
            Problem: 409 when the request_id was uploaded for the other service.
        """
        stripe = self._stripes[zlib.crc32(f"{owner}/{request_id}".encode()) % _STRIPES]
        with stripe:
            existing = self.upload_service(owner, request_id)
            if existing is not None and existing != service:
                raise Problem(
                    409,
                    f"request_id {request_id!r} was uploaded for service {existing!r}; "
                    f"it cannot also hold {service!r} tensors (use another request_id).",
                )
            for name, data in objects.items():
                atomic_write(self.object_path(owner, request_id, name), data)
            with self._lock:
                for name in objects:
                    key = (owner, r2_key(request_id, name))
                    self._fresh.pop(key, None)  # replaced: an older array must not be scored
                    if arrays is not None and name in arrays:
                        self._fresh[key] = arrays[name]
                while len(self._fresh) > _FRESH:
                    self._fresh.popitem(last=False)
            now = time.time()
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for name, data in objects.items():
                        self._db.execute(
                            "INSERT INTO uploads (owner, request_id, name, service, r2_key, size, "
                            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                            "ON CONFLICT (owner, request_id, name) DO UPDATE "
                            "SET size = excluded.size, created_at = excluded.created_at",
                            (owner, request_id, name, service, r2_key(request_id, name), len(data), now),
                        )
                        self._db.execute(
                            "DELETE FROM dropped_uploads WHERE owner = ? AND r2_key = ?",
                            (owner, r2_key(request_id, name)),
                        )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                rows = self._db.execute(
                    "SELECT name, r2_key FROM uploads WHERE owner = ? AND request_id = ?", (owner, request_id)
                ).fetchall()
        order = {name: i for i, name in enumerate(UPLOAD_NAMES)}
        return {row["name"]: row["r2_key"] for row in sorted(rows, key=lambda r: order[r["name"]])}

    def upload_service(self, owner: str, request_id: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT service FROM uploads WHERE owner = ? AND request_id = ? LIMIT 1", (owner, request_id)
            ).fetchone()
        return None if row is None else str(row["service"])

    def find_uploads(self, key: str) -> list[UploadRow]:
        """Every stored object named ``key``, whoever owns it (the caller decides who may see it)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT owner, request_id, name, service, r2_key FROM uploads WHERE r2_key = ?", (key,)
            ).fetchall()
        return [UploadRow(r["owner"], r["request_id"], r["name"], r["service"], r["r2_key"]) for r in rows]

    def list_uploads(self, owner: str) -> list[UploadRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT owner, request_id, name, service, r2_key FROM uploads WHERE owner = ? "
                "ORDER BY request_id, name",
                (owner,),
            ).fetchall()
        return [UploadRow(r["owner"], r["request_id"], r["name"], r["service"], r["r2_key"]) for r in rows]

    def take_array(self, owner: str, key: str) -> Any | None:
        """The decoded tensor stored under ``key`` if it was uploaded recently (once), else None."""
        with self._lock:
            return self._fresh.pop((owner, key), None)

    def read_object(self, owner: str, key: str) -> Any:
        """The JSON value stored under ``key`` for ``owner`` (raises OSError/ValueError if unreadable)."""
        parts = key.split("/")
        if len(parts) != 3 or parts[0] != "tensors" or not parts[2].endswith(".json"):
            raise ValueError(f"Invalid object key {key!r}.")
        path = self.object_path(owner, parts[1], parts[2][: -len(".json")])
        return json.loads(path.read_bytes())

    def was_dropped(self, owner: str, key: str) -> bool:
        """Whether ``key`` was deleted after the jobs that named it finished."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM dropped_uploads WHERE owner = ? AND r2_key = ?", (owner, key)
            ).fetchone()
        return row is not None

    def drop_job_tensors(self, job: JobRow) -> int:
        """Delete the tensors ``job`` read, unless an unfinished job still names them.

        Call only once ``job``'s result is committed. Returns the number of objects deleted.
        Each request_id's files go under its upload stripe, so an upload of the same id at
        the same moment either lands before (and is deleted with the rest) or after (and stays).
        """
        keys = _tensor_keys(job)
        if not keys:
            return 0
        marks = ", ".join("?" * len(keys))
        with self._lock:
            busy = {str(r[0]) for r in self._db.execute(
                "SELECT k.value FROM jobs j, json_each(j.source, '$.keys') k WHERE j.owner = ? "
                f"AND j.status IN ('pending', 'processing') AND k.value IN ({marks})",
                (job.owner, *sorted(keys)),
            )}
        by_request: dict[str, list[str]] = {}
        for key in keys - busy:
            by_request.setdefault(key.split("/")[1], []).append(key)
        dropped = 0
        for request_id, group in sorted(by_request.items()):
            stripe = self._stripes[zlib.crc32(f"{job.owner}/{request_id}".encode()) % _STRIPES]
            with stripe:
                dropped += self._drop(job.owner, request_id, group)
        return dropped

    def _drop(self, owner: str, request_id: str, keys: list[str]) -> int:
        with self._lock:
            rows = self._db.execute(
                f"SELECT name, r2_key FROM uploads WHERE owner = ? AND request_id = ? "
                f"AND r2_key IN ({', '.join('?' * len(keys))})",
                (owner, request_id, *keys),
            ).fetchall()
        if not rows:
            return 0
        for row in rows:  # files first: a crash now leaves rows the start-up sweep finishes
            self.object_path(owner, request_id, row["name"]).unlink(missing_ok=True)
        folder = self._safe("tensors", owner, request_id)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    self._db.execute(
                        "DELETE FROM uploads WHERE owner = ? AND request_id = ? AND name = ?",
                        (owner, request_id, row["name"]),
                    )
                    self._db.execute(
                        "INSERT OR REPLACE INTO dropped_uploads (owner, r2_key, dropped_at) VALUES (?, ?, ?)",
                        (owner, row["r2_key"], now),
                    )
                    self._fresh.pop((owner, row["r2_key"]), None)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)

    def drop_finished_tensors(self) -> int:
        """The start-up sweep: drop what finished jobs left (a crash mid-drop, or a data
        directory last served with ``keep_tensors``). Returns the number of objects deleted."""
        with self._lock:
            rows = self._db.execute(
                "SELECT j.* FROM jobs j WHERE j.status IN ('completed', 'failed') AND EXISTS "
                "(SELECT 1 FROM json_each(j.source, '$.keys') k JOIN uploads u "
                "ON u.owner = j.owner AND u.r2_key = k.value)"
            ).fetchall()
        return sum(self.drop_job_tensors(_job(r)) for r in rows)

    # -- jobs ----------------------------------------------------------------------------------

    def submit_job(
        self,
        *,
        owner: str,
        request_id: str,
        task_type: str,
        source: dict[str, Any],
        fingerprint: str,
        quota: int | None,
    ) -> tuple[JobRow, bool]:
        """Create the job, or return the one this request_id already names.

        Returns:
            ``(job, created)``; ``created`` is False for an idempotent repeat.

        Raises:
            Problem: 409 when the request_id names a job of another type or with other inputs;
                402 when the owner's quota of submissions is spent.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                existing = self._get_job(owner, request_id)
                if existing is not None:
                    self._db.execute("COMMIT")
                    if existing.task_type != task_type:
                        raise Problem(
                            409,
                            f"request_id {request_id!r} already names a {existing.task_type} job; "
                            f"a {task_type} job needs another request_id.",
                        )
                    if existing.fingerprint != fingerprint:
                        raise Problem(
                            409,
                            f"request_id {request_id!r} already names a {task_type} job with other "
                            "inputs; resubmit the same inputs or use another request_id.",
                        )
                    return existing, False
                if quota is not None:
                    used = int(
                        self._db.execute("SELECT COUNT(*) FROM jobs WHERE owner = ?", (owner,)).fetchone()[0]
                    )
                    if used >= quota:
                        self._db.execute("COMMIT")
                        raise Problem(
                            402,
                            f"Quota spent: this API key may submit {quota} async jobs and has "
                            f"submitted {used}.",
                        )
                now = time.time()
                self._db.execute(
                    "INSERT INTO jobs (owner, request_id, task_type, status, source, fingerprint, "
                    "created_at, updated_at) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?)",
                    (owner, request_id, task_type, json.dumps(source), fingerprint, now, now),
                )
                self._db.execute("COMMIT")
            except Problem:
                raise
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            job = self._get_job(owner, request_id)
        assert job is not None
        return job, True

    def get_job(self, owner: str, request_id: str) -> JobRow | None:
        with self._lock:
            return self._get_job(owner, request_id)

    def _get_job(self, owner: str, request_id: str) -> JobRow | None:
        row = self._db.execute(
            "SELECT * FROM jobs WHERE owner = ? AND request_id = ?", (owner, request_id)
        ).fetchone()
        return None if row is None else _job(row)

    def unfinished_jobs(self) -> list[JobRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE status IN ('pending', 'processing') ORDER BY created_at"
            ).fetchall()
        return [_job(r) for r in rows]

    def set_status(self, job: JobRow, status: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = ?, updated_at = ? WHERE owner = ? AND request_id = ?",
                (status, time.time(), job.owner, job.request_id),
            )

    def finish(self, job: JobRow, *, result: Any = None, error_message: str | None = None) -> None:
        status = "failed" if error_message is not None else "completed"
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = ?, updated_at = ?, result = ?, error_message = ? "
                "WHERE owner = ? AND request_id = ?",
                (
                    status,
                    time.time(),
                    None if result is None else json.dumps(result),
                    error_message,
                    job.owner,
                    job.request_id,
                ),
            )


def _tensor_keys(job: JobRow) -> set[str]:
    """The uploaded objects a tensor job reads (its ``video_kwargs`` too: nothing else needs it)."""
    if job.source.get("mode") != "tensor":
        return set()
    return {str(k) for k in job.source.get("keys", {}).values()}


def _job(row: sqlite3.Row) -> JobRow:
    return JobRow(
        owner=row["owner"],
        request_id=row["request_id"],
        task_type=row["task_type"],
        status=row["status"],
        source=json.loads(row["source"]),
        fingerprint=row["fingerprint"],
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
        result=None if row["result"] is None else json.loads(row["result"]),
        error_message=row["error_message"],
    )
