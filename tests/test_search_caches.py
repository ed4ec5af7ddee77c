"""The search caches are disposable (issue 22.9): a damaged ``index.json``, ``windows.arrow``,
``vectors.f32``, ``vectors.ids``, ``.rows.npy``, ``ann.usearch`` or ``ann.json`` is detected and
made again (they used to give tracebacks for good); the graph cannot disagree with what it
covers after an interruption; a full disk leaves no temporary file; a damaged part is written
again from the state (``results``, ``report`` and ``search`` agree; its embeddings, which the
state handed over to it, are polled again), or refused in one line without one; two readers
that find the same part missing write it once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _pipeline_helpers import ROOT
from _results_helpers import add_file, vector

from seeknetic_prep.errors import StateError
from seeknetic_prep.results.ann import ann_available, update_ann
from seeknetic_prep.results.index import load_windows
from seeknetic_prep.results.part_rows import append_results_part
from seeknetic_prep.results.parts import list_parts
from seeknetic_prep.results.rank import rank
from seeknetic_prep.state.store import Store

DIM = 16
needs_ann = pytest.mark.skipif(not ann_available(), reason="the ann extra (usearch) is not installed")


def _run(out: Path, files: range) -> None:
    with Store(out / "state.sqlite") as store:
        run = store.start_run()
        for f in files:
            add_file(store, f"/v/{f:03d}.mp4", f"{f:032d}", 3, dim=DIM)
        append_results_part(store, out, run)


def _assert_ranks_right(out: Path, files: range, methods: tuple[str, ...] = ("exact",), *,
                        windows_total: int | None = None) -> None:
    windows = load_windows(out)
    assert len(windows) == (3 * len(files) if windows_total is None else windows_total)
    for method in methods:
        for f in files:
            hits, _ = rank(windows, vector(f"{f:032d}", 2, DIM), top=1, method=method)
            assert (hits[0].path, hits[0].start_ms) == (f"/v/{f:03d}.mp4", 20_000)
            assert hits[0].score == pytest.approx(1.0, abs=1e-3)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEKNETIC_")}
    return subprocess.run([sys.executable, "-m", "seeknetic_prep", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


DAMAGE = {"index.json": b"{garbage", "windows.arrow": b"junk", "vectors.f32": b"",
          "vectors.ids": b"x", "part-000001-00.parquet.rows.npy": b"junk"}


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_a_damaged_index_file_is_made_again(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    _run(out, range(4))
    load_windows(out)
    (out / "search" / name).write_bytes(DAMAGE[name])
    if name.endswith(".rows.npy"):  # read when the current rows are merged again
        (out / "search" / "windows.arrow").unlink()
    _assert_ranks_right(out, range(4))
    _assert_ranks_right(out, range(4))  # and again, from what was made


@needs_ann
@pytest.mark.parametrize("damage", [b"junk", b"half", b""])
@pytest.mark.parametrize("name", ["ann.usearch", "ann.json"])
def test_a_damaged_graph_or_its_ann_json_is_made_again(tmp_path: Path, name: str, damage: bytes) -> None:
    out = tmp_path / "out"
    _run(out, range(4))
    _assert_ranks_right(out, range(4), ("ann",))
    target = out / "search" / name
    if damage == b"half":
        damage = target.read_bytes()[: target.stat().st_size // 2]
    target.write_bytes(damage)
    _assert_ranks_right(out, range(4), ("ann", "exact"))


@needs_ann
def test_an_interrupted_growth_never_leaves_duplicate_keys(tmp_path: Path) -> None:
    """The graph used to be renamed, then ``ann.json`` replaced: stopped between the two, the
    next search added the same keys again ('Duplicate keys') every time."""
    out = tmp_path / "out"
    _run(out, range(4))
    _assert_ranks_right(out, range(4), ("ann",))
    old_state = (out / "search" / "ann.json").read_bytes()
    _run(out, range(4, 8))
    _assert_ranks_right(out, range(8), ("ann",))  # the graph grew
    (out / "search" / "ann.json").write_bytes(old_state)  # as if stopped before ann.json
    _assert_ranks_right(out, range(8), ("ann",))
    (out / "search" / "ann.json").write_bytes(b'{"rows": 12}')  # the old layout: made again
    _assert_ranks_right(out, range(8), ("ann",))


@needs_ann
def test_a_full_disk_while_saving_the_graph_leaves_no_temporary_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(out, range(4))
    windows = load_windows(out)
    update_ann(windows.folder, windows.vectors)  # type: ignore[arg-type]
    before = (out / "search" / "ann.usearch").read_bytes()
    _run(out, range(4, 40))
    load_windows(out)
    # A real short write: the file size limit (RLIMIT_FSIZE) makes write() fail with EFBIG.
    code = textwrap.dedent(f"""
        import resource, signal
        from pathlib import Path
        from seeknetic_prep.results.index import load_windows
        from seeknetic_prep.results.ann import update_ann
        from seeknetic_prep.errors import StateError
        w = load_windows(Path({str(out)!r}))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({len(before) + 100}, {len(before) + 100}))
        try:
            update_ann(w.folder, w.vectors)
        except StateError as exc:
            print("refused:", exc)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "refused:" in proc.stdout and "is the disk full?" in proc.stdout, proc.stdout + proc.stderr
    assert not [p.name for p in (out / "search").iterdir() if p.name.endswith(".tmp")]
    assert (out / "search" / "ann.usearch").read_bytes() == before  # the old graph kept
    _assert_ranks_right(out, range(40), ("ann",))


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_part_is_written_again_from_the_state(tmp_path: Path, damage: str) -> None:
    out = tmp_path / "out"
    _run(out, range(4))
    _run(out, range(4, 6))
    load_windows(out)  # a cache that a damaged part must not be served from
    part = list_parts(out)[0]
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not parquet")
    results = _cli("results", "--out", str(out), "--format", "csv", "--to", str(tmp_path / "r.csv"))
    assert results.returncode == 0, results.stderr
    assert "18 rows" in results.stdout  # 6 files x 3 windows: nothing lost, nothing doubled
    assert part.read_bytes() != data[: len(data) // 2] and part.with_name(part.name + ".damaged").exists()
    assert "fetched from the API again" in results.stderr  # its embeddings had left the state
    search = _cli("search", "--out", str(out), "--tag", "shot_size=wide_shot", "--top", "100")
    assert search.returncode == 0 and "12 of 12 matching windows (18 in" in search.stdout, search.stderr
    _assert_ranks_right(out, range(4, 6), windows_total=18)  # the damaged part's 12: no embedding yet
    with Store(out / "state.sqlite") as store:
        assert store.counts() == {"completed": 24, "submitted": 12}  # polled by the next run
    report = _cli("report", "--out", str(out))
    assert report.returncode == 0 and "Traceback" not in report.stderr, report.stderr


def test_a_damaged_part_without_a_state_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(out, range(2))
    (out / "state.sqlite").unlink()
    for name in ("state.sqlite-wal", "state.sqlite-shm"):
        (out / name).unlink(missing_ok=True)
    list_parts(out)[0].write_bytes(b"not parquet")
    with pytest.raises(StateError, match="is damaged"):
        load_windows(out)
    for args in (("results",), ("search", "--tag", "shot_size=wide_shot")):
        proc = _cli(*args, "--out", str(out))
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
        assert len(errors) == 1 and "part-000001-00.parquet is damaged" in errors[0], proc.stderr


def test_two_readers_write_a_missing_part_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(out, range(30))
    list_parts(out)[0].unlink()
    code = ("import sys; from pathlib import Path; from seeknetic_prep.commands.search import sync_parts; "
            "sync_parts(Path(sys.argv[1]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(out)], env=env, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert [p.name for p in list_parts(out)] == ["part-000001-00.parquet"]
    assert not [p.name for p in (out / "parts").iterdir() if p.name.endswith(".tmp")]
    assert len(load_windows(out)) == 90  # each window once; their embeddings to be polled again
    with Store(out / "state.sqlite") as store:
        assert store.counts() == {"completed": 90, "submitted": 90}
