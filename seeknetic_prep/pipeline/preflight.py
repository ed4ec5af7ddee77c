"""Pre-flight: what a run over some paths would do, found without decoding or sending anything.

:func:`plan_run` answers before a run starts: how many files, windows and jobs (a job, one
window for one service, is what the API's quota counts), how many bytes go up, what the out
folder already has, and how long the run should take here. It follows the run's own rules:

* files are listed as a run lists them (:func:`~seeknetic_prep.pipeline.discover.discover`);
* a file the state knows by path, size, mtime and inode is counted from the state (its
  fingerprint and exact duration), without being read;
* any other file is opened for its container header only (no frame decoded, no tail demuxed,
  :func:`~seeknetic_prep.pipeline.worker.estimate_file`), in parallel processes: its windows
  are *estimated* (the run's exact probe can differ by a frame, rarely by a window). Its
  fingerprint (~2.5 MB read) is taken only when it can matter: when the state has units (a
  renamed or copied file is matched by content) or when another file has the same size (the
  same content under two names is worked on once). Hard links are one file;
* bytes are exact for the windows found: a body's size depends only on its window, service and
  request id (:func:`~seeknetic_prep.pipeline.payloads.upload_body_size`), and only units the
  state has not uploaded count;
* the state is read, never written (SQLite ``mode=ro``), so a run may be using it;
* decode speed is measured: the first window still to decode of up to three files (the largest,
  a middle one, the smallest) is decoded and serialized as a run's worker does it, on one FFmpeg
  thread, and its CPU time taken.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from seeknetic_prep.decode.profile import ResizeMode, Service, Window
from seeknetic_prep.decode.sampling import plan_windows
from seeknetic_prep.errors import InvalidArgumentError
from seeknetic_prep.pipeline.discover import VIDEO_EXTENSIONS, discover, no_video_files
from seeknetic_prep.pipeline.payloads import SERVICES, upload_body_size
from seeknetic_prep.pipeline.tasks import DecodeTask, FileEstimate, unit_request_id
from seeknetic_prep.state.readonly import StateView
from seeknetic_prep.util.procs import worker_context

__all__ = ["DecodeSample", "Plan", "plan_run"]

_SAMPLE_FILES = 3
_NO_FINGERPRINT = "0" * 64  # request ids of a content never fingerprinted: same length as real ones
_PRELOAD = ["seeknetic_prep.pipeline.worker", "seeknetic_prep.pipeline.preflight"]


@dataclass(frozen=True)
class DecodeSample:
    """The decode speed measured here: ``windows`` windows of ``files`` decoded and serialized
    for the services asked, one FFmpeg thread, ``cpu_s`` seconds of CPU in all."""

    files: tuple[str, ...]
    windows: int
    cpu_s: float

    @property
    def s_per_window(self) -> float:
        return self.cpu_s / self.windows


@dataclass
class Plan:
    """What a run over ``paths`` into ``out`` would do. Jobs are (window, service) units:
    ``jobs_to_submit`` is what the API's quota would be charged; ``jobs_to_upload`` of them
    still need their body uploaded (``bytes_to_upload`` in all; the others were uploaded by an
    earlier run). ``windows_estimated`` windows come from container headers, the rest from the
    state. ``upload_hours`` at ``bandwidth_mbps``; ``decode_hours`` on ``decode_workers``
    processes at the ``sample``'s speed (``None`` when nothing could be sampled)."""

    paths: list[str]
    out: str
    services: list[Service]
    bandwidth_mbps: float
    decode_workers: int
    files: int = 0
    files_known: int = 0
    files_probed: int = 0
    files_unusable: int = 0
    files_same_content: int = 0
    windows: int = 0
    windows_estimated: int = 0
    windows_to_decode: int = 0
    jobs: int = 0
    jobs_to_submit: int = 0
    jobs_to_upload: int = 0
    jobs_in_flight: int = 0
    jobs_completed: int = 0
    jobs_failed: int = 0
    bytes_to_upload: int = 0
    state: str | None = None
    state_jobs: dict[str, int] = field(default_factory=dict)
    sample: DecodeSample | None = None
    unusable: list[tuple[str, str]] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def upload_hours(self) -> float:
        return self.bytes_to_upload * 8 / (self.bandwidth_mbps * 1e6) / 3600

    @property
    def decode_hours(self) -> float | None:
        if self.sample is None:
            return None if self.windows_to_decode else 0.0
        return self.windows_to_decode * self.sample.s_per_window / self.decode_workers / 3600

    def to_json(self) -> dict[str, Any]:
        """The same fields, grouped as the table shows them (``--json``)."""
        sample = None if self.sample is None else {
            **asdict(self.sample), "files": list(self.sample.files),
            "s_per_window": round(self.sample.s_per_window, 4)}
        return {
            "paths": self.paths, "out": self.out, "services": self.services,
            "estimated": self.windows_estimated > 0,
            "files": {"total": self.files, "known": self.files_known, "probed": self.files_probed,
                      "unusable": self.files_unusable, "same_content": self.files_same_content},
            "windows": {"total": self.windows, "estimated": self.windows_estimated,
                        "to_decode": self.windows_to_decode},
            "jobs": {"total": self.jobs, "to_submit": self.jobs_to_submit, "to_upload": self.jobs_to_upload,
                     "in_flight": self.jobs_in_flight, "completed": self.jobs_completed,
                     "failed": self.jobs_failed},
            "bytes_to_upload": self.bytes_to_upload,
            "out_dir": {"state": self.state, "jobs": self.state_jobs},
            "hours": {"upload": self.upload_hours, "decode": self.decode_hours,
                      "bandwidth_mbps": self.bandwidth_mbps, "decode_workers": self.decode_workers},
            "decode_sample": sample,
            "unusable": [{"path": p, "reason": r} for p, r in self.unusable],
            "elapsed_s": round(self.elapsed_s, 3),
        }


