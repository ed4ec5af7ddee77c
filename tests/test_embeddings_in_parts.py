"""Each embedding at most twice on disk (issue 18.9): the state hands it over to the run's part.

Real SQLite and Parquet throughout. What must hold: the state forgets an embedding only once a
part holding it is in place (a failed write leaves it in the state); a part that repeats a known
window (a rename, a copy) reads it from the older parts; a row dropped with no other copy gives
it back to the state; a damaged part whose embeddings left the state sends its units back to the
API instead of writing ``completed`` rows without one; a state of schema 3 (every embedding in
``units.embedding``, ``fixtures/state_v3``, written by that version) opens, reads the same
results and shrinks.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from _pipeline_helpers import ROOT, cli
from _results_helpers import add_file, vector

import seeknetic_prep.results.part_rows as part_rows_module
import seeknetic_prep.results.parts as parts_module
from seeknetic_prep.errors import StateError
from seeknetic_prep.results.embeddings import find_embeddings
from seeknetic_prep.results.export import export
from seeknetic_prep.results.finalize import finalize_run
from seeknetic_prep.results.part_rows import append_results_part, ensure_parts, gone_rows
from seeknetic_prep.results.parts import compact, list_parts
from seeknetic_prep.state.store import SCHEMA_VERSION, Store

FA, FB = "a" * 32, "b" * 32
V3 = ROOT / "fixtures" / "state_v3"


def _in_state(out: Path) -> dict[tuple[str, int], bytes]:
    """The embeddings ``state.sqlite`` still holds, read as another process would."""
    db = sqlite3.connect(out / "state.sqlite")
    try:
        return {(fp, idx): bytes(blob) for fp, idx, blob in db.execute(
            "SELECT fingerprint, window_index, embedding FROM units WHERE embedding IS NOT NULL")}
    finally:
        db.close()


def _pragma(out: Path, name: str) -> int:
    db = sqlite3.connect(out / "state.sqlite")
    try:
        return int(db.execute(f"PRAGMA {name}").fetchone()[0])
    finally:
        db.close()


def _embeddings(table_rows: list[dict[str, Any]]) -> dict[tuple[str, int], np.ndarray]:
    return {(r["path"], r["window_index"]): np.asarray(r["embedding"], np.float32)
            for r in table_rows if r["embedding"] is not None}


def test_the_part_on_disk_takes_the_embeddings_out_of_the_state(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Store(out / "state.sqlite") as store:
        run = store.start_run()
        add_file(store, "/v/a.mp4", FA, 3)
        add_file(store, "/v/b.mp4", FB, 2, finish=[0])  # window 1 unfinished: no row, kept nowhere yet
        store.flush()
        assert len(_in_state(out)) == 4
        part = finalize_run(store, out, run)
        assert part is not None
        assert _in_state(out) == {}  # every one is in the part now
        assert store.result(f"{FA}-0-tagging") == {"tags": {"shot_size": "wide_shot", "brightness": 0.25,
                                                            "scene_cuts": 0, "dominant_color": "green",
                                                            "mood": "calm"}}
    rows = _embeddings(compact(out).to_pylist())
    assert set(rows) == {("/v/a.mp4", 0), ("/v/a.mp4", 1), ("/v/a.mp4", 2), ("/v/b.mp4", 0)}
    for (path, idx), values in rows.items():
        assert np.array_equal(values, vector(FA if "a.mp4" in path else FB, idx))
    assert _pragma(out, "auto_vacuum") == 2 and _pragma(out, "freelist_count") == 0  # the file shrank


def test_a_part_that_fails_to_be_written_leaves_the_embeddings_in_the_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    real = parts_module.write_part  # patched where the part writer calls it

    def full_disk(table: Any, path: Path) -> None:
        raise OSError(28, "No space left on device")

    with Store(out / "state.sqlite") as store:
        run = store.start_run()
        add_file(store, "/v/a.mp4", FA, 3)
        monkeypatch.setattr(part_rows_module, "write_part", full_disk)
        with pytest.raises(OSError, match="No space"):
            append_results_part(store, out, run)
        assert set(_in_state(out)) == {(FA, 0), (FA, 1), (FA, 2)}
        monkeypatch.setattr(part_rows_module, "write_part", real)
        assert [p.name for p in ensure_parts(store, out)] == [f"part-{run:06d}-00.parquet"]
    assert _in_state(out) == {}
    assert len(_embeddings(compact(out).to_pylist())) == 3


def test_a_renamed_file_reads_its_embeddings_from_the_older_part(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Store(out / "state.sqlite") as store:
        run = store.start_run()
        add_file(store, "/v/a.mp4", FA, 3)
        finalize_run(store, out, run)
        run = store.start_run()
        store.record_file("/v/renamed.mp4", status="ok", fingerprint=FA, size=3, duration_ms=30_000)
        store.mark_gone([b"/v/a.mp4"])
        finalize_run(store, out, run)
        assert _in_state(out) == {}  # the new rows hold them: nothing taken back
    rows = _embeddings(compact(out).to_pylist())
    assert sorted(rows) == [("/v/renamed.mp4", i) for i in range(3)]
    assert all(np.array_equal(v, vector(FA, idx)) for (_, idx), v in rows.items())


def test_rows_dropped_with_no_other_copy_give_their_embeddings_back(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Store(out / "state.sqlite") as store:
        run = store.start_run()
        add_file(store, "/v/a.mp4", FA, 2)
        add_file(store, "/v/b.mp4", FB, 2)
        finalize_run(store, out, run)
        run = store.start_run()
        store.mark_gone([b"/v/a.mp4"])  # deleted: its rows leave the parts
        add_file(store, "/v/b.mp4", "c" * 32, 1)  # new content under b: B's rows leave too
        finalize_run(store, out, run)
        kept = _in_state(out)
        assert set(kept) == {(FA, 0), (FA, 1), (FB, 0), (FB, 1)}
        assert all(np.array_equal(np.frombuffer(b, "<f4"), vector(fp, i)) for (fp, i), b in kept.items())
        gone = gone_rows(store, out).to_pylist()  # results --include-gone
        assert [(r["path"], r["window_index"]) for r in gone] == [("/v/a.mp4", 0), ("/v/a.mp4", 1)]
        assert all(np.array_equal(np.asarray(r["embedding"], np.float32), vector(FA, r["window_index"]))
                   for r in gone)
        run = store.start_run()  # A comes back under another name: its rows from the state
        store.record_file("/v/back.mp4", status="ok", fingerprint=FA, size=2, duration_ms=20_000)
        finalize_run(store, out, run)
        assert set(_in_state(out)) == {(FB, 0), (FB, 1)}
    rows = _embeddings(compact(out).to_pylist())
    assert np.array_equal(rows[("/v/back.mp4", 1)], vector(FA, 1))


@pytest.mark.parametrize("harm", ["damaged", "deleted"])
def test_a_lost_part_whose_embeddings_left_the_state_is_polled_again(tmp_path: Path, harm: str) -> None:
    out = tmp_path / "out"
    with Store(out / "state.sqlite") as store:
        run = store.start_run()
        add_file(store, "/v/a.mp4", FA, 2)
        part = finalize_run(store, out, run)
        assert part is not None and _in_state(out) == {}
        if harm == "damaged":
            part.write_bytes(part.read_bytes()[:200])
        else:
            part.unlink()
        assert [p.name for p in ensure_parts(store, out)] == [part.name]  # as search, results, report do
        rows = compact(out).to_pylist()
        assert [(r["embedding_status"], r["embedding"], r["tagging_status"]) for r in rows] == [
            ("submitted", None, "completed")] * 2  # never 'completed' without its embedding
        assert {u.status for u in store.units_of(FA) if u.service == "embedding"} == {"submitted"}
        assert store.counts() == {"completed": 2, "submitted": 2}
        run = store.start_run()  # the next run polls them: the API gives the same result again
        for i in range(2):
            store.mark_completed(f"{FA}-{i}-embedding", {"embedding": vector(FA, i).tolist(),
                                                         "model_name": "m"})
        finalize_run(store, out, run)
    rows = _embeddings(compact(out).to_pylist())
    assert sorted(rows) == [("/v/a.mp4", 0), ("/v/a.mp4", 1)] and _in_state(out) == {}


def test_a_read_only_reader_that_cannot_find_an_embedding_says_so(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Store(out / "state.sqlite") as store:
        run = store.start_run()
        add_file(store, "/v/a.mp4", FA, 1)
        finalize_run(store, out, run)
        run = store.start_run()
        store.mark_gone([b"/v/a.mp4"])
        finalize_run(store, out, run)  # A's embedding back in the state, for --include-gone
    db = sqlite3.connect(out / "state.sqlite")
    db.execute("UPDATE units SET embedding = NULL")  # lost (what a damaged part would do)
    db.commit()
    db.close()
    with Store(out / "state.sqlite", readonly=True) as ro, pytest.raises(StateError, match="neither its"):
        gone_rows(ro, out)


def test_find_embeddings_reads_the_rows_asked_for_from_any_part(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    monkeypatch.setattr(parts_module, "ROW_GROUP_ROWS", 4)
    with Store(out / "state.sqlite") as store:
        for fp in (FA, FB):
            run = store.start_run()
            add_file(store, f"/v/{fp[0]}.mp4", fp, 10)
            finalize_run(store, out, run)
    parts = list_parts(out)
    assert [pq.ParquetFile(p).metadata.num_row_groups for p in parts] == [3, 3]
    found = find_embeddings(parts, {(FA, 3), (FB, 0), (FB, 9), ("f" * 32, 0), (FA, 10)})
    assert set(found) == {(FA, 3), (FB, 0), (FB, 9)}
    assert all(np.array_equal(np.frombuffer(v, "<f4"), vector(fp, i)) for (fp, i), v in found.items())


def test_a_state_of_schema_3_opens_reads_the_same_results_and_shrinks(tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(V3, out, ignore=shutil.ignore_patterns("make.py"))
    before = compact(out).to_pylist()  # the parts as that version wrote them (read only)
    held = _in_state(out)
    assert len(held) == 8 and _pragma(out, "user_version") == 3 and _pragma(out, "auto_vacuum") == 0
    size_before = (out / "state.sqlite").stat().st_size
    with Store(out / "state.sqlite") as store:  # migrated to schema 4; nothing handed over yet
        assert not store.handed_over() and set(_in_state(out)) == set(held)
        assert np.allclose(store.result("aaaaaaaa-2-embedding")["embedding"],  # type: ignore[index]
                           np.frombuffer(held[(FA, 2)], "<f4"))
        assert export(out, fmt="parquet", to=tmp_path / "r.parquet")[1] == len(before)
        run = store.start_run()  # the next run: b.mp4 renamed, a new file
        store.record_file("/videos/b_renamed.mp4", status="ok", fingerprint=FB, size=2, duration_ms=20_000)
        store.mark_gone([b"/videos/b.mp4"])
        add_file(store, "/videos/e.mp4", "e" * 32, 1)
        finalize_run(store, out, run)
        assert store.handed_over()
    assert _pragma(out, "user_version") == SCHEMA_VERSION == 4 and _pragma(out, "auto_vacuum") == 2
    assert set(_in_state(out)) == {("d" * 32, 0)}  # gone before the upgrade: in no part, so kept
    db = sqlite3.connect(out / "state.sqlite")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    assert (out / "state.sqlite").stat().st_size < size_before
    after = {(r["path"], r["window_index"]): r for r in compact(out).to_pylist()}
    for row in before:  # every earlier row reads the same, the renamed file's under its new name
        path = row["path"].replace("/b.mp4", "/b_renamed.mp4")
        now = after[(path, row["window_index"])]  # (a column added since reads as null)
        assert {k: now[k] for k in row if k not in ("path", "path_bytes")} == {
            k: v for k, v in row.items() if k not in ("path", "path_bytes")}
        assert all(now[k] is None for k in set(now) - set(row))
    assert ("/videos/e.mp4", 0) in after
    gone = export(out, fmt="jsonl", to=tmp_path / "g.jsonl", include_gone=True)[0]
    gone_rows_ = [json.loads(line) for line in gone.read_text().splitlines() if '"gone"' in line]
    assert {r["path"]: np.allclose(r["embedding"], np.frombuffer(held[(r["fingerprint"], 0)], "<f4"))
            for r in gone_rows_ if r["window_index"] == 0} == {"/videos/b.mp4": True, "/videos/d.mp4": True}


def test_a_damaged_part_is_fetched_again_from_the_api_end_to_end(tmp_path: Path) -> None:
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    shutil.copy(ROOT / "fixtures" / "no_audio.mp4", videos / "a.mp4")
    cli("run", str(videos), "--local", "--out", str(out), "--workers", "1")
    first = _exported(out, tmp_path / "first.jsonl")
    assert first and all(r["embedding"] is not None for r in first) and _in_state(out) == {}
    for part in list_parts(out):
        part.write_bytes(part.read_bytes()[:100])
    proc = cli("results", "--out", str(out), "--format", "jsonl", "--to", str(tmp_path / "mid.jsonl"))
    assert "fetched from the API again" in proc.stderr
    mid = [json.loads(line) for line in (tmp_path / "mid.jsonl").read_text().splitlines()]
    assert {r["embedding_status"] for r in mid} == {"submitted"} and all(r["embedding"] is None for r in mid)
    cli("run", str(videos), "--local", "--out", str(out), "--workers", "1")
    assert _exported(out, tmp_path / "again.jsonl") == first


def _exported(out: Path, target: Path) -> list[dict[str, Any]]:
    cli("results", "--out", str(out), "--format", "jsonl", "--to", str(target))
    return sorted((json.loads(line) for line in target.read_text().splitlines()),
                  key=lambda r: (r["path"], r["window_index"]))
