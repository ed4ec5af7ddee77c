"""What ``run`` shows while it works: one honest bar, the files in flight, the API's weather.

On a terminal (tqdm, two lines)::

    windows  42%|████▏     | 20/48 [00:31<00:43, 0.64 win/s]
    working on: clip07.mp4, clip12.mp4 (+2) · sent 412.3 MB, 2.4 MB/s, ~1.2 GB left, 8 min · failed 1

* The bar counts windows (finished jobs / services), against every window this run has to
  finish. Files are probed ahead of the decoders, so the total is exact within seconds; until
  every file is probed the bar has no total and the second line shows the estimate
  (``~48 windows``); the bar's total is set once, exact, and never moves. The ETA is tqdm's,
  over windows: the unit that costs the time.
* Files that a resumed run finds already done are counted once ("already done: N files"),
  not listed.
* Failures are written above the bar as they happen, and repeated by the command at the end.
* The upload link in bytes (:class:`~seeknetic_prep.api.link.LinkMeter`): megabytes sent,
  the rate over the last seconds, and the bytes left with the time they take at that rate
  (jobs left to upload times the mean body so far): when the link is the bottleneck, this
  is the ETA to read. When bytes are on the link and nothing has moved for
  :data:`~seeknetic_prep.api.link.STALL_S` (a body waiting for its answer is not on the link),
  ``link stalled 12 s``. Both lines are redrawn
  every second by a ticker, so a stall never freezes the screen (its clock included).

Without a terminal (``--quiet``, a pipe, CI) it prints one line per file instead, and the
same "already done" count. tqdm was kept rather than moving to rich: the screen needs one bar
and one status line, which tqdm draws in place with no new dependency.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from seeknetic_prep.api.link import LinkMeter, stalled
from seeknetic_prep.pipeline.driver import Progress
from seeknetic_prep.state.store import display_path  # a name that is not UTF-8 prints escaped, never crashes
from seeknetic_prep.util.text import printable

__all__ = ["RunDisplay", "link_text"]

_SHOWN_IN_FLIGHT = 2
_RATE_WINDOW_S = 5.0


def link_text(sent: int, sending: int, idle_s: float, rate_bytes_s: float | None,
              left_bytes: float | None = None) -> str:
    """The link's part of the status line: ``sent 412.3 MB, 2.4 MB/s``, with what is left
    when known (``, ~1.2 GB left, 8 min``), or with a stall ``sent 412.3 MB · link stalled
    12 s``; empty before the first byte."""
    if sent == 0 and sending == 0:
        return ""
    text = f"sent {sent / 1e6:.1f} MB"
    if stalled(sending, idle_s):
        return f"{text} · link stalled {idle_s:.0f} s"
    if rate_bytes_s is None:
        return text
    text += f", {rate_bytes_s / 1e6:.1f} MB/s"
    if left_bytes is not None and left_bytes > 0 and rate_bytes_s > 0:
        text += f", ~{_size(left_bytes)} left, {_duration(left_bytes / rate_bytes_s)}"
    return text


def _size(count: float) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.0f} MB"


def _duration(seconds: float) -> str:
    """``45 s``, ``8 min``, ``2.3 h``: an ETA's precision, not a stopwatch's."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 90 * 60 else f"{seconds / 3600:.1f} h"


