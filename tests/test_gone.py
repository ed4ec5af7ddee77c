"""Results follow the folder (issue 18.1): a file deleted or renamed since the last run is
marked gone by the next run over its folder, and leaves ``results``, ``search`` and ``report``;
``status`` counts it; ``results --include-gone`` still exports it; the renamed bytes show under
their new name with no new job; a file that comes back is not submitted again; paths outside the
run's inputs are untouched; ``prune`` forgets gone paths. Real runs of the CLI against the
emulator (``--local``) on copies of the demo clips; counts come from the first run's own export.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from _pipeline_helpers import ROOT, cli

DEMO = ROOT / "fixtures" / "demo"


def _rows(out: Path, *flags: str) -> dict[str, list[dict[str, Any]]]:
    """The exported rows, by path."""
    target = out.parent / "export.jsonl"
    cli("results", "--out", str(out), "--format", "jsonl", "--to", str(target), *flags)
    by_path: dict[str, list[dict[str, Any]]] = {}
    for line in target.read_text().splitlines():
        row = json.loads(line)
        by_path.setdefault(row["path"], []).append(row)
    return by_path


def _units(out: Path) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(out / "state.sqlite")
    try:
        return sorted(con.execute("SELECT request_id, status, attempt, updated_at FROM units"))
    finally:
        con.close()


def _windows(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["window_index"], r["start_ms"], r["embedding_status"], r["tagging_status"]) for r in rows]


def test_results_follow_deletes_renames_and_returns(tmp_path: Path) -> None:
    videos, other, out = tmp_path / "videos", tmp_path / "other", tmp_path / "out"
    shutil.copytree(DEMO, videos)
    other.mkdir()
    shutil.copy(DEMO / "desert.mp4", other / "elsewhere.mp4")
    cli("run", str(videos), str(other), "--local", "--out", str(out), "--workers", "2")
    first = _rows(out)
    forest, lake, renamed = str(videos / "forest.webm"), str(videos / "lake.mp4"), str(videos / "lake-2.mp4")
    assert {forest, lake, str(videos / "desert.mp4"), str(other / "elsewhere.mp4")} == set(first)
    units = _units(out)

    (videos / "forest.webm").unlink()
    (videos / "lake.mp4").rename(videos / "lake-2.mp4")
    (other / "elsewhere.mp4").unlink()  # outside the next run's inputs: must stay as it is
    second = cli("run", str(videos), "--local", "--out", str(out), "--workers", "2")
    assert "files: 2 ok, 0 failed, 2 gone;" in second.stdout
    assert _units(out) == units  # nothing uploaded, submitted or changed: the renamed bytes were done

    now = _rows(out)
    assert set(now) == {str(videos / "desert.mp4"), renamed, str(other / "elsewhere.mp4")}
    assert _windows(now[renamed]) == _windows(first[lake])  # the same windows, under the new name
    status = cli("status", "--out", str(out)).stdout
    assert "2 gone" in status
    hits = [json.loads(line)["path"] for line in
            cli("search", "--out", str(out), "--json", "--top", "100").stdout.splitlines()]
    assert set(hits) == set(now) and len(hits) == sum(len(r) for r in now.values())
    cli("report", "--out", str(out))
    page = (out / "report.html").read_text()
    assert "lake-2.mp4" in page and "forest.webm" not in page

    with_gone = _rows(out, "--include-gone")
    assert set(with_gone) == set(now) | {forest, lake}
    for path in (forest, lake):
        assert {r["file_status"] for r in with_gone[path]} == {"gone"}
        assert _windows(with_gone[path]) == _windows(first[path])

    shutil.copy(DEMO / "forest.webm", videos / "forest.webm")  # it comes back
    third = cli("run", str(videos), "--local", "--out", str(out), "--workers", "2")
    assert "files: 3 ok, 0 failed;" in third.stdout and _units(out) == units
    back = _rows(out)
    assert forest in back and _windows(back[forest]) == _windows(first[forest])

    assert "pruned 1 gone path(s)" in cli("prune", "--out", str(out)).stdout  # the old name of lake
    assert "gone" not in cli("status", "--out", str(out)).stdout
    assert set(_rows(out, "--include-gone")) == set(back)
