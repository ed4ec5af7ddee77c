"""What a run is told and what it tells: options, progress callbacks, the summary.

Kept apart from the stages so that every stage (and every engine) can import them without
importing each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .discover import VIDEO_EXTENSIONS
from .errors import InvalidArgumentError

__all__ = ["SERVICES", "Progress", "RunOptions", "RunSummary"]

SERVICES = ("embedding", "tagging")


@dataclass(frozen=True)
class RunOptions:
    """How a run works. ``workers=0`` decodes in a thread of the main process (debugging).

    ``unreachable_after_s``: the run stops (state kept, exit 1) when no API call has succeeded
    for this long; until then every unit whose call gives up is tried again later, so an
    outage or a restart of the API only pauses the run. ``plan_ahead``: files probed ahead of
    the decoders, so the progress totals are exact from the start for folders up to this size
    (estimated beyond), while memory stays bounded for a folder of any size.
    """

    services: tuple[str, ...] = SERVICES
    workers: int | None = None
    uploaders: int = 4
    # Each task seeks to its first window and decodes from the keyframe before it, so small
    # tasks decode more with long GOPs (2 windows: +15% CPU on an 8 s GOP 1080p clip); windows
    # stream out as decoded, so a big task no longer delays uploads, only spreads work less.
    windows_per_task: int = 4
    retry_failed: bool = False
    extensions: frozenset[str] = VIDEO_EXTENSIONS
    resize: str = "crop"
    decode: str = "auto"
    gpu_workers: int | None = None
    job_timeout_s: float = 3600.0
    poll_s: float = 0.3
    max_poll_s: float = 5.0
    unreachable_after_s: float = 300.0
    plan_ahead: int = 2000

    @property
    def gpu_worker_count(self) -> int:
        """NVDEC decode processes beside the CPU ones: ``gpu_workers``, else 8 when ``decode``
        may use a CUDA device that is present (NVDEC throughput levelled off at 8 processes in
        the issue's H200 measurement: 730 frames/s, against 607 at 4 and 737 at 16), else 0."""
        if self.gpu_workers is not None:
            return self.gpu_workers
        if self.decode == "cpu":
            return 0
        from .hwdecode import cuda_present

        return 8 if cuda_present() else 0

    @property
    def worker_count(self) -> int:
        """Decode processes: ``workers``, or one per core when not given."""
        return self.workers if self.workers is not None else (os.cpu_count() or 1)

    def __post_init__(self) -> None:
        bad = [s for s in self.services if s not in SERVICES]
        if bad or not self.services:
            raise InvalidArgumentError(
                f"Invalid services {','.join(self.services)!r}: must be one or more of embedding, tagging."
            )
        if self.workers is not None and self.workers < 0:
            raise InvalidArgumentError(f"Invalid workers {self.workers}: must be >= 0.")
        if self.gpu_workers is not None and self.gpu_workers < 0:
            raise InvalidArgumentError(f"Invalid gpu_workers {self.gpu_workers}: must be >= 0.")
        if self.decode not in ("auto", "cpu", "cuda"):
            raise InvalidArgumentError(f"Invalid decode {self.decode!r}: must be one of auto, cpu, cuda.")
        if self.uploaders < 1:
            raise InvalidArgumentError(f"Invalid uploaders {self.uploaders}: must be >= 1.")
        if self.unreachable_after_s <= 0:
            raise InvalidArgumentError(
                f"Invalid unreachable_after_s {self.unreachable_after_s}: must be > 0.")
        if self.windows_per_task < 1:
            raise InvalidArgumentError(f"Invalid windows_per_task {self.windows_per_task}: must be >= 1.")


class Progress:
    """Callbacks a run makes as it goes; override what you display. Calls are serialized."""

    def files_found(self, count: int) -> None:
        """Discovery is done: ``count`` candidate files will be worked on."""

    def file_planned(self, path: str, *, windows: int, to_decode: int, jobs: int) -> None:
        """A file was probed: ``windows`` in all, ``to_decode`` still to decode, ``jobs`` units
        still to finish (resumed runs skip what is done)."""

    def windows_decoded(self, count: int) -> None:
        """``count`` more windows were decoded."""

    def job_finished(self, request_id: str, status: str) -> None:
        """A unit reached ``completed`` or ``failed``."""

    def file_finished(self, path: str, *, ok: bool, windows: int, error: str | None) -> None:
        """Every unit of a file is terminal (or it could not be preprocessed)."""

    def totals(self, *, files: int, jobs: int, exact: bool) -> None:
        """This run's work so far: ``jobs`` units to finish over ``files`` files; ``exact`` once
        every file is probed (before that ``jobs`` is estimated from the files probed)."""

    def file_started(self, path: str) -> None:
        """A file's first window went to a decoder."""

    def api_event(self, kind: str) -> None:
        """``"retry"`` (a call failed and is tried again) or ``"rate_limited"`` (a 429)."""


@dataclass
class RunSummary:
    out: Path
    results_path: Path
    files_ok: int = 0
    files_failed: int = 0
    files_unfinished: int = 0
    windows: int = 0
    windows_decoded: int = 0
    jobs_completed: int = 0
    jobs_failed: int = 0
    jobs_pending: int = 0
    elapsed_s: float = 0.0
    stopped_by: str | None = None  # "auth", "quota", "interrupt", "unreachable", "crashed"
    stop_message: str | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 all completed; 2 auth; 3 quota; 1 failures or a crashed stage thread (whatever it
        left unfinished); 130 interrupted (precedence 2, 3, 1)."""
        if self.stopped_by == "auth":
            return 2
        if self.stopped_by == "quota":
            return 3
        if self.stopped_by == "interrupt":
            return 130
        if self.stopped_by == "crashed" or self.files_failed or self.jobs_failed or self.jobs_pending:
            return 1
        return 0

    def line(self) -> str:
        rate = self.windows_decoded / self.elapsed_s if self.elapsed_s > 0 else 0.0
        text = (
            f"files: {self.files_ok} ok, {self.files_failed} failed"
            + (f", {self.files_unfinished} unfinished" if self.files_unfinished else "")
            + f"; windows: {self.windows} ({self.windows_decoded} decoded now); "
            f"jobs: {self.jobs_completed} completed, {self.jobs_failed} failed"
            + (f", {self.jobs_pending} pending" if self.jobs_pending else "")
            + f"; {self.elapsed_s:.1f} s"
            + (f", {rate:.2f} windows/s" if self.windows_decoded else "")
        )
        return text
