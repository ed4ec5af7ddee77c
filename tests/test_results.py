"""Results as Parquet parts: what one run appends, how parts merge, and the exports."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from _results_helpers import add_file, tags_for, vector

from seeknetic_prep.errors import InvalidArgumentError
from seeknetic_prep.results.export import export
from seeknetic_prep.results.part_rows import append_results_part, ensure_parts
from seeknetic_prep.results.parts import compact, latest_rows, list_parts
from seeknetic_prep.state.schema import MIGRATIONS
from seeknetic_prep.state.store import Store

FA, FB = "a" * 32, "b" * 32


def test_a_part_holds_one_typed_row_per_window_of_that_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Store(out / "state.sqlite") as store:
        run = store.start_run()
        add_file(store, tmp_path / "v" / "a.mp4", FA, 3, fail={(2, "tagging"): "server said no"})
        store.record_file(tmp_path / "v" / "bad.mp4", status="failed", error="bad.mp4: not media")
        part = append_results_part(store, out, run)
    assert part is not None and part.parent == out / "parts"
    table = pq.read_table(part)
    schema = table.schema
    assert schema.field("embedding").type == pa.list_(pa.float32(), 1024)
    assert schema.field("shot_size").type == pa.string() and schema.field("brightness").type == pa.float64()
    assert schema.field("scene_cuts").type == pa.int64()
    rows = table.to_pylist()
    assert [(r["path"], r["window_index"]) for r in rows] == [
        (str(tmp_path / "v" / "a.mp4"), 0), (str(tmp_path / "v" / "a.mp4"), 1),
        (str(tmp_path / "v" / "a.mp4"), 2), (str(tmp_path / "v" / "bad.mp4"), None)]
    first = rows[1]
    assert first["start_ms"] == 10_000 and first["end_ms"] == 20_000
    assert first["frame_times_ms"] == [10_400.0 + k for k in range(12)]
    assert np.array_equal(np.asarray(first["embedding"], dtype=np.float32), vector(FA, 1))
    assert first["shot_size"] == "close_up" and first["scene_cuts"] == 1 and first["brightness"] == 0.26
    assert json.loads(first["tags_extra"]) == {"mood": "calm"}  # a tag without a typed column
    assert first["embedding_status"] == first["tagging_status"] == "completed"
    assert first["embedding_request_id"] == f"{FA}-1-embedding"
    assert rows[2]["tagging_status"] == "failed" and rows[2]["tagging_error"] == "server said no"
    assert rows[2]["shot_size"] is None and rows[2]["embedding"] is not None
    bad = rows[3]
    assert bad["file_status"] == "failed" and bad["embedding"] is None
    assert bad["embedding_status"] == bad["tagging_status"] == "failed"
    assert bad["embedding_error"] == "bad.mp4: not media"


def test_each_run_appends_only_what_it_finished_and_parts_merge(tmp_path: Path) -> None:
    out = tmp_path / "out"
    a, copy = tmp_path / "a.mp4", tmp_path / "copy.mp4"
    with Store(out / "state.sqlite") as store:
        r1 = store.start_run()
        add_file(store, a, FA, 4, finish=[0, 1])
        p1 = append_results_part(store, out, r1)
        r2 = store.start_run()
        add_file(store, a, FA, 4, finish=[2, 3])  # a resume: same path, the other windows
        add_file(store, copy, FA, 4, finish=[])  # the same content under a new path
        p2 = append_results_part(store, out, r2)
        r3 = store.start_run()
        add_file(store, a, FA, 4, finish=[])  # nothing new: no part
        assert append_results_part(store, out, r3) is None
    assert p1 is not None and p2 is not None and list_parts(out) == [p1, p2]
    assert pq.read_table(p1).num_rows == 2
    second = pq.read_table(p2, columns=["path", "window_index"]).to_pylist()
    assert [(r["path"], r["window_index"]) for r in second] == [
        (str(a), 2), (str(a), 3), *((str(copy), i) for i in range(4))]
    merged = compact(out).to_pylist()
    assert [(r["path"], r["window_index"]) for r in merged] == [
        *((str(a), i) for i in range(4)), *((str(copy), i) for i in range(4))]


def test_a_window_finished_in_two_runs_keeps_its_newest_row(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Store(out / "state.sqlite") as store:
        r1 = store.start_run()
        add_file(store, tmp_path / "a.mp4", FA, 1, services=("embedding",))
        append_results_part(store, out, r1)
        r2 = store.start_run()
        add_file(store, tmp_path / "a.mp4", FA, 1, services=("tagging",))
        append_results_part(store, out, r2)
    (row,) = compact(out).to_pylist()
    assert row["embedding_status"] == row["tagging_status"] == "completed"
    assert row["shot_size"] == tags_for(0)["shot_size"] and row["embedding"] is not None


def test_a_path_whose_content_changed_shows_only_the_new_content(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Store(out / "state.sqlite") as store:
        r1 = store.start_run()
        add_file(store, tmp_path / "a.mp4", FA, 3)
        append_results_part(store, out, r1)
        r2 = store.start_run()
        add_file(store, tmp_path / "a.mp4", FB, 1)  # the file was replaced by a shorter one
        append_results_part(store, out, r2)
    rows = compact(out).to_pylist()
    assert [(r["fingerprint"], r["window_index"]) for r in rows] == [(FB, 0)]


def test_same_content_gives_identical_rows(tmp_path: Path) -> None:
    tables = []
    for name in ("x", "y"):
        out = tmp_path / name
        with Store(out / "state.sqlite") as store:
            run = store.start_run()
            add_file(store, "/videos/a.mp4", FA, 2)
            add_file(store, "/videos/b.mp4", FB, 1)
            append_results_part(store, out, run)
        tables.append(compact(out))
    assert tables[0].equals(tables[1])


def test_a_non_utf8_name_is_kept_exactly_and_shown_escaped(tmp_path: Path) -> None:
    out = tmp_path / "out"
    name = tmp_path / os.fsdecode(b"caf\xe9.mp4")
    with Store(out / "state.sqlite") as store:
        run = store.start_run()
        add_file(store, name, FA, 1)
        append_results_part(store, out, run)
    (row,) = compact(out).to_pylist()
    assert row["path_bytes"] == os.fsencode(str(name))
    assert row["path"] == str(tmp_path) + "/caf\\xe9.mp4"
    target, count = export(out, fmt="jsonl")
    assert count == 1 and "caf\\\\xe9.mp4" in target.read_text(encoding="utf-8")


def test_exports_hold_the_same_rows(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Store(out / "state.sqlite") as store:
        run = store.start_run()
        add_file(store, tmp_path / "a.mp4", FA, 2)
        add_file(store, tmp_path / "b.mp4", FB, 1, fail={(0, "embedding"): "boom"})
        store.record_file(tmp_path / "bad.mp4", status="failed", error="not media")
        append_results_part(store, out, run)
    merged = compact(out)
    pq_path, n = export(out)
    assert pq_path == out / "results.parquet" and n == 4 and pq.read_table(pq_path).equals(merged)
    jsonl, n = export(out, fmt="jsonl", to=tmp_path / "e" / "r.jsonl")
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert n == 4 and [x["window_index"] for x in lines] == [0, 1, 0, None]
    assert lines[0]["embedding"] == vector(FA, 0).tolist() and "path_bytes" not in lines[0]
    csv, n = export(out, fmt="csv")
    flat = pcsv.read_csv(csv)
    assert n == 4 and "embedding" not in flat.column_names and flat["shot_size"].to_pylist()[:2] == [
        "wide_shot", "close_up"]
    npy, n = export(out, fmt="npy")
    matrix = np.load(npy)
    index = pcsv.read_csv(npy.with_name("results.index.csv")).to_pylist()
    assert n == 2 and matrix.shape == (2, 1024) and matrix.dtype == np.float32  # b's embedding failed
    assert [(r["row"], Path(r["path"]).name, r["window_index"]) for r in index] == [
        (0, "a.mp4", 0), (1, "a.mp4", 1)]
    assert np.array_equal(matrix[1], vector(FA, 1))


def test_results_cli_writes_every_format(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Store(out / "state.sqlite") as store:
        run = store.start_run()
        add_file(store, tmp_path / "a.mp4", FA, 2)
        append_results_part(store, out, run)
    for fmt in ("parquet", "jsonl", "csv", "npy"):
        proc = subprocess.run([sys.executable, "-m", "seeknetic_prep", "results", "--out", str(out),
                               "--format", fmt], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == f"{out / ('results.' + fmt)}: 2 rows"
    proc = subprocess.run(
        [sys.executable, "-m", "seeknetic_prep", "results", "--out", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "no state.sqlite" in proc.stderr and "Traceback" not in proc.stderr


def test_parts_missing_after_a_kill_or_an_upgrade_are_written_later(tmp_path: Path) -> None:
    out = tmp_path / "out"
    db = sqlite3.connect(out.mkdir() or out / "state.sqlite", isolation_level=None)
    assert isinstance(MIGRATIONS[0], str)
    db.executescript(MIGRATIONS[0])
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO files VALUES ('/v/a.mp4', ?, 1, 10000, 'ok', NULL, 0)", (FA,))
    db.execute(
        "INSERT INTO units (fingerprint, window_index, service, start_ms, end_ms, request_id, status, "
        "result, created_at, updated_at) VALUES (?, 0, 'embedding', 0, 10000, 'r', 'completed', ?, 0, 0)",
        (FA, json.dumps({"embedding": [1.0] * 1024})),
    )
    db.close()
    with Store(out / "state.sqlite") as store:
        run = store.start_run()
        add_file(store, "/v/b.mp4", FB, 1)  # this run is "killed": no part of its own
        written = [p.name for p in ensure_parts(store, out)]
        assert written == ["part-000000-00.parquet", f"part-{run:06d}-00.parquet"]
        assert ensure_parts(store, out) == []
    rows = compact(out).to_pylist()
    assert [(r["path"], r["embedding_status"]) for r in rows] == [
        ("/v/a.mp4", "completed"), ("/v/b.mp4", "completed")]


def test_no_parts_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="No results"):
        compact(tmp_path)


@pytest.mark.parametrize("max_window", [3, 100_000])  # dense keys, and the sorting fallback
def test_latest_rows_matches_a_plain_python_reference(max_window: int) -> None:
    rng = np.random.default_rng(5)
    n = 2_000
    paths = [f"/v/{k}".encode() for k in rng.integers(0, 40, n)]
    fps = [("a", "b")[k] for k in rng.integers(0, 2, n)]
    status = ["ok" if k else "failed" for k in rng.integers(0, 8, n)]
    drawn = rng.integers(0, max_window + 1, n)
    windows = [None if s == "failed" else int(k) for s, k in zip(status, drawn, strict=True)]
    keys = pa.table({"path_bytes": pa.array(paths, pa.binary()), "fingerprint": fps,
                     "file_status": status, "window_index": pa.array(windows, pa.int32())})
    head = {p: (f, s) for p, f, s in zip(paths, fps, status, strict=True)}  # the newest row of each path wins
    newest: dict[tuple[bytes, int | None], int] = {}
    for i, (p, f, s, w) in enumerate(zip(paths, fps, status, windows, strict=True)):
        if head[p] == (f, s):
            newest[(p, w)] = i
    assert latest_rows(keys).tolist() == sorted(newest.values())


def test_finalize_run_writes_the_part_of_a_killed_run_then_its_own_then_the_index(tmp_path: Path) -> None:
    from seeknetic_prep.results.finalize import finalize_run
    from seeknetic_prep.results.index import INDEX_DIR

    out = tmp_path / "out"
    with Store(out / "state.sqlite") as store:
        killed = store.start_run()  # finished windows, then a kill -9: no part, no index
        add_file(store, tmp_path / "v" / "a.mp4", FA, 2)
        run = store.start_run()
        add_file(store, tmp_path / "v" / "b.mp4", FB, 3)
        part = finalize_run(store, out, run)
        assert part is not None and part.name == f"part-{run:06d}-00.parquet"
        assert [p.name for p in list_parts(out)] == [f"part-{killed:06d}-00.parquet", part.name]
        index = json.loads((out / INDEX_DIR / "index.json").read_text())
        assert [p[0] for p in index["parts"]] == [p.name for p in list_parts(out)] and index["vectors"] == 5
        idle = store.start_run()
        assert finalize_run(store, out, idle) is None  # nothing finished: no part, index untouched
    assert json.loads((out / INDEX_DIR / "index.json").read_text()) == index


def test_no_sql_outside_the_state_package() -> None:
    """The storage boundary: only state/ (and the emulator's own database) speaks SQL."""
    import re

    root = Path(__file__).resolve().parent.parent / "seeknetic_prep"
    sql = re.compile(r"\bimport sqlite3\b|[\"'](SELECT|INSERT|UPDATE|DELETE|PRAGMA) "
                     r"|\.execute\(\"|store\.read\(")
    offenders = [
        f"{path.relative_to(root)}:{n}"
        for path in root.rglob("*.py") if path.relative_to(root).parts[0] not in ("state", "emulator")
        for n, line in enumerate(path.read_text().splitlines(), 1) if sql.search(line)
    ]
    assert offenders == []


def test_the_pipeline_reaches_results_only_through_finalize_run() -> None:
    import ast

    pipeline = Path(__file__).resolve().parent.parent / "seeknetic_prep" / "pipeline"
    imported = {
        node.module for path in pipeline.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom) and node.module
    }
    results = {m for m in imported if m.startswith("seeknetic_prep.results")}
    assert results == {"seeknetic_prep.results.finalize"}
