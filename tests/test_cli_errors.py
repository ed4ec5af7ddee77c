"""Every way a user can get a command wrong ends in one line that says what and how to fix it,
the right exit code, and no traceback (issue 12, section 1)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from _pipeline_helpers import ROOT


def _cli(*args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEKNETIC_")}
    if key is not None:
        env["SEEKNETIC_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "seeknetic_prep", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def _one_line(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [x for x in proc.stderr.splitlines() if ": error: " in x]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("command", ["run", "prep"])
def test_out_that_is_a_file(command: str, tmp_path: Path) -> None:
    out = tmp_path / "README.md"
    out.write_text("not a folder")
    extra = ("--local",) if command == "run" else ()
    proc = _cli(command, "fixtures/demo", *extra, "--out", str(out))
    _one_line(proc, 2, "it is a file, not a folder")
    assert out.read_text() == "not a folder"


def test_empty_folder_and_folder_without_video(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line(_cli("run", str(empty), "--local", "--out", str(tmp_path / "o")), 2,
              f"no video files under {empty}", "0 other file(s) skipped")
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("a.txt", "b.jpg", "c.pdf"):
        (docs / name).write_text("x")
    _one_line(_cli("run", str(docs), "--local", "--out", str(tmp_path / "o")), 2,
              "(looked for .3gp", "3 other file(s) skipped")


@pytest.mark.parametrize("flag", [["--workers", "two"], ["--workers", "-1"], ["--qps", "0"]])
def test_bad_values_are_one_line(flag: list[str], tmp_path: Path) -> None:
    proc = _cli("run", "fixtures/demo", "--local", "--out", str(tmp_path / "o"), *flag)
    _one_line(proc, 2, flag[0].lstrip("-"))
    assert "usage:" not in proc.stderr


def test_api_that_does_not_answer_is_exit_2_within_seconds(tmp_path: Path) -> None:
    with socket.socket() as s:  # a loopback port with nobody listening: refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _cli("run", "fixtures/demo", "--base-url", f"http://127.0.0.1:{port}", "--out",
                str(tmp_path / "o"), key="k-123")
    _one_line(proc, 2, f"cannot reach http://127.0.0.1:{port} (connection refused)",
              "check the network, --base-url, or use --local")
    assert proc.stderr.count("retry: connection refused") == 2  # said as they happen
    assert not (tmp_path / "o" / "state.sqlite").exists()


def test_dns_failure_is_named() -> None:
    """What a DNS failure looks like from requests, classified without sending a query."""
    from urllib3.exceptions import MaxRetryError, NameResolutionError

    from seeknetic_prep.api.transport import why
    from seeknetic_prep.errors import APIConnectionError

    inner = NameResolutionError("api.example", None, OSError("Name or service not known"))  # type: ignore[arg-type]
    wrapped = requests.ConnectionError(MaxRetryError(None, "/x", inner))  # type: ignore[arg-type]
    try:
        try:
            raise wrapped
        except requests.ConnectionError as exc:
            raise APIConnectionError("GET /x: connection failed") from exc
    except APIConnectionError as err:
        assert why(err) == "DNS lookup failed"


def test_status_names_each_failed_file_once_and_run_repeats_failures(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(ROOT / "fixtures" / "short_700ms.mp4", src)
    shutil.copy(ROOT / "fixtures" / "bad" / "empty.mp4", src)
    out = tmp_path / "out"
    run = _cli("run", str(src), "--local", "--out", str(out), "--workers", "0", "--quiet")
    assert run.returncode == 1, run.stderr
    tail = run.stderr[run.stderr.index("failures (1):"):]
    assert f"{src / 'empty.mp4'}: empty: the file has 0 bytes" in tail
    status = _cli("status", "--out", str(out))
    line = next(x for x in status.stdout.splitlines() if "empty.mp4" in x)
    assert line.count("empty.mp4") == 1, line


@pytest.mark.parametrize("content", ["[1, 2]", "{not json", '"crop"'])
def test_a_settings_file_that_is_not_ours_is_one_line(content: str, tmp_path: Path) -> None:
    """Issue 22.13: a settings.json that is a JSON list gave a traceback; garbage was taken as
    ``--resize crop``, which could mix two resize modes in one folder. Now: one line, exit 2,
    the file left as it was."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "settings.json").write_text(content)
    proc = _cli("run", "fixtures/demo/desert.mp4", "--local", "--out", str(out))
    _one_line(proc, 2, f"Invalid {out / 'settings.json'}: not the JSON object seeknetic-prep writes")
    assert (out / "settings.json").read_text() == content
    assert not (out / "parts").exists()
