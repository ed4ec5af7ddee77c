"""``report.html``: one static page that shows what a run did, openable offline.

Totals and throughput; every failed file and job with its reason; per file, each window as a
strip of thumbnails (its first, middle and last frames, decoded again from the source at the
exact presentation times the run used) with its tags; and, for a few windows, their nearest
neighbours by embedding. Images are small JPEGs inlined as ``data:`` URIs and the CSS is
inline, so the file needs no network and no folder beside it.

This module draws the page; what it shows is read by :mod:`.report_data` (:func:`load_run`,
the one place the report touches storage). Work is capped for big runs (``max_files``,
``max_windows``); the page says what it left out.
"""

from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from seeknetic_prep.errors import InvalidArgumentError, MediaError, StateError
from seeknetic_prep.results.report_data import (
    MAX_FAILURES,
    FailedJob,
    FileEntry,
    RunData,
    WindowEntry,
    load_run,
)
from seeknetic_prep.state.rows import display_path
from seeknetic_prep.state.thumbs import THUMB_FRAMES, THUMB_PX, ThumbStore
from seeknetic_prep.util.fsio import atomic_write
from seeknetic_prep.util.readers import cache_for, writable

__all__ = ["FailedJob", "FileEntry", "RunData", "WindowEntry", "load_run", "write_report"]

THUMB = THUMB_PX
"""Thumbnail side in pixels: 3 per window, about 2.5 kB each as JPEG."""
_NEIGHBOUR_QUERIES = 4
_NEIGHBOURS = 3


def write_report(out: Path, *, max_files: int = 30, max_windows: int = 12) -> Path:
    """Write ``<out>/report.html`` for the run in ``out`` (in the user's cache when ``out``
    cannot be written, see :mod:`seeknetic_prep.util.readers`); return its path.

    Args:
        out: a run's output folder (``run --out``).
        max_files: files with thumbnails (the first by path); the totals and failures cover all.
        max_windows: windows shown per file, spread evenly over it.

    Raises:
        InvalidArgumentError: ``out`` holds no run or cannot be written, or a cap is < 1.
    """
    if max_files < 1 or max_windows < 1:
        raise InvalidArgumentError(
            f"Invalid caps max_files={max_files}, max_windows={max_windows}: must be >= 1."
        )
    data = load_run(out, max_files=max_files)
    for entry in data.shown:
        entry.windows = _spread(entry.windows, max_windows)
    thumbs = _all_thumbnails(Path(out), data.shown)
    page = _page(data, thumbs, max_files=max_files, max_windows=max_windows)
    # Another account's folder or a read-only mount: the page goes to this user's cache.
    folder = Path(out) if writable(Path(out)) else cache_for(Path(out), "report")
    dest = folder / "report.html"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(dest, page.encode("utf-8"))
    except OSError as exc:
        raise InvalidArgumentError(f"Invalid --out {str(out)!r}: cannot write {dest} "
                                   f"({_why(exc)}).") from exc
    return dest


def _spread(windows: list[WindowEntry], cap: int) -> list[WindowEntry]:
    if len(windows) <= cap:
        return windows
    picks = sorted({round(i * (len(windows) - 1) / (cap - 1)) for i in range(cap)}) if cap > 1 else [0]
    return [windows[i] for i in picks]


def _all_thumbnails(out: Path, shown: list[FileEntry]) -> dict[str, dict[int, list[str]] | str]:
    """Each shown file's strips: kept by the run when it decoded the windows
    (:mod:`seeknetic_prep.state.thumbs`), so no source is opened; a file with windows the run
    kept none of (decoded by a version before) is decoded once for those only."""
    kept: dict[tuple[str, int], list[bytes]] = {}
    if ThumbStore.exists(out):
        try:
            store = ThumbStore(out, readonly=True)
        except StateError:
            store = None
        if store is not None:
            kept = store.get((e.fingerprint, w.index) for e in shown if e.fingerprint for w in e.windows)
            store.close()
    out_map: dict[str, dict[int, list[str]] | str] = {}
    for entry in shown:
        have = {w.index: [_uri(j) for j in kept[(entry.fingerprint, w.index)]] for w in entry.windows
                if entry.fingerprint and (entry.fingerprint, w.index) in kept}
        missing = [w for w in entry.windows if w.index not in have]
        if not missing:
            out_map[entry.path] = have
            continue
        decoded = _thumbnails(replace(entry, windows=missing))
        out_map[entry.path] = {**decoded, **have} if isinstance(decoded, dict) else (have or decoded)
    return out_map