def plan_run(
    paths: Iterable[str | Path],
    *,
    out: str | Path,
    services: Sequence[Service] = SERVICES,
    extensions: frozenset[str] = VIDEO_EXTENSIONS,
    resize: ResizeMode = "crop",
    bandwidth_mbps: float = 100.0,
    decode_workers: int | None = None,
    processes: int | None = None,
    sample: bool = True,
) -> Plan:
    """What ``run`` over ``paths`` into ``out`` would do, from headers and the state alone.

    Args:
        paths: files and folders, as for ``run``.
        out: the run's output folder; its ``state.sqlite`` is read (never written), and a
            folder that does not exist yet means nothing is done.
        services, extensions, resize: as for the run (they change the jobs and their ids).
        bandwidth_mbps: the upload bandwidth the hours are estimated at.
        decode_workers: decode processes the run will use (default: one per core).
        processes: processes that read the headers (default: one per core).
        sample: measure the decode speed on a few windows (else ``decode_hours`` is ``None``).

    Returns:
        The :class:`Plan`.

    Raises:
        InvalidArgumentError: a path does not exist, none is video, or a number breaks its rule.
        StateError: ``out`` holds a state this version cannot read.

    >>> plan = plan_run(["videos/"], out="seeknetic-out")  # doctest: +SKIP
    >>> plan.jobs_to_submit, plan.bytes_to_upload
    (5320, 15975540320)
    """
    started = time.monotonic()
    if not (isinstance(bandwidth_mbps, (int, float)) and 0 < bandwidth_mbps < float("inf")):
        raise InvalidArgumentError(f"Invalid bandwidth_mbps {bandwidth_mbps!r}: must be a number > 0.")
    workers = decode_workers if decode_workers is not None else (os.cpu_count() or 1)
    if not isinstance(workers, int) or workers < 1:
        raise InvalidArgumentError(f"Invalid decode_workers {workers!r}: must be a whole number >= 1.")
    plist = list(paths)
    found = [str(p) for p in discover(plist, extensions=extensions)]
    if not found:
        raise no_video_files(plist, extensions)
    out_dir = Path(out)
    plan = Plan(paths=[str(p) for p in plist], out=str(out_dir), services=list(services),
                bandwidth_mbps=float(bandwidth_mbps), decode_workers=workers, files=len(found))
    db = out_dir / "state.sqlite"
    state = StateView(db) if db.is_file() else None
    try:
        if state is not None:
            plan.state, plan.state_jobs = str(db), state.counts()
        _read_headers(plan, found, state, processes, services=services, resize=resize, sample=sample)
    finally:
        if state is not None:
            state.close()
    plan.elapsed_s = time.monotonic() - started
    return plan


