"""The job worker: moves jobs pending -> processing -> completed/failed on a clock.

A job's schedule is derived from its ``created_at`` row, not from anything in memory, so after a
kill -9 and a restart on the same data directory the new worker finds the unfinished rows and
finishes them: a job due while the emulator was down completes at once. A job whose result
cannot be stored because the disk is full stays unfinished (never failed for that) and is
finished once space returns; the full disk is logged by :mod:`.storage.space`, one line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

from seeknetic_prep.api.tensors import decode_tensor
from seeknetic_prep.emulator import scoring
from seeknetic_prep.emulator.storage import JobRow, Storage, StorageFull, write_file
from seeknetic_prep.errors import SeekneticPrepError

__all__ = ["JobFailed", "JobWorker", "compute_result", "fingerprint", "video_source"]

log = logging.getLogger("seeknetic_prep.emulator")

_FULL_RETRY_S = 1.0


class JobFailed(Exception):
    """The job's inputs cannot be scored; the message becomes its ``error_message``."""


def _tensor_of(value: Any) -> Any:
    """Uploaded ``video_input`` may be ``{"tensor": ..., "metadata": ...}`` (the SDK's tagging form)."""
    if isinstance(value, dict) and "tensor" in value and "data" not in value:
        return value["tensor"]
    return value


def _content_from_tensors(storage: Storage, job: JobRow) -> scoring.Content:
    content = scoring.Content(digest=job.task_type == "embedding")
    keys: dict[str, str] = job.source.get("keys", {})
    for field, key in keys.items():
        if field == "video_kwargs_key":
            continue
        try:
            array = storage.uploads.take_array(job.owner, key)
            if array is None:
                array = decode_tensor(_tensor_of(storage.uploads.read_object(job.owner, key)))
        except (OSError, ValueError) as exc:
            raise JobFailed(f"Tensor {key!r} ({field}) cannot be read back: {exc}") from exc
        if field == "video_input_key":
            content.add_video(array)
        else:
            content.add_audio(array)
    return content


def _content_from_video(storage: Storage, job: JobRow) -> scoring.Content:
    path = storage.data_dir / job.source["path"]
    try:
        # PyAV: only for a job given a video file, and absent from an emulator-only build
        from seeknetic_prep.decode.preprocess import iter_segments
    except ImportError as exc:  # the preprocessing stage is not installed in this build
        raise JobFailed(
            f"video_base64 jobs need seeknetic_prep.decode.preprocess, which is unavailable: {exc}"
        ) from exc
    content = scoring.Content(digest=job.task_type == "embedding")
    try:
        for segment in iter_segments(path):
            content.add_video(segment.video)
            if segment.has_audio:
                content.add_audio(segment.audio)
    except SeekneticPrepError as exc:
        raise JobFailed(
            f"Cannot decode the uploaded video {job.source.get('filename', 'video.mp4')!r}: {exc}"
        ) from exc
    if content.thumbs is None:
        raise JobFailed(f"The uploaded video {job.source.get('filename', 'video.mp4')!r} has no frames.")
    return content


def compute_result(storage: Storage, job: JobRow) -> Any:
    """The job's result (``{"embedding": [...]}`` or ``{"tags": {...}}``); raises JobFailed."""
    mode = job.source.get("mode")
    if mode == "video_url":
        raise JobFailed(
            f"video_url {job.source.get('url')!r} was not fetched: the emulator makes no network "
            "requests; upload tensors or send video_base64 instead."
        )
    if mode == "video_base64":
        content = _content_from_video(storage, job)
    else:
        content = _content_from_tensors(storage, job)
    if job.task_type == "embedding":
        return {"embedding": scoring.embed_content(content)}
    try:
        return {"tags": scoring.tag_content(content)}
    except ValueError as exc:
        raise JobFailed(str(exc)) from exc


