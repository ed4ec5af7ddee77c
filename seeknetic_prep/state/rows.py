"""The state's rows as typed values, and the path forms they carry.

Every query of :class:`~seeknetic_prep.state.store.Store` returns these, never a positional
tuple, so a reader (``status``, the report, the results parts) names the fields it uses and a
new column cannot shift the others. They are made only here, from the column lists below, so a
``SELECT`` and the value it fills cannot drift apart.

Paths are kept as the OS names them: bytes in the database (:func:`path_bytes`), Python's
``surrogateescape`` text in :attr:`FileRow.path` (pass it to ``open``), and
:func:`display_path` for people and for UTF-8 formats.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from seeknetic_prep.sources.urls import is_url  # light: urllib only

__all__ = [
    "FileRow", "FileStatus", "RunRow", "Throughput", "Unit", "UnitStatus", "WindowRow",
    "display_path", "path_bytes", "result_dict", "times_blob",
]

UnitStatus = Literal["planned", "uploaded", "submitted", "completed", "failed"]
FileStatus = Literal["planned", "ok", "failed", "gone"]



def path_bytes(path: str | os.PathLike[str]) -> bytes:
    """The absolute path as bytes, exactly as the OS names the file (``os.fsencode``): a
    name that is not UTF-8 (``b'caf\\xe9.mp4'``, which Python spells ``'caf\\udce9.mp4'``) is kept.
    A URL (``s3://bucket/key``, ``https://...``) is kept as it is: it names an object, not a
    file under the current folder."""
    text = os.fspath(path)
    if is_url(text):
        return text.encode("utf-8", "surrogateescape")
    return os.fsencode(os.path.abspath(text))


def display_path(path: str | bytes) -> str:
    """A path for people and for UTF-8 formats: undecodable bytes shown as ``\\xe9``."""
    raw = path if isinstance(path, bytes) else os.fsencode(path)
    return raw.decode("utf-8", "backslashreplace")


def _names(typed: str, absolute: str) -> bool:
    """Whether ``typed`` (absolute, or relative to a folder not known any more) can name the
    absolute path ``absolute``."""
    norm = os.path.normpath(typed)
    if os.path.isabs(norm):
        return norm == absolute
    parts = [p for p in norm.split(os.sep) if p != ".."]
    return bool(parts) and absolute.endswith(os.sep + os.sep.join(parts))


def safe_text(value: str | None) -> str | None:
    """Text safe to store: a message quoting a non-UTF-8 path gets it escaped, not a crash."""
    if value is None:
        return None
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def result_dict(embedding: bytes | None, rest: str | None) -> dict[str, Any]:
    """The inverse of :func:`~seeknetic_prep.state.schema.split_result`."""
    out: dict[str, Any] = json.loads(rest) if rest else {}
    if embedding is not None:
        out["embedding"] = np.frombuffer(embedding, dtype="<f4").astype(float).tolist()
    return out


def _json(text: str | None) -> Any:
    return json.loads(text) if text else None


def times_blob(frame_times_ms: Sequence[float]) -> bytes:
    """Frame times as little-endian float64 bytes: 96 bytes for 12, where their JSON took ~196
    (``416.6666666666667``), and exactly the same numbers back."""
    return np.asarray(frame_times_ms, dtype="<f8").tobytes()


def _times(value: bytes | str | None) -> list[float] | None:
    """Frame times as stored: float64 bytes (:func:`times_blob`), or JSON text (schema 3 and
    older, never rewritten)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return np.frombuffer(value, dtype="<f8").tolist()  # type: ignore[no-any-return]
    return _json(value)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Unit:
    """One row of ``units``: a (fingerprint, window, service) job and how far it got.

    ``result`` is loaded only by :meth:`Store.unit` and :meth:`Store.result`; lists of units
    (:meth:`Store.units_of`, :meth:`Store.units_with_status`) leave it ``None``.
    """

    fingerprint: str
    window_index: int
    service: str
    start_ms: int
    end_ms: int
    request_id: str
    attempt: int
    status: UnitStatus
    frame_times_ms: list[float] | None
    r2_keys: dict[str, str] | None
    result: dict[str, Any] | None
    error: str | None

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.fingerprint, self.window_index, self.service)

    COLUMNS: ClassVar[str] = ("fingerprint, window_index, service, start_ms, end_ms, request_id, attempt, "
                              "status, frame_times_ms, r2_keys, error")

    @classmethod
    def of(cls, row: Sequence[Any], result: dict[str, Any] | None = None) -> Unit:
        fp, idx, svc, start, end, rid, attempt, status, ftimes, keys, error = row
        return cls(fp, idx, svc, start, end, rid, attempt, status, _times(ftimes), _json(keys), result, error)