def _read_headers(plan: Plan, found: list[str], state: StateView | None, processes: int | None, *,
                  services: Sequence[Service], resize: ResizeMode, sample: bool) -> None:
    """Count ``found`` into ``plan`` from their headers in a pool, then time a few windows."""
    pool = _pool(processes)
    try:
        to_decode = _count(plan, found, state, pool, resize=resize)
        if sample and to_decode:
            plan.sample = _measure(pool, to_decode, services, resize)
    except BaseException:  # Ctrl-C: the files not read yet are dropped, not waited for
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _pool(processes: int | None) -> ProcessPoolExecutor:
    """Processes set up as a run's decode workers (one FFmpeg thread, no GPU), forked from a
    fork server that has imported PyAV once (not from this process, which may hold threads)."""
    # the PyAV side, loaded in the worker processes only
    from seeknetic_prep.pipeline.worker import worker_init

    return ProcessPoolExecutor(max_workers=processes or os.cpu_count() or 1,
                               mp_context=worker_context(_PRELOAD), initializer=worker_init,
                               initargs=(1, False))


@dataclass
class _Content:
    """One content (a fingerprint, or a file whose size no other file shares): its windows,
    whether they are estimated, its units in the state, and its biggest file's path."""

    path: str
    size: int
    fingerprint: str | None
    windows: list[Window]
    estimated: bool
    units: dict[tuple[int, str], tuple[Window, str, str]]


def _count(plan: Plan, found: list[str], state: StateView | None, pool: Executor, *,
           resize: ResizeMode) -> list[tuple[_Content, Window]]:
    """Fill ``plan``'s counts; return the first window still to decode of each content."""
    stats: dict[str, os.stat_result] = {}
    for path in found:
        with contextlib.suppress(OSError):  # the probe says why
            stats[path] = os.stat(path)
    contents: dict[object, _Content] = {}

    def add(key: object, path: str, size: int, fp: str | None, duration_ms: int, estimated: bool) -> None:
        if key in contents:
            plan.files_same_content += 1
            return
        units = state.units(fp) if state is not None and fp is not None else {}
        exact = sorted({w for w, _, _ in units.values()})  # an earlier run's windows, from its probe
        contents[key] = _Content(path, size, fp, exact or plan_windows(duration_ms),
                                 estimated and not exact, units)

    unknown: list[str] = []
    for path in found:
        st = stats.get(path)
        hit = state.known(path, st) if state is not None and st is not None else None
        if st is None or hit is None:
            unknown.append(path)
            continue
        plan.files_known += 1
        add(hit[0], path, st.st_size, hit[0], hit[1], False)
    estimates = _estimate_all(unknown, stats, pool, fingerprint_all=bool(plan.state_jobs))
    for path in unknown:
        est = estimates[path]
        plan.files_probed += 1
        if est.duration_ms is None:
            plan.files_unusable += 1
            plan.unusable.append((path, est.error or "unusable"))
        else:  # without a fingerprint, its size is its own: the file (its hard links) is the content
            add(est.fingerprint or ("file", est.path), path, est.size, est.fingerprint, est.duration_ms, True)
    to_decode: list[tuple[_Content, Window]] = []
    for content in contents.values():
        first = _tally(plan, content, resize=resize)
        if first is not None:
            to_decode.append((content, first))
    return to_decode


