"""Search over results.jsonl: ranking by cosine, tag filters, and the CLI against the emulator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from seeknetic_prep.client import Client
from seeknetic_prep.errors import InvalidArgumentError
from seeknetic_prep.search import load_windows, parse_tag_filters, rank


def _line(path: str, start: int, service: str, **extra: Any) -> dict[str, Any]:
    return {"path": path, "fingerprint": f"fp-{path}", "start_ms": start, "end_ms": start + 10_000,
            "frame_times_ms": [], "service": service, "request_id": f"{path}-{start}-{service}",
            "status": "completed", "error": None, **extra}


def _write(tmp_path: Path, lines: list[dict[str, Any]]) -> Path:
    out = tmp_path / "results.jsonl"
    out.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return out


def test_rank_orders_by_cosine_and_joins_tags(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((4, 16))
    lines = []
    for i, v in enumerate(vecs):
        lines.append(_line(f"v{i}.mp4", 0, "embedding", embedding=(v * (i + 1)).tolist()))  # unnormalised
        lines.append(_line(f"v{i}.mp4", 0, "tagging", tags={"shot_size": "wide" if i % 2 else "close_up"}))
    lines.append({**_line("bad.mp4", 0, "embedding"), "status": "failed", "embedding": None})
    windows = load_windows(_write(tmp_path, lines))
    assert len(windows) == 4  # the failed line is not a window

    query = vecs[2] + 0.05 * rng.standard_normal(16)
    hits = rank(windows, query.tolist(), top=4)
    cos = [float(v @ query / np.linalg.norm(v) / np.linalg.norm(query)) for v in vecs]
    assert [h.path for h in hits] == [f"v{i}.mp4" for i in np.argsort(cos)[::-1]]
    assert hits[0].path == "v2.mp4" and hits[0].score == pytest.approx(max(cos))
    assert hits[0].tags == {"shot_size": "close_up"}

    wide = rank(windows, query.tolist(), tags={"shot_size": "WIDE"}, top=10)
    assert {h.path for h in wide} == {"v1.mp4", "v3.mp4"}
    listed = rank(windows, None, tags={"shot_size": "close_up"}, top=10)
    assert [h.path for h in listed] == ["v0.mp4", "v2.mp4"] and all(h.score is None for h in listed)


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="No results"):
        load_windows(tmp_path / "missing.jsonl")
    with pytest.raises(InvalidArgumentError, match="NAME=VALUE"):
        parse_tag_filters(["shot_size"])
    windows = load_windows(_write(tmp_path, [_line("a.mp4", 0, "embedding", embedding=[1.0, 0.0])]))
    with pytest.raises(InvalidArgumentError, match="3 dimensions but the results have 2"):
        rank(windows, [1.0, 0.0, 0.0])
    with pytest.raises(InvalidArgumentError, match="top 0"):
        rank(windows, None, top=0)


def test_search_cli_embeds_the_query_through_the_api(tmp_path: Path, emulator: Any) -> None:
    texts = ["a red car drives through the rain", "two dogs play on the beach", "city lights at night"]
    with Client(emulator.api_key, base_url=emulator.base_url) as client:
        lines = [_line(f"clip{i}.mp4", 10_000 * i, "embedding", embedding=client.encode_text(t))
                 for i, t in enumerate(texts)]
    _write(tmp_path, lines)
    proc = subprocess.run(
        [sys.executable, "-m", "seeknetic_prep", "search", texts[1], "--out", str(tmp_path), "--top", "2",
         "--json", "--base-url", emulator.base_url],
        capture_output=True, text=True, timeout=60,
        env={"SEEKNETIC_API_KEY": emulator.api_key, "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    hits = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(hits) == 2
    assert hits[0]["path"] == "clip1.mp4" and hits[0]["start_ms"] == 10_000
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-6)
    assert hits[1]["score"] < hits[0]["score"]
    assert emulator.api_key not in proc.stdout + proc.stderr
