"""``seeknetic-prep prep PATH... --out DIR``: write the upload bodies, send nothing.

Shows (and lets a test or a curious user keep) exactly what ``run`` would POST to
``/files/upload/tensors`` for every window and service, named by the same deterministic
request ids. One line per file; a bad file gets one line saying why and the others go on.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from seeknetic_prep.commands.run import add_from_list, check_out_dir
from seeknetic_prep.decode.hw import check_decode
from seeknetic_prep.decode.preprocess import iter_segments
from seeknetic_prep.errors import InvalidArgumentError, MediaError
from seeknetic_prep.pipeline.discover import VIDEO_EXTENSIONS
from seeknetic_prep.pipeline.payloads import parse_services, request_id_for, upload_body_bytes
from seeknetic_prep.sources import (
    discover_sources,
    is_url,
    open_source,
    read_list,
    redact,
    source_fingerprint,
)
from seeknetic_prep.util.fsio import atomic_write

HELP = "Decode videos into the exact JSON bodies of POST /files/upload/tensors, without uploading."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="video files or folders (walked recursively), or URLs (s3://, gs://, az://, "
                        "https://; prefixes listed recursively)")
    add_from_list(parser)
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="where to write <file>.<fingerprint>/<request_id>.json")
    parser.add_argument("--services", "--service", dest="services", default="embedding,tagging",
                        help="which bodies to write: embedding, tagging or both, comma-separated, as "
                        "for run (default both; --service is the old spelling)")
    parser.add_argument("--resize", choices=("crop", "squash", "pad"), default="crop",
                        help="how frames become 224x224 (default: crop, the centre after scaling)")
    parser.add_argument("--decode", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: NVDEC on an NVIDIA GPU for H.264/HEVC when one is present, else the CPU "
                        "(default); cpu; cuda: require the GPU (exit 2 without one)")


def main(args: argparse.Namespace) -> int:
    services = parse_services(args.services)
    out: Path = args.out
    check_out_dir(out)
    decode = check_decode(args.decode)
    failed = 0
    existing = []
    for raw in _items(args):
        if is_url(raw) or Path(raw).exists():
            existing.append(raw)
        else:
            failed += 1
            print(f"FAIL {raw}: missing: no such file or folder", flush=True)
    done = bodies = 0
    for item, _, _ in discover_sources(existing, extensions=VIDEO_EXTENSIONS):
        written: list[Path] = []
        path = Path(redact(item).split("?", 1)[0]) if is_url(item) else Path(item)
        source: Any = None
        try:
            fingerprint, _, _ = source_fingerprint(item)
            folder = out / _folder_name(path, fingerprint)
            count = 0
            end_ms = 0
            source = open_source(item)  # a URL: a file object over range requests
            for seg in iter_segments(source, resize=args.resize, decode=decode):
                folder.mkdir(parents=True, exist_ok=True)
                wanted = [(s, request_id_for(fingerprint, seg.window, s, args.resize)) for s in services]
                # the very bytes run POSTs (upload_body_bytes), not another serialization of them
                for (_, rid), body in zip(wanted, upload_body_bytes(seg, wanted), strict=True):
                    written.append(folder / f"{rid}.json")
                    _write_body(written[-1], body)
                count += 1
                end_ms = seg.end_ms
        except (MediaError, OSError) as exc:
            # A file found cut short midway loses the windows already written: half a file
            # would pass for a whole one. A write that fails (a full disk) fails this file only.
            for done_path in written:
                done_path.unlink(missing_ok=True)
            failed += 1
            why = (exc.cause if isinstance(exc, MediaError)
                   else f"cannot write its bodies: {exc.strerror or exc}")
            if getattr(source, "error", None) is not None:  # a failed range request, not bad bytes
                why = f"unreadable: {source.error}"
            print(f"FAIL {redact(item)}: {why}", flush=True)
            continue
        finally:
            if source is not None and not isinstance(source, str):
                source.close()
        bodies += len(written)
        done += 1
        windows = f"{count} window{'s' * (count != 1)}"
        print(f"ok   {redact(item)}: {windows} ({end_ms / 1000:.1f} s) -> {folder}", flush=True)
    print(f"prep: {done} file(s) ok, {failed} failed; {bodies} bodies in {out}", file=sys.stderr)
    return 1 if failed else 0


def _items(args: argparse.Namespace) -> list[str]:
    items = [str(p) for p in args.paths]
    if args.from_list is not None:
        items += read_list(args.from_list)
    if not items:
        raise InvalidArgumentError("Invalid arguments: give at least one PATH or URL, or --from-list FILE.")
    return items


_NAME_MAX = 255  # bytes in one file name on every common filesystem


def _folder_name(path: Path, fingerprint: str) -> str:
    """``<file name>.<12 hex>``, the file name cut so the whole fits in one file name: a
    255-byte video name must not fail the file for its bodies' folder. A UTF-8 name is cut at a
    character; any other keeps its bytes as they are (cut at a byte)."""
    suffix = f".{fingerprint[:12]}"
    raw = os.fsencode(path.name)[: _NAME_MAX - len(suffix)]
    try:
        path.name.encode("utf-8")
        name = raw.decode("utf-8", "ignore")  # drops only a character the cut split
    except UnicodeEncodeError:  # not UTF-8 on disk: surrogate-escaped bytes, kept as bytes
        name = os.fsdecode(raw)
    return name + suffix


def _write_body(path: Path, body: bytes) -> None:
    """Write via a temporary name and rename, so an interrupted run never leaves half a body."""
    # Not fsynced, as before: a body a second, each cheap to make again; what matters is that
    # a Ctrl-C never leaves half of one.
    atomic_write(path, body, fsync=False)
