"""The pure timing rules: which windows, which instants."""

from __future__ import annotations

import itertools
import math

import pytest

from seeknetic_prep.decode.profile import Window
from seeknetic_prep.decode.sampling import frame_targets_ms, plan_windows
from seeknetic_prep.errors import InvalidArgumentError


@pytest.mark.parametrize(
    ("duration", "bounds"),
    [
        (700, [(0, 700)]),
        (10_000, [(0, 10_000)]),
        (10_001, [(0, 10_000), (10_000, 10_001)]),
        (25_000, [(0, 10_000), (10_000, 20_000), (20_000, 25_000)]),
        (20_000, [(0, 10_000), (10_000, 20_000)]),
    ],
)
def test_windows_tile_the_duration(duration: int, bounds: list[tuple[int, int]]) -> None:
    windows = plan_windows(duration)
    assert [(w.start_ms, w.end_ms) for w in windows] == bounds
    assert [w.index for w in windows] == list(range(len(bounds)))
    assert len(windows) == math.ceil(duration / 10_000)


def test_custom_window() -> None:
    assert plan_windows(25_000, start_ms=5000, end_ms=15000) == [Window(0, 5000, 15000)]
    assert plan_windows(25_000, start_ms=20000, end_ms=90000) == [Window(0, 20000, 25000)]
    assert plan_windows(25_000, start_ms=3000) == [Window(0, 3000, 25000)]
    assert plan_windows(25_000, end_ms=4000) == [Window(0, 0, 4000)]


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (-5, 1000, r"start_ms -5: must be >= 0"),
        (1000, 1000, r"end_ms 1000: must be greater than start_ms \(1000\)"),
        (3000, 2000, r"end_ms 2000: must be greater than start_ms \(3000\)"),
        (25_000, None, r"start_ms 25000: must be before the end of the content \(25000 ms\)"),
        (40_000, 50_000, r"start_ms 40000"),
    ],
)
def test_invalid_custom_windows_state_value_and_rule(start: int, end: int | None, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        plan_windows(25_000, start_ms=start, end_ms=end)


def test_nonpositive_duration() -> None:
    with pytest.raises(InvalidArgumentError, match="duration 0 ms"):
        plan_windows(0)


def test_targets_are_slice_centres() -> None:
    assert frame_targets_ms(Window(0, 0, 12_000)) == [500.0 + 1000 * i for i in range(12)]
    targets = frame_targets_ms(Window(2, 20_000, 25_000))
    assert targets[0] == pytest.approx(20_000 + 5000 / 24)
    assert targets[-1] == pytest.approx(25_000 - 5000 / 24)
    assert all(20_000 < t < 25_000 for t in targets)
    steps = {round(b - a, 9) for a, b in itertools.pairwise(targets)}
    assert steps == {round(5000 / 12, 9)}


@pytest.mark.parametrize("module", ["decode.sampling", "decode.transform", "pipeline.payloads",
                                    "decode.preprocess", "pipeline.spec", "executors.registry",
                                    "util.text"])
def test_docstring_examples_run(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The examples in the core's docstrings are runnable (from the repository root)."""
    import doctest
    import importlib
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    result = doctest.testmod(importlib.import_module(f"seeknetic_prep.{module}"))
    assert result.attempted > 0 and result.failed == 0