def _uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _thumbnails(entry: FileEntry) -> dict[int, list[str]] | str:
    """Window index -> data URIs of its strip, decoded at the run's own frame times; or why not.

    One pass over the file (:func:`~seeknetic_prep.decode.media.decode_frames_at` with every wanted
    time), scaled by swscale straight to thumbnail size, then made upright and cropped as the
    run's frames were (``crop``, the default).
    """
    # PyAV: only for thumbnails the state has not kept
    from seeknetic_prep.decode.media import decode_frames_at, probe_open
    from seeknetic_prep.decode.transform import fit, scaled_size, upright
    from seeknetic_prep.pipeline.payloads import file_fingerprint

    wanted = [(w.index, w.frame_times_ms[i]) for w in entry.windows if w.frame_times_ms
              for i in THUMB_FRAMES]
    if not wanted:
        return {}
    try:
        if entry.fingerprint and file_fingerprint(entry.path) != entry.fingerprint:
            return "the file has changed since the run: no thumbnails"
        info, container = probe_open(entry.path)
        order = sorted(range(len(wanted)), key=lambda k: wanted[k][1])
        size = scaled_size(info.width, info.height, "crop", THUMB)
        frames = decode_frames_at(info, [wanted[k][1] for k in order], size, container=container)
        pictures: dict[int, str] = {}
        for k, (_, rgb) in zip(order, frames, strict=True):
            pictures[k] = _jpeg(fit(upright(rgb, info.rotation), "crop", THUMB))
    except (MediaError, OSError) as exc:
        return f"no thumbnails: {exc}"
    out: dict[int, list[str]] = {}
    for k, (index, _) in enumerate(wanted):
        out.setdefault(index, []).append(pictures[k])
    return out


def _jpeg(rgb: np.ndarray) -> str:
    # Pillow: only to encode thumbnails
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=80)
    return _uri(buf.getvalue())


_Hit = tuple[float, FileEntry, WindowEntry]


def _neighbours(data: RunData) -> list[tuple[FileEntry, WindowEntry, list[_Hit]]]:
    """For the first window of up to 4 files, the 3 most similar other shown windows (cosine)."""
    pool = [(e, w) for e in data.shown for w in e.windows if w.embedding is not None]
    if len(pool) < 2:
        return []
    matrix = np.stack([w.embedding for _, w in pool if w.embedding is not None]).astype(np.float64)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    queries: list[int] = []
    seen: set[str] = set()
    for i, (e, _) in enumerate(pool):
        if e.path not in seen and len(queries) < _NEIGHBOUR_QUERIES:
            seen.add(e.path)
            queries.append(i)
    found = []
    for q in queries:
        scores = matrix @ matrix[q]
        scores[q] = -np.inf
        best = [int(i) for i in np.argsort(-scores)[:_NEIGHBOURS] if np.isfinite(scores[i])]
        found.append((pool[q][0], pool[q][1], [(float(scores[i]), *pool[i]) for i in best]))
    return found


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
  background:#f6f6f7;color:#1d1d1f}
