"""Real servers on loopback for the sources tests: moto's S3 server, and a small HTTP server
that honours ``Range`` and can fail on purpose (a 503, a connection reset mid-body, HTML)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Route:
    body: bytes
    status: int = 200
    content_type: str = "video/mp4"
    fail_after: int | None = None  # GETs answered normally before the fault starts
    fault: str = ""  # "503" or "reset"
    hold: threading.Event | None = None  # GETs wait for it (up to a minute) before answering
    gets: int = 0
    heads: int = 0


@dataclass
class Files:
    routes: dict[str, Route] = field(default_factory=dict)
    bytes_sent: int = 0


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    files: Files


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, *, head: bool) -> None:
        route = self.server.files.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self._status(404, b"not found")
            return
        if route.status != 200:
            self._status(route.status, b"<html>denied</html>")
            return
        body = route.body
        start, end = 0, len(body)
        rng = self.headers.get("Range")
        if head:
            route.heads += 1
        else:
            route.gets += 1
            if route.hold is not None:
                route.hold.wait(60)
            if route.fail_after is not None and route.gets > route.fail_after and route.fault == "503":
                self._status(503, b"slow down")
                return
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start, end = int(a), min(len(body), int(b) + 1 if b else len(body))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", route.content_type)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{len(body)}-{hash(body[:64]) & 0xffff:x}"')
        self.end_headers()
        if head:
            return
        chunk = body[start:end]
        if route.fail_after is not None and route.gets > route.fail_after and route.fault == "reset":
            self.wfile.write(chunk[: len(chunk) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(chunk)
        self.server.files.bytes_sent += len(chunk)

    def _status(self, code: int, text: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(text)


@contextmanager
def http_files(files: Files) -> Iterator[str]:
    """Serve ``files`` on a free loopback port; yields the base URL (``http://127.0.0.1:P``)."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.files = files
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3-compatible server on a free loopback port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_env(endpoint: str) -> dict[str, str]:
    """The standard AWS variables that point every S3 client (ours, boto3) at ``endpoint``."""
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}


def forget_clients() -> None:
    """Drop fsspec's cached S3 and HTTP filesystems (credentials and endpoint are read when one
    is made): a test that changes the environment gets a client that sees it."""
    import fsspec.implementations.http as fh
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fh.HTTPFileSystem.clear_instance_cache()


def upload(client: Any, bucket: str, key: str, data: bytes) -> None:
    client.put_object(Bucket=bucket, Key=key, Body=data)
