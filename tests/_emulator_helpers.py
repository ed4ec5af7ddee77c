"""Helpers for the emulator's tests: seed-shaped tensors, a CLI emulator subprocess, raw HTTP."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import requests

from seeknetic_prep.api.tensors import encode_tensor

ROOT = Path(__file__).resolve().parent.parent


def seed_video(seed: int = 0) -> np.ndarray:
    """A (1, 12, 3, 224, 224) uint8 window: a moving gradient, different for each seed."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    y, x = np.mgrid[0:224, 0:224]
    frames = []
    for t in range(12):
        chans = [((x + 4 * t + int(b)) * (c + 1) + y) % 256 for c, b in enumerate(base)]
        frames.append(np.stack(chans))
    return np.stack(frames)[None].astype(np.uint8)


def seed_audio(seed: int = 0) -> np.ndarray:
    t = np.arange(220_500) / 22_050
    return (0.3 * np.sin(2 * np.pi * (220 + 110 * seed) * t)).astype(np.float32).reshape(1, 1, -1)


def embedding_body(request_id: str, seed: int = 0) -> dict[str, Any]:
    return {
        "service": "embedding",
        "request_id": request_id,
        "video_input": encode_tensor(seed_video(seed)),
        "audio_input": encode_tensor(seed_audio(seed)),
    }


def tagging_body(request_id: str, seed: int = 0) -> dict[str, Any]:
    return {
        "service": "tagging",
        "request_id": request_id,
        "video_input": encode_tensor(seed_video(seed)),
        "video_kwargs": {"do_sample_frames": False, "fps": 1.2},
    }


class Api:
    """A tiny requests wrapper with the key set: tests assert on raw statuses and bodies."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["X-API-Key"] = api_key

    def post(self, path: str, body: Any, **kw: Any) -> requests.Response:
        return self.session.post(self.base_url + path, json=body, timeout=60, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.session.get(self.base_url + path, timeout=60, **kw)

    def upload(self, body: dict[str, Any]) -> dict[str, Any]:
        r = self.post("/files/upload/tensors", body)
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    def wait(self, request_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            r = self.get(f"/async_status/{request_id}")
            assert r.status_code == 200, r.text
            data: dict[str, Any] = r.json()
            if data["status"] in ("completed", "failed"):
                return data
            assert time.monotonic() < deadline, f"job {request_id} still {data['status']}"
            time.sleep(0.05)


@dataclass
class CliEmulator:
    """``seeknetic-prep emulator`` running as a subprocess."""

    proc: subprocess.Popen[str]
    base_url: str
    output: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> str:
        """SIGINT (Ctrl-C), wait, and return everything it printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stdout is not None
        self.output.append(self.proc.stdout.read())
        return "".join(self.output)


def start_cli(args: Sequence[str], *, timeout: float = 60) -> CliEmulator:
    """Start ``seeknetic-prep emulator --port 0 ARGS`` and wait for its URL line."""
    script = Path(sys.executable).with_name("seeknetic-prep")  # the installed console script
    command = [str(script)] if script.exists() else [sys.executable, "-m", "seeknetic_prep"]
    proc = subprocess.Popen(
        [*command, "emulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    url = None
    while url is None:
        assert time.monotonic() < deadline, f"emulator did not start: {''.join(lines)}"
        line = _readline(proc.stdout, deadline)
        if not line:
            proc.wait(timeout=10)
            raise AssertionError(f"emulator exited {proc.returncode}: {''.join(lines)}")
        lines.append(line)
        match = re.search(r"listening on (http://\S+)", line)
        if match:
            url = match.group(1)
    emu = CliEmulator(proc, url, lines)
    _wait_answering(url)
    # Give the one-time key line a moment to arrive, then keep it with the rest of the output.
    if proc.stdout in select.select([proc.stdout], [], [], 0.5)[0]:
        lines.append(proc.stdout.readline())
    return emu


def _readline(stream: IO[str], deadline: float) -> str:
    ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
    return stream.readline() if ready else ""


def _wait_answering(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url + "/openapi.json", timeout=5)
            return
        except requests.ConnectionError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.05)


def raw_post_streaming(
    base_url: str,
    path: str,
    headers: dict[str, str],
    *,
    total_bytes: int,
    chunked: bool,
    chunk: int = 1 << 20,
    answer_first_s: float = 0.0,
) -> tuple[int, bytes, int]:
    """POST ``total_bytes`` of body without ever holding it, stop as soon as an answer arrives.

    Once the first byte of the answer is in, nothing more is sent: the rest of the answer is
    read until it is complete or the server closes. (An answer can arrive in pieces, headers
    first, when the server is slow to write its body; sending on meanwhile counted body bytes
    that the server never asked for, and a close with unread bytes could reset the connection
    and lose the rest of the answer.)

    ``answer_first_s``: after the headers, wait that long for an answer before sending any body,
    as a client with ``Expect: 100-continue`` does. A server that refuses on the headers alone
    then closes a connection holding no unread bytes, so its answer cannot be lost to the reset
    a close with unread data sends.

    Returns:
        ``(status, response bytes, body bytes sent before the answer)``.
    """
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    try:
        head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total_bytes}")
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        piece = b"[" + b"0," * (chunk // 2 - 1) + b"0"  # JSON-ish filler, never a full body
        sent = 0
        response = b""
        sock.setblocking(False)
        pending = b""
        if answer_first_s > 0:
            select.select([sock], [], [], answer_first_s)
        while True:
            sending = sent < total_bytes and not response
            readable, writable, _ = select.select([sock], [sock] if sending else [], [], 30)
            if readable:
                data = sock.recv(65536)
                if not data:
                    break
                response += data
                if b"\r\n\r\n" in response and _complete(response):
                    break
                continue
            if not writable:
                raise AssertionError(
                    f"server neither read nor answered for 30 s ({sent} bytes sent, "
                    f"{len(response)} bytes of answer received)"
                )
            if not pending:
                n = min(len(piece), total_bytes - sent)
                pending = (f"{n:x}\r\n".encode() + piece[:n] + b"\r\n") if chunked else piece[:n]
                sent += n
            try:
                written = sock.send(pending)
            except (BrokenPipeError, ConnectionResetError):
                break
            pending = pending[written:]
        status = int(response.split(b" ", 2)[1]) if response else 0
        return status, response, sent
    finally:
        sock.close()


def _complete(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    match = re.search(rb"content-length:\s*(\d+)", head, re.IGNORECASE)
    return match is None or len(body) >= int(match.group(1))


def sample_rss(pid: int, stop: Any, out: list[int]) -> None:
    """Append the process's RSS every 20 ms until ``stop`` is set (for peak-memory checks)."""
    import psutil

    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            out.append(proc.memory_info().rss)
        except psutil.Error:
            return
        time.sleep(0.02)


def iter_lines(text: str) -> Iterator[str]:
    yield from text.splitlines()
