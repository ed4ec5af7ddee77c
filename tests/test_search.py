"""Search over the results parts: exact ranking against a numpy reference, tag filters, the
memory-mapped index growing with the parts, and the CLI against the emulator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _results_helpers import add_file, vector

from seeknetic_prep.api.client import Client
from seeknetic_prep.errors import InvalidArgumentError
from seeknetic_prep.results.index import load_windows, update_index
from seeknetic_prep.results.part_rows import append_results_part
from seeknetic_prep.results.rank import list_tags, parse_tag_filters, rank
from seeknetic_prep.state.store import Store


def _state(tmp_path: Path, files: int = 12, windows: int = 5, dim: int = 64) -> Path:
    """Two runs: the first finishes half of the files, the second the rest."""
    out = tmp_path / "out"
    with Store(out / "state.sqlite") as store:
        for half in (0, 1):
            run = store.start_run()
            for f in range(half, files, 2):
                add_file(store, f"/v/{f:03d}.mp4", f"{f:032d}", windows, dim=dim)
            append_results_part(store, out, run)
    return out


def test_exact_ranking_matches_a_brute_force_reference(tmp_path: Path) -> None:
    out = _state(tmp_path)
    windows = load_windows(out)
    assert len(windows) == 60
    keys = [(f"/v/{f:03d}.mp4", i) for f in range(12) for i in range(5)]
    reference = np.stack([vector(f"{f:032d}", i, 64) for f in range(12) for i in range(5)]).astype(np.float64)
    rng = np.random.default_rng(7)
    for _ in range(5):
        query = rng.standard_normal(64) * 3.0  # not normalised
        hits, matched = rank(windows, query, top=7)
        cos = reference @ query / np.linalg.norm(query)
        order = np.argsort(-cos, kind="stable")[:7]
        assert matched == 60
        assert [(h.path, h.start_ms // 10_000) for h in hits] == [keys[i] for i in order]
        assert [h.score for h in hits] == pytest.approx(cos[order].tolist(), abs=1e-5)


def test_tag_filters_run_before_ranking_and_report_n_of_m(tmp_path: Path) -> None:
    out = _state(tmp_path)
    windows = load_windows(out)
    query = vector("00000000000000000000000000000003", 1, 64)
    hits, matched = rank(windows, query, tags={"shot_size": "CLOSE_UP"}, top=3)
    assert matched == 24  # windows 1 and 3 of 12 files
    assert hits[0].path == "/v/003.mp4" and hits[0].start_ms == 10_000 and hits[0].score == pytest.approx(1.0)
    assert all(h.tags["shot_size"] == "close_up" for h in hits)
    _, matched = rank(windows, query, tags={"scene_cuts": "4", "shot_size": "wide_shot"})
    assert matched == 12
    _, matched = rank(windows, query, tags={"brightness": "0.27"})
    assert matched == 12
    listed, matched = rank(windows, None, tags={"mood": "calm"}, top=3)  # a tag outside the columns
    assert matched == 60 and [(h.path, h.start_ms) for h in listed] == [
        ("/v/000.mp4", 0), ("/v/000.mp4", 10_000), ("/v/000.mp4", 20_000)]
    assert all(h.score is None for h in listed)
    with pytest.raises(InvalidArgumentError, match=r"Unknown tag 'colour'.*shot_size"):
        rank(windows, None, tags={"colour": "red"})


def test_list_tags_shows_names_and_values(tmp_path: Path) -> None:
    tags = list_tags(load_windows(_state(tmp_path)))
    assert tags["shot_size"] == [("wide_shot", 36), ("close_up", 24)]
    assert tags["dominant_color"] == [("green", 60)]
    assert tags["scene_cuts"] == (0, 4)
    assert "mood" in tags


def test_the_index_grows_with_new_parts_and_skips_superseded_rows(tmp_path: Path) -> None:
    out = _state(tmp_path, files=2, windows=2)
    first = load_windows(out)
    again = load_windows(out)  # from the cache of current rows
    assert (out / "search" / "windows.arrow").exists() and first.table.equals(again.table)
    assert first.vector_row.tolist() == again.vector_row.tolist()
    assert update_index(out) == 0  # nothing new
    matrix = out / "search" / "vectors.f32"
    size = matrix.stat().st_size
    assert size == 4 * 64 * 4
    with Store(out / "state.sqlite") as store:
        run = store.start_run()
        add_file(store, "/v/000.mp4", "f" * 32, 1, dim=64)  # the file was replaced
        append_results_part(store, out, run)
    windows = load_windows(out)
    assert matrix.stat().st_size == size + 64 * 4  # only the new part was appended
    assert sorted((Path(h.path).name, h.start_ms) for h in rank(windows, None, top=10)[0]) == [
        ("000.mp4", 0), ("001.mp4", 0), ("001.mp4", 10_000)]
    hits, matched = rank(windows, vector("f" * 32, 0, 64), top=1)
    assert matched == 3 and hits[0].path == "/v/000.mp4" and hits[0].score == pytest.approx(1.0)


@pytest.mark.parametrize("new_run_after", [False, True])
def test_a_part_written_again_from_the_state_never_ranks_with_other_windows_embeddings(
        tmp_path: Path, new_run_after: bool) -> None:
    """Issue 22.3: a part deleted and written again from the state (same name, other rows) used
    to be ranked with the old part's matrix rows: every hit named another window."""
    from seeknetic_prep.results.part_rows import ensure_parts
    from seeknetic_prep.results.parts import list_parts

    out = tmp_path / "out"
    with Store(out / "state.sqlite") as store:
        run = store.start_run()
        for f in range(4):
            add_file(store, f"/v/{f:03d}.mp4", f"{f:032d}", 3, dim=16)
        append_results_part(store, out, run)
        # As a crash between the part's write and the state's release leaves them: the state
        # still holds these embeddings, so the part is written again with them (a part whose
        # embeddings left the state comes back 'submitted': tests/test_embeddings_in_parts.py).
        store.keep_embeddings([(f"{f:032d}", i, vector(f"{f:032d}", i, 16).tobytes())
                               for f in range(4) for i in range(3)])
        run = store.start_run()
        add_file(store, "/v/000.mp4", "a" * 32, 2, dim=16)  # 000.mp4 changed: part 1 shrinks
        append_results_part(store, out, run)
    load_windows(out)  # the index and its cache now cover both parts
    list_parts(out)[0].unlink()
    with Store(out / "state.sqlite") as store:
        assert [p.name for p in ensure_parts(store, out)] == ["part-000001-00.parquet"]
        if new_run_after:  # a new part: the current rows are merged again
            run = store.start_run()
            add_file(store, "/v/new.mp4", "9" * 32, 1, dim=16)
            append_results_part(store, out, run)
    windows = load_windows(out)
    expected = [("a" * 32, "/v/000.mp4", i) for i in range(2)] + [
        (f"{f:032d}", f"/v/{f:03d}.mp4", i) for f in range(1, 4) for i in range(3)]
    for fp, path, i in expected:
        hits, _ = rank(windows, vector(fp, i, 16), top=1)
        assert (hits[0].path, hits[0].start_ms) == (path, i * 10_000)
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert len(windows) == len(expected) + new_run_after


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="No results"):
        load_windows(tmp_path / "missing")
    with pytest.raises(InvalidArgumentError, match="NAME=VALUE"):
        parse_tag_filters(["shot_size"])
    with pytest.raises(InvalidArgumentError, match="one value per tag"):  # the last used to win
        parse_tag_filters(["shot_size=wide_shot", "shot_size=close_up"])
    assert parse_tag_filters(["shot_size=wide", "shot_size=WIDE "]) == {"shot_size": "WIDE"}
    windows = load_windows(_state(tmp_path, files=1, windows=1))
    with pytest.raises(InvalidArgumentError, match="3 dimensions but the results have 64"):
        rank(windows, [1.0, 0.0, 0.0])
    with pytest.raises(InvalidArgumentError, match="top 0"):
        rank(windows, None, top=0)


