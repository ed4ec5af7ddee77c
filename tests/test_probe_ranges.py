"""A plan fetches what its probe reads in one round (issue 19, a store far away): the MP4's
sample tables say where the probe's packets lie (``decode.boxes.probe_ranges``), and
``sources.remote.warm_probe`` fetches them at once after the fingerprint. Through a
:class:`RangeReader` over the bytes of real files (the fetch function is the unit's input, as
in tests/test_range_spans.py): the probe then makes no request of its own, where it made one
after another before; and a damaged index costs nothing but the head start."""

from __future__ import annotations

import dataclasses
import itertools
import random
import struct
import sys
from pathlib import Path

import pytest

from seeknetic_prep.decode.boxes import TAIL_SECONDS, index_span, probe_ranges
from seeknetic_prep.decode.probe import probe
from seeknetic_prep.sources.reader import RangeReader
from seeknetic_prep.sources.remote import fingerprint_object, warm_probe

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
sys.path.insert(0, str(ROOT / "scripts"))
from _bench_inputs import Recipe, _encode, _x264  # noqa: E402

BLOCK = 64 << 10


@pytest.fixture(scope="module")
def late_audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 s of 320x240 H.264 with AAC muxed as PyAV writes it: the audio after most of the
    video, so the probe reads the head, the audio's start megabytes on, and the end."""
    path = tmp_path_factory.mktemp("probe") / "late.mp4"
    _encode(Recipe("late", "mp4", "libx264", 320, 240, 15, 30.0, gop=30, bframes=2,
                   options=_x264(30, 2, "ultrafast"), seed=9), path)
    return path


def _planned(data: bytes, *, warm: bool) -> tuple[list[tuple[int, int]], list[tuple[int, int]], object]:
    """The requests a plan makes after its fingerprint: ``(by warm_probe, by the probe)``,
    and the probe's answer."""
    asked: list[tuple[int, int]] = []

    def fetch(start: int, end: int) -> bytes:
        asked.append((start, end))
        return data[start:end]

    reader = RangeReader("mem", len(data), fetch, block=BLOCK, max_ahead=8, max_blocks=48)
    fingerprint_object(reader)
    asked.clear()
    if warm:
        warm_probe(reader)
    warmed = list(asked)
    reader.seek(0)
    info = probe(reader)  # type: ignore[arg-type]
    return warmed, asked[len(warmed):], info


def _mp4s() -> list[Path]:
    return sorted(p for p in FIXTURES.glob("*.mp4") if index_span(p.read_bytes()[:4096], p.stat().st_size))


def test_the_probe_of_a_late_audio_mp4_makes_no_request_after_warm_probe(late_audio: Path) -> None:
    data = late_audio.read_bytes()
    before_warm, before_probe, before = _planned(data, warm=False)
    warmed, probed, after = _planned(data, warm=True)
    assert before_warm == [] and before_probe, "the probe made requests of its own"
    assert warmed and probed == [], f"the probe still asked for {probed} after {warmed}"
    assert after == before  # the same answer: what was fetched ahead is what it reads
    fetched = sum(b - a for a, b in warmed)
    assert fetched <= 2 * sum(b - a for a, b in before_probe) + 2 * BLOCK, "no more than a block or two more"


@pytest.mark.parametrize("path", _mp4s(), ids=lambda p: p.name)
def test_the_probe_of_every_mp4_fixture_asks_for_nothing_warm_probe_did_not_fetch(path: Path) -> None:
    data = path.read_bytes()
    _, probed, info = _planned(data, warm=True)
    assert probed == [], f"the probe asked for {probed}"
    assert info == dataclasses.replace(probe(str(path)), path="mem")


def test_probe_ranges_lie_inside_the_file_and_cover_its_last_seconds(late_audio: Path) -> None:
    data = late_audio.read_bytes()
    span = index_span(data[:4096], len(data))
    assert span is not None
    ranges = probe_ranges(data[span[0]:span[1]], TAIL_SECONDS)
    assert ranges == sorted(ranges) and all(a < b for a, b in ranges)
    assert all(b < a2 for (_, b), (a2, _) in itertools.pairwise(ranges)), "merged where they touch"
    assert ranges[-1][1] >= span[0] - 1, "the last samples, which end where the index begins"
    assert ranges[0][0] < 1 << 20, "the first frame"


def test_a_damaged_index_raises_only_what_warm_probe_catches_and_never_explodes(late_audio: Path) -> None:
    data = late_audio.read_bytes()
    span = index_span(data[:4096], len(data))
    assert span is not None
    moov = data[span[0]:span[1]]
    rng = random.Random(3)
    cases = [moov[:cut] for cut in range(0, len(moov), max(1, len(moov) // 150))]
    for _ in range(150):
        broken = bytearray(moov)
        for _ in range(rng.randint(1, 8)):
            broken[rng.randrange(len(broken))] = rng.randrange(256)
        cases.append(bytes(broken))
    # A sample count of four billion: refused, not expanded into memory.
    stsz = moov.find(b"stsz")
    cases.append(moov[:stsz + 12] + struct.pack(">I", 0xFFFFFFF0) + moov[stsz + 16:])
    for case in cases:
        try:
            ranges = probe_ranges(case, TAIL_SECONDS)
        except (ValueError, IndexError, struct.error):
            continue
        assert all(isinstance(a, int) and isinstance(b, int) for a, b in ranges)


def test_warm_probe_fetches_nothing_for_what_is_not_an_mp4() -> None:
    data = (FIXTURES / "late_audio_25s.mkv").read_bytes()
    warmed, _, _ = _planned(data, warm=True)
    assert warmed == []
