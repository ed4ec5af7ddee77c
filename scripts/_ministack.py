"""MiniStack: a second S3-compatible server on loopback for ``bench_sources.py``.

moto, the tests' server, reads the whole object for every range GET (26 ms of CPU a request for
a 43 MB clip), on the same two cores as the run it serves: it measures moto as much as the run.
MiniStack (an independent AWS emulator, https://github.com/ministackorg/ministack) keeps an
object's bytes in memory and answers a range GET with a slice of them, as S3, GCS and MinIO
read only the asked range, and it runs unpatched. It pins a botocore that s3fs's aiobotocore
does not take, so it lives in its own virtual environment under the bench cache, made on first
use (one ``pip install``); where that fails the bench skips its arm and says why.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PINNED = "ministack==1.5.33"
"""The release measured; a bench is compared across sessions only on the same server."""


def ensure_ministack(cache: Path) -> Path | None:
    """The ``ministack`` executable in ``cache/ministack``, installed there if it is not yet;
    ``None`` (and a line saying why) when it cannot be installed."""
    home = cache / "ministack"
    exe = home / "bin" / "ministack"
    if exe.exists():
        return exe
    print(f"installing {PINNED} into {home} (once; its own venv: it pins its own botocore)")
    try:
        venv.create(home, with_pip=True, clear=True)
        subprocess.run([str(home / "bin" / "python"), "-m", "pip", "install", "-q", PINNED],
                       check=True, timeout=900, capture_output=True, text=True)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        print(f"  ministack not installed, its arm is skipped: {str(detail).strip().splitlines()[-1:]}")
        return None
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def ministack_server(exe: Path) -> Iterator[tuple[str, Any]]:
    """Start MiniStack on a free loopback port; yields its endpoint URL and its
    ``psutil.Process`` (the bench counts its CPU as the server's). Stopped on exit."""
    import psutil

    port = _free_port()
    env = {**os.environ, "GATEWAY_PORT": str(port), "BIND_HOST": "127.0.0.1", "LOG_LEVEL": "ERROR"}
    log_path = exe.parent.parent / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(exe)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"ministack did not start on port {port} (see {log_path})") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def upload(endpoint: str, bucket: str, files: dict[str, Path]) -> None:
    """Create ``bucket`` at ``endpoint`` and put each file under its key."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=bucket)
    for key, path in files.items():
        s3.upload_file(str(path), bucket, key)


if __name__ == "__main__":  # a smoke check: python scripts/_ministack.py
    found = ensure_ministack(Path(__file__).resolve().parent.parent / ".bench-cache")
    if found is None:
        sys.exit(1)
    with ministack_server(found) as (url, server):
        print(url, server.pid)
