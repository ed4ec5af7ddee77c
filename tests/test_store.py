"""The state database: schema versioning, the unit lifecycle, persistence across connections."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from seeknetic_prep.errors import StateError
from seeknetic_prep.results.part_rows import append_results_part
from seeknetic_prep.results.parts import compact
from seeknetic_prep.state.schema import MIGRATIONS
from seeknetic_prep.state.store import SCHEMA_VERSION, RunRow, Store, Throughput


def request_id_for(fp: str, index: int, service: str) -> str:
    return f"t-{fp[:8]}-{index}-{service}"


def _plan(store: Store, fp: str = "f" * 32, windows: int = 2) -> list[str]:
    rows = [
        (fp, i, svc, i * 10_000, (i + 1) * 10_000, request_id_for(fp, i, svc))
        for i in range(windows) for svc in ("embedding", "tagging")
    ]
    store.plan_units(rows)
    return [r[5] for r in rows]


def test_new_database_has_current_schema_and_wal(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite"):
        pass
    db = sqlite3.connect(tmp_path / "s.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_schema_is_refused_with_the_versions(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    db.close()
    with pytest.raises(StateError, match=f"schema version {SCHEMA_VERSION + 5}"):
        Store(path)


def test_not_a_database_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match=r"s\.sqlite"):
        Store(path)


def test_unit_lifecycle_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        rids = _plan(store)
        store.mark_uploaded(rids[0], {"video_input": "tensors/x/video_input.json"}, [1.0] * 12)
        store.mark_uploaded(rids[1], {"video_input": "k"}, [2.0] * 12)
        store.mark_submitted(rids[1])
        store.mark_uploaded(rids[2], {"video_input": "k"}, [3.0] * 12)
        store.mark_submitted(rids[2])
        store.mark_completed(rids[2], {"embedding": [0.5, 0.5]})
        store.mark_failed(rids[3], "boom")
    with Store(path) as store:
        by_rid = {u.request_id: u for u in store.units_of("f" * 32)}
        assert [by_rid[r].status for r in rids] == ["uploaded", "submitted", "completed", "failed"]
        assert by_rid[rids[0]].r2_keys == {"video_input": "tensors/x/video_input.json"}
        assert by_rid[rids[2]].result is None  # lists of units never read an embedding
        assert store.result(rids[2]) == {"embedding": [0.5, 0.5]}
        assert store.unit(rids[2]).result == {"embedding": [0.5, 0.5]}  # type: ignore[union-attr]
        assert by_rid[rids[3]].error == "boom"
        assert store.counts() == {"uploaded": 1, "submitted": 1, "completed": 1, "failed": 1}


def test_planning_again_keeps_progress(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        rids = _plan(store)
        store.mark_uploaded(rids[0], {"video_input": "k"}, [0.0] * 12)
        _plan(store)
        assert store.unit(rids[0]) is not None
        assert store.unit(rids[0]).status == "uploaded"  # type: ignore[union-attr]


def test_steps_never_go_backwards(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        rid = _plan(store, windows=1)[0]
        store.mark_uploaded(rid, {"video_input": "k"}, [0.0] * 12)
        store.mark_submitted(rid)
        store.mark_completed(rid, {"embedding": [1.0]})
        store.mark_failed(rid, "late failure")  # a completed unit stays completed
        store.mark_uploaded(rid, {"video_input": "other"}, [0.0] * 12)
        unit = store.unit(rid)
        # its upload keys went with completion (they only serve to submit); the late upload's stay out
        assert unit is not None and unit.status == "completed" and unit.r2_keys is None


def test_retry_failed_gives_a_new_request_id(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        rids = _plan(store, windows=1)
        store.mark_failed(rids[0], "server said no")
        assert store.retry_failed(lambda u, n: f"{u.request_id}-r{n}") == 1
        units = {u.service: u for u in store.units_of("f" * 32)}
        assert units["embedding"].status == "planned"
        assert units["embedding"].request_id == rids[0] + "-r1"
        assert units["tagging"].request_id == rids[1]


def test_writes_from_another_process_are_visible(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        rid = _plan(store, windows=1)[0]
        code = (
            "import sys; from seeknetic_prep.state.store import Store\n"
            "s = Store(sys.argv[1]); s.mark_failed(sys.argv[2], 'from child'); s.close()\n"
        )
        store.flush()  # the plan is committed at once; flush() is the barrier for transitions
        subprocess.run([sys.executable, "-c", code, str(path), rid], check=True)
        unit = store.unit(rid)
        assert unit is not None and unit.error == "from child"


def test_results_follow_the_database(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        run_id = store.start_run()
        fp = "a" * 32
        store.record_file("/v/a.mp4", status="ok", fingerprint=fp, size=1, duration_ms=20_000)
        store.record_file("/v/bad.mp4", status="failed", error="/v/bad.mp4: empty file")
        rids = _plan(store, fp=fp)
        store.mark_uploaded(rids[0], {"video_input": "k"}, [5.0] * 12)
        store.mark_submitted(rids[0])
        store.mark_completed(rids[0], {"embedding": [0.6, 0.8]})  # kept as float32
        store.mark_failed(rids[1], "tagging failed")
        part = append_results_part(store, tmp_path, run_id, services=("embedding", "tagging"))
    assert part is not None and part.exists()
    rows = compact(tmp_path).to_pylist()
    assert [(x["path"], x["window_index"], x["embedding_status"], x["tagging_status"]) for x in rows] == [
        ("/v/a.mp4", 0, "completed", "failed"),
        ("/v/bad.mp4", None, "failed", "failed"),
    ]
    assert rows[0]["embedding"] == pytest.approx([0.6, 0.8], abs=1e-7)
    assert rows[0]["frame_times_ms"] == [5.0] * 12
    assert rows[0]["start_ms"] == 0 and rows[0]["end_ms"] == 10_000 and rows[0]["embedding_error"] is None
    assert rows[0]["tagging_error"] == "tagging failed"
    assert rows[1]["embedding_error"] == "/v/bad.mp4: empty file" and rows[1]["start_ms"] is None


def test_transitions_are_batched_but_committed_within_a_flush_period(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        rids = _plan(store, windows=50)
        for rid in rids:
            store.mark_failed(rid, "x")
        other = sqlite3.connect(path)
        deadline = time.monotonic() + 5
        while other.execute("SELECT COUNT(*) FROM units WHERE status='failed'").fetchone()[0] < len(rids):
            assert time.monotonic() < deadline, "the background flush never committed"
            time.sleep(0.05)
        other.close()


def test_a_non_utf8_path_round_trips_exactly(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.mp4")  # 'caf\udce9.mp4' on Linux
    target = tmp_path / name
    with Store(tmp_path / "s.sqlite") as store:
        store.record_file(target, status="failed", error=f"{target}: empty file")
        store.record_file(tmp_path / "ok.mp4", status="ok", fingerprint="a" * 32)
    with Store(tmp_path / "s.sqlite") as store:
        rows = {r.path: r for r in store.files()}
    assert os.fsencode(str(target)) in {os.fsencode(p) for p in rows}
    row = rows[str(target)]
    assert row.display.endswith("caf\\xe9.mp4") and row.error is not None and "\\xe9" in row.error


def test_paths_are_absolute_and_recorded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with Store(tmp_path / "s.sqlite") as store:
        store.record_file("v/a.mp4", status="ok", fingerprint="a" * 32)
        store.record_file(tmp_path / "v" / "a.mp4", status="ok", fingerprint="a" * 32)
        store.record_file(tmp_path / "v" / "copy.mp4", status="ok", fingerprint="a" * 32)
        paths = [r.path for r in store.files()]
        assert paths == [str(tmp_path / "v" / "a.mp4"), str(tmp_path / "v" / "copy.mp4")]


def test_known_file_skips_only_an_unchanged_finished_file(tmp_path: Path) -> None:
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x" * 100)
    st = video.stat()
    fp = "a" * 32
    stat = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
    with Store(tmp_path / "s.sqlite") as store:
        assert store.known_file(video, **stat) is None  # never seen
        store.record_file(video, status="ok", fingerprint=fp, duration_ms=20_000, **stat)
        rids = _plan(store, fp=fp)
        assert store.known_file(video, **stat) is None  # units still planned
        for rid in rids:
            store.mark_uploaded(rid, {"video_input": "k"}, [0.0] * 12)
            store.mark_submitted(rid)
            store.mark_completed(rid, {"embedding": [1.0]})
        row = store.known_file(video, **stat)
        assert row is not None and row.fingerprint == fp and row.path == str(video)
        assert store.tally(fp) == {"windows": 2, "completed": 4}
        assert store.tally(fp, services=("tagging",)) == {"windows": 2, "completed": 2}
        assert store.known_file(str(video), **{**stat, "size": st.st_size + 1}) is None
        assert store.known_file(video, **{**stat, "mtime_ns": st.st_mtime_ns + 1}) is None
        assert store.known_file(video, **{**stat, "inode": st.st_ino + 1}) is None
        assert store.known_file(video, services=("embedding", "tagging", "other"), **stat) is None
        # the lookup is one primary-key search, not a scan
        db = sqlite3.connect(tmp_path / "s.sqlite")
        plan = db.execute("EXPLAIN QUERY PLAN SELECT * FROM files WHERE path=? AND size=?", (b"x", 1))
        assert any("sqlite_autoindex_files_1" in str(r) for r in plan.fetchall())
        db.close()


def test_version_1_database_is_upgraded_with_its_results(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    assert isinstance(MIGRATIONS[0], str)
    db.executescript(MIGRATIONS[0])
    db.execute("PRAGMA user_version = 1")
    now = time.time()
    db.execute("INSERT INTO files VALUES ('/v/a.mp4', ?, 10, 20000, 'ok', NULL, ?)", ("a" * 32, now))
    emb = [0.25, -0.5, 0.125]
    for idx, svc, status, result in [(0, "embedding", "completed", {"embedding": emb, "model_name": "m"}),
                                     (0, "tagging", "completed", {"tags": {"shot_size": "wide_shot"}}),
                                     (1, "embedding", "submitted", None)]:
        db.execute(
            "INSERT INTO units (fingerprint, window_index, service, start_ms, end_ms, request_id, status, "
            "frame_times_ms, r2_keys, result, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            ("a" * 32, idx, svc, idx * 10_000, (idx + 1) * 10_000, f"r{idx}{svc}", status, "[1.5]",
             '{"video_input": "k"}', json.dumps(result) if result else None, now, now),
        )
    db.close()
    with Store(path) as store:
        assert store.files()[0].path == "/v/a.mp4"
        assert store.result("r0embedding") == {"embedding": emb, "model_name": "m"}
        assert store.result("r0tagging") == {"tags": {"shot_size": "wide_shot"}}
        assert store.unit("r1embedding").status == "submitted"  # type: ignore[union-attr]
        assert store.counts() == {"completed": 2, "submitted": 1}
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    assert db.execute("SELECT MAX(length(result)) FROM units").fetchone()[0] < 100  # no JSON embedding
    blob = db.execute("SELECT embedding FROM units WHERE request_id='r0embedding'").fetchone()[0]
    assert len(blob) == 12
    assert [r[0] for r in db.execute("SELECT DISTINCT finished_run FROM units ORDER BY 1")] == [None, 0]


def test_reading_progress_never_reads_an_embedding(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        rids = _plan(store, windows=1)
        store.mark_completed(rids[0], {"embedding": [0.5] * 1024})
        store.flush()
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)
        store.units_of("f" * 32)
        store.units_with_status("completed")
        store.has_units("f" * 32)
        store.counts()
        assert len(statements) == 4 and not any("embedding" in s or "result" in s for s in statements)


def test_runs_are_typed_rows_and_throughput_is_computed_once(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        assert store.runs() == [] and store.throughput().rates() is None
        first, second = store.start_run(), store.start_run()
        store.update_run(first, windows_decoded=10, jobs_completed=18, outcome="finished")
        store.update_run(second, windows_decoded=2, jobs_completed=2)
        store.flush()
        store._db.execute("UPDATE runs SET started_at=100, updated_at=104 WHERE id=?", (first,))
        # the clock stepped back during the second run
        store._db.execute("UPDATE runs SET started_at=200, updated_at=199 WHERE id=?", (second,))
        runs = store.runs()
        assert runs == [RunRow(first, 100.0, 104.0, 10, 18, "finished"),
                        RunRow(second, 200.0, 199.0, 2, 2, None)]
        assert [r.busy_s for r in runs] == [4.0, 0.0]  # a run never counts negative time
        throughput = store.throughput()
        assert throughput == Throughput(runs=2, busy_s=4.0, windows_decoded=12, jobs_completed=20)
        assert throughput.rates() == ("3.00 windows/s decoded", "5.00 jobs/s completed")


def test_what_a_run_finished_is_read_back_typed(tmp_path: Path) -> None:
    """The reads a results part is written from: only what the run did, as typed rows."""
    a, b = "a" * 32, "b" * 32
    with Store(tmp_path / "s.sqlite") as store:
        first = store.start_run()
        store.record_file("/v/a.mp4", status="ok", fingerprint=a)
        rids = _plan(store, fp=a)
        store.mark_completed(rids[0], {"embedding": [0.5, 0.25], "model_name": "m"})
        store.mark_completed(rids[1], {"tags": {"shot_size": "wide_shot"}})
        second = store.start_run()
        store.record_file("/v/a.mp4", status="ok", fingerprint=a)  # unchanged: keeps run 1
        store.record_file("/v/copy.mp4", status="ok", fingerprint=a)
        store.record_file("/v/bad.mp4", status="failed", error="/v/bad.mp4: empty file")
        store.mark_uploaded(rids[2], {"video_input": "k"}, [1.5] * 12)
        store.mark_failed(rids[2], "no")
        _plan(store, fp=b)
        assert store.runs_with_results() == {first, second}
        assert store.windows_finished_in(first) == {a: {0}}
        assert store.windows_finished_in(second) == {a: {1}}
        assert sorted((f.path, f.status, f.raw) for f in store.files_recorded_in(second)) == [
            ("/v/bad.mp4", "failed", b"/v/bad.mp4"), ("/v/copy.mp4", "ok", b"/v/copy.mp4")]
        assert sorted(store.ok_paths(a)) == [b"/v/a.mp4", b"/v/copy.mp4"] and store.ok_paths(b) == []
        assert store.finished_windows(a) == {0, 1} and store.finished_windows(b) == set()
        rows = store.window_rows(a, [0, 1])
        assert [(r.window_index, r.service, r.status) for r in rows] == [
            (0, "embedding", "completed"), (0, "tagging", "completed"),
            (1, "embedding", "failed"), (1, "tagging", "planned")]
        assert rows[0].embedding == np.asarray([0.5, 0.25], "<f4").tobytes()
        assert rows[0].result == {"model_name": "m"}
        assert rows[1].result == {"tags": {"shot_size": "wide_shot"}}
        assert rows[2].embedding is None and rows[2].result is None and rows[2].error == "no"
        assert rows[2].frame_times_ms == [1.5] * 12 and rows[3].frame_times_ms is None