def _estimate_all(paths: list[str], stats: dict[str, os.stat_result], pool: Executor, *,
                  fingerprint_all: bool) -> dict[str, FileEstimate]:
    """Each path's :class:`FileEstimate`, read in ``pool``: hard links (same device and inode)
    once, fingerprinted only where content can be shared (``fingerprint_all``: the state has
    units to match; else only files whose size another file has)."""
    sizes: dict[int, set[tuple[int, int]]] = {}
    for each in stats.values():
        sizes.setdefault(each.st_size, set()).add((each.st_dev, each.st_ino))
    first_of: dict[tuple[int, int], str] = {}
    linked: dict[str, str] = {}
    jobs: list[tuple[str, bool]] = []
    for path in paths:
        st = stats.get(path)
        if st is not None:
            ident = (st.st_dev, st.st_ino)
            if ident in first_of:
                linked[path] = first_of[ident]
                continue
            first_of[ident] = path
        jobs.append((path, st is not None and (fingerprint_all or len(sizes[st.st_size]) > 1)))
    chunk = max(1, min(64, len(jobs) // (8 * (os.cpu_count() or 1))))
    done = {e.path: e for e in pool.map(_estimate, jobs, chunksize=chunk)}
    return {path: done[linked.get(path, path)] for path in paths}


def _estimate(job: tuple[str, bool]) -> FileEstimate:
    # the PyAV side, loaded in the worker processes only
    from seeknetic_prep.pipeline.worker import estimate_file

    return estimate_file(job[0], fingerprint=job[1])


def _tally(plan: Plan, content: _Content, *, resize: ResizeMode) -> Window | None:
    """Count one content's windows and units; return its first window still to decode."""
    first: Window | None = None
    fp = content.fingerprint or _NO_FINGERPRINT
    plan.windows += len(content.windows)
    plan.windows_estimated += len(content.windows) if content.estimated else 0
    for window in content.windows:
        decode = False
        for service in plan.services:
            unit = content.units.get((window.index, service))
            bounds = (window.index, window.start_ms, window.end_ms)
            status, rid = (unit[1], unit[2]) if unit else (
                "planned", unit_request_id(fp, bounds, service, resize=resize))
            plan.jobs += 1
            if status == "planned":
                plan.jobs_to_submit += 1
                plan.jobs_to_upload += 1
                plan.bytes_to_upload += upload_body_size(window, service, rid)
                decode = True
            elif status == "uploaded":
                plan.jobs_to_submit += 1
            elif status == "submitted":
                plan.jobs_in_flight += 1
            elif status == "completed":
                plan.jobs_completed += 1
            else:
                plan.jobs_failed += 1
        if decode:
            plan.windows_to_decode += 1
            first = first or window
    return first


def _measure(pool: Executor, to_decode: list[tuple[_Content, Window]], services: Sequence[Service],
             resize: ResizeMode) -> DecodeSample | None:
    """Decode one window of each of a few files (the largest, a middle one, the smallest) in
    the pool, as a run's worker does; a file that fails is replaced by the next one."""
    ranked = sorted(to_decode, key=lambda cw: -cw[0].size)
    picks = list(dict.fromkeys([0, len(ranked) // 2, len(ranked) - 1]))
    order = picks + [i for i in range(len(ranked)) if i not in picks][:2 * _SAMPLE_FILES]
    files: list[str] = []
    windows, cpu_s = 0, 0.0
    while order and len(files) < _SAMPLE_FILES:
        batch = [ranked[i] for i in order[:_SAMPLE_FILES - len(files)]]
        del order[:len(batch)]
        tasks = [DecodeTask(path=c.path, fingerprint=c.fingerprint or _NO_FINGERPRINT,
                            windows=((w.index, w.start_ms, w.end_ms),),
                            request_ids=tuple((w.index, s, f"sample-{s}") for s in services),
                            resize=resize, decode="cpu") for c, w in batch]
        for task, took in zip(tasks, pool.map(_decode_timed, tasks), strict=True):
            if took is not None:
                files.append(task.path)
                windows += took[0]
                cpu_s += took[1]
    return DecodeSample(tuple(files), windows, cpu_s) if windows else None


def _decode_timed(task: DecodeTask) -> tuple[int, float] | None:
    """(windows, CPU seconds) to decode and serialize ``task`` here; ``None`` if it failed."""
    # the PyAV side, loaded in the worker processes only
    from seeknetic_prep.errors import SeekneticPrepError
    from seeknetic_prep.pipeline.worker import encode_windows

    started = time.process_time()
    try:
        count = sum(1 for w in encode_windows(task) if w.wanted)
    except SeekneticPrepError:
        return None
    took = time.process_time() - started
    return (count, took) if count and math.isfinite(took) else None