def test_search_cli_embeds_the_query_through_the_api(tmp_path: Path, emulator: Any) -> None:
    texts = ["a red car drives through the rain", "two dogs play on the beach", "city lights at night"]
    out = tmp_path / "out"
    with Client(emulator.api_key, base_url=emulator.base_url) as client, Store(out / "state.sqlite") as store:
        run = store.start_run()
        for i, text in enumerate(texts):
            fp = f"{i:032d}"
            store.record_file(f"/v/clip{i}.mp4", status="ok", fingerprint=fp)
            store.plan_units([(fp, 0, "embedding", 0, 10_000, f"r{i}")])
            store.mark_completed(f"r{i}", {"embedding": client.encode_text(text)})
        append_results_part(store, out, run)
    env = {"SEEKNETIC_API_KEY": emulator.api_key, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "seeknetic_prep", "search", texts[1], "--out", str(out), "--top", "2",
         "--json", "--base-url", emulator.base_url],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    hits = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(hits) == 2
    assert hits[0]["path"] == "/v/clip1.mp4" and hits[0]["start_ms"] == 0
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert hits[1]["score"] < hits[0]["score"]
    assert "2 of 3 ranked windows" in proc.stderr
    assert emulator.api_key not in proc.stdout + proc.stderr
    listing = subprocess.run(
        [sys.executable, "-m", "seeknetic_prep", "search", "--out", str(out), "--list-tags"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert listing.returncode == 0 and listing.stdout == ""  # no tagging results: no tags
    listed = subprocess.run([sys.executable, "-m", "seeknetic_prep", "search", "--out", str(out)],
                            capture_output=True, text=True, timeout=60, env=env)
    assert listed.returncode == 0 and "3 of 3 matching windows" in listed.stdout
