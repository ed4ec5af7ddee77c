"""Reading a file in a bucket with few requests and no bytes nobody reads (issue 19: streamed,
never downloaded whole): a range reader told where a task's packets lie (byte spans from the
container's index), the plan's fingerprint ranges requested at once, and passes that demux only
their own stream. Through a :class:`RangeReader` over the bytes of real clips (the fetch
function is the unit's input, as in tests/test_sources.py); the windows decoded through it are
compared with the same windows decoded from the file."""

from __future__ import annotations

import io
import itertools
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from seeknetic_prep.decode.audio import audio_pass
from seeknetic_prep.decode.preprocess import iter_segments
from seeknetic_prep.decode.probe import MediaInfo, probe
from seeknetic_prep.decode.profile import Window
from seeknetic_prep.decode.sampling import plan_windows
from seeknetic_prep.decode.spans import byte_spans
from seeknetic_prep.sources.reader import RangeReader

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from _bench_inputs import Recipe, _encode, _x264  # noqa: E402

BLOCK = 64 << 10


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 s of 320x240 H.264 (2 s GOPs, B-frames) with AAC, muxed video first as PyAV writes a
    file encoded that way: the audio lies after most of the video, not between it."""
    path = tmp_path_factory.mktemp("spans") / "clip.mp4"
    _encode(Recipe("spans", "mp4", "libx264", 320, 240, 15, 30.0, gop=30, bframes=2,
                   options=_x264(30, 2, "ultrafast"), seed=5), path)
    return path


def _reader(data: bytes, asked: list[tuple[int, int]] | None = None,
            fetch: Callable[[int, int], bytes] | None = None, max_blocks: int = 48) -> RangeReader:
    def plain(start: int, end: int) -> bytes:
        if asked is not None:
            asked.append((start, end))
        return data[start:end]

    return RangeReader("mem", len(data), fetch or plain, block=BLOCK, max_ahead=8, max_blocks=max_blocks)


class _Consumed:
    """The union of the byte ranges read through ``reader.read``."""

    def __init__(self, reader: RangeReader) -> None:
        self.spans: list[tuple[int, int]] = []
        original = reader.read

        def read(size: int | None = -1) -> bytes:
            start = reader.tell()
            data = original(size)
            self.spans.append((start, start + len(data)))
            return data

        reader.read = read  # type: ignore[method-assign]

    def total(self) -> int:
        total, end = 0, -1
        for a, b in sorted(self.spans):
            if b > end:
                total += b - max(a, end)
                end = b
        return total


def _decode(source: Any, info: MediaInfo, windows: list[Window]) -> list[Any]:
    return list(iter_segments(source, windows, info=info, threads=1))


def _same(a: list[Any], b: list[Any]) -> None:
    assert [s.index for s in a] == [s.index for s in b]
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.video, y.video) and np.array_equal(x.audio, y.audio)
        assert x.frame_times_ms == y.frame_times_ms


def test_a_reader_told_its_spans_fetches_them_in_large_requests_and_nothing_past_them() -> None:
    data = np.random.default_rng(7).integers(0, 256, 12 << 20, dtype=np.uint8).tobytes()
    asked: list[tuple[int, int]] = []
    reader = _reader(data, asked)
    spans = [(1_000_000, 3_500_000), (7_000_000, 7_300_000)]
    reader.expect(spans)
    for start, end in spans:  # a decoder going forward through each, in small reads
        reader.seek(start)
        while (pos := reader.tell()) < end:
            n = min(20_000, end - pos)
            assert reader.read(n) == data[pos:pos + n]
    # The first span, 2.5 MB, in 16-block (1 MiB) requests, not one block at a time then doubling.
    first = [(a, b) for a, b in asked if a < 4_000_000]
    assert len(first) == 3, first
    assert max(b for _, b in asked) <= -(-7_300_000 // BLOCK) * BLOCK  # never past the last span
    assert reader.bytes_fetched <= sum(e - s for s, e in spans) + 4 * BLOCK  # only block rounding
    # A read outside every span is served as asked, one block, with nothing fetched ahead.
    before = len(asked)
    reader.seek(10_000_000)
    assert reader.read(1000) == data[10_000_000:10_001_000]
    assert asked[before:] == [(10_000_000 // BLOCK * BLOCK, (10_000_000 // BLOCK + 1) * BLOCK)]


def test_a_reader_told_nothing_reads_ahead_as_before() -> None:
    """``expect(None)`` (a container without an index): a forward reader's requests grow."""
    data = bytes(range(256)) * (4 << 12)  # 4 MiB
    asked: list[tuple[int, int]] = []
    reader = _reader(data, asked)
    reader.expect(None)
    assert b"".join(iter(lambda: reader.read(16_384), b"")) == data
    reader.close()
    assert len(asked) < len(data) // BLOCK // 2  # growing, and prefetched: far fewer than a block each


