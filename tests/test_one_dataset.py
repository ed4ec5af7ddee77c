"""``parts/`` read as one dataset is the current results (issue 18.2): exactly one row per
(path, window) whatever happened, read by pyarrow.dataset and by DuckDB straight from the
folder, equal to what ``seeknetic-prep results`` exports. Before: after an interrupted run and
its resume, plain readers saw 33 rows for 31 windows, the stale ones 'submitted' with no
embedding.

The history here is real: a run stopped after a few submissions (``--max-jobs``: windows with
one service done and the other not), its resume, a file whose content changed, a file deleted;
each a CLI run against the emulator.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
from _pipeline_helpers import ROOT, cli

DEMO = ROOT / "fixtures" / "demo"


def _exported(out: Path) -> list[tuple[Any, ...]]:
    target = out.parent / "export.jsonl"
    cli("results", "--out", str(out), "--format", "jsonl", "--to", str(target))
    return sorted(_key(json.loads(line)) for line in target.read_text().splitlines())


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["path"], row["window_index"], row["fingerprint"], row["file_status"],
            row["embedding_status"], row["tagging_status"])


def _as_dataset(out: Path) -> list[tuple[Any, ...]]:
    table = ds.dataset(out / "parts", format="parquet").to_table(
        columns=["path", "window_index", "fingerprint", "file_status", "embedding_status", "tagging_status"])
    return sorted(_key(r) for r in table.to_pylist())


def _duckdb(out: Path) -> tuple[int, int, list[tuple[Any, ...]]]:
    duckdb = pytest.importorskip("duckdb", reason="the test extra installs duckdb")
    glob = str(out / "parts" / "*.parquet")
    con = duckdb.connect()
    try:
        rows = con.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone()[0]
        dupes = con.execute(f"SELECT count(*) FROM (SELECT path, window_index FROM read_parquet('{glob}') "
                            "GROUP BY path, window_index HAVING count(*) > 1)").fetchone()[0]
        keys = con.execute(f"SELECT path, window_index, fingerprint, file_status, embedding_status, "
                           f"tagging_status FROM read_parquet('{glob}')").fetchall()
    finally:
        con.close()
    return int(rows), int(dupes), sorted(keys)


def _check(out: Path) -> list[tuple[Any, ...]]:
    exported = _exported(out)
    assert _as_dataset(out) == exported
    rows, dupes, keys = _duckdb(out)
    assert (rows, dupes) == (len(exported), 0) and keys == exported
    return exported


def test_parts_hold_only_current_rows_after_a_stop_a_resume_a_change_and_a_delete(tmp_path: Path) -> None:
    videos, out = tmp_path / "videos", tmp_path / "out"
    shutil.copytree(DEMO, videos)
    run = ["run", str(videos), "--local", "--out", str(out), "--workers", "2"]
    cli(*run, "--max-jobs", "3", ok=(3,))  # stopped: some windows half done
    stopped = _check(out)
    assert any("completed" in k[4:] and k[4:] != ("completed", "completed") for k in stopped)

    cli(*run)  # the resume completes them: their half-done rows are superseded
    resumed = _check(out)
    assert all(k[4:] == ("completed", "completed") for k in resumed)
    assert len(resumed) == len({k[:2] for k in resumed})

    shutil.copy(DEMO / "lake.mp4", videos / "desert.mp4")  # new content under an old name
    (videos / "forest.webm").unlink()
    cli(*run)
    changed = _check(out)
    paths = {k[0] for k in changed}
    assert paths == {str(videos / "desert.mp4"), str(videos / "lake.mp4")}
    lake_fp = {k[2] for k in changed if k[0] == str(videos / "lake.mp4")}
    assert {k[2] for k in changed if k[0] == str(videos / "desert.mp4")} == lake_fp  # only the new content
    assert sum(k[0] == str(videos / "desert.mp4") for k in changed) == sum(
        k[0] == str(videos / "lake.mp4") for k in changed)

    search = cli("search", "--out", str(out), "--json", "--top", "100").stdout.splitlines()
    assert sorted((json.loads(h)["path"], json.loads(h)["start_ms"] // 10_000) for h in search) == sorted(
        (k[0], k[1]) for k in changed)  # the index followed the rewritten parts
