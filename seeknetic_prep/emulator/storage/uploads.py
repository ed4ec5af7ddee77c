"""Uploaded objects: their files under ``tensors/``, their rows, and the arrays just decoded.

An upload of a request_id and the deletion of its files (:mod:`.retention`) hold the same lock
(:meth:`Uploads.locked`), so the two never interleave: an upload lands wholly before a deletion
or wholly after it. An upload that cannot be stored whole (a full disk: 503) keeps nothing: the
files it had written for names without a row are removed again.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from seeknetic_prep.emulator.problems import Problem
from seeknetic_prep.emulator.storage.db import Database
from seeknetic_prep.emulator.storage.files import UPLOAD_NAMES, Chunks, Paths, chunks_size, r2_key, write_file
from seeknetic_prep.emulator.storage.space import Space

__all__ = ["UploadRow", "Uploads"]

_STRIPES = 64
_FRESH = 32  # decoded tensors kept for their job: ~60 MB of windows' ones
_FRESH_BYTES = 64 * 2**20  # and never more than this, whatever their size (a job reads the file)
_COLUMNS = "owner, request_id, name, service, r2_key"


@dataclass(frozen=True)
class UploadRow:
    owner: str
    request_id: str
    name: str
    service: str
    r2_key: str


class Uploads:
    """Store, find and read uploaded objects; safe to share between threads."""

    def __init__(self, db: Database, paths: Paths, space: Space) -> None:
        self._db = db
        self._paths = paths
        self._space = space
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]
        # Arrays the upload handler just validated, for the job that scores them moments later
        # (so a job does not read back and base64-decode what was decoded at upload). Bounded;
        # a miss (evicted, restarted emulator) reads the file as before.
        self._fresh: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._fresh_lock = threading.Lock()

    def locked(self, owner: str, request_id: str) -> threading.Lock:
        """The lock over one request_id's files (one of a few, shared by hashing)."""
        return self._stripes[zlib.crc32(f"{owner}/{request_id}".encode()) % _STRIPES]

    def put(
        self, owner: str, request_id: str, service: str, objects: Mapping[str, Chunks],
        arrays: dict[str, Any] | None = None,
    ) -> dict[str, str]:
        """Store (add or replace) objects of one request_id; return every key it now has.

        ``arrays`` are the decoded tensors of (some of) ``objects``, kept briefly in memory for
        :meth:`take_array`.

        Raises:
            Problem: 409 when the request_id was uploaded for the other service.
            StorageFull: 503, the disk is full; nothing new of this upload was kept.
        """
        with self.locked(owner, request_id):
            existing = self.service_of(owner, request_id)
            if existing is not None and existing != service:
                raise Problem(
                    409,
                    f"request_id {request_id!r} was uploaded for service {existing!r}; "
                    f"it cannot also hold {service!r} tensors (use another request_id).",
                )
            had = {row["name"] for row in self._db.rows(
                "SELECT name FROM uploads WHERE owner = ? AND request_id = ?", (owner, request_id))}
            written: list[str] = []
            try:
                for name, data in objects.items():  # files first, then the rows that show them
                    path = self._paths.object_path(owner, request_id, name)
                    write_file(self._space, path, data, what=f"{name} of request_id {request_id!r}")
                    written.append(name)
                now = time.time()
                with self._db.transaction():
                    for name, data in objects.items():
                        self._db.execute(
                            "INSERT INTO uploads (owner, request_id, name, service, r2_key, size, "
                            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                            "ON CONFLICT (owner, request_id, name) DO UPDATE "
                            "SET size = excluded.size, created_at = excluded.created_at",
                            (owner, request_id, name, service, r2_key(request_id, name), chunks_size(data),
                             now),
                        )
                        self._db.execute(
                            "DELETE FROM dropped_uploads WHERE owner = ? AND r2_key = ?",
                            (owner, r2_key(request_id, name)),
                        )
                    rows = self._db.rows(
                        "SELECT name, r2_key FROM uploads WHERE owner = ? AND request_id = ?",
                        (owner, request_id),
                    )
            except BaseException:
                # No row shows them: files of new names go (a replaced one stays, its row too).
                self.delete_files(owner, request_id, [n for n in written if n not in had])
                raise
            self._keep_fresh(owner, request_id, objects, arrays or {})
        order = {name: i for i, name in enumerate(UPLOAD_NAMES)}
        return {row["name"]: row["r2_key"] for row in sorted(rows, key=lambda r: order[r["name"]])}

    def _keep_fresh(
        self, owner: str, request_id: str, objects: Mapping[str, Chunks], arrays: dict[str, Any]
    ) -> None:
        with self._fresh_lock:
            for name in objects:
                key = (owner, r2_key(request_id, name))
                self._fresh.pop(key, None)  # replaced: an older array must not be scored
                if name in arrays and arrays[name].nbytes <= _FRESH_BYTES:
                    self._fresh[key] = arrays[name]
            while len(self._fresh) > _FRESH or sum(a.nbytes for a in self._fresh.values()) > _FRESH_BYTES:
                self._fresh.popitem(last=False)

    def forget(self, owner: str, key: str) -> None:
        """Let go of the array kept for ``key`` (its object is being deleted)."""
        with self._fresh_lock:
            self._fresh.pop((owner, key), None)

    def service_of(self, owner: str, request_id: str) -> str | None:
        row = self._db.row(
            "SELECT service FROM uploads WHERE owner = ? AND request_id = ? LIMIT 1", (owner, request_id)
        )
        return None if row is None else str(row["service"])

    def find(self, key: str) -> list[UploadRow]:
        """Every stored object named ``key``, whoever owns it (the caller decides who may see it)."""
        rows = self._db.rows(f"SELECT {_COLUMNS} FROM uploads WHERE r2_key = ?", (key,))
        return [UploadRow(*r) for r in rows]

    def of_owner(self, owner: str) -> list[UploadRow]:
        rows = self._db.rows(
            f"SELECT {_COLUMNS} FROM uploads WHERE owner = ? ORDER BY request_id, name", (owner,)
        )
        return [UploadRow(*r) for r in rows]

    def take_array(self, owner: str, key: str) -> Any | None:
        """The decoded tensor stored under ``key`` if it was uploaded recently (once), else None."""
        with self._fresh_lock:
            return self._fresh.pop((owner, key), None)

    def read_object(self, owner: str, key: str) -> Any:
        """The JSON value stored under ``key`` for ``owner`` (raises OSError/ValueError if unreadable)."""
        parts = key.split("/")
        if len(parts) != 3 or parts[0] != "tensors" or not parts[2].endswith(".json"):
            raise ValueError(f"Invalid object key {key!r}.")
        path = self._paths.object_path(owner, parts[1], parts[2][: -len(".json")])
        return json.loads(path.read_bytes())

    def delete_files(self, owner: str, request_id: str, names: Sequence[str]) -> None:
        """Remove the named objects' files, and their folder once it is empty (rows stay)."""
        for name in names:
            self._paths.object_path(owner, request_id, name).unlink(missing_ok=True)
        folder = self._paths.request_folder(owner, request_id)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
