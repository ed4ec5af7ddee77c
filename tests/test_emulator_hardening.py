"""The standalone emulator under faults users hit: ambiguous framing, temp files a kill -9 left,
keys kept out of ``ps`` (file, environment). Real processes, real sockets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from _emulator_helpers import ROOT, Api, embedding_body, raw_post_streaming, start_cli

KEY = "sk-hardening-key-1"


def test_content_length_with_chunked_is_400_before_the_body_is_read(tmp_path: Path) -> None:
    emu = start_cli(["--api-key", KEY, "--data-dir", str(tmp_path), "--no-access-log"])
    try:
        started = time.monotonic()
        status, response, sent = raw_post_streaming(
            emu.base_url, "/files/upload/tensors", {"X-API-Key": KEY, "Content-Length": "1"},
            total_bytes=200 * 2**20, chunked=True, answer_first_s=5.0,
        )
        elapsed = time.monotonic() - started
        print(f"\nContent-Length: 1 + chunked, 200 MB offered: {status} after {sent / 2**20:.2f} MB "
              f"sent, {elapsed * 1000:.0f} ms")
        head, _, body = response.partition(b"\r\n\r\n")
        assert status == 400
        assert b"connection: close" in head.lower()
        detail = json.loads(body)["detail"]
        assert "both Content-Length and Transfer-Encoding: chunked" in detail and "RFC 9112" in detail
        assert sent == 0 and elapsed < 5.0  # answered on the headers alone: nothing was buffered
        # The same without a key: refused for its framing before anything else.
        status, _, sent = raw_post_streaming(
            emu.base_url, "/files/upload/tensors", {"Content-Length": "10"},
            total_bytes=50 * 2**20, chunked=True, answer_first_s=5.0,
        )
        assert status == 400 and sent == 0
        Api(emu.base_url, KEY).upload(embedding_body("after-ambiguous"))  # still serving
    finally:
        emu.stop()


def test_temp_files_left_by_kill_9_are_removed_at_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    emu = start_cli(["--api-key", KEY, "--data-dir", str(data), "--no-access-log"])
    api = Api(emu.base_url, KEY)
    keys = api.upload(embedding_body("kept-rid"))["r2_keys"]
    dead_pid = emu.pid
    emu.kill9()
    folder = next(data.glob("tensors/*/kept-rid"))
    # What a kill -9 in the middle of atomic_write leaves: .<name>.<pid>.<thread>.tmp, writer dead.
    stale = [folder / f".video_input.json.{dead_pid}.140245.tmp",
             data / "videos" / folder.parent.name / f".clip.mp4.{dead_pid}.77.tmp"]
    stale[1].parent.mkdir(parents=True)
    old = folder / f".audio_input.json.{os.getpid()}.1.tmp"  # writer alive, but two hours old
    live = folder / f".video_kwargs.json.{os.getpid()}.2.tmp"  # writer alive and recent: in use
    others = [folder / "notes.tmp", folder / f"video_input.json.{dead_pid}.1.tmp",  # not our pattern
              data / f".x.{dead_pid}.1.tmp"]  # not under tensors/ or videos/
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours")
    link = folder / f".link.json.{dead_pid}.3.tmp"
    link.symlink_to(outside)
    for path in [*stale, old, live, *others]:
        path.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))

    emu = start_cli(["--api-key", KEY, "--data-dir", str(data), "--no-access-log"])
    try:
        assert not any(p.exists() for p in [*stale, old])
        assert live.exists() and all(p.exists() for p in others)
        assert link.is_symlink() and outside.read_text() == "not ours"
        sub = Api(emu.base_url, KEY).post(
            "/video_embedding/encode_video/async",
            {"tensor": {"video_input_key": keys["video_input"], "audio_input_key": keys["audio_input"]},
             "request_id": "kept-rid"},
        )
        assert sub.status_code == 200, sub.text  # the upload written before the kill is intact
        assert Api(emu.base_url, KEY).wait("kept-rid")["status"] == "completed"
    finally:
        emu.stop()


def test_keys_from_a_file_and_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text("# accepted keys\n\nsk-file-one\n  sk-file-two \r\n")
    os.chmod(key_file, 0o600)
    monkeypatch.setenv("SEEKNETIC_EMULATOR_API_KEYS", "sk-env-one, sk-env-two\nsk-env-three")
    emu = start_cli(["--api-key-file", str(key_file), "--data-dir", str(tmp_path / "d")])
    try:
        for key in ("sk-file-one", "sk-file-two", "sk-env-one", "sk-env-two", "sk-env-three"):
            r = requests.get(f"{emu.base_url}/async_status/none", headers={"X-API-Key": key}, timeout=30)
            assert r.status_code == 404, (key, r.text)  # authenticated: just no such job
        r = requests.get(f"{emu.base_url}/async_status/none", headers={"X-API-Key": "sk-other"}, timeout=30)
        assert r.status_code == 401
    finally:
        output = emu.stop()
    assert "Generated API key" not in output and "sk-file" not in output and "sk-env" not in output


def test_a_bad_key_in_the_file_is_one_line_exit_2_without_the_key(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text("sk-good\nsk\u2013SECRETPART\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEKNETIC_")}
    proc = subprocess.run(
        [sys.executable, "-m", "seeknetic_prep", "emulator", "--port", "0", "--api-key-file", str(key_file),
         "--data-dir", str(tmp_path / "d")],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "line 2" in proc.stderr and "U+2013" in proc.stderr
    assert "SECRETPART" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr


def test_accepted_connections_have_tcp_nodelay(tmp_path: Path) -> None:
    """Without TCP_NODELAY an answer written in two pieces (headers, then body) waits ~44 ms
    for the client's delayed ACK (issue 20.5). Checked on the sockets the server accepted, not
    by timing: those of the in-process server's live connections, and one accepted by hand from
    the listening socket every way of serving binds (the CLI's and the child's included)."""
    from seeknetic_prep.emulator import EmulatorConfig, running
    from seeknetic_prep.emulator.server import bind

    with running(EmulatorConfig(api_keys=(KEY,), data_dir=tmp_path)) as server:
        api = Api(server.base_url, KEY)
        assert api.get("/_emulator/stats").status_code == 200  # its connection stays open
        connections = server._server.server.server_state.connections
        accepted = [c.transport.get_extra_info("socket") for c in connections]
        assert accepted
        assert all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in accepted)
    listener = bind("127.0.0.1", 0)
    with listener, socket.create_connection(listener.getsockname()[:2], timeout=10):
        conn, _ = listener.accept()
        with conn:
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
