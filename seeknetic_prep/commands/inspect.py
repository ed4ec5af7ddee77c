"""``seeknetic-prep inspect FILE``: contact sheets of what the model will see, one PNG per window."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("Draw a contact sheet per window of FILE: the 12 frames exactly as uploaded, their times, "
        "the audio, and how the picture was made upright and square.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # str, not Path: Path("s3://b/k.mp4") would collapse the URL's "//".
    parser.add_argument("file", metavar="FILE", help="a video file or URL (s3://, gs://, az://, https://)")
    parser.add_argument("--window", type=int, default=None, metavar="K",
                        help="only window K (0-based, the results' window_index; default: every window)")
    parser.add_argument("--out", type=Path, default=None, metavar="PATH",
                        help="sheet.png for one window (sheet-w<K>.png for several), or a folder "
                        "(default: <name>-w<K>.png here)")
    parser.add_argument("--resize", choices=("crop", "squash", "pad"), default="crop",
                        help="how frames become 224x224, as for prep (default: crop)")


def main(args: argparse.Namespace) -> int:
    from seeknetic_prep.results.sheet import write_sheets  # Pillow and PyAV: only for this command

    for path in write_sheets(args.file, args.out, window=args.window, resize=args.resize):
        print(path)
    return 0


__all__ = ["HELP", "add_arguments", "main"]
