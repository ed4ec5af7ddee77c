"""API keys: cleaned and checked before any request, never echoed, redacted in every form, and the
``--local`` key random per output folder (0600). Over real HTTP to the emulator and real CLIs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from _emulator_helpers import ROOT

from seeknetic_prep.api.client import Client
from seeknetic_prep.api.keys import clean_api_key, local_key, read_key_file, redact, secret_forms
from seeknetic_prep.errors import InvalidArgumentError


def _forms(key: str) -> list[str]:
    """The raw key and the escaped spellings a message could carry."""
    return [key, key.strip(), repr(key)[1:-1], json.dumps(key)[1:-1], urllib.parse.quote(key, safe=""),
            repr(key.encode())[2:-1]]


# -- cleaning and checking ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["  sk-abc123  ", "sk-abc123\n", "sk-abc123\r\n", "\tsk-abc123\r"])
def test_surrounding_whitespace_is_stripped(raw: str) -> None:
    assert clean_api_key(raw, source="test") == "sk-abc123"


@pytest.mark.parametrize(
    ("raw", "kind", "code"),
    [
        ("sk-abc\n123", "a control character", "U+000A"),
        ("sk-abc\r123", "a control character", "U+000D"),
        ("sk\x00abc123", "a control character", "U+0000"),
        ("sk\u2013abc123", "a non-ASCII character", "U+2013"),  # en dash pasted for '-'
        ("sk-abc 123", "a space", "U+0020"),
        ("sk-abé123", "a non-ASCII character", "U+00E9"),
    ],
)
def test_bad_characters_refused_without_echoing_the_key(raw: str, kind: str, code: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        clean_api_key(raw, source="SEEKNETIC_API_KEY")
    message = str(info.value)
    assert kind in message and code in message and "SEEKNETIC_API_KEY" in message
    assert "\n" not in message
    for part in ("abc", "123"):  # no fragment of the key, raw or escaped
        assert part not in message


def test_empty_key_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="empty"):
        clean_api_key(" \n ", source="x")


def test_redaction_covers_repr_json_quoted_and_bytes_forms() -> None:
    key = "sk-a\\b'c\"d/e+f%g"  # printable ASCII whose escaped forms all differ from it
    forms = secret_forms(key)
    text = " | ".join([key, repr(key), json.dumps(key), urllib.parse.quote(key, safe=""),
                       urllib.parse.quote_plus(key, safe=""), repr(key.encode())])
    out = redact(text, forms)
    for form in _forms(key):
        assert form not in out, form
    assert out.count("[redacted]") == 6
    with Client(key, base_url="http://127.0.0.1:9") as c:  # the client's own redaction uses them
        assert c._redact(f"header value {key!r} is invalid") == "header value '[redacted]' is invalid"
        assert c._redact_obj({"detail": [json.dumps(key)]}) == {"detail": ['"[redacted]"']}


# -- over HTTP: a key with stray whitespace works, a bad one fails before any request ---------------


@pytest.mark.parametrize("wrap", ["{}\n", "{}\r", "{}\r\n", "  {}  ", "\t{}"])
def test_key_with_surrounding_whitespace_works_over_http(emulator: Any, wrap: str) -> None:
    with Client(wrap.format(emulator.api_key), base_url=emulator.base_url) as c:
        c.check_auth()  # 404 for a random id: the key was accepted
    with Client(wrap.format(emulator.api_key), base_url=emulator.base_url, auth="bearer") as c:
        c.check_auth()


@pytest.mark.parametrize("bad", ["{}\nx", "{}\rx", "x\u2013{}", "{} x"])
def test_bad_key_raises_before_any_request(emulator: Any, bad: str) -> None:
    before = emulator.stats()
    key = bad.format(emulator.api_key)
    with pytest.raises(InvalidArgumentError) as info:
        Client(key, base_url=emulator.base_url)
    assert all(form not in str(info.value) for form in _forms(key))
    assert emulator.api_key not in str(info.value)
    assert emulator.stats() == before


def _cli(args: list[str], key: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEKNETIC_")}
    env["SEEKNETIC_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "seeknetic_prep", *args], env=env, capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize("bad", ["{}\nmore", "{}\rmore", "sk\u2013{}", "{}\u00a0x"])
def test_cli_with_a_bad_key_exits_2_and_never_shows_it(emulator: Any, tmp_path: Path, bad: str) -> None:
    secret = "sk-SECRET-7f3a9"
    key = bad.format(secret)
    proc = _cli(["run", "fixtures/short_700ms.mp4", "--base-url", emulator.base_url,
                 "--out", str(tmp_path / "o"), "--workers", "0", "--quiet"], key)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Invalid API key from SEEKNETIC_API_KEY" in lines[0], proc.stderr
    both = proc.stdout + proc.stderr
    assert "Traceback" not in both and "SECRET" not in both
    for form in _forms(key):
        assert form not in both
    # The same through --api-key (a flag shows in ps, but it must not show in the output either).
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEKNETIC_")}
    flag = subprocess.run([sys.executable, "-m", "seeknetic_prep", "run", "fixtures/short_700ms.mp4",
                           "--base-url", emulator.base_url, "--out", str(tmp_path / "o"), "--api-key", key],
                          env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert flag.returncode == 2 and "Invalid API key from api_key (--api-key)" in flag.stderr, flag.stderr
    assert "SECRET" not in flag.stdout + flag.stderr


def test_cli_key_ending_in_crlf_is_stripped_and_the_run_completes(tmp_path: Path) -> None:
    from seeknetic_prep.emulator import EmulatorConfig, running

    # An emulator of its own: jobs are named by content, and the session's emulator must not
    # already know this clip's when another test submits it.
    with running(EmulatorConfig(data_dir=tmp_path / "emu")) as emulator:
        proc = _cli(["run", "fixtures/short_700ms.mp4", "--base-url", emulator.base_url,
                     "--out", str(tmp_path / "o"), "--workers", "0", "--quiet"],
                    f"  {emulator.api_key}\r\n")
        assert proc.returncode == 0, proc.stderr
        assert emulator.api_key not in proc.stdout + proc.stderr


# -- key files -------------------------------------------------------------------------------------


def test_key_file_one_per_line_with_comments(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# team keys\n\nsk-one\n  sk-two  \r\n# sk-not-a-key\nsk-three\n")
    assert read_key_file(path) == ["sk-one", "sk-two", "sk-three"]
    path.write_text("sk-one\nsk\u2013two\n")
    with pytest.raises(InvalidArgumentError, match=r"line 2: .*U\+2013") as info:
        read_key_file(path)
    assert "two" not in str(info.value).split("line 2")[1]
    path.write_text("# nothing\n\n")
    with pytest.raises(InvalidArgumentError, match="holds no key"):
        read_key_file(path)
    with pytest.raises(InvalidArgumentError, match="cannot read"):
        read_key_file(tmp_path / "missing")


# -- the --local key ---------------------------------------------------------------------------------


def test_local_key_is_random_per_out_private_and_reused(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    key_a, key_b = local_key(a), local_key(b)
    assert key_a != key_b and len(key_a) > 40
    assert local_key(a) == key_a  # a rerun finds its jobs under the same key
    path = a / "emulator" / "api-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((a / "emulator").stat().st_mode) & 0o077 == 0
    assert not [p for p in (a / "emulator").iterdir() if p.name != "api-key"]  # no temp file left
    # The old scheme derived the key from the path: the same path elsewhere must not give it back.
    clone = tmp_path / "clone"
    (clone / "emulator").mkdir(parents=True)
    assert local_key(clone) not in (key_a, key_b)
    os.chmod(path, 0o644)  # loosened by hand: tightened again
    assert local_key(a) == key_a and stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("sk\u2013bad\n")
    with pytest.raises(InvalidArgumentError, match="does not hold a usable key"):
        local_key(a)
    path.unlink()
    (tmp_path / "planted").write_text("sk-known-to-someone-else\n")
    path.symlink_to(tmp_path / "planted")
    with pytest.raises(InvalidArgumentError, match="does not hold a usable key"):
        local_key(a)


def test_local_key_folder_others_can_write_is_tightened_or_refused(tmp_path: Path) -> None:
    """OUT/emulator writable by others would let them plant a key they know: ours is
    tightened to 0700 before the key is read; a folder or key file of another user, or a folder
    that is a symlink, is refused with one line."""
    out = tmp_path / "out"
    folder = out / "emulator"
    folder.mkdir(parents=True)
    os.chmod(folder, 0o777)
    key = local_key(out)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    os.chmod(folder, 0o777)
    assert local_key(out) == key and stat.S_IMODE(folder.stat().st_mode) == 0o700
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    linked = tmp_path / "linked"
    (linked).mkdir()
    (linked / "emulator").symlink_to(elsewhere)
    with pytest.raises(InvalidArgumentError, match="is a symlink"):
        local_key(linked)
    if os.geteuid() != 0:
        return  # giving a file to another user needs root
    os.chown(folder / "api-key", 4242, 4242)
    with pytest.raises(InvalidArgumentError, match="does not hold a usable key"):
        local_key(out)
    os.chown(folder / "api-key", 0, 0)
    os.chown(folder, 4242, 4242)
    with pytest.raises(InvalidArgumentError, match=r"belongs to another user \(uid 4242\)"):
        local_key(out)


def test_local_run_twice_reuses_the_key_and_never_prints_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["run", "fixtures/short_700ms.mp4", "--local", "--out", str(out), "--workers", "0", "--quiet"]
    first = _cli(args, "unused")
    assert first.returncode == 0, first.stderr
    key = (out / "emulator" / "api-key").read_text().strip()
    second = _cli(args, "unused")
    assert second.returncode == 0, second.stderr
    assert (out / "emulator" / "api-key").read_text().strip() == key
    assert key not in first.stdout + first.stderr + second.stdout + second.stderr
    # The rerun saw the first run's jobs: nothing submitted twice.
    import sqlite3

    con = sqlite3.connect(out / "emulator" / "emulator.sqlite3")
    try:
        counts = [n for (n,) in con.execute("SELECT n FROM stats WHERE kind = 'submissions'")]
    finally:
        con.close()
    assert counts and set(counts) == {1}
