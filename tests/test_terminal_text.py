"""Issue 22.10: what a file name or an API answer holds never drives the user's terminal.

File names with ESC, CR and newlines are printed escaped by ``run`` (its per-file lines, its
failures, its errors), never raw: a name cannot retitle the terminal, clear the screen or
rewrite the line that says a file failed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from _pipeline_helpers import ROOT

from seeknetic_prep.util.text import printable

HOSTILE = ("\x1b]0;pwned\x07", "\x1b[2J", "\r", "\n", "\x9b31m", "\u202e")


def test_printable_escapes_every_control_and_nothing_else() -> None:
    assert printable("é 日本 tab-free text, (ok) [1]") == "é 日本 tab-free text, (ok) [1]"
    for bad in HOSTILE:
        shown = printable(f"a{bad}b")
        assert shown.startswith("a") and shown.endswith("b")
        assert not any(ch in shown for ch in bad if not ch.isprintable()), repr(shown)
    assert printable("\x1b[2J\n") == "\\x1b[2J\\x0a" and printable("\u202e") == "\\u202e"


def test_run_prints_hostile_file_names_escaped(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    good = "good\x1b]0;pwned\x07\x1b[2J.mp4"
    bad = "bad\r\nfake ok line\x1b[1A.mp4"
    shutil.copy(ROOT / "fixtures" / "short_700ms.mp4", src / good)
    (src / bad).write_bytes(b"not a video at all" * 100)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEKNETIC_")}
    proc = subprocess.run([sys.executable, "-m", "seeknetic_prep", "run", str(src), "--local",
                           "--out", str(tmp_path / "out"), "--quiet"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 1, proc.stderr  # the bad file failed, the good one completed
    text = proc.stdout + proc.stderr
    assert not any(ch in text for ch in "\x1b\x07\r"), repr(text)
    lines = text.splitlines()
    assert any(line.startswith("ok ") and printable(good) in line for line in lines), text
    assert any(line.startswith("failed ") and printable(bad) in line for line in lines), text
    assert not any(line.startswith("fake ok line") for line in lines)  # the newline did not split it
