"""``seeknetic-prep run``: the main job, with progress bars and a one-line summary."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HELP = (
    "Embed and tag every 10 s window of every video under PATH (resumable; state and "
    "results.jsonl in --out)."
)

DEFAULT_OUT = "seeknetic-out"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..discover import VIDEO_EXTENSIONS

    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="video files and/or folders (walked recursively)")
    parser.add_argument("--local", action="store_true",
                        help="start the built-in emulator on a free loopback port and run against it")
    parser.add_argument("--out", default=DEFAULT_OUT, type=Path,
                        help=f"output folder: state.sqlite and results.jsonl (default ./{DEFAULT_OUT})")
    parser.add_argument("--services", default="embedding,tagging",
                        help="comma-separated: embedding, tagging (default both)")
    parser.add_argument("--workers", type=int, default=None,
                        help="decode processes (default: the number of cores; 0 decodes in-process)")
    parser.add_argument("--uploaders", type=int, default=4, help="upload/submit threads (default 4)")
    parser.add_argument("--qps", type=float, default=None,
                        help="client-side limit on requests per second, all threads together (default none)")
    parser.add_argument("--api-key", default=None,
                        help="API key (default: $SEEKNETIC_API_KEY); prefer the variable, a flag shows in ps")
    parser.add_argument("--base-url", default=None,
                        help="API base URL (default: $SEEKNETIC_BASE_URL, else the --region URL)")
    parser.add_argument("--region", default="tokyo", choices=("tokyo", "us", "cn"),
                        help="API region when no base URL is given (default tokyo)")
    parser.add_argument("--bearer", action="store_true",
                        help="send the key as 'Authorization: Bearer' instead of X-API-Key")
    parser.add_argument("--retry-failed", action="store_true",
                        help="give failed jobs another attempt (under new request ids)")
    parser.add_argument("--extensions", default=None,
                        help="comma-separated video extensions to pick up in folders "
                        f"(default: {','.join(sorted(e.lstrip('.') for e in VIDEO_EXTENSIONS))})")
    parser.add_argument("--quiet", action="store_true", help="no progress bars: one line per file")
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="where files are planned and decoded: this machine's processes (default) "
                        "or a Ray cluster's nodes, each uploading what it decoded")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="with --executor ray: the cluster's head (default: $RAY_ADDRESS, else a "
                        "Ray started on this machine for the run)")


def main(args: argparse.Namespace) -> int:
    from ..client import Client
    from ..discover import VIDEO_EXTENSIONS, parse_extensions
    from ..errors import InvalidArgumentError
    from ..pipeline import RunOptions, run_folder

    services = tuple(s.strip() for s in str(args.services).split(",") if s.strip())
    options = RunOptions(
        services=services,
        workers=args.workers,
        uploaders=args.uploaders,
        retry_failed=args.retry_failed,
        extensions=parse_extensions(args.extensions) if args.extensions else VIDEO_EXTENSIONS,
    )
    if args.qps is not None and args.qps <= 0:
        raise InvalidArgumentError(f"Invalid --qps {args.qps}: must be > 0.")
    out: Path = args.out
    for p in args.paths:
        if not Path(p).exists():
            raise InvalidArgumentError(f"Invalid path {p!r}: no such file or folder.")
    if args.ray_address is not None and args.executor != "ray":
        raise InvalidArgumentError("Invalid --ray-address without --executor ray: add --executor ray.")
    qps, worker_qps = args.qps, None
    if args.executor == "ray":
        from ..executors.ray import import_ray, share_qps

        import_ray(args.ray_address or os.environ.get("RAY_ADDRESS"))  # missing Ray: one line, exit 2
        qps, worker_qps = share_qps(args.qps)  # one --qps budget: the driver's calls + the nodes' uploads
    with ExitStack() as stack:
        if args.local:
            from ..emulator import spawned

            # In a child process: the server's work neither waits for nor holds our interpreter
            # lock, and its start-up overlaps the decode workers' start-up.
            server = stack.enter_context(spawned(api_keys=[_local_key(out)], data_dir=out / "emulator"))
            base_url, key = server.base_url, server.api_key
            print(f"local emulator at {base_url} (state in {out / 'emulator'})", file=sys.stderr)
        else:
            base_url, key = args.base_url, args.api_key
        client = stack.enter_context(Client(
            key, base_url=base_url, region=args.region, qps=qps,
            auth="bearer" if args.bearer else "x-api-key",
        ))
        executor = None
        if args.executor == "ray":
            from ..executors.ray import RayExecutor

            executor = RayExecutor(args.ray_address, client=client.worker_config(), qps=worker_qps)
            stack.callback(executor.close)  # run_folder closes it too; this covers a failure before
        progress = _make_progress(quiet=args.quiet or not sys.stdout.isatty())
        stack.callback(progress.close)
        summary = run_folder(args.paths, out=out, client=client, options=options, progress=progress,
                             executor=executor)
    print(f"seeknetic-prep run: {summary.line()}")
    if summary.stopped_by == "auth":
        print(f"seeknetic-prep run: error: {summary.stop_message}", file=sys.stderr)
    elif summary.stopped_by == "quota":
        print(f"seeknetic-prep run: quota spent ({summary.stop_message}); state saved in {out}. "
              "Run the same command again once the key has more quota to resume.", file=sys.stderr)
    elif summary.stopped_by == "unreachable":
        print(f"seeknetic-prep run: stopped, the API keeps failing ({summary.stop_message}); state saved "
              f"in {out}. Run the same command again to resume.", file=sys.stderr)
    elif summary.stopped_by == "interrupt":
        print(f"seeknetic-prep run: interrupted; state saved in {out}. "
              "Run the same command again to resume.", file=sys.stderr)
    if summary.stopped_by != "auth":
        print(f"results: {summary.results_path}")
        sample = _sample_line(summary.results_path)
        if sample:
            print(f"sample: {sample}")
    return summary.exit_code


def _local_key(out: Path) -> str:
    """The --local emulator's key: derived from the output folder, so a rerun sees its jobs,
    and never written anywhere."""
    digest = hashlib.sha256(f"seeknetic-prep-local:{out.resolve()}".encode()).hexdigest()
    return f"local-{digest[:32]}"


def _sample_line(path: Path) -> str | None:
    """One completed results line, the shortest kind (tags), with a long embedding elided."""
    if not path.exists():
        return None
    best: dict[str, Any] | None = None
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = json.loads(raw)
            if line.get("status") != "completed":
                continue
            if best is None or (line.get("service") == "tagging" and best.get("service") != "tagging"):
                best = line
            if best.get("service") == "tagging":
                break
    if best is None:
        return None
    if isinstance(best.get("embedding"), list) and len(best["embedding"]) > 4:
        emb = best["embedding"]
        best["embedding"] = [*(round(x, 4) for x in emb[:4]), f"... {len(emb)} floats"]
    return json.dumps(best)


class _Progress:
    """tqdm bars (files, windows, jobs) or, when quiet / not a terminal, one line per file."""

    def __init__(self, *, quiet: bool) -> None:
        self.quiet = quiet
        self.lock = threading.Lock()
        self.bars: list[Any] = []
        if not quiet:
            from tqdm import tqdm

            self.files = tqdm(total=0, desc="files", unit="file", position=0, dynamic_ncols=True)
            self.windows = tqdm(total=0, desc="windows decoded", unit="win", position=1, dynamic_ncols=True)
            self.jobs = tqdm(total=0, desc="jobs done", unit="job", position=2, dynamic_ncols=True)
            self.bars = [self.files, self.windows, self.jobs]

    def files_found(self, count: int) -> None:
        if self.bars:
            self.files.total += count
            self.files.refresh()

    def file_planned(self, path: str, *, windows: int, to_decode: int, jobs: int) -> None:
        if self.bars:
            self.windows.total += to_decode
            self.windows.refresh()
            self.jobs.total += jobs
            self.jobs.refresh()

    def windows_decoded(self, count: int) -> None:
        if self.bars:
            self.windows.update(count)

    def job_finished(self, request_id: str, status: str) -> None:
        if self.bars:
            self.jobs.update(1)

    def file_finished(self, path: str, *, ok: bool, windows: int, error: str | None) -> None:
        reason = error if error and error.startswith(path) else f"{path}: {error}"
        if self.bars:
            self.files.update(1)
            if not ok:
                self.files.write(f"failed  {reason}")
            return
        if ok:
            print(f"ok      {path} ({windows} window{'s' if windows != 1 else ''})", flush=True)
        else:
            print(f"failed  {reason}", flush=True)

    def close(self) -> None:
        for bar in self.bars:
            bar.close()


def _make_progress(*, quiet: bool) -> Any:
    from ..pipeline import Progress

    class Bars(_Progress, Progress):
        pass

    return Bars(quiet=quiet)


__all__ = ["DEFAULT_OUT", "HELP", "add_arguments", "main"]