def test_read_many_asks_for_every_range_at_once_and_keeps_only_the_big_ones() -> None:
    data = np.random.default_rng(8).integers(0, 256, 6 << 20, dtype=np.uint8).tobytes()
    asked: list[tuple[int, int]] = []
    together = threading.Barrier(4, timeout=20)  # one request after another never gets past it

    def fetch(start: int, end: int) -> bytes:
        asked.append((start, end))
        if len(asked) <= 4:
            together.wait()
        return data[start:end]

    reader = _reader(data, fetch=fetch)
    reader.seek(123)
    ranges = [(0, 1 << 20), (2_000_000, 20_000), (3_000_000, 20_000), (len(data) - (1 << 20), 1 << 20)]
    got = reader.read_many(ranges)
    assert got == [data[o:o + n] for o, n in ranges]
    assert len(asked) == 4 and reader.requests == 4 and reader.tell() == 123
    # The first and last MiB are kept (the probe reads them next): no request; a sample (less
    # than a block) is not.
    reader.seek(len(data) - 500_000)
    assert reader.read(500_000) == data[-500_000:] and len(asked) == 4
    assert reader.read_many([(2_000_000, 20_000)]) == [data[2_000_000:2_020_000]] and len(asked) == 5


def test_warm_asks_once_for_each_run_of_missing_blocks_and_never_for_over_half_the_cache() -> None:
    data = np.random.default_rng(10).integers(0, 256, 8 << 20, dtype=np.uint8).tobytes()
    asked: list[tuple[int, int]] = []
    reader = _reader(data, asked)  # 48 blocks of 64 KiB
    assert reader.read(10) == data[:10] and asked == [(0, BLOCK)]
    reader.warm([(0, 100), (50_000, 200_000), (150_000, 210_000), (1_000_000, 1_000_001)])
    assert asked[1:] == [(BLOCK, 4 * BLOCK), (15 * BLOCK, 16 * BLOCK)]  # block 0 is here; 1-3 once
    reader.seek(BLOCK)
    assert reader.read(3 * BLOCK) == data[BLOCK:4 * BLOCK] and len(asked) == 3
    reader.warm([(4 << 20, 6 << 20)])  # 32 blocks: more than half of 48
    assert len(asked) == 3


def _by_thread(data: bytes) -> tuple[RangeReader, list[tuple[int, int, bool]]]:
    """A reader whose requests are recorded as ``(start, end, prefetched)``: made by the
    reader's background thread, not by the read that needed them."""
    asked: list[tuple[int, int, bool]] = []

    def fetch(start: int, end: int) -> bytes:
        asked.append((start, end, threading.current_thread().name.startswith("range-prefetch")))
        return data[start:end]

    return _reader(data, fetch=fetch), asked


def _read_all(reader: RangeReader, data: bytes, start: int, end: int) -> None:
    reader.seek(start)
    while (pos := reader.tell()) < end:  # as FFmpeg reads: 32 KiB at a time
        assert reader.read(min(32 << 10, end - pos)) == data[pos:min(pos + (32 << 10), end)]


def test_a_prefetch_goes_past_blocks_already_here_to_the_next_expected_ones() -> None:
    """Blocks an earlier reader left (a plan's, a task's opening) used to end the chain of
    prefetches: the decoder then waited for a request of its own past them."""
    data = np.random.default_rng(11).integers(0, 256, 8 << 20, dtype=np.uint8).tobytes()
    reader, asked = _by_thread(data)
    reader.warm([(16 * BLOCK, 20 * BLOCK)])  # here before the task reads: blocks 16-19
    reader.expect([(0, 32 * BLOCK)])
    _read_all(reader, data, 0, 32 * BLOCK)
    assert asked == [(16 * BLOCK, 20 * BLOCK, False), (0, 16 * BLOCK, False), (20 * BLOCK, 32 * BLOCK, True)]