class RunDisplay(Progress):
    def __init__(self, *, quiet: bool, services: int) -> None:
        self.quiet = quiet
        self.services = max(1, services)
        self.lock = threading.Lock()
        self.in_flight: dict[str, None] = {}
        self.counts = {"retry": 0, "rate_limited": 0, "busy": 0, "failed": 0}
        self.already_done = 0
        self._done_before: set[str] = set()
        self.total_jobs = 0
        self.exact = False
        self.files = 0
        self._last_status = 0.0
        self.meter: LinkMeter | None = None
        self.retry_reasons: dict[str, int] = {}
        self._samples: list[tuple[float, int]] = []  # (time, bytes sent): the rate's window
        self._ticking = threading.Event()
        self.bar: Any = None
        self.status: Any = None
        if not quiet:
            from tqdm import tqdm  # only on a terminal: a quiet run never draws a bar

            fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} [{elapsed}<{remaining}, {rate_fmt}]"
            self.bar = tqdm(total=0, desc="windows", unit="win", position=0, dynamic_ncols=True,
                            bar_format=fmt)
            self.status = tqdm(total=0, position=1, bar_format="{desc}", dynamic_ncols=True)

    # ------------------------------------------------------------------ callbacks

    def files_found(self, count: int) -> None:
        with self.lock:
            self.files = count
            self._status()

    def totals(self, *, files: int, jobs: int, exact: bool) -> None:
        with self.lock:
            if self.exact:
                return
            self.total_jobs, self.exact = jobs, exact
            if self.bar is not None and exact:  # set once: a total that moves is no total
                self.bar.total = jobs / self.services
                self.bar.refresh()
            self._status(force=True)

    def file_planned(self, path: str, *, windows: int, to_decode: int, jobs: int) -> None:
        if jobs == 0 and to_decode == 0:
            with self.lock:
                self.already_done += 1
                self._done_before.add(path)  # reported as finished right after: not listed

    def file_started(self, path: str) -> None:
        with self.lock:
            self.in_flight[_shown(Path(path).name)] = None
            self._status(force=True)

    def job_finished(self, request_id: str, status: str) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.update(1 / self.services)
            if status == "failed":
                self.counts["failed"] += 1
            self._status()

    def api_event(self, kind: str) -> None:
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self._status()

    def api_retry(self, reason: str) -> None:
        with self.lock:
            self.retry_reasons[reason] = self.retry_reasons.get(reason, 0) + 1
            self._status()

    def upload_link(self, meter: Any) -> None:
        self.meter = meter
        if self.status is not None:  # redraw every second: a stall must not freeze the screen
            threading.Thread(target=self._tick, daemon=True, name="display-ticker").start()

    def _tick(self) -> None:
        while not self._ticking.wait(1.0):
            with self.lock:
                if self.bar is not None:
                    self.bar.refresh()  # its clock and ETA move even when nothing finishes
                self._status(force=True)

    def file_finished(self, path: str, *, ok: bool, windows: int, error: str | None) -> None:
        reason = _shown(error if error and error.startswith(path) else f"{path}: {error}")
        with self.lock:
            self.in_flight.pop(_shown(Path(path).name), None)
            if path in self._done_before:
                self._done_before.discard(path)
                if ok:
                    return
            if self.bar is not None:
                if not ok:
                    self.bar.write(f"failed  {reason}")
                self._status(force=True)
                return
        if ok:
            print(f"ok      {_shown(path)} ({windows} window{'s' if windows != 1 else ''})", flush=True)
        else:
            print(f"failed  {reason}", flush=True)

    # ------------------------------------------------------------------ drawing

    def _status(self, force: bool = False) -> None:
        if self.status is None:
            return
        now = time.monotonic()
        if not force and now - self._last_status < 0.2:
            return
        self._last_status = now
        parts = []
        if not self.exact:
            estimate = self.total_jobs / self.services
            parts.append(f"probing files: ~{estimate:.0f} windows in {self.files} files")
        names = list(self.in_flight)
        if names:
            more = f" (+{len(names) - _SHOWN_IN_FLIGHT})" if len(names) > _SHOWN_IN_FLIGHT else ""
            parts.append("working on: " + ", ".join(names[:_SHOWN_IN_FLIGHT]) + more)
        if self.already_done:
            parts.append(f"already done: {self.already_done} files")
        if self.meter is not None and (link := self._link(self.meter, now)):
            parts.append(link)
        parts += [f"{label} {self.counts[key]}" + (self._why() if key == "retry" else "") for key, label in
                  (("retry", "retries"), ("rate_limited", "rate-limited"), ("busy", "server busy"),
                   ("failed", "failed"))
                  if self.counts.get(key)]
        self.status.set_description_str(" · ".join(parts) or "starting", refresh=True)

    def _why(self) -> str:
        """`` (the link stalled 2, HTTP 503 1)``: the retries' reasons, most frequent first."""
        top = sorted(self.retry_reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        return " (" + ", ".join(f"{why} {n}" for why, n in top) + ")" if top else ""

    def _link(self, meter: LinkMeter, now: float) -> str:
        sent, sending, idle_s = meter.snapshot()
        self._samples = [(t, n) for t, n in self._samples if now - t <= _RATE_WINDOW_S] + [(now, sent)]
        first_t, first_n = self._samples[0]
        rate = (sent - first_n) / (now - first_t) if now - first_t >= 1.0 else None
        return link_text(sent, sending, idle_s, rate, self._left_bytes())

    def _left_bytes(self) -> float | None:
        """Bytes still to upload: the jobs left to upload times the mean body so far. Only
        with exact totals and bodies this process uploaded (a Ray run's nodes upload theirs)."""
        uploads, upload_bytes = self.meter.answered() if self.meter is not None else (0, 0)
        if not self.exact or not uploads:
            return None
        return max(0, self.total_jobs - uploads) * upload_bytes / uploads

    def close(self) -> None:
        self._ticking.set()
        with self.lock:  # not while the ticker draws
            for bar in (self.bar, self.status):
                if bar is not None:
                    bar.close()
        if self.already_done:
            print(f"already done: {self.already_done} files (finished by an earlier run)", flush=True)


def _shown(path: str) -> str:
    """A path or a message about one, for the terminal: bytes that are not UTF-8 escaped as
    ``\\xe9``, control characters (ESC, CR, newlines in a file's name) escaped, never obeyed."""
    return printable(display_path(path))
