"""``seeknetic-prep emulator``: run the local Seeknetic API emulator in the foreground."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from seeknetic_prep.api.keys import EMULATOR_KEYS_ENV, clean_api_key, keys_from_env, read_key_file
from seeknetic_prep.util.extras import require_emulator

HELP = "Run a local, model-free emulator of the Seeknetic API (for development, demos and tests)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8000, help="port to listen on; 0 picks a free one (default: 8000)"
    )
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help="an accepted API key (repeat for several); visible in ps: prefer --api-key-file or "
        "$SEEKNETIC_EMULATOR_API_KEYS. With no key at all one is generated and printed once",
    )
    parser.add_argument(
        "--api-key-file",
        type=Path,
        metavar="FILE",
        help="a file of accepted API keys, one per line (blank lines and # comments ignored); "
        "keys from $SEEKNETIC_EMULATOR_API_KEYS (comma- or newline-separated) are accepted too",
    )
    parser.add_argument(
        "--qps", type=float, default=None, help="requests per second per key (default: no limit)"
    )
    parser.add_argument(
        "--quota", type=int, default=None, help="async jobs each key may submit (default: no limit)"
    )
    parser.add_argument(
        "--max-body-mb", type=float, default=64.0, help="largest request body in MB (default: 64)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("seeknetic-emulator-data"),
        help="where uploads and jobs are kept (default: ./seeknetic-emulator-data)",
    )
    parser.add_argument(
        "--job-seconds",
        type=float,
        default=None,
        help="how long a job stays pending/processing (default: 0.3)",
    )
    parser.add_argument(
        "--fail-rate", type=float, default=0.0, help="share of requests answered with an injected 500/502/504"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed for --fail-rate, to replay the same faults"
    )
    parser.add_argument(
        "--keep-tensors", action="store_true",
        help="keep uploaded tensors after their jobs finish (default: delete them, results stay)",
    )
    parser.add_argument("--no-access-log", action="store_true", help="do not log one line per request")


def main(args: argparse.Namespace) -> int:
    require_emulator("seeknetic-prep emulator")
    # FastAPI and uvicorn: only when the emulator is started
    from seeknetic_prep.emulator import EmulatorConfig, serve
    from seeknetic_prep.emulator.config import DEFAULT_JOB_SECONDS

    keys = _keys(args)
    config = EmulatorConfig(
        data_dir=args.data_dir,
        api_keys=tuple(keys),
        qps=args.qps,
        quota=args.quota,
        max_body_mb=args.max_body_mb,
        job_seconds=DEFAULT_JOB_SECONDS if args.job_seconds is None else args.job_seconds,
        fail_rate=args.fail_rate,
        seed=args.seed,
        keep_tensors=args.keep_tensors,
        host=args.host,
        port=args.port,
    )
    generated = not keys

    def ready(url: str) -> None:
        print(f"Seeknetic emulator listening on {url} (data in {config.data_dir})", flush=True)
        if generated:
            # The one place a key is ever shown: the user has no other way to learn it.
            print(f"Generated API key: {config.api_keys[0]}", flush=True)
        sys.stdout.flush()

    with contextlib.suppress(KeyboardInterrupt):
        serve(config, on_ready=ready, access_log=not args.no_access_log)
    return 0


def _keys(args: argparse.Namespace) -> list[str]:
    """Every accepted key: --api-key, then --api-key-file, then the environment variable."""

    keys = [clean_api_key(k, source=f"--api-key (number {i})") for i, k in enumerate(args.api_keys or [], 1)]
    if args.api_key_file is not None:
        keys += read_key_file(args.api_key_file)
    keys += keys_from_env(EMULATOR_KEYS_ENV)
    return list(dict.fromkeys(keys))
