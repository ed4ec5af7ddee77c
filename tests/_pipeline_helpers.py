"""Helpers for the client and pipeline tests: tensors, emulator stats, a fault-injecting proxy.

The proxy is not a stand-in for the server: it forwards every request to a real emulator and
only loses or rewrites answers on purpose (the request reaches the server, the reply never
reaches the client, or reaches it changed), which are faults a server cannot inject about
itself: a lost answer, and an answer that breaks the API's promises (a wrong-sized embedding,
a tag out of range, a status that is not an object).
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import requests

from seeknetic_prep.api.tensors import encode_tensor

ROOT = Path(__file__).resolve().parent.parent


def video_tensor(seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return dict(encode_tensor(rng.integers(0, 256, (1, 12, 3, 224, 224), dtype=np.uint8)))


def audio_tensor(seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return dict(encode_tensor(rng.uniform(-0.5, 0.5, (1, 1, 220500)).astype(np.float32)))


def stats(server: Any, key: str | None = None) -> dict[str, dict[str, int]]:
    """What reached the emulator's handlers: ``{"uploads": {id: n}, "submissions": {id: n}}``."""
    r = requests.get(f"{server.base_url}/_emulator/stats",
                     headers={"X-API-Key": key or server.api_key}, timeout=10)
    r.raise_for_status()
    data: dict[str, dict[str, int]] = r.json()
    return data


class _Proxy(http.server.ThreadingHTTPServer):
    daemon_threads = True
    upstream: str
    drop: Callable[[str, str], bool]
    dropped: list[str]
    rewrite: Callable[[str, str, bytes], bytes] | None


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Proxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        resp = requests.request(self.command, self.server.upstream + self.path, data=body,
                                headers=headers, timeout=60)
        if self.server.drop(self.command, self.path):
            self.server.dropped.append(self.path)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # the server acted; the answer is lost
            return
        content = resp.content
        if self.server.rewrite is not None and resp.status_code == 200:
            content = self.server.rewrite(self.command, self.path, content)
        self.send_response(resp.status_code)
        for k, v in resp.headers.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = _forward
    do_POST = _forward


@contextmanager
def lossy_proxy(upstream: str, drop: Callable[[str, str], bool],
                rewrite: Callable[[str, str, bytes], bytes] | None = None) -> Iterator[_Proxy]:
    """A loopback proxy to ``upstream`` that swallows the answers ``drop(method, path)`` picks
    and passes each 200 answer's body through ``rewrite(method, path, body)`` when given."""
    proxy = _Proxy(("127.0.0.1", 0), _Handler)
    proxy.upstream = upstream
    proxy.drop = drop
    proxy.dropped = []
    proxy.rewrite = rewrite
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()


def proxy_url(proxy: _Proxy) -> str:
    host, port = proxy.server_address[:2]
    return f"http://{host!s}:{port}"


@contextmanager
def silent_server() -> Iterator[str]:
    """A loopback port that accepts connections and never answers (for read timeouts)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(sock.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        t.join()
        for c in conns:
            c.close()
        sock.close()


def read_results(path: Path) -> list[dict[str, Any]]:
    """A run's results, one dict per (path, window, service) that reached an end, read from the
    Parquet parts ``run`` wrote (``path`` is the run's ``--out``).

    A file that could not be preprocessed is one ``failed`` entry per service, with its reason.
    The per-service shape is what the tests' assertions about request ids are written in.
    """
    from seeknetic_prep.results.parts import TAG_TYPES, compact, list_parts

    out = path
    if not list_parts(out):
        return []
    lines: list[dict[str, Any]] = []
    for row in compact(out).to_pylist():
        base = {"path": row["path"], "fingerprint": row["fingerprint"], "start_ms": row["start_ms"],
                "end_ms": row["end_ms"], "frame_times_ms": row["frame_times_ms"]}
        for service in ("embedding", "tagging"):
            status = row[f"{service}_status"]
            if row["window_index"] is None:
                if row["file_status"] == "failed" and status is not None:
                    lines.append({**base, "service": service, "request_id": None, "status": "failed",
                                  "error": row[f"{service}_error"]})
                continue
            if status not in ("completed", "failed"):
                continue
            line = {**base, "service": service, "request_id": row[f"{service}_request_id"],
                    "status": status, "error": row[f"{service}_error"]}
            if service == "embedding":
                line["embedding"] = row["embedding"]
            else:
                tags = {k: row[k] for k in TAG_TYPES if row[k] is not None}
                tags.update(json.loads(row["tags_extra"]) if row["tags_extra"] else {})
                line["tags"] = tags if status == "completed" else None
            lines.append(line)
    return lines


def units_done(db: Path) -> int:
    """Units past ``planned`` in a run's state, read while the run writes it (0 until it exists)."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return int(con.execute("SELECT COUNT(*) FROM units WHERE status != 'planned'").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def cli(*args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    """``seeknetic-prep ARGS`` as a user runs it (no SEEKNETIC_ variables), checked: an exit code
    in ``ok`` and no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEKNETIC_")}
    proc = subprocess.run([sys.executable, "-m", "seeknetic_prep", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in ok and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc
