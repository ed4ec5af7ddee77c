"""The state database: schema versioning, the unit lifecycle, persistence across connections."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from seeknetic_prep.errors import StateError
from seeknetic_prep.results import write_results
from seeknetic_prep.store import SCHEMA_VERSION, Store


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
        assert by_rid[rids[2]].result == {"embedding": [0.5, 0.5]}
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
        assert unit is not None and unit.status == "completed" and unit.r2_keys == {"video_input": "k"}


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
            "import sys; from seeknetic_prep.store import Store\n"
            "s = Store(sys.argv[1]); s.mark_failed(sys.argv[2], 'from child'); s.close()\n"
        )
        subprocess.run([sys.executable, "-c", code, str(path), rid], check=True)
        unit = store.unit(rid)
        assert unit is not None and unit.error == "from child"


def test_results_follow_the_database(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        fp = "a" * 32
        store.record_file("/v/a.mp4", status="ok", fingerprint=fp, size=1, duration_ms=20_000)
        store.record_file("/v/bad.mp4", status="failed", error="/v/bad.mp4: empty file")
        rids = _plan(store, fp=fp)
        store.mark_uploaded(rids[0], {"video_input": "k"}, [5.0] * 12)
        store.mark_submitted(rids[0])
        store.mark_completed(rids[0], {"embedding": [0.6, 0.8]})
        store.mark_failed(rids[1], "tagging failed")
        out = tmp_path / "results.jsonl"
        assert write_results(store, out, services=("embedding", "tagging")) == 4
    import json

    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["path"], x["service"], x["status"]) for x in lines] == [
        ("/v/a.mp4", "embedding", "completed"),
        ("/v/a.mp4", "tagging", "failed"),
        ("/v/bad.mp4", "embedding", "failed"),
        ("/v/bad.mp4", "tagging", "failed"),
    ]
    assert lines[0]["embedding"] == [0.6, 0.8] and lines[0]["frame_times_ms"] == [5.0] * 12
    assert lines[0]["start_ms"] == 0 and lines[0]["end_ms"] == 10_000 and lines[0]["error"] is None
    assert lines[1]["tags"] is None and lines[1]["error"] == "tagging failed"
    assert lines[2]["error"] == "/v/bad.mp4: empty file" and lines[2]["start_ms"] is None
