"""``seeknetic-prep run``: the main job, with progress bars and a one-line summary."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from seeknetic_prep.decode.hw import check_decode
from seeknetic_prep.errors import InvalidArgumentError, StopReason
from seeknetic_prep.executors.registry import engine, executor_names
from seeknetic_prep.pipeline.discover import VIDEO_EXTENSIONS, parse_extensions
from seeknetic_prep.pipeline.spec import RunSpec, RunSummary
from seeknetic_prep.sources import check_sources, read_list
from seeknetic_prep.util.outlock import OutLock
from seeknetic_prep.util.text import printable

HELP = (
    "Embed and tag every 10 s window of every video under PATH (resumable; state and "
    "Parquet results in --out)."
)

DEFAULT_OUT = "seeknetic-out"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The run's flags, in ``--help``'s groups: what to run on and where results go, then the API,
    the upload link and the decoders."""
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="video files and/or folders (walked recursively), or URLs: s3://, gs://, "
                        "az:// (abfs://) prefixes (listed recursively) or objects, https:// files")
    add_from_list(parser)
    parser.add_argument("--out", default=DEFAULT_OUT, type=Path,
                        help="output folder: state.sqlite, parts/ (Parquet results) and search/ "
                        f"(default ./{DEFAULT_OUT})")
    parser.add_argument("--services", "--service", dest="services", default="embedding,tagging",
                        help="embedding, tagging or both, comma-separated, as for prep (default both)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="give failed jobs another attempt (under new request ids)")
    parser.add_argument("--report", action="store_true",
                        help="also write report.html in --out (thumbnails, tags, failures, neighbours)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars: one line per file")
    parser.add_argument("--wait", action="store_true",
                        help="if another run is using --out, wait for it to end instead of exiting 2")
    _add_api_arguments(parser.add_argument_group("the API"))
    _add_link_arguments(parser.add_argument_group("the upload link"))
    _add_decode_arguments(parser.add_argument_group("decoding"))


def _add_api_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--local", action="store_true",
                       help="start the built-in emulator on a free loopback port and run against it")
    group.add_argument("--keep-tensors", action="store_true",
                       help="with --local: keep uploaded tensors in <out>/emulator after their jobs "
                       "finish (default: deleted, ~6 MB a window; results are kept)")
    group.add_argument("--api-key", default=None,
                       help="API key (default: $SEEKNETIC_API_KEY); prefer the variable, a flag shows in ps")
    group.add_argument("--base-url", default=None,
                       help="API base URL (default: $SEEKNETIC_BASE_URL, else the --region URL)")
    group.add_argument("--region", default="tokyo", choices=("tokyo", "us", "cn"),
                       help="API region when no base URL is given (default tokyo)")
    group.add_argument("--bearer", action="store_true",
                       help="send the key as 'Authorization: Bearer' instead of X-API-Key")


def _add_link_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--uploaders", type=int, default=None,
                       help="bodies uploaded at once, fixed (default: 8 to start, then as many as the "
                       "link's throughput shows it takes, up to --upload-memory-mb's worth)")
    group.add_argument("--upload-memory-mb", type=float, default=256.0, metavar="MB",
                       help="memory for bodies being uploaded, which bounds how many go at once "
                       "(about 4 MB each; default 256)")
    group.add_argument("--qps", type=float, default=None,
                       help="client-side limit on requests per second, all threads together (default none)")
    group.add_argument("--max-upload-mbps", type=float, default=None, metavar="N",
                       help="cap on the bytes the run sends, in megabits per second, all uploads "
                       "together (Ray's nodes included), so the run leaves room on a shared uplink "
                       "(default none)")
    group.add_argument("--stall-timeout", type=float, default=60.0, metavar="S",
                       help="abandon an upload only when the link takes no bytes for S seconds "
                       "(default 60); a slow link is never cut for taking long")
    group.add_argument("--max-jobs", type=int, default=None, metavar="N",
                       help="submit at most N jobs this run, then stop as a spent quota does (exit 3, "
                       "state saved); a later run continues (default: no limit)")


def _add_decode_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--workers", type=int, default=None,
                       help="decode processes (default: the number of cores; 0 decodes in-process)")
    group.add_argument("--extensions", default=None,
                       help="comma-separated video extensions to pick up in folders "
                       f"(default: {','.join(sorted(e.lstrip('.') for e in VIDEO_EXTENSIONS))})")
    group.add_argument("--resize", choices=("crop", "squash", "pad"), default="crop",
                       help="how frames become 224x224 (default crop; fixed per --out, as in prep)")
    group.add_argument("--decode", choices=("auto", "cpu", "cuda"), default="auto",
                       help="auto: NVDEC on an NVIDIA GPU for H.264/HEVC when one is present, else the CPU "
                       "(default); cpu; cuda: require the GPU (exit 2 without one)")
    group.add_argument("--gpu-workers", type=int, default=None,
                       help="NVDEC decode processes beside the CPU ones "
                       "(default: 8 with a CUDA device, else 0)")
    group.add_argument("--executor", choices=executor_names(), default="local",
                       help="where files are planned and decoded: this machine's processes (local, "
                       "default), a Ray cluster's nodes (ray), each uploading what it decoded, or an "
                       "engine an installed package registers")
    group.add_argument("--executor-address", "--ray-address", dest="executor_address", default=None,
                       metavar="ADDR", help="where the engine runs; ray: the cluster's head (default: "
                       "$RAY_ADDRESS, else a Ray started on this machine for the run)")