@dataclass(frozen=True)
class FileRow:
    """One path seen: ``path`` is absolute, in Python's ``surrogateescape`` form (pass it to
    ``open``); :attr:`display` is for printing, :attr:`raw` is the bytes the OS gave."""

    path: str
    fingerprint: str | None
    size: int | None
    duration_ms: int | None
    status: FileStatus
    error: str | None
    mtime_ns: int | None = None
    inode: int | None = None

    @property
    def display(self) -> str:
        return display_path(self.path)

    @property
    def raw(self) -> bytes:
        return os.fsencode(self.path)

    @property
    def reason(self) -> str:
        """Why the file failed, without the path its message starts with: errors name the file
        as it was typed (``clips/a.mp4: empty``), so ``PATH: reason`` said the path twice."""
        error = self.error or "failed"
        start = 0
        while (i := error.find(": ", start)) > 0:
            if _names(error[:i], self.display):
                return error[i + 2:]
            start = i + 2
        return error

    COLUMNS: ClassVar[str] = "path, fingerprint, size, duration_ms, status, error, mtime_ns, inode"

    @classmethod
    def of(cls, row: Sequence[Any]) -> FileRow:
        return cls(os.fsdecode(bytes(row[0])), *row[1:])


@dataclass(frozen=True)
class RunRow:
    """One run: when it started and last recorded progress, and what it had done by then."""

    id: int
    started_at: float
    updated_at: float
    windows_decoded: int
    jobs_completed: int
    outcome: str | None

    @property
    def busy_s(self) -> float:
        return max(0.0, self.updated_at - self.started_at)

    COLUMNS: ClassVar[str] = "id, started_at, updated_at, windows_decoded, jobs_completed, outcome"

    @classmethod
    def of(cls, row: Sequence[Any]) -> RunRow:
        run_id, started, updated, decoded, completed, outcome = row
        return cls(int(run_id), float(started), float(updated), int(decoded), int(completed), outcome)


@dataclass(frozen=True)
class Throughput:
    """Windows decoded and jobs completed per second of run time, over every run so far: the
    one computation ``status`` and the report show."""

    runs: int
    busy_s: float
    windows_decoded: int
    jobs_completed: int

    @classmethod
    def of(cls, runs: Sequence[RunRow]) -> Throughput:
        return cls(len(runs), sum(r.busy_s for r in runs), sum(r.windows_decoded for r in runs),
                   sum(r.jobs_completed for r in runs))

    def rates(self) -> tuple[str, str] | None:
        """``("1.23 windows/s decoded", "0.45 jobs/s completed")``; ``None`` before any run time."""
        if self.busy_s <= 0:
            return None
        return (f"{self.windows_decoded / self.busy_s:.2f} windows/s decoded",
                f"{self.jobs_completed / self.busy_s:.2f} jobs/s completed")


@dataclass(frozen=True)
class WindowRow:
    """One service's unit of a window, with what a results part needs of it: its result (tags,
    model) parsed and its embedding as the stored float32 bytes, only once it completed."""

    window_index: int
    service: str
    start_ms: int
    end_ms: int
    request_id: str
    status: UnitStatus
    error: str | None
    frame_times_ms: list[float] | None
    embedding: bytes | None
    result: dict[str, Any] | None

    COLUMNS: ClassVar[str] = ("window_index, service, start_ms, end_ms, request_id, status, error, "
                              "frame_times_ms, embedding, result")

    @classmethod
    def of(cls, row: Sequence[Any]) -> WindowRow:
        idx, svc, start, end, rid, status, error, ftimes, emb, rest = row
        done = status == "completed"
        return cls(idx, svc, start, end, rid, status, error, _times(ftimes), emb if done else None,
                   _json(rest) if done else None)