def test_warm_prefetches_the_start_of_the_expected_spans_meanwhile() -> None:
    """A task opens its container from the warmed blocks and reads its first packets next: they
    are on their way while the opening is fetched, not a round trip after it."""
    data = np.random.default_rng(12).integers(0, 256, 8 << 20, dtype=np.uint8).tobytes()
    reader, asked = _by_thread(data)
    reader.expect([(4 * BLOCK, 30 * BLOCK)])
    reader.warm([(0, 2 * BLOCK), (100 * BLOCK, 101 * BLOCK)])  # the header, the index
    _read_all(reader, data, 4 * BLOCK, 30 * BLOCK)
    assert sorted(asked) == [(0, 2 * BLOCK, False), (4 * BLOCK, 20 * BLOCK, True),
                             (20 * BLOCK, 30 * BLOCK, True), (100 * BLOCK, 101 * BLOCK, False)]


def test_two_places_read_in_turn_each_have_their_prefetch_in_flight() -> None:
    """The frame pass and the audio pass read two places; where the audio lies apart from the
    video, the pass whose turn it was not used to wait for a request at each of its misses."""
    data = np.random.default_rng(13).integers(0, 256, 8 << 20, dtype=np.uint8).tobytes()
    reader, asked = _by_thread(data)
    video, audio = (0, 32 * BLOCK), (100 * BLOCK, 120 * BLOCK)
    reader.expect([video, audio])
    _read_all(reader, data, 0, BLOCK)  # the frames' first packets: blocks 0-15, then 16-31 ahead
    _read_all(reader, data, audio[0], audio[0] + BLOCK)  # the audio's: 100-115, then 116-119 ahead
    _read_all(reader, data, *audio)
    _read_all(reader, data, *video)
    assert sorted(asked) == [(0, 16 * BLOCK, False), (16 * BLOCK, 32 * BLOCK, True),
                             (100 * BLOCK, 116 * BLOCK, False), (116 * BLOCK, 120 * BLOCK, True)]


def test_a_task_told_its_spans_decodes_the_same_windows_in_fewer_requests(clip: Path) -> None:
    data = clip.read_bytes()
    info = probe(clip)
    windows = plan_windows(info.duration_ms)
    assert len(windows) == 3
    task = [windows[1]]  # the middle: after a seek, before the end
    want = _decode(clip, info, task)

    guessing = _reader(data)  # before: read ahead as the reads go
    _same(_decode(guessing, info, task), want)

    told = _reader(data)  # as a worker does it: nothing ahead while the index is read, then its spans
    consumed = _Consumed(told)
    told.expect([])
    spans = byte_spans(told, info, task)
    assert spans and all(0 <= a < b <= len(data) for a, b in spans)
    told.expect(spans)
    _same(_decode(told, info, task), want)

    assert told.requests < guessing.requests * 0.7, (told.requests, guessing.requests)
    assert told.bytes_fetched <= 1.3 * consumed.total(), (told.bytes_fetched, consumed.total())


def test_spans_of_a_whole_file_and_of_a_container_without_an_index(clip: Path, fixtures_dir: Path) -> None:
    info = probe(clip)
    whole = byte_spans(clip, info, plan_windows(info.duration_ms))
    assert whole[0][0] < 100 and whole[-1][1] >= info.size_bytes - 200_000  # from the first packet on
    ts = fixtures_dir / "mpegts_offset.ts"  # no index: no hint, and the windows as ever
    ts_info = probe(ts)
    ts_windows = plan_windows(ts_info.duration_ms)
    assert byte_spans(ts, ts_info, ts_windows) == []
    reader = _reader(ts.read_bytes())
    reader.expect(None)
    _same(_decode(reader, ts_info, ts_windows), _decode(ts, ts_info, ts_windows))


def test_the_audio_pass_reads_the_audio_not_the_video_around_it(clip: Path) -> None:
    """The audio of the middle window lies after most of the video; a pass that demuxed every
    stream read the video from the keyframe before its seek onwards to get there, and back
    (10.7 MB of this 7 MB file; 0.6 MB now)."""
    data = clip.read_bytes()
    info = probe(clip)
    window = plan_windows(info.duration_ms)[1]
    import av

    with av.open(str(clip)) as container:
        first_audio = container.streams.audio[0].index_entries[0].pos
    assert first_audio > len(data) // 2  # the layout this test is about

    class Counted(io.BytesIO):
        read_bytes = 0

        def read(self, size: int | None = -1) -> bytes:
            out = super().read(size)
            Counted.read_bytes += len(out)
            return out

    chunks = audio_pass(Counted(data), info, window.start_ms, threads=1)
    heard = 0
    for _, samples in chunks:  # the window's audio and a second more, as the decoder takes it
        heard += len(samples)
        if heard >= 22_050 * (window.end_ms - window.start_ms + 1000) // 1000:
            break
    chunks.close()
    assert heard > 0
    assert Counted.read_bytes < len(data) // 5, (Counted.read_bytes, len(data))


