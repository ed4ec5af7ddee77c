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


def _hostile_state(tmp_path: Path) -> Path:
    """A run folder whose file names, errors and API tag values hold terminal escapes."""
    from _results_helpers import add_file

    from seeknetic_prep.results.part_rows import append_results_part
    from seeknetic_prep.state.store import Store

    out = tmp_path / "o\x1b]0;title\x07ut"
    with Store(out / "state.sqlite") as store:
        run = store.start_run()
        add_file(store, "/v/clip\x1b[2J\r\n.mp4", "a" * 32, 2, dim=8,
                 fail={(1, "embedding"): "server said \x1b]0;pwned\x07\x1b[2J"})
        store.plan_units([("b" * 32, 0, "tagging", 0, 10_000, "b-0-tagging")])
        store.record_file("/v/b.mp4", status="ok", fingerprint="b" * 32, size=1, duration_ms=10_000)
        store.mark_uploaded("b-0-tagging", {"video_input": "k"}, [400.0 + k for k in range(12)])
        store.mark_submitted("b-0-tagging")
        store.mark_completed("b-0-tagging", {"tags": {"shot_size": "wide\x1b]0;retitled\x07\x1b[2J",
                                                      "mood\x1b[1A": "calm\r"}})
        store.record_file("/v/bad\x1b[2J.mp4", status="failed", error="/v/bad\x1b[2J.mp4: \x9b31mbroken")
        append_results_part(store, out, run)
    return out


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEKNETIC_")}
    return subprocess.run([sys.executable, "-m", "seeknetic_prep", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def _no_raw_controls(text: str) -> None:
    assert not any(ch in text for ch in "\x1b\x07\r\x9b"), repr(text)


def test_status_prints_names_errors_and_the_folder_escaped(tmp_path: Path) -> None:
    out = _hostile_state(tmp_path)
    proc = _cli("status", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    _no_raw_controls(proc.stdout + proc.stderr)
    assert printable("/v/bad\x1b[2J.mp4: \x9b31mbroken") in proc.stdout
    assert printable("server said \x1b]0;pwned\x07\x1b[2J") in proc.stdout
    assert printable("/v/clip\x1b[2J\r\n.mp4") in proc.stdout and printable(str(out)) in proc.stdout


def test_search_prints_names_and_tag_values_escaped_and_json_stays_json(tmp_path: Path) -> None:
    out = _hostile_state(tmp_path)
    for args in (("--tag", "dominant_color=green"), ("--tag", "frames_analyzed=12"), ("--list-tags",),
                 ("--tag", "shot_size=" + "wide\x1b]0;retitled\x07\x1b[2J")):
        proc = _cli("search", "--out", str(out), *args)
        assert proc.returncode == 0, proc.stderr
        _no_raw_controls(proc.stdout + proc.stderr)
    assert printable("wide\x1b]0;retitled\x07\x1b[2J") in proc.stdout
    listed = _cli("search", "--out", str(out), "--list-tags").stdout
    assert printable("mood\x1b[1A") in listed and printable("wide\x1b]0;retitled\x07\x1b[2J") in listed
    hits = _cli("search", "--out", str(out), "--tag", "dominant_color=green", "--json")
    assert hits.returncode == 0, hits.stderr
    _no_raw_controls(hits.stdout + hits.stderr)  # JSON escapes them itself
    import json

    paths = {json.loads(line)["path"] for line in hits.stdout.splitlines()}
    assert paths == {"/v/clip\x1b[2J\r\n.mp4"}
