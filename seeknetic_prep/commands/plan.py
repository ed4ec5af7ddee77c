"""``seeknetic-prep plan PATH...``: what ``run`` would do, before it does it.

Files, windows, jobs (what the quota counts), bytes to upload, what ``--out`` already has, and
hours at a bandwidth and at this machine's decode speed, from container headers and the state
alone (read-only): nothing is decoded but a three-window sample, nothing is sent.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from seeknetic_prep.commands.run import DEFAULT_OUT, check_out_dir
from seeknetic_prep.errors import InvalidArgumentError
from seeknetic_prep.pipeline.discover import VIDEO_EXTENSIONS, parse_extensions
from seeknetic_prep.pipeline.payloads import parse_services

if TYPE_CHECKING:
    from seeknetic_prep.pipeline.preflight import Plan

HELP = ("Say what run would do: files, windows, jobs, bytes to upload, what --out has, and hours "
        "(headers only, nothing sent).")

_DEFAULT_MBPS = 100.0
_SHOWN_UNUSABLE = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="video files and/or folders (walked recursively), as for run")
    parser.add_argument("--out", default=DEFAULT_OUT, type=Path,
                        help=f"the run's output folder: what its state has is left out (read only; "
                        f"default ./{DEFAULT_OUT}; missing: nothing done)")
    parser.add_argument("--bandwidth-mbps", type=float, default=_DEFAULT_MBPS, metavar="N",
                        help="upload bandwidth in megabits per second, for the estimate "
                        f"(default {_DEFAULT_MBPS:g})")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the same fields")
    parser.add_argument("--services", "--service", dest="services", default="embedding,tagging",
                        help="embedding, tagging or both, as for run (default both)")
    parser.add_argument("--extensions", default=None,
                        help="comma-separated video extensions to pick up in folders, as for run")
    parser.add_argument("--resize", choices=("crop", "squash", "pad"), default="crop",
                        help="as for run (part of the request ids; default crop)")
    parser.add_argument("--workers", type=int, default=None,
                        help="decode processes the run will use, for the estimate "
                        "(default: the number of cores)")


def main(args: argparse.Namespace) -> int:
    from seeknetic_prep.pipeline.preflight import plan_run  # PyAV, SQLite: not for --help

    out: Path = args.out
    check_out_dir(out)
    for p in args.paths:
        if not os.path.lexists(p):
            raise InvalidArgumentError(f"Invalid path {p!r}: no such file or folder.")
    plan = plan_run(
        args.paths, out=out, services=parse_services(args.services),
        extensions=parse_extensions(args.extensions) if args.extensions else VIDEO_EXTENSIONS,
        resize=args.resize, bandwidth_mbps=args.bandwidth_mbps, decode_workers=args.workers,
    )
    if args.json:
        print(json.dumps(plan.to_json(), indent=2))
        return 0
    for line in table(plan):
        print(line)
    return 0


def table(p: Plan) -> list[str]:
    """The plan as a table for people: one row per quantity, the number, what it is made of."""
    services = " + ".join(p.services)
    rows = [
        ("files", f"{p.files:,}",
         f"{p.files_probed:,} read (container header only), {p.files_known:,} known to the state (not "
         f"read); {p.files_unusable:,} unusable, {p.files_same_content:,} same content as another"),
        ("windows", f"{p.windows:,}",
         f"{p.windows_to_decode:,} to decode; {p.windows_estimated:,} estimated from headers"),
        ("jobs", f"{p.jobs:,}",
         f"{p.jobs_to_submit:,} to submit ({services}; what the quota counts), {p.jobs_in_flight:,} in "
         f"flight, {p.jobs_completed:,} completed, {p.jobs_failed:,} failed"),
        ("upload", _bytes(p.bytes_to_upload),
         f"{p.jobs_to_upload:,} bodies" + (f", ~{_bytes(p.bytes_to_upload // p.jobs_to_upload)} each"
                                           if p.jobs_to_upload else "")),
        ("out dir", "", _state(p)),
        ("upload time", _hours(p.upload_hours), f"at {p.bandwidth_mbps:g} Mbps (--bandwidth-mbps)"),
        ("decode time", _hours(p.decode_hours), _decode_note(p)),
    ]
    total = max(p.upload_hours, p.decode_hours or 0.0)
    rows.append(("estimate", _hours(total), "the slower of the two (they overlap); the API's own job "
                 "time and retries not included"))
    width = max(len(r[1]) for r in rows)
    how = (f"estimated: {p.windows_estimated:,} of {p.windows:,} windows from container headers"
           if p.windows_estimated else "every window from the state")
    lines = [f"seeknetic-prep plan: {', '.join(p.paths)} -> {p.out} ({how}; {p.elapsed_s:.1f} s)"]
    lines += [f"  {label:<12} {value:>{width}}  {detail}".rstrip() for label, value, detail in rows]
    if p.unusable:
        lines.append(f"unusable ({len(p.unusable)}; a run fails them):")
        lines += [f"  {path}: {why}" for path, why in p.unusable[:_SHOWN_UNUSABLE]]
        if len(p.unusable) > _SHOWN_UNUSABLE:
            lines.append(f"  and {len(p.unusable) - _SHOWN_UNUSABLE} more (--json lists them all)")
    return lines


def _state(p: Plan) -> str:
    if p.state is None:
        return f"{p.out}: no state yet, nothing done"
    jobs = sum(p.state_jobs.values())
    by = ", ".join(f"{n:,} {s}" for s, n in sorted(p.state_jobs.items(), key=lambda kv: -kv[1]))
    return f"{p.state}: {jobs:,} jobs in all" + (f" ({by})" if by else "")


def _decode_note(p: Plan) -> str:
    if p.sample is None:
        return "nothing to decode" if not p.windows_to_decode else "not measured (no file could be decoded)"
    names = ", ".join(Path(f).name for f in p.sample.files)
    return (f"{p.decode_workers} processes at {p.sample.s_per_window:.3f} CPU-s a window (measured on "
            f"{p.sample.windows} window{'s' * (p.sample.windows != 1)} of {names})")


def _bytes(n: int) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _hours(h: float | None) -> str:
    if h is None:
        return "?"
    if h >= 1:
        return f"{h:,.1f} h"
    return f"{h:.3f} h ({h * 60:.0f} min)" if h * 60 >= 1 else f"{h:.3f} h ({h * 3600:.0f} s)"


__all__ = ["HELP", "add_arguments", "main", "table"]