def test_an_mp4s_index_is_found_from_its_first_bytes_and_read_in_large_requests(clip: Path) -> None:
    """Opening an MP4 reads its whole ``moov`` (megabytes for a long video) in FFmpeg's 32 KiB
    reads; told where it lies from the top-level box headers, a reader fetches it in requests
    of a third of its cache instead of a ramp of one block, two, four..., and keeps it expected
    whatever a task's spans say later (every container opened on the reader reads it)."""
    from seeknetic_prep.decode.boxes import index_span

    data = clip.read_bytes()
    span = index_span(data[:4096], len(data))
    assert span is not None and span[1] == len(data)  # written after the media, as PyAV does
    assert data[span[0] + 4:span[0] + 8] == b"moov"

    blob = np.random.default_rng(9).integers(0, 256, 6 << 20, dtype=np.uint8).tobytes()
    index = (1 << 20, 4 << 20)  # a 3 MiB index
    requests = {}
    for told in (False, True):
        asked: list[tuple[int, int]] = []
        reader = _reader(blob, asked)
        if told:
            reader.index = index
        reader.expect([(5 << 20, 6 << 20)])  # a task's spans: the index stays expected
        reader.seek(index[0])
        while (pos := reader.tell()) < index[1]:  # as FFmpeg reads it
            assert reader.read(32 << 10) == blob[pos:pos + (32 << 10)]
        # (the task's span after it may be prefetched meanwhile: not a request for the index)
        requests[told] = sum(1 for a, b in list(asked) if a < index[1] and b > index[0])
    assert requests[True] <= 3 < 8 <= requests[False], requests


def test_a_task_given_its_plans_layout_opens_in_one_round_and_reads_only_its_spans(clip: Path) -> None:
    """The plan of an object records what opening its container reads and each window's
    packets; a task handed them fetches the opening all at once (it was four misses one after
    another, each a round trip), opens the container with no request of its own, and decodes
    its windows as from the file, reading inside its spans only."""
    from seeknetic_prep.decode.source import open_container
    from seeknetic_prep.pipeline.worker import plan_object

    data = clip.read_bytes()
    plan = plan_object("s3://bucket/clip.mp4", _reader(data))
    layout = plan.layout
    assert layout is not None and plan.info is not None
    assert layout.opening[0][0] == 0 and layout.opening[-1][1] == len(data)  # the header; the moov at the end
    assert [k for k, _ in layout.windows] == [w[0] for w in plan.windows]
    blocks = sorted({k for a, b in layout.opening for k in range(a // BLOCK, -(-b // BLOCK))})
    runs = 1 + sum(1 for j, k in itertools.pairwise(blocks) if k != j + 1)
    assert runs >= 3  # the header, the audio's first packet (after most of the video), the moov

    asked: list[tuple[int, int]] = []
    together = threading.Barrier(runs, timeout=20)  # one request after another never gets past it

    def fetch(start: int, end: int) -> bytes:
        asked.append((start, end))
        if len(asked) <= runs:
            together.wait()
        return data[start:end]

    # A worker's reader holds 24 MiB: a task's opening is still there when its audio pass
    # opens the container again. Here: this clip's 7 MB in 64 KiB blocks.
    reader = _reader(data, fetch=fetch, max_blocks=len(data) // BLOCK + 8)
    reader.warm(layout.opening)
    assert len(asked) == runs
    open_container(reader).close()  # what the frame pass and the audio pass each do first
    assert len(asked) == runs

    task = [Window(*w) for w in plan.windows[1:]]
    spans = layout.spans_of(w.index for w in task)
    consumed = _Consumed(reader)
    reader.expect(spans)
    _same(_decode(reader, plan.info, task), _decode(clip, plan.info, task))
    inside = [(a // BLOCK * BLOCK, -(-b // BLOCK) * BLOCK) for a, b in (*spans, *layout.opening)]  # as blocks
    assert all(any(a <= s and e <= b for a, b in inside) for s, e in asked[runs:]), (asked, inside)
    assert reader.bytes_fetched <= 1.3 * consumed.total(), (reader.bytes_fetched, consumed.total())