def main(args: argparse.Namespace) -> int:
    # The run has saved everything once run_folder returns: a Ctrl-C from then on must not cut
    # the summary short (the CLI only: a library caller keeps its own Ctrl-C).
    summary = execute(args, after_run=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    out: Path = args.out
    print(f"seeknetic-prep run: {summary.line()}")
    _print_stop(summary, out)
    _print_failures(summary, out)
    if args.report and summary.stopped_by != StopReason.AUTH:
        # pyarrow, the report's template: only when asked for
        from seeknetic_prep.results.report import write_report

        print(f"report: {write_report(out)}")
    if summary.stopped_by != StopReason.AUTH and summary.results_path.exists():
        _print_next_steps(summary, out)
    return summary.exit_code


def execute(args: argparse.Namespace, *, after_run: Callable[[], object] = lambda: None) -> RunSummary:
    """The run that ``args`` (this command's arguments) describe, from the checks to the
    summary: what ``seeknetic-prep run`` and :func:`seeknetic_prep.run` share. ``after_run`` is
    called once the run has saved everything, before the local emulator is stopped."""
    # requests, SQLite, pyarrow, tqdm: loaded when a run starts, not for every command's --help
    from seeknetic_prep.api.client import Client
    from seeknetic_prep.commands.display import RunDisplay
    from seeknetic_prep.pipeline.driver import run_folder

    spec = spec_from_args(args)
    out: Path = args.out
    check_out_dir(out)
    args.paths = sources_from_args(args)
    factory = engine(spec.executor)
    factory.prepare(spec)  # a missing extra or a bad address: one line, exit 2, nothing started
    driver_qps, _ = factory.share_qps(spec.qps)  # one --qps budget: the driver's calls + the nodes'
    with ExitStack() as stack:
        # First of all: one run per --out, before the local emulator or the state is touched.
        stack.enter_context(OutLock(out, wait=args.wait, on_wait=lambda pid: print(
            f"seeknetic-prep run: another run (pid {pid if pid is not None else '?'}) is using {out}; "
            "waiting for it to end (Ctrl-C to give up)...", file=sys.stderr, flush=True)))
        base_url, key, spec, gone = _backend(stack, args, spec)
        client = stack.enter_context(Client(
            key, base_url=base_url, region=args.region, qps=driver_qps,
            auth="bearer" if args.bearer else "x-api-key", stall_timeout_s=args.stall_timeout,
        ))
        # Until the run's own display takes over, say each retry as it happens (a key check
        # against an API that does not answer is otherwise seconds of silence).
        client.on_event = lambda kind, detail: print(
            f"seeknetic-prep run: {kind.replace('_', ' ')}: {detail}", file=sys.stderr)
        progress = RunDisplay(quiet=args.quiet or not sys.stdout.isatty(), services=len(spec.services))
        stack.callback(progress.close)
        # The engine starts inside, once there are files to decode, with the nodes' --qps share.
        summary = run_folder(args.paths, out=out, client=client, options=spec, progress=progress,
                             backend_gone=gone)
        after_run()
    return summary


def add_from_list(parser: argparse.ArgumentParser) -> None:
    """``--from-list FILE``, shared by ``run`` and ``prep``."""
    parser.add_argument("--from-list", dest="from_list", type=Path, default=None, metavar="FILE",
                        help="also take the paths/URLs a list names: one a line, or a CSV/Parquet "
                        "file's 'path' (or 'url') column")


def sources_from_args(args: argparse.Namespace) -> list[str]:
    """The PATHs and ``--from-list``'s entries; a local path that does not exist refused
    (exit 2), URLs checked when listed.

    Raises:
        InvalidArgumentError: no path at all, a missing local path, or an unusable list.
    """
    items = [str(p) for p in args.paths]
    if args.from_list is not None:
        items += read_list(args.from_list)
    if not items:
        raise InvalidArgumentError("Invalid arguments: give at least one PATH or URL, or --from-list FILE.")
    check_sources(items)
    return items


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    """The run's one :class:`RunSpec` from the command line, every value checked now."""
    return RunSpec(
        services=args.services,
        workers=args.workers,
        uploaders=args.uploaders,
        upload_memory_mb=args.upload_memory_mb,
        retry_failed=args.retry_failed,
        extensions=parse_extensions(args.extensions) if args.extensions else VIDEO_EXTENSIONS,
        resize=args.resize,
        decode=check_decode(args.decode),
        gpu_workers=args.gpu_workers,
        executor=args.executor,
        executor_address=args.executor_address,
        qps=args.qps,
        max_upload_mbps=args.max_upload_mbps,
        max_jobs=args.max_jobs,
    )


def _backend(stack: ExitStack, args: argparse.Namespace, spec: RunSpec
             ) -> tuple[str | None, str | None, RunSpec, Callable[[], str | None] | None]:
    """The API to run against: ``--local``'s emulator (started here, stopped with the run, and
    watched: if it dies the run stops at once), or the given base URL and key."""
    if not args.local:
        return args.base_url, args.api_key, spec, None
    from seeknetic_prep.api.keys import local_key  # --local only, as what follows
    from seeknetic_prep.util.extras import require_emulator

    require_emulator("run --local")
    from seeknetic_prep.emulator import EmulatorConfig, spawned  # FastAPI and uvicorn: only with --local

    out: Path = args.out
    # In a child process: the server's work neither waits for nor holds our interpreter lock,
    # and its start-up overlaps the decode workers' start-up.
    server = stack.enter_context(spawned(EmulatorConfig(
        data_dir=out / "emulator", api_keys=(local_key(out),), keep_tensors=args.keep_tensors
    )))
    print(f"local emulator at {server.base_url} (state in {out / 'emulator'})", file=sys.stderr)
    # Its jobs finish job_seconds after they are submitted: the first poll comes just after
    # that, not just before (one more round, x1.5 later, for the last window).
    def gone() -> str | None:
        code = server.returncode
        return None if code is None else f"the local emulator (pid {server.pid}) exited with code {code}"

    poll_s = server.job_seconds + _LOCAL_POLL_MARGIN_S
    return server.base_url, server.api_key, replace(spec, poll_s=poll_s), gone


def _print_stop(summary: RunSummary, out: Path) -> None:
    """Why the run stopped early, and what to do next (nothing when it ran to its end)."""
    again = "Run the same command again"
    lines = {
        StopReason.AUTH: f"error: {summary.stop_message}",
        StopReason.MAX_JOBS: f"{summary.stop_message}: stopped before submitting another job; state "
                             f"saved in {out}. {again} (with a bigger or no --max-jobs) to continue.",
        StopReason.QUOTA: f"quota spent ({summary.stop_message}); state saved in {out}. {again} once "
                          "the key has more quota to resume.",
        StopReason.UNREACHABLE: f"stopped, the API keeps failing ({summary.stop_message}); state saved "
                                f"in {out}. {again} to resume.",
        StopReason.BACKEND_GONE: f"stopped: {summary.stop_message}; state saved in {out}. {again} to "
                                 "resume.",
        StopReason.CRASHED: f"stopped: {summary.stop_message}; state saved in {out}. {again} to resume "
                            "(and please report the error).",
        StopReason.INTERRUPT: f"interrupted; state saved in {out}. {again} to resume.",
    }
    if summary.stopped_by is not None:
        print(f"seeknetic-prep run: {printable(lines[summary.stopped_by])}", file=sys.stderr)


def _print_next_steps(summary: RunSummary, out: Path) -> None:
    part = (f"this run's part {summary.results_path.name}" if summary.results_path.suffix == ".parquet"
            else "nothing new this run")
    print(f"results: {out / 'parts'} (Parquet, one row per window; {part}). "
          f"Next: `seeknetic-prep results --out {out} --format jsonl` "
          f"exports them, `seeknetic-prep search QUERY --out {out}` ranks them, "
          f"`seeknetic-prep status --out {out}` shows progress and failures.")


_SHOWN_FAILURES = 10
_LOCAL_POLL_MARGIN_S = 0.05


def _print_failures(summary: RunSummary, out: Path) -> None:
    """Repeat the failures at the end, where they do not scroll away (capped)."""
    if not summary.failures:
        return
    print(f"failures ({summary.failure_count}):", file=sys.stderr)
    from seeknetic_prep.state.store import display_path  # SQLite: only when there is a failure

    for where, why in summary.failures[:_SHOWN_FAILURES]:
        line = display_path(why if why.startswith(where) else f"{where}: {why}")
        print(f"  {printable(line)}", file=sys.stderr)
    if summary.failure_count > _SHOWN_FAILURES:
        print(f"  and {summary.failure_count - _SHOWN_FAILURES} more: see "
              f"`seeknetic-prep status --out {out}`", file=sys.stderr)


def check_out_dir(out: Path) -> None:
    """Refuse an ``--out`` that cannot be a folder, before anything is started or written."""
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(
            f"Invalid --out {str(out)!r}: it is a file, not a folder; give a folder (created if missing).")
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if parent is not None and not out.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidArgumentError(
            f"Invalid --out {str(out)!r}: cannot create it in {parent} (permission denied).")


__all__ = ["DEFAULT_OUT", "HELP", "add_arguments", "add_from_list", "check_out_dir", "execute", "main",
           "sources_from_args"]