main{max-width:1200px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px}
h3{font-size:14px;margin:18px 0 6px;word-break:break-all}
.muted{color:#6e6e73}.bad{color:#b3261e}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #e2e2e5;border-radius:8px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:20px}
table{border-collapse:collapse;background:#fff;width:100%;font-size:13px}
td,th{border:1px solid #e2e2e5;padding:4px 8px;text-align:left;vertical-align:top;word-break:break-word}
.strip{display:flex;gap:10px;overflow-x:auto;padding-bottom:6px}
.win{background:#fff;border:1px solid #e2e2e5;border-radius:8px;padding:6px;flex:0 0 auto;width:292px}
.win img{width:96px;height:96px;display:inline-block;margin-right:1px;background:#ddd}
.win .t{font-size:12px;color:#6e6e73;margin:2px 0}
.tag{display:inline-block;background:#eef2ff;color:#233;border-radius:10px;padding:0 7px;
  margin:2px 2px 0 0;font-size:11px}
.nn{display:flex;gap:10px;align-items:flex-start;flex-wrap:wrap;margin-bottom:14px}
.nn .win{width:180px}.nn .q{border-color:#f0a030}
"""


def _page(data: RunData, thumbs: dict[str, dict[int, list[str]] | str], *, max_files: int,
          max_windows: int) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>seeknetic-prep report: {e(display_path(str(data.out)))}</title><style>{_CSS}</style>"
        "</head><body><main>",
        f"<h1>seeknetic-prep run report</h1><div class='muted'>{e(display_path(str(data.out.resolve())))} "
        "&middot; "
        f"written {e(time.strftime('%Y-%m-%d %H:%M:%S'))}</div>",
        *_totals(data),
        *_failures(data),
        *_files(data, thumbs, max_files=max_files, max_windows=max_windows),
        *_nearest(data, thumbs),
        "</main></body></html>",
    ]
    return "\n".join(parts)


def _totals(data: RunData) -> list[str]:
    c = data.counts
    total_jobs = sum(c.values())
    rate, per_job = data.throughput.rates() or ("n/a", "")
    return [
        "<h2>Totals</h2><div class='cards'>",
        _card("files", f"{data.files_ok} ok", f"{len(data.failed_files)} failed"),
        _card("jobs", f"{c.get('completed', 0)} completed", f"{c.get('failed', 0)} failed, "
              f"{total_jobs - c.get('completed', 0) - c.get('failed', 0)} unfinished of {total_jobs}"),
        _card("throughput", rate, per_job),
        _card("time", f"{data.throughput.busy_s:.1f} s", f"over {data.throughput.runs} run(s)"),
        "</div>",
    ]


def _failures(data: RunData) -> list[str]:
    e = html.escape
    parts = ["<h2>Failures</h2>"]
    if not data.failed_files and not data.failed_jobs_total:
        parts.append("<p class='muted'>None: every file was preprocessed and every finished job "
                     "completed.</p>")
    see = "<p class='muted'>and {} more: see <code>seeknetic-prep status</code></p>"
    if data.failed_files:
        rows = "".join(f"<tr><td>{e(f.display)}</td><td class='bad'>{e(f.reason)}"
                       "</td></tr>" for f in data.failed_files[:MAX_FAILURES])
        more = len(data.failed_files) - MAX_FAILURES
        parts.append(f"<h3>Files ({len(data.failed_files)})</h3><table><tr><th>file</th><th>reason</th></tr>"
                     f"{rows}</table>" + (see.format(more) if more > 0 else ""))
    if data.failed_jobs:
        rows = "".join(f"<tr><td>{e(j.path)}</td><td>{j.window_index}</td><td>{e(j.service)}</td>"
                       f"<td>{e(j.request_id)}</td><td class='bad'>{e(j.error)}</td></tr>"
                       for j in data.failed_jobs)
        more = data.failed_jobs_total - len(data.failed_jobs)
        parts.append(f"<h3>Jobs ({data.failed_jobs_total})</h3><table><tr><th>file</th><th>window</th>"
                     f"<th>service</th><th>request id</th><th>reason</th></tr>{rows}</table>"
                     + (see.format(more) if more > 0 else ""))
    return parts


def _files(data: RunData, thumbs: dict[str, dict[int, list[str]] | str], *, max_files: int,
           max_windows: int) -> list[str]:
    e = html.escape
    parts = ["<h2>Files</h2>"]
    shown_note = f"{len(data.shown)} file(s) with results"
    if data.files_ok > len(data.shown):
        shown_note = (f"the first {len(data.shown)} of {data.files_ok} preprocessed files by path "
                      f"(capped at {max_files}; <code>report --max-files</code>)")
    parts.append(f"<p class='muted'>Showing {shown_note}; at most {max_windows} windows each, spread "
                 f"over the file. Thumbnails: frames {', '.join(str(i) for i in THUMB_FRAMES)} of each "
                 "window, decoded from the source at the times the run used, centre-cropped.</p>")
    for entry in data.shown:
        strip = thumbs.get(entry.path, {})
        dur = f"{entry.duration_ms / 1000:.1f} s" if entry.duration_ms else ""
        parts.append(f"<h3>{e(entry.display)} <span class='muted'>{dur}</span></h3>")
        if isinstance(strip, str):
            parts.append(f"<p class='bad'>{e(strip)}</p>")
            strip = {}
        parts.append("<div class='strip'>" + "".join(_window(w, strip.get(w.index, []))
                                                     for w in entry.windows) + "</div>")
    return parts


def _nearest(data: RunData, thumbs: dict[str, dict[int, list[str]] | str]) -> list[str]:
    nn = _neighbours(data)
    if not nn:
        return []
    parts = ["<h2>Nearest neighbours</h2><p class='muted'>Cosine similarity of embeddings, "
             "among the windows shown above.</p>"]
    for qe, qw, hits in nn:
        cards = [_window(qw, _strip_of(thumbs, qe, qw)[:1], title=f"query: {Path(qe.display).name}",
                         tags=False, css="win q")]
        cards += [_window(w, _strip_of(thumbs, f, w)[:1], title=f"{score:+.3f} {Path(f.display).name}",
                          tags=False) for score, f, w in hits]
        parts.append("<div class='nn'>" + "".join(cards) + "</div>")
    return parts


def _strip_of(thumbs: dict[str, dict[int, list[str]] | str], entry: FileEntry, w: WindowEntry) -> list[str]:
    strip = thumbs.get(entry.path)
    if not isinstance(strip, dict):
        return []
    pics = strip.get(w.index, [])
    return pics[len(pics) // 2:] if pics else []  # the middle frame first


def _card(title: str, big: str, small: str) -> str:
    e = html.escape
    return f"<div class='card'><span class='muted'>{e(title)}</span><b>{e(big)}</b>{e(small)}</div>"


def _window(w: WindowEntry, pictures: list[str], *, title: str | None = None, tags: bool = True,
            css: str = "win") -> str:
    e = html.escape
    imgs = "".join(f"<img alt='frame' src='{p}'>" for p in pictures)
    head = f"<b>{e(title)}</b><br>" if title else ""
    body = [f"<div class='{css}'>{imgs}<div class='t'>{head}window {w.index}: "
            f"{w.start_ms / 1000:.1f}-{w.end_ms / 1000:.1f} s</div>"]
    if tags and w.tags:
        body.append("".join(f"<span class='tag'>{e(k)}: {e(v)}</span>"
                            for k, v in sorted(w.tags.items()) if isinstance(v, str)))
    body += [f"<div class='t bad'>{e(err)}</div>" for err in w.errors]
    body.append("</div>")
    return "".join(body)


def _why(exc: OSError) -> str:
    """``<path>: <reason>`` when the OS names the path that failed (a parent that is a file)."""
    return f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
