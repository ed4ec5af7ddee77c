"""What a run is told and what it tells: the spec, progress callbacks, the summary.

:class:`RunSpec` is built once (from the command line or a library call), checked whole at
construction, and is then the only description of the run every stage and engine reads. A bad
value is refused there, in one line naming the value and the choices, before anything is
started or written: not saved to ``settings.json`` and then failed in every worker.
Kept apart from the stages so that every stage (and every engine) can import it without
importing each other.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from seeknetic_prep.decode.hw import DecodeMode
from seeknetic_prep.decode.profile import ResizeMode, Service
from seeknetic_prep.errors import ExitCode, InvalidArgumentError, StopReason
from seeknetic_prep.pipeline.discover import VIDEO_EXTENSIONS
from seeknetic_prep.pipeline.payloads import SERVICES, parse_services
from seeknetic_prep.util.fsio import atomic_write

__all__ = ["DEFAULT_UPLOADERS", "POLL_THREADS", "SERVICES", "Progress", "RunOptions", "RunSpec", "RunSummary",
           "pin_settings"]

DEFAULT_UPLOADERS = 16
"""Uploads in flight when a run starts (more as the link shows it takes them), before the link
is measured: the probe judges a step once per 16 answered uploads, so on a distant link a run
spends its first round trips on what it starts with. 8, not 4 (link bench, 100 Mbit/s at 300 ms
one-way: 84.0% and 84.9% of the link from 4, 92.0% and 91.8% from 8; 200 Mbit/s at 150 ms:
76.1% -> 85.6%); 16, not 8 (session 12, 120 windows, 50 Mbit/s at 1200 ms one way, the shape
of 200 Mbit/s at 300 ms: 88.4-90.3% from 8, 91.4-92.0% from 16; with 8 the first 16 answers
came at ~55% of the link). The cost is ~50 MB more of bodies in flight at the start."""

POLL_THREADS = 16
"""Status polls in flight at once when the uploads follow the link: each poll costs a round
trip, so the 4 threads of half the starting uploads fell behind a full distant link (50 Mbit/s
at 1200 ms one way: a run took 33-37 s more than its upload, ~6 s of it before the first byte;
6-7 s with more polls; session 12). The poll schedule, not the thread count, sets how often a
job is asked; idle threads wait on the heap."""

BODY_BYTES_IN_FLIGHT = 4e6
"""What an upload in flight holds: its body (3.0 MB on average in the link bench) and more."""


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidArgumentError(f"Invalid {name} {value!r}: must be one of {', '.join(choices)}.")


@dataclass(frozen=True)
class RunSpec:
    """How a run works. ``workers=0`` decodes in a thread of the main process (debugging).

    ``services`` takes the command line's forms too (``"embedding,tagging"``, ``"both"``).
    ``executor`` names an engine of :mod:`seeknetic_prep.executors` (``local``, ``ray``, or one
    an installed package registers), ``executor_address`` where it runs (Ray: the head).
    ``qps``: one client-side request budget for the whole run, engines' nodes included;
    ``max_upload_mbps``: one cap on the bytes the run sends per second, nodes included.
    ``uploaders``: bodies sent at once; None (the default) starts at
    :data:`DEFAULT_UPLOADERS` and follows the link's throughput up to what
    ``upload_memory_mb`` holds (each body in flight is about 3 MB).
    ``unreachable_after_s``: the run stops (state kept, exit 1) when no API call has succeeded
    for this long; until then every unit whose call gives up is tried again later, so an
    outage or a restart of the API only pauses the run. ``plan_ahead``: files probed ahead of
    the decoders, so the progress totals are exact from the start for folders up to this size
    (estimated beyond), while memory stays bounded for a folder of any size. ``max_jobs``: the
    run submits at most this many jobs (a unit found already submitted does not count), then
    stops as a spent quota stops it (``stopped_by == "max_jobs"``, exit 3); a later run continues.

    Raises:
        InvalidArgumentError: a value breaks its rule (the message names it and the choices).

    >>> RunSpec(services="both", resize="pad").services
    ('embedding', 'tagging')
    """

    services: tuple[Service, ...] = SERVICES
    workers: int | None = None
    uploaders: int | None = None
    upload_memory_mb: float = 256.0
    # Each task seeks to its first window and decodes from the keyframe before it, so small
    # tasks decode more with long GOPs (2 windows: +15% CPU on an 8 s GOP 1080p clip); windows
    # stream out as decoded, so a big task no longer delays uploads, only spreads work less.
    windows_per_task: int = 4
    retry_failed: bool = False
    extensions: frozenset[str] = VIDEO_EXTENSIONS
    resize: ResizeMode = "crop"
    decode: DecodeMode = "auto"
    gpu_workers: int | None = None
    executor: str = "local"
    executor_address: str | None = None
    qps: float | None = None
    max_upload_mbps: float | None = None
    job_timeout_s: float = 3600.0
    poll_s: float = 0.3
    max_poll_s: float = 5.0
    unreachable_after_s: float = 300.0
    plan_ahead: int = 2000
    max_jobs: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.services, str):  # the command line's forms, "both" included
            object.__setattr__(self, "services", parse_services(self.services))
        elif not self.services or any(s not in SERVICES for s in self.services):
            raise InvalidArgumentError(
                f"Invalid services {','.join(map(str, self.services))!r}: must be one or more of "
                f"{', '.join(SERVICES)}.")
        _choice("resize", self.resize, get_args(ResizeMode))
        _choice("decode", self.decode, get_args(DecodeMode))
        for name in ("workers", "gpu_workers"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise InvalidArgumentError(f"Invalid {name} {value!r}: must be a whole number >= 0.")
        for name in ("uploaders", "windows_per_task", "plan_ahead", "max_jobs"):
            value = getattr(self, name)
            if name in ("max_jobs", "uploaders") and value is None:  # no limit; found from the link
                continue
            if not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"Invalid {name} {value!r}: must be a whole number >= 1.")
        for name in ("unreachable_after_s", "job_timeout_s", "poll_s", "max_poll_s", "qps",
                     "max_upload_mbps", "upload_memory_mb"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise InvalidArgumentError(f"Invalid {name} {value!r}: must be a number > 0.")
        from seeknetic_prep.executors.registry import executor_names  # entry points: read on demand

        _choice("executor", self.executor, executor_names())

    def pinned(self) -> dict[str, Any]:
        """The settings that change what is uploaded, fixed for an out folder by its first run
        (``settings.json``): units are named by content and window, so a second run with
        another resize would find them done with the other pictures."""
        return {"resize": self.resize}

    @property
    def gpu_worker_count(self) -> int:
        """NVDEC decode processes beside the CPU ones: ``gpu_workers``, else 8 when ``decode``
        may use a CUDA device that is present (NVDEC throughput levelled off at 8 processes in
        the issue's H200 measurement: 730 frames/s, against 607 at 4 and 737 at 16), else 0."""
        if self.gpu_workers is not None:
            return self.gpu_workers
        if self.decode == "cpu":
            return 0
        from seeknetic_prep.decode.hw import cuda_present  # probes for a CUDA library: on demand

        return 8 if cuda_present() else 0

    @property
    def upload_threads(self) -> int:
        """Uploads in flight to start with (and submissions at once)."""
        return self.uploaders if self.uploaders is not None else DEFAULT_UPLOADERS

    @property
    def poll_threads(self) -> int:
        """Status polls at once: :data:`POLL_THREADS` when the uploads follow the link, half
        the uploaders when they are fixed (``--uploaders``)."""
        return max(1, self.uploaders // 2) if self.uploaders is not None else POLL_THREADS

    @property
    def max_uploads(self) -> int | None:
        """The ceiling the link's probing may reach; None: ``uploaders`` was given, kept as is."""
        if self.uploaders is not None:
            return None
        return max(DEFAULT_UPLOADERS, int(self.upload_memory_mb * 1e6 // BODY_BYTES_IN_FLIGHT))

    @property
    def worker_count(self) -> int:
        """Decode processes: ``workers``, or one per core when not given."""
        return self.workers if self.workers is not None else (os.cpu_count() or 1)


RunOptions = RunSpec  # the name library callers used before the spec took over


def pin_settings(out: Path, opt: RunSpec) -> None:
    """Fix the settings that change what is uploaded (:meth:`RunSpec.pinned`) for ``out``, once.

    Units are named by content and window; a second run on the same folder with another resize
    would find them done with the other pictures. Refuse it instead, in one line.
    """
    path = out / "settings.json"
    want = opt.pinned()
    try:
        have = json.loads(path.read_text())
    except FileNotFoundError:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(path, (json.dumps(want) + "\n").encode())  # never half a file after a crash
        return
    except ValueError:
        have = None
    if not isinstance(have, dict):  # guessing could mix two resize modes in one folder
        raise InvalidArgumentError(
            f"Invalid {path}: not the JSON object seeknetic-prep writes (like {json.dumps(want)}); "
            "put back the one its first run wrote, or delete it if every run on this folder used "
            "the same --resize as this one.")
    if have.get("resize", "crop") != opt.resize:
        raise InvalidArgumentError(
            f"Invalid --resize {opt.resize}: {out} was made with --resize {have.get('resize')}; "
            "use that, or another --out.")


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
        """``"retry"`` (a call failed and is tried again), ``"rate_limited"`` (a 429) or ``"busy"``
        (a 503 with ``Retry-After``: the server's disk or upload memory is full for now)."""

    def api_retry(self, reason: str) -> None:
        """Why the last ``"retry"`` happened, in a few words (``the link stalled``,
        ``connection refused``, ``HTTP 503``): said with the count, not just counted."""

    def upload_link(self, meter: Any) -> None:
        """Once, at the start: the run's :class:`~seeknetic_prep.api.link.LinkMeter`
        (bytes sent, how much is on the link, seconds since it last moved), to read as you draw."""


@dataclass
class RunSummary:
    out: Path
    results_path: Path
    files_ok: int = 0
    files_failed: int = 0
    files_unfinished: int = 0
    files_gone: int = 0  # recorded under this run's inputs, no longer there (see pipeline.gone)
    windows: int = 0
    windows_decoded: int = 0
    jobs_completed: int = 0
    jobs_failed: int = 0
    jobs_pending: int = 0
    elapsed_s: float = 0.0
    stopped_by: StopReason | None = None
    stop_message: str | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)  # the first 1000 (memory stays flat)
    failures_not_kept: int = 0  # the ones after those: counted, not kept (`status` lists them all)

    @property
    def failure_count(self) -> int:
        return len(self.failures) + self.failures_not_kept

    @property
    def exit_code(self) -> int:
        """The stop reason's code when the run stopped early (see
        :class:`~seeknetic_prep.errors.ExitCode`), else failures (1) or done (0)."""
        if self.stopped_by is not None and self.stopped_by.exit_code != ExitCode.FAILED:
            return int(self.stopped_by.exit_code)
        if self.stopped_by is not None or self.files_failed or self.jobs_failed or self.jobs_pending:
            return int(ExitCode.FAILED)
        return int(ExitCode.OK)

    def line(self) -> str:
        rate = self.windows_decoded / self.elapsed_s if self.elapsed_s > 0 else 0.0
        text = (
            f"files: {self.files_ok} ok, {self.files_failed} failed"
            + (f", {self.files_unfinished} unfinished" if self.files_unfinished else "")
            + (f", {self.files_gone} gone" if self.files_gone else "")
            + f"; windows: {self.windows} ({self.windows_decoded} decoded now); "
            f"jobs: {self.jobs_completed} completed, {self.jobs_failed} failed"
            + (f", {self.jobs_pending} pending" if self.jobs_pending else "")
            + f"; {self.elapsed_s:.1f} s"
            + (f", {rate:.2f} windows/s" if self.windows_decoded else "")
        )
        return text