class JobWorker:
    """One background thread that advances every unfinished job when it is due."""

    def __init__(self, storage: Storage, *, job_seconds: float, keep_tensors: bool = False) -> None:
        self.storage = storage
        self.job_seconds = job_seconds
        self.keep_tensors = keep_tensors
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sweep = False  # a drop of tensors was cut short by a full disk: finish it

    def start(self) -> None:
        thread = threading.Thread(target=self._run, name="seeknetic-emulator-jobs", daemon=True)
        thread.start()
        self._thread = thread  # only once started: a stop from another thread may come at any time

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def notify(self) -> None:
        """A job was submitted: look again now instead of at the next scheduled time."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                delay = self.step(time.time())
            except StorageFull:  # logged (rate-limited) where it was met; the jobs wait for space
                delay = _FULL_RETRY_S
            except Exception:  # a bug in one job must not stop every other job
                log.exception("emulator job worker step failed")
                delay = 0.5
            self._wake.wait(timeout=delay)
            self._wake.clear()

    def step(self, now: float) -> float:
        """Advance every due job; return how long to sleep until the next one is due."""
        next_due = 1.0
        half = self.job_seconds / 2
        if self._sweep:
            self.storage.retention.drop_finished_tensors()
            self._sweep = False
        for job in self.storage.jobs.unfinished():
            if self._stop.is_set():
                break
            age = now - job.created_at
            if job.status == "pending" and age >= half:
                self.storage.jobs.set_status(job, "processing")
                job = self.storage.jobs.get(job.owner, job.request_id) or job
            if job.status == "processing" and age >= self.job_seconds:
                self._finish(job)
                continue
            due = half - age if job.status == "pending" else self.job_seconds - age
            next_due = min(next_due, max(due, 0.005))
        return next_due

    def _finish(self, job: JobRow) -> None:
        try:
            result = compute_result(self.storage, job)
        except JobFailed as exc:
            self.storage.jobs.finish(job, error_message=str(exc))
        except StorageFull:
            raise  # not the job's fault: it stays unfinished
        except Exception as exc:  # an emulator bug: fail this job visibly instead of retrying forever
            log.exception("emulator job %s could not be scored", job.request_id)
            self.storage.jobs.finish(
                job, error_message=f"Emulator error while scoring: {type(exc).__name__}: {exc}"
            )
        else:
            self.storage.jobs.finish(job, result=result)
        if not self.keep_tensors:  # the result is committed: the job never reads them again
            try:
                self.storage.retention.drop_job_tensors(job)
            except StorageFull:  # its files went first (space is back); the rows go at the next step
                self._sweep = True


def video_source(
    storage: Storage, owner: str, request_id: str, video_base64: str, filename: str
) -> dict[str, Any]:
    """Decode and store a ``video_base64`` body; return the job source that points at it.

    Raises:
        ValueError: the string is not standard base64 or decodes to nothing.
        StorageFull: 503, the disk is full (nothing was kept).
    """
    try:
        data = base64.b64decode(video_base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"video_base64 is not standard base64 ({exc}).") from exc
    if not data:
        raise ValueError("video_base64 decodes to 0 bytes: must hold a video file.")
    suffix = Path(filename).suffix.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,8}", suffix):
        suffix = ".bin"
    digest = hashlib.sha256(data).hexdigest()
    # The digest in the name keeps a conflicting resubmission from overwriting the job's file.
    path = storage.paths.video_path(owner, f"{request_id}-{digest[:16]}", suffix)
    write_file(storage.space, path, data, what=f"the video of request_id {request_id!r}")
    return {
        "mode": "video_base64",
        "path": path.relative_to(storage.data_dir).as_posix(),
        "filename": filename,
        "sha256": digest,
    }


def fingerprint(source: dict[str, Any]) -> str:
    """What makes two submissions "the same job": the inputs, not where they were stored."""
    stable = {k: v for k, v in source.items() if k not in ("path", "filename")}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()
