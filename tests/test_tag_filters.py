"""Tag filters that cannot mislead (issue 18.7): ``--where`` comparisons for numeric tags, an
unknown tag or value refused with the real ones listed, a valid filter matching nothing is a
valid ``0 of N``. Counts are checked against the tags the helper wrote (``tags_for``), not
against numbers."""

from __future__ import annotations

import operator
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _pipeline_helpers import ROOT
from _results_helpers import add_file, tags_for

from seeknetic_prep.api.tags import CATEGORIES
from seeknetic_prep.emulator.scoring import Content, tag_content
from seeknetic_prep.errors import InvalidArgumentError
from seeknetic_prep.results.filters import parse_where
from seeknetic_prep.results.index import load_windows
from seeknetic_prep.results.part_rows import append_results_part
from seeknetic_prep.results.rank import rank
from seeknetic_prep.state.store import Store

FILES, WINDOWS = 6, 5


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tags") / "out"
    with Store(out / "state.sqlite") as store:
        run = store.start_run()
        for f in range(FILES):
            add_file(store, f"/v/{f:03d}.mp4", f"{f:032d}", WINDOWS, dim=16)
        append_results_part(store, out, run)
    return out


def truth(keep: Callable[[dict[str, Any]], bool]) -> int:
    """How many windows the helper's tags say pass ``keep``."""
    return FILES * sum(keep(tags_for(i)) for i in range(WINDOWS))


def matched(out: Path, *where: str, tags: dict[str, str] | None = None) -> int:
    return rank(load_windows(out), None, tags=tags, where=parse_where(where), top=1)[1]


@pytest.mark.parametrize(("spec", "name", "op", "value"), [
    ("brightness>0.27", "brightness", operator.gt, 0.27),
    ("brightness >= 0.27", "brightness", operator.ge, 0.27),
    ("brightness<0.26", "brightness", operator.lt, 0.26),
    ("scene_cuts<=1", "scene_cuts", operator.le, 1),
    ("scene_cuts!=0", "scene_cuts", operator.ne, 0),
    ("scene_cuts==3", "scene_cuts", operator.eq, 3),
])
def test_numeric_comparisons_count_what_the_tags_say(out: Path, spec: str, name: str,
                                                      op: Callable[[Any, Any], bool], value: float) -> None:
    want = truth(lambda t: bool(op(t[name], value)))
    assert 0 < want < FILES * WINDOWS  # the case separates windows
    assert matched(out, spec) == want


def test_conditions_and_tags_combine(out: Path) -> None:
    want = truth(lambda t: t["shot_size"] == "wide_shot" and t["scene_cuts"] >= 2 and t["brightness"] < 0.29)
    assert matched(out, "scene_cuts>=2", "brightness<0.29", tags={"shot_size": "WIDE_SHOT"}) == want > 0
    assert matched(out, "shot_size!=wide_shot") == truth(lambda t: t["shot_size"] != "wide_shot")


def test_tags_outside_the_columns_compare_too(out: Path) -> None:
    assert matched(out, "mood=calm") == FILES * WINDOWS
    assert matched(out, "mood!=CALM") == 0


def test_a_documented_value_no_window_has_is_a_valid_zero(out: Path) -> None:
    assert "medium_shot" in CATEGORIES["shot_size"]
    assert matched(out, tags={"shot_size": "medium_shot"}) == 0
    assert matched(out, "brightness>5") == 0


@pytest.mark.parametrize(("where", "tags", "message"), [
    ((), {"shot_size": "wide"},
     r"Unknown value 'wide' for tag shot_size: its values are extreme_close_up \(0\), "
     r"close_up \(12\), medium_shot \(0\), wide_shot \(18\), extreme_wide_shot \(0\)"),
    (("dominant_color=greenish",), None, r"Unknown value 'greenish' for tag dominant_color: .*green \(30\)"),
    (("shot_size<close_up",), None, "shot_size is a category; compare it with = or !="),
    (("brightness>bright",), None, "brightness is a number, so the value must be one"),
    (("brightness=nan",), None, "brightness is a number"),
    (("colour=red",), None, r"Unknown tag 'colour' in 'colour=red': the results have .*mood.*shot_size"),
])
def test_a_filter_that_cannot_match_is_refused_naming_what_could(
        out: Path, where: tuple[str, ...], tags: dict[str, str] | None, message: str) -> None:
    assert truth(lambda t: t["shot_size"] == "wide_shot") == 18  # the counts the message shows
    with pytest.raises(InvalidArgumentError, match=message):
        matched(out, *where, tags=tags)


@pytest.mark.parametrize("spec", ["brightness", "brightness>", ">0.5", "brightness~0.5"])
def test_a_where_that_is_not_name_op_value_is_refused(spec: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"must be NAME OP VALUE .* e\.g\. shot_size=wide_shot"):
        parse_where([spec])


def _search(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEKNETIC_")}
    return subprocess.run([sys.executable, "-m", "seeknetic_prep", "search", "--out", str(out), *args],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_cli_refuses_a_typo_with_exit_2_and_counts_a_valid_filter(out: Path) -> None:
    typo = _search(out, "--tag", "shot_size=wide")
    assert typo.returncode == 2 and "Traceback" not in typo.stderr
    errors = [line for line in typo.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "wide_shot (18)" in errors[0], typo.stderr
    ok = _search(out, "--where", "brightness>0.27", "--top", "3")
    assert ok.returncode == 0, ok.stderr
    want = truth(lambda t: t["brightness"] > 0.27)
    assert ok.stdout.splitlines()[-1].startswith(f"3 of {want} matching windows")
    none = _search(out, "--tag", "shot_size=medium_shot")
    assert none.returncode == 0 and none.stdout.splitlines()[-1].startswith("0 of 0 matching windows")
    helped = subprocess.run([sys.executable, "-m", "seeknetic_prep", "search", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60).stdout
    assert "shot_size=wide_shot" in helped and "shot_size=wide " not in helped


def test_the_emulator_says_only_documented_values() -> None:
    """Solid colours, greys, noise, and moving, zooming and cut patterns through the tagger."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)
    clips = [np.full((12, 224, 224, 3), c, np.uint8) for c in
             ((0, 0, 0), (128, 128, 128), (255, 255, 255), (200, 30, 30), (30, 200, 30), (30, 30, 200),
              (220, 200, 20), (200, 20, 200), (20, 200, 200), (230, 120, 20), (120, 20, 200))]
    clips.append(rng.integers(0, 255, (12, 224, 224, 3), dtype=np.uint8))
    clips.append(np.stack([np.roll(base, 8 * k, axis=1) for k in range(12)]))
    clips.append(np.stack([np.roll(base, -8 * k, axis=0) for k in range(12)]))
    seen: dict[str, set[str]] = {name: set() for name in CATEGORIES}
    for clip in clips:
        content = Content(digest=False)
        content.add_video(clip.transpose(0, 3, 1, 2)[None])
        for name, value in tag_content(content).items():
            if name in CATEGORIES:
                assert value in CATEGORIES[name], (name, value)
                seen[name].add(value)
    assert all(seen.values())  # every categorical tag was said at least once
