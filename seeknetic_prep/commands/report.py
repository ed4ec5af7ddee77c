"""``seeknetic-prep report --out DIR``: write ``DIR/report.html``, a static page of the run."""

from __future__ import annotations

import argparse
from pathlib import Path

from seeknetic_prep.util.text import printable

HELP = ("Write <out>/report.html: totals, failures with reasons, thumbnails and tags per window, "
        "nearest neighbours; one static file that opens offline.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="seeknetic-out", type=Path,
                        help="the output folder of a run (default ./seeknetic-out)")
    parser.add_argument("--max-files", type=int, default=30, metavar="N",
                        help="files shown with thumbnails, the first by path (default 30); totals and "
                        "failures always cover every file")
    parser.add_argument("--max-windows", type=int, default=12, metavar="M",
                        help="windows shown per file, spread over it (default 12)")


def main(args: argparse.Namespace) -> int:
    # here, not at the top: cli imports every command module for its parser (PyAV, pyarrow)
    from seeknetic_prep.results.report import write_report

    path = write_report(args.out, max_files=args.max_files, max_windows=args.max_windows)
    # as_uri percent-encodes (spaces, '#', '?', bytes that are not UTF-8): a link that opens
    print(printable(f"report: {path} (open it in a browser: {path.resolve().as_uri()})"))
    return 0


__all__ = ["HELP", "add_arguments", "main"]
