"""``seeknetic-prep results``: merge a run's Parquet parts into one file, or export them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seeknetic_prep.errors import InvalidArgumentError

HELP = (
    "Merge the results parts in --out into one file: Parquet (default), JSONL, CSV (no "
    "embeddings) or .npy (the embedding matrix plus an index CSV)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="seeknetic-out", type=Path,
                        help="the run's output folder (default ./seeknetic-out)")
    parser.add_argument("--format", default="parquet", choices=("parquet", "jsonl", "csv", "npy"),
                        help="what to write (default parquet)")
    parser.add_argument("--include-gone", action="store_true",
                        help="also export the files a run found deleted or renamed away (file_status gone)")
    parser.add_argument("--to", default=None, type=Path,
                        help="the file to write (default --out/results.<format>); - for standard output")


def main(args: argparse.Namespace) -> int:
    # here, not at the top: cli imports every command module for its parser (pyarrow)
    from seeknetic_prep.commands.search import sync_parts
    from seeknetic_prep.results.export import export

    if not (args.out / "state.sqlite").exists() and not (args.out / "parts").is_dir():
        raise InvalidArgumentError(f"Invalid --out {str(args.out)!r}: no state.sqlite there (run first).")
    sync_parts(args.out)
    target, rows = export(args.out, fmt=args.format, to=args.to, include_gone=args.include_gone)
    to_stdout = args.to is not None and str(args.to) == "-"
    print(f"{'standard output' if to_stdout else target}: {rows} rows",
          file=sys.stderr if to_stdout else sys.stdout)
    return 0


__all__ = ["HELP", "add_arguments", "main"]
