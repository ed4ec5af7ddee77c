"""The run's state: one SQLite database at ``<out>/state.sqlite``, behind one class.

A run is resumable because every step of every unit of work is recorded here (a unit is one
content fingerprint, window and service; its lifecycle is drawn in :mod:`.units`). Everything
else reads and writes it through :class:`Store`, whose methods are typed queries returning the
row values of :mod:`.rows`: no SQL and no positional tuple leaves this package, so the storage
can change without its readers (``status``, the report, the results parts) noticing.

``Store`` is assembled from layers split along the database's seams:

* :mod:`.opening` -- opening and upgrading the file (what is not our state refused first);
* :mod:`.connection` -- batched writes (and why losing the last ones to a ``kill -9`` is safe),
  reads after a flush; ``sqlite3`` errors become :class:`~seeknetic_prep.errors.StateError`
  there and in :mod:`.opening`;
* :mod:`.units` -- planning units, their transitions, reads of progress;
* :mod:`.files` -- the paths seen and the lookup that lets a rerun skip a finished file;
* :mod:`.runs` -- runs, throughput, and what one run finished (for its results part);
* :mod:`.blobs` -- where a completed embedding lives: here until a results part holds it;
* :mod:`.schema` -- the schema's versions and migrations.
"""

from __future__ import annotations

import os
from pathlib import Path

from seeknetic_prep.errors import InvalidArgumentError
from seeknetic_prep.state.blobs import BlobQueries
from seeknetic_prep.state.connection import FLUSH_ROWS, FLUSH_S
from seeknetic_prep.state.files import FileQueries
from seeknetic_prep.state.rows import (
    FileRow,
    FileStatus,
    RunRow,
    Throughput,
    Unit,
    UnitStatus,
    WindowRow,
    display_path,
    path_bytes,
    result_dict,
)
from seeknetic_prep.state.runs import RunQueries
from seeknetic_prep.state.schema import MIGRATIONS, SCHEMA_VERSION
from seeknetic_prep.state.units import UnitQueries
from seeknetic_prep.util.readers import writable

__all__ = [
    "FLUSH_ROWS", "FLUSH_S", "MIGRATIONS", "SCHEMA_VERSION", "FileRow", "FileStatus", "RunRow", "Store",
    "Throughput", "Unit", "UnitStatus", "WindowRow", "display_path", "existing_state", "path_bytes",
    "reading_store", "result_dict",
]


def existing_state(out: str | os.PathLike[str]) -> Path:
    """The state database of the run folder ``out``, for the commands that only read one.

    Raises:
        InvalidArgumentError: there is none (no run has used ``out``).
    """
    db = Path(out) / "state.sqlite"
    if not db.exists():
        raise InvalidArgumentError(f"Invalid --out {str(out)!r}: no state.sqlite there (run first).")
    return db


def reading_store(out: str | os.PathLike[str]) -> Store:
    """The state of the run folder ``out`` for a command that only reads it: opened as usual
    where the folder can be written (an older schema is upgraded, as every command does), and
    read-only where it cannot (another account's folder, a read-only mount).

    Raises:
        InvalidArgumentError: there is no state in ``out``.
        StateError: it cannot be read (or is of an older schema in a folder we cannot write).
    """
    db = existing_state(out)
    return Store(db, readonly=not (writable(db.parent) and os.access(db, os.W_OK)))


class Store(UnitQueries, FileQueries, RunQueries, BlobQueries):
    """The state database of one output directory.

    Args:
        path: the SQLite file (created with its parent directory if missing).
        readonly: read an existing state and write nothing (see :func:`reading_store`).

    Raises:
        StateError: the file is not a database, or was written by a newer seeknetic-prep.

    >>> with Store("seeknetic-out/state.sqlite") as store:  # doctest: +SKIP
    ...     store.counts()
    {'completed': 26}
    """

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
