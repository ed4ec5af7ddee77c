"""Reading an out folder one cannot write (issue 18.3): another account's folder or a read-only
mount. Every reading command (``status``, ``results --to``, ``search``, ``report``, ``plan``)
works there and changes nothing in it: the state is opened read-only, the search index is read in
place when it covers every part and otherwise made in the reader's cache, and the report goes to
that cache. Before: each failed with ``attempt to write a readonly database``, exit 1.

The folder is made by a real ``run --local``, then ``chmod -R a-w``; the commands run as a second
uid (``nobody``, through ``setpriv``) when the tests run as root, as root ignores file modes.
Their answers are compared with the owner's answers on the same folder.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from _pipeline_helpers import ROOT
from _results_helpers import add_file

from seeknetic_prep.errors import StateError
from seeknetic_prep.results.part_rows import append_results_part, missing_parts
from seeknetic_prep.results.parts import list_parts
from seeknetic_prep.state.store import Store

DEMO = ROOT / "fixtures" / "demo"
NOBODY = 65534


def _can_drop_to_nobody() -> str | None:
    """Why the commands cannot run as another uid here, or None when they can."""
    if os.geteuid() != 0:
        return None  # not root: file modes apply to us, no second uid needed
    if shutil.which("setpriv") is None:
        return "running as root without setpriv: no second uid to read the folder as"
    probe = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                            sys.executable, "-c", "import seeknetic_prep.cli"],
                           capture_output=True, text=True, env=_env(Path("/tmp")), timeout=60)
    if probe.returncode != 0:
        return f"uid {NOBODY} cannot run this checkout's Python ({probe.stderr.strip()[-200:]})"
    return None


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEEKNETIC_", "XDG_"))}
    env["HOME"] = str(home)
    return env


def _as_reader(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    drop = (["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if os.geteuid() == 0
            else [])
    return subprocess.run([*drop, sys.executable, "-m", "seeknetic_prep", *args], cwd=ROOT, env=_env(home),
                          capture_output=True, text=True, timeout=300)


def _as_owner(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "seeknetic_prep", *args], cwd=ROOT, env=_env(Path.home()),
                          capture_output=True, text=True, timeout=300)


def _snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under ``folder``: (mode, size, mtime_ns); what "changed nothing" compares."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(folder))] = (st.st_mode, 0 if p.is_dir() else st.st_size, st.st_mtime_ns)
    return out


def _read_only(folder: Path) -> None:
    for p in [folder, *folder.rglob("*")]:
        mode = p.lstat().st_mode
        p.chmod((mode & ~0o222) | 0o444 | (0o111 if stat.S_ISDIR(mode) else 0))


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[Path, Path]]:
    """An out folder of a finished run, its search index current, then made read-only; and a
    home folder the reader owns. Both under a folder every uid can traverse."""
    why = _can_drop_to_nobody()
    if why is not None:
        pytest.skip(why)
    base = Path(tempfile.mkdtemp(prefix="sp-readonly-", dir="/tmp"))
    base.chmod(0o755)
    out, home = base / "out", base / "home"
    home.mkdir()
    if os.geteuid() == 0:
        os.chown(home, NOBODY, NOBODY)
    proc = _as_owner(["run", str(DEMO), "--local", "--out", str(out), "--workers", "2"])
    assert proc.returncode == 0, proc.stderr
    assert _as_owner(["search", "--out", str(out)]).returncode == 0  # the index is current
    _read_only(out)
    yield out, home
    for p in [base, *base.rglob("*")]:
        if not p.is_symlink():
            p.chmod(p.lstat().st_mode | 0o700)
    shutil.rmtree(base)


def test_status_results_search_report_and_plan_read_it_and_change_nothing(shared: tuple[Path, Path]) -> None:
    out, home = shared
    before = _snapshot(out)
    owner_status = _as_owner(["status", "--out", str(out)])
    status = _as_reader(["status", "--out", str(out)], home)
    assert status.returncode == 0, status.stderr
    assert status.stdout == owner_status.stdout and "3 preprocessed" in status.stdout

    exported = home / "results.parquet"
    results = _as_reader(["results", "--out", str(out), "--to", str(exported)], home)
    assert results.returncode == 0, results.stderr
    owner_export = home.parent / "owner.parquet"
    assert _as_owner(["results", "--out", str(out), "--to", str(owner_export)]).returncode == 0
    assert pq.read_table(exported).equals(pq.read_table(owner_export))
    assert pq.read_table(exported).num_rows > 0

    search = _as_reader(["search", "--out", str(out), "--json", "--top", "100"], home)
    owner_search = _as_owner(["search", "--out", str(out), "--json", "--top", "100"])
    assert search.returncode == 0, search.stderr
    assert search.stdout == owner_search.stdout and len(search.stdout.splitlines()) > 0
    assert not (home / ".cache" / "seeknetic-prep" / "search").exists()  # read in place: it was current

    report = _as_reader(["report", "--out", str(out)], home)
    assert report.returncode == 0, report.stderr
    page = next((home / ".cache" / "seeknetic-prep" / "report").glob("out-*/report.html"))
    assert str(page) in report.stdout and "<html" in page.read_text()[:200].lower()

    plan = _as_reader(["plan", str(DEMO), "--out", str(out)], home)
    assert plan.returncode == 0, plan.stderr
    for proc in (status, results, search, report, plan):
        assert "Traceback" not in proc.stderr and "readonly database" not in proc.stderr
    assert _snapshot(out) == before


def test_a_stale_index_is_made_in_the_readers_cache_or_refused_in_one_line(shared: tuple[Path, Path]) -> None:
    out, home = shared
    copy = out.parent / "copy"  # a copy's parts have other inodes: its index is stale
    if not copy.exists():
        shutil.copytree(out, copy)
        for p in [copy, *copy.rglob("*")]:
            p.chmod(p.lstat().st_mode | 0o200)
        _read_only(copy)
    before = _snapshot(copy)
    hits = _as_reader(["search", "--out", str(copy), "--json", "--top", "100"], home)
    assert hits.returncode == 0, hits.stderr
    rows = [json.loads(line) for line in hits.stdout.splitlines()]
    owner = [json.loads(line) for line in _as_owner(["search", "--out", str(out), "--json", "--top", "100"])
             .stdout.splitlines()]
    assert [(r["path"], r["start_ms"]) for r in rows] == [(r["path"], r["start_ms"]) for r in owner]
    assert list((home / ".cache" / "seeknetic-prep" / "search").glob("copy-*/vectors.f32"))
    assert _snapshot(copy) == before

    nowhere = _as_reader(["search", "--out", str(copy)], Path("/nonexistent-home"))
    assert nowhere.returncode == 2 and "Traceback" not in nowhere.stderr
    errors = [line for line in nowhere.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "set XDG_CACHE_HOME to a folder you can write" in errors[0], nowhere.stderr


def test_a_read_only_store_reads_and_refuses_every_write(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Store(out / "state.sqlite") as store:
        for f in range(2):
            run = store.start_run()
            add_file(store, f"/v/{f}.mp4", f"{f:032d}", 2, dim=8)
            append_results_part(store, out, run)
        counts = store.counts()
    first = list_parts(out)[0]
    first.unlink()  # a run that was stopped hard never wrote its part
    before = (out / "state.sqlite").read_bytes()
    with Store(out / "state.sqlite", readonly=True) as ro:
        assert ro.counts() == counts and len(ro.files()) == 2
        assert missing_parts(ro, out) == [1]
        with pytest.raises(StateError, match="opened read-only, nothing can be written"):
            ro.record_file("/v/new.mp4", status="ok", fingerprint="f" * 32, size=1, duration_ms=1)
        with pytest.raises(StateError, match="opened read-only"):
            ro.start_run()
    assert (out / "state.sqlite").read_bytes() == before
