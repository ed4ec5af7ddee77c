"""Durable state of the emulator: SQLite (WAL) rows plus tensor files under ``--data-dir``.

Layout::

    <data_dir>/emulator.sqlite3                           uploads, jobs, stats
    <data_dir>/tensors/<owner>/<request_id>/<name>.json   one uploaded object (tensor JSON)
    <data_dir>/videos/<owner>/<request_id>.<ext>          a video_base64 job's file

:class:`Storage` opens the directory and hands out its parts, one per concern, all over one
connection (:mod:`.db`): :mod:`.files` (paths and crash-safe writes), :mod:`.uploads` (uploaded
objects), :mod:`.jobs` (job rows), :mod:`.retention` (deleting a finished job's tensors),
:mod:`.stats` (requests per request_id), :mod:`.space` (a full disk: 503, one log line). They
are split so that each rule (atomic files before rows, one job per request_id, which tensors may
go, what a full disk answers) sits in one small place.
"""

from __future__ import annotations

import logging
from pathlib import Path

from seeknetic_prep.emulator.storage.db import Database
from seeknetic_prep.emulator.storage.files import Paths, atomic_write, remove_stale_temp_files, write_file
from seeknetic_prep.emulator.storage.jobs import JobRow, Jobs
from seeknetic_prep.emulator.storage.retention import Retention
from seeknetic_prep.emulator.storage.space import Space, StorageFull
from seeknetic_prep.emulator.storage.stats import Stats
from seeknetic_prep.emulator.storage.uploads import UploadRow, Uploads

__all__ = [
    "JobRow", "Space", "Storage", "StorageFull", "UploadRow", "atomic_write", "remove_stale_temp_files",
    "write_file",
]

log = logging.getLogger("seeknetic_prep.emulator")


class Storage:
    """Everything under one data directory; every part is safe to share between threads.

    Attributes:
        data_dir: the directory, resolved.
        paths: where each file lives (:class:`~.files.Paths`).
        uploads: uploaded objects (:class:`~.uploads.Uploads`).
        jobs: job rows (:class:`~.jobs.Jobs`).
        retention: deleting finished jobs' tensors (:class:`~.retention.Retention`).
        stats: requests per request_id (:class:`~.stats.Stats`).
        space: the full-disk rules and their fault knob (:class:`~.space.Space`).

    Raises:
        StateError: the database was written by a newer emulator.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        removed = remove_stale_temp_files(self.data_dir)
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted write", removed)
        self.space = Space(self.data_dir)
        self._db = Database(self.data_dir / "emulator.sqlite3", self.space)
        self.paths = Paths(self.data_dir)
        self.uploads = Uploads(self._db, self.paths, self.space)
        self.jobs = Jobs(self._db)
        self.retention = Retention(self._db, self.uploads)
        self.stats = Stats(self._db)

    def close(self) -> None:
        self._db.close()
